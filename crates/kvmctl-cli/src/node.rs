//! `kvmctl node ...`: compute nodes (admins), a client of `/v1/nodes`.

use crate::output::{self, OutputFormat, Table};
use kvmctl_client::Client;
use kvmctl_types::api::{ComputeNode, GcReport, NodeAddRequest, NodeUpdateRequest};
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum NodeCommand {
    /// Register a libvirt host (its capacity is read first; an unreachable one is refused).
    Add {
        /// Node name: a DNS label.
        name: String,
        /// qemu+ssh://HOST/system, qemu+tls://HOST/system or qemu+tcp://HOST/system.
        #[arg(long)]
        uri: String,
        #[command(flatten)]
        sizing: Sizing,
        /// A label, KEY=VALUE (repeat); `vm create --node-label` asks for them.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// The node's agent (`kvmctl agent` there), https://HOST:PORT: it writes the node's
        /// port forwards and keeps its console logs. It must answer.
        #[arg(long, value_name = "URL")]
        agent: Option<String>,
    },
    /// Nodes with capacity (after reservations and overcommit), allocation and what is left.
    List,
    /// One node, with its VMs.
    Show { name: String },
    /// Change overcommit, reservations or labels.
    Set {
        name: String,
        #[command(flatten)]
        sizing: Sizing,
        /// Replace the labels, KEY=VALUE (repeat; `--label ''` clears them).
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label_or_empty)]
        labels: Vec<Option<(String, String)>>,
        /// The node's agent, https://HOST:PORT (it must answer); `--agent ''` forgets it.
        #[arg(long, value_name = "URL")]
        agent: Option<String>,
    },
    /// Stop placing new VMs on a node; its VMs keep running. With --migrate, then move each
    /// of them to the node placement picks (live when it runs, cold when stopped).
    Drain {
        name: String,
        #[arg(long)]
        migrate: bool,
    },
    /// Place new VMs on a drained node again.
    Undrain { name: String },
    /// Remove a node without VMs.
    Remove { name: String },
}

/// Overcommit and reservations of a node (`node add`, `node set`).
#[derive(clap::Args, Debug)]
pub struct Sizing {
    /// vCPUs per physical CPU it may give out [default for a new node: 2.0].
    #[arg(long, value_name = "RATIO")]
    cpu_overcommit: Option<String>,
    /// Memory overcommit [default for a new node: 1.0].
    #[arg(long, value_name = "RATIO")]
    memory_overcommit: Option<String>,
    /// CPUs kept for the host.
    #[arg(long, value_name = "N")]
    reserved_cpus: Option<u64>,
    /// Memory kept for the host, in MiB.
    #[arg(long, value_name = "MIB")]
    reserved_memory: Option<u64>,
}

pub(crate) fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

fn parse_label_or_empty(s: &str) -> Result<Option<(String, String)>, String> {
    if s.is_empty() {
        Ok(None)
    } else {
        parse_label(s).map(Some)
    }
}

impl Table for Vec<ComputeNode> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows =
            vec![["name", "state", "vms", "vcpus used/cap", "memory MiB used/cap", "disk GiB used/cap", "overcommit cpu/mem", "uri"]
                .map(String::from)
                .to_vec()];
        rows.extend(self.iter().map(|n| {
            vec![
                n.name.clone(),
                n.state.clone(),
                n.vms.to_string(),
                format!("{}/{}", n.allocated_vcpus, n.capacity_vcpus),
                format!("{}/{}", n.allocated_memory_mib, n.capacity_memory_mib),
                format!("{}/{}", n.allocated_disk_gib, n.disk_gib),
                format!("{}/{}", n.cpu_overcommit, n.memory_overcommit),
                n.uri.clone(),
            ]
        }));
        rows
    }
}

impl Table for ComputeNode {
    fn rows(&self) -> Vec<Vec<String>> {
        let n = self;
        let labels = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        vec![
            vec!["name:".into(), n.name.clone()],
            vec!["uri:".into(), n.uri.clone()],
            vec![
                "state:".into(),
                match &n.error {
                    Some(e) => format!("{} ({e})", n.state),
                    None => n.state.clone(),
                },
            ],
            vec!["physical:".into(), format!("{} CPUs, {} MiB, pool {} GiB", n.cpus, n.memory_mib, n.disk_gib)],
            vec!["reserved:".into(), format!("{} CPUs, {} MiB", n.reserved_cpus, n.reserved_memory_mib)],
            vec!["overcommit:".into(), format!("cpu {}x, memory {}x", n.cpu_overcommit, n.memory_overcommit)],
            vec!["capacity:".into(), format!("{} vCPUs, {} MiB, {} GiB", n.capacity_vcpus, n.capacity_memory_mib, n.disk_gib)],
            vec!["allocated:".into(), format!("{} vCPUs, {} MiB, {} GiB", n.allocated_vcpus, n.allocated_memory_mib, n.allocated_disk_gib)],
            vec!["available:".into(), format!("{} vCPUs, {} MiB, {} GiB", n.available_vcpus, n.available_memory_mib, n.available_disk_gib)],
            vec!["labels:".into(), if labels.is_empty() { "-".into() } else { labels }],
            vec!["vms:".into(), if n.vm_names.is_empty() { n.vms.to_string() } else { n.vm_names.join(", ") }],
            vec![
                "agent:".into(),
                match (&n.agent, &n.agent_status) {
                    (None, _) => "-".into(),
                    (Some(a), None) => a.clone(),
                    (Some(a), Some(s)) => format!("{a} ({s})"),
                },
            ],
        ]
    }

    fn header(&self) -> bool {
        false
    }
}

pub async fn run(client: &Client, cmd: NodeCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        NodeCommand::Add {
            name,
            uri,
            sizing: Sizing { cpu_overcommit, memory_overcommit, reserved_cpus, reserved_memory },
            labels,
            agent,
        } => {
            let req = NodeAddRequest {
                name,
                uri,
                cpu_overcommit,
                memory_overcommit,
                reserved_cpus,
                reserved_memory_mib: reserved_memory,
                labels: labels.into_iter().collect(),
                agent,
            };
            output::print(&client.node_add(&req).await?, format)?;
        }
        NodeCommand::List => output::print(&client.node_list().await?, format)?,
        NodeCommand::Show { name } => output::print(&client.node_get(&name).await?, format)?,
        NodeCommand::Set { name, sizing: Sizing { cpu_overcommit, memory_overcommit, reserved_cpus, reserved_memory }, labels, agent } => {
            let labels: Option<BTreeMap<String, String>> =
                if labels.is_empty() { None } else { Some(labels.into_iter().flatten().collect()) };
            let req = NodeUpdateRequest {
                cpu_overcommit,
                memory_overcommit,
                reserved_cpus,
                reserved_memory_mib: reserved_memory,
                labels,
                state: None,
                agent,
            };
            output::print(&client.node_update(&name, &req).await?, format)?;
        }
        NodeCommand::Drain { name, migrate: true } => {
            eprintln!("draining node {name} and migrating its VMs ...");
            let report = client.node_evacuate(&name).await?;
            let failed = report.vms.iter().filter(|m| m.error.is_some()).count();
            if format == OutputFormat::Json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for m in &report.vms {
                    match (&m.to, &m.error) {
                        (Some(to), _) => {
                            println!("{} -> {to} ({}, {:.1} s)", m.vm, if m.live { "live" } else { "cold" }, m.elapsed_ms as f64 / 1000.0)
                        }
                        (None, Some(e)) => println!("{} stays: {e}", m.vm),
                        (None, None) => println!("{} stays", m.vm),
                    }
                }
                eprintln!("node {name}: {} moved, {failed} stayed", report.vms.len() - failed);
            }
            return Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        NodeCommand::Drain { name, migrate: false } => {
            let req = NodeUpdateRequest { state: Some("draining".into()), ..Default::default() };
            output::print(&client.node_update(&name, &req).await?, format)?;
        }
        NodeCommand::Undrain { name } => {
            let req = NodeUpdateRequest { state: Some("active".into()), ..Default::default() };
            output::print(&client.node_update(&name, &req).await?, format)?;
        }
        NodeCommand::Remove { name } => {
            client.node_remove(&name).await?;
            eprintln!("node {name} removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kvmctl gc`: debris that belongs to no VM (admins).
#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// Only report what would be removed.
    #[arg(long)]
    dry_run: bool,
}

impl Table for GcReport {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["kind", "name", "what", "first seen", "removed"].map(String::from).to_vec()];
        rows.extend(self.items.iter().map(|i| {
            vec![
                i.kind.clone(),
                i.name.clone(),
                i.detail.clone(),
                crate::users::humantime_utc(i.first_seen_at),
                if i.removed { "yes" } else { "no" }.into(),
            ]
        }));
        rows
    }
}

pub async fn run_gc(client: &Client, args: GcArgs, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let report = client.gc(!args.dry_run).await?;
    if report.items.is_empty() && format == OutputFormat::Table {
        eprintln!("nothing to collect");
        return Ok(ExitCode::SUCCESS);
    }
    output::print(&report, format)?;
    if format == OutputFormat::Table {
        if args.dry_run {
            eprintln!("dry run: nothing was removed; `kvmctl gc` removes what is removable");
        } else if report.items.iter().any(|i| !i.removed && i.kind != "row") {
            eprintln!("debris is removed once it has been reported for gc_grace_seconds (a create in flight is never taken for it); run `kvmctl gc` again later");
        }
    }
    Ok(ExitCode::SUCCESS)
}
