-- A user's identity is more than its name: a user removed and created again under the same
-- name gets a new uid, so credentials of the old one (cached logins, JWTs) do not carry over.
ALTER TABLE users ADD COLUMN uid TEXT NOT NULL DEFAULT '';
UPDATE users SET uid = lower(hex(randomblob(8)));
-- What minted a refresh token: 'token:<id>' (an access token) or 'password:<stamp>' (the
-- password hash at the time). The refresh token lives no longer than it.
ALTER TABLE tokens ADD COLUMN parent TEXT;
-- Refresh tokens minted before parents were recorded answer to nothing: end them.
UPDATE tokens SET revoked = 1 WHERE kind = 'refresh';
-- Open upload sessions are counted per owner (a user, or an address for anonymous pushes).
ALTER TABLE upload_sessions ADD COLUMN owner TEXT NOT NULL DEFAULT '';
CREATE INDEX upload_sessions_by_owner ON upload_sessions(owner);
