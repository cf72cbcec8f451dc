//! Setup and uninstall plans as data: pure functions of the host's facts (setup) or of the
//! state record (uninstall). `exec` carries them out.
//!
//! Setup steps, in order: packages, /dev/kvm permissions, virtlogd, the libvirt hook,
//! libvirtd, the default network, kvmctl's storage pool, group membership. Each step knows
//! from the facts whether it is already done, which is what makes a second run a no-op.
//! Uninstall reverses exactly what the record says setup did, in reverse order.

use crate::facts::{packages_for, Family, HostFacts, SUPPORTED};
use crate::state::StateRecord;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use crate::facts::HOOK_MARKER;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetupOptions {
    pub pool: String,
    pub pool_path: PathBuf,
    /// Add this user to the libvirt and kvm groups.
    pub user: Option<String>,
    /// On hosts without systemd, start the daemons inside this network namespace.
    pub netns: Option<String>,
    /// The kvmctl binary the hook runs.
    pub kvmctl_path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepAction {
    InstallPackages {
        family: Family,
        packages: Vec<String>,
    },
    KvmDevicePermissions {
        path: String,
        mode_before: u32,
        group_before: String,
    },
    StartService {
        name: String,
        systemd: bool,
        netns: Option<String>,
    },
    InstallHook {
        path: String,
        content: String,
        restart_libvirtd: bool,
        systemd: bool,
        netns: Option<String>,
    },
    EnsureDefaultNetwork {
        defined: bool,
        active: bool,
        autostart: bool,
        /// The upper half of its DHCP range is reserved ahead already (ADR 0015).
        #[serde(default)]
        reserved_ahead: bool,
    },
    EnsurePool {
        name: String,
        path: String,
    },
    AddUserToGroups {
        user: String,
        groups: Vec<String>,
    },
    // Reversal actions (uninstall).
    RemoveUserFromGroup {
        user: String,
        group: String,
    },
    /// Removes the hook, or puts back the kvmctl hook that setup replaced.
    RemoveHook {
        path: String,
        previous: Option<String>,
    },
    DeletePool {
        name: String,
        path: String,
        remove_dir: bool,
    },
    RevertNetwork {
        name: String,
        undefine: bool,
        stop: bool,
        unset_autostart: bool,
        /// Take out the addresses setup reserved ahead.
        #[serde(default)]
        unreserve: bool,
    },
    StopService {
        name: String,
        systemd: bool,
    },
    RestoreKvmDevice {
        path: String,
        mode: u32,
        group: String,
    },
    RemovePackages {
        family: Family,
        packages: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Stable id: `packages`, `kvm-device`, `virtlogd`, `hook`, `libvirtd`, `network-default`, `pool`, `groups`.
    pub id: String,
    pub description: String,
    /// Nothing to do: the host already is as this step wants it.
    pub done: bool,
    pub action: StepAction,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("unsupported distribution {0:?}; supported: {SUPPORTED}")]
    UnsupportedDistribution(String),
}

pub fn hook_script(kvmctl: &std::path::Path) -> String {
    format!(
        "#!/bin/sh\n{HOOK_MARKER} (installed by `kvmctl host setup`, removed by `kvmctl host uninstall`).\n# libvirt runs it for every domain event; it applies and removes kvmctl's port forwards.\nexec {} hook qemu \"$@\"\n",
        kvmctl.display()
    )
}

pub fn setup_plan(f: &HostFacts, o: &SetupOptions) -> Result<Vec<Step>, PlanError> {
    let family = f.os.family().ok_or_else(|| {
        PlanError::UnsupportedDistribution(if f.os.pretty_name.is_empty() { f.os.id.clone() } else { f.os.pretty_name.clone() })
    })?;
    let mut steps = Vec::new();

    let missing: Vec<String> =
        packages_for(family).iter().filter(|p| f.packages.get(**p).map(Option::is_none).unwrap_or(true)).map(|p| p.to_string()).collect();
    steps.push(Step {
        id: "packages".into(),
        description: if missing.is_empty() {
            format!("QEMU/libvirt packages ({}) are installed", if family == Family::Apt { "apt" } else { "dnf" })
        } else {
            format!("install {} with {}", missing.join(" "), if family == Family::Apt { "apt-get" } else { "dnf" })
        },
        done: missing.is_empty(),
        action: StepAction::InstallPackages { family, packages: missing },
    });

    if let Some(d) = &f.kvm_dev {
        let ok = d.group == "kvm" && d.mode & 0o060 == 0o060;
        steps.push(Step {
            id: "kvm-device".into(),
            description: if ok {
                format!("{} is usable by the kvm group", d.path)
            } else {
                format!("set {} to mode 0660 group kvm (was {:04o} {})", d.path, d.mode, d.group)
            },
            done: ok,
            action: StepAction::KvmDevicePermissions { path: d.path.clone(), mode_before: d.mode, group_before: d.group.clone() },
        });
    }

    let how = |name: &str| {
        if f.systemd {
            format!("enable and start {name} (systemd)")
        } else {
            match &o.netns {
                Some(ns) => format!("start {name} -d in network namespace {ns} (no systemd)"),
                None => format!("start {name} -d (no systemd)"),
            }
        }
    };
    steps.push(Step {
        id: "virtlogd".into(),
        description: if f.virtlogd_running { "virtlogd is running".into() } else { how("virtlogd") },
        done: f.virtlogd_running,
        action: StepAction::StartService { name: "virtlogd".into(), systemd: f.systemd, netns: o.netns.clone() },
    });
    let script = hook_script(&o.kvmctl_path);
    // A recorded host without the script text (older facts) counts the marker alone.
    let hook_ok = f.package_hook || (f.hook == Some(true) && f.hook_script.as_ref().map(|s| *s == script).unwrap_or(true));
    let hook_stale = f.hook == Some(true) && !hook_ok;
    steps.push(Step {
        id: "hook".into(),
        description: if f.package_hook {
            format!("{} (the kvmctl package's hook) is installed", crate::PACKAGE_HOOK_PATH)
        } else if hook_ok {
            format!("{} is kvmctl's", crate::HOOK_PATH)
        } else if hook_stale {
            format!("update the libvirt hook {} to run {} (then restart libvirtd)", crate::HOOK_PATH, o.kvmctl_path.display())
        } else {
            format!("install the libvirt hook {} (then restart libvirtd so it loads)", crate::HOOK_PATH)
        },
        done: hook_ok,
        action: StepAction::InstallHook {
            path: crate::HOOK_PATH.into(),
            content: script,
            restart_libvirtd: f.libvirtd_running,
            systemd: f.systemd,
            netns: o.netns.clone(),
        },
    });
    steps.push(Step {
        id: "libvirtd".into(),
        description: if f.libvirtd_running { "libvirtd is running".into() } else { how("libvirtd") },
        done: f.libvirtd_running,
        action: StepAction::StartService { name: "libvirtd".into(), systemd: f.systemd, netns: o.netns.clone() },
    });
    let net = f.libvirt.as_ref().and_then(|l| l.default_network);
    let net_ok = net.map(|n| n.active && n.autostart).unwrap_or(false);
    let reserved = f.libvirt.as_ref().and_then(|l| l.default_network_reserved_ahead) != Some(false);
    steps.push(Step {
        id: "network-default".into(),
        description: match (net_ok, reserved) {
            (true, true) => "libvirt network default is active and autostarts".into(),
            (true, false) => "reserve the addresses of network default ahead, so that creating a VM changes nothing live".into(),
            _ => "define, start and autostart the libvirt NAT network default, its addresses reserved ahead".into(),
        },
        done: net_ok && reserved,
        action: StepAction::EnsureDefaultNetwork {
            defined: net.is_some(),
            active: net.map(|n| n.active).unwrap_or(false),
            autostart: net.map(|n| n.autostart).unwrap_or(false),
            reserved_ahead: reserved && net.is_some(),
        },
    });
    let pool_ok = f.libvirt.as_ref().and_then(|l| l.pool).map(|p| p.active && p.autostart).unwrap_or(false);
    steps.push(Step {
        id: "pool".into(),
        description: if pool_ok {
            format!("storage pool {} is active", o.pool)
        } else {
            format!("create the directory storage pool {} over {}", o.pool, o.pool_path.display())
        },
        done: pool_ok,
        action: StepAction::EnsurePool { name: o.pool.clone(), path: o.pool_path.display().to_string() },
    });
    if let Some(user) = o.user.as_ref().filter(|u| u.as_str() != "root") {
        let member = |g: &str| f.user == *user && f.user_groups.iter().any(|x| x == g);
        let groups: Vec<String> = ["libvirt", "kvm"].into_iter().filter(|g| !member(g)).map(str::to_owned).collect();
        steps.push(Step {
            id: "groups".into(),
            description: if groups.is_empty() {
                format!("{user} is in libvirt and kvm")
            } else {
                format!("add {user} to {}", groups.join(", "))
            },
            done: groups.is_empty(),
            action: StepAction::AddUserToGroups { user: user.clone(), groups },
        });
    }
    Ok(steps)
}

/// Everything the record says setup did, undone in reverse order. `only` limits it to one
/// step id (`pool`, `hook`, ...).
pub fn uninstall_plan(s: &StateRecord, only: Option<&str>) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut push = |id: &str, description: String, action: StepAction| {
        if only.map(|o| o == id).unwrap_or(true) {
            steps.push(Step { id: id.into(), description, done: false, action });
        }
    };
    for g in s.groups.iter().rev() {
        push(
            "groups",
            format!("remove {} from group {}", g.user, g.group),
            StepAction::RemoveUserFromGroup { user: g.user.clone(), group: g.group.clone() },
        );
    }
    for p in s.pools.iter().rev() {
        push(
            "pool",
            format!(
                "delete storage pool {}{}",
                p.name,
                if p.dir_created { format!(" and its directory {} (if empty)", p.path) } else { String::new() }
            ),
            StepAction::DeletePool { name: p.name.clone(), path: p.path.clone(), remove_dir: p.dir_created },
        );
    }
    for n in s.networks.iter().rev() {
        let unreserve = n.reserved_ahead && !n.defined;
        let description = if n.defined {
            format!("undefine network {}", n.name)
        } else {
            let what = [n.started.then_some("stop"), n.autostart_set.then_some("unset autostart of")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" and ");
            match (unreserve, what.is_empty()) {
                (true, true) => format!("take the addresses reserved ahead out of network {}", n.name),
                (true, false) => format!("take the addresses reserved ahead out of network {}, then {what} it", n.name),
                (false, _) => format!("{what} network {}", n.name),
            }
        };
        push(
            "network-default",
            description,
            StepAction::RevertNetwork {
                name: n.name.clone(),
                undefine: n.defined,
                stop: n.started || n.defined,
                unset_autostart: n.autostart_set,
                unreserve,
            },
        );
    }
    for sv in s.services.iter().rev().filter(|s| s.name == "libvirtd") {
        push(
            "libvirtd",
            format!("stop {}{}", sv.name, if sv.how == "systemd" { " and disable it" } else { "" }),
            StepAction::StopService { name: sv.name.clone(), systemd: sv.how == "systemd" },
        );
    }
    if let Some(h) = &s.hook {
        let what = if h.previous.is_some() { "restore the previous libvirt hook" } else { "remove the libvirt hook" };
        push(
            "hook",
            format!("{what} {} and kvmctl's firewall table (inet kvmctl)", h.path),
            StepAction::RemoveHook { path: h.path.clone(), previous: h.previous.clone() },
        );
    }
    for sv in s.services.iter().rev().filter(|s| s.name != "libvirtd") {
        push(
            &sv.name.clone(),
            format!("stop {}{}", sv.name, if sv.how == "systemd" { " and disable it" } else { "" }),
            StepAction::StopService { name: sv.name.clone(), systemd: sv.how == "systemd" },
        );
    }
    if let Some(k) = &s.kvm_device {
        push(
            "kvm-device",
            format!("restore {} to mode {:04o} group {}", k.path, k.mode_before, k.group_before),
            StepAction::RestoreKvmDevice { path: k.path.clone(), mode: k.mode_before, group: k.group_before.clone() },
        );
    }
    if !s.packages.is_empty() {
        let family = s.packages[0].family;
        let names: Vec<String> = s.packages.iter().rev().map(|p| p.name.clone()).collect();
        push(
            "packages",
            format!("remove the packages setup installed: {}", names.join(" ")),
            StepAction::RemovePackages { family, packages: names },
        );
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::*;
    use crate::state::*;

    fn facts(name: &str) -> HostFacts {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/facts").join(name);
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    fn opts() -> SetupOptions {
        SetupOptions {
            pool: "kvmctl".into(),
            pool_path: "/var/lib/kvmctl/images".into(),
            user: Some("alice".into()),
            netns: None,
            kvmctl_path: "/usr/local/bin/kvmctl".into(),
        }
    }

    fn todo(steps: &[Step]) -> Vec<&str> {
        steps.iter().filter(|s| !s.done).map(|s| s.id.as_str()).collect()
    }

    #[test]
    fn fresh_debian_without_systemd_needs_everything() {
        let f = facts("debian12-fresh-nosystemd.json");
        let steps = setup_plan(&f, &SetupOptions { netns: Some("kvmctl-test".into()), ..opts() }).unwrap();
        assert_eq!(todo(&steps), ["packages", "kvm-device", "virtlogd", "hook", "libvirtd", "network-default", "pool", "groups"]);
        match &steps[0].action {
            StepAction::InstallPackages { family: Family::Apt, packages } => {
                assert!(packages.contains(&"libvirt-daemon-system".to_owned()))
            }
            other => panic!("{other:?}"),
        }
        match &steps[2].action {
            StepAction::StartService { systemd: false, netns: Some(ns), .. } => assert_eq!(ns, "kvmctl-test"),
            other => panic!("{other:?}"),
        }
        assert!(steps[2].description.contains("network namespace kvmctl-test"));
        match &steps[3].action {
            StepAction::InstallHook { restart_libvirtd: false, content, .. } => {
                assert!(content.contains("/usr/local/bin/kvmctl hook qemu"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fedora_with_systemd_uses_dnf_and_systemctl() {
        let f = facts("fedora40-fresh-systemd.json");
        let steps = setup_plan(&f, &opts()).unwrap();
        match &steps[0].action {
            StepAction::InstallPackages { family: Family::Dnf, packages } => {
                assert!(packages.contains(&"libvirt-daemon-kvm".to_owned()) && packages.contains(&"edk2-ovmf".to_owned()))
            }
            other => panic!("{other:?}"),
        }
        assert!(steps.iter().any(|s| matches!(&s.action, StepAction::StartService { systemd: true, .. })));
        assert!(steps.iter().find(|s| s.id == "libvirtd").unwrap().description.contains("systemd"));
    }

    #[test]
    fn a_prepared_host_has_nothing_to_do() {
        let f = facts("debian12-prepared.json");
        let steps = setup_plan(&f, &SetupOptions { user: None, ..opts() }).unwrap();
        assert!(todo(&steps).is_empty(), "{:?}", todo(&steps));
    }

    #[test]
    fn a_default_network_without_addresses_reserved_ahead_gets_them() {
        let mut f = facts("debian12-prepared.json");
        f.libvirt.as_mut().unwrap().default_network_reserved_ahead = Some(false);
        let steps = setup_plan(&f, &SetupOptions { user: None, ..opts() }).unwrap();
        assert_eq!(todo(&steps), ["network-default"]);
        let step = steps.iter().find(|s| s.id == "network-default").unwrap();
        assert!(step.description.starts_with("reserve the addresses of network default ahead"), "{}", step.description);
        assert_eq!(step.action, StepAction::EnsureDefaultNetwork { defined: true, active: true, autostart: true, reserved_ahead: false });
        let warn = crate::checks::doctor(&f).checks.into_iter().find(|c| c.id == "libvirt.default_network").unwrap();
        assert_eq!((warn.status, warn.fix.as_str()), (crate::checks::CheckStatus::Warn, "kvmctl host setup"));
        assert!(warn.evidence.contains("not reserved ahead"), "{}", warn.evidence);
        // Uninstall takes out what setup added to a network it did not define.
        let s = StateRecord {
            networks: vec![NetworkRecord {
                name: "default".into(),
                defined: false,
                started: false,
                autostart_set: false,
                reserved_ahead: true,
                at: "2026-12-01T00:00:00Z".into(),
            }],
            ..Default::default()
        };
        let plan = uninstall_plan(&s, None);
        assert_eq!(plan[0].description, "take the addresses reserved ahead out of network default");
        assert_eq!(
            plan[0].action,
            StepAction::RevertNetwork { name: "default".into(), undefine: false, stop: false, unset_autostart: false, unreserve: true }
        );
    }

    #[test]
    fn the_packages_hook_stands_for_the_hook_file() {
        let mut f = facts("debian12-prepared.json");
        f.hook = None;
        f.hook_script = None;
        assert_eq!(todo(&setup_plan(&f, &SetupOptions { user: None, ..opts() }).unwrap()), ["hook"]);
        f.package_hook = true;
        let steps = setup_plan(&f, &SetupOptions { user: None, ..opts() }).unwrap();
        assert!(todo(&steps).is_empty(), "the package's hook in qemu.d does the work: no second hook");
        assert!(steps.iter().any(|s| s.id == "hook" && s.description.contains("qemu.d/kvmctl")));
    }

    #[test]
    fn a_hook_that_runs_another_kvmctl_is_updated() {
        let mut f = facts("debian12-prepared.json");
        f.hook_script = Some(hook_script(std::path::Path::new("/old/target/debug/kvmctl")));
        let steps = setup_plan(&f, &SetupOptions { user: None, ..opts() }).unwrap();
        assert_eq!(todo(&steps), ["hook"]);
        let hook = steps.iter().find(|s| s.id == "hook").unwrap();
        assert!(
            hook.description.starts_with("update the libvirt hook") && hook.description.contains("/usr/local/bin/kvmctl"),
            "{}",
            hook.description
        );
        f.hook_script = Some(hook_script(std::path::Path::new("/usr/local/bin/kvmctl")));
        assert!(todo(&setup_plan(&f, &SetupOptions { user: None, ..opts() }).unwrap()).is_empty());
    }

    #[test]
    fn unknown_distribution_lists_the_supported_ones() {
        let mut f = facts("debian12-prepared.json");
        f.os = parse_os_release("ID=arch\nPRETTY_NAME=\"Arch Linux\"\n");
        let e = setup_plan(&f, &opts()).unwrap_err().to_string();
        assert!(e.contains("Arch Linux") && e.contains("Debian") && e.contains("Fedora"), "{e}");
    }

    #[test]
    fn uninstall_reverses_exactly_the_record_in_reverse_order() {
        let at = "2026-11-22T00:00:00Z".to_owned();
        let s = StateRecord {
            version: 1,
            packages: vec![
                PackageRecord { family: Family::Apt, name: "swtpm".into(), version: "1".into(), at: at.clone() },
                PackageRecord { family: Family::Apt, name: "ovmf".into(), version: "2".into(), at: at.clone() },
            ],
            kvm_device: Some(KvmDeviceRecord { path: "/dev/kvm".into(), mode_before: 0o600, group_before: "root".into(), at: at.clone() }),
            services: vec![
                ServiceRecord { name: "virtlogd".into(), how: "direct".into(), netns: None, at: at.clone() },
                ServiceRecord { name: "libvirtd".into(), how: "direct".into(), netns: None, at: at.clone() },
            ],
            networks: vec![NetworkRecord {
                name: "default".into(),
                defined: false,
                started: true,
                autostart_set: true,
                reserved_ahead: false,
                at: at.clone(),
            }],
            pools: vec![PoolRecord { name: "kvmctl".into(), path: "/var/lib/kvmctl/images".into(), dir_created: true, at: at.clone() }],
            hook: Some(HookRecord { path: "/etc/libvirt/hooks/qemu".into(), at: at.clone(), previous: None }),
            groups: vec![GroupRecord { user: "alice".into(), group: "libvirt".into(), at }],
            ..Default::default()
        };
        let ids: Vec<_> = uninstall_plan(&s, None).into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["groups", "pool", "network-default", "libvirtd", "hook", "virtlogd", "kvm-device", "packages"]);
        let plan = uninstall_plan(&s, None);
        assert_eq!(plan[7].action, StepAction::RemovePackages { family: Family::Apt, packages: vec!["ovmf".into(), "swtpm".into()] });
        assert_eq!(
            plan[2].action,
            StepAction::RevertNetwork { name: "default".into(), undefine: false, stop: true, unset_autostart: true, unreserve: false }
        );
        assert_eq!(plan[2].description, "stop and unset autostart of network default");
        let only: Vec<_> = uninstall_plan(&s, Some("pool")).into_iter().map(|s| s.id).collect();
        assert_eq!(only, ["pool"]);
        assert!(uninstall_plan(&StateRecord::default(), None).is_empty(), "nothing recorded, nothing removed");
    }
}
