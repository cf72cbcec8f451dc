//! `kvmctl agent ...`: the node agent a compute node runs for the controllers (its firewall,
//! console logs and KVM probe; see docs/nodes.md), and the certificates both sides use.

use crate::output::OutputFormat;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum AgentCommand {
    /// Run the agent in the foreground until SIGINT or SIGTERM (as root, on the node).
    Run(RunArgs),
    /// Make a CA, the controllers' client certificate and one server certificate per agent
    /// host in a directory (again with more hosts: the same CA signs theirs).
    Certs {
        /// Where the files go (ca.pem, ca-key.pem, controller.pem, controller-key.pem,
        /// agent-HOST.pem, agent-HOST-key.pem).
        #[arg(long, value_name = "DIR", default_value = "/etc/kvmctl/agent-certs")]
        dir: PathBuf,
        /// An agent host's DNS name or address, as controllers will write it in its URL
        /// (repeat).
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Address and port controllers reach it on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:7443")]
    listen: SocketAddr,
    /// The agent's certificate (PEM), signed by the agent CA.
    #[arg(long, value_name = "FILE", default_value = "/etc/kvmctl/agent/agent.pem")]
    tls_cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE", default_value = "/etc/kvmctl/agent/agent-key.pem")]
    tls_key: PathBuf,
    /// The CA that signed the controllers' client certificates: only they are served.
    #[arg(long, value_name = "FILE", default_value = "/etc/kvmctl/agent/ca.pem")]
    client_ca: PathBuf,
    /// The node's libvirt.
    #[arg(long, value_name = "URI", default_value = "qemu:///system")]
    libvirt_uri: String,
    /// Where libvirt logs the VMs' serial consoles and QEMU on this node.
    #[arg(long, value_name = "DIR", default_value = "/var/log/libvirt/qemu")]
    log_dir: PathBuf,
    /// Skip the functional KVM probe (the node then reports TCG).
    #[arg(long)]
    no_probe: bool,
    /// Log filter.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    log: String,
}

pub async fn run(cmd: AgentCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        AgentCommand::Run(a) => {
            crate::serve::init_tracing(&a.log);
            let opts = kvmctl_server::agent::AgentOptions {
                listen: a.listen,
                libvirt_uri: a.libvirt_uri,
                tls_cert: a.tls_cert,
                tls_key: a.tls_key,
                client_ca: a.client_ca,
                log_dir: a.log_dir,
                probe: !a.no_probe,
            };
            let running = kvmctl_server::agent::start(opts).await?;
            eprintln!("kvmctl agent listening on {}", running.addr);
            crate::serve::wait_for_signal().await?;
            running.stop().await;
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::Certs { dir, hosts } => {
            let files = kvmctl_server::agent::certs::certs(&dir, &hosts)?;
            if format == OutputFormat::Json {
                println!("{}", serde_json::to_string_pretty(&files)?);
                return Ok(ExitCode::SUCCESS);
            }
            for f in &files.made {
                println!("made {}", f.display());
            }
            println!(
                "controllers (kvmctl.toml): agent_ca = {:?}, agent_cert = {:?}, agent_key = {:?}",
                files.ca, files.controller_cert, files.controller_key
            );
            for (h, c, k) in &files.agents {
                println!(
                    "agent on {h}: copy {}, {} and {} to it; kvmctl agent run --tls-cert .../{} --tls-key .../{} --client-ca .../ca.pem",
                    c.display(),
                    k.display(),
                    files.ca.display(),
                    c.file_name().unwrap_or_default().to_string_lossy(),
                    k.file_name().unwrap_or_default().to_string_lossy(),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
