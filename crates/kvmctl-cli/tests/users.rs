//! Users, tokens, quotas and the audit log from the real CLI, against a `kvmctl serve`
//! process on the test libvirtd, with a second user working over HTTPS.

mod common;

use common::{Env, BIN};
use std::process::{Command, Output};

/// A self-signed certificate for 127.0.0.1, and its key, as PEM files in `dir`.
fn self_signed(dir: &std::path::Path) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().self_signed(&key).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&k, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (c.to_str().unwrap().to_owned(), k.to_str().unwrap().to_owned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `kvmctl` over HTTPS, as whoever `token` belongs to.
fn remote(url: &str, ca: Option<&str>, token: &str, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(["--url", url]).env("KVMCTL_TOKEN", token).env_remove("KVMCTL_SOCKET");
    if let Some(ca) = ca {
        c.args(["--ca-cert", ca]);
    }
    c.args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn users_tokens_quotas_and_audit_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env { dir: dir.path().to_owned() };
    let (cert, key) = self_signed(dir.path());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _d = env.serve_with("", &[("KVMCTL_LISTEN", &listen), ("KVMCTL_TLS_CERT", &cert), ("KVMCTL_TLS_KEY", &key)]);
    let url = format!("https://{listen}");

    // Root on the socket is the admin: makes a user and a token for them.
    env.ok(&["user", "create", "alice"]);
    let created: serde_json::Value =
        serde_json::from_str(&env.ok(&["token", "create", "--user", "alice", "--description", "ci", "-o", "json"])).unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let token_id = created["info"]["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("kvm_"), "{created}");
    let listed = env.ok(&["token", "list", "--user", "alice"]);
    assert!(listed.contains(&token_id) && !listed.contains(&token), "token list shows ids, never secrets:\n{listed}");
    env.ok(&["quota", "set", "alice", "--vms", "2", "--forwards", "3"]);
    let q: serde_json::Value = serde_json::from_str(&env.ok(&["quota", "show", "alice", "-o", "json"])).unwrap();
    assert_eq!((q["max_vms"].as_u64(), q["max_forwards"].as_u64(), q["used_vms"].as_u64()), (Some(2), Some(3), Some(0)), "{q}");

    // A first web console password for Alice, from stdin; a short one is refused, naming it;
    // without a terminal and without --password-stdin the CLI says what to do.
    let passwd = |input: &str, extra: &[&str]| {
        use std::io::Write;
        let mut c = Command::new(BIN)
            .arg("--socket")
            .arg(env.socket())
            .args(["user", "passwd", "alice"])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    let set = passwd("alice-first-password\n", &["--password-stdin"]);
    assert!(set.status.success() && stderr(&set).contains("next login"), "{}", stderr(&set));
    let short = passwd("short\n", &["--password-stdin"]);
    assert!(!short.status.success() && stderr(&short).contains("password"), "{}", stderr(&short));
    let no_tty = passwd("alice-first-password\n", &[]);
    assert!(!no_tty.status.success() && stderr(&no_tty).contains("--password-stdin"), "{}", stderr(&no_tty));

    // SSH keys in Alice's profile: saved from a file (labelled by its comment), listed with
    // their fingerprint, the same key refused twice, a file that is no key refused, removed.
    let pubkey = dir.path().join("id_ed25519.pub");
    std::fs::write(&pubkey, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop\n").unwrap();
    let added: serde_json::Value =
        serde_json::from_str(&env.ok(&["user", "key", "add", "alice", pubkey.to_str().unwrap(), "-o", "json"])).unwrap();
    let key_id = added[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(added[0]["name"], "alice@laptop", "{added}");
    let listed = env.ok(&["user", "key", "list", "alice"]);
    assert!(listed.contains(&key_id) && listed.contains("SHA256:"), "{listed}");
    let again = env.fails(&["user", "key", "add", "alice", pubkey.to_str().unwrap()]);
    assert!(again.contains("saved already"), "{again}");
    std::fs::write(&pubkey, "not a key at all\n").unwrap();
    let bad = env.fails(&["user", "key", "add", "alice", pubkey.to_str().unwrap()]);
    assert!(bad.contains("public_key"), "names the field: {bad}");
    env.ok(&["user", "key", "rm", "alice", &key_id]);
    assert!(!env.ok(&["user", "key", "list", "alice"]).contains(&key_id));

    // Alice over HTTPS, trusting the daemon's certificate.
    let who = remote(&url, Some(&cert), &token, &["user", "whoami", "-o", "json"]);
    assert!(who.status.success(), "{}", stderr(&who));
    let who: serde_json::Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!((who["name"].as_str(), who["role"].as_str()), (Some("alice"), Some("user")), "{who}");
    // An admin-only command names what is missing.
    let audit = remote(&url, Some(&cert), &token, &["audit", "list"]);
    assert!(!audit.status.success() && stderr(&audit).contains("admin"), "{}", stderr(&audit));
    // Without the CA file the CLI says how to trust the certificate.
    let untrusted = remote(&url, None, &token, &["user", "whoami"]);
    assert!(!untrusted.status.success() && stderr(&untrusted).contains("--ca-cert"), "{}", stderr(&untrusted));

    // Revoked: the token stops working at once.
    env.ok(&["token", "revoke", &token_id]);
    let after = remote(&url, Some(&cert), &token, &["user", "whoami"]);
    assert!(!after.status.success() && stderr(&after).contains("token"), "{}", stderr(&after));

    // The audit log has every state-changing request, with who made it.
    let log: Vec<serde_json::Value> = serde_json::from_str(&env.ok(&["audit", "list", "-o", "json"])).unwrap();
    let seen = |method: &str, path: &str| log.iter().any(|e| e["method"] == method && e["path"] == path && e["user"] == "admin");
    assert!(seen("POST", "/v1/users") && seen("POST", "/v1/tokens") && seen("PUT", "/v1/users/alice/quota"), "{log:#?}");
    assert!(seen("DELETE", &format!("/v1/tokens/{token_id}")), "{log:#?}");

    // The secret is nowhere on disk: not in the daemon's log, not in its database.
    let serve_log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(!serve_log.contains(&token), "token in serve.log");
    for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if f.file_name().to_string_lossy().starts_with("k.db") {
            let bytes = std::fs::read(f.path()).unwrap();
            assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()), "token in clear in {}", f.path().display());
        }
    }
}
