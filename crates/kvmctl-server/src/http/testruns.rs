use super::body::Body;
use super::call::{created, no_content, Call, Created};
use super::error::ApiError;
use crate::app;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use kvmctl_types::api::{ErrorBody, TestRun, TestRunCreateRequest, TestRunFinishRequest};

#[utoipa::path(get, path = "/v1/test-runs", tag = "test-runs", operation_id = "test_run_list",
    responses((status = 200, description = "The caller's test runs, newest first", body = [TestRun])))]
pub(crate) async fn test_run_list(Call { ctx, caller }: Call) -> Result<Json<Vec<TestRun>>, ApiError> {
    Ok(Json(app::testruns::test_run_list(&ctx, &caller).await?))
}

/// Opens a test run: VMs created or cloned with its id as `test_run` are deleted when it
/// ends, when it is removed, and when its runner sends no heartbeat for `grace_seconds`.
#[utoipa::path(post, path = "/v1/test-runs", tag = "test-runs", operation_id = "test_run_create", request_body = TestRunCreateRequest,
    responses((status = 201, description = "Opened", body = TestRun), (status = 400, description = "Bad input; `field` names it", body = ErrorBody)))]
pub(crate) async fn test_run_create(
    Call { ctx, caller }: Call,
    Body(req): Body<TestRunCreateRequest>,
) -> Result<Created<TestRun>, ApiError> {
    created(app::testruns::test_run_create(&ctx, &caller, req).await)
}

#[utoipa::path(get, path = "/v1/test-runs/{id}", tag = "test-runs", operation_id = "test_run_get",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, description = "The run, its VMs and its summary", body = TestRun), (status = 404, description = "No such run", body = ErrorBody)))]
pub(crate) async fn test_run_get(Call { ctx, caller }: Call, Path(id): Path<String>) -> Result<Json<TestRun>, ApiError> {
    Ok(Json(app::testruns::test_run_get(&ctx, &caller, &id).await?))
}

/// The runner is alive; a run that has ended answers 409 and the runner stops.
#[utoipa::path(post, path = "/v1/test-runs/{id}/heartbeat", tag = "test-runs", operation_id = "test_run_heartbeat",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, description = "Held", body = TestRun), (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run has ended", body = ErrorBody)))]
pub(crate) async fn test_run_heartbeat(Call { ctx, caller }: Call, Path(id): Path<String>) -> Result<Json<TestRun>, ApiError> {
    Ok(Json(app::testruns::test_run_heartbeat(&ctx, &caller, &id).await?))
}

/// Ends the run with the runner's result; its VMs but the kept ones are deleted.
#[utoipa::path(post, path = "/v1/test-runs/{id}/finish", tag = "test-runs", operation_id = "test_run_finish",
    request_body = TestRunFinishRequest, params(("id" = String, Path, description = "Run id")),
    responses((status = 200, description = "Finished", body = TestRun), (status = 400, description = "Bad input; `field` names it", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody), (status = 409, description = "The run has ended", body = ErrorBody)))]
pub(crate) async fn test_run_finish(
    Call { ctx, caller }: Call,
    Path(id): Path<String>,
    Body(req): Body<TestRunFinishRequest>,
) -> Result<Json<TestRun>, ApiError> {
    Ok(Json(app::testruns::test_run_finish(&ctx, &caller, &id, req).await?))
}

/// Ends the run if it runs, deletes its VMs and removes its record.
#[utoipa::path(delete, path = "/v1/test-runs/{id}", tag = "test-runs", operation_id = "test_run_delete",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 204, description = "Removed"), (status = 404, description = "No such run", body = ErrorBody)))]
pub(crate) async fn test_run_delete(Call { ctx, caller }: Call, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    no_content(app::testruns::test_run_delete(&ctx, &caller, &id).await)
}
