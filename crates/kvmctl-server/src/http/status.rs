use super::error::ApiError;
use crate::app::{self, Context};
use axum::extract::State;
use axum::{Extension, Json};
use kvmctl_core::Caller;
use kvmctl_types::api::{ErrorBody, StatusResponse};
use std::sync::Arc;

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
pub(crate) async fn status_get(
    State(ctx): State<Arc<Context>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<StatusResponse>, ApiError> {
    app::status::status_get(&ctx, &caller).await.map(Json).map_err(ApiError::from)
}
