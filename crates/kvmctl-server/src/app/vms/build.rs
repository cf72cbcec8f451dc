//! Making a VM on its node once its row and address are reserved: the seed, the volumes, the
//! definition, the start, the firewall rules and the readiness watch (`vm_build`), shared by
//! create, clones and restores.

use super::*;

/// How long each step of a create took: logged with "VM created" (`steps`) and read by
/// `bench/lifecycle.sh`.
pub(super) struct Steps {
    at: Instant,
    done: Vec<(&'static str, u128)>,
}

impl Steps {
    pub(super) fn new() -> Self {
        Steps { at: Instant::now(), done: Vec::new() }
    }

    /// Ends the step `name` (it began when the previous one ended).
    pub(super) fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.done.push((name, now.duration_since(self.at).as_micros()));
        self.at = now;
    }

    /// `validate=0.4 place=1.2 ...` in milliseconds, and the total.
    pub(super) fn summary(&self) -> (String, u64) {
        let text = self.done.iter().map(|(n, us)| format!("{n}={:.1}", *us as f64 / 1000.0)).collect::<Vec<_>>().join(" ");
        (text, (self.done.iter().map(|(_, us)| us).sum::<u128>() / 1000) as u64)
    }
}

/// The seed's ISO, with the guest's host key where cloud-init runs: ours, pinned now, before
/// it boots, so the first login already knows whom it talks to (its fingerprint is returned).
pub(super) fn seed_finish(
    seed_spec: kvmctl_cloudinit::seed::SeedSpec,
    image: &ImageRecord,
    name: &Name,
) -> Result<(Vec<u8>, Option<String>), Error> {
    seed_with_key(seed_spec, image, name).map(|(iso, fingerprint, _)| (iso, fingerprint))
}

/// A seed ISO, its host key's fingerprint and the key itself.
pub(super) type SeedWithKey = (Vec<u8>, Option<String>, Option<kvmctl_cloudinit::seed::HostKey>);

/// `seed_finish`, also giving the host key put in the seed (a warm clone installs it itself).
pub(super) fn seed_with_key(
    mut seed_spec: kvmctl_cloudinit::seed::SeedSpec,
    image: &ImageRecord,
    name: &Name,
) -> Result<SeedWithKey, Error> {
    let (host_key, pair) = if image.cloud_init {
        let (key, fingerprint) = ssh::host_key_generate(name.as_str())?;
        seed_spec.host_key = Some(key.clone());
        (Some(fingerprint), Some(key))
    } else {
        (None, None)
    };
    let seed = kvmctl_cloudinit::seed::render(&seed_spec).map_err(|e| Error::invalid(seed_field(&e.field), e.message))?;
    Ok((kvmctl_cloudinit::seed::nocloud_iso(&seed), host_key, pair))
}

/// The user-facing field behind a seed error.
pub(super) fn seed_field(field: &str) -> String {
    match field {
        f if f.starts_with("ssh_keys") || f.starts_with("user_data") => f.to_owned(),
        "hostname" => "name".into(),
        other => other.to_owned(),
    }
}

/// What create puts on the node besides the record and image: the seed, the VM's key, the
/// domain type; and what it does beyond making the VM: start it, give it an SSH forward.
pub(super) struct BuildOptions {
    pub(super) seed_iso: Vec<u8>,
    pub(super) vm_key: String,
    pub(super) domain_type: DomainType,
    pub(super) start: bool,
    pub(super) ssh_forward: bool,
    pub(super) root: RootDisk,
    /// A UEFI variable store to start from (a clone's, copied from its source).
    pub(super) nvram: Option<PathBuf>,
    /// Wake from a source's memory instead of booting (a warm clone).
    pub(super) warm: Option<super::warm::WarmStart>,
    /// A TPM state to start from (a clone's copy of its source's, a restored archive's).
    pub(super) tpm_state: Option<PathBuf>,
}

/// Where libvirt keeps a VM's TPM 2.0 state on its node (by the domain's UUID, the VM's id);
/// libvirt gives it to swtpm's user at each start.
pub(crate) fn tpm_state_file(id: &VmId) -> PathBuf {
    PathBuf::from("/var/lib/libvirt/swtpm").join(id.to_string()).join("tpm2/tpm2-00.permall")
}

/// What the VM's root disk is made from.
pub(super) enum RootDisk {
    /// An overlay on the image.
    Image,
    /// An overlay on this qcow2 file (a linked clone's base).
    Base(PathBuf),
    /// Made already (a full clone's copy), and in `made`.
    Made,
    /// Empty, for an installer to fill.
    Blank,
}

/// Create's node steps; returns the state the VM ends in.
pub(super) async fn vm_build(
    ctx: &Context,
    rec: &VmRecord,
    image: &ImageRecord,
    opts: BuildOptions,
    made: &mut Vec<String>,
    steps: &mut Steps,
) -> Result<VmState, Error> {
    let BuildOptions { seed_iso, vm_key, domain_type, start, ssh_forward, root, nvram, warm, tpm_state } = opts;
    ssh::key_store(&ssh::key_path(&ctx.config.key_dir, &rec.id), &vm_key)?;
    steps.mark("key");
    ctx.failpoints.hit("create.reserve").await?;
    if ssh_forward {
        forwards::forward_allocate(ctx, rec, &ctx.pools, "ssh", kvmctl_netfw::Protocol::Tcp, 22).await?;
        ctx.failpoints.hit("create.forward").await?;
    }
    steps.mark("forward");
    // The DHCP reservation was made with the address (`address_reserve`).
    ctx.failpoints.hit("create.address").await?;
    let conn = ctx.node_conn(&rec.node).await?;
    // The image's volumes on the VM's node (copied there on first use).
    images::image_to_node(ctx, &rec.node, image).await?;
    super::media::media_to_node(ctx, rec).await?;
    steps.mark("image_copy");
    let paths = image_paths(&conn, image).await?;
    steps.mark("image");
    let make = !matches!(root, RootDisk::Made);
    let backing = match root {
        RootDisk::Image => Some((paths.0.join(&image.volume), if image.format == "raw" { DiskFormat::Raw } else { DiskFormat::Qcow2 })),
        RootDisk::Base(base) => Some((base, DiskFormat::Qcow2)),
        RootDisk::Made | RootDisk::Blank => None,
    };
    ctx.failpoints.hit("create.before_volumes").await?;
    let lvm = make && rec.pool != image.pool && crate::app::pools::pool_is_lvm(ctx, &rec.node, &rec.pool).await?;
    if lvm {
        // A raw logical volume: a copy of the image (libvirt converts it), or empty.
        let spec = VolumeSpec {
            private: true,
            name: rec.root_volume.clone(),
            capacity_bytes: rec.disk_gib * GIB,
            format: DiskFormat::Raw,
            backing: None,
        };
        let made_vol = if backing.is_some() {
            conn.volume_create_from(&rec.pool, spec, &image.pool, &image.volume).await
        } else {
            conn.volume_create(&rec.pool, spec).await
        };
        made_vol.map_err(|e| crate::app::context::volume_error(e, &rec.pool))?;
        made.push(rec.root_volume.clone());
    } else if make {
        let overlay = VolumeSpec {
            private: true,
            name: rec.root_volume.clone(),
            capacity_bytes: rec.disk_gib * GIB,
            format: DiskFormat::Qcow2,
            backing,
        };
        conn.volume_create(&rec.pool, overlay).await.map_err(|e| crate::app::context::volume_error(e, &rec.pool))?;
        made.push(rec.root_volume.clone());
    }
    steps.mark("root_volume");
    ctx.failpoints.hit("create.root_volume").await?;

    conn.volume_upload(&rec.pool, &rec.seed_volume, DiskFormat::Raw, seed_iso)
        .await
        .map_err(|e| crate::app::context::volume_error(e, &rec.pool))?;
    made.push(rec.seed_volume.clone());
    steps.mark("seed_volume");
    ctx.failpoints.hit("create.seed_volume").await?;

    if rec.node == crate::app::context::LOCAL {
        if let Err(e) = std::fs::create_dir_all(&ctx.config.console_log_dir) {
            return Err(Error::Internal(format!("cannot create {}: {e}", ctx.config.console_log_dir.display())));
        }
    }
    let waking = match &warm {
        Some(w) => Some(domain_xml_waking(ctx, rec, image, paths.clone(), domain_type, &w.src, w.agent).await?),
        None => None,
    };
    let xml = domain_xml_of(ctx, rec, image, paths, domain_type).await?;
    conn.domain_define(xml).await.map_err(|e| match e {
        NodeError::AlreadyExists { .. } => Error::Conflict(format!(
            "libvirt already has a domain named {} that kvmctl does not know; rename or remove it (virsh undefine {})",
            rec.name, rec.name
        )),
        e => e.into(),
    })?;
    steps.mark("define");
    ctx.failpoints.hit("create.define").await?;
    // The variable store libvirt made the domain's (at define) starts as the source's.
    if let Some(from) = nvram {
        // libvirt 9.0 picks the firmware (and names the store in the definition) at the first
        // start; until then the store's path is the system instance's default.
        let to = match xml::domain_nvram(&conn.domain_xml(rec.name.as_str()).await?) {
            Some(p) => p,
            None if conn.uri() == "qemu:///system" => PathBuf::from(format!("/var/lib/libvirt/qemu/nvram/{}_VARS.fd", rec.name)),
            None => return Err(Error::Internal(format!("the domain of {} has no UEFI variable store to copy into", rec.name))),
        };
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
        }
        std::fs::copy(&from, &to).map_err(|e| Error::Internal(format!("cannot copy {} to {}: {e}", from.display(), to.display())))?;
    }
    // The TPM state libvirt finds at the first start (it makes a new one only when none is there).
    if let Some(from) = tpm_state {
        let to = tpm_state_file(&rec.id);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
        }
        std::fs::copy(&from, &to).map_err(|e| Error::Internal(format!("cannot copy {} to {}: {e}", from.display(), to.display())))?;
    }
    if !start {
        return Ok(VmState::Stopped);
    }
    match (&warm, waking) {
        (Some(w), Some(xmls)) => super::warm::wake(ctx, rec, w, &xmls).await?,
        _ => conn.domain_start(rec.name.as_str()).await?,
    }
    steps.mark("start");
    ctx.store.vm_run_wanted_set(&rec.id, true).await?;
    ctx.failpoints.hit("create.start").await?;
    vmnet::rules_apply(ctx, rec).await?;
    ctx.failpoints.hit("create.rules").await?;
    readiness::boot_started(ctx, rec).await?;
    steps.mark("rules_readiness");
    Ok(VmState::Running)
}
