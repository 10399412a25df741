-- When a pin was made or last upgraded (seconds since the epoch): a GC marks without a lock and
-- reads the pins made since its mark began again before each batch it deletes, so a DAG pinned
-- meanwhile is never swept. Existing pins are older than any GC to come.
ALTER TABLE pins ADD COLUMN pinned_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX pins_by_time ON pins(pinned_at);
