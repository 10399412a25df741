//! Single blocks: `block/get`, `block/stat`, `block/put`.

use super::*;

pub(super) async fn get(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    match readable_path(req, state).await {
        Ok((reader, cid)) => match reader.block(&cid).await {
            Ok(bytes) => stream_response(bytes),
            Err(e) => dag_failure(e),
        },
        Err(resp) => resp,
    }
}

pub(super) async fn stat(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    match readable_path(req, state).await {
        Ok((reader, cid)) => match reader.block(&cid).await {
            Ok(bytes) => HttpResponse::Ok().json(json!({"Key": cid.to_string(), "Size": bytes.len()})),
            Err(e) => dag_failure(e),
        },
        Err(resp) => resp,
    }
}

pub(super) async fn put(req: &HttpRequest, body: web::Payload, reg: &Registry) -> HttpResponse {
    let codec = match arg(req, "cid-codec").or_else(|| arg(req, "format")).as_deref() {
        None => unixfs::RAW,
        Some("protobuf") | Some("v0") => unixfs::DAG_PB,
        Some(name) => match crate::dag::codec_named(name) {
            Some(c) => c,
            None => return bad_request(format!("cid-codec {name:?} is not supported (raw, dag-pb, dag-cbor, dag-json, json, cbor, libp2p-key)")),
        },
    };
    let mhtype = arg(req, "mhtype").unwrap_or_else(|| "sha2-256".into());
    let Some((mh_code, default_len)) = crate::multihash::multihash_named(&mhtype) else {
        return bad_request(format!("mhtype {mhtype:?} is not supported"));
    };
    // -1, Kubo's default, is the hash's own length.
    let mh_len = match arg(req, "mhlen").map(|v| v.parse::<i64>()) {
        None | Some(Ok(-1)) => default_len,
        Some(Ok(n)) if (0..=64).contains(&n) => n as usize,
        _ => return bad_request("mhlen is not a length from 0 to 64, or -1"),
    };
    let pin = flag(req, "pin").unwrap_or(false);
    let mut parts = Parts::new(req, body);
    let mut out = Vec::new();
    let mut data = Vec::new();
    // Each block is stored when its part ends: one block in memory at a time.
    while let Some(part) = parts.next().await {
        match part {
            Ok(Part::Data(chunk)) => {
                if data.len() + chunk.len() > crate::car::MAX_BLOCK {
                    return bad_request("blocks are limited to 2 MiB");
                }
                data.extend_from_slice(&chunk);
            }
            Ok(Part::End(_)) => {
                let data = std::mem::take(&mut data);
                if codec == unixfs::DAG_PB && unixfs::decode_node(&data).is_err() {
                    return bad_request("the block is not valid dag-pb");
                }
                let digest = match crate::multihash::hash_with(mh_code, if mh_code == 0 { data.len() } else { mh_len }, &data) {
                    Ok(d) => d,
                    Err(e) => return bad_request(format!("mhtype {mhtype}, mhlen {mh_len}: {e}")),
                };
                let cid = match cid::multihash::Multihash::<64>::wrap(mh_code, &digest) {
                    Ok(mh) => cid::Cid::new_v1(codec, mh),
                    Err(e) => return bad_request(format!("the block's multihash: {e}")),
                };
                out.push(json!({"Key": cid.to_string(), "Size": data.len()}));
                if let Err(e) = reg.store_blocks(vec![(cid, data)], Owner::Pin(cid.to_string())).await {
                    return error(StatusCode::INTERNAL_SERVER_ERROR, e);
                }
                if pin {
                    if let Err(e) = reg.pin_block(&cid).await {
                        return error(StatusCode::INTERNAL_SERVER_ERROR, e);
                    }
                }
            }
            Err(resp) => return resp,
        }
    }
    match out.len() {
        1 => HttpResponse::Ok().json(out.remove(0)),
        _ => chunked_json(out),
    }
}
