//! The daemon survives a libvirtd restart without being restarted itself.
//!
//! Ignored by default because it restarts the shared test libvirtd; `scripts/test.sh` runs
//! it on its own after the other tests (`--run-ignored only`).

use kvmctl_client::Client;
use kvmctl_server::{Config, RunningServer};
use std::process::Command;
use std::time::Duration;

fn sh(cmd: &str) {
    let st = Command::new("bash").args(["-c", cmd]).status().unwrap();
    assert!(st.success(), "{cmd} failed");
}

/// The test libvirtd (the second test node runs its own, with its own pid file).
const MAIN_PID: &str = "pid=$(cat /run/libvirtd.pid)";
const MAIN_ALIVE: &str = "kill -0 $(cat /run/libvirtd.pid 2>/dev/null) 2>/dev/null";

/// Brings libvirtd back whatever happens to the test.
struct Restart(String);

impl Drop for Restart {
    fn drop(&mut self) {
        if !Command::new("bash").args(["-c", MAIN_ALIVE]).status().map(|s| s.success()).unwrap_or(false) {
            let _ = Command::new("ip").args(["netns", "exec", &self.0, "libvirtd", "-d"]).status();
        }
    }
}

#[tokio::test]
#[ignore = "restarts the shared libvirtd; run by scripts/test.sh on its own"]
async fn daemon_reconnects_after_libvirtd_restarts() {
    let uri = std::env::var("KVMCTL_TEST_URI").expect("run with scripts/test.sh");
    let netns = std::env::var("KVMCTL_NETNS").expect("run with scripts/test.sh");
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config { socket: dir.path().join("k.sock"), database: dir.path().join("k.db"), libvirt_uri: uri, ..Config::default() };
    let server = RunningServer::start(&cfg).await.unwrap();
    let client = Client::unix(&server.socket);
    assert!(client.status().await.unwrap().hypervisor.reachable);

    let _restart = Restart(netns.clone());
    sh(&format!("{MAIN_PID}; kill $pid; while kill -0 $pid 2>/dev/null; do sleep 0.1; done"));
    let down = client.status().await.unwrap();
    assert!(!down.hypervisor.reachable, "libvirtd is stopped: {down:?}");
    assert!(down.hypervisor.error.unwrap().contains("libvirtd"));

    sh(&format!("ip netns exec {netns} libvirtd -d"));
    let mut up = false;
    for _ in 0..100 {
        if client.status().await.unwrap().hypervisor.reachable {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the daemon did not reconnect after libvirtd came back");
    server.stop().await;
}

/// Forwards hold without the control plane: with the daemon gone and kvmctl's table
/// deleted, a libvirtd restart has the libvirt hook (`reconnect`) write the running VM's
/// rules again from its domain metadata; with the daemon back, a flushed table is repaired
/// by the reconciler.
#[tokio::test]
#[ignore = "restarts the shared libvirtd and deletes the namespace's kvmctl table; run by scripts/test.sh on its own"]
async fn forwards_survive_the_daemon_and_a_libvirtd_restart() {
    use kvmctl_testkit::daemon::{self, Sweep};
    let netns = std::env::var("KVMCTL_NETNS").expect("run with scripts/test.sh");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-rs"], &["kt-rs-img"]);
    let cfg = daemon::config(d);
    let (server, client) = daemon::start(&cfg).await;
    daemon::tiny_image(&client, d, "kt-rs-img").await;
    let (key, public) = kvmctl_testkit::keypair(d);
    let vm = client.vm_create(&daemon::tiny_vm("kt-rs", "kt-rs-img", vec![public])).await.unwrap();
    let port = vm.forwards[0].host_port;
    client.vm_wait("kt-rs", "ssh", 120).await.unwrap();
    let ssh = || kvmctl_testkit::ssh_at(&key, "kvmctl", "127.0.0.1", port, "hostname");
    let key_of = kvmctl_netfw::vm_key(&vm.id.to_string());
    let present = || kvmctl_netfw::table_read(kvmctl_netfw::TABLE).unwrap().contains_key(&key_of);
    assert_eq!(ssh().unwrap().trim(), "kt-rs");

    // No daemon, no table: the forward is gone.
    server.stop().await;
    sh("nft delete table inet kvmctl");
    assert!(ssh().is_err(), "the forward works without its rules");

    // libvirtd restarts and reconnects to the running VM; its hook writes the rules.
    let _restart = Restart(netns.clone());
    sh(&format!("{MAIN_PID}; kill $pid; while kill -0 $pid 2>/dev/null; do sleep 0.1; done"));
    sh(&format!("ip netns exec {netns} libvirtd -d"));
    let mut back = false;
    for _ in 0..100 {
        if present() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the reconnect hook did not restore the rules of kt-rs");
    assert_eq!(ssh().expect("SSH through the restored forward").trim(), "kt-rs");

    // The daemon is back: a table flushed by hand is repaired by its reconciler.
    let (server, client) = daemon::start(&cfg).await;
    sh("nft flush table inet kvmctl");
    let mut repaired = false;
    for _ in 0..100 {
        if present() && ssh().is_ok() {
            repaired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(repaired, "the reconciler did not repair the flushed table");

    client.vm_delete("kt-rs", false).await.unwrap();
    assert!(!present());
    client.image_delete("kt-rs-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

/// The host goes down hard (the daemon, libvirtd and QEMU killed) and comes back: the VM its
/// owner left running runs again and answers SSH; the one its owner stopped, and the one
/// shut down from inside the guest, stay stopped.
#[tokio::test]
#[ignore = "kills the shared libvirtd; run by scripts/test.sh on its own"]
async fn running_vms_come_back_after_the_host_goes_down() {
    use kvmctl_testkit::daemon::{self, Sweep};
    let netns = std::env::var("KVMCTL_NETNS").expect("run with scripts/test.sh");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-back", "kt-kept", "kt-off"], &["kt-back-img"]);
    let cfg = Config { restart_stagger_seconds: 1, ..daemon::config(d) };
    let (server, client) = daemon::start(&cfg).await;
    daemon::tiny_image(&client, d, "kt-back-img").await;
    for name in ["kt-back", "kt-kept", "kt-off"] {
        client.vm_create(&daemon::tiny_vm(name, "kt-back-img", vec![])).await.unwrap();
    }
    client.vm_wait("kt-back", "ssh", 300).await.unwrap();
    // Shut down behind kvmctl's back (the guest's ACPI power button; libvirt records a
    // shutdown, as when the guest powers itself off): its owner's choice.
    client.vm_wait("kt-off", "ssh", 300).await.unwrap();
    kvmctl_libvirt::Node::domain_shutdown(&sweep.node, "kt-off").unwrap();
    daemon::until(&client, "kt-off", "stopped", |v| v.state == "stopped").await;
    let stop = kvmctl_types::api::VmStopRequest { force: true, timeout_seconds: None };
    assert_eq!(client.vm_stop("kt-kept", &stop).await.unwrap().state, "stopped");

    // Down hard: no daemon, then libvirtd killed, then QEMU killed behind its back.
    server.stop().await;
    let down_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let _restart = Restart(netns.clone());
    sh(&format!("{MAIN_PID}; kill -9 $pid; while kill -0 $pid 2>/dev/null; do sleep 0.1; done"));
    sh("pid=$(pgrep -f 'guest=kt-back[,]'); kill -9 $pid; while kill -0 $pid 2>/dev/null; do sleep 0.1; done");
    sh(&format!("ip netns exec {netns} libvirtd -d"));

    // Back up: the daemon finds kt-back shut off by a failure and starts it; its new boot is
    // watched from the start, up to the guest's SSH server answering through its forward.
    // (The tiny guest makes a new host key every boot, so kvmctl rightly refuses a login.)
    let (server, client) = daemon::start(&cfg).await;
    daemon::until(&client, "kt-back", "running again (a stage of a new boot)", |vm| {
        // A stage of the new boot (the old boot's stages may still show until the first
        // reconciler pass, which can miss a libvirtd that is still starting).
        vm.state == "running" && vm.readiness.iter().any(|s| s.stage == "ssh_banner" && s.at_ms > down_ms)
    })
    .await;
    let kept = client.vm_get("kt-kept").await.unwrap();
    assert_eq!(kept.state, "stopped", "a VM its owner stopped stays stopped: {kept:?}");
    let off = client.vm_get("kt-off").await.unwrap();
    assert_eq!(off.state, "stopped", "a VM powered off from inside stays stopped: {off:?}");
    assert!(server_metric(&client, "kvmctl_vm_restarts_total").await >= 1.0);

    for name in ["kt-back", "kt-kept", "kt-off"] {
        client.vm_delete(name, false).await.unwrap();
    }
    client.image_delete("kt-back-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

async fn server_metric(client: &Client, name: &str) -> f64 {
    let text = client.metrics().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}
