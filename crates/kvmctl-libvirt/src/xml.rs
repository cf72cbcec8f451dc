//! Pure builders for the libvirt XML documents kvmctl writes: domains, storage volumes and
//! storage pools.
//!
//! Every element and attribute goes through quick-xml's writer, which escapes text and
//! attribute values; no user string is ever pasted into XML. Output is deterministic (same
//! spec, same bytes) so that golden files can pin it.

use kvmctl_types::{Name, VmId};
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;
use std::path::PathBuf;

/// XML namespace of kvmctl's `<metadata>` element in a domain.
pub const METADATA_NS: &str = "https://kvmctl.dev/xmlns/domain/1";

#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("{field} is not valid UTF-8 or contains a NUL byte: {value:?}")]
    BadText { field: &'static str, value: String },
    #[error("writing XML")]
    Io(#[from] std::io::Error),
}

/// libvirt domain type: hardware acceleration, or TCG emulation where KVM does not work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainType {
    Kvm,
    Qemu,
}

impl DomainType {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainType::Kvm => "kvm",
            DomainType::Qemu => "qemu",
        }
    }
}

/// The guest's firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS.
    Bios,
    /// OVMF without Secure Boot (libvirt picks the firmware file and makes the NVRAM).
    Uefi,
    /// OVMF with Secure Boot enforced and Microsoft's keys enrolled (as on physical PCs and
    /// what Windows 11 requires); SMM on, as Secure Boot firmware needs.
    UefiSecure,
}

impl Firmware {
    /// The API's name: `bios`, `uefi`, `uefi-secure`.
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
            Firmware::UefiSecure => "uefi-secure",
        }
    }

    pub fn parse(s: &str) -> Option<Firmware> {
        [Firmware::Bios, Firmware::Uefi, Firmware::UefiSecure].into_iter().find(|f| f.as_str() == s)
    }
}

/// How the guest boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// From the first disk, through the firmware.
    Disk,
    /// Direct kernel boot (the tiny test guest; fast image tests).
    Kernel { kernel: PathBuf, initrd: Option<PathBuf>, cmdline: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub source: PathBuf,
    pub format: DiskFormat,
    /// Guest device name, `vda`, `vdb`, ...
    pub target: String,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicSource {
    /// A libvirt network by name.
    Network(String),
    /// An existing host bridge.
    Bridge(String),
    /// macvtap on a host NIC (bridge mode): the guest sits on the NIC's LAN, but cannot
    /// reach the host itself through it.
    Direct(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub source: NicSource,
    /// `52:54:00:..`-style MAC; libvirt picks one when absent.
    pub mac: Option<String>,
    /// A libvirt network filter (nwfilter) on the NIC. Not on `Direct` NICs (libvirt cannot
    /// filter macvtap), where it is left out.
    pub filter: Option<NicFilter>,
}

/// An nwfilter by name, such as `clean-traffic` (no MAC, IP or ARP spoofing), with the one
/// IPv4 address the guest may use; without one, libvirt learns it from the guest's DHCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicFilter {
    pub name: String,
    pub ip: Option<std::net::Ipv4Addr>,
}

/// kvmctl's own record inside the domain, so a node alone tells which VM a domain is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub vm_id: VmId,
    pub owner: String,
    pub plan: Option<String>,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    pub name: Name,
    pub domain_type: DomainType,
    pub firmware: Firmware,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub boot: Boot,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    /// File the serial console is logged to (by virtlogd), on the node.
    pub serial_log: Option<PathBuf>,
    /// VNC with this password, when set: on 127.0.0.1 at a port libvirt picks, or, with
    /// `vnc_port`, on every address at that port (a VNC forward).
    pub vnc_password: Option<String>,
    pub vnc_port: Option<u16>,
    pub guest_agent: bool,
    pub metadata: Metadata,
}

/// A small wrapper that keeps element nesting readable and every string escaped.
struct Doc {
    w: Writer<Vec<u8>>,
}

impl Doc {
    fn new() -> Self {
        Doc { w: Writer::new_with_indent(Vec::new(), b' ', 2) }
    }

    fn open(&mut self, tag: &str, attrs: &[(&str, &str)]) -> Result<(), XmlError> {
        let start = BytesStart::new(tag).with_attributes(attrs.iter().copied());
        self.w.write_event(Event::Start(start))?;
        Ok(())
    }

    fn close(&mut self, tag: &str) -> Result<(), XmlError> {
        self.w.write_event(Event::End(BytesEnd::new(tag)))?;
        Ok(())
    }

    fn empty(&mut self, tag: &str, attrs: &[(&str, &str)]) -> Result<(), XmlError> {
        let start = BytesStart::new(tag).with_attributes(attrs.iter().copied());
        self.w.write_event(Event::Empty(start))?;
        Ok(())
    }

    fn text(&mut self, tag: &str, attrs: &[(&str, &str)], text: &str) -> Result<(), XmlError> {
        self.open(tag, attrs)?;
        self.w.write_event(Event::Text(BytesText::new(text)))?;
        self.close(tag)
    }

    fn finish(self) -> String {
        let mut s = String::from_utf8(self.w.into_inner()).expect("writer only receives &str");
        s.push('\n');
        s
    }
}

fn path_str(field: &'static str, p: &std::path::Path) -> Result<String, XmlError> {
    let s = p.to_str().ok_or_else(|| XmlError::BadText { field, value: p.to_string_lossy().into_owned() })?;
    checked(field, s)
}

/// XML 1.0 cannot carry NUL or most control characters, escaped or not.
fn checked(field: &'static str, s: &str) -> Result<String, XmlError> {
    if s.chars().any(|c| (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r')) {
        return Err(XmlError::BadText { field, value: s.to_owned() });
    }
    Ok(s.to_owned())
}

/// Renders a domain definition for `virDomainDefineXML`.
pub fn domain_xml(spec: &DomainSpec) -> Result<String, XmlError> {
    let mut d = Doc::new();
    let memory = spec.memory_mib.to_string();
    let vcpus = spec.vcpus.to_string();
    let uuid = spec.metadata.vm_id.to_string();
    d.open("domain", &[("type", spec.domain_type.as_str())])?;
    d.text("name", &[], spec.name.as_str())?;
    d.text("uuid", &[], &uuid)?;
    metadata(&mut d, &spec.metadata)?;
    d.text("memory", &[("unit", "MiB")], &memory)?;
    d.text("currentMemory", &[("unit", "MiB")], &memory)?;
    d.text("vcpu", &[("placement", "static")], &vcpus)?;

    match spec.firmware {
        Firmware::Bios => d.open("os", &[])?,
        Firmware::Uefi | Firmware::UefiSecure => d.open("os", &[("firmware", "efi")])?,
    }
    d.text("type", &[("arch", "x86_64"), ("machine", "q35")], "hvm")?;
    // Firmware autoselection by feature: for plain UEFI both off, since libvirt may otherwise
    // pick Secure Boot firmware with Microsoft's keys enrolled, which refuses an unsigned
    // loader; for Secure Boot both on.
    let secure = match spec.firmware {
        Firmware::Bios => None,
        Firmware::Uefi => Some("no"),
        Firmware::UefiSecure => Some("yes"),
    };
    if let Some(on) = secure {
        d.open("firmware", &[])?;
        d.empty("feature", &[("enabled", on), ("name", "secure-boot")])?;
        d.empty("feature", &[("enabled", on), ("name", "enrolled-keys")])?;
        d.close("firmware")?;
    }
    if spec.firmware == Firmware::UefiSecure {
        d.empty("loader", &[("secure", "yes")])?;
    }
    match &spec.boot {
        Boot::Disk => d.empty("boot", &[("dev", "hd")])?,
        Boot::Kernel { kernel, initrd, cmdline } => {
            d.text("kernel", &[], &path_str("kernel", kernel)?)?;
            if let Some(initrd) = initrd {
                d.text("initrd", &[], &path_str("initrd", initrd)?)?;
            }
            d.text("cmdline", &[], &checked("cmdline", cmdline)?)?;
        }
    }
    d.close("os")?;

    d.open("features", &[])?;
    d.empty("acpi", &[])?;
    d.empty("apic", &[])?;
    if spec.firmware == Firmware::UefiSecure {
        d.empty("smm", &[("state", "on")])?;
    }
    d.close("features")?;
    // KVM: the host CPU as it is. TCG: QEMU's `max` model, the fastest to emulate here.
    match spec.domain_type {
        DomainType::Kvm => d.empty("cpu", &[("mode", "host-passthrough"), ("check", "none")])?,
        DomainType::Qemu => d.empty("cpu", &[("mode", "maximum"), ("check", "none")])?,
    }
    d.empty("clock", &[("offset", "utc")])?;
    d.text("on_poweroff", &[], "destroy")?;
    d.text("on_reboot", &[], "restart")?;
    d.text("on_crash", &[], "destroy")?;

    d.open("devices", &[])?;
    for disk in &spec.disks {
        d.open("disk", &[("type", "file"), ("device", "disk")])?;
        d.empty("driver", &[("name", "qemu"), ("type", disk.format.as_str()), ("discard", "unmap")])?;
        d.empty("source", &[("file", &path_str("disk source", &disk.source)?)])?;
        d.empty("target", &[("dev", &checked("disk target", &disk.target)?), ("bus", "virtio")])?;
        if disk.readonly {
            d.empty("readonly", &[])?;
        }
        d.close("disk")?;
    }
    for nic in &spec.nics {
        let (kind, source) = match &nic.source {
            NicSource::Network(n) => ("network", ("network", n.as_str())),
            NicSource::Bridge(b) => ("bridge", ("bridge", b.as_str())),
            NicSource::Direct(dev) => ("direct", ("dev", dev.as_str())),
        };
        d.open("interface", &[("type", kind)])?;
        if let Some(mac) = &nic.mac {
            d.empty("mac", &[("address", &checked("mac", mac)?)])?;
        }
        if kind == "direct" {
            d.empty("source", &[(source.0, &checked("network", source.1)?), ("mode", "bridge")])?;
        } else {
            d.empty("source", &[(source.0, &checked("network", source.1)?)])?;
        }
        d.empty("model", &[("type", "virtio")])?;
        if let Some(f) = nic.filter.as_ref().filter(|_| kind != "direct") {
            d.open("filterref", &[("filter", &checked("network filter", &f.name)?)])?;
            match f.ip {
                Some(ip) => d.empty("parameter", &[("name", "IP"), ("value", &ip.to_string())])?,
                None => d.empty("parameter", &[("name", "CTRL_IP_LEARNING"), ("value", "dhcp")])?,
            }
            d.close("filterref")?;
        }
        d.close("interface")?;
    }
    d.open("serial", &[("type", "pty")])?;
    if let Some(log) = &spec.serial_log {
        d.empty("log", &[("file", &path_str("serial log", log)?), ("append", "off")])?;
    }
    d.empty("target", &[("port", "0")])?;
    d.close("serial")?;
    d.open("console", &[("type", "pty")])?;
    d.empty("target", &[("type", "serial"), ("port", "0")])?;
    d.close("console")?;
    if spec.guest_agent {
        d.open("channel", &[("type", "unix")])?;
        d.empty("target", &[("type", "virtio"), ("name", "org.qemu.guest_agent.0")])?;
        d.close("channel")?;
    }
    if let Some(pw) = &spec.vnc_password {
        let pw = checked("vnc password", pw)?;
        match spec.vnc_port {
            Some(port) => {
                let port = port.to_string();
                d.open("graphics", &[("type", "vnc"), ("port", &port), ("autoport", "no"), ("passwd", &pw)])?;
                d.empty("listen", &[("type", "address"), ("address", "0.0.0.0")])?;
            }
            None => {
                d.open("graphics", &[("type", "vnc"), ("autoport", "yes"), ("passwd", &pw)])?;
                d.empty("listen", &[("type", "address"), ("address", "127.0.0.1")])?;
            }
        }
        d.close("graphics")?;
        d.open("video", &[])?;
        d.empty("model", &[("type", "vga")])?;
        d.close("video")?;
    }
    // Entropy for the guest: key generation at first boot otherwise stalls under emulation.
    d.open("rng", &[("model", "virtio")])?;
    d.text("backend", &[("model", "random")], "/dev/urandom")?;
    d.close("rng")?;
    d.empty("memballoon", &[("model", "virtio")])?;
    d.close("devices")?;
    d.close("domain")?;
    Ok(d.finish())
}

fn metadata(d: &mut Doc, m: &Metadata) -> Result<(), XmlError> {
    d.open("metadata", &[])?;
    metadata_element(d, m, true)?;
    d.close("metadata")
}

fn metadata_element(d: &mut Doc, m: &Metadata, prefixed: bool) -> Result<(), XmlError> {
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
    let (mut id, mut owner, mut plan, mut net) = (None, String::new(), None, None::<NetMetadata>);
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
    Some(Metadata { vm_id: VmId(id?), owner, plan, net })
}

/// A storage volume to create in a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// File name inside the pool.
    pub name: String,
    pub capacity_bytes: u64,
    pub format: DiskFormat,
    /// Copy-on-write backing file (absolute path on the node) and its format.
    pub backing: Option<(PathBuf, DiskFormat)>,
    /// Readable by root only (mode 0600; libvirt hands it to QEMU's user while the VM runs):
    /// a VM's own disk and seed, which holds its private host key. Otherwise 0644: images,
    /// which every VM's QEMU reads as a backing file.
    pub private: bool,
}

pub fn volume_xml(v: &VolumeSpec) -> Result<String, XmlError> {
    let mut d = Doc::new();
    d.open("volume", &[])?;
    d.text("name", &[], &checked("volume name", &v.name)?)?;
    d.text("capacity", &[("unit", "bytes")], &v.capacity_bytes.to_string())?;
    d.open("target", &[])?;
    d.empty("format", &[("type", v.format.as_str())])?;
    d.open("permissions", &[])?;
    d.text("mode", &[], if v.private { "0600" } else { "0644" })?;
    d.close("permissions")?;
    d.close("target")?;
    if let Some((path, format)) = &v.backing {
        d.open("backingStore", &[])?;
        d.text("path", &[], &path_str("backing path", path)?)?;
        d.empty("format", &[("type", format.as_str())])?;
        d.close("backingStore")?;
    }
    d.close("volume")?;
    Ok(d.finish())
}

/// A directory storage pool.
pub fn dir_pool_xml(name: &str, path: &std::path::Path) -> Result<String, XmlError> {
    let mut d = Doc::new();
    d.open("pool", &[("type", "dir")])?;
    d.text("name", &[], &checked("pool name", name)?)?;
    d.open("target", &[])?;
    d.text("path", &[], &path_str("pool path", path)?)?;
    d.close("target")?;
    d.close("pool")?;
    Ok(d.finish())
}

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
    d.open("ip", &[("address", &n.address.to_string()), ("prefix", &n.prefix.to_string())])?;
    d.open("dhcp", &[])?;
    d.empty("range", &[("start", &n.dhcp_start.to_string()), ("end", &n.dhcp_end.to_string())])?;
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
    d.open("ip", &[("address", &n.address.to_string()), ("prefix", &n.prefix.to_string())])?;
    d.open("dhcp", &[])?;
    d.empty("range", &[("start", &n.dhcp_start.to_string()), ("end", &n.dhcp_end.to_string())])?;
    d.close("dhcp")?;
    d.close("ip")?;
    d.close("network")?;
    Ok(d.finish())
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

/// The first address of the DHCP range that no host entry holds and `taken` does not list.
pub fn dhcp_pick(info: &DhcpInfo, taken: &std::collections::HashSet<std::net::Ipv4Addr>) -> Option<std::net::Ipv4Addr> {
    let (start, end) = (u32::from(info.range_start), u32::from(info.range_end));
    (start..=end).map(std::net::Ipv4Addr::from).find(|ip| !taken.contains(ip) && !info.hosts.iter().any(|(_, h)| h == ip))
}

/// A DHCP host entry (`<host mac ip name/>`) for `virNetworkUpdate`.
pub fn dhcp_host_xml(mac: &str, ip: std::net::Ipv4Addr, name: &str) -> Result<String, XmlError> {
    let mut d = Doc::new();
    d.empty("host", &[("mac", &checked("mac", mac)?), ("name", &checked("host name", name)?), ("ip", &ip.to_string())])?;
    Ok(d.finish())
}

#[cfg(test)]
mod dhcp_tests {
    use super::*;
    use kvmctl_types::VmId;
    use std::collections::HashSet;

    const NET: &str = "<network><name>n</name><forward mode='nat'/><ip address='192.168.122.1' netmask='255.255.255.0'>\
        <dhcp><range start='192.168.122.2' end='192.168.122.5'/><host mac='52:54:00:AA:00:01' name='a' ip='192.168.122.2'/></dhcp></ip>\
        <ip family='ipv6' address='fd00::1' prefix='64'><dhcp><range start='fd00::10' end='fd00::20'/></dhcp></ip></network>";

    #[test]
    fn reads_range_and_hosts_and_picks_a_free_address() {
        let info = network_dhcp_info(NET).unwrap();
        assert_eq!((info.range_start.to_string(), info.range_end.to_string()), ("192.168.122.2".into(), "192.168.122.5".into()));
        assert_eq!(info.hosts, vec![("52:54:00:aa:00:01".to_string(), "192.168.122.2".parse().unwrap())]);
        let taken: HashSet<_> = ["192.168.122.3".parse().unwrap()].into();
        assert_eq!(dhcp_pick(&info, &taken), Some("192.168.122.4".parse().unwrap()));
        let full: HashSet<_> = ["192.168.122.3", "192.168.122.4", "192.168.122.5"].iter().map(|i| i.parse().unwrap()).collect();
        assert_eq!(dhcp_pick(&info, &full), None);
    }

    #[test]
    fn network_shape_is_read() {
        let i = network_info(NET);
        assert_eq!(i.forward_mode.as_deref(), Some("nat"));
        assert_eq!(i.ipv4, Some(("192.168.122.1".parse().unwrap(), 24)));
        let i = network_info("<network><name>t</name><bridge name='kvt0' stp='off'/><ip address='10.77.0.1' prefix='16'/></network>");
        assert_eq!((i.bridge.as_deref(), i.forward_mode, i.ipv4), (Some("kvt0"), None, Some(("10.77.0.1".parse().unwrap(), 16))));
    }

    #[test]
    fn managed_networks_route_or_isolate() {
        let mut spec = ManagedNetworkSpec {
            name: "lab".into(),
            nat: true,
            address: "192.168.100.1".parse().unwrap(),
            prefix: 24,
            dhcp_start: "192.168.100.2".parse().unwrap(),
            dhcp_end: "192.168.100.254".parse().unwrap(),
        };
        let x = managed_network_xml(&spec).unwrap();
        assert!(x.contains(r#"<forward mode="route"/>"#) && x.contains(r#"prefix="24""#), "{x}");
        assert_eq!(network_info(&x).forward_mode.as_deref(), Some("route"));
        spec.nat = false;
        assert!(!managed_network_xml(&spec).unwrap().contains("<forward"));
    }

    #[test]
    fn metadata_round_trips_through_the_domain_xml() {
        let m = Metadata {
            vm_id: VmId::new(),
            owner: "alice".into(),
            plan: Some("small".into()),
            net: Some(NetMetadata {
                ip: "192.168.100.7".parse().unwrap(),
                bridge: "virbr3".into(),
                nat_subnet: Some(("192.168.100.0".parse().unwrap(), 24)),
                forwards: vec![
                    ForwardMetadata { protocol: "tcp".into(), host_port: 2201, guest_port: 22 },
                    ForwardMetadata { protocol: "udp".into(), host_port: 8053, guest_port: 53 },
                ],
            }),
        };
        // As written at define: inside <metadata>, with its own prefix declaration.
        let mut d = Doc::new();
        metadata_element(&mut d, &m, true).unwrap();
        let domain = format!("<domain type='qemu'><name>x</name><metadata>{}</metadata><devices/></domain>", d.finish());
        assert_eq!(metadata_parse(&domain), Some(m.clone()));
        // As libvirt prints it after virDomainSetMetadata: the root bound, children bare.
        let bare = metadata_xml(&m).unwrap();
        assert!(!bare.contains("kvmctl:") && !bare.contains("xmlns"), "{bare}");
        let set = format!(
            "<domain><metadata>{}</metadata></domain>",
            bare.replacen("<vm>", &format!("<kvmctl:vm xmlns:kvmctl=\"{METADATA_NS}\">"), 1).replace("</vm>", "</kvmctl:vm>")
        );
        assert_eq!(metadata_parse(&set), Some(m.clone()));
        // Bare elements outside our namespace are not ours.
        assert_eq!(metadata_parse(&format!("<domain><metadata>{bare}</metadata></domain>")), None);
        // Another prefix for the same namespace is the same metadata.
        let other = domain.replace("kvmctl:", "k:").replace("xmlns:kvmctl", "xmlns:k");
        assert_eq!(metadata_parse(&other), Some(m));
        assert_eq!(metadata_parse("<domain><name>not-ours</name></domain>"), None);
    }

    #[test]
    fn no_dhcp_no_info() {
        assert_eq!(network_dhcp_info("<network><name>br</name><forward mode='bridge'/><bridge name='br0'/></network>"), None);
    }

    #[test]
    fn host_entries_come_from_the_xml_writer() {
        assert_eq!(
            dhcp_host_xml("52:54:00:01:02:03", "10.0.0.9".parse().unwrap(), "web-1").unwrap(),
            "<host mac=\"52:54:00:01:02:03\" name=\"web-1\" ip=\"10.0.0.9\"/>\n"
        );
        assert!(dhcp_host_xml("52:54:00:01:02:03", "10.0.0.9".parse().unwrap(), "a\u{1}b").is_err(), "control characters are refused");
    }
}
