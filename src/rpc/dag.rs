//! DAGs whole: `dag/export` and `dag/import` (CARs), `resolve`, and `registry/import` (an image
//! layout's DAG made an image of the registry).

use super::*;

pub(super) async fn export(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    match readable_path(req, state).await {
        Ok((reader, cid)) => HttpResponse::Ok().insert_header(("X-Stream-Output", "1")).content_type("application/vnd.ipld.car").streaming(crate::dag::car::whole(reader, cid)),
        Err(resp) => resp,
    }
}

pub(super) async fn resolve(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    match readable_path(req, state).await {
        Ok((_, cid)) => HttpResponse::Ok().json(json!({"Path": format!("/ipfs/{cid}")})),
        Err(resp) => resp,
    }
}

/// Blocks of a `dag/import` recorded in one transaction, at most this many bytes.
const IMPORT_BATCH_BYTES: usize = 8 << 20;

pub(super) async fn import(req: &HttpRequest, body: web::Payload, policy: &Arc<crate::exposure::Policy>) -> HttpResponse {
    let reg = policy.registry();
    let mut parts = Parts::new(req, body);
    let mut reader = crate::car::SectionReader::default();
    let (mut batch, mut batch_bytes) = (Vec::new(), 0usize);
    // Blocks are stored as they arrive and verified; a CAR that breaks off leaves blocks no pin
    // names, which a GC sweeps after its grace period.
    loop {
        let part = parts.next().await;
        let done = match part {
            Some(Ok(Part::Data(chunk))) => {
                let blocks = match reader.push(&chunk) {
                    Ok(b) => b,
                    Err(e) => return bad_request(e),
                };
                for (cid, data) in blocks {
                    batch_bytes += data.len();
                    batch.push((cid, data));
                }
                false
            }
            Some(Ok(Part::End(_))) => false,
            Some(Err(resp)) => return resp,
            None => true,
        };
        if (done && !batch.is_empty()) || batch_bytes >= IMPORT_BATCH_BYTES {
            let owner = reader.roots().and_then(|r| r.first()).map(|r| Owner::Pin(r.to_string())).unwrap_or(Owner::Nothing);
            if let Err(e) = reg.store_blocks(std::mem::take(&mut batch), owner).await {
                return error(StatusCode::INTERNAL_SERVER_ERROR, e);
            }
            batch_bytes = 0;
        }
        if done {
            break;
        }
    }
    if let Err(e) = reader.finish() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e);
    }
    let roots = reader.roots().unwrap_or_default().to_vec();
    let pin_roots = flag(req, "pin-roots").unwrap_or(true);
    let mut out = Vec::new();
    for root in roots {
        let msg = if !pin_roots {
            String::new()
        } else if let Err(e) = check_complete(policy, root).await {
            e
        } else if let Err(e) = reg.pin_block(&root).await {
            e.to_string()
        } else {
            String::new()
        };
        out.push(json!({"Root": {"Cid": {"/": root.to_string()}, "PinErrorMsg": msg}}));
    }
    chunked_json(out)
}

/// Every block of the DAG under `root` is here, intact (so a pin can keep it): the gateway's
/// depth-first CAR walk, drained.
async fn check_complete(policy: &Arc<crate::exposure::Policy>, root: Cid) -> Result<(), String> {
    let reader = Reader::new(policy, Audience::Operator);
    let mut blocks = std::pin::pin!(crate::dag::car::whole(reader, root));
    while let Some(block) = blocks.next().await {
        block.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Imports the OCI image layout at CID `arg` (an image CID another node gives its tags) into
/// repository `repo` (default: the one its index.json names): its manifests and tags now, read
/// from peers; its layers recorded by their roots and fetched from peers when first pulled.
pub(super) async fn registry_import(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    let Some(raw) = arg(req, "arg") else { return bad_request("argument \"cid\" is required") };
    let root = match parse_path(&raw) {
        Ok((root, path)) if path.is_empty() => root,
        Ok(_) => return bad_request("an image CID, without a path"),
        Err(resp) => return resp,
    };
    let reader = passing_reader(req, state);
    match crate::car::import_dag(&state.registry, reader, root, arg(req, "repo")).await {
        Ok(s) => HttpResponse::Ok().json(json!({
            "Repository": s.repository,
            "Manifests": s.manifests,
            "Blobs": s.blobs,
            "NewBlobs": s.new_blobs,
            "Tags": s.tags.iter().map(|(tag, image)| json!({"Tag": tag, "Image": image})).collect::<Vec<_>>(),
        })),
        // What the image holds is the caller's problem (a manifest the registry refuses); the
        // node's own failures are ours.
        Err(
            e @ crate::car::CarError::Registry(
                crate::registry::RegistryError::Manifest(_) | crate::registry::RegistryError::ManifestReference(_) | crate::registry::RegistryError::ManifestDigest { .. },
            ),
        ) => bad_request(format!("nothing more imported from {root}: {e}")),
        Err(e @ (crate::car::CarError::Registry(_) | crate::car::CarError::Metadata(_) | crate::car::CarError::Task(_))) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => bad_request(format!("nothing imported from {root}: {e}")),
    }
}
