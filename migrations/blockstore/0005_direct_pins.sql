-- Direct pins (`pin/add?recursive=false`, as Kubo's): only the root block is kept by a GC, and
-- the blocks imported with it are public while it stands. Existing pins are recursive.
ALTER TABLE pins ADD COLUMN recursive INTEGER NOT NULL DEFAULT 1;
