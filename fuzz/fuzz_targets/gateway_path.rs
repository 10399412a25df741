//! What a gateway URL names: `/ipfs/<cid>/<path>` (CIDs in any base, multihashes of any kind),
//! `/ipns/<name>`, and multihash names of the RPC.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok((root, segments)) = af_registry::gateway::content_path(s) {
        for seg in &segments {
            assert!(!seg.is_empty() && seg != "." && seg != "..", "{s:?} gave {seg:?}");
        }
        let _ = af_registry::dag::is_identity(&root);
        let _ = af_registry::dag::well_known(&root);
    }
    let _ = af_registry::ipns::Name::parse(s);
    let _ = af_registry::multihash::multihash_named(s);
    let _ = af_registry::dag::codec_named(s);
    if let Ok(cid) = cid::Cid::try_from(data) {
        let _ = af_registry::multihash::verify(&cid, b"");
    }
});
