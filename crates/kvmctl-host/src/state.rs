//! The JSON state record of what `kvmctl host setup` changed (`state.json`), the only input
//! of `kvmctl host uninstall`. Written atomically after every step.

use crate::facts::Family;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateRecord {
    pub version: u32,
    /// Packages that were missing and that setup installed (a package present before setup
    /// is never listed, so uninstall never removes it).
    #[serde(default)]
    pub packages: Vec<PackageRecord>,
    #[serde(default)]
    pub kvm_device: Option<KvmDeviceRecord>,
    #[serde(default)]
    pub services: Vec<ServiceRecord>,
    #[serde(default)]
    pub networks: Vec<NetworkRecord>,
    #[serde(default)]
    pub pools: Vec<PoolRecord>,
    #[serde(default)]
    pub hook: Option<HookRecord>,
    #[serde(default)]
    pub groups: Vec<GroupRecord>,
    /// Outcome of every step of the last run, in order.
    #[serde(default)]
    pub last_run: Vec<StepOutcome>,
    /// `host doctor` verdict after the last setup.
    #[serde(default)]
    pub verification: Option<Verification>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageRecord {
    pub family: Family,
    pub name: String,
    pub version: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvmDeviceRecord {
    pub path: String,
    pub mode_before: u32,
    pub group_before: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    /// `systemd` (enabled and started with systemctl) or `direct` (started as a daemon).
    pub how: String,
    #[serde(default)]
    pub netns: Option<String>,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub name: String,
    pub defined: bool,
    pub started: bool,
    pub autostart_set: bool,
    /// Setup added the addresses reserved ahead to a network it did not define.
    #[serde(default)]
    pub reserved_ahead: bool,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolRecord {
    pub name: String,
    pub path: String,
    /// The directory did not exist before setup.
    pub dir_created: bool,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookRecord {
    pub path: String,
    pub at: String,
    /// The kvmctl hook that was there before (setup updated it); uninstall puts it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub user: String,
    pub group: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepOutcome {
    pub id: String,
    /// `done` (changed the host), `already` (nothing to do), `failed`, `planned` (dry run).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub at: String,
    pub domain_type: String,
    pub blocking_failures: Vec<String>,
    pub warnings: Vec<String>,
}

impl StateRecord {
    pub const VERSION: u32 = 1;

    pub fn load(path: &Path) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(t) => serde_json::from_str(&t)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateRecord { version: Self::VERSION, ..Default::default() }),
            Err(e) => Err(e),
        }
    }

    /// Writes to a temporary file and renames it over the record: never half-written.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)? + "\n")?;
        std::fs::rename(tmp, path)
    }

    /// True when nothing setup did remains to be undone.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
            && self.kvm_device.is_none()
            && self.services.is_empty()
            && self.networks.is_empty()
            && self.pools.is_empty()
            && self.hook.is_none()
            && self.groups.is_empty()
    }
}
