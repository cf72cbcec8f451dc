//! The daemon's logic, one module per resource, independent of HTTP. `context` is the
//! bottom layer every other module builds on; see docs/architecture.md for the layers.

mod context;
pub mod devices;
pub mod domain;
pub mod files;
pub mod forwards;
pub mod gc;
pub mod guest;
pub mod host;
pub mod hygiene;
mod image_files;
pub mod images;
pub mod metering;
pub mod networks;
pub mod nodes;
pub mod plans;
pub mod pools;
pub mod readiness;
pub mod reconcile;
pub mod restart;
pub mod sessions;
pub mod snapshots;
pub mod ssh;
pub mod status;
pub mod testruns;
pub mod users;
pub mod vmnet;
pub mod vms;

pub(crate) use context::{blocking, parse_name};
pub use context::{Context, SessionGuard, LEASE_TTL_MS, LOCAL};
