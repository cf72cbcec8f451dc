//! Data disks: `vm disk add|list|resize|rm`.
//!
//! A disk is an empty qcow2 volume in the VM's pool, attached on the virtio or virtio-scsi
//! bus with its name as the serial the guest sees. Its row is written first (`attaching`),
//! in the same transaction as its admission against the owner's disk quota and the node's
//! disk capacity; then the volume is made and the device attached (hotplugged when the VM
//! runs, and in the persistent definition either way); then the row is `attached`. A failure
//! undoes in reverse; a crash leaves an `attaching` row that `recover` finishes or undoes at
//! start-up. Only `attached` disks are in the definition the daemon writes (`domain_xml_of`).
//!
//! Removal detaches the device from the definition and asks a running guest to let it go
//! (ACPI unplug); the volume is deleted once the guest has, and the row last.
//!
//! Snapshots, clones and exports cover one disk, the root disk: they refuse VMs with data
//! disks (rather than silently leave the data out), and disks are not added to VMs with
//! snapshots (a revert would bring back a definition without them).

use super::*;
use kvmctl_libvirt::xml::DiskBus;
use kvmctl_store::DiskRecord;
use kvmctl_types::api::{VmDisk, VmDiskAddRequest, VmDiskResizeRequest};

/// Data disks one VM may have.
pub const MAX_DATA_DISKS: usize = 8;

/// How long a running guest gets to let go of an unplugged disk.
const UNPLUG_WAIT: Duration = Duration::from_secs(30);

pub(crate) fn disk_view(d: DiskRecord) -> VmDisk {
    VmDisk { name: d.name, size_gib: d.size_gib, bus: d.bus, target: d.target, state: d.state, pool: d.pool }
}

/// A data disk's name: what the guest sees as the serial, and part of the volume's name.
fn disk_name_parse(field: &str, s: &str) -> Result<String, Error> {
    let ok = (1..=16).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        return Err(Error::invalid(field, format!("{s:?} is not a disk name: 1-16 lower-case letters and digits, starting with a letter")));
    }
    Ok(s.to_owned())
}

/// The next free guest device on `bus`: `vdc`.. on virtio (`vda` is the root disk, `vdb` the
/// seed), `sde`.. on SCSI (`sda`-`sdd` are left to CD-ROMs: installer, ISOs, seed).
fn target_free(bus: DiskBus, taken: &[DiskRecord]) -> Option<String> {
    let (prefix, first) = match bus {
        DiskBus::Virtio => ("vd", b'c'),
        _ => ("sd", b'e'),
    };
    (first..=b'z').map(|c| format!("{prefix}{}", c as char)).find(|t| !taken.iter().any(|d| &d.target == t))
}

/// Refuses an operation that covers the root disk only (snapshot, clone, export) on a VM
/// with data disks.
pub(crate) async fn root_only_check(ctx: &Context, rec: &VmRecord, what: &str) -> Result<(), Error> {
    let image = images::image_record(ctx, &rec.image).await?;
    if rec.pool != image.pool {
        return Err(Error::Conflict(format!(
            "the disk of VM {} is in pool {}; {what} works on disks in their image's pool ({}) only",
            rec.name, rec.pool, image.pool
        )));
    }
    let disks = ctx.store.disk_list(&rec.id).await?;
    if let Some(d) = disks.first() {
        return Err(Error::Conflict(format!(
            "VM {} has data disks ({}); {what} covers the root disk only, so it is refused rather than leave their data out; \
             remove them first (kvmctl vm disk rm {} {})",
            rec.name,
            disks.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", "),
            rec.name,
            d.name
        )));
    }
    Ok(())
}

pub async fn disk_list(ctx: &Context, caller: &Caller, name: &str) -> Result<Vec<VmDisk>, Error> {
    let name = parse_name("name", name)?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    Ok(ctx.store.disk_list(&rec.id).await?.into_iter().map(disk_view).collect())
}

fn size_parse(size_gib: u64) -> Result<u64, Error> {
    size_check(None, None, Some(size_gib)).map_err(|e| match e {
        Error::InvalidRequest { message, .. } => Error::invalid("size_gib", message),
        e => e,
    })?;
    Ok(size_gib)
}

/// The VM must be running or stopped for its disks to change.
fn disk_state_check(rec: &VmRecord) -> Result<(), Error> {
    if !matches!(rec.state, VmState::Running | VmState::Stopped) {
        return Err(Error::Conflict(format!("VM {} is {}; change its disks when it is running or stopped", rec.name, rec.state)));
    }
    Ok(())
}

/// Why a disk's size was not admitted: the owner's quota, or the node's room.
async fn disk_refusal(ctx: &Context, rec: &VmRecord, extra_gib: u64, limits: Option<&kvmctl_core::QuotaLimits>) -> Error {
    let extra = kvmctl_core::Usage { vms: 0, vcpus: 0, memory_mib: 0, disk_gib: extra_gib, forwards: 0 };
    if let Some(e) = crate::app::users::quota_refusal_if_over(ctx, &rec.owner, limits, &extra).await {
        return e;
    }
    Error::InsufficientCapacity {
        reasons: vec![format!("node {} has no room for {extra_gib} GiB more disk; pick a smaller size, or remove disks there", rec.node)],
    }
}

pub async fn disk_add(ctx: &Context, caller: &Caller, name: &str, req: VmDiskAddRequest) -> Result<VmDisk, Error> {
    let name = parse_name("name", name)?;
    vm_record(ctx, &Scope::of(caller), &name).await?;
    let size_gib = size_parse(req.size_gib)?;
    let bus = match req.bus.as_deref() {
        None | Some("virtio") => DiskBus::Virtio,
        Some("scsi") => DiskBus::Scsi,
        Some(b) => return Err(Error::invalid("bus", format!("{b:?} is not virtio or scsi"))),
    };
    let wanted = req.name.as_deref().map(|n| disk_name_parse("name", n)).transpose()?;
    let _busy = ctx.vm_lock(&name, "adding a disk").await?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    disk_state_check(&rec)?;
    if !ctx.store.snapshot_list(&rec.id).await?.is_empty() {
        return Err(Error::Conflict(format!(
            "VM {name} has snapshots; a revert would bring back a definition without the new disk: delete them first (kvmctl snapshot list {name})"
        )));
    }
    let disks = ctx.store.disk_list(&rec.id).await?;
    if disks.len() >= MAX_DATA_DISKS {
        return Err(Error::Conflict(format!("VM {name} has {MAX_DATA_DISKS} data disks, the most a VM may have; remove one first")));
    }
    let disk_name = match wanted {
        Some(n) if disks.iter().any(|d| d.name == n) => {
            return Err(Error::Conflict(format!("VM {name} has a disk named {n} already; pick another name")))
        }
        Some(n) => n,
        None => (1..).map(|i| format!("disk{i}")).find(|n| !disks.iter().any(|d| &d.name == n)).expect("a free name"),
    };
    let target = target_free(bus, &disks).ok_or_else(|| Error::Conflict(format!("VM {name} has no free {} device left", bus.as_str())))?;
    let (pool, pool_node) = crate::app::pools::pool_for_disk(ctx, "pool", req.pool.as_deref(), &rec.pool, size_gib * GIB).await?;
    if let Some(n) = pool_node.filter(|n| *n != rec.node) {
        return Err(Error::invalid("pool", format!("pool {pool} is on node {n}, VM {name} on node {}", rec.node)));
    }
    let d = DiskRecord {
        vm_id: rec.id,
        name: disk_name.clone(),
        pool,
        volume: kvmctl_core::rules::data_volume(name.as_str(), &disk_name),
        size_gib,
        bus: bus.as_str().to_owned(),
        target,
        state: "attaching".into(),
        created_at: 0,
    };
    // Admission and the row, in one transaction.
    let limits = crate::app::users::limits_of(ctx, &rec.owner).await?;
    let node_cap = crate::app::nodes::capacity_total(ctx, &rec.node).await?;
    let admitted = ctx.store.disk_insert(&d, limits.as_ref().map(|l| l.disk_gib), node_cap.map(|c| c.2)).await.map_err(|e| match e {
        kvmctl_store::StoreError::Exists { .. } => {
            Error::Conflict(format!("VM {name} has a disk named {} or at {} already", d.name, d.target))
        }
        e => e.into(),
    })?;
    if !admitted {
        return Err(disk_refusal(ctx, &rec, size_gib, limits.as_ref()).await);
    }
    match disk_attach(ctx, &rec, &d).await {
        Ok(()) => {
            ctx.store.disk_state_set(&rec.id, &d.name, "attached").await?;
            tracing::info!(vm = %name, disk = %d.name, size_gib, bus = %d.bus, target = %d.target, "data disk added");
            Ok(disk_view(DiskRecord { state: "attached".into(), ..d }))
        }
        Err(e) => {
            tracing::warn!(vm = %name, disk = %d.name, error = %e, "adding a data disk failed; undoing");
            disk_undo(ctx, &rec, &d).await?;
            Err(e)
        }
    }
}

/// Makes the disk's volume and attaches it (live too when the VM runs).
async fn disk_attach(ctx: &Context, rec: &VmRecord, d: &DiskRecord) -> Result<(), Error> {
    let conn = ctx.node_conn(&rec.node).await?;
    ctx.failpoints.hit("disk.before_volume").await?;
    let raw = crate::app::pools::pool_is_lvm(ctx, &rec.node, &d.pool).await?;
    let format = if raw { DiskFormat::Raw } else { DiskFormat::Qcow2 };
    let spec = VolumeSpec { private: true, name: d.volume.clone(), capacity_bytes: d.size_gib * GIB, format, backing: None };
    let vol = conn.volume_create(&d.pool, spec).await.map_err(|e| crate::app::context::volume_error(e, &d.pool))?;
    ctx.failpoints.hit("disk.volume").await?;
    let device = crate::app::devices::data_disk(d, vol.path, raw);
    let live = conn.domain_xml(rec.name.as_str()).await?;
    if device.bus == DiskBus::Scsi && !live.contains("model='virtio-scsi'") {
        conn.domain_device_attach(rec.name.as_str(), xml::scsi_controller_xml()).await?;
    }
    conn.domain_device_attach(rec.name.as_str(), xml::disk_xml(&device)?).await?;
    ctx.failpoints.hit("disk.attach").await?;
    Ok(())
}

/// Undoes an add at any step: the device out of the definition (and guest), the volume, the
/// row. What is already gone is skipped.
async fn disk_undo(ctx: &Context, rec: &VmRecord, d: &DiskRecord) -> Result<(), Error> {
    let conn = ctx.node_conn(&rec.node).await?;
    let gone = |r: Result<(), NodeError>| match r {
        Err(e) if e.is_not_found() => Ok(()),
        r => r,
    };
    if let Ok(def) = conn.domain_xml(rec.name.as_str()).await {
        if xml::domain_devices(&def).disk_targets.contains(&d.target) {
            let device = crate::app::devices::data_disk(d, PathBuf::from(format!("/{}", d.volume)), false);
            if let Err(e) = conn.domain_device_detach(rec.name.as_str(), xml::disk_xml(&device)?).await {
                tracing::warn!(vm = %rec.name, disk = %d.name, error = %kvmctl_core::error::chain(&e), "cannot detach the disk while undoing");
            }
            disk_released(ctx, rec, d).await?;
        }
    }
    gone(conn.volume_delete(&d.pool, &d.volume).await)?;
    ctx.store.disk_delete(&rec.id, &d.name).await?;
    Ok(())
}

/// Waits until the running domain no longer has the disk's device (the guest let go of it);
/// a conflict saying what to do when it keeps it.
async fn disk_released(ctx: &Context, rec: &VmRecord, d: &DiskRecord) -> Result<(), Error> {
    let conn = ctx.node_conn(&rec.node).await?;
    let until = Instant::now() + UNPLUG_WAIT;
    loop {
        let live = match conn.domain_xml(rec.name.as_str()).await {
            Ok(x) => x,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if !xml::domain_devices(&live).disk_targets.iter().any(|t| t == &d.target) {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(Error::Conflict(format!(
                "the guest of VM {} has not let go of disk {} ({}) after {} s; it is out of the VM's definition, so it goes at the next stop: \
                 stop the VM and run `kvmctl vm disk rm` again",
                rec.name,
                d.name,
                d.target,
                UNPLUG_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn disk_remove(ctx: &Context, caller: &Caller, name: &str, disk: &str) -> Result<(), Error> {
    let name = parse_name("name", name)?;
    vm_record(ctx, &Scope::of(caller), &name).await?;
    let disk = disk_name_parse("disk", disk)?;
    let _busy = ctx.vm_lock(&name, "removing a disk").await?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    disk_state_check(&rec)?;
    let d = disk_find(ctx, &rec, &disk).await?;
    ctx.store.disk_state_set(&rec.id, &d.name, "detaching").await?;
    disk_undo(ctx, &rec, &d).await?;
    tracing::info!(vm = %name, disk = %d.name, "data disk removed");
    Ok(())
}

async fn disk_find(ctx: &Context, rec: &VmRecord, disk: &str) -> Result<DiskRecord, Error> {
    ctx.store.disk_list(&rec.id).await?.into_iter().find(|d| d.name == disk).ok_or_else(|| Error::NotFound {
        kind: "disk",
        name: format!("{disk} (of VM {}; kvmctl vm disk list {} shows them)", rec.name, rec.name),
    })
}

/// Grows a data disk (running: the guest sees the new size at once; stopped: the volume).
pub async fn disk_resize(ctx: &Context, caller: &Caller, name: &str, disk: &str, req: VmDiskResizeRequest) -> Result<VmDisk, Error> {
    let name = parse_name("name", name)?;
    vm_record(ctx, &Scope::of(caller), &name).await?;
    let disk = disk_name_parse("disk", disk)?;
    let size_gib = size_parse(req.size_gib)?;
    let _busy = ctx.vm_lock(&name, "resizing a disk").await?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    disk_state_check(&rec)?;
    let d = disk_find(ctx, &rec, &disk).await?;
    if d.state != "attached" {
        return Err(Error::Conflict(format!("disk {disk} of VM {name} is {}; try again when that finishes", d.state)));
    }
    if size_gib < d.size_gib {
        return Err(Error::invalid(
            "size_gib",
            format!("{size_gib} GiB is smaller than disk {disk} ({} GiB); disks only grow", d.size_gib),
        ));
    }
    if size_gib == d.size_gib {
        return Ok(disk_view(d));
    }
    let limits = crate::app::users::limits_of(ctx, &rec.owner).await?;
    let node_cap = crate::app::nodes::capacity_total(ctx, &rec.node).await?;
    if !ctx.store.disk_resize(&d, size_gib, limits.as_ref().map(|l| l.disk_gib), node_cap.map(|c| c.2)).await? {
        return Err(disk_refusal(ctx, &rec, size_gib - d.size_gib, limits.as_ref()).await);
    }
    let conn = ctx.node_conn(&rec.node).await?;
    let grown = if rec.state == VmState::Running {
        conn.domain_block_resize(name.as_str(), &d.target, size_gib * GIB).await
    } else {
        conn.volume_resize(&d.pool, &d.volume, size_gib * GIB).await
    };
    if let Err(e) = grown {
        // Give the claim back unless the volume did grow.
        let now = conn.volume_get(&d.pool, &d.volume).await.ok().flatten().map(|v| v.capacity_bytes);
        if now.is_some_and(|b| b < size_gib * GIB) {
            ctx.store.disk_size_restore(&rec.id, &d.name, size_gib, d.size_gib).await?;
        }
        return Err(e.into());
    }
    tracing::info!(vm = %name, disk = %d.name, size_gib, "data disk grown");
    Ok(disk_view(DiskRecord { size_gib, ..d }))
}

/// Data disks a crash left `attaching`: attached when the VM's definition has them, else
/// undone (device, volume, row).
pub async fn recover(ctx: &Context) -> Result<(), Error> {
    let attaching = ctx.store.disk_list_attaching().await?;
    if attaching.is_empty() {
        return Ok(());
    }
    let vms = ctx.store.vm_list(&Scope::all()).await?;
    let held = ctx.vms_held().await?;
    for d in attaching {
        let Some(rec) = vms.iter().find(|v| v.id == d.vm_id) else {
            ctx.store.disk_delete(&d.vm_id, &d.name).await?;
            continue;
        };
        // An operation (here, or in another daemon on the database) is still adding it.
        if held.contains(rec.name.as_str()) {
            continue;
        }
        let conn = ctx.node_conn(&rec.node).await?;
        let defined = conn.domain_xml(rec.name.as_str()).await.is_ok_and(|x| x.contains(&format!("{}'", d.volume)));
        if defined {
            ctx.store.disk_state_set(&rec.id, &d.name, "attached").await?;
            tracing::info!(vm = %rec.name, disk = %d.name, "finished adding a data disk a crash interrupted");
        } else {
            disk_undo(ctx, rec, &d).await?;
            tracing::info!(vm = %rec.name, disk = %d.name, "undid adding a data disk a crash interrupted");
        }
    }
    Ok(())
}
