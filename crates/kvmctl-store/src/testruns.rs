//! `test_runs`: runs of the ephemeral-VM test runner, and the tag (`vms.test_run`) that ties
//! a VM to its run. A run is `running` while its runner's heartbeats come; every change of
//! state is a compare-and-set from `running`, so a runner finishing and the reaper
//! abandoning the same run cannot both win.

use crate::{unix_now, DataStore, Scope, StoreError};
use kvmctl_types::{Name, VmId};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRunRecord {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub state: String,
    pub grace_seconds: i64,
    pub heartbeat_at: i64,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub summary: Option<String>,
}

const COLUMNS: &str = "id, owner, name, state, grace_seconds, heartbeat_at, created_at, finished_at, summary";

fn run_from_row(row: sqlx::any::AnyRow) -> Result<TestRunRecord, StoreError> {
    Ok(TestRunRecord {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        name: row.try_get("name")?,
        state: row.try_get("state")?,
        grace_seconds: row.try_get("grace_seconds")?,
        heartbeat_at: row.try_get("heartbeat_at")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
        summary: row.try_get("summary")?,
    })
}

impl DataStore {
    pub async fn test_run_insert(&self, r: &TestRunRecord) -> Result<(), StoreError> {
        sqlx::query(&format!("INSERT INTO test_runs ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
            .bind(&r.id)
            .bind(&r.owner)
            .bind(&r.name)
            .bind(&r.state)
            .bind(r.grace_seconds)
            .bind(r.heartbeat_at)
            .bind(r.created_at)
            .bind(r.finished_at)
            .bind(&r.summary)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The run `id` if `scope` may see it (another owner's run is as absent as a missing one).
    pub async fn test_run_get(&self, scope: &Scope, id: &str) -> Result<Option<TestRunRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM test_runs WHERE id = $1 AND ($2 IS NULL OR owner = $2)"))
            .bind(id)
            .bind(scope.bind())
            .fetch_optional(&self.pool)
            .await?;
        row.map(run_from_row).transpose()
    }

    /// Runs `scope` may see, newest first.
    pub async fn test_run_list(&self, scope: &Scope) -> Result<Vec<TestRunRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM test_runs WHERE ($1 IS NULL OR owner = $1) ORDER BY created_at DESC, id"))
            .bind(scope.bind())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(run_from_row).collect()
    }

    /// A heartbeat from the runner of `id`; `false` when the run is no longer `running`.
    pub async fn test_run_heartbeat(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE test_runs SET heartbeat_at = $1 WHERE id = $2 AND state = 'running'")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a `running` run in `state` (`passed`, `failed`, `error` or `abandoned`), with the
    /// runner's summary when it gave one; `false` when it had ended already.
    pub async fn test_run_finish(&self, id: &str, state: &str, summary: Option<&str>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE test_runs SET state = $1, summary = COALESCE($2, summary), finished_at = $3 WHERE id = $4 AND state = 'running'",
        )
        .bind(state)
        .bind(summary)
        .bind(unix_now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Running runs whose runner has been silent longer than their grace period at `now`.
    pub async fn test_run_silent(&self, now: i64) -> Result<Vec<TestRunRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM test_runs WHERE state = 'running' AND heartbeat_at + grace_seconds < $1"))
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(run_from_row).collect()
    }

    pub async fn test_run_delete(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM test_runs WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Tags VM `vm` as part of run `run` (`None`: no longer; a kept VM lives on by its TTL).
    pub async fn vm_test_run_set(&self, vm: &VmId, run: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE vms SET test_run = $1 WHERE id = $2").bind(run).bind(vm.to_string()).execute(&self.pool).await?;
        Ok(())
    }

    /// The VMs tagged with run `run`: (name, id), oldest first.
    pub async fn vm_list_of_run(&self, run: &str) -> Result<Vec<(Name, VmId)>, StoreError> {
        let rows =
            sqlx::query("SELECT name, id FROM vms WHERE test_run = $1 ORDER BY created_at, name").bind(run).fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                Ok((crate::decode_name("vm name", row.try_get("name")?)?, crate::decode_vm_id(&id)?))
            })
            .collect()
    }

    /// The names of the VMs of each run `scope` may see (a run without VMs is absent), oldest
    /// first: `test_run_list`'s VMs in one query.
    pub async fn vm_names_by_run(&self, scope: &Scope) -> Result<std::collections::HashMap<String, Vec<Name>>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.test_run AS run, v.name AS name FROM vms v JOIN test_runs r ON r.id = v.test_run \
             WHERE ($1 IS NULL OR r.owner = $1) ORDER BY v.created_at, v.name",
        )
        .bind(scope.bind())
        .fetch_all(&self.pool)
        .await?;
        let mut out: std::collections::HashMap<String, Vec<Name>> = std::collections::HashMap::new();
        for row in rows {
            out.entry(row.try_get("run")?).or_default().push(crate::decode_name("vm name", row.try_get("name")?)?);
        }
        Ok(out)
    }

    /// The run VM `vm` is part of.
    pub async fn vm_test_run(&self, vm: &VmId) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT test_run FROM vms WHERE id = $1").bind(vm.to_string()).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get::<Option<String>, _>("test_run")).transpose()?.flatten())
    }
}

impl DataStore {
    /// Runs that hold VMs but are no longer `running` (or whose record is gone).
    pub async fn test_run_tags_ended(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT v.test_run AS run FROM vms v LEFT JOIN test_runs r ON r.id = v.test_run \
             WHERE v.test_run IS NOT NULL AND (r.id IS NULL OR r.state <> 'running')",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|r| Ok(r.try_get("run")?)).collect()
    }
}
