//! CARv1 files: the RPC's streamed `dag/import` (chunks of any size) and `af registry import`'s
//! staging reader. Every block either verifies against its CID or the CAR is refused.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, car)) = data.split_first() else { return };
    let chunk = chunk as usize + 1;
    let mut reader = af_registry::car::SectionReader::default();
    let mut ok = true;
    for piece in car.chunks(chunk) {
        match reader.push(piece) {
            Ok(blocks) => {
                for (cid, bytes) in blocks {
                    af_registry::multihash::verify(&cid, &bytes).expect("an unverified block came out");
                }
            }
            Err(_) => {
                ok = false;
                break;
            }
        }
    }
    if ok {
        let _ = reader.finish();
    }
    let dir = std::env::temp_dir().join("af-fuzz-car");
    let _ = af_registry::car::stage(car, &dir);
});
