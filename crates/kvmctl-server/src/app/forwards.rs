//! `forwards`: host ports forwarded to VMs, and each VM's rules in the node's firewall.
//!
//! A forward is a row first (`forwards`, whose primary key makes a host port belong to one
//! forward), then part of the VM's domain metadata (so the node's libvirt hook can apply it
//! without the daemon), then, while the VM runs, rules in the table `inet kvmctl`
//! (`kvmctl-netfw`). Each step is undone when a later one fails.

use super::context::{parse_name, Context};
use super::vmnet::{forward_view, metadata_of, rules_apply, vm_net, vnc_port, VNC_POOL};
use crate::config::PortPools;
use kvmctl_core::Caller;
use kvmctl_core::{Error, VmState};
use kvmctl_libvirt::xml::{self};
use kvmctl_netfw::Protocol;
use kvmctl_store::{ForwardRecord, PoolRange, Scope, VmRecord};
use kvmctl_types::api::{Forward, ForwardCreateRequest, PortPoolStatus};

/// The guest port recorded for a VNC forward (the VNC protocol's display 0).
const VNC_GUEST_PORT: u16 = 5900;

/// A VM's forwards as its owner sees them: the VNC one with the password.
fn forward_view_owner(rec: &VmRecord, f: ForwardRecord) -> Forward {
    let vnc = f.pool == VNC_POOL;
    Forward { vnc_password: vnc.then(|| rec.vnc_password.clone()), ..forward_view(f) }
}

/// Rewrites the domain's metadata from the record and its forwards.
async fn metadata_update(ctx: &Context, rec: &VmRecord) -> Result<(), Error> {
    let element = xml::metadata_xml(&metadata_of(ctx, rec).await?)?;
    let node = ctx.node_conn(&rec.node).await?;
    node.domain_metadata_set(rec.name.as_str(), element).await?;
    Ok(())
}

/// The error for a pool with no free port: names the pool and the setting that widens it.
pub(crate) fn pool_exhausted(pool: &kvmctl_netfw::pool::PortPool) -> Error {
    Error::InsufficientCapacity {
        reasons: vec![format!(
            "port pool {} ({}) is exhausted: all {} ports are forwarded; widen `{}` in /etc/kvmctl/kvmctl.toml and restart the daemon, or remove forwards (kvmctl vm forward rm)",
            pool.name,
            pool.range(),
            pool.size(),
            PortPools::key(&pool.name)
        )],
    }
}

/// Takes the lowest free port of `pool` for the VM.
pub(crate) async fn forward_allocate(
    ctx: &Context,
    rec: &VmRecord,
    pools: &PortPools,
    pool: &str,
    protocol: Protocol,
    guest_port: u16,
) -> Result<ForwardRecord, Error> {
    let p = pools.get(pool).ok_or_else(|| Error::invalid("pool", format!("{pool:?} is not a pool; use ssh, vnc or general")))?;
    let limits = super::users::limits_of(ctx, &rec.owner).await?;
    match ctx
        .store
        .forward_allocate(
            &rec.node,
            &rec.id,
            protocol.as_str(),
            PoolRange { name: &p.name, start: p.start, end: p.end },
            guest_port,
            limits.map(|l| l.forwards),
        )
        .await?
    {
        Some(f) => Ok(f),
        None => Err(forward_refusal(ctx, rec, limits.as_ref()).await.unwrap_or_else(|| pool_exhausted(p))),
    }
}

/// Why a forward insert returned nothing: the owner's forward quota, when it is full.
async fn forward_refusal(ctx: &Context, rec: &VmRecord, limits: Option<&kvmctl_core::QuotaLimits>) -> Option<Error> {
    let l = limits?;
    let used = ctx.store.usage_of(&rec.owner).await.ok()?;
    (used.forwards >= l.forwards).then(|| Error::QuotaExceeded {
        limit: "forwards".into(),
        max: l.forwards,
        used: used.forwards,
        requested: 1,
    })
}

/// Records a forward on a chosen port, within the owner's forward quota.
async fn forward_insert(ctx: &Context, rec: &VmRecord, f: &ForwardRecord) -> Result<ForwardRecord, Error> {
    let limits = super::users::limits_of(ctx, &rec.owner).await?;
    match ctx.store.forward_insert(f, limits.map(|l| l.forwards)).await {
        Ok(Some(made)) => Ok(made),
        Ok(None) => Err(forward_refusal(ctx, rec, limits.as_ref())
            .await
            .unwrap_or_else(|| Error::Conflict("the forward quota was full a moment ago; try again".into()))),
        Err(kvmctl_store::StoreError::Exists { .. }) => Err(Error::Conflict(format!(
            "host port {} {} is forwarded already; `kvmctl vm forward list` shows forwards, or leave --host-port out to take a free one",
            f.protocol, f.host_port
        ))),
        Err(e) => Err(e.into()),
    }
}

pub async fn forward_list(ctx: &Context, caller: &Caller, name: &str) -> Result<Vec<Forward>, Error> {
    let name = parse_name("name", name)?;
    let rec = super::context::vm_record(ctx, &Scope::of(caller), &name).await?;
    Ok(ctx.store.forward_list_vm(&rec.id).await?.into_iter().map(|f| forward_view_owner(&rec, f)).collect())
}

pub async fn forward_add(ctx: &Context, caller: &Caller, name: &str, req: ForwardCreateRequest) -> Result<Forward, Error> {
    let name = parse_name("name", name)?;
    let vm = super::context::vm_record(ctx, &Scope::of(caller), &name).await?;
    if vm.node != super::context::LOCAL && ctx.node_agent(&vm.node).await?.is_none() {
        return Err(Error::Conflict(format!(
            "VM {name} runs on node {node}, which runs no agent; port forwards are rules in a node's firewall, which its agent writes: run `kvmctl agent` there and `kvmctl node set {node} --agent https://HOST:7443` (docs/nodes.md), or reach the VM on its node's network",
            node = vm.node
        )));
    }
    let protocol = match req.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(p) => Protocol::parse(p).ok_or_else(|| Error::invalid("protocol", format!("{p:?} is not tcp or udp")))?,
    };
    let pools = &ctx.pools;
    if let Some(p) = req.pool.as_deref() {
        if pools.get(p).is_none() {
            return Err(Error::invalid("pool", format!("{p:?} is not a pool; use ssh, vnc or general")));
        }
    }
    let pool = match req.host_port {
        Some(port) => {
            let holding = pools.holding(port).ok_or_else(|| {
                Error::invalid(
                    "host_port",
                    format!(
                        "{port} lies in no port pool; use a port of ssh ({}), general ({}) or vnc ({}), or leave it out to take one from a pool",
                        pools.ssh.range(),
                        pools.general.range(),
                        pools.vnc.range()
                    ),
                )
            })?;
            if let Some(p) = req.pool.as_deref().filter(|p| *p != holding.name) {
                return Err(Error::invalid("host_port", format!("{port} lies in pool {}, not {p}", holding.name)));
            }
            holding.name.clone()
        }
        None => req.pool.clone().unwrap_or_else(|| "general".into()),
    };
    if req.guest_port == 0 && pool != VNC_POOL {
        return Err(Error::invalid("guest_port", "0 is not a port; use 1 to 65535"));
    }
    if pool == VNC_POOL && !ctx.config.vnc_forwards {
        let field = if req.pool.is_some() { "pool" } else { "host_port" };
        return Err(Error::invalid(
            field,
            "VNC forwards are off on this host (vnc_forwards = false): VNC listens on localhost only; reach it through an SSH tunnel to the host",
        ));
    }
    super::context::vm_record(ctx, &Scope::of(caller), &name).await?;
    let _busy = ctx.vm_lock(&name, "forwarding").await?;
    let rec = super::context::vm_record(ctx, &Scope::of(caller), &name).await?;
    if matches!(rec.state, VmState::Creating | VmState::Deleting) {
        return Err(Error::Conflict(format!("VM {name} is {}; try again when that finishes", rec.state)));
    }
    if pool == VNC_POOL {
        return vnc_forward_add(ctx, &rec, req.host_port, protocol).await;
    }
    if vm_net(ctx, &rec).await?.is_none() {
        return Err(Error::invalid(
            "name",
            format!(
                "VM {name} is attached to {} without an address kvmctl reserves; forwards need a VM on a libvirt network with DHCP",
                rec.network
            ),
        ));
    }
    let count = ctx.store.forward_list_vm(&rec.id).await?.len();
    if count >= ctx.config.forwards_per_vm as usize {
        return Err(Error::InsufficientCapacity {
            reasons: vec![format!(
                "VM {name} has {count} forwards, the most one VM may have (forwards_per_vm = {}); remove one first",
                ctx.config.forwards_per_vm
            )],
        });
    }
    let made = match req.host_port {
        Some(port) => {
            let f = ForwardRecord {
                node: rec.node.clone(),
                vm_id: rec.id,
                protocol: protocol.as_str().into(),
                host_port: port,
                guest_port: req.guest_port,
                pool,
                created_at: 0,
            };
            forward_insert(ctx, &rec, &f).await?
        }
        None => forward_allocate(ctx, &rec, pools, &pool, protocol, req.guest_port).await?,
    };
    if let Err(e) = forward_publish(ctx, &rec).await {
        ctx.store.forward_delete(&rec.id, &made.protocol, made.host_port).await?;
        if let Err(undo) = forward_publish(ctx, &rec).await {
            tracing::warn!(vm = %name, error = %undo, "cannot restore the VM's forwards after a failed add; the reconciler will");
        }
        return Err(e);
    }
    tracing::info!(vm = %name, protocol = %made.protocol, host_port = made.host_port, guest_port = made.guest_port, "forward added");
    Ok(forward_view_owner(&rec, made))
}

/// The VM's VNC console on a host port of the VNC pool: the domain is redefined to listen
/// there (on every address, behind the VM's VNC password) from its next start, so the VM
/// must be stopped. One per VM.
async fn vnc_forward_add(ctx: &Context, rec: &VmRecord, host_port: Option<u16>, protocol: Protocol) -> Result<Forward, Error> {
    if protocol != Protocol::Tcp {
        return Err(Error::invalid("protocol", "VNC is tcp"));
    }
    if rec.state != VmState::Stopped {
        return Err(Error::Conflict(format!(
            "VM {} is {}; stop it to forward its VNC console (kvmctl vm stop {})",
            rec.name, rec.state, rec.name
        )));
    }
    if vnc_port(ctx, rec).await?.is_some() {
        return Err(Error::Conflict(format!("VM {} has a VNC forward already (kvmctl vm forward list {})", rec.name, rec.name)));
    }
    let made = match host_port {
        Some(port) => {
            let f = ForwardRecord {
                node: rec.node.clone(),
                vm_id: rec.id,
                protocol: "tcp".into(),
                host_port: port,
                guest_port: VNC_GUEST_PORT,
                pool: VNC_POOL.into(),
                created_at: 0,
            };
            forward_insert(ctx, rec, &f).await?
        }
        None => forward_allocate(ctx, rec, &ctx.pools, VNC_POOL, Protocol::Tcp, VNC_GUEST_PORT).await?,
    };
    if let Err(e) = super::domain::domain_redefine(ctx, rec).await {
        ctx.store.forward_delete(&rec.id, "tcp", made.host_port).await?;
        return Err(e);
    }
    tracing::warn!(vm = %rec.name, host_port = made.host_port, "VNC console forwarded: it listens on every address, behind the VM's VNC password");
    Ok(forward_view_owner(rec, made))
}

/// Makes the domain metadata and (for a running VM) the firewall agree with the rows.
async fn forward_publish(ctx: &Context, rec: &VmRecord) -> Result<(), Error> {
    ctx.failpoints.hit("forward.row").await?;
    metadata_update(ctx, rec).await?;
    ctx.failpoints.hit("forward.metadata").await?;
    if rec.state == VmState::Running {
        rules_apply(ctx, rec).await?;
    }
    Ok(())
}

pub async fn forward_remove(ctx: &Context, caller: &Caller, name: &str, protocol: &str, host_port: u16) -> Result<(), Error> {
    let name = parse_name("name", name)?;
    super::context::vm_record(ctx, &Scope::of(caller), &name).await?;
    if Protocol::parse(protocol).is_none() {
        return Err(Error::invalid("protocol", format!("{protocol:?} is not tcp or udp")));
    }
    super::context::vm_record(ctx, &Scope::of(caller), &name).await?;
    let _busy = ctx.vm_lock(&name, "forwarding").await?;
    let rec = super::context::vm_record(ctx, &Scope::of(caller), &name).await?;
    let was_vnc = vnc_port(ctx, &rec).await? == Some(host_port) && protocol == "tcp";
    if was_vnc && rec.state != VmState::Stopped {
        return Err(Error::Conflict(format!("VM {name} is {}; stop it to remove its VNC forward (kvmctl vm stop {name})", rec.state)));
    }
    let gone = ctx.store.forward_delete(&rec.id, protocol, host_port).await?;
    if !gone {
        return Err(Error::NotFound { kind: "forward", name: format!("{protocol}/{host_port} of VM {name}") });
    }
    if was_vnc {
        super::domain::domain_redefine(ctx, &rec).await?;
    } else {
        forward_publish(ctx, &rec).await?;
    }
    tracing::info!(vm = %name, protocol, host_port, "forward removed");
    Ok(())
}

/// The pools and how many of each one's ports are taken.
pub async fn pool_status(ctx: &Context, _caller: &Caller) -> Result<Vec<PortPoolStatus>, Error> {
    let all = ctx.store.forward_list().await?;
    let pools = &ctx.pools;
    Ok([&pools.ssh, &pools.vnc, &pools.general]
        .into_iter()
        .map(|p| PortPoolStatus {
            name: p.name.clone(),
            range: p.range(),
            size: p.size(),
            used: all.iter().filter(|f| f.node == "local" && p.contains(f.host_port)).count() as u32,
        })
        .collect())
}
