//! Users, tokens, quotas, the audit log, usage, gc and events.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A user of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub name: String,
    /// `admin` or `user`.
    pub role: String,
    pub disabled: bool,
    /// May size VMs with vcpus/memory/disk rather than a plan only.
    pub custom_sizing: bool,
    pub created_at: i64,
}

/// `POST /v1/users` (admins).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserCreateRequest {
    /// A DNS label.
    pub name: String,
    /// `user` (the default) or `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_sizing: Option<bool>,
}

/// `PATCH /v1/users/{name}` (admins): what is given changes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_sizing: Option<bool>,
}

/// An API token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    /// The public id (the part after `kvm_`).
    pub id: String,
    pub user: String,
    pub description: String,
    /// `active`, `expired` or `revoked`.
    pub state: String,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Days until it expires (1 to 3650); without it, it never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<u32>,
    /// Admins only: the user the token is for (default: the caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The new token: `token` is shown this once and cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    /// `kvm_<id>_<secret>`: send it as `Authorization: Bearer <token>`.
    pub token: String,
    pub info: Token,
}

/// A user's quota: limits in force and what is in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Quota {
    pub user: String,
    /// Admins have no quota.
    pub unlimited: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disk_gib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_forwards: Option<u64>,
    /// Limits set for this user rather than taken from the defaults.
    pub overridden: Vec<String>,
    pub used_vms: u64,
    pub used_vcpus: u64,
    pub used_memory_mib: u64,
    pub used_disk_gib: u64,
    pub used_forwards: u64,
}

/// `PUT /v1/users/{name}/quota` (admins): given limits are set, `reset` ones go back to
/// the defaults, the rest stay.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaSetRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disk_gib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_forwards: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reset: Vec<String>,
}

/// One state-changing request as the audit log has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    pub request_id: String,
    /// Absent when the caller was not authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// `ok`, or the error kind (`forbidden`, `quota_exceeded`, ...).
    pub outcome: String,
}

/// One VM-hour of usage (`GET /v1/usage`): written once the hour is over, never changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageRecord {
    pub vm: String,
    pub vm_id: String,
    pub owner: String,
    pub node: String,
    /// Start of the hour, Unix seconds (a multiple of 3600).
    pub hour: i64,
    /// The same instant, RFC 3339 UTC.
    pub hour_utc: String,
    /// The VM's state when the hour was metered.
    pub state: String,
    pub vcpus: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The hourly price then (decimal, in `currency`).
    pub price_hourly: String,
    /// What the hour cost: the price when running, its stopped share otherwise.
    pub cost: String,
    pub currency: String,
}

/// What `kvmctl gc` found (and removed, when cleaning).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcReport {
    /// Whether debris was removed (`POST /v1/gc`) or only reported (`GET /v1/gc`).
    pub clean: bool,
    pub items: Vec<GcItem>,
}

/// One piece of debris: `domain`, `volume`, `dhcp_host`, `firewall`, `log` (another node's
/// logs of a VM that is gone, `NODE/VM`; removable) or `row` (a VM whose domain vanished;
/// reported only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcItem {
    pub kind: String,
    pub name: String,
    pub detail: String,
    pub removed: bool,
    /// When gc first reported it (Unix seconds); `POST /v1/gc` removes it only once it has
    /// been reported for `gc_grace_seconds`.
    #[serde(default)]
    pub first_seen_at: i64,
}

/// One event of `GET /v1/events` (the `data` of a server-sent event; its `event` field is
/// `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiEvent {
    /// `vm.state` (a VM changed state), `vm.stage` (a readiness stage was reached),
    /// `vm.deleted`.
    pub kind: String,
    pub vm: String,
    pub owner: String,
    /// The new state, for `vm.state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The stage reached, for `vm.stage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Unix milliseconds.
    pub at_ms: i64,
}

/// `POST /v1/session`: log in to the web console with a user name and password, or with an
/// API token. The answer sets the session cookies (`kvmctl_token`, HttpOnly, and
/// `kvmctl_csrf`, which the page sends back as `x-kvmctl-csrf` on every change).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionOpenRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// An API token (`kvm_...`) instead of a user name and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// An open web console session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub user: User,
    /// Unix seconds when the session ends (8 hours after login); 0 when the caller is not in
    /// a web console session (a bearer token).
    pub expires_at: i64,
    /// The password was set by an admin: the console asks for a new one first.
    pub password_change: bool,
}

/// `PUT /v1/users/{name}/password`: an admin sets a user's first password (which the user must
/// change at the next login); a user changes their own, giving the current one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordSetRequest {
    /// At least 10 characters, at most 256 bytes.
    pub password: String,
    /// The current password, when changing one's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
}

/// An SSH public key saved in a user's profile (`/v1/users/{name}/ssh-keys`); the web
/// console's create form offers them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SshKey {
    pub id: String,
    /// The user's label for it.
    pub name: String,
    /// The OpenSSH public key line.
    pub public_key: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub created_at: i64,
}

/// `POST /v1/users/{name}/ssh-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SshKeyCreateRequest {
    /// A label (1 to 64 printable characters).
    pub name: String,
    /// One OpenSSH public key line (`ssh-ed25519 AAAA... comment`).
    pub public_key: String,
}
