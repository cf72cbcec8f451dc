//! The VM lifecycle through the API against the real libvirtd, with the tiny guest: a real
//! QEMU boots it, and SSH with the seeded key proves the seed and the network.

use kvmctl_client::ClientError;
use kvmctl_libvirt::Node;
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{VmCreateRequest, VmExecRequest, VmResizeRequest, VmStopRequest};
use std::time::Duration;

fn api_err(e: ClientError) -> (u16, kvmctl_types::api::ErrorBody) {
    match e {
        ClientError::Api { status, body } => (status, body),
        other => panic!("expected an API error, got {other}"),
    }
}

/// Polls the VM until `pred` holds; fails with the last state seen.
use daemon::until;

#[tokio::test]
async fn lifecycle_on_a_real_guest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-life"], &["kt-life-img"]);
    let cfg = daemon::config(d);
    let (server, client) = daemon::start(&cfg).await;
    daemon::tiny_image(&client, d, "kt-life-img").await;
    let (key, public) = kvmctl_testkit::keypair(d);

    let vm = client.vm_create(&daemon::tiny_vm("kt-life", "kt-life-img", vec![public])).await.unwrap();
    assert_eq!((vm.state.as_str(), vm.vcpus, vm.memory_mib, vm.disk_gib), ("running", 1, 256, 1));
    // The address is reserved in the network's DHCP before the guest boots.
    let reserved = vm.ip.clone().expect("an address before boot");
    let net_xml = sweep.node.network_xml(&kvmctl_testkit::env("KVMCTL_TEST_NETWORK")).unwrap();
    assert!(net_xml.contains(&reserved) && net_xml.contains(&vm.mac), "a DHCP host entry: {net_xml}");

    // Readiness: every stage in order, each no earlier than the one before.
    let ready = client.vm_wait("kt-life", "ssh", 120).await.unwrap();
    let stages: Vec<&str> = ready.readiness.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(stages, ["defined", "started", "booting", "address", "ssh_port", "ssh_banner", "ssh_login"], "{ready:?}");
    assert!(ready.readiness.windows(2).all(|w| w[0].at_ms <= w[1].at_ms || w[1].stage == "address"), "{ready:?}");
    assert!(ready.readiness.iter().any(|s| s.stage == "ssh_banner" && s.detail.as_deref().unwrap_or("").starts_with("SSH-2.0-")));
    let pin = ready.host_key.clone().unwrap_or_default();
    assert!(pin.starts_with("SHA256:") && pin.ends_with("(first use)"), "dropbear prints no fingerprints, so trusted on first use: {pin}");
    let (s, body) = api_err(client.vm_wait("kt-life", "cloud-init", 5).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("for"), "the tiny image has no cloud-init: {body:?}");

    // The guest announces the same address, and answers SSH with the user's key and through exec.
    let console = cfg.console_log_dir.join("kt-life.log");
    let ip = daemon::tiny_guest_ip(&console, 60).await.expect("the guest boots and announces its address");
    assert_eq!(ip, reserved);
    let hostname = kvmctl_testkit::ssh(&key, "kvmctl", &ip, "hostname").expect("SSH with the seeded key");
    assert_eq!(hostname.trim(), "kt-life");
    let out = client
        .vm_exec("kt-life", &VmExecRequest { command: "hostname; echo oops >&2; exit 3".into(), timeout_seconds: None })
        .await
        .unwrap();
    assert_eq!((out.exit_status, out.stdout.trim(), out.stderr.trim()), (3, "kt-life", "oops"));
    let (s, body) = api_err(client.vm_exec("kt-life", &VmExecRequest { command: " ".into(), timeout_seconds: None }).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("command"), "{body:?}");

    // An SSH session with a terminal through the daemon's WebSocket; the exit status comes back.
    let mut ws = client.terminal("/v1/vms/kt-life/ssh?command=tty%3B%20echo%20from-the-guest%3B%20exit%205").await.unwrap();
    let (seen, close) = daemon::terminal_talk(&mut ws, b"", "\u{0}never", 20).await;
    assert!(seen.contains("from-the-guest") && seen.contains("/dev/pts/"), "a PTY session: {seen:?}");
    assert_eq!(close.as_deref(), Some("exit 5"), "{seen:?}");
    // Files over SFTP: 10 MiB there and back, byte for byte, and a directory.
    let home = client.vm_exec("kt-life", &VmExecRequest { command: "echo $HOME".into(), timeout_seconds: None }).await.unwrap().stdout;
    let home = home.trim();
    let big: Vec<u8> = (0..10u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    client.vm_file_put("kt-life", &format!("{home}/big"), false, big.clone()).await.unwrap();
    match client.vm_file_get("kt-life", &format!("{home}/big")).await.unwrap() {
        kvmctl_client::GuestFile::File(back) => assert!(back == big, "10 MiB round trip differs ({} bytes back)", back.len()),
        other => panic!("a file, not {other:?}"),
    }
    let sum =
        client.vm_exec("kt-life", &VmExecRequest { command: format!("sha256sum {home}/big"), timeout_seconds: None }).await.unwrap().stdout;
    let local = {
        use sha2::Digest;
        sha2::Sha256::digest(&big).iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert!(sum.starts_with(&local), "the guest has the same bytes: {sum} vs {local}");
    client.vm_file_put("kt-life", &format!("{home}/d"), true, Vec::new()).await.unwrap();
    client.vm_file_put("kt-life", &format!("{home}/d/a.txt"), false, b"hello".to_vec()).await.unwrap();
    match client.vm_file_get("kt-life", &format!("{home}/d")).await.unwrap() {
        kvmctl_client::GuestFile::Dir(entries) => {
            assert_eq!(entries.iter().map(|e| (e.name.as_str(), e.dir, e.size)).collect::<Vec<_>>(), [("a.txt", false, 5)])
        }
        other => panic!("a directory, not {other:?}"),
    }
    let (s, body) = api_err(client.vm_file_put("kt-life", "relative/path", false, vec![]).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("path"), "{body:?}");
    let (s, _) = api_err(client.vm_file_get("kt-life", "/no/such/file").await.unwrap_err());
    assert_eq!(s, 404);

    // The console log, and the console itself (it takes one session at a time).
    let log = client.vm_console_log("kt-life", 50).await.unwrap();
    assert!(log.contains("KVMCTL_TINY_READY"), "{log}");
    let _console = client.terminal("/v1/vms/kt-life/console").await.unwrap();
    match client.terminal("/v1/vms/kt-life/console").await {
        Err(kvmctl_client::ClientError::Api { status: 409, .. }) => {}
        Err(e) => panic!("a second console session: {e}"),
        Ok(_) => panic!("a second console session was allowed"),
    }
    drop(_console);

    // The domain is what the record says.
    let xml = sweep.node_xml("kt-life");
    assert!(xml.contains("type='qemu'") || xml.contains("type=\"qemu\""), "TCG domain: {xml}");
    assert!(xml.contains(&vm.id.to_string()) && xml.contains(&vm.mac), "{xml}");
    assert!(xml.contains("kt-life-root.qcow2") && xml.contains("kt-life-seed.iso"));

    let listed = client.vm_list().await.unwrap();
    assert_eq!(listed.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), vec!["kt-life"]);
    assert_eq!(listed[0].ip.as_deref(), Some(ip.as_str()), "the address from the network's DHCP lease");

    // A running VM refuses start and CPU changes; its disk grows online.
    assert_eq!(api_err(client.vm_start("kt-life").await.unwrap_err()).0, 409);
    let (s, body) = api_err(client.vm_resize("kt-life", &VmResizeRequest { vcpus: Some(2), ..Default::default() }).await.unwrap_err());
    assert!(s == 409 && body.message.contains("stop it"), "{body:?}");
    let vm = client.vm_resize("kt-life", &VmResizeRequest { disk_gib: Some(2), ..Default::default() }).await.unwrap();
    assert_eq!(vm.disk_gib, 2);
    let size = kvmctl_testkit::ssh(&key, "kvmctl", &ip, "cat /sys/block/vda/size").unwrap();
    assert_eq!(size.trim().parse::<u64>().unwrap() * 512, 2 << 30, "the guest sees the grown disk");
    let (s, body) = api_err(client.vm_resize("kt-life", &VmResizeRequest { disk_gib: Some(1), ..Default::default() }).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("disk_gib"), "{body:?}");

    // ACPI stop: the tiny guest powers off on the button.
    let vm = client.vm_stop("kt-life", &VmStopRequest::default()).await.unwrap();
    assert_eq!(vm.state, "stopped");
    assert_eq!(api_err(client.vm_stop("kt-life", &VmStopRequest::default()).await.unwrap_err()).0, 409);
    let vm = client.vm_resize("kt-life", &VmResizeRequest { vcpus: Some(2), memory_mib: Some(384), ..Default::default() }).await.unwrap();
    assert_eq!((vm.vcpus, vm.memory_mib), (2, 384));
    let xml = sweep.node_xml("kt-life");
    assert!(xml.contains(">2</vcpu>") && xml.contains("393216"), "redefined with the new size: {xml}");

    // Start again (with the new size), reboot, force stop.
    std::fs::remove_file(&console).ok();
    let vm = client.vm_start("kt-life").await.unwrap();
    assert_eq!(vm.state, "running");
    let ip = daemon::tiny_guest_ip(&console, 60).await.expect("boots again");
    let cpus = kvmctl_testkit::ssh(&key, "kvmctl", &ip, "grep -c ^processor /proc/cpuinfo").unwrap();
    assert_eq!(cpus.trim(), "2");
    let vm = client.vm_reboot("kt-life").await.unwrap();
    assert_eq!(vm.state, "running");
    let vm = client.vm_stop("kt-life", &VmStopRequest { force: true, timeout_seconds: None }).await.unwrap();
    assert_eq!(vm.state, "stopped");

    let (s, body) = api_err(client.vm_exec("kt-life", &VmExecRequest { command: "true".into(), timeout_seconds: None }).await.unwrap_err());
    assert!(s == 409 && body.message.contains("stopped"), "{body:?}");
    client.vm_delete("kt-life", false).await.unwrap();
    assert_eq!(api_err(client.vm_get("kt-life").await.unwrap_err()).0, 404);
    let net_xml = sweep.node.network_xml(&kvmctl_testkit::env("KVMCTL_TEST_NETWORK")).unwrap();
    assert!(!net_xml.contains(&vm.mac), "the DHCP reservation goes with the VM: {net_xml}");
    assert!(std::fs::read_dir(&cfg.key_dir).map(|d| d.count()).unwrap_or(0) == 0, "so does the VM's key");
    assert!(!console.exists(), "the console log goes with the VM");
    assert!(!std::path::Path::new("/var/log/libvirt/qemu/kt-life.log").exists(), "so does libvirt's log");
    client.image_delete("kt-life-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-bad-vm"], &["kt-bad-vm-img"]);
    let (server, client) = daemon::start(&daemon::config(d)).await;
    daemon::tiny_image(&client, d, "kt-bad-vm-img").await;
    let ok = daemon::tiny_vm("kt-bad-vm", "kt-bad-vm-img", vec![]);
    let cases: Vec<(VmCreateRequest, &str, &str)> = vec![
        (VmCreateRequest { name: "Bad.Name".into(), ..ok.clone() }, "name", "lowercase"),
        (VmCreateRequest { name: "x".repeat(64), ..ok.clone() }, "name", "63"),
        (VmCreateRequest { image: "no-such-image".into(), ..ok.clone() }, "image", "kvmctl image list"),
        (VmCreateRequest { plan: Some("huge".into()), ..ok.clone() }, "plan", "kvmctl plan list"),
        (VmCreateRequest { vcpus: None, ..ok.clone() }, "vcpus", "required without a plan"),
        (VmCreateRequest { vcpus: Some(0), ..ok.clone() }, "vcpus", "out of range"),
        (VmCreateRequest { memory_mib: Some(16), ..ok.clone() }, "memory_mib", "out of range"),
        (VmCreateRequest { disk_gib: Some(0), ..ok.clone() }, "disk_gib", "out of range"),
        (VmCreateRequest { ssh_keys: vec!["ssh-ed25519 notakey".into()], ..ok.clone() }, "ssh_keys[0]", ""),
        (VmCreateRequest { user_data: Some("#cloud-config\n{ not yaml".into()), ..ok.clone() }, "user_data", ""),
        (VmCreateRequest { user_data: Some(format!("#!/bin/sh\n#{}", "x".repeat(70_000))), ..ok.clone() }, "user_data", "64 KiB"),
        (VmCreateRequest { network: Some("no-such-net".into()), ..ok.clone() }, "network", "kvmctl network list"),
        (VmCreateRequest { firmware: Some("coreboot".into()), ..ok.clone() }, "firmware", "bios, uefi or uefi-secure"),
        (VmCreateRequest { firmware: Some("uefi".into()), ..ok.clone() }, "firmware", "bios only"),
        (VmCreateRequest { user: Some("Root!".into()), ..ok.clone() }, "user", ""),
    ];
    for (req, field, says) in cases {
        let (status, body) = api_err(client.vm_create(&req).await.unwrap_err());
        assert_eq!(status, 400, "{req:?}: {body:?}");
        assert_eq!(body.field.as_deref(), Some(field), "{body:?}");
        assert!(body.message.contains(says), "{:?} should say {says:?}", body.message);
        assert!(client.vm_list().await.unwrap().is_empty(), "{req:?} left a row");
        assert!(sweep.leftovers().iter().all(|l| l.contains("image-")), "{req:?} left {:?}", sweep.leftovers());
    }
    client.image_delete("kt-bad-vm-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

/// A failure injected after each create step: the create fails, and nothing it made survives.
#[tokio::test]
async fn a_failure_at_any_create_step_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-fail"], &["kt-fail-img"]);
    {
        let (server, client) = daemon::start(&daemon::config(d)).await;
        daemon::tiny_image(&client, d, "kt-fail-img").await;
        server.stop().await;
    }
    for step in ["reserve", "root_volume", "seed_volume", "define", "start"] {
        let cfg = kvmctl_server::Config { failpoints: format!("create.{step}=error"), ..daemon::config(d) };
        let (server, client) = daemon::start(&cfg).await;
        let (status, body) = api_err(client.vm_create(&daemon::tiny_vm("kt-fail", "kt-fail-img", vec![])).await.unwrap_err());
        assert_eq!(status, 500, "{step}: {body:?}");
        // The failpoint's words are the private half: for the log, not the client.
        assert_eq!(body.error, "internal", "{body:?}");
        assert!(!body.message.contains("failpoint") && body.request_id.is_some(), "{body:?}");
        assert!(client.vm_list().await.unwrap().is_empty(), "{step}: row left");
        let left: Vec<_> = sweep.leftovers().into_iter().filter(|l| !l.contains("image-")).collect();
        assert!(left.is_empty(), "a failure after {step} left {left:?}");
        assert!(!cfg.console_log_dir.join("kt-fail.log").exists(), "{step}: console log left");
        server.stop().await;
    }
    let (server, client) = daemon::start(&daemon::config(d)).await;
    client.image_delete("kt-fail-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

/// Two creates of one name: one wins. A delete or start during an operation: a conflict.
#[tokio::test]
async fn racing_requests_get_conflicts_not_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-race"], &["kt-race-img"]);
    // Each create pauses after defining the domain, so the races below really overlap.
    let cfg = kvmctl_server::Config { failpoints: "create.define=pause,delete.destroy=pause".into(), ..daemon::config(d) };
    let (server, client) = daemon::start(&cfg).await;
    daemon::tiny_image(&client, d, "kt-race-img").await;
    let req = daemon::tiny_vm("kt-race", "kt-race-img", vec![]);

    let (a, b) = tokio::join!(client.vm_create(&req), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = client.vm_create(&req).await;
        let during = client.vm_delete("kt-race", false).await;
        (second, during)
    });
    let vm = a.expect("the first create wins");
    assert_eq!(vm.state, "running");
    let (second, during) = b;
    let (s, body) = api_err(second.unwrap_err());
    assert_eq!(s, 409, "{body:?}");
    let (s, body) = api_err(during.unwrap_err());
    assert!(s == 409 && body.message.contains("busy"), "delete during create: {body:?}");

    // A start while a delete is under way is refused; the delete completes.
    let (del, start) = tokio::join!(client.vm_delete("kt-race", false), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        client.vm_start("kt-race").await
    });
    del.expect("the delete completes");
    assert_eq!(api_err(start.unwrap_err()).0, 409);
    assert!(client.vm_list().await.unwrap().is_empty());
    client.image_delete("kt-race-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

/// Drift repaired from libvirt's lifecycle events (the timer is set to an hour, so only an
/// event can do it): a guest powered off behind kvmctl's back is `stopped`, started again it
/// is `running`; a domain undefined behind its back leaves the VM `failed`, and delete still
/// cleans up.
#[tokio::test]
async fn libvirt_events_repair_drift_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-drift"], &["kt-drift-img"]);
    let cfg = kvmctl_server::Config { reconcile_interval_seconds: 3600, ..daemon::config(d) };
    let (server, client) = daemon::start(&cfg).await;
    daemon::tiny_image(&client, d, "kt-drift-img").await;
    client.vm_create(&daemon::tiny_vm("kt-drift", "kt-drift-img", vec![])).await.unwrap();

    kvmctl_libvirt::Node::domain_destroy(&sweep.node, "kt-drift").unwrap();
    until(&client, "kt-drift", "stopped", |v| v.state == "stopped").await;
    kvmctl_libvirt::Node::domain_start(&sweep.node, "kt-drift").unwrap();
    until(&client, "kt-drift", "running", |v| v.state == "running").await;
    kvmctl_libvirt::Node::domain_destroy(&sweep.node, "kt-drift").unwrap();
    kvmctl_libvirt::Node::domain_undefine(&sweep.node, "kt-drift").unwrap();
    until(&client, "kt-drift", "failed", |v| v.state == "failed").await;
    let vm = client.vm_get("kt-drift").await.unwrap();
    assert!(vm.error.as_deref().unwrap_or_default().contains("kvmctl vm delete"), "{vm:?}");

    client.vm_delete("kt-drift", false).await.unwrap();
    client.image_delete("kt-drift-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

/// Drift that happened while the daemon was down (no event can tell it) is repaired by the
/// reconciler pass at start-up.
#[tokio::test]
async fn drift_while_the_daemon_was_down_is_repaired_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-drift2"], &["kt-drift2-img"]);
    let (server, client) = daemon::start(&daemon::config(d)).await;
    daemon::tiny_image(&client, d, "kt-drift2-img").await;
    client.vm_create(&daemon::tiny_vm("kt-drift2", "kt-drift2-img", vec![])).await.unwrap();
    server.stop().await;
    // Behind the daemon's back while it is down: no event reaches it.
    kvmctl_libvirt::Node::domain_destroy(&sweep.node, "kt-drift2").unwrap();
    let (server, client) = daemon::start(&daemon::config(d)).await;
    until(&client, "kt-drift2", "stopped", |v| v.state == "stopped").await;
    client.vm_delete("kt-drift2", false).await.unwrap();
    client.image_delete("kt-drift2-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

/// A domain or volume that kvmctl did not make but that has the name a VM would use is
/// refused with a conflict, and survives: the undo of a failed create never removes what is
/// not its own.
#[tokio::test]
async fn objects_kvmctl_does_not_own_are_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-foreign", "kt-foreign2"], &["kt-foreign-img"]);
    let (server, client) = daemon::start(&daemon::config(d)).await;
    daemon::tiny_image(&client, d, "kt-foreign-img").await;

    sweep
        .node
        .domain_define(
            "<domain type='qemu'><name>kt-foreign</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>",
        )
        .unwrap();
    let (s, body) = api_err(client.vm_create(&daemon::tiny_vm("kt-foreign", "kt-foreign-img", vec![])).await.unwrap_err());
    assert!(s == 409 && body.message.contains("virsh undefine"), "{body:?}");
    assert!(sweep.node.domain_state("kt-foreign").is_ok(), "the foreign domain survives");

    sweep.node.volume_upload(&sweep.pool, "kt-foreign2-seed.iso", kvmctl_libvirt::xml::DiskFormat::Raw, &[0u8; 512]).unwrap();
    let (s, body) = api_err(client.vm_create(&daemon::tiny_vm("kt-foreign2", "kt-foreign-img", vec![])).await.unwrap_err());
    assert!(s == 409 && body.message.contains("vol-delete"), "{body:?}");
    assert!(sweep.node.volume_get(&sweep.pool, "kt-foreign2-seed.iso").unwrap().is_some(), "the foreign volume survives");
    assert!(client.vm_list().await.unwrap().is_empty());

    sweep.node.domain_undefine("kt-foreign").unwrap();
    sweep.node.volume_delete(&sweep.pool, "kt-foreign2-seed.iso").unwrap();
    client.image_delete("kt-foreign-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

/// A start whose last steps (forwards, libvirt's state) take seconds under load: its boot's
/// readiness is still watched to the end (the watch took the VM's `starting` for a boot that
/// was over, and stopped at `address`; a fresh-clone CI run under load met it).
#[tokio::test]
async fn a_slow_start_is_watched_to_ssh() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-slow"], &["kt-slow-img"]);
    let cfg = kvmctl_server::Config { failpoints: "start.booted=pause".into(), ..daemon::config(d) };
    let (server, client) = daemon::start(&cfg).await;
    daemon::tiny_image(&client, d, "kt-slow-img").await;
    let (_, public) = kvmctl_testkit::keypair(d);
    client.vm_create(&VmCreateRequest { no_start: true, ..daemon::tiny_vm("kt-slow", "kt-slow-img", vec![public]) }).await.unwrap();
    client.vm_start("kt-slow").await.unwrap();
    let vm = client.vm_wait("kt-slow", "ssh", 300).await.unwrap();
    assert!(vm.readiness.iter().any(|s| s.stage == "ssh_login"), "{:?}", vm.readiness);
    client.vm_delete("kt-slow", false).await.unwrap();
    client.image_delete("kt-slow-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}
