//! The client's calls for accounts and operations: users, tokens, quotas, usage, the audit
//! log, compute nodes, gc, metrics and plans.

use crate::{decode, seg, Client, ClientError};
use hyper::Method;
use kvmctl_types::api::*;

impl Client {
    pub async fn whoami(&self) -> Result<User, ClientError> {
        self.get("/v1/whoami").await
    }

    pub async fn user_list(&self) -> Result<Vec<User>, ClientError> {
        self.get("/v1/users").await
    }

    pub async fn user_get(&self, name: &str) -> Result<User, ClientError> {
        self.get(&format!("/v1/users/{}", seg(name))).await
    }

    pub async fn user_create(&self, req: &UserCreateRequest) -> Result<User, ClientError> {
        self.send_json(Method::POST, "/v1/users", req).await
    }

    pub async fn user_update(&self, name: &str, req: &UserUpdateRequest) -> Result<User, ClientError> {
        self.send_json(Method::PATCH, &format!("/v1/users/{}", seg(name)), req).await
    }

    pub async fn quota_get(&self, user: &str) -> Result<Quota, ClientError> {
        self.get(&format!("/v1/users/{}/quota", seg(user))).await
    }

    pub async fn quota_set(&self, user: &str, req: &QuotaSetRequest) -> Result<Quota, ClientError> {
        self.send_json(Method::PUT, &format!("/v1/users/{}/quota", seg(user)), req).await
    }

    pub async fn token_list(&self, user: Option<&str>) -> Result<Vec<Token>, ClientError> {
        match user {
            Some(u) => self.get(&format!("/v1/tokens?user={}", seg(u))).await,
            None => self.get("/v1/tokens").await,
        }
    }

    pub async fn token_create(&self, req: &TokenCreateRequest) -> Result<TokenCreated, ClientError> {
        self.send_json(Method::POST, "/v1/tokens", req).await
    }

    /// Sets a web console password: another user's first one (admins), or your own with
    /// `current`.
    pub async fn password_set(&self, user: &str, req: &PasswordSetRequest) -> Result<(), ClientError> {
        let bytes = serde_json::to_vec(req).expect("request bodies serialize");
        let (status, body) = self.request(Method::PUT, &format!("/v1/users/{}/password", seg(user)), Some(bytes)).await?;
        if status.is_success() {
            return Ok(());
        }
        decode::<serde_json::Value>(status, &body).map(drop)
    }

    /// The SSH keys saved in `user`'s profile.
    pub async fn ssh_key_list(&self, user: &str) -> Result<Vec<kvmctl_types::api::SshKey>, ClientError> {
        self.get(&format!("/v1/users/{}/ssh-keys", seg(user))).await
    }

    pub async fn ssh_key_add(
        &self,
        user: &str,
        req: &kvmctl_types::api::SshKeyCreateRequest,
    ) -> Result<kvmctl_types::api::SshKey, ClientError> {
        self.send_json(Method::POST, &format!("/v1/users/{}/ssh-keys", seg(user)), req).await
    }

    pub async fn ssh_key_delete(&self, user: &str, id: &str) -> Result<(), ClientError> {
        self.empty(Method::DELETE, &format!("/v1/users/{}/ssh-keys/{}", seg(user), seg(id))).await
    }

    pub async fn token_revoke(&self, id: &str) -> Result<(), ClientError> {
        self.empty(Method::DELETE, &format!("/v1/tokens/{}", seg(id))).await
    }

    /// The audit log, newest first: of `user`, at or after `since` (unix seconds).
    /// Usage records (hours in `[from, to)`, Unix seconds).
    pub async fn usage_list(&self, user: Option<&str>, from: Option<i64>, to: Option<i64>) -> Result<Vec<UsageRecord>, ClientError> {
        let mut q = Vec::new();
        if let Some(u) = user {
            q.push(format!("user={}", seg(u)));
        }
        if let Some(f) = from {
            q.push(format!("from={f}"));
        }
        if let Some(t) = to {
            q.push(format!("to={t}"));
        }
        let path = if q.is_empty() { "/v1/usage".to_owned() } else { format!("/v1/usage?{}", q.join("&")) };
        self.get(&path).await
    }

    pub async fn audit_list(&self, user: Option<&str>, since: Option<i64>, limit: Option<u32>) -> Result<Vec<AuditEntry>, ClientError> {
        let mut q = Vec::new();
        if let Some(u) = user {
            q.push(format!("user={}", seg(u)));
        }
        if let Some(s) = since {
            q.push(format!("since={s}"));
        }
        if let Some(l) = limit {
            q.push(format!("limit={l}"));
        }
        let path = if q.is_empty() { "/v1/audit".to_owned() } else { format!("/v1/audit?{}", q.join("&")) };
        self.get(&path).await
    }

    pub async fn node_list(&self) -> Result<Vec<ComputeNode>, ClientError> {
        self.get("/v1/nodes").await
    }

    pub async fn node_get(&self, name: &str) -> Result<ComputeNode, ClientError> {
        self.get(&format!("/v1/nodes/{}", seg(name))).await
    }

    pub async fn node_add(&self, req: &NodeAddRequest) -> Result<ComputeNode, ClientError> {
        self.send_json(Method::POST, "/v1/nodes", req).await
    }

    pub async fn node_update(&self, name: &str, req: &NodeUpdateRequest) -> Result<ComputeNode, ClientError> {
        self.send_json(Method::PATCH, &format!("/v1/nodes/{}", seg(name)), req).await
    }

    pub async fn node_remove(&self, name: &str) -> Result<(), ClientError> {
        self.empty(Method::DELETE, &format!("/v1/nodes/{}", seg(name))).await
    }

    /// `GET /v1/gc` (report) or `POST /v1/gc` (remove).
    pub async fn gc(&self, clean: bool) -> Result<GcReport, ClientError> {
        if clean {
            let (status, body) = self.request(Method::POST, "/v1/gc", None).await?;
            decode(status, &body)
        } else {
            self.get("/v1/gc").await
        }
    }

    /// `GET /metrics`: the OpenMetrics text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let (status, body) = self.request(Method::GET, "/metrics", None).await?;
        if status.is_success() {
            return Ok(String::from_utf8_lossy(&body).into_owned());
        }
        decode::<serde_json::Value>(status, &body).map(|_| String::new())
    }

    pub async fn plan_create(&self, req: &PlanCreateRequest) -> Result<Plan, ClientError> {
        self.send_json(Method::POST, "/v1/plans", req).await
    }

    pub async fn plan_update(&self, name: &str, req: &PlanUpdateRequest) -> Result<Plan, ClientError> {
        self.send_json(Method::PATCH, &format!("/v1/plans/{}", seg(name)), req).await
    }
}
