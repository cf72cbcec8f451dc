//! `networks`: the libvirt networks kvmctl manages. A row is written (state `creating`)
//! before the libvirt network is defined, so a crash leaves a record that the reconciler
//! finishes or undoes; delete marks it `deleting` first, in one statement that also checks
//! that no VM uses it.

use crate::{unique, unix_now, DataStore, StoreError};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRecord {
    pub name: String,
    pub owner: String,
    pub node: String,
    pub nat: bool,
    pub subnet: String,
    pub gateway: String,
    pub dhcp_start: String,
    pub dhcp_end: String,
    pub bridge: Option<String>,
    pub state: String,
    pub created_at: i64,
    /// Set at create (`kvmctl.lab` marks a lab's networks).
    pub labels: std::collections::BTreeMap<String, String>,
}

const COLUMNS: &str = "name, owner, node, nat, subnet, gateway, dhcp_start, dhcp_end, bridge, state, created_at, labels";

fn network_from_row(row: sqlx::any::AnyRow) -> Result<NetworkRecord, StoreError> {
    Ok(NetworkRecord {
        name: row.try_get("name")?,
        owner: row.try_get("owner")?,
        node: row.try_get("node")?,
        nat: row.try_get::<i64, _>("nat")? != 0,
        subnet: row.try_get("subnet")?,
        gateway: row.try_get("gateway")?,
        dhcp_start: row.try_get("dhcp_start")?,
        dhcp_end: row.try_get("dhcp_end")?,
        bridge: row.try_get("bridge")?,
        state: row.try_get("state")?,
        created_at: row.try_get("created_at")?,
        labels: serde_json::from_str(&row.try_get::<String, _>("labels")?)
            .map_err(|e| StoreError::Query(sqlx::Error::Decode(format!("network labels: {e}").into())))?,
    })
}

/// Why a network could not be marked for deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkDeleteRefusal {
    NotFound,
    /// VMs use it (their names).
    InUse(Vec<String>),
    /// It is being created or deleted.
    Busy(String),
}

impl DataStore {
    /// Records a network in state `creating`; `Exists` when the name is taken.
    pub async fn network_insert(&self, n: &NetworkRecord) -> Result<(), StoreError> {
        self.network_insert_within(n, None).await.map(drop)
    }

    /// Records a new network if its owner then has at most `max` networks (checked and
    /// written in one statement, so concurrent creates cannot pass the limit together);
    /// false when the limit refused it. `None`: no limit.
    pub async fn network_insert_within(&self, n: &NetworkRecord, max: Option<u64>) -> Result<bool, StoreError> {
        let mut tx = self.admission().await?;
        let done = sqlx::query(&format!(
            "INSERT INTO networks ({COLUMNS}) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, 'creating', $10, $12 \
             WHERE $11 IS NULL OR (SELECT COUNT(*) FROM networks WHERE owner = $2) + 1 <= $11"
        ))
        .bind(&n.name)
        .bind(&n.owner)
        .bind(&n.node)
        .bind(n.nat as i64)
        .bind(&n.subnet)
        .bind(&n.gateway)
        .bind(&n.dhcp_start)
        .bind(&n.dhcp_end)
        .bind(&n.bridge)
        .bind(unix_now())
        .bind(max.map(|m| m.min(i64::MAX as u64) as i64))
        .bind(serde_json::to_string(&n.labels).unwrap_or_else(|_| "{}".into()))
        .execute(&mut *tx)
        .await
        .map_err(unique("network", &n.name))?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The network if it exists and `scope` may see it.
    pub async fn network_get(&self, scope: &crate::Scope, name: &str) -> Result<Option<NetworkRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM networks WHERE name = $1 AND ($2 IS NULL OR owner = $2)"))
            .bind(name)
            .bind(scope.bind())
            .fetch_optional(&self.pool)
            .await?;
        row.map(network_from_row).transpose()
    }

    /// The networks `scope` may see, by name.
    pub async fn network_list(&self, scope: &crate::Scope) -> Result<Vec<NetworkRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM networks WHERE ($1 IS NULL OR owner = $1) ORDER BY name"))
            .bind(scope.bind())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(network_from_row).collect()
    }

    /// Marks a created network `active` with the bridge libvirt gave it.
    pub async fn network_activate(&self, name: &str, bridge: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE networks SET state = 'active', bridge = $2 WHERE name = $1 AND state = 'creating'")
            .bind(name)
            .bind(bridge)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks an active network `deleting`, in one statement that also requires that no VM
    /// uses it; the refusal says why.
    pub async fn network_begin_delete(
        &self,
        scope: &crate::Scope,
        name: &str,
    ) -> Result<Result<NetworkRecord, NetworkDeleteRefusal>, StoreError> {
        let done = sqlx::query(
            "UPDATE networks SET state = 'deleting' WHERE name = $1 AND ($2 IS NULL OR owner = $2) AND state IN ('active', 'deleting') \
             AND NOT EXISTS (SELECT 1 FROM vms WHERE vms.network = networks.name)",
        )
        .bind(name)
        .bind(scope.bind())
        .execute(&self.pool)
        .await?;
        let Some(rec) = self.network_get(scope, name).await? else { return Ok(Err(NetworkDeleteRefusal::NotFound)) };
        if done.rows_affected() == 1 {
            return Ok(Ok(rec));
        }
        let users: Vec<String> = sqlx::query("SELECT name FROM vms WHERE network = $1 ORDER BY name")
            .bind(name)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| r.try_get("name"))
            .collect::<Result<_, _>>()?;
        if !users.is_empty() {
            return Ok(Err(NetworkDeleteRefusal::InUse(users)));
        }
        Ok(Err(NetworkDeleteRefusal::Busy(rec.state)))
    }

    pub async fn network_delete(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM networks WHERE name = $1").bind(name).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }
}
