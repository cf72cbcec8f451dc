//! `kvmctl host doctor`: host checks as data.
//!
//! `doctor` is a pure function of `HostFacts`. Each check has a stable id, a status, the
//! evidence it looked at and found, and the exact fix. A check that fails `blocks` VM
//! creation when kvmctl cannot create a VM until it is fixed; only those make the command
//! exit non-zero. The JSON schema is documented in docs/host.md.

use crate::facts::{HostFacts, StateFact};
use crate::kvm_probe::KvmVerdict;

pub use kvmctl_types::api::{Check, CheckStatus, DoctorReport};

fn check(id: &str, status: CheckStatus, evidence: impl Into<String>, fix: impl Into<String>, blocks: bool) -> Check {
    let fix = if status == CheckStatus::Ok || status == CheckStatus::Skipped { String::new() } else { fix.into() };
    Check { id: id.into(), status, evidence: evidence.into(), fix, blocks }
}

use CheckStatus::{Fail, Ok as Pass, Skipped, Warn};

fn state_words(s: &StateFact) -> String {
    format!("{}, {}", if s.active { "active" } else { "inactive" }, if s.autostart { "autostart" } else { "no autostart" })
}

pub fn doctor(f: &HostFacts) -> DoctorReport {
    let mut c = Vec::new();
    let install = "kvmctl host setup";

    c.push(match &f.cpu_virt_flag {
        Some(flag) => check("cpu.virtualization", Pass, format!("/proc/cpuinfo advertises {flag}"), "", false),
        None => check(
            "cpu.virtualization",
            Warn,
            "/proc/cpuinfo has neither vmx nor svm: no hardware virtualisation, guests run under TCG emulation",
            "enable VT-x/AMD-V in the firmware, or nested virtualisation on the outer hypervisor",
            false,
        ),
    });
    c.push(match &f.kvm_dev {
        None => check("kvm.device", Warn, "/dev/kvm is absent: guests run under TCG emulation", "modprobe kvm_intel (or kvm_amd)", false),
        Some(d) if d.group == "kvm" && d.mode & 0o060 == 0o060 => {
            check("kvm.device", Pass, format!("{} mode {:04o} group {}", d.path, d.mode, d.group), "", false)
        }
        Some(d) => check(
            "kvm.device",
            Warn,
            format!(
                "{} mode {:04o} group {}: the qemu user cannot open it, so libvirt re-probes QEMU on every define (tens of seconds each)",
                d.path, d.mode, d.group
            ),
            format!("chgrp kvm {0} && chmod 0660 {0}   (or: {install})", d.path),
            false,
        ),
    });
    c.push(if f.kvm_modules.is_empty() {
        let evidence = if f.kvm_dev.is_some() {
            "no kvm module in /proc/modules (KVM is built in or provided by the host)"
        } else {
            "no kvm module loaded"
        };
        check("kvm.modules", if f.kvm_dev.is_some() { Pass } else { Warn }, evidence, "modprobe kvm_intel (or kvm_amd)", false)
    } else {
        check("kvm.modules", Pass, format!("loaded: {}", f.kvm_modules.join(", ")), "", false)
    });
    c.push(match f.nested.as_deref() {
        None => check("kvm.nested", Skipped, "no kvm_intel/kvm_amd nested parameter", "", false),
        Some(v @ ("Y" | "1")) => check("kvm.nested", Pass, format!("nested={v}: guests may run their own VMs"), "", false),
        Some(v) => check("kvm.nested", Pass, format!("nested={v}: guests cannot run their own VMs"), "", false),
    });
    let verdict = f.kvm_probe.as_ref().map(|p| p.verdict);
    c.push(match &f.kvm_probe {
        None => check("kvm.functional", Skipped, "the functional KVM probe was not run", "", false),
        Some(p) => match p.verdict {
            KvmVerdict::Functional => check("kvm.functional", Pass, p.summary.clone(), "", false),
            KvmVerdict::Absent => check("kvm.functional", Warn, p.summary.clone(), "guests run under TCG: expect them to be 10-50x slower", false),
            KvmVerdict::NotFunctional => check(
                "kvm.functional",
                Warn,
                p.summary.clone(),
                "nothing to do: kvmctl uses TCG (domain type qemu) here; set domain_type = \"kvm\" in /etc/kvmctl/kvmctl.toml only if you know better",
                false,
            ),
        },
    });
    c.push(match &f.qemu {
        Some((path, v)) => check("qemu.binary", Pass, format!("{path} version {v}"), "", false),
        None => check("qemu.binary", Fail, "qemu-system-x86_64 not found in PATH", install, true),
    });
    c.push(match &f.libvirt {
        Some(l) if l.reachable => {
            check("libvirt.daemon", Pass, format!("{} answers: libvirt {}", l.uri, l.version.as_deref().unwrap_or("?")), "", false)
        }
        Some(l) => check(
            "libvirt.daemon",
            Fail,
            format!("{} does not answer: {}", l.uri, l.error.as_deref().unwrap_or("unknown error")),
            if f.systemd { "systemctl enable --now libvirtd   (or: kvmctl host setup)" } else { "libvirtd -d   (or: kvmctl host setup)" },
            true,
        ),
        None => check("libvirt.daemon", Skipped, "libvirt was not checked", "", false),
    });
    c.push(if f.virtlogd_running {
        check("libvirt.virtlogd", Pass, "virtlogd is running", "", false)
    } else {
        check(
            "libvirt.virtlogd",
            Fail,
            "virtlogd is not running: libvirt cannot start guests with logged serial consoles",
            if f.systemd { "systemctl enable --now virtlogd" } else { "virtlogd -d" },
            true,
        )
    });
    let reachable = f.libvirt.as_ref().map(|l| l.reachable).unwrap_or(false);
    c.push(match f.libvirt.as_ref().and_then(|l| l.default_network) {
        _ if !reachable => check("libvirt.default_network", Skipped, "libvirt unreachable", "", false),
        Some(s) if s.active && s.autostart => match f.libvirt.as_ref().and_then(|l| l.default_network_reserved_ahead) {
            Some(false) => check(
                "libvirt.default_network",
                Warn,
                format!(
                    "network default: {}; its addresses are not reserved ahead, so each VM create changes the network live \
                     (libvirt reloads its firewall rules, about 0.4 s)",
                    state_words(&s)
                ),
                "kvmctl host setup",
                false,
            ),
            Some(true) => {
                check("libvirt.default_network", Pass, format!("network default: {}, addresses reserved ahead", state_words(&s)), "", false)
            }
            None => check("libvirt.default_network", Pass, format!("network default: {}", state_words(&s)), "", false),
        },
        Some(s) => check(
            "libvirt.default_network",
            Warn,
            format!("network default: {}", state_words(&s)),
            "virsh net-start default && virsh net-autostart default",
            false,
        ),
        None => check("libvirt.default_network", Warn, "no libvirt network named default", install, false),
    });
    c.push(match f.libvirt.as_ref().and_then(|l| l.pool) {
        _ if !reachable => check("libvirt.pool", Skipped, "libvirt unreachable", "", false),
        Some(s) if s.active => check("libvirt.pool", Pass, format!("storage pool over {}: {}", f.pool_path, state_words(&s)), "", false),
        Some(s) => check("libvirt.pool", Fail, format!("storage pool over {}: {}", f.pool_path, state_words(&s)), install, true),
        None => check("libvirt.pool", Fail, format!("kvmctl's storage pool (over {}) does not exist", f.pool_path), install, true),
    });
    c.push(match f.libvirt.as_ref().and_then(|l| l.clean_traffic) {
        _ if !reachable => check("libvirt.nwfilter", Skipped, "libvirt unreachable", "", false),
        Some(true) => check("libvirt.nwfilter", Pass, "network filter clean-traffic is defined (guests cannot spoof neighbours)", "", false),
        _ => check(
            "libvirt.nwfilter",
            Warn,
            "libvirt has no clean-traffic network filter: VMs cannot start while the daemon's nic_filter names it",
            match f.os.family() {
                Some(crate::facts::Family::Dnf) => "dnf install libvirt-daemon-config-nwfilter libvirt-daemon-driver-nwfilter (or nic_filter = \"\" in the daemon's config: no spoofing protection)",
                _ => "apt-get install libvirt-daemon-config-nwfilter (or nic_filter = \"\" in the daemon's config: no spoofing protection)",
            },
            false,
        ),
    });
    c.push(match f.hook {
        _ if f.package_hook => check("libvirt.hook", Pass, format!("{} is the kvmctl package's", crate::PACKAGE_HOOK_PATH), "", false),
        Some(true) => check("libvirt.hook", Pass, format!("{} is kvmctl's", crate::HOOK_PATH), "", false),
        Some(false) => check(
            "libvirt.hook",
            Warn,
            format!("{} exists but is not kvmctl's: port forwards will not follow guests", crate::HOOK_PATH),
            "move the existing hook aside, then kvmctl host setup",
            false,
        ),
        None => {
            check("libvirt.hook", Warn, format!("{} is missing: port forwards will not follow guests", crate::HOOK_PATH), install, false)
        }
    });
    for (tool, why, blocks) in [
        ("dnsmasq", "DHCP and DNS on NAT networks", true),
        ("nft", "port forwards (nftables)", false),
        ("swtpm", "TPM 2.0 for Windows 11 and measured-boot guests", false),
        ("virtiofsd", "shared folders (virtio-fs)", false),
    ] {
        let id = format!("tools.{tool}");
        c.push(match f.tools.get(tool) {
            Some(p) => check(&id, Pass, format!("{p} ({why})"), "", false),
            None => check(&id, if blocks { Fail } else { Warn }, format!("{tool} not found: needed for {why}"), install, blocks),
        });
    }
    // LVM's tools, for LVM storage pools only: optional, and not installed by setup (a host
    // that does not use LVM need not run its services).
    c.push(match f.tools.get("vgcreate") {
        Some(p) => check("tools.lvm", Pass, format!("{p} (LVM storage pools)"), "", false),
        None => check(
            "tools.lvm",
            Skipped,
            "LVM's tools are not installed: only directory storage pools (optional)",
            "apt-get install lvm2 (or dnf install lvm2) for LVM pools",
            false,
        ),
    });
    // The other programs the daemon runs, from the one table (`programs`), each with the
    // package that brings it on this host's family.
    for prog in crate::programs::PROGRAMS
        .iter()
        .filter(|p| p.role == crate::programs::Role::Daemon && !matches!(p.name, "dnsmasq" | "nft" | "qemu-system-x86_64"))
    {
        let id = format!("tools.{}", prog.name);
        let fix = match f.os.family() {
            Some(fam @ crate::facts::Family::Apt) => format!("{install} (or: apt-get install {})", crate::programs::package_of(prog, fam)),
            Some(fam @ crate::facts::Family::Dnf) => format!("{install} (or: dnf install {})", crate::programs::package_of(prog, fam)),
            None => install.to_owned(),
        };
        c.push(match f.tools.get(prog.name) {
            Some(p) => check(&id, Pass, format!("{p} ({})", prog.why), "", false),
            None => check(&id, Warn, format!("{} not found: needed for {}", prog.name, prog.why), &fix, false),
        });
    }
    c.push(if f.ovmf.is_empty() {
        check("firmware.ovmf", Warn, "no OVMF firmware: UEFI and Secure Boot guests cannot start", install, false)
    } else {
        check("firmware.ovmf", Pass, f.ovmf.join(", "), "", false)
    });
    const GIB: u64 = 1 << 30;
    c.push(match f.disk_free_bytes {
        None => check("storage.free_space", Skipped, format!("cannot stat {}", f.pool_path), "", false),
        Some(b) if b < 2 * GIB => check(
            "storage.free_space",
            Fail,
            format!("{} GiB free under {}", b / GIB, f.pool_path),
            "free disk space or move the pool",
            true,
        ),
        Some(b) if b < 20 * GIB => check(
            "storage.free_space",
            Warn,
            format!("{} GiB free under {}", b / GIB, f.pool_path),
            "free disk space: images and disks need room",
            false,
        ),
        Some(b) => check("storage.free_space", Pass, format!("{} GiB free under {}", b / GIB, f.pool_path), "", false),
    });
    c.push(check(
        "memory.hugepages",
        Pass,
        if f.hugepages_total == 0 {
            "no huge pages reserved (optional)".to_owned()
        } else {
            format!("{} huge pages reserved", f.hugepages_total)
        },
        "",
        false,
    ));
    c.push(if f.iommu_groups > 0 {
        check("iommu.groups", Pass, format!("{} IOMMU groups: PCI passthrough possible", f.iommu_groups), "", false)
    } else {
        check(
            "iommu.groups",
            Warn,
            "no IOMMU groups: PCI passthrough unavailable (optional)",
            "boot with intel_iommu=on (or amd_iommu=on) if you need passthrough",
            false,
        )
    });
    c.push(check(
        "security.lsm",
        Pass,
        match (&f.apparmor, &f.selinux) {
            (None, None) => "no AppArmor or SELinux".to_owned(),
            (a, s) => [a.as_ref().map(|a| format!("AppArmor {a}")), s.as_ref().map(|s| format!("SELinux {s}"))]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", "),
        },
        "",
        false,
    ));
    c.push(if f.is_root && f.user == "root" {
        check("user.groups", Skipped, "running as root", "", false)
    } else {
        let missing: Vec<&str> = ["libvirt", "kvm"].into_iter().filter(|g| !f.user_groups.iter().any(|u| u == g)).collect();
        if missing.is_empty() {
            check("user.groups", Pass, format!("{} is in libvirt and kvm", f.user), "", false)
        } else {
            check(
                "user.groups",
                Warn,
                format!("{} is not in: {}", f.user, missing.join(", ")),
                format!("kvmctl host setup --user {}   (then log in again)", f.user),
                false,
            )
        }
    });

    let blocking_failures = c.iter().filter(|x| x.status == Fail && x.blocks).map(|x| x.id.clone()).collect();
    let domain_type = if verdict == Some(KvmVerdict::Functional) { "kvm" } else { "qemu" }.to_owned();
    DoctorReport { domain_type, kvm_verdict: verdict, checks: c, blocking_failures, checked_at: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::*;
    use crate::kvm_probe::{judge, ProbeRun};

    pub(crate) fn healthy() -> HostFacts {
        let mut tools = std::collections::BTreeMap::new();
        for t in ["dnsmasq", "nft", "swtpm", "virtiofsd", "qemu-img", "prlimit"] {
            tools.insert(t.to_owned(), format!("/usr/bin/{t}"));
        }
        HostFacts {
            os: parse_os_release("ID=debian\nVERSION_ID=12\n"),
            systemd: true,
            is_root: true,
            user: "root".into(),
            cpu_virt_flag: Some("vmx".into()),
            kvm_dev: Some(DeviceInfo { path: "/dev/kvm".into(), mode: 0o660, group: "kvm".into() }),
            kvm_modules: vec!["kvm".into(), "kvm_intel".into()],
            kvm_probe: Some(judge(
                true,
                Some(ProbeRun { accel: "tcg".into(), reached_marker: true, seconds: 0.3, error: None }),
                Some(ProbeRun { accel: "kvm".into(), reached_marker: true, seconds: 0.05, error: None }),
            )),
            qemu: Some(("/usr/bin/qemu-system-x86_64".into(), "7.2.22".into())),
            libvirtd_running: true,
            virtlogd_running: true,
            libvirt: Some(LibvirtFacts {
                uri: "qemu:///system".into(),
                reachable: true,
                version: Some("9.0.0".into()),
                error: None,
                default_network: Some(StateFact { active: true, autostart: true }),
                default_network_reserved_ahead: Some(true),
                pool: Some(StateFact { active: true, autostart: true }),
                clean_traffic: Some(true),
            }),
            tools,
            ovmf: vec!["/usr/share/OVMF/OVMF_CODE_4M.fd".into()],
            pool_path: "/var/lib/kvmctl/images".into(),
            disk_free_bytes: Some(100 << 30),
            iommu_groups: 12,
            hook: Some(true),
            ..HostFacts::default()
        }
    }

    fn status(r: &DoctorReport, id: &str) -> CheckStatus {
        r.checks.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no check {id}")).status
    }

    #[test]
    fn a_healthy_host_is_all_ok_and_uses_kvm() {
        let r = doctor(&healthy());
        let bad: Vec<_> = r.checks.iter().filter(|c| matches!(c.status, Warn | Fail)).collect();
        assert!(bad.is_empty(), "{bad:#?}");
        assert_eq!(r.domain_type, "kvm");
        assert!(r.blocking_failures.is_empty());
    }

    #[test]
    fn broken_kvm_means_tcg_with_an_explanation() {
        let mut f = healthy();
        f.kvm_probe = Some(judge(
            true,
            Some(ProbeRun { accel: "tcg".into(), reached_marker: true, seconds: 0.3, error: None }),
            Some(ProbeRun { accel: "kvm".into(), reached_marker: true, seconds: 8.2, error: None }),
        ));
        let r = doctor(&f);
        assert_eq!(r.domain_type, "qemu");
        let k = r.checks.iter().find(|c| c.id == "kvm.functional").unwrap();
        assert_eq!(k.status, Warn);
        assert!(k.evidence.contains("KVM present but not functional"));
        assert!(r.blocking_failures.is_empty(), "TCG still creates VMs");
    }

    #[test]
    fn blocking_failures_name_the_fix() {
        let mut f = healthy();
        f.systemd = false;
        f.libvirt = Some(LibvirtFacts {
            uri: "qemu:///system".into(),
            reachable: false,
            version: None,
            error: Some("no socket".into()),
            default_network: None,
            default_network_reserved_ahead: None,
            pool: None,
            clean_traffic: None,
        });
        f.virtlogd_running = false;
        f.qemu = None;
        f.disk_free_bytes = Some(1 << 30);
        let r = doctor(&f);
        assert_eq!(r.blocking_failures, ["qemu.binary", "libvirt.daemon", "libvirt.virtlogd", "storage.free_space"]);
        let d = r.checks.iter().find(|c| c.id == "libvirt.daemon").unwrap();
        assert!(d.fix.starts_with("libvirtd -d"), "no systemd: start it directly: {}", d.fix);
        assert_eq!(status(&r, "libvirt.pool"), Skipped);
    }

    #[test]
    fn kvm_device_permissions_and_groups() {
        let mut f = healthy();
        f.kvm_dev = Some(DeviceInfo { path: "/dev/kvm".into(), mode: 0o600, group: "root".into() });
        f.is_root = false;
        f.user = "alice".into();
        f.user_groups = vec!["alice".into(), "kvm".into()];
        let r = doctor(&f);
        let k = r.checks.iter().find(|c| c.id == "kvm.device").unwrap();
        assert_eq!(k.status, Warn);
        assert!(k.fix.contains("chmod 0660 /dev/kvm"));
        let u = r.checks.iter().find(|c| c.id == "user.groups").unwrap();
        assert!(u.evidence.ends_with("not in: libvirt") && u.fix.contains("--user alice"), "{u:?}");
    }

    /// Recorded hosts replay to the same report (golden). UPDATE_GOLDEN=1 rewrites.
    #[test]
    fn recorded_hosts() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/facts");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") || path.to_string_lossy().ends_with(".doctor.json") {
                continue;
            }
            let facts: HostFacts = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let report = serde_json::to_string_pretty(&doctor(&facts)).unwrap() + "\n";
            let golden = path.with_extension("doctor.json");
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                std::fs::write(&golden, &report).unwrap();
            }
            assert_eq!(report, std::fs::read_to_string(&golden).unwrap_or_default(), "{} differs", golden.display());
        }
    }
}
