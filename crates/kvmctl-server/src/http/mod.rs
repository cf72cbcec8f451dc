//! HTTP entrypoints: parse, call `app`, answer. No logic lives here.
//!
//! `error.rs` is the one place a `kvmctl_core::Error` becomes an HTTP status.

pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod call;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod host;
pub(crate) mod images;
pub(crate) mod metrics;
pub(crate) mod networks;
pub(crate) mod nodes;
pub(crate) mod plans;
pub(crate) mod pools;
pub(crate) mod snapshots;
pub(crate) mod status;
pub(crate) mod terminal;
pub(crate) mod testruns;
pub(crate) mod users;
pub(crate) mod vms;
pub(crate) mod web;

use crate::app::Context;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::MethodRouter;
use axum::Router;
use std::sync::Arc;

/// Header carrying the id that ties a response to the daemon's log lines.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(Clone, Debug)]
pub(crate) struct RequestId(pub String);

/// One route: method, path, handler.
type Route = (&'static str, &'static str, MethodRouter<Arc<Context>>);

/// A route whose method name and method router come from one word, so they cannot differ.
macro_rules! route {
    ($method:ident $path:literal, $handler:path) => {
        (stringify!($method), $path, axum::routing::$method($handler))
    };
}

/// Every route the daemon serves, one row per method and path. The router is built from
/// this list alone, so what it serves can be enumerated (`route_list`): the authorization
/// test walks every row, and the OpenAPI test checks each is documented.
fn routes() -> Vec<Route> {
    vec![
        route!(get "/v1/status", status::status_get),
        route!(get "/metrics", metrics::metrics),
        route!(get "/v1/host", host::host_get),
        route!(get "/v1/images", images::image_list),
        route!(post "/v1/images", images::image_import),
        route!(get "/v1/images/{name}", images::image_get),
        route!(delete "/v1/images/{name}", images::image_delete),
        route!(get "/v1/pools", pools::pool_list),
        route!(post "/v1/pools", pools::pool_create),
        route!(get "/v1/pools/{name}", pools::pool_get),
        route!(delete "/v1/pools/{name}", pools::pool_delete),
        route!(get "/v1/plans", plans::plan_list),
        route!(post "/v1/plans", plans::plan_create),
        route!(get "/v1/plans/{name}", plans::plan_get),
        route!(patch "/v1/plans/{name}", plans::plan_update),
        route!(get "/v1/whoami", users::whoami),
        route!(get "/v1/session", web::session_get),
        route!(delete "/v1/session", web::session_close),
        route!(put "/v1/users/{name}/password", web::password_set),
        route!(get "/v1/events", events::events),
        route!(get "/v1/users", users::user_list),
        route!(post "/v1/users", users::user_create),
        route!(get "/v1/users/{name}", users::user_get),
        route!(patch "/v1/users/{name}", users::user_update),
        route!(get "/v1/users/{name}/quota", users::quota_get),
        route!(put "/v1/users/{name}/quota", users::quota_set),
        route!(get "/v1/users/{name}/ssh-keys", users::ssh_key_list),
        route!(post "/v1/users/{name}/ssh-keys", users::ssh_key_add),
        route!(delete "/v1/users/{name}/ssh-keys/{id}", users::ssh_key_delete),
        route!(get "/v1/tokens", users::token_list),
        route!(post "/v1/tokens", users::token_create),
        route!(delete "/v1/tokens/{id}", users::token_revoke),
        route!(get "/v1/audit", users::audit_list),
        route!(get "/v1/usage", users::usage_list),
        route!(get "/v1/networks", networks::network_list),
        route!(post "/v1/networks", networks::network_create),
        route!(get "/v1/networks/{name}", networks::network_get),
        route!(delete "/v1/networks/{name}", networks::network_delete),
        route!(get "/v1/port-pools", networks::port_pool_list),
        route!(get "/v1/nodes", nodes::node_list),
        route!(post "/v1/nodes", nodes::node_add),
        route!(get "/v1/gc", nodes::gc_report),
        route!(post "/v1/gc", nodes::gc_clean),
        route!(get "/v1/nodes/{name}", nodes::node_get),
        route!(patch "/v1/nodes/{name}", nodes::node_update),
        route!(delete "/v1/nodes/{name}", nodes::node_remove),
        route!(post "/v1/nodes/{name}/evacuate", nodes::node_evacuate),
        route!(get "/v1/vms/{name}/forwards", networks::forward_list),
        route!(post "/v1/vms/{name}/forwards", networks::forward_create),
        route!(delete "/v1/vms/{name}/forwards/{protocol}/{host_port}", networks::forward_delete),
        route!(get "/v1/vms", vms::vm_list),
        route!(post "/v1/vms", vms::vm_create),
        route!(get "/v1/vms/{name}", vms::vm_get),
        route!(delete "/v1/vms/{name}", vms::vm_delete),
        route!(post "/v1/vms/{name}/start", vms::vm_start),
        route!(post "/v1/vms/{name}/stop", vms::vm_stop),
        route!(post "/v1/vms/{name}/reboot", vms::vm_reboot),
        route!(post "/v1/vms/{name}/resize", vms::vm_resize),
        route!(put "/v1/vms/{name}/labels", vms::vm_labels_set),
        route!(post "/v1/vms/{name}/migrate", vms::vm_migrate),
        route!(get "/v1/vms/{name}/disks", vms::disk_list),
        route!(post "/v1/vms/{name}/disks", vms::disk_add),
        route!(patch "/v1/vms/{name}/disks/{disk}", vms::disk_resize),
        route!(delete "/v1/vms/{name}/disks/{disk}", vms::disk_remove),
        route!(get "/v1/vms/{name}/shares", vms::share_list),
        route!(post "/v1/vms/{name}/shares", vms::share_add),
        route!(delete "/v1/vms/{name}/shares/{tag}", vms::share_remove),
        route!(post "/v1/vms/{name}/clone", vms::vm_clone),
        route!(get "/v1/vms/{name}/export", vms::vm_export),
        route!(post "/v1/restore", vms::vm_restore),
        route!(get "/v1/vms/{name}/wait", vms::vm_wait),
        route!(post "/v1/vms/{name}/exec", vms::vm_exec),
        route!(get "/v1/vms/{name}/snapshots", snapshots::snapshot_list),
        route!(post "/v1/vms/{name}/snapshots", snapshots::snapshot_create),
        route!(delete "/v1/vms/{name}/snapshots/{snapshot}", snapshots::snapshot_delete),
        route!(post "/v1/vms/{name}/snapshots/{snapshot}/revert", snapshots::snapshot_revert),
        route!(get "/v1/vms/{name}/console", terminal::vm_console),
        route!(get "/v1/vms/{name}/console/log", terminal::vm_console_log),
        route!(post "/v1/vms/{name}/console/ticket", terminal::vm_console_ticket),
        route!(get "/v1/vms/{name}/console/serial", terminal::vm_console_serial),
        route!(get "/v1/vms/{name}/console/vnc", terminal::vm_console_vnc),
        route!(get "/v1/vms/{name}/ssh", terminal::vm_ssh),
        route!(get "/v1/vms/{name}/files", terminal::vm_file_get),
        route!(put "/v1/vms/{name}/files", terminal::vm_file_put),
        route!(get "/v1/test-runs", testruns::test_run_list),
        route!(post "/v1/test-runs", testruns::test_run_create),
        route!(get "/v1/test-runs/{id}", testruns::test_run_get),
        route!(delete "/v1/test-runs/{id}", testruns::test_run_delete),
        route!(post "/v1/test-runs/{id}/heartbeat", testruns::test_run_heartbeat),
        route!(post "/v1/test-runs/{id}/finish", testruns::test_run_finish),
    ]
}

/// Routes anyone may call, without a token: logging in to the web console.
fn public_routes() -> Vec<Route> {
    vec![route!(post "/v1/session", web::session_open)]
}

/// The method and path of every API route the daemon serves (the web console's pages, `/`
/// and `/ui/{file}`, are not API routes).
pub fn route_list() -> Vec<(String, &'static str)> {
    routes().into_iter().chain(public_routes()).map(|(method, path, _)| (method.to_uppercase(), path)).collect()
}

pub(crate) fn router(ctx: Arc<Context>) -> Router {
    let public = public_routes()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| router.route(path, handler))
        .route("/", axum::routing::get(web::index))
        .route("/ui/{file}", axum::routing::get(web::ui))
        .route("/ui/vendor/{*path}", axum::routing::get(web::vendor));
    routes()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| router.route(path, handler))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), auth::authenticate))
        .merge(public)
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
    let mut resp = error::finish(next.run(req).await, &id);
    tracing::info!(request_id = %id, %method, %path, status = resp.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}
