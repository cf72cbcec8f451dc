//! `images`: import a disk image into the node's storage pool, list, show, remove.
//!
//! An import is verified before anything is created on the node: the format is read by
//! `qemu-img info` (qcow2 or raw only), a backing file is refused, a qcow2 must pass
//! `qemu-img check`, and the SHA-256 must match when one is given. The file then becomes a
//! volume through a libvirt stream (so a remote node works the same), and only then is the
//! row written. A failure at any point leaves no volume and no row.

use super::context::{blocking, parse_name, Context};
use super::image_files::{disk_inspect, iso_inspect, sha256_file, source_copy};
use crate::node::NodeHandle;
use kvmctl_core::Error;
use kvmctl_libvirt::xml::DiskFormat;
use kvmctl_libvirt::Node;
use kvmctl_store::ImageRecord;
use kvmctl_types::api::{Image, ImageImportRequest, ImageTemplate, KernelBoot};
use kvmctl_types::Name;
use std::path::{Path, PathBuf};

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

/// Removes every image's copy on `node` (being removed from kvmctl); a copy that cannot be
/// removed is logged with its volumes.
pub(crate) async fn image_copies_remove_from(ctx: &Context, conn: NodeHandle, node: &str) -> Result<(), Error> {
    for rec in ctx.store.image_list().await? {
        if !ctx.store.image_copy_exists(&rec.name, node).await? {
            continue;
        }
        if let Err(e) = volumes_remove(conn.clone(), &rec).await {
            let vols = image_volumes(&rec).join(", ");
            tracing::warn!(image = %rec.name, node, volumes = %vols, error = %kvmctl_core::error::chain(&e), "cannot remove the image's copy on the removed node; remove its volumes there with virsh");
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
