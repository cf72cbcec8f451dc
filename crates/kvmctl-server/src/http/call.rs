//! `Call`: what nearly every handler takes, the daemon's context and the authenticated caller,
//! in one extractor.

use super::error::ApiError;
use crate::app::Context;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use kvmctl_core::{Caller, Error};
use std::sync::Arc;

pub(crate) struct Call {
    pub ctx: Arc<Context>,
    pub caller: Caller,
}

impl FromRequestParts<Arc<Context>> for Call {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<Context>) -> Result<Self, ApiError> {
        // `auth::authenticate` puts the caller in every request it lets through.
        let caller =
            parts.extensions.get::<Caller>().cloned().ok_or_else(|| Error::Internal("no caller on an authenticated route".into()))?;
        Ok(Call { ctx: ctx.clone(), caller })
    }
}

/// A 201 answer with what was made.
pub(crate) type Created<T> = (StatusCode, Json<T>);

/// An app result as a 201 answer.
pub(crate) fn created<T>(r: Result<T, Error>) -> Result<Created<T>, ApiError> {
    Ok((StatusCode::CREATED, Json(r?)))
}

/// An app result with nothing to say as a 204 answer.
pub(crate) fn no_content(r: Result<(), Error>) -> Result<StatusCode, ApiError> {
    r?;
    Ok(StatusCode::NO_CONTENT)
}
