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

    /// Deletes inline blocks older than `cutoff` that no DAG from the roots reaches: the roots
    /// `roots` brings a page at a time (the metadata's, read while the mark runs) and this index's own pins
    /// (recursive ones whole, direct ones their root block). Their count and bytes; with
    /// `list`, their CIDs go there a batch at a time, once the batch's lock is let go (a slow
    /// reader paces the sweep, holding nothing; one that left is no longer told). Leaves held as
    /// blob ranges go with their blob instead.
    ///
    /// Online: the mark holds no lock, so pushes, pulls and pins go on. What it cannot see is
    /// kept by construction: a block recorded or recorded again since `cutoff` is young (the
    /// delete re-checks each block's age), and a pin made since the mark read the pins (so a
    /// DAG already here, pinned without a block written) is read again, and its DAG marked,
    /// before each batch of deletions, under `hold` (the GC lock, exclusive: pinning holds it
    /// shared from its check that the blocks are here to its commit). So no batch deletes a
    /// block a pin committed before it names, and a pin committed after it finds the block
    /// gone and fetches it again or fails.
    ///
    /// On a connection of its own, so lookups never wait for it. Memory: 16 bytes a block of
    /// the index, sized once ([`reached`]), and one page of the sweep.
    pub async fn sweep_unreachable<G: Send + 'static>(
        &self,
        mut roots: tokio::sync::mpsc::Receiver<Vec<Cid>>,
        cutoff: i64,
        mut list: Option<tokio::sync::mpsc::Sender<Cid>>,
        hold: impl Fn() -> Result<G, BlockIndexError> + Send + 'static,
    ) -> Result<(u64, u64), BlockIndexError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = Connection::open(&path)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.execute_batch(crate::storage::SQLITE_MMAP)?;
            let started = std::time::Instant::now();
            let rows: i64 = conn.query_row("SELECT count(*) FROM blocks", [], |r| r.get(0))?;
            let counted = started.elapsed();
            let mut mark = Mark { reached: reached::Reached::with_capacity(rows as usize), stack: Vec::new() };
            // Pins made from here on are read again before each batch; the margin covers a
            // clock stepped back meanwhile.
            let pins_since = crate::clock::unix_now() - 60;
            {
                let mut node = conn.prepare(NODE)?;
                mark.pins(&conn, &mut node, 0)?;
                while let Some(page) = roots.blocking_recv() {
                    for root in &page {
                        mark.walk(&mut node, root)?;
                    }
                }
            }
            tracing::debug!(rows, table_mib = mark.reached.bytes() >> 20, count_ms = counted.as_millis() as u64, mark_ms = started.elapsed().as_millis() as u64, "gc mark done");
            // `removed`: one batch's CIDs at a time, sent on once the batch is done.
            let (mut count, mut bytes, mut removed) = (0u64, 0u64, Vec::new());
            let mut after: Vec<u8> = Vec::new();
            let mut victims: Vec<(Vec<u8>, i64, i64)> = Vec::new();
            loop {
                let page: Vec<(Vec<u8>, i64, i64)> = conn
                    .prepare_cached(
                        "SELECT multihash, length, codec FROM blocks WHERE data IS NOT NULL AND created_at < ?1 AND multihash > ?2
                         ORDER BY multihash LIMIT ?3",
                    )?
                    .query_map(params![cutoff, after, BATCH], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?;
                let last_page = (page.len() as i64) < BATCH;
                if let Some(last) = page.last() {
                    after = last.0.clone();
                }
                victims.extend(page.into_iter().filter(|(mh, _, _)| !mark.reached.is_marked(mh)));
                // Deleted once enough are found, and at the end.
                if victims.is_empty() && last_page {
                    break;
                }
                if victims.len() < DELETE_BATCH && !last_page {
                    continue;
                }
                let asked = std::time::Instant::now();
                let held = hold()?;
                tracing::trace!(waited_us = asked.elapsed().as_micros() as u64, victims = victims.len(), "gc batch holds the lock");
                mark.pins(&conn, &mut *conn.prepare_cached(NODE)?, pins_since)?;
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                {
                    let mut delete = tx.prepare_cached("DELETE FROM blocks WHERE multihash = ?1 AND created_at < ?2")?;
                    for (mh, len, codec) in victims.drain(..).filter(|(mh, _, _)| !mark.reached.is_marked(mh)) {
                        if delete.execute(params![mh, cutoff])? > 0 {
                            drop_owners(&tx, &mh)?;
                            count += 1;
                            bytes += len as u64;
                            if list.is_some() {
                                if let Ok(hash) = cid::multihash::Multihash::<64>::from_bytes(&mh) {
                                    removed.push(Cid::new_v1(codec as u64, hash));
                                }
                            }
                        }
                    }
                }
                tx.commit()?;
                drop(held);
                if let Some(to) = &list {
                    if removed.drain(..).try_for_each(|cid| to.blocking_send(cid)).is_err() {
                        list = None;
                    }
                }
                if last_page {
                    break;
                }
            }
            Ok((count, bytes))
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

/// Blocks deleted under one hold of the GC lock, at most (a few milliseconds of deletes).
const DELETE_BATCH: usize = 8192;

/// A node of a linking codec, for the mark: every codec that links (dag-pb, DAG-CBOR, DAG-JSON),
/// as stored. A block reached only through a raw link is kept but not followed: that DAG holds
/// it as bytes.
const NODE: &str = "SELECT CAST(data AS BLOB), codec FROM blocks WHERE multihash = ?1 AND data IS NOT NULL AND codec IN (?2, ?3, ?4)";

/// A GC's mark: what it reached, and the nodes whose links are still to follow.
struct Mark {
    reached: reached::Reached,
    stack: Vec<Vec<u8>>,
}

impl Mark {
    /// Marks the pins made since `since` (0: every pin): a recursive one with its DAG, a direct
    /// one alone.
    fn pins(&mut self, conn: &Connection, node: &mut rusqlite::Statement<'_>, since: i64) -> Result<(), BlockIndexError> {
        let pins: Vec<(String, bool)> =
            conn.prepare_cached("SELECT cid, recursive FROM pins WHERE pinned_at >= ?1")?.query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        for (cid, recursive) in pins {
            let Ok(cid) = cid.parse::<Cid>() else { continue };
            if recursive {
                self.walk(node, &cid)?;
            } else {
                self.reached.mark(&cid.hash().to_bytes());
            }
        }
        Ok(())
    }

    /// Marks `root` and everything it links to, as far as the index holds it. Only blocks of a
    /// linking codec are looked up; a raw block is marked without a read (most blocks are
    /// leaves, and a leaf links to nothing).
    fn walk(&mut self, node: &mut rusqlite::Statement<'_>, root: &Cid) -> Result<(), BlockIndexError> {
        self.reach(root);
        while let Some(mh) = self.stack.pop() {
            if !self.reached.expand(&mh) {
                continue;
            }
            let found: Option<(Vec<u8>, i64)> =
                node.query_row(params![mh, crate::unixfs::DAG_PB as i64, crate::ipld::DAG_CBOR as i64, crate::ipld::DAG_JSON as i64], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
            // An undecodable node is left for `verify` to report; its children are then
            // unreachable from here, and old enough ones go.
            let links = found.and_then(|(data, codec)| {
                let cid = Cid::new_v1(codec as u64, cid::multihash::Multihash::from_bytes(&mh).ok()?);
                crate::ipld::block_links(&cid, &data).ok()
            });
            for link in links.unwrap_or_default() {
                self.reach(&link);
            }
        }
        Ok(())
    }

    fn reach(&mut self, cid: &Cid) {
        let mh = cid.hash().to_bytes();
        if crate::ipld::links_possible(cid.codec()) {
            self.stack.push(mh);
        } else {
            self.reached.mark(&mh);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unixfs::{import_bytes, Profile};

    /// A DAG already here, pinned while a GC marks (so no block of it is written again and each
    /// stays old), survives that GC: the sweep marks pins made since its mark began before it
    /// deletes. The channel of roots is the mark's clock: it reads the pins first, then waits
    /// for roots, so the pin lands after the mark read the pins and before any deletion.
    #[tokio::test]
    async fn a_dag_pinned_while_the_mark_runs_keeps_every_block() {
        let dir = tempfile::tempdir().unwrap();
        let index = BlockIndex::open(&dir.path().join("blocks.sqlite"), crate::storage::BlobStore::open(dir.path()).unwrap()).unwrap();
        let dag = |seed: u8| import_bytes(&(0..600 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8 ^ seed).collect::<Vec<u8>>(), Profile::KuboV1);
        let ((pinned, pinned_blocks), (garbage, garbage_blocks)) = (dag(3), dag(7));
        assert!(pinned_blocks.len() > 2 && garbage_blocks.len() > 2);
        index.record_inline(pinned_blocks.clone(), Owner::Nothing).await.unwrap();
        index.record_inline(garbage_blocks.clone(), Owner::Nothing).await.unwrap();

        // Every block counts as old: the cutoff is an hour ahead.
        let (roots, rx) = tokio::sync::mpsc::channel::<Vec<Cid>>(1);
        // Room for every CID: the sweep sends them before this test reads them.
        let (listed, mut removed_rx) = tokio::sync::mpsc::channel(garbage_blocks.len() + pinned_blocks.len());
        let sweep = index.sweep_unreachable(rx, crate::clock::unix_now() + 3600, Some(listed), || Ok(()));
        let pinner = &index;
        let pin_during_the_mark = async move {
            // The first page fills the channel; the second goes in only once the mark took the
            // first, which it does after reading the pins.
            roots.send(Vec::new()).await.unwrap();
            roots.send(Vec::new()).await.unwrap();
            pinner.pin(&pinned.cid, true, false).await.unwrap();
        };
        let (swept, ()) = tokio::join!(sweep, pin_during_the_mark);
        let (count, _) = swept.unwrap();
        let mut removed = Vec::new();
        while let Some(cid) = removed_rx.recv().await {
            removed.push(cid);
        }

        for (cid, _) in &pinned_blocks {
            assert!(index.has(cid).await.unwrap(), "{cid} of the DAG pinned during the mark was deleted");
        }
        // The sweep did run: the unpinned DAG went, block for block.
        assert_eq!(count as usize, garbage_blocks.len());
        for (cid, _) in &garbage_blocks {
            assert!(!index.has(cid).await.unwrap() && removed.contains(cid), "{cid} of the unpinned DAG was kept");
        }
        assert_ne!(pinned.cid, garbage.cid);
    }
}
