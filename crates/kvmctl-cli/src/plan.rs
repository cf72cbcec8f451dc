//! `kvmctl plan ...`: the sizes VMs are created with, and their prices.

use crate::output::{self, OutputFormat, Table};
use crate::vm::{mem, parse_gib, parse_mib};
use kvmctl_client::Client;
use kvmctl_types::api::Plan;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum PlanCommand {
    /// List the plans VMs can be created with, with hourly prices (admins also see retired ones).
    List,
    /// Create a plan (admins).
    Create {
        name: String,
        #[arg(long)]
        cpus: u32,
        /// e.g. 2G
        #[arg(long, value_parser = parse_mib)]
        memory: u64,
        /// e.g. 20G
        #[arg(long, value_parser = parse_gib)]
        disk: u64,
        /// Price per hour, a decimal such as 0.0125 (in the daemon's currency).
        #[arg(long)]
        price: String,
        /// Position in lists [default: by size].
        #[arg(long)]
        sort_order: Option<i64>,
    },
    /// Change a plan (admins); VMs keep the sizes they were created with.
    Update {
        name: String,
        #[arg(long)]
        cpus: Option<u32>,
        #[arg(long, value_parser = parse_mib)]
        memory: Option<u64>,
        #[arg(long, value_parser = parse_gib)]
        disk: Option<u64>,
        #[arg(long)]
        price: Option<String>,
        #[arg(long)]
        sort_order: Option<i64>,
    },
    /// Retire a plan (admins): its VMs stay, new VMs cannot use it.
    Retire { name: String },
}

impl Table for Vec<Plan> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["name", "cpus", "memory", "disk", "price/hour", "state"].map(String::from).to_vec()];
        rows.extend(self.iter().map(|p| {
            vec![
                p.name.clone(),
                p.vcpus.to_string(),
                mem(p.memory_mib),
                format!("{}G", p.disk_gib),
                format!("{} {}", p.price_hourly, p.currency),
                if p.active { "active" } else { "retired" }.into(),
            ]
        }));
        rows
    }
}

pub async fn run_plan(client: &Client, cmd: PlanCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        PlanCommand::List => output::print(&client.plan_list().await?, format)?,
        PlanCommand::Create { name, cpus, memory, disk, price, sort_order } => {
            let req = kvmctl_types::api::PlanCreateRequest {
                name,
                vcpus: cpus,
                memory_mib: memory,
                disk_gib: disk,
                price_hourly: price,
                sort_order,
            };
            crate::users::plan_create(client, req, format).await?
        }
        PlanCommand::Update { name, cpus, memory, disk, price, sort_order } => {
            let req = kvmctl_types::api::PlanUpdateRequest {
                vcpus: cpus,
                memory_mib: memory,
                disk_gib: disk,
                price_hourly: price,
                sort_order,
                active: None,
            };
            crate::users::plan_update(client, &name, req, format).await?
        }
        PlanCommand::Retire { name } => {
            let req = kvmctl_types::api::PlanUpdateRequest { active: Some(false), ..Default::default() };
            crate::users::plan_update(client, &name, req, format).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}
