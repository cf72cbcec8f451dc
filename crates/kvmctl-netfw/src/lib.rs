//! `kvmctl-netfw`: port pools and port forwards in nftables.
//!
//! Everything kvmctl does to a node's firewall lives in one nftables table of its own
//! (`inet kvmctl`); nothing outside it is read or written. The table is a pure function of a
//! set of [`VmRules`] (one per running VM that has forwards or needs masquerading), and it
//! carries that set itself: every rule's comment names its VM and the facts it was made
//! from, so the set can be read back from the kernel ([`table_read`]) without any other
//! state. Changing one VM's rules is therefore: lock, read the set, replace that VM's
//! entry, and write the whole table again in one nftables transaction ([`vm_apply`],
//! [`vm_remove`]). That is atomic (the kernel swaps the table in one commit), idempotent
//! (the same set gives the same table) and safe from any process on the node: the libvirt
//! hook, the daemon and the reconciler all go through the same lock.
//!
//! Rules, per forward `proto host_port -> guest_ip:guest_port`:
//! - `prerouting` (nat, dstnat): traffic to any local address of the host on `host_port`
//!   is DNATed to the guest;
//! - `output` (nat): the same for connections the host makes itself (`ssh -p 2201 localhost`);
//! - `postrouting` (nat, srcnat): connections from loopback are masqueraded, since a
//!   `127.0.0.1` source cannot leave the host (the bridge also needs `route_localnet`, see
//!   [`bridge_allow_loopback`]); a guard chain drops `127.0.0.0/8` arriving on any other
//!   interface, which `route_localnet` would otherwise let in.
//!
//! Per VM on a kvmctl-managed NAT network (libvirt route mode, ADR 0005): its outgoing
//! traffic leaving the subnet is masqueraded, and new connections to it from outside its
//! bridge are dropped unless they came through a forward.

use nftables::expr::{Expression, Fib, FibFlag, FibResult, NamedExpression, Payload, PayloadField, Prefix, CT};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::Path;

pub mod hook;
pub mod pool;

/// The name of kvmctl's table (family `inet`).
pub const TABLE: &str = "kvmctl";

#[derive(Debug, thiserror::Error)]
pub enum FwError {
    #[error("nft failed: {message}")]
    Nft { message: String },
    #[error("nft printed JSON that kvmctl cannot read")]
    Json(#[source] serde_json::Error),
    #[error("cannot take the firewall lock {path}")]
    Lock {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set route_localnet on {bridge}")]
    RouteLocalnet {
        bridge: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

/// One forward: `protocol host_port` on the host to `guest_port` on the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Forward {
    pub protocol: Protocol,
    pub host_port: u16,
    pub guest_port: u16,
}

/// Everything one VM needs in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRules {
    /// The VM's id (its domain's UUID), without dashes or with.
    pub vm: String,
    pub guest_ip: Ipv4Addr,
    /// The host bridge the VM is attached to.
    pub bridge: String,
    /// On a kvmctl-managed NAT network: the subnet, whose outgoing traffic kvmctl masquerades.
    pub nat_subnet: Option<(Ipv4Addr, u8)>,
    pub forwards: Vec<Forward>,
}

impl VmRules {
    /// A VM's rules from what its domain metadata records: forwards as (protocol, host port,
    /// guest port); a forward of an unknown protocol is left out.
    pub fn of<'a>(
        vm: &str,
        guest_ip: Ipv4Addr,
        bridge: &str,
        nat_subnet: Option<(Ipv4Addr, u8)>,
        forwards: impl IntoIterator<Item = (&'a str, u16, u16)>,
    ) -> VmRules {
        VmRules {
            vm: vm.to_owned(),
            guest_ip,
            bridge: bridge.to_owned(),
            nat_subnet,
            forwards: forwards
                .into_iter()
                .filter_map(|(p, host_port, guest_port)| Some(Forward { protocol: Protocol::parse(p)?, host_port, guest_port }))
                .collect(),
        }
    }

    /// The key a VM is known by in the table: its id in lower-case hex without dashes.
    pub fn key(&self) -> String {
        vm_key(&self.vm)
    }

    /// Whether the VM needs any rule at all.
    pub fn is_empty(&self) -> bool {
        self.forwards.is_empty() && self.nat_subnet.is_none()
    }

    /// The same rules in a canonical order, for comparison.
    pub fn normalized(&self) -> VmRules {
        let mut forwards = self.forwards.clone();
        forwards.sort();
        forwards.dedup();
        VmRules { vm: self.key(), forwards, ..self.clone() }
    }
}

pub fn vm_key(id: &str) -> String {
    id.chars().filter(|c| *c != '-').collect::<String>().to_ascii_lowercase()
}

/// The facts behind a rule, as its comment: `vm=<id> ip=<ip> br=<bridge> [nat=<subnet>]
/// [fwd=<proto>:<host>:<guest>]`; at most 128 bytes, nftables' limit.
fn comment(v: &VmRules, fwd: Option<&Forward>) -> String {
    let mut c = format!("vm={} ip={} br={}", v.key(), v.guest_ip, v.bridge);
    if let Some((net, len)) = v.nat_subnet {
        c.push_str(&format!(" nat={net}/{len}"));
    }
    if let Some(f) = fwd {
        c.push_str(&format!(" fwd={}:{}:{}", f.protocol.as_str(), f.host_port, f.guest_port));
    }
    c
}

/// Reads back what a comment says; `None` for comments kvmctl did not write.
fn comment_parse(c: &str) -> Option<(VmRules, Option<Forward>)> {
    let mut v = VmRules { vm: String::new(), guest_ip: Ipv4Addr::UNSPECIFIED, bridge: String::new(), nat_subnet: None, forwards: vec![] };
    let mut fwd = None;
    for word in c.split_whitespace() {
        let (k, val) = word.split_once('=')?;
        match k {
            "vm" => v.vm = val.to_owned(),
            "ip" => v.guest_ip = val.parse().ok()?,
            "br" => v.bridge = val.to_owned(),
            "nat" => {
                let (a, l) = val.split_once('/')?;
                v.nat_subnet = Some((a.parse().ok()?, l.parse().ok()?));
            }
            "fwd" => {
                let mut p = val.split(':');
                fwd = Some(Forward {
                    protocol: Protocol::parse(p.next()?)?,
                    host_port: p.next()?.parse().ok()?,
                    guest_port: p.next()?.parse().ok()?,
                });
            }
            _ => return None,
        }
    }
    (!v.vm.is_empty() && !v.bridge.is_empty()).then_some((v, fwd))
}

/// Bridge and interface names are at most 15 bytes of printable ASCII without spaces.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty() && name.len() <= 15 && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b'=' && b != b':')
}

fn field<'a>(protocol: &'a str, f: &'a str) -> Expression<'a> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField { protocol: protocol.into(), field: f.into() })))
}

fn matches<'a>(left: Expression<'a>, op: Operator, right: Expression<'a>) -> Statement<'a> {
    Statement::Match(Match { left, right, op })
}

fn eq<'a>(left: Expression<'a>, right: Expression<'a>) -> Statement<'a> {
    matches(left, Operator::EQ, right)
}

fn s(v: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(v.into()))
}

fn prefix(addr: Ipv4Addr, len: u8) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix { addr: Box::new(s(addr.to_string())), len: len as u32 }))
}

fn meta_iifname() -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(nftables::expr::Meta { key: nftables::expr::MetaKey::Iifname }))
}

fn meta_oifname() -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(nftables::expr::Meta { key: nftables::expr::MetaKey::Oifname }))
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT { key: key.into(), family: None, dir: None }))
}

fn fib_daddr_local() -> Statement<'static> {
    let mut flags = HashSet::new();
    flags.insert(FibFlag::Daddr);
    eq(Expression::Named(NamedExpression::Fib(Fib { result: FibResult::Type, flags })), s("local"))
}

fn chain(name: &'static str, kind: NfChainType, hook: NfHook, prio: i32) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.into(),
        _type: Some(kind),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    })))
}

fn rule(table: &str, chain: &'static str, expr: Vec<Statement<'static>>, comment: String) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: Cow::Owned(table.to_owned()),
        chain: chain.into(),
        expr: Cow::Owned(expr),
        comment: Some(Cow::Owned(comment)),
        ..Rule::default()
    })))
}

/// The whole table for a set of VMs, as one transaction: the table is created if missing,
/// deleted, and created again with every chain and rule, so that the kernel swaps the old
/// table for the new one at once.
pub fn table_render(table: &str, vms: &[VmRules]) -> Nftables<'static> {
    let t = |name: &str| NfListObject::Table(Table { family: NfFamily::INet, name: Cow::Owned(name.to_owned()), handle: None });
    let mut o: Vec<NfObject<'static>> = vec![
        NfObject::CmdObject(NfCmd::Add(t(table))),
        NfObject::CmdObject(NfCmd::Delete(t(table))),
        NfObject::CmdObject(NfCmd::Add(t(table))),
    ];
    let mut chains = vec![
        chain("guard", NfChainType::Filter, NfHook::Prerouting, -300),
        chain("prerouting", NfChainType::NAT, NfHook::Prerouting, -100),
        chain("output", NfChainType::NAT, NfHook::Output, -100),
        chain("postrouting", NfChainType::NAT, NfHook::Postrouting, 100),
        chain("forward", NfChainType::Filter, NfHook::Forward, 0),
    ];
    for c in chains.iter_mut() {
        if let NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(ch))) = c {
            ch.table = Cow::Owned(table.to_owned());
        }
    }
    o.extend(chains);
    // route_localnet on a bridge lets loopback-addressed packets be routed; only loopback may
    // carry them.
    let lo = "lo";
    o.push(rule(
        table,
        "guard",
        vec![
            matches(meta_iifname(), Operator::NEQ, s(lo)),
            eq(field("ip", "saddr"), prefix(Ipv4Addr::LOCALHOST, 8)),
            Statement::Drop(None),
        ],
        "guard: loopback source off loopback".into(),
    ));
    o.push(rule(
        table,
        "guard",
        vec![
            matches(meta_iifname(), Operator::NEQ, s(lo)),
            eq(field("ip", "daddr"), prefix(Ipv4Addr::LOCALHOST, 8)),
            Statement::Drop(None),
        ],
        "guard: loopback destination off loopback".into(),
    ));
    let mut vms: Vec<VmRules> = vms.iter().filter(|v| !v.is_empty()).map(VmRules::normalized).collect();
    vms.sort_by(|a, b| a.vm.cmp(&b.vm));
    for v in &vms {
        let ip = v.guest_ip.to_string();
        for f in &v.forwards {
            let p = f.protocol.as_str();
            let c = comment(v, Some(f));
            for ch in ["prerouting", "output"] {
                o.push(rule(
                    table,
                    ch,
                    vec![
                        fib_daddr_local(),
                        eq(field(p, "dport"), Expression::Number(f.host_port.into())),
                        Statement::DNAT(Some(NAT {
                            addr: Some(s(ip.clone())),
                            family: Some(nftables::stmt::NATFamily::IP),
                            port: Some(Expression::Number(f.guest_port.into())),
                            flags: None,
                        })),
                    ],
                    c.clone(),
                ));
            }
            o.push(rule(
                table,
                "postrouting",
                vec![
                    eq(field("ip", "saddr"), prefix(Ipv4Addr::LOCALHOST, 8)),
                    eq(field("ip", "daddr"), s(ip.clone())),
                    eq(field(p, "dport"), Expression::Number(f.guest_port.into())),
                    matches(ct("status"), Operator::IN, s("dnat")),
                    Statement::Masquerade(None),
                ],
                c,
            ));
        }
        if let Some((net, len)) = v.nat_subnet {
            let c = comment(v, None);
            o.push(rule(
                table,
                "postrouting",
                vec![
                    eq(field("ip", "saddr"), s(ip.clone())),
                    matches(field("ip", "daddr"), Operator::NEQ, prefix(net, len)),
                    Statement::Masquerade(None),
                ],
                c.clone(),
            ));
            // Forwarded connections pass; anything else new from outside the bridge stops.
            o.push(rule(
                table,
                "forward",
                vec![
                    eq(meta_oifname(), s(v.bridge.clone())),
                    eq(field("ip", "daddr"), s(ip.clone())),
                    matches(ct("status"), Operator::IN, s("dnat")),
                    Statement::Accept(None),
                ],
                c.clone(),
            ));
            o.push(rule(
                table,
                "forward",
                vec![
                    matches(meta_iifname(), Operator::NEQ, s(v.bridge.clone())),
                    eq(meta_oifname(), s(v.bridge.clone())),
                    eq(field("ip", "daddr"), s(ip.clone())),
                    matches(ct("state"), Operator::IN, s("new")),
                    Statement::Drop(None),
                ],
                c,
            ));
        }
    }
    Nftables { objects: Cow::Owned(o) }
}

/// Reads the set of VMs a table's rule comments describe. A missing table is an empty set.
pub fn table_parse(json: &str) -> Result<BTreeMap<String, VmRules>, FwError> {
    let doc: serde_json::Value = serde_json::from_str(json).map_err(FwError::Json)?;
    let mut out: BTreeMap<String, VmRules> = BTreeMap::new();
    for obj in doc.get("nftables").and_then(|v| v.as_array()).into_iter().flatten() {
        let Some(c) = obj.get("rule").and_then(|r| r.get("comment")).and_then(|c| c.as_str()) else { continue };
        let Some((v, fwd)) = comment_parse(c) else { continue };
        let e = out.entry(v.key()).or_insert_with(|| VmRules { forwards: vec![], ..v.normalized() });
        if v.nat_subnet.is_some() {
            e.nat_subnet = v.nat_subnet;
        }
        if let Some(f) = fwd {
            if !e.forwards.contains(&f) {
                e.forwards.push(f);
            }
        }
    }
    for v in out.values_mut() {
        v.forwards.sort();
    }
    Ok(out)
}

/// Runs `nft` with a JSON document on stdin (`-j -f -`), or a listing.
fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, FwError> {
    use std::io::Write;
    let program = ["/usr/sbin/nft", "/sbin/nft"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("nft");
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| FwError::Nft { message: format!("cannot run {program}: {e}; install nftables (apt install nftables)") })?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(text.as_bytes()).map_err(|e| FwError::Nft { message: format!("writing to nft: {e}") })?;
    }
    let out = child.wait_with_output().map_err(|e| FwError::Nft { message: format!("waiting for nft: {e}") })?;
    if !out.status.success() {
        return Err(FwError::Nft { message: String::from_utf8_lossy(&out.stderr).trim().to_owned() });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The set of VMs the table holds now (empty when the table does not exist).
pub fn table_read(table: &str) -> Result<BTreeMap<String, VmRules>, FwError> {
    match nft(&["-j", "list", "table", "inet", table], None) {
        Ok(json) => table_parse(&json),
        Err(FwError::Nft { message }) if message.contains("No such file or directory") => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

/// Writes the table for `vms` in one transaction.
pub fn table_write(table: &str, vms: &[VmRules]) -> Result<(), FwError> {
    let doc = serde_json::to_string(&table_render(table, vms)).map_err(FwError::Json)?;
    nft(&["-j", "-f", "-"], Some(&doc)).map(drop)
}

/// Removes the table entirely (`host uninstall`; tests).
pub fn table_delete(table: &str) -> Result<(), FwError> {
    match nft(&["delete", "table", "inet", table], None) {
        Err(FwError::Nft { message }) if message.contains("No such file or directory") => Ok(()),
        r => r.map(drop),
    }
}

/// Holds the node-wide firewall lock (an advisory `flock` on `/run/kvmctl-netfw.lock`):
/// the hook, the daemon and the reconciler read-modify-write the table under it.
pub struct Lock(#[allow(dead_code)] std::fs::File);

pub const LOCK_PATH: &str = "/run/kvmctl-netfw.lock";

impl Lock {
    pub fn take() -> Result<Lock, FwError> {
        let err = |source| FwError::Lock { path: LOCK_PATH.into(), source };
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(LOCK_PATH).map_err(err)?;
        // SAFETY: flock on a file descriptor we own; released when the file closes.
        if unsafe { libc_flock(std::os::fd::AsRawFd::as_raw_fd(&f), 2) } != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        Ok(Lock(f))
    }
}

extern "C" {
    #[link_name = "flock"]
    fn libc_flock(fd: i32, op: i32) -> i32;
}

/// Sets one VM's rules (replacing what it had) and rewrites the table when that changes it.
/// Returns whether the table changed.
pub fn vm_apply(table: &str, v: &VmRules) -> Result<bool, FwError> {
    let _lock = Lock::take()?;
    let mut set = table_read(table)?;
    let v = v.normalized();
    if v.is_empty() {
        if set.remove(&v.vm).is_none() {
            return Ok(false);
        }
    } else {
        if set.get(&v.vm) == Some(&v) {
            return Ok(false);
        }
        set.insert(v.vm.clone(), v);
    }
    table_write(table, &set.into_values().collect::<Vec<_>>())?;
    Ok(true)
}

/// `vm_apply`, then, only once the table with its loopback guard is written, lets the VM's
/// bridge route loopback-addressed packets (forwards reached through `localhost` need it).
/// When the write fails, the bridge is set back to refusing them: `route_localnet` is never
/// on without the guard that keeps such packets to loopback.
pub fn vm_apply_guarded(table: &str, v: &VmRules) -> Result<bool, FwError> {
    match vm_apply(table, v) {
        Ok(changed) => {
            if !v.is_empty() {
                bridge_allow_loopback(&v.bridge).map_err(|source| FwError::RouteLocalnet { bridge: v.bridge.clone(), source })?;
            }
            Ok(changed)
        }
        Err(e) => {
            if !v.is_empty() {
                let _ = bridge_loopback_set(&v.bridge, false);
            }
            Err(e)
        }
    }
}

/// Removes every rule of a VM; nothing to remove is fine.
pub fn vm_remove(table: &str, vm: &str) -> Result<bool, FwError> {
    let _lock = Lock::take()?;
    let mut set = table_read(table)?;
    if set.remove(&vm_key(vm)).is_none() {
        return Ok(false);
    }
    table_write(table, &set.into_values().collect::<Vec<_>>())?;
    Ok(true)
}

/// Replaces the whole set (the reconciler's repair), under the lock, when it differs.
pub fn table_sync(table: &str, change: impl FnOnce(&mut BTreeMap<String, VmRules>)) -> Result<bool, FwError> {
    let _lock = Lock::take()?;
    let before = table_read(table)?;
    let mut after = before.clone();
    change(&mut after);
    let after: BTreeMap<String, VmRules> = after.into_values().filter(|v| !v.is_empty()).map(|v| (v.key(), v.normalized())).collect();
    if after == before && table_exists(table) {
        return Ok(false);
    }
    table_write(table, &after.into_values().collect::<Vec<_>>())?;
    Ok(true)
}

fn table_exists(table: &str) -> bool {
    nft(&["list", "table", "inet", table], None).is_ok()
}

/// Lets the host route loopback-addressed packets onto a bridge (`net.ipv4.conf.<bridge>.
/// route_localnet = 1`), which forwards reached through `localhost` need; the table's guard
/// chain keeps such packets from arriving anywhere but on loopback.
pub fn bridge_allow_loopback(bridge: &str) -> std::io::Result<()> {
    bridge_loopback_set(bridge, true)
}

fn bridge_loopback_set(bridge: &str, on: bool) -> std::io::Result<()> {
    if !valid_ifname(bridge) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{bridge:?} is not an interface name")));
    }
    std::fs::write(format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"), if on { "1" } else { "0" })
}

#[cfg(test)]
mod tests;
