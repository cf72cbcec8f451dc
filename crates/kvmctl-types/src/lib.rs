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

/// A duration such as 90s, 30m, 2h or 7d, in seconds (never negative); the error says what
/// is expected. The CLI's `--ttl`, `--since` ages and lab files read durations with it.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = num.parse().map_err(|_| format!("{s:?} is not a duration such as 90s, 30m, 2h or 7d"))?;
    if n < 0 {
        return Err(format!("{s:?}: a duration cannot be negative"));
    }
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: end the duration with s, m, h or d")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too long"))
}
