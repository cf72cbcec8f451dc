//! Errors, status and the host doctor's report.

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
    /// `sqlite` or `postgres`.
    pub engine: String,
    /// Where the database lives: a file path for SQLite, the URL (without its password) for
    /// PostgreSQL; empty for callers who are not admins.
    pub path: String,
    /// Highest applied migration.
    pub schema_version: i64,
    /// Whether this daemon runs the periodic work (reconciler, metering, hygiene, gc): always
    /// with SQLite; with PostgreSQL, the one daemon holding the leader lease.
    pub leader: bool,
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
