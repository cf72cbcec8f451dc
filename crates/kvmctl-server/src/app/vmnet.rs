//! A VM's place on its network as the node sees it: the facts its domain metadata carries
//! (address, bridge, NAT subnet, forwards) and the firewall rules made of them, applied and
//! removed while it runs. The bottom layer of everything about VMs' networking: `domain`,
//! `forwards`, `vms` and the reconciler build on it.

use super::context::{blocking, Context};
use kvmctl_core::rules::{cidr_parse, Attachment};
use kvmctl_core::Error;
use kvmctl_libvirt::xml::{self, ForwardMetadata, Metadata, NetMetadata};
use kvmctl_netfw::VmRules;
use kvmctl_store::{ForwardRecord, Scope, VmRecord};
use kvmctl_types::api::Forward;
use std::net::Ipv4Addr;

pub(crate) fn forward_view(f: ForwardRecord) -> Forward {
    Forward { protocol: f.protocol, host_port: f.host_port, guest_port: f.guest_port, pool: f.pool, vnc_password: None }
}

/// The pool of VNC forwards: not firewall rules, but the VM's VNC server listening on the
/// host port (`DomainSpec::vnc_port`).
pub(crate) const VNC_POOL: &str = "vnc";

/// The host port the VM's VNC server listens on for its VNC forward, if it has one.
pub(crate) async fn vnc_port(ctx: &Context, rec: &VmRecord) -> Result<Option<u16>, Error> {
    Ok(ctx.store.forward_list_vm(&rec.id).await?.into_iter().find(|f| f.pool == VNC_POOL).map(|f| f.host_port))
}

/// Where the VM sits and what is forwarded to it: what its domain metadata carries and what
/// its firewall rules are made of. `None` when the VM has no reserved address on a libvirt
/// network (a bridged VM): no rules are possible.
pub(crate) async fn vm_net(ctx: &Context, rec: &VmRecord) -> Result<Option<NetMetadata>, Error> {
    let Attachment::Network(network) = Attachment::parse(&rec.network) else { return Ok(None) };
    let Some(ip) = rec.ip.as_deref().and_then(|i| i.parse::<Ipv4Addr>().ok()) else { return Ok(None) };
    let managed = ctx.store.network_get(&Scope::all(), &network).await?;
    // The recorded bridge is the local node's; another node's is its own.
    let recorded = managed.as_ref().filter(|_| rec.node == super::context::LOCAL).and_then(|n| n.bridge.clone());
    let bridge = match recorded {
        Some(b) => b,
        None => {
            let node = ctx.node_conn(&rec.node).await?;
            let net_xml = node.network_xml(&network).await?;
            match xml::network_info(&net_xml).bridge {
                Some(b) => b,
                None => return Ok(None),
            }
        }
    };
    let nat_subnet = managed.filter(|n| n.nat).and_then(|n| cidr_parse(&n.subnet));
    let forwards = ctx
        .store
        .forward_list_vm(&rec.id)
        .await?
        .into_iter()
        .filter(|f| f.pool != VNC_POOL)
        .map(|f| ForwardMetadata { protocol: f.protocol, host_port: f.host_port, guest_port: f.guest_port })
        .collect();
    Ok(Some(NetMetadata { ip, bridge, nat_subnet, forwards }))
}

/// The table entry of a VM from its metadata (a forward of an unknown protocol is left out).
pub fn rules_of(vm_id: &str, net: &NetMetadata) -> VmRules {
    VmRules::of(vm_id, net.ip, &net.bridge, net.nat_subnet, net.forwards.iter().map(|f| (f.protocol.as_str(), f.host_port, f.guest_port)))
}

/// Whether the daemon can write the node's firewall itself (the node is this host).
pub(crate) fn node_is_local(ctx: &Context) -> bool {
    ctx.local_node.uri().starts_with("qemu:///")
}

/// Writes the VM's rules into the node's table (replacing what it had), for a running VM.
pub(crate) async fn rules_apply(ctx: &Context, rec: &VmRecord) -> Result<(), Error> {
    if rec.node != super::context::LOCAL {
        return agent_sync(ctx, rec).await;
    }
    if !node_is_local(ctx) {
        return Ok(());
    }
    let id = rec.id.to_string();
    match vm_net(ctx, rec).await? {
        Some(net) => {
            let rules = rules_of(&id, &net);
            blocking(move || -> Result<(), String> {
                kvmctl_netfw::vm_apply_guarded(kvmctl_netfw::TABLE, &rules).map_err(|e| kvmctl_core::error::chain(&e))?;
                Ok(())
            })
            .await?
            .map_err(|e| Error::Unavailable(format!("cannot write the firewall rules of VM {}: {e}", rec.name)))
        }
        None => rules_remove(ctx, rec).await,
    }
}

/// Removes every rule of the VM from the node's table.
pub(crate) async fn rules_remove(ctx: &Context, rec: &VmRecord) -> Result<(), Error> {
    if rec.node != super::context::LOCAL {
        // The agent removes the rules of every domain that no longer runs at its next sync
        // (at its start, at each lifecycle event, every 30 s): one it cannot be told now
        // does not hold up a stop or a delete.
        if let Err(e) = agent_sync(ctx, rec).await {
            tracing::warn!(vm = %rec.name, node = %rec.node, error = %e, "the node's agent will remove the VM's rules at its next sync");
        }
        return Ok(());
    }
    if !node_is_local(ctx) {
        return Ok(());
    }
    let id = rec.id.to_string();
    blocking(move || kvmctl_netfw::vm_remove(kvmctl_netfw::TABLE, &id))
        .await?
        .map(|_| ())
        .map_err(|e| Error::Unavailable(format!("cannot remove the firewall rules of VM {}: {}", rec.name, kvmctl_core::error::chain(&e))))
}

/// On another node, its agent makes the node's table what the running domains' metadata
/// asks for (nothing to do on a node without an agent: it has no kvmctl rules).
async fn agent_sync(ctx: &Context, rec: &VmRecord) -> Result<(), Error> {
    let Some(agent) = ctx.node_agent(&rec.node).await? else { return Ok(()) };
    agent
        .sync()
        .await
        .map(|_| ())
        .map_err(|e| Error::Unavailable(format!("cannot write the firewall rules of VM {} on node {}: {e}", rec.name, rec.node)))
}

/// The VM's metadata as its domain should carry it now.
pub(crate) async fn metadata_of(ctx: &Context, rec: &VmRecord) -> Result<Metadata, Error> {
    Ok(Metadata {
        vm_id: rec.id,
        owner: rec.owner.clone(),
        plan: rec.plan.clone(),
        installation: ctx.installation.clone(),
        net: vm_net(ctx, rec).await?,
    })
}
