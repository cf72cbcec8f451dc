use super::body::Body;
use super::call::{created, no_content, Call, Created};
use super::error::ApiError;
use crate::app::{self, Context};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::Json;
use kvmctl_types::api::{
    ErrorBody, Vm, VmCloneRequest, VmCreateRequest, VmDisk, VmDiskAddRequest, VmDiskResizeRequest, VmExecRequest, VmExecResponse,
    VmLabelsRequest, VmMigrateRequest, VmResizeRequest, VmShare, VmStopRequest,
};

#[utoipa::path(get, path = "/v1/vms", tag = "vms", operation_id = "vm_list", responses((status = 200, description = "VMs", body = [Vm])))]
pub(crate) async fn vm_list(Call { ctx, caller }: Call) -> Result<Json<Vec<Vm>>, ApiError> {
    Ok(Json(app::vms::vm_list(&ctx, &caller).await?))
}

#[utoipa::path(get, path = "/v1/vms/{name}", tag = "vms", operation_id = "vm_get",
    params(("name" = String, Path, description = "VM name")),
    responses((status = 200, description = "The VM", body = Vm), (status = 404, description = "No such VM", body = ErrorBody)))]
pub(crate) async fn vm_get(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<Json<Vm>, ApiError> {
    Ok(Json(app::vms::vm_get(&ctx, &caller, &name).await?))
}

/// Creates a VM: root disk (a copy-on-write overlay of the image), cloud-init seed, domain;
/// starts it unless `no_start`. A failure at any step removes everything the request made.
#[utoipa::path(post, path = "/v1/vms", tag = "vms", operation_id = "vm_create", request_body = VmCreateRequest,
    responses(
        (status = 201, description = "Created (and started unless no_start)", body = Vm),
        (status = 400, description = "Bad input; `field` names it", body = ErrorBody),
        (status = 409, description = "The name is taken, or the VM is busy", body = ErrorBody)))]
pub(crate) async fn vm_create(Call { ctx, caller }: Call, Body(req): Body<VmCreateRequest>) -> Result<Created<Vm>, ApiError> {
    created(timed(&ctx, "create", app::vms::vm_create(&ctx, &caller, req)).await)
}

/// Makes a new VM from this one's disk (now, or at one of its snapshots) with a new
/// identity: id, hostname, MAC, address, SSH host key, VM key, machine-id, forward. `linked`
/// (default) lays it over a shared read-only base; `full` copies the disk.
#[utoipa::path(post, path = "/v1/vms/{name}/clone", tag = "vms", operation_id = "vm_clone", request_body = VmCloneRequest,
    params(("name" = String, Path, description = "The source VM")),
    responses(
        (status = 201, description = "Cloned (and started unless no_start)", body = Vm),
        (status = 400, description = "Bad input; `field` names it", body = ErrorBody),
        (status = 404, description = "No such VM or snapshot", body = ErrorBody),
        (status = 409, description = "The name is taken, or a VM is busy", body = ErrorBody)))]
pub(crate) async fn vm_clone(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Body(req): Body<VmCloneRequest>,
) -> Result<Created<Vm>, ApiError> {
    created(timed(&ctx, "clone", app::vms::vm_clone(&ctx, &caller, &name, req)).await)
}

/// The VM as one tar archive (`application/x-tar`): `vm.json` (its definition and
/// template), `domain.xml`, `nvram.fd` (UEFI), `disk.qcow2` (flattened) and `manifest.json`
/// (size and sha256 of each). A running VM pauses while its disk is read (its RAM is saved
/// and restored: its processes carry on); the VM is busy until the archive is sent.
#[utoipa::path(get, path = "/v1/vms/{name}/export", tag = "vms", operation_id = "vm_export",
    params(("name" = String, Path, description = "VM name")),
    responses((status = 200, description = "The archive", content_type = "application/x-tar", body = Vec<u8>),
        (status = 404, description = "No such VM", body = ErrorBody),
        (status = 409, description = "The VM is busy, or not running or stopped", body = ErrorBody)))]
pub(crate) async fn vm_export(Call { ctx, caller }: Call, Path(name): Path<String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match timed(&ctx, "export", app::vms::vm_export(ctx.clone(), caller, &name)).await {
        Ok(stream) => ([(axum::http::header::CONTENT_TYPE, "application/x-tar")], axum::body::Body::from_stream(stream)).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RestoreQuery {
    /// The new VM's name (also its hostname). Required.
    #[serde(default)]
    name: String,
    /// The network it joins [default: the daemon's `network` setting].
    network: Option<String>,
    #[serde(default)]
    no_start: bool,
    #[serde(default)]
    no_ssh_forward: bool,
}

/// A new VM from an archive of `GET /v1/vms/{name}/export` (the request body). The archive
/// is verified (members, sizes, sha256, a self-contained disk) before anything is made; the
/// VM gets a new identity, under quota and placement like any create. The image it was
/// made from must exist here by name.
#[utoipa::path(post, path = "/v1/restore", tag = "vms", operation_id = "vm_restore", params(RestoreQuery),
    request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 201, description = "Restored (and started unless no_start)", body = Vm),
        (status = 400, description = "A damaged or foreign archive (`field` is `archive`), or bad input", body = ErrorBody),
        (status = 403, description = "Past the quota, or sizes the caller may not pick", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody)))]
pub(crate) async fn vm_restore(
    Call { ctx, caller }: Call,
    Query(q): Query<RestoreQuery>,
    body: axum::body::Body,
) -> Result<Created<Vm>, ApiError> {
    let opts = app::vms::RestoreOptions { name: q.name, network: q.network, no_start: q.no_start, no_ssh_forward: q.no_ssh_forward };
    created(timed(&ctx, "restore", app::vms::vm_restore(&ctx, &caller, opts, body.into_data_stream())).await)
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteQuery {
    /// Keep the root disk volume in the pool.
    #[serde(default)]
    keep_disk: bool,
}

/// Stops and removes the VM: domain, seed, root disk (unless `keep_disk`), logs.
#[utoipa::path(delete, path = "/v1/vms/{name}", tag = "vms", operation_id = "vm_delete",
    params(("name" = String, Path, description = "VM name"), DeleteQuery),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such VM", body = ErrorBody),
        (status = 409, description = "The VM is busy", body = ErrorBody)))]
pub(crate) async fn vm_delete(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    no_content(timed(&ctx, "delete", app::vms::vm_delete(&ctx, &caller, &name, q.keep_disk)).await)
}

#[utoipa::path(post, path = "/v1/vms/{name}/start", tag = "vms", operation_id = "vm_start",
    params(("name" = String, Path, description = "VM name")),
    responses((status = 200, description = "Started", body = Vm), (status = 409, description = "Not stopped, or busy", body = ErrorBody)))]
pub(crate) async fn vm_start(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<Json<Vm>, ApiError> {
    Ok(Json(timed(&ctx, "start", app::vms::vm_start(&ctx, &caller, &name)).await?))
}

/// Asks the guest to shut down (ACPI) and powers it off after the timeout; `force` powers
/// it off at once.
#[utoipa::path(post, path = "/v1/vms/{name}/stop", tag = "vms", operation_id = "vm_stop", request_body = VmStopRequest,
    params(("name" = String, Path, description = "VM name")),
    responses((status = 200, description = "Stopped", body = Vm), (status = 409, description = "Not running, or busy", body = ErrorBody)))]
pub(crate) async fn vm_stop(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Body(req): Body<VmStopRequest>,
) -> Result<Json<Vm>, ApiError> {
    Ok(Json(timed(&ctx, "stop", app::vms::vm_stop(&ctx, &caller, &name, req)).await?))
}

#[utoipa::path(post, path = "/v1/vms/{name}/reboot", tag = "vms", operation_id = "vm_reboot",
    params(("name" = String, Path, description = "VM name")),
    responses((status = 200, description = "Reboot requested", body = Vm), (status = 409, description = "Not running, or busy", body = ErrorBody)))]
pub(crate) async fn vm_reboot(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<Json<Vm>, ApiError> {
    Ok(Json(timed(&ctx, "reboot", app::vms::vm_reboot(&ctx, &caller, &name)).await?))
}

/// Moves the VM to another node (admins): cold when it is stopped, live (`live`) when it runs.
#[utoipa::path(post, path = "/v1/vms/{name}/migrate", tag = "vms", operation_id = "vm_migrate", request_body = VmMigrateRequest,
    params(("name" = String, Path, description = "VM name")),
    responses((status = 200, description = "Migrated: the VM on its new node", body = Vm),
        (status = 400, description = "No such node, the same node, or --live for a stopped VM", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "Busy, in a state that does not migrate, something migration does not move, or libvirt refused", body = ErrorBody),
        (status = 503, description = "The target node has no room", body = ErrorBody)))]
pub(crate) async fn vm_migrate(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Body(req): Body<VmMigrateRequest>,
) -> Result<Json<Vm>, ApiError> {
    Ok(Json(timed(&ctx, "migrate", app::vms::vm_migrate(&ctx, &caller, &name, req)).await?))
}

/// Replaces the VM's labels.
#[utoipa::path(put, path = "/v1/vms/{name}/labels", tag = "vms", operation_id = "vm_labels_set", request_body = VmLabelsRequest,
    params(("name" = String, Path, description = "VM name")),
    responses((status = 200, description = "Labels set", body = Vm), (status = 400, description = "A bad key or value, or too many", body = ErrorBody),
        (status = 404, description = "No such VM", body = ErrorBody), (status = 409, description = "Being deleted", body = ErrorBody)))]
pub(crate) async fn vm_labels_set(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Body(req): Body<VmLabelsRequest>,
) -> Result<Json<Vm>, ApiError> {
    Ok(Json(app::vms::vm_labels_set(&ctx, &caller, &name, req).await?))
}

/// Changes CPUs and memory (VM stopped) or grows the disk (running or stopped).
#[utoipa::path(post, path = "/v1/vms/{name}/resize", tag = "vms", operation_id = "vm_resize", request_body = VmResizeRequest,
    params(("name" = String, Path, description = "VM name")),
    responses((status = 200, description = "Resized", body = Vm), (status = 400, description = "Out of range, or a shrink", body = ErrorBody),
        (status = 409, description = "Running (for CPU/memory), or busy", body = ErrorBody)))]
pub(crate) async fn vm_resize(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Body(req): Body<VmResizeRequest>,
) -> Result<Json<Vm>, ApiError> {
    Ok(Json(timed(&ctx, "resize", app::vms::vm_resize(&ctx, &caller, &name, req)).await?))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct WaitQuery {
    /// `running`, `ssh` (login with the VM's key works) or `cloud-init` (finished).
    #[serde(rename = "for")]
    stage: String,
    /// Give up after this long (default 600).
    timeout_seconds: Option<u64>,
}

/// Blocks until the VM's current boot reaches a readiness stage; the VM with its stages.
/// A timeout (503) names the last stage reached and shows the end of the console log.
#[utoipa::path(get, path = "/v1/vms/{name}/wait", tag = "vms", operation_id = "vm_wait",
    params(("name" = String, Path, description = "VM name"), WaitQuery),
    responses((status = 200, description = "Reached", body = Vm), (status = 400, description = "Unknown stage", body = ErrorBody),
        (status = 409, description = "The VM is not running", body = ErrorBody), (status = 503, description = "Timed out", body = ErrorBody)))]
pub(crate) async fn vm_wait(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Json<Vm>, ApiError> {
    let timeout = std::time::Duration::from_secs(q.timeout_seconds.unwrap_or(600));
    Ok(Json(app::vms::vm_wait(&ctx, &caller, &name, &q.stage, timeout).await?))
}

/// Runs one command in the guest over SSH (the VM's own key, as its user).
#[utoipa::path(post, path = "/v1/vms/{name}/exec", tag = "vms", operation_id = "vm_exec", request_body = VmExecRequest,
    params(("name" = String, Path, description = "VM name")),
    responses((status = 200, description = "The command ran; see exit_status", body = VmExecResponse),
        (status = 409, description = "Not running, no address yet, or the login was refused", body = ErrorBody)))]
pub(crate) async fn vm_exec(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Body(req): Body<VmExecRequest>,
) -> Result<Json<VmExecResponse>, ApiError> {
    Ok(Json(app::vms::vm_exec(&ctx, &caller, &name, req).await?))
}

/// Runs a VM operation and records its duration and outcome (`kvmctl_vm_operation_seconds`).
async fn timed<T>(
    ctx: &Context,
    op: &str,
    f: impl std::future::Future<Output = Result<T, kvmctl_core::Error>>,
) -> Result<T, kvmctl_core::Error> {
    let started = std::time::Instant::now();
    let r = f.await;
    let outcome = match &r {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    ctx.metrics.operation(op, outcome, started.elapsed().as_secs_f64());
    r
}

#[utoipa::path(get, path = "/v1/vms/{name}/disks", tag = "vms", operation_id = "disk_list",
    params(("name" = String, Path, description = "VM name")),
    responses((status = 200, description = "The VM's data disks", body = [VmDisk]), (status = 404, description = "No such VM", body = ErrorBody)))]
pub(crate) async fn disk_list(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<Json<Vec<VmDisk>>, ApiError> {
    Ok(Json(app::vms::disk_list(&ctx, &caller, &name).await?))
}

/// Adds an empty data disk, hot-plugged when the VM runs; its size counts against the
/// owner's disk quota and the node's disk capacity.
#[utoipa::path(post, path = "/v1/vms/{name}/disks", tag = "vms", operation_id = "disk_add", request_body = VmDiskAddRequest,
    params(("name" = String, Path, description = "VM name")),
    responses((status = 201, description = "Added", body = VmDisk),
        (status = 400, description = "Bad input; `field` names it", body = ErrorBody),
        (status = 404, description = "No such VM", body = ErrorBody),
        (status = 409, description = "The name is taken, the VM has the most disks or has snapshots, or is busy", body = ErrorBody),
        (status = 403, description = "Over the disk quota", body = ErrorBody),
        (status = 503, description = "The node has no room", body = ErrorBody)))]
pub(crate) async fn disk_add(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Body(req): Body<VmDiskAddRequest>,
) -> Result<Created<VmDisk>, ApiError> {
    created(app::vms::disk_add(&ctx, &caller, &name, req).await)
}

/// Grows a data disk (online when the VM runs).
#[utoipa::path(patch, path = "/v1/vms/{name}/disks/{disk}", tag = "vms", operation_id = "disk_resize", request_body = VmDiskResizeRequest,
    params(("name" = String, Path, description = "VM name"), ("disk" = String, Path, description = "Disk name")),
    responses((status = 200, description = "Grown", body = VmDisk), (status = 400, description = "A shrink, or out of range", body = ErrorBody),
        (status = 404, description = "No such VM or disk", body = ErrorBody)))]
pub(crate) async fn disk_resize(
    Call { ctx, caller }: Call,
    Path((name, disk)): Path<(String, String)>,
    Body(req): Body<VmDiskResizeRequest>,
) -> Result<Json<VmDisk>, ApiError> {
    Ok(Json(app::vms::disk_resize(&ctx, &caller, &name, &disk, req).await?))
}

/// Detaches a data disk (a running guest is asked to let it go) and deletes its volume.
#[utoipa::path(delete, path = "/v1/vms/{name}/disks/{disk}", tag = "vms", operation_id = "disk_remove",
    params(("name" = String, Path, description = "VM name"), ("disk" = String, Path, description = "Disk name")),
    responses((status = 204, description = "Removed"), (status = 404, description = "No such VM or disk", body = ErrorBody),
        (status = 409, description = "The guest kept the disk (stop the VM and retry), or the VM is busy", body = ErrorBody)))]
pub(crate) async fn disk_remove(Call { ctx, caller }: Call, Path((name, disk)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    no_content(app::vms::disk_remove(&ctx, &caller, &name, &disk).await)
}

#[utoipa::path(get, path = "/v1/vms/{name}/shares", tag = "vms", operation_id = "share_list",
    params(("name" = String, Path, description = "VM name")),
    responses((status = 200, description = "The VM's shared folders", body = [VmShare]), (status = 404, description = "No such VM", body = ErrorBody)))]
pub(crate) async fn share_list(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<Json<Vec<VmShare>>, ApiError> {
    Ok(Json(app::vms::share_list(&ctx, &caller, &name).await?))
}

/// Shares a host directory with a stopped VM over virtio-fs (admins only, under the daemon's
/// `share_roots`).
#[utoipa::path(post, path = "/v1/vms/{name}/shares", tag = "vms", operation_id = "share_add", request_body = VmShare,
    params(("name" = String, Path, description = "VM name")),
    responses((status = 201, description = "Shared", body = VmShare),
        (status = 400, description = "Bad input (a path outside share_roots, say); `field` names it", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "The VM runs, the tag is taken, or the VM is busy", body = ErrorBody)))]
pub(crate) async fn share_add(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Body(req): Body<VmShare>,
) -> Result<Created<VmShare>, ApiError> {
    created(app::vms::share_add(&ctx, &caller, &name, req).await)
}

#[utoipa::path(delete, path = "/v1/vms/{name}/shares/{tag}", tag = "vms", operation_id = "share_remove",
    params(("name" = String, Path, description = "VM name"), ("tag" = String, Path, description = "Share tag")),
    responses((status = 204, description = "Removed"), (status = 404, description = "No such VM or share", body = ErrorBody),
        (status = 409, description = "The VM runs, or is busy", body = ErrorBody)))]
pub(crate) async fn share_remove(Call { ctx, caller }: Call, Path((name, tag)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    no_content(app::vms::share_remove(&ctx, &caller, &name, &tag).await)
}
