//! Plans, VMs and compute nodes.

use super::Forward;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A named size with an hourly price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Plan {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// Price per hour, a decimal string (exact), e.g. `0.0125`.
    pub price_hourly: String,
    /// ISO 4217 code of the price (the daemon's `currency`).
    pub currency: String,
    pub sort_order: i64,
    /// A retired plan keeps its VMs but takes no new ones (listed to admins only).
    pub active: bool,
}

/// `POST /v1/plans` (admins).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanCreateRequest {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// Decimal string, at most 6 decimals, e.g. `0.0125`.
    pub price_hourly: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_order: Option<i64>,
}

/// `PATCH /v1/plans/{name}` (admins): what is given changes; `active: false` retires it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanUpdateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_gib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_hourly: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_order: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// `POST /v1/vms`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmCreateRequest {
    /// VM name (a DNS label); also the guest's hostname.
    pub name: String,
    /// Image to boot from; may be left out with `install_iso`.
    #[serde(default)]
    pub image: String,
    /// Plan giving vCPUs, memory and disk; `vcpus`, `memory_mib` and `disk_gib` override it.
    /// Without a plan all three are required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_gib: Option<u64>,
    /// OpenSSH public keys for the default user.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// The user cloud-init creates; defaults to the image's default user, else `kvmctl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The user's own user-data (cloud-config or script), merged with kvmctl's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// libvirt network for the NIC; defaults to the daemon's `network` setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `bios`, `uefi` or `uefi-secure`; defaults to the image's first boot mode, and must be
    /// one of its boot modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// An emulated TPM 2.0 (swtpm): its state is kept per VM and removed with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tpm: bool,
    /// Host directories shared with the guest over virtio-fs (admins only; under the
    /// daemon's `share_roots`). cloud-init mounts each at its `mount` path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<VmShare>,
    /// The storage pool for the root disk and seed (`kvmctl pool list`); default: the image's.
    /// On an LVM pool the root disk is a raw logical volume holding a copy of the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Install from an ISO image (`kind: iso`): the VM gets an empty root disk of
    /// `disk_gib` and boots this ISO first (then its disk), with a VNC console to follow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_iso: Option<String>,
    /// More ISO images attached as CD-ROMs (such as virtio-win's drivers), at most 2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_isos: Vec<String>,
    /// A guest profile: `windows-11` (q35, UEFI Secure Boot with Microsoft's keys, SMM, TPM
    /// 2.0, Hyper-V enlightenments, a Windows clock, virtio disk and NIC, a USB tablet; with
    /// `install_iso`, an answer file for an install without clicks). Defaults to the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The Windows install's answers (profile `windows-11` with `install_iso`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unattend: Option<UnattendSettings>,
    /// Leave the VM stopped after creating it.
    #[serde(default)]
    pub no_start: bool,
    /// Do not allocate the SSH forward a VM gets by default (the daemon's `ssh_forward`).
    #[serde(default)]
    pub no_ssh_forward: bool,
    /// Only nodes carrying all these labels (`zone: a`) may take the VM.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// The VM's own labels (`role: web`): at most 32, keys and values 1-63 of `A-Z a-z 0-9 .
    /// _ -`. `kvmctl apply` marks the VMs a lab file made with `kvmctl.lab`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `best-fit` (default: the node with the least capacity left after the VM) or `spread`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
    /// Delete the VM this many seconds after it is created (60 to 2592000, 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// The test run (`kvmctl test run`) the VM belongs to: it is deleted with the run, and
    /// when the run's runner goes silent past its grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_run: Option<String>,
}

/// What a Windows install answers by itself (profile `windows-11`). The account is
/// `VmCreateRequest.user` (default `kvmctl`), a local administrator.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnattendSettings {
    /// The account's password, 8-127 characters. It is written into the answer file, which
    /// stays on the VM's node (mode 0600) as its install medium until the VM is deleted.
    pub password: String,
    /// `en-US` (default), `de-DE`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// A Windows time zone name; default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The edition to install, by its name in the ISO; default `Windows 11 Pro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edition: Option<String>,
    /// A product key; without one, setup does not ask and Windows is activated later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_key: Option<String>,
}

impl std::fmt::Debug for UnattendSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnattendSettings")
            .field("password", &"(hidden)")
            .field("locale", &self.locale)
            .field("time_zone", &self.time_zone)
            .field("edition", &self.edition)
            .field("product_key", &self.product_key.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

/// `POST /v1/vms/{name}/clone`: a new VM from the VM's disk (now, or at one of its
/// snapshots) with a new identity.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmCloneRequest {
    /// The clone's name (a DNS label); also its hostname.
    pub name: String,
    /// Clone the disk as it was at this snapshot of the source (the source may keep
    /// running); without it, the disk as it is now (a running source pauses while it is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
    /// `linked` (default: an overlay on a read-only base kept while a clone uses it; clones
    /// of one snapshot share it) or `full` (a standalone copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Leave the clone stopped.
    #[serde(default)]
    pub no_start: bool,
    /// Do not allocate the clone an SSH forward.
    #[serde(default)]
    pub no_ssh_forward: bool,
    /// Delete the clone this many seconds after it is made (60 to 2592000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Start the clone from the memory of `from_snapshot` (a memory snapshot of a stopped
    /// source) instead of booting it: it wakes where the source was, then takes its own
    /// hostname, MAC, address, keys, machine-id and the host's clock. Needs `sudo` in the
    /// guest (cloud-init images have it).
    #[serde(default)]
    pub warm: bool,
    /// A source with a TPM: `fresh` (default: the clone's own, empty TPM; secrets sealed to
    /// the source's stay there) or `copy` (the source's TPM state as it is now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<String>,
    /// The test run the clone belongs to (as in `VmCreateRequest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_run: Option<String>,
}

/// Why placement chose or refused a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlacementVerdict {
    pub node: String,
    pub chosen: bool,
    /// Whether the node could take the VM at all.
    pub fits: bool,
    pub reason: String,
}

/// A compute node (admins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ComputeNode {
    pub name: String,
    pub uri: String,
    /// `active`, `draining` (keeps its VMs, takes no new ones) or `down` (did not answer
    /// the last capacity check; `error` says why).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Physical CPUs, memory and the storage pool's size, as libvirt last reported them.
    pub cpus: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// Overcommit ratios, e.g. `2.00`.
    pub cpu_overcommit: String,
    pub memory_overcommit: String,
    pub reserved_cpus: u64,
    pub reserved_memory_mib: u64,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// What the node may give out: (physical - reserved) x overcommit; disk is the pool.
    pub capacity_vcpus: u64,
    pub capacity_memory_mib: u64,
    /// What its VMs (running or not) are given.
    pub allocated_vcpus: u64,
    pub allocated_memory_mib: u64,
    pub allocated_disk_gib: u64,
    pub available_vcpus: u64,
    pub available_memory_mib: u64,
    pub available_disk_gib: u64,
    /// Number of VMs on the node; `vm_names` lists them (in `GET /v1/nodes/{name}`).
    pub vms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vm_names: Vec<String>,
    /// Unix seconds of the last capacity check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed_at: Option<i64>,
    /// The https URL of the node's agent (`kvmctl agent`), which writes its forwards and
    /// keeps its console logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// What the agent reports (in `GET /v1/nodes/{name}`): the domain type its KVM probe
    /// chose and why, or why it did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_status: Option<String>,
}

/// `POST /v1/nodes` (admins): a libvirt host by URI. Overcommit ratios are decimals
/// (`2.0`); the defaults are 2.0 for CPU and 1.0 for memory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeAddRequest {
    pub name: String,
    /// `qemu+ssh://host/system`, `qemu+tls://host/system`, `qemu+tcp://host/system`.
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_overcommit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_overcommit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_cpus: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The node's agent, `https://HOST:PORT` (default port 7443); it must answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// `PATCH /v1/nodes/{name}` (admins): what is given changes. `state` is `active` or
/// `draining`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeUpdateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_overcommit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_overcommit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_cpus: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_memory_mib: Option<u64>,
    /// Replaces all labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The node's agent, `https://HOST:PORT` (it must answer); `""` forgets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// `POST /v1/nodes/{name}/evacuate` (admins): the node is drained and each of its VMs
/// migrated to the node placement picks (live when it runs, cold when stopped).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct NodeEvacuation {
    pub node: String,
    pub vms: Vec<VmMove>,
}

/// One VM of an evacuation: where it went, or why it stayed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct VmMove {
    pub vm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub live: bool,
    /// Milliseconds the migration took.
    pub elapsed_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A virtual machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Vm {
    #[schema(value_type = uuid::Uuid)]
    pub id: crate::VmId,
    pub name: String,
    /// `creating`, `stopped`, `starting`, `running`, `stopping`, `rebooting`, `deleting`,
    /// `failed`.
    pub state: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub node: String,
    pub network: String,
    pub mac: String,
    /// The guest's IPv4 address: reserved before boot on networks with DHCP that kvmctl
    /// manages, else from the network's DHCP leases once the guest has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The user cloud-init creates, holding the VM's own key (`kvmctl vm exec` logs in as it).
    pub ssh_user: String,
    /// Host ports forwarded to the guest.
    #[serde(default)]
    pub forwards: Vec<Forward>,
    /// The guest's pinned SSH host key and where it was learned, e.g.
    /// `SHA256:... (console)` or `SHA256:... (first use)`; set at the first login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Readiness stages of the current boot, in order (in `GET /v1/vms/{name}` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readiness: Vec<ReadinessStage>,
    /// `bios`, `uefi` or `uefi-secure`.
    pub firmware: String,
    /// Has an emulated TPM 2.0.
    #[serde(default)]
    pub tpm: bool,
    /// Data disks, besides the root disk (`disk_gib`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<VmDisk>,
    /// Host directories shared over virtio-fs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<VmShare>,
    /// The guest profile (`windows-11`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// ISO images attached as CD-ROMs: the installer first (when it installs from one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<String>,
    pub owner: String,
    /// The VM's labels (`vm create --label`, `PUT /v1/vms/{name}/labels`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Why the VM is `failed`, or what the last operation reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// When the VM is deleted (`--ttl`), Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// How the node was chosen, node by node (create's answer, for admins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<PlacementVerdict>,
}

/// `PUT /v1/vms/{name}/labels`: the VM's labels, replaced whole.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmLabelsRequest {
    /// At most 32; keys and values 1-63 of `A-Z a-z 0-9 . _ -`. An empty map removes them all.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A VM's data disk (`kvmctl vm disk add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmDisk {
    /// Its name within the VM; the guest sees it as its serial
    /// (`/dev/disk/by-id/virtio-NAME`, `/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_NAME`).
    pub name: String,
    pub size_gib: u64,
    /// `virtio` or `scsi`.
    pub bus: String,
    /// The guest device it is attached as (`vdc`, `sde`); the guest may name it otherwise.
    pub target: String,
    /// `attached`, or `attaching`/`detaching` while an operation is under way.
    pub state: String,
    /// The storage pool it is in.
    #[serde(default)]
    pub pool: String,
}

/// A host directory shared with a VM over virtio-fs (`vm create --share`, `vm share add`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmShare {
    /// The host directory: absolute, under one of the daemon's `share_roots` once symlinks
    /// are resolved (the resolved path is what is recorded and shared).
    pub source: String,
    /// The virtio-fs tag the guest mounts it by (`mount -t virtiofs TAG DIR`): 1-36 of
    /// letters, digits, `-` and `_`.
    pub tag: String,
    /// The guest may read but not write (enforced on the host).
    #[serde(default)]
    pub readonly: bool,
    /// Where cloud-init mounts it in a Linux guest at boot (shares given at create; default
    /// `/mnt/TAG`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
}

/// `POST /v1/vms/{name}/disks`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmDiskAddRequest {
    /// 1-16 lower-case letters and digits, starting with a letter; default `disk1`, `disk2`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub size_gib: u64,
    /// `virtio` (default) or `scsi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// The storage pool for the disk (`kvmctl pool list`); default: the VM's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// `PATCH /v1/vms/{name}/disks/{disk}`: grow a data disk.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmDiskResizeRequest {
    pub size_gib: u64,
}

/// `POST /v1/vms/{name}/migrate` (admins): move the VM to node `to`, cold (it is stopped)
/// or live (`live`, it runs; its address must be free in the same subnet there).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmMigrateRequest {
    pub to: String,
    #[serde(default)]
    pub live: bool,
}

/// `POST /v1/vms/{name}/stop`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmStopRequest {
    /// Power off at once instead of asking the guest (ACPI) first.
    #[serde(default)]
    pub force: bool,
    /// How long the guest gets to shut down before it is powered off (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// `POST /v1/vms/{name}/resize`: CPU and memory while stopped; disk grows (online or
/// offline), never shrinks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmResizeRequest {
    /// Take this plan's size (and price). Users without custom sizing resize only this way;
    /// the plan's disk must not be smaller than the VM's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_gib: Option<u64>,
}

/// A readiness stage a boot reached: `defined`, `started`, `booting` (first console output),
/// `address`, `ssh_port`, `ssh_banner`, `ssh_login`, `cloud_init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReadinessStage {
    pub stage: String,
    /// When it was reached (Unix milliseconds).
    pub at_ms: i64,
    /// Milliseconds since `started`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<i64>,
    /// What was seen: the address and its source, the SSH banner, cloud-init's verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `POST /v1/vms/{name}/exec`: one command over SSH with the VM's key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmExecRequest {
    /// Run by the guest user's shell.
    pub command: String,
    /// Give up after this long (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmExecResponse {
    /// The command's exit status; -1 when it was cut off (`truncated`) before it ended.
    pub exit_status: i32,
    /// Standard output (UTF-8, invalid bytes replaced).
    pub stdout: String,
    pub stderr: String,
    /// The command printed more than the daemon keeps (`exec_output_max_bytes`, 8 MiB by
    /// default, stdout and stderr together): the output is cut there and the session closed.
    #[serde(default)]
    pub truncated: bool,
}

/// One entry of a guest directory (`GET /v1/vms/{name}/files` on a directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GuestFileEntry {
    pub name: String,
    pub dir: bool,
    pub size: u64,
}

/// Which console of a VM a web console ticket opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleKind {
    /// The serial console (text; one viewer at a time).
    Serial,
    /// The VNC display (shared between viewers, within `sessions_per_vm`).
    Vnc,
}

impl ConsoleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleKind::Serial => "serial",
            ConsoleKind::Vnc => "vnc",
        }
    }
}

/// `POST /v1/vms/{name}/console/ticket`: a ticket for one console WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleTicketRequest {
    pub kind: ConsoleKind,
}

/// A single-use console ticket: valid once, for 60 seconds, for the user who asked for it
/// (their session or token must open the WebSocket too), this VM and this kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsoleTicket {
    pub kind: ConsoleKind,
    /// The WebSocket's path, ticket included (`/v1/vms/{name}/console/{kind}?ticket=...`).
    pub path: String,
    /// Unix seconds after which the ticket is refused.
    pub expires_at: i64,
}
