//! Snapshots of a VM (`/v1/vms/{name}/snapshots`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A snapshot of a VM: its disk, its UEFI variables and, with `memory`, its RAM and devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    pub name: String,
    /// The snapshot the VM was at when this one was taken (`null`: the VM as created).
    pub parent: Option<String>,
    pub description: String,
    /// RAM and device state are in it: a revert brings the VM back running at that instant.
    pub memory: bool,
    /// `running` or `stopped`: the VM when the snapshot was taken.
    pub vm_state: String,
    /// `creating`, `ready` or `deleting`.
    pub state: String,
    /// Bytes of the memory image and the NVRAM copy (the disk's share lives in its disk).
    pub size_bytes: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// The VM is at this snapshot now (taken or reverted to last).
    pub current: bool,
}

/// `POST /v1/vms/{name}/snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateRequest {
    /// 1-63 of a-z, 0-9 and '-', starting with a letter; unique among the VM's snapshots.
    pub name: String,
    /// Capture RAM and device state too (a running VM only); the VM pauses while its RAM is written.
    #[serde(default)]
    pub memory: bool,
    /// Free text, up to 1000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}
