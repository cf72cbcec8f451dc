//! `vm_shares`: host directories shared with a VM over virtio-fs.

use crate::{unique, unix_now, DataStore, StoreError};
use kvmctl_types::VmId;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRecord {
    pub vm_id: VmId,
    pub tag: String,
    /// The resolved host directory.
    pub source: String,
    pub readonly: bool,
    /// Where cloud-init mounts it in the guest.
    pub mount: Option<String>,
}

impl DataStore {
    /// Records a share; `Exists` when the VM has one with that tag.
    pub async fn share_insert(&self, s: &ShareRecord) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO vm_shares (vm_id, tag, source, readonly, mount, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(s.vm_id.to_string())
            .bind(&s.tag)
            .bind(&s.source)
            .bind(s.readonly as i64)
            .bind(&s.mount)
            .bind(unix_now())
            .execute(&self.pool)
            .await
            .map_err(unique("share", &s.tag))?;
        Ok(())
    }

    /// The VM's shares, in the order they were added.
    pub async fn share_list(&self, vm_id: &VmId) -> Result<Vec<ShareRecord>, StoreError> {
        let rows = sqlx::query("SELECT vm_id, tag, source, readonly, mount FROM vm_shares WHERE vm_id = $1 ORDER BY created_at, tag")
            .bind(vm_id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                let id: String = r.try_get("vm_id")?;
                Ok(ShareRecord {
                    vm_id: crate::decode_vm_id(&id)?,
                    tag: r.try_get("tag")?,
                    source: r.try_get("source")?,
                    readonly: r.try_get::<i64, _>("readonly")? != 0,
                    mount: r.try_get("mount")?,
                })
            })
            .collect()
    }

    /// Removes one share; false when there was none with that tag.
    pub async fn share_delete(&self, vm_id: &VmId, tag: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM vm_shares WHERE vm_id = $1 AND tag = $2")
            .bind(vm_id.to_string())
            .bind(tag)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes all of a VM's shares (its delete).
    pub async fn share_delete_vm(&self, vm_id: &VmId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM vm_shares WHERE vm_id = $1").bind(vm_id.to_string()).execute(&self.pool).await?;
        Ok(())
    }
}
