use super::body::Body;
use super::call::{created, no_content, Call, Created};
use super::error::ApiError;
use crate::app;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use kvmctl_types::api::{ComputeNode, ErrorBody, NodeAddRequest, NodeEvacuation, NodeUpdateRequest};

/// Compute nodes with capacity, allocation and availability (admins).
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", operation_id = "node_list",
    responses((status = 200, description = "Every node", body = [ComputeNode]), (status = 403, description = "Admins only", body = ErrorBody)))]
pub(crate) async fn node_list(Call { ctx, caller }: Call) -> Result<Json<Vec<ComputeNode>>, ApiError> {
    Ok(Json(app::nodes::node_list(&ctx, &caller).await?))
}

/// Registers a libvirt host; its capacity is read first, so an unreachable one is refused.
#[utoipa::path(post, path = "/v1/nodes", tag = "nodes", operation_id = "node_add", request_body = NodeAddRequest,
    responses((status = 201, description = "Added", body = ComputeNode), (status = 400, description = "Bad request or unreachable", body = ErrorBody),
        (status = 403, description = "Admins only", body = ErrorBody), (status = 409, description = "Name or URI taken", body = ErrorBody)))]
pub(crate) async fn node_add(Call { ctx, caller }: Call, Body(req): Body<NodeAddRequest>) -> Result<Created<ComputeNode>, ApiError> {
    created(app::nodes::node_add(&ctx, &caller, req).await)
}

/// A node with the names of its VMs.
#[utoipa::path(get, path = "/v1/nodes/{name}", tag = "nodes", operation_id = "node_get",
    params(("name" = String, Path, description = "Node name")),
    responses((status = 200, description = "The node", body = ComputeNode), (status = 403, description = "Admins only", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody)))]
pub(crate) async fn node_get(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<Json<ComputeNode>, ApiError> {
    Ok(Json(app::nodes::node_get(&ctx, &caller, &name).await?))
}

/// Changes overcommit, reservations, labels, or drains (`state: draining`) and reopens it.
#[utoipa::path(patch, path = "/v1/nodes/{name}", tag = "nodes", operation_id = "node_update", request_body = NodeUpdateRequest,
    params(("name" = String, Path, description = "Node name")),
    responses((status = 200, description = "Changed", body = ComputeNode), (status = 403, description = "Admins only", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody)))]
pub(crate) async fn node_update(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Body(req): Body<NodeUpdateRequest>,
) -> Result<Json<ComputeNode>, ApiError> {
    Ok(Json(app::nodes::node_update(&ctx, &caller, &name, req).await?))
}

/// Removes a node without VMs (the local node stays).
#[utoipa::path(delete, path = "/v1/nodes/{name}", tag = "nodes", operation_id = "node_remove",
    params(("name" = String, Path, description = "Node name")),
    responses((status = 204, description = "Removed"), (status = 403, description = "Admins only", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody), (status = 409, description = "It has VMs, or is the local node", body = ErrorBody)))]
pub(crate) async fn node_remove(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    no_content(app::nodes::node_remove(&ctx, &caller, &name).await)
}

/// Debris on the node that belongs to no VM row, reported (admins).
#[utoipa::path(get, path = "/v1/gc", tag = "nodes", operation_id = "gc_report",
    responses((status = 200, description = "What would be removed", body = kvmctl_types::api::GcReport),
        (status = 403, description = "Admins only", body = ErrorBody)))]
pub(crate) async fn gc_report(Call { ctx, caller }: Call) -> Result<Json<kvmctl_types::api::GcReport>, ApiError> {
    Ok(Json(app::gc::gc(&ctx, &caller, false).await?))
}

/// Removes the debris `GET /v1/gc` reports (rows whose domain vanished are only reported).
#[utoipa::path(post, path = "/v1/gc", tag = "nodes", operation_id = "gc_clean",
    responses((status = 200, description = "What was removed", body = kvmctl_types::api::GcReport),
        (status = 403, description = "Admins only", body = ErrorBody)))]
pub(crate) async fn gc_clean(Call { ctx, caller }: Call) -> Result<Json<kvmctl_types::api::GcReport>, ApiError> {
    Ok(Json(app::gc::gc(&ctx, &caller, true).await?))
}

/// Drains the node and migrates each of its VMs where placement puts it (live when it runs,
/// cold when stopped); each VM's result says where it went or why it stayed.
#[utoipa::path(post, path = "/v1/nodes/{name}/evacuate", tag = "nodes", operation_id = "node_evacuate",
    params(("name" = String, Path, description = "Node name")),
    responses((status = 200, description = "What moved", body = NodeEvacuation), (status = 403, description = "Admins only", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody)))]
pub(crate) async fn node_evacuate(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<Json<NodeEvacuation>, ApiError> {
    Ok(Json(app::nodes::node_evacuate(&ctx, &caller, &name).await?))
}
