//! The devices a VM's definition carries besides its root disk and seed, read from their
//! records: data disks (in any pool), shares (virtio-fs; read-only ones through the daemon's
//! virtiofsd wrapper), the guest profile and ISO media; and a root disk outside its image's
//! pool. `app::domain` writes every definition through these, and the operations in
//! `app::vms` that change them (disks, shares, media) use the same builders (ADR 0014).

use super::context::Context;
use super::{images, parse_name};
use kvmctl_core::Error;
use kvmctl_libvirt::xml::{self, Disk, DiskBus, DiskFormat, Share};
use kvmctl_store::{DiskRecord, ImageRecord, VmRecord};
use std::path::PathBuf;

/// The `windows-11` profile's name.
pub const WINDOWS_11: &str = "windows-11";

/// The `<disk>` device of a data disk whose volume is at `path` (a raw logical volume when
/// `raw`, else qcow2).
pub(crate) fn data_disk(d: &DiskRecord, path: PathBuf, raw: bool) -> Disk {
    Disk {
        bus: DiskBus::parse(&d.bus).unwrap_or(DiskBus::Virtio),
        serial: Some(d.name.clone()),
        ..Disk::virtio(path, if raw { DiskFormat::Raw } else { DiskFormat::Qcow2 }, &d.target, false)
    }
}

/// Where a pool's volumes are on the VM's node, and whether they are raw logical volumes.
pub(crate) async fn pool_place(ctx: &Context, rec: &VmRecord, pool: &str, what: &str) -> Result<(PathBuf, bool), Error> {
    let info =
        ctx.node_conn(&rec.node).await?.pool_info(pool).await?.ok_or_else(|| {
            Error::Conflict(format!("pool {pool} of {what} is missing on node {}; the VM cannot start without it", rec.node))
        })?;
    Ok((info.target, info.kind == "logical"))
}

/// The VM's attached data disks as devices: those in the image's pool under `pool_dir`,
/// the others under their pool's target (a directory, or `/dev/VG`).
pub(crate) async fn data_disks_of(ctx: &Context, rec: &VmRecord, pool_dir: &std::path::Path, image_pool: &str) -> Result<Vec<Disk>, Error> {
    let mut out = Vec::new();
    let mut pools: std::collections::HashMap<String, (PathBuf, bool)> = std::collections::HashMap::new();
    for d in ctx.store.disk_list(&rec.id).await?.into_iter().filter(|d| d.state == "attached") {
        if !pools.contains_key(&d.pool) {
            let place = if d.pool == image_pool {
                (pool_dir.to_owned(), false)
            } else {
                pool_place(ctx, rec, &d.pool, &format!("disk {}", d.name)).await?
            };
            pools.insert(d.pool.clone(), place);
        }
        let (dir, raw) = &pools[&d.pool];
        out.push(data_disk(&d, dir.join(&d.volume), *raw));
    }
    Ok(out)
}

/// A VM whose root disk and seed are in another pool than its image's: their paths there,
/// and a raw root disk on LVM.
pub(crate) async fn root_on_pool(ctx: &Context, rec: &VmRecord, image: &ImageRecord, spec: &mut xml::DomainSpec) -> Result<(), Error> {
    if rec.pool == image.pool {
        return Ok(());
    }
    let (dir, raw) = pool_place(ctx, rec, &rec.pool, &format!("VM {}", rec.name)).await?;
    for disk in spec.disks.iter_mut() {
        if disk.target == "vda" {
            disk.source = dir.join(&rec.root_volume);
            if raw {
                disk.format = DiskFormat::Raw;
            }
        } else if disk.target == "vdb" {
            disk.source = dir.join(&rec.seed_volume);
        }
    }
    Ok(())
}

/// Where virtiofsd is: QEMU's (Debian 12) or the standalone one (Debian 13).
const VIRTIOFSD: [&str; 2] = ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"];

/// The VM's shares as devices; a read-only one through the wrapper, written first.
pub(crate) async fn shares_of(ctx: &Context, rec: &VmRecord) -> Result<Vec<Share>, Error> {
    let shares = ctx.store.share_list(&rec.id).await?;
    if shares.iter().any(|s| s.readonly) {
        helper_write(ctx)?;
    }
    Ok(shares
        .into_iter()
        .map(|s| Share { binary: s.readonly.then(|| ctx.config.share_helper.clone()), source: PathBuf::from(s.source), tag: s.tag })
        .collect())
}

fn virtiofsd() -> Result<&'static str, Error> {
    VIRTIOFSD.into_iter().find(|p| std::path::Path::new(p).exists()).ok_or_else(|| {
        Error::Unavailable(format!("virtiofsd is not installed ({}); kvmctl host setup installs it", VIRTIOFSD.join(" or ")))
    })
}

/// Writes the read-only virtiofsd wrapper (mode 0755, atomically: daemons and libvirt may run
/// it meanwhile). libvirt runs it as `--fd=N -o source=DIR[,...] ...`.
fn helper_write(ctx: &Context) -> Result<(), Error> {
    let real = virtiofsd()?;
    let script = format!(
        "#!/bin/sh\n\
         # Written by kvmctl: virtiofsd for a read-only share (libvirt 9.0 has no read-only virtio-fs).\n\
         # Runs {real} in a mount namespace of its own, where the shared directory is\n\
         # bind-mounted read-only over itself; the host's own mounts are untouched.\n\
         set -eu\n\
         src=\n\
         prev=\n\
         for a in \"$@\"; do\n\
         \x20 if [ \"$prev\" = -o ]; then case \"$a\" in source=*) src=${{a#source=}}; src=${{src%%,*}};; esac; fi\n\
         \x20 prev=$a\n\
         done\n\
         [ -n \"$src\" ] || {{ echo \"virtiofsd-ro: no -o source= among the arguments\" >&2; exit 1; }}\n\
         exec unshare --mount --propagation private /bin/sh -c 'mount --bind \"$1\" \"$1\" && mount -o remount,bind,ro \"$1\" && shift && exec \"$@\"' \\\n\
         \x20 virtiofsd-ro \"$src\" {real} \"$@\"\n"
    );
    let path = &ctx.config.share_helper;
    if std::fs::read_to_string(path).is_ok_and(|s| s == script) {
        return Ok(());
    }
    let err = |e: std::io::Error| Error::Internal(format!("cannot write the read-only virtiofsd wrapper {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, script).map_err(err)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The SATA CD-ROM at `target` holding the volume at `path`.
pub(crate) fn cdrom(path: PathBuf, target: &str, boot_order: Option<u8>) -> Disk {
    Disk { bus: DiskBus::Sata, cdrom: true, boot_order, ..Disk::virtio(path, DiskFormat::Raw, target, true) }
}

/// Applies the VM's profile and media to its definition: the Windows setup, the installer
/// booted first and its root disk second, the seed as a CD-ROM, the extra ISOs.
pub(crate) async fn media_apply(
    ctx: &Context,
    rec: &VmRecord,
    spec: &mut xml::DomainSpec,
    pool_dir: &std::path::Path,
) -> Result<(), Error> {
    let media = ctx.store.media_get(&rec.id).await?;
    spec.windows = media.profile.as_deref() == Some(WINDOWS_11);
    if let Some(installer) = &media.installer {
        let volume = iso_volume(ctx, installer).await?;
        if let Some(seed) = spec.disks.iter_mut().find(|d| d.target == "vdb") {
            *seed = cdrom(seed.source.clone(), "sdc", None);
        }
        if let Some(root) = spec.disks.iter_mut().find(|d| d.target == "vda") {
            root.boot_order = Some(2);
        }
        spec.disks.push(cdrom(pool_dir.join(volume), "sda", Some(1)));
    }
    for (extra, target) in media.extras.iter().zip(["sdb", "sdd"]) {
        let volume = iso_volume(ctx, extra).await?;
        spec.disks.push(cdrom(pool_dir.join(volume), target, None));
    }
    Ok(())
}

async fn iso_volume(ctx: &Context, image: &str) -> Result<String, Error> {
    Ok(images::image_record(ctx, &parse_name("image", image)?).await?.volume)
}
