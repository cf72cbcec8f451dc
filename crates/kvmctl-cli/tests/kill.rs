//! The daemon killed in the middle of a create or a delete: on restart, the reconciler
//! undoes the create or finishes the delete, and nothing is left on the node or in the
//! database. The daemon runs as a real process (`kvmctl serve`) driven by the real CLI.

mod common;

use common::{tiny_import, Env, BIN};
use kvmctl_testkit::daemon::Sweep;
use std::process::{Command, Stdio};
use std::time::Duration;

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
