//! `leases`: what several daemons on one database use to share it (ADR 0017). A lease is
//! taken by one statement that writes the row only if it is free, expired or already this
//! holder's, so two daemons can never both hold it.

use crate::{DataStore, StoreError};
use sqlx::Row;

impl DataStore {
    /// Takes lease `name` for `holder` (acquisition `token`, operation `op`) until
    /// `now_ms + ttl_ms`, if nobody holds it, its holder let it expire, or `holder` holds it
    /// already (then it is renewed and takes the new token). `Err(op)`: another live holder
    /// has it, busy with `op`.
    pub async fn lease_take(
        &self,
        name: &str,
        holder: &str,
        token: &str,
        op: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Result<(), String>, StoreError> {
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, token, op, expires_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token, op = excluded.op, \
             expires_at = excluded.expires_at WHERE leases.holder = excluded.holder OR leases.expires_at < $6",
        )
        .bind(name)
        .bind(holder)
        .bind(token)
        .bind(op)
        .bind(now_ms + ttl_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Ok(()));
        }
        let row = sqlx::query("SELECT op FROM leases WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        Ok(Err(match row {
            Some(r) => r.try_get("op")?,
            // Released in between: busy a moment ago, free now; the caller may try again.
            None => "finishing".into(),
        }))
    }

    /// Gives up one acquisition of a lease (a later acquisition keeps it).
    pub async fn lease_release(&self, name: &str, token: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND token = $2").bind(name).bind(token).execute(&self.pool).await?;
        Ok(())
    }

    /// Extends one acquisition of a lease to `now_ms + ttl_ms`; false when it is not held by
    /// that acquisition any more (released, or taken over after it expired).
    pub async fn lease_extend(&self, name: &str, token: &str, now_ms: i64, ttl_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE leases SET expires_at = $3 WHERE name = $1 AND token = $2")
            .bind(name)
            .bind(token)
            .bind(now_ms + ttl_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The installation's id: made (from `candidate`) by the first caller, the same for every
    /// daemon on the database afterwards.
    pub async fn installation_id(&self, candidate: &str) -> Result<String, StoreError> {
        sqlx::query("INSERT INTO installation (one, id, created_at) VALUES (1, $1, $2) ON CONFLICT (one) DO NOTHING")
            .bind(candidate)
            .bind(crate::unix_now())
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT id FROM installation WHERE one = 1").fetch_one(&self.pool).await?;
        Ok(row.try_get("id")?)
    }

    /// The names of the live leases starting with `prefix` (a fixed string such as `vm:`)
    /// that holders other than `holder` have at `now_ms`, in one query.
    pub async fn lease_live_of_others(&self, prefix: &str, holder: &str, now_ms: i64) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT name FROM leases WHERE substr(name, 1, CAST($1 AS INTEGER)) = $2 AND holder <> $3 AND expires_at >= $4")
                .bind(prefix.len() as i64)
                .bind(prefix)
                .bind(holder)
                .bind(now_ms)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(|r| Ok(r.try_get("name")?)).collect()
    }

    /// Who holds lease `name` and until when (Unix ms), expired or not.
    pub async fn lease_get(&self, name: &str) -> Result<Option<(String, String, i64)>, StoreError> {
        let row = sqlx::query("SELECT holder, op, expires_at FROM leases WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        row.map(|r| Ok((r.try_get("holder")?, r.try_get("op")?, r.try_get("expires_at")?))).transpose()
    }
}

#[cfg(test)]
mod tests {
    use crate::DataStore;

    crate::on_both_engines!(a_lease_has_one_live_holder_and_passes_on_when_it_expires);

    async fn a_lease_has_one_live_holder_and_passes_on_when_it_expires(store: DataStore) {
        let take = |holder: &'static str, token: &'static str, now: i64| {
            let store = store.clone();
            async move { store.lease_take("leader", holder, token, "leader", now, 1000).await.unwrap() }
        };
        assert_eq!(take("a", "a1", 0).await, Ok(()));
        assert_eq!(take("b", "b1", 500).await, Err("leader".into()), "a holds it until 1000");
        assert_eq!(take("a", "a2", 900).await, Ok(()), "its holder renews it (to 1900)");
        assert_eq!(take("b", "b1", 1500).await, Err("leader".into()));
        assert!(!store.lease_extend("leader", "a1", 1800, 1000).await.unwrap(), "an older acquisition extends nothing");
        assert!(store.lease_extend("leader", "a2", 1800, 1000).await.unwrap());
        assert_eq!(take("b", "b1", 2500).await, Err("leader".into()), "extended to 2800");
        assert_eq!(take("b", "b1", 2801).await, Ok(()), "a died: b takes over");
        assert_eq!(store.lease_get("leader").await.unwrap().unwrap().0, "b");
        assert_eq!(store.lease_live_of_others("lead", "a", 2900).await.unwrap(), ["leader"]);
        assert!(store.lease_live_of_others("lead", "b", 2900).await.unwrap().is_empty(), "its own");
        assert!(store.lease_live_of_others("lead", "a", 4000).await.unwrap().is_empty(), "expired");
        assert!(store.lease_live_of_others("vm:", "a", 2900).await.unwrap().is_empty(), "another prefix");
        // A release of an older acquisition frees nothing.
        store.lease_release("leader", "a2").await.unwrap();
        assert_eq!(store.lease_get("leader").await.unwrap().unwrap().0, "b");
        store.lease_release("leader", "b1").await.unwrap();
        assert!(store.lease_get("leader").await.unwrap().is_none());
        // Many takers at once: exactly one wins.
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let h = format!("h{i}");
                    store.lease_take("vm:x", &h, &h, "creating", 10_000, 1000).await.unwrap().is_ok()
                })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            won += t.await.unwrap() as u32;
        }
        assert_eq!(won, 1);
        // The installation id is the first caller's, for everyone.
        assert_eq!(store.installation_id("first").await.unwrap(), "first");
        assert_eq!(store.installation_id("second").await.unwrap(), "first");
    }
}
