//! Resource names and IDs.
//!
//! Names of VMs, images, networks and nodes follow DNS label rules (RFC 1123): 1 to 63
//! characters, lowercase ASCII letters, digits and `-`, starting with a letter and not ending
//! with `-`. They end up as libvirt domain names, hostnames, volume file names and nftables
//! comments, so anything outside this set is refused rather than escaped.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use utoipa::ToSchema;

/// Longest name accepted: one DNS label.
pub const NAME_MAX_LEN: usize = 63;

/// Why a string is not a valid name. `Display` states the rule so the user can fix the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("is {0} characters long; the limit is {NAME_MAX_LEN}")]
    TooLong(usize),
    #[error("must start with a lowercase letter (a-z)")]
    BadStart,
    #[error("must not end with '-'")]
    BadEnd,
    #[error("contains {0:?}; only lowercase letters a-z, digits 0-9 and '-' are allowed")]
    BadChar(char),
}

/// A validated resource name (a DNS label).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
#[schema(value_type = String, example = "web-1", pattern = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let mut chars = s.chars();
        let first = chars.next().ok_or(NameError::Empty)?;
        let len = s.chars().count();
        if len > NAME_MAX_LEN {
            return Err(NameError::TooLong(len));
        }
        if !first.is_ascii_lowercase() {
            return Err(if valid_char(first) { NameError::BadStart } else { NameError::BadChar(first) });
        }
        if let Some(c) = s.chars().find(|c| !valid_char(*c)) {
            return Err(NameError::BadChar(c));
        }
        if s.ends_with('-') {
            return Err(NameError::BadEnd);
        }
        Ok(Name(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn valid_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Name::parse(s)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::parse(&s).map_err(|e| serde::de::Error::custom(format!("name {s:?} {e}")))
    }
}

/// A VM's stable identity; also its libvirt domain UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[schema(value_type = uuid::Uuid)]
#[serde(transparent)]
pub struct VmId(pub uuid::Uuid);

impl VmId {
    pub fn new() -> Self {
        VmId(uuid::Uuid::new_v4())
    }
}

impl Default for VmId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether a name a guest listed is one plain path component, safe to join onto a host
/// directory: not empty, `.` or `..`, without `/`, `\\` or NUL, at most 255 bytes. A hostile
/// guest may answer `../../root/.ssh/authorized_keys` or `/etc/shadow`; the daemon and the
/// CLI both refuse such a listing.
pub fn guest_entry_name_ok(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']) && name.len() <= 255
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "web-1", "a0", "x".repeat(63).as_str()] {
            assert_eq!(Name::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_with_the_rule() {
        assert_eq!(Name::parse(""), Err(NameError::Empty));
        assert_eq!(Name::parse("1abc"), Err(NameError::BadStart));
        assert_eq!(Name::parse("-abc"), Err(NameError::BadStart));
        assert_eq!(Name::parse("abc-"), Err(NameError::BadEnd));
        assert_eq!(Name::parse("Web"), Err(NameError::BadChar('W')));
        assert_eq!(Name::parse("a/b"), Err(NameError::BadChar('/')));
        assert_eq!(Name::parse("a<b>"), Err(NameError::BadChar('<')));
        assert_eq!(Name::parse("a\nb"), Err(NameError::BadChar('\n')));
        assert_eq!(Name::parse(&"x".repeat(64)), Err(NameError::TooLong(64)));
        assert!(NameError::BadChar('/').to_string().contains("only lowercase letters"));
    }

    #[test]
    fn deserialize_validates() {
        let err = serde_json::from_str::<Name>("\"../etc\"").unwrap_err().to_string();
        assert!(err.contains("'.'"), "{err}");
        assert_eq!(serde_json::from_str::<Name>("\"ok-1\"").unwrap().as_str(), "ok-1");
    }

    proptest! {
        #[test]
        fn parse_agrees_with_the_regex(s in "\\PC{0,70}") {
            let re_ok = !s.is_empty() && s.chars().count() <= 63
                && s.chars().next().unwrap().is_ascii_lowercase()
                && s.chars().all(valid_char)
                && !s.ends_with('-');
            prop_assert_eq!(Name::parse(&s).is_ok(), re_ok);
        }

        #[test]
        fn valid_names_round_trip(s in "[a-z]([a-z0-9-]{0,61}[a-z0-9])?") {
            let n = Name::parse(&s).unwrap();
            let json = serde_json::to_string(&n).unwrap();
            prop_assert_eq!(serde_json::from_str::<Name>(&json).unwrap(), n);
        }
    }
}
