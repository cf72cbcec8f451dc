//! Brings back VMs their owners want running after a failure shut them off: the host or
//! libvirtd went down, or QEMU was killed. The reconciler finds them (`restarts_due`); this
//! task starts them one at a time, `restart_stagger_seconds` apart, so a host coming back
//! with many VMs does not boot them all at once. A VM its owner stopped (with kvmctl or from
//! inside the guest) is never started here.
//!
//! A VM that fails again right after each start is not started forever: after
//! `RESTARTS_PER_WINDOW` starts within `WINDOW` it is left stopped, with an error saying so.

use super::context::Context;
use kvmctl_core::{Caller, Error, VmState};
use kvmctl_store::Scope;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

const RESTARTS_PER_WINDOW: usize = 3;
const WINDOW: Duration = Duration::from_secs(600);

pub async fn run(ctx: Arc<Context>, mut due: UnboundedReceiver<Vec<String>>) {
    let stagger = Duration::from_secs(ctx.config.restart_stagger_seconds);
    let mut queue: VecDeque<String> = VecDeque::new();
    let mut recent: HashMap<String, Vec<Instant>> = HashMap::new();
    let enqueue = |names: Vec<String>, queue: &mut VecDeque<String>| {
        for n in names {
            if !queue.contains(&n) {
                queue.push_back(n);
            }
        }
    };
    loop {
        if queue.is_empty() {
            match due.recv().await {
                Some(names) => enqueue(names, &mut queue),
                None => return,
            }
        }
        while let Ok(names) = due.try_recv() {
            enqueue(names, &mut queue);
        }
        let Some(name) = queue.pop_front() else { continue };
        // Starts older than the window no longer count (nor are kept).
        recent.retain(|_, starts| {
            starts.retain(|t| t.elapsed() < WINDOW);
            !starts.is_empty()
        });
        let starts = recent.entry(name.clone()).or_default();
        match restart_one(&ctx, &name, starts.len()).await {
            Ok(true) => {
                starts.push(Instant::now());
                if !stagger.is_zero() {
                    tokio::time::sleep(stagger).await;
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(vm = %name, error = %e, "could not start a VM a failure shut off; trying again next pass"),
        }
    }
}

/// Starts the VM if it is still stopped and wanted running; whether it did.
async fn restart_one(ctx: &Context, name: &str, recent_starts: usize) -> Result<bool, Error> {
    let n = super::context::parse_name("name", name)?;
    let Some(rec) = ctx.store.vm_get(&Scope::all(), &n).await? else { return Ok(false) };
    if rec.state != VmState::Stopped || !ctx.store.vm_run_wanted(&rec.id).await? {
        return Ok(false);
    }
    if recent_starts >= RESTARTS_PER_WINDOW {
        let why = format!(
            "stopped by a failure {recent_starts} times within {} minutes of being started again; left stopped (see its console log; kvmctl vm start {name})",
            WINDOW.as_secs() / 60
        );
        ctx.store.vm_run_wanted_set(&rec.id, false).await?;
        ctx.vm_transition(&rec.name, VmState::Stopped, VmState::Stopped, Some(&why)).await?;
        ctx.publish("vm.restart_given_up", &rec.name, &rec.owner, Some("stopped"), None, Some(&why));
        tracing::warn!(vm = %name, "{why}");
        return Ok(false);
    }
    tracing::info!(vm = %name, owner = %rec.owner, "starting a VM its owner wants running, shut off by a failure");
    ctx.publish(
        "vm.restarting",
        &rec.name,
        &rec.owner,
        Some("stopped"),
        None,
        Some("shut off by a failure (host, libvirtd or QEMU); starting it again"),
    );
    super::vms::vm_start(ctx, &Caller::local_admin(), name).await?;
    ctx.metrics.vm_restarts.inc();
    Ok(true)
}
