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

/// Brings libvirtd back whatever happens to the test.
struct Restart(String);

impl Drop for Restart {
    fn drop(&mut self) {
        if Command::new("pgrep").args(["-x", "libvirtd"]).status().map(|s| !s.success()).unwrap_or(true) {
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
    sh("pid=$(pgrep -x libvirtd); kill $pid; while kill -0 $pid 2>/dev/null; do sleep 0.1; done");
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
