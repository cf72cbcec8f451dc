//! Carries out setup and uninstall plans.
//!
//! Every step appends to the human log (`[time] [LEVEL] message`, with each command run and
//! its outcome) and the state record is saved after every step that changed the host. A
//! failure stops the run and says which step failed and why; the log and the record then
//! tell exactly what was done, and a re-run plans from the host as it now is, so it
//! continues where the failed run stopped.

use crate::facts::{installed_version, is_root, pid_of, Family};
use crate::plan::{Step, StepAction, HOOK_MARKER};
use crate::state::*;
use kvmctl_libvirt::{LibvirtNode, Node};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("step {step} failed: {message}. The log ({log}) and the state record ({state}) say what was done; fix the cause and run the command again to continue")]
    Step { step: String, message: String, log: PathBuf, state: PathBuf },
    #[error("cannot write the state record {path}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("these steps need root: {0}. Run as root, or add --sudo")]
    NeedsRoot(String),
}

/// `2026-11-22T06:42:00Z`, from the system clock.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub struct Executor<'a> {
    pub log_path: PathBuf,
    pub state_path: PathBuf,
    pub dry_run: bool,
    pub libvirt_uri: String,
    /// Called with one line per step for the terminal.
    pub progress: &'a mut dyn FnMut(&str),
}

impl Executor<'_> {
    fn log(&self, level: &str, msg: &str) {
        if self.dry_run {
            return;
        }
        if let Some(dir) = self.log_path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path) {
            let _ = writeln!(f, "[{}] [{level}] {msg}", now_rfc3339());
        }
    }

    fn save(&self, state: &StateRecord) -> Result<(), ExecError> {
        if self.dry_run {
            return Ok(());
        }
        state.save(&self.state_path).map_err(|source| ExecError::State { path: self.state_path.clone(), source })
    }

    /// Runs a command, logging it and its outcome; Err carries the tail of its stderr.
    fn cmd(&self, argv: &[&str]) -> Result<String, String> {
        self.log("INFO", &format!("run: {}", argv.join(" ")));
        let out = Command::new(argv[0]).args(&argv[1..]).env("DEBIAN_FRONTEND", "noninteractive").output();
        match out {
            Ok(o) if o.status.success() => {
                self.log("INFO", &format!("ok: {}", argv[0]));
                Ok(String::from_utf8_lossy(&o.stdout).into_owned())
            }
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                let tail: Vec<&str> = err.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
                let msg = format!("`{}` exited with {}: {}", argv.join(" "), o.status, tail.join(" | "));
                self.log("ERROR", &msg);
                Err(msg)
            }
            Err(e) => {
                let msg = format!("cannot run {}: {e}", argv[0]);
                self.log("ERROR", &msg);
                Err(msg)
            }
        }
    }

    pub fn run(&mut self, kind: &str, steps: &[Step], state: &mut StateRecord) -> Result<(), ExecError> {
        let todo: Vec<&Step> = steps.iter().filter(|s| !s.done).collect();
        if !self.dry_run && !todo.is_empty() && !is_root() {
            return Err(ExecError::NeedsRoot(todo.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")));
        }
        self.log("INFO", &format!("host {kind}: {} steps, {} to do", steps.len(), todo.len()));
        state.last_run.clear();
        let total = steps.len();
        for (i, step) in steps.iter().enumerate() {
            let n = i + 1;
            if step.done {
                (self.progress)(&format!("[{n}/{total}] {}: already done ({})", step.id, step.description));
                self.log("INFO", &format!("{}: already done: {}", step.id, step.description));
                state.last_run.push(StepOutcome {
                    id: step.id.clone(),
                    outcome: "already".into(),
                    message: step.description.clone(),
                    at: now_rfc3339(),
                });
                continue;
            }
            if self.dry_run {
                (self.progress)(&format!("[{n}/{total}] {}: would {}", step.id, step.description));
                state.last_run.push(StepOutcome {
                    id: step.id.clone(),
                    outcome: "planned".into(),
                    message: step.description.clone(),
                    at: now_rfc3339(),
                });
                continue;
            }
            (self.progress)(&format!("[{n}/{total}] {}: {} ...", step.id, step.description));
            self.log("INFO", &format!("{}: {}", step.id, step.description));
            match self.apply(&step.action, state) {
                Ok(()) => {
                    self.log("INFO", &format!("{}: done", step.id));
                    state.last_run.push(StepOutcome {
                        id: step.id.clone(),
                        outcome: "done".into(),
                        message: step.description.clone(),
                        at: now_rfc3339(),
                    });
                    self.save(state)?;
                }
                Err(message) => {
                    self.log("ERROR", &format!("{}: failed: {message}", step.id));
                    state.last_run.push(StepOutcome {
                        id: step.id.clone(),
                        outcome: "failed".into(),
                        message: message.clone(),
                        at: now_rfc3339(),
                    });
                    self.save(state)?;
                    return Err(ExecError::Step {
                        step: step.id.clone(),
                        message,
                        log: self.log_path.clone(),
                        state: self.state_path.clone(),
                    });
                }
            }
        }
        self.log("INFO", &format!("host {kind}: finished"));
        self.save(state)
    }

    fn node(&self) -> LibvirtNode {
        LibvirtNode::new(self.libvirt_uri.clone())
    }

    fn wait_for_libvirt(&self) -> Result<(), String> {
        let node = self.node();
        for _ in 0..100 {
            if node.versions().is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("libvirtd did not answer on {} within 10 s; see /var/log/libvirt/", self.libvirt_uri))
    }

    /// Creates the namespace unless a usable one exists. `/run` survives a reboot on some hosts
    /// (these machines among them), leaving `/run/netns/NAME` as a plain file that is no
    /// longer a namespace: such a name is deleted and created afresh.
    fn ensure_netns(&self, ns: &str) -> Result<(), String> {
        if Path::new("/run/netns").join(ns).exists() {
            let usable = Command::new("ip").args(["netns", "exec", ns, "true"]).status().is_ok_and(|s| s.success());
            if usable {
                return Ok(());
            }
            self.log("WARN", &format!("/run/netns/{ns} is not a live namespace (left from before a reboot?); recreating it"));
            self.cmd(&["ip", "netns", "delete", ns])?;
        }
        self.cmd(&["ip", "netns", "add", ns])?;
        self.cmd(&["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]).map(drop)
    }

    fn start_direct(&self, name: &str, netns: Option<&str>) -> Result<(), String> {
        match netns {
            Some(ns) => {
                self.ensure_netns(ns)?;
                self.cmd(&["ip", "netns", "exec", ns, name, "-d"]).map(drop)
            }
            None => self.cmd(&[name, "-d"]).map(drop),
        }
    }

    /// Restarts libvirtd so it loads (or forgets) the hook; running guests are unaffected.
    fn restart_libvirtd(&self, systemd: bool) -> Result<(), String> {
        if systemd {
            self.cmd(&["systemctl", "restart", "libvirtd"])?;
        } else if let Some(pid) = pid_of("libvirtd") {
            let ns = Command::new("ip")
                .args(["netns", "identify", &pid.to_string()])
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
            self.log(
                "INFO",
                &format!(
                    "restarting libvirtd (pid {pid}) in its namespace {}",
                    ns.as_deref().filter(|n| !n.is_empty()).unwrap_or("(host)")
                ),
            );
            stop_pid(pid)?;
            self.start_direct("libvirtd", ns.as_deref().filter(|n| !n.is_empty()))?;
        }
        self.wait_for_libvirt()
    }

    fn apply(&self, action: &StepAction, state: &mut StateRecord) -> Result<(), String> {
        let at = now_rfc3339;
        match action {
            StepAction::InstallPackages { family, packages } => {
                let mut argv: Vec<&str> = match family {
                    Family::Apt => {
                        self.cmd(&["apt-get", "update", "-q"])?;
                        vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"]
                    }
                    Family::Dnf => vec!["dnf", "install", "-y"],
                };
                argv.extend(packages.iter().map(String::as_str));
                self.cmd(&argv)?;
                for p in packages {
                    let version = installed_version(*family, p).ok_or_else(|| format!("{p} is still not installed after the install"))?;
                    state.packages.push(PackageRecord { family: *family, name: p.clone(), version, at: at() });
                }
                Ok(())
            }
            StepAction::KvmDevicePermissions { path, mode_before, group_before } => {
                if Command::new("getent").args(["group", "kvm"]).output().map(|o| !o.status.success()).unwrap_or(true) {
                    self.cmd(&["groupadd", "-r", "kvm"])?;
                }
                self.cmd(&["chgrp", "kvm", path])?;
                self.cmd(&["chmod", "0660", path])?;
                state.kvm_device =
                    Some(KvmDeviceRecord { path: path.clone(), mode_before: *mode_before, group_before: group_before.clone(), at: at() });
                Ok(())
            }
            StepAction::StartService { name, systemd, netns } => {
                if *systemd {
                    self.cmd(&["systemctl", "enable", "--now", name])?;
                } else {
                    self.start_direct(name, netns.as_deref())?;
                }
                if name == "libvirtd" {
                    self.wait_for_libvirt()?;
                }
                let how = if *systemd { "systemd" } else { "direct" };
                state.services.push(ServiceRecord { name: name.clone(), how: how.into(), netns: netns.clone(), at: at() });
                Ok(())
            }
            StepAction::InstallHook { path, content, restart_libvirtd, systemd, .. } => {
                let p = Path::new(path);
                let previous = std::fs::read_to_string(p).ok();
                if previous.as_ref().is_some_and(|t| !t.contains(HOOK_MARKER)) {
                    return Err(format!("{path} exists and is not kvmctl's; move it aside (kvmctl will not overwrite it)"));
                }
                std::fs::create_dir_all(p.parent().unwrap_or(Path::new("/"))).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
                std::fs::write(p, content).map_err(|e| format!("cannot write {path}: {e}"))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).map_err(|e| format!("cannot chmod {path}: {e}"))?;
                self.log("INFO", &format!("wrote {path}"));
                // Updating a hook an earlier setup installed: keep the first record's account.
                let previous = match &state.hook {
                    Some(h) if h.path == *path => h.previous.clone(),
                    _ => previous,
                };
                state.hook = Some(HookRecord { path: path.clone(), at: at(), previous });
                if *restart_libvirtd {
                    self.restart_libvirtd(*systemd)?;
                }
                Ok(())
            }
            StepAction::EnsureDefaultNetwork { defined, active, autostart, reserved_ahead } => {
                use kvmctl_libvirt::xml;
                let xml = std::fs::read_to_string("/usr/share/libvirt/networks/default.xml")
                    .or_else(|_| xml::nat_network_xml(&xml::NatNetworkSpec::libvirt_default()).map_err(|e| e.to_string()))?;
                // Defined with its addresses reserved ahead (ADR 0015).
                let xml = xml::network_reserve_ahead(&xml).map_err(|e| e.to_string())?.unwrap_or(xml);
                let node = self.node();
                node.network_ensure("default", &xml).map_err(|e| kvmctl_core::error::chain(&e))?;
                // A network that was there already gets them added.
                let mut added = false;
                if *defined && !reserved_ahead {
                    match node.network_reserve_ahead("default", true).map_err(|e| kvmctl_core::error::chain(&e))? {
                        kvmctl_libvirt::ReserveAhead::Unchanged => {}
                        kvmctl_libvirt::ReserveAhead::Live => {
                            added = true;
                            self.log(
                                "INFO",
                                "network default: addresses reserved ahead (the network was restarted; no guest was connected)",
                            );
                        }
                        kvmctl_libvirt::ReserveAhead::NextStart { connections } => {
                            added = true;
                            self.log(
                                "WARN",
                                &format!(
                                    "network default: addresses reserved ahead in its definition; {connections} guest interface(s) are connected, \
                                     so the running network has them when it next starts (virsh net-destroy default && virsh net-start default \
                                     once no guest runs); until then each VM create reserves its address live"
                                ),
                            );
                        }
                    }
                }
                match state.networks.iter_mut().find(|n| n.name == "default") {
                    Some(n) => n.reserved_ahead |= added,
                    None => state.networks.push(NetworkRecord {
                        name: "default".into(),
                        defined: !defined,
                        started: !active,
                        autostart_set: !autostart,
                        reserved_ahead: added,
                        at: at(),
                    }),
                }
                Ok(())
            }
            StepAction::EnsurePool { name, path } => {
                let dir_created = !Path::new(path).exists();
                self.node().pool_ensure_dir(name, Path::new(path)).map_err(|e| kvmctl_core::error::chain(&e))?;
                if !state.pools.iter().any(|p| &p.name == name) {
                    state.pools.push(PoolRecord { name: name.clone(), path: path.clone(), dir_created, at: at() });
                }
                Ok(())
            }
            StepAction::AddUserToGroups { user, groups } => {
                for g in groups {
                    self.cmd(&["usermod", "-aG", g, user])?;
                    state.groups.push(GroupRecord { user: user.clone(), group: g.clone(), at: at() });
                }
                Ok(())
            }
            StepAction::RemoveUserFromGroup { user, group } => {
                self.cmd(&["gpasswd", "-d", user, group])?;
                state.groups.retain(|g| !(g.user == *user && g.group == *group));
                Ok(())
            }
            StepAction::RemoveHook { path, previous } => {
                match std::fs::read_to_string(path) {
                    Ok(t) if t.contains(HOOK_MARKER) => {
                        match previous {
                            Some(old) => {
                                std::fs::write(path, old).map_err(|e| format!("cannot restore {path}: {e}"))?;
                                self.log("INFO", &format!("restored the previous {path}"));
                            }
                            None => {
                                std::fs::remove_file(path).map_err(|e| format!("cannot remove {path}: {e}"))?;
                                self.log("INFO", &format!("removed {path}"));
                            }
                        }
                        if pid_of("libvirtd").is_some() {
                            self.restart_libvirtd(Path::new("/run/systemd/system").is_dir())?;
                        }
                    }
                    Ok(_) => self.log("WARN", &format!("{path} is no longer kvmctl's; left in place")),
                    Err(_) => self.log("INFO", &format!("{path} already gone")),
                }
                // Without the hook nothing maintains the port forwards: kvmctl's own
                // nftables table goes too (nothing outside it was ever touched).
                match std::process::Command::new("nft").args(["delete", "table", "inet", "kvmctl"]).output() {
                    Ok(o) if o.status.success() => self.log("INFO", "removed nftables table inet kvmctl"),
                    Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No such file") => {}
                    Ok(o) => self
                        .log("WARN", &format!("cannot remove nftables table inet kvmctl: {}", String::from_utf8_lossy(&o.stderr).trim())),
                    Err(_) => {}
                }
                state.hook = None;
                Ok(())
            }
            StepAction::DeletePool { name, path, remove_dir } => {
                match self.node().pool_delete(name) {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => self.log("INFO", &format!("pool {name} already gone")),
                    Err(e) => return Err(kvmctl_core::error::chain(&e)),
                }
                if *remove_dir {
                    if let Err(e) = std::fs::remove_dir(path) {
                        self.log("WARN", &format!("kept {path}: {e} (not empty?)"));
                    }
                }
                state.pools.retain(|p| &p.name != name);
                Ok(())
            }
            StepAction::RevertNetwork { name, undefine, stop, unset_autostart, unreserve } => {
                let node = self.node();
                if *unreserve {
                    match node.network_reserve_ahead(name, false) {
                        Ok(_) => self.log("INFO", &format!("network {name}: addresses reserved ahead taken out")),
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(kvmctl_core::error::chain(&e)),
                    }
                }
                let r = if *undefine {
                    node.network_delete(name)
                } else {
                    node.network_set(name, stop.then_some(false), unset_autostart.then_some(false))
                };
                match r {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => self.log("INFO", &format!("network {name} already gone")),
                    Err(e) => return Err(kvmctl_core::error::chain(&e)),
                }
                state.networks.retain(|n| &n.name != name);
                Ok(())
            }
            StepAction::StopService { name, systemd } => {
                if *systemd {
                    self.cmd(&["systemctl", "disable", "--now", name])?;
                } else if let Some(pid) = pid_of(name) {
                    stop_pid(pid)?;
                }
                state.services.retain(|s| &s.name != name);
                Ok(())
            }
            StepAction::RestoreKvmDevice { path, mode, group } => {
                self.cmd(&["chgrp", group, path])?;
                self.cmd(&["chmod", &format!("{mode:04o}"), path])?;
                state.kvm_device = None;
                Ok(())
            }
            StepAction::RemovePackages { family, packages } => {
                let mut argv: Vec<&str> = match family {
                    Family::Apt => vec!["apt-get", "remove", "-y", "-q"],
                    Family::Dnf => vec!["dnf", "remove", "-y"],
                };
                argv.extend(packages.iter().map(String::as_str));
                self.cmd(&argv)?;
                state.packages.retain(|p| !packages.contains(&p.name));
                Ok(())
            }
        }
    }
}

fn stop_pid(pid: u32) -> Result<(), String> {
    // SAFETY: kill with a pid we just read; a vanished process only makes it return -1.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("process {pid} did not exit within 10 s of SIGTERM"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339() {
        let t = super::now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T", "{t}");
    }
}
