//! Two `kvmctl serve` processes on one PostgreSQL database (ADR 0017): the leader is killed
//! (SIGKILL) in the middle of a create; once its leases expire, the other daemon takes the
//! periodic work over and undoes the create, leaving nothing on the node or in the database;
//! `kvmctl status` says which engine and which daemon leads.

mod common;

use common::{tiny_import, Env, BIN};
use kvmctl_testkit::daemon::Sweep;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn a_daemon_killed_in_a_create_is_cleaned_up_by_the_other() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let url = rt.block_on(kvmctl_store::testing::postgres_database()).unwrap();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (Env { dir: da.path().to_owned() }, Env { dir: db.path().to_owned() });
    let sweep = Sweep::new(&["kt-shk"], &["kt-shk-img"]);
    let go = a.dir.join("go");
    let shared = [("KVMCTL_DATABASE_URL", url.as_str())];
    // A first: it leads. Its creates wait after the seed volume until the test says go.
    let daemon_a = a.serve_with(&format!("create.seed_volume=wait:{}", go.display()), &shared);
    let daemon_b = b.serve_with("", &shared);
    let status_a = a.ok(&["status", "-o", "json"]);
    let status_b = b.ok(&["status", "-o", "json"]);
    let (sa, sb): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&status_a).unwrap(), serde_json::from_str(&status_b).unwrap());
    assert_eq!((sa["database"]["engine"].as_str(), sa["database"]["leader"].as_bool()), (Some("postgres"), Some(true)), "{status_a}");
    assert_eq!(sb["database"]["leader"].as_bool(), Some(false), "{status_b}");
    let human = b.ok(&["status"]);
    assert!(human.contains("postgres") && human.contains("another daemon leads"), "{human}");

    tiny_import(&b, "kt-shk-img");
    let mut cli = Command::new(BIN)
        .arg("--socket")
        .arg(a.socket())
        .args(["vm", "create", "kt-shk", "--image", "kt-shk-img", "--cpus", "1", "--memory", "256M", "--disk", "1G", "--no-start"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until A's create has made the seed volume (and waits).
    let seeded = || sweep.leftovers().iter().any(|l| l.contains("kt-shk-seed"));
    for _ in 0..600 {
        if seeded() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seeded(), "A's create reached the seed volume: {:?}", sweep.leftovers());
    // B sees the VM being created and leaves it alone: A's lease holds it.
    assert!(b.ok(&["vm", "list", "-o", "json"]).contains("kt-shk"));
    daemon_a.kill();
    assert!(!cli.wait().unwrap().success());
    // Once A's leases expire (15 s), B leads and undoes the create. Waits on the state
    // itself, for at most five minutes (a hang, not a speed check).
    let mut listed = String::new();
    for _ in 0..3000 {
        listed = b.ok(&["vm", "list", "-o", "json"]);
        if listed.trim() == "[]" && sweep.leftovers().iter().all(|l| l.contains("image-")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(listed.trim(), "[]", "B undid A's create");
    assert!(sweep.leftovers().iter().all(|l| l.contains("image-")), "{:?}", sweep.leftovers());
    let sb: serde_json::Value = serde_json::from_str(&b.ok(&["status", "-o", "json"])).unwrap();
    assert_eq!(sb["database"]["leader"].as_bool(), Some(true), "B took the periodic work over");
    b.ok(&["image", "rm", "kt-shk-img"]);
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    daemon_b.kill();
}
