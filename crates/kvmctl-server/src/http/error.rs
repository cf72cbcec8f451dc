//! The one mapping from `kvmctl_core::Error` to an HTTP status and `ErrorBody`.
//! The policy is written down in `docs/api-errors.md`; keep the two in step.

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
        Error::Unavailable(_) | Error::Backend { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error on its way out. Handlers return it with `?` (`From<Error>`); the request-id
/// middleware (`http::request_id`) fills in the request id and logs a server error's private
/// half with it.
pub(crate) struct ApiError {
    pub error: Error,
    pub request_id: Option<String>,
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError { error, request_id: None }
    }
}

/// What an error response carries for the request-id middleware: its body (to complete with
/// the request id) and the private detail (for the log, never the body).
#[derive(Clone)]
pub(crate) struct ErrorParts {
    pub body: ErrorBody,
    pub detail: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.error);
        let kind = self.error.kind();
        let body = ErrorBody {
            error: kind.to_owned(),
            message: self.error.public_message(),
            field: self.error.field().map(str::to_owned),
            request_id: self.request_id,
        };
        let parts = ErrorParts { body: body.clone(), detail: self.error.private_detail().map(str::to_owned) };
        let mut resp = (status, Json(body)).into_response();
        if let Error::TooManyRequests { retry_after, .. } = &self.error {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, (*retry_after).into());
        }
        resp.extensions_mut().insert(ErrorKind(kind));
        resp.extensions_mut().insert(parts);
        resp
    }
}

/// Completes an error response with the request id, and logs a server error with its
/// private detail under the same id.
pub(crate) fn finish(mut resp: Response, request_id: &str) -> Response {
    let Some(mut parts) = resp.extensions_mut().remove::<ErrorParts>() else { return resp };
    if resp.status().is_server_error() {
        let detail = parts.detail.as_deref().unwrap_or_default();
        tracing::error!(request_id, error = %parts.body.message, detail, "request failed");
    }
    if parts.body.request_id.is_none() {
        parts.body.request_id = Some(request_id.to_owned());
        let (mut head, _) = resp.into_parts();
        head.headers.remove(axum::http::header::CONTENT_LENGTH);
        let fresh = Json(parts.body).into_response();
        let (_, body) = fresh.into_parts();
        resp = Response::from_parts(head, body);
    }
    resp
}

/// The kind of an error response, for the audit log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorKind(pub &'static str);

pub(crate) async fn not_found(req: Request) -> ApiError {
    Error::NotFound { kind: "route", name: format!("{} {}", req.method(), req.uri().path()) }.into()
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
        assert_eq!(status_of(&Error::TooManyRequests { message: "wait".into(), retry_after: 9 }), StatusCode::TOO_MANY_REQUESTS);
        let backend = Error::Backend { public: "database busy".into(), detail: "sqlite: locked at /var/lib/x".into() };
        assert_eq!(status_of(&backend), StatusCode::SERVICE_UNAVAILABLE);
    }

    /// The private half of an error never reaches the client's body.
    #[tokio::test]
    async fn private_detail_stays_in_the_log() {
        use http_body_util::BodyExt;
        for e in [
            Error::Internal("sqlx: no column found for name: secret_column".into()),
            Error::Backend {
                public: "the database does not answer; retrying may succeed".into(),
                detail: "secret_column /var/lib/x".into(),
            },
        ] {
            let resp = finish(ApiError::from(e).into_response(), "r1");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let body: ErrorBody = serde_json::from_slice(&body).unwrap();
            assert!(!body.message.contains("secret_column"), "{}", body.message);
            assert_eq!(body.request_id.as_deref(), Some("r1"));
        }
    }
}
