-- IPNS records this node holds (put through the RPC's routing/put, or made by name/publish for
-- its own key): the newest valid one per name, as received, for the gateway to resolve and serve.
CREATE TABLE ipns_records (
    name        TEXT PRIMARY KEY,
    record      BLOB NOT NULL,
    stored_at   INTEGER NOT NULL DEFAULT (unixepoch())
) WITHOUT ROWID;
