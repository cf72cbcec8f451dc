//! Snapshots: kvmctl's own tree (ADR 0010). A snapshot is a qcow2 internal snapshot of the
//! VM's root disk tagged with the snapshot's id, a copy of its UEFI variable store (when it
//! has one) and, with `memory`, a saved-domain image (`virDomainSaveFlags`). A running VM is
//! saved (RAM to a file, the domain stops), snapshotted while nothing writes its disk, and
//! restored from that file: its guest sees a pause, not a reboot.
//!
//! libvirt 9.0 cannot do this itself: it refuses internal snapshots of UEFI (pflash) guests
//! and reverts external ones only from 9.9. qcow2 internal snapshots share clusters by
//! reference count, so deleting one in the middle of the tree leaves every other valid.
//!
//! The row is written (`creating`) before anything is made, and removed last (`deleting`);
//! `recover` finishes or undoes what a crash interrupted before the daemon takes requests.
//! Files live under `snapshot_dir/<vm id>/` and are named by ids, never by user input.

use super::context::{vm_record, LOCAL};
use super::{parse_name, readiness, vmnet, Context};
use kvmctl_core::{Caller, Error, VmState};
use kvmctl_libvirt::xml;
use kvmctl_libvirt::DomainState;
use kvmctl_store::{Scope, SnapshotRecord, VmRecord};
use kvmctl_types::api::{Snapshot, SnapshotCreateRequest};
use std::path::{Path, PathBuf};

/// Snapshots one VM may have.
pub const MAX_SNAPSHOTS: usize = 32;
/// Longest description.
const MAX_DESCRIPTION: usize = 1000;

pub(crate) fn vm_dir(ctx: &Context, rec: &VmRecord) -> PathBuf {
    ctx.config.snapshot_dir.join(rec.id.to_string())
}

pub(crate) fn memory_file(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.mem"))
}

pub(crate) fn nvram_file(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.nvram"))
}

/// Where a running VM's state waits while its disk is worked on (no memory kept).
pub(crate) fn pause_file(dir: &Path) -> PathBuf {
    dir.join("paused.save")
}

fn view(s: SnapshotRecord, current: Option<&str>, names: &std::collections::HashMap<String, String>) -> Snapshot {
    Snapshot {
        current: current == Some(s.id.as_str()),
        parent: s.parent.as_ref().and_then(|p| names.get(p).cloned()),
        name: s.name,
        description: s.description,
        memory: s.memory,
        vm_state: s.vm_state,
        state: s.state,
        size_bytes: s.size_bytes,
        created_at: s.created_at,
    }
}

/// The VM, held busy, if snapshots can work on it: on the local node, running or stopped.
pub(crate) async fn vm_ready<'a>(
    ctx: &'a Context,
    caller: &Caller,
    vm: &str,
    op: &'static str,
) -> Result<(VmRecord, super::context::VmGuard<'a>), Error> {
    let name = parse_name("name", vm)?;
    vm_record(ctx, &Scope::of(caller), &name).await?;
    let busy = ctx.vm_lock(&name, op).await?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    if rec.node != LOCAL {
        return Err(Error::Conflict(format!(
            "VM {} is on node {}; snapshots work on the daemon's own node only for now",
            rec.name, rec.node
        )));
    }
    if !matches!(rec.state, VmState::Running | VmState::Stopped) {
        return Err(Error::Conflict(format!("VM {} is {}; snapshots need it running or stopped", rec.name, rec.state.as_str())));
    }
    Ok((rec, busy))
}

pub(crate) async fn running(ctx: &Context, rec: &VmRecord) -> Result<bool, Error> {
    Ok(matches!(ctx.local_node.domain_state(rec.name.as_str()).await?, DomainState::Running | DomainState::Paused))
}

/// The root disk's file on the node.
pub(crate) async fn root_disk(ctx: &Context, rec: &VmRecord) -> Result<PathBuf, Error> {
    ctx.local_node
        .volume_get(&rec.pool, &rec.root_volume)
        .await?
        .map(|v| v.path)
        .ok_or_else(|| Error::Conflict(format!("the root disk of VM {} is missing from pool {}", rec.name, rec.pool)))
}

/// Runs `qemu-img ARGS`; its output, whatever its exit status (each caller says what a
/// failure means). Failing to start it is an error that says how to install it.
pub(crate) async fn qemu_img<I, A>(args: I) -> Result<std::process::Output, Error>
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    tokio::process::Command::new("qemu-img")
        .args(args)
        .output()
        .await
        .map_err(|e| Error::Internal(format!("cannot run qemu-img (is it installed? `kvmctl host setup` installs it): {e}")))
}

/// `qemu-img snapshot OP TAG DISK` (`-c` make, `-a` apply, `-d` delete). The disk must not be
/// in use: qemu-img takes the image's write lock and fails if QEMU holds it.
async fn disk_snapshot(op: &str, tag: &str, disk: &Path) -> Result<(), Error> {
    let out = qemu_img([std::ffi::OsStr::new("snapshot"), op.as_ref(), tag.as_ref(), disk.as_os_str()]).await?;
    if !out.status.success() {
        return Err(Error::Internal(format!(
            "qemu-img snapshot {op} {tag} {}: {}",
            disk.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

pub(crate) fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot remove a snapshot file"),
    }
}

pub(crate) fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Runs `work` with the VM's disk at rest: a running VM is saved to `state_file` first and
/// restored from it after (also when `work` failed); a stopped VM as it is.
pub(crate) async fn at_rest<T>(
    ctx: &Context,
    rec: &VmRecord,
    was_running: bool,
    state_file: &Path,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    if !was_running {
        return work.await;
    }
    ctx.local_node.domain_save(rec.name.as_str(), state_file).await?;
    let done = async {
        ctx.failpoints.hit("snapshot.saved").await?;
        work.await
    }
    .await;
    let restored = ctx.local_node.domain_restore(state_file, true).await.map_err(Error::from);
    let value = done?;
    restored?;
    Ok(value)
}

pub async fn snapshot_create(ctx: &Context, caller: &Caller, vm: &str, req: SnapshotCreateRequest) -> Result<Snapshot, Error> {
    let snap = parse_name("name", &req.name)?;
    let description = req.description.unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION || description.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Error::invalid("description", format!("use up to {MAX_DESCRIPTION} characters, no control characters")));
    }
    let (rec, _busy) = vm_ready(ctx, caller, vm, "snapshotting").await?;
    crate::app::vms::root_only_check(ctx, &rec, "a snapshot").await?;
    if req.memory {
        crate::app::vms::shares_memory_check(ctx, &rec, "a snapshot with memory").await?;
    }
    let was_running = running(ctx, &rec).await?;
    if req.memory && !was_running {
        return Err(Error::invalid("memory", format!("VM {} is stopped: there is no memory to keep; leave --memory out", rec.name)));
    }
    let existing = ctx.store.snapshot_list(&rec.id).await?;
    if existing.len() >= MAX_SNAPSHOTS {
        return Err(Error::Conflict(format!("VM {} has {MAX_SNAPSHOTS} snapshots, the most it may have; delete one first", rec.name)));
    }
    let current = ctx.store.vm_snapshot(&rec.id).await?;
    let live = ctx.local_node.domain_xml(rec.name.as_str()).await?;
    let mut s = SnapshotRecord {
        id: uuid::Uuid::new_v4().to_string(),
        vm_id: rec.id,
        name: snap.to_string(),
        parent: current,
        description,
        memory: req.memory,
        vm_state: if was_running { "running" } else { "stopped" }.into(),
        state: "creating".into(),
        size_bytes: 0,
        created_at: 0,
        // Whether a warm clone of it can be re-identified through the agent (ADR 0012).
        agent: req.memory && xml::guest_agent_connected(&live),
    };
    // Admitted against the owner's disk quota at its expected size (RAM and the NVRAM store);
    // the real size replaces it once known.
    if s.memory {
        s.size_bytes = rec.memory_mib * 1024 * 1024 + 1024 * 1024;
    }
    let limits = super::users::limits_of(ctx, &rec.owner).await?;
    let max_disk_gib = limits.map(|l| l.disk_gib);
    if !ctx.store.snapshot_insert(&s, max_disk_gib).await? {
        return Err(super::users::disk_refusal(ctx, &rec.owner, max_disk_gib, s.size_bytes).await);
    }
    ctx.publish("vm.snapshot", &rec.name, &rec.owner, Some("creating"), None, Some(&s.name));
    let dir = vm_dir(ctx, &rec);
    let made = async {
        std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
        let disk = root_disk(ctx, &rec).await?;
        let nvram = xml::domain_nvram(&live);
        let state_file = if s.memory { memory_file(&dir, &s.id) } else { pause_file(&dir) };
        let work = async {
            disk_snapshot("-c", &s.id, &disk).await?;
            ctx.failpoints.hit("snapshot.disk").await?;
            if let Some(n) = &nvram {
                std::fs::copy(n, nvram_file(&dir, &s.id)).map_err(|e| Error::Internal(format!("cannot copy {}: {e}", n.display())))?;
            }
            Ok(())
        };
        let r = at_rest(ctx, &rec, was_running, &state_file, work).await;
        if !s.memory {
            remove(&pause_file(&dir));
        }
        r
    }
    .await;
    if let Err(e) = made {
        undo(ctx, &rec, &s).await;
        ctx.store.snapshot_delete(&s).await?;
        ctx.publish("vm.snapshot", &rec.name, &rec.owner, Some("failed"), None, Some(&s.name));
        return Err(e);
    }
    s.size_bytes = file_size(&memory_file(&dir, &s.id)) + file_size(&nvram_file(&dir, &s.id));
    s.state = "ready".into();
    ctx.store.snapshot_settle(&s.id, "ready", s.size_bytes).await?;
    ctx.store.vm_snapshot_set(&rec.id, Some(&s.id)).await?;
    ctx.publish("vm.snapshot", &rec.name, &rec.owner, Some("ready"), None, Some(&s.name));
    tracing::info!(vm = %rec.name, snapshot = %s.name, memory = s.memory, running = was_running, "snapshot taken");
    let names = snapshot_names(ctx, &rec).await?;
    let current = Some(s.id.clone());
    Ok(view(s, current.as_deref(), &names))
}

/// Removes the disk's tag `id`, with the disk at rest (a running VM is saved around it).
async fn tag_remove(ctx: &Context, rec: &VmRecord, id: &str) -> Result<(), Error> {
    let dir = vm_dir(ctx, rec);
    let was_running = running(ctx, rec).await?;
    let disk = root_disk(ctx, rec).await?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
    let r = at_rest(ctx, rec, was_running, &pause_file(&dir), disk_snapshot("-d", id, &disk)).await;
    remove(&pause_file(&dir));
    r
}

/// Removes what a snapshot made (its disk tag and files), skipping what is not there.
async fn undo(ctx: &Context, rec: &VmRecord, s: &SnapshotRecord) {
    // The tag is absent when the failure came before it was made.
    if let Err(e) = tag_remove(ctx, rec, &s.id).await {
        tracing::debug!(vm = %rec.name, snapshot = %s.name, error = %e, "no disk snapshot to remove");
    }
    let dir = vm_dir(ctx, rec);
    remove(&memory_file(&dir, &s.id));
    remove(&nvram_file(&dir, &s.id));
}

async fn snapshot_names(ctx: &Context, rec: &VmRecord) -> Result<std::collections::HashMap<String, String>, Error> {
    Ok(ctx.store.snapshot_list(&rec.id).await?.into_iter().map(|s| (s.id, s.name)).collect())
}

pub async fn snapshot_list(ctx: &Context, caller: &Caller, vm: &str) -> Result<Vec<Snapshot>, Error> {
    let name = parse_name("name", vm)?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    let all = ctx.store.snapshot_list(&rec.id).await?;
    let names = all.iter().map(|s| (s.id.clone(), s.name.clone())).collect();
    let current = ctx.store.vm_snapshot(&rec.id).await?;
    Ok(all.into_iter().map(|s| view(s, current.as_deref(), &names)).collect())
}

pub(crate) async fn snapshot_of(ctx: &Context, rec: &VmRecord, snapshot: &str) -> Result<SnapshotRecord, Error> {
    let snap = parse_name("snapshot", snapshot)?;
    match ctx.store.snapshot_get(&rec.id, snap.as_str()).await? {
        Some(s) if s.state == "ready" => Ok(s),
        Some(s) => Err(Error::Conflict(format!("snapshot {} is {}; try again when that finishes", s.name, s.state))),
        None => Err(Error::NotFound { kind: "snapshot", name: snap.to_string() }),
    }
}

/// Brings the VM back to a snapshot: its disk and UEFI variables, and with memory its RAM, so
/// it runs on from that instant. A disk-only snapshot leaves the VM as it was before the
/// revert: stopped, or running from a fresh boot of the reverted disk.
pub async fn snapshot_revert(ctx: &Context, caller: &Caller, vm: &str, snapshot: &str) -> Result<Snapshot, Error> {
    let (rec, _busy) = vm_ready(ctx, caller, vm, "reverting").await?;
    let s = snapshot_of(ctx, &rec, snapshot).await?;
    let was_running = running(ctx, &rec).await?;
    let dir = vm_dir(ctx, &rec);
    let disk = root_disk(ctx, &rec).await?;
    let nvram = xml::domain_nvram(&ctx.local_node.domain_xml(rec.name.as_str()).await?);
    if s.memory && !memory_file(&dir, &s.id).exists() {
        return Err(Error::Conflict(format!("the memory image of snapshot {} is missing from {}", s.name, dir.display())));
    }
    if was_running {
        ctx.local_node.domain_destroy(rec.name.as_str()).await?;
    }
    ctx.failpoints.hit("revert.stopped").await?;
    disk_snapshot("-a", &s.id, &disk).await?;
    if let (Some(n), true) = (&nvram, nvram_file(&dir, &s.id).exists()) {
        std::fs::copy(nvram_file(&dir, &s.id), n).map_err(|e| Error::Internal(format!("cannot restore {}: {e}", n.display())))?;
    }
    let run = if s.memory {
        ctx.local_node.domain_restore(&memory_file(&dir, &s.id), true).await?;
        // The guest's clock resumes where it was saved: set it from the host's through the
        // guest agent, where there is one (a guest without one catches up by NTP, if at all).
        if let Err(e) = ctx.local_node.domain_clock_sync(rec.name.as_str()).await {
            tracing::info!(vm = %rec.name, error = %e, "the guest's clock was not set after the revert (no guest agent?)");
        }
        true
    } else if was_running {
        ctx.local_node.domain_start(rec.name.as_str()).await?;
        readiness::boot_started(ctx, &rec).await?;
        true
    } else {
        false
    };
    ctx.store.vm_run_wanted_set(&rec.id, run).await?;
    let after = if run { VmState::Running } else { VmState::Stopped };
    ctx.vm_transition(&rec.name, rec.state, after, None).await?;
    if run {
        vmnet::rules_apply(ctx, &rec).await?;
    }
    ctx.store.vm_snapshot_set(&rec.id, Some(&s.id)).await?;
    ctx.publish("vm.snapshot", &rec.name, &rec.owner, Some("reverted"), None, Some(&s.name));
    tracing::info!(vm = %rec.name, snapshot = %s.name, running = run, "reverted to snapshot");
    let names = snapshot_names(ctx, &rec).await?;
    Ok(view(s.clone(), Some(&s.id), &names))
}

/// Removes a snapshot; its children take its parent. The VM keeps running (it pauses while
/// the disk's tag is removed).
pub async fn snapshot_delete(ctx: &Context, caller: &Caller, vm: &str, snapshot: &str) -> Result<(), Error> {
    let (rec, _busy) = vm_ready(ctx, caller, vm, "deleting a snapshot").await?;
    let s = snapshot_of(ctx, &rec, snapshot).await?;
    ctx.store.snapshot_settle(&s.id, "deleting", s.size_bytes).await?;
    if let Err(e) = tag_remove(ctx, &rec, &s.id).await {
        // Still whole: it goes back to `ready` and may be deleted again.
        ctx.store.snapshot_settle(&s.id, "ready", s.size_bytes).await?;
        return Err(e);
    }
    let dir = vm_dir(ctx, &rec);
    remove(&memory_file(&dir, &s.id));
    remove(&nvram_file(&dir, &s.id));
    ctx.store.snapshot_delete(&s).await?;
    ctx.publish("vm.snapshot", &rec.name, &rec.owner, Some("deleted"), None, Some(&s.name));
    Ok(())
}

/// Removes all of a VM's snapshot files and rows (its delete: the disk goes with the VM).
pub(crate) async fn remove_all(ctx: &Context, rec: &VmRecord) -> Result<(), Error> {
    let dir = vm_dir(ctx, rec);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a VM's snapshot files"),
    }
    ctx.store.snapshot_delete_vm(&rec.id).await?;
    Ok(())
}

/// At start-up, before requests: a VM whose state a crash left in a save file (while a
/// snapshot or a clone read its disk) is restored from it; a snapshot being made is undone,
/// one being deleted is deleted.
pub async fn recover(ctx: &Context) -> Result<(), Error> {
    let unsettled = ctx.store.snapshot_list_unsettled().await?;
    let vms = ctx.store.vm_list(&Scope::all()).await?;
    // VMs an operation holds (here, or in another daemon on the database) are its business.
    let held_names = ctx.vms_held().await?;
    let held: std::collections::HashSet<_> = vms.iter().filter(|v| held_names.contains(v.name.as_str())).map(|v| v.id).collect();
    for rec in vms.iter().filter(|v| v.node == LOCAL && !held.contains(&v.id)) {
        let dir = vm_dir(ctx, rec);
        // A memory snapshot being made saved the VM to its own file.
        let mut saved = vec![pause_file(&dir)];
        saved.extend(unsettled.iter().filter(|s| s.vm_id == rec.id && s.vm_state == "running").map(|s| memory_file(&dir, &s.id)));
        let Some(file) = saved.into_iter().find(|f| f.exists()) else { continue };
        if matches!(ctx.local_node.domain_state(rec.name.as_str()).await, Ok(DomainState::Shutoff)) {
            match ctx.local_node.domain_restore(&file, true).await {
                Ok(()) => tracing::info!(vm = %rec.name, "restored a VM a crash left saved while its disk was read"),
                Err(e) => tracing::warn!(vm = %rec.name, error = %e, "cannot restore a VM saved while its disk was read"),
            }
        }
        remove(&pause_file(&dir));
    }
    for s in unsettled.into_iter().filter(|s| !held.contains(&s.vm_id)) {
        let Some(rec) = vms.iter().find(|v| v.id == s.vm_id) else {
            ctx.store.snapshot_delete(&s).await?;
            continue;
        };
        undo(ctx, rec, &s).await;
        ctx.store.snapshot_delete(&s).await?;
        tracing::info!(vm = %rec.name, snapshot = %s.name, was = %s.state, "finished a snapshot operation a crash interrupted");
    }
    Ok(())
}
