//! `kvmctl pool ...`: storage pools (admins).

use crate::output::{self, OutputFormat, Table};
use kvmctl_client::Client;
use kvmctl_types::api::{PoolCreateRequest, StoragePool};
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum PoolCommand {
    /// Make a storage pool: a directory (--dir PATH), or an LVM volume group (--vg VG, made
    /// on --device DEV... when it does not exist; their contents are lost).
    Create {
        name: String,
        /// A directory on the node (made when missing).
        #[arg(long, value_name = "PATH", conflicts_with_all = ["vg", "devices"])]
        dir: Option<String>,
        /// An LVM volume group.
        #[arg(long, value_name = "VG", required_unless_present = "dir")]
        vg: Option<String>,
        /// A block device for a new volume group; repeat for more.
        #[arg(long = "device", value_name = "DEV", requires = "vg")]
        devices: Vec<String>,
    },
    /// List pools with their sizes and what lives in them.
    List,
    /// Show one pool.
    Show { name: String },
    /// Remove a pool nothing lives in (an LVM pool kvmctl made: its volume group too).
    Delete { name: String },
}

fn gib(b: u64) -> String {
    format!("{:.1}G", b as f64 / (1u64 << 30) as f64)
}

impl Table for Vec<StoragePool> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["name", "kind", "source", "state", "size", "free", "used by"].map(String::from).to_vec()];
        rows.extend(self.iter().map(|p| {
            vec![
                if p.default { format!("{} (default)", p.name) } else { p.name.clone() },
                p.kind.clone(),
                p.source.clone(),
                p.state.clone(),
                gib(p.capacity_bytes),
                gib(p.available_bytes),
                p.used_by.len().to_string(),
            ]
        }));
        rows
    }
}

impl Table for StoragePool {
    fn header(&self) -> bool {
        false
    }
    fn rows(&self) -> Vec<Vec<String>> {
        vec![
            vec!["name:".into(), self.name.clone()],
            vec!["kind:".into(), format!("{} ({}) on node {}", self.kind, self.source, self.node)],
            vec!["path:".into(), self.path.clone()],
            vec!["state:".into(), self.state.clone()],
            vec!["size:".into(), format!("{} of which {} free", gib(self.capacity_bytes), gib(self.available_bytes))],
            vec!["used by:".into(), if self.used_by.is_empty() { "nothing".into() } else { self.used_by.join(", ") }],
        ]
    }
}

pub async fn run(client: &Client, cmd: PoolCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        PoolCommand::Create { name, dir, vg, devices } => {
            let req = match dir {
                Some(path) => PoolCreateRequest { name, kind: "dir".into(), path: Some(path), ..Default::default() },
                None => PoolCreateRequest { name, kind: "lvm".into(), volume_group: vg, devices, ..Default::default() },
            };
            output::print(&client.pool_create(&req).await?, format)?;
        }
        PoolCommand::List => output::print(&client.pool_list().await?, format)?,
        PoolCommand::Show { name } => output::print(&client.pool_get(&name).await?, format)?,
        PoolCommand::Delete { name } => {
            client.pool_delete(&name).await?;
            eprintln!("pool {name} removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}
