//! `kvmctl network ...` and `kvmctl vm forward ...`: clients of `/v1/networks`,
//! `/v1/port-pools` and `/v1/vms/{name}/forwards`.

use crate::output::{self, OutputFormat, Table};
use kvmctl_client::Client;
use kvmctl_types::api::{Forward, ForwardCreateRequest, Network, NetworkCreateRequest, PortPoolStatus};
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a NAT network (guests reach out through the host's addresses) or, with
    /// --isolated, one whose guests reach only the host and each other. Persistent and
    /// started with libvirtd.
    Create {
        /// Network name: a DNS label (a-z, 0-9, '-').
        name: String,
        /// IPv4 subnet, e.g. 192.168.100.0/24 (/8 to /29); the host takes the first address.
        #[arg(long)]
        subnet: String,
        /// Addresses DHCP hands out, FIRST-LAST [default: the whole subnet but the host's].
        #[arg(long, value_name = "FIRST-LAST")]
        dhcp_range: Option<String>,
        /// No NAT: guests reach only the host and each other.
        #[arg(long)]
        isolated: bool,
        /// A label on the network, KEY=VALUE (repeat).
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = crate::node::parse_label)]
        labels: Vec<(String, String)>,
    },
    /// List the node's networks: kvmctl's (managed) and libvirt's own.
    List,
    /// Show one network and the VMs on it.
    Show { name: String },
    /// Delete a network kvmctl made; refused while VMs use it.
    Delete { name: String },
    /// The host port pools forwards come from, and how full they are.
    Ports,
}

#[derive(clap::Subcommand, Debug)]
pub enum ForwardCommand {
    /// Forward a host port to a port of the VM: the lowest free port of a pool (general by
    /// default), or --host-port. Works from the host's addresses and from the host itself.
    /// With --vnc, the VM's VNC console instead (VM stopped; the daemon's vnc_forwards on).
    Add {
        /// VM name.
        name: String,
        /// Port in the guest.
        #[arg(long, required_unless_present = "vnc")]
        guest_port: Option<u16>,
        /// Forward the VM's VNC console from the VNC pool; it asks for the password shown.
        #[arg(long, conflicts_with_all = ["guest_port", "from_pool", "protocol"])]
        vnc: bool,
        /// Host port to use; it must lie in a pool (`kvmctl network ports`) and be free.
        #[arg(long, conflicts_with = "from_pool")]
        host_port: Option<u16>,
        /// Pool to take the host port from: general, ssh or vnc.
        #[arg(long, value_name = "POOL", num_args = 0..=1, default_missing_value = "general")]
        from_pool: Option<String>,
        /// tcp or udp.
        #[arg(long, default_value = "tcp")]
        protocol: String,
    },
    /// List the VM's forwards.
    List { name: String },
    /// Remove a forward: `vm forward rm NAME HOST_PORT [--protocol udp]`.
    Rm {
        name: String,
        host_port: u16,
        #[arg(long, default_value = "tcp")]
        protocol: String,
    },
}

impl Table for Vec<Network> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["name", "mode", "subnet", "bridge", "state", "managed", "vms"].map(String::from).to_vec()];
        rows.extend(self.iter().map(|n| {
            vec![
                n.name.clone(),
                n.mode.clone(),
                n.subnet.clone().unwrap_or_else(|| "-".into()),
                n.bridge.clone().unwrap_or_else(|| "-".into()),
                n.state.clone(),
                if n.managed { "yes" } else { "no" }.into(),
                n.vms.len().to_string(),
            ]
        }));
        rows
    }
}

impl Table for Network {
    fn header(&self) -> bool {
        false
    }
    fn rows(&self) -> Vec<Vec<String>> {
        let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        vec![
            vec!["name:".into(), self.name.clone()],
            vec!["mode:".into(), format!("{}{}", self.mode, if self.managed { " (made by kvmctl)" } else { " (libvirt's own)" })],
            vec!["subnet:".into(), format!("{} gateway {}", dash(&self.subnet), dash(&self.gateway))],
            vec!["dhcp:".into(), dash(&self.dhcp_range)],
            vec!["bridge:".into(), dash(&self.bridge)],
            vec!["state:".into(), self.state.clone()],
            vec!["vms:".into(), if self.vms.is_empty() { "none".into() } else { self.vms.join(", ") }],
        ]
    }
}

impl Table for Vec<PortPoolStatus> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["pool", "range", "used", "size"].map(String::from).to_vec()];
        rows.extend(self.iter().map(|p| vec![p.name.clone(), p.range.clone(), p.used.to_string(), p.size.to_string()]));
        rows
    }
}

impl Table for Vec<Forward> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["protocol", "host_port", "guest_port", "pool", "password"].map(String::from).to_vec()];
        rows.extend(self.iter().map(|f| {
            vec![
                f.protocol.clone(),
                f.host_port.to_string(),
                if f.pool == "vnc" { "vnc".into() } else { f.guest_port.to_string() },
                f.pool.clone(),
                f.vnc_password.clone().unwrap_or_else(|| "-".into()),
            ]
        }));
        rows
    }
}

impl Table for Forward {
    fn rows(&self) -> Vec<Vec<String>> {
        vec![self.clone()].rows()
    }
}

pub async fn run(client: &Client, cmd: NetworkCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        NetworkCommand::Create { name, subnet, dhcp_range, isolated, labels } => {
            let req = NetworkCreateRequest { name, subnet, dhcp_range, isolated, labels: labels.into_iter().collect() };
            output::print(&client.network_create(&req).await?, format)?;
        }
        NetworkCommand::List => output::print(&client.network_list().await?, format)?,
        NetworkCommand::Show { name } => output::print(&client.network_get(&name).await?, format)?,
        NetworkCommand::Delete { name } => {
            client.network_delete(&name).await?;
            eprintln!("network {name} deleted");
        }
        NetworkCommand::Ports => output::print(&client.port_pool_list().await?, format)?,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_forward(client: &Client, cmd: ForwardCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        ForwardCommand::Add { name, guest_port, vnc, host_port, from_pool, protocol } => {
            let pool = if vnc { Some("vnc".to_string()) } else { from_pool };
            let req = ForwardCreateRequest { guest_port: guest_port.unwrap_or(0), host_port, pool, protocol: Some(protocol) };
            output::print(&client.forward_create(&name, &req).await?, format)?;
        }
        ForwardCommand::List { name } => output::print(&client.forward_list(&name).await?, format)?,
        ForwardCommand::Rm { name, host_port, protocol } => {
            client.forward_delete(&name, &protocol, host_port).await?;
            eprintln!("forward {protocol}/{host_port} of {name} removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}
