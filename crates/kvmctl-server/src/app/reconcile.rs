//! The reconciler: keeps the database in agreement with libvirt.
//!
//! - A VM found in `creating` or `deleting` that no operation holds was interrupted (the
//!   daemon crashed or was killed): its create is undone, its delete finished, by the same
//!   idempotent teardown a failed create runs.
//! - Any other VM takes the state libvirt reports: stopped from inside the guest, crashed,
//!   or started behind kvmctl's back. A domain deleted behind kvmctl's back leaves the VM
//!   `failed`, with an error saying how to clean up.
//!
//! It runs once when the daemon starts, before it serves, and then on a timer.

use super::vms::{vm_state_of, vm_teardown};
use super::{blocking, Context};
use kvmctl_core::{Error, VmEvent, VmState};
use kvmctl_libvirt::Node;
use std::collections::HashMap;

/// What one pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub creates_undone: Vec<String>,
    pub deletes_finished: Vec<String>,
    /// `(vm, from, to)`.
    pub states_changed: Vec<(String, VmState, VmState)>,
}

pub async fn reconcile(ctx: &Context) -> Result<ReconcileReport, Error> {
    let node = ctx.local_node.clone();
    let domains: HashMap<String, VmState> =
        blocking(move || node.domain_list()).await??.into_iter().map(|d| (d.name, vm_state_of(d.state))).collect();
    let mut report = ReconcileReport::default();
    for listed in ctx.store.vm_list().await? {
        // A VM an operation holds is that operation's business.
        let Ok(_busy) = ctx.vm_try_lock(&listed.name, super::RECONCILING) else { continue };
        let Some(rec) = ctx.store.vm_get(&listed.name).await? else { continue };
        match rec.state {
            VmState::Creating | VmState::Deleting => {
                vm_teardown(ctx, &rec, false).await?;
                ctx.store.vm_delete(&rec.name).await?;
                let list = if rec.state == VmState::Creating { &mut report.creates_undone } else { &mut report.deletes_finished };
                list.push(rec.name.to_string());
                tracing::warn!(vm = %rec.name, state = %rec.state, "finished an operation a crash interrupted");
            }
            state => {
                let event = match domains.get(rec.name.as_str()) {
                    Some(VmState::Running) => VmEvent::ObservedRunning,
                    Some(VmState::Stopped) => VmEvent::ObservedStopped,
                    Some(_) => VmEvent::ObservedCrashed,
                    None => VmEvent::ObservedVanished,
                };
                let Ok(next) = state.apply(event) else { continue };
                if next == state {
                    continue;
                }
                let error = match event {
                    VmEvent::ObservedVanished => Some(format!(
                        "the libvirt domain disappeared behind kvmctl's back; `kvmctl vm delete {}` removes what is left",
                        rec.name
                    )),
                    VmEvent::ObservedCrashed => Some("libvirt reports the domain crashed; see its console log".to_owned()),
                    _ => None,
                };
                if ctx.store.vm_transition(&rec.name, state, next, error.as_deref()).await? {
                    tracing::info!(vm = %rec.name, from = %state, to = %next, "state repaired from libvirt");
                    report.states_changed.push((rec.name.to_string(), state, next));
                }
            }
        }
    }
    Ok(report)
}
