//! The daemon's handle on a compute node: the `Node` seam (`LibvirtNode`, or the in-memory
//! node of the tests), with one async method per node call. libvirt calls block, so each
//! runs on tokio's blocking pool; callers pass borrowed arguments and never clone for it.

use kvmctl_libvirt::xml::{DiskFormat, VolumeSpec};
use kvmctl_libvirt::{Console, DomainState, DomainSummary, Node, NodeError, NodeResources, NodeVersions, ObjectState, VolumeInfo};
use std::sync::Arc;

/// A compute node as the daemon's logic sees it. Cheap to clone.
#[derive(Clone)]
pub struct NodeHandle(Arc<dyn Node>);

/// Makes the node for a registered node's URI (a `LibvirtNode` in the daemon).
pub type Connector = Arc<dyn Fn(&str) -> Arc<dyn Node> + Send + Sync>;

/// The daemon's connector: libvirt, connected on first use.
pub fn libvirt_connector() -> Connector {
    Arc::new(|uri: &str| Arc::new(kvmctl_libvirt::LibvirtNode::new(uri)) as Arc<dyn Node>)
}

impl NodeHandle {
    pub fn new(node: Arc<dyn Node>) -> Self {
        NodeHandle(node)
    }

    pub fn uri(&self) -> &str {
        self.0.uri()
    }

    /// Runs `f` with the node on a blocking thread: for several calls that belong together.
    pub async fn run<T, E>(&self, f: impl FnOnce(&dyn Node) -> Result<T, E> + Send + 'static) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<NodeError> + Send + 'static,
    {
        let node = self.0.clone();
        match tokio::task::spawn_blocking(move || f(node.as_ref())).await {
            Ok(r) => r,
            Err(e) => Err(NodeError::Worker(e.to_string()).into()),
        }
    }

    pub async fn versions(&self) -> Result<NodeVersions, NodeError> {
        self.run(|n| n.versions()).await
    }
    pub async fn resources(&self, pool: &str) -> Result<NodeResources, NodeError> {
        let pool = pool.to_owned();
        self.run(move |n| n.resources(&pool)).await
    }
    pub async fn volume_download_to(&self, pool: &str, name: &str, to: std::path::PathBuf) -> Result<u64, NodeError> {
        let (pool, name) = (pool.to_owned(), name.to_owned());
        self.run(move |n| {
            let mut f = std::fs::File::create(&to).map_err(|source| NodeError::Read { name: name.clone(), source })?;
            let got = n.volume_download(&pool, &name, &mut f)?;
            f.sync_all().map_err(|source| NodeError::Read { name: name.clone(), source })?;
            Ok(got)
        })
        .await
    }
    pub async fn domain_xml_migratable(&self, name: &str) -> Result<String, NodeError> {
        self.named(name, |n, name| n.domain_xml_migratable(name)).await
    }
    pub async fn domain_migrate_live(
        &self,
        name: &str,
        dest_uri: &str,
        migration_uri: Option<String>,
        dest_xml: String,
    ) -> Result<(), NodeError> {
        let (name, dest_uri) = (name.to_owned(), dest_uri.to_owned());
        self.run(move |n| n.domain_migrate_live(&name, &dest_uri, migration_uri.as_deref(), &dest_xml)).await
    }
    pub async fn domain_define(&self, xml: String) -> Result<DomainSummary, NodeError> {
        self.run(move |n| n.domain_define(&xml)).await
    }
    pub async fn domain_start(&self, name: &str) -> Result<(), NodeError> {
        self.named(name, |n, name| n.domain_start(name)).await
    }
    pub async fn domain_reboot(&self, name: &str) -> Result<(), NodeError> {
        self.named(name, |n, name| n.domain_reboot(name)).await
    }
    pub async fn domain_shutdown(&self, name: &str) -> Result<(), NodeError> {
        self.named(name, |n, name| n.domain_shutdown(name)).await
    }
    pub async fn domain_save(&self, name: &str, path: &std::path::Path) -> Result<(), NodeError> {
        let path = path.to_owned();
        self.named(name, move |n, name| n.domain_save(name, &path)).await
    }
    pub async fn domain_restore(&self, path: &std::path::Path, running: bool) -> Result<(), NodeError> {
        let path = path.to_owned();
        self.run(move |n| n.domain_restore(&path, running)).await
    }
    pub async fn domain_interface_update(&self, name: &str, interface_xml: &str) -> Result<(), NodeError> {
        let xml = interface_xml.to_owned();
        self.named(name, move |n, name| n.domain_interface_update(name, &xml)).await
    }
    pub async fn domain_agent_exec(
        &self,
        name: &str,
        argv: Vec<String>,
        timeout_seconds: u64,
    ) -> Result<kvmctl_libvirt::AgentExec, NodeError> {
        self.named(name, move |n, name| n.domain_agent_exec(name, &argv, timeout_seconds)).await
    }
    pub async fn domain_announce(&self, name: &str) -> Result<(), NodeError> {
        self.named(name, |n, name| n.domain_announce(name)).await
    }
    pub async fn domain_clock_sync(&self, name: &str) -> Result<(), NodeError> {
        self.named(name, |n, name| n.domain_clock_sync(name)).await
    }
    pub async fn domain_destroy(&self, name: &str) -> Result<(), NodeError> {
        self.named(name, |n, name| n.domain_destroy(name)).await
    }
    pub async fn domain_undefine(&self, name: &str) -> Result<(), NodeError> {
        self.named(name, |n, name| n.domain_undefine(name)).await
    }
    pub async fn domain_state(&self, name: &str) -> Result<DomainState, NodeError> {
        self.named(name, |n, name| n.domain_state(name)).await
    }
    pub async fn domain_xml(&self, name: &str) -> Result<String, NodeError> {
        self.named(name, |n, name| n.domain_xml(name)).await
    }
    pub async fn domain_list(&self) -> Result<Vec<DomainSummary>, NodeError> {
        self.run(|n| n.domain_list()).await
    }
    pub async fn domain_console(&self, name: &str) -> Result<Box<dyn Console>, NodeError> {
        self.named(name, |n, name| n.domain_console(name)).await
    }
    pub async fn domain_open_graphics(&self, name: &str) -> Result<std::os::fd::OwnedFd, NodeError> {
        self.named(name, |n, name| n.domain_open_graphics(name)).await
    }
    pub async fn domain_block_resize(&self, name: &str, target: &str, capacity_bytes: u64) -> Result<(), NodeError> {
        let (name, target) = (name.to_owned(), target.to_owned());
        self.run(move |n| n.domain_block_resize(&name, &target, capacity_bytes)).await
    }
    pub async fn pool_info(&self, name: &str) -> Result<Option<kvmctl_libvirt::PoolInfo>, NodeError> {
        self.named(name, |n, name| n.pool_info(name)).await
    }
    pub async fn pool_ensure_logical(&self, name: &str, vg: &str, devices: Vec<std::path::PathBuf>) -> Result<(), NodeError> {
        let (name, vg) = (name.to_owned(), vg.to_owned());
        self.run(move |n| n.pool_ensure_logical(&name, &vg, &devices)).await
    }
    pub async fn pool_ensure_dir(&self, name: &str, path: std::path::PathBuf) -> Result<(), NodeError> {
        let name = name.to_owned();
        self.run(move |n| n.pool_ensure_dir(&name, &path)).await
    }
    pub async fn pool_remove(&self, name: &str, wipe: bool) -> Result<(), NodeError> {
        let name = name.to_owned();
        self.run(move |n| n.pool_remove(&name, wipe)).await
    }
    pub async fn volume_create_from(&self, pool: &str, spec: VolumeSpec, from_pool: &str, from: &str) -> Result<VolumeInfo, NodeError> {
        let (pool, from_pool, from) = (pool.to_owned(), from_pool.to_owned(), from.to_owned());
        self.run(move |n| n.volume_create_from(&pool, &spec, &from_pool, &from)).await
    }
    pub async fn domain_device_attach(&self, name: &str, device_xml: String) -> Result<(), NodeError> {
        let name = name.to_owned();
        self.run(move |n| n.domain_device_attach(&name, &device_xml)).await
    }
    pub async fn domain_device_detach(&self, name: &str, device_xml: String) -> Result<(), NodeError> {
        let name = name.to_owned();
        self.run(move |n| n.domain_device_detach(&name, &device_xml)).await
    }
    pub async fn domain_metadata_set(&self, name: &str, element_xml: String) -> Result<(), NodeError> {
        let name = name.to_owned();
        self.run(move |n| n.domain_metadata_set(&name, &element_xml)).await
    }
    pub async fn network_xml(&self, name: &str) -> Result<String, NodeError> {
        self.named(name, |n, name| n.network_xml(name)).await
    }
    pub async fn network_dhcp_host(&self, name: &str, host_xml: &str, add: bool) -> Result<(), NodeError> {
        let (name, host) = (name.to_owned(), host_xml.to_owned());
        self.run(move |n| n.network_dhcp_host(&name, &host, add)).await
    }
    pub async fn network_leases(&self, name: &str) -> Result<Vec<(String, String)>, NodeError> {
        self.named(name, |n, name| n.network_leases(name)).await
    }
    pub async fn network_state(&self, name: &str) -> Result<Option<ObjectState>, NodeError> {
        self.named(name, |n, name| n.network_state(name)).await
    }
    pub async fn network_delete(&self, name: &str) -> Result<(), NodeError> {
        self.named(name, |n, name| n.network_delete(name)).await
    }
    pub async fn network_list(&self) -> Result<Vec<String>, NodeError> {
        self.run(|n| n.network_list()).await
    }
    pub async fn volume_create(&self, pool: &str, spec: VolumeSpec) -> Result<VolumeInfo, NodeError> {
        let pool = pool.to_owned();
        self.run(move |n| n.volume_create(&pool, &spec)).await
    }
    pub async fn volume_upload(&self, pool: &str, name: &str, format: DiskFormat, data: Vec<u8>) -> Result<VolumeInfo, NodeError> {
        let (pool, name) = (pool.to_owned(), name.to_owned());
        self.run(move |n| n.volume_upload(&pool, &name, format, &data)).await
    }
    pub async fn volume_delete(&self, pool: &str, name: &str) -> Result<(), NodeError> {
        let (pool, name) = (pool.to_owned(), name.to_owned());
        self.run(move |n| n.volume_delete(&pool, &name)).await
    }
    pub async fn volume_get(&self, pool: &str, name: &str) -> Result<Option<VolumeInfo>, NodeError> {
        let (pool, name) = (pool.to_owned(), name.to_owned());
        self.run(move |n| n.volume_get(&pool, &name)).await
    }
    pub async fn volume_list(&self, pool: &str) -> Result<Vec<VolumeInfo>, NodeError> {
        self.named(pool, |n, pool| n.volume_list(pool)).await
    }
    pub async fn volume_resize(&self, pool: &str, name: &str, capacity_bytes: u64) -> Result<(), NodeError> {
        let (pool, name) = (pool.to_owned(), name.to_owned());
        self.run(move |n| n.volume_resize(&pool, &name, capacity_bytes)).await
    }

    /// A call that takes one name.
    async fn named<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&dyn Node, &str) -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, NodeError> {
        let name = name.to_owned();
        self.run(move |n| f(n, &name)).await
    }
}
