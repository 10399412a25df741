//! Manifest and index parsing and validation, as a push's body and Content-Type arrive.
#![no_main]
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 7] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/json",
    "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
    "text/plain",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let content_type = TYPES.get(pick as usize % (TYPES.len() + 1)).copied();
    if let Ok(parsed) = af_registry::manifest::parse(content_type, body) {
        // What a parse accepted must be a JSON object: the registry stores it byte for byte.
        let value: serde_json::Value = serde_json::from_slice(body).expect("accepted a body that is not JSON");
        assert!(value.is_object());
        let _ = format!("{parsed:?}");
    }
});
