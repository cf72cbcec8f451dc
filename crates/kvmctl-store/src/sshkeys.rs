//! SSH public keys saved in users' profiles (`/v1/users/{name}/ssh-keys`).

use crate::{unix_now, DataStore, StoreError};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKeyRecord {
    pub id: String,
    pub user: String,
    pub name: String,
    pub public_key: String,
    pub fingerprint: String,
    pub created_at: i64,
}

fn from_row(r: sqlx::any::AnyRow) -> Result<SshKeyRecord, StoreError> {
    Ok(SshKeyRecord {
        id: r.try_get("id")?,
        user: r.try_get("user_name")?,
        name: r.try_get("name")?,
        public_key: r.try_get("public_key")?,
        fingerprint: r.try_get("fingerprint")?,
        created_at: r.try_get("created_at")?,
    })
}

impl DataStore {
    /// Saves a key for `user`, unless they have `max` already (then `Ok(false)`). The same
    /// key (fingerprint) twice is `Exists`.
    pub async fn ssh_key_insert(&self, key: &SshKeyRecord, max: u32) -> Result<bool, StoreError> {
        let mut tx = self.admission().await?;
        let done = sqlx::query(
            "INSERT INTO ssh_keys (id, user_name, name, public_key, fingerprint, created_at) \
             SELECT $1, $2, $3, $4, $5, $6 WHERE (SELECT COUNT(*) FROM ssh_keys WHERE user_name = $2) < $7",
        )
        .bind(&key.id)
        .bind(&key.user)
        .bind(&key.name)
        .bind(&key.public_key)
        .bind(&key.fingerprint)
        .bind(unix_now())
        .bind(i64::from(max))
        .execute(&mut *tx)
        .await
        .map_err(crate::unique("ssh key", &key.fingerprint))?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// `user`'s keys, oldest first.
    pub async fn ssh_key_list(&self, user: &str) -> Result<Vec<SshKeyRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM ssh_keys WHERE user_name = $1 ORDER BY created_at, id").bind(user).fetch_all(&self.pool).await?;
        rows.into_iter().map(from_row).collect()
    }

    /// Removes `user`'s key `id`; false when they have no such key.
    pub async fn ssh_key_delete(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM ssh_keys WHERE user_name = $1 AND id = $2").bind(user).bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }
}
