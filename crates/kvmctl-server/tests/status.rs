//! The daemon in-process, on a temporary socket and database, against the real libvirtd of
//! the test environment (`scripts/test.sh` exports `KVMCTL_TEST_URI`).

use kvmctl_client::{Client, ClientError};
use kvmctl_server::{Config, RunningServer};
use std::process::Command;

fn real_uri() -> String {
    std::env::var("KVMCTL_TEST_URI").expect("KVMCTL_TEST_URI is not set: run the tests with scripts/test.sh")
}

fn config(dir: &std::path::Path, uri: &str) -> Config {
    Config { socket: dir.join("kvmctl.sock"), database: dir.join("db/kvmctl.db"), libvirt_uri: uri.into(), ..Config::default() }
}

/// `virsh version` lines "Using library: libvirt X" and "Running hypervisor: QEMU Y".
fn virsh_versions(uri: &str) -> (String, String) {
    let out = Command::new("virsh").args(["-c", uri, "version"]).output().expect("virsh runs");
    assert!(out.status.success(), "virsh version failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let after = |prefix: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(prefix)).unwrap_or_else(|| panic!("{prefix} in {text}")).trim().to_owned()
    };
    let lib = after("Using library: libvirt");
    let hyp = after("Running hypervisor:");
    let hyp = hyp.split_whitespace().last().unwrap().to_owned();
    (lib, hyp)
}

#[tokio::test]
async fn status_reports_the_real_libvirt_versions() {
    let uri = real_uri();
    let dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start(&config(dir.path(), &uri)).await.unwrap();
    let client = Client::unix(&server.socket);
    let status = client.status().await.unwrap();
    let (lib, hyp) = virsh_versions(&uri);
    assert!(status.hypervisor.reachable, "{status:?}");
    assert_eq!(status.hypervisor.uri, uri);
    assert_eq!(status.hypervisor.libvirt_version.as_deref(), Some(lib.as_str()));
    assert_eq!(status.hypervisor.hypervisor_version.as_deref(), Some(hyp.as_str()));
    assert_eq!(status.hypervisor.driver.as_deref(), Some("QEMU"));
    assert_eq!(status.database.schema_version, kvmctl_store::DataStore::schema_version_known());
    assert_eq!(status.database.path, dir.path().join("db/kvmctl.db").display().to_string());
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    server.stop().await;
    assert!(!dir.path().join("kvmctl.sock").exists(), "socket removed on stop");
}

#[tokio::test]
async fn unreachable_libvirt_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("qemu+unix:///system?socket={}/no-libvirt-sock", dir.path().display());
    let server = RunningServer::start(&config(dir.path(), &uri)).await.unwrap();
    let status = Client::unix(&server.socket).status().await.unwrap();
    assert!(!status.hypervisor.reachable);
    let err = status.hypervisor.error.unwrap();
    assert!(err.contains("libvirtd") && err.contains("no-libvirt-sock"), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_get_the_error_body_and_a_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start(&config(dir.path(), "test:///default")).await.unwrap();
    let client = Client::unix(&server.socket);
    match client.get::<serde_json::Value>("/v1/nope").await {
        Err(ClientError::Api { status: 404, body }) => {
            assert_eq!(body.error, "not_found");
            assert!(body.message.contains("/v1/nope"), "{}", body.message);
            assert!(body.request_id.is_some());
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn a_second_daemon_on_the_same_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "test:///default");
    let first = RunningServer::start(&cfg).await.unwrap();
    let mut cfg2 = cfg.clone();
    cfg2.database = dir.path().join("db2/kvmctl.db");
    let err = RunningServer::start(&cfg2).await.err().expect("second daemon must fail").to_string();
    assert!(err.contains("already serving"), "{err}");
    first.stop().await;
    // A stale socket file (daemon killed) does not block the next start.
    std::os::unix::net::UnixListener::bind(&cfg.socket).unwrap();
    let again = RunningServer::start(&cfg).await.unwrap();
    again.stop().await;
}

#[tokio::test]
async fn tcp_listener_serves_the_same_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "test:///default");
    cfg.listen = Some("127.0.0.1:0".parse().unwrap());
    let server = RunningServer::start(&cfg).await.unwrap();
    let addr = server.tcp_addr.unwrap();
    let tcp = Client::http(&format!("http://{addr}")).unwrap();
    // Over TCP every request needs a token; root on the socket makes one.
    match tcp.status().await {
        Err(kvmctl_client::ClientError::Api { status: 401, body }) => assert!(body.message.contains("token"), "{body:?}"),
        other => panic!("anonymous TCP request: {other:?}"),
    }
    let token = Client::unix(&server.socket).token_create(&Default::default()).await.unwrap().token;
    let status = tcp.with_token(token).status().await.unwrap();
    assert!(status.hypervisor.reachable);
    assert_eq!(status.hypervisor.driver.as_deref(), Some("TEST"));
    server.stop().await;
}

/// A self-signed certificate for 127.0.0.1 and localhost, and its key, as PEM files.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&k, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (c, k)
}

#[tokio::test]
async fn https_listener_serves_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let mut cfg = config(dir.path(), &real_uri());
    cfg.listen = Some("127.0.0.1:0".parse().unwrap());

    // A certificate that is not one stops the start, naming the file; nothing is left bound.
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    let bad = Config { tls_cert: Some(dir.path().join("junk.pem")), tls_key: Some(key.clone()), ..cfg.clone() };
    let e = RunningServer::start(&bad).await.err().expect("a junk certificate is refused");
    let msg = anyhow_chain(&e);
    assert!(msg.contains("junk.pem") && msg.contains("no certificate"), "{msg}");
    assert!(!cfg.socket.exists(), "a refused start leaves no socket");

    cfg.tls_cert = Some(cert.clone());
    cfg.tls_key = Some(key);
    let server = RunningServer::start(&cfg).await.unwrap();
    let addr = server.tcp_addr.unwrap();
    let token = Client::unix(&server.socket).token_create(&Default::default()).await.unwrap().token;

    // Trusting the certificate: the same API, tokens required as over plain TCP.
    let https = Client::http(&format!("https://{addr}")).unwrap().with_ca_file(&cert).unwrap();
    match https.status().await {
        Err(ClientError::Api { status: 401, .. }) => {}
        other => panic!("anonymous HTTPS request: {other:?}"),
    }
    let https = https.with_token(token.clone());
    assert!(https.status().await.unwrap().hypervisor.reachable);
    assert_eq!(https.whoami().await.unwrap().name, "admin");
    // The events stream runs over TLS too (its first frame arrives at once).
    drop(https.events(None).await.unwrap());

    // Not trusting it: a TLS error that says how to trust it; the token is never sent.
    match Client::http(&format!("https://{addr}")).unwrap().with_token(token.clone()).status().await {
        Err(e @ ClientError::Tls { .. }) => assert!(e.to_string().contains("--ca-cert"), "{e}"),
        other => panic!("untrusted certificate: {other:?}"),
    }
    // Plain HTTP to the TLS port gets no API answer.
    assert!(Client::http(&format!("http://{addr}")).unwrap().with_token(token).status().await.is_err());
    // A CA file for a plain-HTTP URL is a mistake worth naming.
    assert!(Client::http(&format!("http://{addr}")).unwrap().with_ca_file(&cert).is_err());
    server.stop().await;
}

fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

#[tokio::test]
async fn host_report_and_the_domain_type_it_implies() {
    use kvmctl_server::config::DomainTypeSetting;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "test:///default");
    cfg.host_state_dir = dir.path().join("host");
    let server = RunningServer::start(&cfg).await.unwrap();
    let client = Client::unix(&server.socket);

    // No doctor report yet: 404 that says what to run, and TCG as the safe default.
    match client.get::<serde_json::Value>("/v1/host").await {
        Err(ClientError::Api { status: 404, body }) => assert!(body.message.contains("kvmctl host doctor"), "{}", body.message),
        other => panic!("{other:?}"),
    }
    let s = client.status().await.unwrap();
    assert_eq!(s.hypervisor.domain_type, "qemu");
    assert!(s.hypervisor.domain_type_source.starts_with("default"), "{}", s.hypervisor.domain_type_source);

    // A recorded verdict decides.
    std::fs::create_dir_all(&cfg.host_state_dir).unwrap();
    let report = kvmctl_types::api::DoctorReport {
        domain_type: "kvm".into(),
        kvm_verdict: Some(kvmctl_types::api::KvmVerdict::Functional),
        checks: vec![kvmctl_types::api::Check {
            id: "kvm.functional".into(),
            status: kvmctl_types::api::CheckStatus::Ok,
            evidence: "KVM works: the probe guest reached its marker in 0.05 s".into(),
            fix: String::new(),
            blocks: false,
        }],
        blocking_failures: vec![],
        checked_at: Some("2026-11-22T06:00:00Z".into()),
    };
    std::fs::write(cfg.host_state_dir.join("doctor.json"), serde_json::to_string(&report).unwrap()).unwrap();
    let got: kvmctl_types::api::DoctorReport = client.get("/v1/host").await.unwrap();
    assert_eq!(got, report);
    let s = client.status().await.unwrap();
    assert_eq!(s.hypervisor.domain_type, "kvm");
    assert!(s.hypervisor.domain_type_source.contains("KVM works"), "{}", s.hypervisor.domain_type_source);
    server.stop().await;

    // Configuration beats the verdict.
    cfg.domain_type = DomainTypeSetting::Qemu;
    let server = RunningServer::start(&cfg).await.unwrap();
    let s = Client::unix(&server.socket).status().await.unwrap();
    assert_eq!((s.hypervisor.domain_type.as_str(), s.hypervisor.domain_type_source.starts_with("configuration")), ("qemu", true));
    server.stop().await;
}
