//! `kvmctl test run` on the Debian 13 image built by `kvmctl image build debian-13`: the
//! provisioning installs a small systemd service from uploaded files (as root, through
//! sudo), and two cases woken warm from the `provisioned` memory snapshot, run at once,
//! each find it active and answering, under their own hostname, address and the host's
//! clock. The reports are read back: JUnit by a JUnit parser, Markdown with the stages.

mod common;

use common::Env;
use kvmctl_testkit::daemon::Sweep;

const IMG: &str = "kt-tr-deb";

#[test]
fn a_debian_service_provisioned_once_and_checked_in_warm_cases() {
    let image = kvmctl_testkit::env("KVMCTL_TEST_DEBIAN13_IMAGE");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let env = Env { dir: d.to_owned() };
    let _sweep = Sweep::new(&[], &[IMG]);
    let _daemon = env.serve("");
    env.ok(&["image", "import", &image, "--name", IMG]);

    let app = d.join("hello");
    std::fs::create_dir_all(app.join("www")).unwrap();
    std::fs::write(app.join("www/index.html"), "hello from a kvmctl test service\n").unwrap();
    std::fs::write(
        app.join("hello.service"),
        "[Unit]\nDescription=hello test service\nAfter=network.target\n\n[Service]\n\
         ExecStart=/usr/bin/python3 -m http.server 8080 --bind 0.0.0.0 --directory /srv/hello\nRestart=always\n\n\
         [Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    std::fs::write(
        app.join("install.sh"),
        "#!/bin/sh\nset -eu\nmkdir -p /srv/hello\ncp /var/tmp/hello/www/index.html /srv/hello/\n\
         cp /var/tmp/hello/hello.service /etc/systemd/system/\nsystemctl daemon-reload\nsystemctl enable --now hello.service\n\
         for i in $(seq 1 60); do python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/')\" 2>/dev/null && exit 0; sleep 1; done\n\
         echo 'the service did not answer' >&2; exit 1\n",
    )
    .unwrap();
    let spec = d.join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: hello\nimage: {IMG}\nsize: {{vcpus: 1, memory_mib: 1024, disk_gib: 4}}\ngrace: 30s\n\
             upload:\n  - from: hello\n    to: /var/tmp/hello\n\
             provision:\n  - name: install the hello service\n    script: hello/install.sh\n    sudo: true\n    timeout: 5m\n\
             checks:\n  - service: hello\n  - port: 8080\n\
             \x20 - name: page\n    run: python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/').read().decode())\"\n\
             \x20   expect_output: hello from a kvmctl test service\n\
             \x20 - name: identity\n    run: hostname; ip -4 -o addr show scope global; date +%s\n\
             \x20 - name: boot breakdown\n    run: systemd-analyze blame | head -15\n\
             collect:\n  - /etc/systemd/system/hello.service\n\
             cases:\n  - name: alpha\n  - name: beta\n"
        ),
    )
    .unwrap();

    let reports = d.join("reports");
    let out = env.kvmctl(&[
        "test",
        "run",
        spec.to_str().unwrap(),
        "--parallel",
        "2",
        "--from-snapshot",
        "provisioned",
        "--report-dir",
        reports.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    let md = std::fs::read_to_string(reports.join("report.md")).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "{err}\n{md}");

    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(reports.join("report.json")).unwrap()).unwrap();
    let run_id = r["run_id"].as_str().unwrap();
    let mut ips = Vec::new();
    for c in r["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        assert_eq!(c["start"], "warm");
        let identity = c["checks"].as_array().unwrap().iter().find(|k| k["name"] == "identity").unwrap()["stdout"].as_str().unwrap();
        let ip = c["ip"].as_str().unwrap();
        assert!(identity.starts_with(&format!("{run_id}-{name}\n")), "{name}: its own hostname: {identity}");
        assert!(identity.contains(&format!("inet {ip}/")), "{name}: its own address {ip}: {identity}");
        assert_eq!(identity.matches("inet ").count(), 1, "{name}: only its own address: {identity}");
        let guest_now: i64 = identity.lines().last().unwrap().trim().parse().unwrap();
        let host_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!((host_now - guest_now).abs() < 120, "{name}: the clock follows the host's ({guest_now} vs {host_now})");
        ips.push(ip.to_owned());
        assert!(reports.join(format!("artifacts/{name}-hello.service")).exists(), "collected");
    }
    assert_ne!(ips[0], ips[1]);
    let j = junit_parser::from_reader(std::io::BufReader::new(std::fs::File::open(reports.join("junit.xml")).unwrap())).unwrap();
    assert_eq!(j.suites.len(), 3);
    assert!(j.suites.iter().flat_map(|s| &s.cases).all(|c| c.status.is_success()));
    assert_eq!(j.suites.iter().map(|s| s.cases.len()).sum::<usize>(), 1 + 2 * 5);
    for stage in ["boot", "address", "ssh", "cloud-init", "provision", "snapshot provisioned"] {
        assert!(md.contains(&format!("| {stage} |")), "the Markdown has stage {stage}:\n{md}");
    }
    assert_eq!(env.ok(&["vm", "list", "-o", "json"]).trim(), "[]", "nothing is left");
}
