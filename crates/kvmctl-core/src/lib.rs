//! kvmctl's rules, free of I/O: the error every layer above converts into, and the VM state
//! machine. Placement, quota arithmetic and metering join this crate as they are built.

pub mod auth;
pub mod error;
pub mod vm_state;

pub use auth::{Caller, QuotaLimits, Role, Usage};
pub use error::Error;
pub use vm_state::{VmEvent, VmState};
