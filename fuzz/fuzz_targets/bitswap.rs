//! Bitswap messages as a swarm peer sends them on a stream: the framing, the protobuf, the wants'
//! CIDs and the blocks' prefixes.
#![no_main]
use af_registry::swarm::{message, wants};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().unwrap())
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let mut stream = data;
        while let Ok(Some(m)) = message::read(&mut stream).await {
            if let Some(wants) = &m.wantlist {
                for e in wants.entries.iter().take(1024) {
                    let _ = cid::Cid::try_from(e.block.as_slice());
                }
            }
            for b in &m.payload {
                if let Some(cid) = wants::cid_of(&b.prefix, &b.data) {
                    // The CID names these bytes: what arrives is stored only if it verifies.
                    af_registry::multihash::verify(&cid, &b.data).expect("cid_of named a CID its bytes do not hash to");
                }
            }
            for p in &m.block_presences {
                let _ = cid::Cid::try_from(p.cid.as_slice());
            }
        }
    });
});
