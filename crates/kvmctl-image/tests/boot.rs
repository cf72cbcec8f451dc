//! The Debian image built by `kvmctl image build` (scripts/test.sh builds it, cached by
//! recipe hash, and exports its path) boots under the test libvirtd from a qcow2 overlay
//! with a kvmctl seed; cloud-init creates the seed's user with its key; SSH as that user
//! works, the root filesystem grew to the overlay's size, and cloud-init finished without
//! errors. Once through BIOS (GRUB in the MBR) and once through UEFI (OVMF, GRUB on the
//! ESP): two full guests, about a minute together under TCG.

use kvmctl_libvirt::xml::*;
use kvmctl_libvirt::{LibvirtNode, Node};
use kvmctl_testkit::{env, keypair, ssh, Debris};
use kvmctl_types::{Name, VmId};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The guest's address from the test network's DHCP leases, by MAC.
fn lease(network: &str, mac: &str) -> Option<String> {
    let out = Command::new("virsh").args(["net-dhcp-leases", network, "--mac", mac]).output().ok()?;
    // Rows: date, time, MAC, protocol, address/prefix, ...; the header row has no MAC.
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.get(2) == Some(&mac)).then(|| cols.get(4).and_then(|a| a.split('/').next()).map(str::to_owned)).flatten()
    })
}

#[test]
fn debian_image_boots_with_bios() {
    boots_with_a_kvmctl_seed_and_serves_ssh(Firmware::Bios);
}

#[test]
fn debian_image_boots_with_uefi() {
    boots_with_a_kvmctl_seed_and_serves_ssh(Firmware::Uefi);
}

fn boots_with_a_kvmctl_seed_and_serves_ssh(firmware: Firmware) {
    let image = PathBuf::from(env("KVMCTL_TEST_DEBIAN_IMAGE"));
    let pool = env("KVMCTL_TEST_POOL");
    let network = env("KVMCTL_TEST_NETWORK");
    let domain_type = if env("KVMCTL_TEST_DOMAIN_TYPE") == "kvm" { DomainType::Kvm } else { DomainType::Qemu };
    let node = LibvirtNode::connect(env("KVMCTL_TEST_URI")).unwrap();
    let fw = if firmware == Firmware::Uefi { "uefi" } else { "bios" };
    let name = format!("kt-debian-{fw}-{}", std::process::id());
    let serial_log = kvmctl_testkit::serial_log(&name);
    let tmp = tempfile::tempdir().unwrap();
    let mut debris = Debris::new(&node, &pool, &name);

    // The image as a base volume (uploaded by stream, as to a remote node), a 4 GiB overlay.
    let base_name = format!("{name}-base.qcow2");
    let base = node.volume_upload(&pool, &base_name, DiskFormat::Qcow2, &std::fs::read(&image).unwrap()).unwrap();
    debris.volumes.push(base_name);
    let overlay_name = format!("{name}.qcow2");
    let overlay = node
        .volume_create(
            &pool,
            &VolumeSpec {
                name: overlay_name.clone(),
                capacity_bytes: 4 << 30,
                format: DiskFormat::Qcow2,
                backing: Some((base.path.clone(), DiskFormat::Qcow2)),
            },
        )
        .unwrap();
    debris.volumes.push(overlay_name);

    let (key, public) = keypair(tmp.path());
    let spec = kvmctl_cloudinit::seed::SeedSpec {
        write_files: vec![kvmctl_cloudinit::seed::WriteFile {
            path: "/etc/kvmctl-seeded".into(),
            content: "yes
"
            .into(),
            permissions: "0644".into(),
        }],
        ..kvmctl_cloudinit::seed::SeedSpec::new(&VmId::new().to_string(), "deb-test", "alice", vec![public])
    };
    let seed_name = format!("{name}-seed.iso");
    let seed = node
        .volume_upload(
            &pool,
            &seed_name,
            DiskFormat::Raw,
            &kvmctl_cloudinit::seed::nocloud_iso(&kvmctl_cloudinit::seed::render(&spec).unwrap()),
        )
        .unwrap();
    debris.volumes.push(seed_name);

    let mac = format!(
        "52:54:00:{}:{:02x}:{:02x}",
        if firmware == Firmware::Uefi { "7f" } else { "7e" },
        (std::process::id() >> 8) & 0xff,
        std::process::id() & 0xff
    );
    let dom = DomainSpec {
        name: Name::parse(&name).unwrap(),
        domain_type,
        firmware,
        vcpus: 2,
        memory_mib: 1024,
        boot: Boot::Disk,
        disks: vec![
            Disk { source: overlay.path.clone(), format: DiskFormat::Qcow2, target: "vda".into(), readonly: false },
            Disk { source: seed.path.clone(), format: DiskFormat::Raw, target: "vdb".into(), readonly: true },
        ],
        nics: vec![Nic { source: NicSource::Network(network.clone()), mac: Some(mac.clone()) }],
        serial_log: Some(serial_log.clone()),
        vnc_password: None,
        guest_agent: true,
        metadata: Metadata { vm_id: VmId::new(), owner: "test".into(), plan: None },
    };
    node.domain_define(&domain_xml(&dom).unwrap()).unwrap();
    debris.domain = Some(name.clone());
    node.domain_start(&name).unwrap();

    // Bounded only so that a broken image fails instead of hanging the suite.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut answer = None;
    while Instant::now() < deadline && answer.is_none() {
        if let Some(ip) = lease(&network, &mac) {
            answer = ssh(&key, "alice", &ip, "cloud-init status --wait >/dev/null; hostname; id -un; cat /etc/kvmctl-seeded; sudo -n true && echo sudo; df --output=size -B1G / | tail -1; cloud-init status; test -d /sys/firmware/efi && echo uefi || echo bios").ok();
        }
        if answer.is_none() {
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    let serial = std::fs::read_to_string(&serial_log).unwrap_or_default();
    let answer = answer.unwrap_or_else(|| {
        panic!(
            "no SSH login within 10 minutes; serial log tail:\n{}",
            serial.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    });
    let lines: Vec<&str> = answer.lines().map(str::trim).collect();
    assert_eq!(&lines[..4], ["deb-test", "alice", "yes", "sudo"], "{answer}");
    let size_gib: u64 = lines[4].parse().unwrap();
    assert!(size_gib >= 3, "cloud-init grew the root to the 4 GiB overlay: {answer}");
    assert_eq!(lines[5], "status: done", "cloud-init finished without errors: {answer}");
    assert_eq!(lines[6], fw, "the guest booted through {fw} firmware: {answer}");
    assert!(serial.contains("Cloud-init v.") && serial.contains("finished at"), "cloud-init reported on the serial console");
    drop(debris);
    assert!(!node.domain_list().unwrap().iter().any(|d| d.name == name));
}
