use super::body::Body;
use super::call::{created, no_content, Call, Created};
use super::error::ApiError;
use crate::app;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use kvmctl_types::api::{ErrorBody, Image, ImageImportRequest};

/// Images on the node, with the VMs using each.
#[utoipa::path(get, path = "/v1/images", tag = "images", operation_id = "image_list",
    responses((status = 200, description = "Images", body = [Image])))]
pub(crate) async fn image_list(Call { ctx, caller }: Call) -> Result<Json<Vec<Image>>, ApiError> {
    Ok(Json(app::images::image_list(&ctx, &caller).await?))
}

#[utoipa::path(get, path = "/v1/images/{name}", tag = "images", operation_id = "image_get",
    params(("name" = String, Path, description = "Image name")),
    responses((status = 200, description = "The image", body = Image), (status = 404, description = "No such image", body = ErrorBody)))]
pub(crate) async fn image_get(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<Json<Image>, ApiError> {
    Ok(Json(app::images::image_get(&ctx, &caller, &name).await?))
}

/// Imports a qcow2 or raw image (a path on the daemon's host, or an http URL) into the
/// storage pool, after checking its format, consistency and checksum.
#[utoipa::path(post, path = "/v1/images", tag = "images", operation_id = "image_import", request_body = ImageImportRequest,
    responses(
        (status = 201, description = "Imported", body = Image),
        (status = 400, description = "Bad input, or a file that is not a self-contained qcow2/raw image", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody)))]
pub(crate) async fn image_import(Call { ctx, caller }: Call, Body(req): Body<ImageImportRequest>) -> Result<Created<Image>, ApiError> {
    created(app::images::image_import(&ctx, &caller, req).await)
}

/// Removes an image and its volumes; 409 while a VM's disk is backed by it.
#[utoipa::path(delete, path = "/v1/images/{name}", tag = "images", operation_id = "image_delete",
    params(("name" = String, Path, description = "Image name")),
    responses((status = 204, description = "Removed"), (status = 404, description = "No such image", body = ErrorBody),
        (status = 409, description = "VMs use it", body = ErrorBody)))]
pub(crate) async fn image_delete(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    no_content(app::images::image_delete(&ctx, &caller, &name).await)
}
