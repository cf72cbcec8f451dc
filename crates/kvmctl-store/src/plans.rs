//! `plans`: named sizes (vCPUs, memory, disk).

use crate::{DataStore, StoreError};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRecord {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

fn plan_from_row(row: sqlx::sqlite::SqliteRow) -> Result<PlanRecord, StoreError> {
    Ok(PlanRecord {
        name: row.try_get("name")?,
        vcpus: row.try_get::<i64, _>("vcpus")? as u32,
        memory_mib: row.try_get::<i64, _>("memory_mib")? as u64,
        disk_gib: row.try_get::<i64, _>("disk_gib")? as u64,
    })
}

impl DataStore {
    pub async fn plan_list(&self) -> Result<Vec<PlanRecord>, StoreError> {
        let rows = sqlx::query("SELECT name, vcpus, memory_mib, disk_gib FROM plans ORDER BY vcpus, memory_mib, name")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(plan_from_row).collect()
    }

    pub async fn plan_get(&self, name: &str) -> Result<Option<PlanRecord>, StoreError> {
        let row = sqlx::query("SELECT name, vcpus, memory_mib, disk_gib FROM plans WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(plan_from_row).transpose()
    }
}
