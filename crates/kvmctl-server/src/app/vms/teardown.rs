//! Delete, and the idempotent teardown that also undoes a failed or interrupted create.

use super::*;

/// The DHCP host entry reserving the VM's address, when it has one of its own (not one
/// reserved ahead, which stays with the network).
pub(super) fn dhcp_host(rec: &VmRecord) -> Result<Option<String>, Error> {
    match rec.ip.as_deref().and_then(|i| i.parse().ok()) {
        Some(ip) if rec.mac == xml::premade_mac(ip) => Ok(None),
        Some(ip) => Ok(Some(xml::dhcp_host_xml(&rec.mac, ip, rec.name.as_str())?)),
        None => Ok(None),
    }
}

/// Removes whatever exists of a VM on its node: domain (stopped first), seed and (unless
/// `keep_disk`) root volume, console and QEMU logs. Idempotent: what is already gone is
/// skipped, so it undoes a create at any step and finishes an interrupted delete.
///
/// `made`: the volumes a failed create made itself, when it undoes its work: a volume of the
/// VM's name that appeared meanwhile (someone else's) is left alone.
pub(crate) async fn vm_teardown(ctx: &Context, rec: &VmRecord, keep_disk: bool, made: Option<&[String]>) -> Result<(), Error> {
    // A disk recorded as kept stays, also when a crash interrupted the delete that kept it.
    let keep_disk = keep_disk || ctx.store.kept_disk_exists(&rec.node, &rec.pool, &rec.root_volume).await?;
    let node = ctx.node_conn(&rec.node).await?;
    let name = rec.name.to_string();
    // (pool, volume): the seed, and unless kept the root disk and the data disks (each in its
    // own pool).
    let mut volumes = vec![(rec.pool.clone(), rec.seed_volume.clone())];
    let data = ctx.store.disk_list(&rec.id).await?;
    if !keep_disk {
        volumes.push((rec.pool.clone(), rec.root_volume.clone()));
        volumes.extend(data.iter().map(|d| (d.pool.clone(), d.volume.clone())));
    }
    volumes.retain(|(_, v)| made.is_none_or(|m| m.contains(v)));
    let gone = |r: Result<(), NodeError>| match r {
        Err(e) if e.is_not_found() => Ok(()),
        r => r,
    };
    // Only a domain that carries this VM's id is ours to remove.
    let ours = match node.domain_xml(&name).await {
        Ok(xml) => xml::metadata_parse(&xml).is_some_and(|m| m.vm_id == rec.id),
        Err(e) if e.is_not_found() => false,
        Err(e) => return Err(e.into()),
    };
    if ours {
        gone(node.domain_destroy(&name).await)?;
    }
    ctx.failpoints.hit("delete.destroy").await?;
    vmnet::rules_remove(ctx, rec).await?;
    let absent = !ours && matches!(node.domain_state(&name).await, Err(e) if e.is_not_found());
    if ours {
        gone(node.domain_undefine(&name).await)?;
    }
    // A UEFI store copied in for a clone or a restore that never started is not yet named in
    // the definition, so the undefine above does not remove it.
    if (ours || absent) && node.uri() == "qemu:///system" {
        let store = PathBuf::from(format!("/var/lib/libvirt/qemu/nvram/{name}_VARS.fd"));
        match std::fs::remove_file(&store) {
            Ok(()) => tracing::info!(vm = %name, "removed the VM's UEFI variable store"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %store.display(), error = %e, "cannot remove the VM's UEFI variable store"),
        }
    }
    ctx.failpoints.hit("delete.undefine").await?;
    for (pool, v) in &volumes {
        gone(node.volume_delete(pool, v).await)?;
    }
    ctx.failpoints.hit("delete.volumes").await?;
    if made.is_none() {
        ctx.store.disk_delete_vm(&rec.id).await?;
    }
    ctx.store.share_delete_vm(&rec.id).await?;
    ctx.store.media_delete(&rec.id).await?;
    // A linked clone lets go of its base (the last one removes it).
    if rec.node == crate::app::context::LOCAL {
        super::base_release(ctx, rec).await?;
    }
    if let Some(host) = dhcp_host(rec)? {
        // An entry that is not there (never added, or removed already) is fine.
        match node.network_dhcp_host(&rec.network, &host, false).await {
            Err(e) if !e.is_not_found() => {
                tracing::warn!(vm = %name, error = %kvmctl_core::error::chain(&e), "cannot remove the VM's DHCP reservation")
            }
            _ => {}
        }
    }
    // Snapshots' files and rows (their disk tags went with the root disk, or stay in a kept one).
    if rec.node == crate::app::context::LOCAL {
        crate::app::snapshots::remove_all(ctx, rec).await?;
    }
    // The ports go back to their pools once nothing on the node forwards them.
    ctx.store.forward_delete_vm(&rec.id).await?;
    let key = ssh::key_path(&ctx.config.key_dir, &rec.id);
    if let Err(e) = std::fs::remove_file(&key) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(key = %key.display(), error = %e, "cannot remove the VM's key");
        }
    }
    // Logs live on the node's filesystem: the local node's are removed here, another node's
    // by its agent (gc finds those whose removal failed).
    if rec.node != crate::app::context::LOCAL {
        if let Ok(Some(agent)) = ctx.node_agent(&rec.node).await {
            if let Err(e) = agent.logs_remove(&rec.name).await {
                tracing::warn!(vm = %name, node = %rec.node, error = %e, "cannot remove the VM's logs on its node; gc will");
            }
        }
    } else if ctx.local_node.uri().starts_with("qemu:///") {
        let qemu_logs = std::path::Path::new("/var/log/libvirt/qemu");
        // libvirt's log of each share's virtiofsd: `NAME-fsN-virtiofsd.log`.
        let virtiofsd_logs = std::fs::read_dir(qemu_logs).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .and_then(|f| f.strip_prefix(&format!("{name}-fs")))
                .and_then(|f| f.strip_suffix("-virtiofsd.log"))
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        });
        let swtpm_log = PathBuf::from(format!("/var/log/swtpm/libvirt/qemu/{name}-swtpm.log"));
        let logs: Vec<PathBuf> =
            [console_log(ctx, &rec.name), qemu_logs.join(format!("{name}.log")), swtpm_log].into_iter().chain(virtiofsd_logs).collect();
        for log in logs {
            match std::fs::remove_file(&log) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(log = %log.display(), error = %e, "cannot remove a VM log"),
            }
        }
    }
    Ok(())
}

pub async fn vm_delete(ctx: &Context, caller: &Caller, name: &str, keep_disk: bool) -> Result<(), Error> {
    vm_delete_checked(ctx, caller, name, keep_disk, None).await
}

/// Deletes the VM named `name` only while it is still the VM with id `id`: background
/// cleanups (TTL, long-stopped) decide about one VM, and must never delete another that was
/// created under the same name meanwhile (that answers `NotFound`).
pub(crate) async fn vm_delete_by_id(ctx: &Context, caller: &Caller, name: &str, id: &VmId) -> Result<(), Error> {
    vm_delete_checked(ctx, caller, name, false, Some(id)).await
}

pub(super) async fn vm_delete_checked(
    ctx: &Context,
    caller: &Caller,
    name: &str,
    keep_disk: bool,
    expect: Option<&VmId>,
) -> Result<(), Error> {
    let name = parse_name("name", name)?;
    vm_record(ctx, &Scope::of(caller), &name).await?;
    // A kept disk lives on outside any VM, quota and gc; only admins may keep one (they
    // remove it with virsh vol-delete, or reuse it).
    if keep_disk && !caller.is_admin() {
        return Err(Error::Forbidden(
            "keeping a VM's disk after its delete (keep_disk) is for admins: a kept disk is outside any VM and its quota".into(),
        ));
    }
    let _busy = ctx.vm_lock(&name, "deleting").await?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    if expect.is_some_and(|id| *id != rec.id) {
        return Err(Error::NotFound { kind: "vm", name: format!("{name} (the VM of that name was replaced)") });
    }
    if rec.state != VmState::Deleting {
        vm_begin(ctx, &rec, VmEvent::Delete).await?;
    }
    if keep_disk {
        ctx.store.kept_disk_insert(&rec).await?;
        for d in ctx.store.disk_list(&rec.id).await? {
            ctx.store.kept_volume_insert(&rec, &d.pool, &d.volume, d.size_gib).await?;
        }
    }
    vm_teardown(ctx, &rec, keep_disk, None).await?;
    ctx.store.vm_delete(&name).await?;
    ctx.publish("vm.deleted", &name, &rec.owner, None, None, None);
    tracing::info!(vm = %name, keep_disk, "VM deleted");
    Ok(())
}
