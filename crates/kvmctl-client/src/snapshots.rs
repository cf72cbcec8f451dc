//! The client's calls for a VM's snapshots.

use crate::{seg, Client, ClientError};
use hyper::Method;
use kvmctl_types::api::{Snapshot, SnapshotCreateRequest};

impl Client {
    pub async fn snapshot_list(&self, vm: &str) -> Result<Vec<Snapshot>, ClientError> {
        self.get(&format!("/v1/vms/{}/snapshots", seg(vm))).await
    }

    pub async fn snapshot_create(&self, vm: &str, req: &SnapshotCreateRequest) -> Result<Snapshot, ClientError> {
        self.send_json(Method::POST, &format!("/v1/vms/{}/snapshots", seg(vm)), req).await
    }

    pub async fn snapshot_revert(&self, vm: &str, snapshot: &str) -> Result<Snapshot, ClientError> {
        self.send_json(Method::POST, &format!("/v1/vms/{}/snapshots/{}/revert", seg(vm), seg(snapshot)), &serde_json::json!({})).await
    }

    pub async fn snapshot_delete(&self, vm: &str, snapshot: &str) -> Result<(), ClientError> {
        self.empty(Method::DELETE, &format!("/v1/vms/{}/snapshots/{}", seg(vm), seg(snapshot))).await
    }
}
