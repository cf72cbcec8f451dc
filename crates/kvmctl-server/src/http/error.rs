//! The one mapping from `kvmctl_core::Error` to an HTTP status and `ErrorBody`.
//! The policy is written down in `docs/api-errors.md`; keep the two in step.

use super::RequestId;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kvmctl_core::Error;
use kvmctl_types::api::ErrorBody;

pub(crate) fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::QuotaExceeded { .. } => StatusCode::FORBIDDEN,
        Error::InsufficientCapacity { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error on its way out, with the request id it belongs to.
pub(crate) struct ApiError {
    pub error: Error,
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn new(error: Error, request_id: &RequestId) -> Self {
        ApiError { error, request_id: Some(request_id.0.clone()) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.error);
        if status.is_server_error() {
            tracing::error!(request_id = ?self.request_id, error = %self.error, "request failed");
        }
        let kind = self.error.kind();
        let body = ErrorBody {
            error: kind.to_owned(),
            message: self.error.to_string(),
            field: self.error.field().map(str::to_owned),
            request_id: self.request_id,
        };
        let mut resp = (status, Json(body)).into_response();
        resp.extensions_mut().insert(ErrorKind(kind));
        resp
    }
}

/// The kind of an error response, for the audit log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorKind(pub &'static str);

pub(crate) async fn not_found(req: Request) -> ApiError {
    let id = req.extensions().get::<RequestId>().cloned();
    let error = Error::NotFound { kind: "route", name: format!("{} {}", req.method(), req.uri().path()) };
    ApiError { error, request_id: id.map(|i| i.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_status() {
        assert_eq!(status_of(&Error::invalid("name", "x")), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(&Error::Unauthenticated("no token".into())), StatusCode::UNAUTHORIZED);
        assert_eq!(status_of(&Error::Forbidden("admins only".into())), StatusCode::FORBIDDEN);
        assert_eq!(status_of(&Error::NotFound { kind: "vm", name: "a".into() }), StatusCode::NOT_FOUND);
        assert_eq!(status_of(&Error::Conflict("busy".into())), StatusCode::CONFLICT);
        assert_eq!(status_of(&Error::QuotaExceeded { limit: "vms".into(), max: 1, used: 1, requested: 1 }), StatusCode::FORBIDDEN);
        assert_eq!(status_of(&Error::InsufficientCapacity { reasons: vec![] }), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of(&Error::Unavailable("db".into())), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of(&Error::Internal("bug".into())), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
