//! kvmctl's rules, free of I/O: the error every layer above converts into, the VM state
//! machine, callers and quota arithmetic, placement, metering (hourly usage and prices), and
//! the rules about a VM's shape (`rules`: size and TTL bounds, volume names, attachments).

pub mod auth;
pub mod error;
pub mod metering;
pub mod placement;
pub mod rules;
pub mod vm_state;

pub use auth::{Caller, QuotaLimits, Role, Usage};
pub use error::Error;
pub use vm_state::{VmEvent, VmState};
