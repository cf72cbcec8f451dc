//! `MemoryNode`: a compute node held in memory, for fast tests of the daemon's logic. It
//! keeps domains, storage pools and volumes, networks with their DHCP host entries and
//! leases, and network filters, and answers the `Node` calls the way libvirt does (not
//! found, already exists, refused in the current state). Any call can be made to fail
//! (`fail`), and every call is recorded (`calls`).
//!
//! It reads the XML it is given only through `kvmctl_libvirt::xml`'s parsers. It runs no
//! guest: a started domain is `Running` until stopped, and `crash` shuts it off the way a
//! dying QEMU does.

use kvmctl_libvirt::xml::{self, DiskFormat, VolumeSpec};
use kvmctl_libvirt::{Console, DomainState, DomainSummary, Node, NodeError, NodeResources, NodeVersions, ObjectState, VolumeInfo};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

mod state;

use state::{domain, network, network_render, not_found, pool, refused};
pub use state::{MemDomain, MemNetwork, MemPool, MemState};

/// A failure to inject: the next `times` calls of `op` fail with what `error` makes.
struct Failure {
    times: usize,
    error: Box<dyn Fn() -> NodeError + Send>,
}

pub struct MemoryNode {
    uri: String,
    state: Mutex<MemState>,
    failures: Mutex<HashMap<String, Failure>>,
    calls: Mutex<Vec<String>>,
}

/// kvmctl's metadata element as libvirt holds it after `virDomainSetMetadata`: the root in
/// kvmctl's namespace, its children bare.
pub fn metadata_bound(element_xml: &str) -> String {
    element_xml.trim().replacen("<vm>", &format!("<kvmctl:vm xmlns:kvmctl=\"{}\">", xml::METADATA_NS), 1).replace("</vm>", "</kvmctl:vm>")
}

/// A NAT network like libvirt's `default`, with a DHCP range of `.2` to `.254`.
pub fn nat_network_xml(name: &str, bridge: &str, prefix: &str) -> String {
    format!(
        "<network><name>{name}</name><forward mode='nat'/><bridge name='{bridge}'/>\
         <ip address='{prefix}.1' netmask='255.255.255.0'><dhcp><range start='{prefix}.2' end='{prefix}.254'/></dhcp></ip></network>"
    )
}

impl MemoryNode {
    /// A node with 8 CPUs, 16 GiB, a pool `default` over `pool_dir`, a NAT network
    /// `default` (192.168.122.0/24) and the `clean-traffic` filter.
    pub fn new(uri: &str, pool_dir: &Path) -> Self {
        let mut st = MemState { cpus: 8, memory_bytes: 16 << 30, ..Default::default() };
        st.pools.insert("default".into(), MemPool { path: pool_dir.to_owned(), active: true, volumes: BTreeMap::new() });
        st.networks.insert(
            "default".into(),
            MemNetwork {
                xml: nat_network_xml("default", "virbr0", "192.168.122"),
                active: true,
                autostart: true,
                hosts: Vec::new(),
                leases: Vec::new(),
            },
        );
        st.nwfilters.insert("clean-traffic".into());
        MemoryNode { uri: uri.to_owned(), state: Mutex::new(st), failures: Mutex::default(), calls: Mutex::default() }
    }

    /// Reads or changes what the node holds.
    pub fn with<T>(&self, f: impl FnOnce(&mut MemState) -> T) -> T {
        f(&mut self.state.lock().expect("memory node poisoned"))
    }

    /// The next `times` calls of `op` (a `Node` method name: `domain_start`) fail.
    pub fn fail(&self, op: &str, times: usize) {
        let op_name = op.to_owned();
        self.fail_with(op, times, move || NodeError::Libvirt { op: "do", name: op_name.clone(), message: "injected failure".into() });
    }

    /// As `fail`, with the error `error` makes.
    pub fn fail_with(&self, op: &str, times: usize, error: impl Fn() -> NodeError + Send + 'static) {
        self.failures.lock().expect("poisoned").insert(op.to_owned(), Failure { times, error: Box::new(error) });
    }

    /// Every call so far, as `op name` (`domain_start web`).
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("poisoned").clone()
    }

    /// Shuts a running domain off the way a dying QEMU does (a failure, not a request).
    pub fn crash(&self, name: &str) {
        self.with(|st| {
            if let Some(d) = st.domains.get_mut(name) {
                d.state = DomainState::Shutoff;
                d.failed_stop = true;
            }
        });
    }

    /// Names of the volumes in `pool`.
    pub fn volume_names(&self, pool: &str) -> Vec<String> {
        self.with(|st| st.pools.get(pool).map(|p| p.volumes.keys().cloned().collect()).unwrap_or_default())
    }

    /// Names of the defined domains.
    pub fn domain_names(&self) -> Vec<String> {
        self.with(|st| st.domains.keys().cloned().collect())
    }

    /// The DHCP host entries of `network`.
    pub fn dhcp_hosts(&self, network: &str) -> Vec<xml::DhcpHost> {
        self.with(|st| st.networks.get(network).map(|n| n.hosts.clone()).unwrap_or_default())
    }

    /// Records the call and answers an injected failure, if one is due.
    fn enter(&self, op: &str, name: &str) -> Result<std::sync::MutexGuard<'_, MemState>, NodeError> {
        self.calls.lock().expect("poisoned").push(format!("{op} {name}"));
        let mut failures = self.failures.lock().expect("poisoned");
        if let Some(f) = failures.get_mut(op) {
            if f.times > 0 {
                f.times -= 1;
                return Err((f.error)());
            }
        }
        drop(failures);
        Ok(self.state.lock().expect("memory node poisoned"))
    }
}

impl Node for MemoryNode {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn versions(&self) -> Result<NodeVersions, NodeError> {
        let _st = self.enter("versions", "")?;
        Ok(NodeVersions { libvirt: "0.0.0".into(), hypervisor: "0.0.0".into(), driver: "Memory".into(), hostname: "memory".into() })
    }

    fn resources(&self, pool_name: &str) -> Result<NodeResources, NodeError> {
        let mut st = self.enter("resources", pool_name)?;
        let (cpus, memory_bytes) = (st.cpus, st.memory_bytes);
        let p = pool(&mut st, pool_name)?;
        let used: u64 = p.volumes.values().map(|(v, _)| v.capacity_bytes).sum();
        let capacity = 1u64 << 40;
        Ok(NodeResources {
            cpus,
            memory_bytes,
            free_memory_bytes: memory_bytes,
            pool_capacity_bytes: capacity,
            pool_available_bytes: capacity.saturating_sub(used),
        })
    }

    fn domain_define(&self, domain_xml: &str) -> Result<DomainSummary, NodeError> {
        let (name, uuid) = xml::domain_identity(domain_xml);
        let name = name.ok_or_else(|| refused("define", "(no name)", "the definition has no <name>"))?;
        let mut st = self.enter("domain_define", &name)?;
        let uuid = uuid.unwrap_or_else(|| format!("{:032x}", st.domains.len() + 1));
        if st.domains.iter().any(|(n, d)| d.uuid == uuid && *n != name) {
            return Err(NodeError::AlreadyExists { kind: "domain with that uuid", name });
        }
        let d = st.domains.entry(name.clone()).or_insert(MemDomain {
            xml: String::new(),
            uuid: uuid.clone(),
            state: DomainState::Shutoff,
            failed_stop: false,
        });
        d.xml = domain_xml.to_owned();
        Ok(DomainSummary { name, uuid, state: d.state, failed_stop: d.failed_stop })
    }

    fn domain_start(&self, name: &str) -> Result<(), NodeError> {
        let mut st = self.enter("domain_start", name)?;
        let d = domain(&mut st, name)?;
        if d.state != DomainState::Shutoff {
            return Err(refused("start", name, "domain is already running"));
        }
        d.state = DomainState::Running;
        d.failed_stop = false;
        Ok(())
    }

    fn domain_shutdown(&self, name: &str) -> Result<(), NodeError> {
        let mut st = self.enter("domain_shutdown", name)?;
        let d = domain(&mut st, name)?;
        if d.state != DomainState::Running {
            return Err(refused("shut down", name, "domain is not running"));
        }
        // The guest powers off at once.
        d.state = DomainState::Shutoff;
        d.failed_stop = false;
        Ok(())
    }

    fn domain_destroy(&self, name: &str) -> Result<(), NodeError> {
        let mut st = self.enter("domain_destroy", name)?;
        let d = domain(&mut st, name)?;
        d.state = DomainState::Shutoff;
        d.failed_stop = false;
        Ok(())
    }

    fn domain_save(&self, name: &str, path: &std::path::Path) -> Result<(), NodeError> {
        let mut st = self.enter("domain_save", name)?;
        let d = domain(&mut st, name)?;
        if d.state != DomainState::Running && d.state != DomainState::Paused {
            return Err(refused("save", name, "domain is not running"));
        }
        d.state = DomainState::Shutoff;
        st.saved.insert(path.to_owned(), name.to_owned());
        Ok(())
    }

    fn domain_restore(&self, path: &std::path::Path, running: bool) -> Result<(), NodeError> {
        let mut st = self.enter("domain_restore", &path.display().to_string())?;
        let name = st.saved.get(path).cloned().ok_or_else(|| not_found("saved domain", &path.display().to_string()))?;
        let d = domain(&mut st, &name)?;
        if d.state != DomainState::Shutoff {
            return Err(refused("restore", &name, "domain is already running"));
        }
        d.state = if running { DomainState::Running } else { DomainState::Paused };
        Ok(())
    }

    fn domain_interface_update(&self, name: &str, _interface_xml: &str) -> Result<(), NodeError> {
        let mut st = self.enter("domain_interface_update", name)?;
        match domain(&mut st, name)?.state {
            DomainState::Running => Ok(()),
            _ => Err(refused("update the NIC of", name, "domain is not running")),
        }
    }

    fn domain_agent_exec(&self, name: &str, _argv: &[String], _timeout_seconds: u64) -> Result<kvmctl_libvirt::AgentExec, NodeError> {
        let _st = self.enter("domain_agent_exec", name)?;
        Err(refused("run a command through the guest agent of", name, "the in-memory node runs no guest agent"))
    }

    fn domain_announce(&self, name: &str) -> Result<(), NodeError> {
        let mut st = self.enter("domain_announce", name)?;
        domain(&mut st, name).map(|_| ())
    }

    fn domain_clock_sync(&self, name: &str) -> Result<(), NodeError> {
        let mut st = self.enter("domain_clock_sync", name)?;
        match domain(&mut st, name)?.state {
            DomainState::Running => Ok(()),
            _ => Err(refused("set the clock of", name, "domain is not running")),
        }
    }

    fn domain_undefine(&self, name: &str) -> Result<(), NodeError> {
        let mut st = self.enter("domain_undefine", name)?;
        st.domains.remove(name).map(|_| ()).ok_or_else(|| not_found("domain", name))
    }

    fn domain_state(&self, name: &str) -> Result<DomainState, NodeError> {
        let mut st = self.enter("domain_state", name)?;
        Ok(domain(&mut st, name)?.state)
    }

    fn domain_list(&self) -> Result<Vec<DomainSummary>, NodeError> {
        let st = self.enter("domain_list", "")?;
        Ok(st
            .domains
            .iter()
            .map(|(n, d)| DomainSummary { name: n.clone(), uuid: d.uuid.clone(), state: d.state, failed_stop: d.failed_stop })
            .collect())
    }

    fn domain_xml(&self, name: &str) -> Result<String, NodeError> {
        let mut st = self.enter("domain_xml", name)?;
        Ok(domain(&mut st, name)?.xml.clone())
    }

    fn network_xml(&self, name: &str) -> Result<String, NodeError> {
        let mut st = self.enter("network_xml", name)?;
        Ok(network_render(network(&mut st, name)?))
    }

    fn network_dhcp_host(&self, name: &str, host_xml: &str, add: bool) -> Result<(), NodeError> {
        let mut st = self.enter("network_dhcp_host", name)?;
        let net = network(&mut st, name)?;
        let host = xml::network_dhcp_hosts(&format!("<dhcp>{host_xml}</dhcp>"))
            .pop()
            .ok_or_else(|| refused("update", name, "not a DHCP host entry"))?;
        if add {
            if net
                .hosts
                .iter()
                .any(|h| h.mac == host.mac || (!h.ip.is_empty() && h.ip == host.ip) || (!h.name.is_empty() && h.name == host.name))
            {
                return Err(NodeError::AlreadyExists {
                    kind: "DHCP host entry for that address or name in network",
                    name: name.to_owned(),
                });
            }
            net.hosts.push(host);
            Ok(())
        } else {
            let before = net.hosts.len();
            net.hosts.retain(|h| h.mac != host.mac);
            if net.hosts.len() == before {
                return Err(not_found("DHCP host entry in network", name));
            }
            Ok(())
        }
    }

    fn network_leases(&self, name: &str) -> Result<Vec<(String, String)>, NodeError> {
        let mut st = self.enter("network_leases", name)?;
        Ok(network(&mut st, name)?.leases.clone())
    }

    fn network_state(&self, name: &str) -> Result<Option<ObjectState>, NodeError> {
        let st = self.enter("network_state", name)?;
        Ok(st.networks.get(name).map(|n| ObjectState { active: n.active, autostart: n.autostart, persistent: true }))
    }

    fn network_ensure(&self, name: &str, network_xml: &str) -> Result<(), NodeError> {
        let mut st = self.enter("network_ensure", name)?;
        let n = st.networks.entry(name.to_owned()).or_insert(MemNetwork {
            xml: network_xml.to_owned(),
            active: false,
            autostart: false,
            hosts: Vec::new(),
            leases: Vec::new(),
        });
        n.active = true;
        n.autostart = true;
        Ok(())
    }

    fn network_delete(&self, name: &str) -> Result<(), NodeError> {
        let mut st = self.enter("network_delete", name)?;
        st.networks.remove(name).map(|_| ()).ok_or_else(|| not_found("network", name))
    }

    fn network_set(&self, name: &str, active: Option<bool>, autostart: Option<bool>) -> Result<(), NodeError> {
        let mut st = self.enter("network_set", name)?;
        let n = network(&mut st, name)?;
        n.active = active.unwrap_or(n.active);
        n.autostart = autostart.unwrap_or(n.autostart);
        Ok(())
    }

    fn pool_state(&self, name: &str) -> Result<Option<ObjectState>, NodeError> {
        let st = self.enter("pool_state", name)?;
        Ok(st.pools.get(name).map(|p| ObjectState { active: p.active, autostart: true, persistent: true }))
    }

    fn pool_ensure_dir(&self, name: &str, path: &Path) -> Result<(), NodeError> {
        let mut st = self.enter("pool_ensure_dir", name)?;
        st.pools.entry(name.to_owned()).or_insert(MemPool { path: path.to_owned(), active: true, volumes: BTreeMap::new() });
        Ok(())
    }

    fn pool_ensure_logical(&self, name: &str, vg: &str, _devices: &[PathBuf]) -> Result<(), NodeError> {
        let mut st = self.enter("pool_ensure_logical", name)?;
        st.pools.entry(name.to_owned()).or_insert(MemPool { path: PathBuf::from("/dev").join(vg), active: true, volumes: BTreeMap::new() });
        Ok(())
    }

    fn pool_info(&self, name: &str) -> Result<Option<kvmctl_libvirt::PoolInfo>, NodeError> {
        let st = self.enter("pool_info", name)?;
        Ok(st.pools.get(name).map(|p| kvmctl_libvirt::PoolInfo {
            kind: if p.path.starts_with("/dev") { "logical" } else { "dir" }.into(),
            target: p.path.clone(),
            active: p.active,
            capacity_bytes: 100 << 30,
            allocation_bytes: p.volumes.values().map(|(v, _)| v.capacity_bytes).sum(),
            available_bytes: (100u64 << 30).saturating_sub(p.volumes.values().map(|(v, _)| v.capacity_bytes).sum()),
        }))
    }

    fn pool_remove(&self, name: &str, _wipe: bool) -> Result<(), NodeError> {
        let mut st = self.enter("pool_remove", name)?;
        st.pools.remove(name).map(|_| ()).ok_or_else(|| not_found("storage pool", name))
    }

    fn volume_create_from(&self, pool_name: &str, spec: &VolumeSpec, _from_pool: &str, _from: &str) -> Result<VolumeInfo, NodeError> {
        self.volume_create(pool_name, spec)
    }

    fn pool_delete(&self, name: &str) -> Result<(), NodeError> {
        let mut st = self.enter("pool_delete", name)?;
        st.pools.remove(name).map(|_| ()).ok_or_else(|| not_found("storage pool", name))
    }

    fn volume_create(&self, pool_name: &str, spec: &VolumeSpec) -> Result<VolumeInfo, NodeError> {
        let mut st = self.enter("volume_create", &spec.name)?;
        let p = pool(&mut st, pool_name)?;
        if p.volumes.contains_key(&spec.name) {
            return Err(NodeError::AlreadyExists { kind: "volume", name: spec.name.clone() });
        }
        if let Some((backing, _)) = &spec.backing {
            let known = p.volumes.values().any(|(v, _)| &v.path == backing);
            if !known {
                return Err(NodeError::Libvirt {
                    op: "create",
                    name: spec.name.clone(),
                    message: format!("backing file {} is missing", backing.display()),
                });
            }
        }
        let info = VolumeInfo { name: spec.name.clone(), path: p.path.join(&spec.name), capacity_bytes: spec.capacity_bytes };
        p.volumes.insert(spec.name.clone(), (info.clone(), Vec::new()));
        Ok(info)
    }

    fn volume_upload_from(
        &self,
        pool_name: &str,
        name: &str,
        _format: DiskFormat,
        _private: bool,
        len: u64,
        data: &mut dyn std::io::Read,
    ) -> Result<VolumeInfo, NodeError> {
        let mut bytes = Vec::new();
        std::io::Read::take(data, len).read_to_end(&mut bytes).map_err(|source| NodeError::Read { name: name.to_owned(), source })?;
        if bytes.len() as u64 != len {
            let source =
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("source ended after {} of {len} bytes", bytes.len()));
            return Err(NodeError::Read { name: name.to_owned(), source });
        }
        let mut st = self.enter("volume_upload_from", name)?;
        let p = pool(&mut st, pool_name)?;
        if p.volumes.contains_key(name) {
            return Err(NodeError::AlreadyExists { kind: "volume", name: name.to_owned() });
        }
        let info = VolumeInfo { name: name.to_owned(), path: p.path.join(name), capacity_bytes: len };
        p.volumes.insert(name.to_owned(), (info.clone(), bytes));
        Ok(info)
    }

    fn volume_delete(&self, pool_name: &str, name: &str) -> Result<(), NodeError> {
        let mut st = self.enter("volume_delete", name)?;
        pool(&mut st, pool_name)?.volumes.remove(name).map(|_| ()).ok_or_else(|| not_found("volume", name))
    }

    fn volume_list(&self, pool_name: &str) -> Result<Vec<VolumeInfo>, NodeError> {
        let mut st = self.enter("volume_list", pool_name)?;
        Ok(pool(&mut st, pool_name)?.volumes.values().map(|(v, _)| v.clone()).collect())
    }

    fn volume_get(&self, pool_name: &str, name: &str) -> Result<Option<VolumeInfo>, NodeError> {
        let mut st = self.enter("volume_get", name)?;
        Ok(pool(&mut st, pool_name)?.volumes.get(name).map(|(v, _)| v.clone()))
    }

    fn volume_resize(&self, pool_name: &str, name: &str, capacity_bytes: u64) -> Result<(), NodeError> {
        let mut st = self.enter("volume_resize", name)?;
        let (v, _) = pool(&mut st, pool_name)?.volumes.get_mut(name).ok_or_else(|| not_found("volume", name))?;
        if capacity_bytes < v.capacity_bytes {
            return Err(refused("resize", name, "cannot shrink a volume"));
        }
        v.capacity_bytes = capacity_bytes;
        Ok(())
    }

    fn domain_agent_addresses(&self, name: &str) -> Result<Vec<(String, String)>, NodeError> {
        let mut st = self.enter("domain_agent_addresses", name)?;
        domain(&mut st, name)?;
        Err(refused("ask the guest agent of", name, "the in-memory node runs no guest agent"))
    }

    fn domain_console(&self, name: &str) -> Result<Box<dyn Console>, NodeError> {
        let mut st = self.enter("domain_console", name)?;
        domain(&mut st, name)?;
        Err(refused("open the console of", name, "the in-memory node runs no guest"))
    }

    fn domain_open_graphics(&self, name: &str) -> Result<std::os::fd::OwnedFd, NodeError> {
        let mut st = self.enter("domain_open_graphics", name)?;
        domain(&mut st, name)?;
        Err(refused("open the VNC display of", name, "the in-memory node runs no guest"))
    }

    fn domain_reboot(&self, name: &str) -> Result<(), NodeError> {
        let mut st = self.enter("domain_reboot", name)?;
        let d = domain(&mut st, name)?;
        if d.state != DomainState::Running {
            return Err(refused("reboot", name, "domain is not running"));
        }
        Ok(())
    }

    fn domain_device_attach(&self, name: &str, device_xml: &str) -> Result<(), NodeError> {
        let mut st = self.enter("domain_device_attach", name)?;
        let d = domain(&mut st, name)?;
        let at = d.xml.rfind("</devices>").ok_or_else(|| refused("attach a device to", name, "no devices"))?;
        d.xml.insert_str(at, device_xml);
        Ok(())
    }

    fn domain_device_detach(&self, name: &str, device_xml: &str) -> Result<(), NodeError> {
        let mut st = self.enter("domain_device_detach", name)?;
        let d = domain(&mut st, name)?;
        // The `<disk>` whose target is the detached one's.
        let target = device_xml.split("dev='").nth(1).and_then(|t| t.split('\'').next()).unwrap_or_default();
        let needle = format!("dev='{target}'");
        let mut from = 0;
        while let Some(start) = d.xml[from..].find("<disk").map(|i| i + from) {
            let end = d.xml[start..].find("</disk>").map(|i| start + i + "</disk>".len()).unwrap_or(d.xml.len());
            if d.xml[start..end].contains(&needle) {
                d.xml.replace_range(start..end, "");
                return Ok(());
            }
            from = end;
        }
        Err(not_found("disk", target))
    }

    fn domain_block_resize(&self, name: &str, target: &str, capacity_bytes: u64) -> Result<(), NodeError> {
        let mut st = self.enter("domain_block_resize", name)?;
        let d = domain(&mut st, name)?;
        if d.state != DomainState::Running {
            return Err(refused("resize a disk of", name, "domain is not running"));
        }
        let file = xml::domain_devices(&d.xml).disk_files.into_iter().next().ok_or_else(|| not_found("disk", target))?;
        for p in st.pools.values_mut() {
            if let Some((v, _)) = p.volumes.values_mut().find(|(v, _)| v.path.display().to_string() == file) {
                v.capacity_bytes = v.capacity_bytes.max(capacity_bytes);
                return Ok(());
            }
        }
        Err(not_found("disk", target))
    }

    fn domain_metadata_set(&self, name: &str, element_xml: &str) -> Result<(), NodeError> {
        let mut st = self.enter("domain_metadata_set", name)?;
        let d = domain(&mut st, name)?;
        // Replaces the metadata element the definition carries (kvmctl's is the only one).
        let (Some(a), Some(b)) = (d.xml.find("<metadata>"), d.xml.find("</metadata>")) else {
            return Err(refused("set the metadata of", name, "the definition has no <metadata>"));
        };
        d.xml = format!("{}<metadata>{}{}", &d.xml[..a], metadata_bound(element_xml), &d.xml[b..]);
        Ok(())
    }

    fn nwfilter_exists(&self, name: &str) -> Result<bool, NodeError> {
        let st = self.enter("nwfilter_exists", name)?;
        Ok(st.nwfilters.contains(name))
    }

    fn network_list(&self) -> Result<Vec<String>, NodeError> {
        let st = self.enter("network_list", "")?;
        Ok(st.networks.keys().cloned().collect())
    }
}
