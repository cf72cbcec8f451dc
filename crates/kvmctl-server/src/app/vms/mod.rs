//! `vms`: create, start, stop, reboot, resize and delete VMs on the node.
//!
//! Create runs these steps, each named for failure injection (`create.<step>`):
//! `reserve` (the database row, state `creating`; a taken name is a conflict), `root_volume`
//! (a qcow2 overlay whose backing file is the image, made by the pool at the requested
//! size), `seed_volume` (the NoCloud ISO, built in-process and uploaded by stream),
//! `define`, `start`. Every artefact's name is recorded in the row before it is made, so the
//! undo of every step is the same idempotent teardown (`vm_teardown`): it removes whatever of
//! domain, volumes and logs exists and skips what does not. A failed create runs it and
//! removes the row; a crash leaves the row in `creating`, and the reconciler runs it on the
//! next start. Delete is the same teardown, recorded as state `deleting` first.
//!
//! Every operation holds the VM busy (`Context::vm_lock`) and changes its state by
//! compare-and-set, so a second operation on the same VM gets a conflict.

mod access;
mod address;
mod archive;
mod backup;
mod build;
mod clone;
mod consoles;
mod create;
mod disks;
mod media;
mod migrate;
mod power;
mod resize;
mod shares;
mod teardown;
mod warm;

pub(crate) use super::context::vm_record;
pub(crate) use super::domain::*;
pub(crate) use super::guest::*;
pub use crate::app::devices::WINDOWS_11;
pub use access::*;
use address::*;
pub(crate) use backup::staging_sweep;
pub use backup::{vm_export, vm_restore, RestoreOptions};
use build::*;
pub(crate) use clone::base_release;
pub use clone::{recover as clones_recover, vm_clone};
pub(crate) use consoles::Tickets;
pub use consoles::{console_serial_open, console_ticket, console_vnc_open, TICKET_SECONDS};
pub use create::*;
pub(crate) use disks::root_only_check;
pub use disks::{disk_add, disk_list, disk_remove, disk_resize, recover as disks_recover, MAX_DATA_DISKS};
pub use media::MAX_EXTRA_ISOS;
pub use migrate::{recover as migrations_recover, vm_migrate};
pub use power::*;
pub use resize::*;
pub(crate) use shares::memory_check as shares_memory_check;
pub use shares::{share_add, share_list, share_remove, MAX_SHARES};
pub use teardown::*;

use super::{blocking, images, parse_name, readiness, ssh, Context};
use super::{forwards, vmnet};
use kvmctl_core::rules::{size_check, Attachment};
use kvmctl_core::Caller;
use kvmctl_core::{Error, VmEvent, VmState};
use kvmctl_libvirt::xml::{self, DiskFormat, DomainType, Firmware, VolumeSpec};
use kvmctl_libvirt::{DomainState, NodeError};
use kvmctl_store::{ImageRecord, Scope, VmRecord};
use kvmctl_types::api::{Vm, VmCreateRequest, VmResizeRequest, VmStopRequest};
use kvmctl_types::{Name, VmId};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub(super) const GIB: u64 = 1 << 30;

pub async fn vm_list(ctx: &Context, caller: &Caller) -> Result<Vec<Vm>, Error> {
    let mut forwards: std::collections::HashMap<VmId, Vec<kvmctl_types::api::Forward>> = std::collections::HashMap::new();
    for f in ctx.store.forward_list().await? {
        forwards.entry(f.vm_id).or_default().push(vmnet::forward_view(f));
    }
    let mut labels = ctx.store.vm_labels_all().await?;
    let vms: Vec<Vm> = ctx
        .store
        .vm_list(&Scope::of(caller))
        .await?
        .into_iter()
        .map(|r| {
            let f = forwards.remove(&r.id).unwrap_or_default();
            let l = labels.remove(&r.id).unwrap_or_default();
            Vm { forwards: f, labels: l, ..vm_view(r) }
        })
        .collect();
    Ok(with_addresses(ctx, vms).await)
}

pub async fn vm_get(ctx: &Context, caller: &Caller, name: &str) -> Result<Vm, Error> {
    let name = parse_name("name", name)?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    let readiness = readiness::stages(ctx, &rec.id).await?;
    let forwards = ctx.store.forward_list_vm(&rec.id).await?.into_iter().map(vmnet::forward_view).collect();
    let disks = ctx.store.disk_list(&rec.id).await?.into_iter().map(disks::disk_view).collect();
    let shares = ctx.store.share_list(&rec.id).await?.into_iter().map(shares::share_view).collect();
    let m = ctx.store.media_get(&rec.id).await?;
    let media = m.installer.into_iter().chain(m.extras).collect();
    let labels = ctx.store.vm_labels_get(&rec.id).await?;
    let vm = Vm { readiness, forwards, disks, shares, profile: m.profile, media, labels, ..vm_view(rec) };
    Ok(with_addresses(ctx, vec![vm]).await.remove(0))
}

/// Replaces the VM's labels (its owner or an admin); any state but `deleting`.
pub async fn vm_labels_set(ctx: &Context, caller: &Caller, name: &str, req: kvmctl_types::api::VmLabelsRequest) -> Result<Vm, Error> {
    let name = parse_name("name", name)?;
    crate::app::nodes::label_check(&req.labels)?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    if rec.state == VmState::Deleting {
        return Err(Error::Conflict(format!("VM {name} is being deleted")));
    }
    ctx.store.vm_labels_set(&rec.id, &req.labels).await?;
    tracing::info!(vm = %name, labels = req.labels.len(), "labels set");
    vm_get(ctx, caller, name.as_str()).await
}

/// Fills in each running VM's address from its network's DHCP leases: one libvirt call per
/// network, not per VM. Best effort: a network that cannot be read leaves addresses unset.
async fn with_addresses(ctx: &Context, mut vms: Vec<Vm>) -> Vec<Vm> {
    let mut networks: Vec<(String, String)> =
        vms.iter().filter(|v| v.state == "running" && v.ip.is_none()).map(|v| (v.node.clone(), v.network.clone())).collect();
    networks.sort();
    networks.dedup();
    if networks.is_empty() {
        return vms;
    }
    let mut leases = std::collections::HashMap::new();
    for (node, network) in networks {
        let Ok(conn) = ctx.node_conn(&node).await else { continue };
        if let Ok(l) = conn.network_leases(&network).await {
            leases.extend(l);
        }
    }
    for vm in vms.iter_mut().filter(|v| v.state == "running" && v.ip.is_none()) {
        vm.ip = leases.get(&vm.mac).cloned();
    }
    vms
}

/// The view of a VM after an operation: the record and its forwards.
async fn vm_out(ctx: &Context, rec: VmRecord) -> Result<Vm, Error> {
    let forwards = ctx.store.forward_list_vm(&rec.id).await?.into_iter().map(vmnet::forward_view).collect();
    let disks = ctx.store.disk_list(&rec.id).await?.into_iter().map(disks::disk_view).collect();
    let shares = ctx.store.share_list(&rec.id).await?.into_iter().map(shares::share_view).collect();
    let m = ctx.store.media_get(&rec.id).await?;
    let media = m.installer.into_iter().chain(m.extras).collect();
    let labels = ctx.store.vm_labels_get(&rec.id).await?;
    Ok(Vm { forwards, disks, shares, profile: m.profile, media, labels, ..vm_view(rec) })
}

pub(crate) fn vm_view(r: VmRecord) -> Vm {
    Vm {
        id: r.id,
        name: r.name.to_string(),
        state: r.state.as_str().to_owned(),
        image: r.image.to_string(),
        plan: r.plan,
        vcpus: r.vcpus,
        memory_mib: r.memory_mib,
        disk_gib: r.disk_gib,
        node: r.node,
        network: r.network,
        mac: r.mac,
        ip: r.ip,
        ssh_user: r.ssh_user,
        forwards: Vec::new(),
        host_key: r.host_key.map(|k| format!("{k} ({})", r.host_key_source.as_deref().unwrap_or("first use"))),
        readiness: Vec::new(),
        firmware: r.firmware,
        tpm: r.tpm,
        disks: Vec::new(),
        shares: Vec::new(),
        profile: None,
        media: Vec::new(),
        owner: r.owner,
        labels: Default::default(),
        error: r.error,
        created_at: r.created_at,
        expires_at: r.expires_at,
        placement: Vec::new(),
    }
}

pub(crate) fn vm_state_of(s: DomainState) -> VmState {
    match s {
        DomainState::Running | DomainState::Paused | DomainState::ShuttingDown => VmState::Running,
        DomainState::Shutoff => VmState::Stopped,
        DomainState::Crashed | DomainState::Other => VmState::Failed,
    }
}
