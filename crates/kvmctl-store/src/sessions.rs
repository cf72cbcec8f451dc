//! Web console passwords and sessions. A session is a row of `tokens` of kind `session`
//! (hashed like API tokens, with an expiry, revoked on logout); `token_list` shows API
//! tokens only. A password is an argon2id PHC string, hashed and checked by the daemon.

use crate::{unix_now, DataStore, StoreError};
use sqlx::Row;

impl DataStore {
    /// Opens a session of `user`: token `id` with the secret's hash, until `expires_at`.
    pub async fn session_insert(&self, id: &str, user: &str, hash: &str, expires_at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tokens (id, user_name, description, hash, created_at, expires_at, revoked_at, last_used_at, kind) \
             VALUES ($1, $2, 'web console session', $3, $4, $5, NULL, NULL, 'session')",
        )
        .bind(id)
        .bind(user)
        .bind(hash)
        .bind(unix_now())
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(crate::unique("session", id))?;
        Ok(())
    }

    /// Ends session `id` (logout); false when there is no such open session.
    pub async fn session_revoke(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND kind = 'session' AND revoked_at IS NULL")
            .bind(id)
            .bind(unix_now())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends every session of `user` but `keep` (a password change ends the others).
    pub async fn sessions_revoke_user(&self, user: &str, keep: Option<&str>) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE tokens SET revoked_at = $3 WHERE user_name = $1 AND kind = 'session' AND revoked_at IS NULL AND ($2 IS NULL OR id <> $2)",
        )
        .bind(user)
        .bind(keep)
        .bind(unix_now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Whether token `id` is a session (not an API token).
    pub async fn token_is_session(&self, id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT kind FROM tokens WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get::<String, _>("kind")).transpose()?.as_deref() == Some("session"))
    }

    /// `user`'s password hash and whether it must be changed; `None` when the user has no
    /// password (or does not exist).
    pub async fn user_password(&self, user: &str) -> Result<Option<(String, bool)>, StoreError> {
        let row =
            sqlx::query("SELECT password_hash, password_change FROM users WHERE name = $1").bind(user).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(None) };
        let hash: Option<String> = row.try_get("password_hash")?;
        Ok(hash.map(|h| (h, row.try_get::<i64, _>("password_change").unwrap_or(0) != 0)))
    }

    /// Sets `user`'s password hash (`must_change`: set by an admin); false when there is no
    /// such user.
    pub async fn user_password_set(&self, user: &str, hash: &str, must_change: bool) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET password_hash = $2, password_change = $3 WHERE name = $1")
            .bind(user)
            .bind(hash)
            .bind(i64::from(must_change))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
