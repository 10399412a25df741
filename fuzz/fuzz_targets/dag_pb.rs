//! Blocks as peers, CARs and the RPC hand them over: dag-pb nodes, their UnixFS data, and the
//! other codecs the node reads (DAG-CBOR, DAG-JSON, raw), through the decoders the gateway and the
//! GC use.
#![no_main]
use af_registry::unixfs::pb;
use libfuzzer_sys::fuzz_target;

const CODECS: [u64; 6] = [0x70, 0x55, 0x71, 0x0129, 0x0200, 0x51];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, block)) = data.split_first() else { return };
    if let Ok(node) = pb::decode_node(block) {
        if let Ok(kind) = pb::unixfs_type(&node.data) {
            let _ = kind;
        }
        let _ = pb::unixfs_data(&node.data);
        let _ = pb::file_data(&node.data);
    }
    let codec = CODECS[pick as usize % CODECS.len()];
    let cid = cid::Cid::new_v1(codec, cid::multihash::Multihash::wrap(0x12, &[0u8; 32]).unwrap());
    let _ = af_registry::dag::block_links(&cid, block);
    let _ = af_registry::dag::decode(&cid, bytes::Bytes::copy_from_slice(block));
    if let Ok(value) = af_registry::ipld::decode(&cid, block) {
        let _ = af_registry::ipld::to_pretty_json(&value);
        let _ = af_registry::ipld::links(&value);
    }
});
