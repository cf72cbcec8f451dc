//! `kvmctl host setup|doctor|uninstall` for real on the test machine (that is their job: they
//! install packages and configure libvirt). Ignored by default because they restart the
//! shared libvirtd and change the host; `scripts/test.sh` runs them one at a time.
//!
//! Each run uses its own state directory, log and storage pool (`kt-pool-<pid>`), so what it
//! uninstalls is only what it set up.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_kvmctl");

struct Run {
    state_dir: PathBuf,
    log: PathBuf,
    pool: String,
    pool_path: PathBuf,
    netns: String,
}

impl Run {
    fn kvmctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--log")
            .arg(&self.log)
            .arg("--pool")
            .arg(&self.pool)
            .arg("--pool-path")
            .arg(&self.pool_path);
        if args.contains(&"setup") {
            cmd.args(["--netns", &self.netns]);
        }
        let out = cmd.output().unwrap();
        eprintln!("$ kvmctl {}\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        out
    }

    fn state(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.state_dir.join("state.json")).unwrap()).unwrap()
    }
}

/// Whatever happens, the test's own pool goes.
impl Drop for Run {
    fn drop(&mut self) {
        let _ = Command::new("virsh").args(["pool-destroy", &self.pool]).output();
        let _ = Command::new("virsh").args(["pool-undefine", &self.pool]).output();
        let _ = std::fs::remove_dir(&self.pool_path);
    }
}

fn pool_exists(name: &str) -> bool {
    Command::new("virsh").args(["pool-info", name]).output().map(|o| o.status.success()).unwrap_or(false)
}

fn check<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no check {id}"))
}

#[test]
#[ignore = "changes the host and restarts libvirtd; run by scripts/test.sh on its own"]
fn setup_is_idempotent_verified_and_reversible() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = format!("kt-pool-{}", std::process::id());
    let run = Run {
        state_dir: tmp.path().join("state"),
        log: tmp.path().join("host.log"),
        pool_path: Path::new("/var/lib/kvmctl-test").join(&pool),
        pool: pool.clone(),
        netns: std::env::var("KVMCTL_NETNS").expect("run with scripts/test.sh"),
    };

    // 1. Setup for real: succeeds and verifies the host with doctor.
    let out = run.kvmctl(&["host", "setup", "--yes", "-o", "json"]);
    assert!(out.status.success(), "setup failed");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for id in ["libvirt.daemon", "libvirt.virtlogd", "libvirt.pool", "libvirt.default_network", "libvirt.hook", "qemu.binary"] {
        assert_eq!(check(&report, id)["status"], "ok", "{id}: {}", check(&report, id));
    }
    assert!(pool_exists(&pool));
    let state = run.state();
    assert!(state["pools"].as_array().unwrap().iter().any(|p| p["name"] == pool.as_str() && p["dir_created"] == true), "{state}");
    assert_eq!(state["verification"]["blocking_failures"], serde_json::json!([]));
    let log = std::fs::read_to_string(&run.log).unwrap();
    assert!(log.contains("] [INFO] pool: done") && log.contains("host setup: finished"), "{log}");
    // The default network runs with its addresses reserved ahead (ADR 0015).
    let net = |args: &[&str]| String::from_utf8_lossy(&Command::new("virsh").args(args).output().unwrap().stdout).into_owned();
    let premade = "52:4b:c0:a8:7a:80"; // 192.168.122.128's, the first of the upper half
    assert!(net(&["net-dumpxml", "default"]).contains(premade), "{}", net(&["net-dumpxml", "default"]));

    // 2. A second run changes nothing and says so.
    let out = run.kvmctl(&["host", "setup", "--yes", "-o", "json"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to do"));
    let state2 = run.state();
    assert!(state2["last_run"].as_array().unwrap().iter().all(|s| s["outcome"] == "already"), "{state2}");
    assert_eq!(state2["pools"], state["pools"], "the record is unchanged by a no-op run");

    // 3. Doctor with the functional KVM probe: a verdict, and a domain type that follows it.
    let out = run.kvmctl(&["host", "doctor", "-o", "json"]);
    let doctor: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "no blocking failure after setup: {}", doctor["blocking_failures"]);
    let verdict = doctor["kvm_verdict"].as_str().expect("the probe ran");
    let expected_type = if verdict == "functional" { "kvm" } else { "qemu" };
    assert_eq!(doctor["domain_type"], expected_type);
    if Path::new("/dev/kvm").exists() && verdict == "not_functional" {
        assert!(check(&doctor, "kvm.functional")["evidence"].as_str().unwrap().contains("KVM present but not functional"));
    }
    assert!(run.state_dir.join("doctor.json").exists() && run.state_dir.join("kvm-probe.json").exists());

    // 4. Uninstall just the pool: it goes, and setup brings it back.
    let out = run.kvmctl(&["host", "uninstall", "--yes", "--only", "pool"]);
    assert!(out.status.success());
    assert!(!pool_exists(&pool) && !run.pool_path.exists(), "the pool and the directory setup made are gone");
    let out = run.kvmctl(&["host", "setup", "--yes", "-o", "json"]);
    assert!(out.status.success());
    assert!(pool_exists(&pool), "setup restores what uninstall removed");

    // 5. Uninstall everything this run's record holds; the record is then empty.
    let out = run.kvmctl(&["host", "uninstall", "--yes"]);
    assert!(out.status.success());
    assert!(!pool_exists(&pool));
    let after = run.state();
    for key in ["packages", "services", "networks", "pools", "groups"] {
        assert_eq!(after[key], serde_json::json!([]), "{key} left in the record: {after}");
    }
    assert!(after["hook"].is_null() && after["kvm_device"].is_null());
    // What setup added to the default network is gone from its definition (or the network
    // with it, when setup defined it).
    assert!(!net(&["net-dumpxml", "--inactive", "default"]).contains(premade));
    // libvirtd is still there for the rest of the suite (setup started nothing it did not find running).
    assert!(Command::new("virsh").arg("version").output().unwrap().status.success());
}

#[test]
fn uninstall_without_a_record_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["host", "uninstall", "--yes", "--state-dir"])
        .arg(tmp.path())
        .arg("--log")
        .arg(tmp.path().join("l"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lists nothing to undo"));
    assert!(!tmp.path().join("l").exists(), "nothing done, nothing logged");
}

#[test]
fn setup_dry_run_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["host", "setup", "--dry-run", "--pool", "kt-never", "--state-dir"])
        .arg(tmp.path().join("s"))
        .arg("--log")
        .arg(tmp.path().join("l"))
        .args(["--pool-path", "/nonexistent/kt-never"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pool: would create the directory storage pool kt-never"), "{err}");
    assert!(!pool_exists("kt-never") && !tmp.path().join("s/state.json").exists() && !tmp.path().join("l").exists());
}

/// Not root: a clear error naming the steps that need root, and nothing changed.
#[test]
fn setup_as_a_normal_user_names_the_steps_that_need_root() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "host",
            "setup",
            "--yes",
            "--pool",
            "kt-never",
            "--pool-path",
            "/nonexistent/kt-never",
            "--state-dir",
        ])
        .arg(tmp.path().join("s"))
        .arg("--log")
        .arg(tmp.path().join("l"))
        .env("USER", "nobody")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("these steps need root:") && err.contains("pool") && err.contains("--sudo"), "{err}");
    assert!(!tmp.path().join("s/state.json").exists() && !pool_exists("kt-never"));
}
