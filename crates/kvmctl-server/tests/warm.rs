//! Warm clones against the real libvirtd with the tiny guest: two clones woken from one
//! memory snapshot of a stopped source each keep the source's running processes (a counter
//! started before the snapshot goes on counting) and take an identity of their own:
//! hostname, MAC, reserved address (seen by the guest), VM key (the source's no longer logs
//! in) and the host's clock. Bad requests change nothing.

use kvmctl_client::{Client, ClientError};
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{SnapshotCreateRequest, VmCloneRequest, VmCreateRequest, VmExecRequest, VmStopRequest};

const SRC: &str = "kt-wsrc";
const W1: &str = "kt-warm-1";
const W2: &str = "kt-warm-2";

fn api_err(e: ClientError) -> (u16, kvmctl_types::api::ErrorBody) {
    match e {
        ClientError::Api { status, body } => (status, body),
        other => panic!("expected an API error, got {other}"),
    }
}

async fn sh(client: &Client, vm: &str, command: &str) -> String {
    let out = client.vm_exec(vm, &VmExecRequest { command: command.into(), timeout_seconds: Some(60) }).await.unwrap();
    assert_eq!(out.exit_status, 0, "{vm}: {command}: {}", out.stderr);
    out.stdout.trim().to_owned()
}

fn warm(name: &str, snapshot: &str) -> VmCloneRequest {
    VmCloneRequest { name: name.into(), from_snapshot: Some(snapshot.into()), warm: true, ..Default::default() }
}

#[tokio::test]
async fn warm_clones_wake_with_the_sources_memory_and_their_own_identity() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _sweep = Sweep::new(&[SRC, W1, W2], &["kt-warm-img"]);
    let cfg = daemon::config(d);
    let (server, client) = daemon::start(&cfg).await;
    daemon::tiny_image(&client, d, "kt-warm-img").await;
    let src =
        client.vm_create(&VmCreateRequest { user: Some("root".into()), ..daemon::tiny_vm(SRC, "kt-warm-img", vec![]) }).await.unwrap();
    client.vm_wait(SRC, "ssh", 300).await.unwrap();
    // A process whose state lives only in memory: a counter in a file under /run (tmpfs).
    sh(&client, SRC, "(i=0; while true; do i=$((i+1)); echo $i > /run/counter; sleep 1; done) </dev/null >/dev/null 2>&1 &").await;
    sh(&client, SRC, "sleep 3; test -s /run/counter").await;
    client.snapshot_create(SRC, &SnapshotCreateRequest { name: "live".into(), memory: true, ..Default::default() }).await.unwrap();
    client.snapshot_create(SRC, &SnapshotCreateRequest { name: "disk".into(), ..Default::default() }).await.unwrap();

    // Refused, and nothing made: the source runs; no memory; no snapshot named.
    let (s, body) = api_err(client.vm_clone(SRC, &warm(W1, "live")).await.unwrap_err());
    assert_eq!(s, 409, "a running source: {body:?}");
    assert!(body.message.contains("stop"), "{body:?}");
    client.vm_stop(SRC, &VmStopRequest { force: true, ..Default::default() }).await.unwrap();
    let (s, body) = api_err(client.vm_clone(SRC, &warm(W1, "disk")).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("warm"), "{body:?}");
    let (s, body) = api_err(client.vm_clone(SRC, &VmCloneRequest { from_snapshot: None, ..warm(W1, "live") }).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("warm"), "{body:?}");
    assert_eq!(client.vm_list().await.unwrap().len(), 1);

    // Two warm clones of one snapshot, both running at once.
    let a = client.vm_clone(SRC, &warm(W1, "live")).await.unwrap();
    let b = client.vm_clone(SRC, &warm(W2, "live")).await.unwrap();
    for (vm, rec) in [(W1, &a), (W2, &b)] {
        client.vm_wait(vm, "ssh", 120).await.unwrap();
        assert_eq!(sh(&client, vm, "hostname").await, vm);
        let n1: u64 = sh(&client, vm, "cat /run/counter").await.parse().unwrap();
        let n2: u64 = sh(&client, vm, "sleep 2; cat /run/counter").await.parse().unwrap();
        assert!(n1 >= 3 && n2 > n1, "{vm}: the source's counter runs on from memory ({n1} then {n2})");
        let ip = sh(&client, vm, "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1").await;
        assert_eq!(Some(ip), rec.ip, "{vm} has its own reserved address, and only it");
        assert_eq!(sh(&client, vm, "cat /sys/class/net/eth0/address").await, rec.mac);
        let guest_now: i64 = sh(&client, vm, "date +%s").await.parse().unwrap();
        let host_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!((guest_now - host_now).abs() <= 30, "{vm}: the guest's clock follows the host's ({guest_now} vs {host_now})");
        let keys = sh(&client, vm, "cat /root/.ssh/authorized_keys").await;
        assert!(!keys.contains(&format!("kvmctl-{SRC}")), "{vm}: the source's VM key is gone: {keys}");
    }
    // Each woke with its link down and no filter; now its link is up behind its own filter,
    // which allows its own MAC and address only (the source's, allowed while it moved over
    // SSH, are narrowed away in the background).
    for (vm, rec) in [(W1, &a), (W2, &b)] {
        let own = |xml: &str| {
            let nic = &xml[xml.find("<interface").unwrap()..xml.find("</interface>").unwrap()];
            !nic.contains("state='down'")
                && nic.contains("filter='clean-traffic'")
                && nic.contains(&format!("value='{}'", rec.ip.as_deref().unwrap()))
                && !nic.contains(src.ip.as_deref().unwrap())
                && !nic.contains(&src.mac)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !own(&_sweep.node_xml(vm)) {
            assert!(std::time::Instant::now() < deadline, "{vm}'s NIC: {}", _sweep.node_xml(vm));
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    assert_ne!(a.ip, src.ip);
    assert_ne!(b.ip, src.ip);
    assert_ne!(a.ip, b.ip);
    assert_ne!(a.mac, b.mac);

    for vm in [W1, W2, SRC] {
        client.vm_delete(vm, false).await.unwrap();
    }
    assert!(client.vm_list().await.unwrap().is_empty());
    server.stop().await;
}
