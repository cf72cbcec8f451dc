//! What libvirt's qemu hook does for one call (`kvmctl hook qemu DOMAIN OPERATION ...`):
//! when a kvmctl VM starts (`started`) or libvirtd reconnects to a running one
//! (`reconnect`), its rules (from its domain metadata) are written; when it stops
//! (`stopped`, `release`), they are removed. It runs inside libvirtd's call, so it never
//! calls libvirt back; the caller reads the domain XML libvirt hands it.

use crate::{vm_apply_guarded, vm_remove, VmRules, TABLE};

/// Does what `operation` asks for VM `vm` (its id), whose rules are `rules` (`None`: it has
/// no address on a libvirt network). Returns what it did, for the hook log; `Ok(None)` when
/// there was nothing to do.
pub fn qemu(operation: &str, vm: &str, rules: Option<&VmRules>) -> Result<Option<String>, String> {
    match operation {
        "started" | "reconnect" => {
            let Some(rules) = rules else { return Ok(None) };
            let changed = vm_apply_guarded(TABLE, rules).map_err(|e| chain(&e))?;
            Ok(Some(format!("vm {vm}: {} forwards applied{}", rules.forwards.len(), if changed { "" } else { " (unchanged)" })))
        }
        "stopped" | "release" => {
            let changed = vm_remove(TABLE, vm).map_err(|e| chain(&e))?;
            Ok(changed.then(|| format!("vm {vm}: rules removed")))
        }
        _ => Ok(None),
    }
}

/// An error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn other_operations_and_vms_without_rules_do_nothing() {
        assert_eq!(super::qemu("prepare", "abc", None), Ok(None));
        assert_eq!(super::qemu("started", "abc", None), Ok(None));
        assert_eq!(super::qemu("migrate", "abc", None), Ok(None));
    }
}
