//! The `Node` trait over libvirt: `LibvirtNode`'s impl, with the domain calls here and the
//! network and storage calls in `networks.rs` and `storage.rs`. Each call runs on the
//! node's connection (`conn.rs`): when libvirtd has restarted (or was not up yet), the next
//! call opens a fresh one, so a daemon survives libvirtd restarts without being restarted
//! itself. Image uploads and consoles get connections of their own, so a long stream never
//! holds up the node's other calls.

use super::conn::{LibvirtNode, OWN_CONNECTION_BYTES};
use super::{
    version_string, AgentExec, Console, ConsoleStream, DomainState, DomainSummary, Node, NodeResources, NodeVersions, ObjectState,
    VolumeInfo,
};
use crate::error::NodeError;
use crate::xml::{self, VolumeSpec};
use std::path::Path;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::stream::Stream;

fn map_state(s: virt::sys::virDomainState) -> DomainState {
    match s {
        virt::sys::VIR_DOMAIN_RUNNING => DomainState::Running,
        virt::sys::VIR_DOMAIN_PAUSED | virt::sys::VIR_DOMAIN_PMSUSPENDED => DomainState::Paused,
        virt::sys::VIR_DOMAIN_SHUTDOWN => DomainState::ShuttingDown,
        virt::sys::VIR_DOMAIN_SHUTOFF => DomainState::Shutoff,
        virt::sys::VIR_DOMAIN_CRASHED => DomainState::Crashed,
        _ => DomainState::Other,
    }
}

/// Whether libvirt's state and reason say the domain was shut off by a failure.
fn failed_stop(s: virt::sys::virDomainState, reason: i32) -> bool {
    s == virt::sys::VIR_DOMAIN_SHUTOFF
        && matches!(
            reason as u32,
            virt::sys::VIR_DOMAIN_SHUTOFF_UNKNOWN
                | virt::sys::VIR_DOMAIN_SHUTOFF_CRASHED
                | virt::sys::VIR_DOMAIN_SHUTOFF_FAILED
                | virt::sys::VIR_DOMAIN_SHUTOFF_DAEMON
        )
}

/// Runs a domain start (or restore) again when libvirt's network filter driver failed to set
/// up the NIC's rules: with ebtables on nf_tables, two domains starting and stopping at once
/// can collide on a reused tap device's chains (`RULE_DELETE failed ... J-vnet23-rarp`,
/// seen in the suite). A start that failed there left no QEMU behind, so a second try is
/// safe; three tries, 200 ms apart, then the error stands.
fn firewall_retry(what: &str, mut call: impl FnMut() -> Result<(), virt::error::Error>) -> Result<(), virt::error::Error> {
    let mut tries = 0;
    loop {
        match call() {
            Err(e) if tries < 2 && e.message().contains("Failed to apply firewall rules") => {
                tries += 1;
                tracing::warn!(domain = what, error = e.message(), "libvirt could not apply a NIC's filter rules; trying again");
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            r => return r,
        }
    }
}

impl LibvirtNode {
    /// Attaches or detaches a device in the persistent definition, and live when it runs.
    fn device_change(&self, name: &str, device_xml: &str, attach: bool) -> Result<(), NodeError> {
        let op = if attach { "attach a device to" } else { "detach a device from" };
        self.with_conn(|c| {
            let d = Self::domain(c, name, op)?;
            let err = |e| NodeError::from_virt(op, "domain", name, e);
            let mut flags = virt::sys::VIR_DOMAIN_AFFECT_CONFIG;
            if d.is_active().map_err(err)? {
                flags |= virt::sys::VIR_DOMAIN_AFFECT_LIVE;
            }
            let done = if attach { d.attach_device_flags(device_xml, flags) } else { d.detach_device_flags(device_xml, flags) };
            done.map(drop).map_err(err)
        })
    }
}

impl Node for LibvirtNode {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn versions(&self) -> Result<NodeVersions, NodeError> {
        self.with_conn(|c| {
            let err = |op| move |e| NodeError::from_virt(op, "connection", &self.uri, e);
            Ok(NodeVersions {
                libvirt: version_string(c.get_lib_version().map_err(err("read the libvirt version of"))?),
                hypervisor: version_string(c.get_hyp_version().map_err(err("read the hypervisor version of"))?),
                driver: c.get_type().map_err(err("read the driver of"))?,
                hostname: c.get_hostname().map_err(err("read the hostname of"))?,
            })
        })
    }

    fn resources(&self, pool: &str) -> Result<NodeResources, NodeError> {
        self.with_conn(|c| {
            let err = |op| move |e| NodeError::from_virt(op, "connection", &self.uri, e);
            let info = c.get_node_info().map_err(err("read the node info of"))?;
            let free = c.get_free_memory().unwrap_or(0);
            let p = Self::pool(c, pool)?;
            let pinfo = p.get_info().map_err(|e| NodeError::from_virt("read the size of", "storage pool", pool, e))?;
            Ok(NodeResources {
                cpus: info.cpus.into(),
                memory_bytes: info.memory * 1024,
                free_memory_bytes: free,
                pool_capacity_bytes: pinfo.capacity,
                pool_available_bytes: pinfo.available,
            })
        })
    }

    fn domain_define(&self, xml: &str) -> Result<DomainSummary, NodeError> {
        self.with_conn(|c| {
            let d = Domain::define_xml(c, xml).map_err(|e| NodeError::from_virt("define", "domain", "(new)", e))?;
            let name = d.get_name().map_err(|e| NodeError::from_virt("read name of", "domain", "(new)", e))?;
            let uuid = d.get_uuid_string().map_err(|e| NodeError::from_virt("read uuid of", "domain", &name, e))?;
            let state = d.get_state().map(|(s, _)| map_state(s)).unwrap_or(DomainState::Other);
            Ok(DomainSummary { name, uuid, state, failed_stop: false })
        })
    }

    fn domain_start(&self, name: &str) -> Result<(), NodeError> {
        self.with_conn(|c| {
            let d = Self::domain(c, name, "start")?;
            firewall_retry(name, || d.create().map(drop)).map_err(|e| NodeError::from_virt("start", "domain", name, e))
        })
    }

    fn domain_shutdown(&self, name: &str) -> Result<(), NodeError> {
        self.with_conn(|c| {
            // The guest agent when it answers (it works without ACPI support in the guest),
            // else the ACPI power button: libvirt tries them in that order.
            let flags = virt::sys::VIR_DOMAIN_SHUTDOWN_GUEST_AGENT | virt::sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN;
            let d = Self::domain(c, name, "shut down")?;
            match d.shutdown_flags(flags) {
                // Drivers without a choice of method (the test driver) refuse the flags.
                Err(e) if e.message().contains("unsupported flags") => d.shutdown().map(drop),
                r => r.map(drop),
            }
            .map_err(|e| NodeError::from_virt("shut down", "domain", name, e))?;
            Ok(())
        })
    }

    fn domain_destroy(&self, name: &str) -> Result<(), NodeError> {
        self.with_conn(|c| {
            let d = Self::domain(c, name, "stop")?;
            match d.destroy() {
                Ok(()) => Ok(()),
                Err(e) if e.code() == virt::error::ErrorNumber::OperationInvalid => Ok(()), // not running
                Err(e) => Err(NodeError::from_virt("stop", "domain", name, e)),
            }
        })
    }

    fn domain_save(&self, name: &str, path: &Path) -> Result<(), NodeError> {
        let file = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| NodeError::InvalidState {
            op: "save",
            name: name.to_owned(),
            reason: "the path has a NUL byte".into(),
        })?;
        self.with_conn(|c| {
            let d = Self::domain(c, name, "save")?;
            // SAFETY: the domain pointer lives as long as `d`; the path is a NUL-terminated copy.
            let ret =
                unsafe { virt::sys::virDomainSaveFlags(d.as_ptr(), file.as_ptr(), std::ptr::null(), virt::sys::VIR_DOMAIN_SAVE_RUNNING) };
            if ret < 0 {
                return Err(NodeError::from_virt("save", "domain", name, virt::error::Error::last_error()));
            }
            Ok(())
        })
    }

    fn domain_restore(&self, path: &Path, running: bool) -> Result<(), NodeError> {
        let file = path.to_str().ok_or_else(|| NodeError::InvalidState {
            op: "restore",
            name: path.display().to_string(),
            reason: "the path is not UTF-8".into(),
        })?;
        let flags = if running { virt::sys::VIR_DOMAIN_SAVE_RUNNING } else { virt::sys::VIR_DOMAIN_SAVE_PAUSED };
        self.with_conn(|c| {
            firewall_retry(file, || virt::domain::Domain::domain_restore_flags(c, file, None, flags))
                .map_err(|e| NodeError::from_virt("restore", "domain", &path.display().to_string(), e))
        })
    }

    fn domain_interface_update(&self, name: &str, interface_xml: &str) -> Result<(), NodeError> {
        // A connection of its own: libvirt rebuilds the NIC's filter rules (about 2 s), and
        // the node's other calls must not queue behind it.
        let own = self.connect_own()?;
        let d = Self::domain(&own.0, name, "update the NIC of")?;
        d.update_device_flags(interface_xml, virt::sys::VIR_DOMAIN_AFFECT_LIVE)
            .map(|_| ())
            .map_err(|e| NodeError::from_virt("update the NIC of", "domain", name, e))
    }

    fn domain_agent_exec(&self, name: &str, argv: &[String], timeout_seconds: u64) -> Result<AgentExec, NodeError> {
        let op = "run a command through the guest agent of";
        let (path, args) =
            argv.split_first().ok_or_else(|| NodeError::InvalidState { op, name: name.into(), reason: "no command".into() })?;
        let started = serde_json::json!({"execute": "guest-exec", "arguments": {"path": path, "arg": args, "capture-output": true}});
        let reply = self.with_conn(|c| {
            let d = Self::domain(c, name, op)?;
            d.qemu_agent_command(&started.to_string(), 5, 0).map_err(|e| NodeError::from_virt(op, "domain", name, e))
        })?;
        let bad = |what: &str| NodeError::InvalidState { op, name: name.into(), reason: format!("the guest agent answered {what}") };
        let reply: serde_json::Value = serde_json::from_str(&reply).map_err(|_| bad("no JSON"))?;
        let pid = reply["return"]["pid"].as_i64().ok_or_else(|| bad("no pid"))?;
        let status = serde_json::json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}).to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_seconds);
        loop {
            let reply = self.with_conn(|c| {
                let d = Self::domain(c, name, op)?;
                d.qemu_agent_command(&status, 5, 0).map_err(|e| NodeError::from_virt(op, "domain", name, e))
            })?;
            let reply: serde_json::Value = serde_json::from_str(&reply).map_err(|_| bad("no JSON"))?;
            let r = &reply["return"];
            if r["exited"].as_bool() == Some(true) {
                // What the guest wrote is bounded before it is decoded.
                let err = r["err-data"].as_str().unwrap_or_default();
                let err = super::base64::decode(&err[..err.len().min(8192)]);
                return Ok(AgentExec {
                    exit_code: r["exitcode"].as_i64().unwrap_or(-1) as i32,
                    stderr: String::from_utf8_lossy(&err[..err.len().min(4096)]).into_owned(),
                });
            }
            if std::time::Instant::now() >= deadline {
                return Err(NodeError::InvalidState {
                    op,
                    name: name.into(),
                    reason: format!("the command ran longer than {timeout_seconds} s"),
                });
            }
            // Short commands are answered soon; longer ones are not asked after as often.
            let waited = deadline.saturating_duration_since(std::time::Instant::now());
            let early = std::time::Duration::from_secs(timeout_seconds).saturating_sub(waited) < std::time::Duration::from_secs(2);
            std::thread::sleep(std::time::Duration::from_millis(if early { 20 } else { 100 }));
        }
    }

    fn domain_announce(&self, name: &str) -> Result<(), NodeError> {
        let op = "announce the NIC of";
        let cmd = r#"{"execute": "announce-self", "arguments": {"initial": 50, "max": 550, "rounds": 5, "step": 100}}"#;
        self.with_conn(|c| {
            let d = Self::domain(c, name, op)?;
            d.qemu_monitor_command(cmd, 0).map(|_| ()).map_err(|e| NodeError::from_virt(op, "domain", name, e))
        })
    }

    fn domain_clock_sync(&self, name: &str) -> Result<(), NodeError> {
        self.with_conn(|c| {
            let d = Self::domain(c, name, "set the clock of")?;
            d.set_time(0, 0, virt::sys::VIR_DOMAIN_TIME_SYNC)
                .map(drop)
                .map_err(|e| NodeError::from_virt("set the clock of", "domain", name, e))
        })
    }

    fn domain_undefine(&self, name: &str) -> Result<(), NodeError> {
        self.with_conn(|c| {
            let d = Self::domain(c, name, "undefine")?;
            let flags = virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM
                | virt::sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA;
            match d.undefine_flags(flags) {
                // Drivers without NVRAM or checkpoints (the test driver) refuse those flags.
                Err(e) if e.message().contains("unsupported flags") => d
                    .undefine_flags(virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
                    .map_err(|e| NodeError::from_virt("undefine", "domain", name, e)),
                r => r.map_err(|e| NodeError::from_virt("undefine", "domain", name, e)),
            }
        })
    }

    fn domain_state(&self, name: &str) -> Result<DomainState, NodeError> {
        self.with_conn(|c| {
            let (s, _) = Self::domain(c, name, "read state of")?
                .get_state()
                .map_err(|e| NodeError::from_virt("read state of", "domain", name, e))?;
            Ok(map_state(s))
        })
    }

    fn domain_list(&self) -> Result<Vec<DomainSummary>, NodeError> {
        self.with_conn(|c| {
            let domains = c.list_all_domains(0).map_err(|e| NodeError::from_virt("list", "domains", &self.uri, e))?;
            let mut out = Vec::with_capacity(domains.len());
            for d in domains {
                // A domain can vanish between listing and reading it; skip it then.
                let (Ok(name), Ok(uuid), Ok((s, reason))) = (d.get_name(), d.get_uuid_string(), d.get_state()) else { continue };
                out.push(DomainSummary { name, uuid, state: map_state(s), failed_stop: failed_stop(s, reason) });
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    fn domain_xml(&self, name: &str) -> Result<String, NodeError> {
        self.with_conn(|c| {
            Self::domain(c, name, "read XML of")?.get_xml_desc(0).map_err(|e| NodeError::from_virt("read XML of", "domain", name, e))
        })
    }

    fn network_xml(&self, name: &str) -> Result<String, NodeError> {
        LibvirtNode::network_xml(self, name)
    }

    fn network_dhcp_host(&self, name: &str, host_xml: &str, add: bool) -> Result<(), NodeError> {
        LibvirtNode::network_dhcp_host(self, name, host_xml, add)
    }

    fn network_leases(&self, name: &str) -> Result<Vec<(String, String)>, NodeError> {
        LibvirtNode::network_leases(self, name)
    }

    fn network_state(&self, name: &str) -> Result<Option<ObjectState>, NodeError> {
        LibvirtNode::network_state(self, name)
    }

    fn network_ensure(&self, name: &str, xml: &str) -> Result<(), NodeError> {
        LibvirtNode::network_ensure(self, name, xml)
    }

    fn network_delete(&self, name: &str) -> Result<(), NodeError> {
        LibvirtNode::network_delete(self, name)
    }

    fn network_set(&self, name: &str, active: Option<bool>, autostart: Option<bool>) -> Result<(), NodeError> {
        LibvirtNode::network_set(self, name, active, autostart)
    }

    fn pool_state(&self, name: &str) -> Result<Option<ObjectState>, NodeError> {
        LibvirtNode::pool_state(self, name)
    }

    fn pool_ensure_dir(&self, name: &str, path: &Path) -> Result<(), NodeError> {
        LibvirtNode::pool_ensure_dir(self, name, path)
    }

    fn pool_delete(&self, name: &str) -> Result<(), NodeError> {
        LibvirtNode::pool_delete(self, name)
    }

    fn pool_ensure_logical(&self, name: &str, vg: &str, devices: &[std::path::PathBuf]) -> Result<(), NodeError> {
        LibvirtNode::pool_ensure_logical(self, name, vg, devices)
    }

    fn pool_info(&self, name: &str) -> Result<Option<super::PoolInfo>, NodeError> {
        LibvirtNode::pool_info(self, name)
    }

    fn pool_remove(&self, name: &str, wipe: bool) -> Result<(), NodeError> {
        LibvirtNode::pool_remove(self, name, wipe)
    }

    fn volume_create_from(&self, pool: &str, spec: &VolumeSpec, from_pool: &str, from: &str) -> Result<VolumeInfo, NodeError> {
        LibvirtNode::volume_create_from(self, pool, spec, from_pool, from)
    }

    fn volume_create(&self, pool: &str, spec: &VolumeSpec) -> Result<VolumeInfo, NodeError> {
        LibvirtNode::volume_create(self, pool, spec)
    }

    fn volume_upload_from(
        &self,
        pool: &str,
        name: &str,
        format: xml::DiskFormat,
        private: bool,
        len: u64,
        data: &mut dyn std::io::Read,
    ) -> Result<VolumeInfo, NodeError> {
        // The upload overwrites the whole file; the capacity only has to admit `data`.
        let spec = VolumeSpec { name: name.to_owned(), capacity_bytes: len, format, backing: None, private };
        let vol_xml = xml::volume_xml(&spec)?;
        let mut upload = |c: &Connect| super::upload::upload(c, pool, name, &vol_xml, len, data);
        // A large stream (an image) runs on a connection of its own: the shared one stays
        // free for every other call to the node while it lasts.
        if len > OWN_CONNECTION_BYTES {
            let conn = self.connect_own()?;
            upload(&conn.0)
        } else {
            self.with_conn(upload)
        }
    }

    fn volume_delete(&self, pool: &str, name: &str) -> Result<(), NodeError> {
        LibvirtNode::volume_delete(self, pool, name)
    }

    fn volume_download(&self, pool: &str, name: &str, to: &mut dyn std::io::Write) -> Result<u64, NodeError> {
        // A stream of a whole disk runs on a connection of its own (see volume_upload_from).
        let conn = self.connect_own()?;
        let c = &conn.0;
        let err = |op| move |e| NodeError::from_virt(op, "volume", name, e);
        let p = LibvirtNode::pool(c, pool)?;
        let vol = virt::storage_vol::StorageVol::lookup_by_name(&p, name).map_err(err("find"))?;
        let stream = virt::stream::Stream::new(c, 0).map_err(err("open a stream from"))?;
        vol.download(&stream, 0, 0, 0).map_err(err("download"))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let n = match stream.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = stream.abort();
                    return Err(err("receive data of")(e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(source) = to.write_all(&buf[..n]) {
                let _ = stream.abort();
                return Err(NodeError::Read { name: name.to_owned(), source });
            }
            got += n as u64;
        }
        stream.finish().map_err(err("finish download of"))?;
        Ok(got)
    }

    fn domain_xml_migratable(&self, name: &str) -> Result<String, NodeError> {
        let flags = virt::sys::VIR_DOMAIN_XML_MIGRATABLE | virt::sys::VIR_DOMAIN_XML_SECURE;
        self.with_conn(|c| {
            Self::domain(c, name, "read XML of")?.get_xml_desc(flags).map_err(|e| NodeError::from_virt("read XML of", "domain", name, e))
        })
    }

    fn domain_migrate_live(&self, name: &str, dest_uri: &str, migration_uri: Option<&str>, dest_xml: &str) -> Result<(), NodeError> {
        // The migration takes long: on a connection of its own.
        let conn = self.connect_own()?;
        let d = Self::domain(&conn.0, name, "migrate")?;
        let params = virt::domain::MigrateParameters {
            dest_xml: Some(dest_xml.to_owned()),
            persist_xml: Some(dest_xml.to_owned()),
            uri: migration_uri.map(str::to_owned),
            ..Default::default()
        };
        let flags = virt::sys::VIR_MIGRATE_LIVE
            | virt::sys::VIR_MIGRATE_PEER2PEER
            | virt::sys::VIR_MIGRATE_PERSIST_DEST
            | virt::sys::VIR_MIGRATE_NON_SHARED_INC
            | virt::sys::VIR_MIGRATE_AUTO_CONVERGE;
        d.migrate_to_uri3(Some(dest_uri), params, flags).map_err(|e| NodeError::from_virt("migrate", "domain", name, e))
    }

    fn volume_get(&self, pool: &str, name: &str) -> Result<Option<VolumeInfo>, NodeError> {
        LibvirtNode::volume_get(self, pool, name)
    }

    fn volume_resize(&self, pool: &str, name: &str, capacity_bytes: u64) -> Result<(), NodeError> {
        LibvirtNode::volume_resize(self, pool, name, capacity_bytes)
    }

    fn domain_agent_addresses(&self, name: &str) -> Result<Vec<(String, String)>, NodeError> {
        self.with_conn(|c| {
            let d = Self::domain(c, name, "ask the guest agent of")?;
            let ifaces = d
                .interface_addresses(virt::sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
                .map_err(|e| NodeError::from_virt("ask the guest agent of", "domain", name, e))?;
            Ok(ifaces
                .into_iter()
                .flat_map(|i| {
                    let mac = i.hwaddr.to_ascii_lowercase();
                    i.addrs.into_iter().filter(|a| a.typed == virt::sys::VIR_IP_ADDR_TYPE_IPV4 as i64).map(move |a| (mac.clone(), a.addr))
                })
                .filter(|(_, ip)| !ip.starts_with("127."))
                .collect())
        })
    }

    fn domain_console(&self, name: &str) -> Result<Box<dyn Console>, NodeError> {
        let conn = self.connect_own()?;
        let d = Self::domain(&conn.0, name, "open the console of")?;
        let stream = Stream::new(&conn.0, virt::sys::VIR_STREAM_NONBLOCK)
            .map_err(|e| NodeError::from_virt("open a stream to", "domain", name, e))?;
        d.open_console(None, &stream, 0).map_err(|e| NodeError::from_virt("open the console of", "domain", name, e))?;
        Ok(Box::new(ConsoleStream { stream, _conn: conn }))
    }

    fn domain_open_graphics(&self, name: &str) -> Result<std::os::fd::OwnedFd, NodeError> {
        use std::os::fd::FromRawFd;
        self.with_conn(|c| {
            let d = Self::domain(c, name, "open the VNC display of")?;
            let fd = d
                .open_graphics_fd(0, virt::sys::VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)
                .map_err(|e| NodeError::from_virt("open the VNC display of", "domain", name, e))?;
            // SAFETY: libvirt hands over a new descriptor that nothing else owns.
            Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
        })
    }

    fn domain_reboot(&self, name: &str) -> Result<(), NodeError> {
        self.with_conn(|c| Self::domain(c, name, "reboot")?.reboot(0).map_err(|e| NodeError::from_virt("reboot", "domain", name, e)))
    }

    fn domain_block_resize(&self, name: &str, target: &str, capacity_bytes: u64) -> Result<(), NodeError> {
        self.with_conn(|c| {
            Self::domain(c, name, "resize a disk of")?
                .block_resize(target, capacity_bytes, virt::sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES)
                .map(drop)
                .map_err(|e| NodeError::from_virt("resize a disk of", "domain", name, e))
        })
    }

    fn domain_device_attach(&self, name: &str, device_xml: &str) -> Result<(), NodeError> {
        self.device_change(name, device_xml, true)
    }

    fn domain_device_detach(&self, name: &str, device_xml: &str) -> Result<(), NodeError> {
        self.device_change(name, device_xml, false)
    }

    fn domain_metadata_set(&self, name: &str, element_xml: &str) -> Result<(), NodeError> {
        self.with_conn(|c| {
            let d = Self::domain(c, name, "set metadata of")?;
            let err = |e| NodeError::from_virt("set metadata of", "domain", name, e);
            let mut flags = virt::sys::VIR_DOMAIN_AFFECT_CONFIG;
            if d.is_active().map_err(err)? {
                flags |= virt::sys::VIR_DOMAIN_AFFECT_LIVE;
            }
            d.set_metadata(virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32, Some(element_xml), Some("kvmctl"), Some(xml::METADATA_NS), flags)
                .map_err(err)
                .map(drop)
        })
    }

    fn nwfilter_exists(&self, name: &str) -> Result<bool, NodeError> {
        self.with_conn(|c| match virt::nwfilter::NWFilter::lookup_by_name(c, name) {
            Ok(_) => Ok(true),
            Err(e) if e.code() == virt::error::ErrorNumber::NoNwfilter => Ok(false),
            Err(e) => Err(NodeError::from_virt("look up", "network filter", name, e)),
        })
    }

    fn network_list(&self) -> Result<Vec<String>, NodeError> {
        LibvirtNode::network_list(self)
    }

    fn volume_list(&self, pool: &str) -> Result<Vec<VolumeInfo>, NodeError> {
        LibvirtNode::volume_list(self, pool)
    }
}
