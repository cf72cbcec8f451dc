use super::body::Body;
use super::call::{created, no_content, Call, Created};
use super::error::ApiError;
use crate::app;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use kvmctl_types::api::{ErrorBody, Forward, ForwardCreateRequest, Network, NetworkCreateRequest, PortPoolStatus};

/// Every libvirt network on the node; `managed` ones were made by kvmctl.
#[utoipa::path(get, path = "/v1/networks", tag = "networks", operation_id = "network_list",
    responses((status = 200, description = "Networks", body = [Network])))]
pub(crate) async fn network_list(Call { ctx, caller }: Call) -> Result<Json<Vec<Network>>, ApiError> {
    Ok(Json(app::networks::network_list(&ctx, &caller).await?))
}

#[utoipa::path(get, path = "/v1/networks/{name}", tag = "networks", operation_id = "network_get",
    params(("name" = String, Path, description = "Network name")),
    responses((status = 200, description = "The network", body = Network), (status = 404, description = "No such network", body = ErrorBody)))]
pub(crate) async fn network_get(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<Json<Network>, ApiError> {
    Ok(Json(app::networks::network_get(&ctx, &caller, &name).await?))
}

/// Creates a NAT (default) or isolated network: a persistent, autostarted libvirt network
/// with DHCP. A failure removes everything the request made.
#[utoipa::path(post, path = "/v1/networks", tag = "networks", operation_id = "network_create", request_body = NetworkCreateRequest,
    responses((status = 201, description = "Created and started", body = Network),
        (status = 400, description = "Bad input (a subnet that overlaps another network, say); `field` names it", body = ErrorBody),
        (status = 409, description = "The name is taken, or libvirt cannot start the network", body = ErrorBody)))]
pub(crate) async fn network_create(
    Call { ctx, caller }: Call,
    Body(req): Body<NetworkCreateRequest>,
) -> Result<Created<Network>, ApiError> {
    created(app::networks::network_create(&ctx, &caller, req).await)
}

/// Removes a network kvmctl made; refused while a VM uses it.
#[utoipa::path(delete, path = "/v1/networks/{name}", tag = "networks", operation_id = "network_delete",
    params(("name" = String, Path, description = "Network name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such network", body = ErrorBody),
        (status = 409, description = "VMs use it, or kvmctl did not make it", body = ErrorBody)))]
pub(crate) async fn network_delete(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    no_content(app::networks::network_delete(&ctx, &caller, &name).await)
}

/// The host port pools forwards come from, and how full they are.
#[utoipa::path(get, path = "/v1/port-pools", tag = "networks", operation_id = "port_pool_list",
    responses((status = 200, description = "Pools", body = [PortPoolStatus])))]
pub(crate) async fn port_pool_list(Call { ctx, caller }: Call) -> Result<Json<Vec<PortPoolStatus>>, ApiError> {
    Ok(Json(app::forwards::pool_status(&ctx, &caller).await?))
}

#[utoipa::path(get, path = "/v1/vms/{name}/forwards", tag = "networks", operation_id = "forward_list",
    params(("name" = String, Path, description = "VM name")),
    responses((status = 200, description = "The VM's forwards", body = [Forward]), (status = 404, description = "No such VM", body = ErrorBody)))]
pub(crate) async fn forward_list(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<Json<Vec<Forward>>, ApiError> {
    Ok(Json(app::forwards::forward_list(&ctx, &caller, &name).await?))
}

/// Forwards a host port (chosen, or the lowest free one of a pool) to a port of the VM. It
/// works from the host's addresses and from the host itself, while the VM runs.
#[utoipa::path(post, path = "/v1/vms/{name}/forwards", tag = "networks", operation_id = "forward_create", request_body = ForwardCreateRequest,
    params(("name" = String, Path, description = "VM name")),
    responses((status = 201, description = "Forwarded", body = Forward),
        (status = 400, description = "Bad input (a port outside every pool, say); `field` names it", body = ErrorBody),
        (status = 404, description = "No such VM", body = ErrorBody),
        (status = 409, description = "The host port is taken, or the VM is busy", body = ErrorBody),
        (status = 503, description = "The pool is exhausted, or the VM has the most forwards allowed", body = ErrorBody)))]
pub(crate) async fn forward_create(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Body(req): Body<ForwardCreateRequest>,
) -> Result<Created<Forward>, ApiError> {
    created(app::forwards::forward_add(&ctx, &caller, &name, req).await)
}

#[utoipa::path(delete, path = "/v1/vms/{name}/forwards/{protocol}/{host_port}", tag = "networks", operation_id = "forward_delete",
    params(("name" = String, Path, description = "VM name"), ("protocol" = String, Path, description = "tcp or udp"),
        ("host_port" = u16, Path, description = "Host port")),
    responses((status = 204, description = "Removed"), (status = 404, description = "No such VM or forward", body = ErrorBody)))]
pub(crate) async fn forward_delete(
    Call { ctx, caller }: Call,
    Path((name, protocol, host_port)): Path<(String, String, u16)>,
) -> Result<StatusCode, ApiError> {
    no_content(app::forwards::forward_remove(&ctx, &caller, &name, &protocol, host_port).await)
}
