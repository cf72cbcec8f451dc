//! `networks`: libvirt networks kvmctl makes and removes (`kvmctl network create|delete`),
//! and a view of every network on the node.
//!
//! A NAT network is a libvirt network in `route` mode whose outgoing traffic kvmctl's own
//! table masquerades (ADR 0005); an isolated one has no forward at all. Create writes the
//! row (state `creating`) first, then defines, starts and autostarts the libvirt network,
//! then records the bridge libvirt chose (`active`); a failure removes both. Delete is
//! refused while a VM uses the network.

use super::context::{blocking, parse_name, Context};
use kvmctl_core::rules::cidr_parse;
use kvmctl_core::{Caller, Error};
use kvmctl_libvirt::xml::{self, ManagedNetworkSpec};
use kvmctl_store::{NetworkDeleteRefusal, NetworkRecord, Scope};
use kvmctl_types::api::{Network, NetworkCreateRequest};
use std::net::Ipv4Addr;

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

/// The subnet's address, gateway and default DHCP range, checked.
pub(crate) fn subnet_plan(subnet: &str) -> Result<(Ipv4Addr, u8, Ipv4Addr, Ipv4Addr, Ipv4Addr), Error> {
    let (addr, prefix) = cidr_parse(subnet).ok_or_else(|| {
        Error::invalid("subnet", format!("{subnet:?} is not an IPv4 subnet; write it as ADDRESS/PREFIX, e.g. 192.168.100.0/24"))
    })?;
    if !(8..=29).contains(&prefix) {
        return Err(Error::invalid("subnet", format!("prefix /{prefix} is out of range; use /8 to /29")));
    }
    let base = u32::from(addr) & mask(prefix);
    if base != u32::from(addr) {
        return Err(Error::invalid(
            "subnet",
            format!("{subnet} is not the start of a /{prefix}; did you mean {}/{prefix}?", Ipv4Addr::from(base)),
        ));
    }
    let broadcast = base | !mask(prefix);
    Ok((Ipv4Addr::from(base), prefix, Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2), Ipv4Addr::from(broadcast - 1)))
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    fn net(s: &str) -> (Ipv4Addr, u8) {
        cidr_parse(s).unwrap()
    }

    #[test]
    fn users_get_their_pools_admins_any_private_range_nobody_public_space() {
        let user = Caller { name: "alice".into(), role: kvmctl_core::Role::User, custom_sizing: true };
        let admin = Caller::local_admin();
        let pools = vec!["10.200.0.0/16".to_string()];
        assert!(subnet_policy(&user, net("10.200.3.0/24"), &pools).is_ok());
        for bad in ["10.201.0.0/24", "10.0.0.0/8", "192.168.1.0/24"] {
            let e = subnet_policy(&user, net(bad), &pools).unwrap_err().to_string();
            assert!(e.contains("outside the address pools"), "{bad}: {e}");
        }
        for public in ["8.8.8.0/24", "1.0.0.0/8", "172.32.0.0/16"] {
            for c in [&user, &admin] {
                assert!(subnet_policy(c, net(public), &pools).unwrap_err().to_string().contains("not private"), "{public}");
            }
        }
        assert!(subnet_policy(&admin, net("192.168.50.0/24"), &pools).is_ok());
        assert!(subnet_policy(&admin, net("10.0.0.0/8"), &pools).is_ok());
    }
}

fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let m = mask(a.1.min(b.1));
    u32::from(a.0) & m == u32::from(b.0) & m
}

/// The private IPv4 ranges (RFC 1918, and shared address space RFC 6598): the only space a
/// kvmctl network may take, since a network puts a connected route to its subnet on the host.
const PRIVATE: [((u8, u8, u8, u8), u8); 4] = [((10, 0, 0, 0), 8), ((172, 16, 0, 0), 12), ((192, 168, 0, 0), 16), ((100, 64, 0, 0), 10)];

/// Whether `inner` lies wholly within `outer`.
fn within(inner: (Ipv4Addr, u8), outer: (Ipv4Addr, u8)) -> bool {
    inner.1 >= outer.1 && u32::from(inner.0) & mask(outer.1) == u32::from(outer.0) & mask(outer.1)
}

/// The address policy: every network takes private space only; a user's lies within one of
/// the admin-defined `user_network_pools`.
pub(crate) fn subnet_policy(caller: &Caller, subnet: (Ipv4Addr, u8), pools: &[String]) -> Result<(), Error> {
    let private = PRIVATE.iter().any(|((a, b, c, d), len)| within(subnet, (Ipv4Addr::new(*a, *b, *c, *d), *len)));
    if !private {
        return Err(Error::invalid(
            "subnet",
            format!(
                "{}/{} is not private address space; use 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10",
                subnet.0, subnet.1
            ),
        ));
    }
    if caller.is_admin() {
        return Ok(());
    }
    if pools.iter().filter_map(|p| cidr_parse(p)).any(|pool| within(subnet, pool)) {
        return Ok(());
    }
    Err(Error::invalid(
        "subnet",
        format!(
            "{}/{} is outside the address pools for users' networks ({}); pick a subnet within one",
            subnet.0,
            subnet.1,
            pools.join(", ")
        ),
    ))
}

/// The IPv4 subnets of the host's addresses and routes (default routes aside), from
/// `ip -j`: a network on any of them would take over the host's own traffic.
fn host_subnets() -> Vec<(Ipv4Addr, u8)> {
    let json = |args: &[&str]| -> serde_json::Value {
        std::process::Command::new("ip")
            .args(args)
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    let mut out = Vec::new();
    for link in json(&["-j", "-4", "addr", "show"]).as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if let (Some(ip), Some(len)) = (a["local"].as_str().and_then(|i| i.parse().ok()), a["prefixlen"].as_u64()) {
                out.push((ip, len as u8));
            }
        }
    }
    for r in json(&["-j", "-4", "route", "show", "table", "all"]).as_array().into_iter().flatten() {
        match r["dst"].as_str() {
            Some("default") | None => {}
            Some(d) if d.contains('/') => out.extend(cidr_parse(d)),
            Some(d) => out.extend(d.parse::<Ipv4Addr>().ok().map(|ip| (ip, 32))),
        }
    }
    out.retain(|(ip, _)| !ip.is_loopback() && !ip.is_unspecified());
    out
}

pub async fn network_create(ctx: &Context, caller: &Caller, req: NetworkCreateRequest) -> Result<Network, Error> {
    let name = parse_name("name", &req.name)?.to_string();
    crate::app::nodes::label_check(&req.labels)?;
    let (base, prefix, gateway, mut first, mut last) = subnet_plan(&req.subnet)?;
    subnet_policy(caller, (base, prefix), &ctx.config.user_network_pools)?;
    if let Some(range) = &req.dhcp_range {
        let bad = || Error::invalid("dhcp_range", format!("{range:?} is not FIRST-LAST, e.g. 192.168.100.100-192.168.100.200"));
        let (a, b) = range.split_once('-').ok_or_else(bad)?;
        let (a, b): (Ipv4Addr, Ipv4Addr) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
        if u32::from(a) > u32::from(b) {
            return Err(Error::invalid("dhcp_range", format!("{range} ends before it starts")));
        }
        if u32::from(a) < u32::from(first) || u32::from(b) > u32::from(last) {
            return Err(Error::invalid(
                "dhcp_range",
                format!(
                    "{range} must lie within {first}-{last} (the subnet without its network address, the host's {gateway} and broadcast)"
                ),
            ));
        }
        (first, last) = (a, b);
    }
    // The subnet must not overlap a network libvirt or kvmctl already has.
    let n = name.clone();
    let (exists, others) = ctx
        .local_node
        .run(move |node| -> Result<_, kvmctl_libvirt::NodeError> {
            let exists = node.network_state(&n)?.is_some();
            let mut others = Vec::new();
            for other in node.network_list()? {
                if let Ok(x) = node.network_xml(&other) {
                    if let Some(ip) = xml::network_info(&x).ipv4 {
                        others.push((other, ip));
                    }
                }
            }
            Ok((exists, others))
        })
        .await?;
    if exists || ctx.store.network_get(&Scope::all(), &name).await?.is_some() {
        return Err(Error::Conflict(format!("a network named {name} exists already (kvmctl network list); pick another name")));
    }
    // What the caller may be told of a clash: admins everything; users only their own
    // networks' names (another tenant's network, a libvirt network or a host route is "in
    // use", nothing more).
    let own: std::collections::HashSet<String> = ctx.store.network_list(&Scope::of(caller)).await?.into_iter().map(|n| n.name).collect();
    let mut known: Vec<(String, (Ipv4Addr, u8))> = others;
    for rec in ctx.store.network_list(&Scope::all()).await? {
        if let Some(c) = cidr_parse(&rec.subnet) {
            known.push((rec.name, c));
        }
    }
    if let Some((other, (ip, len))) = known.iter().find(|(_, c)| overlaps(*c, (base, prefix))) {
        return Err(Error::invalid(
            "subnet",
            if caller.is_admin() || own.contains(other) {
                format!("{base}/{prefix} overlaps network {other} ({ip}/{len}); pick another subnet")
            } else {
                format!("{base}/{prefix} overlaps an address range already in use; pick another subnet")
            },
        ));
    }
    let host = blocking(host_subnets).await?;
    if let Some((ip, len)) = host.iter().find(|c| overlaps(**c, (base, prefix))) {
        return Err(Error::invalid(
            "subnet",
            if caller.is_admin() {
                format!("{base}/{prefix} overlaps the host's own {ip}/{len} (an address or route of the host); pick another subnet")
            } else {
                format!("{base}/{prefix} overlaps an address range already in use; pick another subnet")
            },
        ));
    }
    let rec = NetworkRecord {
        name: name.clone(),
        owner: caller.name.clone(),
        node: "local".into(),
        nat: !req.isolated,
        subnet: format!("{base}/{prefix}"),
        gateway: gateway.to_string(),
        dhcp_start: first.to_string(),
        dhcp_end: last.to_string(),
        bridge: None,
        state: "creating".into(),
        created_at: 0,
        labels: req.labels.clone(),
    };
    let max = (!caller.is_admin()).then_some(ctx.config.networks_per_user);
    let inserted = ctx.store.network_insert_within(&rec, max).await.map_err(|e| match e {
        kvmctl_store::StoreError::Exists { .. } => Error::Conflict(format!("a network named {name} exists already; pick another name")),
        e => e.into(),
    })?;
    if !inserted {
        return Err(Error::QuotaExceeded {
            limit: "networks".into(),
            max: ctx.config.networks_per_user,
            used: ctx.config.networks_per_user,
            requested: 1,
        });
    }
    let spec = ManagedNetworkSpec { name: name.clone(), nat: rec.nat, address: gateway, prefix, dhcp_start: first, dhcp_end: last };
    match network_build(ctx, &spec).await {
        Ok(bridge) => {
            ctx.store.network_activate(&name, &bridge).await?;
            tracing::info!(network = %name, subnet = %rec.subnet, %bridge, nat = rec.nat, "network created");
            network_get(ctx, caller, &name).await
        }
        Err(e) => {
            tracing::warn!(network = %name, error = %e, "network create failed; undoing");
            network_teardown(ctx, &name).await?;
            ctx.store.network_delete(&name).await?;
            Err(e)
        }
    }
}

/// Defines, starts and autostarts the libvirt network; returns its bridge.
async fn network_build(ctx: &Context, spec: &ManagedNetworkSpec) -> Result<String, Error> {
    ctx.failpoints.hit("network.reserve").await?;
    let xml = xml::managed_network_xml(spec)?;
    let name = spec.name.clone();
    let net_xml = ctx
        .local_node
        .run(move |node| -> Result<String, kvmctl_libvirt::NodeError> {
            node.network_ensure(&name, &xml)?;
            node.network_xml(&name)
        })
        .await
        .map_err(|e| Error::Conflict(format!("libvirt cannot start network {}: {}", spec.name, kvmctl_core::error::chain(&e))))?;
    ctx.failpoints.hit("network.define").await?;
    xml::network_info(&net_xml).bridge.ok_or_else(|| Error::Internal(format!("libvirt gave network {} no bridge", spec.name)))
}

/// Removes the libvirt network of a managed network, when it exists: on the local node, and
/// on every other node a VM took it to (`network_on_node`).
async fn network_teardown(ctx: &Context, name: &str) -> Result<(), Error> {
    for node in ctx.store.node_list().await?.into_iter().filter(|n| n.name.as_str() != super::context::LOCAL) {
        let Ok(conn) = ctx.node_conn(node.name.as_str()).await else { continue };
        match conn.network_delete(name).await {
            Err(e) if !e.is_not_found() => {
                tracing::warn!(network = %name, node = %node.name, error = %e, "cannot remove the network on the node; remove it there with virsh")
            }
            _ => {}
        }
    }
    match ctx.local_node.network_delete(name).await {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

/// A managed network on another node: defined there (the same definition as on the local
/// node: subnet, DHCP range, addresses reserved ahead; its own bridge) the first time a VM
/// there joins it. Nothing for libvirt's own networks, which must exist on the node.
pub(crate) async fn network_on_node(ctx: &Context, node: &str, name: &str) -> Result<(), Error> {
    if node == super::context::LOCAL {
        return Ok(());
    }
    let Some(rec) = ctx.store.network_get(&Scope::all(), name).await? else { return Ok(()) };
    let conn = ctx.node_conn(node).await?;
    if conn.network_state(name).await?.is_some_and(|s| s.active) {
        return Ok(());
    }
    let bad = || Error::Internal(format!("network {name} has a malformed record"));
    let (_, prefix) = cidr_parse(&rec.subnet).ok_or_else(bad)?;
    let spec = ManagedNetworkSpec {
        name: name.to_owned(),
        nat: rec.nat,
        address: rec.gateway.parse().map_err(|_| bad())?,
        prefix,
        dhcp_start: rec.dhcp_start.parse().map_err(|_| bad())?,
        dhcp_end: rec.dhcp_end.parse().map_err(|_| bad())?,
    };
    let xml = xml::managed_network_xml(&spec)?;
    let n = name.to_owned();
    conn.run(move |node| node.network_ensure(&n, &xml))
        .await
        .map_err(|e| Error::Conflict(format!("libvirt cannot start network {name} on node {node}: {}", kvmctl_core::error::chain(&e))))?;
    tracing::info!(network = %name, %node, "managed network defined on the node");
    Ok(())
}

pub async fn network_delete(ctx: &Context, caller: &Caller, name: &str) -> Result<(), Error> {
    let name = parse_name("name", name)?.to_string();
    let rec = match ctx.store.network_begin_delete(&Scope::of(caller), &name).await? {
        Ok(rec) => rec,
        Err(NetworkDeleteRefusal::NotFound) => {
            if ctx.store.network_get(&Scope::all(), &name).await?.is_some() {
                return Err(Error::NotFound { kind: "network", name });
            }
            if ctx.local_node.network_state(&name).await?.is_some() {
                return Err(Error::Conflict(format!(
                    "network {name} was not made by kvmctl; remove it with virsh (virsh net-destroy {name}; virsh net-undefine {name})"
                )));
            }
            return Err(Error::NotFound { kind: "network", name });
        }
        Err(NetworkDeleteRefusal::InUse(vms)) if !caller.is_admin() => {
            return Err(Error::Conflict(format!("network {name} is used by {} VMs; delete or move them first", vms.len())))
        }
        Err(NetworkDeleteRefusal::InUse(vms)) => {
            return Err(Error::Conflict(format!("network {name} is used by VM {}; delete or move them first", vms.join(", "))))
        }
        Err(NetworkDeleteRefusal::Busy(state)) => {
            return Err(Error::Conflict(format!("network {name} is {state}; try again when that finishes")))
        }
    };
    network_teardown(ctx, &rec.name).await?;
    ctx.store.network_delete(&rec.name).await?;
    tracing::info!(network = %name, "network deleted");
    Ok(())
}

pub async fn network_get(ctx: &Context, caller: &Caller, name: &str) -> Result<Network, Error> {
    let name = parse_name("name", name)?.to_string();
    network_list(ctx, caller).await?.into_iter().find(|n| n.name == name).ok_or(Error::NotFound { kind: "network", name })
}

/// The networks a caller may use: kvmctl's (their own; admins see all), then libvirt's own
/// (shared by everyone). The VMs listed on each are the ones the caller may see.
pub async fn network_list(ctx: &Context, caller: &Caller) -> Result<Vec<Network>, Error> {
    let vms = ctx.store.vm_list(&Scope::of(caller)).await?;
    let users = |net: &str| vms.iter().filter(|v| v.network == net).map(|v| v.name.to_string()).collect::<Vec<_>>();
    let all_managed = ctx.store.network_list(&Scope::all()).await?;
    let managed = ctx.store.network_list(&Scope::of(caller)).await?;
    let skip: Vec<String> = all_managed.iter().map(|m| m.name.clone()).collect();
    let libvirt = ctx
        .local_node
        .run(move |node| -> Result<Vec<(String, bool, String)>, kvmctl_libvirt::NodeError> {
            let mut out = Vec::new();
            for n in node.network_list()? {
                let active = node.network_state(&n)?.is_some_and(|s| s.active);
                let x = if skip.contains(&n) { String::new() } else { node.network_xml(&n).unwrap_or_default() };
                out.push((n, active, x));
            }
            Ok(out)
        })
        .await?;
    let mut out: Vec<Network> = managed
        .iter()
        .map(|m| {
            let active = libvirt.iter().any(|(n, a, _)| n == &m.name && *a);
            Network {
                name: m.name.clone(),
                managed: true,
                mode: if m.nat { "nat" } else { "isolated" }.into(),
                subnet: Some(m.subnet.clone()),
                gateway: Some(m.gateway.clone()),
                dhcp_range: Some(format!("{}-{}", m.dhcp_start, m.dhcp_end)),
                bridge: m.bridge.clone(),
                state: match m.state.as_str() {
                    "active" if !active => "inactive".into(),
                    s => s.into(),
                },
                owner: Some(m.owner.clone()),
                vms: users(&m.name),
                labels: m.labels.clone(),
            }
        })
        .collect();
    for (name, active, x) in libvirt.into_iter().filter(|(n, _, _)| !all_managed.iter().any(|m| &m.name == n)) {
        let info = xml::network_info(&x);
        let dhcp = xml::network_dhcp_info(&x);
        out.push(Network {
            vms: users(&name),
            name,
            managed: false,
            mode: info.forward_mode.clone().unwrap_or_else(|| "isolated".into()),
            subnet: info.ipv4.map(|(ip, len)| format!("{}/{len}", Ipv4Addr::from(u32::from(ip) & mask(len)))),
            gateway: info.ipv4.map(|(ip, _)| ip.to_string()),
            dhcp_range: dhcp.map(|d| format!("{}-{}", d.range_start, d.range_end)),
            bridge: info.bridge,
            state: if active { "active" } else { "inactive" }.into(),
            owner: None,
            labels: Default::default(),
        });
    }
    Ok(out)
}

/// Finishes what a crash interrupted: a network left `creating` is removed, one left
/// `deleting` is deleted. Returns the names handled.
pub(crate) async fn networks_reconcile(ctx: &Context) -> Result<Vec<String>, Error> {
    let mut done = Vec::new();
    for rec in ctx.store.network_list(&Scope::all()).await? {
        if rec.state == "creating" && rec.created_at > 0 && kvmctl_store::unix_now() - rec.created_at < 60 {
            // A create in flight in this daemon; a crashed one is older than that.
            continue;
        }
        if rec.state == "creating" || rec.state == "deleting" {
            network_teardown(ctx, &rec.name).await?;
            ctx.store.network_delete(&rec.name).await?;
            tracing::warn!(network = %rec.name, state = %rec.state, "finished a network operation a crash interrupted");
            done.push(rec.name);
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_checked() {
        let (base, prefix, gw, first, last) = subnet_plan("192.168.100.0/24").unwrap();
        assert_eq!((base.to_string(), prefix, gw.to_string()), ("192.168.100.0".into(), 24, "192.168.100.1".into()));
        assert_eq!((first.to_string(), last.to_string()), ("192.168.100.2".into(), "192.168.100.254".into()));
        for (bad, says) in [("192.168.100.1/24", "192.168.100.0/24"), ("10.0.0.0/30", "/8 to /29"), ("nope", "ADDRESS/PREFIX")] {
            let e = subnet_plan(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(overlaps(([10, 0, 0, 0].into(), 8), ([10, 77, 0, 0].into(), 24)));
        assert!(!overlaps(([10, 78, 0, 0].into(), 24), ([10, 77, 0, 0].into(), 24)));
    }
}
