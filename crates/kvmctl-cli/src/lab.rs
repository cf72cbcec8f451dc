//! `kvmctl apply -f`, `kvmctl delete -f` and `kvmctl inventory`: labs as code through the
//! API. The plan comes from `kvmctl-lab`; this module reads the files a lab names, shows the
//! plan and runs its steps. Nothing changes when the file is bad, when something of the
//! file belongs to another, or when a field that cannot change in place changed without
//! `--replace`.

use crate::output::OutputFormat;
use crate::vm::{wait_for, with_vm_progress};
use kvmctl_client::Client;
use kvmctl_lab::plan::{Resolved, Target};
use kvmctl_lab::{Action, Lab, LabVm, Plan, LAB_LABEL};
use kvmctl_types::api::{ForwardCreateRequest, NetworkCreateRequest, Vm, VmCreateRequest, VmLabelsRequest, VmStopRequest};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The lab file and its parameters, as `apply` and `delete` take them.
#[derive(clap::Args, Debug)]
pub struct LabFileArgs {
    /// The lab file (docs/examples/web-lab.yaml shows the format).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Set a parameter of the file, KEY=VALUE (repeat).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = crate::node::parse_label)]
    pub set: Vec<(String, String)>,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub lab: LabFileArgs,
    /// Show the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete and make again the VMs whose changes cannot be made in place (image, keys,
    /// user-data, user, network, TTL, a smaller disk). Their disks are lost.
    #[arg(long)]
    pub replace: bool,
    /// Before a VM's dependents are made, and before returning, wait for each VM it made
    /// to reach this readiness stage: running, ssh or cloud-init.
    #[arg(long, value_name = "STAGE", default_value = "running")]
    pub wait: String,
    /// Seconds each wait may take.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// Deletes the VMs and networks carrying the file's kvmctl.lab label.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub lab: LabFileArgs,
    /// Show what would be deleted and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(clap::Args, Debug)]
pub struct InventoryArgs {
    /// Print every host and group (Ansible's dynamic-inventory protocol).
    #[arg(long, conflicts_with = "host")]
    pub list: bool,
    /// Print one host's variables.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Only the VMs of this lab (`kvmctl.lab` label).
    #[arg(long, value_name = "LAB")]
    pub lab: Option<String>,
    /// Reach the hosts at their own addresses instead of their SSH forwards on the daemon's
    /// host (when this machine routes to the VMs' networks).
    #[arg(long)]
    pub direct: bool,
    /// The private key Ansible logs in with [default: the first of ~/.ssh/id_ed25519,
    /// id_ecdsa, id_rsa whose .pub exists, the key `vm create` gives by default].
    #[arg(long, value_name = "FILE")]
    pub private_key: Option<PathBuf>,
}

/// A step as printed with `-o json`.
#[derive(Serialize)]
struct StepOut<'a> {
    action: &'static str,
    kind: &'static str,
    name: &'a str,
    details: &'a [String],
}

#[derive(Serialize)]
struct PlanOut<'a> {
    lab: &'a str,
    steps: Vec<StepOut<'a>>,
    needs_replace: &'a [String],
    applied: bool,
}

fn read_lab(file: &Path, set: &[(String, String)]) -> anyhow::Result<Lab> {
    let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("cannot read the lab file {}: {e}", file.display()))?;
    let overrides: BTreeMap<String, String> = set.iter().cloned().collect();
    kvmctl_lab::parse(&text, &overrides).map_err(|e| match e.line {
        Some(l) => anyhow::anyhow!("{}:{l}: {}: {}", file.display(), e.field, e.message),
        None => anyhow::anyhow!("{}: {}: {}", file.display(), e.field, e.message),
    })
}

/// A path of the lab file: `~/` is the home directory; relative paths are the file's
/// directory's.
fn lab_path(file: &Path, p: &str) -> PathBuf {
    if let (Some(rest), Some(home)) = (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        return PathBuf::from(home).join(rest);
    }
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        file.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// Reads the keys and user-data each VM names.
fn resolve(file: &Path, lab: &Lab) -> anyhow::Result<BTreeMap<String, Resolved>> {
    let mut out = BTreeMap::new();
    for v in &lab.vms {
        let mut keys = Vec::new();
        let entries: Vec<String> = if v.ssh_keys.is_empty() {
            crate::vm::default_keys().iter().map(|p| p.display().to_string()).collect()
        } else {
            v.ssh_keys.clone()
        };
        for k in &entries {
            if ["ssh-", "ecdsa-", "sk-"].iter().any(|p| k.starts_with(p)) {
                keys.push(k.trim().to_owned());
                continue;
            }
            let path = lab_path(file, k);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("{}: VM {}: ssh_keys: cannot read {}: {e}", file.display(), v.name, path.display()))?;
            keys.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned));
        }
        let user_data =
            match &v.user_data {
                Some(p) => {
                    let path = lab_path(file, p);
                    Some(std::fs::read_to_string(&path).map_err(|e| {
                        anyhow::anyhow!("{}: VM {}: user_data: cannot read {}: {e}", file.display(), v.name, path.display())
                    })?)
                }
                None => None,
            };
        out.insert(v.name.clone(), Resolved { ssh_keys: keys, user_data });
    }
    Ok(out)
}

fn print_plan(lab: &Lab, plan: &Plan, format: OutputFormat, applied: bool) -> anyhow::Result<()> {
    if format != OutputFormat::Table {
        let out = PlanOut {
            lab: &lab.name,
            steps: plan
                .steps
                .iter()
                .map(|s| StepOut { action: s.action.as_str(), kind: s.kind, name: &s.name, details: &s.details })
                .collect(),
            needs_replace: &plan.needs_replace,
            applied,
        };
        let text = if format == OutputFormat::Json { serde_json::to_string_pretty(&out)? + "\n" } else { serde_yaml::to_string(&out)? };
        print!("{text}");
        return Ok(());
    }
    if plan.steps.is_empty() && plan.needs_replace.is_empty() {
        println!("lab {}: no changes", lab.name);
        return Ok(());
    }
    for s in &plan.steps {
        println!("{:>3} {} {}", s.action.sign(), s.kind, s.name);
        for d in &s.details {
            println!("      {d}");
        }
    }
    let count = |a: Action| plan.steps.iter().filter(|s| s.action == a).count();
    println!(
        "lab {}: {} to create, {} to change, {} to replace, {} to delete",
        lab.name,
        count(Action::Create),
        count(Action::Change),
        count(Action::Replace),
        count(Action::Delete)
    );
    Ok(())
}

pub async fn apply(client: &Client, args: ApplyArgs, format: OutputFormat) -> anyhow::Result<ExitCode> {
    if !["running", "ssh", "cloud-init"].contains(&args.wait.as_str()) {
        anyhow::bail!("--wait {:?}: use running, ssh or cloud-init", args.wait);
    }
    let lab = read_lab(&args.lab.file, &args.lab.set)?;
    let resolved = resolve(&args.lab.file, &lab)?;
    let (mut vms, networks) = (client.vm_list().await?, client.network_list().await?);
    // The list leaves out disks and shares: the lab's VMs are read whole.
    let full = vms.iter().filter(|v| v.labels.get(LAB_LABEL) == Some(&lab.name)).map(|v| client.vm_get(&v.name));
    for got in futures_util::future::join_all(full).await {
        let got = got?;
        if let Some(v) = vms.iter_mut().find(|v| v.name == got.name) {
            *v = got;
        }
    }
    let plan = kvmctl_lab::plan(&lab, &resolved, &vms, &networks, args.replace).map_err(|e| anyhow::anyhow!("{e}\nnothing was changed"))?;
    if !plan.needs_replace.is_empty() && !args.replace {
        print_plan(&lab, &plan, format, false)?;
        anyhow::bail!(
            "these cannot change in place:\n  {}\napply with --replace to delete and make them again (their disks are lost); nothing was changed",
            plan.needs_replace.join("\n  ")
        );
    }
    // A table shows the plan before the work; JSON and YAML say afterwards whether it was
    // applied (a failure prints no document, only the error).
    let nothing = args.dry_run || plan.is_empty();
    if format == OutputFormat::Table || nothing {
        print_plan(&lab, &plan, format, false)?;
    }
    if nothing {
        return Ok(ExitCode::SUCCESS);
    }
    run_plan(client, &lab, &resolved, &plan, &args).await?;
    if format == OutputFormat::Table {
        println!("lab {}: applied", lab.name);
    } else {
        print_plan(&lab, &plan, format, true)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_plan(client: &Client, lab: &Lab, resolved: &BTreeMap<String, Resolved>, plan: &Plan, args: &ApplyArgs) -> anyhow::Result<()> {
    let steps = |action: Action, kind: &'static str| plan.steps.iter().filter(move |s| s.action == action && s.kind == kind);
    for s in steps(Action::Delete, "vm") {
        vm_remove(client, &s.name, "").await?;
    }
    for s in steps(Action::Create, "network") {
        if let Target::Network(n) = &s.target {
            let mut labels = BTreeMap::new();
            labels.insert(LAB_LABEL.to_owned(), lab.name.clone());
            let req = NetworkCreateRequest {
                name: n.name.clone(),
                subnet: n.subnet.clone(),
                dhcp_range: n.dhcp_range.clone(),
                isolated: n.isolated,
                labels,
            };
            client.network_create(&req).await.map_err(|e| anyhow::anyhow!("network {}: {e}", n.name))?;
            eprintln!("network {} created", n.name);
        }
    }
    for s in steps(Action::Replace, "vm") {
        vm_remove(client, &s.name, " to replace it").await?;
    }
    // Made level by level: the VMs of one level together, each level once the one before
    // reached --wait.
    let made: Vec<(&LabVm, &BTreeMap<String, String>)> = plan
        .steps
        .iter()
        .filter(|s| s.kind == "vm" && matches!(s.action, Action::Create | Action::Replace))
        .filter_map(|s| match &s.target {
            Target::Vm(v, labels) => Some((v.as_ref(), labels)),
            _ => None,
        })
        .collect();
    let levels = made.iter().map(|(v, _)| v.level).max().map_or(0, |l| l + 1);
    for level in 0..levels {
        let batch: Vec<_> = made.iter().filter(|(v, _)| v.level == level).collect();
        let creates = batch.iter().map(|(v, labels)| vm_make(client, v, labels, &resolved[&v.name], args));
        for r in futures_util::future::join_all(creates).await {
            r?;
        }
    }
    for s in steps(Action::Change, "vm") {
        vm_change(client, s, args).await?;
    }
    for s in steps(Action::Delete, "network") {
        client.network_delete(&s.name).await.map_err(|e| anyhow::anyhow!("network {}: {e}", s.name))?;
        eprintln!("network {} deleted", s.name);
    }
    Ok(())
}

async fn vm_make(client: &Client, v: &LabVm, labels: &BTreeMap<String, String>, res: &Resolved, args: &ApplyArgs) -> anyhow::Result<Vm> {
    let req = VmCreateRequest {
        name: v.name.clone(),
        image: v.image.clone(),
        plan: v.plan.clone(),
        vcpus: v.vcpus,
        memory_mib: v.memory_mib,
        disk_gib: v.disk_gib,
        ssh_keys: res.ssh_keys.clone(),
        user: v.user.clone(),
        user_data: res.user_data.clone(),
        network: v.network.clone(),
        firmware: v.firmware.clone(),
        node_labels: v.node_labels.clone(),
        labels: labels.clone(),
        ttl_seconds: v.ttl_seconds,
        shares: v.shares.clone(),
        ..Default::default()
    };
    let name = &v.name;
    with_vm_progress(client, name, &format!("creating VM {name}"), &format!("VM {name} created"), client.vm_create(&req)).await?;
    for f in &v.forwards {
        forward_add(client, name, f).await?;
    }
    for d in &v.disks {
        disk_add(client, name, d).await?;
    }
    wait_for(client, name, &args.wait, args.timeout).await
}

async fn forward_add(client: &Client, vm: &str, f: &kvmctl_lab::file::LabForward) -> anyhow::Result<()> {
    let req = ForwardCreateRequest { guest_port: f.guest_port, host_port: f.host_port, protocol: Some(f.protocol.clone()), pool: None };
    let fw = client.forward_create(vm, &req).await.map_err(|e| anyhow::anyhow!("VM {vm}: forward {} {}: {e}", f.protocol, f.guest_port))?;
    eprintln!("VM {vm}: forward {} {} -> {}", fw.protocol, fw.host_port, fw.guest_port);
    Ok(())
}

/// Deletes a VM behind a progress line (`why` says what for).
async fn vm_remove(client: &Client, name: &str, why: &str) -> anyhow::Result<()> {
    with_vm_progress(client, name, &format!("deleting VM {name}{why}"), &format!("VM {name} deleted"), client.vm_delete(name, false)).await
}

async fn disk_add(client: &Client, vm: &str, d: &kvmctl_lab::file::LabDisk) -> anyhow::Result<()> {
    let req =
        kvmctl_types::api::VmDiskAddRequest { name: Some(d.name.clone()), size_gib: d.size_gib, bus: Some(d.bus.clone()), pool: None };
    client.disk_add(vm, &req).await.map_err(|e| anyhow::anyhow!("VM {vm}: disk {}: {e}", d.name))?;
    eprintln!("VM {vm}: disk {} ({} GiB) added", d.name, d.size_gib);
    Ok(())
}

async fn vm_change(client: &Client, s: &kvmctl_lab::Step, args: &ApplyArgs) -> anyhow::Result<()> {
    let name = &s.name;
    let c = &s.change;
    if let Some(labels) = &c.labels {
        client.vm_labels_set(name, &VmLabelsRequest { labels: labels.clone() }).await?;
    }
    for (protocol, port) in &c.forwards_remove {
        client.forward_delete(name, protocol, *port).await?;
    }
    for f in &c.forwards_add {
        forward_add(client, name, f).await?;
    }
    for d in &c.disks_add {
        disk_add(client, name, d).await?;
    }
    for (disk, size_gib) in &c.disks_grow {
        client
            .disk_resize(name, disk, &kvmctl_types::api::VmDiskResizeRequest { size_gib: *size_gib })
            .await
            .map_err(|e| anyhow::anyhow!("VM {name}: disk {disk}: {e}"))?;
    }
    if let Some(resize) = &c.resize {
        if c.restart {
            with_vm_progress(
                client,
                name,
                &format!("stopping VM {name}"),
                &format!("VM {name} stopped"),
                client.vm_stop(name, &VmStopRequest::default()),
            )
            .await?;
        }
        client.vm_resize(name, resize).await.map_err(|e| anyhow::anyhow!("VM {name}: resize: {e}"))?;
        if c.restart {
            with_vm_progress(client, name, &format!("starting VM {name}"), &format!("VM {name} started"), client.vm_start(name)).await?;
            wait_for(client, name, &args.wait, args.timeout).await?;
        }
    }
    eprintln!("VM {name} changed");
    Ok(())
}

pub async fn delete(client: &Client, args: DeleteArgs, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let lab = read_lab(&args.lab.file, &args.lab.set)?;
    let ours = |l: &BTreeMap<String, String>| l.get(LAB_LABEL) == Some(&lab.name);
    let vms: Vec<String> = client.vm_list().await?.into_iter().filter(|v| ours(&v.labels)).map(|v| v.name).collect();
    let nets: Vec<String> = client.network_list().await?.into_iter().filter(|n| ours(&n.labels)).map(|n| n.name).collect();
    let mut plan = Plan::default();
    for (kind, names) in [("vm", &vms), ("network", &nets)] {
        for n in names {
            plan.steps.push(kvmctl_lab::Step {
                action: Action::Delete,
                kind,
                name: n.clone(),
                details: vec![],
                target: Target::Gone,
                change: Default::default(),
            });
        }
    }
    let nothing = args.dry_run || plan.is_empty();
    if format == OutputFormat::Table || nothing {
        print_plan(&lab, &plan, format, false)?;
    }
    if nothing {
        return Ok(ExitCode::SUCCESS);
    }
    let deletes = vms.iter().map(|n| vm_remove(client, n, ""));
    let mut failed = None;
    for r in futures_util::future::join_all(deletes).await {
        if let Err(e) = r {
            failed.get_or_insert(e);
        }
    }
    if let Some(e) = failed {
        return Err(e.context("some VMs of the lab could not be deleted; run kvmctl delete -f again"));
    }
    for n in &nets {
        client.network_delete(n).await.map_err(|e| anyhow::anyhow!("network {n}: {e}"))?;
        eprintln!("network {n} deleted");
    }
    if format == OutputFormat::Table {
        println!("lab {}: deleted", lab.name);
    } else {
        print_plan(&lab, &plan, format, true)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The Ansible dynamic inventory: hosts with how to reach them, grouped by label, plan,
/// image and node. Group names are Ansible-safe (letters, digits, _).
pub async fn inventory(client: &Client, args: InventoryArgs, url: Option<&str>) -> anyhow::Result<ExitCode> {
    if !args.list && args.host.is_none() {
        anyhow::bail!("give --list or --host NAME (the protocol ansible-inventory speaks)");
    }
    let mut vms = client.vm_list().await?;
    if let Some(lab) = &args.lab {
        vms.retain(|v| v.labels.get(LAB_LABEL) == Some(lab));
    }
    let daemon_host = url
        .and_then(|u| u.split_once("://").map(|(_, r)| r))
        .map(|r| {
            let hostport = r.split('/').next().unwrap_or_default();
            match hostport.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or_default().to_owned(),
                None => hostport.rsplit_once(':').map(|(h, _)| h).unwrap_or(hostport).to_owned(),
            }
        })
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    let key = args.private_key.clone().or_else(|| crate::vm::default_keys().first().map(|p| p.with_extension("")));
    let hostvars = |v: &Vm| -> serde_json::Value {
        let ssh = v.forwards.iter().find(|f| f.guest_port == 22 && f.protocol == "tcp");
        let mut h = serde_json::Map::new();
        match (args.direct, ssh, &v.ip) {
            (false, Some(f), _) => {
                h.insert("ansible_host".into(), daemon_host.clone().into());
                h.insert("ansible_port".into(), f.host_port.into());
            }
            (_, _, Some(ip)) => {
                h.insert("ansible_host".into(), ip.clone().into());
            }
            _ => {}
        }
        h.insert("ansible_user".into(), v.ssh_user.clone().into());
        if let Some(k) = &key {
            h.insert("ansible_ssh_private_key_file".into(), k.display().to_string().into());
        }
        h.insert("kvmctl_state".into(), v.state.clone().into());
        h.insert("kvmctl_ip".into(), v.ip.clone().into());
        h.insert("kvmctl_labels".into(), serde_json::to_value(&v.labels).unwrap_or_default());
        serde_json::Value::Object(h)
    };
    let out = if let Some(name) = &args.host {
        match vms.iter().find(|v| &v.name == name) {
            Some(v) => hostvars(v),
            None => serde_json::json!({}),
        }
    } else {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for v in &vms {
            for (k, val) in v.labels.iter().filter(|(k, _)| !k.starts_with("kvmctl.lab.")) {
                groups.entry(group_name(&format!("label_{k}_{val}"))).or_default().push(v.name.clone());
            }
            if let Some(p) = &v.plan {
                groups.entry(group_name(&format!("plan_{p}"))).or_default().push(v.name.clone());
            }
            groups.entry(group_name(&format!("image_{}", v.image))).or_default().push(v.name.clone());
            groups.entry(group_name(&format!("node_{}", v.node))).or_default().push(v.name.clone());
        }
        let mut root = serde_json::Map::new();
        let hv: serde_json::Map<String, serde_json::Value> = vms.iter().map(|v| (v.name.clone(), hostvars(v))).collect();
        root.insert("_meta".into(), serde_json::json!({ "hostvars": hv }));
        root.insert(
            "all".into(),
            serde_json::json!({ "hosts": vms.iter().map(|v| v.name.clone()).collect::<Vec<_>>(), "children": groups.keys().collect::<Vec<_>>() }),
        );
        for (g, hosts) in groups {
            root.insert(g, serde_json::json!({ "hosts": hosts }));
        }
        serde_json::Value::Object(root)
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// An Ansible group name: letters, digits and `_`.
fn group_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_ansible_safe() {
        assert_eq!(group_name("label_kvmctl.lab_web-lab"), "label_kvmctl_lab_web_lab");
        assert_eq!(group_name("image_debian-12"), "image_debian_12");
    }

    #[test]
    fn lab_paths_are_the_files_or_home() {
        let f = Path::new("/srv/labs/web.yaml");
        assert_eq!(lab_path(f, "db.yaml"), PathBuf::from("/srv/labs/db.yaml"));
        assert_eq!(lab_path(f, "/etc/k.pub"), PathBuf::from("/etc/k.pub"));
    }
}
