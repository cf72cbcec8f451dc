//! Domains: the definition kvmctl writes (what it reads back is `domain_read`).

use super::metadata::{metadata, Metadata};
use super::{checked, path_str, Doc, XmlError};
use kvmctl_types::Name;
use std::path::PathBuf;

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

/// Spare PCIe root ports in every definition: hot-plugged devices need an empty one each
/// (8 data disks and the SCSI controller).
pub const HOTPLUG_PORTS: usize = 9;

/// The bus a disk sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    /// virtio-blk (`vdX`), one PCI device per disk.
    Virtio,
    /// virtio-scsi (`sdX`), behind one controller; what guests without virtio-blk drivers
    /// (and `discard` on some) prefer.
    Scsi,
    /// SATA (`sdX`): installer and driver CD-ROMs, which firmware boots from.
    Sata,
}

impl DiskBus {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskBus::Virtio => "virtio",
            DiskBus::Scsi => "scsi",
            DiskBus::Sata => "sata",
        }
    }

    pub fn parse(s: &str) -> Option<DiskBus> {
        [DiskBus::Virtio, DiskBus::Scsi, DiskBus::Sata].into_iter().find(|b| b.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub source: PathBuf,
    pub format: DiskFormat,
    /// Guest device name, `vda`, `vdb`, `sda`...
    pub target: String,
    pub readonly: bool,
    pub bus: DiskBus,
    /// A CD-ROM (always read-only) rather than a disk.
    pub cdrom: bool,
    /// The serial the guest sees (`/dev/disk/by-id/virtio-SERIAL`).
    pub serial: Option<String>,
    /// Its place in the boot order (1 first). When any disk has one, the firmware tries only
    /// the devices that do, in that order (libvirt refuses `<boot dev>` beside them).
    pub boot_order: Option<u8>,
}

impl Disk {
    /// A virtio disk, as the root disk and the seed are.
    pub fn virtio(source: PathBuf, format: DiskFormat, target: &str, readonly: bool) -> Disk {
        Disk { source, format, target: target.into(), readonly, bus: DiskBus::Virtio, cdrom: false, serial: None, boot_order: None }
    }
}

/// One `<disk>` element, as in the domain definition (to attach or detach it).
pub fn disk_xml(disk: &Disk) -> Result<String, XmlError> {
    let mut d = Doc::new();
    disk_write(&mut d, disk)?;
    Ok(d.finish())
}

/// The virtio-scsi controller SCSI disks sit behind (one per domain).
pub fn scsi_controller_xml() -> String {
    "<controller type='scsi' index='0' model='virtio-scsi'/>".to_owned()
}

fn disk_write(d: &mut Doc, disk: &Disk) -> Result<(), XmlError> {
    d.open("disk", &[("type", "file"), ("device", if disk.cdrom { "cdrom" } else { "disk" })])?;
    if disk.cdrom {
        d.empty("driver", &[("name", "qemu"), ("type", disk.format.as_str())])?;
    } else {
        d.empty("driver", &[("name", "qemu"), ("type", disk.format.as_str()), ("discard", "unmap")])?;
    }
    d.empty("source", &[("file", &path_str("disk source", &disk.source)?)])?;
    d.empty("target", &[("dev", &checked("disk target", &disk.target)?), ("bus", disk.bus.as_str())])?;
    if disk.readonly || disk.cdrom {
        d.empty("readonly", &[])?;
    }
    if let Some(serial) = &disk.serial {
        d.text("serial", &[], &checked("disk serial", serial)?)?;
    }
    if let Some(order) = disk.boot_order {
        d.empty("boot", &[("order", &order.to_string())])?;
    }
    d.close("disk")?;
    Ok(())
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
    /// Start with the link down (`<link state='down'/>`): the guest can neither send nor
    /// receive until an update brings it up. A warm clone wakes so, without its filter, and
    /// gets both in one update while it takes its identity (libvirt builds the filter before
    /// it raises the link).
    pub link_down: bool,
}

/// An nwfilter by name, such as `clean-traffic` (no MAC, IP or ARP spoofing), with the one
/// IPv4 address the guest may use; without one, libvirt learns it from the guest's DHCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicFilter {
    pub name: String,
    pub ip: Option<std::net::Ipv4Addr>,
    /// A second MAC and address the guest may use besides its own: a warm clone's source's,
    /// which the woken guest still has until it takes its own (then the filter is narrowed).
    pub also: Option<(String, std::net::Ipv4Addr)>,
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
    /// An emulated TPM 2.0 (swtpm, `tpm-crb` on q35). libvirt keeps its state per domain
    /// (`/var/lib/libvirt/swtpm/UUID`) and removes it when the domain is undefined.
    pub tpm: bool,
    /// Host directories over virtio-fs; with any, the guest's memory is shared memory (memfd),
    /// which virtiofsd needs.
    pub shares: Vec<Share>,
    /// The Windows guest setup (profile `windows-11`): Hyper-V enlightenments (with KVM; QEMU
    /// emulates none of them under TCG), a clock suited to Windows (local time, RTC catching
    /// up, no HPET, the Hyper-V clock), VMware's I/O port off, and a USB tablet so the VNC
    /// pointer is where the viewer's is.
    pub windows: bool,
    pub metadata: Metadata,
}

/// A host directory shared over virtio-fs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub source: PathBuf,
    pub tag: String,
    /// The virtiofsd libvirt runs for it; `None` for the one libvirt finds itself. A
    /// read-only share names kvmctl's wrapper, which runs virtiofsd in a mount namespace of
    /// its own where the directory is mounted read-only (libvirt 9.0 has no read-only virtiofs).
    pub binary: Option<PathBuf>,
}

/// One `<interface>` element, as in the domain definition (for a live device update).
pub fn interface_xml(nic: &Nic) -> Result<String, XmlError> {
    let mut d = Doc::new();
    nic_write(&mut d, nic)?;
    Ok(d.finish())
}

fn nic_write(d: &mut Doc, nic: &Nic) -> Result<(), XmlError> {
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
    if nic.link_down {
        d.empty("link", &[("state", "down")])?;
    }
    if let Some(f) = nic.filter.as_ref().filter(|_| kind != "direct") {
        d.open("filterref", &[("filter", &checked("network filter", &f.name)?)])?;
        match f.ip {
            Some(ip) => d.empty("parameter", &[("name", "IP"), ("value", &ip.to_string())])?,
            None => d.empty("parameter", &[("name", "CTRL_IP_LEARNING"), ("value", "dhcp")])?,
        }
        // nwfilter variables take lists: the rules allow each value.
        if let (Some((mac, ip)), Some(own)) = (&f.also, &nic.mac) {
            d.empty("parameter", &[("name", "IP"), ("value", &ip.to_string())])?;
            d.empty("parameter", &[("name", "MAC"), ("value", &checked("mac", own)?)])?;
            d.empty("parameter", &[("name", "MAC"), ("value", &checked("mac", mac)?)])?;
        }
        d.close("filterref")?;
    }
    d.close("interface")?;
    Ok(())
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
    if !spec.shares.is_empty() {
        d.open("memoryBacking", &[])?;
        d.empty("source", &[("type", "memfd")])?;
        d.empty("access", &[("mode", "shared")])?;
        d.close("memoryBacking")?;
    }

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
        Boot::Disk if spec.disks.iter().any(|disk| disk.boot_order.is_some()) => {}
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
    let hyperv = spec.windows && spec.domain_type == DomainType::Kvm;
    if hyperv {
        // The set libvirt 9.0 accepts and Windows 10/11 use.
        d.open("hyperv", &[("mode", "custom")])?;
        for f in ["relaxed", "vapic"] {
            d.empty(f, &[("state", "on")])?;
        }
        d.empty("spinlocks", &[("state", "on"), ("retries", "8191")])?;
        for f in ["vpindex", "runtime", "synic", "stimer", "reset", "frequencies", "tlbflush", "ipi"] {
            d.empty(f, &[("state", "on")])?;
        }
        d.close("hyperv")?;
    }
    if spec.windows {
        d.empty("vmport", &[("state", "off")])?;
    }
    if spec.firmware == Firmware::UefiSecure {
        d.empty("smm", &[("state", "on")])?;
    }
    d.close("features")?;
    // KVM: the host CPU as it is. TCG: QEMU's `max` model, the fastest to emulate here.
    match spec.domain_type {
        DomainType::Kvm => d.empty("cpu", &[("mode", "host-passthrough"), ("check", "none")])?,
        DomainType::Qemu => d.empty("cpu", &[("mode", "maximum"), ("check", "none")])?,
    }
    if spec.windows {
        // Windows keeps the RTC in local time; ticks missed while the host was busy are
        // caught up rather than lost.
        d.open("clock", &[("offset", "localtime")])?;
        d.empty("timer", &[("name", "rtc"), ("tickpolicy", "catchup")])?;
        d.empty("timer", &[("name", "pit"), ("tickpolicy", "delay")])?;
        d.empty("timer", &[("name", "hpet"), ("present", "no")])?;
        if hyperv {
            d.empty("timer", &[("name", "hypervclock"), ("present", "yes")])?;
        }
        d.close("clock")?;
    } else {
        d.empty("clock", &[("offset", "utc")])?;
    }
    d.text("on_poweroff", &[], "destroy")?;
    d.text("on_reboot", &[], "restart")?;
    d.text("on_crash", &[], "destroy")?;

    d.open("devices", &[])?;
    for disk in &spec.disks {
        disk_write(&mut d, disk)?;
    }
    let scsi = spec.disks.iter().any(|disk| disk.bus == DiskBus::Scsi);
    if scsi {
        d.empty("controller", &[("type", "scsi"), ("index", "0"), ("model", "virtio-scsi")])?;
    }
    // On q35 each PCIe device sits behind a root port, and only an empty port takes a
    // hot-plugged device: libvirt makes one port per device it places (and one spare), so the
    // definition asks for as many more as a VM may hot-plug.
    let placed = spec.disks.iter().filter(|disk| disk.bus == DiskBus::Virtio).count()
        + usize::from(scsi)
        + spec.nics.len()
        + spec.shares.len()
        + usize::from(spec.guest_agent)
        + 3; // rng, memballoon, USB
    d.empty("controller", &[("type", "pci"), ("index", "0"), ("model", "pcie-root")])?;
    for i in 1..=placed + HOTPLUG_PORTS {
        d.empty("controller", &[("type", "pci"), ("index", &i.to_string()), ("model", "pcie-root-port")])?;
    }
    for share in &spec.shares {
        d.open("filesystem", &[("type", "mount"), ("accessmode", "passthrough")])?;
        d.empty("driver", &[("type", "virtiofs")])?;
        if let Some(binary) = &share.binary {
            d.empty("binary", &[("path", &path_str("virtiofsd", binary)?)])?;
        }
        d.empty("source", &[("dir", &path_str("share source", &share.source)?)])?;
        d.empty("target", &[("dir", &checked("share tag", &share.tag)?)])?;
        d.close("filesystem")?;
    }
    for nic in &spec.nics {
        nic_write(&mut d, nic)?;
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
    if spec.windows {
        d.empty("input", &[("type", "tablet"), ("bus", "usb")])?;
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
    if spec.tpm {
        d.open("tpm", &[("model", "tpm-crb")])?;
        d.empty("backend", &[("type", "emulator"), ("version", "2.0")])?;
        d.close("tpm")?;
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
