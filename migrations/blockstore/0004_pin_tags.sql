-- What pinning an image DAG (an OCI image layout, e.g. through IPFS Cluster) did to the registry's
-- tags: each tag the pinned image gave a manifest (conflict = 0), or would have moved off another
-- manifest and left where it was (conflict = 1). Unpinning removes the tags the pin gave that
-- still point where it put them.
CREATE TABLE pin_tags (
    root       TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag        TEXT NOT NULL,
    digest     TEXT NOT NULL,
    conflict   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (root, repository, tag)
) WITHOUT ROWID;
