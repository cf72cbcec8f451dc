//! Starting and stopping the daemon: open the database, register the local node, bind the
//! unix socket (and TCP when configured), serve until told to stop.

use crate::app::Context;
use crate::config::Config;
use kvmctl_libvirt::LibvirtNode;
use kvmctl_store::{DataStore, StoreError};
use kvmctl_types::Name;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot protect the daemon's state directory {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the database")]
    Store(#[from] StoreError),
    #[error("cannot create the socket directory {path}")]
    SocketDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another kvmctl daemon is already serving {0}; stop it first, or pick another socket with --socket")]
    AlreadyRunning(PathBuf),
    #[error("cannot listen on {path}")]
    BindUnix {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve HTTPS")]
    Tls(#[from] crate::tls::TlsError),
    #[error("node agents: {0}")]
    Agent(String),
    #[error("cannot listen on {addr}")]
    BindTcp {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("socket group {0:?} does not exist; create it (groupadd {0}) or unset socket_group")]
    NoSuchGroup(String),
    #[error("cannot set ownership of {path}")]
    Chown {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A daemon serving in the background of the current runtime.
pub struct RunningServer {
    pub socket: PathBuf,
    pub tcp_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Stops the libvirt event watch when the server is dropped.
    _events: kvmctl_libvirt::events::EventWatch,
    readiness: JoinHandle<()>,
    metering: JoinHandle<()>,
    hygiene: JoinHandle<()>,
    reaper: JoinHandle<()>,
    restarts: JoinHandle<()>,
    /// Renews this daemon's leases (shared database).
    leases: Option<JoinHandle<()>>,
    /// The daemon's context: its store, and what stopping tells open event streams.
    ctx: Arc<Context>,
}

impl RunningServer {
    /// Opens everything and starts serving; returns once the sockets accept connections.
    pub async fn start(cfg: &Config) -> Result<Self, ServeError> {
        Self::start_with_clock(cfg, Arc::new(crate::clock::SystemClock)).await
    }

    /// As `start`, with background work (metering) on `clock` (tests move time).
    pub async fn start_with_clock(cfg: &Config, clock: Arc<dyn crate::clock::Clock>) -> Result<Self, ServeError> {
        // Everything that can fail is opened before anything is spawned: a refused start
        // leaves no task, socket or listener behind, and a second daemon on the same socket
        // stops before it touches the database. Connections wait in the backlog until serving.
        let mut tls = false;
        let tcp = match cfg.listen {
            Some(addr) => {
                let acceptor = match (&cfg.tls_cert, &cfg.tls_key) {
                    (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
                    _ => None,
                };
                let tcp = TcpListener::bind(addr).await.map_err(|source| ServeError::BindTcp { addr, source })?;
                let bound = tcp.local_addr().map_err(|source| ServeError::BindTcp { addr, source })?;
                if !bound.ip().is_loopback() && acceptor.is_none() {
                    tracing::warn!(%bound, "listening on a non-loopback address WITHOUT TLS: tokens cross the network in clear; set tls_cert and tls_key");
                }
                tls = acceptor.is_some();
                Some((tcp, acceptor))
            }
            None => None,
        };
        let unix = bind_unix(&cfg.socket, cfg.socket_group.as_deref())?;
        if let Err(e) = state_protect(cfg) {
            let _ = std::fs::remove_file(&cfg.socket);
            return Err(e);
        }
        let opened = async {
            let store = DataStore::connect(&cfg.database_location()).await?;
            if let Some(path) = store.sqlite_path() {
                store_files_protect(path);
            }
            store.node_upsert(&Name::parse("local").expect("valid"), &cfg.libvirt_uri, &cfg.local_node_settings()).await?;
            let installation = store.installation_id(&uuid::Uuid::new_v4().simple().to_string()).await?;
            Ok::<_, StoreError>((store, installation))
        };
        let (store, installation) = match opened.await {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&cfg.socket);
                return Err(e.into());
            }
        };
        // libvirt may be down at start-up; the node connects on first use and reconnects
        // whenever libvirtd restarts, so the daemon itself never has to.
        let local_node = Arc::new(LibvirtNode::new(cfg.libvirt_uri.clone()));
        let (mut ctx, boots) = Context::new(store.clone(), local_node, cfg.clone());
        ctx.clock = clock;
        ctx.installation = Some(installation);
        if let (Some(ca), Some(cert), Some(key)) = (&cfg.agent_ca, &cfg.agent_cert, &cfg.agent_key) {
            ctx.agent_tls = Some(crate::agent::client::AgentTls::load(ca, cert, key).map_err(ServeError::Agent)?);
        }
        let ctx = Arc::new(ctx);
        // VMs wanted running that a failure shut off are started again, one at a time.
        let (restarts_tx, restarts_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
        // Operations a crash interrupted are finished or undone before any request is taken
        // (on a shared database, by the leader: ADR 0017).
        crate::app::vms::staging_sweep(&ctx);
        if ctx.lead().await {
            leader_pass(&ctx, &restarts_tx, true).await;
        }
        // Boots that were being watched when the daemon stopped are watched again, from the
        // stage they reached.
        crate::app::readiness::resume(&ctx).await;
        let app = crate::http::router(ctx.clone());

        let (shutdown, rx) = watch::channel(false);
        // Watches each boot's readiness stages; aborted on stop (watchers hold the context).
        let readiness = tokio::spawn(crate::app::readiness::run(ctx.clone(), boots));
        // Hourly usage records; hours missed while down are caught up now.
        let metering = tokio::spawn(crate::app::metering::run(ctx.clone()));
        let hygiene = tokio::spawn(crate::app::hygiene::run(ctx.clone()));
        // Test runs whose runner went silent, and the VMs of ended runs (at once: start-up).
        let reaper = tokio::spawn(crate::app::testruns::run(ctx.clone()));
        let restarts = tokio::spawn(crate::app::restart::run(ctx.clone(), restarts_rx));
        let mut tasks = Vec::new();
        let stop = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        // libvirt's lifecycle events trigger a reconciler pass at once; the timer catches
        // anything an event could not tell (and runs when events are unavailable).
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel::<Option<String>>();
        let events_watch = kvmctl_libvirt::events::lifecycle_watch(cfg.libvirt_uri.clone(), move |domain| {
            let _ = events_tx.send(domain);
        });
        tasks.push(tokio::spawn({
            let ctx = ctx.clone();
            let mut rx = rx.clone();
            let every = std::time::Duration::from_secs(cfg.reconcile_interval_seconds.max(1));
            async move {
                loop {
                    let stopping = tokio::select! {
                        _ = tokio::time::sleep(every) => false,
                        Some(domain) = events.recv() => {
                            tracing::debug!(?domain, "libvirt domain event");
                            // One pass answers a burst of events (define, start, ...).
                            while events.try_recv().is_ok() {}
                            false
                        }
                        r = rx.wait_for(|v| *v) => { drop(r); true }
                    };
                    if stopping {
                        break;
                    }
                    // On a shared database only the leader reconciles; it also finishes what
                    // other daemons left when they died (their VMs' leases expired).
                    if ctx.lead().await {
                        leader_pass(&ctx, &restarts_tx, ctx.shared).await;
                    }
                }
            }
        }));
        // Leases (shared database): renewed every third of their life while the daemon runs.
        let leases = ctx.shared.then(|| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(crate::app::LEASE_TTL_MS as u64 / 3)).await;
                    ctx.leases_renew().await;
                }
            })
        });
        tasks.push(tokio::spawn({
            let app = app.clone();
            let rx = rx.clone();
            async move {
                let svc = app.into_make_service_with_connect_info::<crate::http::auth::Peer>();
                if let Err(e) = axum::serve(unix, svc).with_graceful_shutdown(stop(rx)).await {
                    tracing::error!(error = %e, "unix socket server failed");
                }
            }
        }));
        let mut tcp_addr = None;
        if let Some((tcp, acceptor)) = tcp {
            tcp_addr = Some(tcp.local_addr().map_err(|source| ServeError::BindTcp { addr: cfg.listen.expect("listening"), source })?);
            tasks.push(tokio::spawn(async move {
                let svc = app.into_make_service_with_connect_info::<crate::http::auth::Peer>();
                let result = match acceptor {
                    Some(acceptor) => match crate::tls::TlsListener::new(tcp, acceptor) {
                        Ok(listener) => axum::serve(listener, svc).with_graceful_shutdown(stop(rx)).await,
                        Err(e) => Err(e),
                    },
                    None => axum::serve(tcp, svc).with_graceful_shutdown(stop(rx)).await,
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "TCP server failed");
                }
            }));
        }
        tracing::info!(socket = %cfg.socket.display(), tcp = ?tcp_addr, tls, database = %cfg.database_location().display(), libvirt = %cfg.libvirt_uri, "kvmctl daemon serving");
        Ok(RunningServer {
            socket: cfg.socket.clone(),
            tcp_addr,
            shutdown,
            tasks,
            _events: events_watch,
            readiness,
            metering,
            hygiene,
            reaper,
            restarts,
            leases,
            ctx: ctx.clone(),
        })
    }

    /// Stops accepting, lets requests in flight finish, removes the socket.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.ctx.closing.send(true);
        self.readiness.abort();
        self.metering.abort();
        self.hygiene.abort();
        self.reaper.abort();
        self.restarts.abort();
        if let Some(l) = &self.leases {
            l.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        // Another daemon on the database takes the periodic work at once, not after the TTL.
        if self.ctx.shared {
            if let Err(e) = self.ctx.store.lease_release("leader", &self.ctx.instance).await {
                tracing::warn!(error = %kvmctl_core::error::chain(&e), "cannot give up the leader lease; it expires");
            }
        }
        let _ = std::fs::remove_file(&self.socket);
        self.ctx.store.close().await;
        tracing::info!("kvmctl daemon stopped");
    }
}

/// The leader's pass: the reconciler and, with `recover` (at start-up, and on every pass on a
/// shared database, where another daemon may have died), the operations a crash interrupted
/// of VMs no operation holds: snapshots first, so a VM a crash left saved is restored, not
/// booted afresh; data disks half added, before the reconciler compares definitions; clone
/// bases left unused, once the reconciler undid interrupted clones.
async fn leader_pass(ctx: &Context, restarts: &tokio::sync::mpsc::UnboundedSender<Vec<String>>, recover: bool) {
    if recover {
        if let Err(e) = crate::app::snapshots::recover(ctx).await {
            tracing::warn!(error = %kvmctl_core::error::chain(&e), "cannot finish the snapshot operations a crash interrupted");
        }
        if let Err(e) = crate::app::vms::disks_recover(ctx).await {
            tracing::warn!(error = %kvmctl_core::error::chain(&e), "cannot finish the disk additions a crash interrupted");
        }
        if let Err(e) = crate::app::vms::migrations_recover(ctx).await {
            tracing::warn!(error = %kvmctl_core::error::chain(&e), "cannot settle the migrations a crash interrupted");
        }
    }
    reconcile_pass(ctx, restarts).await;
    if recover {
        if let Err(e) = crate::app::vms::clones_recover(ctx).await {
            tracing::warn!(error = %e, "cannot finish clone bases a crash interrupted");
        }
    }
}

async fn reconcile_pass(ctx: &Context, restarts: &tokio::sync::mpsc::UnboundedSender<Vec<String>>) {
    // Node capacity follows libvirt (a node that stops answering is down for placement).
    if ctx.clock.now() >= ctx.nodes_refresh_due.load(std::sync::atomic::Ordering::Relaxed) {
        ctx.nodes_refresh_due.store(ctx.clock.now() + 60, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = crate::app::nodes::refresh(ctx).await {
            tracing::warn!(error = %e, "node capacity refresh failed");
        }
    }
    match crate::app::reconcile::reconcile(ctx).await {
        Ok(r) => {
            ctx.metrics.reconciled(&r.repairs());
            if !r.restarts_due.is_empty() {
                let _ = restarts.send(r.restarts_due.clone());
            }
            if r != Default::default() {
                tracing::info!(report = ?r, "reconciled");
            }
        }
        Err(e) => {
            ctx.metrics.reconciler_failures.inc();
            tracing::warn!(error = %e, "reconciler pass skipped");
        }
    }
}

/// Binds the unix socket, replacing a stale socket file but never a live daemon's.
fn bind_unix(path: &Path, group: Option<&str>) -> Result<UnixListener, ServeError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| ServeError::SocketDir { path: dir.to_owned(), source })?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::AlreadyRunning(path.to_owned()));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| ServeError::BindUnix { path: path.to_owned(), source })?;
    let mode = match group {
        Some(g) => {
            let gid = group_id(g).ok_or_else(|| ServeError::NoSuchGroup(g.to_owned()))?;
            std::os::unix::fs::chown(path, None, Some(gid)).map_err(|source| ServeError::Chown { path: path.to_owned(), source })?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|source| ServeError::Chown { path: path.to_owned(), source })?;
    Ok(listener)
}

fn group_id(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam returns a pointer into static storage or null; we only read gr_gid.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    (!g.is_null()).then(|| unsafe { (*g).gr_gid })
}

/// The daemon's state is root's alone, whatever umask it started with: the key directory
/// and the console log directory are made (or tightened to) 0700. The database's directory
/// gets 0711: nobody else may list it, but QEMU (running as libvirt's own user) must pass
/// through it to the disks of the default pool (`/var/lib/kvmctl/images`, made by host
/// setup); the database files in it are 0600. A shared directory with the sticky bit (such
/// as /tmp) is left as it is.
fn state_protect(cfg: &Config) -> Result<(), ServeError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dirs = [
        cfg.database_url.is_none().then(|| cfg.database.parent().map(|d| (d.to_path_buf(), 0o711))).flatten(),
        Some((cfg.key_dir.clone(), 0o700)),
        Some((cfg.console_log_dir.clone(), 0o700)),
    ];
    for (dir, mode) in dirs.into_iter().flatten().filter(|(d, _)| !d.as_os_str().is_empty()) {
        let err = |source| ServeError::StateDir { path: dir.clone(), source };
        match std::fs::metadata(&dir) {
            Ok(m) if m.permissions().mode() & 0o1000 != 0 => continue,
            Ok(m) if m.permissions().mode() & 0o777 != mode => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).map_err(err)?
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new().recursive(true).mode(mode).create(&dir).map_err(err)?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).map_err(err)?;
            }
            Err(e) => return Err(err(e)),
        }
    }
    Ok(())
}

/// The database and its WAL files: 0600 (SQLite gives the WAL files the database's mode).
fn store_files_protect(db: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        if let Err(e) = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %p.display(), error = %e, "cannot make a database file private");
            }
        }
    }
}
