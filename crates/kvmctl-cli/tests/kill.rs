//! The daemon killed in the middle of a create or a delete: on restart, the reconciler
//! undoes the create or finishes the delete, and nothing is left on the node or in the
//! database. The daemon runs as a real process (`kvmctl serve`) driven by the real CLI.

use kvmctl_testkit::daemon::Sweep;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_kvmctl");

struct Env {
    dir: PathBuf,
}

impl Env {
    fn socket(&self) -> PathBuf {
        self.dir.join("k.sock")
    }

    /// `kvmctl serve` with the test pool and network, and `failpoints` armed.
    fn serve(&self, failpoints: &str) -> Daemon {
        let _ = std::fs::remove_file(self.socket());
        let mut child = Command::new(BIN)
            .arg("serve")
            .env("KVMCTL_SOCKET", self.socket())
            .env("KVMCTL_DATABASE", self.dir.join("k.db"))
            .env("KVMCTL_POOL", kvmctl_testkit::env("KVMCTL_TEST_POOL"))
            .env("KVMCTL_NETWORK", kvmctl_testkit::env("KVMCTL_TEST_NETWORK"))
            .env("KVMCTL_LIBVIRT_URI", kvmctl_testkit::env("KVMCTL_TEST_URI"))
            .env("KVMCTL_CONSOLE_LOG_DIR", self.dir.join("console"))
            .env("KVMCTL_HOST_STATE_DIR", self.dir.join("host"))
            .env("KVMCTL_DOMAIN_TYPE", "qemu")
            .env("KVMCTL_FAILPOINTS", failpoints)
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

    fn kvmctl(&self, args: &[&str]) -> Output {
        Command::new(BIN).arg("--socket").arg(self.socket()).args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kvmctl(args);
        assert!(out.status.success(), "kvmctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A daemon process, killed (SIGKILL) on drop.
struct Daemon(Child);

impl Daemon {
    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Waits for the process to die by its own hand (a `crash` failpoint).
    fn died(mut self) -> bool {
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

fn tiny_import(env: &Env, name: &str) {
    let tiny = PathBuf::from(kvmctl_testkit::env("KVMCTL_TEST_TINY"));
    let disk = env.dir.join("disk.qcow2");
    assert!(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&disk).arg("64M").status().unwrap().success());
    let p = |p: &Path| p.display().to_string();
    env.ok(&["image", "import", &p(&disk), "--name", name, "--kernel", &p(&tiny.join("vmlinuz")), "--initrd", &p(&tiny.join("initrd.gz"))]);
}

fn create_args(vm: &str, image: &str) -> Vec<String> {
    ["vm", "create", vm, "--image", image, "--cpus", "1", "--memory", "256M", "--disk", "1G"].map(String::from).to_vec()
}

fn vm_names(env: &Env) -> String {
    env.ok(&["vm", "list", "-o", "json"])
}

#[test]
fn a_crash_at_any_step_is_undone_or_finished_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env { dir: dir.path().to_owned() };
    let sweep = Sweep::new(&["kt-kill"], &["kt-kill-img"]);
    let daemon = env.serve("");
    tiny_import(&env, "kt-kill-img");
    daemon.kill();
    let create = create_args("kt-kill", "kt-kill-img");
    let create: Vec<&str> = create.iter().map(String::as_str).collect();

    for step in ["reserve", "root_volume", "seed_volume", "define", "start"] {
        let daemon = env.serve(&format!("create.{step}=crash"));
        let out = env.kvmctl(&create);
        assert!(!out.status.success(), "create survived a crash after {step}");
        assert!(daemon.died(), "the daemon should have crashed after create.{step}");
        let daemon = env.serve("");
        assert_eq!(vm_names(&env).trim(), "[]", "a create interrupted after {step} is undone on restart");
        assert!(sweep.leftovers().iter().all(|l| l.contains("image-")), "after {step}: {:?}", sweep.leftovers());
        daemon.kill();
    }

    for step in ["destroy", "undefine", "volumes"] {
        let daemon = env.serve(&format!("delete.{step}=crash"));
        env.ok(&create);
        let out = env.kvmctl(&["vm", "delete", "kt-kill"]);
        assert!(!out.status.success(), "delete survived a crash after {step}");
        assert!(daemon.died());
        let daemon = env.serve("");
        assert_eq!(vm_names(&env).trim(), "[]", "a delete interrupted after {step} is finished on restart");
        assert!(sweep.leftovers().iter().all(|l| l.contains("image-")), "after {step}: {:?}", sweep.leftovers());
        daemon.kill();
    }

    // A real SIGKILL while create is between steps (paused after the seed upload).
    let daemon = env.serve("create.seed_volume=pause");
    let mut cli =
        Command::new(BIN).arg("--socket").arg(env.socket()).args(&create).stderr(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
    for _ in 0..100 {
        if sweep.leftovers().iter().any(|l| l.contains("kt-kill-seed")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.kill();
    assert!(!cli.wait().unwrap().success());
    let daemon = env.serve("");
    assert_eq!(vm_names(&env).trim(), "[]");
    env.ok(&["image", "rm", "kt-kill-img"]);
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    daemon.kill();
}
