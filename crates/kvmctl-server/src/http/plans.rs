use super::body::Body;
use super::call::{created, Call, Created};
use super::error::ApiError;
use crate::app;
use axum::extract::Path;
use axum::Json;
use kvmctl_types::api::{ErrorBody, Plan, PlanCreateRequest, PlanUpdateRequest};

/// The plans VMs can be created with, in their sort order (admins also see retired ones).
#[utoipa::path(get, path = "/v1/plans", tag = "vms", operation_id = "plan_list", responses((status = 200, description = "Plans", body = [Plan])))]
pub(crate) async fn plan_list(Call { ctx, caller }: Call) -> Result<Json<Vec<Plan>>, ApiError> {
    Ok(Json(app::plans::plan_list(&ctx, &caller).await?))
}

#[utoipa::path(get, path = "/v1/plans/{name}", tag = "vms", operation_id = "plan_get",
    params(("name" = String, Path, description = "Plan name")),
    responses((status = 200, description = "The plan", body = Plan), (status = 404, description = "No such plan", body = ErrorBody)))]
pub(crate) async fn plan_get(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<Json<Plan>, ApiError> {
    Ok(Json(app::plans::plan_get(&ctx, &caller, &name).await?))
}

#[utoipa::path(post, path = "/v1/plans", tag = "vms", operation_id = "plan_create", request_body = PlanCreateRequest,
    responses((status = 201, description = "Created", body = Plan), (status = 400, description = "Bad input", body = ErrorBody),
        (status = 403, description = "Admins only", body = ErrorBody), (status = 409, description = "The name is taken", body = ErrorBody)))]
pub(crate) async fn plan_create(Call { ctx, caller }: Call, Body(req): Body<PlanCreateRequest>) -> Result<Created<Plan>, ApiError> {
    created(app::plans::plan_create(&ctx, &caller, req).await)
}

/// Changes a plan (admins); `active: false` retires it. VMs keep the sizes they have.
#[utoipa::path(patch, path = "/v1/plans/{name}", tag = "vms", operation_id = "plan_update", request_body = PlanUpdateRequest,
    params(("name" = String, Path, description = "Plan name")),
    responses((status = 200, description = "Changed", body = Plan), (status = 403, description = "Admins only", body = ErrorBody),
        (status = 404, description = "No such plan", body = ErrorBody)))]
pub(crate) async fn plan_update(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Body(req): Body<PlanUpdateRequest>,
) -> Result<Json<Plan>, ApiError> {
    Ok(Json(app::plans::plan_update(&ctx, &caller, &name, req).await?))
}
