//! [`AuthStore`] on SQLite.

use super::auth::{AuthStore, Role, TokenKind, TokenRecord, User, Visibility};
use super::sqlite::{backend, now, SqliteStore};
use super::{MetaResult, MetadataError};
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

fn role(s: String) -> MetaResult<Role> {
    s.parse().map_err(|e| MetadataError::Corrupt(format!("{e}")))
}

const TOKEN_COLS: &str = "t.id, u.name, t.kind, t.secret_hash, t.scope, t.description, t.expires_at, t.revoked, t.created_at, t.parent";

type TokenRow = (String, String, String, String, String, Option<String>, Option<i64>, bool, i64, Option<String>);

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?))
}

fn token(row: TokenRow) -> MetaResult<TokenRecord> {
    let (id, user, kind, secret_hash, scope, description, expires_at, revoked, created_at, parent) = row;
    let kind = match kind.as_str() {
        "access" => TokenKind::Access,
        "refresh" => TokenKind::Refresh,
        other => return Err(MetadataError::Corrupt(format!("token kind {other:?}"))),
    };
    Ok(TokenRecord { id, user, kind, secret_hash, scope: role(scope)?, description, expires_at, revoked, created_at, parent })
}

fn name_taken(tx: &rusqlite::Transaction<'_>, name: &str) -> MetaResult<bool> {
    tx.query_row("SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1) OR EXISTS (SELECT 1 FROM organisations WHERE name = ?1)", [name], |r| r.get(0)).map_err(backend)
}

#[async_trait]
impl AuthStore for SqliteStore {
    async fn create_user(&self, name: &str, password_hash: Option<&str>, admin: bool) -> MetaResult<bool> {
        let (name, hash) = (name.to_string(), password_hash.map(str::to_string));
        self.write(move |tx| {
            if name_taken(tx, &name)? {
                return Ok(false);
            }
            tx.execute("INSERT INTO users (name, password_hash, is_admin, created_at, uid) VALUES (?1, ?2, ?3, ?4, lower(hex(randomblob(8))))", params![name, hash, admin, now()])
                .map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> MetaResult<bool> {
        let (name, hash) = (name.to_string(), password_hash.to_string());
        self.write(move |tx| Ok(tx.execute("UPDATE users SET password_hash = ?2 WHERE name = ?1", params![name, hash]).map_err(backend)? > 0)).await
    }

    async fn get_user(&self, name: &str) -> MetaResult<Option<User>> {
        let name = name.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT name, password_hash, is_admin, uid FROM users WHERE name = ?1")
                .and_then(|mut s| s.query_row([name], |r| Ok(User { name: r.get(0)?, password_hash: r.get(1)?, is_admin: r.get(2)?, uid: r.get(3)? })).optional())
                .map_err(backend)
        })
        .await
    }

    async fn list_users(&self) -> MetaResult<Vec<User>> {
        self.read(|c| {
            let mut s = c.prepare("SELECT name, password_hash, is_admin, uid FROM users ORDER BY name").map_err(backend)?;
            let rows = s.query_map([], |r| Ok(User { name: r.get(0)?, password_hash: r.get(1)?, is_admin: r.get(2)?, uid: r.get(3)? })).map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn remove_user(&self, name: &str) -> MetaResult<bool> {
        let name = name.to_string();
        self.write(move |tx| Ok(tx.execute("DELETE FROM users WHERE name = ?1", [name]).map_err(backend)? > 0)).await
    }

    async fn create_organisation(&self, name: &str) -> MetaResult<bool> {
        let name = name.to_string();
        self.write(move |tx| {
            if name_taken(tx, &name)? {
                return Ok(false);
            }
            tx.execute("INSERT INTO organisations (name, created_at) VALUES (?1, ?2)", params![name, now()]).map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn set_member(&self, organisation: &str, user: &str, role: Option<Role>) -> MetaResult<bool> {
        let (org, user) = (organisation.to_string(), user.to_string());
        self.write(move |tx| {
            let ids: Option<(i64, i64)> = tx
                .query_row("SELECT o.id, u.id FROM organisations o, users u WHERE o.name = ?1 AND u.name = ?2", params![org, user], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(backend)?;
            let Some((org_id, user_id)) = ids else { return Ok(false) };
            match role {
                Some(role) => tx.execute(
                    "INSERT INTO organisation_members (organisation_id, user_id, role) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO UPDATE SET role = excluded.role",
                    params![org_id, user_id, role.as_str()],
                ),
                None => tx.execute("DELETE FROM organisation_members WHERE organisation_id = ?1 AND user_id = ?2", params![org_id, user_id]),
            }
            .map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn namespace_role(&self, namespace: &str, user: &str) -> MetaResult<Option<Role>> {
        if namespace == user {
            return Ok(Some(Role::Admin));
        }
        let (namespace, user) = (namespace.to_string(), user.to_string());
        let found: Option<String> = self
            .read(move |c| {
                c.prepare_cached(
                    "SELECT m.role FROM organisation_members m
                     JOIN organisations o ON o.id = m.organisation_id
                     JOIN users u ON u.id = m.user_id
                     WHERE o.name = ?1 AND u.name = ?2",
                )
                .and_then(|mut s| s.query_row(params![namespace, user], |r| r.get(0)).optional())
                .map_err(backend)
            })
            .await?;
        found.map(role).transpose()
    }

    async fn create_token(&self, t: &TokenRecord) -> MetaResult<()> {
        let t = t.clone();
        self.write(move |tx| {
            let kind = match t.kind {
                TokenKind::Access => "access",
                TokenKind::Refresh => "refresh",
            };
            let n = tx
                .execute(
                    "INSERT INTO tokens (id, user_id, kind, secret_hash, scope, description, expires_at, revoked, created_at, parent)
                     SELECT ?1, id, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9 FROM users WHERE name = ?2",
                    params![t.id, t.user, kind, t.secret_hash, t.scope.as_str(), t.description, t.expires_at, t.created_at, t.parent],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(MetadataError::Backend(format!("no user {:?}", t.user)));
            }
            Ok(())
        })
        .await
    }

    async fn get_token(&self, id: &str) -> MetaResult<Option<TokenRecord>> {
        let id = id.to_string();
        let row = self
            .read(move |c| {
                c.prepare_cached(&format!("SELECT {TOKEN_COLS} FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?1"))
                    .and_then(|mut s| s.query_row([id], token_row).optional())
                    .map_err(backend)
            })
            .await?;
        row.map(token).transpose()
    }

    async fn list_tokens(&self, user: Option<&str>) -> MetaResult<Vec<TokenRecord>> {
        let user = user.map(str::to_string);
        let rows = self
            .read(move |c| {
                let mut s = c
                    .prepare(&format!(
                        "SELECT {TOKEN_COLS} FROM tokens t JOIN users u ON u.id = t.user_id
                         WHERE (?1 IS NULL OR u.name = ?1) ORDER BY u.name, t.created_at, t.id"
                    ))
                    .map_err(backend)?;
                let rows = s.query_map([user], token_row).map_err(backend)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(backend)
            })
            .await?;
        rows.into_iter().map(token).collect()
    }

    async fn revoke_token(&self, id: &str) -> MetaResult<bool> {
        let id = id.to_string();
        self.write(move |tx| Ok(tx.execute("UPDATE tokens SET revoked = 1 WHERE id = ?1 AND revoked = 0", [id]).map_err(backend)? > 0)).await
    }

    async fn signing_key(&self, candidate: Vec<u8>) -> MetaResult<Vec<u8>> {
        self.write(move |tx| {
            tx.execute("INSERT INTO settings (name, value) VALUES ('token-signing-key', ?1) ON CONFLICT DO NOTHING", [candidate]).map_err(backend)?;
            tx.query_row("SELECT value FROM settings WHERE name = 'token-signing-key'", [], |r| r.get(0)).map_err(backend)
        })
        .await
    }
}

#[async_trait]
impl Visibility for SqliteStore {
    async fn is_public(&self, repo: &str) -> MetaResult<Option<bool>> {
        let repo = repo.to_string();
        let v: Option<String> = self
            .read(move |c| c.prepare_cached("SELECT visibility FROM repositories WHERE name = ?1").and_then(|mut s| s.query_row([repo], |r| r.get(0)).optional()).map_err(backend))
            .await?;
        Ok(v.map(|v| v == "public"))
    }
    async fn cid_is_public(&self, cid: &str) -> MetaResult<bool> {
        let cid = cid.to_string();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM blobs b JOIN repository_blobs rb ON rb.digest = b.digest
                                JOIN repositories r ON r.id = rb.repository_id
                                WHERE b.root_cid = ?1 AND b.missing = 0 AND r.visibility = 'public')
                     OR EXISTS (SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repository_id
                                WHERE m.image_cid = ?1 AND r.visibility = 'public')
                     OR EXISTS (SELECT 1 FROM tags t JOIN repositories r ON r.id = t.repository_id
                                WHERE t.image_cid = ?1 AND r.visibility = 'public')",
            )
            .and_then(|mut s| s.query_row([cid], |r| r.get(0)))
            .map_err(backend)
        })
        .await
    }
    async fn blob_is_public(&self, digest: &str) -> MetaResult<bool> {
        let digest = digest.to_string();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
                                JOIN blobs b ON b.digest = rb.digest
                                WHERE rb.digest = ?1 AND b.missing = 0 AND r.visibility = 'public')",
            )
            .and_then(|mut s| s.query_row([digest], |r| r.get(0)))
            .map_err(backend)
        })
        .await
    }
}
