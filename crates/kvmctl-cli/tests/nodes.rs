//! Nodes, placement explanations, TTLs, usage and gc from the real CLI, against a
//! `kvmctl serve` process on the test libvirtd and the second test node. Its own binary:
//! gc judges everything kvmctl-marked on the libvirt.

mod common;

use common::Env;
use kvmctl_testkit::daemon::Sweep;

fn virsh(args: &[&str]) -> String {
    let uri = kvmctl_testkit::env("KVMCTL_TEST_URI");
    let out = std::process::Command::new("virsh").arg("-c").arg(&uri).args(args).output().unwrap();
    assert!(out.status.success(), "virsh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn nodes_placement_ttl_usage_and_gc_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env { dir: dir.path().to_owned() };
    let sweep = Sweep::new(&["kt-nc", "kt-nc-junk"], &["kt-nc-img"]);
    let _d = env.serve("");
    common::tiny_import(&env, "kt-nc-img");
    let pool = kvmctl_testkit::env("KVMCTL_TEST_POOL");

    // The local node is there; the second test node is added with a label.
    let nodes: serde_json::Value = serde_json::from_str(&env.ok(&["node", "list", "-o", "json"])).unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
    assert_eq!(nodes[0]["name"], "local");
    let uri2 = kvmctl_testkit::env("KVMCTL_TEST_NODE2_URI");
    env.ok(&["node", "add", "kt-nc-n2", "--uri", &uri2, "--label", "zone=b", "--cpu-overcommit", "3"]);
    let n2: serde_json::Value = serde_json::from_str(&env.ok(&["node", "show", "kt-nc-n2", "-o", "json"])).unwrap();
    assert_eq!((n2["state"].as_str(), n2["cpu_overcommit"].as_str()), (Some("active"), Some("3.00")), "{n2}");
    let bad = env.kvmctl(&["node", "add", "kt-nc-far", "--uri", "qemu+tcp://127.0.0.1:1/system"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("uri"), "{bad:?}");

    // A bad TTL names the flag; a good one shows in `vm show`; --explain prints both nodes.
    let create = |extra: &[&str]| {
        let mut a = vec!["vm", "create", "kt-nc", "--image", "kt-nc-img", "--cpus", "1", "--memory", "256M", "--disk", "1G", "--no-start"];
        a.extend_from_slice(extra);
        env.kvmctl(&a)
    };
    let out = create(&["--ttl", "2w"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--ttl"), "{out:?}");
    let out = create(&["--ttl", "2h", "--explain", "--no-ssh-forward"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let explained = String::from_utf8_lossy(&out.stderr);
    assert!(explained.contains("kt-nc-n2") && explained.contains("local") && explained.contains("chosen"), "{explained}");
    let show = env.ok(&["vm", "show", "kt-nc"]);
    assert!(show.contains("expires:"), "{show}");

    // Usage as CSV: a header even before the first hour is metered.
    let csv = env.ok(&["usage", "-o", "csv"]);
    assert!(csv.lines().next().unwrap_or_default().contains("cost"), "{csv}");

    // gc: a planted volume is reported, and not removed before the grace period ends.
    virsh(&["vol-create-as", &pool, "kt-nc-junk-root.qcow2", "1M", "--format", "qcow2"]);
    let report = env.ok(&["gc", "--dry-run"]);
    assert!(report.contains("kt-nc-junk-root.qcow2"), "{report}");
    assert!(!report.contains("kt-nc-root"), "a real VM's disk is not debris: {report}");
    let cleaned = env.kvmctl(&["gc"]);
    assert!(cleaned.status.success());
    assert!(String::from_utf8_lossy(&cleaned.stderr).contains("gc_grace_seconds"), "{cleaned:?}");
    assert!(virsh(&["vol-list", &pool]).contains("kt-nc-junk-root.qcow2"), "within the grace period nothing goes");
    virsh(&["vol-delete", "--pool", &pool, "kt-nc-junk-root.qcow2"]);

    env.ok(&["vm", "delete", "kt-nc"]);
    env.ok(&["node", "remove", "kt-nc-n2"]);
    env.ok(&["image", "rm", "kt-nc-img"]);
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
}
