//! Databases for tests, on either engine. The test environment (`scripts/testenv.sh`) runs a
//! PostgreSQL server and names it in `KVMCTL_TEST_POSTGRES`; each test gets a database of
//! its own (`kt_<random>`), which the next `scripts/testenv.sh` drops.

use crate::{Location, StoreError};
use sqlx::any::AnyConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};
use std::path::Path;
use std::str::FromStr;

/// The test PostgreSQL server's URL. Panics, saying what to run, when the test environment
/// is not set up: a test meant to cover PostgreSQL must never pass without it.
pub fn postgres_admin_url() -> String {
    std::env::var("KVMCTL_TEST_POSTGRES")
        .unwrap_or_else(|_| panic!("KVMCTL_TEST_POSTGRES is not set: run scripts/testenv.sh and source /run/kvmctl-test/env"))
}

/// Makes an empty database on the test PostgreSQL server; its URL.
pub async fn postgres_database() -> Result<String, StoreError> {
    sqlx::any::install_default_drivers();
    let admin = postgres_admin_url();
    let name = format!("kt_{}", uuid::Uuid::new_v4().simple());
    let mut conn = AnyConnectOptions::from_str(&admin)?.connect().await?;
    conn.execute(format!("CREATE DATABASE {name}").as_str()).await?;
    conn.close().await?;
    Ok(with_database(&admin, &name))
}

/// `url` with its database (the path) replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let authority = rest.split('/').next().unwrap_or("");
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

/// Where a test's database goes: a SQLite file in `dir`, or, with
/// `KVMCTL_TEST_ENGINE=postgres`, a fresh database on the test PostgreSQL server.
pub async fn location_for_tests(dir: &Path) -> Location {
    match std::env::var("KVMCTL_TEST_ENGINE").as_deref() {
        Ok("postgres") => Location::Postgres(postgres_database().await.expect("the test PostgreSQL makes a database")),
        Ok("sqlite") | Err(_) => Location::Sqlite(dir.join("kvmctl.db")),
        Ok(other) => panic!("KVMCTL_TEST_ENGINE={other:?}: use sqlite or postgres"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            super::with_database("postgres://postgres@localhost/postgres?host=/run/pg", "kt_1"),
            "postgres://postgres@localhost/kt_1?host=/run/pg"
        );
        assert_eq!(super::with_database("postgres://u:p@db:5432", "x"), "postgres://u:p@db:5432/x");
    }
}
