//! `audit`: one row per state-changing request.

use crate::{unix_now, DataStore, StoreError};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub request_id: String,
    pub user_name: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// `ok`, or the error kind.
    pub outcome: String,
}

impl DataStore {
    pub async fn audit_insert(&self, a: &AuditRecord) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit (at, request_id, user_name, method, path, status, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(unix_now())
            .bind(&a.request_id)
            .bind(&a.user_name)
            .bind(&a.method)
            .bind(&a.path)
            .bind(a.status as i64)
            .bind(&a.outcome)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Rows newest first, of `user` when given, at or after `since` (unix seconds).
    pub async fn audit_list(&self, user: Option<&str>, since: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, request_id, user_name, method, path, status, outcome FROM audit \
             WHERE ($1 IS NULL OR user_name = $1) AND ($2 IS NULL OR at >= $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(user)
        .bind(since)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    request_id: r.try_get("request_id")?,
                    user_name: r.try_get("user_name")?,
                    method: r.try_get("method")?,
                    path: r.try_get("path")?,
                    status: r.try_get::<i64, _>("status")? as u16,
                    outcome: r.try_get("outcome")?,
                })
            })
            .collect()
    }
}
