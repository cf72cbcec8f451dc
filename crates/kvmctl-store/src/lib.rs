//! kvmctl's state: an embedded SQLite database (PostgreSQL for replicated control planes
//! comes later with the same portable SQL).
//!
//! Owns the schema and its migrations (`migrations/`, embedded in the binary and applied on
//! open) and exposes `DataStore` methods named `<resource>_<verb>`. It decides no policy:
//! callers validate and authorise, the store records.

use kvmctl_types::Name;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// A query with its arguments, as the helpers that bind a record's fields take and return it.
pub(crate) type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

mod audit;
mod clones;
mod disks;
mod forwards;
mod images;
mod media;
mod networks;
mod nodes;
mod plans;
mod pools;
mod sessions;
mod shares;
mod snapshots;
mod sshkeys;
mod testruns;
mod usage;
mod users;
mod vms;

pub use audit::AuditRecord;
pub use clones::CloneBaseRecord;
pub use disks::DiskRecord;
pub use forwards::{ForwardRecord, PoolRange};
pub use images::ImageRecord;
pub use media::MediaRecord;
pub use networks::{NetworkDeleteRefusal, NetworkRecord};
pub use nodes::{NodeAllocation, NodeRecord, NodeSettings};
pub use plans::PlanRecord;
pub use pools::PoolRecord;
pub use shares::ShareRecord;
pub use snapshots::SnapshotRecord;
pub use sshkeys::SshKeyRecord;
pub use testruns::TestRunRecord;
pub use usage::UsageRecord;
pub use users::{QuotaOverride, TokenRecord, UserRecord};
pub use vms::VmRecord;

/// Whose resources a tenant-visible query may return: one owner's, or (admins, the
/// daemon's own work) everyone's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(Option<String>);

impl Scope {
    /// Every owner's: admins, the reconciler, the readiness watch.
    pub fn all() -> Scope {
        Scope(None)
    }

    pub fn owner(name: &str) -> Scope {
        Scope(Some(name.to_owned()))
    }

    /// What a caller sees.
    pub fn of(caller: &kvmctl_core::Caller) -> Scope {
        Scope(caller.owner_scope().map(str::to_owned))
    }

    pub(crate) fn bind(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the database directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the database at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot apply database migrations to {path}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
    /// A row with this unique key exists already.
    #[error("{kind} {name:?} already exists")]
    Exists { kind: &'static str, name: String },
}

/// Database errors by kind: a taken name is a conflict; a database that is busy, locked or
/// unreachable is `Backend` (503, retrying may succeed); anything else (a constraint the code
/// should have kept, a row that does not decode) is a bug, `Internal`. The SQL error itself
/// is the private half, for the log.
impl From<StoreError> for kvmctl_core::Error {
    fn from(e: StoreError) -> Self {
        use kvmctl_core::Error as E;
        let detail = kvmctl_core::error::chain(&e);
        let busy = || E::Backend { public: "the database is busy or unreachable; retrying may succeed".into(), detail: detail.clone() };
        match &e {
            StoreError::Exists { .. } => E::Conflict(e.to_string()),
            StoreError::Query(q) => match q {
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => busy(),
                // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
                sqlx::Error::Database(d) if d.code().and_then(|c| c.parse::<u32>().ok()).is_some_and(|c| matches!(c & 0xff, 5 | 6)) => {
                    busy()
                }
                sqlx::Error::Database(d) if d.is_unique_violation() => E::Conflict("that name or port is taken; pick another".into()),
                _ => E::Internal(detail),
            },
            StoreError::CreateDir { .. } | StoreError::Open { .. } | StoreError::Migrate { .. } => busy(),
        }
    }
}

/// Maps a unique-constraint violation to `Exists`, any other error to `Query`.
pub(crate) fn unique<'a>(kind: &'static str, name: &'a str) -> impl FnOnce(sqlx::Error) -> StoreError + 'a {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Exists { kind, name: name.to_owned() },
        _ => StoreError::Query(e),
    }
}

pub(crate) fn decode_name(what: &str, s: String) -> Result<Name, StoreError> {
    Name::parse(&s).map_err(|e| StoreError::Query(sqlx::Error::Decode(format!("{what} {s:?} {e}").into())))
}

/// A VM id column (a UUID) as a `VmId`.
pub(crate) fn decode_vm_id(s: &str) -> Result<kvmctl_types::VmId, StoreError> {
    s.parse().map(kvmctl_types::VmId).map_err(|e: uuid::Error| StoreError::Query(sqlx::Error::Decode(format!("vm id {s:?}: {e}").into())))
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct DataStore {
    pub(crate) pool: SqlitePool,
    path: PathBuf,
}

impl DataStore {
    /// Opens (creating if needed) the SQLite database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir { path: dir.to_owned(), source })?;
        }
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| StoreError::Open { path: path.to_owned(), source })?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
        MIGRATIONS.run(&pool).await.map_err(|source| StoreError::Migrate { path: path.to_owned(), source })?;
        Ok(DataStore { pool, path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The highest migration applied.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM _sqlx_migrations WHERE success = TRUE").fetch_one(&self.pool).await?;
        Ok(row.try_get("v")?)
    }

    /// The highest migration this binary knows; a database ahead of it was written by a newer kvmctl.
    pub fn schema_version_known() -> i64 {
        MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_migrates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/kvmctl.db");
        let store = DataStore::open(&path).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), DataStore::schema_version_known());
        assert!(DataStore::schema_version_known() >= 1);
        let local = Name::parse("local").unwrap();
        store.node_upsert(&local, "qemu:///system", &NodeSettings::default()).await.unwrap();
        store.close().await;

        let again = DataStore::open(&path).await.unwrap();
        let nodes = again.node_list().await.unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!((&nodes[0].name, nodes[0].uri.as_str(), nodes[0].state.as_str()), (&local, "qemu:///system", "active"));
        assert_eq!(nodes[0].settings, NodeSettings::default(), "2.0x CPU, 1.0x memory, nothing reserved");
        let updated =
            again.node_upsert(&local, "test:///default", &NodeSettings { cpu_overcommit: 400, ..Default::default() }).await.unwrap();
        assert_eq!(updated.uri, "test:///default");
        assert_eq!(updated.settings.cpu_overcommit, 200, "a known node keeps its settings");
        assert_eq!(again.node_list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn unwritable_path_says_where() {
        let err = DataStore::open(Path::new("/proc/kvmctl/x.db")).await.unwrap_err();
        assert!(err.to_string().contains("/proc/kvmctl"), "{err}");
    }
}
