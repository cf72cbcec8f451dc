use super::body::Body;
use super::call::{created, no_content, Call, Created};
use super::error::ApiError;
use crate::app;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use kvmctl_types::api::{ErrorBody, Snapshot, SnapshotCreateRequest};

/// The VM's snapshots, oldest first; `parent` makes the tree, `current` marks where the VM is.
#[utoipa::path(get, path = "/v1/vms/{name}/snapshots", tag = "snapshots", operation_id = "snapshot_list",
    params(("name" = String, Path, description = "VM name")),
    responses((status = 200, description = "Snapshots", body = [Snapshot]), (status = 404, description = "No such VM", body = ErrorBody)))]
pub(crate) async fn snapshot_list(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<Json<Vec<Snapshot>>, ApiError> {
    Ok(Json(app::snapshots::snapshot_list(&ctx, &caller, &name).await?))
}

/// Takes a snapshot: the disk, the UEFI variables and, with `memory`, RAM and devices. A
/// running VM pauses while its state is written.
#[utoipa::path(post, path = "/v1/vms/{name}/snapshots", tag = "snapshots", operation_id = "snapshot_create",
    request_body = SnapshotCreateRequest, params(("name" = String, Path, description = "VM name")),
    responses((status = 201, description = "Taken", body = Snapshot), (status = 400, description = "Bad input; `field` names it", body = ErrorBody),
        (status = 409, description = "The name is taken, too many snapshots, or the VM is busy", body = ErrorBody)))]
pub(crate) async fn snapshot_create(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Body(req): Body<SnapshotCreateRequest>,
) -> Result<Created<Snapshot>, ApiError> {
    created(app::snapshots::snapshot_create(&ctx, &caller, &name, req).await)
}

/// Brings the VM back to the snapshot (running at that instant, for a memory snapshot).
#[utoipa::path(post, path = "/v1/vms/{name}/snapshots/{snapshot}/revert", tag = "snapshots", operation_id = "snapshot_revert",
    params(("name" = String, Path, description = "VM name"), ("snapshot" = String, Path, description = "Snapshot name")),
    responses((status = 200, description = "Reverted", body = Snapshot), (status = 404, description = "No such VM or snapshot", body = ErrorBody),
        (status = 409, description = "The VM is busy", body = ErrorBody)))]
pub(crate) async fn snapshot_revert(
    Call { ctx, caller }: Call,
    Path((name, snapshot)): Path<(String, String)>,
) -> Result<Json<Snapshot>, ApiError> {
    Ok(Json(app::snapshots::snapshot_revert(&ctx, &caller, &name, &snapshot).await?))
}

/// Removes a snapshot; the others stay valid (its children take its parent).
#[utoipa::path(delete, path = "/v1/vms/{name}/snapshots/{snapshot}", tag = "snapshots", operation_id = "snapshot_delete",
    params(("name" = String, Path, description = "VM name"), ("snapshot" = String, Path, description = "Snapshot name")),
    responses((status = 204, description = "Removed"), (status = 404, description = "No such VM or snapshot", body = ErrorBody),
        (status = 409, description = "The VM is busy", body = ErrorBody)))]
pub(crate) async fn snapshot_delete(
    Call { ctx, caller }: Call,
    Path((name, snapshot)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    no_content(app::snapshots::snapshot_delete(&ctx, &caller, &name, &snapshot).await)
}
