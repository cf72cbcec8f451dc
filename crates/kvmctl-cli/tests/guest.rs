//! Guest access as a user does it, with the real binary against a `kvmctl serve` process:
//! `vm create --wait=ssh` (stages and timings shown), `vm exec` (exit status passed through),
//! `vm cp` both ways for a file and a tree, `vm ssh -- CMD`, `vm forward add|list|rm` with
//! the SSH forward from create, `network list`, `vm console --log`.

mod common;

use common::{tiny_import, Env};
use kvmctl_testkit::daemon::Sweep;

#[test]
fn create_wait_exec_cp_ssh_and_console_log() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env { dir: dir.path().to_owned() };
    let sweep = Sweep::new(&["kt-cli"], &["kt-cli-img"]);
    let _daemon = env.serve("");
    tiny_import(&env, "kt-cli-img");

    let shown =
        env.ok(&["vm", "create", "kt-cli", "--image", "kt-cli-img", "--cpus", "1", "--memory", "256M", "--disk", "1G", "--wait=ssh"]);
    for stage in ["started", "booting", "address", "ssh_port", "ssh_banner", "ssh_login"] {
        assert!(shown.lines().any(|l| l.trim_start().starts_with(stage) && l.contains("+")), "{stage} with its time in:\n{shown}");
    }

    let out = env.kvmctl(&["vm", "exec", "kt-cli", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let home = env.ok(&["vm", "exec", "kt-cli", "--", "sh", "-c", "echo $HOME"]).trim().to_owned();

    // A tree there and back.
    let src = dir.path().join("tree");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha").unwrap();
    std::fs::write(src.join("sub/b.bin"), (0..=255u8).cycle().take(300_000).collect::<Vec<u8>>()).unwrap();
    let remote = format!("kt-cli:{home}/tree");
    env.ok(&["vm", "cp", src.to_str().unwrap(), &remote]);
    let listing =
        env.ok(&["vm", "exec", "kt-cli", "--", "sh", "-c", &format!("cd {home}/tree && find . -type f | sort && wc -c < sub/b.bin")]);
    assert_eq!(listing.split_whitespace().collect::<Vec<_>>(), ["./a.txt", "./sub/b.bin", "300000"]);
    let back = dir.path().join("back");
    env.ok(&["vm", "cp", &remote, back.to_str().unwrap()]);
    assert_eq!(std::fs::read(back.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(back.join("sub/b.bin")).unwrap(), std::fs::read(src.join("sub/b.bin")).unwrap());
    let bad = env.kvmctl(&["vm", "cp", src.to_str().unwrap(), "not-a-vm-path"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("NAME:/PATH"));

    // A terminal session running one command: its output and exit status.
    let mut cmd = std::process::Command::new(common::BIN);
    cmd.arg("--socket").arg(env.socket()).args(["vm", "ssh", "kt-cli", "--", "sh", "-c", "echo via-ssh; exit 4"]);
    let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("via-ssh\r\n"), "{out:?}");
    assert_eq!(out.status.code(), Some(4), "{out:?}");

    // Forwards: the SSH one from create, one added; both reachable from the host.
    let shown = env.ok(&["vm", "show", "kt-cli"]);
    let ssh_port: u16 = shown
        .lines()
        .find(|l| l.starts_with("forwards:"))
        .and_then(|l| l.split("tcp:").nth(1))
        .and_then(|r| r.split("->").next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("an SSH forward in:\n{shown}"));
    assert!(shown.contains(&format!("ssh -p {ssh_port}")), "{shown}");
    let added: serde_json::Value =
        serde_json::from_str(&env.ok(&["vm", "forward", "add", "kt-cli", "--guest-port", "80", "-o", "json"])).unwrap();
    let http_port = added["host_port"].as_u64().unwrap();
    let listed = env.ok(&["vm", "forward", "list", "kt-cli"]);
    assert!(listed.contains(&ssh_port.to_string()) && listed.contains(&http_port.to_string()), "{listed}");
    let page =
        std::process::Command::new("busybox").args(["wget", "-q", "-O", "-", &format!("http://127.0.0.1:{http_port}/")]).output().unwrap();
    assert!(String::from_utf8_lossy(&page.stdout).contains("kvmctl tiny guest kt-cli"), "{page:?}");
    env.ok(&["vm", "forward", "rm", "kt-cli", &http_port.to_string()]);
    let bad = env.kvmctl(&["vm", "forward", "add", "kt-cli", "--guest-port", "80", "--host-port", "80"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("host_port"), "{bad:?}");
    let nets = env.ok(&["network", "list"]);
    assert!(nets.contains(&kvmctl_testkit::env("KVMCTL_TEST_NETWORK")), "{nets}");

    let log = env.ok(&["vm", "console", "kt-cli", "--log", "--lines", "200"]);
    assert!(log.contains("KVMCTL_TINY_READY"), "{log}");

    // The graphical console relayed to a local port: a VNC viewer there meets QEMU's server
    // (its RFB greeting), twice (a fresh ticket per connection).
    let mut relay = std::process::Command::new(common::BIN)
        .arg("--socket")
        .arg(env.socket())
        .args(["vm", "console", "kt-cli", "--vnc"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(relay.stdout.take().unwrap()), &mut line).unwrap();
    let addr = line.trim().strip_prefix("vnc://").unwrap_or_else(|| panic!("a vnc:// address, not {line:?}")).to_owned();
    for _ in 0..2 {
        let mut viewer = std::net::TcpStream::connect(&addr).unwrap();
        viewer.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        let mut greeting = [0u8; 12];
        std::io::Read::read_exact(&mut viewer, &mut greeting).unwrap();
        assert_eq!(&greeting, b"RFB 003.008\n");
    }
    let _ = relay.kill();
    let _ = relay.wait();

    // A data disk from the CLI, listed and removed.
    env.ok(&["vm", "disk", "add", "kt-cli", "--size", "1G", "--name", "scratch"]);
    let disks: serde_json::Value = serde_json::from_str(&env.ok(&["vm", "disk", "list", "kt-cli", "-o", "json"])).unwrap();
    assert_eq!(disks[0]["name"], "scratch");
    assert!(env.ok(&["vm", "show", "kt-cli"]).contains("scratch 1G virtio (vdc)"));
    env.ok(&["vm", "disk", "rm", "kt-cli", "scratch"]);

    env.ok(&["vm", "delete", "kt-cli"]);
    env.ok(&["image", "rm", "kt-cli-img"]);
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
}
