//! The client's calls for a VM's shares, data disks and storage pools.

use crate::{seg, Client, ClientError};
use hyper::Method;
use kvmctl_types::api::{VmDisk, VmDiskAddRequest, VmDiskResizeRequest, VmShare};

impl Client {
    pub async fn share_list(&self, vm: &str) -> Result<Vec<VmShare>, ClientError> {
        self.get(&format!("/v1/vms/{}/shares", seg(vm))).await
    }

    pub async fn share_add(&self, vm: &str, req: &VmShare) -> Result<VmShare, ClientError> {
        self.send_json(Method::POST, &format!("/v1/vms/{}/shares", seg(vm)), req).await
    }

    pub async fn share_remove(&self, vm: &str, tag: &str) -> Result<(), ClientError> {
        self.empty(Method::DELETE, &format!("/v1/vms/{}/shares/{}", seg(vm), seg(tag))).await
    }

    /// A single-use console ticket (`serial` or `vnc`) for the WebSocket at its `path`.
    pub async fn console_ticket(
        &self,
        vm: &str,
        kind: kvmctl_types::api::ConsoleKind,
    ) -> Result<kvmctl_types::api::ConsoleTicket, ClientError> {
        self.send_json(Method::POST, &format!("/v1/vms/{}/console/ticket", seg(vm)), &kvmctl_types::api::ConsoleTicketRequest { kind })
            .await
    }

    pub async fn pool_list(&self) -> Result<Vec<kvmctl_types::api::StoragePool>, ClientError> {
        self.get("/v1/pools").await
    }

    pub async fn pool_get(&self, name: &str) -> Result<kvmctl_types::api::StoragePool, ClientError> {
        self.get(&format!("/v1/pools/{}", seg(name))).await
    }

    pub async fn pool_create(&self, req: &kvmctl_types::api::PoolCreateRequest) -> Result<kvmctl_types::api::StoragePool, ClientError> {
        self.send_json(Method::POST, "/v1/pools", req).await
    }

    pub async fn pool_delete(&self, name: &str) -> Result<(), ClientError> {
        self.empty(Method::DELETE, &format!("/v1/pools/{}", seg(name))).await
    }

    pub async fn disk_list(&self, vm: &str) -> Result<Vec<VmDisk>, ClientError> {
        self.get(&format!("/v1/vms/{}/disks", seg(vm))).await
    }

    pub async fn disk_add(&self, vm: &str, req: &VmDiskAddRequest) -> Result<VmDisk, ClientError> {
        self.send_json(Method::POST, &format!("/v1/vms/{}/disks", seg(vm)), req).await
    }

    pub async fn disk_resize(&self, vm: &str, disk: &str, req: &VmDiskResizeRequest) -> Result<VmDisk, ClientError> {
        self.send_json(Method::PATCH, &format!("/v1/vms/{}/disks/{}", seg(vm), seg(disk)), req).await
    }

    pub async fn disk_remove(&self, vm: &str, disk: &str) -> Result<(), ClientError> {
        self.empty(Method::DELETE, &format!("/v1/vms/{}/disks/{}", seg(vm), seg(disk))).await
    }
}
