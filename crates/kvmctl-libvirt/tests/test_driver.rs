//! API semantics against libvirt's `test:///default` driver: fast, no daemon needed.
//! Each `test:///default` connection gets its own private state, so tests do not interfere.

use kvmctl_libvirt::xml::*;
use kvmctl_libvirt::{DomainState, LibvirtNode, Node, NodeError};
use kvmctl_types::{Name, VmId};

fn spec(name: &str) -> DomainSpec {
    DomainSpec {
        name: Name::parse(name).unwrap(),
        domain_type: DomainType::Qemu,
        firmware: Firmware::Bios,
        vcpus: 1,
        memory_mib: 128,
        boot: Boot::Disk,
        disks: vec![],
        nics: vec![],
        serial_log: None,
        vnc_password: None,
        vnc_port: None,
        guest_agent: false,
        tpm: false,
        shares: vec![],
        windows: false,
        metadata: Metadata { vm_id: VmId::new(), owner: "root".into(), plan: None, installation: None, net: None },
    }
}

#[test]
fn versions_come_from_the_connection() {
    let node = LibvirtNode::connect("test:///default").unwrap();
    let v = node.versions().unwrap();
    assert_eq!(v.driver, "TEST");
    assert!(v.libvirt.split('.').count() == 3 && !v.libvirt.starts_with("0."), "{v:?}");
}

#[test]
fn domain_lifecycle() {
    let node = LibvirtNode::new("test:///default");
    let s = spec("life-1");
    let d = node.domain_define(&domain_xml(&s).unwrap()).unwrap();
    assert_eq!(d.name, "life-1");
    assert_eq!(d.uuid, s.metadata.vm_id.to_string());
    assert_eq!(node.domain_state("life-1").unwrap(), DomainState::Shutoff);
    node.domain_start("life-1").unwrap();
    assert_eq!(node.domain_state("life-1").unwrap(), DomainState::Running);
    assert!(node.domain_list().unwrap().iter().any(|d| d.name == "life-1" && d.state == DomainState::Running));
    let xml = node.domain_xml("life-1").unwrap();
    assert!(xml.contains(METADATA_NS), "our metadata survives libvirt's round trip");
    // Starting twice is a conflict, not a silent success.
    assert!(matches!(node.domain_start("life-1"), Err(NodeError::InvalidState { .. })));
    node.domain_destroy("life-1").unwrap();
    node.domain_destroy("life-1").unwrap(); // stopping a stopped domain succeeds
    node.domain_undefine("life-1").unwrap();
    assert!(node.domain_state("life-1").unwrap_err().is_not_found());
    assert!(!node.domain_list().unwrap().iter().any(|d| d.name == "life-1"));
}

#[test]
fn unknown_domain_is_not_found() {
    let node = LibvirtNode::new("test:///default");
    let e = node.domain_start("nope").unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    let core: kvmctl_core::Error = e.into();
    assert_eq!(core.kind(), "not_found");
}

#[test]
fn volumes_create_upload_list_delete() {
    let node = LibvirtNode::new("test:///default");
    let dir = tempfile::tempdir().unwrap();
    node.pool_ensure_dir("kt", dir.path()).unwrap();
    node.pool_ensure_dir("kt", dir.path()).unwrap(); // idempotent
    let base = VolumeSpec { name: "base.qcow2".into(), capacity_bytes: 1 << 30, format: DiskFormat::Qcow2, backing: None, private: false };
    let b = node.volume_create("kt", &base).unwrap();
    assert_eq!(b.capacity_bytes, 1 << 30);
    // The test driver cannot upload (the real libvirtd test covers it); the failed upload
    // must not leave its half-made volume behind.
    let up = node.volume_upload("kt", "seed.iso", DiskFormat::Raw, &[7u8; 4096]).unwrap_err();
    assert!(up.to_string().contains("upload"), "{up}");
    let names: Vec<_> = node.volume_list("kt").unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["base.qcow2"]);
    node.volume_create(
        "kt",
        &VolumeSpec { name: "seed.iso".into(), capacity_bytes: 4096, format: DiskFormat::Raw, backing: None, private: true },
    )
    .unwrap();
    assert!(matches!(node.volume_create("kt", &base), Err(NodeError::AlreadyExists { .. })), "same name twice is a conflict");
    node.volume_delete("kt", "seed.iso").unwrap();
    node.volume_delete("kt", "base.qcow2").unwrap();
    assert!(node.volume_list("kt").unwrap().is_empty());
    assert!(node.volume_delete("kt", "base.qcow2").unwrap_err().is_not_found());
    node.pool_delete("kt").unwrap();
}

#[test]
fn unreachable_libvirt_says_how_to_start_it() {
    let err = LibvirtNode::connect("qemu+unix:///system?socket=/nonexistent/libvirt-sock").err().expect("must fail");
    let msg = err.to_string();
    assert!(msg.contains("libvirtd -d") && msg.contains("kvmctl host setup"), "{msg}");
    let core: kvmctl_core::Error = err.into();
    assert_eq!(core.kind(), "unavailable");
}

#[test]
fn networks_ensure_state_delete() {
    let node = LibvirtNode::new("test:///default");
    assert_eq!(node.network_state("kt-net").unwrap(), None);
    let spec = NatNetworkSpec {
        name: "kt-net".into(),
        bridge: "ktbr0".into(),
        address: "10.99.0.1".parse().unwrap(),
        prefix: 24,
        dhcp_start: "10.99.0.10".parse().unwrap(),
        dhcp_end: "10.99.0.200".parse().unwrap(),
    };
    let xml = nat_network_xml(&spec).unwrap();
    node.network_ensure("kt-net", &xml).unwrap();
    node.network_ensure("kt-net", &xml).unwrap(); // idempotent
    let st = node.network_state("kt-net").unwrap().unwrap();
    assert!(st.active && st.autostart && st.persistent, "{st:?}");
    node.network_set("kt-net", Some(false), Some(false)).unwrap();
    let st = node.network_state("kt-net").unwrap().unwrap();
    assert!(!st.active && !st.autostart, "{st:?}");
    node.network_delete("kt-net").unwrap();
    assert_eq!(node.network_state("kt-net").unwrap(), None);
    assert!(node.pool_state("nope").unwrap().is_none());
}
