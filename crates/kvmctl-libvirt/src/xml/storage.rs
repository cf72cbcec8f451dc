//! Storage volumes and pools.

use super::DiskFormat;
use super::{checked, path_str, Doc, XmlError};
use std::path::PathBuf;

/// A storage volume to create in a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// File name inside the pool.
    pub name: String,
    pub capacity_bytes: u64,
    pub format: DiskFormat,
    /// Copy-on-write backing file (absolute path on the node) and its format.
    pub backing: Option<(PathBuf, DiskFormat)>,
    /// Readable by root only (mode 0600; libvirt hands it to QEMU's user while the VM runs):
    /// a VM's own disk and seed, which holds its private host key. Otherwise 0644: images,
    /// which every VM's QEMU reads as a backing file.
    pub private: bool,
}

pub fn volume_xml(v: &VolumeSpec) -> Result<String, XmlError> {
    let mut d = Doc::new();
    d.open("volume", &[])?;
    d.text("name", &[], &checked("volume name", &v.name)?)?;
    d.text("capacity", &[("unit", "bytes")], &v.capacity_bytes.to_string())?;
    d.open("target", &[])?;
    d.empty("format", &[("type", v.format.as_str())])?;
    d.open("permissions", &[])?;
    d.text("mode", &[], if v.private { "0600" } else { "0644" })?;
    d.close("permissions")?;
    d.close("target")?;
    if let Some((path, format)) = &v.backing {
        d.open("backingStore", &[])?;
        d.text("path", &[], &path_str("backing path", path)?)?;
        d.empty("format", &[("type", format.as_str())])?;
        d.close("backingStore")?;
    }
    d.close("volume")?;
    Ok(d.finish())
}

/// A directory storage pool.
pub fn dir_pool_xml(name: &str, path: &std::path::Path) -> Result<String, XmlError> {
    let mut d = Doc::new();
    d.open("pool", &[("type", "dir")])?;
    d.text("name", &[], &checked("pool name", name)?)?;
    d.open("target", &[])?;
    d.text("path", &[], &path_str("pool path", path)?)?;
    d.close("target")?;
    d.close("pool")?;
    Ok(d.finish())
}
