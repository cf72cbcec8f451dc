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
}
