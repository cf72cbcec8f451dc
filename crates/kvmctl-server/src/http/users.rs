use super::body::Body;
use super::call::{created, no_content, Call, Created};
use super::error::ApiError;
use crate::app;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::Json;
use kvmctl_types::api::{
    AuditEntry, ErrorBody, Quota, QuotaSetRequest, Token, TokenCreateRequest, TokenCreated, UsageRecord, User, UserCreateRequest,
    UserUpdateRequest,
};

/// The caller, as the daemon knows them.
#[utoipa::path(get, path = "/v1/whoami", tag = "users", operation_id = "whoami",
    responses((status = 200, description = "The caller", body = User), (status = 401, description = "No valid token", body = ErrorBody)))]
pub(crate) async fn whoami(Call { ctx, caller }: Call) -> Result<Json<User>, ApiError> {
    Ok(Json(app::users::whoami(&ctx, &caller).await?))
}

#[utoipa::path(get, path = "/v1/users", tag = "users", operation_id = "user_list",
    responses((status = 200, description = "Users", body = [User]), (status = 403, description = "Admins only", body = ErrorBody)))]
pub(crate) async fn user_list(Call { ctx, caller }: Call) -> Result<Json<Vec<User>>, ApiError> {
    Ok(Json(app::users::user_list(&ctx, &caller).await?))
}

#[utoipa::path(post, path = "/v1/users", tag = "users", operation_id = "user_create", request_body = UserCreateRequest,
    responses((status = 201, description = "Created", body = User), (status = 400, description = "Bad input", body = ErrorBody),
        (status = 403, description = "Admins only", body = ErrorBody), (status = 409, description = "The name is taken", body = ErrorBody)))]
pub(crate) async fn user_create(Call { ctx, caller }: Call, Body(req): Body<UserCreateRequest>) -> Result<Created<User>, ApiError> {
    created(app::users::user_create(&ctx, &caller, req).await)
}

/// A user: admins see anyone, users themselves.
#[utoipa::path(get, path = "/v1/users/{name}", tag = "users", operation_id = "user_get",
    params(("name" = String, Path, description = "User name")),
    responses((status = 200, description = "The user", body = User), (status = 404, description = "No such user (or not visible)", body = ErrorBody)))]
pub(crate) async fn user_get(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<Json<User>, ApiError> {
    Ok(Json(app::users::user_get(&ctx, &caller, &name).await?))
}

/// Changes a user's role, disabled flag or custom sizing (admins). A disabled user's tokens
/// stop working at once.
#[utoipa::path(patch, path = "/v1/users/{name}", tag = "users", operation_id = "user_update", request_body = UserUpdateRequest,
    params(("name" = String, Path, description = "User name")),
    responses((status = 200, description = "Changed", body = User), (status = 403, description = "Admins only", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub(crate) async fn user_update(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Body(req): Body<UserUpdateRequest>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(app::users::user_update(&ctx, &caller, &name, req).await?))
}

/// A user's quota: the limits in force and what is in use (admins, or the user).
#[utoipa::path(get, path = "/v1/users/{name}/quota", tag = "users", operation_id = "quota_get",
    params(("name" = String, Path, description = "User name")),
    responses((status = 200, description = "The quota", body = Quota), (status = 404, description = "No such user (or not visible)", body = ErrorBody)))]
pub(crate) async fn quota_get(Call { ctx, caller }: Call, Path(name): Path<String>) -> Result<Json<Quota>, ApiError> {
    Ok(Json(app::users::quota_get(&ctx, &caller, &name).await?))
}

#[utoipa::path(put, path = "/v1/users/{name}/quota", tag = "users", operation_id = "quota_set", request_body = QuotaSetRequest,
    params(("name" = String, Path, description = "User name")),
    responses((status = 200, description = "The quota now", body = Quota), (status = 403, description = "Admins only", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub(crate) async fn quota_set(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Body(req): Body<QuotaSetRequest>,
) -> Result<Json<Quota>, ApiError> {
    Ok(Json(app::users::quota_set(&ctx, &caller, &name, req).await?))
}

/// The SSH public keys saved in a user's profile (their own; admins anyone's).
#[utoipa::path(get, path = "/v1/users/{name}/ssh-keys", tag = "users", operation_id = "ssh_key_list",
    params(("name" = String, Path, description = "User name")),
    responses((status = 200, description = "Saved keys, oldest first", body = [kvmctl_types::api::SshKey]),
        (status = 404, description = "No such user (or not visible)", body = ErrorBody)))]
pub(crate) async fn ssh_key_list(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
) -> Result<Json<Vec<kvmctl_types::api::SshKey>>, ApiError> {
    Ok(Json(app::users::ssh_key_list(&ctx, &caller, &name).await?))
}

/// Saves an SSH public key in a user's profile (at most 32; each key once).
#[utoipa::path(post, path = "/v1/users/{name}/ssh-keys", tag = "users", operation_id = "ssh_key_add",
    params(("name" = String, Path, description = "User name")), request_body = kvmctl_types::api::SshKeyCreateRequest,
    responses((status = 201, description = "Saved", body = kvmctl_types::api::SshKey),
        (status = 400, description = "Not an OpenSSH public key, a bad label, or too many keys", body = ErrorBody),
        (status = 404, description = "No such user (or not visible)", body = ErrorBody), (status = 409, description = "Saved already", body = ErrorBody)))]
pub(crate) async fn ssh_key_add(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Body(req): Body<kvmctl_types::api::SshKeyCreateRequest>,
) -> Result<Created<kvmctl_types::api::SshKey>, ApiError> {
    created(app::users::ssh_key_add(&ctx, &caller, &name, req).await)
}

/// Removes a saved SSH key (VMs made with it keep it).
#[utoipa::path(delete, path = "/v1/users/{name}/ssh-keys/{id}", tag = "users", operation_id = "ssh_key_delete",
    params(("name" = String, Path, description = "User name"), ("id" = String, Path, description = "Key id")),
    responses((status = 204, description = "Removed"), (status = 404, description = "No such user or key", body = ErrorBody)))]
pub(crate) async fn ssh_key_delete(Call { ctx, caller }: Call, Path((name, id)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    no_content(app::users::ssh_key_delete(&ctx, &caller, &name, &id).await)
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenQuery {
    /// Whose tokens (admins: anyone's; default: the caller's, or everyone's for admins).
    user: Option<String>,
}

#[utoipa::path(get, path = "/v1/tokens", tag = "users", operation_id = "token_list", params(TokenQuery),
    responses((status = 200, description = "Tokens (never their secrets)", body = [Token])))]
pub(crate) async fn token_list(Call { ctx, caller }: Call, Query(q): Query<TokenQuery>) -> Result<Json<Vec<Token>>, ApiError> {
    Ok(Json(app::users::token_list(&ctx, &caller, q.user.as_deref()).await?))
}

/// Creates a token for the caller (admins: for any user). The token is in this response
/// only; the daemon keeps its hash.
#[utoipa::path(post, path = "/v1/tokens", tag = "users", operation_id = "token_create", request_body = TokenCreateRequest,
    responses((status = 201, description = "Created; `token` is shown this once", body = TokenCreated),
        (status = 400, description = "Bad input", body = ErrorBody), (status = 403, description = "For another user, admins only", body = ErrorBody)))]
pub(crate) async fn token_create(
    Call { ctx, caller }: Call,
    Body(req): Body<TokenCreateRequest>,
) -> Result<Created<TokenCreated>, ApiError> {
    created(app::users::token_create(&ctx, &caller, req).await)
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "users", operation_id = "token_revoke",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), (status = 404, description = "No such token (or not the caller's)", body = ErrorBody)))]
pub(crate) async fn token_revoke(Call { ctx, caller }: Call, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    no_content(app::users::token_revoke(&ctx, &caller, &id).await)
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Only this user's requests.
    user: Option<String>,
    /// Unix seconds: only requests at or after.
    since: Option<i64>,
    /// Most rows (default 100, at most 10000), newest first.
    limit: Option<u32>,
}

/// Every state-changing request (admins).
#[utoipa::path(get, path = "/v1/audit", tag = "users", operation_id = "audit_list", params(AuditQuery),
    responses((status = 200, description = "Newest first", body = [AuditEntry]), (status = 403, description = "Admins only", body = ErrorBody)))]
pub(crate) async fn audit_list(Call { ctx, caller }: Call, Query(q): Query<AuditQuery>) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    Ok(Json(app::users::audit_list(&ctx, &caller, q.user.as_deref(), q.since, q.limit).await?))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageQuery {
    /// Only this user's records (admins; a user sees only their own).
    user: Option<String>,
    /// Unix seconds: hours starting at or after.
    from: Option<i64>,
    /// Unix seconds: hours starting before.
    to: Option<i64>,
}

/// Hourly usage records, oldest first: a user's own; admins anyone's.
#[utoipa::path(get, path = "/v1/usage", tag = "users", operation_id = "usage_list", params(UsageQuery),
    responses((status = 200, description = "One record per VM-hour", body = [UsageRecord]),
        (status = 403, description = "Another user's usage", body = ErrorBody)))]
pub(crate) async fn usage_list(Call { ctx, caller }: Call, Query(q): Query<UsageQuery>) -> Result<Json<Vec<UsageRecord>>, ApiError> {
    Ok(Json(app::metering::usage_list(&ctx, &caller, q.user.as_deref(), q.from, q.to).await?))
}
