//! `images`: import a disk image into the node's storage pool, list, show, remove.
//!
//! An import is verified before anything is created on the node: the format is read by
//! `qemu-img info` (qcow2 or raw only), a backing file is refused, a qcow2 must pass
//! `qemu-img check`, and the SHA-256 must match when one is given. The file then becomes a
//! volume through a libvirt stream (so a remote node works the same), and only then is the
//! row written. A failure at any point leaves no volume and no row.

use super::context::{blocking, parse_name, Context};
use crate::node::NodeHandle;
use kvmctl_core::Error;
use kvmctl_libvirt::xml::DiskFormat;
use kvmctl_libvirt::Node;
use kvmctl_store::ImageRecord;
use kvmctl_types::api::{Image, ImageImportRequest, ImageTemplate, KernelBoot};
use kvmctl_types::Name;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What `qemu-img info` says of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiskFacts {
    pub format: DiskFormat,
    pub virtual_bytes: u64,
}

pub async fn image_list(ctx: &Context, caller: &kvmctl_core::Caller) -> Result<Vec<Image>, Error> {
    let mut out = Vec::new();
    for rec in ctx.store.image_list().await? {
        let users = image_users_visible(ctx, caller, &rec.name).await?;
        out.push(image_view(rec, users));
    }
    Ok(out)
}

pub async fn image_get(ctx: &Context, caller: &kvmctl_core::Caller, name: &str) -> Result<Image, Error> {
    let name = parse_name("name", name)?;
    let rec = image_record(ctx, &name).await?;
    let users = image_users_visible(ctx, caller, &name).await?;
    Ok(image_view(rec, users))
}

/// The image's users the caller may know of: all for admins, their own VMs for others
/// (another tenant's VM names are theirs).
async fn image_users_visible(ctx: &Context, caller: &kvmctl_core::Caller, name: &Name) -> Result<Vec<String>, Error> {
    let all = ctx.store.image_users(name).await?;
    if caller.is_admin() {
        return Ok(all);
    }
    let own: std::collections::HashSet<String> =
        ctx.store.vm_list(&kvmctl_store::Scope::of(caller)).await?.into_iter().map(|v| v.name.to_string()).collect();
    Ok(all.into_iter().filter(|u| own.contains(u)).collect())
}

pub(crate) async fn image_record(ctx: &Context, name: &Name) -> Result<ImageRecord, Error> {
    ctx.store.image_get(name).await?.ok_or_else(|| Error::NotFound { kind: "image", name: name.to_string() })
}

/// Removes the image and its volumes; refused while any VM's disk is backed by it.
pub async fn image_delete(ctx: &Context, caller: &kvmctl_core::Caller, name: &str) -> Result<(), Error> {
    caller.require_admin("removing images")?;
    let name = parse_name("name", name)?;
    let rec = image_record(ctx, &name).await?;
    match ctx.store.image_delete_unused(&name).await? {
        Ok(true) => {}
        Ok(false) => return Err(Error::NotFound { kind: "image", name: name.to_string() }),
        Err(users) => {
            return Err(Error::Conflict(format!(
                "image {name} is the backing file of VM(s) {}; delete them first (kvmctl vm delete NAME)",
                users.join(", ")
            )))
        }
    }
    image_copies_remove(ctx, &rec).await?;
    let removed = volumes_remove(ctx.local_node.clone(), &rec).await;
    if let Err(e) = removed {
        // Keep the record so the leftover volume stays visible and `rm` can be retried.
        ctx.store.image_insert(&rec).await?;
        return Err(e.into());
    }
    tracing::info!(image = %name, "image removed");
    Ok(())
}

/// Makes sure the image's volumes are in its pool on `node`, copying them from the local
/// node by stream on first use there. A copy counts once its upload finished (a row in
/// `image_copies`); anything left of an interrupted one is replaced.
pub(crate) async fn image_to_node(ctx: &Context, node: &str, image: &ImageRecord) -> Result<(), Error> {
    if node == super::context::LOCAL || ctx.store.image_copy_exists(&image.name, node).await? {
        return Ok(());
    }
    // One copy at a time: two creates on a new node must not upload the same image twice.
    let _copying = ctx.image_copy_lock.lock().await;
    if ctx.store.image_copy_exists(&image.name, node).await? {
        return Ok(());
    }
    let (local, remote) = (ctx.local_node.clone(), ctx.node_conn(node).await?);
    let (pool, vols, fmt) = (image.pool.clone(), image_volumes(image), image.format.clone());
    let started = std::time::Instant::now();
    // The local volumes' paths first, then the copy on the remote node.
    let mut files = Vec::new();
    for (i, v) in vols.iter().enumerate() {
        let path = local
            .volume_get(&pool, v)
            .await?
            .ok_or_else(|| {
                Error::Conflict(format!("volume {v} of the image is missing from pool {pool} on the local node; re-import the image"))
            })?
            .path;
        let format = if i == 0 && fmt == "qcow2" { DiskFormat::Qcow2 } else { DiskFormat::Raw };
        files.push((v.clone(), path, format));
    }
    let bytes = remote
        .run(move |remote| -> Result<u64, Error> {
            for (v, _, _) in &files {
                // A half-written volume of an interrupted copy is replaced.
                match remote.volume_delete(&pool, v) {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let done = volumes_upload(remote, &pool, &files)?;
            Ok(done.iter().map(|d| d.capacity_bytes).sum())
        })
        .await?;
    ctx.store.image_copy_insert(&image.name, node).await?;
    tracing::info!(image = %image.name, node, bytes, elapsed_ms = started.elapsed().as_millis() as u64, "image copied to node");
    Ok(())
}

/// Removes the image's copies on other nodes (best effort: a node that cannot be reached
/// keeps its copy, and `image_copies` its row, until the next delete attempt).
async fn image_copies_remove(ctx: &Context, rec: &ImageRecord) -> Result<(), Error> {
    for node in ctx.store.image_copy_nodes(&rec.name).await? {
        let Ok(conn) = ctx.node_conn(&node).await else {
            ctx.store.image_copy_delete(&rec.name, &node).await?;
            continue;
        };
        match volumes_remove(conn, rec).await {
            Ok(()) => ctx.store.image_copy_delete(&rec.name, &node).await?,
            Err(e) => {
                tracing::warn!(image = %rec.name, node, error = %kvmctl_core::error::chain(&e), "cannot remove the image's copy on the node")
            }
        }
    }
    Ok(())
}

/// Deletes the image's volumes on a node; what is already gone is fine.
async fn volumes_remove(node: NodeHandle, rec: &ImageRecord) -> Result<(), kvmctl_libvirt::NodeError> {
    let (pool, vols) = (rec.pool.clone(), image_volumes(rec));
    node.run(move |node| {
        for v in vols {
            match node.volume_delete(&pool, &v) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .await
}

fn image_volumes(rec: &ImageRecord) -> Vec<String> {
    std::iter::once(rec.volume.clone()).chain(rec.kernel_volume.clone()).chain(rec.initrd_volume.clone()).collect()
}

fn image_view(rec: ImageRecord, used_by: Vec<String>) -> Image {
    let kernel_boot = rec.kernel_volume.clone().map(|k| KernelBoot {
        kernel_volume: k,
        initrd_volume: rec.initrd_volume.clone(),
        cmdline: rec.cmdline.clone().unwrap_or_default(),
    });
    Image {
        name: rec.name.to_string(),
        format: rec.format,
        virtual_bytes: rec.virtual_bytes,
        file_bytes: rec.file_bytes,
        sha256: rec.sha256,
        source: rec.source,
        node: rec.node,
        pool: rec.pool,
        volume: rec.volume,
        path: rec.path,
        template: ImageTemplate {
            os_family: rec.os_family,
            os_version: rec.os_version,
            cloud_init: rec.cloud_init,
            default_user: rec.default_user,
            boot_modes: rec.boot_modes,
            tpm: rec.tpm,
            profile: rec.profile,
        },
        kernel_boot,
        used_by,
        created_at: rec.created_at,
    }
}

/// Imports `req.source` as image `req.name`.
pub async fn image_import(ctx: &Context, caller: &kvmctl_core::Caller, req: ImageImportRequest) -> Result<Image, Error> {
    caller.require_admin("importing images")?;
    let name = parse_name("name", &req.name)?;
    if let Some(h) = &req.sha256 {
        if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::invalid("sha256", "must be 64 hexadecimal characters (the output of sha256sum)"));
        }
    }
    if req.kernel.is_none() && (req.initrd.is_some() || req.cmdline.is_some()) {
        return Err(Error::invalid("kernel", "initrd and cmdline need a kernel to boot"));
    }
    let iso = match req.kind.as_deref() {
        None | Some("disk") => false,
        Some("iso") => true,
        Some(k) => return Err(Error::invalid("kind", format!("{k:?} is not disk or iso"))),
    };
    if iso && req.kernel.is_some() {
        return Err(Error::invalid("kernel", "an ISO image boots through firmware; leave kernel out"));
    }
    if let Some(t) = &req.template {
        template_check(t)?;
    }
    if ctx.store.image_get(&name).await?.is_some() {
        return Err(Error::Conflict(format!("image {name} exists; remove it first (kvmctl image rm {name}) or pick another name")));
    }
    // Images are files VMs' overlays point at: a directory pool on the local node.
    let pool = match req.pool.as_deref() {
        None => ctx.config.pool.clone(),
        Some(p) if p == ctx.config.pool => p.to_owned(),
        Some(p) => match ctx.store.pool_get(p).await? {
            Some(rec) if rec.kind == "dir" && rec.node == super::context::LOCAL => p.to_owned(),
            Some(_) => return Err(Error::invalid("pool", format!("pool {p} is not a directory pool on the local node; images are files"))),
            None => return Err(Error::invalid("pool", format!("there is no pool {p}; `kvmctl pool list` shows them"))),
        },
    };
    let kernel = req.kernel.as_deref().map(|k| local_file("kernel", k)).transpose()?;
    let initrd = req.initrd.as_deref().map(|k| local_file("initrd", k)).transpose()?;

    // The source as a local file: a path, or a download into a temporary file.
    let workdir = tempfile::tempdir().map_err(|e| Error::Internal(format!("cannot make a temporary directory: {e}")))?;
    let (path, source) = if req.source.starts_with("http://") || req.source.starts_with("https://") {
        let to = workdir.path().join("download");
        download(&req.source, &to).await?;
        (to, req.source.clone())
    } else {
        (local_file("source", &req.source)?, req.source.clone())
    };

    // Everything below reads one private copy: what is inspected is what is hashed and
    // uploaded, whatever happens to the source path meanwhile.
    let private = workdir.path().join("source");
    let (from, to) = (path.clone(), private.clone());
    blocking(move || source_copy(&from, &to)).await??;
    ctx.failpoints.hit("import.copied").await?;
    let inspect_path = private.clone();
    let (facts, sha256, file_bytes) = blocking(move || -> Result<_, Error> {
        let facts = if iso { iso_inspect(&inspect_path)? } else { disk_inspect(&inspect_path)? };
        let (sha, len) = sha256_file(&inspect_path).map_err(|e| Error::invalid("source", format!("cannot read it: {e}")))?;
        Ok((facts, sha, len))
    })
    .await??;
    if let Some(want) = &req.sha256 {
        if !want.eq_ignore_ascii_case(&sha256) {
            return Err(Error::invalid(
                "sha256",
                format!("the file's SHA-256 is {sha256}, not {want}; the download may be corrupt or the checksum wrong"),
            ));
        }
    }
    let template = match req.template.clone() {
        Some(t) => t,
        None if req.source.starts_with('/') => built_image_template(&path).unwrap_or_default(),
        None => ImageTemplate::default(),
    };
    let template =
        ImageTemplate { boot_modes: if template.boot_modes.is_empty() { vec!["bios".into()] } else { template.boot_modes }, ..template };

    // Volumes: the disk, then kernel and initrd. Each registers its undo.
    let ext = if iso { "iso" } else { facts.format.as_str() };
    let disk_vol = format!("image-{name}.{ext}");
    let kernel_vol = kernel.as_ref().map(|_| format!("image-{name}.kernel"));
    let initrd_vol = initrd.as_ref().map(|_| format!("image-{name}.initrd"));
    let uploads: Vec<(String, PathBuf, DiskFormat)> = std::iter::once((disk_vol.clone(), private.clone(), facts.format))
        .chain(kernel_vol.clone().zip(kernel.clone()).map(|(v, p)| (v, p, DiskFormat::Raw)))
        .chain(initrd_vol.clone().zip(initrd.clone()).map(|(v, p)| (v, p, DiskFormat::Raw)))
        .collect();
    let up_pool = pool.clone();
    let uploaded = ctx.local_node.run(move |node| volumes_upload(node, &up_pool, &uploads)).await?;
    let disk_info = &uploaded[0];

    let rec = ImageRecord {
        name: name.clone(),
        node: "local".into(),
        pool: pool.clone(),
        volume: disk_vol,
        path: disk_info.path.display().to_string(),
        format: ext.to_owned(),
        virtual_bytes: facts.virtual_bytes,
        file_bytes,
        sha256,
        source,
        os_family: template.os_family,
        os_version: template.os_version,
        cloud_init: template.cloud_init,
        default_user: template.default_user,
        boot_modes: template.boot_modes,
        kernel_volume: kernel_vol,
        initrd_volume: initrd_vol,
        cmdline: req.kernel.as_ref().map(|_| req.cmdline.clone().unwrap_or_else(|| "console=ttyS0".into())),
        created_at: 0,
        tpm: template.tpm,
        profile: template.profile,
    };
    match ctx.store.image_insert(&rec).await {
        Ok(rec) => {
            tracing::info!(image = %name, format = ext, bytes = rec.file_bytes, "image imported");
            Ok(image_view(rec, Vec::new()))
        }
        Err(e) => {
            // The volumes just uploaded go again; one that cannot be removed is logged (gc
            // reports it too).
            for v in image_volumes(&rec) {
                if let Err(d) = ctx.local_node.volume_delete(&pool, &v).await {
                    tracing::warn!(volume = %v, error = %kvmctl_core::error::chain(&d), "cannot remove a volume of the failed import");
                }
            }
            Err(e.into())
        }
    }
}

/// An ISO image: an ISO 9660 volume descriptor (`CD001`) or a UDF one (`BEA01`, Windows' ISOs
/// carry both) at sector 16; its size is the file's.
fn iso_inspect(path: &Path) -> Result<DiskFacts, Error> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| Error::invalid("source", format!("cannot read it: {e}")))?;
    let len = f.metadata().map_err(|e| Error::invalid("source", format!("cannot read it: {e}")))?.len();
    let mut id = [0u8; 5];
    let read = f.seek(SeekFrom::Start(0x8001)).and_then(|_| f.read_exact(&mut id));
    if read.is_err() || !(&id == b"CD001" || &id == b"BEA01") {
        return Err(Error::invalid(
            "source",
            "it is not an ISO image (no ISO 9660 or UDF volume descriptor at sector 16); import disks with kind disk",
        ));
    }
    Ok(DiskFacts { format: DiskFormat::Raw, virtual_bytes: len })
}

fn template_check(t: &ImageTemplate) -> Result<(), Error> {
    if let Some(p) = &t.profile {
        if p != "windows-11" {
            return Err(Error::invalid("template.profile", format!("{p:?} is not a profile; the one there is: windows-11")));
        }
    }
    for m in &t.boot_modes {
        if kvmctl_libvirt::xml::Firmware::parse(m).is_none() {
            return Err(Error::invalid("template.boot_modes", format!("{m:?} is not a boot mode; use bios, uefi or uefi-secure")));
        }
    }
    if let Some(u) = &t.default_user {
        parse_name("template.default_user", u)?;
    }
    Ok(())
}

/// An absolute path to an existing regular file on the daemon's host.
fn local_file(field: &str, path: &str) -> Result<PathBuf, Error> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(Error::invalid(field, format!("{path:?} is not an absolute path (the daemon resolves it, not your shell)")));
    }
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(p.to_owned()),
        Ok(_) => Err(Error::invalid(field, format!("{path} is not a regular file"))),
        Err(e) => Err(Error::invalid(field, format!("cannot read {path}: {e}"))),
    }
}

/// Copies the file at `from` into the daemon's private `to` (mode 0600), reading it through
/// one descriptor opened once.
fn source_copy(from: &Path, to: &Path) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = std::fs::File::open(from).map_err(|e| Error::invalid("source", format!("cannot read {}: {e}", from.display())))?;
    if !src.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(Error::invalid("source", format!("{} is not a regular file", from.display())));
    }
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| Error::Internal(format!("cannot make {}: {e}", to.display())))?;
    std::io::copy(&mut src, &mut dst).map_err(|e| Error::invalid("source", format!("cannot copy {}: {e}", from.display())))?;
    Ok(())
}

/// Limits for a `qemu-img` run on a file someone else made (as OpenStack Nova does): 1 GiB of
/// address space and 30 s of CPU, so a crafted header (a huge L1 table, say) fails
/// instead of taking the host's memory.
const QEMU_IMG_LIMITS: [&str; 2] = ["--as=1073741824", "--cpu=30"];

/// `qemu-img` under `prlimit` with `QEMU_IMG_LIMITS`.
fn qemu_img_limited() -> Command {
    let mut c = Command::new("prlimit");
    c.args(QEMU_IMG_LIMITS).arg("--").arg("qemu-img");
    c
}

/// The format by its first bytes: qcow2's magic, or raw. Never left to qemu-img's probing,
/// which would follow whatever a crafted header names.
fn format_sniff(path: &Path) -> Result<DiskFormat, Error> {
    use std::io::Read;
    let mut head = [0u8; 512];
    let mut f = std::fs::File::open(path).map_err(|e| Error::invalid("source", format!("cannot read it: {e}")))?;
    let n = f.read(&mut head).map_err(|e| Error::invalid("source", format!("cannot read it: {e}")))?;
    let head = &head[..n];
    if head.starts_with(b"QFI\xfb") {
        return Ok(DiskFormat::Qcow2);
    }
    // Other formats' magic: refused by name rather than imported as raw bytes.
    let others: [(&[u8], &str); 6] = [
        (b"KDMV", "vmdk"),
        (b"# Disk DescriptorFile", "vmdk"),
        (b"vhdxfile", "vhdx"),
        (b"conectix", "vpc"),
        (b"QED\0", "qed"),
        (b"<<< Oracle VM VirtualBox Disk Image >>>", "vdi"),
    ];
    if let Some((_, other)) = others.iter().find(|(m, _)| head.starts_with(m)) {
        return Err(Error::invalid(
            "source",
            format!("format {other} is not supported; convert it first: qemu-img convert -O qcow2 {} out.qcow2", path.display()),
        ));
    }
    Ok(DiskFormat::Raw)
}

/// Reads size, backing file and data file with `qemu-img info` (run with the format given
/// and under limits), and checks a qcow2's consistency with `qemu-img check`. Anything but a
/// self-contained qcow2 or raw image is refused, naming the problem.
pub(crate) fn disk_inspect(path: &Path) -> Result<DiskFacts, Error> {
    let sniffed = format_sniff(path)?;
    let out = qemu_img_limited().args(["info", "--output=json", "-f", sniffed.as_str()]).arg(path).output().map_err(|e| {
        Error::Unavailable(format!("cannot run qemu-img under prlimit ({e}); install qemu-utils and util-linux (kvmctl host setup does)"))
    })?;
    if !out.status.success() {
        return Err(Error::invalid(
            "source",
            format!("qemu-img cannot read it as a disk image: {}", String::from_utf8_lossy(&out.stderr).trim()),
        ));
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Internal(format!("qemu-img info printed something that is not JSON: {e}")))?;
    let format = match info["format"].as_str() {
        Some("qcow2") => DiskFormat::Qcow2,
        Some("raw") => DiskFormat::Raw,
        Some(other) => {
            return Err(Error::invalid(
                "source",
                format!("format {other} is not supported; convert it first: qemu-img convert -O qcow2 {} out.qcow2", path.display()),
            ))
        }
        None => return Err(Error::invalid("source", "qemu-img reports no format")),
    };
    if let Some(b) = info["backing-filename"].as_str() {
        return Err(Error::invalid(
            "source",
            format!("it has a backing file ({b}); flatten it first: qemu-img convert -O qcow2 {} out.qcow2", path.display()),
        ));
    }
    // An external data file would make the image's content another file of the host's.
    let data_file = &info["format-specific"]["data"]["data-file"];
    if !data_file.is_null() || info["format-specific"]["data"]["data-file-raw"].as_bool() == Some(true) {
        return Err(Error::invalid(
            "source",
            format!(
                "it keeps its data in an external data file ({}); only self-contained images are imported: qemu-img convert -O qcow2 {} out.qcow2",
                data_file.as_str().unwrap_or("unnamed"),
                path.display()
            ),
        ));
    }
    let virtual_bytes = info["virtual-size"].as_u64().ok_or_else(|| Error::invalid("source", "qemu-img reports no virtual size"))?;
    if format == DiskFormat::Qcow2 {
        let check = qemu_img_limited()
            .args(["check", "-f", "qcow2"])
            .arg(path)
            .output()
            .map_err(|e| Error::Unavailable(format!("cannot run qemu-img: {e}")))?;
        // 0: clean; 3: leaked clusters only (harmless, space is merely wasted).
        if !matches!(check.status.code(), Some(0) | Some(3)) {
            let detail = String::from_utf8_lossy(&check.stderr);
            let detail = if detail.trim().is_empty() { String::from_utf8_lossy(&check.stdout) } else { detail };
            return Err(Error::invalid(
                "source",
                format!("the qcow2 is corrupt or truncated (qemu-img check: {})", detail.lines().last().unwrap_or("failed").trim()),
            ));
        }
    } else {
        // qemu-img rounds a raw file's size up to a sector; a cut-off or stray file shows in the real length.
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len == 0 || len % 512 != 0 {
            return Err(Error::invalid("source", format!("a raw image of {len} bytes is not a whole number of 512-byte sectors")));
        }
    }
    Ok(DiskFacts { format, virtual_bytes })
}

fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((h.finalize().iter().map(|b| format!("{b:02x}")).collect(), len))
}

/// Uploads files as volumes, in order; on any failure removes those already made.
fn volumes_upload(node: &dyn Node, pool: &str, files: &[(String, PathBuf, DiskFormat)]) -> Result<Vec<kvmctl_libvirt::VolumeInfo>, Error> {
    let mut done: Vec<kvmctl_libvirt::VolumeInfo> = Vec::new();
    for (vol, path, format) in files {
        let result = std::fs::File::open(path)
            .and_then(|f| Ok((f.metadata()?.len(), f)))
            .map_err(|e| Error::invalid("source", format!("cannot read {}: {e}", path.display())))
            .and_then(|(len, mut f)| {
                node.volume_upload_from(pool, vol, *format, false, len, &mut f).map_err(|e| super::context::volume_error(e, pool))
            });
        match result {
            Ok(info) => done.push(info),
            Err(e) => {
                for d in &done {
                    let _ = node.volume_delete(pool, &d.name);
                }
                return Err(e);
            }
        }
    }
    Ok(done)
}

/// The template recorded by `kvmctl image build` in `image.json` beside the image.
fn built_image_template(path: &Path) -> Option<ImageTemplate> {
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(path.with_file_name("image.json")).ok()?).ok()?;
    if meta["path"].as_str().map(Path::new)?.file_name() != path.file_name() {
        return None;
    }
    Some(ImageTemplate {
        // `os` is the recipe's name (`debian-12`): the family is what precedes the version.
        os_family: meta["os"].as_str().map(|os| os.split('-').next().unwrap_or(os).to_owned()),
        os_version: meta["version"].as_str().map(str::to_owned),
        cloud_init: meta["cloud_init"].as_bool().unwrap_or(false),
        default_user: meta["default_user"].as_str().map(str::to_owned),
        boot_modes: meta["boot_modes"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        ..Default::default()
    })
}

/// Downloads `url` (http only for now) into `to`.
async fn download(url: &str, to: &Path) -> Result<(), Error> {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    if url.starts_with("https://") {
        return Err(Error::invalid(
            "source",
            "https downloads are not supported yet; download the file (curl -LO URL) and import its path with --sha256",
        ));
    }
    let uri: hyper::Uri = url.parse().map_err(|e| Error::invalid("source", format!("{url:?} is not a valid URL: {e}")))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<hyper::body::Bytes>>();
    let resp =
        client.get(uri).await.map_err(|e| Error::invalid("source", format!("cannot fetch {url}: {}", kvmctl_core::error::chain(&e))))?;
    if !resp.status().is_success() {
        return Err(Error::invalid("source", format!("fetching {url} answered {}", resp.status())));
    }
    let mut file = tokio::fs::File::create(to).await.map_err(|e| Error::Internal(format!("cannot write {}: {e}", to.display())))?;
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::invalid("source", format!("download of {url} broke off: {e}")))?;
        if let Some(data) = frame.data_ref() {
            file.write_all(data).await.map_err(|e| Error::Internal(format!("cannot write {}: {e}", to.display())))?;
        }
    }
    file.flush().await.map_err(|e| Error::Internal(format!("cannot write {}: {e}", to.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// What is inspected, hashed and uploaded is the private copy: swapping or rewriting the
    /// source after the copy changes none of it, and the copy is the daemon's alone.
    #[test]
    fn the_source_is_read_once_into_a_private_copy() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (src, copy) = (dir.path().join("src"), dir.path().join("copy"));
        std::fs::write(&src, vec![7u8; 4096]).unwrap();
        super::source_copy(&src, &copy).unwrap();
        std::fs::write(&src, b"swapped").unwrap();
        std::fs::remove_file(&src).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", &src).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), vec![7u8; 4096]);
        assert_eq!(std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777, 0o600);
        // An existing file is never overwritten (the copy is always a new file).
        assert!(super::source_copy(&copy, &copy).is_err());
    }

    #[test]
    fn formats_are_named_by_their_magic_not_probed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(super::format_sniff(&f).unwrap(), kvmctl_libvirt::xml::DiskFormat::Qcow2);
        std::fs::write(&f, b"KDMV\x01").unwrap();
        assert!(super::format_sniff(&f).unwrap_err().to_string().contains("vmdk"));
        std::fs::write(&f, vec![0u8; 512]).unwrap();
        assert_eq!(super::format_sniff(&f).unwrap(), kvmctl_libvirt::xml::DiskFormat::Raw);
    }
}
