use super::error::ApiError;
use super::RequestId;
use crate::app::{self, Context};
use axum::extract::State;
use axum::{Extension, Json};
use kvmctl_types::api::Plan;
use std::sync::Arc;

/// The plans VMs can be created with.
#[utoipa::path(get, path = "/v1/plans", tag = "vms", operation_id = "plan_list", responses((status = 200, description = "Plans", body = [Plan])))]
pub(crate) async fn plan_list(State(ctx): State<Arc<Context>>, Extension(rid): Extension<RequestId>) -> Result<Json<Vec<Plan>>, ApiError> {
    app::plans::plan_list(&ctx).await.map(Json).map_err(|e| ApiError::new(e, &rid))
}
