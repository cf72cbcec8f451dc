//! `LibvirtNode` itself: its connection to libvirtd (one shared, checked before each call and
//! reopened when libvirtd restarted; connections of their own for streams) and the lookups
//! every group of its calls uses. The calls are in `libvirt.rs` (domains, and the `Node`
//! trait's impl), `networks.rs`, `storage.rs`, `upload.rs` and `console.rs`, all over this.

use super::VolumeInfo;
use crate::error::NodeError;
use std::path::PathBuf;
use std::sync::Mutex;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::network::Network;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;

/// A libvirt connection that closes when dropped.
pub(super) struct Conn(pub(super) Connect);

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.0.close();
    }
}

/// Uploads larger than this get a libvirt connection of their own.
pub(super) const OWN_CONNECTION_BYTES: u64 = 8 << 20;

/// A node reached through libvirt.
pub struct LibvirtNode {
    pub(super) uri: String,
    pub(super) conn: Mutex<Option<Conn>>,
}

/// libvirt prints every error to stderr unless a handler is set; ours are returned and
/// logged where handled, so the default printing is switched off once per process.
fn silence_libvirt_stderr() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(virt::error::clear_error_callback);
}

impl LibvirtNode {
    /// A node for `uri`. Connects lazily, on first use.
    pub fn new(uri: impl Into<String>) -> Self {
        silence_libvirt_stderr();
        LibvirtNode { uri: uri.into(), conn: Mutex::new(None) }
    }

    /// Connects now, so that a wrong URI or a stopped libvirtd is reported at start-up.
    pub fn connect(uri: impl Into<String>) -> Result<Self, NodeError> {
        let node = Self::new(uri);
        node.with_conn(|_| Ok(()))?;
        Ok(node)
    }

    /// Runs `f` on a live connection, (re)connecting first when there is none or it died.
    pub(super) fn with_conn<T>(&self, f: impl FnOnce(&Connect) -> Result<T, NodeError>) -> Result<T, NodeError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let alive = guard.as_ref().map(|c| c.0.is_alive().unwrap_or(false)).unwrap_or(false);
        if !alive {
            if guard.is_some() {
                tracing::warn!(uri = %self.uri, "libvirt connection lost; reconnecting");
            }
            *guard = None;
            let c = Connect::open(Some(&self.uri)).map_err(|source| NodeError::Connect { uri: self.uri.clone(), source })?;
            *guard = Some(Conn(c));
        }
        let conn = &guard.as_ref().expect("connected above").0;
        let result = f(conn);
        // A call that failed because the connection broke leaves no live connection behind;
        // the next call reconnects.
        match result {
            Err(e) if !conn.is_alive().unwrap_or(false) => {
                *guard = None;
                Err(NodeError::Lost { uri: self.uri.clone(), source: Box::new(e) })
            }
            r => r,
        }
    }

    /// A connection of its own, for a stream that lasts (console, image upload).
    pub(super) fn connect_own(&self) -> Result<Conn, NodeError> {
        Ok(Conn(Connect::open(Some(&self.uri)).map_err(|source| NodeError::Connect { uri: self.uri.clone(), source })?))
    }

    pub(super) fn domain(conn: &Connect, name: &str, op: &'static str) -> Result<Domain, NodeError> {
        Domain::lookup_by_name(conn, name).map_err(|e| NodeError::from_virt(op, "domain", name, e))
    }

    pub(super) fn pool(conn: &Connect, name: &str) -> Result<StoragePool, NodeError> {
        StoragePool::lookup_by_name(conn, name).map_err(|e| NodeError::from_virt("find pool", "storage pool", name, e))
    }
    pub(super) fn network(conn: &Connect, name: &str) -> Result<Network, NodeError> {
        Network::lookup_by_name(conn, name).map_err(|e| NodeError::from_virt("find", "network", name, e))
    }

    pub(super) fn volume_info(vol: &StorageVol, name: &str) -> Result<VolumeInfo, NodeError> {
        let path = vol.get_path().map_err(|e| NodeError::from_virt("read path of", "volume", name, e))?;
        let info = vol.get_info().map_err(|e| NodeError::from_virt("read info of", "volume", name, e))?;
        Ok(VolumeInfo { name: name.to_owned(), path: PathBuf::from(path), capacity_bytes: info.capacity })
    }
}
