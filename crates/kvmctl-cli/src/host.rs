//! `kvmctl host doctor|setup|uninstall` and `kvmctl hook qemu`: run locally, without the
//! daemon, because they prepare the host the daemon needs.

use crate::output::{self, OutputFormat, Table};
use kvmctl_host::exec::{now_rfc3339, Executor};
use kvmctl_host::facts::{gather, is_root, GatherOptions, HostFacts};
use kvmctl_host::kvm_probe::ProbeResult;
use kvmctl_host::state::{StateRecord, Verification};
use kvmctl_host::{doctor, setup_plan, uninstall_plan, CheckStatus, DoctorReport, SetupOptions};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum HostCommand {
    /// Check this host: hardware virtualisation, a functional KVM probe, QEMU, libvirt,
    /// networks, storage, firmware, tools. Exits 1 when a check that blocks VM creation fails.
    Doctor {
        #[command(flatten)]
        common: Common,
        /// Skip the functional KVM probe (several seconds) and reuse the last recorded verdict.
        #[arg(long)]
        no_probe: bool,
    },
    /// Install and configure QEMU/libvirt idempotently: packages, /dev/kvm permissions,
    /// virtlogd and libvirtd (systemd, or started directly without it), the libvirt hook,
    /// the default NAT network, kvmctl's storage pool, group membership. Logs every step
    /// and records what it changed so that `host uninstall` can reverse exactly that.
    Setup {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        apply: Apply,
        /// Add this user to the libvirt and kvm groups [default: $SUDO_USER].
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// On hosts without systemd, start virtlogd and libvirtd inside this network namespace
        /// (sandboxes, CI).
        #[arg(long, value_name = "NAME")]
        netns: Option<String>,
    },
    /// Reverse exactly what setup recorded, in reverse order (a package that was present
    /// before setup stays).
    Uninstall {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        apply: Apply,
        /// Reverse only this step (packages, kvm-device, virtlogd, hook, libvirtd,
        /// network-default, pool, groups).
        #[arg(long, value_name = "STEP")]
        only: Option<String>,
    },
}

/// How setup and uninstall carry out their plan.
#[derive(clap::Args, Debug)]
pub struct Apply {
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Re-run through sudo when not root.
    #[arg(long)]
    sudo: bool,
}

#[derive(clap::Args, Debug)]
pub struct Common {
    /// libvirt URI to check and configure.
    #[arg(long, env = "KVMCTL_LIBVIRT_URI", hide_env_values = true, default_value = "qemu:///system", value_name = "URI")]
    libvirt_uri: String,
    /// Directory of the state record (state.json) and the last doctor report (doctor.json).
    #[arg(long, default_value = kvmctl_host::DEFAULT_STATE_DIR, value_name = "DIR")]
    state_dir: PathBuf,
    /// The human log every setup and uninstall run appends to.
    #[arg(long, default_value = kvmctl_host::DEFAULT_LOG, value_name = "FILE")]
    log: PathBuf,
    /// kvmctl's storage pool name.
    #[arg(long, default_value = kvmctl_host::DEFAULT_POOL, value_name = "NAME")]
    pool: String,
    /// Directory of kvmctl's storage pool.
    #[arg(long, default_value = kvmctl_host::DEFAULT_POOL_PATH, value_name = "DIR")]
    pool_path: PathBuf,
}

impl Table for DoctorReport {
    fn rows(&self) -> Vec<Vec<String>> {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let mut rows = vec![vec!["status".into(), "check".into(), "evidence".into(), "fix".into()]];
        for c in &self.checks {
            let (word, code) = match c.status {
                CheckStatus::Ok => ("ok", "32"),
                CheckStatus::Warn => ("warn", "33"),
                CheckStatus::Fail => ("FAIL", "31"),
                CheckStatus::Skipped => ("skip", "2"),
            };
            // Pad before colouring so the escape codes do not disturb the column widths.
            let status = if color { format!("\x1b[{code}m{word:<4}\x1b[0m") } else { word.to_owned() };
            rows.push(vec![status, c.id.clone(), c.evidence.clone(), c.fix.clone()]);
        }
        rows
    }
}

fn probe_path(dir: &Path) -> PathBuf {
    dir.join("kvm-probe.json")
}

fn gather_facts(c: &Common, run_probe: bool) -> HostFacts {
    let previous: Option<ProbeResult> = std::fs::read_to_string(probe_path(&c.state_dir)).ok().and_then(|t| serde_json::from_str(&t).ok());
    let workdir = std::env::temp_dir();
    let facts = gather(&GatherOptions {
        libvirt_uri: &c.libvirt_uri,
        pool: &c.pool,
        pool_path: &c.pool_path,
        run_probe,
        previous_probe: previous,
        workdir: &workdir,
    });
    if run_probe {
        if let Some(p) = &facts.kvm_probe {
            record(&probe_path(&c.state_dir), p);
        }
    }
    facts
}

/// Best effort: a non-root doctor still prints its report even where it cannot record it.
fn record<T: serde::Serialize>(path: &Path, value: &T) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(text) = serde_json::to_string_pretty(value) {
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, text + "\n").is_ok() {
            let _ = std::fs::rename(tmp, path);
        }
    }
}

fn run_doctor(c: &Common, run_probe: bool) -> DoctorReport {
    let mut report = doctor(&gather_facts(c, run_probe));
    report.checked_at = Some(now_rfc3339());
    record(&c.state_dir.join("doctor.json"), &report);
    report
}

fn confirm(question: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        eprintln!("{question} [y/N] (no terminal to ask on: pass --yes)");
        return false;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
}

/// Re-executes this very command line through sudo.
fn resudo() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    let status = std::process::Command::new("sudo").arg("--").arg(std::env::current_exe()?).args(&args[1..]).status()?;
    Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
}

pub fn run(cmd: HostCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        HostCommand::Doctor { common, no_probe } => {
            if !no_probe && format == OutputFormat::Table {
                eprintln!("probing KVM (a few seconds; --no-probe skips it)...");
            }
            let report = run_doctor(&common, !no_probe);
            let blocked = !report.blocking_failures.is_empty();
            output::print(&report, format)?;
            if format == OutputFormat::Table {
                println!("\nVMs will use domain type '{}'.", report.domain_type);
                if blocked {
                    println!("VM creation is blocked by: {}", report.blocking_failures.join(", "));
                }
            }
            Ok(if blocked { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        HostCommand::Setup { common, apply: Apply { dry_run, yes, sudo }, user, netns } => {
            if !dry_run && !is_root() && sudo {
                return resudo();
            }
            let facts = gather_facts(&common, false);
            let kvmctl_path = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/local/bin/kvmctl"));
            let user = user.or_else(|| std::env::var("SUDO_USER").ok()).filter(|u| !u.is_empty() && u != "root");
            let opts = SetupOptions { pool: common.pool.clone(), pool_path: common.pool_path.clone(), user, netns, kvmctl_path };
            let steps = setup_plan(&facts, &opts)?;
            let todo = steps.iter().filter(|s| !s.done).count();
            if todo == 0 {
                eprintln!("host setup: nothing to do, every step is already done");
            } else if !dry_run
                && !yes
                && !confirm(&format!("host setup will make {todo} change(s) to this host (see --dry-run). Continue?"))
            {
                anyhow::bail!("not confirmed; nothing was changed");
            }
            let state_path = common.state_dir.join("state.json");
            let mut state = StateRecord::load(&state_path)?;
            let mut progress = |line: &str| eprintln!("{line}");
            let mut exec = Executor {
                log_path: common.log.clone(),
                state_path: state_path.clone(),
                dry_run,
                libvirt_uri: common.libvirt_uri.clone(),
                progress: &mut progress,
            };
            exec.run("setup", &steps, &mut state)?;
            if dry_run {
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("verifying with host doctor (probing KVM)...");
            let report = run_doctor(&common, true);
            let warnings = report.checks.iter().filter(|c| c.status == CheckStatus::Warn).map(|c| c.id.clone()).collect();
            state.verification = Some(Verification {
                at: now_rfc3339(),
                domain_type: report.domain_type.clone(),
                blocking_failures: report.blocking_failures.clone(),
                warnings,
            });
            state.save(&state_path)?;
            output::print(&report, format)?;
            eprintln!("\nlog: {}   state: {}", common.log.display(), state_path.display());
            Ok(if report.blocking_failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        HostCommand::Uninstall { common, apply: Apply { dry_run, yes, sudo }, only } => {
            if !dry_run && !is_root() && sudo {
                return resudo();
            }
            let state_path = common.state_dir.join("state.json");
            let mut state = StateRecord::load(&state_path)?;
            let steps = uninstall_plan(&state, only.as_deref());
            if steps.is_empty() {
                eprintln!("host uninstall: the state record ({}) lists nothing to undo", state_path.display());
                return Ok(ExitCode::SUCCESS);
            }
            if !dry_run
                && !yes
                && !confirm(&format!("host uninstall will undo {} step(s) that setup recorded (see --dry-run). Continue?", steps.len()))
            {
                anyhow::bail!("not confirmed; nothing was changed");
            }
            let mut progress = |line: &str| eprintln!("{line}");
            let mut exec = Executor {
                log_path: common.log.clone(),
                state_path,
                dry_run,
                libvirt_uri: common.libvirt_uri.clone(),
                progress: &mut progress,
            };
            exec.run("uninstall", &steps, &mut state)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `kvmctl hook qemu DOMAIN OPERATION SUB-OPERATION EXTRA`, run by libvirtd with the domain
/// XML on stdin: applies a kvmctl VM's port forwards when it starts (or libvirtd reconnects
/// to it) and removes them when it stops, from the forwards recorded in its domain metadata,
/// so they hold without the daemon. It must never make libvirt fail a domain operation, so
/// it logs what went wrong to `/var/log/kvmctl/hook.log` and exits 0.
pub fn hook_qemu(args: &[String]) -> ExitCode {
    let mut xml = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut xml);
    let op = args.get(1).map(String::as_str).unwrap_or("");
    // Only kvmctl's VMs (their domains carry its metadata) are the hook's business.
    let Some(meta) = kvmctl_libvirt::xml::metadata_parse(&xml) else { return ExitCode::SUCCESS };
    let vm = meta.vm_id.to_string();
    let rules = meta.net.as_ref().map(|n| {
        kvmctl_netfw::VmRules::of(
            &vm,
            n.ip,
            &n.bridge,
            n.nat_subnet,
            n.forwards.iter().map(|f| (f.protocol.as_str(), f.host_port, f.guest_port)),
        )
    });
    let line = match kvmctl_netfw::hook::qemu(op, &vm, rules.as_ref()) {
        Ok(None) => return ExitCode::SUCCESS,
        Ok(Some(did)) => format!("[{}] [INFO] qemu hook {}: {did}\n", now_rfc3339(), args.join(" ")),
        Err(e) => format!("[{}] [ERROR] qemu hook {}: {e}\n", now_rfc3339(), args.join(" ")),
    };
    let _ = std::fs::create_dir_all("/var/log/kvmctl");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open("/var/log/kvmctl/hook.log") {
        let _ = f.write_all(line.as_bytes());
    }
    ExitCode::SUCCESS
}
