//! The daemon's logic, one module per resource, independent of HTTP.

pub mod host;
pub mod status;

use kvmctl_libvirt::LibvirtNode;
use kvmctl_store::DataStore;
use std::sync::Arc;
use std::time::Instant;

/// Shared by every request.
pub struct Context {
    pub store: DataStore,
    pub local_node: Arc<LibvirtNode>,
    pub started: Instant,
    pub config: crate::config::Config,
}

/// Runs a blocking libvirt call off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, kvmctl_core::Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| kvmctl_core::Error::Internal(format!("worker task failed: {e}")))
}
