//! What a GC removes: blocks no pin, blob or image reaches, and blobs' DAGs.

use super::*;

impl BlockIndex {
    /// Forgets every block held as a range of `blob`'s file (when that file is quarantined).
    pub async fn forget_blob(&self, blob: &Digest) -> Result<u64, BlockIndexError> {
        self.forget_blobs(vec![blob.clone()]).await
    }

    /// Forgets the blocks `blobs` hold, in one transaction (one sync for a GC's whole sweep),
    /// before their files go: the number of blocks forgotten. A leaf another owner's DAG holds
    /// too (two layers with a MiB in common) was recorded once, as a range of the first blob's
    /// file; it is copied inline, verified, and handed to that owner, so the other DAG stays
    /// whole. One that cannot be read back any more (a quarantined file) is forgotten.
    pub async fn forget_blobs(&self, blobs: Vec<Digest>) -> Result<u64, BlockIndexError> {
        let store = self.blobs.clone();
        self.run(move |conn| {
            // Immediate: it reads before it writes, and a deferred one could not upgrade once
            // another process (`af registry gc`, an import) had written meanwhile.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut forgotten = 0;
            for digest in &blobs {
                let blob = digest.to_string();
                // Each leaf of this blob that someone else holds too, with one such other owner.
                let shared: Vec<(Vec<u8>, i64, i64, i64, String, String)> = {
                    let mut s = tx.prepare_cached(
                        "SELECT b.multihash, b.codec, b.offset, b.length, o.owner_kind, o.owner FROM blocks b
                         JOIN block_owners o ON o.multihash = b.multihash AND NOT (o.owner_kind = 'blob' AND o.owner = ?1)
                         WHERE b.blob = ?1 GROUP BY b.multihash",
                    )?;
                    let rows = s.query_map([&blob], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?;
                    rows.collect::<Result<_, _>>()?
                };
                for (mh, codec, offset, len, kind, owner) in shared {
                    let Ok(hash) = cid::multihash::Multihash::from_bytes(&mh) else { continue };
                    let cid = Cid::new_v1(codec as u64, hash);
                    let Ok(Some(bytes)) = read_range(&store, &cid, digest, offset as u64, len as u64) else {
                        tracing::warn!(%cid, blob = %digest, "a leaf another DAG shares could not be read back from its blob; forgotten");
                        continue;
                    };
                    tx.execute(
                        "UPDATE blocks SET blob = NULL, offset = NULL, data = ?2, owner_kind = ?3, owner = ?4 WHERE multihash = ?1",
                        params![mh, bytes.as_ref(), kind, owner],
                    )?;
                    tx.execute("DELETE FROM block_owners WHERE multihash = ?1 AND owner_kind = ?2 AND owner = ?3", params![mh, kind, owner])?;
                }
                let gone: Vec<Vec<u8>> = {
                    let mut s = tx.prepare_cached("DELETE FROM blocks WHERE blob = ?1 RETURNING multihash")?;
                    let rows = s.query_map([&blob], |r| r.get(0))?;
                    rows.collect::<Result<_, _>>()?
                };
                for mh in &gone {
                    drop_owners(&tx, mh)?;
                }
                tx.execute("DELETE FROM block_owners WHERE owner_kind = 'blob' AND owner = ?1", [&blob])?;
                forgotten += gone.len() as u64;
            }
            tx.commit()?;
            Ok(forgotten)
        })
        .await
    }

    /// Up to `BATCH` blocks stored inline after `after` (multihash order): (multihash, data),
    /// for a scrub that pages through them.
    pub async fn inline_blocks_after(&self, after: Vec<u8>) -> Result<Vec<(Vec<u8>, Vec<u8>)>, BlockIndexError> {
        self.run(move |conn| {
            let mut s = conn.prepare_cached("SELECT multihash, CAST(data AS BLOB) FROM blocks WHERE data IS NOT NULL AND multihash > ?1 ORDER BY multihash LIMIT ?2")?;
            let rows = s.query_map(params![after, BATCH], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Deletes inline blocks older than `cutoff` that no DAG from `roots` reaches: their count
    /// and bytes, and with `list`, their CIDs. Leaves held as blob ranges go with their blob
    /// instead. `keep`: blocks kept for themselves, not for what they link to (direct pins).
    ///
    /// On a connection of its own, so lookups never wait for it: the mark walks from the roots
    /// reading only the nodes it reaches (memory: 16 bytes per block reached, [`reached`]), the
    /// sweep pages through old blocks and deletes in short transactions, each re-checking a
    /// block's age so one recorded again meanwhile stays.
    pub async fn sweep_unreachable(&self, roots: Vec<Cid>, keep: Vec<Cid>, cutoff: i64, list: bool) -> Result<(u64, u64, Vec<Cid>), BlockIndexError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = Connection::open(&path)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.execute_batch(crate::storage::SQLITE_MMAP)?;
            let mut reached = reached::Reached::new();
            // Only blocks of a linking codec are looked up; a raw block is marked without a read
            // (most blocks are leaves, and a leaf links to nothing).
            let mut stack: Vec<Vec<u8>> = Vec::new();
            let reach = |cid: &Cid, stack: &mut Vec<Vec<u8>>, reached: &mut reached::Reached| {
                let mh = cid.hash().to_bytes();
                reached.mark(&mh);
                if crate::ipld::links_possible(cid.codec()) {
                    stack.push(mh);
                }
            };
            for root in &roots {
                reach(root, &mut stack, &mut reached);
            }
            {
                // Every codec that links: dag-pb, DAG-CBOR, DAG-JSON, as stored. A block reached
                // only through a raw link is kept but not followed: that DAG holds it as bytes.
                let mut node = conn.prepare("SELECT CAST(data AS BLOB), codec FROM blocks WHERE multihash = ?1 AND data IS NOT NULL AND codec IN (?2, ?3, ?4)")?;
                while let Some(mh) = stack.pop() {
                    if !reached.expand(&mh) {
                        continue;
                    }
                    let found: Option<(Vec<u8>, i64)> = node
                        .query_row(params![mh, crate::unixfs::DAG_PB as i64, crate::ipld::DAG_CBOR as i64, crate::ipld::DAG_JSON as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    // An undecodable node is left for `verify` to report; its children are then
                    // unreachable from here, and old enough ones go.
                    let links = found.and_then(|(data, codec)| {
                        let cid = Cid::new_v1(codec as u64, cid::multihash::Multihash::from_bytes(&mh).ok()?);
                        crate::ipld::block_links(&cid, &data).ok()
                    });
                    for link in links.unwrap_or_default() {
                        reach(&link, &mut stack, &mut reached);
                    }
                }
            }
            for cid in &keep {
                reached.mark(&cid.hash().to_bytes());
            }
            let (mut count, mut bytes, mut removed) = (0u64, 0u64, Vec::new());
            let mut after: Vec<u8> = Vec::new();
            loop {
                let page: Vec<(Vec<u8>, i64, i64)> = conn
                    .prepare_cached(
                        "SELECT multihash, length, codec FROM blocks WHERE data IS NOT NULL AND created_at < ?1 AND multihash > ?2
                         ORDER BY multihash LIMIT ?3",
                    )?
                    .query_map(params![cutoff, after, BATCH], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?;
                let Some(last) = page.last() else { break };
                after = last.0.clone();
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                {
                    let mut delete = tx.prepare_cached("DELETE FROM blocks WHERE multihash = ?1 AND created_at < ?2")?;
                    for (mh, len, codec) in page.into_iter().filter(|(mh, _, _)| !reached.is_marked(mh)) {
                        if delete.execute(params![mh, cutoff])? > 0 {
                            drop_owners(&tx, &mh)?;
                            count += 1;
                            bytes += len as u64;
                            if list {
                                if let Ok(hash) = cid::multihash::Multihash::<64>::from_bytes(&mh) {
                                    removed.push(Cid::new_v1(codec as u64, hash));
                                }
                            }
                        }
                    }
                }
                tx.commit()?;
            }
            Ok((count, bytes, removed))
        })
        .await
        .map_err(|e| BlockIndexError::Task(e.to_string()))?
    }

    /// Forgets one block.
    pub async fn forget(&self, multihash: Vec<u8>) -> Result<(), BlockIndexError> {
        self.run(move |conn| {
            conn.execute("DELETE FROM blocks WHERE multihash = ?1", [&multihash])?;
            drop_owners(conn, &multihash)?;
            Ok(())
        })
        .await
    }
}
