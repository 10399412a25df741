//! Digests as the API and the CLI take them.
#![no_main]
use af_registry::digest::Digest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(d) = s.parse::<Digest>() {
        // Only canonical forms are taken: printing gives back the text.
        assert_eq!(d.to_string(), s);
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!(d.hex().bytes().all(|b| b.is_ascii_hexdigit()));
    }
});
