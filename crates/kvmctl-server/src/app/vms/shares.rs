//! Shared folders: host directories given to a VM over virtio-fs (`vm create --share`,
//! `vm share add|list|rm`).
//!
//! Only admins share host paths, and only under the directories the configuration allows
//! (`share_roots`): the path a request names is resolved (symlinks followed) and the resolved
//! path must lie under a resolved root; it is what is recorded and handed to libvirt, so a
//! symlink that leads out of the roots is refused, not followed later. A read-only share is
//! read-only on the host: libvirt 9.0 has no read-only virtio-fs, so its virtiofsd is our
//! wrapper (`share_helper`), which runs virtiofsd in a mount namespace of its own where the
//! directory is bind-mounted read-only over itself. Shares change while the VM is stopped
//! (the definition is rewritten); the guest's memory is shared memory while it has any.

use super::*;
use kvmctl_store::ShareRecord;
use kvmctl_types::api::VmShare;

/// Shares one VM may have.
pub const MAX_SHARES: usize = 8;

pub(crate) fn share_view(s: ShareRecord) -> VmShare {
    VmShare { source: s.source, tag: s.tag, readonly: s.readonly, mount: s.mount }
}

fn tag_check(field: &str, tag: &str) -> Result<(), Error> {
    let ok = (1..=36).contains(&tag.len()) && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(Error::invalid(field, format!("{tag:?} is not a share tag: 1-36 letters, digits, '-' and '_'")));
    }
    Ok(())
}

/// A guest mount point: absolute, plain characters (it is written into the guest's fstab by
/// a boot command), no `..`.
fn mount_check(field: &str, mount: &str) -> Result<(), Error> {
    let ok = mount.starts_with('/')
        && mount.len() > 1
        && mount.len() <= 255
        && mount.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
        && !mount.split('/').any(|p| p == "..");
    if !ok {
        return Err(Error::invalid(
            field,
            format!("{mount:?} is not a guest mount point: an absolute path of letters, digits, '/', '.', '_', '-'"),
        ));
    }
    Ok(())
}

/// Checks a requested share (the caller, the roots, the path) and gives its record, its
/// source resolved. `field`: where the share sits in the request (`shares[0]`; empty when the
/// share is the whole request).
pub(crate) fn share_resolve(ctx: &Context, caller: &Caller, vm_id: VmId, s: &VmShare, field: &str) -> Result<ShareRecord, Error> {
    if !caller.is_admin() {
        return Err(Error::Forbidden("sharing host directories with VMs is for admins".into()));
    }
    let named = |f: &str| if field.is_empty() { f.to_owned() } else { format!("{field}.{f}") };
    tag_check(&named("tag"), &s.tag)?;
    if let Some(m) = &s.mount {
        mount_check(&named("mount"), m)?;
    }
    let sfield = named("source");
    if ctx.config.share_roots.is_empty() {
        return Err(Error::invalid(sfield, "sharing host directories is off on this daemon; an admin sets `share_roots` to allow it"));
    }
    // libvirt escapes commas for virtiofsd, the read-only wrapper does not parse them.
    if !s.source.starts_with('/') || s.source.chars().any(|c| c.is_control() || c == ',') {
        return Err(Error::invalid(sfield, format!("{:?} is not an absolute path without commas or control characters", s.source)));
    }
    let resolved =
        std::fs::canonicalize(&s.source).map_err(|e| Error::invalid(sfield.clone(), format!("{} cannot be resolved: {e}", s.source)))?;
    if !resolved.is_dir() {
        return Err(Error::invalid(sfield, format!("{} is not a directory", resolved.display())));
    }
    let under = ctx.config.share_roots.iter().filter_map(|r| std::fs::canonicalize(r).ok()).any(|root| resolved.starts_with(&root));
    if !under {
        let roots = ctx.config.share_roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ");
        return Err(Error::invalid(
            sfield,
            format!(
                "{} (resolved: {}) is outside the directories that may be shared ({roots}); symlinks out of them do not count",
                s.source,
                resolved.display()
            ),
        ));
    }
    let source = resolved
        .to_str()
        .filter(|p| !p.contains(','))
        .ok_or_else(|| Error::invalid(sfield, "the resolved path is not plain UTF-8 without commas"))?;
    Ok(ShareRecord { vm_id, tag: s.tag.clone(), source: source.to_owned(), readonly: s.readonly, mount: s.mount.clone() })
}

/// The shares of a create request, checked (tags unique, at most `MAX_SHARES`).
pub(crate) fn shares_resolve(ctx: &Context, caller: &Caller, vm_id: VmId, shares: &[VmShare]) -> Result<Vec<ShareRecord>, Error> {
    if shares.len() > MAX_SHARES {
        return Err(Error::invalid("shares", format!("at most {MAX_SHARES} shares per VM")));
    }
    let mut out: Vec<ShareRecord> = Vec::new();
    for (i, s) in shares.iter().enumerate() {
        let r = share_resolve(ctx, caller, vm_id, s, &format!("shares[{i}]"))?;
        if out.iter().any(|o| o.tag == r.tag) {
            return Err(Error::invalid(format!("shares[{i}].tag"), format!("tag {} is given twice", r.tag)));
        }
        out.push(r);
    }
    Ok(out)
}

/// The cloud-init boot command that mounts a share in a Linux guest at every boot (through
/// its fstab, so it stays mounted across reboots).
pub(crate) fn share_bootcmd(s: &ShareRecord) -> String {
    let mount = s.mount.clone().unwrap_or_else(|| format!("/mnt/{}", s.tag));
    let opts = if s.readonly { "ro,nofail" } else { "defaults,nofail" };
    format!(
        "mkdir -p {mount} && (grep -qs '^{tag} {mount} virtiofs ' /etc/fstab || echo '{tag} {mount} virtiofs {opts} 0 0' >> /etc/fstab) && (mountpoint -q {mount} || mount {mount})",
        tag = s.tag
    )
}

/// Refuses what the shares of a running VM do not allow: memory snapshots and warm clones
/// (QEMU cannot carry a virtio-fs device's state).
pub(crate) async fn memory_check(ctx: &Context, rec: &VmRecord, what: &str) -> Result<(), Error> {
    if !ctx.store.share_list(&rec.id).await?.is_empty() {
        return Err(Error::Conflict(format!(
            "VM {} has shared folders, whose state QEMU cannot save; {what} is refused (take one without memory)",
            rec.name
        )));
    }
    Ok(())
}

pub async fn share_list(ctx: &Context, caller: &Caller, name: &str) -> Result<Vec<VmShare>, Error> {
    let name = parse_name("name", name)?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    Ok(ctx.store.share_list(&rec.id).await?.into_iter().map(share_view).collect())
}

/// Shares a host directory with a stopped VM (its definition is rewritten). The guest mounts
/// it itself (`mount -t virtiofs TAG DIR`): cloud-init mounts only the shares given at create.
pub async fn share_add(ctx: &Context, caller: &Caller, name: &str, req: VmShare) -> Result<VmShare, Error> {
    // Before the VM is looked up: a non-admin learns nothing about it.
    if !caller.is_admin() {
        return Err(Error::Forbidden("sharing host directories with VMs is for admins".into()));
    }
    let name = parse_name("name", name)?;
    vm_record(ctx, &Scope::of(caller), &name).await?;
    let _busy = ctx.vm_lock(&name, "sharing a folder").await?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    let share = share_resolve(ctx, caller, rec.id, &req, "")?;
    stopped_check(&rec)?;
    let existing = ctx.store.share_list(&rec.id).await?;
    if existing.len() >= MAX_SHARES {
        return Err(Error::Conflict(format!("VM {name} has {MAX_SHARES} shares, the most a VM may have; remove one first")));
    }
    ctx.store.share_insert(&share).await.map_err(|e| match e {
        kvmctl_store::StoreError::Exists { .. } => Error::Conflict(format!("VM {name} has a share tagged {} already", share.tag)),
        e => e.into(),
    })?;
    if let Err(e) = domain_redefine(ctx, &rec).await {
        ctx.store.share_delete(&rec.id, &share.tag).await?;
        return Err(e);
    }
    tracing::info!(vm = %name, tag = %share.tag, source = %share.source, readonly = share.readonly, "folder shared");
    Ok(share_view(share))
}

pub async fn share_remove(ctx: &Context, caller: &Caller, name: &str, tag: &str) -> Result<(), Error> {
    let name = parse_name("name", name)?;
    vm_record(ctx, &Scope::of(caller), &name).await?;
    tag_check("tag", tag)?;
    let _busy = ctx.vm_lock(&name, "unsharing a folder").await?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    stopped_check(&rec)?;
    let Some(share) = ctx.store.share_list(&rec.id).await?.into_iter().find(|s| s.tag == tag) else {
        return Err(Error::NotFound { kind: "share", name: format!("{tag} (of VM {name})") });
    };
    ctx.store.share_delete(&rec.id, tag).await?;
    if let Err(e) = domain_redefine(ctx, &rec).await {
        ctx.store.share_insert(&share).await?;
        return Err(e);
    }
    tracing::info!(vm = %name, tag, "folder unshared");
    Ok(())
}

fn stopped_check(rec: &VmRecord) -> Result<(), Error> {
    if rec.state != VmState::Stopped {
        return Err(Error::Conflict(format!(
            "VM {} is {}; shared folders change while it is stopped (kvmctl vm stop {})",
            rec.name, rec.state, rec.name
        )));
    }
    Ok(())
}
