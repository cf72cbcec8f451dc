use super::call::Call;
use super::error::ApiError;
use crate::app;
use axum::Json;
use kvmctl_types::api::{ErrorBody, StatusResponse};

/// Daemon version, database, and the local hypervisor's reachability and versions.
///
/// Answers 200 even when libvirt is down: `hypervisor.reachable` is then false and
/// `hypervisor.error` says why.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "system",
    operation_id = "status_get",
    responses(
        (status = 200, description = "Daemon status", body = StatusResponse),
        (status = 503, description = "The database does not answer", body = ErrorBody),
    )
)]
pub(crate) async fn status_get(Call { ctx, caller }: Call) -> Result<Json<StatusResponse>, ApiError> {
    Ok(Json(app::status::status_get(&ctx, &caller).await?))
}
