//! Networks, forwards and port pools.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
    /// Labels given at create (managed networks).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
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
    /// At most 32; keys and values 1-63 of `A-Z a-z 0-9 . _ -`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}
