//! kvmctl's view of a compute node: the `Node` trait (domains, storage volumes and pools,
//! versions) and its implementation over libvirt (`LibvirtNode`, any libvirt URI:
//! `qemu:///system`, `qemu+ssh://`, `test:///default`).
//!
//! The domain, volume and pool XML documents are built by the pure `xml` module; this crate
//! never concatenates user strings into XML. It knows nothing of users, plans or HTTP.

mod error;
pub mod events;
mod node;
pub mod xml;

pub use error::NodeError;
pub use node::{
    AgentExec, Console, ConsoleStream, DomainState, DomainSummary, LibvirtNode, Node, NodeResources, NodeVersions, ObjectState, PoolInfo,
    ReserveAhead, VolumeInfo,
};
