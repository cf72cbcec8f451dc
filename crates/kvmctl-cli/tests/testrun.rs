//! `kvmctl test` as a user runs it, with the real binary against a `kvmctl serve` process
//! and the tiny guest: a spec whose provisioning starts a small web service from uploaded
//! files passes with two cases in parallel, each in its own clone with its own hostname and
//! address, and reports that a JUnit parser reads; a failing check exits 1 with its output
//! and the console in both reports; warm cases from the provisioned memory snapshot pass
//! with their own address and the host's clock; a runner killed with SIGKILL leaves nothing
//! once the grace period has passed; a bad spec is refused naming the line, making nothing.

mod common;

use common::{tiny_import, Env, BIN};
use kvmctl_testkit::daemon::Sweep;
use std::path::Path;

const IMG: &str = "kt-tr-img";

/// A project to test: a page and a script that serves it with busybox httpd on port 8080,
/// and a marker the provisioning writes to the disk. (The tiny guest's root is in memory:
/// what provisioning leaves there reaches warm cases only; cold cases boot from the disk.)
fn project(dir: &Path, spec_extra: &str, cases: &str) -> std::path::PathBuf {
    let app = dir.join("app");
    std::fs::create_dir_all(app.join("www")).unwrap();
    std::fs::write(app.join("www/index.html"), "hello from kvmctl test\n").unwrap();
    std::fs::write(
        app.join("start.sh"),
        "#!/bin/sh\nset -e\nmkdir -p /srv\ncp -r /root/app/www /srv/\nhttpd -p \"$PORT\" -h /srv/www\necho started on $PORT > /var/log/app.log\n\
         printf provisioned | dd of=/dev/vda bs=1 seek=1048576 conv=notrunc 2>/dev/null\nsync\n",
    )
    .unwrap();
    let spec = format!(
        "name: web\nimage: {IMG}\nuser: root\nsize: {{vcpus: 1, memory_mib: 256, disk_gib: 1}}\ngrace: 10s\nttl: 1h\n{spec_extra}\
         upload:\n  - from: app\n    to: /root/app\n\
         provision:\n  - name: start the service\n    run: sh /root/app/start.sh\n    env: {{PORT: \"8080\"}}\n    timeout: 2m\n\
         checks:\n  - name: provisioned disk\n    run: dd if=/dev/vda bs=1 skip=1048576 count=11 2>/dev/null\n    expect_output: ^provisioned$\n\
         \x20 - name: identity\n    run: hostname; ip -4 -o addr show eth0; date +%s\n  - port: 22\n{cases}"
    );
    let path = dir.join("spec.yaml");
    std::fs::write(&path, spec).unwrap();
    path
}

/// What only a warm case still has: the service provisioning started, running.
const WEB_CHECKS: &str =
    "    checks:\n      - name: page served\n        run: wget -qO- http://127.0.0.1:8080/\n        expect_output: hello from kvmctl\n\
                          \x20     - port: 8080\n      - file: /srv/www/index.html\n";

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

fn junit(dir: &Path) -> junit_parser::TestSuites {
    junit_parser::from_reader(std::io::BufReader::new(std::fs::File::open(dir.join("junit.xml")).unwrap()))
        .expect("a JUnit parser reads it")
}

fn nothing_left(env: &Env) {
    let vms = env.ok(&["vm", "list", "-o", "json"]);
    assert_eq!(vms.trim(), "[]", "no VM is left: {vms}");
    let net = kvmctl_testkit::env("KVMCTL_TEST_NETWORK");
    let xml =
        std::process::Command::new("virsh").args(["-c", &kvmctl_testkit::env("KVMCTL_TEST_URI"), "net-dumpxml", &net]).output().unwrap();
    let xml = String::from_utf8_lossy(&xml.stdout);
    assert!(!xml.contains("name='r") && !xml.contains("name=\"r"), "no DHCP reservation of a run is left: {xml}");
    let doms = std::process::Command::new("virsh")
        .args(["-c", &kvmctl_testkit::env("KVMCTL_TEST_URI"), "list", "--all", "--name"])
        .output()
        .unwrap();
    let doms = String::from_utf8_lossy(&doms.stdout);
    assert!(!doms.lines().any(|d| d.len() > 12 && d.starts_with('r') && d.as_bytes()[11] == b'-'), "no domain of a run is left: {doms}");
}

#[test]
fn specs_run_pass_fail_warm_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env { dir: dir.path().to_owned() };
    let _sweep = Sweep::new(&[], &[IMG]);
    let _daemon = env.serve("");
    tiny_import(&env, IMG);

    // A bad spec: refused naming the line, nothing made.
    let bad = project(dir.path(), "", "cases:\n  - name: Bad_Case\n");
    let out = env.kvmctl(&["test", "run", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("spec.yaml:") && err.contains("cases[0].name"), "{err}");
    assert_eq!(env.ok(&["test", "list", "-o", "json"]).trim(), "[]");

    // Passing, two cases at once, each in its own clone.
    let spec = project(dir.path(), "", "cases:\n  - name: one\n  - name: two\n");
    let pass_dir = dir.path().join("pass");
    let out = env.kvmctl(&["test", "run", spec.to_str().unwrap(), "--parallel", "2", "--report-dir", pass_dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}\n{}", String::from_utf8_lossy(&out.stdout));
    for stage in
        ["prerequisites", "overlay+seed+start", "snapshot clean-boot", "upload", "provision", "snapshot provisioned", "cases", "cleanup"]
    {
        assert!(err.contains(&format!("{stage}: ")), "progress shows {stage}: {err}");
    }
    let r = report(&pass_dir);
    assert_eq!(r["outcome"], "passed");
    let cases = r["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    let mut ips = Vec::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let identity =
            c["checks"].as_array().unwrap().iter().find(|k| k["name"] == "identity").unwrap()["stdout"].as_str().unwrap().to_owned();
        let ip = c["ip"].as_str().unwrap().to_owned();
        assert!(identity.starts_with(&format!("{}-{name}\n", r["run_id"].as_str().unwrap())), "{name} has its own hostname: {identity}");
        assert!(identity.contains(&format!("inet {ip}/")), "{name} has its own address {ip}: {identity}");
        ips.push(ip);
    }
    assert_ne!(ips[0], ips[1]);
    let j = junit(&pass_dir);
    let suites: Vec<&str> = j.suites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(suites, ["web/provision", "web/one", "web/two"], "{suites:?}");
    assert_eq!(j.suites[1].tests, 3);
    assert!(j.suites.iter().flat_map(|s| &s.cases).all(|c| c.status.is_success()));
    let md = std::fs::read_to_string(pass_dir.join("report.md")).unwrap();
    assert!(md.contains("| one | ✅ passed") && md.contains("## Stages"), "{md}");
    let run_id = r["run_id"].as_str().unwrap().to_owned();
    let shown = env.ok(&["test", "show", &run_id]);
    assert!(shown.contains("passed") && shown.contains("case one"), "{shown}");
    nothing_left(&env);

    // A failing check: exit 1, the failure with its output and the console in both reports.
    let spec = project(dir.path(), "", "cases:\n  - name: wrong\n    checks:\n      - name: wrong marker\n        run: dd if=/dev/vda bs=1 skip=1048576 count=11 2>/dev/null\n        expect_output: goodbye\n");
    let fail_dir = dir.path().join("fail");
    let out = env.kvmctl(&["test", "run", spec.to_str().unwrap(), "--report-dir", fail_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let j = junit(&fail_dir);
    let failed: Vec<_> = j.suites.iter().flat_map(|s| &s.cases).filter(|c| c.status.is_failure()).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let junit_parser::TestStatus::Failure(f) = &failed[0].status else { unreachable!() };
    assert!(f.message.contains("does not match /goodbye/") && f.text.contains("provisioned"), "{f:?}");
    assert!(
        failed[0].system_err.as_deref().unwrap_or_default().contains("KVMCTL_TINY_READY"),
        "the console tail: {:?}",
        failed[0].system_err
    );
    let md = std::fs::read_to_string(fail_dir.join("report.md")).unwrap();
    assert!(md.contains("❌ wrong marker") && md.contains("provisioned") && md.contains("### Console"), "{md}");
    assert!(fail_dir.join("artifacts/wrong.console.log").exists());
    assert_eq!(report(&fail_dir)["outcome"], "failed");
    nothing_left(&env);

    // Warm: cases woken from the provisioned memory snapshot.
    let spec =
        project(dir.path(), "collect:\n  - /var/log/app.log\n", &format!("cases:\n  - name: w1\n{WEB_CHECKS}  - name: w2\n{WEB_CHECKS}"));
    let warm_dir = dir.path().join("warm");
    let out = env.kvmctl(&[
        "test",
        "run",
        spec.to_str().unwrap(),
        "--parallel",
        "2",
        "--from-snapshot",
        "provisioned",
        "--report-dir",
        warm_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&warm_dir);
    for c in r["cases"].as_array().unwrap() {
        assert_eq!(c["start"], "warm");
        let identity =
            c["checks"].as_array().unwrap().iter().find(|k| k["name"] == "identity").unwrap()["stdout"].as_str().unwrap().to_owned();
        let ip = c["ip"].as_str().unwrap();
        assert!(identity.contains(&format!("inet {ip}/")), "a warm case has its own address {ip}: {identity}");
        let guest_now: i64 = identity.lines().last().unwrap().trim().parse().unwrap();
        let host_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!((host_now - guest_now).abs() < 120, "a warm case's clock follows the host's: {guest_now} vs {host_now}");
        assert_eq!(c["checks"].as_array().unwrap().len(), 6, "{c}");
    }
    let log = std::fs::read_to_string(warm_dir.join("artifacts/w1-app.log")).unwrap();
    assert_eq!(log.trim(), "started on 8080", "the collected file");
    nothing_left(&env);

    // The runner killed with SIGKILL while its base VM provisions: after the grace period
    // (10 s here) the daemon has deleted everything of the run.
    let spec = project(dir.path(), "", "");
    let spec_text = std::fs::read_to_string(&spec).unwrap().replace("run: sh /root/app/start.sh", "run: sh /root/app/start.sh; sleep 600");
    std::fs::write(&spec, spec_text).unwrap();
    let mut child = std::process::Command::new(BIN)
        .arg("--socket")
        .arg(env.socket())
        .args(["test", "run", spec.to_str().unwrap(), "--report-dir", dir.path().join("killed").to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    {
        use std::io::Read;
        let mut err = child.stderr.take().unwrap();
        let mut buf = [0u8; 256];
        while !seen.contains("provision: start the service") {
            let n = err.read(&mut buf).unwrap();
            assert!(n > 0, "the runner ended early: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        std::mem::forget(err);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let runs: serde_json::Value = serde_json::from_str(&env.ok(&["test", "list", "-o", "json"])).unwrap();
    let killed = runs.as_array().unwrap().iter().find(|r| r["state"] == "running").expect("the killed run is still held").clone();
    assert_eq!(killed["vms"].as_array().unwrap().len(), 1, "{killed}");
    let id = killed["id"].as_str().unwrap();
    let mut waited = 0;
    loop {
        let shown: serde_json::Value = serde_json::from_str(&env.ok(&["test", "show", id, "-o", "json"])).unwrap();
        if shown["state"] == "abandoned" && shown["vms"].as_array().unwrap().is_empty() {
            break;
        }
        waited += 1;
        assert!(waited < 120, "the run was not reaped: {shown}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    nothing_left(&env);
    env.ok(&["test", "rm", id]);
    let left = env.ok(&["test", "list", "-o", "json"]);
    assert!(!left.contains(id), "{left}");
}
