//! The node agent (`kvmctl agent`): what a compute node does for the controllers that only
//! its own host can do: its firewall (port forwards and NAT through the `inet kvmctl` table,
//! `kvmctl-netfw`), its VMs' console logs, and the functional KVM probe.
//!
//! The agent keeps no state of its own. The firewall is a pure function of the node's
//! running kvmctl domains and the metadata they carry (the same facts the libvirt hook
//! reads, written by the controller): a sync reads the domains and writes the table in one
//! nftables transaction when it differs. A sync runs when the agent starts, on every
//! libvirt lifecycle event of the node, when a controller asks (`POST /v1/agent/sync`,
//! after it changed a VM's forwards), and every `RESYNC` as a backstop. So a node's state
//! survives the agent restarting, libvirtd restarting and the host rebooting.
//!
//! Controllers reach it over HTTPS with mutual authentication: the agent presents its
//! certificate and accepts only clients whose certificate the agent CA signed
//! (`kvmctl agent certs` makes the CA and both sides' certificates). Nothing a controller
//! sends becomes a path: console logs are named by VM names, checked as names.

pub mod certs;
pub mod client;

use crate::node::NodeHandle;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use kvmctl_libvirt::DomainState;
use kvmctl_netfw::VmRules;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;

/// How often the agent syncs the firewall without being asked.
pub const RESYNC: Duration = Duration::from_secs(30);

/// Most of a console log the agent sends at once (its end).
pub const CONSOLE_MAX: u64 = 1 << 20;

/// What `GET /v1/agent` says about the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub version: String,
    pub libvirt_uri: String,
    /// `kvm` when the functional probe booted its guest under KVM, else `qemu` (TCG).
    pub domain_type: String,
    /// The probe's verdict for people; empty until it has run.
    pub kvm: String,
    pub probed: bool,
    /// VMs with rules in the node's table, and their forwards, after the last sync.
    pub vms_with_rules: usize,
    pub forwards: usize,
    /// Unix seconds of the last sync, and why it failed if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_error: Option<String>,
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncReport {
    pub vms_with_rules: usize,
    pub forwards: usize,
    /// Whether the table had to be rewritten.
    pub changed: bool,
}

/// `POST /v1/agent/gc`: the logs of VMs whose domain is gone from the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GcReport {
    /// VM names whose logs are (or, with `dry_run`, would be) removed.
    pub logs: Vec<String>,
    pub removed: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct GcRequest {
    #[serde(default)]
    pub dry_run: bool,
    /// Names the controller still knows on this node: their logs stay even without a domain
    /// (a VM being created has none yet).
    #[serde(default)]
    pub keep: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("client_ca {path}: {message}")]
    ClientCa { path: PathBuf, message: String },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach libvirt at {uri}: {message}")]
    Libvirt { uri: String, message: String },
}

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub listen: SocketAddr,
    pub libvirt_uri: String,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// The CA whose signature a controller's client certificate must carry.
    pub client_ca: PathBuf,
    /// Where the node's libvirt logs its VMs' serial consoles (`NAME-serial.log`) and QEMU
    /// (`NAME.log`): libvirt's own log directory.
    pub log_dir: PathBuf,
    /// Whether to run the functional KVM probe at start (off: the node reports TCG).
    pub probe: bool,
}

struct Agent {
    opts: AgentOptions,
    node: NodeHandle,
    probe: Mutex<Option<kvmctl_host::kvm_probe::ProbeResult>>,
    last: Mutex<(Option<i64>, Option<String>, SyncReport)>,
    syncing: tokio::sync::Mutex<()>,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The rules a running domain's kvmctl metadata asks for (`None`: not kvmctl's, or nothing).
fn rules_of_domain(xml: &str) -> Option<VmRules> {
    let meta = kvmctl_libvirt::xml::metadata_parse(xml)?;
    let net = meta.net?;
    let rules = crate::app::vmnet::rules_of(&meta.vm_id.to_string(), &net);
    (!rules.is_empty()).then_some(rules)
}

impl Agent {
    /// Makes the node's table what its running domains ask for.
    async fn sync(&self) -> Result<SyncReport, String> {
        let _one = self.syncing.lock().await;
        let result = self.sync_once().await;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(r) => *last = (Some(unix_now()), None, r.clone()),
            Err(e) => {
                last.0 = Some(unix_now());
                last.1 = Some(e.clone());
            }
        }
        result
    }

    async fn sync_once(&self) -> Result<SyncReport, String> {
        let chain = |e: &dyn std::error::Error| kvmctl_core::error::chain(e);
        let domains = self.node.domain_list().await.map_err(|e| chain(&e))?;
        let mut desired: BTreeMap<String, VmRules> = BTreeMap::new();
        for d in domains.iter().filter(|d| matches!(d.state, DomainState::Running | DomainState::Paused)) {
            // A domain gone between the list and the read has no rules.
            let Ok(xml) = self.node.domain_xml(&d.name).await else { continue };
            if let Some(r) = rules_of_domain(&xml) {
                desired.insert(r.key(), r);
            }
        }
        let report =
            SyncReport { vms_with_rules: desired.len(), forwards: desired.values().map(|r| r.forwards.len()).sum(), changed: false };
        let bridges: Vec<String> = desired.values().map(|r| r.bridge.clone()).collect();
        let changed = tokio::task::spawn_blocking(move || -> Result<bool, String> {
            let changed = kvmctl_netfw::table_sync(kvmctl_netfw::TABLE, |set| *set = desired).map_err(|e| chain(&e))?;
            // Only once the table with its loopback guard is in place (see vm_apply_guarded).
            for b in bridges {
                if let Err(e) = kvmctl_netfw::bridge_allow_loopback(&b) {
                    tracing::warn!(bridge = %b, error = %e, "cannot let the bridge route loopback-addressed packets");
                }
            }
            Ok(changed)
        })
        .await
        .map_err(|e| e.to_string())??;
        if changed {
            tracing::info!(vms = report.vms_with_rules, forwards = report.forwards, "firewall synced");
        }
        Ok(SyncReport { changed, ..report })
    }

    fn status(&self) -> AgentStatus {
        let probe = self.probe.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let functional = probe.as_ref().is_some_and(|p| p.verdict == kvmctl_host::kvm_probe::KvmVerdict::Functional);
        AgentStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            libvirt_uri: self.opts.libvirt_uri.clone(),
            domain_type: if functional { "kvm" } else { "qemu" }.into(),
            kvm: probe.as_ref().map(|p| p.summary.clone()).unwrap_or_default(),
            probed: probe.is_some(),
            vms_with_rules: last.2.vms_with_rules,
            forwards: last.2.forwards,
            synced_at: last.0,
            sync_error: last.1,
        }
    }

    fn log_paths(&self, name: &str) -> [PathBuf; 2] {
        [self.opts.log_dir.join(format!("{name}-serial.log")), self.opts.log_dir.join(format!("{name}.log"))]
    }
}

/// An error answer: status and one sentence.
fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// A VM name from the URL, or a 400 (it is never used as anything but a file name part).
fn vm_name(raw: &str) -> Result<kvmctl_types::Name, String> {
    kvmctl_types::Name::parse(raw).map_err(|e| format!("name: {e}"))
}

async fn status_get(State(a): State<Arc<Agent>>) -> Json<AgentStatus> {
    Json(a.status())
}

async fn sync_post(State(a): State<Arc<Agent>>) -> Response {
    match a.sync().await {
        Ok(r) => Json(r).into_response(),
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, format!("cannot sync the firewall: {e}")),
    }
}

#[derive(Deserialize)]
struct ConsoleQuery {
    #[serde(default)]
    bytes: Option<u64>,
}

async fn console_get(State(a): State<Arc<Agent>>, UrlPath(name): UrlPath<String>, Query(q): Query<ConsoleQuery>) -> Response {
    let name = match vm_name(&name) {
        Ok(n) => n,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    let [serial, _] = a.log_paths(name.as_str());
    let max = q.bytes.unwrap_or(CONSOLE_MAX).min(CONSOLE_MAX);
    match tokio::task::spawn_blocking(move || crate::app::guest::file_tail(&serial, max)).await {
        Ok(Ok(text)) => text.into_response(),
        Ok(Err(e)) => refuse(StatusCode::SERVICE_UNAVAILABLE, format!("cannot read the console log of {name}: {e}")),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Removes a VM's logs, once its domain is gone from the node.
async fn logs_delete(State(a): State<Arc<Agent>>, UrlPath(name): UrlPath<String>) -> Response {
    let name = match vm_name(&name) {
        Ok(n) => n,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    match a.node.domain_list().await {
        Ok(list) if list.iter().any(|d| d.name == name.as_str()) => {
            return refuse(StatusCode::CONFLICT, format!("domain {name} is still defined on this node; its logs stay"))
        }
        Ok(_) => {}
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, kvmctl_core::error::chain(&e)),
    }
    for p in a.log_paths(name.as_str()) {
        if let Err(e) = std::fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return refuse(StatusCode::SERVICE_UNAVAILABLE, format!("cannot remove {}: {e}", p.display()));
            }
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The serial logs of VMs without a domain on the node (and not in `keep`).
async fn gc_post(State(a): State<Arc<Agent>>, Json(req): Json<GcRequest>) -> Response {
    let defined: Vec<String> = match a.node.domain_list().await {
        Ok(l) => l.into_iter().map(|d| d.name).collect(),
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, kvmctl_core::error::chain(&e)),
    };
    let mut logs: Vec<String> = std::fs::read_dir(&a.opts.log_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix("-serial.log").map(str::to_owned))
        .filter(|n| kvmctl_types::Name::parse(n).is_ok() && !defined.contains(n) && !req.keep.contains(n))
        .collect();
    logs.sort();
    if !req.dry_run {
        for n in &logs {
            for p in a.log_paths(n) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    Json(GcReport { removed: !req.dry_run && !logs.is_empty(), logs }).into_response()
}

/// The TLS acceptor: the agent's certificate, and client certificates required, signed by
/// `client_ca`.
pub fn acceptor(opts: &AgentOptions) -> Result<tokio_rustls::TlsAcceptor, AgentError> {
    let ca_err = |message: String| AgentError::ClientCa { path: opts.client_ca.clone(), message };
    let mut roots = rustls::RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&opts.client_ca)
        .map_err(|e| ca_err(format!("cannot read it ({e})")))?
        .collect::<Result<_, _>>()
        .map_err(|e| ca_err(format!("not a PEM certificate ({e})")))?;
    if cas.is_empty() {
        return Err(ca_err("holds no certificate".into()));
    }
    for c in cas {
        roots.add(c).map_err(|e| ca_err(format!("not a CA certificate rustls accepts ({e})")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ca_err(e.to_string()))?;
    let (certs, key) = crate::tls::cert_and_key(&opts.tls_cert, &opts.tls_key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::tls::TlsError::Mismatch(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| crate::tls::TlsError::Mismatch(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The agent's routes.
fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/agent", get(status_get))
        .route("/v1/agent/sync", post(sync_post))
        .route("/v1/agent/console/{name}", get(console_get))
        .route("/v1/agent/logs/{name}", delete(logs_delete))
        .route("/v1/agent/gc", post(gc_post))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(agent)
}

/// A running agent; `stop` ends it.
pub struct RunningAgent {
    pub addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _watch: kvmctl_libvirt::events::EventWatch,
}

impl RunningAgent {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts the agent: checks libvirt and the certificates, syncs once, then serves.
pub async fn start(opts: AgentOptions) -> Result<RunningAgent, AgentError> {
    let acceptor = acceptor(&opts)?;
    let node = NodeHandle::new(Arc::new(kvmctl_libvirt::LibvirtNode::new(opts.libvirt_uri.clone())));
    node.versions().await.map_err(|e| AgentError::Libvirt { uri: opts.libvirt_uri.clone(), message: kvmctl_core::error::chain(&e) })?;
    let tcp = tokio::net::TcpListener::bind(opts.listen).await.map_err(|source| AgentError::Bind { addr: opts.listen, source })?;
    let addr = tcp.local_addr().map_err(|source| AgentError::Bind { addr: opts.listen, source })?;
    let listener = crate::tls::TlsListener::new(tcp, acceptor).map_err(|source| AgentError::Bind { addr, source })?;
    let agent = Arc::new(Agent {
        opts: opts.clone(),
        node,
        probe: Mutex::new(None),
        last: Mutex::new((None, None, SyncReport { vms_with_rules: 0, forwards: 0, changed: false })),
        syncing: tokio::sync::Mutex::new(()),
    });
    if let Err(e) = agent.sync().await {
        tracing::warn!(error = %e, "first firewall sync failed; retrying on the next event or in 30 s");
    }
    // Every lifecycle event (and every reconnect of the watch) asks for a sync.
    let (kick, mut kicked) = tokio::sync::mpsc::channel::<()>(1);
    let watch = kvmctl_libvirt::events::lifecycle_watch(opts.libvirt_uri.clone(), move |_| {
        let _ = kick.try_send(());
    });
    let (stop, mut stopping) = tokio::sync::watch::channel(false);
    let syncer = agent.clone();
    let mut stop_sync = stopping.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop_sync.changed() => return,
                _ = kicked.recv() => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
            if let Err(e) = syncer.sync().await {
                tracing::warn!(error = %e, "firewall sync failed");
            }
        }
    });
    if opts.probe {
        let prober = agent.clone();
        tokio::task::spawn_blocking(move || {
            let qemu = kvmctl_host::facts::which("qemu-system-x86_64", &["/usr/libexec/qemu-kvm"]).map(PathBuf::from);
            let work = std::env::temp_dir().join(format!("kvmctl-agent-probe-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&work);
            let result = kvmctl_host::kvm_probe::probe(qemu.as_deref(), Path::new("/dev/kvm").exists(), &work);
            let _ = std::fs::remove_dir_all(&work);
            tracing::info!(verdict = ?result.verdict, summary = %result.summary, "KVM probe");
            *prober.probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        });
    }
    let app = router(agent);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopping.changed().await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "agent server failed");
        }
    });
    tracing::info!(%addr, libvirt = %opts.libvirt_uri, "kvmctl agent serving");
    Ok(RunningAgent { addr, stop, task, _watch: watch })
}
