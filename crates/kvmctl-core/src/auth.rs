//! Who is asking, and what they may use: roles, the caller, quota limits and the quota
//! arithmetic. Pure; the store enforces the limits atomically, this module explains them.

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sees and acts on everything; manages users, plans, images, quotas; reads the audit log.
    Admin,
    /// Sees and acts on their own VMs, networks and tokens; uses shared images and plans.
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// Whether the caller may size VMs with vcpus/memory/disk instead of a plan only.
    pub custom_sizing: bool,
}

impl Caller {
    /// The local administrator (root on the daemon's unix socket).
    pub fn local_admin() -> Caller {
        Caller { name: "admin".into(), role: Role::Admin, custom_sizing: true }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// `Forbidden` unless the caller is an admin; `what` names the action.
    pub fn require_admin(&self, what: &str) -> Result<(), Error> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("{what} is for admins; user {} is not one", self.name)))
        }
    }

    /// The owner whose resources the caller sees: `None` for admins (everything).
    pub fn owner_scope(&self) -> Option<&str> {
        (!self.is_admin()).then_some(self.name.as_str())
    }
}

/// What one user may hold at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaLimits {
    pub vms: u64,
    pub vcpus: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub forwards: u64,
}

/// What one user holds, or asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub vms: u64,
    pub vcpus: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub forwards: u64,
}

/// Whether `used + requested` fits `limits`; the error names the first limit that would be
/// exceeded, with the limit, the amount in use and the amount requested.
pub fn quota_check(limits: &QuotaLimits, used: &Usage, requested: &Usage) -> Result<(), Error> {
    let rows = [
        ("vms", limits.vms, used.vms, requested.vms),
        ("vcpus", limits.vcpus, used.vcpus, requested.vcpus),
        ("memory_mib", limits.memory_mib, used.memory_mib, requested.memory_mib),
        ("disk_gib", limits.disk_gib, used.disk_gib, requested.disk_gib),
        ("forwards", limits.forwards, used.forwards, requested.forwards),
    ];
    for (limit, max, used, requested) in rows {
        if requested > 0 && used.saturating_add(requested) > max {
            return Err(Error::QuotaExceeded { limit: limit.into(), max, used, requested });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_first_exceeded_limit_is_named() {
        let limits = QuotaLimits { vms: 2, vcpus: 4, memory_mib: 4096, disk_gib: 40, forwards: 4 };
        let used = Usage { vms: 1, vcpus: 3, memory_mib: 1024, disk_gib: 10, forwards: 1 };
        assert!(quota_check(&limits, &used, &Usage { vms: 1, vcpus: 1, memory_mib: 1024, disk_gib: 10, forwards: 1 }).is_ok());
        let e = quota_check(&limits, &used, &Usage { vms: 1, vcpus: 2, memory_mib: 1024, disk_gib: 10, forwards: 1 }).unwrap_err();
        assert_eq!(e, Error::QuotaExceeded { limit: "vcpus".into(), max: 4, used: 3, requested: 2 });
        assert!(e.to_string().contains("limit 4, in use 3, requested 2"), "{e}");
    }

    proptest! {
        #[test]
        fn accepted_requests_never_exceed_a_limit(max in 0u64..50, used in 0u64..50, req in 0u64..50) {
            let limits = QuotaLimits { vms: max, vcpus: u64::MAX, memory_mib: u64::MAX, disk_gib: u64::MAX, forwards: u64::MAX };
            let ok = quota_check(&limits, &Usage { vms: used, ..Default::default() }, &Usage { vms: req, ..Default::default() }).is_ok();
            prop_assert_eq!(ok, req == 0 || used + req <= max);
        }
    }
}
