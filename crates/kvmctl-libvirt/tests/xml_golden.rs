//! Golden files for the XML documents. `UPDATE_GOLDEN=1 cargo test -p kvmctl-libvirt` rewrites
//! them; review the diff before committing.

use kvmctl_libvirt::xml::*;
use kvmctl_types::{Name, VmId};
use std::path::{Path, PathBuf};

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(actual, expected, "{} differs; run with UPDATE_GOLDEN=1 and review the diff", path.display());
}

fn vm_id() -> VmId {
    VmId(uuid::Uuid::parse_str("6f1c2a1e-8d4b-4c1e-9a57-0c1d2e3f4a5b").unwrap())
}

fn tiny() -> DomainSpec {
    DomainSpec {
        name: Name::parse("tiny-1").unwrap(),
        domain_type: DomainType::Qemu,
        firmware: Firmware::Bios,
        vcpus: 1,
        memory_mib: 256,
        boot: Boot::Kernel {
            kernel: PathBuf::from("/var/cache/kvmctl/tiny/vmlinuz"),
            initrd: Some(PathBuf::from("/var/cache/kvmctl/tiny/initrd.gz")),
            cmdline: "console=ttyS0 quiet".into(),
        },
        disks: vec![Disk::virtio("/var/lib/kvmctl/pool/tiny-1-seed.iso".into(), DiskFormat::Raw, "vdb", true)],
        nics: vec![Nic {
            source: NicSource::Network("kvmctl-test".into()),
            mac: Some("52:54:00:aa:bb:cc".into()),
            filter: Some(NicFilter { name: "clean-traffic".into(), ip: Some("10.77.0.50".parse().unwrap()), also: None }),
            link_down: false,
        }],
        serial_log: Some("/var/log/libvirt/qemu/tiny-1-serial.log".into()),
        vnc_password: None,
        vnc_port: None,
        guest_agent: false,
        tpm: false,
        shares: vec![],
        windows: false,
        metadata: Metadata { vm_id: vm_id(), owner: "root".into(), plan: None, installation: None, net: None },
    }
}

#[test]
fn tiny_guest_domain() {
    golden("domain-tiny.xml", &domain_xml(&tiny()).unwrap());
}

#[test]
fn disk_boot_kvm_domain_with_vnc_and_agent() {
    let spec = DomainSpec {
        name: Name::parse("web-1").unwrap(),
        domain_type: DomainType::Kvm,
        firmware: Firmware::Bios,
        vcpus: 2,
        memory_mib: 2048,
        boot: Boot::Disk,
        disks: vec![
            Disk::virtio("/var/lib/kvmctl/pool/web-1.qcow2".into(), DiskFormat::Qcow2, "vda", false),
            Disk::virtio("/var/lib/kvmctl/pool/web-1-seed.iso".into(), DiskFormat::Raw, "vdb", true),
        ],
        nics: vec![Nic {
            source: NicSource::Bridge("br0".into()),
            mac: None,
            filter: Some(NicFilter { name: "clean-traffic".into(), ip: None, also: None }),
            link_down: false,
        }],
        serial_log: Some("/var/log/libvirt/qemu/web-1-serial.log".into()),
        vnc_password: Some("s3cret".into()),
        vnc_port: None,
        guest_agent: true,
        tpm: false,
        shares: vec![],
        windows: false,
        metadata: Metadata {
            vm_id: vm_id(),
            owner: "alice".into(),
            plan: Some("small".into()),
            installation: Some("5d1e9c0b".into()),
            net: None,
        },
    };
    golden("domain-disk-kvm.xml", &domain_xml(&spec).unwrap());
}

#[test]
fn volumes_and_pools() {
    let overlay = VolumeSpec {
        name: "web-1.qcow2".into(),
        capacity_bytes: 20 << 30,
        format: DiskFormat::Qcow2,
        backing: Some(("/var/lib/kvmctl/pool/debian-12.qcow2".into(), DiskFormat::Qcow2)),
        private: true,
    };
    golden("volume-overlay.xml", &volume_xml(&overlay).unwrap());
    golden("pool-dir.xml", &dir_pool_xml("kvmctl", Path::new("/var/lib/kvmctl/pool")).unwrap());
}

/// User strings come back out of the XML exactly as they went in: the writer escapes them.
#[test]
fn user_strings_are_escaped_not_pasted() {
    let mut spec = tiny();
    let nasty = r#"a<b>&"c'</kvmctl:owner><x/>"#;
    spec.metadata.owner = nasty.into();
    spec.boot = Boot::Kernel { kernel: "/k".into(), initrd: None, cmdline: "console=ttyS0 x=\"<&>\"".into() };
    let xml = domain_xml(&spec).unwrap();
    assert!(!xml.contains("<x/>"));
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut in_owner = false;
    let mut owner = None;
    loop {
        match reader.read_event().unwrap() {
            quick_xml::events::Event::Start(e) if e.name().as_ref() == b"kvmctl:owner" => in_owner = true,
            quick_xml::events::Event::Text(t) if in_owner => {
                owner = Some(t.unescape().unwrap().into_owned());
                in_owner = false;
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(owner.as_deref(), Some(nasty));
}

#[test]
fn control_characters_are_refused() {
    let mut spec = tiny();
    spec.metadata.owner = "a\u{1}b".into();
    let err = domain_xml(&spec).unwrap_err().to_string();
    assert!(err.contains("owner"), "{err}");
}

#[test]
fn nat_network() {
    golden("network-nat.xml", &nat_network_xml(&NatNetworkSpec::libvirt_default()).unwrap());
}

#[test]
fn uefi_domain() {
    let mut spec = tiny();
    spec.firmware = Firmware::Uefi;
    spec.boot = Boot::Disk;
    golden("domain-uefi.xml", &domain_xml(&spec).unwrap());
}

#[test]
fn secure_boot_domain() {
    let mut spec = tiny();
    spec.firmware = Firmware::UefiSecure;
    spec.boot = Boot::Disk;
    golden("domain-uefi-secure.xml", &domain_xml(&spec).unwrap());
}

#[test]
fn tpm_domain() {
    let mut spec = tiny();
    spec.firmware = Firmware::UefiSecure;
    spec.boot = Boot::Disk;
    spec.tpm = true;
    let xml = domain_xml(&spec).unwrap();
    assert!(xml.contains("<tpm model=\"tpm-crb\">") && xml.contains("<backend type=\"emulator\" version=\"2.0\"/>"), "{xml}");
    golden("domain-uefi-secure-tpm.xml", &xml);
}

/// Data disks on virtio and SCSI (the controller comes with the first SCSI disk), and shared
/// folders (shared memory; a read-only one through the wrapper).
#[test]
fn data_disks_and_shares_domain() {
    let mut spec = tiny();
    spec.boot = Boot::Disk;
    spec.disks.push(Disk {
        serial: Some("data1".into()),
        ..Disk::virtio("/var/lib/kvmctl/pool/tiny-1-data-data1.qcow2".into(), DiskFormat::Qcow2, "vdc", false)
    });
    spec.disks.push(Disk {
        bus: DiskBus::Scsi,
        serial: Some("logs".into()),
        ..Disk::virtio("/var/lib/kvmctl/pool/tiny-1-data-logs.qcow2".into(), DiskFormat::Qcow2, "sdd", false)
    });
    spec.shares = vec![
        Share { source: "/srv/shares/src".into(), tag: "src".into(), binary: None },
        Share { source: "/srv/shares/ref".into(), tag: "ref".into(), binary: Some("/var/lib/kvmctl/virtiofsd-ro".into()) },
    ];
    let xml = domain_xml(&spec).unwrap();
    assert!(xml.contains("<access mode=\"shared\"/>") && xml.contains("model=\"virtio-scsi\""), "{xml}");
    golden("domain-disks-shares.xml", &xml);
}

/// The `windows-11` profile's install under KVM: Secure Boot, SMM, TPM 2.0, Hyper-V
/// enlightenments, the Windows clock, a USB tablet; the installer booted first from SATA,
/// virtio-win and the answer file beside it, the virtio root disk second.
fn windows_11_install(domain_type: DomainType) -> DomainSpec {
    let mut spec = tiny();
    spec.domain_type = domain_type;
    spec.firmware = Firmware::UefiSecure;
    spec.boot = Boot::Disk;
    spec.tpm = true;
    spec.windows = true;
    spec.vcpus = 2;
    spec.memory_mib = 4096;
    let cdrom = |path: &str, target: &str, boot_order: Option<u8>| Disk {
        bus: DiskBus::Sata,
        cdrom: true,
        boot_order,
        ..Disk::virtio(path.into(), DiskFormat::Raw, target, true)
    };
    spec.disks = vec![
        Disk { boot_order: Some(2), ..Disk::virtio("/var/lib/kvmctl/pool/win-1-root.qcow2".into(), DiskFormat::Qcow2, "vda", false) },
        cdrom("/var/lib/kvmctl/pool/image-win11.iso", "sda", Some(1)),
        cdrom("/var/lib/kvmctl/pool/image-virtio-win.iso", "sdb", None),
        cdrom("/var/lib/kvmctl/pool/win-1-seed.iso", "sdc", None),
    ];
    spec.vnc_password = Some("s3cret".into());
    spec
}

#[test]
fn windows_11_domain() {
    let xml = domain_xml(&windows_11_install(DomainType::Kvm)).unwrap();
    assert!(xml.contains("<hyperv mode=\"custom\">") && xml.contains("<timer name=\"hypervclock\" present=\"yes\"/>"), "{xml}");
    assert!(!xml.contains("<boot dev="), "per-device boot order only: {xml}");
    golden("domain-windows-11-kvm.xml", &xml);
    // Under TCG QEMU emulates no Hyper-V enlightenment: the rest stays.
    let tcg = domain_xml(&windows_11_install(DomainType::Qemu)).unwrap();
    assert!(!tcg.contains("hyperv") && tcg.contains("<clock offset=\"localtime\">") && tcg.contains("<input type=\"tablet\""), "{tcg}");
    golden("domain-windows-11-tcg.xml", &tcg);
}

#[test]
fn firmware_names_round_trip() {
    for f in [Firmware::Bios, Firmware::Uefi, Firmware::UefiSecure] {
        assert_eq!(Firmware::parse(f.as_str()), Some(f));
    }
    assert_eq!(Firmware::parse("coreboot"), None);
}
