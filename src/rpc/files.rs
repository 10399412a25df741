//! Files as Kubo's `add`, `cat` and `ls` see them (UnixFS, Kubo's chunking and layout).

use super::*;

/// Kubo's default fan-out for `ipfs add`.
const KUBO_MAX_LINKS: usize = 174;

const KUBO_CHUNK: usize = 256 * 1024;

/// The widest file node `add` makes: its links (~40 bytes each) stay far under a 2 MiB block.
const MAX_FILE_LINKS: usize = 8192;

/// The most one file of an `add` that stores (not `--only-hash`) holds, counting its blocks.
const MAX_ADD: usize = 128 << 20;

/// What one leaf or node costs while a file is added, beyond its data.
const BLOCK_OVERHEAD: usize = 256;

/// Blocks recorded in one transaction.
const RECORD_BATCH: usize = 4096;

pub(super) async fn add(req: &HttpRequest, body: web::Payload, reg: &Registry) -> HttpResponse {
    let only_hash = flag(req, "only-hash").unwrap_or(false);
    let cid_version = arg(req, "cid-version").and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    let raw_leaves = flag(req, "raw-leaves").unwrap_or(cid_version == 1);
    if cid_version != 1 || !raw_leaves {
        return bad_request("this node adds with CIDv1 and raw leaves only: pass --cid-version=1");
    }
    let chunk = match arg(req, "chunker").as_deref() {
        None | Some("default") => KUBO_CHUNK,
        Some(c) => match c.strip_prefix("size-").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if (1..=(1 << 20)).contains(&n) => n,
            _ => return bad_request(format!("chunker {c:?} is not supported (size-N, N up to 1048576)")),
        },
    };
    let max_links = match arg(req, "max-file-links") {
        None => KUBO_MAX_LINKS,
        Some(v) => match v.parse::<usize>() {
            // One link per node would never finish a tree; past a few thousand a node outgrows a block.
            Ok(n) if (2..=MAX_FILE_LINKS).contains(&n) => n,
            _ => return bad_request(format!("max-file-links {v:?} is not between 2 and {MAX_FILE_LINKS}")),
        },
    };
    let pin = flag(req, "pin").unwrap_or(true);
    let mut parts = Parts::new(req, body);
    let mut importer = Importer::with_layout(chunk, max_links);
    // Stored blocks are kept inline, so a file being added is held until its end, counting its
    // blocks as well as its bytes; only-hash keeps nothing.
    let (mut blocks, mut data): (Vec<DagBlock>, Vec<u8>) = (Vec::new(), Vec::new());
    let mut out = Vec::new();
    while let Some(part) = parts.next().await {
        match part {
            Ok(Part::Data(chunk)) => {
                if only_hash {
                    importer.update(&chunk, &mut ());
                    continue;
                }
                importer.update(&chunk, &mut blocks);
                data.extend_from_slice(&chunk);
                if data.len() + blocks.len() * BLOCK_OVERHEAD > MAX_ADD {
                    return bad_request(
                        "a file added through the RPC is limited to 128 MiB, counting 256 bytes per block (only-hash is not); push large content through the OCI API",
                    );
                }
            }
            Ok(Part::End(name)) => {
                let finished = std::mem::replace(&mut importer, Importer::with_layout(chunk, max_links));
                let root = if only_hash {
                    finished.finish(&mut ())
                } else {
                    let root = finished.finish(&mut blocks);
                    let (file_blocks, file_data) = (std::mem::take(&mut blocks), std::mem::take(&mut data));
                    if let Err(resp) = record_file(reg, root.cid, file_blocks, &file_data, pin).await {
                        return resp;
                    }
                    root
                };
                let name = name.filter(|n| !n.is_empty()).unwrap_or_else(|| root.cid.to_string());
                out.push(json!({"Name": name, "Hash": root.cid.to_string(), "Size": root.tsize.to_string()}));
            }
            Err(resp) => return resp,
        }
    }
    chunked_json(out)
}

/// Records an added file's blocks (in batches, so they are not all copied at once) and pins it.
async fn record_file(reg: &Registry, root: Cid, blocks: Vec<DagBlock>, data: &[u8], pin: bool) -> Result<(), HttpResponse> {
    let owner = Owner::Pin(root.to_string());
    for batch in blocks.chunks(RECORD_BATCH) {
        let batch = batch
            .iter()
            .map(|b| match b {
                DagBlock::Leaf { cid, offset, len } => (*cid, data[*offset as usize..(*offset + *len) as usize].to_vec()),
                DagBlock::Node { cid, bytes } => (*cid, bytes.clone()),
            })
            .collect();
        reg.store_blocks(batch, owner.clone()).await.map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    }
    if pin {
        reg.pin_block(&root).await.map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    }
    Ok(())
}

pub(super) async fn cat(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    match readable_path(req, state).await {
        Ok((reader, cid)) => cat_file(reader, cid).await,
        Err(resp) => resp,
    }
}

pub(super) async fn ls(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    match readable_path(req, state).await {
        Ok((reader, cid)) => list(&reader, cid).await,
        Err(resp) => resp,
    }
}

async fn cat_file(reader: Arc<Reader>, cid: Cid) -> HttpResponse {
    let size = match reader.file_size(&cid).await {
        Ok(Some(s)) => s,
        Ok(None) => return bad_request("this dag node is a directory"),
        Err(e) => return dag_failure(e),
    };
    HttpResponse::Ok().insert_header(("X-Stream-Output", "1")).content_type("text/plain").streaming(crate::dag::file_stream(reader, cid, 0, size))
}

async fn list(reader: &Reader, cid: Cid) -> HttpResponse {
    let links = match reader.node(&cid).await {
        Ok(Node::File { links, .. }) => links,
        Ok(dir @ (Node::Directory { .. } | Node::Shard { .. })) => match reader.entries(dir).await {
            Ok(l) => l,
            Err(e) => return dag_failure(e),
        },
        Ok(_) => Vec::new(),
        Err(e) => return dag_failure(e),
    };
    let mut out = Vec::new();
    for l in links {
        // A raw leaf is a file whose size its link already gives: no need to read (and rehash) it.
        if l.cid.codec() == unixfs::RAW {
            out.push(json!({"Name": l.name, "Hash": l.cid.to_string(), "Size": l.tsize, "Type": 2, "Target": ""}));
            continue;
        }
        let (kind, size) = match reader.node(&l.cid).await {
            Ok(Node::Directory { .. } | Node::Shard { .. }) => (1, 0),
            Ok(Node::File { size, .. }) => (2, size),
            _ => (2, l.tsize),
        };
        out.push(json!({"Name": l.name, "Hash": l.cid.to_string(), "Size": size, "Type": kind, "Target": ""}));
    }
    HttpResponse::Ok().json(json!({"Objects": [{"Hash": cid.to_string(), "Links": out}]}))
}
