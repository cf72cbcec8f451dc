use super::body::Body;
use super::error::ApiError;
use crate::app::{self, Context};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use kvmctl_core::Caller;
use kvmctl_types::api::{ComputeNode, ErrorBody, NodeAddRequest, NodeUpdateRequest};
use std::sync::Arc;

/// Compute nodes with capacity, allocation and availability (admins).
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", operation_id = "node_list",
    responses((status = 200, description = "Every node", body = [ComputeNode]), (status = 403, description = "Admins only", body = ErrorBody)))]
pub(crate) async fn node_list(
    State(ctx): State<Arc<Context>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<ComputeNode>>, ApiError> {
    app::nodes::node_list(&ctx, &caller).await.map(Json).map_err(ApiError::from)
}

/// Registers a libvirt host; its capacity is read first, so an unreachable one is refused.
#[utoipa::path(post, path = "/v1/nodes", tag = "nodes", operation_id = "node_add", request_body = NodeAddRequest,
    responses((status = 201, description = "Added", body = ComputeNode), (status = 400, description = "Bad request or unreachable", body = ErrorBody),
        (status = 403, description = "Admins only", body = ErrorBody), (status = 409, description = "Name or URI taken", body = ErrorBody)))]
pub(crate) async fn node_add(
    State(ctx): State<Arc<Context>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<NodeAddRequest>,
) -> Result<(StatusCode, Json<ComputeNode>), ApiError> {
    app::nodes::node_add(&ctx, &caller, req).await.map(|n| (StatusCode::CREATED, Json(n))).map_err(ApiError::from)
}

/// A node with the names of its VMs.
#[utoipa::path(get, path = "/v1/nodes/{name}", tag = "nodes", operation_id = "node_get",
    params(("name" = String, Path, description = "Node name")),
    responses((status = 200, description = "The node", body = ComputeNode), (status = 403, description = "Admins only", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody)))]
pub(crate) async fn node_get(
    State(ctx): State<Arc<Context>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<ComputeNode>, ApiError> {
    app::nodes::node_get(&ctx, &caller, &name).await.map(Json).map_err(ApiError::from)
}

/// Changes overcommit, reservations, labels, or drains (`state: draining`) and reopens it.
#[utoipa::path(patch, path = "/v1/nodes/{name}", tag = "nodes", operation_id = "node_update", request_body = NodeUpdateRequest,
    params(("name" = String, Path, description = "Node name")),
    responses((status = 200, description = "Changed", body = ComputeNode), (status = 403, description = "Admins only", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody)))]
pub(crate) async fn node_update(
    State(ctx): State<Arc<Context>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Body(req): Body<NodeUpdateRequest>,
) -> Result<Json<ComputeNode>, ApiError> {
    app::nodes::node_update(&ctx, &caller, &name, req).await.map(Json).map_err(ApiError::from)
}

/// Removes a node without VMs (the local node stays).
#[utoipa::path(delete, path = "/v1/nodes/{name}", tag = "nodes", operation_id = "node_remove",
    params(("name" = String, Path, description = "Node name")),
    responses((status = 204, description = "Removed"), (status = 403, description = "Admins only", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody), (status = 409, description = "It has VMs, or is the local node", body = ErrorBody)))]
pub(crate) async fn node_remove(
    State(ctx): State<Arc<Context>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app::nodes::node_remove(&ctx, &caller, &name).await.map(|()| StatusCode::NO_CONTENT).map_err(ApiError::from)
}

/// Debris on the node that belongs to no VM row, reported (admins).
#[utoipa::path(get, path = "/v1/gc", tag = "nodes", operation_id = "gc_report",
    responses((status = 200, description = "What would be removed", body = kvmctl_types::api::GcReport),
        (status = 403, description = "Admins only", body = ErrorBody)))]
pub(crate) async fn gc_report(
    State(ctx): State<Arc<Context>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<kvmctl_types::api::GcReport>, ApiError> {
    app::gc::gc(&ctx, &caller, false).await.map(Json).map_err(ApiError::from)
}

/// Removes the debris `GET /v1/gc` reports (rows whose domain vanished are only reported).
#[utoipa::path(post, path = "/v1/gc", tag = "nodes", operation_id = "gc_clean",
    responses((status = 200, description = "What was removed", body = kvmctl_types::api::GcReport),
        (status = 403, description = "Admins only", body = ErrorBody)))]
pub(crate) async fn gc_clean(
    State(ctx): State<Arc<Context>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<kvmctl_types::api::GcReport>, ApiError> {
    app::gc::gc(&ctx, &caller, true).await.map(Json).map_err(ApiError::from)
}
