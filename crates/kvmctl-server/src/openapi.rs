//! The OpenAPI document, generated from the handlers and types. The committed copy is
//! `openapi/kvmctl.json`; a test fails when the two differ (`UPDATE_OPENAPI=1` rewrites it).

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "kvmctl", description = "kvmctl daemon API. Every request needs a token (`Authorization: Bearer kvm_...`) except root's on the unix socket; see docs/api.md. Errors share one body, `ErrorBody`; see docs/api-errors.md."),
    paths(
        crate::http::status::status_get,
        crate::http::host::host_get,
        crate::http::images::image_list,
        crate::http::images::image_get,
        crate::http::images::image_import,
        crate::http::images::image_delete,
        crate::http::plans::plan_list,
        crate::http::plans::plan_get,
        crate::http::plans::plan_create,
        crate::http::plans::plan_update,
        crate::http::users::whoami,
        crate::http::events::events,
        crate::http::users::user_list,
        crate::http::users::user_create,
        crate::http::users::user_get,
        crate::http::users::user_update,
        crate::http::users::quota_get,
        crate::http::users::quota_set,
        crate::http::users::token_list,
        crate::http::users::token_create,
        crate::http::users::token_revoke,
        crate::http::users::audit_list,
        crate::http::users::usage_list,
        crate::http::nodes::node_list,
        crate::http::nodes::node_add,
        crate::http::nodes::node_get,
        crate::http::nodes::node_update,
        crate::http::nodes::node_remove,
        crate::http::metrics::metrics,
        crate::http::nodes::gc_report,
        crate::http::nodes::gc_clean,
        crate::http::vms::vm_list,
        crate::http::vms::vm_get,
        crate::http::vms::vm_create,
        crate::http::vms::vm_delete,
        crate::http::vms::vm_start,
        crate::http::vms::vm_stop,
        crate::http::vms::vm_reboot,
        crate::http::vms::vm_resize,
        crate::http::vms::vm_wait,
        crate::http::vms::vm_exec,
        crate::http::terminal::vm_console,
        crate::http::terminal::vm_console_log,
        crate::http::terminal::vm_ssh,
        crate::http::terminal::vm_file_get,
        crate::http::terminal::vm_file_put,
        crate::http::networks::network_list,
        crate::http::networks::network_get,
        crate::http::networks::network_create,
        crate::http::networks::network_delete,
        crate::http::networks::port_pool_list,
        crate::http::networks::forward_list,
        crate::http::networks::forward_create,
        crate::http::networks::forward_delete
    ),
    components(schemas(
        kvmctl_types::api::ErrorBody,
        kvmctl_types::api::StatusResponse,
        kvmctl_types::api::DoctorReport,
        kvmctl_types::api::Check,
        kvmctl_types::api::CheckStatus,
        kvmctl_types::api::KvmVerdict,
        kvmctl_types::api::Image,
        kvmctl_types::api::ImageTemplate,
        kvmctl_types::api::KernelBoot,
        kvmctl_types::api::ImageImportRequest,
        kvmctl_types::api::Plan,
        kvmctl_types::api::Vm,
        kvmctl_types::api::VmCreateRequest,
        kvmctl_types::api::VmStopRequest,
        kvmctl_types::api::VmResizeRequest,
        kvmctl_types::api::ReadinessStage,
        kvmctl_types::api::VmExecRequest,
        kvmctl_types::api::VmExecResponse,
        kvmctl_types::api::GuestFileEntry,
        kvmctl_types::api::Forward,
        kvmctl_types::api::ForwardCreateRequest,
        kvmctl_types::api::PortPoolStatus,
        kvmctl_types::api::Network,
        kvmctl_types::api::NetworkCreateRequest,
        kvmctl_types::api::PlanCreateRequest,
        kvmctl_types::api::PlanUpdateRequest,
        kvmctl_types::api::User,
        kvmctl_types::api::UserCreateRequest,
        kvmctl_types::api::UserUpdateRequest,
        kvmctl_types::api::Token,
        kvmctl_types::api::TokenCreateRequest,
        kvmctl_types::api::TokenCreated,
        kvmctl_types::api::Quota,
        kvmctl_types::api::QuotaSetRequest,
        kvmctl_types::api::AuditEntry,
        kvmctl_types::api::UsageRecord,
        kvmctl_types::api::ComputeNode,
        kvmctl_types::api::NodeAddRequest,
        kvmctl_types::api::NodeUpdateRequest,
        kvmctl_types::api::PlacementVerdict,
        kvmctl_types::api::GcReport,
        kvmctl_types::api::GcItem,
        kvmctl_types::api::ApiEvent
    )),
    tags(
        (name = "system", description = "The daemon itself"),
        (name = "images", description = "Base images and their template metadata"),
        (name = "vms", description = "Virtual machines and plans"),
        (name = "networks", description = "Networks, host port pools and port forwards"),
        (name = "users", description = "Users, API tokens, quotas, the audit log and usage records"),
        (name = "nodes", description = "Compute nodes, their capacity and placement")
    )
)]
pub struct ApiDoc;

/// The document as committed: pretty JSON with a trailing newline, version pinned to the
/// API version rather than the crate version so releases do not churn it.
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = "1".into();
    let mut s = serde_json::to_string_pretty(&doc).expect("OpenAPI document serializes");
    s.push('\n');
    s
}
