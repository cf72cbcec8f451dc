use super::call::Call;
use super::error::ApiError;
use crate::app::Context;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Prometheus metrics in the OpenMetrics text format (admins): VMs by state and node, node
/// capacity and allocation, VM operation and boot-stage durations, reconciler passes and
/// repairs, usage records written, API requests by route and status.
#[utoipa::path(get, path = "/metrics", tag = "system", operation_id = "metrics",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String),
        (status = 403, description = "Admins only", body = kvmctl_types::api::ErrorBody)))]
pub(crate) async fn metrics(Call { ctx, caller }: Call) -> Result<Response, ApiError> {
    let text = crate::app::status::metrics_text(&ctx, &caller).await?;
    Ok(([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response())
}

/// Counts every request by its route pattern, method and status, with its duration.
pub(crate) async fn track(State(ctx): State<Arc<Context>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    // Any method name is accepted on the wire; only the known ones become labels, so
    // unauthenticated requests cannot grow the metrics without end.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m.to_owned(),
        _ => "other".to_owned(),
    };
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let labels = crate::metrics::RequestLabels { route, method, status: resp.status().as_u16() };
    ctx.metrics.requests.get_or_create(&labels).inc();
    ctx.metrics.request_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    resp
}
