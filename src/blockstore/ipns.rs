//! IPNS records this node holds, kept when newer.

use super::*;

impl BlockIndex {
    /// The IPNS record held for `name` (its canonical form), as received.
    pub async fn ipns_record(&self, name: &str) -> Result<Option<Vec<u8>>, BlockIndexError> {
        let name = name.to_string();
        self.read(move |conn| Ok(conn.query_row("SELECT record FROM ipns_records WHERE name = ?1", [name], |r| r.get(0)).optional()?)).await
    }

    /// Keeps `record` for `name` if `replaces` says it replaces the record held (given it).
    pub async fn put_ipns_record(&self, name: &str, record: Vec<u8>, replaces: impl FnOnce(Option<&[u8]>) -> bool + Send + 'static) -> Result<bool, BlockIndexError> {
        let name = name.to_string();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let held: Option<Vec<u8>> = tx.query_row("SELECT record FROM ipns_records WHERE name = ?1", [&name], |r| r.get(0)).optional()?;
            if !replaces(held.as_deref()) {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO ipns_records (name, record) VALUES (?1, ?2) ON CONFLICT DO UPDATE SET record = excluded.record, stored_at = unixepoch()",
                params![name, record],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}
