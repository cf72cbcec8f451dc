//! The client's calls for test runs (`kvmctl test`).

use crate::{seg, Client, ClientError};
use hyper::Method;
use kvmctl_types::api::{TestRun, TestRunCreateRequest, TestRunFinishRequest};

impl Client {
    pub async fn test_run_list(&self) -> Result<Vec<TestRun>, ClientError> {
        self.get("/v1/test-runs").await
    }

    pub async fn test_run_get(&self, id: &str) -> Result<TestRun, ClientError> {
        self.get(&format!("/v1/test-runs/{}", seg(id))).await
    }

    pub async fn test_run_create(&self, req: &TestRunCreateRequest) -> Result<TestRun, ClientError> {
        self.send_json(Method::POST, "/v1/test-runs", req).await
    }

    pub async fn test_run_heartbeat(&self, id: &str) -> Result<TestRun, ClientError> {
        self.send_json(Method::POST, &format!("/v1/test-runs/{}/heartbeat", seg(id)), &serde_json::json!({})).await
    }

    pub async fn test_run_finish(&self, id: &str, req: &TestRunFinishRequest) -> Result<TestRun, ClientError> {
        self.send_json(Method::POST, &format!("/v1/test-runs/{}/finish", seg(id)), req).await
    }

    pub async fn test_run_delete(&self, id: &str) -> Result<(), ClientError> {
        self.empty(Method::DELETE, &format!("/v1/test-runs/{}", seg(id))).await
    }
}
