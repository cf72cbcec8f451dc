//! Networks: the NAT networks kvmctl defines, what their XML says (shape, DHCP), and the
//! DHCP host entries that reserve VMs' addresses.

use super::{checked, Doc, XmlError};

/// A NAT network with DHCP: libvirt's `default` shape (`192.168.122.1/24` on `virbr0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatNetworkSpec {
    pub name: String,
    pub bridge: String,
    /// Gateway address of the host on the network.
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
    pub dhcp_start: std::net::Ipv4Addr,
    pub dhcp_end: std::net::Ipv4Addr,
}

impl NatNetworkSpec {
    /// libvirt's own `default` network (what `default.xml` ships): `192.168.122.1/24` on
    /// `virbr0`, DHCP for `.2`-`.254`.
    pub fn libvirt_default() -> Self {
        NatNetworkSpec {
            name: "default".into(),
            bridge: "virbr0".into(),
            address: [192, 168, 122, 1].into(),
            prefix: 24,
            dhcp_start: [192, 168, 122, 2].into(),
            dhcp_end: [192, 168, 122, 254].into(),
        }
    }
}

pub fn nat_network_xml(n: &NatNetworkSpec) -> Result<String, XmlError> {
    let mut d = Doc::new();
    d.open("network", &[])?;
    d.text("name", &[], &checked("network name", &n.name)?)?;
    d.open("forward", &[("mode", "nat")])?;
    d.open("nat", &[])?;
    d.empty("port", &[("start", "1024"), ("end", "65535")])?;
    d.close("nat")?;
    d.close("forward")?;
    d.empty("bridge", &[("name", &checked("bridge", &n.bridge)?), ("stp", "on"), ("delay", "0")])?;
    ip_dhcp(d, n.address, n.prefix, (n.dhcp_start, n.dhcp_end))
}

/// The network's `<ip>` with its DHCP range, and the end of the document.
fn ip_dhcp(
    mut d: Doc,
    address: std::net::Ipv4Addr,
    prefix: u8,
    (start, end): (std::net::Ipv4Addr, std::net::Ipv4Addr),
) -> Result<String, XmlError> {
    d.open("ip", &[("address", &address.to_string()), ("prefix", &prefix.to_string())])?;
    d.open("dhcp", &[])?;
    d.empty("range", &[("start", &start.to_string()), ("end", &end.to_string())])?;
    // The upper half of the range reserved ahead (ADR 0015).
    for ip in super::reserve_ahead_range(start, end).map(std::net::Ipv4Addr::from) {
        d.empty("host", &[("mac", &super::premade_mac(ip)), ("ip", &ip.to_string())])?;
    }
    d.close("dhcp")?;
    d.close("ip")?;
    d.close("network")?;
    Ok(d.finish())
}

/// A network kvmctl manages (`kvmctl network create`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedNetworkSpec {
    pub name: String,
    /// NAT (libvirt route mode; kvmctl's table masquerades, ADR 0005) or isolated (no
    /// forward at all: guests reach the host and each other only).
    pub nat: bool,
    /// The host's address on the network (the gateway).
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
    pub dhcp_start: std::net::Ipv4Addr,
    pub dhcp_end: std::net::Ipv4Addr,
}

/// The libvirt network of a [`ManagedNetworkSpec`]; libvirt names the bridge (`virbrN`).
pub fn managed_network_xml(n: &ManagedNetworkSpec) -> Result<String, XmlError> {
    let mut d = Doc::new();
    d.open("network", &[])?;
    d.text("name", &[], &checked("network name", &n.name)?)?;
    if n.nat {
        d.empty("forward", &[("mode", "route")])?;
    }
    d.empty("bridge", &[("stp", "on"), ("delay", "0")])?;
    ip_dhcp(d, n.address, n.prefix, (n.dhcp_start, n.dhcp_end))
}

/// What a network's XML says about its shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkInfo {
    pub bridge: Option<String>,
    /// libvirt's forward mode (`nat`, `route`, `open`, `bridge`, ...); `None`: isolated.
    pub forward_mode: Option<String>,
    /// The host's IPv4 address on the network and the prefix length.
    pub ipv4: Option<(std::net::Ipv4Addr, u8)>,
}

/// Reads bridge, forward mode and the first IPv4 address from a network's XML.
pub fn network_info(network_xml: &str) -> NetworkInfo {
    use quick_xml::events::Event as E;
    let mut reader = quick_xml::Reader::from_str(network_xml);
    let mut info = NetworkInfo::default();
    let attr = |e: &quick_xml::events::BytesStart, name: &[u8]| {
        e.attributes().flatten().find(|a| a.key.as_ref() == name).and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
    };
    let mut depth = 0usize;
    loop {
        let ev = reader.read_event();
        let (e, empty) = match &ev {
            Ok(E::Start(e)) => (e.clone(), false),
            Ok(E::Empty(e)) => (e.clone(), true),
            Ok(E::End(_)) => {
                depth = depth.saturating_sub(1);
                continue;
            }
            Ok(E::Eof) | Err(_) => break,
            _ => continue,
        };
        // Only the network's own children (depth 1): a <forward> nested elsewhere is not it.
        if depth == 1 {
            match e.name().as_ref() {
                b"bridge" => info.bridge = attr(&e, b"name"),
                b"forward" => info.forward_mode = Some(attr(&e, b"mode").unwrap_or_else(|| "nat".into())),
                b"ip" if info.ipv4.is_none() && attr(&e, b"family").is_none_or(|f| f == "ipv4") => {
                    if let Some(Ok(addr)) = attr(&e, b"address").map(|a| a.parse::<std::net::Ipv4Addr>()) {
                        let prefix = attr(&e, b"prefix").and_then(|p| p.parse().ok()).or_else(|| {
                            let mask: std::net::Ipv4Addr = attr(&e, b"netmask")?.parse().ok()?;
                            Some(u32::from(mask).count_ones() as u8)
                        });
                        if let Some(p) = prefix {
                            info.ipv4 = Some((addr, p));
                        }
                    }
                }
                _ => {}
            }
        }
        if !empty {
            depth += 1;
        }
    }
    info
}

/// What a network's XML says about its DHCP service (the first IPv4 `<ip>` with `<dhcp>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpInfo {
    pub range_start: std::net::Ipv4Addr,
    pub range_end: std::net::Ipv4Addr,
    /// Static host entries: `(mac, ip)`.
    pub hosts: Vec<(String, std::net::Ipv4Addr)>,
}

/// Reads the DHCP range and host entries from a network's XML; `None` when the network
/// hands out no IPv4 addresses (a bridge, or no `<dhcp>`).
pub fn network_dhcp_info(network_xml: &str) -> Option<DhcpInfo> {
    use quick_xml::events::Event as E;
    let mut reader = quick_xml::Reader::from_str(network_xml);
    let mut in_v4_ip = false;
    let mut info: Option<DhcpInfo> = None;
    let attr = |e: &quick_xml::events::BytesStart, name: &[u8]| {
        e.attributes().flatten().find(|a| a.key.as_ref() == name).and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
    };
    loop {
        match reader.read_event() {
            Ok(E::Start(e)) | Ok(E::Empty(e)) => match e.name().as_ref() {
                b"ip" => in_v4_ip = attr(&e, b"family").is_none_or(|f| f == "ipv4") && info.is_none(),
                b"range" if in_v4_ip => {
                    let (Some(s), Some(t)) = (attr(&e, b"start"), attr(&e, b"end")) else { continue };
                    if let (Ok(s), Ok(t)) = (s.parse(), t.parse()) {
                        info = Some(DhcpInfo { range_start: s, range_end: t, hosts: Vec::new() });
                    }
                }
                b"host" if in_v4_ip => {
                    if let (Some(mac), Some(Ok(ip)), Some(i)) = (attr(&e, b"mac"), attr(&e, b"ip").map(|i| i.parse()), info.as_mut()) {
                        i.hosts.push((mac.to_ascii_lowercase(), ip));
                    }
                }
                _ => {}
            },
            Ok(E::End(e)) if e.name().as_ref() == b"ip" => in_v4_ip = false,
            Ok(E::Eof) | Err(_) => break,
            _ => {}
        }
    }
    info
}

/// An address of the DHCP range that `taken` does not list: the first one reserved ahead
/// (its entry is for whichever VM is given it), else the first one no host entry holds.
pub fn dhcp_pick(info: &DhcpInfo, taken: &std::collections::HashSet<std::net::Ipv4Addr>) -> Option<std::net::Ipv4Addr> {
    let (start, end) = (u32::from(info.range_start), u32::from(info.range_end));
    let premade: std::collections::HashSet<std::net::Ipv4Addr> =
        info.hosts.iter().filter(|(m, h)| *m == super::premade_mac(*h)).map(|(_, h)| *h).collect();
    let held: std::collections::HashSet<std::net::Ipv4Addr> = info.hosts.iter().map(|(_, h)| *h).collect();
    let range = || (start..=end).map(std::net::Ipv4Addr::from).filter(|ip| !taken.contains(ip));
    range().find(|ip| premade.contains(ip)).or_else(|| range().find(|ip| !held.contains(ip)))
}

/// How many guest interfaces are connected to an active network (libvirt's `connections`).
pub fn network_connections(network_xml: &str) -> u32 {
    use quick_xml::events::Event as E;
    let mut reader = quick_xml::Reader::from_str(network_xml);
    loop {
        match reader.read_event() {
            Ok(E::Start(e)) | Ok(E::Empty(e)) if e.name().as_ref() == b"network" => {
                return e
                    .attributes()
                    .flatten()
                    .find(|a| a.key.as_ref() == b"connections")
                    .and_then(|a| a.unescape_value().ok()?.parse().ok())
                    .unwrap_or(0)
            }
            Ok(E::Eof) | Err(_) => return 0,
            _ => {}
        }
    }
}

/// A DHCP host entry (`<host mac ip name/>`) for `virNetworkUpdate`.
pub fn dhcp_host_xml(mac: &str, ip: std::net::Ipv4Addr, name: &str) -> Result<String, XmlError> {
    let mut d = Doc::new();
    d.empty("host", &[("mac", &checked("mac", mac)?), ("name", &checked("host name", name)?), ("ip", &ip.to_string())])?;
    Ok(d.finish())
}

/// A DHCP host entry of a network as libvirt holds it (any address family; fields it lacks
/// are empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    /// Lower case.
    pub mac: String,
    pub name: String,
    pub ip: String,
}

/// Every DHCP host entry of a network (any address family).
pub fn network_dhcp_hosts(network_xml: &str) -> Vec<DhcpHost> {
    use quick_xml::events::Event as E;
    let mut reader = quick_xml::Reader::from_str(network_xml);
    let mut in_dhcp = false;
    let mut hosts = Vec::new();
    loop {
        match reader.read_event() {
            Ok(E::Start(e)) if e.name().as_ref() == b"dhcp" => in_dhcp = true,
            Ok(E::End(e)) if e.name().as_ref() == b"dhcp" => in_dhcp = false,
            Ok(E::Start(e)) | Ok(E::Empty(e)) if in_dhcp && e.name().as_ref() == b"host" => {
                let attr = |name: &[u8]| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == name)
                        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
                        .unwrap_or_default()
                };
                hosts.push(DhcpHost { mac: attr(b"mac").to_ascii_lowercase(), name: attr(b"name"), ip: attr(b"ip") });
            }
            Ok(E::Eof) | Err(_) => break,
            _ => {}
        }
    }
    hosts
}

/// A DHCP host entry as read by `network_dhcp_hosts`, for removing it with `virNetworkUpdate`.
pub fn dhcp_host_entry_xml(h: &DhcpHost) -> Result<String, XmlError> {
    let mut attrs = vec![("mac", checked("mac", &h.mac)?)];
    if !h.name.is_empty() {
        attrs.push(("name", checked("host name", &h.name)?));
    }
    if !h.ip.is_empty() {
        attrs.push(("ip", checked("ip", &h.ip)?));
    }
    let mut d = Doc::new();
    d.empty("host", &attrs.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>())?;
    Ok(d.finish())
}
