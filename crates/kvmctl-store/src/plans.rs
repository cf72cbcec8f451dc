//! `plans`: named sizes (vCPUs, memory, disk) with an hourly price. A retired plan (not
//! `active`) keeps its VMs but takes no new ones.

use crate::{unique, unix_now, AnyQuery, DataStore, StoreError};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRecord {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// Decimal, in the configured currency, e.g. `0.0125`.
    pub price_hourly: String,
    pub sort_order: i64,
    pub active: bool,
}

const COLUMNS: &str = "name, vcpus, memory_mib, disk_gib, price_hourly, sort_order, active";

fn plan_from_row(row: sqlx::any::AnyRow) -> Result<PlanRecord, StoreError> {
    Ok(PlanRecord {
        name: row.try_get("name")?,
        vcpus: row.try_get::<i64, _>("vcpus")? as u32,
        memory_mib: row.try_get::<i64, _>("memory_mib")? as u64,
        disk_gib: row.try_get::<i64, _>("disk_gib")? as u64,
        price_hourly: row.try_get("price_hourly")?,
        sort_order: row.try_get("sort_order")?,
        active: row.try_get::<i64, _>("active")? != 0,
    })
}

impl DataStore {
    /// Plans in their sort order; retired ones only with `include_retired`.
    pub async fn plan_list(&self, include_retired: bool) -> Result<Vec<PlanRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM plans WHERE active = 1 OR $1 ORDER BY sort_order, name"))
            .bind(include_retired)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(plan_from_row).collect()
    }

    pub async fn plan_get(&self, name: &str) -> Result<Option<PlanRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM plans WHERE name = $1")).bind(name).fetch_optional(&self.pool).await?;
        row.map(plan_from_row).transpose()
    }

    pub async fn plan_insert(&self, p: &PlanRecord) -> Result<(), StoreError> {
        plan_bind(sqlx::query(&format!("INSERT INTO plans ({COLUMNS}, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")), p)
            .bind(unix_now())
            .execute(&self.pool)
            .await
            .map_err(unique("plan", &p.name))?;
        Ok(())
    }

    /// Replaces a plan's fields (the name stays); false when there is no such plan. VMs keep
    /// the sizes they were created with.
    pub async fn plan_update(&self, p: &PlanRecord) -> Result<bool, StoreError> {
        let q =
            "UPDATE plans SET vcpus = $2, memory_mib = $3, disk_gib = $4, price_hourly = $5, sort_order = $6, active = $7 WHERE name = $1";
        let done = plan_bind(sqlx::query(q), p).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Binds a plan's fields as $1-$7, in `COLUMNS`' order.
fn plan_bind<'q>(q: AnyQuery<'q>, p: &'q PlanRecord) -> AnyQuery<'q> {
    q.bind(&p.name)
        .bind(p.vcpus as i64)
        .bind(p.memory_mib as i64)
        .bind(p.disk_gib as i64)
        .bind(&p.price_hourly)
        .bind(p.sort_order)
        .bind(p.active as i64)
}
