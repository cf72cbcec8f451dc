use super::body::Body;
use super::error::ApiError;
use crate::app::{self, Context};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use kvmctl_core::Caller;
use kvmctl_types::api::{ErrorBody, Image, ImageImportRequest};
use std::sync::Arc;

/// Images on the node, with the VMs using each.
#[utoipa::path(get, path = "/v1/images", tag = "images", operation_id = "image_list",
    responses((status = 200, description = "Images", body = [Image])))]
pub(crate) async fn image_list(
    State(ctx): State<Arc<Context>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<Image>>, ApiError> {
    app::images::image_list(&ctx, &caller).await.map(Json).map_err(ApiError::from)
}

#[utoipa::path(get, path = "/v1/images/{name}", tag = "images", operation_id = "image_get",
    params(("name" = String, Path, description = "Image name")),
    responses((status = 200, description = "The image", body = Image), (status = 404, description = "No such image", body = ErrorBody)))]
pub(crate) async fn image_get(
    State(ctx): State<Arc<Context>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Image>, ApiError> {
    app::images::image_get(&ctx, &caller, &name).await.map(Json).map_err(ApiError::from)
}

/// Imports a qcow2 or raw image (a path on the daemon's host, or an http URL) into the
/// storage pool, after checking its format, consistency and checksum.
#[utoipa::path(post, path = "/v1/images", tag = "images", operation_id = "image_import", request_body = ImageImportRequest,
    responses(
        (status = 201, description = "Imported", body = Image),
        (status = 400, description = "Bad input, or a file that is not a self-contained qcow2/raw image", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody)))]
pub(crate) async fn image_import(
    State(ctx): State<Arc<Context>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<ImageImportRequest>,
) -> Result<(StatusCode, Json<Image>), ApiError> {
    app::images::image_import(&ctx, &caller, req).await.map(|i| (StatusCode::CREATED, Json(i))).map_err(ApiError::from)
}

/// Removes an image and its volumes; 409 while a VM's disk is backed by it.
#[utoipa::path(delete, path = "/v1/images/{name}", tag = "images", operation_id = "image_delete",
    params(("name" = String, Path, description = "Image name")),
    responses((status = 204, description = "Removed"), (status = 404, description = "No such image", body = ErrorBody),
        (status = 409, description = "VMs use it", body = ErrorBody)))]
pub(crate) async fn image_delete(
    State(ctx): State<Arc<Context>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app::images::image_delete(&ctx, &caller, &name).await.map(|()| StatusCode::NO_CONTENT).map_err(ApiError::from)
}
