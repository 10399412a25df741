//! Pins (recursive and direct) and the tags a pinned image DAG gave.

use super::*;

/// A tag a pinned image DAG gave (or, `conflict`, would have moved to) manifest `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinTag {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub conflict: bool,
}

impl BlockIndex {
    /// Pins `cid`: recursively (a GC keeps its whole DAG) or directly (its root block only). A
    /// recursive pin of a direct one makes it recursive; never the other way round. A pin
    /// `trusted_only` (its blocks came from a trusted peer) stays so.
    pub async fn pin(&self, cid: &Cid, recursive: bool, trusted_only: bool) -> Result<(), BlockIndexError> {
        let cid = cid.to_string();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO pins (cid, recursive, trusted_only, pinned_at) VALUES (?1, ?2, ?3, unixepoch()) ON CONFLICT DO UPDATE SET recursive = MAX(recursive, excluded.recursive), \
                 trusted_only = MAX(trusted_only, excluded.trusted_only), pinned_at = excluded.pinned_at",
                params![cid, recursive as i64, trusted_only as i64],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn unpin(&self, cid: &Cid) -> Result<bool, BlockIndexError> {
        let cid = cid.to_string();
        self.run(move |conn| Ok(conn.execute("DELETE FROM pins WHERE cid = ?1", [cid])? > 0)).await
    }

    /// The recursive pins.
    pub async fn pins(&self) -> Result<Vec<String>, BlockIndexError> {
        self.pins_of_kind(true).await
    }

    /// The direct pins.
    pub async fn direct_pins(&self) -> Result<Vec<String>, BlockIndexError> {
        self.pins_of_kind(false).await
    }

    async fn pins_of_kind(&self, recursive: bool) -> Result<Vec<String>, BlockIndexError> {
        self.read(move |conn| {
            let mut s = conn.prepare("SELECT cid FROM pins WHERE recursive = ?1 ORDER BY cid")?;
            let rows = s.query_map([recursive as i64], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<String>, _>>()?)
        })
        .await
    }

    /// Records what pinning the image DAG `root` did to tags (replacing what was recorded).
    pub async fn record_pin_tags(&self, root: &Cid, tags: Vec<PinTag>) -> Result<(), BlockIndexError> {
        let root = root.to_string();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM pin_tags WHERE root = ?1", [&root])?;
            for t in &tags {
                tx.execute("INSERT INTO pin_tags (root, repository, tag, digest, conflict) VALUES (?1, ?2, ?3, ?4, ?5)", params![root, t.repository, t.tag, t.digest, t.conflict])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// What pins did to tags: of `root`, or of every pin.
    pub async fn pin_tags(&self, root: Option<&Cid>) -> Result<Vec<(String, PinTag)>, BlockIndexError> {
        let root = root.map(Cid::to_string);
        self.read(move |conn| {
            let mut s = conn.prepare("SELECT root, repository, tag, digest, conflict FROM pin_tags WHERE ?1 IS NULL OR root = ?1 ORDER BY root, repository, tag")?;
            let rows = s.query_map([root], |r| Ok((r.get(0)?, PinTag { repository: r.get(1)?, tag: r.get(2)?, digest: r.get(3)?, conflict: r.get(4)? })))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Forgets what pin `root` did to tags.
    pub async fn forget_pin_tags(&self, root: &Cid) -> Result<(), BlockIndexError> {
        let root = root.to_string();
        self.run(move |conn| {
            conn.execute("DELETE FROM pin_tags WHERE root = ?1", [root])?;
            Ok(())
        })
        .await
    }

    /// Whether `cid` is pinned here.
    /// Whether `cid` is pinned and what it holds may go to strangers (it came from none of the
    /// peers this node trusts).
    pub async fn is_pinned_for_anyone(&self, cid: &Cid) -> Result<bool, BlockIndexError> {
        let cid = cid.to_string();
        self.read(move |conn| Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM pins WHERE cid = ?1 AND trusted_only = 0)", [cid], |r| r.get(0))?)).await
    }

    pub async fn is_pinned(&self, cid: &Cid) -> Result<bool, BlockIndexError> {
        let cid = cid.to_string();
        self.read(move |conn| Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM pins WHERE cid = ?1)", [cid], |r| r.get(0))?)).await
    }
}
