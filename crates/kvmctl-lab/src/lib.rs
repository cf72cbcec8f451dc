//! Labs as code (`kvmctl apply -f lab.yaml`): the lab file and the plan.
//!
//! - [`file`] reads a lab file: parameters (`${name}`, with defaults and `--set`
//!   overrides), networks and VMs, checked before anything changes; every error names the
//!   line and the field.
//! - [`plan`] compares what the file asks for with what exists (the VMs and networks
//!   carrying the lab's `kvmctl.lab` label) and lists the steps, in dependency order: create,
//!   change in place, replace (only when asked) and delete.
//!
//! Pure: no I/O. The CLI reads the files a lab names (keys, user-data), fetches what exists
//! and runs the steps through the API.

pub mod file;
pub mod plan;

pub use file::{parse, Lab, LabError, LabNetwork, LabVm};
pub use plan::{plan, Action, Plan, Step};

/// The label that marks what a lab made, with the lab's name as its value.
pub const LAB_LABEL: &str = "kvmctl.lab";
/// Labels holding hashes of what a VM was made from that the API does not show.
pub const USER_DATA_LABEL: &str = "kvmctl.lab.user-data";
pub const KEYS_LABEL: &str = "kvmctl.lab.ssh-keys";
pub const OPTIONS_LABEL: &str = "kvmctl.lab.options";

/// A short content hash (16 hex digits of SHA-256): what the labels above hold.
pub fn content_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().take(8).map(|b| format!("{b:02x}")).collect()
}
