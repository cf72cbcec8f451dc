//! `usage_records`: one row per VM-hour, written once and never changed; `meter_state`: the
//! last hour metered.

use crate::{unix_now, DataStore, StoreError};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub vm_id: String,
    /// Start of the hour (Unix seconds, a multiple of 3600).
    pub hour: i64,
    pub vm_name: String,
    pub owner: String,
    pub node: String,
    /// The VM's state when the hour was metered.
    pub state: String,
    pub vcpus: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub plan: Option<String>,
    /// Decimal strings, in `currency`.
    pub price_hourly: String,
    pub cost: String,
    pub cost_micros: i64,
    pub currency: String,
    pub recorded_at: i64,
}

const COLUMNS: &str =
    "vm_id, hour, vm_name, owner, node, state, vcpus, memory_mib, disk_gib, plan, price_hourly, cost, cost_micros, currency, recorded_at";

impl DataStore {
    /// The last hour metered, if metering ever ran.
    pub async fn meter_cursor(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT value FROM meter_state WHERE name = 'last_hour'").fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    /// Records one hour in one transaction: its records (a VM-hour already recorded stays as
    /// it is) and the cursor. Returns how many records were new.
    pub async fn meter_hour(&self, hour: i64, records: &[UsageRecord]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut added = 0;
        let now = unix_now();
        for r in records {
            let done = sqlx::query(&format!(
                "INSERT INTO usage_records ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                 ON CONFLICT (vm_id, hour) DO NOTHING"
            ))
            .bind(&r.vm_id)
            .bind(hour)
            .bind(&r.vm_name)
            .bind(&r.owner)
            .bind(&r.node)
            .bind(&r.state)
            .bind(r.vcpus as i64)
            .bind(r.memory_mib as i64)
            .bind(r.disk_gib as i64)
            .bind(&r.plan)
            .bind(&r.price_hourly)
            .bind(&r.cost)
            .bind(r.cost_micros)
            .bind(&r.currency)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            added += done.rows_affected();
        }
        sqlx::query(
            "INSERT INTO meter_state (name, value) VALUES ('last_hour', $1) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value WHERE excluded.value > meter_state.value",
        )
        .bind(hour)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(added)
    }

    /// Records of `owner` (all owners when `None`) for hours in `[from, to)`, oldest first.
    pub async fn usage_list(&self, owner: Option<&str>, from: Option<i64>, to: Option<i64>) -> Result<Vec<UsageRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM usage_records WHERE ($1 IS NULL OR owner = $1) AND ($2 IS NULL OR hour >= $2) \
             AND ($3 IS NULL OR hour < $3) ORDER BY hour, vm_name"
        ))
        .bind(owner)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(UsageRecord {
                    vm_id: row.try_get("vm_id")?,
                    hour: row.try_get("hour")?,
                    vm_name: row.try_get("vm_name")?,
                    owner: row.try_get("owner")?,
                    node: row.try_get("node")?,
                    state: row.try_get("state")?,
                    vcpus: row.try_get::<i64, _>("vcpus")? as u64,
                    memory_mib: row.try_get::<i64, _>("memory_mib")? as u64,
                    disk_gib: row.try_get::<i64, _>("disk_gib")? as u64,
                    plan: row.try_get("plan")?,
                    price_hourly: row.try_get("price_hourly")?,
                    cost: row.try_get("cost")?,
                    cost_micros: row.try_get("cost_micros")?,
                    currency: row.try_get("currency")?,
                    recorded_at: row.try_get("recorded_at")?,
                })
            })
            .collect()
    }
}
