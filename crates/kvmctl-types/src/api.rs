//! Request and response bodies of the REST API (`/v1/...`).
//!
//! Field names are the wire format: renaming one is an API change and shows up in the
//! committed OpenAPI document (`openapi/kvmctl.json`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The one error body every endpoint returns on failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable kind: `not_found`, `invalid_request`, `conflict`, `quota_exceeded`,
    /// `insufficient_capacity`, `unavailable`, `internal`.
    pub error: String,
    /// What went wrong and what to do next, for a person.
    pub message: String,
    /// The request field at fault, for `invalid_request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Correlates with the daemon's log lines for this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `GET /v1/status`: what the daemon is, and whether the hypervisor behind it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusResponse {
    /// kvmctl version of the daemon.
    pub version: String,
    pub database: DatabaseStatus,
    pub hypervisor: HypervisorStatus,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DatabaseStatus {
    /// Where the database lives (a file path for SQLite).
    pub path: String,
    /// Highest applied migration.
    pub schema_version: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HypervisorStatus {
    /// libvirt connection URI the daemon uses.
    pub uri: String,
    /// Whether libvirt answered on the last attempt.
    pub reachable: bool,
    /// libvirt library version of the connection, as `major.minor.micro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt_version: Option<String>,
    /// Hypervisor (QEMU) version behind libvirt, as `major.minor.micro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor_version: Option<String>,
    /// Hypervisor driver name as libvirt reports it (`QEMU`, `TEST`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Host name of the node behind the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Why libvirt is unreachable and what to do, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Domain type new VMs get: `kvm` or `qemu` (TCG emulation).
    pub domain_type: String,
    /// Where that choice comes from: the configuration, the last `kvmctl host doctor`
    /// verdict, or the safe default when there is neither.
    pub domain_type_source: String,
}

/// Status of one host check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    Warn,
    Fail,
    Skipped,
}

/// One host check of `kvmctl host doctor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Check {
    /// Stable id, e.g. `kvm.functional`, `libvirt.daemon`.
    pub id: String,
    pub status: CheckStatus,
    /// What was looked at, and what was found.
    pub evidence: String,
    /// The command or change that fixes it (absent when ok).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fix: String,
    /// A failure of this check stops VM creation.
    pub blocks: bool,
}

/// Verdict of the functional KVM probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KvmVerdict {
    /// KVM runs guests: domain type `kvm`.
    Functional,
    /// `/dev/kvm` is there but guests do not run usefully: TCG (`qemu`).
    NotFunctional,
    /// No `/dev/kvm` (or no QEMU to probe with): TCG only.
    Absent,
}

/// `kvmctl host doctor` report; `GET /v1/host` returns the last one written on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DoctorReport {
    /// Domain type VMs get: `kvm` where the functional probe passed, else `qemu`.
    pub domain_type: String,
    pub kvm_verdict: Option<KvmVerdict>,
    pub checks: Vec<Check>,
    /// Ids of failed checks that block VM creation.
    pub blocking_failures: Vec<String>,
    /// When the report was made (RFC 3339); absent in reports computed but not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Images

/// What an image is and how it boots: the template, in the sense of a VM's starting point.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct ImageTemplate {
    /// OS family, e.g. `debian`, `ubuntu`, `windows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_family: Option<String>,
    /// OS version, e.g. `12`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Whether the image runs cloud-init (VMs then get a NoCloud seed).
    #[serde(default)]
    pub cloud_init: bool,
    /// The user cloud-init creates when a VM names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_user: Option<String>,
    /// Firmware the image boots with: `bios`, `uefi` (no Secure Boot), `uefi-secure` (Secure
    /// Boot with Microsoft's keys enrolled). The first is the default.
    #[serde(default)]
    pub boot_modes: Vec<String>,
}

/// A base image on a node: VMs' root disks are copy-on-write overlays of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Image {
    pub name: String,
    /// `qcow2` or `raw`.
    pub format: String,
    /// Disk size the guest sees, in bytes.
    pub virtual_bytes: u64,
    /// Size of the file on the node, in bytes.
    pub file_bytes: u64,
    /// SHA-256 of the imported file.
    pub sha256: String,
    /// Where it was imported from.
    pub source: String,
    pub node: String,
    pub pool: String,
    pub volume: String,
    /// Path of the volume on the node.
    pub path: String,
    pub template: ImageTemplate,
    /// Set for images that boot a kernel directly rather than through firmware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_boot: Option<KernelBoot>,
    /// VMs whose root disk is backed by this image; `rm` refuses while any exist.
    pub used_by: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// Direct kernel boot: kernel and initrd volumes beside the disk image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KernelBoot {
    pub kernel_volume: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_volume: Option<String>,
    pub cmdline: String,
}

/// `POST /v1/images`: import a disk image into the node's storage pool.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageImportRequest {
    /// Image name (a DNS label).
    pub name: String,
    /// Absolute path on the daemon's host, or an `http://`/`https://` URL.
    pub source: String,
    /// Expected SHA-256 (hex); the import fails when the file differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Template metadata; when absent and the source has a kvmctl `image.json` beside it,
    /// that file's metadata is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<ImageTemplate>,
    /// Kernel to boot directly (absolute path on the daemon's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Initrd for `kernel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// Kernel command line for `kernel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Plans and VMs

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
    /// Image to boot from.
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
    /// Leave the VM stopped after creating it.
    #[serde(default)]
    pub no_start: bool,
    /// Do not allocate the SSH forward a VM gets by default (the daemon's `ssh_forward`).
    #[serde(default)]
    pub no_ssh_forward: bool,
    /// Only nodes carrying all these labels (`zone: a`) may take the VM.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// `best-fit` (default: the node with the least capacity left after the VM) or `spread`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
    /// Delete the VM this many seconds after it is created (60 to 2592000, 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
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
    pub owner: String,
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

// ---------------------------------------------------------------------------------------
// Networking

/// A host port forwarded to a port of a VM (DNAT in the node's `inet kvmctl` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Forward {
    /// `tcp` or `udp`.
    pub protocol: String,
    pub host_port: u16,
    pub guest_port: u16,
    /// The pool the host port came from: `ssh`, `vnc` or `general`.
    pub pool: String,
    /// For the VNC forward (pool `vnc`), in `GET|POST /v1/vms/{name}/forwards` only: the
    /// password the VM's VNC server asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnc_password: Option<String>,
}

/// `POST /v1/vms/{name}/forwards`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardCreateRequest {
    /// Port in the guest (ignored for the VNC pool).
    #[serde(default)]
    pub guest_port: u16,
    /// A host port of your choice; it must lie in one of the pools and be free. Without it,
    /// the lowest free port of `pool` is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// `general` (the default), `ssh` or `vnc`. `vnc` forwards the VM's VNC console (the
    /// daemon's `vnc_forwards` must be on; the VM must be stopped; `guest_port` is ignored):
    /// VNC then listens on every address at the host port, behind the VM's VNC password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// `tcp` (the default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// A host port pool and how much of it is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PortPoolStatus {
    pub name: String,
    /// `START-END`, inclusive.
    pub range: String,
    pub size: u32,
    pub used: u32,
}

/// A libvirt network on the node; `managed` ones were made by `kvmctl network create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Network {
    pub name: String,
    pub managed: bool,
    /// `nat`, `isolated`, or libvirt's forward mode for networks kvmctl did not make.
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// `active`, `inactive`, `creating` or `deleting`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// VMs attached to it.
    pub vms: Vec<String>,
}

/// `POST /v1/networks`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkCreateRequest {
    /// Network name (a DNS label); also the libvirt network's name.
    pub name: String,
    /// IPv4 subnet in CIDR form, e.g. `192.168.100.0/24` (prefix 8 to 29); the host takes
    /// the first address.
    pub subnet: String,
    /// `FIRST-LAST` addresses handed out by DHCP; defaults to the second address through the
    /// last but one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_range: Option<String>,
    /// No NAT: guests reach the host and each other only.
    #[serde(default)]
    pub isolated: bool,
}

// ---------------------------------------------------------------------------------------
// Users, tokens, quotas, audit

/// A user of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub name: String,
    /// `admin` or `user`.
    pub role: String,
    pub disabled: bool,
    /// May size VMs with vcpus/memory/disk rather than a plan only.
    pub custom_sizing: bool,
    pub created_at: i64,
}

/// `POST /v1/users` (admins).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserCreateRequest {
    /// A DNS label.
    pub name: String,
    /// `user` (the default) or `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_sizing: Option<bool>,
}

/// `PATCH /v1/users/{name}` (admins): what is given changes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_sizing: Option<bool>,
}

/// An API token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    /// The public id (the part after `kvm_`).
    pub id: String,
    pub user: String,
    pub description: String,
    /// `active`, `expired` or `revoked`.
    pub state: String,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Days until it expires (1 to 3650); without it, it never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<u32>,
    /// Admins only: the user the token is for (default: the caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The new token: `token` is shown this once and cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    /// `kvm_<id>_<secret>`: send it as `Authorization: Bearer <token>`.
    pub token: String,
    pub info: Token,
}

/// A user's quota: limits in force and what is in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Quota {
    pub user: String,
    /// Admins have no quota.
    pub unlimited: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disk_gib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_forwards: Option<u64>,
    /// Limits set for this user rather than taken from the defaults.
    pub overridden: Vec<String>,
    pub used_vms: u64,
    pub used_vcpus: u64,
    pub used_memory_mib: u64,
    pub used_disk_gib: u64,
    pub used_forwards: u64,
}

/// `PUT /v1/users/{name}/quota` (admins): given limits are set, `reset` ones go back to
/// the defaults, the rest stay.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaSetRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disk_gib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_forwards: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reset: Vec<String>,
}

/// One state-changing request as the audit log has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    pub request_id: String,
    /// Absent when the caller was not authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// `ok`, or the error kind (`forbidden`, `quota_exceeded`, ...).
    pub outcome: String,
}

/// One VM-hour of usage (`GET /v1/usage`): written once the hour is over, never changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageRecord {
    pub vm: String,
    pub vm_id: String,
    pub owner: String,
    pub node: String,
    /// Start of the hour, Unix seconds (a multiple of 3600).
    pub hour: i64,
    /// The same instant, RFC 3339 UTC.
    pub hour_utc: String,
    /// The VM's state when the hour was metered.
    pub state: String,
    pub vcpus: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The hourly price then (decimal, in `currency`).
    pub price_hourly: String,
    /// What the hour cost: the price when running, its stopped share otherwise.
    pub cost: String,
    pub currency: String,
}

/// What `kvmctl gc` found (and removed, when cleaning).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcReport {
    /// Whether debris was removed (`POST /v1/gc`) or only reported (`GET /v1/gc`).
    pub clean: bool,
    pub items: Vec<GcItem>,
}

/// One piece of debris: `domain`, `volume`, `dhcp_host`, `firewall` (removable) or `row`
/// (a VM whose domain vanished; reported only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcItem {
    pub kind: String,
    pub name: String,
    pub detail: String,
    pub removed: bool,
    /// When gc first reported it (Unix seconds); `POST /v1/gc` removes it only once it has
    /// been reported for `gc_grace_seconds`.
    #[serde(default)]
    pub first_seen_at: i64,
}

/// One event of `GET /v1/events` (the `data` of a server-sent event; its `event` field is
/// `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiEvent {
    /// `vm.state` (a VM changed state), `vm.stage` (a readiness stage was reached),
    /// `vm.deleted`.
    pub kind: String,
    pub vm: String,
    pub owner: String,
    /// The new state, for `vm.state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The stage reached, for `vm.stage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Unix milliseconds.
    pub at_ms: i64,
}
