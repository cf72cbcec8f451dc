//! The plan: what to do to take what exists to what the lab file says.
//!
//! What a lab owns carries the label `kvmctl.lab=LAB`. A VM or network of the file that
//! exists without it belongs to someone else and stops the plan. What the API does not show
//! of a VM (its keys, user-data, user, TTL, node labels, firmware) is compared by the hashes
//! the lab's labels keep, so a rewritten file with the same content is no change.
//!
//! Order: VMs the file no longer has are deleted first, then networks are made, then VMs
//! are replaced, made (after what they depend on) and changed; networks the file no longer
//! has go last.

use crate::file::{Lab, LabForward, LabNetwork, LabVm};
use crate::{content_hash, KEYS_LABEL, LAB_LABEL, OPTIONS_LABEL, USER_DATA_LABEL};
use kvmctl_types::api::{Network, Vm};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Create,
    Change,
    Replace,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Change => "change",
            Action::Replace => "replace",
            Action::Delete => "delete",
        }
    }

    /// The sign the plan is printed with.
    pub fn sign(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Change => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
}

/// What a VM's change in place does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmChange {
    /// A new size: the plan and/or vCPUs, memory, disk.
    pub resize: Option<kvmctl_types::api::VmResizeRequest>,
    /// The resize changes CPUs or memory of a running VM: it is stopped and started.
    pub restart: bool,
    /// The VM's labels, whole, when they change.
    pub labels: Option<BTreeMap<String, String>>,
    pub forwards_add: Vec<LabForward>,
    /// `(protocol, host_port)` of forwards the file no longer has.
    pub forwards_remove: Vec<(String, u16)>,
    /// Data disks to add (hot-plugged).
    pub disks_add: Vec<crate::file::LabDisk>,
    /// Data disks to grow: `(name, size_gib)`.
    pub disks_grow: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Network(LabNetwork),
    /// The VM as the file asks for it, with the labels it is made with.
    Vm(Box<LabVm>, BTreeMap<String, String>),
    /// Something to delete, by name.
    Gone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub action: Action,
    /// `network` or `vm`.
    pub kind: &'static str,
    pub name: String,
    /// What differs, one line each (`memory: 1024 MiB -> 2048 MiB`).
    pub details: Vec<String>,
    pub target: Target,
    pub change: VmChange,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// What cannot change in place (`VM web: image debian-12 -> debian-13`); applied only
    /// with `replace`.
    pub needs_replace: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// What a VM is made from, read by the CLI from the files the lab names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub ssh_keys: Vec<String>,
    pub user_data: Option<String>,
}

/// The labels a lab's VM is made with: the file's, the lab's mark, and the hashes of what
/// the API does not show.
pub fn vm_labels(lab: &str, vm: &LabVm, resolved: &Resolved) -> BTreeMap<String, String> {
    let mut labels = vm.labels.clone();
    labels.insert(LAB_LABEL.into(), lab.into());
    labels.insert(KEYS_LABEL.into(), content_hash(resolved.ssh_keys.join("\n").as_bytes()));
    if let Some(ud) = &resolved.user_data {
        labels.insert(USER_DATA_LABEL.into(), content_hash(ud.as_bytes()));
    }
    labels.insert(OPTIONS_LABEL.into(), content_hash(options_text(vm).as_bytes()));
    labels
}

/// The create-only options, as text to hash.
fn options_text(vm: &LabVm) -> String {
    let mut text = format!("user={:?} ttl={:?} node_labels={:?} firmware={:?}", vm.user, vm.ttl_seconds, vm.node_labels, vm.firmware);
    // Shares join the hash only when there are some, so labs without them keep their hash.
    if !vm.shares.is_empty() {
        text.push_str(&format!(" shares={:?}", vm.shares));
    }
    text
}

/// The plan from what exists (`vms` and `networks` the caller sees) to `lab`.
pub fn plan(lab: &Lab, resolved: &BTreeMap<String, Resolved>, vms: &[Vm], networks: &[Network], replace: bool) -> Result<Plan, String> {
    let ours = |labels: &BTreeMap<String, String>| labels.get(LAB_LABEL).map(String::as_str) == Some(lab.name.as_str());
    let mut plan = Plan::default();
    let mut conflicts = Vec::new();

    // VMs the file no longer has.
    for vm in vms.iter().filter(|v| ours(&v.labels) && !lab.vms.iter().any(|l| l.name == v.name)) {
        plan.steps.push(step(Action::Delete, "vm", &vm.name, vec![], Target::Gone));
    }
    for n in &lab.networks {
        match networks.iter().find(|x| x.name == n.name) {
            None => {
                plan.steps.push(step(Action::Create, "network", &n.name, vec![format!("subnet {}", n.subnet)], Target::Network(n.clone())))
            }
            Some(x) if !ours(&x.labels) => {
                conflicts.push(format!("network {} exists and is not part of lab {}; rename it in the file", n.name, lab.name))
            }
            Some(x) => {
                let mut differs = Vec::new();
                if x.subnet.as_deref() != Some(n.subnet.as_str()) {
                    differs.push(format!("subnet {} -> {}", x.subnet.as_deref().unwrap_or("-"), n.subnet));
                }
                if (x.mode == "isolated") != n.isolated {
                    differs.push(format!("mode {} -> {}", x.mode, if n.isolated { "isolated" } else { "nat" }));
                }
                if let Some(r) = n.dhcp_range.as_ref().filter(|r| x.dhcp_range.as_ref() != Some(r)) {
                    differs.push(format!("dhcp_range {} -> {r}", x.dhcp_range.as_deref().unwrap_or("-")));
                }
                if !differs.is_empty() {
                    conflicts.push(format!(
                        "network {}: {} cannot change while it exists; delete the lab (kvmctl delete -f FILE) and apply again",
                        n.name,
                        differs.join(", ")
                    ));
                }
            }
        }
    }
    for v in &lab.vms {
        if let Some(net) = &v.network {
            let in_file = lab.networks.iter().any(|n| &n.name == net);
            if !in_file && !networks.iter().any(|x| &x.name == net) {
                conflicts.push(format!("VM {}: network {net} is neither in the file nor on the daemon (kvmctl network list)", v.name));
            }
        }
        let res = resolved.get(&v.name).cloned().unwrap_or_default();
        let labels = vm_labels(&lab.name, v, &res);
        match vms.iter().find(|x| x.name == v.name) {
            None => {
                let size = match (&v.plan, v.vcpus, v.memory_mib, v.disk_gib) {
                    (Some(p), ..) => format!("plan {p}"),
                    (None, c, m, d) => format!("{} vCPU, {} MiB, {} GiB", c.unwrap_or(0), m.unwrap_or(0), d.unwrap_or(0)),
                };
                let details = vec![format!("image {}, {size}", v.image)];
                plan.steps.push(step(Action::Create, "vm", &v.name, details, Target::Vm(Box::new(v.clone()), labels)));
            }
            Some(x) if !ours(&x.labels) => {
                conflicts.push(format!("VM {} exists and is not part of lab {}; rename it in the file", v.name, lab.name))
            }
            Some(x) => {
                let (fixed, change, details) = compare(v, &labels, x);
                if !fixed.is_empty() {
                    plan.needs_replace.extend(fixed.iter().map(|f| format!("VM {}: {f}", v.name)));
                    if replace {
                        plan.steps.push(step(Action::Replace, "vm", &v.name, fixed, Target::Vm(Box::new(v.clone()), labels)));
                    }
                } else if !details.is_empty() {
                    let mut s = step(Action::Change, "vm", &v.name, details, Target::Vm(Box::new(v.clone()), labels));
                    s.change = change;
                    plan.steps.push(s);
                }
            }
        }
    }
    for n in networks.iter().filter(|n| ours(&n.labels) && !lab.networks.iter().any(|l| l.name == n.name)) {
        plan.steps.push(step(Action::Delete, "network", &n.name, vec![], Target::Gone));
    }
    if !conflicts.is_empty() {
        return Err(conflicts.join("\n"));
    }
    Ok(plan)
}

fn step(action: Action, kind: &'static str, name: &str, details: Vec<String>, target: Target) -> Step {
    Step { action, kind, name: name.to_owned(), details, target, change: VmChange::default() }
}

/// Compares a VM of the file with the VM as it is: what cannot change in place, the change
/// in place, and its description.
fn compare(v: &LabVm, labels: &BTreeMap<String, String>, x: &Vm) -> (Vec<String>, VmChange, Vec<String>) {
    let mut fixed = Vec::new();
    if v.image != x.image {
        fixed.push(format!("image {} -> {}", x.image, v.image));
    }
    if let Some(n) = v.network.as_ref().filter(|n| **n != x.network) {
        fixed.push(format!("network {} -> {n}", x.network));
    }
    for (key, what) in
        [(KEYS_LABEL, "ssh_keys"), (USER_DATA_LABEL, "user_data"), (OPTIONS_LABEL, "user, ttl, node_labels, firmware or shares")]
    {
        if labels.get(key) != x.labels.get(key) {
            fixed.push(format!("{what} changed (it is read at the first boot only)"));
        }
    }
    let mut change = VmChange::default();
    let mut details = Vec::new();
    // Size: a plan gives all three unless the file overrides them.
    let mut resize = kvmctl_types::api::VmResizeRequest::default();
    if v.plan.is_some() && v.plan != x.plan {
        details.push(format!("plan {} -> {}", x.plan.as_deref().unwrap_or("none"), v.plan.as_deref().unwrap_or("none")));
        resize.plan = v.plan.clone();
    }
    if let Some(c) = v.vcpus.filter(|c| *c != x.vcpus) {
        details.push(format!("cpus {} -> {c}", x.vcpus));
        resize.vcpus = Some(c);
    }
    if let Some(m) = v.memory_mib.filter(|m| *m != x.memory_mib) {
        details.push(format!("memory {} MiB -> {m} MiB", x.memory_mib));
        resize.memory_mib = Some(m);
    }
    match v.disk_gib {
        Some(d) if d < x.disk_gib => fixed.push(format!("disk {} GiB -> {d} GiB (a disk never shrinks)", x.disk_gib)),
        Some(d) if d > x.disk_gib => {
            details.push(format!("disk {} GiB -> {d} GiB", x.disk_gib));
            resize.disk_gib = Some(d);
        }
        _ => {}
    }
    if resize != kvmctl_types::api::VmResizeRequest::default() {
        change.restart = (resize.plan.is_some() || resize.vcpus.is_some() || resize.memory_mib.is_some()) && x.state != "stopped";
        if change.restart {
            details.push("restarts the VM (CPUs and memory change while it is stopped)".into());
        }
        change.resize = Some(resize);
    }
    if labels != &x.labels {
        let show = |l: &BTreeMap<String, String>| {
            l.iter().filter(|(k, _)| !k.starts_with("kvmctl.")).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
        };
        if show(labels) != show(&x.labels) {
            details.push(format!("labels {} -> {}", show(&x.labels), show(labels)));
        }
        change.labels = Some(labels.clone());
    }
    // Forwards, leaving out the SSH forward every VM gets from the daemon.
    let have: Vec<&kvmctl_types::api::Forward> = x.forwards.iter().filter(|f| !(f.pool == "ssh" && f.guest_port == 22)).collect();
    for f in &v.forwards {
        if !have.iter().any(|h| forward_matches(f, h)) {
            details.push(format!("forward {} {} added", f.protocol, f.guest_port));
            change.forwards_add.push(f.clone());
        }
    }
    for h in have.iter().filter(|h| h.pool != "vnc") {
        if !v.forwards.iter().any(|f| forward_matches(f, h)) {
            details.push(format!("forward {} {}->{} removed", h.protocol, h.host_port, h.guest_port));
            change.forwards_remove.push((h.protocol.clone(), h.host_port));
        }
    }
    // Data disks: added and grown in place; one that is smaller, on another bus or gone from
    // the file is not removed or shrunk by an apply.
    for d in &v.disks {
        match x.disks.iter().find(|h| h.name == d.name) {
            None => {
                details.push(format!("disk {} ({} GiB, {}) added", d.name, d.size_gib, d.bus));
                change.disks_add.push(d.clone());
            }
            Some(h) if h.bus != d.bus => fixed.push(format!("disk {}: bus {} -> {}", d.name, h.bus, d.bus)),
            Some(h) if d.size_gib < h.size_gib => {
                fixed.push(format!("disk {} {} GiB -> {} GiB (a disk never shrinks)", d.name, h.size_gib, d.size_gib))
            }
            Some(h) if d.size_gib > h.size_gib => {
                details.push(format!("disk {} {} GiB -> {} GiB", d.name, h.size_gib, d.size_gib));
                change.disks_grow.push((d.name.clone(), d.size_gib));
            }
            Some(_) => {}
        }
    }
    for h in x.disks.iter().filter(|h| !v.disks.iter().any(|d| d.name == h.name)) {
        fixed.push(format!("disk {} is not in the file (kvmctl vm disk rm {} {} removes it and its data)", h.name, v.name, h.name));
    }
    (fixed, change, details)
}

fn forward_matches(f: &LabForward, h: &kvmctl_types::api::Forward) -> bool {
    f.protocol == h.protocol && f.guest_port == h.guest_port && f.host_port.is_none_or(|p| p == h.host_port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::parse;

    fn lab() -> Lab {
        parse(crate::file::tests::EXAMPLE, &BTreeMap::new()).unwrap()
    }

    fn resolved() -> BTreeMap<String, Resolved> {
        let r = Resolved { ssh_keys: vec!["ssh-ed25519 AAAA k".into()], user_data: None };
        BTreeMap::from([("db".into(), Resolved { user_data: Some("#cloud-config\n".into()), ..r.clone() }), ("web".into(), r)])
    }

    /// What exists after the plan's creates ran: the VMs and network as the daemon shows them.
    fn made(lab: &Lab, res: &BTreeMap<String, Resolved>) -> (Vec<Vm>, Vec<Network>) {
        let vms = lab
            .vms
            .iter()
            .map(|v| {
                let mut forwards: Vec<kvmctl_types::api::Forward> =
                    v.forwards.iter().enumerate().map(|(i, f)| forward(&f.protocol, 20000 + i as u16, f.guest_port, "general")).collect();
                forwards.push(forward("tcp", 2200, 22, "ssh"));
                Vm {
                    name: v.name.clone(),
                    image: v.image.clone(),
                    plan: v.plan.clone(),
                    vcpus: v.vcpus.unwrap_or(1),
                    memory_mib: v.memory_mib.unwrap_or(512),
                    disk_gib: v.disk_gib.unwrap_or(3),
                    network: v.network.clone().unwrap_or_else(|| "default".into()),
                    state: "running".into(),
                    forwards,
                    labels: vm_labels(&lab.name, v, &res[&v.name]),
                    disks: v
                        .disks
                        .iter()
                        .map(|d| {
                            serde_json::from_value(serde_json::json!({"name": d.name, "size_gib": d.size_gib, "bus": d.bus, "target": "vdc", "state": "attached"}))
                                .unwrap()
                        })
                        .collect(),
                    ..serde_json::from_value(serde_json::json!({
                        "id": "00000000-0000-0000-0000-000000000000", "name": "", "state": "", "image": "", "vcpus": 0, "memory_mib": 0,
                        "disk_gib": 0, "node": "local", "network": "", "mac": "", "ssh_user": "kvmctl", "firmware": "bios",
                        "owner": "admin", "created_at": 0}))
                    .unwrap()
                }
            })
            .collect();
        let networks = lab
            .networks
            .iter()
            .map(|n| Network {
                name: n.name.clone(),
                managed: true,
                mode: "nat".into(),
                subnet: Some(n.subnet.clone()),
                gateway: None,
                dhcp_range: None,
                bridge: None,
                state: "active".into(),
                owner: Some("admin".into()),
                vms: vec![],
                labels: BTreeMap::from([(LAB_LABEL.into(), lab.name.clone())]),
            })
            .collect();
        (vms, networks)
    }

    fn forward(protocol: &str, host_port: u16, guest_port: u16, pool: &str) -> kvmctl_types::api::Forward {
        serde_json::from_value(serde_json::json!({"protocol": protocol, "host_port": host_port, "guest_port": guest_port, "pool": pool}))
            .unwrap()
    }

    #[test]
    fn a_first_apply_makes_everything_in_order_and_a_second_changes_nothing() {
        let (lab, res) = (lab(), resolved());
        let p = plan(&lab, &res, &[], &[], false).unwrap();
        let order: Vec<_> = p.steps.iter().map(|s| (s.action, s.name.as_str())).collect();
        assert_eq!(order, [(Action::Create, "web-lab-net"), (Action::Create, "db"), (Action::Create, "web")]);
        let (vms, nets) = made(&lab, &res);
        let p = plan(&lab, &res, &vms, &nets, false).unwrap();
        assert!(p.is_empty() && p.needs_replace.is_empty(), "{p:?}");
    }

    #[test]
    fn a_size_change_is_in_place_and_restarts_a_running_vm() {
        let (lab0, res) = (lab(), resolved());
        let (vms, nets) = made(&lab0, &res);
        let lab = parse(crate::file::tests::EXAMPLE, &BTreeMap::from([("web_memory".into(), "2G".into())])).unwrap();
        let p = plan(&lab, &res, &vms, &nets, false).unwrap();
        assert_eq!(p.steps.len(), 1, "{p:?}");
        let s = &p.steps[0];
        assert_eq!((s.action, s.name.as_str()), (Action::Change, "web"));
        assert!(s.details[0].contains("memory 1024 MiB -> 2048 MiB"), "{:?}", s.details);
        assert_eq!(s.change.resize.as_ref().unwrap().memory_mib, Some(2048));
        assert!(s.change.restart);
    }

    #[test]
    fn what_cannot_change_in_place_asks_for_replace() {
        let (lab0, res) = (lab(), resolved());
        let (vms, nets) = made(&lab0, &res);
        let mut res2 = res.clone();
        res2.get_mut("db").unwrap().user_data = Some("#cloud-config\nruncmd: [true]\n".into());
        let p = plan(&lab0, &res2, &vms, &nets, false).unwrap();
        assert!(p.steps.is_empty() && p.needs_replace == ["VM db: user_data changed (it is read at the first boot only)"], "{p:?}");
        let p = plan(&lab0, &res2, &vms, &nets, true).unwrap();
        assert_eq!(p.steps.iter().map(|s| (s.action, s.name.as_str())).collect::<Vec<_>>(), [(Action::Replace, "db")]);
        // The same content in a rewritten file is no change.
        let p = plan(&lab0, &resolved(), &vms, &nets, false).unwrap();
        assert!(p.is_empty());
    }

    #[test]
    fn labels_and_forwards_change_in_place_and_leftovers_go() {
        let (lab0, res) = (lab(), resolved());
        let (mut vms, nets) = made(&lab0, &res);
        vms[1].labels.insert("role".into(), "old".into());
        vms[1].forwards.push(forward("udp", 20099, 53, "general"));
        let mut stray = vms[0].clone();
        stray.name = "cache".into();
        vms.push(stray);
        let p = plan(&lab0, &res, &vms, &nets, false).unwrap();
        let order: Vec<_> = p.steps.iter().map(|s| (s.action, s.name.as_str())).collect();
        assert_eq!(order, [(Action::Delete, "cache"), (Action::Change, "web")], "{p:?}");
        let c = &p.steps[1].change;
        assert_eq!(c.forwards_remove, [("udp".to_owned(), 20099)]);
        assert_eq!(c.labels.as_ref().unwrap()["role"], "web");
        assert!(c.resize.is_none() && !c.restart);
    }

    #[test]
    fn data_disks_are_added_and_grown_in_place_and_never_shrunk_or_removed() {
        let text = crate::file::tests::EXAMPLE.replace(
            "    labels: {role: web, tier: front}\n",
            "    labels: {role: web, tier: front}\n    disks: [{name: data, size: 2G}]\n",
        );
        let lab = parse(&text, &BTreeMap::new()).unwrap();
        let res = resolved();
        let (mut vms, nets) = made(&lab, &res);
        assert!(plan(&lab, &res, &vms, &nets, false).unwrap().is_empty());
        vms[1].disks.clear();
        let p = plan(&lab, &res, &vms, &nets, false).unwrap();
        assert_eq!((p.steps[0].name.as_str(), p.steps[0].change.disks_add.len()), ("web", 1), "{p:?}");
        let disk = |size: u64| -> kvmctl_types::api::VmDisk {
            serde_json::from_value(
                serde_json::json!({"name": "data", "size_gib": size, "bus": "virtio", "target": "vdc", "state": "attached"}),
            )
            .unwrap()
        };
        vms[1].disks = vec![disk(1)];
        assert_eq!(plan(&lab, &res, &vms, &nets, false).unwrap().steps[0].change.disks_grow, [("data".to_owned(), 2)]);
        vms[1].disks = vec![disk(2)];
        assert!(plan(&lab, &res, &vms, &nets, false).unwrap().is_empty());
        vms[1].disks = vec![disk(3)];
        assert!(plan(&lab, &res, &vms, &nets, false).unwrap().needs_replace[0].contains("never shrinks"));
        let lab0 = parse(crate::file::tests::EXAMPLE, &BTreeMap::new()).unwrap();
        vms[1].disks = vec![disk(2)];
        assert!(plan(&lab0, &res, &vms, &nets, false).unwrap().needs_replace[0].contains("disk data is not in the file"));
    }

    #[test]
    fn what_another_made_is_never_taken() {
        let (lab0, res) = (lab(), resolved());
        let (mut vms, mut nets) = made(&lab0, &res);
        vms[0].labels.clear();
        nets[0].labels.clear();
        let e = plan(&lab0, &res, &vms, &nets, true).unwrap_err();
        assert!(e.contains("network web-lab-net exists and is not part of lab web-lab") && e.contains("VM db exists"), "{e}");
        // And a VM of another lab is not deleted by this one.
        let (mut vms, nets) = made(&lab0, &res);
        let mut other = vms[0].clone();
        other.name = "x".into();
        other.labels.insert(LAB_LABEL.into(), "other-lab".into());
        vms.push(other);
        assert!(plan(&lab0, &res, &vms, &nets, false).unwrap().is_empty());
    }
}
