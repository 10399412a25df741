-- A counter every change that can alter what may leave a node bumps (visibility, deletes,
-- mounts, new content, GC). Nodes and the CLI sharing this database compare it to forget the
-- exposure answers they cached.
CREATE TABLE change_generation (id INTEGER PRIMARY KEY CHECK (id = 1), generation BIGINT NOT NULL);
INSERT INTO change_generation (id, generation) VALUES (1, 0);
-- The generation each serving node has seen: a visibility change waits until every live node
-- has seen it, so no node serves by an answer it cached before the change.
ALTER TABLE nodes ADD COLUMN seen_generation BIGINT NOT NULL DEFAULT 0;
