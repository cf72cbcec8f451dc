//! Storage pools.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A storage pool on a node: a directory, or an LVM volume group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoragePool {
    pub name: String,
    pub node: String,
    /// `dir` or `lvm`.
    pub kind: String,
    /// The directory, or the volume group.
    pub source: String,
    /// Where its volumes are on the node (the directory, or `/dev/VG`).
    pub path: String,
    /// `active`, `inactive` or `missing` (kvmctl knows it, libvirt does not).
    pub state: String,
    pub capacity_bytes: u64,
    pub allocation_bytes: u64,
    pub available_bytes: u64,
    /// The daemon's own pool (setting `pool`): images, and disks unless told otherwise.
    pub default: bool,
    /// What lives in it: `vm NAME`, `disk VM/DISK`, `image NAME`, `kept disk VOLUME`.
    pub used_by: Vec<String>,
}

/// `POST /v1/pools`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolCreateRequest {
    /// A DNS label.
    pub name: String,
    /// `dir` or `lvm`.
    pub kind: String,
    /// `dir`: an absolute directory on the node (made when missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `lvm`: the volume group (used as it is when it exists, else made on `devices`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_group: Option<String>,
    /// `lvm`: block devices for a new volume group (their contents are lost).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}
