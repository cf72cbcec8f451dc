//! A JSON body extractor whose rejections are ordinary `invalid_request` errors (HTTP 400
//! with an `ErrorBody` naming the field) instead of axum's plain-text 422.

use super::error::ApiError;
use super::RequestId;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use kvmctl_core::Error;

pub(crate) struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let rid = req.extensions().get::<RequestId>().map(|r| r.0.clone());
        let fail = |field: &str, message: String| ApiError { error: Error::invalid(field, message), request_id: rid.clone() };
        let json_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
        if !json_type {
            return Err(fail("body", "send Content-Type: application/json".to_owned()));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| fail("body", e.body_text()))?;
        // Every request body is a JSON object: serde would also fill a struct from an array.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(fail("body", "expected a JSON object".to_owned()));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(rejection) => {
                let (field, message) = match &rejection {
                    JsonRejection::JsonDataError(e) => data_error_field(e.body_text()),
                    other => ("body".to_owned(), other.body_text()),
                };
                Err(fail(&field, message))
            }
        }
    }
}

/// serde_path_to_error's text starts with the path of the offending field: use it as `field`.
fn data_error_field(text: String) -> (String, String) {
    let detail = text.strip_prefix("Failed to deserialize the JSON body into the target type: ").unwrap_or(&text).to_owned();
    match detail.split_once(": ") {
        Some((path, msg)) if !path.contains(' ') => (path.to_owned(), msg.to_owned()),
        _ => {
            // "missing field `name` at line 1 column 2"
            let missing = detail.split('`').nth(1).filter(|_| detail.starts_with("missing field")).map(str::to_owned);
            (missing.unwrap_or_else(|| "body".to_owned()), detail)
        }
    }
}
