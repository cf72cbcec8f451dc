//! `forwards`: host ports forwarded to VMs. The primary key (node, protocol, host port) makes
//! a port belong to one forward; allocation from a pool is a single `INSERT ... SELECT` of
//! the lowest free port, so concurrent requests never get the same one.

use crate::{unique, unix_now, DataStore, StoreError};
use kvmctl_types::VmId;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRecord {
    pub node: String,
    pub vm_id: VmId,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub host_port: u16,
    pub guest_port: u16,
    /// `ssh`, `vnc` or `general`.
    pub pool: String,
    pub created_at: i64,
}

const COLUMNS: &str = "node, protocol, host_port, vm_id, guest_port, pool, created_at";

/// The quota condition of both inserts: `$9` (max forwards, NULL for none) above what the
/// owner of VM `$5` holds.
const OWNER_BELOW_MAX: &str = "($9 IS NULL OR (SELECT COUNT(*) FROM forwards f JOIN vms v ON v.id = f.vm_id \
     WHERE v.owner = (SELECT owner FROM vms WHERE id = $5)) < $9)";

fn forward_from_row(row: sqlx::any::AnyRow) -> Result<ForwardRecord, StoreError> {
    let id: String = row.try_get("vm_id")?;
    Ok(ForwardRecord {
        node: row.try_get("node")?,
        vm_id: crate::decode_vm_id(&id)?,
        protocol: row.try_get("protocol")?,
        host_port: row.try_get::<i64, _>("host_port")? as u16,
        guest_port: row.try_get::<i64, _>("guest_port")? as u16,
        pool: row.try_get("pool")?,
        created_at: row.try_get("created_at")?,
    })
}

/// A pool to allocate from: its name and inclusive range.
#[derive(Debug, Clone, Copy)]
pub struct PoolRange<'a> {
    pub name: &'a str,
    pub start: u16,
    pub end: u16,
}

impl DataStore {
    /// Takes the lowest free port of `pool` for a forward to `guest_port` of the VM; `None`
    /// when the pool is exhausted or, with `max_forwards`, when the VM's owner holds that
    /// many forwards already (checked in the same statement).
    pub async fn forward_allocate(
        &self,
        node: &str,
        vm_id: &VmId,
        protocol: &str,
        pool: PoolRange<'_>,
        guest_port: u16,
        max_forwards: Option<u64>,
    ) -> Result<Option<ForwardRecord>, StoreError> {
        let mut tx = self.admission().await?;
        let row = sqlx::query(&format!(
            "WITH RECURSIVE p(port) AS (SELECT $1 UNION ALL SELECT port + 1 FROM p WHERE port < $2) \
             INSERT INTO forwards ({COLUMNS}) \
             SELECT $3, $4, port, $5, $6, $7, $8 FROM p \
             WHERE port NOT IN (SELECT host_port FROM forwards WHERE node = $3 AND protocol = $4) \
             AND {OWNER_BELOW_MAX} \
             ORDER BY port LIMIT 1 \
             RETURNING {COLUMNS}"
        ))
        .bind(pool.start as i64)
        .bind(pool.end as i64)
        .bind(node)
        .bind(protocol)
        .bind(vm_id.to_string())
        .bind(guest_port as i64)
        .bind(pool.name)
        .bind(unix_now())
        .bind(max_forwards.map(|m| m.min(i64::MAX as u64) as i64))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(forward_from_row).transpose()
    }

    /// Records a forward on a port the caller chose; `Exists` when the port is taken, `None`
    /// when the owner's `max_forwards` refused it.
    pub async fn forward_insert(&self, f: &ForwardRecord, max_forwards: Option<u64>) -> Result<Option<ForwardRecord>, StoreError> {
        let mut tx = self.admission().await?;
        let key = format!("{}/{}", f.protocol, f.host_port);
        let row = sqlx::query(&format!(
            "INSERT INTO forwards ({COLUMNS}) SELECT $3, $4, $1, $5, $6, $7, $8 WHERE $2 = $2 AND {OWNER_BELOW_MAX} RETURNING {COLUMNS}"
        ))
        .bind(f.host_port as i64)
        .bind(0i64)
        .bind(&f.node)
        .bind(&f.protocol)
        .bind(f.vm_id.to_string())
        .bind(f.guest_port as i64)
        .bind(&f.pool)
        .bind(unix_now())
        .bind(max_forwards.map(|m| m.min(i64::MAX as u64) as i64))
        .fetch_optional(&mut *tx)
        .await
        .map_err(unique("port", &key))?;
        tx.commit().await?;
        row.map(forward_from_row).transpose()
    }

    pub async fn forward_list_vm(&self, vm_id: &VmId) -> Result<Vec<ForwardRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM forwards WHERE vm_id = $1 ORDER BY protocol, host_port"))
            .bind(vm_id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(forward_from_row).collect()
    }

    pub async fn forward_list(&self) -> Result<Vec<ForwardRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM forwards ORDER BY node, protocol, host_port")).fetch_all(&self.pool).await?;
        rows.into_iter().map(forward_from_row).collect()
    }

    /// Removes one forward of the VM; false when it has no such forward.
    pub async fn forward_delete(&self, vm_id: &VmId, protocol: &str, host_port: u16) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM forwards WHERE vm_id = $1 AND protocol = $2 AND host_port = $3")
            .bind(vm_id.to_string())
            .bind(protocol)
            .bind(host_port as i64)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Frees every port of the VM.
    pub async fn forward_delete_vm(&self, vm_id: &VmId) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM forwards WHERE vm_id = $1").bind(vm_id.to_string()).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::on_both_engines!(concurrent_allocations_never_collide_and_exhaustion_is_none);

    async fn concurrent_allocations_never_collide_and_exhaustion_is_none(store: DataStore) {
        let pool = PoolRange { name: "ssh", start: 2200, end: 2239 };
        // 60 concurrent requests for a pool of 40 ports.
        let tasks: Vec<_> = (0..60)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.forward_allocate("local", &VmId::new(), "tcp", pool, 22, None).await.unwrap() })
            })
            .collect();
        let mut got = Vec::new();
        for t in tasks {
            if let Some(f) = t.await.unwrap() {
                got.push(f.host_port);
            }
        }
        got.sort();
        assert_eq!(got, (2200..=2239).collect::<Vec<u16>>(), "every port once, none twice, none outside");
        // Another protocol or node has its own ports.
        assert_eq!(store.forward_allocate("local", &VmId::new(), "udp", pool, 53, None).await.unwrap().unwrap().host_port, 2200);
        assert_eq!(store.forward_allocate("node2", &VmId::new(), "tcp", pool, 22, None).await.unwrap().unwrap().host_port, 2200);
        // A freed port is handed out again; a chosen port that is taken is `Exists`.
        let owner = store
            .forward_list()
            .await
            .unwrap()
            .into_iter()
            .find(|f| f.host_port == 2210 && f.node == "local" && f.protocol == "tcp")
            .unwrap();
        assert!(store.forward_delete(&owner.vm_id, "tcp", 2210).await.unwrap());
        assert_eq!(store.forward_allocate("local", &VmId::new(), "tcp", pool, 22, None).await.unwrap().unwrap().host_port, 2210);
        let taken = ForwardRecord {
            node: "local".into(),
            vm_id: VmId::new(),
            protocol: "tcp".into(),
            host_port: 2211,
            guest_port: 80,
            pool: "ssh".into(),
            created_at: 0,
        };
        assert!(matches!(store.forward_insert(&taken, None).await, Err(StoreError::Exists { .. })));
    }
}
