//! `kvmctl vm ...` and `kvmctl plan list`: clients of the daemon's `/v1/vms` and `/v1/plans`.

use crate::output::{self, age, OutputFormat, Table};
use crate::progress::{settle_progress, with_progress, Progress};
use crate::vm_devices::{disk_run, share_run, DiskCommand, ShareCommand};
use crate::vm_guest::{download, guest_side, query_escape, shell_quote, terminal_size};
use kvmctl_client::Client;
use kvmctl_types::api::{Vm, VmCloneRequest, VmExecRequest, VmResizeRequest, VmStopRequest};
use std::path::PathBuf;
use std::process::ExitCode;

// Parsed once per process; the size of the create variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand, Debug)]
pub enum VmCommand {
    /// Create a VM from an image: a copy-on-write root disk, a cloud-init seed and a libvirt
    /// domain, started unless --no-start; or, with --install-iso, an empty disk and an
    /// installer to follow on the VNC console (`vm console --vnc`). A failure at any step
    /// leaves nothing behind.
    Create(crate::vm_create::CreateArgs),
    /// Wait until a VM reaches a readiness stage (running, ssh, cloud-init); on timeout, the
    /// last stage reached and the end of its console.
    Wait {
        name: String,
        #[arg(long = "for", value_name = "STAGE", default_value = "ssh")]
        stage: String,
        /// Seconds to wait.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// The VM's serial console, interactive (leave with Ctrl-]); --log prints what it wrote.
    Console {
        name: String,
        /// Print the logged console output instead of attaching.
        #[arg(long)]
        log: bool,
        /// With --log: how many of the last lines.
        #[arg(long, default_value_t = 100)]
        lines: usize,
        /// The graphical console instead: relays the VM's VNC display (through the daemon)
        /// to a port on 127.0.0.1 and prints the viewer command to open it; Ctrl-C stops.
        #[arg(long, conflicts_with = "log")]
        vnc: bool,
    },
    /// A shell in the VM over SSH, through the daemon (as the VM's user, with its own key);
    /// with -- CMD, runs CMD in a terminal and exits with its status.
    Ssh {
        name: String,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Copy files or directories into or out of a VM over SFTP (through the daemon):
    /// `vm cp LOCAL NAME:/PATH` or `vm cp NAME:/PATH LOCAL`. Symlinks inside a local tree
    /// are skipped, never followed.
    Cp {
        #[arg(value_name = "SOURCE")]
        from: String,
        #[arg(value_name = "DEST")]
        to: String,
    },
    /// Run a command in the VM over SSH (as its user, with the VM's own key); exits with the
    /// command's status.
    Exec {
        name: String,
        /// The command and its arguments (after --).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// List VMs.
    List {
        /// Only VMs carrying this label, KEY=VALUE (repeat: all of them).
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = crate::node::parse_label)]
        labels: Vec<(String, String)>,
        /// Redraw every 2 seconds until interrupted (Ctrl-C).
        #[arg(long)]
        watch: bool,
    },
    /// Show one VM.
    Show {
        name: String,
        /// Redraw every 2 seconds until interrupted (Ctrl-C).
        #[arg(long)]
        watch: bool,
    },
    /// Set or remove a VM's labels: `vm label web-1 role=web tier=front`, `--remove tier`.
    Label {
        name: String,
        /// KEY=VALUE pairs to set (others are kept).
        #[arg(value_name = "KEY=VALUE", value_parser = crate::node::parse_label)]
        set: Vec<(String, String)>,
        /// A key to remove (repeat).
        #[arg(long = "remove", value_name = "KEY")]
        remove: Vec<String>,
    },
    /// Start a stopped VM.
    Start { name: String },
    /// Shut a VM down: ACPI first, powered off after --timeout; --force powers off at once.
    Stop {
        name: String,
        #[arg(long)]
        force: bool,
        /// Seconds to wait for the guest [default: the daemon's stop_timeout_seconds, 60].
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Reboot a running VM (ACPI).
    Reboot { name: String },
    /// Move a VM to another node (admins): cold when it is stopped (its disk copied there),
    /// live with --live while it runs (its disk mirrored, then its memory; the guest keeps
    /// running and keeps its address). A failure leaves it whole where it was.
    Migrate {
        name: String,
        /// The node to move it to (`kvmctl node list`).
        #[arg(long, value_name = "NODE")]
        to: String,
        /// Migrate it while it runs.
        #[arg(long)]
        live: bool,
    },
    /// Change CPUs and memory (VM stopped) or grow the disk (running or stopped), within
    /// your quota and the node's capacity.
    Resize {
        name: String,
        /// Take a plan's size (users without custom sizing resize only this way).
        #[arg(long, conflicts_with_all = ["cpus", "memory", "disk"])]
        plan: Option<String>,
        #[arg(long)]
        cpus: Option<u32>,
        /// New memory, e.g. 4G.
        #[arg(long, value_parser = parse_mib)]
        memory: Option<u64>,
        /// New disk size, e.g. 40G; disks only grow.
        #[arg(long, value_parser = parse_gib)]
        disk: Option<u64>,
    },
    /// Make a new VM from this one's disk (as it is now, or at a snapshot) with its own
    /// identity: id, hostname, MAC, address, SSH host key, VM key, machine-id and SSH forward.
    /// Linked (default): an overlay on a read-only base that clones of one snapshot share;
    /// --full: a standalone copy. A running source pauses while its disk is read, unless
    /// --from-snapshot is given. The source's user-data does not run again.
    Clone {
        /// The VM to clone.
        source: String,
        /// The clone's name (also its hostname).
        name: String,
        /// Clone the disk as it was at this snapshot of the source.
        #[arg(long, value_name = "SNAPSHOT")]
        from_snapshot: Option<String>,
        /// An overlay on a shared read-only base (the default).
        #[arg(long, conflicts_with = "full")]
        linked: bool,
        /// A standalone copy of the disk.
        #[arg(long)]
        full: bool,
        /// Wake the clone from the memory of --from-snapshot (a memory snapshot; the source
        /// must be stopped) instead of booting it: ready in seconds. It then takes its own
        /// hostname, MAC, address, keys, machine-id and the host's clock (needs sudo in the
        /// guest).
        #[arg(long, requires = "from_snapshot", conflicts_with_all = ["full", "no_start"])]
        warm: bool,
        /// Give the clone a copy of the source's TPM state instead of a fresh TPM.
        #[arg(long = "copy-tpm", conflicts_with = "warm")]
        copy_tpm: bool,
        #[arg(long)]
        no_start: bool,
        #[arg(long)]
        no_ssh_forward: bool,
        /// Delete the clone this long after it is made, e.g. 90m, 2h; 1m to 30d.
        #[arg(long, value_name = "DURATION", value_parser = crate::users::parse_duration)]
        ttl: Option<i64>,
        /// Wait until the clone reaches a stage: running (the default with a bare --wait),
        /// ssh or cloud-init.
        #[arg(long, value_name = "STAGE", num_args = 0..=1, default_missing_value = "running")]
        wait: Option<String>,
        /// Seconds --wait waits.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Write the VM to one archive: its definition and template, UEFI variables, flattened
    /// disk and a manifest with the sha256 of each. A running VM pauses while its disk is
    /// read (its processes carry on). `kvmctl vm restore` makes a VM from it.
    Export {
        name: String,
        /// The archive to write (`-` for standard output); written whole or not at all.
        /// (A positional argument: `-o` is the output format everywhere.)
        #[arg(value_name = "FILE")]
        output_file: PathBuf,
    },
    /// Make a new VM from an archive of `kvmctl vm export`, verified first (a damaged or
    /// truncated archive is refused and nothing is made). The VM gets a new identity; the
    /// image it was made from must exist here by name.
    Restore {
        /// The archive.
        file: PathBuf,
        /// The new VM's name (also its hostname).
        #[arg(long)]
        name: String,
        /// The network it joins [default: the daemon's].
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        no_start: bool,
        #[arg(long)]
        no_ssh_forward: bool,
        /// Wait until the VM reaches a stage: running (the default with a bare --wait), ssh
        /// or cloud-init.
        #[arg(long, value_name = "STAGE", num_args = 0..=1, default_missing_value = "running")]
        wait: Option<String>,
        /// Seconds --wait waits.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Port forwards from host ports to the VM: add, list, rm.
    #[command(subcommand)]
    Forward(crate::network::ForwardCommand),
    /// Snapshots of the VM: create, list, revert, delete.
    #[command(subcommand)]
    Snapshot(crate::snapshot::SnapshotCommand),
    /// Data disks of the VM: add, list, resize, rm (hot-plugged while it runs).
    #[command(subcommand)]
    Disk(DiskCommand),
    /// Host directories shared with the VM over virtio-fs: add, list, rm (admins; the VM
    /// stopped).
    #[command(subcommand)]
    Share(ShareCommand),
    /// Delete a VM: stop it, remove its domain, seed, root disk and logs.
    Delete {
        name: String,
        /// Keep the root disk volume in the pool (admins only; it is recorded, so gc leaves it
        /// and its image stays until it is removed with virsh vol-delete).
        #[arg(long)]
        keep_disk: bool,
    },
}

/// `512M`, `2G`, `2048` (MiB) as MiB.
pub(crate) fn parse_mib(s: &str) -> Result<u64, String> {
    size(s, 1).map_err(|e| format!("{e}; use a size such as 512M or 2G"))
}

/// `20G`, `1T`, `20` (GiB) as GiB.
pub(crate) fn parse_gib(s: &str) -> Result<u64, String> {
    let mib = size(s, 1024).map_err(|e| format!("{e}; use a size such as 20G"))?;
    if mib % 1024 != 0 {
        return Err("disk sizes are whole GiB; use a size such as 20G".into());
    }
    Ok(mib / 1024)
}

/// A size in MiB; a bare number counts in units of `bare` MiB.
fn size(s: &str, bare: u64) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map(|i| s.split_at(i)).unwrap_or((s, ""));
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let mult = match unit.to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => bare,
        "M" => 1,
        "G" => 1024,
        "T" => 1024 * 1024,
        _ => return Err(format!("{s:?} has an unknown unit")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

pub(crate) fn mem(mib: u64) -> String {
    if mib % 1024 == 0 {
        format!("{}G", mib / 1024)
    } else {
        format!("{mib}M")
    }
}

impl Table for Vec<Vm> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["name", "state", "ip", "cpus", "memory", "disk", "plan", "image", "node", "age"].map(String::from).to_vec()];
        rows.extend(self.iter().map(|v| {
            vec![
                v.name.clone(),
                v.state.clone(),
                v.ip.clone().unwrap_or_else(|| "-".into()),
                v.vcpus.to_string(),
                mem(v.memory_mib),
                format!("{}G", v.disk_gib),
                v.plan.clone().unwrap_or_else(|| "-".into()),
                v.image.clone(),
                v.node.clone(),
                age(v.created_at),
            ]
        }));
        rows
    }
}

impl Table for Vm {
    fn header(&self) -> bool {
        false
    }
    fn rows(&self) -> Vec<Vec<String>> {
        let v = self;
        let mut rows = vec![
            vec!["name:".into(), v.name.clone()],
            vec!["id:".into(), v.id.to_string()],
            vec!["state:".into(), v.state.clone()],
            vec![
                "size:".into(),
                format!(
                    "{} vCPU, {} memory, {}G disk (plan {})",
                    v.vcpus,
                    mem(v.memory_mib),
                    v.disk_gib,
                    v.plan.as_deref().unwrap_or("none")
                ),
            ],
            vec!["image:".into(), format!("{} ({}{})", v.image, v.firmware, if v.tpm { ", TPM 2.0" } else { "" })],
            vec!["network:".into(), format!("{} mac {} ip {}", v.network, v.mac, v.ip.as_deref().unwrap_or("-"))],
            vec![
                "ssh:".into(),
                format!(
                    "{}@{} host key {}{}",
                    v.ssh_user,
                    v.ip.as_deref().unwrap_or("-"),
                    v.host_key.as_deref().unwrap_or("not pinned yet"),
                    v.forwards
                        .iter()
                        .find(|f| f.guest_port == 22 && f.protocol == "tcp")
                        .map(|f| format!("; through the host: ssh -p {} {}@HOST", f.host_port, v.ssh_user))
                        .unwrap_or_default()
                ),
            ],
            vec![
                "forwards:".into(),
                if v.forwards.is_empty() {
                    "none".into()
                } else {
                    v.forwards
                        .iter()
                        .map(|f| format!("{}:{}->{} ({})", f.protocol, f.host_port, f.guest_port, f.pool))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ],
            vec!["node:".into(), v.node.clone()],
            vec!["owner:".into(), v.owner.clone()],
            vec![
                "labels:".into(),
                if v.labels.is_empty() {
                    "none".into()
                } else {
                    v.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
                },
            ],
            vec!["age:".into(), age(v.created_at)],
        ];
        if v.profile.is_some() || !v.media.is_empty() {
            let profile = v.profile.clone().unwrap_or_else(|| "none".into());
            let media = if v.media.is_empty() { String::new() } else { format!("; CD-ROMs {}", v.media.join(", ")) };
            rows.insert(4, vec!["profile:".into(), format!("{profile}{media}")]);
        }
        if !v.shares.is_empty() {
            let shares =
                v.shares.iter().map(|s| format!("{} {}{}", s.tag, s.source, if s.readonly { " (ro)" } else { "" })).collect::<Vec<_>>();
            rows.insert(4, vec!["shares:".into(), shares.join(", ")]);
        }
        if !v.disks.is_empty() {
            let disks = v.disks.iter().map(|d| format!("{} {}G {} ({})", d.name, d.size_gib, d.bus, d.target)).collect::<Vec<_>>();
            rows.insert(4, vec!["disks:".into(), disks.join(", ")]);
        }
        if let Some(at) = v.expires_at {
            rows.push(vec!["expires:".into(), format!("{} (--ttl; deleted then)", crate::users::humantime_utc(at))]);
        }
        if let Some(e) = &v.error {
            rows.push(vec!["error:".into(), e.clone()]);
        }
        if !v.readiness.is_empty() {
            rows.push(vec!["readiness:".into(), String::new()]);
            for s in &v.readiness {
                let at = s.elapsed_ms.map(|ms| format!("+{:.2}s", ms as f64 / 1000.0)).unwrap_or_default();
                rows.push(vec![format!("  {}", s.stage), format!("{at:>8}  {}", s.detail.as_deref().unwrap_or(""))]);
            }
        }
        rows
    }
}

pub(crate) fn default_keys() -> Vec<PathBuf> {
    let Some(home) = std::env::var_os("HOME").map(PathBuf::from) else { return vec![] };
    ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"].iter().map(|f| home.join(".ssh").join(f)).filter(|p| p.is_file()).take(1).collect()
}

pub(crate) fn read(flag: &str, path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {flag} {}: {e}", path.display()))
}

/// Runs `op` behind a progress line that follows VM `vm` through the daemon's events (its
/// state changes and readiness stages); without events it is a plain progress line.
/// `--wait STAGE` after a create, clone or restore: the VM once it reached the stage.
pub(crate) async fn wait_for(client: &Client, name: &str, stage: &str, timeout: u64) -> anyhow::Result<Vm> {
    with_vm_progress(
        client,
        name,
        &format!("waiting for VM {name} to reach {stage}"),
        &format!("VM {name} reached {stage}"),
        client.vm_wait(name, stage, timeout),
    )
    .await
}

pub(crate) async fn with_vm_progress<T>(
    client: &Client,
    vm: &str,
    doing: &str,
    done: &str,
    op: impl std::future::Future<Output = Result<T, kvmctl_client::ClientError>>,
) -> anyhow::Result<T> {
    let p = Progress::start(doing);
    let report = p.reporter();
    let follow = match client.events(Some(vm)).await {
        Ok(mut rx) => Some(tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                match (ev.kind.as_str(), ev.stage, ev.state) {
                    ("vm.stage", Some(stage), _) => report(&format!("{stage}{}", ev.detail.map(|d| format!(" ({d})")).unwrap_or_default())),
                    ("vm.state", _, Some(state)) => report(&state),
                    _ => {}
                }
            }
        })),
        Err(_) => None,
    };
    let result = op.await;
    if let Some(f) = follow {
        f.abort();
    }
    settle_progress(p, done, result)
}

pub async fn run(client: &Client, cmd: VmCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        VmCommand::Create(args) => return crate::vm_create::create(client, args, format).await,
        VmCommand::Wait { name, stage, timeout } => {
            let vm = with_vm_progress(
                client,
                &name,
                &format!("waiting for VM {name} to reach {stage}"),
                &format!("VM {name} reached {stage}"),
                client.vm_wait(&name, &stage, timeout),
            )
            .await?;
            output::print(&vm, format)?;
        }
        VmCommand::Console { name, log: true, lines, .. } => print!("{}", client.vm_console_log(&name, lines).await?),
        VmCommand::Console { name, vnc: true, .. } => crate::terminal::vnc_relay(client, &name).await?,
        VmCommand::Console { name, log: false, .. } => {
            let ws = client.terminal(&format!("/v1/vms/{name}/console")).await?;
            eprint!("Connected to the console of {name}; leave with Ctrl-]\r\n");
            crate::terminal::run(ws, Some(crate::terminal::ESCAPE)).await?;
            eprint!("\r\n");
        }
        VmCommand::Ssh { name, command } => {
            let (cols, rows) = terminal_size();
            let mut path = format!("/v1/vms/{name}/ssh?cols={cols}&rows={rows}");
            if !command.is_empty() {
                let line = command.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ");
                path.push_str(&format!("&command={}", query_escape(&line)));
            }
            let ws = client.terminal(&path).await?;
            let status = crate::terminal::run(ws, None).await?;
            return Ok(ExitCode::from(status.unwrap_or(0).clamp(0, 255) as u8));
        }
        VmCommand::Cp { from, to } => {
            let p = Progress::start(&format!("copying {from} to {to}"));
            let copied = match (guest_side(&from), guest_side(&to)) {
                (None, Some((vm, path))) => Ok(client.vm_upload(vm, std::path::Path::new(&from), path).await?),
                (Some((vm, path)), None) => download(client, vm, path, std::path::Path::new(&to)).await,
                _ => Err(anyhow::anyhow!(
                    "one side must be NAME:/PATH in a VM and the other a local path, e.g. kvmctl vm cp ./f web-1:/tmp/f"
                )),
            };
            match copied {
                Ok(bytes) => p.finish(&format!("copied {} ({bytes} bytes)", to)),
                Err(e) => {
                    p.fail();
                    return Err(e);
                }
            }
        }
        VmCommand::Exec { name, command } => {
            let line = command.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ");
            let out = client.vm_exec(&name, &VmExecRequest { command: line, timeout_seconds: None }).await?;
            use std::io::Write;
            std::io::stdout().write_all(out.stdout.as_bytes())?;
            std::io::stderr().write_all(out.stderr.as_bytes())?;
            return Ok(ExitCode::from(out.exit_status.clamp(0, 255) as u8));
        }
        VmCommand::List { labels, watch } => {
            output::watch(watch, format, || async {
                let mut vms = client.vm_list().await?;
                vms.retain(|v| labels.iter().all(|(k, val)| v.labels.get(k) == Some(val)));
                Ok::<_, kvmctl_client::ClientError>(vms)
            })
            .await?
        }
        VmCommand::Show { name, watch } => output::watch(watch, format, || client.vm_get(&name)).await?,
        VmCommand::Label { name, set, remove } => {
            if set.is_empty() && remove.is_empty() {
                anyhow::bail!("give KEY=VALUE pairs to set or --remove KEY (kvmctl vm label {name} role=web)");
            }
            let mut labels = client.vm_get(&name).await?.labels;
            for k in &remove {
                labels.remove(k);
            }
            labels.extend(set);
            output::print(&client.vm_labels_set(&name, &kvmctl_types::api::VmLabelsRequest { labels }).await?, format)?
        }
        VmCommand::Start { name } => {
            let vm = with_vm_progress(client, &name, &format!("starting VM {name}"), &format!("VM {name} started"), client.vm_start(&name))
                .await?;
            output::print(&vm, format)?;
        }
        VmCommand::Stop { name, force, timeout } => {
            let req = VmStopRequest { force, timeout_seconds: timeout };
            let vm =
                with_vm_progress(client, &name, &format!("stopping VM {name}"), &format!("VM {name} stopped"), client.vm_stop(&name, &req))
                    .await?;
            output::print(&vm, format)?;
        }
        VmCommand::Reboot { name } => {
            let vm = with_progress(&format!("rebooting VM {name}"), &format!("VM {name} rebooting"), client.vm_reboot(&name)).await?;
            output::print(&vm, format)?;
        }
        VmCommand::Migrate { name, to, live } => {
            let started = std::time::Instant::now();
            eprintln!("migrating VM {name} to node {to}{} ...", if live { " live" } else { "" });
            let vm = client.vm_migrate(&name, &kvmctl_types::api::VmMigrateRequest { to, live }).await?;
            eprintln!("VM {name} is on node {} ({:.1} s)", vm.node, started.elapsed().as_secs_f64());
            output::print(&vm, format)?;
        }
        VmCommand::Resize { name, plan, cpus, memory, disk } => {
            let req = VmResizeRequest { plan, vcpus: cpus, memory_mib: memory, disk_gib: disk };
            let vm = with_progress(&format!("resizing VM {name}"), &format!("VM {name} resized"), client.vm_resize(&name, &req)).await?;
            output::print(&vm, format)?;
        }
        VmCommand::Clone { source, name, from_snapshot, linked: _, full, warm, copy_tpm, no_start, no_ssh_forward, ttl, wait, timeout } => {
            let req = VmCloneRequest {
                name: name.clone(),
                from_snapshot,
                mode: Some(if full { "full" } else { "linked" }.into()),
                no_start,
                no_ssh_forward,
                ttl_seconds: ttl.map(|t| t as u64),
                warm,
                tpm: copy_tpm.then(|| "copy".to_owned()),
                test_run: None,
            };
            let mut vm = with_vm_progress(
                client,
                &name,
                &format!("cloning VM {source} as {name}"),
                &format!("VM {name} cloned from {source}"),
                client.vm_clone(&source, &req),
            )
            .await?;
            if let Some(stage) = wait {
                vm = wait_for(client, &name, &stage, timeout).await?;
            }
            output::print(&vm, format)?;
        }
        VmCommand::Export { name, output_file } => {
            let bytes = if output_file.as_os_str() == "-" {
                let mut out = tokio::io::stdout();
                with_progress(&format!("exporting VM {name}"), &format!("VM {name} exported"), client.vm_export(&name, &mut out)).await?
            } else {
                // Written beside the target and renamed at the end: a failure leaves no half archive.
                let partial = PathBuf::from(format!("{}.partial", output_file.display()));
                let mut out = tokio::fs::File::create(&partial)
                    .await
                    .map_err(|e| anyhow::anyhow!("FILE: cannot create {}: {e}", partial.display()))?;
                let r = with_progress(
                    &format!("exporting VM {name} to {}", output_file.display()),
                    &format!("VM {name} exported to {}", output_file.display()),
                    client.vm_export(&name, &mut out),
                )
                .await;
                match r {
                    Ok(b) => {
                        std::fs::rename(&partial, &output_file)
                            .map_err(|e| anyhow::anyhow!("FILE: cannot rename {} to {}: {e}", partial.display(), output_file.display()))?;
                        b
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&partial);
                        return Err(e);
                    }
                }
            };
            if format == OutputFormat::Json {
                println!("{}", serde_json::json!({ "vm": name, "file": output_file, "bytes": bytes }));
            }
        }
        VmCommand::Restore { file, name, network, no_start, no_ssh_forward, wait, timeout } => {
            let f = tokio::fs::File::open(&file).await.map_err(|e| anyhow::anyhow!("FILE: cannot open {}: {e}", file.display()))?;
            let req = kvmctl_client::RestoreRequest { name: name.clone(), network, no_start, no_ssh_forward };
            let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let mut vm = with_vm_progress(
                client,
                &name,
                &format!("restoring VM {name} from {}", file.display()),
                &format!("VM {name} restored from {}", file.display()),
                client.vm_restore(&req, f, sent),
            )
            .await?;
            if let Some(stage) = wait {
                vm = wait_for(client, &name, &stage, timeout).await?;
            }
            output::print(&vm, format)?;
        }
        VmCommand::Forward(cmd) => return crate::network::run_forward(client, cmd, format).await,
        VmCommand::Snapshot(cmd) => return crate::snapshot::run(client, cmd, format).await,
        VmCommand::Disk(cmd) => disk_run(client, cmd, format).await?,
        VmCommand::Share(cmd) => share_run(client, cmd, format).await?,
        VmCommand::Delete { name, keep_disk } => {
            with_progress(&format!("deleting VM {name}"), &format!("VM {name} deleted"), client.vm_delete(&name, keep_disk)).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_mib("512M"), Ok(512));
        assert_eq!(parse_mib("2G"), Ok(2048));
        assert_eq!(parse_mib("2GiB"), Ok(2048));
        assert_eq!(parse_mib("300"), Ok(300));
        assert_eq!(parse_gib("20G"), Ok(20));
        assert_eq!(parse_gib("20"), Ok(20));
        assert_eq!(parse_gib("1T"), Ok(1024));
        assert!(parse_gib("1500M").unwrap_err().contains("whole GiB"));
        assert!(parse_mib("lots").is_err());
        assert!(parse_mib("2X").unwrap_err().contains("unknown unit"));
    }
}
