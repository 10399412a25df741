//! A block's owners besides the first: what else it was recorded for.

use super::*;

impl BlockIndex {
    /// What `cid` was recorded for besides the owner [`BlockIndex::locate_owned`] gives.
    pub async fn other_owners(&self, cid: &Cid) -> Result<Vec<Owner>, BlockIndexError> {
        let mh = cid.hash().to_bytes();
        self.lookup(move |conn| {
            let mut s = conn.prepare_cached("SELECT owner_kind, owner FROM block_owners WHERE multihash = ?1")?;
            let rows = s.query_map([mh], |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<String>>(1)?)))?;
            rows.map(|row| {
                let (kind, value) = row?;
                Owner::from_columns(kind.as_deref(), value)
            })
            .collect()
        })
        .await
    }
}
