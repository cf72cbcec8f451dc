//! `snapshots`: kvmctl's snapshot tree, one row per snapshot of a VM.

use crate::{unique, unix_now, DataStore, StoreError};
use kvmctl_types::VmId;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// A UUID: names the snapshot's files and its tag in the disk, never the user's name.
    pub id: String,
    pub vm_id: VmId,
    pub name: String,
    /// The id of the snapshot the VM was at when this one was taken.
    pub parent: Option<String>,
    pub description: String,
    pub memory: bool,
    /// `running` or `stopped`.
    pub vm_state: String,
    /// `creating`, `ready` or `deleting`.
    pub state: String,
    pub size_bytes: u64,
    pub created_at: i64,
    /// A memory snapshot taken while the guest's agent was connected.
    pub agent: bool,
}

const COLUMNS: &str = "id, vm_id, name, parent, description, memory, vm_state, state, size_bytes, created_at, agent";

fn snapshot_from_row(row: sqlx::any::AnyRow) -> Result<SnapshotRecord, StoreError> {
    let vm_id: String = row.try_get("vm_id")?;
    Ok(SnapshotRecord {
        id: row.try_get("id")?,
        vm_id: crate::decode_vm_id(&vm_id)?,
        name: row.try_get("name")?,
        parent: row.try_get("parent")?,
        description: row.try_get("description")?,
        memory: row.try_get::<i64, _>("memory")? != 0,
        vm_state: row.try_get("vm_state")?,
        state: row.try_get("state")?,
        size_bytes: row.try_get::<i64, _>("size_bytes")? as u64,
        created_at: row.try_get("created_at")?,
        agent: row.try_get::<i64, _>("agent")? != 0,
    })
}

/// Bytes the VMs' snapshots and the clone bases of `owner` (an SQL expression) hold on top
/// of their disks: they count in the disk quota beside the VMs' disks.
pub(crate) fn stored_bytes_of(owner: &str) -> String {
    format!(
        "((SELECT CAST(COALESCE(SUM(s.size_bytes), 0) AS BIGINT) FROM snapshots s JOIN vms w ON w.id = s.vm_id WHERE w.owner = {owner}) \
         + (SELECT CAST(COALESCE(SUM(b.size_bytes), 0) AS BIGINT) FROM clone_bases b WHERE b.owner = {owner}))"
    )
}

/// GiB (rounded up) of what `stored_bytes_of` counts, with `extra` bytes (an SQL expression)
/// about to be added.
pub(crate) fn stored_gib_with(owner: &str, extra: &str) -> String {
    format!("(({} + {extra} + 1073741823) / 1073741824)", stored_bytes_of(owner))
}

/// GiB (rounded up) of snapshot files and clone bases held by `owner`.
pub(crate) fn snapshot_gib_of(owner: &str) -> String {
    stored_gib_with(owner, "0")
}

impl DataStore {
    /// Records a snapshot about to be made (state `creating`, `size_bytes` its expected
    /// size), if the owner's disk quota `max_disk_gib` admits it beside their disks and other
    /// snapshots (checked in the same statement); `Ok(false)` when it does not, `Exists` when
    /// the VM has a snapshot by that name.
    pub async fn snapshot_insert(&self, s: &SnapshotRecord, max_disk_gib: Option<u64>) -> Result<bool, StoreError> {
        let mut tx = self.admission().await?;
        let owner = "(SELECT owner FROM vms WHERE id = $2)";
        let stored = stored_gib_with(owner, "$9");
        let done = sqlx::query(&format!(
            "INSERT INTO snapshots ({COLUMNS}) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12 \
             WHERE $11 IS NULL OR (SELECT CAST(COALESCE(SUM(disk_gib + data_gib), 0) AS BIGINT) FROM vms WHERE owner = {owner}) + {stored} <= $11"
        ))
        .bind(&s.id)
        .bind(s.vm_id.to_string())
        .bind(&s.name)
        .bind(&s.parent)
        .bind(&s.description)
        .bind(s.memory as i64)
        .bind(&s.vm_state)
        .bind(&s.state)
        .bind(s.size_bytes as i64)
        .bind(unix_now())
        .bind(max_disk_gib.map(|v| v.min(i64::MAX as u64) as i64))
        .bind(s.agent as i64)
        .execute(&mut *tx)
        .await
        .map_err(unique("snapshot", &s.name))?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// A VM's snapshots, oldest first.
    pub async fn snapshot_list(&self, vm_id: &VmId) -> Result<Vec<SnapshotRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM snapshots WHERE vm_id = $1 ORDER BY created_at, name"))
            .bind(vm_id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(snapshot_from_row).collect()
    }

    /// Every snapshot not `ready` (what start-up finishes or undoes).
    pub async fn snapshot_list_unsettled(&self) -> Result<Vec<SnapshotRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM snapshots WHERE state <> 'ready' ORDER BY created_at"))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(snapshot_from_row).collect()
    }

    pub async fn snapshot_get(&self, vm_id: &VmId, name: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM snapshots WHERE vm_id = $1 AND name = $2"))
            .bind(vm_id.to_string())
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(snapshot_from_row).transpose()
    }

    /// Moves a snapshot to `state`, with its size once known.
    pub async fn snapshot_settle(&self, id: &str, state: &str, size_bytes: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE snapshots SET state = $1, size_bytes = $2 WHERE id = $3")
            .bind(state)
            .bind(size_bytes as i64)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes a snapshot's row; its children take its parent, so the tree stays whole.
    pub async fn snapshot_delete(&self, s: &SnapshotRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE snapshots SET parent = $1 WHERE parent = $2").bind(&s.parent).bind(&s.id).execute(&mut *tx).await?;
        sqlx::query("UPDATE vms SET snapshot = $1 WHERE snapshot = $2").bind(&s.parent).bind(&s.id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM snapshots WHERE id = $1").bind(&s.id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes all of a VM's snapshot rows (its delete).
    pub async fn snapshot_delete_vm(&self, vm_id: &VmId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM snapshots WHERE vm_id = $1").bind(vm_id.to_string()).execute(&self.pool).await?;
        Ok(())
    }

    /// The snapshot the VM is at (the parent of its next one).
    pub async fn vm_snapshot(&self, vm_id: &VmId) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT snapshot FROM vms WHERE id = $1").bind(vm_id.to_string()).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => r.try_get("snapshot")?,
            None => None,
        })
    }

    pub async fn vm_snapshot_set(&self, vm_id: &VmId, snapshot: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE vms SET snapshot = $1 WHERE id = $2").bind(snapshot).bind(vm_id.to_string()).execute(&self.pool).await?;
        Ok(())
    }

    /// Bytes of snapshot files (memory images, NVRAM copies) and clone bases the user holds.
    pub async fn snapshot_bytes_of(&self, owner: &str) -> Result<u64, StoreError> {
        let row = sqlx::query(&format!("SELECT {} AS b", stored_bytes_of("$1"))).bind(owner).fetch_one(&self.pool).await?;
        Ok(row.try_get::<i64, _>("b")? as u64)
    }
}
