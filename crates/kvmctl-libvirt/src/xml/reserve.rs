//! Addresses reserved ahead (ADR 0015): a DHCP host entry for every address of the upper
//! half of a network's range, each with a MAC made from its address. A VM created on such a
//! network takes an address of that half and its entry's MAC, and no live network update is
//! made: libvirt 9.0 removes and re-adds every firewall rule of a network on each live
//! `ip-dhcp-host` change (about 0.4 s), which was most of what a create spent beyond
//! starting the domain. The lower half stays dynamic, for the network's other DHCP clients
//! (guests made with virt-install, say), and for kvmctl's live reservations once the upper
//! half is taken.

use super::{network_dhcp_info, DhcpHost, XmlError};
use quick_xml::events::{BytesStart, Event};
use std::net::Ipv4Addr;

/// At most this many addresses of a range are reserved ahead (the last ones).
pub const RESERVE_AHEAD_MAX: u32 = 1024;

/// The addresses of a DHCP range `start`-`end` that are reserved ahead: its upper half, at
/// most [`RESERVE_AHEAD_MAX`] of them; empty for a range that ends before it starts.
pub fn reserve_ahead_range(start: Ipv4Addr, end: Ipv4Addr) -> std::ops::RangeInclusive<u32> {
    // (255.255.255.255 is never a host's address; capping it keeps `e + 1` in range.)
    let (s, e) = (u32::from(start), u32::from(end).min(u32::MAX - 1));
    // An empty range when `end` is before `start` (`count` is 0 then).
    let count = if e < s { 0 } else { ((e - s) / 2 + 1).min(RESERVE_AHEAD_MAX) };
    (e + 1 - count)..=e
}

/// The MAC of an address reserved ahead: `52:4b` (locally administered, unicast) and the
/// address's four bytes, so every address of every network has its own.
pub fn premade_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("52:4b:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// Whether a host entry is an address reserved ahead (no name; the MAC made from its
/// address), which belongs to no VM until one is given its address.
pub fn is_premade(h: &DhcpHost) -> bool {
    h.name.is_empty() && h.ip.parse::<Ipv4Addr>().is_ok_and(|ip| premade_mac(ip) == h.mac)
}

/// The MAC reserved ahead for `ip` among a network's DHCP host entries, if it has one.
pub fn premade_mac_in(info: &super::DhcpInfo, ip: Ipv4Addr) -> Option<String> {
    let mac = premade_mac(ip);
    info.hosts.iter().any(|(m, h)| *h == ip && *m == mac).then_some(mac)
}

/// The addresses to reserve ahead that have no host entry; `None` when the network has no
/// IPv4 DHCP range.
fn unreserved(network_xml: &str) -> Option<Vec<Ipv4Addr>> {
    let info = network_dhcp_info(network_xml)?;
    let range = reserve_ahead_range(info.range_start, info.range_end);
    Some(range.map(Ipv4Addr::from).filter(|ip| !info.hosts.iter().any(|(_, h)| h == ip)).collect())
}

/// Whether every address to reserve ahead has a host entry (`None`: the network has no
/// IPv4 DHCP range).
pub fn network_reserved_ahead(network_xml: &str) -> Option<bool> {
    unreserved(network_xml).map(|missing| missing.is_empty())
}

/// The network's XML with an entry reserved ahead for every address to reserve ahead that
/// has none; `None` when there is nothing to add.
pub fn network_reserve_ahead(network_xml: &str) -> Result<Option<String>, XmlError> {
    match unreserved(network_xml) {
        Some(missing) if !missing.is_empty() => rewrite(network_xml, &missing, false).map(Some),
        _ => Ok(None),
    }
}

/// Whether the network's XML holds any entry reserved ahead.
pub fn network_has_premade(network_xml: &str) -> bool {
    super::network_dhcp_hosts(network_xml).iter().any(is_premade)
}

/// The network's XML without the entries reserved ahead; `None` when it has none.
pub fn network_unreserve_ahead(network_xml: &str) -> Result<Option<String>, XmlError> {
    if network_has_premade(network_xml) {
        rewrite(network_xml, &[], true).map(Some)
    } else {
        Ok(None)
    }
}

fn attr(e: &BytesStart, name: &[u8]) -> Option<String> {
    e.attributes().flatten().find(|a| a.key.as_ref() == name).and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// Copies the document event by event, adding entries for `add` at the end of the first
/// IPv4 `<dhcp>` with a range, and leaving out entries reserved ahead when `drop_premade`.
fn rewrite(xml: &str, add: &[Ipv4Addr], drop_premade: bool) -> Result<String, XmlError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut w = quick_xml::Writer::new(Vec::new());
    let (mut in_v4_ip, mut ranged, mut added) = (false, false, false);
    loop {
        let ev = reader.read_event().map_err(|e| XmlError::Parse(e.to_string()))?;
        match &ev {
            Event::Eof => break,
            Event::Start(e) if e.name().as_ref() == b"ip" => in_v4_ip = attr(e, b"family").is_none_or(|f| f == "ipv4"),
            Event::End(e) if e.name().as_ref() == b"ip" => in_v4_ip = false,
            Event::Start(e) | Event::Empty(e) if in_v4_ip && e.name().as_ref() == b"range" => ranged = true,
            Event::Empty(e) if drop_premade && e.name().as_ref() == b"host" => {
                let host = DhcpHost {
                    mac: attr(e, b"mac").unwrap_or_default().to_ascii_lowercase(),
                    name: attr(e, b"name").unwrap_or_default(),
                    ip: attr(e, b"ip").unwrap_or_default(),
                };
                if is_premade(&host) {
                    continue;
                }
            }
            Event::End(e) if e.name().as_ref() == b"dhcp" && in_v4_ip && ranged && !added => {
                for ip in add {
                    let (mac, ip) = (premade_mac(*ip), ip.to_string());
                    w.write_event(Event::Empty(BytesStart::new("host").with_attributes([("mac", mac.as_str()), ("ip", ip.as_str())])))?;
                }
                added = true;
            }
            _ => {}
        }
        w.write_event(ev)?;
    }
    Ok(String::from_utf8(w.into_inner()).expect("the writer only receives what the reader read from a str"))
}
