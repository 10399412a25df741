//! The node itself: `id`, `version`, `repo/stat`, `repo/gc`.

use super::*;

pub(super) async fn id(state: &RpcState) -> HttpResponse {
    let me = state.swarm.peer_id;
    let addresses: Vec<String> = state.swarm.addresses().await.unwrap_or_default().iter().map(|a| format!("{a}/p2p/{me}")).collect();
    HttpResponse::Ok().json(json!({
        "ID": state.identity.peer_id,
        "PublicKey": state.identity.public_key,
        "Addresses": addresses,
        "AgentVersion": format!("af-registry/{}", env!("CARGO_PKG_VERSION")),
        "Protocols": state.swarm.protocols(),
    }))
}

pub(super) fn version() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        // Semver, as the Kubo CLI requires of the node it talks to.
        "Version": env!("CARGO_PKG_VERSION"),
        "Commit": "",
        "Repo": "16",
        "System": format!("{}/{}", std::env::consts::ARCH, std::env::consts::OS),
        "Golang": "",
    }))
}

/// How long `repo/gc` waits for its client to take a line before it stops listing.
const LISTING_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// `repo/gc`: a GC now, as `af registry gc` runs it (content younger than the grace period
/// stays, unlike Kubo's); one line per block removed, Kubo's `{"Key": {"/": cid}}`, streamed
/// as the sweep goes (millions of CIDs are never held at once). A failure is the last line,
/// `{"Error": ...}` as Kubo's, and cuts the response short so that a client reading to the end
/// sees it failed.
pub(super) async fn repo_gc(state: &RpcState) -> HttpResponse {
    let (removed, mut cids) = tokio::sync::mpsc::channel::<cid::Cid>(64);
    let (lines, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let registry = state.registry.clone();
    let grace = state.gc_grace;
    actix_web::rt::spawn(async move {
        let gc = tokio::spawn(async move { registry.gc_listing(grace, removed).await });
        // A client that stops reading for LISTING_PATIENCE is no longer told (the GC goes on
        // without listing rather than waiting on it).
        while let Some(cid) = cids.recv().await {
            let line = Bytes::from(format!("{}\n", json!({"Key": {"/": cid.to_string()}})));
            if !matches!(tokio::time::timeout(LISTING_PATIENCE, lines.send(Ok(line))).await, Ok(Ok(()))) {
                break;
            }
        }
        drop(cids);
        let failure = match gc.await {
            Ok(Ok(report)) => {
                tracing::info!(%report, "repo/gc");
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(error = %failure, "repo/gc failed");
        let _ = lines.send(Ok(Bytes::from(format!("{}\n", json!({"Error": failure.clone()}))))).await;
        let _ = lines.send(Err(std::io::Error::other(failure))).await;
    });
    streamed_lines(rx)
}

pub(super) async fn repo_stat(req: &HttpRequest, state: &RpcState) -> HttpResponse {
    let (size, blocks) = match state.registry.usage().await {
        Ok(u) => u,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let max = state.storage_max.unwrap_or_else(|| disk_capacity(&state.data_dir));
    if flag(req, "size-only").unwrap_or(false) {
        return HttpResponse::Ok().json(json!({"RepoSize": size, "StorageMax": max}));
    }
    HttpResponse::Ok().json(json!({
        "RepoSize": size,
        "StorageMax": max,
        "NumObjects": blocks,
        "RepoPath": state.data_dir.display().to_string(),
        "Version": "fs-repo@16",
    }))
}

/// The size of the file system holding the data directory.
fn disk_capacity(path: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return 0 };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes into the struct we own; the path is NUL-terminated.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    st.f_blocks as u64 * st.f_frsize as u64
}
