//! `vms`: create, start, stop, reboot, resize and delete VMs on the node.
//!
//! Create runs these steps, each named for failure injection (`create.<step>`):
//! `reserve` (the database row, state `creating`; a taken name is a conflict), `root_volume`
//! (a qcow2 overlay whose backing file is the image, made by the pool at the requested
//! size), `seed_volume` (the NoCloud ISO, built in-process and uploaded by stream),
//! `define`, `start`. Every artefact's name is recorded in the row before it is made, so the
//! undo of every step is the same idempotent teardown (`vm_teardown`): it removes whatever of
//! domain, volumes and logs exists and skips what does not. A failed create runs it and
//! removes the row; a crash leaves the row in `creating`, and the reconciler runs it on the
//! next start. Delete is the same teardown, recorded as state `deleting` first.
//!
//! Every operation holds the VM busy (`Context::vm_lock`) and changes its state by
//! compare-and-set, so a second operation on the same VM gets a conflict.

use super::forwards::{self, Attachment};
use super::{blocking, images, parse_name, readiness, ssh, Context};
use crate::node::NodeHandle;
use kvmctl_core::Caller;
use kvmctl_core::{Error, VmEvent, VmState};
use kvmctl_libvirt::xml::{
    self, Boot, Disk, DiskFormat, DomainSpec, DomainType, Firmware, Metadata, Nic, NicFilter, NicSource, VolumeSpec,
};
use kvmctl_libvirt::{DomainState, NodeError};
use kvmctl_store::{ImageRecord, Scope, VmRecord};
use kvmctl_types::api::{Vm, VmCreateRequest, VmResizeRequest, VmStopRequest};
use kvmctl_types::{Name, VmId};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
/// Custom sizes are accepted within these bounds.
pub const MAX_VCPUS: u32 = 64;
pub const MIN_MEMORY_MIB: u64 = 128;
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
pub const MAX_DISK_GIB: u64 = 16 * 1024;

pub async fn vm_list(ctx: &Context, caller: &Caller) -> Result<Vec<Vm>, Error> {
    let mut forwards: std::collections::HashMap<VmId, Vec<kvmctl_types::api::Forward>> = std::collections::HashMap::new();
    for f in ctx.store.forward_list().await? {
        forwards.entry(f.vm_id).or_default().push(forwards::forward_view(f));
    }
    let vms: Vec<Vm> = ctx
        .store
        .vm_list(&Scope::of(caller))
        .await?
        .into_iter()
        .map(|r| {
            let f = forwards.remove(&r.id).unwrap_or_default();
            Vm { forwards: f, ..vm_view(r) }
        })
        .collect();
    Ok(with_addresses(ctx, vms).await)
}

pub async fn vm_get(ctx: &Context, caller: &Caller, name: &str) -> Result<Vm, Error> {
    let name = parse_name("name", name)?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    let readiness = readiness::stages(ctx, &rec.id).await?;
    let forwards = ctx.store.forward_list_vm(&rec.id).await?.into_iter().map(forwards::forward_view).collect();
    let vm = Vm { readiness, forwards, ..vm_view(rec) };
    Ok(with_addresses(ctx, vec![vm]).await.remove(0))
}

/// Fills in each running VM's address from its network's DHCP leases: one libvirt call per
/// network, not per VM. Best effort: a network that cannot be read leaves addresses unset.
async fn with_addresses(ctx: &Context, mut vms: Vec<Vm>) -> Vec<Vm> {
    let mut networks: Vec<(String, String)> =
        vms.iter().filter(|v| v.state == "running" && v.ip.is_none()).map(|v| (v.node.clone(), v.network.clone())).collect();
    networks.sort();
    networks.dedup();
    if networks.is_empty() {
        return vms;
    }
    let mut leases = std::collections::HashMap::new();
    for (node, network) in networks {
        let Ok(conn) = ctx.node_conn(&node).await else { continue };
        if let Ok(l) = conn.network_leases(&network).await {
            leases.extend(l);
        }
    }
    for vm in vms.iter_mut().filter(|v| v.state == "running" && v.ip.is_none()) {
        vm.ip = leases.get(&vm.mac).cloned();
    }
    vms
}

pub(crate) async fn vm_record(ctx: &Context, scope: &Scope, name: &Name) -> Result<VmRecord, Error> {
    ctx.store.vm_get(scope, name).await?.ok_or_else(|| Error::NotFound { kind: "vm", name: name.to_string() })
}

/// The view of a VM after an operation: the record and its forwards.
async fn vm_out(ctx: &Context, rec: VmRecord) -> Result<Vm, Error> {
    let forwards = ctx.store.forward_list_vm(&rec.id).await?.into_iter().map(forwards::forward_view).collect();
    Ok(Vm { forwards, ..vm_view(rec) })
}

pub(crate) fn vm_view(r: VmRecord) -> Vm {
    Vm {
        id: r.id,
        name: r.name.to_string(),
        state: r.state.as_str().to_owned(),
        image: r.image.to_string(),
        plan: r.plan,
        vcpus: r.vcpus,
        memory_mib: r.memory_mib,
        disk_gib: r.disk_gib,
        node: r.node,
        network: r.network,
        mac: r.mac,
        ip: r.ip,
        ssh_user: r.ssh_user,
        forwards: Vec::new(),
        host_key: r.host_key.map(|k| format!("{k} ({})", r.host_key_source.as_deref().unwrap_or("first use"))),
        readiness: Vec::new(),
        firmware: r.firmware,
        owner: r.owner,
        error: r.error,
        created_at: r.created_at,
        expires_at: r.expires_at,
        placement: Vec::new(),
    }
}

/// vCPUs, memory and disk from the plan and the overrides, within bounds.
async fn vm_size(ctx: &Context, caller: &Caller, req: &VmCreateRequest) -> Result<(Option<String>, u32, u64, u64), Error> {
    if !caller.custom_sizing && (req.vcpus.is_some() || req.memory_mib.is_some() || req.disk_gib.is_some()) {
        return Err(Error::Forbidden(format!(
            "user {} may not size VMs with vcpus, memory_mib or disk_gib; pick a plan (kvmctl plan list)",
            caller.name
        )));
    }
    let plan = match &req.plan {
        Some(p) => Some(plan_active(ctx, p).await?),
        None => None,
    };
    let need = |field: &str| Error::invalid(field, "required without a plan (or pick one with --plan; `kvmctl plan list`)");
    let vcpus = req.vcpus.or(plan.as_ref().map(|p| p.vcpus)).ok_or_else(|| need("vcpus"))?;
    let memory_mib = req.memory_mib.or(plan.as_ref().map(|p| p.memory_mib)).ok_or_else(|| need("memory_mib"))?;
    let disk_gib = req.disk_gib.or(plan.as_ref().map(|p| p.disk_gib)).ok_or_else(|| need("disk_gib"))?;
    size_check(Some(vcpus), Some(memory_mib), Some(disk_gib))?;
    Ok((plan.map(|p| p.name), vcpus, memory_mib, disk_gib))
}

/// The active plan `name`; a missing or retired one is a bad `plan`.
async fn plan_active(ctx: &Context, name: &str) -> Result<kvmctl_store::PlanRecord, Error> {
    ctx.store
        .plan_get(name)
        .await?
        .filter(|p| p.active)
        .ok_or_else(|| Error::invalid("plan", format!("there is no active plan {name:?}; `kvmctl plan list` shows them")))
}

pub(crate) fn size_check(vcpus: Option<u32>, memory_mib: Option<u64>, disk_gib: Option<u64>) -> Result<(), Error> {
    if let Some(v) = vcpus.filter(|v| !(1..=MAX_VCPUS).contains(v)) {
        return Err(Error::invalid("vcpus", format!("{v} is out of range; use 1 to {MAX_VCPUS}")));
    }
    if let Some(m) = memory_mib.filter(|m| !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(m)) {
        return Err(Error::invalid(
            "memory_mib",
            format!("{m} MiB is out of range; use {MIN_MEMORY_MIB} MiB to {} GiB", MAX_MEMORY_MIB / 1024),
        ));
    }
    if let Some(d) = disk_gib.filter(|d| !(1..=MAX_DISK_GIB).contains(d)) {
        return Err(Error::invalid("disk_gib", format!("{d} GiB is out of range; use 1 to {MAX_DISK_GIB} GiB")));
    }
    Ok(())
}

/// A locally administered MAC in QEMU's `52:54:00` range.
fn mac_random() -> String {
    let b = uuid::Uuid::new_v4().into_bytes();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

/// The console log of a VM on the local node.
fn console_log(ctx: &Context, name: &Name) -> PathBuf {
    ctx.config.console_log_dir.join(format!("{name}.log"))
}

/// Most of a console log the daemon reads at once: the guest writes it, so only its end is
/// read, whatever its size.
pub(crate) const CONSOLE_TAIL_MAX: u64 = 1 << 20;

/// The last `CONSOLE_TAIL_MAX` bytes of a console log (empty when there is none), as text.
pub(crate) fn console_tail(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(CONSOLE_TAIL_MAX)))?;
    let mut buf = Vec::new();
    f.take(CONSOLE_TAIL_MAX).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Where the VM's serial console is logged on its node: `console_log_dir` on the local node,
/// libvirt's own log directory (present on every libvirt host) on the others.
fn serial_log_on_node(ctx: &Context, rec: &VmRecord) -> PathBuf {
    if rec.node == super::nodes::LOCAL {
        console_log(ctx, &rec.name)
    } else {
        PathBuf::from(format!("/var/log/libvirt/qemu/{}-serial.log", rec.name))
    }
}

/// The libvirt domain of a VM, built from its record and image.
#[allow(clippy::too_many_arguments)]
fn domain_spec(
    ctx: &Context,
    rec: &VmRecord,
    image: &ImageRecord,
    pool_dir: &std::path::Path,
    domain_type: DomainType,
    kernel: Option<(PathBuf, Option<PathBuf>)>,
    metadata: Metadata,
    vnc_port: Option<u16>,
) -> DomainSpec {
    let boot = match kernel {
        Some((kernel, initrd)) => Boot::Kernel { kernel, initrd, cmdline: image.cmdline.clone().unwrap_or_default() },
        None => Boot::Disk,
    };
    DomainSpec {
        name: rec.name.clone(),
        domain_type,
        firmware: Firmware::parse(&rec.firmware).unwrap_or(Firmware::Bios),
        vcpus: rec.vcpus,
        memory_mib: rec.memory_mib,
        boot,
        disks: vec![
            Disk { source: pool_dir.join(&rec.root_volume), format: DiskFormat::Qcow2, target: "vda".into(), readonly: false },
            Disk { source: pool_dir.join(&rec.seed_volume), format: DiskFormat::Raw, target: "vdb".into(), readonly: true },
        ],
        nics: vec![Nic {
            source: match Attachment::parse(&rec.network) {
                Attachment::Network(n) => NicSource::Network(n),
                Attachment::Bridge(b) => NicSource::Bridge(b),
                Attachment::Macvtap(d) => NicSource::Direct(d),
            },
            mac: Some(rec.mac.clone()),
            // No spoofing of a neighbour's MAC, IP or ARP on a shared network: the guest may
            // use its reserved address only (or the one its DHCP gave it).
            filter: (!ctx.config.nic_filter.is_empty())
                .then(|| NicFilter { name: ctx.config.nic_filter.clone(), ip: rec.ip.as_deref().and_then(|i| i.parse().ok()) }),
        }],
        serial_log: Some(serial_log_on_node(ctx, rec)),
        vnc_password: Some(rec.vnc_password.clone()),
        vnc_port,
        guest_agent: true,
        metadata,
    }
}

/// Where an image's volumes are on the node: the pool's directory (from the image volume's
/// path there), and a direct-kernel image's kernel and initrd.
type ImagePaths = (PathBuf, Option<(PathBuf, Option<PathBuf>)>);
async fn image_paths(node: &NodeHandle, image: &ImageRecord) -> Result<ImagePaths, Error> {
    let pool_dir = image_volume(node, image, &image.volume).await?.parent().map(PathBuf::from).unwrap_or_default();
    let Some(k) = &image.kernel_volume else { return Ok((pool_dir, None)) };
    let kernel = image_volume(node, image, k).await?;
    let initrd = match &image.initrd_volume {
        Some(i) => Some(image_volume(node, image, i).await?),
        None => None,
    };
    Ok((pool_dir, Some((kernel, initrd))))
}

/// The path of the image's volume `v` on the node.
async fn image_volume(node: &NodeHandle, image: &ImageRecord, v: &str) -> Result<PathBuf, Error> {
    node.volume_get(&image.pool, v).await?.map(|i| i.path).ok_or_else(|| {
        Error::Conflict(format!(
            "volume {v} of image {} is missing from pool {} on node {}; re-import the image",
            image.name,
            image.pool,
            node.uri()
        ))
    })
}

/// The domain type for a new VM on `node`: the local node's from `host doctor`'s functional
/// probe; other nodes' from `domain_type` when it is forced, else `qemu` (TCG), since whether
/// KVM really boots guests there has not been probed.
async fn domain_type(ctx: &Context, node: &str) -> DomainType {
    if node != super::nodes::LOCAL {
        return match ctx.config.domain_type {
            crate::config::DomainTypeSetting::Kvm => DomainType::Kvm,
            _ => DomainType::Qemu,
        };
    }
    match super::host::domain_type(ctx).await.0.as_str() {
        "kvm" => DomainType::Kvm,
        _ => DomainType::Qemu,
    }
}

/// The address a new VM gets on `network` of `node` (`None` on a bridge or NIC, where the
/// LAN's DHCP hands it out).
async fn address_for(ctx: &Context, node: &str, network: &str) -> Result<Option<std::net::Ipv4Addr>, Error> {
    match Attachment::parse(network) {
        Attachment::Network(n) => address_pick(ctx, node, &n, &Default::default()).await,
        _ => Ok(None),
    }
}

/// Before a VM is made on `node`: its network exists there, and nothing there carries the
/// names it will use (the undo of a failed create removes what has those names, and must
/// never remove something that is not ours).
async fn node_checks(ctx: &Context, node_name: &str, name: &Name, pool: &str, network: &str) -> Result<(), Error> {
    let node = ctx.node_conn(node_name).await?;
    if let Attachment::Network(net) = Attachment::parse(network) {
        if node.network_state(&net).await?.is_none() {
            return Err(Error::invalid(
                "network",
                format!(
                    "there is no network {net:?} on node {node_name}; `kvmctl network list` shows them, `kvmctl network create` makes one"
                ),
            ));
        }
    }
    let (n, pool, net) = (name.to_string(), pool.to_owned(), network.to_owned());
    let taken = node.run(move |node| -> Result<Option<String>, NodeError> {
        match node.domain_state(&n) {
            Ok(_) => {
                return Ok(Some(format!(
                    "libvirt already has a domain named {n} that kvmctl does not manage; rename or remove it (virsh undefine {n})"
                )))
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        if let Ok(xml) = node.network_xml(&net) {
            if xml::network_dhcp_hosts(&xml).iter().any(|h| h.name == n) {
                return Ok(Some(format!(
                    "network {net} already has a DHCP host entry named {n} that belongs to no VM; remove it (virsh net-update {net} delete ip-dhcp-host \"<host name='{n}'/>\" --live --config) or pick another name"
                )));
            }
        }
        for vol in [format!("{n}-root.qcow2"), format!("{n}-seed.iso")] {
            if node.volume_get(&pool, &vol)?.is_some() {
                return Ok(Some(format!(
                    "pool {pool} already has a volume {vol} that belongs to no VM; remove it (virsh vol-delete {vol} --pool {pool}) or pick another name"
                )));
            }
        }
        Ok(None)
    })
    .await?;
    if let Some(why) = taken {
        // A VM of that name that kvmctl manages is the more useful thing to say.
        if ctx.store.vm_get(&Scope::all(), name).await?.is_some() {
            return Err(Error::Conflict(format!("a VM named {name} exists already; pick another name")));
        }
        return Err(Error::Conflict(why));
    }
    Ok(())
}

pub async fn vm_create(ctx: &Context, caller: &Caller, req: VmCreateRequest) -> Result<Vm, Error> {
    // Validate everything before anything is made.
    let name = parse_name("name", &req.name)?;
    let image_name = parse_name("image", &req.image)?;
    let image = ctx
        .store
        .image_get(&image_name)
        .await?
        .ok_or_else(|| Error::invalid("image", format!("there is no image {image_name}; `kvmctl image list` shows them")))?;
    let (plan, vcpus, memory_mib, disk_gib) = vm_size(ctx, caller, &req).await?;
    if disk_gib * GIB < image.virtual_bytes {
        return Err(Error::invalid(
            "disk_gib",
            format!("{disk_gib} GiB is smaller than image {image_name} ({} GiB); a disk can only grow", image.virtual_bytes.div_ceil(GIB)),
        ));
    }
    let firmware = match &req.firmware {
        Some(f) if Firmware::parse(f).is_none() => {
            return Err(Error::invalid("firmware", format!("{f:?} is not bios, uefi or uefi-secure")))
        }
        Some(f) if !image.boot_modes.is_empty() && !image.boot_modes.contains(f) => {
            return Err(Error::invalid("firmware", format!("image {image_name} boots with {} only", image.boot_modes.join(" or "))))
        }
        Some(f) => f.clone(),
        None => image.boot_modes.first().cloned().unwrap_or_else(|| "bios".into()),
    };
    let user = match req.user.as_deref().or(image.default_user.as_deref()) {
        Some(u) => parse_name("user", u)?.to_string(),
        None => "kvmctl".to_owned(),
    };
    let network = req.network.clone().unwrap_or_else(|| ctx.config.network.clone());
    let strategy = super::nodes::strategy(req.placement.as_deref())?;
    if let Some(ttl) = req.ttl_seconds {
        if !(60..=2_592_000).contains(&ttl) {
            return Err(Error::invalid("ttl_seconds", format!("{ttl} is not between 60 (a minute) and 2592000 (30 days)")));
        }
    }
    super::nodes::label_check(&req.node_labels).map_err(|e| match e {
        Error::InvalidRequest { message, .. } => Error::invalid("node_labels", message),
        e => e,
    })?;
    let id = VmId::new();
    // The VM's own key, for `vm exec` and the readiness watch; the user's keys come first so
    // that seed errors keep naming `ssh_keys[N]` as sent.
    let (vm_key, vm_public) = ssh::key_generate(&format!("kvmctl-{name}"))?;
    let keys: Vec<String> = req.ssh_keys.iter().cloned().chain(std::iter::once(vm_public)).collect();
    let mut seed_spec = kvmctl_cloudinit::seed::SeedSpec::new(&id.to_string(), name.as_str(), &user, keys);
    seed_spec.user_data = req.user_data.clone();
    // Where cloud-init runs, the guest's host key is ours: pinned now, before it boots, so the
    // first login already knows whom it talks to.
    let host_key = if image.cloud_init {
        let (key, fingerprint) = ssh::host_key_generate(name.as_str())?;
        seed_spec.host_key = Some(key);
        Some(fingerprint)
    } else {
        None
    };
    let seed = kvmctl_cloudinit::seed::render(&seed_spec).map_err(|e| Error::invalid(seed_field(&e.field), e.message))?;
    let seed_iso = kvmctl_cloudinit::seed::nocloud_iso(&seed);
    attachment_check(ctx, caller, &network).await?;
    // A first placement picks the node the names and the network are checked on; the
    // insert below checks its capacity again (and places anew when another create filled it).
    let (mut placed, mut node_cap) = super::nodes::place(ctx, vcpus.into(), memory_mib, disk_gib, &req.node_labels, strategy).await?;
    let Some(chosen) = placed.chosen.clone() else {
        return Err(Error::InsufficientCapacity { reasons: placed.refusals() });
    };
    node_checks(ctx, &chosen, &name, &image.pool, &network).await?;
    let _busy = ctx.vm_lock(&name, "creating").await?;
    // Picking an address and recording it in the row happen under one lock, so two creates
    // never pick the same one.
    let address_guard = ctx.address_lock.lock().await;
    let mac = mac_random();
    let ip = address_for(ctx, &chosen, &network).await?;
    let mut rec = VmRecord {
        id,
        name: name.clone(),
        owner: caller.name.clone(),
        node: chosen,
        image: image_name,
        plan,
        vcpus,
        memory_mib,
        disk_gib,
        network,
        mac,
        firmware,
        pool: image.pool.clone(),
        root_volume: format!("{name}-root.qcow2"),
        seed_volume: format!("{name}-seed.iso"),
        vnc_password: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
        ip: ip.map(|i| i.to_string()),
        ssh_user: user.clone(),
        host_key_source: host_key.as_ref().map(|_| "seed".to_owned()),
        host_key,
        state: VmState::Creating,
        error: None,
        created_at: 0,
        updated_at: 0,
        expires_at: None,
    };
    // The quota check and the reservation are one statement: concurrent creates of one user
    // can never exceed the quota together.
    let limits = super::users::limits_of(ctx, &rec.owner).await?;
    let requested = kvmctl_core::Usage { vms: 1, vcpus: vcpus.into(), memory_mib, disk_gib, forwards: 0 };
    let mut attempts = 0;
    let mut rec = loop {
        let inserted = ctx.store.vm_insert(&rec, limits.as_ref(), node_cap).await.map_err(|e| match e {
            kvmctl_store::StoreError::Exists { .. } => Error::Conflict(format!("a VM named {name} exists already; pick another name")),
            e => e.into(),
        })?;
        if let Some(r) = inserted {
            break r;
        }
        // Refused: the quota, or the node filled up since placement.
        if let Some(l) = &limits {
            if kvmctl_core::auth::quota_check(l, &ctx.store.usage_of(&caller.name).await?, &requested).is_err() {
                drop(address_guard);
                return Err(super::users::quota_refusal(ctx, &caller.name, l, &requested).await);
            }
        }
        attempts += 1;
        (placed, node_cap) = super::nodes::place(ctx, vcpus.into(), memory_mib, disk_gib, &req.node_labels, strategy).await?;
        match placed.chosen.clone() {
            Some(n) if attempts < 8 => {
                if n != rec.node {
                    node_checks(ctx, &n, &name, &image.pool, &rec.network).await?;
                    rec.ip = address_for(ctx, &n, &rec.network).await?.map(|i| i.to_string());
                    rec.node = n;
                }
            }
            _ => {
                drop(address_guard);
                return Err(Error::InsufficientCapacity { reasons: placed.refusals() });
            }
        }
    };
    ctx.publish("vm.state", &rec.name, &rec.owner, Some(VmState::Creating.as_str()), None, None);
    if let Some(ttl) = req.ttl_seconds {
        let at = ctx.clock.now() + ttl as i64;
        ctx.store.vm_set_expiry(&rec.id, Some(at)).await?;
        rec.expires_at = Some(at);
    }
    // The address is reserved in libvirt (a DHCP host entry) while the lock is held.
    if let Err(e) = address_reserve(ctx, &mut rec).await {
        drop(address_guard);
        ctx.store.vm_delete(&name).await?;
        ctx.publish("vm.deleted", &rec.name, &rec.owner, None, None, None);
        return Err(e);
    }
    drop(address_guard);
    let domain_type = domain_type(ctx, &rec.node).await;
    let started = Instant::now();
    // Forwards are rules in the local node's firewall: VMs on other nodes get none.
    let ssh_forward = ctx.config.ssh_forward && !req.no_ssh_forward && rec.ip.is_some() && rec.node == super::nodes::LOCAL;
    let opts = BuildOptions { seed_iso, vm_key, domain_type, start: !req.no_start, ssh_forward };
    let mut made = Vec::new();
    match vm_build(ctx, &rec, &image, opts, &mut made).await {
        Ok(state) => {
            ctx.vm_transition(&name, VmState::Creating, state, None).await?;
            tracing::info!(vm = %name, ?state, node = %rec.node, elapsed_ms = started.elapsed().as_millis() as u64, "VM created");
            let mut vm = vm_out(ctx, vm_record(ctx, &Scope::all(), &name).await?).await?;
            if caller.is_admin() {
                vm.placement = super::nodes::verdicts(&placed);
            }
            Ok(vm)
        }
        Err(e) => {
            tracing::warn!(vm = %name, error = %e, "create failed; undoing");
            vm_teardown(ctx, &rec, false, Some(&made)).await?;
            ctx.store.vm_delete(&name).await?;
            Err(e)
        }
    }
}

/// The user-facing field behind a seed error.
fn seed_field(field: &str) -> String {
    match field {
        f if f.starts_with("ssh_keys") || f.starts_with("user_data") => f.to_owned(),
        "hostname" => "name".into(),
        other => other.to_owned(),
    }
}

/// What create puts on the node besides the record and image: the seed, the VM's key, the
/// domain type; and what it does beyond making the VM: start it, give it an SSH forward.
struct BuildOptions {
    seed_iso: Vec<u8>,
    vm_key: String,
    domain_type: DomainType,
    start: bool,
    ssh_forward: bool,
}

/// Create's node steps; returns the state the VM ends in.
async fn vm_build(
    ctx: &Context,
    rec: &VmRecord,
    image: &ImageRecord,
    opts: BuildOptions,
    made: &mut Vec<String>,
) -> Result<VmState, Error> {
    let BuildOptions { seed_iso, vm_key, domain_type, start, ssh_forward } = opts;
    ssh::key_store(&ssh::key_path(&ctx.config.key_dir, &rec.id), &vm_key)?;
    ctx.failpoints.hit("create.reserve").await?;
    if ssh_forward {
        forwards::forward_allocate(ctx, rec, &ctx.pools, "ssh", kvmctl_netfw::Protocol::Tcp, 22).await?;
        ctx.failpoints.hit("create.forward").await?;
    }
    // The DHCP reservation was made with the address (`address_reserve`).
    ctx.failpoints.hit("create.address").await?;
    let conn = ctx.node_conn(&rec.node).await?;
    // The image's volumes on the VM's node (copied there on first use).
    images::image_to_node(ctx, &rec.node, image).await?;
    let (pool_dir, kernel) = image_paths(&conn, image).await?;
    let overlay = VolumeSpec {
        private: true,
        name: rec.root_volume.clone(),
        capacity_bytes: rec.disk_gib * GIB,
        format: DiskFormat::Qcow2,
        backing: Some((pool_dir.join(&image.volume), if image.format == "raw" { DiskFormat::Raw } else { DiskFormat::Qcow2 })),
    };
    ctx.failpoints.hit("create.before_volumes").await?;
    conn.volume_create(&rec.pool, overlay).await.map_err(|e| super::volume_error(e, &rec.pool))?;
    made.push(rec.root_volume.clone());
    ctx.failpoints.hit("create.root_volume").await?;

    conn.volume_upload(&rec.pool, &rec.seed_volume, DiskFormat::Raw, seed_iso).await.map_err(|e| super::volume_error(e, &rec.pool))?;
    made.push(rec.seed_volume.clone());
    ctx.failpoints.hit("create.seed_volume").await?;

    if rec.node == super::nodes::LOCAL {
        if let Err(e) = std::fs::create_dir_all(&ctx.config.console_log_dir) {
            return Err(Error::Internal(format!("cannot create {}: {e}", ctx.config.console_log_dir.display())));
        }
    }
    let metadata = forwards::metadata_of(ctx, rec).await?;
    let vnc = forwards::vnc_port(ctx, rec).await?;
    let xml = xml::domain_xml(&domain_spec(ctx, rec, image, &pool_dir, domain_type, kernel, metadata, vnc))?;
    conn.domain_define(xml).await.map_err(|e| match e {
        NodeError::AlreadyExists { .. } => Error::Conflict(format!(
            "libvirt already has a domain named {} that kvmctl does not know; rename or remove it (virsh undefine {})",
            rec.name, rec.name
        )),
        e => e.into(),
    })?;
    ctx.failpoints.hit("create.define").await?;
    if !start {
        return Ok(VmState::Stopped);
    }
    conn.domain_start(rec.name.as_str()).await?;
    ctx.store.vm_run_wanted_set(&rec.id, true).await?;
    ctx.failpoints.hit("create.start").await?;
    forwards::rules_apply(ctx, rec).await?;
    ctx.failpoints.hit("create.rules").await?;
    readiness::boot_started(ctx, rec).await?;
    Ok(VmState::Running)
}

/// The DHCP host entry reserving the VM's address, when it has a reserved one.
fn dhcp_host(rec: &VmRecord) -> Result<Option<String>, Error> {
    match rec.ip.as_deref().and_then(|i| i.parse().ok()) {
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
    let mut volumes = vec![rec.seed_volume.clone()];
    if !keep_disk {
        volumes.push(rec.root_volume.clone());
    }
    volumes.retain(|v| made.is_none_or(|m| m.contains(v)));
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
    forwards::rules_remove(ctx, rec).await?;
    if ours {
        gone(node.domain_undefine(&name).await)?;
    }
    ctx.failpoints.hit("delete.undefine").await?;
    for v in &volumes {
        gone(node.volume_delete(&rec.pool, v).await)?;
    }
    ctx.failpoints.hit("delete.volumes").await?;
    if let Some(host) = dhcp_host(rec)? {
        // An entry that is not there (never added, or removed already) is fine.
        match node.network_dhcp_host(&rec.network, &host, false).await {
            Err(e) if !e.is_not_found() => {
                tracing::warn!(vm = %name, error = %kvmctl_core::error::chain(&e), "cannot remove the VM's DHCP reservation")
            }
            _ => {}
        }
    }
    // The ports go back to their pools once nothing on the node forwards them.
    ctx.store.forward_delete_vm(&rec.id).await?;
    let key = ssh::key_path(&ctx.config.key_dir, &rec.id);
    if let Err(e) = std::fs::remove_file(&key) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(key = %key.display(), error = %e, "cannot remove the VM's key");
        }
    }
    // Logs live on the node's filesystem; only the local node's can be removed from here.
    if rec.node == super::nodes::LOCAL && ctx.local_node.uri().starts_with("qemu:///") {
        for log in [console_log(ctx, &rec.name), PathBuf::from(format!("/var/log/libvirt/qemu/{name}.log"))] {
            match std::fs::remove_file(&log) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(log = %log.display(), error = %e, "cannot remove a VM log"),
            }
        }
    }
    Ok(())
}

/// Moves a VM by a request event, by compare-and-set; the refusal names the state.
async fn vm_begin(ctx: &Context, rec: &VmRecord, event: VmEvent) -> Result<VmState, Error> {
    let next = rec.state.apply(event).map_err(|e| Error::Conflict(format!("VM {}: {e}", rec.name)))?;
    if !ctx.vm_transition(&rec.name, rec.state, next, None).await? {
        return Err(Error::Conflict(format!("VM {} changed state meanwhile; look again (kvmctl vm show {})", rec.name, rec.name)));
    }
    Ok(next)
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

async fn vm_delete_checked(ctx: &Context, caller: &Caller, name: &str, keep_disk: bool, expect: Option<&VmId>) -> Result<(), Error> {
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
    }
    vm_teardown(ctx, &rec, keep_disk, None).await?;
    ctx.store.vm_delete(&name).await?;
    ctx.publish("vm.deleted", &name, &rec.owner, None, None, None);
    tracing::info!(vm = %name, keep_disk, "VM deleted");
    Ok(())
}

pub async fn vm_start(ctx: &Context, caller: &Caller, name: &str) -> Result<Vm, Error> {
    vm_boot(ctx, caller, name, "starting", VmEvent::Start).await
}

/// Start and reboot: one libvirt call that begins a new boot, whose readiness is watched.
async fn vm_boot(ctx: &Context, caller: &Caller, name: &str, busy: &'static str, event: VmEvent) -> Result<Vm, Error> {
    let name = parse_name("name", name)?;
    vm_record(ctx, &Scope::of(caller), &name).await?;
    let _busy = ctx.vm_lock(&name, busy).await?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    let during = vm_begin(ctx, &rec, event).await?;
    let node = ctx.node_conn(&rec.node).await?;
    let called = match event {
        VmEvent::Reboot => node.domain_reboot(name.as_str()).await,
        _ => node.domain_start(name.as_str()).await,
    };
    let result = called.map_err(Error::from);
    let result = match result {
        Ok(()) => {
            ctx.store.vm_run_wanted_set(&rec.id, true).await?;
            readiness::boot_started(ctx, &rec).await?;
            ctx.failpoints.hit("start.booted").await?;
            forwards::rules_apply(ctx, &rec).await
        }
        Err(e) => Err(e),
    };
    settle(ctx, &rec.node, &name, during, result).await
}

/// Records where an operation left the VM: libvirt's state on success, the previous
/// settled state (with the error) on failure.
async fn settle(ctx: &Context, node: &str, name: &Name, during: VmState, result: Result<(), Error>) -> Result<Vm, Error> {
    let observed = observe(ctx, node, name).await;
    let after = match (&result, observed) {
        (_, Some(s)) => s,
        (Ok(()), None) => VmState::Failed,
        (Err(_), None) => VmState::Failed,
    };
    let msg = result.as_ref().err().map(ToString::to_string);
    ctx.vm_transition(name, during, after, msg.as_deref()).await?;
    result?;
    vm_out(ctx, vm_record(ctx, &Scope::all(), name).await?).await
}

/// libvirt's state of the VM's domain, as a VM state; `None` when there is no domain.
async fn observe(ctx: &Context, node: &str, name: &Name) -> Option<VmState> {
    let node = ctx.node_conn(node).await.ok()?;
    node.domain_state(name.as_str()).await.ok().map(vm_state_of)
}

pub(crate) fn vm_state_of(s: DomainState) -> VmState {
    match s {
        DomainState::Running | DomainState::Paused | DomainState::ShuttingDown => VmState::Running,
        DomainState::Shutoff => VmState::Stopped,
        DomainState::Crashed | DomainState::Other => VmState::Failed,
    }
}

pub async fn vm_stop(ctx: &Context, caller: &Caller, name: &str, req: VmStopRequest) -> Result<Vm, Error> {
    let name = parse_name("name", name)?;
    vm_record(ctx, &Scope::of(caller), &name).await?;
    if let Some(t) = req.timeout_seconds.filter(|t| *t > 3600) {
        return Err(Error::invalid("timeout_seconds", format!("{t} is out of range; use 0 to 3600")));
    }
    let timeout = Duration::from_secs(req.timeout_seconds.unwrap_or(ctx.config.stop_timeout_seconds));
    let _busy = ctx.vm_lock(&name, "stopping").await?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    let during = vm_begin(ctx, &rec, VmEvent::Stop).await?;
    // Stopped by its owner: it stays stopped through host and libvirtd restarts.
    ctx.store.vm_run_wanted_set(&rec.id, false).await?;
    let node = ctx.node_conn(&rec.node).await?;
    let n = name.to_string();
    let result = node
        .run(move |node| -> Result<(), NodeError> {
            if !req.force {
                node.domain_shutdown(&n)?;
                let until = Instant::now() + timeout;
                while Instant::now() < until {
                    if node.domain_state(&n)? == DomainState::Shutoff {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                tracing::warn!(vm = %n, timeout_s = timeout.as_secs(), "guest did not shut down in time; powering it off");
            }
            node.domain_destroy(&n)
        })
        .await
        .map_err(Error::from);
    let result = match result {
        Ok(()) => forwards::rules_remove(ctx, &rec).await,
        Err(e) => Err(e),
    };
    settle(ctx, &rec.node, &name, during, result).await
}

pub async fn vm_reboot(ctx: &Context, caller: &Caller, name: &str) -> Result<Vm, Error> {
    vm_boot(ctx, caller, name, "rebooting", VmEvent::Reboot).await
}

/// CPU and memory change while the VM is stopped (the domain is redefined); the disk grows
/// online (block resize) or offline (volume resize). Shrinking is refused.
///
/// A new size is a new claim on the owner's quota and the node's capacity: it is admitted by
/// the same one-statement check as create (`vm_resize_admit`) before anything on the node
/// changes, and a user without `custom_sizing` may only move to a plan's size.
pub async fn vm_resize(ctx: &Context, caller: &Caller, name: &str, req: VmResizeRequest) -> Result<Vm, Error> {
    let name = parse_name("name", name)?;
    // Whether the caller may see the VM comes before anything about the request.
    vm_record(ctx, &Scope::of(caller), &name).await?;
    let custom = req.vcpus.is_some() || req.memory_mib.is_some() || req.disk_gib.is_some();
    if !caller.custom_sizing && custom {
        return Err(Error::Forbidden(format!(
            "user {} may not size VMs with vcpus, memory_mib or disk_gib; resize to a plan instead (kvmctl vm resize {name} --plan P; kvmctl plan list)",
            caller.name
        )));
    }
    let plan = match &req.plan {
        Some(p) if custom => {
            return Err(Error::invalid("plan", format!("give either a plan ({p}) or sizes (vcpus, memory_mib, disk_gib), not both")))
        }
        Some(p) => Some(plan_active(ctx, p).await?),
        None => None,
    };
    let (want_vcpus, want_memory, want_disk) = match &plan {
        Some(p) => (Some(p.vcpus), Some(p.memory_mib), Some(p.disk_gib)),
        None => (req.vcpus, req.memory_mib, req.disk_gib),
    };
    size_check(want_vcpus, want_memory, want_disk)?;
    if want_vcpus.is_none() && want_memory.is_none() && want_disk.is_none() {
        return Err(Error::invalid("vcpus", "nothing to change; give a plan, or vcpus, memory_mib or disk_gib"));
    }
    let _busy = ctx.vm_lock(&name, "resizing").await?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    let cpu_mem = want_vcpus.is_some_and(|v| v != rec.vcpus) || want_memory.is_some_and(|m| m != rec.memory_mib);
    if cpu_mem && rec.state != VmState::Stopped {
        return Err(Error::Conflict(format!("VM {name} is {}; stop it to change CPUs or memory (kvmctl vm stop {name})", rec.state)));
    }
    if let Some(d) = want_disk.filter(|d| *d < rec.disk_gib) {
        let field = if plan.is_some() { "plan" } else { "disk_gib" };
        return Err(Error::invalid(field, format!("{d} GiB is smaller than the disk ({} GiB); disks only grow", rec.disk_gib)));
    }
    if !matches!(rec.state, VmState::Stopped | VmState::Running) {
        return Err(Error::Conflict(format!("VM {name} is {}; resize it when it is running or stopped", rec.state)));
    }
    let (vcpus, memory_mib, disk_gib) =
        (want_vcpus.unwrap_or(rec.vcpus), want_memory.unwrap_or(rec.memory_mib), want_disk.unwrap_or(rec.disk_gib));
    // A plan names the size; sizes given by hand leave the VM without a plan.
    let plan_name = match &plan {
        Some(p) => Some(p.name.clone()),
        None if (vcpus, memory_mib, disk_gib) == (rec.vcpus, rec.memory_mib, rec.disk_gib) => rec.plan.clone(),
        None => None,
    };
    // Admission first, in one statement: the owner's quota and the node's capacity after
    // overcommit, counting every other VM as it is now.
    let limits = super::users::limits_of(ctx, &rec.owner).await?;
    let node_cap = super::nodes::capacity_total(ctx, &rec.node).await?;
    let old = (rec.vcpus, rec.memory_mib, rec.disk_gib);
    if !ctx.store.vm_resize_admit(&rec.id, (vcpus, memory_mib, disk_gib), plan_name.as_deref(), limits.as_ref(), node_cap).await? {
        return Err(resize_refusal(ctx, &rec, (vcpus, memory_mib, disk_gib), limits.as_ref(), node_cap).await);
    }
    let applied = async {
        if disk_gib != rec.disk_gib {
            let node = ctx.node_conn(&rec.node).await?;
            if rec.state == VmState::Running {
                node.domain_block_resize(name.as_str(), "vda", disk_gib * GIB).await?;
            } else {
                node.volume_resize(&rec.pool, &rec.root_volume, disk_gib * GIB).await?;
            }
        }
        if cpu_mem {
            domain_redefine(ctx, &VmRecord { vcpus, memory_mib, ..rec.clone() }).await?;
        }
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = applied {
        // Give the claim back: the VM keeps its old size (a disk never shrinks, so a disk
        // that did grow keeps counting at its new size).
        let grown = disk_gib != rec.disk_gib && disk_grown(ctx, &rec, disk_gib).await;
        let back = (old.0, old.1, if grown { disk_gib } else { old.2 });
        ctx.store.vm_resize_admit(&rec.id, back, rec.plan.as_deref(), None, None).await?;
        return Err(e);
    }
    tracing::info!(vm = %name, vcpus, memory_mib, disk_gib, plan = ?plan_name, "VM resized");
    vm_out(ctx, vm_record(ctx, &Scope::all(), &name).await?).await
}

/// Whether the VM's root volume reached `disk_gib` (a failed resize may have grown it).
async fn disk_grown(ctx: &Context, rec: &VmRecord, disk_gib: u64) -> bool {
    let Ok(node) = ctx.node_conn(&rec.node).await else { return true };
    match node.volume_get(&rec.pool, &rec.root_volume).await {
        Ok(Some(v)) => v.capacity_bytes >= disk_gib * GIB,
        _ => true,
    }
}

/// Why a resize was not admitted: the owner's quota (named like create's refusal), or the
/// node's room.
async fn resize_refusal(
    ctx: &Context,
    rec: &VmRecord,
    size: (u32, u64, u64),
    limits: Option<&kvmctl_core::QuotaLimits>,
    node_cap: Option<(u64, u64, u64)>,
) -> Error {
    let extra = kvmctl_core::Usage {
        vms: 0,
        vcpus: u64::from(size.0).saturating_sub(rec.vcpus.into()),
        memory_mib: size.1.saturating_sub(rec.memory_mib),
        disk_gib: size.2.saturating_sub(rec.disk_gib),
        forwards: 0,
    };
    if let Some(l) = limits {
        match ctx.store.usage_of(&rec.owner).await {
            Ok(usage) if kvmctl_core::auth::quota_check(l, &usage, &extra).is_err() => {
                return super::users::quota_refusal(ctx, &rec.owner, l, &extra).await
            }
            Err(e) => return e.into(),
            _ => {}
        }
    }
    let room = node_cap.map(|(c, m, d)| format!(" (it gives out {c} vCPUs, {m} MiB, {d} GiB in all after overcommit)")).unwrap_or_default();
    Error::InsufficientCapacity {
        reasons: vec![format!(
            "node {} has no room for {} at {} vCPUs, {} MiB, {} GiB{room}; pick a smaller size, or stop or shrink other VMs there",
            rec.node, rec.name, size.0, size.1, size.2
        )],
    }
}

/// The network a VM joins must be one the caller may use and not being made or removed (its
/// existence on the chosen node is `node_checks`'), or an existing host bridge or NIC.
async fn attachment_check(ctx: &Context, caller: &Caller, network: &str) -> Result<(), Error> {
    let missing = |net: &str| {
        Error::invalid(
            "network",
            format!("there is no network {net:?} on node local; `kvmctl network list` shows them, `kvmctl network create` makes one"),
        )
    };
    match Attachment::parse(network) {
        Attachment::Network(net) => {
            let managed = ctx.store.network_get(&Scope::all(), &net).await?;
            // Another user's network does not exist for this caller.
            if managed.is_some() && ctx.store.network_get(&Scope::of(caller), &net).await?.is_none() {
                return Err(missing(&net));
            }
            if let Some(m) = managed {
                if m.state != "active" {
                    return Err(Error::Conflict(format!("network {net} is {}; try again when that finishes", m.state)));
                }
            }
            // Whether it exists on the chosen node is checked there (`node_checks`).
            Ok(())
        }
        Attachment::Bridge(_) | Attachment::Macvtap(_) if !caller.is_admin() => Err(Error::Forbidden(format!(
            "attaching VMs to host interfaces ({network}) is for admins; use a network (kvmctl network list)"
        ))),
        Attachment::Bridge(br) => {
            if !kvmctl_netfw::valid_ifname(&br) {
                return Err(Error::invalid("network", format!("{br:?} is not an interface name")));
            }
            let sys = PathBuf::from("/sys/class/net").join(&br);
            if !sys.exists() {
                return Err(Error::invalid(
                    "network",
                    format!("there is no bridge {br} on this host; create it (e.g. `ip link add {br} type bridge`) or list bridges with `ip -br link show type bridge`"),
                ));
            }
            if !sys.join("bridge").exists() {
                return Err(Error::invalid(
                    "network",
                    format!("{br} is a network interface but not a bridge; use macvtap:{br} to attach to it directly, or a bridge"),
                ));
            }
            Ok(())
        }
        Attachment::Macvtap(dev) => {
            if !kvmctl_netfw::valid_ifname(&dev) || !PathBuf::from("/sys/class/net").join(&dev).exists() {
                return Err(Error::invalid(
                    "network",
                    format!("there is no network interface {dev:?} on this host; `ip -br link` lists them"),
                ));
            }
            Ok(())
        }
    }
}

/// Defines the VM's domain again from `rec` (size, network, forwards, VNC), keeping the
/// domain type it has (kvm or qemu: a redefinition is not a migration). A running domain
/// takes the new definition at its next start.
pub(crate) async fn domain_redefine(ctx: &Context, rec: &VmRecord) -> Result<(), Error> {
    let image = images::image_record(ctx, &rec.image).await?;
    let conn = ctx.node_conn(&rec.node).await?;
    let (pool_dir, kernel) = image_paths(&conn, &image).await?;
    let current = conn.domain_xml(rec.name.as_str()).await?;
    let dtype = xml::domain_type_of(&current).unwrap_or(DomainType::Qemu);
    let metadata = forwards::metadata_of(ctx, rec).await?;
    let vnc = forwards::vnc_port(ctx, rec).await?;
    let xml = xml::domain_xml(&domain_spec(ctx, rec, &image, &pool_dir, dtype, kernel, metadata, vnc))?;
    conn.domain_define(xml).await?;
    Ok(())
}

/// An address for a VM on `network`: the first free one of its DHCP range, or `None` on a
/// network without DHCP that kvmctl can reserve in (a bridge), where it is discovered later.
/// Reserves the VM's address on its libvirt network (a DHCP host entry). libvirt refuses an
/// entry that matches another's address, so an address reserved meanwhile by anything else
/// (another daemon, virsh) makes us pick again and record the new one instead of failing.
async fn address_reserve(ctx: &Context, rec: &mut VmRecord) -> Result<(), Error> {
    let mut lost: std::collections::HashSet<std::net::Ipv4Addr> = Default::default();
    while let Some(host) = dhcp_host(rec)? {
        let node = ctx.node_conn(&rec.node).await?;
        match node.network_dhcp_host(&rec.network, &host, true).await {
            Ok(()) => return Ok(()),
            Err(e @ NodeError::AlreadyExists { .. }) if lost.len() < 16 => {
                let Some(ip) = rec.ip.as_deref().and_then(|i| i.parse().ok()) else { return Err(e.into()) };
                tracing::info!(vm = %rec.name, %ip, "address taken meanwhile; picking another");
                lost.insert(ip);
                let Some(next) = address_pick(ctx, &rec.node, &rec.network, &lost).await? else { return Err(e.into()) };
                ctx.store.vm_set_ip(&rec.id, &next.to_string()).await?;
                rec.ip = Some(next.to_string());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn address_pick(
    ctx: &Context,
    node_name: &str,
    network: &str,
    lost: &std::collections::HashSet<std::net::Ipv4Addr>,
) -> Result<Option<std::net::Ipv4Addr>, Error> {
    let node = ctx.node_conn(node_name).await?;
    let net = network.to_owned();
    let (net_xml, leases) =
        node.run(move |node| Ok::<_, NodeError>((node.network_xml(&net)?, node.network_leases(&net).unwrap_or_default()))).await?;
    let Some(info) = xml::network_dhcp_info(&net_xml) else { return Ok(None) };
    let mut taken: std::collections::HashSet<std::net::Ipv4Addr> = leases.iter().filter_map(|(_, ip)| ip.parse().ok()).collect();
    taken.extend(lost.iter().copied());
    taken.extend(
        ctx.store
            .vm_list(&Scope::all())
            .await?
            .iter()
            .filter(|v| v.network == network && v.node == node_name)
            .filter_map(|v| v.ip.as_deref()?.parse::<std::net::Ipv4Addr>().ok()),
    );
    match xml::dhcp_pick(&info, &taken) {
        Some(ip) => Ok(Some(ip)),
        None => Err(Error::InsufficientCapacity {
            reasons: vec![format!(
                "network {network} has no free address in its DHCP range {}-{}; delete a VM or widen the range (virsh net-edit {network})",
                info.range_start, info.range_end
            )],
        }),
    }
}

/// The stage a `wait` asks for: `running`, `ssh` or `cloud-init`.
fn wait_stage(what: &str) -> Result<&'static str, Error> {
    match what {
        "running" => Ok("started"),
        "ssh" => Ok("ssh_login"),
        "cloud-init" => Ok("cloud_init"),
        other => Err(Error::invalid("for", format!("{other:?} is not a stage to wait for; use running, ssh or cloud-init"))),
    }
}

/// Blocks until the VM's current boot reaches the stage, and returns the VM with its stages.
/// A timeout says the last stage reached and shows the end of the console log.
pub async fn vm_wait(ctx: &Context, caller: &Caller, name: &str, what: &str, timeout: Duration) -> Result<Vm, Error> {
    let name = parse_name("name", name)?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    let stage = wait_stage(what)?;
    if !(1..=3600).contains(&timeout.as_secs()) {
        return Err(Error::invalid("timeout_seconds", format!("{} is out of range; use 1 to 3600", timeout.as_secs())));
    }
    if stage == "cloud_init" {
        let image = images::image_record(ctx, &rec.image).await?;
        if !image.cloud_init {
            return Err(Error::invalid("for", format!("image {} does not run cloud-init; wait for ssh", image.name)));
        }
    }
    let until = Instant::now() + timeout;
    // Woken by the VM's stage and state events, not by polling; a lagged or quiet stream
    // still looks again every second.
    let mut events = ctx.events.subscribe();
    loop {
        let rec = vm_record(ctx, &Scope::all(), &name).await?;
        let stages = readiness::stages(ctx, &rec.id).await?;
        if stages.iter().any(|s| s.stage == stage) {
            return vm_get(ctx, caller, name.as_str()).await;
        }
        if matches!(rec.state, VmState::Stopped | VmState::Failed | VmState::Deleting) {
            return Err(Error::Conflict(format!("VM {name} is {}; start it first (kvmctl vm start {name})", rec.state)));
        }
        if Instant::now() >= until {
            let last = stages
                .last()
                .map(|s| format!("{} after {:.1} s", s.stage, s.elapsed_ms.unwrap_or(0) as f64 / 1000.0))
                .unwrap_or_else(|| "none".into());
            let console = console_tail(&console_log(ctx, &name)).unwrap_or_default();
            let tail: Vec<&str> = console.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect();
            return Err(Error::Unavailable(format!(
                "VM {name} did not reach {what} within {} s; last stage reached: {last}; console (last lines):\n{}",
                timeout.as_secs(),
                tail.join("\n")
            )));
        }
        let left = until.saturating_duration_since(Instant::now()).min(Duration::from_secs(1));
        let _ = tokio::time::timeout(left, async {
            loop {
                match events.recv().await {
                    Ok(e) if e.vm == name.as_str() => break,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep(left).await;
                        break;
                    }
                }
            }
        })
        .await;
    }
}

/// Logs in to a running VM over SSH with its key; errors name the last stage reached.
pub(crate) async fn vm_login(ctx: &Context, caller: &Caller, name: &Name) -> Result<ssh::Session, Error> {
    let rec = vm_record(ctx, &Scope::of(caller), name).await?;
    if rec.state != VmState::Running {
        return Err(Error::Conflict(format!("VM {name} is {}; start it first (kvmctl vm start {name})", rec.state)));
    }
    let stages = readiness::stages(ctx, &rec.id).await?;
    let last = stages.last().map(|s| s.stage.clone()).unwrap_or_else(|| "none".into());
    let vm = with_addresses(ctx, vec![vm_view(rec.clone())]).await.remove(0);
    let Some(ip) = vm.ip.as_deref().and_then(|i| i.parse::<std::net::IpAddr>().ok()) else {
        return Err(Error::Conflict(format!(
            "VM {name} has no address yet (last stage reached: {last}); try `kvmctl vm wait {name} --for ssh`"
        )));
    };
    let guard = ctx.session_open(&rec.id, name, &caller.name)?;
    let session = ssh_session(ctx, &rec, ip)
        .await
        .map_err(|e| Error::Conflict(format!("{e} (last stage reached: {last}); try `kvmctl vm wait {name} --for ssh`")))?;
    Ok(session.hold(guard))
}

/// Runs one command in the guest over SSH, as the VM's user with the VM's key.
pub async fn vm_exec(
    ctx: &Context,
    caller: &Caller,
    name: &str,
    req: kvmctl_types::api::VmExecRequest,
) -> Result<kvmctl_types::api::VmExecResponse, Error> {
    let name = parse_name("name", name)?;
    vm_record(ctx, &Scope::of(caller), &name).await?;
    if req.command.trim().is_empty() {
        return Err(Error::invalid("command", "is empty"));
    }
    if let Some(t) = req.timeout_seconds.filter(|t| !(1..=86_400).contains(t)) {
        return Err(Error::invalid("timeout_seconds", format!("{t} is out of range; use 1 to 86400")));
    }
    let timeout = Duration::from_secs(req.timeout_seconds.unwrap_or(300));
    let limit = usize::try_from(ctx.config.exec_output_max_bytes).unwrap_or(usize::MAX);
    let run = async {
        let session = vm_login(ctx, caller, &name).await?;
        let out =
            session.exec(&req.command, limit).await.map_err(|e| Error::Unavailable(format!("running the command on {name} failed: {e}")));
        session.close().await;
        out
    };
    let out = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| Error::Unavailable(format!("the command on {name} did not finish within {} s", timeout.as_secs())))??;
    if out.truncated {
        tracing::info!(vm = %name, limit, "exec output cut off at the limit");
    }
    Ok(kvmctl_types::api::VmExecResponse {
        exit_status: out.exit_status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        truncated: out.truncated,
    })
}

/// The VM's serial console, for a live session: the VM must be running.
pub async fn vm_console_open(
    ctx: &Context,
    caller: &Caller,
    name: &str,
) -> Result<(Box<dyn kvmctl_libvirt::Console>, super::SessionGuard), Error> {
    let name = parse_name("name", name)?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    if rec.state != VmState::Running {
        return Err(Error::Conflict(format!(
            "VM {name} is {}; start it first (kvmctl vm start {name}), or read its log with `kvmctl vm console {name} --log`",
            rec.state
        )));
    }
    let guard = ctx.session_open(&rec.id, &name, &caller.name)?;
    let node = ctx.node_conn(&rec.node).await?;
    let stream = node.domain_console(name.as_str()).await.map_err(|e| match e {
        NodeError::InvalidState { .. } | NodeError::Libvirt { .. } => Error::Conflict(format!(
            "cannot open the console of {name} (is another console session open?): {}",
            kvmctl_core::error::chain(&e)
        )),
        e => e.into(),
    })?;
    Ok((stream, guard))
}

/// The last `lines` lines the VM wrote on its serial console (all boots, logged by virtlogd).
pub async fn vm_console_log(ctx: &Context, caller: &Caller, name: &str, lines: usize) -> Result<String, Error> {
    let name = parse_name("name", name)?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    if rec.node != super::nodes::LOCAL {
        return Err(Error::Conflict(format!(
            "VM {name} runs on node {}, whose host keeps its console log ({}); use the live console (kvmctl vm console {name})",
            rec.node,
            serial_log_on_node(ctx, &rec).display()
        )));
    }
    let path = console_log(ctx, &name);
    let text = match blocking(move || console_tail(&path)).await? {
        Ok(t) => t,
        Err(e) => return Err(Error::Unavailable(format!("cannot read the console log of {name}: {e}"))),
    };
    let all: Vec<&str> = text.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n") + if all.is_empty() { "" } else { "\n" })
}

/// An interactive session in the guest over SSH (a PTY, then a shell or `command`).
pub async fn vm_shell_open(
    ctx: &Context,
    caller: &Caller,
    name: &str,
    command: Option<&str>,
    cols: u32,
    rows: u32,
) -> Result<ssh::Shell, Error> {
    let name = parse_name("name", name)?;
    let session = vm_login(ctx, caller, &name).await?;
    session.shell(command, cols, rows).await.map_err(|e| Error::Unavailable(format!("cannot open a shell on {name}: {e}")))
}

/// Logs in to the VM at `ip` with its key, holding it to its pinned host key; the first login
/// pins the key offered, after checking it against the fingerprints cloud-init printed on
/// the console when it printed any.
pub(crate) async fn ssh_session(ctx: &Context, rec: &VmRecord, ip: std::net::IpAddr) -> Result<ssh::Session, ssh::SshError> {
    let addr = std::net::SocketAddr::new(ip, 22);
    let pinned = match ctx.store.vm_get(&Scope::all(), &rec.name).await {
        Ok(Some(now)) => now.host_key,
        _ => rec.host_key.clone(),
    };
    let session = ssh::login(addr, &rec.ssh_user, &ssh::key_path(&ctx.config.key_dir, &rec.id), pinned.as_deref()).await?;
    if pinned.is_none() {
        let console = console_tail(&console_log(ctx, &rec.name)).unwrap_or_default();
        let printed = console_fingerprints(&console);
        let source = if printed.is_empty() {
            "first use"
        } else if printed.contains(&session.1) {
            "console"
        } else {
            let offered = session.1.clone();
            session.close().await;
            return Err(ssh::SshError::HostKey { addr, pinned: printed.join(" or "), offered });
        };
        if let Err(e) = ctx.store.vm_host_key_pin(&rec.id, &session.1, source).await {
            tracing::error!(vm = %rec.name, error = %e, "cannot record the pinned host key");
            session.close().await;
            return Err(ssh::SshError::Session(addr, "cannot record the guest's host key; try again".into()));
        }
        tracing::info!(vm = %rec.name, fingerprint = %session.1, source, "host key pinned");
    }
    Ok(session)
}

/// The `SHA256:` fingerprints between cloud-init's "BEGIN SSH HOST KEY FINGERPRINTS" markers.
pub(crate) fn console_fingerprints(console: &str) -> Vec<String> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in console.lines() {
        if line.contains("BEGIN SSH HOST KEY FINGERPRINTS") {
            inside = true;
        } else if line.contains("END SSH HOST KEY FINGERPRINTS") {
            inside = false;
        } else if inside {
            out.extend(line.split_whitespace().filter(|w| w.starts_with("SHA256:")).map(str::to_owned));
        }
    }
    out
}

#[cfg(test)]
mod fingerprint_tests {
    #[test]
    fn reads_cloud_inits_fingerprint_block() {
        let console = "boot\nci-info: no\n<14>Nov 22 ec2: #############################################################\n\
            ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\nec2: 256 SHA256:AbC+/1 root@web (ED25519)\n\
            ec2: -----END SSH HOST KEY FINGERPRINTS-----\nSHA256:outside\n";
        assert_eq!(super::console_fingerprints(console), vec!["SHA256:AbC+/1".to_string()]);
        assert!(super::console_fingerprints("nothing here").is_empty());
    }
}
