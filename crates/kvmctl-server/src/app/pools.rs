//! Storage pools: `kvmctl pool create|list|show|delete` (admins).
//!
//! A pool is a libvirt storage pool on a node: a directory (`dir`), or an LVM volume group
//! (`lvm`; made on the devices given when it does not exist). kvmctl records the pools it
//! made; the daemon's own pool (setting `pool`) is listed with them as the default. VMs put
//! their root disk and seed in a pool (`vm create --pool`), data disks theirs (`vm disk add
//! --pool`): on a directory as qcow2 (a root disk as an overlay on its image), on LVM as raw
//! logical volumes (a root disk holding a copy of its image). A pool is removed only when
//! nothing kvmctl knows lives in it, checked in the statement that removes its row.

use super::context::{Context, LOCAL};
use super::parse_name;
use kvmctl_core::{Caller, Error};
use kvmctl_libvirt::PoolInfo;
use kvmctl_store::PoolRecord;
use kvmctl_types::api::{PoolCreateRequest, StoragePool};
use std::path::PathBuf;

/// The pool `name` as the API shows it.
async fn pool_view(ctx: &Context, rec: &PoolRecord, default: bool) -> Result<StoragePool, Error> {
    let conn = ctx.node_conn(&rec.node).await?;
    let info = conn.pool_info(&rec.name).await?;
    let used_by = ctx.store.pool_users(&rec.name).await?;
    Ok(view(rec, info, default, used_by))
}

fn view(rec: &PoolRecord, info: Option<PoolInfo>, default: bool, used_by: Vec<String>) -> StoragePool {
    let state = match &info {
        Some(i) if i.active => "active",
        Some(_) => "inactive",
        None => "missing",
    };
    StoragePool {
        name: rec.name.clone(),
        node: rec.node.clone(),
        kind: rec.kind.clone(),
        source: rec.source.clone(),
        path: info.as_ref().map(|i| i.target.display().to_string()).unwrap_or_default(),
        state: state.into(),
        capacity_bytes: info.as_ref().map_or(0, |i| i.capacity_bytes),
        allocation_bytes: info.as_ref().map_or(0, |i| i.allocation_bytes),
        available_bytes: info.as_ref().map_or(0, |i| i.available_bytes),
        default,
        used_by,
    }
}

/// The daemon's own pool, as a record (it is not in the table).
async fn default_pool(ctx: &Context) -> Result<PoolRecord, Error> {
    let info = ctx.local_node.pool_info(&ctx.config.pool).await?;
    Ok(PoolRecord {
        name: ctx.config.pool.clone(),
        node: LOCAL.into(),
        kind: if info.as_ref().is_some_and(|i| i.kind == "logical") { "lvm" } else { "dir" }.into(),
        source: info.map(|i| i.target.display().to_string()).unwrap_or_default(),
        devices: Vec::new(),
        created_at: 0,
    })
}

pub async fn pool_list(ctx: &Context, caller: &Caller) -> Result<Vec<StoragePool>, Error> {
    caller.require_admin("listing storage pools")?;
    let mut out = vec![pool_view(ctx, &default_pool(ctx).await?, true).await?];
    for p in ctx.store.pool_list().await? {
        out.push(pool_view(ctx, &p, false).await?);
    }
    Ok(out)
}

pub async fn pool_get(ctx: &Context, caller: &Caller, name: &str) -> Result<StoragePool, Error> {
    caller.require_admin("reading storage pools")?;
    if name == ctx.config.pool {
        return pool_view(ctx, &default_pool(ctx).await?, true).await;
    }
    let rec = ctx.store.pool_get(name).await?.ok_or_else(|| Error::NotFound { kind: "pool", name: name.to_owned() })?;
    pool_view(ctx, &rec, false).await
}

/// A volume group's name as LVM takes it.
fn vg_check(vg: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&vg.len())
        && vg.chars().all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
        && !vg.starts_with('-')
        && vg != "."
        && vg != "..";
    if !ok {
        return Err(Error::invalid("volume_group", format!("{vg:?} is not a volume group name: letters, digits, '.', '_', '-', '+'")));
    }
    Ok(())
}

pub async fn pool_create(ctx: &Context, caller: &Caller, req: PoolCreateRequest) -> Result<StoragePool, Error> {
    caller.require_admin("creating storage pools")?;
    let name = parse_name("name", &req.name)?.to_string();
    if name == ctx.config.pool || ctx.store.pool_get(&name).await?.is_some() {
        return Err(Error::Conflict(format!("a pool named {name} exists already; pick another name")));
    }
    if ctx.local_node.pool_info(&name).await?.is_some() {
        return Err(Error::Conflict(format!(
            "libvirt already has a storage pool named {name} that kvmctl did not make; pick another name"
        )));
    }
    let (kind, source, devices) = match req.kind.as_str() {
        "dir" => {
            if req.volume_group.is_some() || !req.devices.is_empty() {
                return Err(Error::invalid("volume_group", "a dir pool takes a path, not a volume group or devices"));
            }
            let path = req.path.clone().ok_or_else(|| Error::invalid("path", "a dir pool needs an absolute path"))?;
            let p = PathBuf::from(&path);
            if !p.is_absolute() || path.chars().any(|c| c.is_control()) || p.components().any(|c| c == std::path::Component::ParentDir) {
                return Err(Error::invalid("path", format!("{path:?} is not an absolute path without '..'")));
            }
            if p.exists() && !p.is_dir() {
                return Err(Error::invalid("path", format!("{path} exists and is not a directory")));
            }
            ("dir", path, Vec::new())
        }
        "lvm" => {
            if req.path.is_some() {
                return Err(Error::invalid("path", "an lvm pool takes a volume group (and devices), not a path"));
            }
            let vg = req.volume_group.clone().ok_or_else(|| Error::invalid("volume_group", "an lvm pool needs a volume group"))?;
            vg_check(&vg)?;
            for (i, d) in req.devices.iter().enumerate() {
                let field = format!("devices[{i}]");
                if !d.starts_with("/dev/") || d.contains("..") || d.chars().any(|c| c.is_control()) {
                    return Err(Error::invalid(field, format!("{d:?} is not a device under /dev")));
                }
                let meta = std::fs::metadata(d).map_err(|e| Error::invalid(&field, format!("{d}: {e}")))?;
                if !std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
                    return Err(Error::invalid(field, format!("{d} is not a block device")));
                }
            }
            if req.devices.is_empty() && !PathBuf::from("/dev").join(&vg).exists() {
                return Err(Error::invalid("devices", format!("there is no volume group {vg}; name the devices to make it on")));
            }
            if which("vgcreate").is_none() {
                return Err(Error::Unavailable(
                    "LVM's tools are not installed on this host: apt-get install lvm2 (or dnf install lvm2)".into(),
                ));
            }
            ("lvm", vg, req.devices.clone())
        }
        k => return Err(Error::invalid("kind", format!("{k:?} is not dir or lvm"))),
    };
    let made = match kind {
        "dir" => ctx.local_node.pool_ensure_dir(&name, PathBuf::from(&source)).await,
        _ => ctx.local_node.pool_ensure_logical(&name, &source, devices.iter().map(PathBuf::from).collect()).await,
    };
    made.map_err(|e| Error::invalid(if kind == "dir" { "path" } else { "volume_group" }, kvmctl_core::error::chain(&e)))?;
    let rec = PoolRecord { name: name.clone(), node: LOCAL.into(), kind: kind.into(), source, devices, created_at: 0 };
    if let Err(e) = ctx.store.pool_insert(&rec).await {
        // Give the pool back: libvirt's definition goes (its storage stays as it was made).
        let _ = ctx.local_node.pool_remove(&name, false).await;
        return Err(e.into());
    }
    tracing::info!(pool = %name, kind, source = %rec.source, "storage pool created");
    pool_view(ctx, &rec, false).await
}

/// Removes a pool nothing lives in: its libvirt definition, and for LVM pools kvmctl built on
/// devices, the volume group (the devices are free again). A directory stays.
pub async fn pool_delete(ctx: &Context, caller: &Caller, name: &str) -> Result<(), Error> {
    caller.require_admin("removing storage pools")?;
    if name == ctx.config.pool {
        return Err(Error::Conflict(format!("{name} is the daemon's own pool (setting `pool`); it is removed by kvmctl host uninstall")));
    }
    let rec = ctx.store.pool_get(name).await?.ok_or_else(|| Error::NotFound { kind: "pool", name: name.to_owned() })?;
    let conn = ctx.node_conn(&rec.node).await?;
    let in_use = |users: Vec<String>| Error::Conflict(format!("pool {name} is in use by {}; remove those first", users.join(", ")));
    let users = ctx.store.pool_users(name).await?;
    if !users.is_empty() {
        return Err(in_use(users));
    }
    // Volumes kvmctl does not know of (made by hand) keep the pool too.
    if conn.pool_info(name).await?.is_some_and(|i| i.active) {
        let stray: Vec<String> = conn.volume_list(name).await?.into_iter().map(|v| v.name).collect();
        if !stray.is_empty() {
            return Err(Error::Conflict(format!("pool {name} still holds volumes ({}); remove them first", stray.join(", "))));
        }
    }
    // The same check again, in the statement that removes the row: nothing slips in between.
    if let Err(users) = ctx.store.pool_delete_unused(name).await? {
        return Err(in_use(users));
    }
    let wipe = rec.kind == "lvm" && !rec.devices.is_empty();
    match conn.pool_remove(name, wipe).await {
        Err(e) if !e.is_not_found() => {
            // The row is gone; put it back so the pool is not forgotten while libvirt keeps it.
            ctx.store.pool_insert(&rec).await?;
            return Err(e.into());
        }
        _ => {}
    }
    tracing::info!(pool = %name, wipe, "storage pool removed");
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().map(|d| PathBuf::from(d).join(program)).find(|p| p.exists())
}

/// The pool a VM's disk goes in: the named one (which must exist, be active and have room
/// for `bytes`), or `default`; and the node the named one is on.
pub(crate) async fn pool_for_disk(
    ctx: &Context,
    field: &str,
    wanted: Option<&str>,
    default: &str,
    bytes: u64,
) -> Result<(String, Option<String>), Error> {
    let Some(name) = wanted.filter(|w| *w != default) else {
        return Ok((default.to_owned(), None));
    };
    let unknown = || Error::invalid(field, format!("there is no pool {name}; `kvmctl pool list` shows them"));
    let rec = if name == ctx.config.pool { default_pool(ctx).await? } else { ctx.store.pool_get(name).await?.ok_or_else(unknown)? };
    let info = ctx.node_conn(&rec.node).await?.pool_info(name).await?.ok_or_else(unknown)?;
    if !info.active {
        return Err(Error::Conflict(format!("pool {name} is not active on node {}; start it (virsh pool-start {name})", rec.node)));
    }
    if info.available_bytes < bytes {
        return Err(Error::InsufficientCapacity {
            reasons: vec![format!(
                "pool {name} has {} MiB free, less than the {} MiB asked for; pick a smaller size or another pool",
                info.available_bytes >> 20,
                bytes >> 20
            )],
        });
    }
    if info.kind == "logical" && rec.node == LOCAL && !device_mapper() {
        return Err(Error::Unavailable(DM_MISSING.into()));
    }
    Ok((name.to_owned(), Some(rec.node)))
}

const DM_MISSING: &str =
    "this host's kernel has no device-mapper (dm_mod), so LVM logical volumes cannot be made here; load dm_mod, or use a directory pool";

/// Whether the kernel has device-mapper, which every logical volume needs.
fn device_mapper() -> bool {
    std::fs::read_to_string("/proc/misc").is_ok_and(|m| m.lines().any(|l| l.ends_with(" device-mapper")))
}

/// Whether the pool holds raw logical volumes (LVM).
pub(crate) async fn pool_is_lvm(ctx: &Context, node: &str, pool: &str) -> Result<bool, Error> {
    Ok(ctx.node_conn(node).await?.pool_info(pool).await?.is_some_and(|i| i.kind == "logical"))
}

/// The daemon's storage pools as host checks (for `host doctor` through the daemon): each
/// active with room, or what to do.
pub(crate) async fn pool_checks(ctx: &Context) -> Vec<kvmctl_types::api::Check> {
    use kvmctl_types::api::{Check, CheckStatus};
    let mut out = Vec::new();
    let Ok(pools) = ctx.store.pool_list().await else { return out };
    for p in pools {
        let info = match ctx.node_conn(&p.node).await {
            Ok(c) => c.pool_info(&p.name).await.ok().flatten(),
            Err(_) => None,
        };
        let (status, evidence, fix) = match info {
            None => (
                CheckStatus::Fail,
                format!("{} pool {} ({}) is missing from libvirt", p.kind, p.name, p.source),
                "kvmctl pool delete it, and create it again".to_owned(),
            ),
            Some(i) if !i.active => {
                (CheckStatus::Fail, format!("{} pool {} is inactive", p.kind, p.name), format!("virsh pool-start {}", p.name))
            }
            Some(_) if p.kind == "lvm" && p.node == LOCAL && !device_mapper() => {
                (CheckStatus::Fail, format!("lvm pool {}: {DM_MISSING}", p.name), "modprobe dm_mod".to_owned())
            }
            Some(i) if i.capacity_bytes > 0 && i.available_bytes * 10 < i.capacity_bytes => (
                CheckStatus::Warn,
                format!("{} pool {}: {} GiB of {} GiB free", p.kind, p.name, i.available_bytes >> 30, i.capacity_bytes >> 30),
                "free space in it, or grow it".to_owned(),
            ),
            Some(i) => (
                CheckStatus::Ok,
                format!("{} pool {}: {} GiB of {} GiB free", p.kind, p.name, i.available_bytes >> 30, i.capacity_bytes >> 30),
                String::new(),
            ),
        };
        out.push(Check { id: format!("pool.{}", p.name), status, evidence, fix, blocks: false });
    }
    out
}
