//! `LibvirtNode`'s storage: the bodies of the `Node` trait's pool and volume calls (the
//! trait's impl in `libvirt.rs` hands them here).

use super::conn::LibvirtNode;
use super::{ObjectState, VolumeInfo};
use crate::error::NodeError;
use crate::xml::{self, VolumeSpec};
use std::path::Path;
use virt::connect::Connect;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;

impl LibvirtNode {
    /// Defines the pool from `pool_xml` when libvirt has none of that name (building its
    /// storage when `build`; a failed build leaves no definition), starts it and marks it
    /// autostart. An existing pool is only started.
    pub(super) fn pool_ensure(&self, name: &str, pool_xml: &str, build: bool) -> Result<(), NodeError> {
        self.with_conn(|c| {
            let err = |op| move |e| NodeError::from_virt(op, "storage pool", name, e);
            let pool = match StoragePool::lookup_by_name(c, name) {
                Ok(p) => p,
                Err(e) if e.code() == virt::error::ErrorNumber::NoStoragePool => {
                    let p = StoragePool::define_xml(c, pool_xml, 0).map_err(err("define"))?;
                    if build {
                        if let Err(e) = p.build(0) {
                            let _ = p.undefine();
                            return Err(err("build")(e));
                        }
                    }
                    p
                }
                Err(e) => return Err(err("find")(e)),
            };
            if !pool.is_active().map_err(err("read state of"))? {
                pool.create(0).map_err(err("start"))?;
            }
            if pool.is_persistent().map_err(err("read persistence of"))? && !pool.get_autostart().map_err(err("read autostart of"))? {
                pool.set_autostart(true).map_err(err("set autostart of"))?;
            }
            Ok(())
        })
    }

    pub(super) fn pool_state(&self, name: &str) -> Result<Option<ObjectState>, NodeError> {
        self.with_conn(|c| {
            let err = |op| move |e| NodeError::from_virt(op, "storage pool", name, e);
            let Some(p) = pool_find(c, name)? else { return Ok(None) };
            Ok(Some(ObjectState {
                active: p.is_active().map_err(err("read state of"))?,
                autostart: p.get_autostart().map_err(err("read autostart of"))?,
                persistent: p.is_persistent().map_err(err("read persistence of"))?,
            }))
        })
    }

    pub(super) fn pool_ensure_dir(&self, name: &str, path: &Path) -> Result<(), NodeError> {
        self.pool_ensure(name, &xml::dir_pool_xml(name, path)?, true)
    }

    pub(super) fn pool_delete(&self, name: &str) -> Result<(), NodeError> {
        self.with_conn(|c| {
            let err = |op| move |e| NodeError::from_virt(op, "storage pool", name, e);
            let pool = Self::pool(c, name)?;
            if pool.is_active().map_err(err("read state of"))? {
                pool.destroy().map_err(err("stop"))?;
            }
            pool.undefine().map_err(err("undefine"))
        })
    }

    pub(super) fn pool_ensure_logical(&self, name: &str, vg: &str, devices: &[std::path::PathBuf]) -> Result<(), NodeError> {
        // With devices, the group is made on them (an existing group is used as is).
        let build = !devices.is_empty() && !std::path::Path::new("/dev").join(vg).exists();
        self.pool_ensure(name, &xml::logical_pool_xml(name, vg, devices)?, build)
    }

    pub(super) fn pool_info(&self, name: &str) -> Result<Option<super::PoolInfo>, NodeError> {
        self.with_conn(|c| {
            let err = |op| move |e| NodeError::from_virt(op, "storage pool", name, e);
            let Some(p) = pool_find(c, name)? else { return Ok(None) };
            let active = p.is_active().map_err(err("read state of"))?;
            if active {
                // Sizes as they are now, not as of the last start.
                let _ = p.refresh(0);
            }
            let info = p.get_info().map_err(err("read the size of"))?;
            let (kind, target) = xml::pool_kind_target(&p.get_xml_desc(0).map_err(err("read"))?);
            Ok(Some(super::PoolInfo {
                kind,
                target,
                active,
                capacity_bytes: info.capacity,
                allocation_bytes: info.allocation,
                available_bytes: info.available,
            }))
        })
    }

    pub(super) fn pool_remove(&self, name: &str, wipe: bool) -> Result<(), NodeError> {
        self.with_conn(|c| {
            let err = |op| move |e| NodeError::from_virt(op, "storage pool", name, e);
            let pool = Self::pool(c, name)?;
            if pool.is_active().map_err(err("read state of"))? {
                pool.destroy().map_err(err("stop"))?;
            }
            if wipe {
                // vgremove and pvremove for LVM; rmdir (of an empty directory) for dir pools.
                pool.delete(0).map_err(err("delete the storage of"))?;
            }
            pool.undefine().map_err(err("undefine"))
        })
    }

    pub(super) fn volume_create_from(&self, pool: &str, spec: &VolumeSpec, from_pool: &str, from: &str) -> Result<VolumeInfo, NodeError> {
        let vol_xml = xml::volume_xml(spec)?;
        // A copy of a whole image runs on a connection of its own.
        let own = self.connect_own()?;
        let c = &own.0;
        let p = Self::pool(c, pool)?;
        let src =
            StorageVol::lookup_by_name(&Self::pool(c, from_pool)?, from).map_err(|e| NodeError::from_virt("find", "volume", from, e))?;
        let vol =
            StorageVol::create_xml_from(&p, &vol_xml, &src, 0).map_err(|e| NodeError::from_virt("copy into", "volume", &spec.name, e))?;
        Self::volume_info(&vol, &spec.name)
    }

    pub(super) fn volume_create(&self, pool: &str, spec: &VolumeSpec) -> Result<VolumeInfo, NodeError> {
        let vol_xml = xml::volume_xml(spec)?;
        self.with_conn(|c| {
            let p = Self::pool(c, pool)?;
            let vol = StorageVol::create_xml(&p, &vol_xml, 0).map_err(|e| NodeError::from_virt("create", "volume", &spec.name, e))?;
            Self::volume_info(&vol, &spec.name)
        })
    }

    pub(super) fn volume_delete(&self, pool: &str, name: &str) -> Result<(), NodeError> {
        self.with_conn(|c| {
            let p = Self::pool(c, pool)?;
            // A file made behind libvirt's back (by qemu-img: a clone's disk) is a volume only
            // once the pool is refreshed.
            let vol = match StorageVol::lookup_by_name(&p, name) {
                Ok(v) => v,
                Err(_) => {
                    let _ = p.refresh(0);
                    StorageVol::lookup_by_name(&p, name).map_err(|e| NodeError::from_virt("find", "volume", name, e))?
                }
            };
            vol.delete(0).map_err(|e| NodeError::from_virt("delete", "volume", name, e))
        })
    }

    pub(super) fn volume_get(&self, pool: &str, name: &str) -> Result<Option<VolumeInfo>, NodeError> {
        self.with_conn(|c| {
            let p = Self::pool(c, pool)?;
            match StorageVol::lookup_by_name(&p, name) {
                Ok(v) => Self::volume_info(&v, name).map(Some),
                Err(e) => match NodeError::from_virt("find", "volume", name, e) {
                    NodeError::NotFound { .. } => Ok(None),
                    other => Err(other),
                },
            }
        })
    }

    pub(super) fn volume_resize(&self, pool: &str, name: &str, capacity_bytes: u64) -> Result<(), NodeError> {
        self.with_conn(|c| {
            let p = Self::pool(c, pool)?;
            let vol = StorageVol::lookup_by_name(&p, name).map_err(|e| NodeError::from_virt("find", "volume", name, e))?;
            vol.resize(capacity_bytes, 0).map(drop).map_err(|e| NodeError::from_virt("resize", "volume", name, e))
        })
    }

    pub(super) fn volume_list(&self, pool: &str) -> Result<Vec<VolumeInfo>, NodeError> {
        self.with_conn(|c| {
            let p = Self::pool(c, pool)?;
            let _ = p.refresh(0); // pick up files changed behind libvirt's back
            let vols = p.list_all_volumes(0).map_err(|e| NodeError::from_virt("list volumes of", "storage pool", pool, e))?;
            let mut out = Vec::with_capacity(vols.len());
            for v in vols {
                let Ok(name) = v.get_name() else { continue };
                // A volume can vanish between listing and reading it; skip it then.
                match Self::volume_info(&v, &name) {
                    Ok(info) => out.push(info),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }
}

/// The storage pool of that name, or `None` when libvirt has none.
fn pool_find(c: &Connect, name: &str) -> Result<Option<StoragePool>, NodeError> {
    match StoragePool::lookup_by_name(c, name) {
        Ok(p) => Ok(Some(p)),
        Err(e) if e.code() == virt::error::ErrorNumber::NoStoragePool => Ok(None),
        Err(e) => Err(NodeError::from_virt("find", "storage pool", name, e)),
    }
}
