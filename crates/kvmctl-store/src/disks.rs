//! `vm_disks`: a VM's data disks. Each one's size is admitted against its owner's disk quota
//! and its node's disk capacity in the statement that records it (as `vms.data_gib`, which
//! every disk sum counts), so concurrent adds, resizes and creates never exceed either.

use crate::{unique, unix_now, DataStore, StoreError};
use kvmctl_types::VmId;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRecord {
    pub vm_id: VmId,
    pub name: String,
    pub pool: String,
    pub volume: String,
    pub size_gib: u64,
    /// `virtio` or `scsi`.
    pub bus: String,
    /// The guest device (`vdc`, `sde`).
    pub target: String,
    /// `attaching` (recorded, maybe not yet made), `attached`, `detaching`.
    pub state: String,
    pub created_at: i64,
}

const COLUMNS: &str = "vm_id, name, pool, volume, size_gib, bus, target, state, created_at";

fn disk_from_row(row: sqlx::any::AnyRow) -> Result<DiskRecord, StoreError> {
    let id: String = row.try_get("vm_id")?;
    Ok(DiskRecord {
        vm_id: crate::decode_vm_id(&id)?,
        name: row.try_get("name")?,
        pool: row.try_get("pool")?,
        volume: row.try_get("volume")?,
        size_gib: row.try_get::<i64, _>("size_gib")?.max(0) as u64,
        bus: row.try_get("bus")?,
        target: row.try_get("target")?,
        state: row.try_get("state")?,
        created_at: row.try_get("created_at")?,
    })
}

/// The admission of `extra` GiB more disk for the VM `$1`: its owner's disks and snapshots
/// within `$3` (when set), its node's disks within `$4` (when set).
const ADMIT: &str = "($3 IS NULL OR \
       (SELECT CAST(COALESCE(SUM(disk_gib + data_gib), 0) AS BIGINT) FROM vms o WHERE o.owner = vms.owner) + {snapshots} + $2 <= $3) \
     AND ($4 IS NULL OR (SELECT CAST(COALESCE(SUM(disk_gib + data_gib), 0) AS BIGINT) FROM vms o WHERE o.node = vms.node OR o.migrating_to = vms.node) + $2 <= $4)";

fn admit_sql() -> String {
    ADMIT.replace("{snapshots}", &crate::snapshots::snapshot_gib_of("vms.owner"))
}

fn lim(v: Option<u64>) -> Option<i64> {
    v.map(|v| v.min(i64::MAX as u64) as i64)
}

impl DataStore {
    /// Records a data disk (state `attaching`) if the owner's disk quota `max_disk_gib` and
    /// the node's disk capacity `node_disk_gib` admit its size, in one transaction with the
    /// admission. `Ok(false)` when refused (or the VM is gone); `Exists` when the VM has a
    /// disk of that name or at that target.
    pub async fn disk_insert(&self, d: &DiskRecord, max_disk_gib: Option<u64>, node_disk_gib: Option<u64>) -> Result<bool, StoreError> {
        let mut tx = self.admission().await?;
        let admitted = sqlx::query(&format!("UPDATE vms SET data_gib = data_gib + $2 WHERE id = $1 AND {}", admit_sql()))
            .bind(d.vm_id.to_string())
            .bind(d.size_gib as i64)
            .bind(lim(max_disk_gib))
            .bind(lim(node_disk_gib))
            .execute(&mut *tx)
            .await?;
        if admitted.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(&format!("INSERT INTO vm_disks ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
            .bind(d.vm_id.to_string())
            .bind(&d.name)
            .bind(&d.pool)
            .bind(&d.volume)
            .bind(d.size_gib as i64)
            .bind(&d.bus)
            .bind(&d.target)
            .bind(&d.state)
            .bind(unix_now())
            .execute(&mut *tx)
            .await
            .map_err(unique("disk", &d.name))?;
        tx.commit().await?;
        Ok(true)
    }

    /// The VM's data disks, in the order they were added.
    pub async fn disk_list(&self, vm_id: &VmId) -> Result<Vec<DiskRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM vm_disks WHERE vm_id = $1 ORDER BY created_at, target"))
            .bind(vm_id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(disk_from_row).collect()
    }

    /// Every VM's disks left `attaching` (a crash in the middle of an add), for the reconciler.
    pub async fn disk_list_attaching(&self) -> Result<Vec<DiskRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM vm_disks WHERE state = 'attaching'")).fetch_all(&self.pool).await?;
        rows.into_iter().map(disk_from_row).collect()
    }

    pub async fn disk_state_set(&self, vm_id: &VmId, name: &str, state: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE vm_disks SET state = $1 WHERE vm_id = $2 AND name = $3")
            .bind(state)
            .bind(vm_id.to_string())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Grows a disk to `size_gib` if the owner's quota and the node admit the growth, in one
    /// transaction with the admission; false when refused. `size_gib` below the recorded
    /// size records nothing (false).
    pub async fn disk_resize(
        &self,
        d: &DiskRecord,
        size_gib: u64,
        max_disk_gib: Option<u64>,
        node_disk_gib: Option<u64>,
    ) -> Result<bool, StoreError> {
        let Some(extra) = size_gib.checked_sub(d.size_gib) else { return Ok(false) };
        let mut tx = self.admission().await?;
        let admitted = sqlx::query(&format!("UPDATE vms SET data_gib = data_gib + $2 WHERE id = $1 AND {}", admit_sql()))
            .bind(d.vm_id.to_string())
            .bind(extra as i64)
            .bind(lim(max_disk_gib))
            .bind(lim(node_disk_gib))
            .execute(&mut *tx)
            .await?;
        let grown = sqlx::query("UPDATE vm_disks SET size_gib = $1 WHERE vm_id = $2 AND name = $3 AND size_gib = $4")
            .bind(size_gib as i64)
            .bind(d.vm_id.to_string())
            .bind(&d.name)
            .bind(d.size_gib as i64)
            .execute(&mut *tx)
            .await?;
        if admitted.rows_affected() == 0 || grown.rows_affected() == 0 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Sets a disk's recorded size from `from` back to `to` (a grow that did not happen),
    /// with the owner's count.
    pub async fn disk_size_restore(&self, vm_id: &VmId, name: &str, from: u64, to: u64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE vm_disks SET size_gib = $1 WHERE vm_id = $2 AND name = $3 AND size_gib = $4")
            .bind(to as i64)
            .bind(vm_id.to_string())
            .bind(name)
            .bind(from as i64)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            sqlx::query("UPDATE vms SET data_gib = data_gib - $1 + $2 WHERE id = $3")
                .bind(from as i64)
                .bind(to as i64)
                .bind(vm_id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes a disk's row and gives its size back to the owner's quota.
    pub async fn disk_delete(&self, vm_id: &VmId, name: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE vms SET data_gib = data_gib - COALESCE((SELECT size_gib FROM vm_disks WHERE vm_id = $1 AND name = $2), 0) \
             WHERE id = $1",
        )
        .bind(vm_id.to_string())
        .bind(name)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM vm_disks WHERE vm_id = $1 AND name = $2").bind(vm_id.to_string()).bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes all of a VM's disk rows (its delete).
    pub async fn disk_delete_vm(&self, vm_id: &VmId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM vm_disks WHERE vm_id = $1").bind(vm_id.to_string()).execute(&self.pool).await?;
        sqlx::query("UPDATE vms SET data_gib = 0 WHERE id = $1").bind(vm_id.to_string()).execute(&self.pool).await?;
        Ok(())
    }
}
