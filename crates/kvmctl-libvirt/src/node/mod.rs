//! The `Node` trait (everything kvmctl does on a compute node) and its implementations:
//! `LibvirtNode` over any libvirt URI (`libvirt`), and a serial console stream (`console`).
//! The in-memory node of the tests (`kvmctl-testkit`) implements the same trait.
//!
//! libvirt calls block, so `Node` is a synchronous trait; the daemon calls it through an
//! async facade that runs each call on a blocking thread.

mod base64;
mod conn;
mod console;
mod leases;
mod libvirt;
mod networks;
mod storage;
mod upload;

pub use conn::LibvirtNode;
pub use console::ConsoleStream;
pub use networks::ReserveAhead;

use crate::error::NodeError;
use crate::xml::{self, VolumeSpec};
use std::path::{Path, PathBuf};

/// Versions and identity of the hypervisor behind a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVersions {
    /// libvirt library version, `major.minor.micro`.
    pub libvirt: String,
    /// Hypervisor version (QEMU's for `qemu://`), `major.minor.micro`.
    pub hypervisor: String,
    /// Driver name as libvirt reports it (`QEMU`, `Test`).
    pub driver: String,
    pub hostname: String,
}

/// A domain's run state as libvirt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    Running,
    Paused,
    ShuttingDown,
    Shutoff,
    Crashed,
    Other,
}

/// What a command run through the guest agent ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentExec {
    pub exit_code: i32,
    /// Its standard error, at most 4 KiB, invalid UTF-8 replaced.
    pub stderr: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSummary {
    pub name: String,
    pub uuid: String,
    pub state: DomainState,
    /// Shut off by a failure, not by a request: QEMU died or was killed, or libvirtd found
    /// it gone when it started again (libvirt's shutoff reasons crashed, failed, daemon and
    /// unknown). A shutdown, a destroy, a save or a migration is a request.
    pub failed_stop: bool,
}

/// Whether a network or pool exists, runs, and starts with libvirtd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectState {
    pub active: bool,
    pub autostart: bool,
    pub persistent: bool,
}

/// A storage pool as libvirt reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    /// libvirt's pool type: `dir`, `logical` (an LVM volume group), ...
    pub kind: String,
    /// Where its volumes are: a directory, or `/dev/VG`.
    pub target: std::path::PathBuf,
    pub active: bool,
    pub capacity_bytes: u64,
    pub allocation_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    pub path: PathBuf,
    pub capacity_bytes: u64,
}

/// What a node has: CPUs and memory (libvirt's node info), and its storage pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeResources {
    pub cpus: u64,
    pub memory_bytes: u64,
    pub free_memory_bytes: u64,
    pub pool_capacity_bytes: u64,
    pub pool_available_bytes: u64,
}

/// Everything kvmctl does on a compute node.
pub trait Node: Send + Sync {
    /// The connection URI.
    fn uri(&self) -> &str;
    fn versions(&self) -> Result<NodeVersions, NodeError>;
    /// CPUs, memory and the space of storage pool `pool`.
    fn resources(&self, pool: &str) -> Result<NodeResources, NodeError>;

    fn domain_define(&self, xml: &str) -> Result<DomainSummary, NodeError>;
    fn domain_start(&self, name: &str) -> Result<(), NodeError>;
    /// Asks the guest to shut down: through its guest agent when it answers, else ACPI.
    fn domain_shutdown(&self, name: &str) -> Result<(), NodeError>;
    /// Stops the domain at once. Stopping a stopped domain succeeds.
    fn domain_destroy(&self, name: &str) -> Result<(), NodeError>;
    /// Removes the definition (and any NVRAM, managed save and snapshot metadata).
    fn domain_undefine(&self, name: &str) -> Result<(), NodeError>;
    fn domain_state(&self, name: &str) -> Result<DomainState, NodeError>;
    /// Saves a running domain's RAM and device state to `path` on the node (a file libvirt
    /// writes) and stops it; the definition stays.
    fn domain_save(&self, name: &str, path: &Path) -> Result<(), NodeError>;
    /// Starts a domain from a file `domain_save` wrote, running (or paused).
    fn domain_restore(&self, path: &Path, running: bool) -> Result<(), NodeError>;
    /// Sets the guest's clock from the host's through its guest agent (after a restore, the
    /// guest's clock stands where it was saved); an error when no agent answers.
    fn domain_clock_sync(&self, name: &str) -> Result<(), NodeError>;
    /// Runs `argv` in the guest as root through its guest agent (`guest-exec`), waiting at
    /// most `timeout_seconds`: its exit code and standard error (bounded). An error when no
    /// agent answers.
    fn domain_agent_exec(&self, name: &str, argv: &[String], timeout_seconds: u64) -> Result<AgentExec, NodeError>;
    /// Has QEMU announce the guest's NIC (gratuitous RARP from the MAC the guest uses), so the
    /// bridge learns where that MAC is now.
    fn domain_announce(&self, name: &str) -> Result<(), NodeError>;
    /// Replaces a running domain's NIC (the one with the same MAC) by `interface_xml`, live
    /// only: what may change is what libvirt changes live (its filter and parameters).
    fn domain_interface_update(&self, name: &str, interface_xml: &str) -> Result<(), NodeError>;
    fn domain_list(&self) -> Result<Vec<DomainSummary>, NodeError>;
    fn domain_xml(&self, name: &str) -> Result<String, NodeError>;

    /// The network's XML (live definition).
    fn network_xml(&self, name: &str) -> Result<String, NodeError>;
    /// Adds (or removes) a DHCP host entry, live and in the persistent definition.
    fn network_dhcp_host(&self, name: &str, host_xml: &str, add: bool) -> Result<(), NodeError>;
    /// The network's current DHCP leases as `(mac, ipv4 or ipv6 address)`.
    fn network_leases(&self, name: &str) -> Result<Vec<(String, String)>, NodeError>;
    /// State of a libvirt network, `None` when there is no such network.
    fn network_state(&self, name: &str) -> Result<Option<ObjectState>, NodeError>;
    /// Defines (when absent), starts and marks autostart the network described by `xml`.
    fn network_ensure(&self, name: &str, xml: &str) -> Result<(), NodeError>;
    /// Stops and undefines a network.
    fn network_delete(&self, name: &str) -> Result<(), NodeError>;
    /// Starts or stops a network, and sets whether it autostarts; `None` leaves that as is.
    fn network_set(&self, name: &str, active: Option<bool>, autostart: Option<bool>) -> Result<(), NodeError>;
    /// State of a storage pool, `None` when there is no such pool.
    fn pool_state(&self, name: &str) -> Result<Option<ObjectState>, NodeError>;
    /// Makes sure a directory pool `name` over `path` exists, is active and autostarts.
    fn pool_ensure_dir(&self, name: &str, path: &Path) -> Result<(), NodeError>;
    fn pool_delete(&self, name: &str) -> Result<(), NodeError>;
    /// Defines, builds (`vgcreate` on `devices`, when the group does not exist yet), starts
    /// and autostarts an LVM pool over volume group `vg`; an existing pool is only started.
    fn pool_ensure_logical(&self, name: &str, vg: &str, devices: &[std::path::PathBuf]) -> Result<(), NodeError>;
    /// The pool's type, target and sizes; `None` when there is no such pool.
    fn pool_info(&self, name: &str) -> Result<Option<PoolInfo>, NodeError>;
    /// Stops and undefines a pool, removing its storage first when `wipe` (an LVM pool's
    /// volume group; a directory pool's directory when empty).
    fn pool_remove(&self, name: &str, wipe: bool) -> Result<(), NodeError>;
    /// A new volume in `pool` holding a copy of volume `from` of pool `from_pool`, converted
    /// to the new one's format (a raw logical volume from a qcow2 image, say).
    fn volume_create_from(&self, pool: &str, spec: &VolumeSpec, from_pool: &str, from: &str) -> Result<VolumeInfo, NodeError>;
    fn volume_create(&self, pool: &str, spec: &VolumeSpec) -> Result<VolumeInfo, NodeError>;
    /// Creates a private volume (`VolumeSpec::private`: a VM's seed) of `format` holding
    /// exactly `data`, sent over a libvirt stream in chunks (works for remote nodes too). A
    /// failed upload leaves no volume.
    fn volume_upload(&self, pool: &str, name: &str, format: xml::DiskFormat, data: &[u8]) -> Result<VolumeInfo, NodeError> {
        self.volume_upload_from(pool, name, format, true, data.len() as u64, &mut &data[..])
    }
    /// As `volume_upload`, streaming `len` bytes from `data` (an image file of any size),
    /// private or not.
    fn volume_upload_from(
        &self,
        pool: &str,
        name: &str,
        format: xml::DiskFormat,
        private: bool,
        len: u64,
        data: &mut dyn std::io::Read,
    ) -> Result<VolumeInfo, NodeError>;
    fn volume_delete(&self, pool: &str, name: &str) -> Result<(), NodeError>;
    /// Writes the whole file of a volume to `to`, over a libvirt stream (works for remote
    /// nodes too); returns the bytes written.
    fn volume_download(&self, _pool: &str, name: &str, _to: &mut dyn std::io::Write) -> Result<u64, NodeError> {
        Err(NodeError::Libvirt { op: "download", name: name.to_owned(), message: "this node cannot stream volumes".into() })
    }
    /// The domain's definition as a migration takes it: without runtime details, with
    /// secrets (its VNC password).
    fn domain_xml_migratable(&self, name: &str) -> Result<String, NodeError> {
        self.domain_xml(name)
    }
    /// Moves the running domain to the libvirt at `dest_uri`, live, peer to peer: the
    /// source libvirtd connects to the destination itself; the guest's writable disks are
    /// mirrored onto the volumes already made there (their top layer only), QEMU's memory
    /// over `migration_uri` (`tcp://HOST`; `None`: the destination's host name). The
    /// destination defines it persistently as `dest_xml`. A failure leaves the domain running
    /// here.
    fn domain_migrate_live(&self, name: &str, _dest_uri: &str, _migration_uri: Option<&str>, _dest_xml: &str) -> Result<(), NodeError> {
        Err(NodeError::Libvirt { op: "migrate", name: name.to_owned(), message: "this node cannot migrate domains".into() })
    }
    fn volume_list(&self, pool: &str) -> Result<Vec<VolumeInfo>, NodeError>;
    /// A volume by name, `None` when the pool has no such volume.
    fn volume_get(&self, pool: &str, name: &str) -> Result<Option<VolumeInfo>, NodeError>;
    /// Grows a volume that no running domain uses. Shrinking is refused by libvirt.
    fn volume_resize(&self, pool: &str, name: &str, capacity_bytes: u64) -> Result<(), NodeError>;

    /// The guest's IPv4 addresses per MAC as its guest agent reports them (`(mac, ip)`).
    fn domain_agent_addresses(&self, name: &str) -> Result<Vec<(String, String)>, NodeError>;
    /// A connection to the domain's serial console (its own libvirt connection).
    fn domain_console(&self, name: &str) -> Result<Box<dyn Console>, NodeError>;
    /// A socket connected to the domain's VNC server with its password check skipped
    /// (`virDomainOpenGraphicsFD`, SKIPAUTH): the daemon proxies it to a web console that
    /// holds a ticket. Only a node reached over a local unix socket can pass the descriptor.
    fn domain_open_graphics(&self, name: &str) -> Result<std::os::fd::OwnedFd, NodeError>;
    /// Asks the guest to reboot (ACPI).
    fn domain_reboot(&self, name: &str) -> Result<(), NodeError>;
    /// Grows the disk `target` (`vda`) of a running domain; the guest sees the new size at once.
    fn domain_block_resize(&self, name: &str, target: &str, capacity_bytes: u64) -> Result<(), NodeError>;
    /// Adds a device (`<disk>`, `<controller>`) to the domain's persistent definition and,
    /// when it runs, to the running guest (hotplug).
    fn domain_device_attach(&self, name: &str, device_xml: &str) -> Result<(), NodeError>;
    /// Removes a device from the persistent definition and, when the domain runs, asks the
    /// guest to let it go (the removal finishes when the guest agrees; see
    /// `domain_xml`'s live devices).
    fn domain_device_detach(&self, name: &str, device_xml: &str) -> Result<(), NodeError>;
    /// Replaces kvmctl's metadata element (namespace [`xml::METADATA_NS`]) in the domain's
    /// persistent definition and, when it runs, in the live one too.
    fn domain_metadata_set(&self, name: &str, element_xml: &str) -> Result<(), NodeError>;
    /// Whether the node defines the network filter (nwfilter) `name`.
    fn nwfilter_exists(&self, name: &str) -> Result<bool, NodeError>;
    /// Names of every network, defined or transient.
    fn network_list(&self) -> Result<Vec<String>, NodeError>;
}

/// A domain's serial console, owned by one thread that both reads and writes it.
pub trait Console: Send {
    /// Bytes the guest wrote: `Ok(None)` when none are waiting, `Ok(Some(0))` at the end.
    fn try_recv(&self, buf: &mut [u8]) -> Result<Option<usize>, NodeError>;
    /// Sends keystrokes to the guest (all of them, waiting out a full buffer).
    fn send(&self, data: &[u8]) -> Result<(), NodeError>;
}

/// libvirt's packed version number (`major * 1,000,000 + minor * 1,000 + micro`) as text.
pub(crate) fn version_string(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, (v / 1_000) % 1_000, v % 1_000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_are_dotted() {
        assert_eq!(super::version_string(9_000_000), "9.0.0");
        assert_eq!(super::version_string(7_002_022), "7.2.22");
    }
}
