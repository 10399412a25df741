-- Metadata of the registry: repositories, blobs and their links, manifests (verbatim bytes), tags,
-- and upload sessions. Blob bytes live on disk, never here.

CREATE TABLE repositories (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    visibility  TEXT NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'public')),
    created_at  INTEGER NOT NULL
);

-- A blob the node has verified and stored; its file is blobs/<alg>/<xx>/<hex>. root_cid is the
-- root of its UnixFS DAG. `missing` is set when a scrub found its file corrupt or gone: it is
-- then served nowhere until it is pushed again.
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL CHECK (size >= 0),
    root_cid    TEXT NOT NULL,
    missing     INTEGER NOT NULL DEFAULT 0 CHECK (missing IN (0, 1)),
    created_at  INTEGER NOT NULL
);

-- Which repositories may serve which blobs. `touched_at`: when the blob was last pushed,
-- mounted or read here (refreshed at most every few minutes); a GC spares links touched within
-- its grace period, so a client that just saw the blob can still reference it.
CREATE TABLE repository_blobs (
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest        TEXT NOT NULL REFERENCES blobs(digest),
    touched_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
) WITHOUT ROWID;
CREATE INDEX repository_blobs_by_digest ON repository_blobs(digest);
CREATE INDEX blobs_by_root_cid ON blobs(root_cid);

CREATE TABLE manifests (
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,
    content       BLOB NOT NULL,
    image_cid     TEXT,  -- the untagged image DAG's root (crate::image); NULL when sparse
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX manifests_by_subject ON manifests(repository_id, subject) WHERE subject IS NOT NULL;
CREATE INDEX manifests_by_image_cid ON manifests(image_cid) WHERE image_cid IS NOT NULL;

-- What each manifest references: blobs (config, layers) and manifests (index children).
CREATE TABLE manifest_references (
    repository_id   INTEGER NOT NULL,
    manifest_digest TEXT NOT NULL,
    child_digest    TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repository_id, manifest_digest, child_digest),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;

-- A tag can only point at a manifest that exists: deleting the manifest deletes its tags.
CREATE TABLE tags (
    repository_id   INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    image_cid       TEXT,  -- the image DAG's root naming this tag
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX tags_by_image_cid ON tags(image_cid) WHERE image_cid IS NOT NULL;

-- Manifests kept by a GC even when untagged (`af registry pin`).
CREATE TABLE pins (
    repository_id   INTEGER NOT NULL,
    manifest_digest TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (repository_id, manifest_digest),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;

-- Upload sessions; the data itself is uploads/<id>. `finishing_digest` is set, verified, just
-- before the data file is renamed into blobs/, so a crash between that rename and the commit
-- can be completed at the next start instead of leaving an unreferenced blob file.
CREATE TABLE upload_sessions (
    id               TEXT PRIMARY KEY,
    repository       TEXT NOT NULL,
    finishing_digest TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Accounts. A user owns the namespace (first path segment) of its own name. password_hash is
-- an argon2 PHC string, NULL for a user that logs in only with tokens.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    is_admin      INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    created_at    INTEGER NOT NULL
);

-- Organisations own the namespace of their name; members have a role in it.
CREATE TABLE organisations (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE organisation_members (
    organisation_id INTEGER NOT NULL REFERENCES organisations(id) ON DELETE CASCADE,
    user_id         INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role            TEXT NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    PRIMARY KEY (organisation_id, user_id)
) WITHOUT ROWID;

-- Access and refresh tokens: the secret is shown once and kept only as an argon2 hash.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    secret_hash TEXT NOT NULL,
    scope       TEXT NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    description TEXT,
    expires_at  INTEGER,
    revoked     INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    created_at  INTEGER NOT NULL
);
CREATE INDEX tokens_by_user ON tokens(user_id);

-- Node-wide secrets shared by every node on this database (the token signing key).
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

-- Nodes sharing this metadata (several only on PostgreSQL): where each answers, and when it was
-- last alive; and which nodes hold which blob files, so a node without a blob can send a client
-- to one that has it.
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    api_url      TEXT NOT NULL,
    heartbeat_at INTEGER NOT NULL
);

CREATE TABLE blob_holders (
    digest  TEXT NOT NULL,
    node_id TEXT NOT NULL,
    PRIMARY KEY (digest, node_id)
) WITHOUT ROWID;
