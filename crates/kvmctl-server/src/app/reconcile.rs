//! The reconciler: keeps the database in agreement with libvirt.
//!
//! - A VM found in `creating` or `deleting` that no operation holds was interrupted (the
//!   daemon crashed or was killed): its create is undone, its delete finished, by the same
//!   idempotent teardown a failed create runs.
//! - Any other VM takes the state libvirt reports: stopped from inside the guest, crashed,
//!   or started behind kvmctl's back. A domain deleted behind kvmctl's back leaves the VM
//!   `failed`, with an error saying how to clean up.
//!
//! - Networks left `creating` or `deleting` by a crash are removed.
//! - The node's firewall table (`inet kvmctl`) gets exactly the rules of the VMs that run:
//!   a missing or changed entry of one of our VMs is rewritten, the entry of one of our VMs
//!   that does not run is removed, and an entry of a VM this daemon does not know is removed
//!   unless a running domain on the node carries that id (another control plane's VM, whose
//!   rules the libvirt hook wrote).
//!
//! - A VM its owner wants running (`run_wanted`: set by a boot, cleared by a stop) that a
//!   failure shut off (QEMU killed, the host or libvirtd down: libvirt's shutoff reason) is
//!   due to start again (`restarts_due`, started one at a time by `restart::run`). A VM shut
//!   off by a request (a shutdown from inside the guest, a destroy) is its owner's choice:
//!   it is no longer wanted running, and stays stopped through later restarts.
//!
//! It runs once when the daemon starts, before it serves, and then on a timer.

use super::context::{blocking, Context};
use super::vms::{vm_state_of, vm_teardown};
use kvmctl_core::{Error, VmEvent, VmState};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What one pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub creates_undone: Vec<String>,
    pub deletes_finished: Vec<String>,
    /// `(vm, from, to)`.
    pub states_changed: Vec<(String, VmState, VmState)>,
    pub networks_finished: Vec<String>,
    /// VM ids (table keys) whose firewall entry was written or removed.
    pub rules_repaired: Vec<String>,
    /// VMs wanted running that a failure shut off: to be started again.
    pub restarts_due: Vec<String>,
}

impl ReconcileReport {
    /// How many repairs of each kind the pass made (the metric's `kind` label).
    pub fn repairs(&self) -> [(&'static str, usize); 5] {
        [
            ("create_undone", self.creates_undone.len()),
            ("delete_finished", self.deletes_finished.len()),
            ("state_changed", self.states_changed.len()),
            ("network_finished", self.networks_finished.len()),
            ("rules_repaired", self.rules_repaired.len()),
        ]
    }
}

pub async fn reconcile(ctx: &Context) -> Result<ReconcileReport, Error> {
    let listed = ctx.local_node.domain_list().await?;
    let running_ids: HashSet<String> =
        listed.iter().filter(|d| vm_state_of(d.state) == VmState::Running).map(|d| kvmctl_netfw::vm_key(&d.uuid)).collect();
    // Domains by (node, name), with whether a failure shut them off. Other nodes are listed
    // through their connections; one that cannot be reached is left out, and its VMs keep
    // their state until it answers again.
    let entry = |node: &str, d: kvmctl_libvirt::DomainSummary| ((node.to_owned(), d.name), (vm_state_of(d.state), d.failed_stop));
    let mut domains: HashMap<(String, String), (VmState, bool)> = listed.into_iter().map(|d| entry(super::context::LOCAL, d)).collect();
    let mut unreachable: HashSet<String> = HashSet::new();
    for n in ctx.store.node_list().await? {
        if n.name.as_str() == super::context::LOCAL {
            continue;
        }
        let name = n.name.to_string();
        let listed = match ctx.node_conn(&name).await {
            Ok(conn) => conn.domain_list().await.map_err(|e| kvmctl_core::error::chain(&e)),
            Err(e) => Err(e.to_string()),
        };
        match listed {
            Ok(l) => domains.extend(l.into_iter().map(|d| entry(&name, d))),
            Err(error) => {
                tracing::warn!(node = %name, %error, "cannot list the node's domains; its VMs keep their state");
                unreachable.insert(name);
            }
        }
    }
    let mut report = ReconcileReport::default();
    for listed in ctx.store.vm_list(&kvmctl_store::Scope::all()).await? {
        // A VM an operation holds is that operation's business.
        let Ok(_busy) = ctx.vm_try_lock(&listed.name, super::context::RECONCILING).await else { continue };
        let Some(rec) = ctx.store.vm_get(&kvmctl_store::Scope::all(), &listed.name).await? else { continue };
        if unreachable.contains(&rec.node) {
            continue;
        }
        match rec.state {
            VmState::Creating | VmState::Deleting => {
                vm_teardown(ctx, &rec, false, None).await?;
                ctx.store.vm_delete(&rec.name).await?;
                let list = if rec.state == VmState::Creating { &mut report.creates_undone } else { &mut report.deletes_finished };
                list.push(rec.name.to_string());
                tracing::warn!(vm = %rec.name, state = %rec.state, "finished an operation a crash interrupted");
            }
            state => {
                let seen = domains.get(&(rec.node.clone(), rec.name.to_string())).copied();
                let event = match seen {
                    Some((VmState::Running, _)) => VmEvent::ObservedRunning,
                    Some((VmState::Stopped, _)) => VmEvent::ObservedStopped,
                    Some(_) => VmEvent::ObservedCrashed,
                    None => VmEvent::ObservedVanished,
                };
                let next = state.apply(event).unwrap_or(state);
                if next != state {
                    let error = match event {
                        VmEvent::ObservedVanished => Some(format!(
                            "the libvirt domain disappeared behind kvmctl's back; `kvmctl vm delete {}` removes what is left",
                            rec.name
                        )),
                        VmEvent::ObservedCrashed => Some("libvirt reports the domain crashed; see its console log".to_owned()),
                        _ => None,
                    };
                    if ctx.vm_transition(&rec.name, state, next, error.as_deref()).await? {
                        tracing::info!(vm = %rec.name, from = %state, to = %next, "state repaired from libvirt");
                        report.states_changed.push((rec.name.to_string(), state, next));
                    }
                }
                match seen {
                    // Stopped by a request (from inside the guest, or a destroy): its owner's
                    // choice, kept through later host and libvirtd restarts.
                    Some((VmState::Stopped, false)) if state == VmState::Running => {
                        ctx.store.vm_run_wanted_set(&rec.id, false).await?;
                    }
                    Some((VmState::Stopped, true)) if ctx.store.vm_run_wanted(&rec.id).await? => {
                        report.restarts_due.push(rec.name.to_string());
                    }
                    _ => {}
                }
            }
        }
    }
    report.networks_finished = super::networks::networks_reconcile(ctx).await?;
    report.rules_repaired = firewall_reconcile(ctx, &running_ids).await?;
    Ok(report)
}

/// Makes the node's table hold the rules of the running VMs, and nothing of VMs that do not
/// run; VMs an operation holds are left to it.
async fn firewall_reconcile(ctx: &Context, running_ids: &HashSet<String>) -> Result<Vec<String>, Error> {
    if !super::vmnet::node_is_local(ctx) {
        return Ok(Vec::new());
    }
    let mut guards = Vec::new();
    let mut ours: HashSet<String> = HashSet::new();
    let mut held: HashSet<String> = HashSet::new();
    let mut desired: BTreeMap<String, kvmctl_netfw::VmRules> = BTreeMap::new();
    for listed in ctx.store.vm_list(&kvmctl_store::Scope::all()).await? {
        let key = kvmctl_netfw::vm_key(&listed.id.to_string());
        ours.insert(key.clone());
        let Ok(guard) = ctx.vm_try_lock(&listed.name, super::context::RECONCILING).await else {
            held.insert(key);
            continue;
        };
        guards.push(guard);
        let Some(rec) = ctx.store.vm_get(&kvmctl_store::Scope::all(), &listed.name).await? else { continue };
        if rec.state == VmState::Running && running_ids.contains(&key) {
            if let Some(net) = super::vmnet::vm_net(ctx, &rec).await? {
                let rules = super::vmnet::rules_of(&rec.id.to_string(), &net);
                if !rules.is_empty() {
                    desired.insert(key, rules.normalized());
                }
            }
        }
    }
    let running = running_ids.clone();
    let result = blocking(move || -> Result<Vec<String>, kvmctl_netfw::FwError> {
        let bridges: Vec<String> = desired.values().map(|r| r.bridge.clone()).collect();
        let mut changed = Vec::new();
        kvmctl_netfw::table_sync(kvmctl_netfw::TABLE, |set| {
            let before = set.clone();
            set.retain(|k, _| held.contains(k) || desired.contains_key(k) || (!ours.contains(k) && running.contains(k)));
            for (k, v) in &desired {
                set.insert(k.clone(), v.clone());
            }
            for k in before.keys().chain(set.keys()) {
                if before.get(k).map(|v| v.normalized()) != set.get(k).map(|v| v.normalized()) && !changed.contains(k) {
                    changed.push(k.clone());
                }
            }
        })?;
        // Only now that the table (and its loopback guard) is written.
        for bridge in bridges {
            if let Err(e) = kvmctl_netfw::bridge_allow_loopback(&bridge) {
                tracing::warn!(%bridge, error = %e, "cannot set route_localnet");
            }
        }
        Ok(changed)
    })
    .await?;
    drop(guards);
    let changed = result.map_err(|e| Error::Unavailable(format!("cannot repair the firewall table: {}", kvmctl_core::error::chain(&e))))?;
    if !changed.is_empty() {
        tracing::warn!(vms = ?changed, "firewall rules repaired");
    }
    Ok(changed)
}
