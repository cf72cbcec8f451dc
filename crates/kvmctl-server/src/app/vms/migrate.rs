//! Migration (admins): a VM moves to another node.
//!
//! - **Cold** (the VM is stopped): its root overlay and seed are copied by libvirt stream
//!   from the source node to the target's pool (the overlay's backing file renamed to the
//!   image's copy there), it gets its address on the target's network, and is defined there;
//!   only once the target's definition and volumes are verified is it removed from the source.
//! - **Live** (`live`, the VM runs): the overlay is made empty on the target over the
//!   image's copy there, and libvirt migrates the running domain peer to peer, mirroring the
//!   overlay's blocks (not the image's) and then the memory; the guest keeps running and keeps
//!   its address, which must be free in the same subnet on the target's network.
//!
//! The VM counts against the target's capacity from the start (`vm_migrate_begin`), so no
//! create takes what it needs; its forwards, DHCP reservation and metering follow it, and
//! its firewall rules are written on the target (by its agent) and removed on the source. A
//! failure at any step before the switch undoes what was made on the target and leaves the
//! VM whole on the source.

use super::*;
use kvmctl_types::api::VmMigrateRequest;
use std::path::{Path, PathBuf};

/// What a migration needs that this version does not move: refused with what to do.
async fn movable_check(ctx: &Context, rec: &VmRecord, image: &kvmctl_store::ImageRecord) -> Result<(), Error> {
    let name = &rec.name;
    let refuse = |what: String| Err(Error::Conflict(format!("VM {name} {what}; migration does not move that yet (docs/nodes.md)")));
    if !ctx.store.disk_list(&rec.id).await?.is_empty() {
        return refuse("has data disks (kvmctl vm disk list)".into());
    }
    if !ctx.store.share_list(&rec.id).await?.is_empty() {
        return refuse("shares host directories".into());
    }
    if ctx.store.media_get(&rec.id).await? != kvmctl_store::MediaRecord::default() {
        return refuse("has installer or extra ISOs attached".into());
    }
    if !ctx.store.snapshot_list(&rec.id).await?.is_empty() {
        return refuse("has snapshots (delete them first: kvmctl snapshot list)".into());
    }
    if rec.tpm || rec.firmware != "bios" {
        return refuse("has UEFI variables or a TPM, kept on its node".into());
    }
    if vmnet::vnc_port(ctx, rec).await?.is_some() {
        return refuse("has a VNC forward (remove it first: kvmctl vm forward rm)".into());
    }
    if rec.pool != image.pool {
        return refuse(format!("has its disk in pool {} rather than its image's", rec.pool));
    }
    Ok(())
}

pub async fn vm_migrate(ctx: &Context, caller: &Caller, name: &str, req: VmMigrateRequest) -> Result<Vm, Error> {
    caller.require_admin("migrating VMs")?;
    let name = parse_name("name", name)?;
    let to = parse_name("to", &req.to)?;
    let rec = vm_record(ctx, &Scope::all(), &name).await?;
    let target = ctx
        .store
        .node_get(&to)
        .await?
        .ok_or_else(|| Error::invalid("to", format!("there is no node {to}; `kvmctl node list` shows them")))?;
    if rec.node == to.as_str() {
        return Err(Error::invalid("to", format!("VM {name} is on node {to} already")));
    }
    if let Some(e) = &target.error {
        return Err(Error::Conflict(format!("node {to} did not answer its last check ({e}); it takes no VMs now")));
    }
    if target.state == "draining" {
        return Err(Error::Conflict(format!("node {to} is draining; undrain it (kvmctl node undrain {to}) or pick another")));
    }
    let _busy = ctx.vm_lock(&name, "migrating").await?;
    let rec = vm_record(ctx, &Scope::all(), &name).await?;
    let live = match (rec.state, req.live) {
        (VmState::Running, true) => true,
        (VmState::Running, false) => {
            return Err(Error::Conflict(format!(
                "VM {name} is running; migrate it live (--live) or stop it for a cold migration (kvmctl vm stop {name})"
            )))
        }
        (VmState::Stopped, true) => {
            return Err(Error::invalid("live", format!("VM {name} is stopped: leave --live out to migrate it cold")))
        }
        (VmState::Stopped, false) => false,
        (s, _) => return Err(Error::Conflict(format!("VM {name} is {s}; migrate it when it is running or stopped"))),
    };
    let image = images::image_record(ctx, &rec.image).await?;
    movable_check(ctx, &rec, &image).await?;
    if rec.ip.is_none() {
        return Err(Error::Conflict(format!("VM {name} has no address kvmctl reserves (a bridged VM); migration does not move those yet")));
    }
    let capacity =
        crate::app::nodes::capacity_total(ctx, to.as_str()).await?.ok_or_else(|| Error::invalid("to", format!("there is no node {to}")))?;
    if !ctx.store.vm_migrate_begin(&rec.id, to.as_str(), capacity).await? {
        return Err(Error::InsufficientCapacity {
            reasons: vec![format!(
                "node {to} has no room for VM {name} ({} vCPUs, {} MiB, {} GiB) within its capacity after overcommit",
                rec.vcpus, rec.memory_mib, rec.disk_gib
            )],
        });
    }
    let started = std::time::Instant::now();
    let mut steps = Steps::new();
    if let Err(e) = move_to(ctx, &rec, &image, &target, live, &mut steps).await {
        if let Err(a) = ctx.store.vm_migrate_abort(&rec.id).await {
            tracing::error!(vm = %name, error = %a, "cannot clear the migration mark; the reconciler will");
        }
        tracing::warn!(vm = %name, to = %to, live, error = %e, "migration failed; the VM stays on its node");
        return Err(e);
    }
    source_cleanup(ctx, &rec).await;
    steps.mark("source_cleanup");
    let (steps, _) = steps.summary();
    tracing::info!(vm = %name, from = %rec.node, to = %to, live, elapsed_ms = started.elapsed().as_millis() as u64, %steps, "VM migrated");
    let now = vm_record(ctx, &Scope::all(), &name).await?;
    ctx.publish("vm.migrate", &now.name, &now.owner, Some(now.state.as_str()), None, Some(&format!("{} -> {to}", rec.node)));
    super::vm_out(ctx, now).await
}

/// The volumes of the VM a migration moves: root and seed.
fn volumes(rec: &VmRecord) -> [String; 2] {
    [rec.root_volume.clone(), rec.seed_volume.clone()]
}

/// Moves the VM and switches its row; on failure, removes what it made on the target.
async fn move_to(
    ctx: &Context,
    rec: &VmRecord,
    image: &kvmctl_store::ImageRecord,
    target: &kvmctl_store::NodeRecord,
    live: bool,
    steps: &mut Steps,
) -> Result<(), Error> {
    let to = target.name.as_str();
    let (src, dst) = (ctx.node_conn(&rec.node).await?, ctx.node_conn(to).await?);
    images::image_to_node(ctx, to, image).await?;
    let (src_paths, dst_paths) = (image_paths(&src, image).await?, image_paths(&dst, image).await?);
    steps.mark("image");
    let mut moved = VmRecord { node: to.to_owned(), ..rec.clone() };
    crate::app::networks::network_on_node(ctx, to, &rec.network).await?;
    let kept = address_on_target(ctx, rec, to).await?;
    if live && !kept {
        return Err(Error::Conflict(format!(
            "VM {}'s address {} is not free in the DHCP range of network {} on node {to}; a live migration keeps the guest's address: give both nodes the network with the same subnet, or stop the VM for a cold migration",
            rec.name,
            rec.ip.as_deref().unwrap_or("-"),
            rec.network
        )));
    }
    if !kept {
        let (ip, mac) = address_pick(ctx, to, &rec.network, &Default::default(), None)
            .await?
            .ok_or_else(|| Error::Conflict(format!("network {} on node {to} hands out no addresses", rec.network)))?;
        moved.ip = Some(ip.to_string());
        moved.mac = mac;
    }
    let mut made = Made::default();
    let result = async {
        copy_volumes(ctx, rec, image, &src_paths, &dst_paths, &src, &dst, live, &mut made).await?;
        steps.mark("volumes");
        if let Some(host) = dhcp_host(&moved)? {
            dst.network_dhcp_host(&moved.network, &host, true).await?;
            made.reservation = true;
        }
        steps.mark("reservation");
        ctx.failpoints.hit("migrate.copied").await?;
        if live {
            live_migrate(ctx, rec, &moved, target, image, &src_paths, &dst_paths, &src, &dst).await?;
        } else {
            let dtype = super::domain_type(ctx, to).await;
            let xml = domain_xml_of(ctx, &moved, image, dst_paths.clone(), dtype).await?;
            dst.domain_define(xml).await?;
            made.domain = true;
            // Verified before the source lets go: defined, shut off, and every volume there at
            // its size.
            if dst.domain_state(moved.name.as_str()).await? != kvmctl_libvirt::DomainState::Shutoff {
                return Err(Error::Conflict(format!("the copy of VM {} on node {to} is not shut off", rec.name)));
            }
            for v in volumes(rec) {
                let (a, b) = (src.volume_get(&rec.pool, &v).await?, dst.volume_get(&rec.pool, &v).await?);
                match (a, b) {
                    (Some(a), Some(b)) if a.capacity_bytes == b.capacity_bytes => {}
                    _ => return Err(Error::Conflict(format!("volume {v} did not arrive whole on node {to}"))),
                }
            }
        }
        steps.mark(if live { "migrate" } else { "define" });
        ctx.failpoints.hit("migrate.moved").await?;
        // The switch: the row, its forwards (each keeps its port when the target has it free).
        forwards_for_target(ctx, rec, to).await?;
        let switched = ctx.store.vm_migrate_finish(&rec.id, moved.ip.as_deref(), &moved.mac).await?;
        steps.mark("switch");
        match switched {
            true => Ok(()),
            false => Err(Error::Conflict(format!("VM {} changed while it moved", rec.name))),
        }
    }
    .await;
    if let Err(e) = result {
        // A live migration that finished moved the guest: it is not undone (the row follows).
        let running_there = live && matches!(dst.domain_state(moved.name.as_str()).await, Ok(kvmctl_libvirt::DomainState::Running));
        if running_there {
            tracing::error!(vm = %rec.name, error = %e, "the guest runs on the target but its row could not follow; the reconciler settles it");
        } else {
            made.undo(&moved, &dst).await;
        }
        return Err(e);
    }
    let moved = vm_record(ctx, &Scope::all(), &rec.name).await?;
    // Its metadata (bridge, forwards) as the target sees it, and its rules there.
    let element = xml::metadata_xml(&vmnet::metadata_of(ctx, &moved).await?)?;
    if let Err(e) = dst.domain_metadata_set(moved.name.as_str(), element).await {
        tracing::warn!(vm = %moved.name, error = %e, "cannot update the migrated VM's metadata; the reconciler will");
    }
    if live {
        if let Err(e) = vmnet::rules_apply(ctx, &moved).await {
            tracing::warn!(vm = %moved.name, error = %e, "cannot write the migrated VM's rules on its new node yet");
        }
    }
    steps.mark("metadata");
    Ok(())
}

/// What a migration made on the target, to undo.
#[derive(Default)]
struct Made {
    volumes: Vec<String>,
    reservation: bool,
    domain: bool,
}

impl Made {
    async fn undo(&self, moved: &VmRecord, dst: &crate::node::NodeHandle) {
        let name = moved.name.as_str();
        if self.domain {
            let _ = dst.domain_destroy(name).await;
            if let Err(e) = dst.domain_undefine(name).await {
                if !e.is_not_found() {
                    tracing::warn!(vm = %name, error = %e, "cannot remove the target's definition after a failed migration; gc will");
                }
            }
        }
        for v in &self.volumes {
            if let Err(e) = dst.volume_delete(&moved.pool, v).await {
                tracing::warn!(vm = %name, volume = %v, error = %e, "cannot remove a volume copied for a failed migration; gc will");
            }
        }
        if self.reservation {
            if let Ok(Some(host)) = dhcp_host(moved) {
                let _ = dst.network_dhcp_host(&moved.network, &host, false).await;
            }
        }
    }
}

/// Whether the VM's address can stay as it is on the target's network (inside its DHCP
/// range, taken by no one there).
async fn address_on_target(ctx: &Context, rec: &VmRecord, to: &str) -> Result<bool, Error> {
    let Some(ip) = rec.ip.as_deref().and_then(|i| i.parse::<std::net::Ipv4Addr>().ok()) else { return Ok(false) };
    let node = ctx.node_conn(to).await?;
    let net_xml = node.network_xml(&rec.network).await.map_err(|e| match e {
        e if e.is_not_found() => {
            Error::Conflict(format!("node {to} has no network {}; define it there first (the VM's network goes with it)", rec.network))
        }
        e => e.into(),
    })?;
    let Some(info) = xml::network_dhcp_info(&net_xml) else { return Ok(false) };
    if !(info.range_start..=info.range_end).contains(&ip) || info.hosts.iter().any(|(m, h)| *h == ip && !m.eq_ignore_ascii_case(&rec.mac)) {
        return Ok(false);
    }
    let leases = node.network_leases(&rec.network).await.unwrap_or_default();
    if leases.iter().any(|(m, i)| i.parse() == Ok(ip) && !m.eq_ignore_ascii_case(&rec.mac)) {
        return Ok(false);
    }
    let rows = ctx.store.vm_list(&Scope::all()).await?;
    Ok(!rows.iter().any(|v| v.id != rec.id && v.node == to && v.network == rec.network && v.ip.as_deref() == rec.ip.as_deref()))
}

/// Forwards whose host port the target has taken give it up for a free one of their pool.
async fn forwards_for_target(ctx: &Context, rec: &VmRecord, to: &str) -> Result<(), Error> {
    let taken: std::collections::HashSet<(String, u16)> =
        ctx.store.forward_list().await?.into_iter().filter(|f| f.node == to).map(|f| (f.protocol, f.host_port)).collect();
    let on_target = VmRecord { node: to.to_owned(), ..rec.clone() };
    for f in ctx.store.forward_list_vm(&rec.id).await? {
        if taken.contains(&(f.protocol.clone(), f.host_port)) {
            ctx.store.forward_delete(&rec.id, &f.protocol, f.host_port).await?;
            let proto = kvmctl_netfw::Protocol::parse(&f.protocol).unwrap_or(kvmctl_netfw::Protocol::Tcp);
            forwards::forward_allocate(ctx, &on_target, &ctx.pools, &f.pool, proto, f.guest_port).await?;
            tracing::info!(vm = %rec.name, old = f.host_port, "the forward's port is taken on the new node; it gets another");
        }
    }
    Ok(())
}

/// A scratch file for a volume passing through the daemon.
fn scratch(ctx: &Context, rec: &VmRecord, volume: &str) -> Result<PathBuf, Error> {
    let dir = ctx.config.snapshot_dir.join(".migrations");
    std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir.join(format!("{}-{volume}", rec.id)))
}

/// Removes scratch files of copies no migration is making (a daemon that died mid-copy left
/// them): only those of VMs without an open migration.
async fn scratch_sweep(ctx: &Context, open: &[(Name, String)]) -> Result<(), Error> {
    let dir = ctx.config.snapshot_dir.join(".migrations");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
    let mut moving = Vec::new();
    for (name, _) in open {
        if let Some(rec) = ctx.store.vm_get(&Scope::all(), name).await? {
            moving.push(rec.id.to_string());
        }
    }
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        if !moving.iter().any(|id| file.starts_with(&format!("{id}-"))) {
            if let Err(err) = std::fs::remove_file(e.path()) {
                tracing::warn!(file = %e.path().display(), error = %err, "cannot remove a migration's scratch file");
            }
        }
    }
    Ok(())
}

/// Copies the VM's volumes to the target: the seed always (read-only, no migration moves
/// it); the root overlay by stream for a cold migration, or made empty over the image's copy
/// for a live one (the migration mirrors its blocks).
#[allow(clippy::too_many_arguments)]
async fn copy_volumes(
    ctx: &Context,
    rec: &VmRecord,
    image: &kvmctl_store::ImageRecord,
    src_paths: &ImagePaths,
    dst_paths: &ImagePaths,
    src: &crate::node::NodeHandle,
    dst: &crate::node::NodeHandle,
    live: bool,
    made: &mut Made,
) -> Result<(), Error> {
    let fmt = if image.format == "raw" { DiskFormat::Raw } else { DiskFormat::Qcow2 };
    let (src_base, dst_base) = (src_paths.0.join(&image.volume), dst_paths.0.join(&image.volume));
    for (v, root) in [(&rec.root_volume, true), (&rec.seed_volume, false)] {
        if dst.volume_get(&rec.pool, v).await?.is_some() {
            return Err(Error::Conflict(format!(
                "node {} has a volume {v} already; remove it (or run kvmctl gc) and try again",
                dst_paths.0.display()
            )));
        }
        if root && live {
            let spec = VolumeSpec {
                private: true,
                name: v.clone(),
                capacity_bytes: rec.disk_gib * GIB,
                format: DiskFormat::Qcow2,
                backing: Some((dst_base.clone(), fmt)),
            };
            dst.volume_create(&rec.pool, spec).await.map_err(|e| crate::app::context::volume_error(e, &rec.pool))?;
            made.volumes.push(v.clone());
            continue;
        }
        let file = scratch(ctx, rec, v)?;
        let copied = async {
            let len = src.volume_download_to(&rec.pool, v, file.clone()).await?;
            if root {
                let (f, from, to) = (file.clone(), src_base.clone(), dst_base.clone());
                blocking(move || qcow2_backing_rename(&f, &from, &to)).await?.map_err(Error::Conflict)?;
            }
            let (pool, name, f) = (rec.pool.clone(), v.clone(), file.clone());
            let format = if root { DiskFormat::Qcow2 } else { DiskFormat::Raw };
            dst.run(move |n| {
                let mut data = std::fs::File::open(&f).map_err(|source| kvmctl_libvirt::NodeError::Read { name: name.clone(), source })?;
                n.volume_upload_from(&pool, &name, format, true, len, &mut data)
            })
            .await
            .map_err(|e| crate::app::context::volume_error(e, &rec.pool))?;
            Ok::<_, Error>(())
        }
        .await;
        let _ = std::fs::remove_file(&file);
        copied?;
        made.volumes.push(v.clone());
    }
    Ok(())
}

/// The live migration itself: the running domain's definition with the target's paths,
/// migrated peer to peer over the target's address.
#[allow(clippy::too_many_arguments)]
async fn live_migrate(
    ctx: &Context,
    rec: &VmRecord,
    moved: &VmRecord,
    target: &kvmctl_store::NodeRecord,
    image: &kvmctl_store::ImageRecord,
    src_paths: &ImagePaths,
    dst_paths: &ImagePaths,
    src: &crate::node::NodeHandle,
    dst: &crate::node::NodeHandle,
) -> Result<(), Error> {
    let live_xml = src.domain_xml_migratable(rec.name.as_str()).await?;
    let mut pairs: Vec<(PathBuf, PathBuf)> = vec![
        (src_paths.0.join(&rec.root_volume), dst_paths.0.join(&rec.root_volume)),
        (src_paths.0.join(&rec.seed_volume), dst_paths.0.join(&rec.seed_volume)),
        (src_paths.0.join(&image.volume), dst_paths.0.join(&image.volume)),
        (serial_log_on_node(ctx, rec), serial_log_on_node(ctx, moved)),
    ];
    if let (Some((k1, i1)), Some((k2, i2))) = (&src_paths.1, &dst_paths.1) {
        pairs.push((k1.clone(), k2.clone()));
        if let (Some(a), Some(b)) = (i1, i2) {
            pairs.push((a.clone(), b.clone()));
        }
    }
    let dest_xml = paths_replace(&live_xml, &pairs);
    let host = uri_host(&target.uri)
        .ok_or_else(|| Error::Conflict(format!("node {}'s URI {} names no host to migrate to", target.name, target.uri)))?;
    let migration_uri = format!("tcp://{host}");
    let t = std::time::Instant::now();
    src.domain_migrate_live(rec.name.as_str(), &target.uri, Some(migration_uri), dest_xml).await.map_err(|e| {
        Error::Conflict(format!("libvirt could not migrate VM {} to node {}: {}", rec.name, target.name, kvmctl_core::error::chain(&e)))
    })?;
    tracing::info!(vm = %rec.name, to = %target.name, migrate_ms = t.elapsed().as_millis() as u64, "live migration done");
    match dst.domain_state(rec.name.as_str()).await? {
        kvmctl_libvirt::DomainState::Running => Ok(()),
        s => Err(Error::Conflict(format!("VM {} arrived on node {} {s:?}, not running", rec.name, target.name))),
    }
}

/// The host part of a libvirt URI (`qemu+tcp://user@host:port/system` -> `host`).
pub(crate) fn uri_host(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?.to_owned(),
        None => host_port.split(':').next()?.to_owned(),
    };
    (!host.is_empty()).then_some(host)
}

/// `xml` with each path of `pairs` (quoted in an attribute, or an element's whole text)
/// replaced by its partner.
fn paths_replace(xml: &str, pairs: &[(PathBuf, PathBuf)]) -> String {
    let mut out = xml.to_owned();
    for (from, to) in pairs {
        let (f, t) = (from.display().to_string(), to.display().to_string());
        if f == t {
            continue;
        }
        for (l, r) in [("'", "'"), ("\"", "\""), (">", "<")] {
            out = out.replace(&format!("{l}{f}{r}"), &format!("{l}{t}{r}"));
        }
    }
    out
}

/// Renames the backing file a qcow2 image's header names (what `qemu-img rebase -u` does):
/// the name lives in the image's first cluster, which holds nothing else after it. Refuses
/// an image whose backing file is not `from`.
pub(crate) fn qcow2_backing_rename(file: &Path, from: &Path, to: &Path) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut head = vec![0u8; 104];
    f.read_exact(&mut head).map_err(|e| format!("not a qcow2 image: {e}"))?;
    if &head[0..4] != b"QFI\xfb" {
        return Err("the root disk is not a qcow2 image".into());
    }
    let be64 = |o: usize| u64::from_be_bytes(head[o..o + 8].try_into().expect("8 bytes"));
    let be32 = |o: usize| u32::from_be_bytes(head[o..o + 4].try_into().expect("4 bytes"));
    let (offset, size, cluster_bits) = (be64(8), be32(16) as u64, be32(20));
    if !(9..=21).contains(&cluster_bits) {
        return Err("the root disk's qcow2 header is damaged (cluster size)".into());
    }
    let cluster = 1u64 << cluster_bits;
    if offset == 0 || size == 0 || offset + size > cluster {
        return Err("the root disk is not an overlay (it names no backing file in its first cluster)".into());
    }
    let mut old = vec![0u8; size as usize];
    f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
    f.read_exact(&mut old).map_err(|e| e.to_string())?;
    if old != from.as_os_str().as_encoded_bytes() {
        return Err(format!(
            "the root disk's backing file is {}, not its image {}: it is not moved (a clone of a base, say)",
            String::from_utf8_lossy(&old),
            from.display()
        ));
    }
    let new = to.as_os_str().as_encoded_bytes();
    if offset + new.len() as u64 > cluster || new.len() > 1023 {
        return Err(format!("the image's path on the target node ({}) is too long for the qcow2 header", to.display()));
    }
    let mut name = new.to_vec();
    // What the old name held beyond the new one is zeroed.
    name.resize(new.len().max(old.len()), 0);
    f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
    f.write_all(&name).map_err(|e| e.to_string())?;
    f.seek(SeekFrom::Start(16)).map_err(|e| e.to_string())?;
    f.write_all(&(new.len() as u32).to_be_bytes()).map_err(|e| e.to_string())?;
    f.sync_all().map_err(|e| e.to_string())
}

/// After the switch: the VM's domain, volumes, reservation, rules and logs on the source go.
/// Failures are logged: what remains is debris gc finds.
async fn source_cleanup(ctx: &Context, rec: &VmRecord) {
    let name = rec.name.as_str();
    let Ok(src) = ctx.node_conn(&rec.node).await else { return };
    match src.domain_state(name).await {
        Ok(kvmctl_libvirt::DomainState::Shutoff) => {
            if let Err(e) = src.domain_undefine(name).await {
                tracing::warn!(vm = %name, error = %e, "cannot remove the source's definition after the migration; gc will");
            }
        }
        Ok(s) => tracing::error!(vm = %name, state = ?s, "the source's domain is not shut off after the migration; left for gc"),
        Err(e) if e.is_not_found() => {}
        Err(e) => tracing::warn!(vm = %name, error = %e, "cannot read the source's domain after the migration"),
    }
    for v in volumes(rec) {
        if let Err(e) = src.volume_delete(&rec.pool, &v).await {
            if !e.is_not_found() {
                tracing::warn!(vm = %name, volume = %v, error = %e, "cannot remove a source volume after the migration; gc will");
            }
        }
    }
    if let Ok(Some(host)) = dhcp_host(rec) {
        if let Err(e) = src.network_dhcp_host(&rec.network, &host, false).await {
            tracing::warn!(vm = %name, error = %e, "cannot remove the source's DHCP reservation after the migration; gc will");
        }
    }
    if let Err(e) = vmnet::rules_remove(ctx, rec).await {
        tracing::warn!(vm = %name, error = %e, "cannot remove the VM's rules on its old node; gc will");
    }
    if rec.node == crate::app::context::LOCAL {
        let _ = std::fs::remove_file(console_log(ctx, &rec.name));
        let _ = std::fs::remove_file(format!("/var/log/libvirt/qemu/{name}.log"));
    } else if let Ok(Some(agent)) = ctx.node_agent(&rec.node).await {
        let _ = agent.logs_remove(&rec.name).await;
    }
}

/// Migrations a crash interrupted (the mark is set, no operation holds the VM): one whose
/// guest runs on the target with this VM's metadata, and no longer on the source, is
/// finished (a live migration libvirt completed); any other is undone on the target.
pub async fn recover(ctx: &Context) -> Result<(), Error> {
    let open = ctx.store.vm_migrations_open().await?;
    scratch_sweep(ctx, &open).await?;
    for (name, to) in open {
        let Ok(_held) = ctx.vm_try_lock(&name, "recovering").await else { continue };
        let Some(rec) = ctx.store.vm_get(&Scope::all(), &name).await? else { continue };
        let (src, dst) = (ctx.node_conn(&rec.node).await?, ctx.node_conn(&to).await?);
        let ours_there = match dst.domain_xml(name.as_str()).await {
            Ok(x) => xml::metadata_parse(&x).is_some_and(|m| m.vm_id == rec.id),
            Err(_) => false,
        };
        let running_there = ours_there && matches!(dst.domain_state(name.as_str()).await, Ok(kvmctl_libvirt::DomainState::Running));
        let running_here = matches!(src.domain_state(name.as_str()).await, Ok(kvmctl_libvirt::DomainState::Running));
        if running_there && !running_here {
            ctx.store.vm_migrate_finish(&rec.id, rec.ip.as_deref(), &rec.mac).await?;
            source_cleanup(ctx, &rec).await;
            tracing::info!(vm = %name, to = %to, "finished a live migration a crash interrupted");
            continue;
        }
        let moved = VmRecord { node: to.clone(), ..rec.clone() };
        // Only what is this VM's on the target is removed; a reservation there is ours when
        // the target network holds this VM's MAC.
        let reserved = dst.network_xml(&rec.network).await.is_ok_and(|x| x.to_ascii_lowercase().contains(&rec.mac.to_ascii_lowercase()));
        let made = Made {
            volumes: if running_there { Vec::new() } else { volumes(&rec).to_vec() },
            reservation: reserved,
            domain: ours_there && !running_there,
        };
        if !running_there {
            made.undo(&moved, &dst).await;
        }
        ctx.store.vm_migrate_abort(&rec.id).await?;
        tracing::info!(vm = %name, to = %to, "undid a migration a crash interrupted; the VM stays on node {}", rec.node);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_hosts() {
        assert_eq!(uri_host("qemu+tcp://10.79.0.2/system").as_deref(), Some("10.79.0.2"));
        assert_eq!(uri_host("qemu+ssh://root@node3.example:2222/system").as_deref(), Some("node3.example"));
        assert_eq!(uri_host("qemu+tls://[fd00::3]:16514/system").as_deref(), Some("fd00::3"));
        assert_eq!(uri_host("qemu:///system"), None);
    }

    #[test]
    fn paths_are_replaced_where_they_are_whole() {
        let xml = "<disk><source file='/a/pool/vm-root.qcow2'/></disk><kernel>/a/pool/k</kernel><x file='/a/pool/vm-root.qcow2.bak'/>";
        let out = paths_replace(
            xml,
            &[
                (PathBuf::from("/a/pool/vm-root.qcow2"), PathBuf::from("/b/vm-root.qcow2")),
                (PathBuf::from("/a/pool/k"), PathBuf::from("/b/k")),
            ],
        );
        assert_eq!(out, "<disk><source file='/b/vm-root.qcow2'/></disk><kernel>/b/k</kernel><x file='/a/pool/vm-root.qcow2.bak'/>");
    }

    #[test]
    fn a_qcow2_overlay_is_renamed_and_anything_else_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let overlay = dir.path().join("overlay.qcow2");
        let ok = |c: &mut std::process::Command| assert!(c.status().unwrap().success());
        ok(std::process::Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&base).arg("16M"));
        ok(std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&base)
            .arg(&overlay)
            .arg("32M"));
        let longer = dir.path().join("a-much-longer-pool-directory-name-on-the-target-node");
        std::fs::create_dir(&longer).unwrap();
        std::fs::copy(&base, longer.join("base.qcow2")).unwrap();
        let moved = &longer.join("base.qcow2");
        assert!(qcow2_backing_rename(&overlay, Path::new("/elsewhere/base.qcow2"), moved).unwrap_err().contains("not its image"));
        qcow2_backing_rename(&overlay, &base, moved).unwrap();
        let info = std::process::Command::new("qemu-img").args(["info", "--output=json", "-U"]).arg(&overlay).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(v["backing-filename"], moved.display().to_string(), "{v}");
        assert_eq!(v["virtual-size"], 32 << 20);
        let check = std::process::Command::new("qemu-img").args(["check", "-q", "-U"]).arg(&overlay).status().unwrap();
        assert!(check.success(), "qemu-img check passes after the rename");
        // Shorter again: the tail of the longer name is zeroed.
        qcow2_backing_rename(&overlay, moved, &base).unwrap();
        let check = std::process::Command::new("qemu-img").args(["check", "-q", "-U"]).arg(&overlay).status().unwrap();
        assert!(check.success());
        assert!(qcow2_backing_rename(&base, &base, moved).unwrap_err().contains("not an overlay"));
        std::fs::write(dir.path().join("raw"), [0u8; 512]).unwrap();
        assert!(qcow2_backing_rename(&dir.path().join("raw"), &base, moved).unwrap_err().contains("not a qcow2"));
    }
}
