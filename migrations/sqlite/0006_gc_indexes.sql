-- A GC keeps a repository's link to a blob while a manifest of that repository references it:
-- found by (repository, child), not by a scan of all the repository's references for each link
-- (which made a GC grow with the square of a repository's size).
CREATE INDEX manifest_references_by_child ON manifest_references(repository_id, child_digest, kind);
-- Deleting a manifest deletes the tags naming it (ON DELETE CASCADE): found by manifest, not by a
-- scan of the repository's tags for each manifest deleted.
CREATE INDEX tags_by_manifest ON tags(repository_id, manifest_digest);
