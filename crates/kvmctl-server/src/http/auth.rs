//! Who is calling, and the audit log of what they changed.
//!
//! - `Peer` is what the connection says: the unix socket's peer uid (`SO_PEERCRED`), or
//!   TCP. Root on the socket acts as the built-in admin without a token.
//! - `authenticate` turns `Authorization: Bearer <token>` (or root on the socket) into a
//!   `Caller` in the request's extensions; anything else is a 401 before any handler runs.
//! - `audit` records every request that is not a GET (or HEAD/OPTIONS): who, method, path,
//!   status, outcome, request id. Tokens never reach a log line.

use super::error::{ApiError, ErrorKind};
use super::RequestId;
use crate::app::Context;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kvmctl_core::{Caller, Error};
use std::sync::Arc;

/// The transport a request came over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    /// The peer's uid on the unix socket; `None` over TCP.
    pub uid: Option<u32>,
    /// The peer's address over TCP (failed logins are counted per address).
    pub addr: Option<std::net::IpAddr>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::UnixListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        Peer { uid: stream.io().peer_cred().ok().map(|c| c.uid()), addr: None }
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Peer { uid: None, addr: Some(stream.remote_addr().ip()) }
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        Peer { uid: None, addr: Some(stream.remote_addr().ip()) }
    }
}

/// The caller's name, carried on the response for the audit layer outside.
#[derive(Debug, Clone)]
struct AuditUser(String);

fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(str::trim)
}

/// The web console's session cookie carries a session token (`kvmctl_token`, ADR 0013).
fn cookie_token(req: &Request) -> Option<&str> {
    cookie(req, "kvmctl_token")
}

/// A cookie of the request by name.
fn cookie<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    cookie_of(req.headers(), name)
}

/// A cookie by name; an empty one (a cleared cookie) is none.
pub(crate) fn cookie_of<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    let v = headers.get(axum::http::header::COOKIE)?.to_str().ok()?;
    v.split(';').map(str::trim).find_map(|c| c.strip_prefix(name)?.strip_prefix('=')).filter(|v| !v.is_empty())
}

/// An `Origin`, when sent, must be this daemon's own (scheme and the `Host` it was asked for).
pub(crate) fn origin_check(headers: &axum::http::HeaderMap) -> Result<(), Error> {
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let origin = headers.get(axum::http::header::ORIGIN).map(|o| o.to_str().unwrap_or("invalid"));
    let same = |o: &str| !host.is_empty() && (o == format!("http://{host}") || o == format!("https://{host}"));
    match origin {
        Some(o) if !same(o) => Err(Error::Forbidden(format!(
            "cross-origin request from {o:?} refused: the session cookie is accepted only from this daemon's own pages; scripts send `Authorization: Bearer <token>`"
        ))),
        _ => Ok(()),
    }
}

/// The browser boundary. A cookie is sent by the browser on its own, so a request that
/// authenticates with one must show it comes from a page of this daemon:
/// - an `Origin`, when sent, must be this daemon's (scheme and the `Host` it was asked for);
/// - a WebSocket upgrade must send one (browsers always do);
/// - a write must also carry the `x-kvmctl-csrf` header equal to the `kvmctl_csrf` cookie
///   (double submit: a page of another origin cannot read the cookie to copy it).
///
/// Bearer tokens are never sent by a browser on its own, so they need none of this.
fn cookie_request_check(req: &Request) -> Result<(), Error> {
    origin_check(req.headers())?;
    let origin = req.headers().get(axum::http::header::ORIGIN);
    let upgrade = req.headers().get(axum::http::header::UPGRADE).is_some();
    if upgrade && origin.is_none() {
        return Err(Error::Forbidden("a WebSocket opened with the session cookie must send its Origin".into()));
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        let sent = req.headers().get("x-kvmctl-csrf").and_then(|h| h.to_str().ok());
        let expected = cookie(req, "kvmctl_csrf");
        if origin.is_none() || expected.is_none_or(|e| e.len() < 16) || sent != expected {
            return Err(Error::Forbidden(
                "a change made with the session cookie needs the Origin header and the x-kvmctl-csrf header equal to the kvmctl_csrf cookie; scripts send `Authorization: Bearer <token>` instead".into(),
            ));
        }
    }
    Ok(())
}

pub(crate) async fn authenticate(State(ctx): State<Arc<Context>>, mut req: Request, next: Next) -> Response {
    let _rid = req.extensions().get::<RequestId>().cloned().unwrap_or(RequestId(String::new()));
    let peer = req.extensions().get::<ConnectInfo<Peer>>().map(|c| c.0).unwrap_or(Peer { uid: None, addr: None });
    if bearer(&req).is_none() && cookie_token(&req).is_some() {
        if let Err(e) = cookie_request_check(&req) {
            return ApiError::from(e).into_response();
        }
    }
    let caller = match bearer(&req).or_else(|| cookie_token(&req)) {
        Some(token) => crate::app::users::authenticate_token(&ctx, token).await,
        None if peer.uid == Some(0) => Ok(Caller::local_admin()),
        None if peer.uid.is_some() => Err(Error::Unauthenticated(
            "only root acts on the unix socket without a token; pass --token (or KVMCTL_TOKEN) with a token from `kvmctl token create`".into(),
        )),
        None => Err(Error::Unauthenticated(
            "this API needs a token over TCP: send `Authorization: Bearer <token>` (kvmctl: --token or KVMCTL_TOKEN; an admin creates one with `kvmctl token create`)".into(),
        )),
    };
    match caller {
        Ok(c) => {
            let name = c.name.clone();
            req.extensions_mut().insert(c);
            let mut resp = next.run(req).await;
            resp.extensions_mut().insert(AuditUser(name));
            resp
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub(crate) async fn audit(State(ctx): State<Arc<Context>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // Reads are not recorded, but for an export: it hands out a VM's whole disk.
    let export = method == Method::GET && req.uri().path().ends_with("/export");
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) && !export {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    let rid = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let outcome = match resp.extensions().get::<ErrorKind>() {
        Some(k) => k.0.to_owned(),
        None if resp.status().is_success() => "ok".to_owned(),
        None => format!("http_{status}"),
    };
    let user = resp.extensions().get::<AuditUser>().map(|u| u.0.clone());
    crate::app::users::audit_record(
        &ctx,
        kvmctl_store::AuditRecord { id: 0, at: 0, request_id: rid, user_name: user, method: method.to_string(), path, status, outcome },
    )
    .await;
    resp
}
