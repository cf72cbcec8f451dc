//! Rules about a VM's shape that every layer shares: size and TTL bounds, the names of its
//! volumes, how its network attachment is written, IPv4 CIDRs.

use crate::Error;
use std::net::Ipv4Addr;

/// Custom sizes (and plans) are accepted within these bounds.
pub const MAX_VCPUS: u32 = 64;
pub const MIN_MEMORY_MIB: u64 = 128;
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
pub const MAX_DISK_GIB: u64 = 16 * 1024;
/// A `--ttl` lies between a minute and 30 days.
pub const MIN_TTL_SECONDS: u64 = 60;
pub const MAX_TTL_SECONDS: u64 = 30 * 24 * 3600;

/// vCPUs, memory and disk within bounds; the error names the field.
pub fn size_check(vcpus: Option<u32>, memory_mib: Option<u64>, disk_gib: Option<u64>) -> Result<(), Error> {
    if let Some(v) = vcpus.filter(|v| !(1..=MAX_VCPUS).contains(v)) {
        return Err(Error::invalid("vcpus", format!("{v} is out of range; use 1 to {MAX_VCPUS}")));
    }
    if let Some(m) = memory_mib.filter(|m| !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(m)) {
        return Err(Error::invalid(
            "memory_mib",
            format!("{m} MiB is out of range; use {MIN_MEMORY_MIB} MiB to {} GiB", MAX_MEMORY_MIB / 1024),
        ));
    }
    if let Some(d) = disk_gib.filter(|d| !(1..=MAX_DISK_GIB).contains(d)) {
        return Err(Error::invalid("disk_gib", format!("{d} GiB is out of range; use 1 to {MAX_DISK_GIB} GiB")));
    }
    Ok(())
}

/// A TTL within bounds.
pub fn ttl_check(ttl_seconds: u64) -> Result<(), Error> {
    if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&ttl_seconds) {
        return Err(Error::invalid(
            "ttl_seconds",
            format!("{ttl_seconds} is not between {MIN_TTL_SECONDS} (a minute) and {MAX_TTL_SECONDS} (30 days)"),
        ));
    }
    Ok(())
}

/// The root disk of VM `vm`: a qcow2 overlay on its image.
pub fn root_volume(vm: &str) -> String {
    format!("{vm}-root.qcow2")
}

/// The NoCloud seed of VM `vm`.
pub fn seed_volume(vm: &str) -> String {
    format!("{vm}-seed.iso")
}

/// The data disk `disk` of VM `vm` (disk names are letters and digits only).
pub fn data_volume(vm: &str, disk: &str) -> String {
    format!("{vm}-data-{disk}.qcow2")
}

/// The read-only base of linked clones with id `id` (a UUID). Names of VMs start with a
/// letter, so no VM's volume is ever named like a base.
pub fn base_volume(id: &str) -> String {
    format!("_base-{id}.qcow2")
}

/// The base id a volume is named for, when it is named like a clone base.
pub fn volume_base(volume: &str) -> Option<&str> {
    volume.strip_prefix("_base-").and_then(|v| v.strip_suffix(".qcow2"))
}

/// The VM a volume is named for, when it is named like a root disk, seed or data disk.
pub fn volume_vm(volume: &str) -> Option<&str> {
    volume
        .strip_suffix("-root.qcow2")
        .or_else(|| volume.strip_suffix("-seed.iso"))
        .or_else(|| volume.strip_suffix(".qcow2").and_then(|v| v.rsplit_once("-data-")).map(|(vm, _)| vm))
}

/// A VM's network attachment as written in its record: a libvirt network, `bridge:BR` or
/// `macvtap:DEV`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment {
    Network(String),
    Bridge(String),
    Macvtap(String),
}

impl Attachment {
    pub fn parse(network: &str) -> Attachment {
        if let Some(b) = network.strip_prefix("bridge:") {
            Attachment::Bridge(b.to_owned())
        } else if let Some(d) = network.strip_prefix("macvtap:") {
            Attachment::Macvtap(d.to_owned())
        } else {
            Attachment::Network(network.to_owned())
        }
    }
}

/// `192.168.100.0/24` as address and prefix length.
pub fn cidr_parse(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, l) = s.split_once('/')?;
    let len: u8 = l.parse().ok().filter(|l| *l <= 32)?;
    Some((a.parse().ok()?, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_and_cidrs_parse() {
        assert_eq!(Attachment::parse("default"), Attachment::Network("default".into()));
        assert_eq!(Attachment::parse("bridge:br0"), Attachment::Bridge("br0".into()));
        assert_eq!(Attachment::parse("macvtap:eth0"), Attachment::Macvtap("eth0".into()));
        assert_eq!(cidr_parse("192.168.100.0/24"), Some(([192, 168, 100, 0].into(), 24)));
        assert_eq!(cidr_parse("192.168.100.0/33"), None);
        assert_eq!(cidr_parse("192.168.100.0"), None);
    }

    #[test]
    fn bounds_name_the_field() {
        assert!(size_check(Some(1), Some(128), Some(1)).is_ok());
        let field = |r: Result<(), Error>| match r {
            Err(Error::InvalidRequest { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(size_check(Some(0), None, None)), "vcpus");
        assert_eq!(field(size_check(None, Some(64), None)), "memory_mib");
        assert_eq!(field(size_check(None, None, Some(MAX_DISK_GIB + 1))), "disk_gib");
        assert!(ttl_check(60).is_ok() && ttl_check(MAX_TTL_SECONDS).is_ok());
        assert_eq!(field(ttl_check(59)), "ttl_seconds");
    }

    #[test]
    fn volume_names_round_trip() {
        assert_eq!(volume_vm(&root_volume("web")), Some("web"));
        assert_eq!(volume_vm(&seed_volume("web-1")), Some("web-1"));
        assert_eq!(volume_vm(&data_volume("web-data-1", "disk1")), Some("web-data-1"));
        assert_eq!(volume_vm("image-web.qcow2"), None);
    }
}
