//! `nodes`: compute nodes (libvirt hosts by URI), their capacity as last read from libvirt,
//! the admin's settings (overcommit, reservations, labels, draining), and what their VMs
//! are given.

use crate::{decode_name, unix_now, AnyQuery, DataStore, StoreError};
use kvmctl_types::Name;
use sqlx::Row;
use std::collections::BTreeMap;

/// What an admin sets on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// Hundredths: 200 is 2.0x.
    pub cpu_overcommit: u32,
    pub memory_overcommit: u32,
    pub reserved_cpus: u64,
    pub reserved_memory_mib: u64,
    pub labels: BTreeMap<String, String>,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings { cpu_overcommit: 200, memory_overcommit: 100, reserved_cpus: 0, reserved_memory_mib: 0, labels: BTreeMap::new() }
    }
}

/// A compute node as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub name: Name,
    pub uri: String,
    /// `active` or `draining` (the admin's choice); `error` says whether it answered.
    pub state: String,
    pub cpus: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub settings: NodeSettings,
    /// When capacity was last read; `None` before the first read.
    pub refreshed_at: Option<i64>,
    /// Why the last read failed (the node is down for placement).
    pub error: Option<String>,
    /// The https URL of the node's agent (`kvmctl agent`), when it runs one.
    pub agent: Option<String>,
}

/// What a node's VMs are given (every VM not deleted, running or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeAllocation {
    pub vms: u64,
    pub vcpus: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

const COLUMNS: &str = "name, uri, state, cpus, memory_mib, disk_gib, reserved_cpus, reserved_memory_mib, cpu_overcommit, \
                       memory_overcommit, labels, refreshed_at, error, agent";

pub fn labels_encode(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

pub fn labels_decode(s: &str) -> BTreeMap<String, String> {
    s.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

fn node_from_row(row: sqlx::any::AnyRow) -> Result<NodeRecord, StoreError> {
    let n = |c: &str| -> Result<u64, StoreError> { Ok(row.try_get::<i64, _>(c)?.max(0) as u64) };
    Ok(NodeRecord {
        name: decode_name("node name", row.try_get("name")?)?,
        uri: row.try_get("uri")?,
        state: row.try_get("state")?,
        cpus: n("cpus")?,
        memory_mib: n("memory_mib")?,
        disk_gib: n("disk_gib")?,
        settings: NodeSettings {
            cpu_overcommit: n("cpu_overcommit")? as u32,
            memory_overcommit: n("memory_overcommit")? as u32,
            reserved_cpus: n("reserved_cpus")?,
            reserved_memory_mib: n("reserved_memory_mib")?,
            labels: labels_decode(&row.try_get::<String, _>("labels")?),
        },
        refreshed_at: row.try_get("refreshed_at")?,
        error: row.try_get("error")?,
        agent: row.try_get("agent")?,
    })
}

impl DataStore {
    /// Records a node with `settings`, or, if the name is known, updates only its URI (the
    /// local node at every start: settings changed since stay).
    pub async fn node_upsert(&self, name: &Name, uri: &str, s: &NodeSettings) -> Result<NodeRecord, StoreError> {
        self.node_write(name, uri, s, "ON CONFLICT (name) DO UPDATE SET uri = excluded.uri, updated_at = excluded.updated_at").await
    }

    /// Adds a node; `Exists` when the name or the URI is taken.
    pub async fn node_insert(&self, name: &Name, uri: &str, s: &NodeSettings) -> Result<NodeRecord, StoreError> {
        self.node_write(name, uri, s, "").await
    }

    /// The insert of both, with what to do when the name is known.
    async fn node_write(&self, name: &Name, uri: &str, s: &NodeSettings, on_conflict: &str) -> Result<NodeRecord, StoreError> {
        let sql = format!(
            "INSERT INTO nodes (name, uri, state, cpu_overcommit, memory_overcommit, reserved_cpus, reserved_memory_mib, labels, \
             created_at, updated_at) VALUES ($1, $2, 'active', $3, $4, $5, $6, $7, $8, $8) {on_conflict}"
        );
        let q = sqlx::query(&sql).bind(name.as_str()).bind(uri);
        settings_bind(q, s).bind(unix_now()).execute(&self.pool).await.map_err(crate::unique("node (name or URI)", name.as_str()))?;
        Ok(self.node_get(name).await?.expect("row just written"))
    }

    pub async fn node_get(&self, name: &Name) -> Result<Option<NodeRecord>, StoreError> {
        let row =
            sqlx::query(&format!("SELECT {COLUMNS} FROM nodes WHERE name = $1")).bind(name.as_str()).fetch_optional(&self.pool).await?;
        row.map(node_from_row).transpose()
    }

    pub async fn node_list(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM nodes ORDER BY name")).fetch_all(&self.pool).await?;
        rows.into_iter().map(node_from_row).collect()
    }

    /// Records what libvirt said the node has, or why it could not be asked.
    pub async fn node_set_capacity(&self, name: &Name, capacity: Result<(u64, u64, u64), &str>) -> Result<(), StoreError> {
        let q = match capacity {
            Ok((cpus, memory_mib, disk_gib)) => {
                sqlx::query("UPDATE nodes SET cpus = $1, memory_mib = $2, disk_gib = $3, error = NULL, refreshed_at = $4 WHERE name = $5")
                    .bind(cpus as i64)
                    .bind(memory_mib as i64)
                    .bind(disk_gib as i64)
            }
            Err(why) => sqlx::query("UPDATE nodes SET error = $1, refreshed_at = $2 WHERE name = $3").bind(why.to_owned()),
        };
        q.bind(unix_now()).bind(name.as_str()).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn node_set_settings(&self, name: &Name, s: &NodeSettings) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE nodes SET cpu_overcommit = $1, memory_overcommit = $2, reserved_cpus = $3, reserved_memory_mib = $4, labels = $5, \
             updated_at = $6 WHERE name = $7",
        );
        let done = settings_bind(q, s).bind(unix_now()).bind(name.as_str()).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets (or, with `None`, forgets) the URL of the node's agent.
    pub async fn node_set_agent(&self, name: &Name, agent: Option<&str>) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE nodes SET agent = $1, updated_at = $2 WHERE name = $3")
            .bind(agent.map(str::to_owned))
            .bind(unix_now())
            .bind(name.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// `active` or `draining`.
    pub async fn node_set_state(&self, name: &Name, state: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE nodes SET state = $1, updated_at = $2 WHERE name = $3")
            .bind(state)
            .bind(unix_now())
            .bind(name.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a node that holds no VM, in one statement; `Ok(false)` when it has VMs or
    /// does not exist (the caller tells which).
    pub async fn node_delete_unused(&self, name: &Name) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM nodes WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM vms WHERE vms.node = $1 OR vms.migrating_to = $1)",
        )
        .bind(name.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// What each node's VMs are given.
    pub async fn node_allocations(&self) -> Result<BTreeMap<String, NodeAllocation>, StoreError> {
        let rows = sqlx::query(
            "SELECT node, COUNT(*) AS vms, CAST(COALESCE(SUM(vcpus), 0) AS BIGINT) AS vcpus, CAST(COALESCE(SUM(memory_mib), 0) AS BIGINT) AS memory_mib, \
             CAST(COALESCE(SUM(disk_gib + data_gib), 0) AS BIGINT) AS disk_gib FROM (SELECT node, vcpus, memory_mib, disk_gib, data_gib, state FROM vms \
             UNION ALL SELECT migrating_to AS node, vcpus, memory_mib, disk_gib, data_gib, state FROM vms WHERE migrating_to IS NOT NULL) m \
             WHERE state <> 'deleted' GROUP BY node",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let n = |c: &str| -> Result<u64, StoreError> { Ok(r.try_get::<i64, _>(c)?.max(0) as u64) };
                Ok((
                    r.try_get("node")?,
                    NodeAllocation { vms: n("vms")?, vcpus: n("vcpus")?, memory_mib: n("memory_mib")?, disk_gib: n("disk_gib")? },
                ))
            })
            .collect()
    }
}

/// Binds a node's settings: overcommits, reservations, labels (five arguments, in that order).
fn settings_bind<'q>(q: AnyQuery<'q>, s: &NodeSettings) -> AnyQuery<'q> {
    q.bind(s.cpu_overcommit as i64)
        .bind(s.memory_overcommit as i64)
        .bind(s.reserved_cpus as i64)
        .bind(s.reserved_memory_mib as i64)
        .bind(labels_encode(&s.labels))
}
