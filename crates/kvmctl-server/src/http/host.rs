use super::error::ApiError;
use crate::app::{self, Context};
use axum::extract::State;
use axum::{Extension, Json};
use kvmctl_core::Caller;
use kvmctl_types::api::{DoctorReport, ErrorBody};
use std::sync::Arc;

/// The last `kvmctl host doctor` report recorded on the daemon's host.
#[utoipa::path(
    get,
    path = "/v1/host",
    tag = "system",
    operation_id = "host_get",
    responses(
        (status = 200, description = "Last doctor report", body = DoctorReport),
        (status = 404, description = "No report yet: run `kvmctl host doctor`", body = ErrorBody),
    )
)]
pub(crate) async fn host_get(
    State(ctx): State<Arc<Context>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<DoctorReport>, ApiError> {
    app::host::host_report(&ctx, &caller).await.map(Json).map_err(ApiError::from)
}
