use super::body::Body;
use super::call::{created, no_content, Call, Created};
use super::error::ApiError;
use crate::app;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use kvmctl_types::api::{ErrorBody, PoolCreateRequest, StoragePool};

/// Storage pools (admins): the daemon's own and those made with `POST /v1/pools`, with their
/// sizes and what lives in each.
#[utoipa::path(get, path = "/v1/pools", tag = "pools", operation_id = "pool_list",
    responses((status = 200, description = "Pools", body = [StoragePool]), (status = 403, description = "Not an admin", body = ErrorBody)))]
pub(crate) async fn pool_list(Call { ctx, caller }: Call) -> Result<Json<Vec<StoragePool>>, ApiError> {
    Ok(Json(app::pools::pool_list(&ctx, &caller).await?))
}

#[utoipa::path(get, path = "/v1/pools/{name}", tag = "pools", operation_id = "pool_get",
    params(("name" = String, Path, description = "Pool name")),
    responses((status = 200, description = "The pool", body = StoragePool), (status = 404, description = "No such pool", body = ErrorBody)))]
pub(crate) async fn pool_get(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<Json<StoragePool>, ApiError> {
    Ok(Json(app::pools::pool_get(&ctx, &caller, &name).await?))
}

/// Makes a directory pool, or an LVM pool over a volume group (made on the devices given
/// when it does not exist).
#[utoipa::path(post, path = "/v1/pools", tag = "pools", operation_id = "pool_create", request_body = PoolCreateRequest,
    responses((status = 201, description = "Created", body = StoragePool), (status = 400, description = "Bad input; `field` names it", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody)))]
pub(crate) async fn pool_create(Call { ctx, caller }: Call, Body(req): Body<PoolCreateRequest>) -> Result<Created<StoragePool>, ApiError> {
    created(app::pools::pool_create(&ctx, &caller, req).await)
}

/// Removes a pool nothing lives in (an LVM pool kvmctl built: its volume group too).
#[utoipa::path(delete, path = "/v1/pools/{name}", tag = "pools", operation_id = "pool_delete",
    params(("name" = String, Path, description = "Pool name")),
    responses((status = 204, description = "Removed"), (status = 404, description = "No such pool", body = ErrorBody),
        (status = 409, description = "In use, or the daemon's own pool", body = ErrorBody)))]
pub(crate) async fn pool_delete(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    no_content(app::pools::pool_delete(&ctx, &caller, &name).await)
}
