//! What every request and background task shares: the `Context` (store, nodes, config,
//! locks, events, metrics), the per-VM busy lock, guest-session counts, failpoints, and the
//! small helpers every module uses (`parse_name`, `blocking`, `volume_error`).

use crate::node::{Connector, NodeHandle};
use kvmctl_core::Error;
use kvmctl_libvirt::Node;
use kvmctl_store::DataStore;
use kvmctl_types::Name;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The node every daemon registers for its own libvirt.
pub const LOCAL: &str = "local";

/// How long a lease lives without renewal (ADR 0017): a daemon that dies lets its VMs and
/// its leadership go after this long; a live one renews every third of it.
pub const LEASE_TTL_MS: i64 = 15_000;

/// Shared by every request.
pub struct Context {
    pub store: DataStore,
    /// This daemon process, among the daemons sharing a database (a random id per start).
    pub instance: String,
    /// The installation (database) this daemon serves, as domains carry it in their metadata
    /// (set by the server at start; `None` in contexts built without one, such as tests).
    pub installation: Option<String>,
    /// The leases this daemon holds now (lease name to acquisition token), which the lease
    /// task extends: only these, so a lease whose release failed is not kept alive.
    pub(crate) leases: Mutex<HashMap<String, String>>,
    /// Whether other daemons may share the database (PostgreSQL): VM busy locks and the
    /// periodic work then go through leases in it (ADR 0017).
    pub shared: bool,
    pub local_node: NodeHandle,
    pub started: Instant,
    pub config: crate::config::Config,
    /// The forward pools, from `config`.
    pub pools: crate::config::PortPools,
    /// VMs an operation is working on, with the operation's name: a second operation on the
    /// same VM is a conflict, not a race.
    pub(crate) busy: Mutex<HashMap<Name, &'static str>>,
    pub(crate) failpoints: Failpoints,
    /// VMs that just started: the server's readiness task watches each boot.
    pub(crate) booted: tokio::sync::mpsc::UnboundedSender<Name>,
    /// Serialises picking and reserving DHCP addresses, so two creates never pick the same.
    pub(crate) address_lock: tokio::sync::Mutex<()>,
    /// VM state changes and readiness stages, for `GET /v1/events` (each subscriber
    /// filters by what its caller may see).
    pub(crate) events: tokio::sync::broadcast::Sender<kvmctl_types::api::ApiEvent>,
    /// Set when the daemon stops: open event streams end, so a graceful shutdown is not held
    /// up by clients that would otherwise listen forever.
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
    /// What background work (metering, cleanups) takes the time from.
    pub clock: Arc<dyn crate::clock::Clock>,
    pub(crate) metrics: crate::metrics::Metrics,
    /// When the reconciler next reads the nodes' capacity (Unix seconds).
    pub(crate) nodes_refresh_due: std::sync::atomic::AtomicI64,
    /// When gc first reported each piece of debris ("kind name" to Unix seconds); it is
    /// removed only after `gc_grace_seconds`.
    pub(crate) gc_seen: Mutex<HashMap<String, i64>>,
    /// Connections to the other compute nodes, by name, made on first use.
    pub(crate) node_conns: Mutex<HashMap<String, NodeHandle>>,
    /// Makes the node of a registered node's URI: libvirt in the daemon, the in-memory node
    /// in the logic tests.
    pub connector: Connector,
    /// Serialises copying images to nodes.
    pub(crate) image_copy_lock: tokio::sync::Mutex<()>,
    /// Guest sessions open now (console, SSH, exec, file copies), per VM and per user.
    pub(crate) sessions: Arc<Mutex<Sessions>>,
    /// Audit rows of unauthenticated requests this minute: (minute, written, not written).
    pub(crate) anonymous_audit: Mutex<(i64, u32, u64)>,
    /// Failed web console logins of the last minute (ADR 0013).
    pub(crate) logins: super::sessions::LoginLimiter,
    /// Unused web console tickets (hashed; ADR 0013).
    pub(crate) tickets: super::vms::Tickets,
    /// How node agents are reached (`agent_ca`, `agent_cert`, `agent_key`), when set.
    pub agent_tls: Option<crate::agent::client::AgentTls>,
}

/// Counts of open guest sessions: `"vm:<id>"` and `"user:<name>"` to how many.
#[derive(Default)]
pub(crate) struct Sessions(HashMap<String, u32>);

/// One open guest session; dropping it frees its places.
pub struct SessionGuard {
    sessions: Arc<Mutex<Sessions>>,
    keys: [String; 2],
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut s = self.sessions.lock().expect("session map poisoned");
        for k in &self.keys {
            if let Some(n) = s.0.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    s.0.remove(k);
                }
            }
        }
    }
}

impl Context {
    /// The context, and the receiving end of the boots to watch (`readiness::run`).
    pub fn new(
        store: DataStore,
        local_node: Arc<dyn Node>,
        config: crate::config::Config,
    ) -> (Self, tokio::sync::mpsc::UnboundedReceiver<Name>) {
        let failpoints = Failpoints::parse(&config.failpoints);
        // `Config::load` refuses bad pools; a configuration built in code falls back to the
        // defaults with a loud warning rather than running without pools.
        let pools = config.port_pools().unwrap_or_else(|e| {
            tracing::error!(error = %e, "port pools are invalid; using the defaults");
            crate::config::Config::default().port_pools().expect("default pools are valid")
        });
        let (booted, boots) = tokio::sync::mpsc::unbounded_channel();
        let shared = store.engine() == kvmctl_store::Engine::Postgres;
        let ctx = Context {
            store,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            installation: None,
            leases: Mutex::new(HashMap::new()),
            shared,
            local_node: NodeHandle::new(local_node),
            started: Instant::now(),
            config,
            pools,
            busy: Mutex::new(HashMap::new()),
            failpoints,
            booted,
            address_lock: tokio::sync::Mutex::new(()),
            events: tokio::sync::broadcast::channel(1024).0,
            closing: tokio::sync::watch::channel(false).0,
            clock: Arc::new(crate::clock::SystemClock),
            metrics: Default::default(),
            nodes_refresh_due: std::sync::atomic::AtomicI64::new(0),
            gc_seen: Mutex::new(HashMap::new()),
            node_conns: Mutex::new(HashMap::new()),
            connector: crate::node::libvirt_connector(),
            image_copy_lock: tokio::sync::Mutex::new(()),
            sessions: Default::default(),
            anonymous_audit: Mutex::new((0, 0, 0)),
            logins: Default::default(),
            tickets: Default::default(),
            agent_tls: None,
        };
        (ctx, boots)
    }

    /// The libvirt connection of a compute node: the local one, or the registered node's URI
    /// (connected on first use and kept).
    pub(crate) async fn node_conn(&self, node: &str) -> Result<NodeHandle, Error> {
        if node == LOCAL {
            return Ok(self.local_node.clone());
        }
        if let Some(c) = self.node_conns.lock().expect("node map poisoned").get(node) {
            return Ok(c.clone());
        }
        let name = parse_name("node", node)?;
        let rec = self.store.node_get(&name).await?.ok_or_else(|| Error::NotFound { kind: "node", name: node.to_owned() })?;
        let conn = NodeHandle::new((self.connector)(&rec.uri));
        Ok(self.node_conns.lock().expect("node map poisoned").entry(node.to_owned()).or_insert(conn).clone())
    }

    /// The agent of a compute node, when it has one (`None` for the local node, whose host
    /// is the daemon's own, and for nodes without an agent). A node with an agent but no
    /// agent keys in the configuration is an error that says which keys to set.
    pub(crate) async fn node_agent(&self, node: &str) -> Result<Option<crate::agent::client::AgentClient>, Error> {
        if node == LOCAL {
            return Ok(None);
        }
        let name = parse_name("node", node)?;
        let Some(url) = self.store.node_get(&name).await?.and_then(|r| r.agent) else { return Ok(None) };
        let tls = self.agent_tls.clone().ok_or_else(|| {
            Error::Unavailable(format!(
                "node {node} has an agent ({url}), but this daemon has no agent_ca, agent_cert and agent_key to reach it; set them in /etc/kvmctl/kvmctl.toml"
            ))
        })?;
        crate::agent::client::AgentClient::new(&url, tls)
            .map(Some)
            .map_err(|e| Error::Internal(format!("node {node}: agent URL {url}: {e}")))
    }

    /// Takes a place for one more guest session on `vm` for its caller, within
    /// `sessions_per_vm` and `sessions_per_user`: a guest or a user cannot make the daemon hold
    /// sessions (and their buffers) without end.
    pub(crate) fn session_open(&self, vm: &kvmctl_types::VmId, vm_name: &Name, user: &str) -> Result<SessionGuard, Error> {
        let keys = [format!("vm:{vm}"), format!("user:{user}")];
        let mut s = self.sessions.lock().expect("session map poisoned");
        let (on_vm, of_user) = (s.0.get(&keys[0]).copied().unwrap_or(0), s.0.get(&keys[1]).copied().unwrap_or(0));
        if on_vm >= self.config.sessions_per_vm {
            return Err(Error::Conflict(format!(
                "VM {vm_name} has {on_vm} sessions open (console, ssh, exec, cp), the most allowed (sessions_per_vm); close one and try again"
            )));
        }
        if of_user >= self.config.sessions_per_user {
            return Err(Error::Conflict(format!(
                "you have {of_user} guest sessions open (console, ssh, exec, cp), the most allowed (sessions_per_user); close one and try again"
            )));
        }
        for k in &keys {
            *s.0.entry(k.clone()).or_insert(0) += 1;
        }
        Ok(SessionGuard { sessions: self.sessions.clone(), keys })
    }

    /// Forgets a node's connection (it was removed or its URI changed).
    pub(crate) fn node_forget(&self, node: &str) {
        self.node_conns.lock().expect("node map poisoned").remove(node);
    }

    /// Marks `name` busy with `op` until the guard drops; a conflict when another operation
    /// holds it. The reconciler's hold is brief (a read and a compare-and-set), so a request
    /// waits for it to pass instead of failing.
    pub(crate) async fn vm_lock(&self, name: &Name, op: &'static str) -> Result<VmGuard<'_>, Error> {
        for _ in 0..1000 {
            match self.vm_take(name, op).await? {
                Ok(guard) => return Ok(guard),
                Err(other) if other == RECONCILING || other == "finishing" => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                Err(other) => return Err(Error::Conflict(format!("VM {name} is busy ({other}); try again when that finishes"))),
            }
        }
        Err(Error::Conflict(format!("VM {name} is busy ({RECONCILING}); try again")))
    }

    /// Marks `name` busy with `op`, or returns what holds it (a database that does not
    /// answer holds it too).
    pub(crate) async fn vm_try_lock(&self, name: &Name, op: &'static str) -> Result<VmGuard<'_>, String> {
        match self.vm_take(name, op).await {
            Ok(taken) => taken,
            Err(e) => Err(format!("unknown: {e}")),
        }
    }

    /// Marks `name` busy with `op` in this daemon and, on a shared database, takes its lease
    /// (`vm:NAME`) there: an operation of another daemon holds it too. `Ok(Err(op))`: busy.
    async fn vm_take(&self, name: &Name, op: &'static str) -> Result<Result<VmGuard<'_>, String>, Error> {
        {
            let mut busy = self.busy.lock().expect("busy map poisoned");
            if let Some(other) = busy.get(name) {
                return Ok(Err((*other).to_owned()));
            }
            busy.insert(name.clone(), op);
        }
        // From here the guard frees the local mark whatever happens.
        let mut guard = VmGuard { ctx: self, name: name.clone(), token: None };
        if self.shared {
            let token = uuid::Uuid::new_v4().simple().to_string();
            let lease = format!("vm:{name}");
            match self.store.lease_take(&lease, &self.instance, &token, op, now_ms(), LEASE_TTL_MS).await? {
                Ok(()) => {
                    self.leases.lock().expect("lease map poisoned").insert(lease, token.clone());
                    guard.token = Some(token);
                }
                Err(other) => return Ok(Err(other)),
            }
        }
        Ok(Ok(guard))
    }

    /// The VMs an operation holds: in this daemon, or (shared database) by a live lease of
    /// another, read in one query. Recoveries leave them alone.
    pub(crate) async fn vms_held(&self) -> Result<std::collections::HashSet<String>, Error> {
        let mut held: std::collections::HashSet<String> =
            self.busy.lock().expect("busy map poisoned").keys().map(|n| n.to_string()).collect();
        if self.shared {
            for lease in self.store.lease_live_of_others("vm:", &self.instance, now_ms()).await? {
                held.extend(lease.strip_prefix("vm:").map(str::to_owned));
            }
        }
        Ok(held)
    }

    /// Whether this daemon runs the periodic work (reconciler, metering, hygiene, gc, the
    /// test-run reaper): always alone on SQLite; on a shared database, while it holds the
    /// `leader` lease (taken when free or expired, renewed by each call and by the lease
    /// task).
    pub async fn lead(&self) -> bool {
        if !self.shared {
            return true;
        }
        let held = |on: bool| {
            let mut leases = self.leases.lock().expect("lease map poisoned");
            match on {
                true => leases.insert("leader".into(), self.instance.clone()),
                false => leases.remove("leader"),
            };
            on
        };
        match self.store.lease_take("leader", &self.instance, &self.instance, "leader", now_ms(), LEASE_TTL_MS).await {
            Ok(Ok(())) => held(true),
            Ok(Err(_)) => held(false),
            Err(e) => {
                tracing::warn!(error = %kvmctl_core::error::chain(&e), "cannot reach the database for the leader lease");
                false
            }
        }
    }

    /// Whether this daemon holds the leader lease now (takes nothing: for status).
    pub async fn is_leader(&self) -> bool {
        if !self.shared {
            return true;
        }
        matches!(self.store.lease_get("leader").await, Ok(Some((holder, _, until))) if holder == self.instance && until >= now_ms())
    }

    /// Extends the leases this daemon holds now; the server calls it every third of the TTL.
    pub async fn leases_renew(&self) {
        let held: Vec<(String, String)> = self.leases.lock().expect("lease map poisoned").clone().into_iter().collect();
        for (lease, token) in held {
            match self.store.lease_extend(&lease, &token, now_ms(), LEASE_TTL_MS).await {
                Ok(true) => {}
                // Released meanwhile, or lost (another daemon took it after it expired).
                Ok(false) => {
                    let mut leases = self.leases.lock().expect("lease map poisoned");
                    if leases.get(&lease) == Some(&token) {
                        leases.remove(&lease);
                    }
                }
                Err(e) => tracing::warn!(%lease, error = %kvmctl_core::error::chain(&e), "cannot renew a lease"),
            }
        }
    }
}

/// Wall-clock Unix milliseconds (leases are between daemons: never the injected clock).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Context {
    /// A receiver of every event from now on (`GET /v1/events` filters it per caller).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<kvmctl_types::api::ApiEvent> {
        self.events.subscribe()
    }

    /// Publishes an event to the subscribers of `GET /v1/events` (none is fine).
    pub(crate) fn publish(&self, kind: &str, vm: &Name, owner: &str, state: Option<&str>, stage: Option<&str>, detail: Option<&str>) {
        let at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let _ = self.events.send(kvmctl_types::api::ApiEvent {
            kind: kind.into(),
            vm: vm.to_string(),
            owner: owner.into(),
            state: state.map(str::to_owned),
            stage: stage.map(str::to_owned),
            detail: detail.map(str::to_owned),
            at_ms,
        });
    }

    /// Moves a VM's state by compare-and-set (`DataStore::vm_transition`) and publishes the
    /// change.
    pub(crate) async fn vm_transition(
        &self,
        name: &Name,
        from: kvmctl_core::VmState,
        to: kvmctl_core::VmState,
        error: Option<&str>,
    ) -> Result<bool, Error> {
        let moved = self.store.vm_transition(name, from, to, error).await?;
        if moved && from != to {
            if let Ok(Some(rec)) = self.store.vm_get(&kvmctl_store::Scope::all(), name).await {
                self.publish("vm.state", name, &rec.owner, Some(to.as_str()), None, error);
            }
        }
        Ok(moved)
    }
}

/// What the reconciler holds a VM busy as.
pub(crate) const RECONCILING: &str = "reconciling";

/// Holds a VM busy; dropping it frees the VM (its lease, on a shared database, a moment
/// later: the release is sent from a task, and a lease not released expires).
pub(crate) struct VmGuard<'a> {
    ctx: &'a Context,
    name: Name,
    /// The lease's acquisition, on a shared database.
    token: Option<String>,
}

impl Drop for VmGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.ctx.busy.lock() {
            busy.remove(&self.name);
        }
        let Some(token) = self.token.take() else { return };
        let lease = format!("vm:{}", self.name);
        if let Ok(mut leases) = self.ctx.leases.lock() {
            if leases.get(&lease) == Some(&token) {
                leases.remove(&lease);
            }
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let store = self.ctx.store.clone();
            rt.spawn(async move {
                if let Err(e) = store.lease_release(&lease, &token).await {
                    tracing::warn!(%lease, error = %kvmctl_core::error::chain(&e), "cannot release a lease; it expires");
                }
            });
        }
    }
}

/// Test hooks that make a named step fail (`error`), kill the daemon (`crash`), wait two
/// seconds (`pause`, to line up a race) or wait until a file exists (`wait:PATH`: the test
/// does its part, then creates the file) right after the step; set by the `failpoints`
/// setting or `KVMCTL_FAILPOINTS=step=action,...` (e.g. `create.define=crash`). The
/// failure-injection and kill tests use them; unset, they cost one map lookup per step.
#[derive(Debug, Default)]
pub(crate) struct Failpoints(HashMap<String, String>);

impl Failpoints {
    fn parse(spec: &str) -> Self {
        let map: HashMap<String, String> =
            spec.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
        if !map.is_empty() {
            tracing::warn!(failpoints = %spec, "failpoints armed (KVMCTL_FAILPOINTS): operations will fail on purpose");
        }
        Failpoints(map)
    }

    /// Called after each step of an operation.
    pub(crate) async fn hit(&self, step: &str) -> Result<(), Error> {
        match self.0.get(step).map(String::as_str) {
            None => Ok(()),
            Some("crash") => {
                tracing::error!(step, "failpoint: crashing");
                std::process::abort()
            }
            Some("pause") => {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                Ok(())
            }
            Some(action) if action.starts_with("wait:") => {
                let go = std::path::Path::new(&action["wait:".len()..]);
                for _ in 0..12_000 {
                    if go.exists() {
                        return Ok(());
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(Error::Internal(format!("failpoint {step} was never released ({} never appeared)", go.display())))
            }
            Some(_) => Err(Error::Internal(format!("failpoint {step} fired"))),
        }
    }
}

/// A volume error as the user sees it: a volume of that name that nothing kvmctl knows
/// owns, or a missing pool, says what to do.
pub(crate) fn volume_error(e: kvmctl_libvirt::NodeError, pool: &str) -> Error {
    use kvmctl_libvirt::NodeError;
    match e {
        NodeError::AlreadyExists { name, .. } => Error::Conflict(format!(
            "volume {name} already exists in pool {pool} but belongs to no VM or image kvmctl knows; remove it (virsh vol-delete {name} --pool {pool}) and retry"
        )),
        NodeError::NotFound { kind: "storage pool", .. } => {
            Error::Unavailable(format!("storage pool {pool} does not exist; run `kvmctl host setup` or set `pool` in the configuration"))
        }
        e => e.into(),
    }
}

/// A name from a request field, or an error naming the field and the rule.
pub(crate) fn parse_name(field: &str, value: &str) -> Result<Name, Error> {
    Name::parse(value).map_err(|e| Error::invalid(field, format!("{value:?} {e}")))
}

/// Runs a blocking libvirt call off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, kvmctl_core::Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| kvmctl_core::Error::Internal(format!("worker task failed: {e}")))
}

/// The VM `name` within `scope`; another user's VM is not found.
pub(crate) async fn vm_record(ctx: &Context, scope: &kvmctl_store::Scope, name: &Name) -> Result<kvmctl_store::VmRecord, Error> {
    ctx.store.vm_get(scope, name).await?.ok_or_else(|| Error::NotFound { kind: "vm", name: name.to_string() })
}
