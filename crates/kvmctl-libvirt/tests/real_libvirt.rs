//! Smoke test against the real libvirtd of the test environment (`scripts/test.sh` sets it
//! up and exports the `KVMCTL_TEST_*` variables): defines and starts the tiny guest through
//! `kvmctl-libvirt` with a seed from `kvmctl-cloudinit` (uploaded by stream), reads its ready
//! marker from the serial log, reaches its SSH port and logs in with the seeded key from
//! inside the test network namespace, then tears everything down and checks that no domain,
//! volume or file is left, also when the test fails midway (the cleanup runs on drop).

use kvmctl_libvirt::xml::*;
use kvmctl_libvirt::{DomainState, LibvirtNode, Node};
use kvmctl_testkit::{env, keypair, ssh, Debris};
use kvmctl_types::{Name, VmId};
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// kvmctl's own NoCloud seed (in-process ISO writer).
fn seed_iso(hostname: &str, user: &str, key: &str) -> Vec<u8> {
    let spec = kvmctl_cloudinit::seed::SeedSpec::new(&format!("{hostname}-instance"), hostname, user, vec![key.into()]);
    kvmctl_cloudinit::seed::nocloud_iso(&kvmctl_cloudinit::seed::render(&spec).unwrap())
}

fn wait_for_marker(log: &Path, marker: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(log) {
            if let Some(line) = text.lines().find(|l| l.contains(marker)) {
                return line.to_owned();
            }
        }
        if start.elapsed() > limit {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            panic!("no {marker:?} in {} after {limit:?}; serial log:\n{tail}", log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ssh_banner(addr: SocketAddr) -> String {
    let mut last = None;
    for _ in 0..50 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut line = String::new();
                BufReader::new(s.take(256)).read_line(&mut line).unwrap();
                return line;
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("cannot reach {addr}: {last:?}");
}

#[test]
fn tiny_guest_boots_and_serves_ssh_and_leaves_nothing_behind() {
    let uri = env("KVMCTL_TEST_URI");
    let tiny = PathBuf::from(env("KVMCTL_TEST_TINY"));
    let network = env("KVMCTL_TEST_NETWORK");
    let pool = env("KVMCTL_TEST_POOL");
    let pool_dir = PathBuf::from(env("KVMCTL_TEST_POOL_DIR"));
    let domain_type = if env("KVMCTL_TEST_DOMAIN_TYPE") == "kvm" { DomainType::Kvm } else { DomainType::Qemu };

    let node = LibvirtNode::connect(&uri).unwrap();
    node.pool_ensure_dir(&pool, &pool_dir).unwrap();
    let name = format!("kt-smoke-{}", std::process::id());
    let serial_log = kvmctl_testkit::serial_log(&name);
    let qemu_log = PathBuf::from(format!("/var/log/libvirt/qemu/{name}.log"));
    let tmp = tempfile::tempdir().unwrap();

    {
        let mut debris = Debris::new(&node, &pool, &name);

        // A base volume and a copy-on-write overlay on it, as every VM disk will be.
        let base = format!("{name}-base.qcow2");
        let b = node
            .volume_create(
                &pool,
                &VolumeSpec { name: base.clone(), capacity_bytes: 64 << 20, format: DiskFormat::Qcow2, backing: None, private: false },
            )
            .unwrap();
        debris.volumes.push(base);
        let overlay = format!("{name}.qcow2");
        let o = node
            .volume_create(
                &pool,
                &VolumeSpec {
                    name: overlay.clone(),
                    capacity_bytes: 128 << 20,
                    format: DiskFormat::Qcow2,
                    backing: Some((b.path.clone(), DiskFormat::Qcow2)),
                    private: true,
                },
            )
            .unwrap();
        debris.volumes.push(overlay);
        let info = Command::new("qemu-img").args(["info", "-U", "--output=json"]).arg(&o.path).output().unwrap();
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains(&b.path.display().to_string()), "overlay must have the base as backing file: {info}");

        // The seed, uploaded through a libvirt stream.
        let (key, public) = keypair(tmp.path());
        let seed_bytes = seed_iso("smoke", "tester", &public);
        let seed_name = format!("{name}-seed.iso");
        let seed = node.volume_upload(&pool, &seed_name, DiskFormat::Raw, &seed_bytes).unwrap();
        debris.volumes.push(seed_name);
        assert_eq!(std::fs::read(&seed.path).unwrap(), seed_bytes, "uploaded bytes arrive intact");

        let spec = DomainSpec {
            name: Name::parse(&name).unwrap(),
            domain_type,
            firmware: Firmware::Bios,
            vcpus: 1,
            memory_mib: 256,
            boot: Boot::Kernel {
                kernel: tiny.join("vmlinuz"),
                initrd: Some(tiny.join("initrd.gz")),
                cmdline: "console=ttyS0 quiet panic=-1".into(),
            },
            disks: vec![
                Disk::virtio(o.path.clone(), DiskFormat::Qcow2, "vda", false),
                Disk::virtio(seed.path.clone(), DiskFormat::Raw, "vdb", true),
            ],
            nics: vec![Nic { source: NicSource::Network(network), mac: None, filter: None, link_down: false }],
            serial_log: Some(serial_log.clone()),
            vnc_password: None,
            vnc_port: None,
            guest_agent: false,
            tpm: false,
            shares: vec![],
            windows: false,
            metadata: Metadata { vm_id: VmId::new(), owner: "test".into(), plan: None, installation: None, net: None },
        };
        node.domain_define(&domain_xml(&spec).unwrap()).unwrap();
        debris.domain = Some(name.clone());
        node.domain_start(&name).unwrap();
        assert_eq!(node.domain_state(&name).unwrap(), DomainState::Running);

        // Bounded only so that a broken guest fails the test instead of hanging it.
        let ready = wait_for_marker(&serial_log, "KVMCTL_TINY_READY", Duration::from_secs(300));
        assert!(ready.contains("hostname=smoke") && ready.contains("user=tester"), "the guest applied the seed: {ready}");
        let ip = ready.split_whitespace().find_map(|w| w.strip_prefix("ip=")).unwrap();
        let banner = ssh_banner(format!("{ip}:22").parse().unwrap());
        assert!(banner.starts_with("SSH-2.0-"), "SSH banner: {banner:?}");
        // The key from kvmctl's seed logs in as the seed's user.
        assert_eq!(ssh(&key, "tester", ip, "id -un; hostname").unwrap(), "tester\nsmoke\n");
    }

    // Nothing survives: no domain, no volume, no serial log.
    assert!(!node.domain_list().unwrap().iter().any(|d| d.name == name));
    let left: Vec<_> = node.volume_list(&pool).unwrap().into_iter().filter(|v| v.name.starts_with(&name)).collect();
    assert!(left.is_empty(), "volumes left behind: {left:?}");
    assert!(!serial_log.exists() && !qemu_log.exists(), "log files left behind");
}

/// A transient network of the name asked for (left active in /run by a libvirtd that lost
/// its configuration: a bare-machine run of the quick start met exactly this) is made
/// persistent and autostarted, instead of failing "cannot set autostart for transient network".
#[test]
fn a_transient_network_is_made_persistent() {
    let name = format!("kt-tr{}", std::process::id() % 100_000);
    let xml = format!(
        "<network><name>{name}</name><bridge name='kttr{}' stp='off'/><ip address='10.254.{}.1' netmask='255.255.255.0'/></network>",
        std::process::id() % 10_000,
        std::process::id() % 200
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &xml).unwrap();
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("virsh").args(["-q", "net-destroy", &self.0]).output();
            let _ = Command::new("virsh").args(["-q", "net-undefine", &self.0]).output();
        }
    }
    let _gone = Gone(name.clone());
    let made = Command::new("virsh").args(["-q", "-c", &env("KVMCTL_TEST_URI"), "net-create"]).arg(file.path()).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let node = LibvirtNode::new(env("KVMCTL_TEST_URI"));
    node.network_ensure(&name, &xml).unwrap();
    let info = Command::new("virsh").args(["-c", &env("KVMCTL_TEST_URI"), "net-info", &name]).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Persistent:     yes") && info.contains("Autostart:      yes"), "{info}");
}

/// Addresses reserved ahead (ADR 0015) are added to and taken out of a running network
/// with no guest connected: its definition changes, and it is restarted so that dnsmasq has
/// them at once; asking again changes nothing.
#[test]
fn addresses_are_reserved_ahead_and_taken_out_of_a_running_network() {
    use kvmctl_libvirt::{xml, ReserveAhead};
    let id = std::process::id();
    let name = format!("kt-ra{}", id % 100_000);
    let def = format!(
        "<network><name>{name}</name><bridge name='ktra{}' stp='off'/><ip address='10.253.{net}.1' netmask='255.255.255.0'>\
         <dhcp><range start='10.253.{net}.10' end='10.253.{net}.19'/><host mac='52:54:00:00:00:01' name='mine' ip='10.253.{net}.10'/></dhcp></ip></network>",
        id % 10_000,
        net = id % 200
    );
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let uri = env("KVMCTL_TEST_URI");
            let _ = Command::new("virsh").args(["-q", "-c", &uri, "net-destroy", &self.0]).output();
            let _ = Command::new("virsh").args(["-q", "-c", &uri, "net-undefine", &self.0]).output();
        }
    }
    let _gone = Gone(name.clone());
    let node = LibvirtNode::new(env("KVMCTL_TEST_URI"));
    node.network_ensure(&name, &def).unwrap();
    assert_eq!(xml::network_reserved_ahead(&node.network_xml(&name).unwrap()), Some(false));

    assert_eq!(node.network_reserve_ahead(&name, true).unwrap(), ReserveAhead::Live);
    let live = node.network_xml(&name).unwrap();
    assert_eq!(xml::network_reserved_ahead(&live), Some(true), "{live}");
    let hosts = xml::network_dhcp_hosts(&live);
    assert_eq!(hosts.iter().filter(|h| xml::is_premade(h)).count(), 5, "the upper half: {live}");
    assert!(hosts.iter().any(|h| h.name == "mine"), "an entry of its own stays: {live}");
    // dnsmasq runs with them: its hosts file, written by libvirt at the start, lists them.
    let hostsfile = std::fs::read_to_string(format!("/var/lib/libvirt/dnsmasq/{name}.hostsfile")).unwrap();
    assert!(hostsfile.contains(&xml::premade_mac(format!("10.253.{}.19", id % 200).parse().unwrap())), "{hostsfile}");
    assert_eq!(node.network_reserve_ahead(&name, true).unwrap(), ReserveAhead::Unchanged);

    assert_eq!(node.network_reserve_ahead(&name, false).unwrap(), ReserveAhead::Live);
    let live = node.network_xml(&name).unwrap();
    let hosts = xml::network_dhcp_hosts(&live);
    assert_eq!(hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["mine"], "{live}");
    assert_eq!(node.network_reserve_ahead(&name, false).unwrap(), ReserveAhead::Unchanged);
}
