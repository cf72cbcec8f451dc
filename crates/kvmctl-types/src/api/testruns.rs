//! Test runs (`kvmctl test`): the daemon's record of a run, which holds its VMs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/test-runs`: opens a run. Its VMs (created with `test_run`) are deleted when the
/// run ends, when it is removed, and when its runner sends no heartbeat for `grace_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRunCreateRequest {
    /// The spec's name (a DNS label).
    pub name: String,
    /// How long the runner may be silent before the run is abandoned and its VMs deleted
    /// (10 to 3600; default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<u64>,
}

/// `POST /v1/test-runs/{id}/finish`: the runner's result. VMs of the run not named in `keep`
/// are deleted; kept ones leave the run and live on until their TTL.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRunFinishRequest {
    /// `passed`, `failed` or `error`.
    pub state: String,
    /// The runner's summary (cases, stages, checks); at most 1 MiB as JSON.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
    /// VMs of the run to keep (`--keep-on-failure`).
    #[serde(default)]
    pub keep: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TestRun {
    pub id: String,
    pub name: String,
    pub owner: String,
    /// `running`, `passed`, `failed`, `error` or `abandoned` (the runner went silent).
    pub state: String,
    pub grace_seconds: u64,
    pub created_at: i64,
    pub heartbeat_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// The VMs the run holds now.
    pub vms: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub summary: Option<serde_json::Value>,
}
