//! `clone_bases`: the read-only bases linked clones are overlays on, and which VM uses which.

use crate::{unix_now, DataStore, StoreError};
use kvmctl_types::VmId;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneBaseRecord {
    /// A UUID: names the base's volume, never the user's names.
    pub id: String,
    pub owner: String,
    pub source_vm: VmId,
    /// The source's snapshot (its id) the base holds; `None`: the source's disk at clone time.
    pub snapshot: Option<String>,
    pub pool: String,
    pub volume: String,
    /// `creating`, `ready` or `deleting`.
    pub state: String,
    pub size_bytes: u64,
    pub created_at: i64,
}

const COLUMNS: &str = "id, owner, source_vm, snapshot, pool, volume, state, size_bytes, created_at";

fn base_from_row(row: sqlx::any::AnyRow) -> Result<CloneBaseRecord, StoreError> {
    let source: String = row.try_get("source_vm")?;
    Ok(CloneBaseRecord {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        source_vm: crate::decode_vm_id(&source)?,
        snapshot: row.try_get("snapshot")?,
        pool: row.try_get("pool")?,
        volume: row.try_get("volume")?,
        state: row.try_get("state")?,
        size_bytes: row.try_get::<i64, _>("size_bytes")? as u64,
        created_at: row.try_get("created_at")?,
    })
}

impl DataStore {
    /// Records a base about to be made (state `creating`, `size_bytes` its expected size) if
    /// the owner's disk quota `max_disk_gib` admits it beside their disks, snapshots and
    /// bases (checked in the same statement), and makes VM `user` its first user, in one
    /// transaction: whatever undoes the VM finds the base. `Ok(false)`: refused.
    pub async fn clone_base_insert(&self, b: &CloneBaseRecord, user: &VmId, max_disk_gib: Option<u64>) -> Result<bool, StoreError> {
        let mut tx = self.admission().await?;
        let stored = crate::snapshots::stored_gib_with("$2", "$8");
        let done = sqlx::query(&format!(
            "INSERT INTO clone_bases ({COLUMNS}) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
             WHERE $10 IS NULL OR (SELECT CAST(COALESCE(SUM(disk_gib + data_gib), 0) AS BIGINT) FROM vms WHERE owner = $2) + {stored} <= $10"
        ))
        .bind(&b.id)
        .bind(&b.owner)
        .bind(b.source_vm.to_string())
        .bind(&b.snapshot)
        .bind(&b.pool)
        .bind(&b.volume)
        .bind(&b.state)
        .bind(b.size_bytes as i64)
        .bind(unix_now())
        .bind(max_disk_gib.map(|v| v.min(i64::MAX as u64) as i64))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE vms SET base = $1 WHERE id = $2").bind(&b.id).bind(user.to_string()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Makes VM `user` a user of `owner`'s ready base of `source`'s snapshot `snapshot`, if
    /// there is one (in one statement, so a base being removed is never taken); returns it.
    pub async fn clone_base_take(
        &self,
        source: &VmId,
        snapshot: &str,
        owner: &str,
        user: &VmId,
    ) -> Result<Option<CloneBaseRecord>, StoreError> {
        let found = "SELECT id FROM clone_bases WHERE source_vm = $1 AND snapshot = $2 AND owner = $3 AND state = 'ready'";
        let done = sqlx::query(&format!("UPDATE vms SET base = ({found} LIMIT 1) WHERE id = $4 AND EXISTS ({found})"))
            .bind(source.to_string())
            .bind(snapshot)
            .bind(owner)
            .bind(user.to_string())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM clone_bases WHERE id = (SELECT base FROM vms WHERE id = $1)"))
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(base_from_row).transpose()
    }

    /// The base VM `vm` is an overlay on.
    pub async fn vm_base(&self, vm: &VmId) -> Result<Option<CloneBaseRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM clone_bases WHERE id = (SELECT base FROM vms WHERE id = $1)"))
            .bind(vm.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(base_from_row).transpose()
    }

    /// A base made, with its size.
    pub async fn clone_base_ready(&self, id: &str, size_bytes: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE clone_bases SET state = 'ready', size_bytes = $1 WHERE id = $2 AND state = 'creating'")
            .bind(size_bytes as i64)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// VM `vm` no longer uses its base; returns the base when that left it unused, now marked
    /// `deleting` (in the same statement: a clone being made cannot take it any more).
    pub async fn clone_base_release(&self, vm: &VmId) -> Result<Option<CloneBaseRecord>, StoreError> {
        let Some(base) = self.vm_base(vm).await? else { return Ok(None) };
        sqlx::query("UPDATE vms SET base = NULL WHERE id = $1").bind(vm.to_string()).execute(&self.pool).await?;
        self.clone_base_unused(&base.id).await
    }

    /// Marks base `id` `deleting` if no VM uses it; returns it then.
    pub async fn clone_base_unused(&self, id: &str) -> Result<Option<CloneBaseRecord>, StoreError> {
        let done =
            sqlx::query("UPDATE clone_bases SET state = 'deleting' WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM vms WHERE base = $1)")
                .bind(id)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM clone_bases WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.map(base_from_row).transpose()
    }

    pub async fn clone_base_list(&self) -> Result<Vec<CloneBaseRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM clone_bases ORDER BY created_at")).fetch_all(&self.pool).await?;
        rows.into_iter().map(base_from_row).collect()
    }

    /// How many VMs are overlays on base `id`.
    pub async fn clone_base_users(&self, id: &str) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM vms WHERE base = $1").bind(id).fetch_one(&self.pool).await?;
        Ok(row.try_get::<i64, _>("n")? as u64)
    }

    /// Removes a base's row (its file is gone).
    pub async fn clone_base_delete(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM clone_bases WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::on_both_engines!(a_base_goes_with_its_last_user_and_is_never_taken_while_going);

    async fn a_base_goes_with_its_last_user_and_is_never_taken_while_going(store: DataStore) {
        crate::vms::tests::image_fixture(&store).await;
        let mut vms = Vec::new();
        for n in ["c1", "c2", "c3"] {
            let rec = crate::vms::tests::vm(n, "alice", "local", 1);
            store.vm_insert(&rec, None, None).await.unwrap().unwrap();
            vms.push(rec.id);
        }
        let source = VmId::new();
        let b = CloneBaseRecord {
            id: "b1".into(),
            owner: "alice".into(),
            source_vm: source,
            snapshot: Some("s1".into()),
            pool: "default".into(),
            volume: "_base-b1.qcow2".into(),
            state: "creating".into(),
            size_bytes: 1,
            created_at: 0,
        };
        // Three 1 GiB disks and a base fit in 4 GiB, not in 3.
        assert!(!store.clone_base_insert(&b, &vms[0], Some(3)).await.unwrap());
        assert!(store.vm_base(&vms[0]).await.unwrap().is_none(), "a refused base is not recorded");
        assert!(store.clone_base_insert(&b, &vms[0], Some(4)).await.unwrap());
        // Not ready yet: nobody else takes it.
        assert!(store.clone_base_take(&source, "s1", "alice", &vms[1]).await.unwrap().is_none());
        store.clone_base_ready("b1", 3 << 30).await.unwrap();
        assert_eq!(store.clone_base_take(&source, "s1", "alice", &vms[1]).await.unwrap().unwrap().id, "b1");
        assert!(store.clone_base_take(&source, "other", "alice", &vms[2]).await.unwrap().is_none());
        // Its bytes count in the owner's stored bytes.
        assert_eq!(store.snapshot_bytes_of("alice").await.unwrap(), 3 << 30);
        assert!(store.clone_base_release(&vms[0]).await.unwrap().is_none(), "c2 still uses it");
        let gone = store.clone_base_release(&vms[1]).await.unwrap().expect("the last user released it");
        assert_eq!(gone.state, "deleting");
        // Marked deleting: a new clone cannot take it.
        assert!(store.clone_base_take(&source, "s1", "alice", &vms[2]).await.unwrap().is_none());
        store.clone_base_delete("b1").await.unwrap();
        assert_eq!(store.snapshot_bytes_of("alice").await.unwrap(), 0);
    }
}
