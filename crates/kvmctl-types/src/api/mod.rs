//! Request and response bodies of the REST API (`/v1/...`).
//!
//! Field names are the wire format: renaming one is an API change and shows up in the
//! committed OpenAPI document (`openapi/kvmctl.json`).

mod images;
mod networking;
mod pools;
mod snapshots;
mod status;
mod testruns;
mod users;
mod vms;

pub use images::*;
pub use networking::*;
pub use pools::*;
pub use snapshots::*;
pub use status::*;
pub use testruns::*;
pub use users::*;
pub use vms::*;
