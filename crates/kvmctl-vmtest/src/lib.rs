//! The ephemeral-VM test runner behind `kvmctl test` (seed 004): a spec (`spec`) says what
//! to boot, upload, provision and check; a run (`runner`) does it on the daemon, whose test
//! runs guarantee that nothing of it outlives the runner; `report` writes what it found as
//! Markdown, JUnit XML and JSON.
//!
//! The runner is a client of the daemon's API like the rest of the CLI: it runs on any
//! machine that reaches the daemon, within the caller's quota, on whatever node placement
//! picks.

pub mod report;
pub mod runner;
pub mod spec;

pub use report::{Outcome, RunReport};
pub use runner::{run, Options, Say};
pub use spec::{load, parse, Spec, SpecError};
