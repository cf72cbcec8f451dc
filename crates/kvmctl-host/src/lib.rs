//! Preparing a host for kvmctl, without the daemon.
//!
//! - `facts`: what the host is (`HostFacts`, serialisable so tests can replay recorded hosts),
//!   gathered by `facts::gather`.
//! - `checks`: `doctor(facts)`, a pure function from facts to checks, each with id, status,
//!   evidence and a fix hint.
//! - `kvm_probe`: the functional KVM probe (a boot sector run under KVM and under TCG).
//! - `programs`: every external program kvmctl runs and its package per distribution family.
//! - `plan`: `setup_plan(facts, options)` and `uninstall_plan(state)`, pure, as data.
//! - `exec`: runs a plan step by step, appending to the human log and updating the JSON
//!   state record after every step, so a failure midway leaves an exact account and a
//!   re-run continues where it stopped.

pub mod checks;
pub mod exec;
pub mod facts;
pub mod kvm_probe;
pub mod plan;
pub mod programs;
pub mod state;

pub use checks::{doctor, Check, CheckStatus, DoctorReport};
pub use facts::HostFacts;
pub use kvm_probe::{KvmVerdict, ProbeResult};
pub use plan::{setup_plan, uninstall_plan, SetupOptions, Step, StepAction};
pub use state::StateRecord;

/// Where host setup keeps its record and log by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kvmctl/host";
pub const DEFAULT_LOG: &str = "/var/log/kvmctl/host.log";
/// The libvirt hook that applies port forwards (installed by setup).
pub const HOOK_PATH: &str = "/etc/libvirt/hooks/qemu";
/// The hook the kvmctl package installs (libvirt runs every file in `qemu.d`).
pub const PACKAGE_HOOK_PATH: &str = "/etc/libvirt/hooks/qemu.d/kvmctl";
/// The storage pool kvmctl creates its volumes in.
pub const DEFAULT_POOL: &str = "kvmctl";
pub const DEFAULT_POOL_PATH: &str = "/var/lib/kvmctl/images";
