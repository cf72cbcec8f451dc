#![allow(dead_code)]
//! A `kvmctl serve` process on the test pool and network, driven by the real CLI.

pub mod node2;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_kvmctl");

pub struct Env {
    pub dir: PathBuf,
}

impl Env {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("k.sock")
    }

    /// `kvmctl serve` with the test pool and network, and `failpoints` armed.
    pub fn serve(&self, failpoints: &str) -> Daemon {
        self.serve_with(failpoints, &[])
    }

    /// As `serve`, with more environment for the daemon (`KVMCTL_LISTEN`, TLS files...).
    pub fn serve_with(&self, failpoints: &str, env: &[(&str, &str)]) -> Daemon {
        let _ = std::fs::remove_file(self.socket());
        // Test daemons share the namespace's firewall table: each takes its own ports.
        let (base,) = kvmctl_testkit::daemon::port_block();
        let mut child = Command::new(BIN)
            .arg("serve")
            .env("KVMCTL_SSH_PORT_RANGE", format!("{}-{}", base, base + 9))
            .env("KVMCTL_GENERAL_PORT_RANGE", format!("{}-{}", base + 10, base + 19))
            .env("KVMCTL_VNC_PORT_RANGE", format!("{}-{}", base + 20, base + 29))
            .env("KVMCTL_SOCKET", self.socket())
            .env("KVMCTL_DATABASE", self.dir.join("k.db"))
            .env("KVMCTL_POOL", kvmctl_testkit::env("KVMCTL_TEST_POOL"))
            .env("KVMCTL_NETWORK", kvmctl_testkit::env("KVMCTL_TEST_NETWORK"))
            .env("KVMCTL_LIBVIRT_URI", kvmctl_testkit::env("KVMCTL_TEST_URI"))
            .env("KVMCTL_CONSOLE_LOG_DIR", self.dir.join("console"))
            .env("KVMCTL_KEY_DIR", self.dir.join("keys"))
            .env("KVMCTL_SNAPSHOT_DIR", self.dir.join("snapshots"))
            .env("KVMCTL_HOST_STATE_DIR", self.dir.join("host"))
            .env("KVMCTL_DOMAIN_TYPE", "qemu")
            .env("KVMCTL_FAILPOINTS", failpoints)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("serve.log")).unwrap())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return Daemon(child);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("daemon did not start: {}", std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default());
    }

    pub fn kvmctl(&self, args: &[&str]) -> Output {
        Command::new(BIN).arg("--socket").arg(self.socket()).args(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kvmctl(args);
        assert!(out.status.success(), "kvmctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; its stderr.
    #[allow(dead_code)]
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kvmctl(args);
        assert!(!out.status.success(), "kvmctl {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }
}

/// A daemon process, killed (SIGKILL) on drop.
pub struct Daemon(Child);

impl Daemon {
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Waits for the process to die by its own hand (a `crash` failpoint).
    pub fn died(mut self) -> bool {
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn tiny_import(env: &Env, name: &str) {
    let tiny = PathBuf::from(kvmctl_testkit::env("KVMCTL_TEST_TINY"));
    let disk = env.dir.join("disk.qcow2");
    assert!(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&disk).arg("64M").status().unwrap().success());
    let p = |p: &Path| p.display().to_string();
    env.ok(&["image", "import", &p(&disk), "--name", name, "--kernel", &p(&tiny.join("vmlinuz")), "--initrd", &p(&tiny.join("initrd.gz"))]);
}

/// `vm create NAME` of the tiny image (1 vCPU, 256 MiB, 1 GiB) with `extra` flags; the VM as JSON.
pub fn tiny_create(env: &Env, name: &str, image: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["vm", "create", name, "--image", image, "--cpus", "1", "--memory", "256M", "--disk", "1G", "-o", "json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&env.ok(&args)).unwrap()
}
