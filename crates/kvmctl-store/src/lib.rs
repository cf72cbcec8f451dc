//! kvmctl's state: an embedded SQLite database by default, or PostgreSQL, which several
//! daemons can share (ADR 0017).
//!
//! Owns the schema and its migrations (`migrations/`, portable SQL written once, embedded in
//! the binary and applied on open; PostgreSQL gets them through `to_postgres`) and exposes
//! `DataStore` methods named `<resource>_<verb>`. Queries are one text for both engines (sqlx's
//! `Any` driver; `$n` placeholders, portable SQL). It decides no policy: callers validate and
//! authorise, the store records.

use kvmctl_types::Name;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// A query with its arguments, as the helpers that bind a record's fields take and return it.
pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

mod audit;
mod clones;
mod disks;
mod forwards;
mod images;
mod labels;
mod leases;
mod media;
mod networks;
mod nodes;
mod plans;
mod pools;
mod sessions;
mod shares;
mod snapshots;
mod sshkeys;
pub mod testing;
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

/// A migration's SQL as PostgreSQL takes it. Migrations are portable SQL; the one thing SQLite
/// spells its own way is an auto-incrementing key. A new migration that needs more than this
/// must say so here (and the test below checks what is left).
fn to_postgres(sql: &str) -> String {
    sql.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
}

/// The embedded migrations, translated for PostgreSQL (same versions and descriptions; the
/// checksums are of the translated text).
#[derive(Debug)]
struct PostgresMigrations;

impl<'s> sqlx::migrate::MigrationSource<'s> for PostgresMigrations {
    #[allow(clippy::type_complexity)]
    fn resolve(
        self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<sqlx::migrate::Migration>, sqlx::error::BoxDynError>> + Send + 's>>
    {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|m| {
                    sqlx::migrate::Migration::new(
                        m.version,
                        m.description.clone(),
                        m.migration_type,
                        std::borrow::Cow::Owned(to_postgres(&m.sql)),
                        m.no_tx,
                    )
                })
                .collect())
        })
    }
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

/// Where a store's database is: a SQLite file, or a PostgreSQL server (`postgres://...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Location {
    /// A `postgres://` or `postgresql://` URL is PostgreSQL; anything else is a SQLite file
    /// (`sqlite://` in front is allowed).
    pub fn parse(s: &str) -> Location {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Location::Postgres(s.to_owned())
        } else {
            Location::Sqlite(PathBuf::from(s.strip_prefix("sqlite://").unwrap_or(s)))
        }
    }

    /// What status output and logs show: the file, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres(url) => redact_url(url),
        }
    }
}

/// A URL with the password of its user part replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (auth, tail) = rest.split_at(end);
    match auth.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{scheme}://{name}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

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
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot apply database migrations to {path}")]
    Migrate {
        path: String,
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
                sqlx::Error::Database(d) if is_busy(d.as_ref()) => busy(),
                sqlx::Error::Database(d) if d.is_unique_violation() => E::Conflict("that name or port is taken; pick another".into()),
                _ => E::Internal(detail),
            },
            StoreError::CreateDir { .. } | StoreError::Open { .. } | StoreError::Migrate { .. } => busy(),
        }
    }
}

/// SQLite's SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes; PostgreSQL's
/// serialization failure and deadlock (retried by the store first), lock timeout, too many
/// connections and shutdown (`40001`, `40P01`, `55P03`, `53300`, `57P01`-`57P03`).
fn is_busy(d: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = d.code() else { return false };
    match code.parse::<u32>() {
        Ok(c) => matches!(c & 0xff, 5 | 6),
        Err(_) => matches!(&*code, "40001" | "40P01" | "55P03" | "53300" | "57P01" | "57P02" | "57P03"),
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

/// The advisory lock key of admissions on PostgreSQL (`DataStore::admission`): "kvmadmit".
const ADMISSION_LOCK: i64 = 0x6b76_6d61_646d_6974;

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct DataStore {
    pub(crate) pool: AnyPool,
    engine: Engine,
    location: Location,
}

impl DataStore {
    /// Opens (creating if needed) the SQLite database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::connect(&Location::Sqlite(path.to_owned())).await
    }

    /// Opens the database at `location` (a SQLite file is created if needed; a PostgreSQL
    /// database must exist) and applies pending migrations. Several daemons may open one
    /// PostgreSQL database at once: migrations run under the migrator's advisory lock.
    pub async fn connect(location: &Location) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let shown = location.display();
        let open_err = |source| StoreError::Open { path: shown.clone(), source };
        let (engine, url, pool_opts) = match location {
            Location::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir { path: dir.to_owned(), source })?;
                }
                // WAL and a generous busy timeout, on every connection the pool opens.
                let opts = AnyPoolOptions::new().max_connections(4).after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON",
                        )
                        .await
                        .map(|_| ())
                    })
                });
                (Engine::Sqlite, format!("sqlite://{}?mode=rwc", sqlite_url_path(path)), opts)
            }
            Location::Postgres(url) => (Engine::Postgres, url.clone(), AnyPoolOptions::new().max_connections(8)),
        };
        let opts = AnyConnectOptions::from_str(&url).map_err(open_err)?;
        let pool = pool_opts.connect_with(opts).await.map_err(open_err)?;
        let migrate_err = |source| StoreError::Migrate { path: shown.clone(), source };
        match engine {
            Engine::Sqlite => MIGRATIONS.run(&pool).await.map_err(migrate_err)?,
            Engine::Postgres => {
                sqlx::migrate::Migrator::new(PostgresMigrations).await.map_err(migrate_err)?.run(&pool).await.map_err(migrate_err)?
            }
        }
        Ok(DataStore { pool, engine, location: location.clone() })
    }

    /// A transaction for an admission: statements that check a quota or a node's capacity
    /// against sums of rows and write a row that changes those sums. SQLite runs one writer
    /// at a time, so each such statement is exact by itself. PostgreSQL (READ COMMITTED)
    /// would let two transactions read the same sums and both write: there, the transaction
    /// first takes one advisory lock that every admission of every daemon on the database
    /// takes, so admissions run one after another (each a few milliseconds) and each sees
    /// the rows of those before it. A transaction waiting for it holds no other lock, so it
    /// cannot deadlock.
    pub(crate) async fn admission(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.engine == Engine::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(ADMISSION_LOCK).execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The SQLite file, if the store is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.location {
            Location::Sqlite(p) => Some(p),
            Location::Postgres(_) => None,
        }
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

/// A file path as the path part of a `sqlite://` URL: the characters a URL gives meaning to
/// are percent-encoded (sqlx decodes the path).
fn sqlite_url_path(path: &Path) -> String {
    let mut out = String::new();
    for b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'%' | b'?' | b'#' | b' ' | 0x80.. => out.push_str(&format!("%{b:02X}")),
            _ => out.push(*b as char),
        }
    }
    out
}

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Runs a store test on each engine: `$name::sqlite` on a file, `$name::postgres` on a fresh
/// database of the test PostgreSQL server. `$name` is also the async function of the store that
/// is the test.
#[cfg(test)]
macro_rules! on_both_engines {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                super::$name(crate::DataStore::open(&dir.path().join("k.db")).await.unwrap()).await;
            }

            #[tokio::test]
            async fn postgres() {
                let url = crate::testing::postgres_database().await.unwrap();
                super::$name(crate::DataStore::connect(&crate::Location::Postgres(url)).await.unwrap()).await;
            }
        }
    };
}
#[cfg(test)]
pub(crate) use on_both_engines;

#[cfg(test)]
mod tests {
    use super::*;

    /// What `to_postgres` leaves of SQLite's own dialect: nothing it knows of. A migration
    /// using one of these needs a translation (or a portable spelling).
    #[test]
    fn migrations_translate_to_postgres() {
        assert!(MIGRATIONS.iter().any(|m| m.sql.contains("AUTOINCREMENT")), "the audit table's key is translated");
        for m in MIGRATIONS.iter() {
            let pg = to_postgres(&m.sql);
            for sqlite_only in ["AUTOINCREMENT", "PRAGMA", "INSERT OR ", "REPLACE INTO", "WITHOUT ROWID", "DATETIME("] {
                assert!(!pg.to_uppercase().contains(sqlite_only), "migration {} uses {sqlite_only}", m.version);
            }
        }
    }

    #[test]
    fn urls_are_shown_without_passwords() {
        assert_eq!(redact_url("postgres://kvm:s3cret@db:5432/kvmctl"), "postgres://kvm:***@db:5432/kvmctl");
        assert_eq!(redact_url("postgres://kvm@db/kvmctl?host=/run"), "postgres://kvm@db/kvmctl?host=/run");
        assert_eq!(Location::parse("postgresql://a:b@h/d").display(), "postgresql://a:***@h/d");
        assert_eq!(Location::parse("sqlite:///var/lib/k.db"), Location::Sqlite("/var/lib/k.db".into()));
        assert_eq!(Location::parse("/var/lib/k.db"), Location::Sqlite("/var/lib/k.db".into()));
    }

    #[tokio::test]
    async fn a_sqlite_path_with_url_characters_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a dir?#%/k.db");
        let store = DataStore::open(&path).await.unwrap();
        assert!(path.exists(), "the file is where the path says");
        assert_eq!(store.engine(), Engine::Sqlite);
    }

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
