//! Migration between the two test nodes, from the real CLI: the tiny guest moves live from
//! the local node to node 2 while a counter in it keeps counting, and its SSH forward
//! answers on node 2 afterwards; stopped, it moves back cold with its disk's content when
//! node 2 is drained with --migrate. A
//! failed migration leaves it whole where it was. Both nodes have network `kvmctl-mig` with
//! the same subnet (a live migration keeps the guest's address).

mod common;

use common::node2::{agent_for, banner_within, on_node2, virsh2, NODE2_ADDR};
use common::Env;
use kvmctl_testkit::daemon::Sweep;
use std::time::Duration;

fn virsh(args: &[&str]) -> String {
    let out = std::process::Command::new("virsh").args(["-q", "-c", &kvmctl_testkit::env("KVMCTL_TEST_URI")]).args(args).output().unwrap();
    assert!(out.status.success(), "virsh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn vm(env: &Env) -> serde_json::Value {
    serde_json::from_str(&env.ok(&["vm", "show", "kt-mg", "-o", "json"])).unwrap()
}

fn pid_now(key: &std::path::Path, host: &str, port: u16) -> String {
    kvmctl_testkit::ssh_at(key, "kvmctl", host, port, "cat counter.pid").unwrap().trim().to_owned()
}

/// Until the guest at `ip` answers SSH (the tiny guest makes new host keys at each boot, so
/// the daemon's pinned key does not admit its login after a restart: the test's own SSH
/// reaches it).
fn ssh_wait(key: &std::path::Path, ip: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        match kvmctl_testkit::ssh_at(key, "kvmctl", ip, 22, "hostname") {
            Ok(h) => return h,
            Err(e) if started.elapsed() > Duration::from_secs(300) => panic!("{ip} did not answer: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn ssh_wait_file(key: &std::path::Path, ip: &str, file: &str) {
    let started = std::time::Instant::now();
    while kvmctl_testkit::ssh_at(key, "kvmctl", ip, 22, &format!("cat {file}")).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "{file} did not appear");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ssh_port(v: &serde_json::Value) -> u16 {
    v["forwards"].as_array().unwrap().iter().find(|f| f["guest_port"] == 22).expect("an SSH forward")["host_port"].as_u64().unwrap() as u16
}

#[test]
fn the_tiny_guest_migrates_live_and_back_cold() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env { dir: dir.path().to_owned() };
    let sweep = Sweep::new(&["kt-mg"], &["kt-mg-img"]);
    let (_agent, url, agent_env) = agent_for(dir.path());
    let envs: Vec<(&str, &str)> = agent_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let d = env.serve_with("", &envs);
    common::tiny_import(&env, "kt-mg-img");
    let net = kvmctl_testkit::env("KVMCTL_TEST_MIG_NETWORK");
    let pool = kvmctl_testkit::env("KVMCTL_TEST_POOL");

    // On the local node (the only one yet), reachable, with a counter running in the guest.
    let (key, public) = kvmctl_testkit::keypair(dir.path());
    let pubfile = dir.path().join("key.pub");
    std::fs::write(&pubfile, &public).unwrap();
    let key_arg = pubfile.display().to_string();
    common::tiny_create(&env, "kt-mg", "kt-mg-img", &["--network", &net, "--ssh-key", &key_arg, "--wait=ssh"]);
    let before = vm(&env);
    assert_eq!(before["node"], "local");
    let ip = before["ip"].as_str().unwrap().to_owned();
    let ssh = |host: &str, port: u16, cmd: &str| kvmctl_testkit::ssh_at(&key, "kvmctl", host, port, cmd);
    ssh(&ip, 22, "setsid sh -c 'echo $$ > counter.pid; i=0; while true; do i=$((i+1)); echo $i > count; sleep 0.1; done' </dev/null >/dev/null 2>&1 &")
        .unwrap();
    ssh_wait_file(&key, &ip, "count");
    env.ok(&["node", "add", "kt-mg-n2", "--uri", &kvmctl_testkit::env("KVMCTL_TEST_NODE2_URI"), "--agent", &url]);

    // Refusals name what to change, and change nothing.
    let out = env.fails(&["vm", "migrate", "kt-mg", "--to", "kt-mg-nope", "--live"]);
    assert!(out.contains("to") && out.contains("no node"), "{out}");
    let out = env.fails(&["vm", "migrate", "kt-mg", "--to", "kt-mg-n2"]);
    assert!(out.contains("--live"), "{out}");
    let out = env.fails(&["vm", "migrate", "kt-mg", "--to", "local", "--live"]);
    assert!(out.contains("already"), "{out}");

    // A migration that fails on the target (a volume of the VM's name is in the way there)
    // leaves the VM running where it was, and nothing of it on the target.
    virsh2(&["vol-create-as", &pool, "kt-mg-root.qcow2", "1M", "--format", "qcow2"]);
    let out = env.fails(&["vm", "migrate", "kt-mg", "--to", "kt-mg-n2", "--live"]);
    assert!(out.contains("kt-mg-root.qcow2"), "{out}");
    virsh2(&["vol-delete", "--pool", &pool, "kt-mg-root.qcow2"]);
    let v = vm(&env);
    assert_eq!((v["node"].as_str(), v["state"].as_str()), (Some("local"), Some("running")), "{v}");
    assert!(!virsh2(&["list", "--all", "--name"]).lines().any(|l| l.trim() == "kt-mg"));
    let vols = virsh2(&["vol-list", &pool]);
    assert!(!vols.contains("kt-mg-root") && !vols.contains("kt-mg-seed"), "{vols}");
    assert!(!virsh2(&["net-dumpxml", &net]).contains("kt-mg"), "no reservation left on node 2");
    let n: serde_json::Value = serde_json::from_str(&env.ok(&["node", "show", "kt-mg-n2", "-o", "json"])).unwrap();
    assert_eq!(n["vms"], 0, "the aborted move holds nothing on node 2: {n}");

    // The daemon killed mid-way: after the copy, the restarted daemon undoes the target's
    // part; after libvirt moved the guest, it finishes the move.
    let first_pid = ssh(&ip, 22, "cat counter.pid").unwrap().trim().to_owned();
    d.kill();
    let settled = |node: &str| {
        let started = std::time::Instant::now();
        loop {
            let v = vm(&env);
            let target_clean = node != "local" || !virsh2(&["vol-list", &pool]).contains("kt-mg-root");
            if v["node"] == node && v["state"] == "running" && target_clean {
                return v;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "not settled on {node}: {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let crashing = env.serve_with("migrate.copied=crash", &envs);
    assert!(!env.kvmctl(&["vm", "migrate", "kt-mg", "--to", "kt-mg-n2", "--live"]).status.success());
    assert!(crashing.died(), "the daemon crashed after the copy");
    let d = env.serve_with("", &envs);
    settled("local");
    assert!(
        !virsh2(&["net-dumpxml", &net]).contains(&before["mac"].as_str().unwrap().to_ascii_lowercase()),
        "the target's reservation is undone"
    );
    d.kill();
    let crashing = env.serve_with("migrate.moved=crash", &envs);
    assert!(!env.kvmctl(&["vm", "migrate", "kt-mg", "--to", "kt-mg-n2", "--live"]).status.success());
    assert!(crashing.died(), "the daemon crashed after the guest moved");
    let _d = env.serve_with("", &envs);
    settled("kt-mg-n2");
    assert!(!virsh(&["list", "--all", "--name"]).lines().any(|l| l.trim() == "kt-mg"), "the source's definition is gone");
    let port = ssh_port(&vm(&env));
    assert!(banner_within(NODE2_ADDR, port, Duration::from_secs(60)).is_some(), "the finished move's forward answers on node 2");
    assert_eq!(pid_now(&key, NODE2_ADDR, port), first_pid, "the same guest, its counter still running");
    env.ok(&["vm", "stop", "kt-mg", "--force"]);
    env.ok(&["node", "drain", "kt-mg-n2", "--migrate"]);
    env.ok(&["node", "undrain", "kt-mg-n2"]);
    env.ok(&["vm", "start", "kt-mg"]);
    ssh_wait(&key, &ip);
    ssh(&ip, 22, "setsid sh -c 'echo $$ > counter.pid; i=0; while true; do i=$((i+1)); echo $i > count; sleep 0.1; done' </dev/null >/dev/null 2>&1 &")
        .unwrap();
    ssh_wait_file(&key, &ip, "count");

    // Live: the counter keeps counting in the same process, and the SSH forward answers on
    // node 2's address afterwards.
    let pid = ssh(&ip, 22, "cat counter.pid").unwrap().trim().to_owned();
    let count_before: u64 = ssh(&ip, 22, "cat count").unwrap().trim().parse().unwrap();
    let moved: serde_json::Value =
        serde_json::from_str(&env.ok(&["vm", "migrate", "kt-mg", "--to", "kt-mg-n2", "--live", "-o", "json"])).unwrap();
    assert_eq!(
        (moved["node"].as_str(), moved["state"].as_str(), moved["ip"].as_str()),
        (Some("kt-mg-n2"), Some("running"), Some(ip.as_str()))
    );
    assert!(virsh2(&["list", "--name"]).lines().any(|l| l.trim() == "kt-mg"), "running on node 2");
    assert!(!virsh(&["list", "--all", "--name"]).lines().any(|l| l.trim() == "kt-mg"), "gone from the local node");
    assert!(!virsh(&["vol-list", &pool]).contains("kt-mg-root"), "its local volumes are gone");
    assert!(!virsh(&["net-dumpxml", &net]).contains("kt-mg"), "its local reservation is gone");
    let port = ssh_port(&moved);
    assert!(banner_within(NODE2_ADDR, port, Duration::from_secs(60)).is_some(), "the forward answers on node 2");
    let after = ssh(NODE2_ADDR, port, "cat counter.pid; cat count; kill -0 $(cat counter.pid) && echo alive").unwrap();
    let lines: Vec<&str> = after.lines().map(str::trim).collect();
    assert_eq!(lines.first().copied(), Some(pid.as_str()), "the same counter process: {after}");
    let count_after: u64 = lines[1].parse().unwrap();
    assert!(count_after > count_before, "it kept counting: {count_before} -> {count_after}");
    assert_eq!(lines.get(2).copied(), Some("alive"));

    // Cold, back: stopped, a marker written into its disk on node 2 arrives on the local node
    // with the overlay renamed onto the local image; it boots there and answers.
    env.ok(&["vm", "stop", "kt-mg", "--force"]);
    let root2 = "/var/lib/libvirt/kvmctl-pool/kt-mg-root.qcow2";
    let w = on_node2("qemu-io").args(["-f", "qcow2", "-c", "write -P 0x5a 1M 64k", root2]).output().unwrap();
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    // Node 2 is emptied by draining it with --migrate: placement picks the local node.
    let report: serde_json::Value = serde_json::from_str(&env.ok(&["node", "drain", "kt-mg-n2", "--migrate", "-o", "json"])).unwrap();
    assert_eq!(report["vms"][0]["to"], "local", "{report}");
    assert_eq!(report["vms"][0]["live"], false, "{report}");
    let back = vm(&env);
    assert_eq!((back["node"].as_str(), back["state"].as_str()), (Some("local"), Some("stopped")), "{back}");
    let n2: serde_json::Value = serde_json::from_str(&env.ok(&["node", "show", "kt-mg-n2", "-o", "json"])).unwrap();
    assert_eq!((n2["state"].as_str(), n2["vms"].as_u64()), (Some("draining"), Some(0)), "{n2}");
    assert!(!virsh2(&["list", "--all", "--name"]).lines().any(|l| l.trim() == "kt-mg"), "gone from node 2");
    assert!(!virsh2(&["vol-list", &pool]).contains("kt-mg-root"), "its volumes on node 2 are gone");
    let root1 = format!("{}/kt-mg-root.qcow2", kvmctl_testkit::env("KVMCTL_TEST_POOL_DIR"));
    let r = std::process::Command::new("qemu-io").args(["-r", "-U", "-f", "qcow2", "-c", "read -P 0x5a 1M 64k", &root1]).output().unwrap();
    assert!(r.status.success() && !String::from_utf8_lossy(&r.stdout).contains("Pattern verification failed"), "{r:?}");
    let info = std::process::Command::new("qemu-img").args(["info", "-U", "--output=json", &root1]).output().unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["full-backing-filename"], format!("{}/image-kt-mg-img.qcow2", kvmctl_testkit::env("KVMCTL_TEST_POOL_DIR")), "{info}");
    env.ok(&["vm", "start", "kt-mg"]);
    let ip = vm(&env)["ip"].as_str().unwrap().to_owned();
    assert_eq!(ssh_wait(&key, &ip).trim(), "kt-mg", "booted from its moved seed");

    env.ok(&["vm", "delete", "kt-mg"]);
    env.ok(&["node", "remove", "kt-mg-n2"]);
    let vols2 = common::node2::virsh2(&["vol-list", &kvmctl_testkit::env("KVMCTL_TEST_POOL")]);
    assert!(!vols2.contains("image-kt-mg-img."), "removing the node removes the image's copy there: {vols2}");
    env.ok(&["image", "rm", "kt-mg-img"]);
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
}
