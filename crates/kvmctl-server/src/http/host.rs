use super::call::Call;
use super::error::ApiError;
use crate::app;
use axum::Json;
use kvmctl_types::api::{DoctorReport, ErrorBody};

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
pub(crate) async fn host_get(Call { ctx, caller }: Call) -> Result<Json<DoctorReport>, ApiError> {
    Ok(Json(app::host::host_report(&ctx, &caller).await?))
}
