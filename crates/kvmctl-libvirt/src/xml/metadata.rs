//! kvmctl's `<metadata>` element in a domain: who owns the VM and what its node's hook
//! applies (network, forwards).

use super::{checked, Doc, XmlError};
use kvmctl_types::VmId;
use quick_xml::events::BytesStart;

/// XML namespace of kvmctl's `<metadata>` element in a domain.
pub const METADATA_NS: &str = "https://kvmctl.dev/xmlns/domain/1";

/// kvmctl's own record inside the domain, so a node alone tells which VM a domain is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub vm_id: VmId,
    pub owner: String,
    pub plan: Option<String>,
    /// The kvmctl installation (database) that made the VM: another installation's gc
    /// on the same libvirt leaves it alone. `None` on domains made before it was recorded.
    pub installation: Option<String>,
    /// Where the VM sits on its network and its port forwards: what the node's libvirt
    /// hook needs to apply the VM's firewall rules without the control plane.
    pub net: Option<NetMetadata>,
}

/// The network facts of a VM in its domain metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetMetadata {
    /// The VM's reserved address.
    pub ip: std::net::Ipv4Addr,
    /// The host bridge of its network.
    pub bridge: String,
    /// The subnet kvmctl masquerades for (kvmctl-managed NAT networks only).
    pub nat_subnet: Option<(std::net::Ipv4Addr, u8)>,
    pub forwards: Vec<ForwardMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardMetadata {
    /// `tcp` or `udp`.
    pub protocol: String,
    pub host_port: u16,
    pub guest_port: u16,
}

pub(crate) fn metadata(d: &mut Doc, m: &Metadata) -> Result<(), XmlError> {
    d.open("metadata", &[])?;
    metadata_element(d, m, true)?;
    d.close("metadata")
}

pub(crate) fn metadata_element(d: &mut Doc, m: &Metadata, prefixed: bool) -> Result<(), XmlError> {
    // In a domain's XML the element declares its namespace and its children carry the
    // prefix; for virDomainSetMetadata it is bare, and libvirt binds the root to the key.
    let tag = |t: &str| if prefixed { format!("kvmctl:{t}") } else { t.to_owned() };
    if prefixed {
        d.open(&tag("vm"), &[("xmlns:kvmctl", METADATA_NS)])?;
    } else {
        d.open(&tag("vm"), &[])?;
    }
    d.text(&tag("id"), &[], &m.vm_id.to_string())?;
    d.text(&tag("owner"), &[], &checked("owner", &m.owner)?)?;
    if let Some(plan) = &m.plan {
        d.text(&tag("plan"), &[], &checked("plan", plan)?)?;
    }
    if let Some(inst) = &m.installation {
        d.text(&tag("installation"), &[], &checked("installation", inst)?)?;
    }
    if let Some(n) = &m.net {
        let nat = n.nat_subnet.map(|(a, l)| format!("{a}/{l}"));
        let mut attrs = vec![("ip", n.ip.to_string()), ("bridge", checked("bridge", &n.bridge)?)];
        if let Some(nat) = nat {
            attrs.push(("nat", nat));
        }
        let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        d.empty(&tag("network"), &attrs)?;
        for f in &n.forwards {
            let (h, g) = (f.host_port.to_string(), f.guest_port.to_string());
            d.empty(&tag("forward"), &[("protocol", &checked("protocol", &f.protocol)?), ("host", &h), ("guest", &g)])?;
        }
    }
    d.close(&tag("vm"))
}

/// kvmctl's metadata element alone, for `virDomainSetMetadata` (key `kvmctl`, namespace
/// [`METADATA_NS`]): bare, since libvirt puts the root in the namespace itself.
pub fn metadata_xml(m: &Metadata) -> Result<String, XmlError> {
    let mut d = Doc::new();
    metadata_element(&mut d, m, false)?;
    Ok(d.finish())
}

/// Reads kvmctl's metadata back from a domain's XML (as libvirt prints it, or as the qemu
/// hook receives it); `None` when the domain carries none (it is not kvmctl's).
pub fn metadata_parse(domain_xml: &str) -> Option<Metadata> {
    use quick_xml::events::Event as E;
    use quick_xml::name::ResolveResult;
    let mut r = quick_xml::NsReader::from_str(domain_xml);
    let ours = |res: &ResolveResult| matches!(res, ResolveResult::Bound(ns) if ns.as_ref() == METADATA_NS.as_bytes());
    let attr = |e: &BytesStart, name: &[u8]| {
        e.attributes().flatten().find(|a| a.key.as_ref() == name).and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
    };
    let (mut id, mut owner, mut plan, mut installation, mut net) = (None, String::new(), None, None, None::<NetMetadata>);
    let mut text_of: Option<Vec<u8>> = None;
    // Depth inside kvmctl's root element (in our namespace); its children are ours whether
    // they carry the prefix (as written at define) or not (as set by virDomainSetMetadata).
    let mut inside = 0usize;
    loop {
        match r.read_resolved_event() {
            Ok((res, E::Start(e))) if inside == 0 && ours(&res) && e.local_name().as_ref() == b"vm" => inside = 1,
            Ok((_, E::Start(e))) if inside > 0 => {
                inside += 1;
                text_of = Some(e.local_name().as_ref().to_vec());
            }
            Ok((_, E::Empty(e))) if inside > 0 => match e.local_name().as_ref() {
                b"network" => {
                    let ip = attr(&e, b"ip")?.parse().ok()?;
                    let nat_subnet = match attr(&e, b"nat") {
                        Some(n) => {
                            let (a, l) = n.split_once('/')?;
                            Some((a.parse().ok()?, l.parse().ok()?))
                        }
                        None => None,
                    };
                    net = Some(NetMetadata {
                        ip,
                        bridge: attr(&e, b"bridge")?,
                        nat_subnet,
                        forwards: net.map(|n| n.forwards).unwrap_or_default(),
                    });
                }
                b"forward" => {
                    let f = ForwardMetadata {
                        protocol: attr(&e, b"protocol")?,
                        host_port: attr(&e, b"host")?.parse().ok()?,
                        guest_port: attr(&e, b"guest")?.parse().ok()?,
                    };
                    net.as_mut()?.forwards.push(f);
                }
                _ => {}
            },
            Ok((_, E::Text(t))) => {
                if let Some(tag) = text_of.take() {
                    let v = t.unescape().ok()?.into_owned();
                    match tag.as_slice() {
                        b"id" => id = v.parse::<uuid::Uuid>().ok(),
                        b"owner" => owner = v,
                        b"plan" => plan = Some(v),
                        b"installation" => installation = Some(v),
                        _ => {}
                    }
                }
            }
            Ok((_, E::End(_))) => {
                text_of = None;
                if inside > 0 {
                    inside -= 1;
                    if inside == 0 {
                        break;
                    }
                }
            }
            Ok((_, E::Eof)) | Err(_) => break,
            _ => {}
        }
    }
    Some(Metadata { vm_id: VmId(id?), owner, plan, installation, net })
}
