//! kvmctl's rules, free of I/O: the error every layer above converts into, the VM state
//! machine, callers and quota arithmetic, placement. Metering joins this crate as it is built.

pub mod auth;
pub mod error;
pub mod metering;
pub mod placement;
pub mod vm_state;

pub use auth::{Caller, QuotaLimits, Role, Usage};
pub use error::Error;
pub use vm_state::{VmEvent, VmState};
