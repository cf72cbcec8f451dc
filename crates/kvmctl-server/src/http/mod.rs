//! HTTP entrypoints: parse, call `app`, answer. No logic lives here.
//!
//! `error.rs` is the one place a `kvmctl_core::Error` becomes an HTTP status.

pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod host;
pub(crate) mod images;
pub(crate) mod metrics;
pub(crate) mod networks;
pub(crate) mod nodes;
pub(crate) mod plans;
pub(crate) mod status;
pub(crate) mod terminal;
pub(crate) mod users;
pub(crate) mod vms;

use crate::app::Context;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// Header carrying the id that ties a response to the daemon's log lines.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(Clone, Debug)]
pub(crate) struct RequestId(pub String);

pub(crate) fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/v1/status", get(status::status_get))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/host", get(host::host_get))
        .route("/v1/images", get(images::image_list).post(images::image_import))
        .route("/v1/images/{name}", get(images::image_get).delete(images::image_delete))
        .route("/v1/plans", get(plans::plan_list).post(plans::plan_create))
        .route("/v1/plans/{name}", get(plans::plan_get).patch(plans::plan_update))
        .route("/v1/whoami", get(users::whoami))
        .route("/v1/events", get(events::events))
        .route("/v1/users", get(users::user_list).post(users::user_create))
        .route("/v1/users/{name}", get(users::user_get).patch(users::user_update))
        .route("/v1/users/{name}/quota", get(users::quota_get).put(users::quota_set))
        .route("/v1/tokens", get(users::token_list).post(users::token_create))
        .route("/v1/tokens/{id}", axum::routing::delete(users::token_revoke))
        .route("/v1/audit", get(users::audit_list))
        .route("/v1/usage", get(users::usage_list))
        .route("/v1/networks", get(networks::network_list).post(networks::network_create))
        .route("/v1/networks/{name}", get(networks::network_get).delete(networks::network_delete))
        .route("/v1/port-pools", get(networks::port_pool_list))
        .route("/v1/nodes", get(nodes::node_list).post(nodes::node_add))
        .route("/v1/gc", get(nodes::gc_report).post(nodes::gc_clean))
        .route("/v1/nodes/{name}", get(nodes::node_get).patch(nodes::node_update).delete(nodes::node_remove))
        .route("/v1/vms/{name}/forwards", get(networks::forward_list).post(networks::forward_create))
        .route("/v1/vms/{name}/forwards/{protocol}/{host_port}", axum::routing::delete(networks::forward_delete))
        .route("/v1/vms", get(vms::vm_list).post(vms::vm_create))
        .route("/v1/vms/{name}", get(vms::vm_get).delete(vms::vm_delete))
        .route("/v1/vms/{name}/start", post(vms::vm_start))
        .route("/v1/vms/{name}/stop", post(vms::vm_stop))
        .route("/v1/vms/{name}/reboot", post(vms::vm_reboot))
        .route("/v1/vms/{name}/resize", post(vms::vm_resize))
        .route("/v1/vms/{name}/wait", get(vms::vm_wait))
        .route("/v1/vms/{name}/exec", post(vms::vm_exec))
        .route("/v1/vms/{name}/console", get(terminal::vm_console))
        .route("/v1/vms/{name}/console/log", get(terminal::vm_console_log))
        .route("/v1/vms/{name}/ssh", get(terminal::vm_ssh))
        .route("/v1/vms/{name}/files", get(terminal::vm_file_get).put(terminal::vm_file_put))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), auth::authenticate))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), auth::audit))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), metrics::track))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(ctx)
}

/// Gives every request an id (the caller's, when it sent a sane one), logs the request
/// once with its outcome, and returns the id in the response.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let started = std::time::Instant::now();
    let mut resp = next.run(req).await;
    tracing::info!(request_id = %id, %method, %path, status = resp.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}
