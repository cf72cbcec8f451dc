//! Compute nodes: registration (admins), capacity read from libvirt and refreshed, the
//! admin's settings (overcommit, reservations, labels, draining), and placement over them.
//!
//! Every VM operation goes through the connection of the VM's node (`Context::node_conn`);
//! images are copied to a node's pool on first use there (see docs/nodes.md).

use super::context::{parse_name, Context};
use crate::node::NodeHandle;
use kvmctl_core::placement::{self, NodeCapacity, NodeState, Placement, PlacementRequest, Ratio, Strategy};
use kvmctl_core::{Caller, Error};
use kvmctl_store::{NodeAllocation, NodeRecord, NodeSettings};
use kvmctl_types::api::{ComputeNode, NodeAddRequest, NodeUpdateRequest, PlacementVerdict};
use kvmctl_types::Name;
use std::collections::BTreeMap;

pub use super::context::LOCAL;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Reads a node's resources and records them (or why it could not).
async fn refresh_one(ctx: &Context, rec: &NodeRecord) {
    let node = match ctx.node_conn(rec.name.as_str()).await {
        Ok(n) => n,
        Err(_) => NodeHandle::new((ctx.connector)(&rec.uri)),
    };
    let result = match node.resources(&ctx.config.pool).await {
        Ok(r) => ctx.store.node_set_capacity(&rec.name, Ok((r.cpus, r.memory_bytes / MIB, r.pool_capacity_bytes / GIB))).await,
        Err(e) => ctx.store.node_set_capacity(&rec.name, Err(&kvmctl_core::error::chain(&e))).await,
    };
    if let Err(e) = result {
        tracing::warn!(node = %rec.name, error = %e, "could not record node capacity");
    }
}

/// Reads every node's capacity from libvirt (at start and with each reconciler pass).
pub async fn refresh(ctx: &Context) -> Result<(), Error> {
    for rec in ctx.store.node_list().await? {
        refresh_one(ctx, &rec).await;
    }
    Ok(())
}

fn capacity_of(rec: &NodeRecord, alloc: NodeAllocation) -> NodeCapacity {
    let state = match (rec.state.as_str(), &rec.error) {
        (_, Some(_)) => NodeState::Down,
        ("draining", None) => NodeState::Draining,
        _ => NodeState::Active,
    };
    NodeCapacity {
        name: rec.name.to_string(),
        state,
        cpus: rec.cpus,
        memory_mib: rec.memory_mib,
        disk_gib: rec.disk_gib,
        reserved_cpus: rec.settings.reserved_cpus,
        reserved_memory_mib: rec.settings.reserved_memory_mib,
        cpu_overcommit: Ratio(rec.settings.cpu_overcommit),
        memory_overcommit: Ratio(rec.settings.memory_overcommit),
        allocated_vcpus: alloc.vcpus,
        allocated_memory_mib: alloc.memory_mib,
        allocated_disk_gib: alloc.disk_gib,
        labels: rec.settings.labels.clone(),
    }
}

/// Every node with its capacity and allocations, as placement sees them.
pub(crate) async fn capacities(ctx: &Context) -> Result<Vec<(NodeRecord, NodeCapacity, NodeAllocation)>, Error> {
    let alloc = ctx.store.node_allocations().await?;
    Ok(ctx
        .store
        .node_list()
        .await?
        .into_iter()
        .map(|r| {
            let a = alloc.get(r.name.as_str()).copied().unwrap_or_default();
            let c = capacity_of(&r, a);
            (r, c, a)
        })
        .collect())
}

/// What node `name` may give out in all after overcommit (vCPUs, MiB, GiB), for the
/// statements that admit a VM's size there; `None` when the node is not registered.
pub(crate) async fn capacity_total(ctx: &Context, name: &str) -> Result<Option<(u64, u64, u64)>, Error> {
    Ok(capacities(ctx)
        .await?
        .into_iter()
        .find(|(r, _, _)| r.name.as_str() == name)
        .map(|(_, c, _)| (c.vcpu_capacity(), c.memory_capacity_mib(), c.disk_gib)))
}

/// Chooses a node for a VM of this size, with every node's verdict; and the chosen node's
/// capacity (vCPUs, MiB, GiB after overcommit) for the insert to check against. `only`: the
/// one node the VM may go to (a clone goes where its source's disk is).
pub(crate) async fn place(
    ctx: &Context,
    (vcpus, memory_mib, disk_gib): (u64, u64, u64),
    labels: &BTreeMap<String, String>,
    strategy: Strategy,
    only: Option<&str>,
) -> Result<(Placement, Option<(u64, u64, u64)>), Error> {
    let capacities = || async {
        Ok::<_, Error>(capacities(ctx).await?.into_iter().filter(|(r, _, _)| only.is_none_or(|o| r.name.as_str() == o)).collect::<Vec<_>>())
    };
    let mut all = capacities().await?;
    // A node found down (libvirtd restarting, say) is asked again before it is refused.
    let stale: Vec<NodeRecord> = all.iter().filter(|(_, c, _)| c.state == NodeState::Down).map(|(r, _, _)| r.clone()).collect();
    if !stale.is_empty() {
        for r in &stale {
            refresh_one(ctx, r).await;
        }
        all = capacities().await?;
    }
    let errors: BTreeMap<String, String> = all.iter().filter_map(|(r, _, _)| Some((r.name.to_string(), r.error.clone()?))).collect();
    let req = PlacementRequest { vcpus, memory_mib, disk_gib, labels: labels.clone(), strategy };
    let mut p = placement::place(&all.iter().map(|(_, c, _)| c.clone()).collect::<Vec<_>>(), &req);
    for v in &mut p.verdicts {
        if let Some(e) = errors.get(&v.node).filter(|_| !v.fits && v.reason.starts_with("down")) {
            v.reason = format!("down: {e}");
        }
    }
    p.verdicts.sort_by(|a, b| a.node.cmp(&b.node));
    let cap = p
        .chosen
        .as_ref()
        .and_then(|c| all.iter().find(|(r, _, _)| r.name.as_str() == c))
        .map(|(_, c, _)| (c.vcpu_capacity(), c.memory_capacity_mib(), c.disk_gib));
    Ok((p, cap))
}

pub(crate) fn verdicts(p: &Placement) -> Vec<PlacementVerdict> {
    p.verdicts.iter().map(|v| PlacementVerdict { node: v.node.clone(), chosen: v.chosen, fits: v.fits, reason: v.reason.clone() }).collect()
}

fn node_view(rec: NodeRecord, c: &NodeCapacity, a: NodeAllocation, vm_names: Vec<String>) -> ComputeNode {
    ComputeNode {
        name: rec.name.to_string(),
        uri: rec.uri,
        state: match c.state {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Down => "down",
        }
        .into(),
        error: rec.error,
        cpus: rec.cpus,
        memory_mib: rec.memory_mib,
        disk_gib: rec.disk_gib,
        cpu_overcommit: c.cpu_overcommit.to_string(),
        memory_overcommit: c.memory_overcommit.to_string(),
        reserved_cpus: c.reserved_cpus,
        reserved_memory_mib: c.reserved_memory_mib,
        labels: c.labels.clone(),
        capacity_vcpus: c.vcpu_capacity(),
        capacity_memory_mib: c.memory_capacity_mib(),
        allocated_vcpus: a.vcpus,
        allocated_memory_mib: a.memory_mib,
        allocated_disk_gib: a.disk_gib,
        available_vcpus: c.available_vcpus(),
        available_memory_mib: c.available_memory_mib(),
        available_disk_gib: c.available_disk_gib(),
        vms: a.vms,
        vm_names,
        refreshed_at: rec.refreshed_at,
        agent: rec.agent,
        agent_status: None,
    }
}

pub async fn node_list(ctx: &Context, caller: &Caller) -> Result<Vec<ComputeNode>, Error> {
    caller.require_admin("listing nodes")?;
    Ok(capacities(ctx).await?.into_iter().map(|(r, c, a)| node_view(r, &c, a, Vec::new())).collect())
}

pub async fn node_get(ctx: &Context, caller: &Caller, name: &str) -> Result<ComputeNode, Error> {
    caller.require_admin("reading nodes")?;
    let name = parse_name("name", name)?;
    let (r, c, a) = capacities(ctx)
        .await?
        .into_iter()
        .find(|(r, _, _)| r.name == name)
        .ok_or_else(|| Error::NotFound { kind: "node", name: name.to_string() })?;
    let vms = ctx
        .store
        .vm_list(&kvmctl_store::Scope::all())
        .await?
        .into_iter()
        .filter(|v| v.node == r.name.as_str())
        .map(|v| v.name.to_string())
        .collect();
    let mut view = node_view(r, &c, a, vms);
    if view.agent.is_some() {
        view.agent_status = Some(match ctx.node_agent(name.as_str()).await {
            Ok(Some(agent)) => match agent.status().await {
                Ok(s) if s.probed => format!("answers; domain type {} ({})", s.domain_type, s.kvm),
                Ok(s) => format!("answers; domain type {} (its KVM probe has not finished)", s.domain_type),
                Err(e) => format!("does not answer: {e}"),
            },
            Ok(None) => "none".into(),
            Err(e) => e.to_string(),
        });
    }
    Ok(view)
}

/// Checks an agent URL for a node and that the agent answers with this daemon's keys.
async fn agent_check(ctx: &Context, url: &str) -> Result<(), Error> {
    let tls = ctx.agent_tls.clone().ok_or_else(|| {
        Error::invalid(
            "agent",
            "this daemon has no agent_ca, agent_cert and agent_key to reach agents with; set them in /etc/kvmctl/kvmctl.toml (kvmctl agent certs makes them) and restart it",
        )
    })?;
    let agent = crate::agent::client::AgentClient::new(url, tls).map_err(|e| Error::invalid("agent", format!("{url:?}: {e}")))?;
    agent.status().await.map_err(|e| Error::invalid("agent", format!("the agent at {url} does not answer: {e}")))?;
    Ok(())
}

/// A label key or value: 1 to 63 of `[A-Za-z0-9._-]`.
pub(crate) fn label_check(labels: &BTreeMap<String, String>) -> Result<(), Error> {
    let ok = |s: &str| !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    for (k, v) in labels {
        if !ok(k) || !ok(v) {
            return Err(Error::invalid("labels", format!("{k:?}={v:?}: keys and values are 1 to 63 of A-Z a-z 0-9 . _ -")));
        }
    }
    if labels.len() > 32 {
        return Err(Error::invalid("labels", "at most 32 labels"));
    }
    Ok(())
}

/// A libvirt URI we accept for a node: qemu over the local socket, SSH, TLS or TCP.
fn uri_check(uri: &str) -> Result<(), Error> {
    let bad = |why: &str| {
        Error::invalid("uri", format!("{uri:?}: {why}; use qemu+ssh://HOST/system, qemu+tls://HOST/system or qemu+tcp://HOST/system"))
    };
    if uri.len() > 1024 || uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("not a URI"));
    }
    let (scheme, rest) = uri.split_once("://").ok_or_else(|| bad("not a URI"))?;
    if !["qemu", "qemu+ssh", "qemu+tls", "qemu+tcp", "qemu+unix", "qemu+libssh2", "qemu+libssh"].contains(&scheme) {
        return Err(bad("kvmctl drives QEMU through libvirt"));
    }
    let path = rest.split('?').next().unwrap_or_default();
    if !(path.ends_with("/system") || path.ends_with("/session")) {
        return Err(bad("the path must be /system (or /session)"));
    }
    Ok(())
}

fn ratio(field: &str, v: Option<&String>, default: u32) -> Result<u32, Error> {
    match v {
        None => Ok(default),
        Some(s) => Ratio::parse(s).map(|r| r.0).map_err(|e| Error::invalid(field, e)),
    }
}

fn bounded(field: &str, v: Option<u64>, max: u64, default: u64) -> Result<u64, Error> {
    match v {
        Some(n) if n > max => Err(Error::invalid(field, format!("{n} is more than {max}"))),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

/// Registers a node after reading its capacity: an unreachable URI records nothing.
pub async fn node_add(ctx: &Context, caller: &Caller, req: NodeAddRequest) -> Result<ComputeNode, Error> {
    caller.require_admin("adding nodes")?;
    let name = parse_name("name", &req.name)?;
    uri_check(&req.uri)?;
    label_check(&req.labels)?;
    let defaults = NodeSettings::default();
    let settings = NodeSettings {
        cpu_overcommit: ratio("cpu_overcommit", req.cpu_overcommit.as_ref(), defaults.cpu_overcommit)?,
        memory_overcommit: ratio("memory_overcommit", req.memory_overcommit.as_ref(), defaults.memory_overcommit)?,
        reserved_cpus: bounded("reserved_cpus", req.reserved_cpus, 4096, 0)?,
        reserved_memory_mib: bounded("reserved_memory_mib", req.reserved_memory_mib, 1 << 30, 0)?,
        labels: req.labels.clone(),
    };
    let node = NodeHandle::new((ctx.connector)(&req.uri));
    let read = node.resources(&ctx.config.pool).await;
    if let Err(e) = read {
        return Err(Error::invalid(
            "uri",
            format!(
                "cannot read the node at {} (is libvirtd reachable there, and does it have the storage pool {}?): {}",
                req.uri,
                ctx.config.pool,
                kvmctl_core::error::chain(&e)
            ),
        ));
    }
    if let Some(url) = &req.agent {
        agent_check(ctx, url).await?;
    }
    let rec = ctx.store.node_insert(&name, &req.uri, &settings).await?;
    if let Some(url) = &req.agent {
        ctx.store.node_set_agent(&name, Some(url)).await?;
    }
    refresh_one(ctx, &rec).await;
    node_get(ctx, caller, name.as_str()).await
}

pub async fn node_update(ctx: &Context, caller: &Caller, name: &str, req: NodeUpdateRequest) -> Result<ComputeNode, Error> {
    caller.require_admin("changing nodes")?;
    let name = parse_name("name", name)?;
    let rec = ctx.store.node_get(&name).await?.ok_or_else(|| Error::NotFound { kind: "node", name: name.to_string() })?;
    if let Some(l) = &req.labels {
        label_check(l)?;
    }
    let s = &rec.settings;
    let settings = NodeSettings {
        cpu_overcommit: ratio("cpu_overcommit", req.cpu_overcommit.as_ref(), s.cpu_overcommit)?,
        memory_overcommit: ratio("memory_overcommit", req.memory_overcommit.as_ref(), s.memory_overcommit)?,
        reserved_cpus: bounded("reserved_cpus", req.reserved_cpus, 4096, s.reserved_cpus)?,
        reserved_memory_mib: bounded("reserved_memory_mib", req.reserved_memory_mib, 1 << 30, s.reserved_memory_mib)?,
        labels: req.labels.clone().unwrap_or_else(|| s.labels.clone()),
    };
    let state = match req.state.as_deref() {
        None => None,
        Some(st @ ("active" | "draining")) => Some(st),
        Some(other) => return Err(Error::invalid("state", format!("{other:?}: use active or draining"))),
    };
    match req.agent.as_deref() {
        Some(_) if name.as_str() == LOCAL => {
            return Err(Error::invalid("agent", "the local node is the daemon's own host; it needs no agent"));
        }
        Some("") => {}
        Some(url) => agent_check(ctx, url).await?,
        None => {}
    }
    ctx.store.node_set_settings(&name, &settings).await?;
    if let Some(url) = req.agent.as_deref() {
        ctx.store.node_set_agent(&name, Some(url).filter(|u| !u.is_empty())).await?;
        tracing::info!(node = %name, agent = url, "node agent set");
    }
    if let Some(st) = state {
        ctx.store.node_set_state(&name, st).await?;
        tracing::info!(node = %name, state = st, "node state changed");
    }
    node_get(ctx, caller, name.as_str()).await
}

/// Drains the node and migrates each of its VMs to the node placement picks for it (live
/// when it runs, cold when stopped), one after the other; a VM that cannot move stays, with
/// the reason.
pub async fn node_evacuate(ctx: &Context, caller: &Caller, name: &str) -> Result<kvmctl_types::api::NodeEvacuation, Error> {
    caller.require_admin("evacuating nodes")?;
    let name = parse_name("name", name)?;
    ctx.store.node_get(&name).await?.ok_or_else(|| Error::NotFound { kind: "node", name: name.to_string() })?;
    ctx.store.node_set_state(&name, "draining").await?;
    tracing::info!(node = %name, "node draining; evacuating its VMs");
    let vms: Vec<kvmctl_store::VmRecord> =
        ctx.store.vm_list(&kvmctl_store::Scope::all()).await?.into_iter().filter(|v| v.node == name.as_str()).collect();
    let mut moves = Vec::new();
    for v in vms {
        let live = v.state == kvmctl_core::VmState::Running;
        let started = std::time::Instant::now();
        let size = (v.vcpus as u64, v.memory_mib, v.disk_gib);
        let (placed, _) = place(ctx, size, &BTreeMap::new(), Strategy::BestFit, None).await?;
        let result = match placed.chosen {
            None => Err(Error::InsufficientCapacity { reasons: vec![format!("no other node has room for VM {}", v.name)] }),
            Some(to) => {
                let req = kvmctl_types::api::VmMigrateRequest { to: to.clone(), live };
                crate::app::vms::vm_migrate(ctx, caller, v.name.as_str(), req).await.map(|_| to)
            }
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        moves.push(match result {
            Ok(to) => kvmctl_types::api::VmMove { vm: v.name.to_string(), to: Some(to), live, elapsed_ms, error: None },
            Err(e) => kvmctl_types::api::VmMove { vm: v.name.to_string(), to: None, live, elapsed_ms, error: Some(e.to_string()) },
        });
    }
    Ok(kvmctl_types::api::NodeEvacuation { node: name.to_string(), vms: moves })
}

/// Removes a node that holds no VM; the local node stays.
pub async fn node_remove(ctx: &Context, caller: &Caller, name: &str) -> Result<(), Error> {
    caller.require_admin("removing nodes")?;
    let name = parse_name("name", name)?;
    if name.as_str() == LOCAL {
        return Err(Error::Conflict("the local node is the daemon's own libvirt; it cannot be removed (drain it instead)".into()));
    }
    // The connection is taken before the row goes (afterwards the node is unknown); the row
    // goes only while no VM is on or moving to the node, so no create can place one there
    // between that and the cleanup below.
    let conn = ctx.node_conn(name.as_str()).await.ok();
    if ctx.store.node_delete_unused(&name).await? {
        ctx.node_forget(name.as_str());
        match conn {
            Some(conn) => node_leftovers_remove(ctx, conn, name.as_str()).await?,
            None => {
                tracing::warn!(node = %name, "node removed while unreachable: kvmctl's image copies and networks on it stay; remove them there with virsh")
            }
        }
        ctx.store.image_copies_forget_node(name.as_str()).await?;
        tracing::info!(node = %name, "node removed");
        return Ok(());
    }
    match ctx.store.node_get(&name).await? {
        None => Err(Error::NotFound { kind: "node", name: name.to_string() }),
        Some(_) => {
            Err(Error::Conflict(format!("node {name} still has VMs; drain it (kvmctl node drain {name}) and move or delete them first")))
        }
    }
}

/// What kvmctl put on a node besides its VMs: the image copies and the managed networks
/// VMs took there. Best effort: what cannot be removed is logged with its name.
async fn node_leftovers_remove(ctx: &Context, conn: NodeHandle, node: &str) -> Result<(), Error> {
    super::images::image_copies_remove_from(ctx, conn.clone(), node).await?;
    for net in ctx.store.network_list(&kvmctl_store::Scope::all()).await? {
        match conn.network_delete(&net.name).await {
            Err(e) if !e.is_not_found() => {
                tracing::warn!(network = %net.name, node, error = %e, "cannot remove the network on the removed node; remove it there with virsh")
            }
            _ => {}
        }
    }
    Ok(())
}

/// Placement strategy from a request.
pub(crate) fn strategy(s: Option<&str>) -> Result<Strategy, Error> {
    match s {
        None => Ok(Strategy::BestFit),
        Some(v) => Strategy::parse(v).ok_or_else(|| Error::invalid("placement", format!("{v:?}: use best-fit or spread"))),
    }
}

/// Used by tests and names: the local node's name.
pub fn local_name() -> Name {
    Name::parse(LOCAL).expect("valid")
}
