-- The metadata schema on PostgreSQL: the same tables, keys and constraints as
-- migrations/sqlite/0001_initial.sql (see the comments there), in PostgreSQL's types. Applied
-- once, under an advisory lock, by the first node that starts on an empty database.

CREATE TABLE repositories (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    visibility  TEXT NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'public')),
    created_at  BIGINT NOT NULL
);

CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        BIGINT NOT NULL CHECK (size >= 0),
    root_cid    TEXT NOT NULL,
    missing     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL
);
CREATE INDEX blobs_by_root_cid ON blobs(root_cid);

CREATE TABLE repository_blobs (
    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest        TEXT NOT NULL REFERENCES blobs(digest),
    touched_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX repository_blobs_by_digest ON repository_blobs(digest);

CREATE TABLE manifests (
    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,
    content       BYTEA NOT NULL,
    image_cid     TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX manifests_by_subject ON manifests(repository_id, subject) WHERE subject IS NOT NULL;
CREATE INDEX manifests_by_image_cid ON manifests(image_cid) WHERE image_cid IS NOT NULL;

CREATE TABLE manifest_references (
    repository_id   BIGINT NOT NULL,
    manifest_digest TEXT NOT NULL,
    child_digest    TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repository_id, manifest_digest, child_digest),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
);

CREATE TABLE tags (
    repository_id   BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    image_cid       TEXT,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX tags_by_image_cid ON tags(image_cid) WHERE image_cid IS NOT NULL;

CREATE TABLE pins (
    repository_id   BIGINT NOT NULL,
    manifest_digest TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (repository_id, manifest_digest),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
);

CREATE TABLE upload_sessions (
    id               TEXT PRIMARY KEY,
    repository       TEXT NOT NULL,
    finishing_digest TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL
);

CREATE TABLE organisations (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE organisation_members (
    organisation_id BIGINT NOT NULL REFERENCES organisations(id) ON DELETE CASCADE,
    user_id         BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role            TEXT NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    PRIMARY KEY (organisation_id, user_id)
);

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    secret_hash TEXT NOT NULL,
    scope       TEXT NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    description TEXT,
    expires_at  BIGINT,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL
);
CREATE INDEX tokens_by_user ON tokens(user_id);

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    api_url      TEXT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

CREATE TABLE blob_holders (
    digest  TEXT NOT NULL,
    node_id TEXT NOT NULL,
    PRIMARY KEY (digest, node_id)
);
