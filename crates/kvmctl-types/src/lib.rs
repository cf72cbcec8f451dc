//! Types shared by the daemon, the client and the CLI: validated names and typed IDs,
//! and the request/response bodies of the REST API with their OpenAPI schemas.
//!
//! Invariant: a value of a validated type (`Name`, `VmId`, ...) is always valid; the only way
//! to get one from user input is through its `parse`/`TryFrom`, which names the rule broken.
//! This crate does no I/O.

pub mod api;
pub mod name;

pub use name::{guest_entry_name_ok, Name, NameError, VmId};

/// Where the daemon listens and its clients connect unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/kvmctl/kvmctl.sock";
