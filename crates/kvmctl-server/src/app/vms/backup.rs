//! Export and restore: a VM as one tar archive, and a new VM from one.
//!
//! The archive (format `kvmctl-export` version 1) holds, in this order:
//! - `vm.json`: the VM's definition (size, firmware, user, plan) and its template (the image
//!   it was made from: name, OS, boot modes);
//! - `domain.xml`: its libvirt definition, for reference;
//! - `nvram.fd`: its UEFI variable store (UEFI guests);
//! - `tpm.state`: its TPM 2.0's state (VMs with a TPM; swtpm's `tpm2-00.permall`);
//! - `disk.qcow2`: its root disk, flattened (no backing file);
//! - `manifest.json`, last: the size and sha256 of every other member.
//!
//! Export reads the disk with the VM at rest (a running VM is saved to a file and restored
//! after, so the copy is consistent and its processes carry on), into a staging file named
//! by ids under the snapshot directory, then streams the archive to the caller (the daemon
//! never writes to a path the caller names). The VM stays busy until the stream ends, so
//! one VM has at most one staging copy.
//!
//! Restore reads an uploaded archive into a staging directory, member by member: only the
//! names above, regular files, each at most once and within its bound (the disk within the
//! caller's remaining disk quota); then verifies every sha256 against the manifest and the
//! disk itself (a qcow2 with no backing or external data file, whose size fits the
//! definition). Anything wrong refuses the archive with a clear error before anything is
//! made. The new VM is made by create's path (quota, placement on this node, address, a new
//! identity as a clone gets), with the archive's disk as its root disk.

use super::archive::*;
use super::build::{vm_build, BuildOptions, RootDisk, Steps};
use super::clone::{identity_new, Identity};
use super::create::{build_end, create_reserve, CreateSpec};
use super::*;
use crate::app::snapshots;
use bytes::Bytes;
use futures_util::StreamExt;
use kvmctl_core::rules;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;

/// `vm.json`: what a restore needs to make the VM again.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportedVm {
    name: String,
    vcpus: u32,
    memory_mib: u64,
    disk_gib: u64,
    firmware: String,
    /// The VM had a TPM: the restored VM gets one too, fresh (its state is not archived).
    #[serde(default)]
    tpm: bool,
    ssh_user: String,
    plan: Option<String>,
    network: String,
    template: Template,
}

/// The image the VM was made from; a restore boots with the image of that name here (its
/// kernel, for a direct-kernel image), the disk itself comes from the archive.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Template {
    image: String,
    os_family: Option<String>,
    os_version: Option<String>,
    cloud_init: bool,
    default_user: Option<String>,
    boot_modes: Vec<String>,
    direct_kernel: bool,
}

/// A staging directory, removed (with what is in it) when dropped.
struct Staging(PathBuf);

impl Staging {
    fn new(dir: PathBuf) -> Result<Self, Error> {
        std::fs::create_dir_all(&dir).map_err(|e| internal(&format!("cannot create {}", dir.display()), e))?;
        Ok(Staging(dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove a staging directory");
            }
        }
    }
}

/// Staging directories a crash left (exports and restores): removed at start-up.
pub(crate) fn staging_sweep(ctx: &Context) {
    let root = &ctx.config.snapshot_dir;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("restore-") {
            dirs.push(e.path());
        } else if e.path().is_dir() {
            dirs.extend(
                std::fs::read_dir(e.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|x| x.file_name().to_string_lossy().starts_with("export-"))
                    .map(|x| x.path()),
            );
        }
    }
    for d in dirs {
        tracing::info!(dir = %d.display(), "removing a staging directory a crash left");
        drop(Staging(d));
    }
}

/// The archive of VM `name`, as a stream of bytes; an error before the first byte is the
/// request's answer.
pub async fn vm_export(
    ctx: Arc<Context>,
    caller: Caller,
    name: &str,
) -> Result<impl futures_util::Stream<Item = Result<Bytes, std::io::Error>>, Error> {
    let name = name.to_owned();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), Error>>();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        let ctx = ctx.as_ref();
        let staged = async {
            let (rec, busy) = snapshots::vm_ready(ctx, &caller, &name, "exporting").await?;
            super::root_only_check(ctx, &rec, "an export").await?;
            if ctx.store.media_get(&rec.id).await? != kvmctl_store::MediaRecord::default() {
                return Err(Error::Conflict(format!(
                    "VM {} has a guest profile or installer media, which archives do not carry yet; clone it instead",
                    rec.name
                )));
            }
            let staging = Staging::new(snapshots::vm_dir(ctx, &rec).join(format!("export-{}", uuid::Uuid::new_v4())))?;
            ctx.publish("vm.export", &rec.name, &rec.owner, Some("started"), None, None);
            let files = export_stage(ctx, &rec, &staging.0).await?;
            Ok::<_, Error>((rec, busy, staging, files))
        }
        .await;
        let (rec, _busy, staging, files) = match staged {
            Ok(s) => s,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let _ = ready_tx.send(Ok(()));
        let dir = staging.0.clone();
        let written = tokio::task::spawn_blocking(move || tar_write(&dir, &files, ChanWriter { tx, buf: Vec::new() })).await;
        match written {
            Ok(Ok(bytes)) => {
                tracing::info!(vm = %rec.name, bytes, "VM exported");
                ctx.publish("vm.export", &rec.name, &rec.owner, Some("done"), None, None);
            }
            Ok(Err(e)) => {
                tracing::warn!(vm = %rec.name, error = %e, "the export stream broke off");
                ctx.publish("vm.export", &rec.name, &rec.owner, Some("failed"), None, None);
            }
            Err(e) => tracing::warn!(vm = %rec.name, error = %e, "the export task failed"),
        }
        drop(staging);
    });
    ready_rx.await.map_err(|_| Error::Internal("the export task ended early".into()))??;
    Ok(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}

/// Writes the archive's members (but the manifest) into `dir`, the disk read at rest; the
/// members made, in order.
async fn export_stage(ctx: &Context, rec: &VmRecord, dir: &Path) -> Result<Vec<&'static str>, Error> {
    let image = images::image_record(ctx, &rec.image).await?;
    let domain_xml = ctx.local_node.domain_xml(rec.name.as_str()).await?;
    let vm = ExportedVm {
        name: rec.name.to_string(),
        vcpus: rec.vcpus,
        memory_mib: rec.memory_mib,
        disk_gib: rec.disk_gib,
        firmware: rec.firmware.clone(),
        tpm: rec.tpm,
        ssh_user: rec.ssh_user.clone(),
        plan: rec.plan.clone(),
        network: rec.network.clone(),
        template: Template {
            image: image.name.to_string(),
            os_family: image.os_family.clone(),
            os_version: image.os_version.clone(),
            cloud_init: image.cloud_init,
            default_user: image.default_user.clone(),
            boot_modes: image.boot_modes.clone(),
            direct_kernel: image.kernel_volume.is_some(),
        },
    };
    let write =
        |member: &str, data: &[u8]| std::fs::write(dir.join(member), data).map_err(|e| internal(&format!("cannot write {member}"), e));
    write("vm.json", &serde_json::to_vec_pretty(&vm).map_err(|e| internal("vm.json", e))?)?;
    write("domain.xml", domain_xml.as_bytes())?;
    let disk = snapshots::root_disk(ctx, rec).await?;
    let nvram = xml::domain_nvram(&domain_xml).filter(|p| p.exists());
    let running = snapshots::running(ctx, rec).await?;
    let pause = snapshots::pause_file(&snapshots::vm_dir(ctx, rec));
    let work = async {
        super::clone::disk_copy(&disk, None, &dir.join("disk.qcow2"), None).await?;
        ctx.failpoints.hit("export.copied").await?;
        if let Some(n) = &nvram {
            std::fs::copy(n, dir.join("nvram.fd")).map_err(|e| internal(&format!("cannot copy {}", n.display()), e))?;
        }
        let tpm = super::build::tpm_state_file(&rec.id);
        if rec.tpm && tpm.exists() {
            std::fs::copy(&tpm, dir.join("tpm.state")).map_err(|e| internal(&format!("cannot copy {}", tpm.display()), e))?;
        }
        Ok(())
    };
    let r = snapshots::at_rest(ctx, rec, running, &pause, work).await;
    snapshots::remove(&pause);
    r?;
    Ok(MEMBERS.into_iter().filter(|m| dir.join(m).exists()).collect())
}

/// The staged disk is a self-contained qcow2 no larger than `disk_gib`; its virtual size.
async fn disk_check(disk: &Path, disk_gib: u64) -> Result<u64, Error> {
    let out =
        snapshots::qemu_img([OsStr::new("info"), "--output=json".as_ref(), "-f".as_ref(), "qcow2".as_ref(), disk.as_os_str()]).await?;
    if !out.status.success() {
        return Err(damaged(format!("has a disk.qcow2 that is not a qcow2 image: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| internal("qemu-img info", e))?;
    // A backing or data file would make the guest read a host file of the archive's choosing.
    if info.get("backing-filename").is_some() || info.get("full-backing-filename").is_some() {
        return Err(damaged("has a disk.qcow2 with a backing file; an export's disk stands alone"));
    }
    if info.pointer("/format-specific/data/data-file").is_some() {
        return Err(damaged("has a disk.qcow2 with an external data file; an export's disk stands alone"));
    }
    let virtual_size = info.get("virtual-size").and_then(|v| v.as_u64()).unwrap_or(u64::MAX);
    if virtual_size > disk_gib * GIB {
        return Err(damaged(format!("has a disk of {virtual_size} bytes, larger than the {disk_gib} GiB its vm.json gives")));
    }
    let check = snapshots::qemu_img([OsStr::new("check"), "-q".as_ref(), "-f".as_ref(), "qcow2".as_ref(), disk.as_os_str()]).await?;
    if !check.status.success() {
        return Err(damaged(format!("has a damaged disk.qcow2: {}", String::from_utf8_lossy(&check.stdout).trim())));
    }
    Ok(virtual_size)
}

/// What a restore makes besides the archive's VM.
#[derive(Debug, Default)]
pub struct RestoreOptions {
    pub name: String,
    /// The network to join (default: the daemon's `network` setting).
    pub network: Option<String>,
    pub no_start: bool,
    pub no_ssh_forward: bool,
}

/// A new VM from an uploaded archive. Whatever refuses it, the upload is read to its end
/// first (and dropped): a client still sending gets the answer, not a reset connection.
pub async fn vm_restore<S, E>(ctx: &Context, caller: &Caller, opts: RestoreOptions, mut body: S) -> Result<Vm, Error>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let restored = restore(ctx, caller, opts, &mut body).await;
    if restored.is_err() {
        while let Some(Ok(_)) = body.next().await {}
    }
    restored
}

async fn restore<S, E>(ctx: &Context, caller: &Caller, opts: RestoreOptions, body: &mut S) -> Result<Vm, Error>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut steps = Steps::new();
    let name = parse_name("name", &opts.name)?;
    if ctx.store.vm_get(&Scope::all(), &name).await?.is_some() {
        return Err(Error::Conflict(format!("a VM named {name} exists already; pick another name")));
    }
    let network = opts.network.clone().unwrap_or_else(|| ctx.config.network.clone());
    attachment_check(ctx, caller, &network).await?;
    let _busy = ctx.vm_lock(&name, "restoring").await?;
    // The disk may take what the caller's disk quota has left.
    let disk_max = match crate::app::users::limits_of(ctx, &caller.name).await? {
        Some(l) => {
            let used = ctx.store.usage_of(&caller.name).await?;
            l.disk_gib.saturating_sub(used.disk_gib) * GIB + QCOW2_OVERHEAD
        }
        None => rules::MAX_DISK_GIB * GIB + QCOW2_OVERHEAD,
    };
    let staging = Staging::new(ctx.config.snapshot_dir.join(format!("restore-{}", uuid::Uuid::new_v4())))?;
    // The upload, read by the archive reader on a blocking thread as it arrives.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let dir = staging.0.clone();
    let reader = tokio::task::spawn_blocking(move || tar_read(ChanReader { rx, chunk: Bytes::new() }, &dir, disk_max));
    let mut broke = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    break; // the reader stopped: its error says why (the rest is drained above)
                }
            }
            Err(e) => {
                broke = Some(e.to_string());
                break;
            }
        }
    }
    drop(tx);
    let read = reader.await.map_err(|e| internal("the archive reader failed", e))?;
    if let Some(e) = broke {
        return Err(damaged(format!("upload broke off: {e}")));
    }
    let (seen, manifest) = read?;
    manifest_check(&manifest, &seen)?;
    steps.mark("upload");
    let vm: ExportedVm = serde_json::from_slice(&std::fs::read(staging.0.join("vm.json")).map_err(|e| internal("vm.json", e))?)
        .map_err(|e| damaged(format!("has a vm.json that cannot be read: {e}")))?;
    let image_name = Name::parse(&vm.template.image).map_err(|e| damaged(format!("names an image that is not a name: {e}")))?;
    let image = ctx.store.image_get(&image_name).await?.ok_or_else(|| {
        Error::invalid(
            "archive",
            format!(
                "was exported from a VM of image {image_name}, which is not here; import it under that name first (kvmctl image import)"
            ),
        )
    })?;
    size_check(Some(vm.vcpus), Some(vm.memory_mib), Some(vm.disk_gib)).map_err(|e| damaged(format!("has a vm.json out of bounds: {e}")))?;
    let firmware =
        Firmware::parse(&vm.firmware).ok_or_else(|| damaged(format!("has a firmware {:?} kvmctl does not know", vm.firmware)))?;
    if !image.boot_modes.is_empty() && !image.boot_modes.contains(&vm.firmware) {
        return Err(Error::invalid(
            "archive",
            format!("boots with {}; image {image_name} here boots with {}", vm.firmware, image.boot_modes.join(" or ")),
        ));
    }
    let user = Name::parse(&vm.ssh_user).map_err(|_| damaged("has a vm.json whose user is not a name"))?;
    let source = Name::parse(&vm.name).map_err(|_| damaged("has a vm.json whose name is not a name"))?;
    // Users who size VMs by plan only restore a VM of a plan they may pick, at its size.
    let plan = match &vm.plan {
        Some(p) => super::create::plan_active(ctx, p).await.ok(),
        None => None,
    };
    if !caller.custom_sizing {
        let fits = plan.as_ref().is_some_and(|p| (p.vcpus, p.memory_mib, p.disk_gib) == (vm.vcpus, vm.memory_mib, vm.disk_gib));
        if !fits {
            return Err(Error::Forbidden(format!(
                "the archive's VM is sized {} vCPUs, {} MiB, {} GiB, which is no active plan's size; restoring it needs custom sizing (ask an admin)",
                vm.vcpus, vm.memory_mib, vm.disk_gib
            )));
        }
    }
    let disk = staging.0.join("disk.qcow2");
    disk_check(&disk, vm.disk_gib).await?;
    let nvram = Some(staging.0.join("nvram.fd")).filter(|p| p.exists() && firmware != Firmware::Bios);
    let tpm_state = Some(staging.0.join("tpm.state")).filter(|p| p.exists() && vm.tpm);
    steps.mark("verify");

    // The new VM, by create's path, with the archive's disk as its root disk.
    let Identity { id, vm_key, seed_iso, host_key, .. } = identity_new(&source, &user, &image, &name)?;
    let spec = CreateSpec {
        name: name.clone(),
        image: image.clone(),
        plan: plan.map(|p| p.name),
        vcpus: vm.vcpus,
        memory_mib: vm.memory_mib,
        disk_gib: vm.disk_gib,
        firmware: vm.firmware.clone(),
        // The archive's TPM state, when it carries one (else a fresh TPM).
        tpm: vm.tpm,
        user: user.to_string(),
        network,
        id,
        vm_key,
        seed_iso,
        host_key,
        shares: Vec::new(),
        media: Default::default(),
        pool: image.pool.clone(),
        pool_node: None,
    };
    let create = VmCreateRequest { name: opts.name.clone(), image: image.name.to_string(), ..Default::default() };
    let strategy = crate::app::nodes::strategy(None)?;
    let (rec, _placed) = create_reserve(ctx, caller, &create, strategy, &spec, &mut steps, Some(crate::app::context::LOCAL)).await?;
    ctx.publish("vm.restore", &rec.name, &rec.owner, Some("creating"), None, None);
    let domain_type = domain_type(ctx, &rec.node).await;
    let ssh_forward = ctx.config.ssh_forward && !opts.no_ssh_forward && rec.ip.is_some();
    let mut made = Vec::new();
    let built = async {
        let pool_dir = image_paths(&ctx.node_conn(&rec.node).await?, &image).await?.0;
        let to = pool_dir.join(&rec.root_volume);
        made.push(rec.root_volume.clone());
        ctx.failpoints.hit("restore.recorded").await?;
        if std::fs::rename(&disk, &to).is_err() {
            std::fs::copy(&disk, &to).map_err(|e| internal(&format!("cannot copy the disk to {}", to.display()), e))?;
        }
        // Grown to the VM's size (an export's disk may be smaller: a raw image's overlay).
        let size = (rec.disk_gib * GIB).to_string();
        let out =
            snapshots::qemu_img([OsStr::new("resize"), "-q".as_ref(), "-f".as_ref(), "qcow2".as_ref(), to.as_os_str(), size.as_ref()])
                .await?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !stderr.contains("shrink") && !stderr.contains("same size") {
                return Err(Error::Internal(format!("qemu-img resize {}: {}", to.display(), stderr.trim())));
            }
        }
        ctx.local_node.volume_list(&rec.pool).await?;
        steps.mark("disk");
        ctx.failpoints.hit("restore.disk").await?;
        let CreateSpec { vm_key, seed_iso, .. } = spec;
        let opts = BuildOptions {
            seed_iso,
            vm_key,
            domain_type,
            start: !opts.no_start,
            ssh_forward,
            root: RootDisk::Made,
            nvram,
            warm: None,
            tpm_state,
        };
        vm_build(ctx, &rec, &image, opts, &mut made, &mut steps).await
    }
    .await;
    build_end(ctx, &rec, built, &made, steps, Some(("vm.restore", None))).await
}
