//! What a host is, as data. `gather` reads the running host; tests build `HostFacts` by hand
//! or load recorded ones (`tests/facts/*.json`), so every check and plan is tested without
//! touching a machine.

use crate::kvm_probe::ProbeResult;
use kvmctl_libvirt::{LibvirtNode, Node, ObjectState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// First line after the shebang of kvmctl's libvirt hook; how setup recognises its own hook
/// (and the facts tell whether it is installed).
pub const HOOK_MARKER: &str = "# kvmctl libvirt hook";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OsInfo {
    pub id: String,
    #[serde(default)]
    pub id_like: String,
    #[serde(default)]
    pub version_id: String,
    #[serde(default)]
    pub pretty_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub path: String,
    /// Permission bits, e.g. 0o660.
    pub mode: u32,
    pub group: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LibvirtFacts {
    pub uri: String,
    pub reachable: bool,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// `default` network: absent (None) or its state.
    #[serde(default)]
    pub default_network: Option<StateFact>,
    /// Whether the upper half of the `default` network's DHCP range is reserved ahead, as
    /// the network runs (ADR 0015); `None`: no such network, or one without a DHCP range.
    #[serde(default)]
    pub default_network_reserved_ahead: Option<bool>,
    /// kvmctl's storage pool.
    #[serde(default)]
    pub pool: Option<StateFact>,
    /// Whether libvirt defines the `clean-traffic` network filter the daemon puts on every
    /// VM's NIC (`None`: not known).
    #[serde(default)]
    pub clean_traffic: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFact {
    pub active: bool,
    pub autostart: bool,
}

impl From<ObjectState> for StateFact {
    fn from(s: ObjectState) -> Self {
        StateFact { active: s.active, autostart: s.autostart }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    pub os: OsInfo,
    /// PID 1 is systemd.
    pub systemd: bool,
    pub is_root: bool,
    /// The invoking user (SUDO_USER when run through sudo) and the groups it belongs to.
    pub user: String,
    #[serde(default)]
    pub user_groups: Vec<String>,
    /// `vmx` (Intel) or `svm` (AMD) when the CPU advertises one.
    #[serde(default)]
    pub cpu_virt_flag: Option<String>,
    #[serde(default)]
    pub kvm_dev: Option<DeviceInfo>,
    /// Loaded modules among kvm, kvm_intel, kvm_amd.
    #[serde(default)]
    pub kvm_modules: Vec<String>,
    /// The nested parameter of kvm_intel/kvm_amd (`Y`, `1`, `N`, `0`).
    #[serde(default)]
    pub nested: Option<String>,
    #[serde(default)]
    pub kvm_probe: Option<ProbeResult>,
    /// Path and version of qemu-system-x86_64.
    #[serde(default)]
    pub qemu: Option<(String, String)>,
    pub libvirtd_running: bool,
    pub virtlogd_running: bool,
    #[serde(default)]
    pub libvirt: Option<LibvirtFacts>,
    /// Tool name -> path where found (dnsmasq, nft, swtpm, virtiofsd, ...).
    #[serde(default)]
    pub tools: BTreeMap<String, String>,
    /// OVMF firmware files found.
    #[serde(default)]
    pub ovmf: Vec<String>,
    /// Free bytes on the filesystem holding the storage pool path.
    #[serde(default)]
    pub pool_path: String,
    #[serde(default)]
    pub disk_free_bytes: Option<u64>,
    #[serde(default)]
    pub hugepages_total: u64,
    #[serde(default)]
    pub iommu_groups: usize,
    /// `enabled`/`disabled` for AppArmor, `enforcing`/`permissive` for SELinux, when present.
    #[serde(default)]
    pub apparmor: Option<String>,
    #[serde(default)]
    pub selinux: Option<String>,
    /// Installed version of each package the setup plan cares about (None: not installed).
    #[serde(default)]
    pub packages: BTreeMap<String, Option<String>>,
    /// Whether the libvirt hook file exists, and whether it is kvmctl's.
    #[serde(default)]
    pub hook: Option<bool>,
    /// The hook file's contents, when it is kvmctl's (setup rewrites it when it differs,
    /// e.g. when it runs a kvmctl binary that has moved).
    #[serde(default)]
    pub hook_script: Option<String>,
    /// The kvmctl package's hook (`/etc/libvirt/hooks/qemu.d/kvmctl`) is installed: it does
    /// what the hook file would, so setup leaves `/etc/libvirt/hooks/qemu` alone.
    #[serde(default)]
    pub package_hook: bool,
}

/// Package manager family of a distribution, from os-release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Apt,
    Dnf,
}

impl OsInfo {
    pub fn family(&self) -> Option<Family> {
        let words: Vec<&str> = std::iter::once(self.id.as_str()).chain(self.id_like.split_whitespace()).collect();
        if words.iter().any(|w| matches!(*w, "debian" | "ubuntu")) {
            Some(Family::Apt)
        } else if words.iter().any(|w| matches!(*w, "fedora" | "rhel" | "centos" | "rocky" | "almalinux")) {
            Some(Family::Dnf)
        } else {
            None
        }
    }
}

pub const SUPPORTED: &str = "Debian 12+, Ubuntu 22.04+ (apt); Fedora, RHEL, Rocky, AlmaLinux 9+ (dnf)";

/// The packages setup installs, per family.
pub fn packages_for(family: Family) -> &'static [&'static str] {
    match family {
        Family::Apt => &[
            "qemu-system-x86",
            "qemu-utils",
            "libvirt-daemon-system",
            "libvirt-daemon-config-nwfilter",
            "libvirt-clients",
            "dnsmasq-base",
            "nftables",
            "ovmf",
            "swtpm",
            "swtpm-tools",
        ],
        Family::Dnf => &[
            "qemu-kvm",
            "qemu-img",
            "libvirt-daemon-kvm",
            "libvirt-daemon-config-nwfilter",
            "libvirt-client",
            "dnsmasq",
            "nftables",
            "edk2-ovmf",
            "swtpm",
            "swtpm-tools",
        ],
    }
}

pub fn parse_os_release(text: &str) -> OsInfo {
    let mut os = OsInfo::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim() {
            "ID" => os.id = v,
            "ID_LIKE" => os.id_like = v,
            "VERSION_ID" => os.version_id = v,
            "PRETTY_NAME" => os.pretty_name = v,
            _ => {}
        }
    }
    os
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

pub fn which(name: &str, extra: &[&str]) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    path.split(':').map(|d| format!("{d}/{name}")).chain(extra.iter().map(|s| s.to_string())).find(|p| Path::new(p).is_file())
}

/// Pid of a running process whose command name is `name`.
/// The daemon's pid: the one its default pid file (`/run/NAME.pid`) names when that one is
/// alive (other instances, such as a test node's libvirtd, use their own pid files), else
/// the first process of that name.
pub fn pid_of(name: &str) -> Option<u32> {
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim() == name).unwrap_or(false);
    if let Some(pid) = std::fs::read_to_string(format!("/run/{name}.pid")).ok().and_then(|p| p.trim().parse::<u32>().ok()) {
        if comm(pid) {
            return Some(pid);
        }
    }
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        (std::fs::read_to_string(e.path().join("comm")).ok()?.trim() == name).then_some(pid)
    })
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn group_name(gid: u32) -> String {
    // SAFETY: getgrgid returns static storage or null; read gr_name immediately.
    unsafe {
        let g = libc::getgrgid(gid);
        if g.is_null() {
            return gid.to_string();
        }
        std::ffi::CStr::from_ptr((*g).gr_name).to_string_lossy().into_owned()
    }
}

fn user_groups(user: &str) -> Vec<String> {
    Command::new("id")
        .args(["-nG", user])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn package_versions(family: Option<Family>) -> BTreeMap<String, Option<String>> {
    let Some(family) = family else { return BTreeMap::new() };
    packages_for(family).iter().map(|p| (p.to_string(), installed_version(family, p))).collect()
}

/// Installed version of a package, or None.
pub fn installed_version(family: Family, pkg: &str) -> Option<String> {
    let out = match family {
        Family::Apt => Command::new("dpkg-query").args(["-W", "-f=${Status}\t${Version}", pkg]).output(),
        Family::Dnf => Command::new("rpm").args(["-q", "--qf", "install ok installed\t%{VERSION}-%{RELEASE}", pkg]).output(),
    }
    .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (status, version) = text.split_once('\t')?;
    (out.status.success() && status == "install ok installed").then(|| version.trim().to_owned())
}

/// What `gather` needs to know from the caller.
pub struct GatherOptions<'a> {
    pub libvirt_uri: &'a str,
    pub pool: &'a str,
    pub pool_path: &'a Path,
    /// Run the functional KVM probe (seconds of work); otherwise keep `previous_probe`.
    pub run_probe: bool,
    pub previous_probe: Option<ProbeResult>,
    pub workdir: &'a Path,
}

/// Reads the running host.
pub fn gather(opts: &GatherOptions<'_>) -> HostFacts {
    let os = read("/etc/os-release").map(|t| parse_os_release(&t)).unwrap_or_default();
    let family = os.family();
    let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = cpuinfo.lines().find(|l| l.starts_with("flags")).map(|l| l.split_whitespace().collect()).unwrap_or_default();
    let cpu_virt_flag = ["vmx", "svm"].iter().find(|f| flags.contains(f)).map(|f| f.to_string());
    let kvm_dev = std::fs::metadata("/dev/kvm").ok().map(|m| {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        DeviceInfo { path: "/dev/kvm".into(), mode: m.permissions().mode() & 0o777, group: group_name(m.gid()) }
    });
    let modules = read("/proc/modules").unwrap_or_default();
    let kvm_modules: Vec<String> = modules
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|m| matches!(*m, "kvm" | "kvm_intel" | "kvm_amd"))
        .map(str::to_owned)
        .collect();
    let nested = read("/sys/module/kvm_intel/parameters/nested")
        .or_else(|| read("/sys/module/kvm_amd/parameters/nested"))
        .map(|s| s.trim().to_owned());
    let qemu_path = which("qemu-system-x86_64", &["/usr/libexec/qemu-kvm"]);
    let qemu = qemu_path.as_ref().map(|p| {
        let v = Command::new(p)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_owned())
            .unwrap_or_default();
        let v = v.split_whitespace().skip_while(|w| *w != "version").nth(1).unwrap_or("?").to_owned();
        (p.clone(), v)
    });
    let kvm_probe = if opts.run_probe {
        Some(crate::kvm_probe::probe(qemu_path.as_deref().map(Path::new), kvm_dev.is_some(), opts.workdir))
    } else {
        opts.previous_probe.clone()
    };
    let libvirt = Some(libvirt_facts(opts.libvirt_uri, opts.pool));
    let mut tools = BTreeMap::new();
    for (name, extra) in [
        ("dnsmasq", &[][..]),
        ("nft", &[][..]),
        ("swtpm", &[][..]),
        ("virtiofsd", &["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"][..]),
        ("qemu-img", &[][..]),
        ("prlimit", &[][..]),
        ("vgcreate", &["/usr/sbin/vgcreate", "/sbin/vgcreate"][..]),
        ("systemctl", &[][..]),
    ] {
        if let Some(p) = which(name, extra) {
            tools.insert(name.to_owned(), p);
        }
    }
    let ovmf = [
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd",
    ]
    .iter()
    .filter(|p| Path::new(p).exists())
    .map(|p| p.to_string())
    .collect();
    let meminfo = read("/proc/meminfo").unwrap_or_default();
    let hugepages_total = meminfo.lines().find_map(|l| l.strip_prefix("HugePages_Total:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let iommu_groups = std::fs::read_dir("/sys/kernel/iommu_groups").map(|d| d.count()).unwrap_or(0);
    let apparmor =
        read("/sys/module/apparmor/parameters/enabled").map(|v| if v.trim() == "Y" { "enabled".into() } else { "disabled".into() });
    let selinux = read("/sys/fs/selinux/enforce").map(|v| if v.trim() == "1" { "enforcing".into() } else { "permissive".into() });
    let user =
        std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty()).or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "root".into());
    let user_groups = user_groups(&user);
    let is_root = is_root();
    let hook_text = std::fs::read_to_string(crate::HOOK_PATH).ok();
    let hook = hook_text.as_ref().map(|t| t.contains(HOOK_MARKER));
    let hook_script = hook_text.filter(|t| t.contains(HOOK_MARKER));
    HostFacts {
        systemd: Path::new("/run/systemd/system").is_dir(),
        is_root,
        user,
        user_groups,
        cpu_virt_flag,
        kvm_dev,
        kvm_modules,
        nested,
        kvm_probe,
        qemu,
        libvirtd_running: pid_of("libvirtd").is_some(),
        virtlogd_running: pid_of("virtlogd").is_some(),
        libvirt,
        tools,
        ovmf,
        pool_path: opts.pool_path.display().to_string(),
        disk_free_bytes: free_bytes(opts.pool_path),
        hugepages_total,
        iommu_groups,
        apparmor,
        selinux,
        packages: package_versions(family),
        hook,
        hook_script,
        package_hook: Path::new(crate::PACKAGE_HOOK_PATH).is_file(),
        os,
    }
}

fn libvirt_facts(uri: &str, pool: &str) -> LibvirtFacts {
    let node = LibvirtNode::new(uri);
    match node.versions() {
        Ok(v) => LibvirtFacts {
            uri: uri.into(),
            reachable: true,
            version: Some(v.libvirt),
            error: None,
            default_network: node.network_state("default").ok().flatten().map(Into::into),
            default_network_reserved_ahead: node.network_xml("default").ok().and_then(|x| kvmctl_libvirt::xml::network_reserved_ahead(&x)),
            pool: node.pool_state(pool).ok().flatten().map(Into::into),
            clean_traffic: node.nwfilter_exists("clean-traffic").ok(),
        },
        Err(e) => LibvirtFacts {
            uri: uri.into(),
            reachable: false,
            version: None,
            error: Some(e.to_string()),
            default_network: None,
            default_network_reserved_ahead: None,
            pool: None,
            clean_traffic: None,
        },
    }
}

/// Free space of the filesystem holding `path` (or its nearest existing ancestor).
fn free_bytes(path: &Path) -> Option<u64> {
    let mut p: PathBuf = path.to_owned();
    while !p.exists() {
        p = p.parent()?.to_owned();
    }
    let c = std::ffi::CString::new(p.to_str()?).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a valid out-pointer.
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        let deb = parse_os_release("ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n");
        assert_eq!(deb.family(), Some(Family::Apt));
        assert_eq!(deb.version_id, "12");
        assert_eq!(parse_os_release("ID=rocky\nID_LIKE=\"rhel centos fedora\"\n").family(), Some(Family::Dnf));
        assert_eq!(parse_os_release("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n").family(), Some(Family::Apt));
        assert_eq!(parse_os_release("ID=arch\n").family(), None);
    }
}
