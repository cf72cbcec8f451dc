//! Create: validate the request, place the VM, reserve its row and address, then make it
//! on the node (`vm_build`), undoing everything when a step fails.

use super::*;
use kvmctl_core::rules;

/// vCPUs, memory and disk from the plan and the overrides, within bounds.
pub(super) async fn vm_size(ctx: &Context, caller: &Caller, req: &VmCreateRequest) -> Result<(Option<String>, u32, u64, u64), Error> {
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
pub(super) async fn plan_active(ctx: &Context, name: &str) -> Result<kvmctl_store::PlanRecord, Error> {
    ctx.store
        .plan_get(name)
        .await?
        .filter(|p| p.active)
        .ok_or_else(|| Error::invalid("plan", format!("there is no active plan {name:?}; `kvmctl plan list` shows them")))
}

/// A locally administered MAC in QEMU's `52:54:00` range.
pub(super) fn mac_random() -> String {
    let b = uuid::Uuid::new_v4().into_bytes();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

/// Before a VM is made on `node`: its network exists there, and nothing there carries the
/// names it will use (the undo of a failed create removes what has those names, and must
/// never remove something that is not ours). One trip to the node; returns what it read of
/// the network (its XML and DHCP leases), from which the VM's address is picked.
pub(super) async fn node_checks(ctx: &Context, node_name: &str, name: &Name, pool: &str, network: &str) -> Result<NetworkSeen, Error> {
    if let Attachment::Network(n) = Attachment::parse(network) {
        crate::app::networks::network_on_node(ctx, node_name, &n).await?;
    }
    let node = ctx.node_conn(node_name).await?;
    let net = match Attachment::parse(network) {
        Attachment::Network(n) => Some(n),
        _ => None,
    };
    let (n, pool, node_label) = (name.to_string(), pool.to_owned(), node_name.to_owned());
    let (taken, seen) = node
        .run(move |node| -> Result<(Option<Error>, NetworkSeen), NodeError> {
            let conflict = |m: String| Ok((Some(Error::Conflict(m)), None));
            let seen = match &net {
                Some(net) => match node.network_xml(net) {
                    Ok(xml) => Some((xml, node.network_leases(net).unwrap_or_default())),
                    Err(e) if e.is_not_found() => {
                        return Ok((
                            Some(Error::invalid(
                                "network",
                                format!("there is no network {net:?} on node {node_label}; `kvmctl network list` shows them, `kvmctl network create` makes one"),
                            )),
                            None,
                        ))
                    }
                    Err(e) => return Err(e),
                },
                None => None,
            };
            match node.domain_state(&n) {
                Ok(_) => {
                    return conflict(format!(
                        "libvirt already has a domain named {n} that kvmctl does not manage; rename or remove it (virsh undefine {n})"
                    ))
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            if let (Some(net), Some((xml, _))) = (&net, &seen) {
                if xml::network_dhcp_hosts(xml).iter().any(|h| h.name == n) {
                    return conflict(format!(
                        "network {net} already has a DHCP host entry named {n} that belongs to no VM; remove it (virsh net-update {net} delete ip-dhcp-host \"<host name='{n}'/>\" --live --config) or pick another name"
                    ));
                }
            }
            for vol in [rules::root_volume(&n), rules::seed_volume(&n)] {
                if node.volume_get(&pool, &vol)?.is_some() {
                    return conflict(format!(
                        "pool {pool} already has a volume {vol} that belongs to no VM; remove it (virsh vol-delete {vol} --pool {pool}) or pick another name"
                    ));
                }
            }
            Ok((None, seen))
        })
        .await?;
    match taken {
        // A VM of that name that kvmctl manages is the more useful thing to say.
        Some(Error::Conflict(_)) if ctx.store.vm_get(&Scope::all(), name).await?.is_some() => {
            Err(Error::Conflict(format!("a VM named {name} exists already; pick another name")))
        }
        Some(e) => Err(e),
        None => Ok(seen),
    }
}

/// A create request, validated, with the VM's identity, keys and seed made in memory.
pub(super) struct CreateSpec {
    pub(super) name: Name,
    pub(super) image: ImageRecord,
    pub(super) plan: Option<String>,
    pub(super) vcpus: u32,
    pub(super) memory_mib: u64,
    pub(super) disk_gib: u64,
    pub(super) firmware: String,
    pub(super) tpm: bool,
    pub(super) user: String,
    pub(super) network: String,
    pub(super) id: VmId,
    pub(super) vm_key: String,
    pub(super) seed_iso: Vec<u8>,
    pub(super) host_key: Option<String>,
    /// Host directories shared with it (resolved and checked).
    pub(super) shares: Vec<kvmctl_store::ShareRecord>,
    /// Its guest profile and ISO media (`install_iso`, `extra_isos`).
    pub(super) media: kvmctl_store::MediaRecord,
    /// The pool of its root disk and seed, and the node that pool is on (when not the
    /// image's pool, which is on every node).
    pub(super) pool: String,
    pub(super) pool_node: Option<String>,
}

/// Everything about the request that can be checked before anything is made.
async fn create_spec(ctx: &Context, caller: &Caller, req: &VmCreateRequest) -> Result<CreateSpec, Error> {
    let name = parse_name("name", &req.name)?;
    let image = super::media::boot_image(ctx, req).await?;
    let image_name = image.name.clone();
    let install = req.install_iso.is_some();
    let (plan, vcpus, memory_mib, disk_gib) = vm_size(ctx, caller, req).await?;
    let media = super::media::media_plan(ctx, req, &image, (vcpus, memory_mib, disk_gib)).await?;
    let (pool, pool_node) = crate::app::pools::pool_for_disk(ctx, "pool", req.pool.as_deref(), &image.pool, disk_gib * GIB).await?;
    if !install && disk_gib * GIB < image.virtual_bytes {
        return Err(Error::invalid(
            "disk_gib",
            format!("{disk_gib} GiB is smaller than image {image_name} ({} GiB); a disk can only grow", image.virtual_bytes.div_ceil(GIB)),
        ));
    }
    let firmware = match media.firmware.as_ref().or(req.firmware.as_ref()) {
        Some(f) if Firmware::parse(f).is_none() => {
            return Err(Error::invalid("firmware", format!("{f:?} is not bios, uefi or uefi-secure")))
        }
        // An installer's boot modes are its own business; a disk image's are its template's.
        Some(f) if !install && !image.boot_modes.is_empty() && !image.boot_modes.contains(f) => {
            return Err(Error::invalid("firmware", format!("image {image_name} boots with {} only", image.boot_modes.join(" or "))))
        }
        Some(f) => f.clone(),
        None => image.boot_modes.first().cloned().unwrap_or_else(|| "bios".into()),
    };
    let user = match req.user.as_deref().or(image.default_user.as_deref()) {
        Some(u) => parse_name("user", u)?.to_string(),
        None => "kvmctl".to_owned(),
    };
    if let Some(ttl) = req.ttl_seconds {
        rules::ttl_check(ttl)?;
    }
    crate::app::nodes::label_check(&req.node_labels).map_err(|e| match e {
        Error::InvalidRequest { message, .. } => Error::invalid("node_labels", message),
        e => e,
    })?;
    crate::app::nodes::label_check(&req.labels)?;
    let network = req.network.clone().unwrap_or_else(|| ctx.config.network.clone());
    attachment_check(ctx, caller, &network).await?;
    let id = VmId::new();
    let shares = super::shares::shares_resolve(ctx, caller, id, &req.shares)?;
    // The VM's own key, for `vm exec` and the readiness watch; the user's keys come first so
    // that seed errors keep naming `ssh_keys[N]` as sent.
    let (vm_key, vm_public) = ssh::key_generate(&format!("kvmctl-{name}"))?;
    let keys: Vec<String> = req.ssh_keys.iter().cloned().chain(std::iter::once(vm_public)).collect();
    let mut seed_spec = kvmctl_cloudinit::seed::SeedSpec::new(&id.to_string(), name.as_str(), &user, keys);
    seed_spec.user_data = req.user_data.clone();
    seed_spec.bootcmd = shares.iter().map(super::shares::share_bootcmd).collect();
    let windows_install = install && media.media.profile.as_deref() == Some(super::media::WINDOWS_11);
    let (seed_iso, host_key) =
        if windows_install { (super::media::unattend_seed(req, &name, &user)?, None) } else { seed_finish(seed_spec, &image, &name)? };
    Ok(CreateSpec {
        name,
        image,
        plan,
        vcpus,
        memory_mib,
        disk_gib,
        firmware,
        tpm: media.tpm,
        user,
        network,
        id,
        vm_key,
        seed_iso,
        host_key,
        shares,
        media: media.media,
        pool,
        pool_node,
    })
}

pub async fn vm_create(ctx: &Context, caller: &Caller, req: VmCreateRequest) -> Result<Vm, Error> {
    let mut steps = Steps::new();
    // Validate everything before anything is made.
    let strategy = crate::app::nodes::strategy(req.placement.as_deref())?;
    let spec = create_spec(ctx, caller, &req).await?;
    steps.mark("validate");
    let name = spec.name.clone();
    let _busy = ctx.vm_lock(&name, "creating").await?;
    let (rec, placed) = create_reserve(ctx, caller, &req, strategy, &spec, &mut steps, spec.pool_node.as_deref()).await?;
    // The shares' and media's rows, which the definition is written from.
    for s in &spec.shares {
        if let Err(e) = ctx.store.share_insert(s).await {
            return build_end(ctx, &rec, Err(e.into()), &[], steps, None).await;
        }
    }
    if spec.media != kvmctl_store::MediaRecord::default() {
        if let Err(e) = ctx.store.media_set(&rec.id, &spec.media).await {
            return build_end(ctx, &rec, Err(e.into()), &[], steps, None).await;
        }
    }
    let root = if req.install_iso.is_some() { RootDisk::Blank } else { RootDisk::Image };
    let domain_type = domain_type(ctx, &rec.node).await;
    // Forwards are rules in the node's firewall: the daemon writes the local node's, an agent
    // another node's; VMs on nodes without an agent get none.
    let ssh_forward = ctx.config.ssh_forward
        && !req.no_ssh_forward
        && rec.ip.is_some()
        && (rec.node == crate::app::context::LOCAL || matches!(ctx.node_agent(&rec.node).await, Ok(Some(_))));
    let CreateSpec { vm_key, seed_iso, image, .. } = spec;
    let opts =
        BuildOptions { seed_iso, vm_key, domain_type, start: !req.no_start, ssh_forward, root, nvram: None, warm: None, tpm_state: None };
    let mut made = Vec::new();
    let built = vm_build(ctx, &rec, &image, opts, &mut made, &mut steps).await;
    let mut vm = build_end(ctx, &rec, built, &made, steps, None).await?;
    if caller.is_admin() {
        vm.placement = crate::app::nodes::verdicts(&placed);
    }
    Ok(vm)
}

/// Ends a create, a clone or a restore (`event`: its event kind and the detail it carries):
/// the VM in the state the build left it, or, when the build failed, everything of it
/// undone and the row removed.
pub(super) async fn build_end(
    ctx: &Context,
    rec: &VmRecord,
    built: Result<VmState, Error>,
    made: &[String],
    steps: Steps,
    event: Option<(&'static str, Option<&str>)>,
) -> Result<Vm, Error> {
    let name = &rec.name;
    match built {
        Ok(state) => {
            ctx.vm_transition(name, VmState::Creating, state, None).await?;
            let (steps, elapsed_ms) = steps.summary();
            let via = event.map(|(kind, _)| kind).unwrap_or("vm.create");
            tracing::info!(vm = %name, ?state, node = %rec.node, via, from = ?event.and_then(|(_, d)| d), elapsed_ms, %steps, "VM created");
            if let Some((kind, detail)) = event {
                ctx.publish(kind, name, &rec.owner, Some("ready"), None, detail);
            }
            vm_out(ctx, vm_record(ctx, &Scope::all(), name).await?).await
        }
        Err(e) => {
            tracing::warn!(vm = %name, error = %e, "create failed; undoing");
            vm_teardown(ctx, rec, false, Some(made)).await?;
            ctx.store.vm_delete(name).await?;
            if let Some((kind, detail)) = event {
                ctx.publish(kind, name, &rec.owner, Some("failed"), None, detail);
            }
            Err(e)
        }
    }
}

/// Places the VM and reserves what it takes: its row (quota and node capacity admitted in
/// the same statement), its address, and the address's DHCP entry on the node. On success
/// the row is in `creating`; on failure nothing is left.
pub(super) async fn create_reserve(
    ctx: &Context,
    caller: &Caller,
    req: &VmCreateRequest,
    strategy: kvmctl_core::placement::Strategy,
    spec: &CreateSpec,
    steps: &mut Steps,
    only_node: Option<&str>,
) -> Result<(VmRecord, kvmctl_core::placement::Placement), Error> {
    let (name, image, network) = (&spec.name, &spec.image, &spec.network);
    let (vcpus, memory_mib, disk_gib) = (spec.vcpus, spec.memory_mib, spec.disk_gib);
    if let Some(run) = &req.test_run {
        crate::app::testruns::run_open(ctx, caller, run).await?;
    }
    // A first placement picks the node the names and the network are checked on; the
    // insert below checks its capacity again (and places anew when another create filled it).
    let (mut placed, mut node_cap) =
        crate::app::nodes::place(ctx, (vcpus.into(), memory_mib, disk_gib), &req.node_labels, strategy, only_node).await?;
    let Some(chosen) = placed.chosen.clone() else {
        return Err(Error::InsufficientCapacity { reasons: placed.refusals() });
    };
    steps.mark("place");
    // The checks of the node read its network's XML; the address is picked from the same.
    let net_xml = node_checks(ctx, &chosen, name, &image.pool, network).await?;
    steps.mark("node_checks");
    // Picking an address and recording it in the row happen under one lock, so two creates
    // never pick the same one.
    let address_guard = ctx.address_lock.lock().await;
    let address = address_for(ctx, &chosen, network, net_xml).await?;
    let mut rec = VmRecord {
        id: spec.id,
        name: name.clone(),
        owner: caller.name.clone(),
        node: chosen,
        image: image.name.clone(),
        plan: spec.plan.clone(),
        vcpus,
        memory_mib,
        disk_gib,
        network: network.clone(),
        mac: address.as_ref().map(|(_, mac)| mac.clone()).unwrap_or_else(mac_random),
        firmware: spec.firmware.clone(),
        tpm: spec.tpm,
        pool: spec.pool.clone(),
        root_volume: rules::root_volume(name.as_str()),
        seed_volume: rules::seed_volume(name.as_str()),
        vnc_password: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
        ip: address.map(|(ip, _)| ip.to_string()),
        ssh_user: spec.user.clone(),
        host_key_source: spec.host_key.as_ref().map(|_| "seed".to_owned()),
        host_key: spec.host_key.clone(),
        state: VmState::Creating,
        error: None,
        created_at: 0,
        updated_at: 0,
        expires_at: None,
    };
    steps.mark("address");
    // The quota check and the reservation are one statement: concurrent creates of one user
    // can never exceed the quota together.
    let limits = crate::app::users::limits_of(ctx, &rec.owner).await?;
    let requested = kvmctl_core::Usage { vms: 1, vcpus: vcpus.into(), memory_mib, disk_gib, forwards: 0 };
    let mut attempts = 0;
    let mut lost = std::collections::HashSet::new();
    let mut rec = loop {
        let inserted = match ctx.store.vm_insert(&rec, limits.as_ref(), node_cap).await {
            Ok(r) => r,
            // Another daemon on the database recorded this address first: pick again.
            Err(kvmctl_store::StoreError::Exists { kind: "address", name: ip }) if lost.len() < 16 => {
                lost.extend(ip.parse::<std::net::Ipv4Addr>());
                let address = super::address::address_pick(ctx, &rec.node, &rec.network, &lost, None).await?;
                rec.mac = address.as_ref().map(|(_, mac)| mac.clone()).unwrap_or_else(mac_random);
                rec.ip = address.map(|(ip, _)| ip.to_string());
                continue;
            }
            Err(kvmctl_store::StoreError::Exists { kind: "vm", .. }) => {
                return Err(Error::Conflict(format!("a VM named {name} exists already; pick another name")))
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(r) = inserted {
            break r;
        }
        // Refused: the quota, or the node filled up since placement.
        if let Some(l) = &limits {
            if kvmctl_core::auth::quota_check(l, &ctx.store.usage_of(&caller.name).await?, &requested).is_err() {
                return Err(crate::app::users::quota_refusal(ctx, &caller.name, l, &requested).await);
            }
        }
        attempts += 1;
        (placed, node_cap) =
            crate::app::nodes::place(ctx, (vcpus.into(), memory_mib, disk_gib), &req.node_labels, strategy, only_node).await?;
        match placed.chosen.clone() {
            Some(n) if attempts < 8 => {
                if n != rec.node {
                    let net_xml = node_checks(ctx, &n, name, &image.pool, &rec.network).await?;
                    let address = address_for(ctx, &n, &rec.network, net_xml).await?;
                    rec.mac = address.as_ref().map(|(_, mac)| mac.clone()).unwrap_or_else(mac_random);
                    rec.ip = address.map(|(ip, _)| ip.to_string());
                    rec.node = n;
                }
            }
            _ => return Err(Error::InsufficientCapacity { reasons: placed.refusals() }),
        }
    };
    steps.mark("record");
    ctx.publish("vm.state", &rec.name, &rec.owner, Some(VmState::Creating.as_str()), None, None);
    if let Some(ttl) = req.ttl_seconds {
        let at = ctx.clock.now() + ttl as i64;
        ctx.store.vm_set_expiry(&rec.id, Some(at)).await?;
        rec.expires_at = Some(at);
    }
    if !req.labels.is_empty() {
        ctx.store.vm_labels_set(&rec.id, &req.labels).await?;
    }
    // A run that ends meanwhile takes the VM with it (the reaper deletes the VMs of ended runs).
    if let Some(run) = &req.test_run {
        ctx.store.vm_test_run_set(&rec.id, Some(run)).await?;
    }
    // The address is reserved in libvirt (a DHCP host entry) while the lock is held, unless
    // it was reserved ahead.
    if let Err(e) = address_reserve(ctx, &mut rec).await {
        drop(address_guard);
        ctx.store.vm_delete(name).await?;
        ctx.publish("vm.deleted", &rec.name, &rec.owner, None, None, None);
        return Err(e);
    }
    drop(address_guard);
    steps.mark("dhcp_reserve");
    Ok((rec, placed))
}

/// The network a VM joins must be one the caller may use and not being made or removed (its
/// existence on the chosen node is `node_checks`'), or an existing host bridge or NIC.
pub(super) async fn attachment_check(ctx: &Context, caller: &Caller, network: &str) -> Result<(), Error> {
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
