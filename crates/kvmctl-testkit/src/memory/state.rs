//! What a `MemoryNode` holds, and finding it by name the way libvirt answers.

use kvmctl_libvirt::xml;
use kvmctl_libvirt::{DomainState, NodeError, VolumeInfo};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct MemDomain {
    pub xml: String,
    pub uuid: String,
    pub state: DomainState,
    pub failed_stop: bool,
}

#[derive(Debug, Clone)]
pub struct MemPool {
    pub path: PathBuf,
    pub active: bool,
    pub volumes: BTreeMap<String, (VolumeInfo, Vec<u8>)>,
}

#[derive(Debug, Clone)]
pub struct MemNetwork {
    /// The definition, with `<dhcp>` holding no host entries (they are `hosts`).
    pub xml: String,
    pub active: bool,
    pub autostart: bool,
    pub hosts: Vec<xml::DhcpHost>,
    pub leases: Vec<(String, String)>,
}

/// Everything the node holds; tests may look and change it through `MemoryNode::with`.
#[derive(Debug, Default)]
pub struct MemState {
    pub domains: BTreeMap<String, MemDomain>,
    /// Saved-state files (`domain_save`) and the domain each holds.
    pub saved: BTreeMap<std::path::PathBuf, String>,
    pub pools: BTreeMap<String, MemPool>,
    pub networks: BTreeMap<String, MemNetwork>,
    pub nwfilters: BTreeSet<String>,
    pub cpus: u64,
    pub memory_bytes: u64,
}

pub(super) fn not_found(kind: &'static str, name: &str) -> NodeError {
    NodeError::NotFound { kind, name: name.to_owned() }
}

pub(super) fn refused(op: &'static str, name: &str, reason: &str) -> NodeError {
    NodeError::InvalidState { op, name: name.to_owned(), reason: reason.to_owned() }
}

pub(super) fn domain<'a>(st: &'a mut MemState, name: &str) -> Result<&'a mut MemDomain, NodeError> {
    st.domains.get_mut(name).ok_or_else(|| not_found("domain", name))
}

pub(super) fn pool<'a>(st: &'a mut MemState, name: &str) -> Result<&'a mut MemPool, NodeError> {
    st.pools.get_mut(name).ok_or_else(|| not_found("storage pool", name))
}

pub(super) fn network<'a>(st: &'a mut MemState, name: &str) -> Result<&'a mut MemNetwork, NodeError> {
    st.networks.get_mut(name).ok_or_else(|| not_found("network", name))
}

/// A network's XML with its DHCP host entries in its first `<dhcp>`.
pub(super) fn network_render(n: &MemNetwork) -> String {
    let hosts: String = n.hosts.iter().filter_map(|h| xml::dhcp_host_entry_xml(h).ok()).map(|h| h.trim().to_owned()).collect();
    match n.xml.find("</dhcp>") {
        Some(i) => format!("{}{hosts}{}", &n.xml[..i], &n.xml[i..]),
        None => n.xml.clone(),
    }
}
