//! `kvmctl vm snapshot`: take, list (as a tree), revert to and delete a VM's snapshots.

use crate::output::age;
use crate::output::{self, OutputFormat, Table};
use crate::progress::with_progress;
use clap::Subcommand;
use kvmctl_client::Client;
use kvmctl_types::api::{Snapshot, SnapshotCreateRequest};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot of the VM's disk and UEFI variables; with --memory (a running VM) also
    /// its RAM and devices, so a revert brings it back running at this instant. A running
    /// VM pauses while its state is written.
    Create {
        /// VM name.
        name: String,
        /// Snapshot name: 1-63 of a-z, 0-9 and '-', starting with a letter.
        snapshot: String,
        #[arg(long)]
        memory: bool,
        #[arg(long)]
        description: Option<String>,
    },
    /// The VM's snapshots as a tree; `*` marks where the VM is.
    List { name: String },
    /// Bring the VM back to a snapshot. A memory snapshot resumes running; a disk-only one
    /// leaves the VM stopped, or boots it again if it was running.
    Revert { name: String, snapshot: String },
    /// Remove a snapshot; the others stay valid.
    #[command(alias = "rm")]
    Delete { name: String, snapshot: String },
}

impl Table for Vec<Snapshot> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![vec!["NAME".into(), "MEMORY".into(), "VM WAS".into(), "SIZE".into(), "AGE".into(), "DESCRIPTION".into()]];
        // Depth-first from the roots, children indented under their parent.
        fn walk(all: &[Snapshot], parent: Option<&str>, depth: usize, rows: &mut Vec<Vec<String>>) {
            for s in all.iter().filter(|s| s.parent.as_deref() == parent) {
                rows.push(vec![
                    format!("{}{}{}", "  ".repeat(depth), s.name, if s.current { " *" } else { "" }),
                    if s.memory { "yes".into() } else { "no".into() },
                    s.vm_state.clone(),
                    format!("{:.1} MiB", s.size_bytes as f64 / 1048576.0),
                    age(s.created_at),
                    if s.state == "ready" { s.description.clone() } else { format!("({}) {}", s.state, s.description) },
                ]);
                walk(all, Some(&s.name), depth + 1, rows);
            }
        }
        walk(self, None, 0, &mut rows);
        rows
    }
}

impl Table for Snapshot {
    fn rows(&self) -> Vec<Vec<String>> {
        vec![self.clone()].rows()
    }
}

pub async fn run(client: &Client, cmd: SnapshotCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        SnapshotCommand::Create { name, snapshot, memory, description } => {
            let req = SnapshotCreateRequest { name: snapshot.clone(), memory, description };
            let s = with_progress(
                &format!("taking snapshot {snapshot} of VM {name}"),
                &format!("snapshot {snapshot} of VM {name} taken"),
                client.snapshot_create(&name, &req),
            )
            .await?;
            output::print(&s, format)?;
        }
        SnapshotCommand::List { name } => output::print(&client.snapshot_list(&name).await?, format)?,
        SnapshotCommand::Revert { name, snapshot } => {
            let s = with_progress(
                &format!("reverting VM {name} to snapshot {snapshot}"),
                &format!("VM {name} reverted to snapshot {snapshot}"),
                client.snapshot_revert(&name, &snapshot),
            )
            .await?;
            output::print(&s, format)?;
        }
        SnapshotCommand::Delete { name, snapshot } => {
            with_progress(
                &format!("deleting snapshot {snapshot} of VM {name}"),
                &format!("snapshot {snapshot} of VM {name} deleted"),
                client.snapshot_delete(&name, &snapshot),
            )
            .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
