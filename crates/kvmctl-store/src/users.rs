//! `users`, `tokens` and `quotas`: who may call the daemon and how much each may hold.
//! Tokens are stored as the SHA-256 of their secret half only.

use crate::{unique, unix_now, DataStore, StoreError};
use kvmctl_core::{QuotaLimits, Usage};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    /// `admin` or `user`.
    pub role: String,
    pub disabled: bool,
    pub custom_sizing: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub user_name: String,
    pub description: String,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// A user's overrides of the default quota; `None` keeps the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaOverride {
    pub vms: Option<u64>,
    pub vcpus: Option<u64>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u64>,
    pub forwards: Option<u64>,
}

impl QuotaOverride {
    /// The limits in force: each override, else the default.
    pub fn over(&self, d: &QuotaLimits) -> QuotaLimits {
        QuotaLimits {
            vms: self.vms.unwrap_or(d.vms),
            vcpus: self.vcpus.unwrap_or(d.vcpus),
            memory_mib: self.memory_mib.unwrap_or(d.memory_mib),
            disk_gib: self.disk_gib.unwrap_or(d.disk_gib),
            forwards: self.forwards.unwrap_or(d.forwards),
        }
    }
}

fn user_from_row(row: sqlx::any::AnyRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        custom_sizing: row.try_get::<i64, _>("custom_sizing")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

fn token_from_row(row: sqlx::any::AnyRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: row.try_get("id")?,
        user_name: row.try_get("user_name")?,
        description: row.try_get("description")?,
        hash: row.try_get("hash")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

const TOKEN_COLUMNS: &str = "id, user_name, description, hash, created_at, expires_at, revoked_at, last_used_at";

impl DataStore {
    pub async fn user_insert(&self, u: &UserRecord) -> Result<UserRecord, StoreError> {
        sqlx::query("INSERT INTO users (name, role, disabled, custom_sizing, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&u.name)
            .bind(&u.role)
            .bind(u.disabled as i64)
            .bind(u.custom_sizing as i64)
            .bind(unix_now())
            .execute(&self.pool)
            .await
            .map_err(unique("user", &u.name))?;
        Ok(self.user_get(&u.name).await?.expect("just inserted"))
    }

    pub async fn user_get(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query("SELECT name, role, disabled, custom_sizing, created_at FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(user_from_row).transpose()
    }

    pub async fn user_list(&self) -> Result<Vec<UserRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT name, role, disabled, custom_sizing, created_at FROM users ORDER BY name").fetch_all(&self.pool).await?;
        rows.into_iter().map(user_from_row).collect()
    }

    /// Changes what is given; false when there is no such user.
    pub async fn user_update(
        &self,
        name: &str,
        role: Option<&str>,
        disabled: Option<bool>,
        custom_sizing: Option<bool>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET role = COALESCE($2, role), disabled = COALESCE($3, disabled), custom_sizing = COALESCE($4, custom_sizing) WHERE name = $1",
        )
        .bind(name)
        .bind(role)
        .bind(disabled.map(i64::from))
        .bind(custom_sizing.map(i64::from))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn token_insert(&self, t: &TokenRecord) -> Result<(), StoreError> {
        sqlx::query(&format!("INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL)"))
            .bind(&t.id)
            .bind(&t.user_name)
            .bind(&t.description)
            .bind(&t.hash)
            .bind(unix_now())
            .bind(t.expires_at)
            .execute(&self.pool)
            .await
            .map_err(unique("token", &t.id))?;
        Ok(())
    }

    pub async fn token_get(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.map(token_from_row).transpose()
    }

    /// API tokens of `user` (every user's with `None`), newest first; sessions are not listed.
    pub async fn token_list(&self, user: Option<&str>) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE ($1 IS NULL OR user_name = $1) AND kind = 'api' ORDER BY created_at DESC, id"
        ))
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(token_from_row).collect()
    }

    /// Revokes a token of `user` (any user's with `None`); false when there is none.
    pub async fn token_revoke(&self, id: &str, user: Option<&str>) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE tokens SET revoked_at = COALESCE(revoked_at, $3) WHERE id = $1 AND ($2 IS NULL OR user_name = $2)")
            .bind(id)
            .bind(user)
            .bind(unix_now())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a token's use, at most once a minute.
    pub async fn token_touch(&self, id: &str) -> Result<(), StoreError> {
        let now = unix_now();
        sqlx::query("UPDATE tokens SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2 - 60)")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn quota_get(&self, user: &str) -> Result<QuotaOverride, StoreError> {
        let row = sqlx::query("SELECT max_vms, max_vcpus, max_memory_mib, max_disk_gib, max_forwards FROM quotas WHERE user_name = $1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(QuotaOverride::default()) };
        let g = |c: &str| -> Result<Option<u64>, StoreError> { Ok(r.try_get::<Option<i64>, _>(c)?.map(|v| v as u64)) };
        Ok(QuotaOverride {
            vms: g("max_vms")?,
            vcpus: g("max_vcpus")?,
            memory_mib: g("max_memory_mib")?,
            disk_gib: g("max_disk_gib")?,
            forwards: g("max_forwards")?,
        })
    }

    pub async fn quota_set(&self, user: &str, q: &QuotaOverride) -> Result<(), StoreError> {
        let v = |x: Option<u64>| x.map(|v| v.min(i64::MAX as u64) as i64);
        sqlx::query(
            "INSERT INTO quotas (user_name, max_vms, max_vcpus, max_memory_mib, max_disk_gib, max_forwards) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (user_name) DO UPDATE SET max_vms = $2, max_vcpus = $3, max_memory_mib = $4, max_disk_gib = $5, max_forwards = $6",
        )
        .bind(user)
        .bind(v(q.vms))
        .bind(v(q.vcpus))
        .bind(v(q.memory_mib))
        .bind(v(q.disk_gib))
        .bind(v(q.forwards))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What `user` holds: VMs (every state), their vCPUs, memory and disk, and forwards.
    pub async fn usage_of(&self, user: &str) -> Result<Usage, StoreError> {
        let snapshots = crate::snapshots::snapshot_gib_of("$1");
        let r = sqlx::query(&format!(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(vcpus), 0) AS BIGINT) AS c, CAST(COALESCE(SUM(memory_mib), 0) AS BIGINT) AS m, \
             CAST(COALESCE(SUM(disk_gib + data_gib), 0) AS BIGINT) + {snapshots} AS d, \
             (SELECT COUNT(*) FROM forwards f JOIN vms w ON w.id = f.vm_id WHERE w.owner = $1) AS f \
             FROM vms WHERE owner = $1"
        ))
        .bind(user)
        .fetch_one(&self.pool)
        .await?;
        let g = |c: &str| -> Result<u64, StoreError> { Ok(r.try_get::<i64, _>(c)? as u64) };
        Ok(Usage { vms: g("n")?, vcpus: g("c")?, memory_mib: g("m")?, disk_gib: g("d")?, forwards: g("f")? })
    }
}
