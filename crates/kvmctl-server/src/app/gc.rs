//! `kvmctl gc`: debris on the node that carries kvmctl's marks but belongs to no VM row,
//! and rows whose domain vanished. Reported by default; removed with `clean` (admins).
//!
//! What counts as ours: domains with kvmctl's metadata (`xml::metadata_parse` finds a VM id), volumes named like
//! a VM's root disk or seed (`NAME-root.qcow2`, `NAME-seed.iso`) in kvmctl's pools and used
//! by no image and no domain, DHCP reservations in networks kvmctl manages (and the default
//! network) for MACs of no VM, and entries of the `inet kvmctl` table for VM ids of no row.
//! Volumes, reservations and rules that any domain on the node still references are never
//! debris (they may be another daemon's), and nothing is removed before it has been
//! reported for `gc_grace_seconds`, so a create in flight is never taken for debris. Domains
//! whose metadata names another installation (another database) are not ours to judge:
//! two installations can share one libvirt. Daemons sharing one database are one
//! installation. Domains made before the installation was recorded carry none and are
//! judged as before.

use super::context::{blocking, Context};
use kvmctl_core::{Caller, Error, VmState};
use kvmctl_libvirt::xml::{self, DhcpHost};
use kvmctl_libvirt::NodeError;
use kvmctl_store::Scope;
use kvmctl_types::api::{GcItem, GcReport};
use std::collections::{BTreeSet, HashSet};

pub async fn gc(ctx: &Context, caller: &Caller, clean: bool) -> Result<GcReport, Error> {
    caller.require_admin("garbage collection")?;
    let now = ctx.clock.now();
    let grace = ctx.config.gc_grace_seconds as i64;
    // Debris of this report with when it was first reported; what is not debris any more is
    // forgotten.
    let seen_now = std::sync::Mutex::new(std::collections::HashMap::new());
    let first_seen = |kind: &str, name: &str| -> (i64, bool) {
        let key = format!("{kind} {name}");
        let first = *ctx.gc_seen.lock().expect("gc map poisoned").get(&key).unwrap_or(&now);
        seen_now.lock().expect("gc map poisoned").insert(key, first);
        (first, clean && now - first >= grace)
    };
    let rows = ctx.store.vm_list(&Scope::all()).await?;
    let ids: HashSet<String> = rows.iter().map(|v| v.id.to_string()).collect();
    let macs: HashSet<String> = rows.iter().map(|v| v.mac.to_ascii_lowercase()).collect();
    let volumes_of_rows: HashSet<(String, String)> =
        rows.iter().flat_map(|v| [(v.pool.clone(), v.root_volume.clone()), (v.pool.clone(), v.seed_volume.clone())]).collect();
    let images = ctx.store.image_list().await?;
    let image_volumes: HashSet<(String, String)> = images
        .iter()
        .flat_map(|i| {
            std::iter::once(i.volume.clone())
                .chain(i.kernel_volume.clone())
                .chain(i.initrd_volume.clone())
                .map(move |v| (i.pool.clone(), v))
        })
        .collect();
    let pools: BTreeSet<String> = std::iter::once(ctx.config.pool.clone()).chain(rows.iter().map(|v| v.pool.clone())).collect();
    let mut networks: BTreeSet<String> = ctx.store.network_list(&Scope::all()).await?.into_iter().map(|n| n.name.to_string()).collect();
    networks.insert(ctx.config.network.clone());

    let (pools2, networks2, installation) = (pools.clone(), networks.clone(), ctx.installation.clone());
    // Everything read in one blocking call: domains (with their XML), volumes, DHCP hosts.
    type Seen = (Vec<(String, String, bool, Option<String>, xml::DomainDevices)>, Vec<(String, String)>, Vec<(String, DhcpHost)>);
    let seen: Seen = ctx
        .local_node
        .run(move |node| -> Result<Seen, NodeError> {
            let mut domains = Vec::new();
            let mut disks_in_use = HashSet::new();
            for d in node.domain_list()? {
                let xml = match node.domain_xml(&d.name) {
                    Ok(x) => x,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e),
                };
                let devices = xml::domain_devices(&xml);
                disks_in_use.extend(devices.disk_files.iter().cloned());
                let running = d.state == kvmctl_libvirt::DomainState::Running;
                // Another installation's domain (its metadata names another database) is
                // never ours to judge.
                let id = xml::metadata_parse(&xml)
                    .filter(|m| m.installation.is_none() || m.installation == installation)
                    .map(|m| m.vm_id.to_string());
                domains.push((d.name, d.uuid, running, id, devices));
            }
            let mut volumes = Vec::new();
            for p in &pools2 {
                match node.volume_list(p) {
                    // A volume a domain uses (by path) is never debris.
                    Ok(vs) => volumes.extend(
                        vs.into_iter().filter(|v| !disks_in_use.contains(&v.path.display().to_string())).map(|v| (p.clone(), v.name)),
                    ),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            let mut hosts = Vec::new();
            for n in &networks2 {
                match node.network_xml(n) {
                    Ok(xml) => hosts.extend(xml::network_dhcp_hosts(&xml).into_iter().map(|h| (n.clone(), h))),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok((domains, volumes, hosts))
        })
        .await?;
    let (domains, volumes, hosts) = seen;
    let domain_macs: HashSet<String> = domains.iter().flat_map(|d| d.4.macs.iter().cloned()).collect();

    let mut items = Vec::new();
    // Domains with our metadata and no row.
    let domain_names: HashSet<String> = domains.iter().map(|d| d.0.clone()).collect();
    for (name, uuid, running, id, _) in &domains {
        let Some(id) = id else { continue };
        if ids.contains(id) {
            continue;
        }
        let (first_seen_at, due) = first_seen("domain", name);
        let mut item = GcItem {
            kind: "domain".into(),
            name: name.clone(),
            detail: format!("kvmctl VM id {id} ({}) has no row", if *running { "running" } else { "stopped" }),
            removed: false,
            first_seen_at,
        };
        if due {
            let key = kvmctl_netfw::vm_key(uuid);
            match ctx.local_node.domain_destroy(name).await {
                Err(e) if !e.is_not_found() && !matches!(e, NodeError::InvalidState { .. }) => return Err(e.into()),
                _ => {}
            }
            ctx.local_node.domain_undefine(name).await?;
            if super::vmnet::node_is_local(ctx) {
                blocking(move || kvmctl_netfw::vm_remove(kvmctl_netfw::TABLE, &key)).await?.map_err(|e| {
                    Error::Unavailable(format!("cannot remove the rules of domain {name}: {}", kvmctl_core::error::chain(&e)))
                })?;
            }
            item.removed = true;
        }
        items.push(item);
    }
    // Volumes named like a VM's, of no row, no image, no domain, and not kept on purpose; and
    // clone bases of no row (a crash between the file and its row's removal).
    let kept: std::collections::HashSet<(String, String)> = ctx
        .store
        .kept_disk_list()
        .await?
        .into_iter()
        .filter(|(node, _, _)| node == super::context::LOCAL)
        .map(|(_, pool, vol)| (pool, vol))
        .collect();
    let bases: HashSet<String> = ctx.store.clone_base_list().await?.into_iter().map(|b| b.id).collect();
    for (pool, vol) in &volumes {
        let key = (pool.clone(), vol.clone());
        let detail = if let Some(vm) = kvmctl_core::rules::volume_vm(vol) {
            if volumes_of_rows.contains(&key) || image_volumes.contains(&key) || kept.contains(&key) {
                continue;
            }
            format!("named for VM {vm}, which has no row{}", if domain_names.contains(vm) { "" } else { " and no domain" })
        } else if let Some(id) = kvmctl_core::rules::volume_base(vol) {
            if bases.contains(id) {
                continue;
            }
            "a linked clones' base that no clone base record names".to_owned()
        } else {
            continue;
        };
        let name = format!("{pool}/{vol}");
        let (first_seen_at, due) = first_seen("volume", &name);
        let mut item = GcItem { kind: "volume".into(), name, detail, removed: false, first_seen_at };
        if due {
            ctx.local_node.volume_delete(pool, vol).await?;
            item.removed = true;
        }
        items.push(item);
    }
    // DHCP reservations for MACs of no VM.
    for (net, host) in &hosts {
        let DhcpHost { mac, name, ip } = host;
        // An address reserved ahead is the network's, whoever has it (ADR 0015).
        if macs.contains(mac) || domain_macs.contains(mac) || xml::is_premade(host) {
            continue;
        }
        let item_name = format!("{net}/{name}");
        let (first_seen_at, due) = first_seen("dhcp_host", &item_name);
        let mut item = GcItem {
            kind: "dhcp_host".into(),
            name: item_name,
            detail: format!("{mac} {ip} belongs to no VM"),
            removed: false,
            first_seen_at,
        };
        if due {
            ctx.local_node.network_dhcp_host(net, &xml::dhcp_host_entry_xml(host)?, false).await?;
            item.removed = true;
        }
        items.push(item);
    }
    // Firewall entries of no row (whose domain is not a running orphan, reported above).
    if super::vmnet::node_is_local(ctx) {
        let table = blocking(|| kvmctl_netfw::table_read(kvmctl_netfw::TABLE)).await?.unwrap_or_default();
        // Keys of our rows, and of every domain on the node (another daemon's VM is not ours
        // to judge; a domain without a row is reported above and its rules go with it).
        let our_keys: HashSet<String> =
            ids.iter().map(String::as_str).chain(domains.iter().filter_map(|d| d.3.as_deref())).map(kvmctl_netfw::vm_key).collect();
        for key in table.keys() {
            if our_keys.contains(key) {
                continue;
            }
            let (first_seen_at, due) = first_seen("firewall", key);
            let mut item = GcItem {
                kind: "firewall".into(),
                name: key.clone(),
                detail: "rules of a VM id with no row".into(),
                removed: false,
                first_seen_at,
            };
            if due {
                let k = key.clone();
                blocking(move || kvmctl_netfw::vm_remove(kvmctl_netfw::TABLE, &k))
                    .await?
                    .map_err(|e| Error::Unavailable(kvmctl_core::error::chain(&e)))?;
                item.removed = true;
            }
            items.push(item);
        }
    }
    // Other nodes' logs, through their agents: those of VMs with neither a domain there nor
    // a row here (a delete whose log removal failed, a VM created behind kvmctl's back).
    for node in ctx.store.node_list().await? {
        let Ok(Some(agent)) = ctx.node_agent(node.name.as_str()).await else { continue };
        let keep: Vec<String> = rows.iter().filter(|v| v.node == node.name.as_str()).map(|v| v.name.to_string()).collect();
        let found = match agent.gc(true, &keep).await {
            Ok(r) => r.logs,
            Err(e) => {
                tracing::warn!(node = %node.name, error = %e, "gc cannot ask the node's agent for debris");
                continue;
            }
        };
        for vm in found {
            let name = format!("{}/{vm}", node.name);
            let (first_seen_at, due) = first_seen("log", &name);
            let mut item = GcItem {
                kind: "log".into(),
                name,
                detail: "console and QEMU logs of a VM that is gone".into(),
                removed: false,
                first_seen_at,
            };
            if due {
                if let Ok(n) = kvmctl_types::Name::parse(&vm) {
                    item.removed = agent.logs_remove(&n).await.is_ok();
                }
            }
            items.push(item);
        }
    }
    // Rows whose domain vanished (the reconciler marks them failed; deleting them is the
    // owner's decision, so gc only reports).
    for v in &rows {
        if matches!(v.state, VmState::Creating | VmState::Deleting | VmState::Deleted) || domain_names.contains(v.name.as_str()) {
            continue;
        }
        let (first_seen_at, _) = first_seen("row", v.name.as_str());
        items.push(GcItem {
            kind: "row".into(),
            name: v.name.to_string(),
            detail: format!("VM of {} has no domain; `kvmctl vm delete {}` removes what is left", v.owner, v.name),
            removed: false,
            first_seen_at,
        });
    }
    for i in &items {
        tracing::info!(kind = %i.kind, name = %i.name, removed = i.removed, detail = %i.detail, "gc");
    }
    // What was removed is gone; what remains keeps its first sighting.
    let mut kept = seen_now.into_inner().expect("gc map poisoned");
    for i in items.iter().filter(|i| i.removed) {
        kept.remove(&format!("{} {}", i.kind, i.name));
    }
    *ctx.gc_seen.lock().expect("gc map poisoned") = kept;
    Ok(GcReport { clean, items })
}
