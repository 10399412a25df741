//! Repository names, tags, image references and the OCI API's route table.
#![no_main]
use af_registry::names::{is_namespace, is_valid_name, is_valid_tag, parse_image_reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if is_valid_name(s) {
        // The grammar: lowercase path components; a name is never a route's keyword path.
        assert!(!s.is_empty() && s.len() <= 255, "{s:?}");
        assert!(!s.contains("//") && !s.starts_with('/') && !s.ends_with('/'), "{s:?}");
        assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)), "{s:?}");
        assert!(!s.split('/').any(|c| c == ".." || c == "."), "{s:?}");
    }
    if is_valid_tag(s) {
        assert!(!s.is_empty() && s.len() <= 128 && !s.contains('/') && !s.contains(':'), "{s:?}");
    }
    let _ = is_namespace(s);
    if let Ok((repo, _)) = parse_image_reference(s) {
        assert!(is_valid_name(&repo));
    }
    if let Some(route) = af_registry::api::route::parse(s) {
        if let Some(name) = route.name() {
            // A route's name is a part of the path it came from.
            assert!(s.starts_with(name), "{s:?} gave {name:?}");
        }
    }
});
