//! The VM's address on a libvirt network: picked from the DHCP range, with the MAC of the
//! address's entry reserved ahead (ADR 0015) when the network has one, or else reserved
//! live as a DHCP host entry of the VM's own MAC.

use super::*;

/// An address and the MAC that goes with it.
pub(super) type Address = (std::net::Ipv4Addr, String);

/// The address a new VM gets on `network` of `node`, and its MAC (`None` on a bridge or NIC,
/// where the LAN's DHCP hands it out).
pub(super) async fn address_for(ctx: &Context, node: &str, network: &str, seen: NetworkSeen) -> Result<Option<Address>, Error> {
    match Attachment::parse(network) {
        Attachment::Network(n) => address_pick(ctx, node, &n, &Default::default(), seen).await,
        _ => Ok(None),
    }
}

/// What was read of a libvirt network on the node: its XML and its DHCP leases (`None` for a
/// bridge or NIC).
pub(super) type NetworkSeen = Option<(String, Vec<(String, String)>)>;

/// An address for a VM on `network`: the first free one of its DHCP range, or `None` on a
/// network without DHCP that kvmctl can reserve in (a bridge), where it is discovered later.
/// Reserves the VM's address on its libvirt network (a DHCP host entry). libvirt refuses an
/// entry that matches another's address, so an address reserved meanwhile by anything else
/// (another daemon, virsh) makes us pick again and record the new one instead of failing.
pub(super) async fn address_reserve(ctx: &Context, rec: &mut VmRecord) -> Result<(), Error> {
    let mut lost: std::collections::HashSet<std::net::Ipv4Addr> = Default::default();
    while let Some(host) = dhcp_host(rec)? {
        let node = ctx.node_conn(&rec.node).await?;
        match node.network_dhcp_host(&rec.network, &host, true).await {
            Ok(()) => return Ok(()),
            Err(e @ NodeError::AlreadyExists { .. }) if lost.len() < 16 => {
                let Some(ip) = rec.ip.as_deref().and_then(|i| i.parse().ok()) else { return Err(e.into()) };
                tracing::info!(vm = %rec.name, %ip, "address taken meanwhile; picking another");
                lost.insert(ip);
                let Some((next, mac)) = address_pick(ctx, &rec.node, &rec.network, &lost, None).await? else { return Err(e.into()) };
                ctx.store.vm_set_address(&rec.id, &next.to_string(), &mac).await?;
                rec.ip = Some(next.to_string());
                rec.mac = mac;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub(super) async fn address_pick(
    ctx: &Context,
    node_name: &str,
    network: &str,
    lost: &std::collections::HashSet<std::net::Ipv4Addr>,
    seen: NetworkSeen,
) -> Result<Option<Address>, Error> {
    let (net_xml, leases) = match seen {
        Some(s) => s,
        None => {
            let node = ctx.node_conn(node_name).await?;
            let net = network.to_owned();
            node.run(move |node| Ok::<_, NodeError>((node.network_xml(&net)?, node.network_leases(&net).unwrap_or_default()))).await?
        }
    };
    let Some(info) = xml::network_dhcp_info(&net_xml) else { return Ok(None) };
    let mut taken: std::collections::HashSet<std::net::Ipv4Addr> = leases.iter().filter_map(|(_, ip)| ip.parse().ok()).collect();
    taken.extend(lost.iter().copied());
    taken.extend(
        ctx.store
            .vm_list(&Scope::all())
            .await?
            .iter()
            .filter(|v| v.network == network && v.node == node_name)
            .filter_map(|v| v.ip.as_deref()?.parse::<std::net::Ipv4Addr>().ok()),
    );
    match xml::dhcp_pick(&info, &taken) {
        Some(ip) => Ok(Some((ip, xml::premade_mac_in(&info, ip).unwrap_or_else(super::create::mac_random)))),
        None => Err(Error::InsufficientCapacity {
            reasons: vec![format!(
                "network {network} has no free address in its DHCP range {}-{}; delete a VM or widen the range (virsh net-edit {network})",
                info.range_start, info.range_end
            )],
        }),
    }
}
