//! The executor: a failure midway leaves the log and the state record saying exactly what
//! was done, and a re-run continues from there. Runs against `test:///default`; the hook is
//! written to a temporary path, so nothing on the host changes. Needs root (as the suite
//! runs), because the executor refuses to change a host otherwise.

use kvmctl_host::exec::{ExecError, Executor};
use kvmctl_host::plan::{Step, StepAction};
use kvmctl_host::state::StateRecord;

fn steps(dir: &std::path::Path) -> Vec<Step> {
    vec![
        Step {
            id: "hook".into(),
            description: "install the hook".into(),
            done: false,
            action: StepAction::InstallHook {
                path: dir.join("hooks/qemu").display().to_string(),
                content: kvmctl_host::plan::hook_script(std::path::Path::new("/usr/local/bin/kvmctl")),
                restart_libvirtd: false,
                systemd: false,
                netns: None,
            },
        },
        Step {
            id: "pool".into(),
            description: "create the pool".into(),
            done: false,
            action: StepAction::EnsurePool { name: "kt-exec".into(), path: dir.join("pool").display().to_string() },
        },
    ]
}

fn run(uri: &str, dir: &std::path::Path, steps: &[Step], state: &mut StateRecord) -> (Result<(), ExecError>, Vec<String>) {
    let mut lines = Vec::new();
    let mut progress = |l: &str| lines.push(l.to_owned());
    let mut exec = Executor {
        log_path: dir.join("host.log"),
        state_path: dir.join("state.json"),
        dry_run: false,
        libvirt_uri: uri.into(),
        progress: &mut progress,
    };
    let r = exec.run("setup", steps, state);
    (r, lines)
}

#[test]
fn a_failure_midway_is_recorded_and_a_rerun_continues() {
    let dir = tempfile::tempdir().unwrap();
    let plan = steps(dir.path());
    let mut state = StateRecord::load(&dir.path().join("state.json")).unwrap();

    // libvirt is unreachable: the hook step succeeds, the pool step fails, the run stops.
    let bad = format!("qemu+unix:///system?socket={}/nope", dir.path().display());
    let (r, lines) = run(&bad, dir.path(), &plan, &mut state);
    let e = r.unwrap_err().to_string();
    assert!(e.starts_with("step pool failed") && e.contains("run the command again to continue"), "{e}");
    assert_eq!(lines.len(), 2);
    let saved = StateRecord::load(&dir.path().join("state.json")).unwrap();
    assert!(saved.hook.is_some(), "the record keeps what was done");
    assert!(saved.pools.is_empty());
    let outcomes: Vec<_> = saved.last_run.iter().map(|s| (s.id.as_str(), s.outcome.as_str())).collect();
    assert_eq!(outcomes, [("hook", "done"), ("pool", "failed")]);
    let log = std::fs::read_to_string(dir.path().join("host.log")).unwrap();
    assert!(log.contains("[INFO] hook: done") && log.contains("[ERROR] pool: failed"), "{log}");

    // The re-run plans from the host as it is: the hook is done, only the pool is left.
    let mut plan2 = plan.clone();
    plan2[0].done = true;
    let (r, lines) = run("test:///default", dir.path(), &plan2, &mut state);
    r.unwrap();
    assert!(lines[0].contains("hook: already done"), "{lines:?}");
    let saved = StateRecord::load(&dir.path().join("state.json")).unwrap();
    assert_eq!(saved.pools.len(), 1);
    assert!(saved.hook.is_some());
    let outcomes: Vec<_> = saved.last_run.iter().map(|s| (s.id.as_str(), s.outcome.as_str())).collect();
    assert_eq!(outcomes, [("hook", "already"), ("pool", "done")]);
}

#[test]
fn an_existing_foreign_hook_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let plan = steps(dir.path());
    std::fs::create_dir_all(dir.path().join("hooks")).unwrap();
    std::fs::write(dir.path().join("hooks/qemu"), "#!/bin/sh\n# somebody else's hook\n").unwrap();
    let mut state = StateRecord::default();
    let (r, _) = run("test:///default", dir.path(), &plan[..1], &mut state);
    assert!(r.unwrap_err().to_string().contains("is not kvmctl's"));
    assert_eq!(std::fs::read_to_string(dir.path().join("hooks/qemu")).unwrap(), "#!/bin/sh\n# somebody else's hook\n");
    assert!(state.hook.is_none());
}

/// Setup that updates an existing kvmctl hook records it; uninstall puts it back.
#[test]
fn an_updated_hook_is_restored_by_uninstall() {
    let dir = tempfile::tempdir().unwrap();
    let plan = steps(dir.path());
    let hook = dir.path().join("hooks/qemu");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    let old = kvmctl_host::plan::hook_script(std::path::Path::new("/old/kvmctl"));
    std::fs::write(&hook, &old).unwrap();
    let mut state = StateRecord::default();
    run("test:///default", dir.path(), &plan[..1], &mut state).0.unwrap();
    assert!(std::fs::read_to_string(&hook).unwrap().contains("/usr/local/bin/kvmctl"));
    let undo = kvmctl_host::uninstall_plan(&state, Some("hook"));
    assert!(undo[0].description.starts_with("restore the previous libvirt hook"), "{}", undo[0].description);
    run("test:///default", dir.path(), &undo, &mut state).0.unwrap();
    assert_eq!(std::fs::read_to_string(&hook).unwrap(), old);
    assert!(state.hook.is_none());
}
