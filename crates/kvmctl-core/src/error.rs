//! The one error users see, whatever layer it came from.
//!
//! It knows nothing about HTTP: `kvmctl-server` maps each variant to a status code in exactly
//! one place (see `docs/api-errors.md`). Messages say what to do next.

/// A failure as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No credentials, or credentials that are not valid (unknown, expired or revoked token,
    /// disabled user).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this (an admin-only action).
    #[error("{0}")]
    Forbidden(String),
    /// The named resource does not exist (or the caller may not see it).
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    /// The request itself is wrong; `field` names the part to fix.
    #[error("invalid {field}: {message}")]
    InvalidRequest { field: String, message: String },
    /// The request clashes with the current state (name taken, VM busy, ...).
    #[error("{0}")]
    Conflict(String),
    /// A per-user limit would be exceeded.
    #[error("quota exceeded for {limit}: limit {max}, in use {used}, requested {requested}")]
    QuotaExceeded { limit: String, max: u64, used: u64, requested: u64 },
    /// No compute node can take the request; `reasons` says why, node by node.
    #[error("no node can host this request: {}", reasons.join("; "))]
    InsufficientCapacity { reasons: Vec<String> },
    /// A dependency (libvirt, the database) does not answer; retrying may succeed. The text
    /// is for the client.
    #[error("{0}")]
    Unavailable(String),
    /// Too many attempts (failed logins); try again after `retry_after` seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    /// As `Unavailable`, with a private half: `public` goes to the client, `detail` (the
    /// libvirt or database error chain) only to the daemon's log, under the request id.
    #[error("{public}")]
    Backend { public: String, detail: String },
    /// A bug or an unexpected failure. The text is the private detail: the client is told only
    /// that the daemon's log has it under the request id.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidRequest { field: field.into(), message: message.into() }
    }

    /// Stable machine-readable kind, used as `error` in the API's error body.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound { .. } => "not_found",
            Error::InvalidRequest { .. } => "invalid_request",
            Error::Conflict(_) => "conflict",
            Error::QuotaExceeded { .. } => "quota_exceeded",
            Error::InsufficientCapacity { .. } => "insufficient_capacity",
            Error::Unavailable(_) | Error::Backend { .. } => "unavailable",
            Error::TooManyRequests { .. } => "too_many_requests",
            Error::Internal(_) => "internal",
        }
    }

    /// What the client may read: the message, without the private detail of `Backend` and
    /// `Internal` (that is `private_detail`, for the log).
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error in the daemon; its log has the details under this request id".into(),
            e => e.to_string(),
        }
    }

    /// The part of the error that only the daemon's log sees.
    pub fn private_detail(&self) -> Option<&str> {
        match self {
            Error::Backend { detail, .. } => Some(detail),
            Error::Internal(detail) => Some(detail),
            _ => None,
        }
    }

    /// The request field at fault, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::InvalidRequest { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// `err` and all its sources, joined with ": ", for the one place an error is logged or
/// shown. (`Display` of each error leaves its source out, so nothing repeats.)
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_to_fix() {
        let e = Error::invalid("name", "must start with a lowercase letter (a-z)");
        assert_eq!(e.to_string(), "invalid name: must start with a lowercase letter (a-z)");
        assert_eq!(e.field(), Some("name"));
        let q = Error::QuotaExceeded { limit: "vcpus".into(), max: 8, used: 6, requested: 4 };
        assert_eq!(q.to_string(), "quota exceeded for vcpus: limit 8, in use 6, requested 4");
        let c = Error::InsufficientCapacity { reasons: vec!["n1: drained".into(), "n2: 1 GiB free".into()] };
        assert!(c.to_string().ends_with("n1: drained; n2: 1 GiB free"));
    }

    #[test]
    fn kinds_are_distinct() {
        let all = [
            Error::NotFound { kind: "vm", name: "x".into() },
            Error::invalid("f", "m"),
            Error::Conflict("c".into()),
            Error::QuotaExceeded { limit: "l".into(), max: 1, used: 1, requested: 1 },
            Error::InsufficientCapacity { reasons: vec![] },
            Error::Unavailable("u".into()),
            Error::TooManyRequests { message: "t".into(), retry_after: 1 },
            Error::Internal("i".into()),
        ];
        let mut kinds: Vec<_> = all.iter().map(Error::kind).collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds.len(), all.len());
    }
}
