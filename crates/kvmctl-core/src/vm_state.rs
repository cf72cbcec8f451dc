//! The VM state machine.
//!
//! States mirror what libvirt reports, plus the transitional states kvmctl itself is in
//! while it works on a VM. Requests (`Start`, `Stop`, ...) are only accepted in states where
//! they make sense; libvirt's own observations (`Observed*`) are always accepted, because
//! libvirt is the truth and the database mirrors it.
//!
//! Invariants (checked by property tests):
//! - `Deleted` is terminal: nothing leaves it.
//! - An observation never fails: whatever state kvmctl thought it was in, libvirt wins.
//! - A request in a transitional state is a conflict, never a silent no-op.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Disks, seed and domain are being made.
    Creating,
    /// Defined in libvirt, not running.
    Stopped,
    Starting,
    Running,
    Stopping,
    Rebooting,
    /// Teardown in progress.
    Deleting,
    /// Gone from libvirt and from the node.
    Deleted,
    /// libvirt reports the domain crashed, or an operation failed half-way and needs repair.
    Failed,
}

/// What happens to a VM: a user's request, or what libvirt was seen to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmEvent {
    Created { started: bool },
    Start,
    Stop,
    Reboot,
    Delete,
    ObservedRunning,
    ObservedStopped,
    ObservedCrashed,
    ObservedVanished,
}

/// A request that the current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a VM that is {state}")]
pub struct TransitionRefused {
    pub state: VmState,
    pub action: &'static str,
}

impl VmState {
    pub const ALL: [VmState; 9] = [
        VmState::Creating,
        VmState::Stopped,
        VmState::Starting,
        VmState::Running,
        VmState::Stopping,
        VmState::Rebooting,
        VmState::Deleting,
        VmState::Deleted,
        VmState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Stopped => "stopped",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Stopping => "stopping",
            VmState::Rebooting => "rebooting",
            VmState::Deleting => "deleting",
            VmState::Deleted => "deleted",
            VmState::Failed => "failed",
        }
    }

    pub fn is_transitional(self) -> bool {
        matches!(self, VmState::Creating | VmState::Starting | VmState::Stopping | VmState::Rebooting | VmState::Deleting)
    }

    /// The state after `event`, or why the event is refused.
    pub fn apply(self, event: VmEvent) -> Result<VmState, TransitionRefused> {
        use VmEvent::*;
        use VmState::*;
        if self == Deleted {
            return Err(TransitionRefused { state: self, action: event.action() });
        }
        let next = match (self, event) {
            (Creating, Created { started: true }) => Running,
            (Creating, Created { started: false }) => Stopped,
            (Stopped | Failed, Start) => Starting,
            (Running, Stop) => Stopping,
            (Running, Reboot) => Rebooting,
            // Deleting from any settled state; deleting a half-made VM is how a failed create is undone.
            (Stopped | Running | Failed | Creating, Delete) => Deleting,
            (Deleting, ObservedVanished) => Deleted,
            (Deleting, ObservedRunning | ObservedStopped | ObservedCrashed) => Deleting,
            (Creating, ObservedRunning | ObservedStopped) => Creating,
            (_, ObservedRunning) => Running,
            (_, ObservedStopped) => Stopped,
            (_, ObservedCrashed) => Failed,
            (_, ObservedVanished) => Failed,
            (state, event) => return Err(TransitionRefused { state, action: event.action() }),
        };
        Ok(next)
    }
}

impl VmEvent {
    fn action(self) -> &'static str {
        match self {
            VmEvent::Created { .. } => "finish creating",
            VmEvent::Start => "start",
            VmEvent::Stop => "stop",
            VmEvent::Reboot => "reboot",
            VmEvent::Delete => "delete",
            VmEvent::ObservedRunning | VmEvent::ObservedStopped | VmEvent::ObservedCrashed | VmEvent::ObservedVanished => "observe",
        }
    }

    /// Whether this is something libvirt was seen to do, rather than a request.
    pub fn is_observation(self) -> bool {
        matches!(self, VmEvent::ObservedRunning | VmEvent::ObservedStopped | VmEvent::ObservedCrashed | VmEvent::ObservedVanished)
    }
}

impl std::str::FromStr for VmState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        VmState::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| format!("unknown VM state {s:?}"))
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EVENTS: [VmEvent; 10] = [
        VmEvent::Created { started: true },
        VmEvent::Created { started: false },
        VmEvent::Start,
        VmEvent::Stop,
        VmEvent::Reboot,
        VmEvent::Delete,
        VmEvent::ObservedRunning,
        VmEvent::ObservedStopped,
        VmEvent::ObservedCrashed,
        VmEvent::ObservedVanished,
    ];

    #[test]
    fn the_happy_path() {
        let s = VmState::Creating.apply(VmEvent::Created { started: true }).unwrap();
        assert_eq!(s, VmState::Running);
        let s = s.apply(VmEvent::Stop).unwrap().apply(VmEvent::ObservedStopped).unwrap();
        assert_eq!(s, VmState::Stopped);
        let s = s.apply(VmEvent::Delete).unwrap().apply(VmEvent::ObservedVanished).unwrap();
        assert_eq!(s, VmState::Deleted);
    }

    #[test]
    fn requests_in_transit_are_conflicts() {
        let e = VmState::Stopping.apply(VmEvent::Start).unwrap_err();
        assert_eq!(e.to_string(), "cannot start a VM that is stopping");
        assert!(VmState::Creating.apply(VmEvent::Start).is_err());
        assert!(VmState::Running.apply(VmEvent::Start).is_err());
    }

    #[test]
    fn a_vm_stopped_from_inside_is_seen_as_stopped() {
        assert_eq!(VmState::Running.apply(VmEvent::ObservedStopped), Ok(VmState::Stopped));
        assert_eq!(VmState::Running.apply(VmEvent::ObservedVanished), Ok(VmState::Failed));
    }

    fn state() -> impl Strategy<Value = VmState> {
        proptest::sample::select(VmState::ALL.to_vec())
    }
    fn event() -> impl Strategy<Value = VmEvent> {
        proptest::sample::select(EVENTS.to_vec())
    }

    proptest! {
        #[test]
        fn deleted_is_terminal(events in proptest::collection::vec(event(), 0..20)) {
            for e in events {
                prop_assert!(VmState::Deleted.apply(e).is_err());
            }
        }

        #[test]
        fn observations_never_fail_while_the_vm_exists(s in state(), e in event()) {
            if s != VmState::Deleted && e.is_observation() {
                prop_assert!(s.apply(e).is_ok());
            }
        }

        #[test]
        fn transitional_states_refuse_user_requests(s in state(), e in event()) {
            let user_request = matches!(e, VmEvent::Start | VmEvent::Stop | VmEvent::Reboot);
            if s.is_transitional() && user_request {
                prop_assert!(s.apply(e).is_err());
            }
        }

        #[test]
        fn any_walk_stays_in_known_states(s0 in state(), events in proptest::collection::vec(event(), 0..40)) {
            let mut s = s0;
            for e in events {
                if let Ok(n) = s.apply(e) { s = n; }
                prop_assert!(VmState::ALL.contains(&s));
            }
        }
    }
}
