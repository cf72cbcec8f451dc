//! The lab file: YAML with `lab` (its name), `params`, `networks` and `vms`. Unknown keys
//! are errors; every error names the line and the field. Parameters are substituted as text
//! (`${name}`) before the document is read, so a number parameter stays a number and the
//! lines of errors stay the file's own.

use kvmctl_types::Name;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// A bad lab file: where (line, when known), which field, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{field}: {message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct LabError {
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

/// A lab as the file asks for it, checked; `vms` in dependency order (a VM after the VMs it
/// depends on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lab {
    pub name: String,
    pub networks: Vec<LabNetwork>,
    pub vms: Vec<LabVm>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabNetwork {
    pub name: String,
    pub subnet: String,
    pub dhcp_range: Option<String>,
    pub isolated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabVm {
    pub name: String,
    pub image: String,
    pub plan: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u64>,
    /// As written: public key files (relative to the lab file) or keys.
    pub ssh_keys: Vec<String>,
    pub user: Option<String>,
    /// A file (relative to the lab file) holding the user-data.
    pub user_data: Option<String>,
    pub network: Option<String>,
    pub forwards: Vec<LabForward>,
    pub labels: BTreeMap<String, String>,
    pub ttl_seconds: Option<u64>,
    pub depends_on: Vec<String>,
    pub node_labels: BTreeMap<String, String>,
    pub firmware: Option<String>,
    /// Data disks, made after the VM (hot-plugged).
    pub disks: Vec<LabDisk>,
    /// Host directories shared over virtio-fs (admins; under the daemon's share_roots).
    pub shares: Vec<kvmctl_types::api::VmShare>,
    /// The VM's depth in the dependency graph: 0 depends on nothing in the lab; VMs of one
    /// level may be made together.
    pub level: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabDisk {
    /// Its name in the VM; default `diskN` for the Nth of the list.
    pub name: String,
    pub size_gib: u64,
    /// `virtio` or `scsi`.
    pub bus: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LabForward {
    /// `tcp` or `udp`.
    pub protocol: String,
    pub guest_port: u16,
    /// A fixed host port; without one the daemon picks from its pool.
    pub host_port: Option<u16>,
}

#[derive(Deserialize)]
struct ParamsOnly {
    #[serde(default)]
    params: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLab {
    lab: String,
    #[serde(default)]
    #[allow(dead_code)]
    params: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    networks: Vec<RawNetwork>,
    #[serde(default)]
    vms: Vec<RawVm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    name: String,
    subnet: String,
    #[serde(default)]
    dhcp_range: Option<String>,
    #[serde(default)]
    isolated: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Number(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: String,
    image: String,
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    cpus: Option<u32>,
    #[serde(default)]
    memory: Option<Size>,
    #[serde(default)]
    disk: Option<Size>,
    #[serde(default)]
    ssh_keys: Vec<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    user_data: Option<String>,
    #[serde(default)]
    network: Option<String>,
    #[serde(default)]
    forwards: Vec<RawForward>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    node_labels: BTreeMap<String, String>,
    #[serde(default)]
    firmware: Option<String>,
    #[serde(default)]
    disks: Vec<RawDisk>,
    #[serde(default)]
    shares: Vec<kvmctl_types::api::VmShare>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    #[serde(default)]
    name: Option<String>,
    size: Size,
    #[serde(default)]
    bus: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    guest_port: u16,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    host_port: Option<u16>,
}

/// Reads a lab file's text with parameter overrides (`--set key=value`).
pub fn parse(text: &str, overrides: &BTreeMap<String, String>) -> Result<Lab, LabError> {
    let params = params(text, overrides)?;
    let text = substitute(text, &params)?;
    let raw: RawLab = serde_yaml::from_str(&text).map_err(yaml_error)?;
    Check { text: &text }.lab(raw)
}

fn yaml_error(e: serde_yaml::Error) -> LabError {
    let message = e.to_string();
    // serde_yaml appends " at line L column C"; the line is given on its own.
    let message = message.split(" at line ").next().unwrap_or_default().to_owned();
    let field = message.split(':').next().filter(|f| !f.contains(' ') && f.contains('.')).unwrap_or("file").to_owned();
    LabError { line: e.location().map(|l| l.line()), field, message }
}

/// The parameters' values: the file's defaults, then the overrides (which must name a
/// declared parameter, so a typo is not silently ignored).
fn params(text: &str, overrides: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, LabError> {
    let declared: ParamsOnly = serde_yaml::from_str(text).map_err(yaml_error)?;
    let mut out = BTreeMap::new();
    for (k, v) in declared.params {
        let line = line_of(text, &format!("{k}:"), 1);
        let value = match v {
            serde_yaml::Value::String(s) => s,
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::Bool(b) => b.to_string(),
            _ => {
                return Err(LabError {
                    line,
                    field: format!("params.{k}"),
                    message: "a parameter's default is a string, number or boolean".into(),
                })
            }
        };
        if !param_name_ok(&k) {
            return Err(LabError { line, field: format!("params.{k}"), message: "parameter names are letters, digits and _".into() });
        }
        out.insert(k, value);
    }
    for (k, v) in overrides {
        if !out.contains_key(k) {
            let known = out.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(LabError {
                line: None,
                field: format!("--set {k}"),
                message: if known.is_empty() {
                    "the file declares no parameters (add them under params:)".into()
                } else {
                    format!("not a parameter of the file; it declares {known}")
                },
            });
        }
        out.insert(k.clone(), v.clone());
    }
    for (k, v) in &out {
        if v.contains('\n') || v.contains('\r') {
            return Err(LabError { line: None, field: format!("params.{k}"), message: "a parameter's value is one line".into() });
        }
    }
    Ok(out)
}

fn param_name_ok(k: &str) -> bool {
    !k.is_empty() && k.len() <= 64 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Replaces each `${name}` with the parameter's value; an unknown name is an error on its line.
fn substitute(text: &str, params: &BTreeMap<String, String>) -> Result<String, LabError> {
    let mut out = String::with_capacity(text.len());
    for (i, whole) in text.split_inclusive('\n').enumerate() {
        // Comments keep their `${...}` as written.
        let (line, comment) = whole.split_at(comment_start(whole));
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(LabError { line: Some(i + 1), field: "params".into(), message: "`${` without its closing `}`".into() });
            };
            let name = &after[..end];
            match params.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    return Err(LabError {
                        line: Some(i + 1),
                        field: format!("${{{name}}}"),
                        message: "not a parameter; declare it under params: with a default".into(),
                    })
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    Ok(out)
}

/// Where a YAML comment starts on the line (a `#` at its start or after a space, outside
/// quotes), else its length.
fn comment_start(line: &str) -> usize {
    let (mut single, mut double, mut prev) = (false, false, ' ');
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return i,
            _ => {}
        }
        prev = c;
    }
    line.len()
}

/// The line (1-based) of the `nth` line holding `needle` (after a list dash), if any.
fn line_of(text: &str, needle: &str, nth: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ").trim_start();
            t.starts_with(needle) || t.replace(['"', '\''], "").starts_with(needle)
        })
        .nth(nth.saturating_sub(1))
        .map(|(i, _)| i + 1)
}

struct Check<'a> {
    text: &'a str,
}

impl Check<'_> {
    /// The line of the `nth` item named `name` (`name: web`).
    fn line_of_name(&self, name: &str, nth: usize) -> Option<usize> {
        self.text
            .lines()
            .enumerate()
            .filter(|(_, l)| {
                let t = l.trim_start().trim_start_matches("- ").trim_start();
                t.strip_prefix("name:").is_some_and(|v| v.trim().trim_matches(['"', '\'']) == name)
            })
            .nth(nth.saturating_sub(1))
            .map(|(i, _)| i + 1)
    }

    fn err(&self, line: Option<usize>, field: impl Into<String>, message: impl Into<String>) -> LabError {
        LabError { line, field: field.into(), message: message.into() }
    }

    fn lab(&self, raw: RawLab) -> Result<Lab, LabError> {
        let name_line = line_of(self.text, "lab:", 1);
        let lab = Name::parse(&raw.lab).map_err(|e| self.err(name_line, "lab", e.to_string()))?.to_string();
        let mut networks = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, n) in raw.networks.into_iter().enumerate() {
            let field = format!("networks[{i}]");
            let line = self.line_of_name(&n.name, 1);
            Name::parse(&n.name).map_err(|e| self.err(line, format!("{field}.name"), e.to_string()))?;
            if !seen.insert(n.name.clone()) {
                return Err(self.err(self.line_of_name(&n.name, 2), format!("{field}.name"), format!("network {} is named twice", n.name)));
            }
            if n.subnet.trim().is_empty() {
                return Err(self.err(line, format!("{field}.subnet"), "give the subnet in CIDR form, e.g. 192.168.150.0/24"));
            }
            networks.push(LabNetwork { name: n.name, subnet: n.subnet, dhcp_range: n.dhcp_range, isolated: n.isolated });
        }
        let mut vms = Vec::new();
        let mut names = BTreeSet::new();
        for (i, v) in raw.vms.into_iter().enumerate() {
            let line = self.line_of_name(&v.name, 1);
            Name::parse(&v.name).map_err(|e| self.err(line, format!("vms[{i}].name"), e.to_string()))?;
            if !names.insert(v.name.clone()) {
                let nth = if seen.contains(&v.name) { 3 } else { 2 };
                return Err(self.err(self.line_of_name(&v.name, nth), format!("vms[{i}].name"), format!("VM {} is named twice", v.name)));
            }
            vms.push(self.vm(i, line, v)?);
        }
        for (i, v) in vms.iter().enumerate() {
            for d in &v.depends_on {
                if !names.contains(d) {
                    let line = self.text.lines().position(|l| l.contains("depends_on") && l.contains(d.as_str())).map(|n| n + 1);
                    return Err(self.err(line, format!("vms[{i}].depends_on"), format!("{d} is not a VM of this lab")));
                }
                if d == &v.name {
                    return Err(self.err(self.line_of_name(&v.name, 1), format!("vms[{i}].depends_on"), "a VM cannot depend on itself"));
                }
            }
        }
        let vms = self.ordered(vms)?;
        Ok(Lab { name: lab, networks, vms })
    }

    fn vm(&self, i: usize, line: Option<usize>, v: RawVm) -> Result<LabVm, LabError> {
        let f = |k: &str| format!("vms[{i}].{k}");
        if v.image.trim().is_empty() {
            return Err(self.err(line, f("image"), "name the image to boot (kvmctl image list)"));
        }
        let memory_mib = v.memory.map(|s| size(&s, 1, 1 << 20)).transpose().map_err(|m| self.err(line, f("memory"), m))?;
        let disk_gib = v.disk.map(|s| size(&s, 1024, 1 << 16)).transpose().map_err(|m| self.err(line, f("disk"), m))?;
        if v.plan.is_none() && (v.cpus.is_none() || memory_mib.is_none() || disk_gib.is_none()) {
            return Err(self.err(line, f("plan"), "give a plan (kvmctl plan list) or all of cpus, memory and disk"));
        }
        let mut forwards = Vec::new();
        for (j, fw) in v.forwards.into_iter().enumerate() {
            let protocol = fw.protocol.unwrap_or_else(|| "tcp".into());
            if !["tcp", "udp"].contains(&protocol.as_str()) {
                return Err(self.err(line, f(&format!("forwards[{j}].protocol")), format!("{protocol:?} is not tcp or udp")));
            }
            if fw.guest_port == 0 {
                return Err(self.err(line, f(&format!("forwards[{j}].guest_port")), "a port from 1 to 65535"));
            }
            let fw = LabForward { protocol, guest_port: fw.guest_port, host_port: fw.host_port };
            if forwards.contains(&fw) {
                return Err(self.err(line, f(&format!("forwards[{j}]")), "forwarded twice"));
            }
            forwards.push(fw);
        }
        for (k, val) in &v.labels {
            if k.starts_with("kvmctl.") {
                return Err(self.err(line, f(&format!("labels.{k}")), "keys starting with kvmctl. are kvmctl's own"));
            }
            let ok = |s: &str| !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok(k) || !ok(val) {
                return Err(self.err(line, f(&format!("labels.{k}")), "keys and values are 1 to 63 of A-Z a-z 0-9 . _ -"));
            }
        }
        if v.labels.len() > 28 {
            return Err(self.err(line, f("labels"), "at most 28 labels (kvmctl keeps 4 for the lab)"));
        }
        let ttl_seconds = v.ttl.as_deref().map(duration).transpose().map_err(|m| self.err(line, f("ttl"), m))?;
        let mut disks: Vec<LabDisk> = Vec::new();
        for (j, d) in v.disks.into_iter().enumerate() {
            let field = f(&format!("disks[{j}]"));
            let name = d.name.unwrap_or_else(|| format!("disk{}", j + 1));
            let ok = name.len() <= 16
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !ok {
                return Err(self.err(line, format!("{field}.name"), "1-16 lower-case letters and digits, starting with a letter"));
            }
            if disks.iter().any(|x| x.name == name) {
                return Err(self.err(line, format!("{field}.name"), format!("disk {name} is named twice")));
            }
            let size_gib = size(&d.size, 1024, 1 << 16).map_err(|m| self.err(line, format!("{field}.size"), m))?;
            let bus = d.bus.unwrap_or_else(|| "virtio".into());
            if !["virtio", "scsi"].contains(&bus.as_str()) {
                return Err(self.err(line, format!("{field}.bus"), format!("{bus:?} is not virtio or scsi")));
            }
            disks.push(LabDisk { name, size_gib, bus });
        }
        Ok(LabVm {
            name: v.name,
            image: v.image,
            plan: v.plan,
            vcpus: v.cpus,
            memory_mib,
            disk_gib,
            ssh_keys: v.ssh_keys,
            user: v.user,
            user_data: v.user_data,
            network: v.network,
            forwards,
            labels: v.labels,
            ttl_seconds,
            depends_on: v.depends_on,
            node_labels: v.node_labels,
            firmware: v.firmware,
            disks,
            shares: v.shares,
            level: 0,
        })
    }

    /// Orders the VMs so each comes after those it depends on (file order otherwise), with
    /// its level; a cycle is an error naming it.
    fn ordered(&self, vms: Vec<LabVm>) -> Result<Vec<LabVm>, LabError> {
        let mut level: BTreeMap<String, usize> = BTreeMap::new();
        let mut out = Vec::new();
        let mut left = vms;
        while !left.is_empty() {
            let (ready, blocked): (Vec<_>, Vec<_>) = left.into_iter().partition(|v| v.depends_on.iter().all(|d| level.contains_key(d)));
            if ready.is_empty() {
                let cycle = blocked.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ");
                let first = &blocked[0].name;
                return Err(self.err(
                    self.line_of_name(first, 1),
                    "depends_on",
                    format!("a dependency cycle between {cycle}; remove one depends_on"),
                ));
            }
            for mut v in ready {
                v.level = v.depends_on.iter().map(|d| level[d] + 1).max().unwrap_or(0);
                level.insert(v.name.clone(), v.level);
                out.push(v);
            }
            left = blocked;
        }
        Ok(out)
    }
}

/// A size in MiB: a number in the field's unit (`unit_mib` MiB) or text with M, G or T;
/// given back in units of `unit_mib`, which it must be a whole number of.
fn size(s: &Size, unit_mib: u64, max: u64) -> Result<u64, String> {
    let mib = match s {
        Size::Number(n) => n.checked_mul(unit_mib).ok_or("too large")?,
        Size::Text(t) => {
            let t = t.trim();
            let (num, suffix) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
            let n: u64 = num.parse().map_err(|_| format!("{t:?} is not a size such as 512M or 2G"))?;
            let mult = match suffix.trim_end_matches(['i', 'B']) {
                "" => unit_mib,
                "M" => 1,
                "G" => 1024,
                "T" => 1024 * 1024,
                _ => return Err(format!("{t:?}: end the size with M, G or T")),
            };
            n.checked_mul(mult).ok_or("too large")?
        }
    };
    if mib % unit_mib != 0 {
        return Err(format!("{mib} MiB is not a whole number of {} MiB", unit_mib));
    }
    let n = mib / unit_mib;
    if n == 0 || n > max {
        return Err(format!("{n} is out of range"));
    }
    Ok(n)
}

/// `90s`, `30m`, `2h`, `7d`.
fn duration(s: &str) -> Result<u64, String> {
    kvmctl_types::parse_duration(s).map(|n| n as u64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = include_str!("../../../docs/examples/web-lab.yaml");

    fn no_set() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn the_example_lab_reads_in_dependency_order() {
        let lab = parse(EXAMPLE, &no_set()).unwrap();
        assert_eq!(lab.name, "web-lab");
        assert_eq!(lab.networks.len(), 1);
        let names: Vec<_> = lab.vms.iter().map(|v| (v.name.as_str(), v.level)).collect();
        assert_eq!(names, [("db", 0), ("web", 1)], "db first: web depends on it");
        let web = &lab.vms[1];
        assert_eq!(web.forwards, [LabForward { protocol: "tcp".into(), guest_port: 80, host_port: None }]);
        assert_eq!(web.labels["role"], "web");
    }

    #[test]
    fn parameters_take_defaults_and_overrides_and_keep_types() {
        let text = "lab: p\nparams:\n  cpus: 1\n  img: debian-12\nvms:\n  - name: a\n    image: ${img}\n    cpus: ${cpus}\n    memory: 512M\n    disk: 3\n";
        let lab = parse(text, &no_set()).unwrap();
        assert_eq!((lab.vms[0].vcpus, lab.vms[0].memory_mib, lab.vms[0].disk_gib), (Some(1), Some(512), Some(3)));
        let lab = parse(text, &BTreeMap::from([("cpus".into(), "2".into())])).unwrap();
        assert_eq!(lab.vms[0].vcpus, Some(2));
        let e = parse(text, &BTreeMap::from([("cpu".into(), "2".into())])).unwrap_err();
        assert!(e.message.contains("declares cpus, img"), "{e}");
        let e = parse(&text.replace("${img}", "${image}"), &no_set()).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(7), "${image}"), "{e}");
    }

    #[test]
    fn damaged_files_name_the_line() {
        let cases: [(&str, Option<usize>, &str); 7] = [
            ("lab: x\nvms:\n  - name: a\n    image: i\n    plan: small\n    colour: red\n", Some(6), "unknown field `colour`"),
            ("lab: x\nvms:\n  - name: a\n   image: i\n", Some(4), ""),
            ("lab: x\nvms:\n  - name: a\n    image: i\n    plan: s\n  - name: a\n    image: i\n    plan: s\n", Some(6), "named twice"),
            (
                "lab: x\nvms:\n  - name: a\n    image: i\n    plan: s\n    depends_on: [b]\n  - name: b\n    image: i\n    plan: s\n    depends_on: [a]\n",
                Some(3),
                "cycle between a, b",
            ),
            ("lab: x\nvms:\n  - name: a\n    image: i\n    plan: s\n    depends_on: [zz]\n", Some(6), "zz is not a VM"),
            ("lab: x\nvms:\n  - name: a\n    image: i\n    cpus: 1\n", Some(3), "give a plan"),
            ("lab: x\nvms:\n  - name: a\n    image: i\n    plan: s\n    labels: {kvmctl.lab: y}\n", Some(3), "kvmctl's own"),
        ];
        for (text, line, msg) in cases {
            let e = parse(text, &no_set()).unwrap_err();
            assert_eq!(e.line, line, "{text}\n{e}");
            assert!(e.to_string().contains(msg), "{e}");
        }
    }

    #[test]
    fn disks_take_default_names_and_shares_read_as_the_api_has_them() {
        let text = "lab: d\nvms:\n  - name: a\n    image: i\n    plan: s\n    disks: [{size: 2G}, {name: logs, size: 1, bus: scsi}]\n    shares: [{source: /srv/src, tag: src, readonly: true}]\n";
        let lab = parse(text, &no_set()).unwrap();
        let names: Vec<_> = lab.vms[0].disks.iter().map(|d| (d.name.as_str(), d.size_gib, d.bus.as_str())).collect();
        assert_eq!(names, [("disk1", 2, "virtio"), ("logs", 1, "scsi")]);
        assert_eq!((lab.vms[0].shares[0].tag.as_str(), lab.vms[0].shares[0].readonly), ("src", true));
        let e = parse(&text.replace("bus: scsi", "bus: ide"), &no_set()).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(3), "vms[0].disks[1].bus"), "{e}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(size(&Size::Text("2G".into()), 1, 1 << 20), Ok(2048));
        assert_eq!(size(&Size::Text("20G".into()), 1024, 1 << 16), Ok(20));
        assert!(size(&Size::Text("1500M".into()), 1024, 1 << 16).is_err());
        assert_eq!(size(&Size::Number(512), 1, 1 << 20), Ok(512));
        assert_eq!(size(&Size::Number(5), 1024, 1 << 16), Ok(5));
        assert_eq!(duration("2h"), Ok(7200));
        assert!(duration("2x").is_err());
    }
}
