//! `kvmctl`: one binary. `kvmctl serve` runs the daemon; every other command is a client of
//! its API (the host commands, when they arrive, run locally). One module per noun.

mod agent;
mod host;
mod image;
mod lab;
mod network;
mod node;
mod output;
mod plan;
mod pool;
mod progress;
mod serve;
mod snapshot;
mod status;
mod terminal;
mod test;
mod users;
mod vm;
mod vm_create;
mod vm_devices;
mod vm_guest;

use clap::{Parser, Subcommand};
use kvmctl_client::Client;
use output::OutputFormat;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Virtual machines on KVM/QEMU hosts, through libvirt.
#[derive(Parser, Debug)]
#[command(name = "kvmctl", version, max_term_width = 100, propagate_version = true)]
#[command(
    after_help = "Start the daemon with `kvmctl serve` (as root); the other commands talk to it.\nDocumentation: README.md and docs/ in the source tree."
)]
struct Cli {
    /// Unix socket of the daemon: `serve` listens on it, other commands connect to it
    /// [default: /run/kvmctl/kvmctl.sock].
    #[arg(long, global = true, help_heading = "Global options", env = "KVMCTL_SOCKET", hide_env_values = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Talk to a daemon over TCP instead of the socket (http://HOST:PORT, or
    /// https://HOST:PORT when the daemon has a certificate).
    #[arg(long, global = true, help_heading = "Global options", env = "KVMCTL_URL", hide_env_values = true, value_name = "URL")]
    url: Option<String>,
    /// With an https:// --url: trust this CA certificate (PEM) instead of the system's
    /// roots; for a self-signed daemon certificate, that certificate.
    #[arg(long, global = true, help_heading = "Global options", env = "KVMCTL_CA_CERT", hide_env_values = true, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// API token (`kvm_...`, from `kvmctl token create`); needed over --url, and on the
    /// socket by anyone but root.
    #[arg(long, global = true, help_heading = "Global options", env = "KVMCTL_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Output format.
    #[arg(short, long, global = true, help_heading = "Global options", value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; the size of the vm variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon (REST API on a unix socket, optionally TCP).
    Serve(serve::ServeArgs),
    /// Show the daemon's version, database and hypervisor; exits 1 when libvirt is unreachable.
    Status,
    /// Print the daemon's OpenAPI document.
    Openapi,
    /// Virtual machines: create, list, show, start, stop, reboot, resize, delete.
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Guest images: build them offline from distribution packages; import, list, show, rm.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Networks: NAT and isolated networks kvmctl makes, libvirt's own, and the host port
    /// pools forwards come from.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Plans: the named sizes VMs are created with, and their hourly prices.
    #[command(subcommand)]
    Plan(plan::PlanCommand),
    /// Storage pools (admins): directories and LVM volume groups that VMs' disks go in.
    #[command(subcommand)]
    Pool(pool::PoolCommand),
    /// Users of the daemon (admins), and `user whoami`.
    #[command(subcommand)]
    User(users::UserCommand),
    /// API tokens: create (shown once), list, revoke.
    #[command(subcommand)]
    Token(users::TokenCommand),
    /// Per-user quotas: show, set.
    #[command(subcommand)]
    Quota(users::QuotaCommand),
    /// The audit log of state-changing requests (admins).
    #[command(subcommand)]
    Audit(users::AuditCommand),
    /// Compute nodes (admins): add, list, show, set, drain, undrain, remove.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// The node agent a compute node runs (its port forwards, console logs, KVM probe), and
    /// the certificates controllers and agents authenticate each other with.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Find (--dry-run) or remove debris kvmctl made that belongs to no VM: domains,
    /// volumes, DHCP reservations, firewall rules (admins). Debris is removed only once
    /// it has been reported for gc_grace_seconds (default 10 minutes).
    Gc(node::GcArgs),
    /// Hourly usage records (one per VM-hour, with its cost): your own, or anyone's (admins).
    Usage(users::UsageArgs),
    /// Make a lab file's networks and VMs, or change them to match it: the plan first (create,
    /// change, replace, delete), then the steps; a second apply changes nothing.
    Apply(lab::ApplyArgs),
    /// Delete exactly what a lab file made (what carries its kvmctl.lab label).
    Delete(lab::DeleteArgs),
    /// Ansible dynamic inventory of your VMs (--list, --host NAME), grouped by label, plan,
    /// image and node.
    Inventory(lab::InventoryArgs),
    /// Ephemeral test VMs from a spec: run (boot, upload, provision, snapshot, check each
    /// case in its own clone, report, clean up), list, show, rm.
    #[command(subcommand)]
    Test(test::TestCommand),
    /// Prepare this host: doctor, setup, uninstall (run locally, without the daemon).
    #[command(subcommand)]
    Host(host::HostCommand),
    /// Print the shell completion script for bash, zsh or fish, e.g.
    /// `kvmctl completion bash > /etc/bash_completion.d/kvmctl`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page of kvmctl, or with --dir write one per command (kvmctl.1,
    /// kvmctl-vm.1, kvmctl-vm-create.1, ...) into DIR.
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Entry points for libvirt hooks (installed by `kvmctl host setup`).
    #[command(subcommand)]
    Hook(HookCommand),
}

#[derive(Subcommand, Debug)]
enum HookCommand {
    /// libvirt's qemu hook: DOMAIN OPERATION SUB-OPERATION EXTRA, domain XML on stdin.
    Qemu {
        #[arg(num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_)) {
        // The daemon's memory is mostly shared libraries; what is its own grows with glibc's
        // per-thread malloc arenas (one per blocking-pool thread making libvirt calls). Two
        // arenas serve it as well and keep its resident size flat under load.
        // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).max_blocking_threads(64).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            if let Some(h) = hint(&e) {
                eprintln!("hint: {h}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = || client(cli.socket.as_deref(), cli.url.as_deref(), cli.token.as_deref(), cli.ca_cert.as_deref());
    match cli.command {
        Command::Host(cmd) => {
            let format = cli.output;
            tokio::task::spawn_blocking(move || host::run(cmd, format)).await?
        }
        Command::Hook(HookCommand::Qemu { args }) => Ok(host::hook_qemu(&args)),
        Command::Image(cmd) if cmd.is_local() => {
            let format = cli.output;
            tokio::task::spawn_blocking(move || image::run(cmd, format)).await?
        }
        Command::Image(cmd) => image::run_remote(&client()?, cmd, cli.output).await,
        Command::Vm(cmd) => vm::run(&client()?, cmd, cli.output).await,
        Command::Network(cmd) => network::run(&client()?, cmd, cli.output).await,
        Command::User(cmd) => users::run_user(&client()?, cmd, cli.output).await,
        Command::Token(cmd) => users::run_token(&client()?, cmd, cli.output).await,
        Command::Quota(cmd) => users::run_quota(&client()?, cmd, cli.output).await,
        Command::Audit(cmd) => users::run_audit(&client()?, cmd, cli.output).await,
        Command::Node(cmd) => node::run(&client()?, cmd, cli.output).await,
        Command::Gc(args) => node::run_gc(&client()?, args, cli.output).await,
        Command::Usage(args) => users::run_usage(&client()?, args, cli.output).await,
        Command::Plan(cmd) => plan::run_plan(&client()?, cmd, cli.output).await,
        Command::Pool(cmd) => pool::run(&client()?, cmd, cli.output).await,
        Command::Test(cmd) => test::run(&client()?, cmd, cli.output).await,
        Command::Apply(args) => lab::apply(&client()?, args, cli.output).await,
        Command::Delete(args) => lab::delete(&client()?, args, cli.output).await,
        Command::Inventory(args) => lab::inventory(&client()?, args, cli.url.as_deref()).await,
        Command::Serve(args) => serve::run(args, cli.socket).await,
        Command::Agent(cmd) => agent::run(cmd, cli.output).await,
        Command::Completion { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "kvmctl", &mut text);
            print_bytes(&text)
        }
        Command::Man { dir: None } => {
            let mut text = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut text)?;
            print_bytes(&text)
        }
        Command::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("--dir {}: {e}", dir.display()))?;
            clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &dir)
                .map_err(|e| anyhow::anyhow!("--dir {}: {e}", dir.display()))?;
            eprintln!("man pages written to {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi => {
            print!("{}", kvmctl_server::openapi::openapi_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => {
            let client = client()?;
            status::run(&client, cli.output).await
        }
    }
}

/// Writes generated text to stdout; a reader that closed early (`| head`) is no error.
fn print_bytes(text: &[u8]) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    match std::io::stdout().write_all(text).and_then(|()| std::io::stdout().flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn client(socket: Option<&Path>, url: Option<&str>, token: Option<&str>, ca_cert: Option<&Path>) -> anyhow::Result<Client> {
    let mut c = match url {
        Some(u) => Client::http(u).map_err(|e| anyhow::anyhow!("invalid --url: {e}"))?,
        None => Client::unix(socket.map(Path::to_owned).unwrap_or_else(|| kvmctl_client::DEFAULT_SOCKET.into())),
    };
    if let Some(ca) = ca_cert.filter(|p| !p.as_os_str().is_empty()) {
        c = c.with_ca_file(ca).map_err(|e| anyhow::anyhow!("invalid --ca-cert: {e}"))?;
    }
    Ok(match token.filter(|t| !t.is_empty()) {
        Some(t) => c.with_token(t),
        None => c,
    })
}

/// The error and its causes on one line: "what failed: why".
/// The next command to run after an error of the daemon, when one helps: where to see
/// what exists after "not found", your limits after a quota refusal, the nodes after a
/// capacity refusal.
fn hint(e: &anyhow::Error) -> Option<String> {
    let body = e.chain().find_map(|c| match c.downcast_ref::<kvmctl_client::ClientError>() {
        Some(kvmctl_client::ClientError::Api { body, .. }) => Some(body),
        _ => None,
    })?;
    Some(match body.error.as_str() {
        "not_found" => {
            let kind = body.message.split(" \"").next().unwrap_or_default();
            let list = match kind {
                "vm" => "kvmctl vm list",
                "image" => "kvmctl image list",
                "network" => "kvmctl network list",
                "plan" => "kvmctl plan list",
                "node" => "kvmctl node list",
                "pool" | "storage pool" => "kvmctl pool list",
                "user" => "kvmctl user list",
                "token" => "kvmctl token list",
                "test run" => "kvmctl test list",
                "snapshot" => "kvmctl vm snapshot list VM",
                "disk" => "kvmctl vm disk list VM",
                "forward" => "kvmctl vm forward list VM",
                "share" => "kvmctl vm share list VM",
                _ => return None,
            };
            format!("`{list}` shows what exists")
        }
        "quota_exceeded" => "`kvmctl quota show USER` shows your limits and use; an admin raises them with `kvmctl quota set`".into(),
        "insufficient_capacity" => {
            "`kvmctl node list` shows what each node has left; a smaller size or another --node-label may fit".into()
        }
        _ => return None,
    })
}

fn chain(e: &anyhow::Error) -> String {
    e.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}
