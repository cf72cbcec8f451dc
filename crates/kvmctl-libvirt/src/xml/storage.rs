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

/// An LVM storage pool over volume group `vg`; with `devices`, the group is built on them
/// (`pool-build`: pvcreate and vgcreate).
pub fn logical_pool_xml(name: &str, vg: &str, devices: &[PathBuf]) -> Result<String, XmlError> {
    let mut d = Doc::new();
    d.open("pool", &[("type", "logical")])?;
    d.text("name", &[], &checked("pool name", name)?)?;
    d.open("source", &[])?;
    for dev in devices {
        d.empty("device", &[("path", &path_str("pool device", dev)?)])?;
    }
    d.text("name", &[], &checked("volume group", vg)?)?;
    d.empty("format", &[("type", "lvm2")])?;
    d.close("source")?;
    d.open("target", &[])?;
    d.text("path", &[], &format!("/dev/{}", checked("volume group", vg)?))?;
    d.close("target")?;
    d.close("pool")?;
    Ok(d.finish())
}

/// A pool definition's type (`dir`, `logical`...) and target path.
pub fn pool_kind_target(pool_xml: &str) -> (String, PathBuf) {
    use quick_xml::events::Event as E;
    let mut reader = quick_xml::Reader::from_str(pool_xml);
    let (mut kind, mut target) = (String::new(), PathBuf::new());
    let mut path: Vec<Vec<u8>> = Vec::new();
    loop {
        match reader.read_event() {
            Ok(E::Start(e)) => {
                if path.is_empty() && e.name().as_ref() == b"pool" {
                    if let Some(t) = e.attributes().flatten().find(|a| a.key.as_ref() == b"type") {
                        kind = t.unescape_value().map(|v| v.into_owned()).unwrap_or_default();
                    }
                }
                path.push(e.name().as_ref().to_vec());
            }
            Ok(E::End(_)) => {
                path.pop();
            }
            Ok(E::Text(t)) if path.len() == 3 && path[1] == b"target" && path[2] == b"path" => {
                target = PathBuf::from(t.unescape().map(|v| v.trim().to_owned()).unwrap_or_default());
            }
            Ok(E::Eof) | Err(_) => break,
            _ => {}
        }
    }
    (kind, target)
}
