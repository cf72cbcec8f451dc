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

/// The daemon killed in the middle of a memory snapshot of a running VM, after the VM was
/// saved to a file (so it is not running) and after the disk's tag was made: on restart the
/// VM runs on from that file and the half-made snapshot is gone (no row, no file, no tag).
#[test]
fn a_crash_in_a_snapshot_is_undone_and_the_vm_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env { dir: dir.path().to_owned() };
    let sweep = Sweep::new(&["kt-killsnap"], &["kt-killsnap-img"]);
    let daemon = env.serve("");
    tiny_import(&env, "kt-killsnap-img");
    let create = create_args("kt-killsnap", "kt-killsnap-img");
    env.ok(&create.iter().map(String::as_str).collect::<Vec<_>>());
    daemon.kill();
    let disk = {
        use kvmctl_libvirt::Node;
        let xml = sweep.node.domain_xml("kt-killsnap").unwrap();
        kvmctl_libvirt::xml::domain_devices(&xml).disk_files.into_iter().next().unwrap()
    };
    let state = || {
        use kvmctl_libvirt::Node;
        sweep.node.domain_state("kt-killsnap").unwrap()
    };
    for step in ["saved", "disk"] {
        let daemon = env.serve(&format!("snapshot.{step}=crash"));
        let out = env.kvmctl(&["vm", "snapshot", "create", "kt-killsnap", "s1", "--memory"]);
        assert!(!out.status.success(), "the snapshot survived a crash after {step}");
        assert!(daemon.died(), "the daemon should have crashed after snapshot.{step}");
        assert_eq!(state(), kvmctl_libvirt::DomainState::Shutoff, "the VM was saved to a file when the daemon died");
        let daemon = env.serve("");
        // Answered once start-up has finished what the crash interrupted.
        assert_eq!(env.ok(&["vm", "snapshot", "list", "kt-killsnap", "-o", "json"]).trim(), "[]", "after {step}");
        assert_eq!(state(), kvmctl_libvirt::DomainState::Running, "after {step}: restored from the file at start-up");
        let files: Vec<_> = walk(&env.dir.join("snapshots"));
        assert!(files.is_empty(), "after {step}: {files:?}");
        let tags = Command::new("qemu-img").args(["snapshot", "-U", "-l"]).arg(&disk).output().unwrap();
        assert!(String::from_utf8_lossy(&tags.stdout).trim().is_empty(), "after {step}: {}", String::from_utf8_lossy(&tags.stdout));
        daemon.kill();
    }
    let daemon = env.serve("");
    env.ok(&["vm", "delete", "kt-killsnap"]);
    env.ok(&["image", "rm", "kt-killsnap-img"]);
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    daemon.kill();
}

/// The daemon killed in the middle of a clone of a running VM, after the clone's disk or
/// base was recorded and after it was copied (the source saved to a file meanwhile), linked
/// and full: on restart the source runs on from that file and nothing of the clone is left
/// (no VM, no root disk, no base, no files).
#[test]
fn a_crash_in_a_clone_is_undone_and_the_source_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env { dir: dir.path().to_owned() };
    let sweep = Sweep::new(&["kt-killcl", "kt-killcl-new"], &["kt-killcl-img"]);
    let daemon = env.serve("");
    tiny_import(&env, "kt-killcl-img");
    let create = create_args("kt-killcl", "kt-killcl-img");
    env.ok(&create.iter().map(String::as_str).collect::<Vec<_>>());
    daemon.kill();
    let pool_dir = {
        use kvmctl_libvirt::Node;
        let xml = sweep.node.domain_xml("kt-killcl").unwrap();
        let disk = kvmctl_libvirt::xml::domain_devices(&xml).disk_files.into_iter().next().unwrap();
        std::path::PathBuf::from(disk).parent().unwrap().to_path_buf()
    };
    let state = || {
        use kvmctl_libvirt::Node;
        sweep.node.domain_state("kt-killcl").unwrap()
    };
    // The image's volume: the bases of this test's clones lie over it.
    let image_file = pool_dir.join("image-kt-killcl-img.qcow2");
    assert!(image_file.exists(), "{}", image_file.display());
    let clone_files = || -> Vec<String> {
        let mut files = kvmctl_testkit::daemon::clone_bases(&pool_dir, &image_file);
        files.extend(
            std::fs::read_dir(&pool_dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("kt-killcl-new")),
        );
        files
    };
    for mode in ["--linked", "--full"] {
        for step in ["recorded", "copied"] {
            let daemon = env.serve(&format!("clone.{step}=crash"));
            let out = env.kvmctl(&["vm", "clone", "kt-killcl", "kt-killcl-new", mode]);
            assert!(!out.status.success(), "the clone survived a crash after {step}");
            assert!(daemon.died(), "the daemon should have crashed after clone.{step}");
            if step == "copied" {
                assert_eq!(state(), kvmctl_libvirt::DomainState::Shutoff, "the source was saved to a file when the daemon died");
            }
            let daemon = env.serve("");
            let names = vm_names(&env);
            assert!(names.contains("kt-killcl") && !names.contains("kt-killcl-new"), "{mode} after {step}: {names}");
            assert_eq!(state(), kvmctl_libvirt::DomainState::Running, "{mode} after {step}: the source runs on");
            assert!(clone_files().is_empty(), "{mode} after {step}: {:?}", clone_files());
            let files: Vec<_> = walk(&env.dir.join("snapshots"));
            assert!(files.is_empty(), "{mode} after {step}: {files:?}");
            daemon.kill();
        }
    }
    let daemon = env.serve("");
    env.ok(&["vm", "delete", "kt-killcl"]);
    env.ok(&["image", "rm", "kt-killcl-img"]);
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    daemon.kill();
}

/// The daemon killed in the middle of an export of a running VM (saved to a file while its
/// disk is copied) and of a restore (after its VM was recorded, and after the disk was put in
/// the pool): on restart the exported VM runs on, the half restore is gone (no VM, no
/// volume), no staging files are left, and no half archive is left where it was written.
#[test]
fn a_crash_in_an_export_or_restore_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env { dir: dir.path().to_owned() };
    let sweep = Sweep::new(&["kt-killbk", "kt-killbk-new"], &["kt-killbk-img"]);
    let daemon = env.serve("");
    tiny_import(&env, "kt-killbk-img");
    let create = create_args("kt-killbk", "kt-killbk-img");
    env.ok(&create.iter().map(String::as_str).collect::<Vec<_>>());
    let archive = env.dir.join("kt-killbk.tar");
    env.ok(&["vm", "export", "kt-killbk", archive.to_str().unwrap()]);
    daemon.kill();
    let state = || {
        use kvmctl_libvirt::Node;
        sweep.node.domain_state("kt-killbk").unwrap()
    };
    let half = env.dir.join("half.tar");
    let daemon = env.serve("export.copied=crash");
    let out = env.kvmctl(&["vm", "export", "kt-killbk", half.to_str().unwrap()]);
    assert!(!out.status.success() && daemon.died(), "the export survived a crash");
    assert_eq!(state(), kvmctl_libvirt::DomainState::Shutoff, "the VM was saved to a file when the daemon died");
    assert!(!half.exists() && !env.dir.join("half.tar.partial").exists(), "no half archive is left");
    for step in ["recorded", "disk"] {
        let daemon = env.serve(&format!("restore.{step}=crash"));
        let out = env.kvmctl(&["vm", "restore", archive.to_str().unwrap(), "--name", "kt-killbk-new"]);
        assert!(!out.status.success(), "the restore survived a crash after {step}");
        assert!(daemon.died(), "the daemon should have crashed after restore.{step}");
        let daemon = env.serve("");
        let names = vm_names(&env);
        assert!(!names.contains("kt-killbk-new"), "after {step}: {names}");
        assert_eq!(state(), kvmctl_libvirt::DomainState::Running, "after {step}: the exported VM runs on");
        let files: Vec<_> = walk(&env.dir.join("snapshots"));
        assert!(files.is_empty(), "after {step}: {files:?}");
        assert!(sweep.leftovers().iter().all(|l| !l.contains("kt-killbk-new")), "after {step}: {:?}", sweep.leftovers());
        daemon.kill();
    }
    let daemon = env.serve("");
    env.ok(&["vm", "delete", "kt-killbk"]);
    env.ok(&["image", "rm", "kt-killbk-img"]);
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    daemon.kill();
}

/// Every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// The daemon killed in the middle of a data disk add: on restart the add is undone (no
/// volume, no row, nothing in the definition) when the disk was not yet attached, and kept
/// when it was. (Its VM's name shares no prefix with the test above, which runs beside it
/// and sweeps volumes by prefix.)
#[test]
fn a_crash_in_a_disk_add_is_undone_or_kept_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env { dir: dir.path().to_owned() };
    let sweep = Sweep::new(&["kt-dskkill"], &["kt-dskkill-img"]);
    let daemon = env.serve("");
    tiny_import(&env, "kt-dskkill-img");
    let mut create = create_args("kt-dskkill", "kt-dskkill-img");
    create.push("--no-start".into());
    let create: Vec<&str> = create.iter().map(String::as_str).collect();
    env.ok(&create);
    daemon.kill();
    let volume = "kt-dskkill-data-disk1.qcow2";
    for (step, kept) in [("before_volume", false), ("volume", false), ("attach", true)] {
        let daemon = env.serve(&format!("disk.{step}=crash"));
        let out = env.kvmctl(&["vm", "disk", "add", "kt-dskkill", "--size", "1G"]);
        assert!(!out.status.success(), "disk add survived a crash after {step}");
        assert!(daemon.died(), "the daemon should have crashed after disk.{step}");
        let daemon = env.serve("");
        let disks: serde_json::Value = serde_json::from_str(&env.ok(&["vm", "disk", "list", "kt-dskkill", "-o", "json"])).unwrap();
        let defined = sweep.node_xml("kt-dskkill").contains(volume);
        let on_node = sweep.leftovers().iter().any(|l| l.contains(volume));
        if kept {
            assert_eq!(disks[0]["state"], "attached", "after {step}: {disks}");
            assert!(defined && on_node, "after {step}: kept whole");
            env.ok(&["vm", "disk", "rm", "kt-dskkill", "disk1"]);
        } else {
            assert_eq!(disks, serde_json::json!([]), "after {step}: undone");
            assert!(!defined && !on_node, "after {step}: nothing left: {:?}", sweep.leftovers());
        }
        daemon.kill();
    }
    let daemon = env.serve("");
    env.ok(&["vm", "delete", "kt-dskkill"]);
    env.ok(&["image", "rm", "kt-dskkill-img"]);
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    daemon.kill();
}
