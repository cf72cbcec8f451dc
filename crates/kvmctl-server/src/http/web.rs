//! The web console (ADR 0013): its static pages, embedded in the binary, and the session
//! endpoints that put a session token into an HttpOnly cookie.

use super::body::Body;
use super::call::{no_content, Call};
use super::error::ApiError;
use crate::app;
use crate::app::Context;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kvmctl_types::api::{ErrorBody, PasswordSetRequest, Session, SessionOpenRequest};
use std::sync::Arc;

/// The console's pages and scripts: (path under `/ui/`, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../web/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../web/app.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../web/app.css")),
    ("consoles.js", "text/javascript; charset=utf-8", include_bytes!("../../web/consoles.js")),
    ("lib.js", "text/javascript; charset=utf-8", include_bytes!("../../web/lib.js")),
    ("admin.js", "text/javascript; charset=utf-8", include_bytes!("../../web/admin.js")),
];

// `VENDOR`: noVNC and xterm.js, from pinned npm packages (build.rs, scripts/web-assets.sh).
include!(concat!(env!("OUT_DIR"), "/vendor.rs"));

/// What every page and asset is served with. Styles may also be set by scripts (`'unsafe-inline'`
/// for styles only): xterm.js writes its terminal's geometry into a `<style>` element. Scripts
/// stay `'self'`, and no page renders data as markup.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                              connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn etag(body: &[u8]) -> String {
    use sha2::Digest;
    format!("\"{}\"", &sha2::Sha256::digest(body).iter().map(|b| format!("{b:02x}")).collect::<String>()[..16])
}

/// Each asset's ETag (the start of its SHA-256), computed once.
static ETAGS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| ASSETS.iter().map(|(_, _, body)| etag(body)).collect());
static VENDOR_ETAGS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| VENDOR.iter().map(|(_, body)| etag(body)).collect());

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain")], "no such page\n").into_response()
}

fn serve(body: &'static [u8], kind: &'static str, tag: &str, headers: &HeaderMap) -> Response {
    let fresh = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(tag);
    let mut resp = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { (StatusCode::OK, body).into_response() };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::ETAG, HeaderValue::from_str(tag).expect("hex"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

fn asset(name: &str, headers: &HeaderMap) -> Response {
    match ASSETS.iter().position(|(n, _, _)| *n == name) {
        Some(i) => serve(ASSETS[i].2, ASSETS[i].1, &ETAGS[i], headers),
        None => not_found(),
    }
}

/// `/ui/vendor/{*path}`: noVNC's and xterm.js's files, by their exact embedded name (no path
/// reaches the file system).
pub(crate) async fn vendor(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let Some(i) = VENDOR.iter().position(|(n, _)| *n == path) else { return not_found() };
    let kind = match path.rsplit_once('.').map(|(_, e)| e) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    };
    serve(VENDOR[i].1, kind, &VENDOR_ETAGS[i], &headers)
}

/// `/`: the console's one page.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    asset("index.html", &headers)
}

/// `/ui/{file}`: its scripts and styles.
pub(crate) async fn ui(Path(file): Path<String>, headers: HeaderMap) -> Response {
    asset(&file, &headers)
}

/// Both cookies (appended: two `Set-Cookie` headers).
fn cookies(ctx: &Context, token: &str, csrf: &str, max_age: i64) -> axum::response::AppendHeaders<[(header::HeaderName, HeaderValue); 2]> {
    let secure = if ctx.config.tls_cert.is_some() { "; Secure" } else { "" };
    let cookie = |v: String| HeaderValue::from_str(&v).expect("cookie values are hex");
    axum::response::AppendHeaders([
        (header::SET_COOKIE, cookie(format!("kvmctl_token={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"))),
        (header::SET_COOKIE, cookie(format!("kvmctl_csrf={csrf}; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"))),
    ])
}

/// Logs in to the web console, with a user name and password or an API token. Sets the
/// session cookies: `kvmctl_token` (HttpOnly) and `kvmctl_csrf` (sent back by the page as
/// `x-kvmctl-csrf` with every change). Failed logins are limited per user name and per
/// address (5 a minute).
#[utoipa::path(post, path = "/v1/session", tag = "users", operation_id = "session_open", request_body = SessionOpenRequest,
    responses((status = 200, description = "Logged in; the cookies are set", body = Session),
        (status = 400, description = "Neither a password nor a token", body = ErrorBody),
        (status = 401, description = "Wrong user name or password, or a token that is not valid", body = ErrorBody),
        (status = 429, description = "Too many failed logins; see Retry-After", body = ErrorBody)))]
pub(crate) async fn session_open(
    State(ctx): State<Arc<Context>>,
    peer: Option<axum::Extension<ConnectInfo<super::auth::Peer>>>,
    headers: HeaderMap,
    Body(req): Body<SessionOpenRequest>,
) -> Result<Response, ApiError> {
    // A login from another site's page (login CSRF) is refused like any cookie request.
    super::auth::origin_check(&headers)?;
    let client = peer.and_then(|p| (p.0).0.addr);
    let (session, token) = app::sessions::session_open(&ctx, req, client).await?;
    let csrf = app::users::random_hex(16);
    let set = cookies(&ctx, &token, &csrf, app::sessions::SESSION_SECONDS);
    Ok((set, Json(session)).into_response())
}

/// The caller's session (the page asks on load whether it is logged in).
#[utoipa::path(get, path = "/v1/session", tag = "users", operation_id = "session_get",
    responses((status = 200, description = "The caller", body = Session), (status = 401, description = "Not logged in", body = ErrorBody)))]
pub(crate) async fn session_get(Call { ctx, caller }: Call, headers: HeaderMap) -> Result<Json<Session>, ApiError> {
    let token = super::auth::cookie_of(&headers, "kvmctl_token");
    Ok(Json(app::sessions::session_get(&ctx, &caller, token).await?))
}

/// Logs out: the session ends and its cookies are cleared.
#[utoipa::path(delete, path = "/v1/session", tag = "users", operation_id = "session_close",
    responses((status = 204, description = "Logged out"), (status = 400, description = "Not a web console session", body = ErrorBody)))]
pub(crate) async fn session_close(Call { ctx, caller }: Call, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = super::auth::cookie_of(&headers, "kvmctl_token");
    app::sessions::session_close(&ctx, &caller, token).await?;
    Ok((cookies(&ctx, "", "", 0), StatusCode::NO_CONTENT).into_response())
}

/// Sets a password for the web console: an admin sets another user's first one (changed at
/// their next login; their sessions end), a user changes their own with the current one.
#[utoipa::path(put, path = "/v1/users/{name}/password", tag = "users", operation_id = "password_set", request_body = PasswordSetRequest,
    params(("name" = String, Path, description = "User name")),
    responses((status = 204, description = "Set"), (status = 400, description = "Too short or long, or a wrong current password", body = ErrorBody),
        (status = 403, description = "Admins only, for another user", body = ErrorBody), (status = 404, description = "No such user (or not visible)", body = ErrorBody)))]
pub(crate) async fn password_set(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(req): Body<PasswordSetRequest>,
) -> Result<StatusCode, ApiError> {
    let token = super::auth::cookie_of(&headers, "kvmctl_token");
    no_content(app::sessions::password_set(&ctx, &caller, &name, req, token).await)
}
