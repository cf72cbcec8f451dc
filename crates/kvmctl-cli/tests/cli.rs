//! The `kvmctl` binary as a user runs it.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_kvmctl");

fn kvmctl(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env_remove("KVMCTL_SOCKET").env_remove("KVMCTL_URL").output().unwrap()
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(actual, expected, "{} differs; run with UPDATE_GOLDEN=1 and review the diff", path.display());
}

#[test]
fn help_texts() {
    for (args, file) in [
        (&["--help"][..], "help.txt"),
        (&["serve", "--help"][..], "help-serve.txt"),
        (&["status", "--help"][..], "help-status.txt"),
        (&["host", "--help"][..], "help-host.txt"),
        (&["host", "doctor", "--help"][..], "help-host-doctor.txt"),
        (&["host", "setup", "--help"][..], "help-host-setup.txt"),
        (&["host", "uninstall", "--help"][..], "help-host-uninstall.txt"),
        (&["image", "build", "--help"][..], "help-image-build.txt"),
        (&["image", "import", "--help"][..], "help-image-import.txt"),
        (&["vm", "--help"][..], "help-vm.txt"),
        (&["vm", "create", "--help"][..], "help-vm-create.txt"),
        (&["vm", "stop", "--help"][..], "help-vm-stop.txt"),
        (&["vm", "resize", "--help"][..], "help-vm-resize.txt"),
        (&["vm", "delete", "--help"][..], "help-vm-delete.txt"),
        (&["vm", "wait", "--help"][..], "help-vm-wait.txt"),
        (&["vm", "exec", "--help"][..], "help-vm-exec.txt"),
        (&["vm", "ssh", "--help"][..], "help-vm-ssh.txt"),
        (&["vm", "console", "--help"][..], "help-vm-console.txt"),
        (&["vm", "cp", "--help"][..], "help-vm-cp.txt"),
    ] {
        let out = kvmctl(args);
        assert!(out.status.success());
        golden(file, &String::from_utf8(out.stdout).unwrap());
    }
    let v = kvmctl(&["--version"]);
    assert_eq!(String::from_utf8(v.stdout).unwrap(), format!("kvmctl {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn status_without_a_daemon_says_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let out = kvmctl(&["--socket", sock.to_str().unwrap(), "status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: cannot reach the kvmctl daemon at") && err.contains("kvmctl serve"), "{err}");
}

/// A reader that went away before the output (a pipe into a program that is missing) ends
/// the command quietly, not with a panic about a broken pipe.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let mut fds = [0; 2];
    // SAFETY: pipe fills the two descriptors; the read end is closed at once, the write end
    // is handed to the child and owned by the `File` that closes it in the parent.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe { libc::close(fds[0]) };
    let write_end = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
    let out = std::process::Command::new(BIN).args(["host", "doctor", "--no-probe", "-o", "json"]).stdout(write_end).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    assert!(out.status.success(), "{:?} {stderr}", out.status);
}

#[test]
fn bad_output_format_names_the_choices() {
    let out = kvmctl(&["status", "-o", "xml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("table, json, yaml"), "{err}");
}

/// A daemon process, killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon(dir: &Path, uri: &str) -> Daemon {
    let sock = dir.join("k.sock");
    let child = Command::new(BIN)
        .args(["serve", "--socket", sock.to_str().unwrap(), "--database", dir.join("k.db").to_str().unwrap(), "--libvirt-uri", uri])
        .env("KVMCTL_CONFIG", dir.join("none.toml")) // never read the machine's /etc/kvmctl
        .env("KVMCTL_HOST_STATE_DIR", dir.join("host")) // nor its recorded doctor report
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let d = Daemon(child);
    for _ in 0..200 {
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            return d;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("daemon did not come up on {}", sock.display());
}

#[test]
fn serve_then_status_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("none.toml"), "").unwrap();
    let _d = daemon(dir.path(), "test:///default");
    let sock = dir.path().join("k.sock");
    let s = sock.to_str().unwrap();

    let json = kvmctl(&["--socket", s, "status", "-o", "json"]);
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["hypervisor"]["reachable"], true);
    assert_eq!(v["hypervisor"]["driver"], "TEST");
    assert_eq!(v["database"]["schema_version"], kvmctl_store_schema());
    assert_eq!((v["database"]["engine"].as_str(), v["database"]["leader"].as_bool()), (Some("sqlite"), Some(true)));

    let yaml = String::from_utf8(kvmctl(&["--socket", s, "status", "-o", "yaml"]).stdout).unwrap();
    assert!(yaml.contains("reachable: true"), "{yaml}");

    let table = String::from_utf8(kvmctl(&["--socket", s, "status"]).stdout).unwrap();
    assert!(table.contains("libvirt:") && table.contains("test:///default reachable"), "{table}");
    assert!(table.contains(&format!("database:  sqlite {}", dir.path().join("k.db").display())), "{table}");
}

#[test]
fn status_exits_1_when_libvirt_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("none.toml"), "").unwrap();
    let uri = format!("qemu+unix:///system?socket={}/nosock", dir.path().display());
    let _d = daemon(dir.path(), &uri);
    let out = kvmctl(&["--socket", dir.path().join("k.sock").to_str().unwrap(), "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stdout).unwrap().contains("UNREACHABLE"));
}

#[test]
fn openapi_command_prints_the_committed_document() {
    let out = kvmctl(&["openapi"]);
    let committed = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/kvmctl.json")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

/// The schema version this build migrates to: the highest numbered migration file.
fn kvmctl_store_schema() -> i64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kvmctl-store/migrations");
    std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.split('_').next()?.parse().ok()).max().unwrap()
}

/// Completion scripts load into their shells and complete commands; the man pages are one
/// per command and render as roff.
#[test]
fn completions_and_man_pages() {
    let bash = kvmctl(&["completion", "bash"]);
    assert!(bash.status.success());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("kvmctl.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    // What bash offers after `kvmctl vm mi<TAB>` once the script is loaded.
    let probe = format!(
        "source {}; COMP_WORDS=(kvmctl vm mi); COMP_CWORD=2; COMP_LINE='kvmctl vm mi'; COMP_POINT=${{#COMP_LINE}}; _kvmctl kvmctl mi vm; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = Command::new("bash").args(["--norc", "-c", &probe]).output().unwrap();
    let offered = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && offered.lines().any(|l| l == "migrate"), "{offered} {}", String::from_utf8_lossy(&out.stderr));
    for (shell, marker) in [("zsh", "#compdef kvmctl"), ("fish", "complete -c kvmctl")] {
        let out = kvmctl(&["completion", shell]);
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(marker), "{shell}");
    }
    let bad = kvmctl(&["completion", "tcsh"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("possible values"), "{bad:?}");

    let man = kvmctl(&["man"]);
    assert!(String::from_utf8_lossy(&man.stdout).starts_with(".ie") || String::from_utf8_lossy(&man.stdout).contains(".TH kvmctl 1"));
    let pages = dir.path().join("man");
    assert!(kvmctl(&["man", "--dir", &pages.display().to_string()]).status.success());
    for page in ["kvmctl.1", "kvmctl-vm.1", "kvmctl-vm-migrate.1", "kvmctl-agent-run.1"] {
        let text = std::fs::read_to_string(pages.join(page)).unwrap_or_default();
        assert!(text.contains(".TH "), "{page}");
    }
}
