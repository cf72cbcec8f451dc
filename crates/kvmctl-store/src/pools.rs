//! `pools`: storage pools kvmctl made on its nodes (besides the daemon's own).

use crate::{unique, unix_now, DataStore, StoreError};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRecord {
    pub name: String,
    pub node: String,
    /// `dir` or `lvm`.
    pub kind: String,
    /// The directory, or the volume group.
    pub source: String,
    /// Devices the volume group was made on.
    pub devices: Vec<String>,
    pub created_at: i64,
}

fn pool_from_row(r: sqlx::any::AnyRow) -> Result<PoolRecord, StoreError> {
    let devices: String = r.try_get("devices")?;
    Ok(PoolRecord {
        name: r.try_get("name")?,
        node: r.try_get("node")?,
        kind: r.try_get("kind")?,
        source: r.try_get("source")?,
        devices: devices.split(',').filter(|d| !d.is_empty()).map(str::to_owned).collect(),
        created_at: r.try_get("created_at")?,
    })
}

impl DataStore {
    /// Records a pool; `Exists` when the name is taken.
    pub async fn pool_insert(&self, p: &PoolRecord) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO pools (name, node, kind, source, devices, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&p.name)
            .bind(&p.node)
            .bind(&p.kind)
            .bind(&p.source)
            .bind(p.devices.join(","))
            .bind(unix_now())
            .execute(&self.pool)
            .await
            .map_err(unique("pool", &p.name))?;
        Ok(())
    }

    pub async fn pool_get(&self, name: &str) -> Result<Option<PoolRecord>, StoreError> {
        let row = sqlx::query("SELECT name, node, kind, source, devices, created_at FROM pools WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(pool_from_row).transpose()
    }

    pub async fn pool_list(&self) -> Result<Vec<PoolRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT name, node, kind, source, devices, created_at FROM pools ORDER BY name").fetch_all(&self.pool).await?;
        rows.into_iter().map(pool_from_row).collect()
    }

    /// Removes the pool's row unless something kvmctl knows lives in it (a VM's root disk or
    /// seed, a data disk, an image, a kept disk): one statement, so nothing slips in
    /// between; the names of what does otherwise.
    pub async fn pool_delete_unused(&self, name: &str) -> Result<Result<(), Vec<String>>, StoreError> {
        let done = sqlx::query(
            "DELETE FROM pools WHERE name = $1 \
             AND NOT EXISTS (SELECT 1 FROM vms WHERE vms.pool = pools.name) \
             AND NOT EXISTS (SELECT 1 FROM vm_disks d WHERE d.pool = pools.name) \
             AND NOT EXISTS (SELECT 1 FROM images i WHERE i.pool = pools.name) \
             AND NOT EXISTS (SELECT 1 FROM kept_disks k WHERE k.pool = pools.name)",
        )
        .bind(name)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Ok(()));
        }
        Ok(Err(self.pool_users(name).await?))
    }

    /// What lives in the pool: VMs (`vm NAME`), data disks (`disk VM/DISK`), images, kept disks.
    pub async fn pool_users(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT u FROM (SELECT 'vm ' || name AS u FROM vms WHERE pool = $1 \
             UNION ALL SELECT 'disk ' || v.name || '/' || d.name AS u FROM vm_disks d JOIN vms v ON v.id = d.vm_id WHERE d.pool = $1 \
             UNION ALL SELECT 'image ' || name AS u FROM images WHERE pool = $1 \
             UNION ALL SELECT 'kept disk ' || volume AS u FROM kept_disks WHERE pool = $1) x ORDER BY u",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|r| r.try_get("u").map_err(StoreError::from)).collect()
    }
}
