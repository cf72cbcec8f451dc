//! The OpenAPI document, generated from the handlers and types. The committed copy is
//! `openapi/kvmctl.json`; a test fails when the two differ (`UPDATE_OPENAPI=1` rewrites it).

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "kvmctl", description = "kvmctl daemon API. Errors share one body, `ErrorBody`; see docs/api-errors.md."),
    paths(crate::http::status::status_get, crate::http::host::host_get),
    components(schemas(
        kvmctl_types::api::ErrorBody,
        kvmctl_types::api::StatusResponse,
        kvmctl_types::api::DoctorReport,
        kvmctl_types::api::Check,
        kvmctl_types::api::CheckStatus,
        kvmctl_types::api::KvmVerdict
    )),
    tags((name = "system", description = "The daemon itself"))
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
