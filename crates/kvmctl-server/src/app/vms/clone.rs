//! Clone: a new VM from another's disk (as it is now, or at one of its snapshots), with its
//! own identity. It is a create whose root disk comes from the source instead of the image:
//! placement (on the source's node), quota, address, seed, key and forward are create's.
//!
//! - **linked**: an overlay on a read-only base, a qcow2 file holding the source's disk at
//!   that instant over the source's image (only what the source changed is copied). Clones
//!   of one snapshot share its base; the base outlives the source and goes with its last
//!   clone (`clone_bases`, in the owner's disk quota).
//! - **full**: a standalone copy of the disk, flattened.
//!
//! The new identity: a new VM id (cloud-init's instance id, so cloud-init runs its
//! per-instance steps again), hostname, MAC, address, pinned SSH host key (cloud-init
//! replaces the source's), VM key (the source's is removed from the clone's
//! `authorized_keys`), machine-id (made anew on first boot) and SSH forward. The source's
//! user-data does not run again. A UEFI clone starts from a copy of the source's variables.

use super::build::{vm_build, BuildOptions, RootDisk, Steps};
use super::create::{build_end, create_reserve, CreateSpec};
use super::*;
use crate::app::snapshots;
use kvmctl_core::rules;
use kvmctl_store::{CloneBaseRecord, SnapshotRecord};
use kvmctl_types::api::VmCloneRequest;
use std::path::Path;

/// What a clone's first boot does to stop being its source: a machine-id of its own, and
/// no login with the source's VM key. Names are validated (a-z, 0-9, '-'), so safe in shell.
fn identity_reset(source: &str, user: &str) -> Vec<String> {
    vec![
        "rm -f /etc/machine-id /var/lib/dbus/machine-id && (systemd-machine-id-setup || dbus-uuidgen --ensure=/etc/machine-id)".into(),
        format!("h=$(getent passwd {user} | cut -d: -f6) && [ -f \"$h/.ssh/authorized_keys\" ] && sed -i '/ kvmctl-{source}$/d' \"$h/.ssh/authorized_keys\" || true"),
    ]
}

/// A new VM's identity and seed, made in memory, for a VM whose disk was VM `source`'s
/// (whose login user is `user`): a clone's or a restore's.
pub(super) struct Identity {
    pub(super) id: VmId,
    pub(super) vm_key: String,
    pub(super) vm_public: String,
    pub(super) seed_iso: Vec<u8>,
    pub(super) host_key: Option<String>,
    /// The host key in the seed (cloud-init images).
    pub(super) host_key_pair: Option<kvmctl_cloudinit::seed::HostKey>,
}

pub(super) fn identity_new(source: &Name, user: &Name, image: &ImageRecord, name: &Name) -> Result<Identity, Error> {
    let id = VmId::new();
    let (vm_key, vm_public) = ssh::key_generate(&format!("kvmctl-{name}"))?;
    let mut seed_spec = kvmctl_cloudinit::seed::SeedSpec::new(&id.to_string(), name.as_str(), user.as_str(), vec![vm_public.clone()]);
    seed_spec.runcmd = identity_reset(source.as_str(), user.as_str());
    let (seed_iso, host_key, host_key_pair) = super::build::seed_with_key(seed_spec, image, name)?;
    Ok(Identity { id, vm_key, vm_public, seed_iso, host_key, host_key_pair })
}

/// The clone's identity and seed, made in memory (with what a warm wake installs itself).
fn clone_spec(
    src: &VmRecord,
    image: &ImageRecord,
    name: Name,
) -> Result<(CreateSpec, String, Option<kvmctl_cloudinit::seed::HostKey>), Error> {
    let user = parse_name("user", &src.ssh_user)?;
    let Identity { id, vm_key, vm_public, seed_iso, host_key, host_key_pair } = identity_new(&src.name, &user, image, &name)?;
    let spec = CreateSpec {
        name,
        image: image.clone(),
        plan: src.plan.clone(),
        vcpus: src.vcpus,
        memory_mib: src.memory_mib,
        disk_gib: src.disk_gib,
        firmware: src.firmware.clone(),
        // A TPM of its own, fresh: secrets sealed to the source's TPM stay with the source.
        tpm: src.tpm,
        user: src.ssh_user.clone(),
        network: src.network.clone(),
        id,
        vm_key,
        seed_iso,
        host_key,
        shares: Vec::new(),
        media: Default::default(),
        pool: image.pool.clone(),
        pool_node: None,
    };
    Ok((spec, vm_public, host_key_pair))
}

/// `qemu-img convert` of the source's disk (at snapshot tag `tag`, read while the source may
/// run: a snapshot's clusters never change) into a new qcow2 `to`, over `backing` (linked) or
/// flattened (full).
pub(super) async fn disk_copy(from: &Path, tag: Option<&str>, to: &Path, backing: Option<(&Path, &str)>) -> Result<(), Error> {
    let mut args: Vec<std::ffi::OsString> = ["convert", "-q", "-O", "qcow2"].map(Into::into).to_vec();
    if let Some(tag) = tag {
        args.extend(["-U".into(), "-l".into(), format!("snapshot.name={tag}").into()]);
    }
    if let Some((file, format)) = backing {
        args.extend(["-B".into(), file.into(), "-F".into(), format.into()]);
    }
    args.extend([from.into(), to.into()]);
    let out = snapshots::qemu_img(args).await?;
    if !out.status.success() {
        return Err(Error::Internal(format!(
            "qemu-img convert {} to {}: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Makes the clone's root disk from the source's (the source is held busy): a full copy as
/// the clone's root volume, or a base to lay the clone's overlay on (one already made from
/// the same snapshot is shared). Also copies the source's UEFI variables for the clone.
async fn clone_disk(
    ctx: &Context,
    src: &VmRecord,
    snap: Option<&SnapshotRecord>,
    image: &ImageRecord,
    rec: &VmRecord,
    full: bool,
    made: &mut Vec<String>,
) -> Result<(RootDisk, Option<PathBuf>), Error> {
    let disk = snapshots::root_disk(ctx, src).await?;
    let pool_dir = disk.parent().map(Path::to_path_buf).unwrap_or_default();
    let src_dir = snapshots::vm_dir(ctx, src);
    let own_dir = ctx.config.snapshot_dir.join(rec.id.to_string());
    std::fs::create_dir_all(&own_dir).map_err(|e| Error::Internal(format!("cannot create {}: {e}", own_dir.display())))?;
    let nvram_to = own_dir.join("clone.nvram");
    let nvram_from = match snap {
        Some(s) => Some(snapshots::nvram_file(&src_dir, &s.id)).filter(|p| p.exists()),
        None => xml::domain_nvram(&ctx.local_node.domain_xml(src.name.as_str()).await?).filter(|p| p.exists()),
    };
    let copy_nvram = || -> Result<Option<PathBuf>, Error> {
        match &nvram_from {
            Some(from) => {
                std::fs::copy(from, &nvram_to).map_err(|e| Error::Internal(format!("cannot copy {}: {e}", from.display())))?;
                Ok(Some(nvram_to.clone()))
            }
            None => Ok(None),
        }
    };
    if !full {
        if let Some(s) = snap {
            if let Some(b) = ctx.store.clone_base_take(&src.id, &s.id, &rec.owner, &rec.id).await? {
                tracing::info!(vm = %rec.name, base = %b.id, "sharing the linked clones' base of the snapshot");
                return Ok((RootDisk::Base(pool_dir.join(&b.volume)), copy_nvram()?));
            }
        }
    }
    let image_file = pool_dir.join(&image.volume);
    let image_format = if image.format == "raw" { "raw" } else { "qcow2" };
    let (to, backing) = if full {
        made.push(rec.root_volume.clone());
        (pool_dir.join(&rec.root_volume), None)
    } else {
        let id = uuid::Uuid::new_v4().to_string();
        let b = CloneBaseRecord {
            volume: rules::base_volume(&id),
            id,
            owner: rec.owner.clone(),
            source_vm: src.id,
            snapshot: snap.map(|s| s.id.clone()),
            pool: src.pool.clone(),
            state: "creating".into(),
            // Admitted at most the source's disk file (what the base copies of it, and less
            // when the disk holds snapshots); its real size replaces it once made.
            size_bytes: snapshots::file_size(&disk).max(1),
            created_at: 0,
        };
        let max_disk_gib = crate::app::users::limits_of(ctx, &rec.owner).await?.map(|l| l.disk_gib);
        if !ctx.store.clone_base_insert(&b, &rec.id, max_disk_gib).await? {
            return Err(crate::app::users::disk_refusal(ctx, &rec.owner, max_disk_gib, b.size_bytes).await);
        }
        (pool_dir.join(&b.volume), Some((image_file.as_path(), image_format)))
    };
    ctx.failpoints.hit("clone.recorded").await?;
    let work = async {
        disk_copy(&disk, snap.map(|s| s.id.as_str()), &to, backing).await?;
        ctx.failpoints.hit("clone.copied").await?;
        copy_nvram()
    };
    let nvram = match snap {
        // A snapshot's data never changes: the source runs on while it is read.
        Some(_) => work.await?,
        // The disk as it is now: read with the source at rest.
        None => {
            let running = snapshots::running(ctx, src).await?;
            std::fs::create_dir_all(&src_dir).map_err(|e| Error::Internal(format!("cannot create {}: {e}", src_dir.display())))?;
            let r = snapshots::at_rest(ctx, src, running, &snapshots::pause_file(&src_dir), work).await;
            snapshots::remove(&snapshots::pause_file(&src_dir));
            r?
        }
    };
    if full {
        // libvirt learns of the file qemu-img made (a pool refresh).
        ctx.local_node.volume_list(&rec.pool).await?;
        return Ok((RootDisk::Made, nvram));
    }
    let b = ctx.store.vm_base(&rec.id).await?.ok_or_else(|| Error::Internal("the clone's base record is gone".into()))?;
    ctx.store.clone_base_ready(&b.id, snapshots::file_size(&to)).await?;
    ctx.local_node.volume_list(&rec.pool).await?;
    Ok((RootDisk::Base(to), nvram))
}

pub async fn vm_clone(ctx: &Context, caller: &Caller, source: &str, req: VmCloneRequest) -> Result<Vm, Error> {
    let mut steps = Steps::new();
    let name = parse_name("name", &req.name)?;
    let full = match req.mode.as_deref() {
        None | Some("linked") => false,
        Some("full") => true,
        Some(other) => return Err(Error::invalid("mode", format!("{other:?} is not linked or full"))),
    };
    if let Some(ttl) = req.ttl_seconds {
        rules::ttl_check(ttl)?;
    }
    let copy_tpm = match req.tpm.as_deref() {
        None | Some("fresh") => false,
        Some("copy") => true,
        Some(t) => return Err(Error::invalid("tpm", format!("{t:?} is not fresh or copy"))),
    };
    // The source is held busy until its disk is read.
    let (src, src_busy) = crate::app::snapshots::vm_ready(ctx, caller, source, "cloning").await?;
    if copy_tpm && !src.tpm {
        return Err(Error::invalid("tpm", format!("{} has no TPM to copy", src.name)));
    }
    if copy_tpm && src.node != crate::app::context::LOCAL {
        return Err(Error::invalid(
            "tpm",
            format!("{} is on node {}: TPM state is copied on the daemon's own node only", src.name, src.node),
        ));
    }
    super::root_only_check(ctx, &src, "a clone").await?;
    if src.name == name {
        return Err(Error::invalid("name", "a clone needs a name of its own"));
    }
    let snap = match &req.from_snapshot {
        Some(s) => Some(snapshots::snapshot_of(ctx, &src, s).await?),
        None => None,
    };
    let warm_save = match (&snap, req.warm) {
        (_, false) => None,
        (Some(s), true) => Some(warm_check(ctx, &src, s, &req).await?),
        (None, true) => return Err(Error::invalid("warm", "a warm clone wakes from a memory snapshot: name it with from_snapshot")),
    };
    let image = images::image_record(ctx, &src.image).await?;
    let (spec, vm_public, host_key_pair) = clone_spec(&src, &image, name.clone())?;
    steps.mark("validate");
    let _busy = ctx.vm_lock(&name, "creating").await?;
    let create = VmCreateRequest {
        name: req.name.clone(),
        image: src.image.to_string(),
        ttl_seconds: req.ttl_seconds,
        test_run: req.test_run.clone(),
        ..Default::default()
    };
    let strategy = crate::app::nodes::strategy(None)?;
    let (rec, _placed) = create_reserve(ctx, caller, &create, strategy, &spec, &mut steps, Some(src.node.as_str())).await?;
    ctx.publish("vm.clone", &rec.name, &rec.owner, Some("creating"), None, Some(src.name.as_str()));
    let domain_type = domain_type(ctx, &rec.node).await;
    let ssh_forward = ctx.config.ssh_forward && !req.no_ssh_forward && rec.ip.is_some() && rec.node == crate::app::context::LOCAL;
    let mut made = Vec::new();
    let built = async {
        // The clone keeps its source's guest profile (not its installer media).
        let profile = ctx.store.media_get(&src.id).await?.profile;
        if profile.is_some() {
            ctx.store.media_set(&rec.id, &kvmctl_store::MediaRecord { profile, ..Default::default() }).await?;
        }
        let (root, nvram) = clone_disk(ctx, &src, snap.as_ref(), &image, &rec, full, &mut made).await?;
        steps.mark("disk_copy");
        drop(src_busy);
        let CreateSpec { vm_key, seed_iso, .. } = spec;
        let warm = warm_save.map(|save| super::warm::WarmStart {
            src: src.clone(),
            save,
            vm_public_key: vm_public,
            host_key: host_key_pair,
            agent: snap.as_ref().is_some_and(|s| s.agent),
        });
        // The source's TPM state, copied while it is at rest for the disk (or as it is now).
        let tpm_state = match (copy_tpm, rec.node == crate::app::context::LOCAL) {
            (true, true) => Some(super::build::tpm_state_file(&src.id)).filter(|p| p.exists()),
            _ => None,
        };
        let opts = BuildOptions { seed_iso, vm_key, domain_type, start: !req.no_start, ssh_forward, root, nvram, warm, tpm_state };
        vm_build(ctx, &rec, &image, opts, &mut made, &mut steps).await
    }
    .await;
    build_end(ctx, &rec, built, &made, steps, Some(("vm.clone", Some(src.name.as_str())))).await
}

/// What a warm clone needs of its source and snapshot; the snapshot's saved-domain image.
async fn warm_check(ctx: &Context, src: &VmRecord, s: &SnapshotRecord, req: &VmCloneRequest) -> Result<PathBuf, Error> {
    if !s.memory {
        return Err(Error::invalid(
            "warm",
            format!(
                "snapshot {} of {} holds no memory; take one with `kvmctl snapshot create {} NAME --memory`",
                s.name, src.name, src.name
            ),
        ));
    }
    if req.no_start {
        return Err(Error::invalid("warm", "a warm clone is started by its wake; leave no_start out"));
    }
    if src.tpm {
        return Err(Error::invalid(
            "warm",
            format!("{} has a TPM, whose state a clone does not share: clone it cold (leave warm out)", src.name),
        ));
    }
    if src.ip.is_none() {
        return Err(Error::invalid("warm", format!("{} has no reserved address: warm clones need a managed network", src.name)));
    }
    if snapshots::running(ctx, src).await? {
        return Err(Error::Conflict(format!(
            "{} is running: a warm clone wakes at its address and would collide with it; stop {} first, or clone without --warm",
            src.name, src.name
        )));
    }
    let save = snapshots::memory_file(&snapshots::vm_dir(ctx, src), &s.id);
    if !save.exists() {
        return Err(Error::Conflict(format!("the memory image of snapshot {} is missing from {}", s.name, save.display())));
    }
    Ok(save)
}

/// Removes the base `b` (marked `deleting`, no clone uses it): its file, then its row.
pub(crate) async fn base_remove(ctx: &Context, b: &CloneBaseRecord) -> Result<(), Error> {
    match ctx.local_node.volume_delete(&b.pool, &b.volume).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    ctx.store.clone_base_delete(&b.id).await?;
    tracing::info!(base = %b.id, "removed a linked clones' base no clone uses");
    Ok(())
}

/// A VM being torn down lets go of its base; the last one removes it.
pub(crate) async fn base_release(ctx: &Context, rec: &VmRecord) -> Result<(), Error> {
    if let Some(b) = ctx.store.clone_base_release(&rec.id).await? {
        base_remove(ctx, &b).await?;
    }
    Ok(())
}

/// At start-up, after the reconciler undid interrupted creates: a base no clone uses (one
/// being made or removed when a crash came) is removed.
pub async fn recover(ctx: &Context) -> Result<(), Error> {
    for b in ctx.store.clone_base_list().await? {
        if let Some(b) = ctx.store.clone_base_unused(&b.id).await? {
            base_remove(ctx, &b).await?;
        }
    }
    Ok(())
}
