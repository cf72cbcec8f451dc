//! Users, tokens, roles, quotas and the audit log against the real daemon (over TCP with
//! tokens, and root on the unix socket) and the real libvirtd:
//! - the authorization coverage test: every endpoint of the OpenAPI document, as anonymous,
//!   another user, the owner and an admin, with the outcome its rule says; an endpoint
//!   without a rule fails the test;
//! - 200 concurrent creates by one user whose quota allows N: exactly N succeed;
//! - two users never see each other's VMs or networks; tokens are stored and logged only as
//!   hashes; revoked, expired-looking and disabled credentials are refused;
//! - a corpus of bad input against every create and update endpoint changes nothing.

use kvmctl_client::{Client, ClientError};
use kvmctl_server::{Config, RunningServer};
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{
    ErrorBody, ForwardCreateRequest, NetworkCreateRequest, QuotaSetRequest, TokenCreateRequest, UserCreateRequest, UserUpdateRequest,
    VmCreateRequest,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn api_err(e: ClientError) -> (u16, ErrorBody) {
    match e {
        ClientError::Api { status, body } => (status, body),
        other => panic!("expected an API error, got {other}"),
    }
}

struct Tenants {
    server: RunningServer,
    cfg: Config,
    /// Root on the unix socket: the built-in admin.
    root: Client,
    /// Over TCP with tokens.
    anon: Client,
    admin: Client,
    alice: Client,
    bob: Client,
    alice_token: String,
}

async fn tenants(d: &std::path::Path) -> Tenants {
    let mut cfg = daemon::config(d);
    cfg.listen = Some("127.0.0.1:0".parse().unwrap());
    let (server, root) = daemon::start(&cfg).await;
    let url = format!("http://{}", server.tcp_addr.unwrap());
    let anon = Client::http(&url).unwrap();
    for name in ["alice", "bob"] {
        root.user_create(&UserCreateRequest { name: name.into(), ..Default::default() }).await.unwrap();
    }
    let token = |user: &str| {
        let root = root.clone();
        let user = user.to_owned();
        async move {
            root.token_create(&TokenCreateRequest { user: Some(user), description: Some("test".into()), ..Default::default() })
                .await
                .unwrap()
                .token
        }
    };
    let admin_token = token("admin").await;
    let alice_token = token("alice").await;
    let bob_token = token("bob").await;
    Tenants {
        admin: anon.clone().with_token(admin_token),
        alice: anon.clone().with_token(alice_token.clone()),
        bob: anon.clone().with_token(bob_token),
        anon,
        root,
        server,
        cfg,
        alice_token,
    }
}

#[tokio::test]
async fn credentials_are_checked_and_tokens_kept_only_as_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let t = tenants(dir.path()).await;

    // No token over TCP: 401 saying how to get one.
    let (s, body) = api_err(t.anon.status().await.unwrap_err());
    assert!(s == 401 && body.error == "unauthenticated" && body.message.contains("token"), "{body:?}");
    let (s, _) = api_err(t.anon.clone().with_token("kvm_000000000000_nope").status().await.unwrap_err());
    assert_eq!(s, 401);
    let (s, _) = api_err(t.anon.clone().with_token("garbage").vm_list().await.unwrap_err());
    assert_eq!(s, 401);
    assert_eq!(t.alice.whoami().await.unwrap().name, "alice");
    assert_eq!(t.root.whoami().await.unwrap().role, "admin", "root on the socket is the admin");

    // The secret is in no database row and no file of the daemon's directory.
    let secret = t.alice_token.rsplit('_').next().unwrap().to_owned();
    let hay = match &t.cfg.database_url {
        // PostgreSQL: every row of the database, as pg_dump writes them.
        Some(url) => {
            let out = std::process::Command::new("pg_dump").args(["--data-only", url]).output().unwrap();
            assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        }
        None => {
            let db = std::fs::read(&t.cfg.database).unwrap();
            let wal = std::fs::read(t.cfg.database.with_extension("db-wal")).unwrap_or_default();
            [db, wal].concat()
        }
    };
    assert!(hay.windows(5).any(|w| w == b"alice"), "the dump holds the users");
    assert!(!hay.windows(secret.len()).any(|w| w == secret.as_bytes()), "the token's secret is stored in clear");
    let listed = t.alice.token_list(None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(serde_json::to_string(&listed).unwrap().find(&secret).is_none());
    assert_eq!(format!("{:?}", t.alice).find(&secret), None, "the client's Debug hides the token");

    // A token for another user is for admins; users make their own.
    let (s, _) = api_err(t.alice.token_create(&TokenCreateRequest { user: Some("bob".into()), ..Default::default() }).await.unwrap_err());
    assert_eq!(s, 403);
    let own = t.alice.token_create(&TokenCreateRequest { expires_in_days: Some(1), ..Default::default() }).await.unwrap();
    assert!(own.info.expires_at.is_some() && own.info.user == "alice");
    let (s, body) =
        api_err(t.alice.token_create(&TokenCreateRequest { expires_in_days: Some(0), ..Default::default() }).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("expires_in_days"), "{body:?}");

    // Revoked: refused at once. Bob cannot revoke Alice's token (it does not exist for him).
    let alice2 = t.anon.clone().with_token(own.token.clone());
    assert_eq!(alice2.whoami().await.unwrap().name, "alice");
    assert_eq!(api_err(t.bob.token_revoke(&own.info.id).await.unwrap_err()).0, 404);
    t.alice.token_revoke(&own.info.id).await.unwrap();
    let (s, body) = api_err(alice2.whoami().await.unwrap_err());
    assert!(s == 401 && body.message.contains("revoked"), "{body:?}");

    // Disabled: every token of the user stops working; enabled again, they work.
    t.admin.user_update("bob", &UserUpdateRequest { disabled: Some(true), ..Default::default() }).await.unwrap();
    let (s, body) = api_err(t.bob.whoami().await.unwrap_err());
    assert!(s == 401 && body.message.contains("disabled"), "{body:?}");
    t.admin.user_update("bob", &UserUpdateRequest { disabled: Some(false), ..Default::default() }).await.unwrap();
    assert_eq!(t.bob.whoami().await.unwrap().name, "bob");
    let (s, _) = api_err(t.root.user_update("admin", &UserUpdateRequest { disabled: Some(true), ..Default::default() }).await.unwrap_err());
    assert_eq!(s, 409, "an admin cannot lock themselves out");

    // Users see themselves only; admins see everyone.
    assert_eq!(api_err(t.alice.user_get("bob").await.unwrap_err()).0, 404);
    assert_eq!(api_err(t.alice.user_list().await.unwrap_err()).0, 403);
    assert_eq!(t.admin.user_list().await.unwrap().len(), 3);

    // Every state-changing request is in the audit log, who and what, failures included.
    let log = t.admin.audit_list(None, None, Some(1000)).await.unwrap();
    assert!(log.iter().any(|a| a.user.as_deref() == Some("bob") && a.method == "DELETE" && a.outcome == "not_found"), "{log:?}");
    assert!(log.iter().any(|a| a.user.as_deref() == Some("alice") && a.path.starts_with("/v1/tokens") && a.status == 201));
    assert!(log.iter().all(|a| a.method != "GET"));
    let alices = t.admin.audit_list(Some("alice"), None, None).await.unwrap();
    assert!(!alices.is_empty() && alices.iter().all(|a| a.user.as_deref() == Some("alice")));
    assert_eq!(api_err(t.alice.audit_list(None, None, None).await.unwrap_err()).0, 403);
    t.server.stop().await;
}

/// What an endpoint allows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    /// Any authenticated caller.
    Any,
    /// Admins only: users get 403.
    Admin,
    /// The resource's owner and admins; anyone else gets 404 (it does not exist for them).
    Owned,
    /// Anyone, without a token (logging in): nobody gets 401 or 403 for who they are.
    Public,
    /// A console WebSocket that also needs a ticket: without a token 401; with one and a
    /// ticket that is not theirs, everyone gets the same 403 (which says nothing of the VM).
    Ticket,
}

/// How to call one endpoint in the coverage test.
struct Call {
    rule: Rule,
    query: &'static str,
    body: Option<Value>,
    /// A WebSocket endpoint (called with an upgrade).
    ws: bool,
    /// A server-sent event stream (only its response head is read).
    sse: bool,
}

fn call(rule: Rule) -> Call {
    Call { rule, query: "", body: None, ws: false, sse: false }
}

fn with_body(rule: Rule, body: Value) -> Call {
    Call { rule, query: "", body: Some(body), ws: false, sse: false }
}

/// Every endpoint and its rule. A new endpoint needs an entry here, or the test fails.
fn rules() -> BTreeMap<&'static str, Call> {
    use Rule::*;
    let mut m = BTreeMap::new();
    m.insert("GET /v1/status", call(Any));
    m.insert("GET /v1/host", call(Admin));
    m.insert("GET /v1/whoami", call(Any));
    // A login with neither a password nor a token: 400 for everyone.
    m.insert("POST /v1/session", with_body(Public, json!({})));
    m.insert("GET /v1/session", call(Any));
    // With a bearer token there is no web console session to end: 400.
    m.insert("DELETE /v1/session", call(Any));
    m.insert("PUT /v1/users/{name}/password", with_body(Owned, json!({"password": "short"})));
    m.insert("GET /v1/events", Call { rule: Any, query: "", body: None, ws: false, sse: true });
    m.insert("GET /v1/images", call(Any));
    m.insert("POST /v1/images", with_body(Admin, json!({"name": "kt-az-never", "source": "/nonexistent.qcow2"})));
    m.insert("GET /v1/images/{name}", call(Any));
    m.insert("DELETE /v1/images/{name}", call(Admin));
    m.insert("GET /v1/pools", call(Admin));
    m.insert("POST /v1/pools", with_body(Admin, json!({"name": "Bad_Name", "kind": "dir", "path": "/srv/x"})));
    m.insert("GET /v1/pools/{name}", call(Admin));
    // The daemon's own pool: refused (409) once the caller is known to be an admin.
    m.insert("DELETE /v1/pools/{name}", call(Admin));
    m.insert("GET /v1/plans", call(Any));
    m.insert(
        "POST /v1/plans",
        with_body(Admin, json!({"name": "kt-az", "vcpus": 1, "memory_mib": 512, "disk_gib": 1, "price_hourly": "x"})),
    );
    m.insert("GET /v1/plans/{name}", call(Any));
    m.insert("PATCH /v1/plans/{name}", with_body(Admin, json!({})));
    m.insert("GET /v1/users", call(Admin));
    m.insert("POST /v1/users", with_body(Admin, json!({"name": "Bad_Name"})));
    m.insert("GET /v1/users/{name}", call(Owned));
    m.insert("PATCH /v1/users/{name}", with_body(Admin, json!({"custom_sizing": true})));
    m.insert("GET /v1/users/{name}/quota", call(Owned));
    m.insert("PUT /v1/users/{name}/quota", with_body(Admin, json!({})));
    m.insert("GET /v1/users/{name}/ssh-keys", call(Owned));
    m.insert("POST /v1/users/{name}/ssh-keys", with_body(Owned, json!({"name": "laptop", "public_key": "not a key"})));
    m.insert("DELETE /v1/users/{name}/ssh-keys/{id}", call(Owned));
    m.insert("GET /v1/tokens", call(Any));
    m.insert("POST /v1/tokens", with_body(Any, json!({"description": "coverage"})));
    m.insert("DELETE /v1/tokens/{id}", call(Owned));
    m.insert("GET /v1/audit", call(Admin));
    m.insert("GET /v1/port-pools", call(Any));
    m.insert("GET /v1/usage", call(Any));
    m.insert("GET /metrics", call(Admin));
    // Admins only; with the default grace period the clean removes nothing first seen now,
    // so it cannot touch the other tests' VMs in flight on the shared libvirtd.
    m.insert("GET /v1/gc", call(Admin));
    m.insert("POST /v1/gc", call(Admin));
    m.insert("GET /v1/nodes", call(Admin));
    m.insert("POST /v1/nodes", with_body(Admin, json!({"name": "kt-az-node", "uri": "http://not-libvirt"})));
    m.insert("GET /v1/nodes/{name}", call(Admin));
    m.insert("PATCH /v1/nodes/{name}", with_body(Admin, json!({})));
    m.insert("DELETE /v1/nodes/{name}", call(Admin));
    // On a node that does not exist (an evacuation of `local` would drain it): 404 for admins.
    m.insert("POST /v1/nodes/{name}/evacuate", call(Admin));
    m.insert("GET /v1/networks", call(Any));
    m.insert("POST /v1/networks", with_body(Any, json!({"name": "kt-az-never", "subnet": "not-a-subnet"})));
    m.insert("GET /v1/networks/{name}", call(Owned));
    m.insert("DELETE /v1/networks/{name}", call(Owned));
    m.insert("GET /v1/vms", call(Any));
    m.insert("POST /v1/vms", with_body(Any, json!({"name": "kt-az-never", "image": "no-such-image", "plan": "micro"})));
    m.insert("GET /v1/vms/{name}", call(Owned));
    m.insert("DELETE /v1/vms/{name}", call(Owned));
    m.insert("POST /v1/vms/{name}/start", with_body(Owned, json!({})));
    m.insert("POST /v1/vms/{name}/stop", with_body(Owned, json!({"force": true})));
    m.insert("POST /v1/vms/{name}/reboot", with_body(Owned, json!({})));
    m.insert("POST /v1/vms/{name}/resize", with_body(Owned, json!({})));
    m.insert("PUT /v1/vms/{name}/labels", with_body(Owned, json!({"labels": {"role": "kt"}})));
    // Admins only, before the VM is looked up; to no node: 400 for admins.
    m.insert("POST /v1/vms/{name}/migrate", with_body(Admin, json!({"to": "kt-az-nowhere"})));
    m.insert("GET /v1/vms/{name}/wait", Call { rule: Owned, query: "?for=running&timeout_seconds=1", body: None, ws: false, sse: false });
    m.insert("POST /v1/vms/{name}/exec", with_body(Owned, json!({"command": "true", "timeout_seconds": 5})));
    m.insert("GET /v1/vms/{name}/console", Call { rule: Owned, query: "", body: None, ws: true, sse: false });
    m.insert("GET /v1/vms/{name}/console/log", Call { rule: Owned, query: "?lines=5", body: None, ws: false, sse: false });
    m.insert("POST /v1/vms/{name}/console/ticket", with_body(Owned, json!({"kind": "serial"})));
    let ticket = "?ticket=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    m.insert("GET /v1/vms/{name}/console/serial", Call { rule: Ticket, query: ticket, body: None, ws: true, sse: false });
    m.insert("GET /v1/vms/{name}/console/vnc", Call { rule: Ticket, query: ticket, body: None, ws: true, sse: false });
    m.insert("GET /v1/vms/{name}/ssh", Call { rule: Owned, query: "?cols=80&rows=24", body: None, ws: true, sse: false });
    m.insert("GET /v1/vms/{name}/files", Call { rule: Owned, query: "?path=/tmp", body: None, ws: false, sse: false });
    m.insert("PUT /v1/vms/{name}/files", Call { rule: Owned, query: "?path=/tmp/kt", body: None, ws: false, sse: false });
    m.insert("GET /v1/vms/{name}/forwards", call(Owned));
    m.insert("POST /v1/vms/{name}/forwards", with_body(Owned, json!({"guest_port": 80})));
    m.insert("DELETE /v1/vms/{name}/forwards/{protocol}/{host_port}", call(Owned));
    m.insert("GET /v1/vms/{name}/disks", call(Owned));
    // Bad sizes: refused (400) once the VM is found; no disk is made.
    m.insert("POST /v1/vms/{name}/disks", with_body(Owned, json!({"size_gib": 0})));
    m.insert("PATCH /v1/vms/{name}/disks/{disk}", with_body(Owned, json!({"size_gib": 2})));
    m.insert("DELETE /v1/vms/{name}/disks/{disk}", call(Owned));
    m.insert("GET /v1/vms/{name}/shares", call(Owned));
    // Admins only (403 for the owner too); the daemon has no share_roots: refused (400).
    m.insert("POST /v1/vms/{name}/shares", with_body(Admin, json!({"source": "/srv", "tag": "t"})));
    m.insert("DELETE /v1/vms/{name}/shares/{tag}", call(Owned));
    m.insert("GET /v1/vms/{name}/snapshots", call(Owned));
    m.insert("POST /v1/vms/{name}/snapshots", with_body(Owned, json!({"name": "kt-az-snap"})));
    m.insert("POST /v1/vms/{name}/snapshots/{snapshot}/revert", with_body(Owned, json!({})));
    m.insert("DELETE /v1/vms/{name}/snapshots/{snapshot}", call(Owned));
    // A clone named like its source is refused (400) after the source is found: no VM is made.
    m.insert("POST /v1/vms/{name}/clone", with_body(Owned, json!({"name": "kt-az-vm"})));
    m.insert("GET /v1/vms/{name}/export", call(Owned));
    // Not an archive: refused (400) once the caller is known.
    m.insert("POST /v1/restore", Call { rule: Any, query: "?name=kt-az-restored", body: Some(json!({})), ws: false, sse: false });
    m.insert("GET /v1/test-runs", call(Any));
    // A bad name: refused (400) once the caller is known; no run is opened.
    m.insert("POST /v1/test-runs", with_body(Any, json!({"name": "Bad_Name"})));
    m.insert("GET /v1/test-runs/{id}", call(Owned));
    m.insert("POST /v1/test-runs/{id}/heartbeat", with_body(Owned, json!({})));
    // A bad state: refused (400) after the run is found.
    m.insert("POST /v1/test-runs/{id}/finish", with_body(Owned, json!({"state": "bogus"})));
    m.insert("DELETE /v1/test-runs/{id}", call(Owned));
    m
}

/// Runs one call as `who`; the status and error body.
async fn run(client: &Client, method: &str, path: &str, c: &Call) -> (u16, Option<ErrorBody>) {
    if c.sse {
        return match client.events(None).await {
            Ok(_) => (200, None),
            Err(ClientError::Api { status, body }) => (status, Some(body)),
            Err(e) => panic!("{method} {path}: {e}"),
        };
    }
    if c.ws {
        return match client.terminal(path).await {
            Ok(_) => (101, None),
            Err(ClientError::Api { status, body }) => (status, Some(body)),
            Err(e) => panic!("{method} {path}: {e}"),
        };
    }
    let body = c.body.as_ref().map(|b| serde_json::to_vec(b).unwrap());
    let (status, bytes) = client.request(method.parse().unwrap(), path, body).await.unwrap();
    (status.as_u16(), serde_json::from_slice(&bytes).ok())
}

#[tokio::test]
async fn every_endpoint_authorizes_every_kind_of_caller() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-az-vm", "kt-az-d1", "kt-az-d2"], &["kt-az-img"]).with_networks(&["kt-az-n0", "kt-az-n1", "kt-az-n2"]);
    let t = tenants(d).await;
    daemon::tiny_image(&t.root, d, "kt-az-img").await;
    // Alice's resources: a VM (stopped), VMs and networks to delete, tokens to revoke.
    let vm = |name: &str| VmCreateRequest { no_start: true, ..daemon::tiny_vm(name, "kt-az-img", vec![]) };
    let owned = t.alice.vm_create(&vm("kt-az-vm")).await.unwrap();
    let ssh_port = owned.forwards[0].host_port;
    for n in ["kt-az-d1", "kt-az-d2"] {
        t.alice.vm_create(&vm(n)).await.unwrap();
    }
    let tag = std::process::id() % 200;
    for (i, n) in ["kt-az-n0", "kt-az-n1", "kt-az-n2"].iter().enumerate() {
        let req = NetworkCreateRequest {
            name: n.to_string(),
            subnet: format!("10.{}.{}.0/24", 201 + i, tag),
            isolated: true,
            ..Default::default()
        };
        t.alice.network_create(&req).await.unwrap();
    }
    let mut alice_runs = Vec::new();
    for _ in 0..2 {
        let req = kvmctl_types::api::TestRunCreateRequest { name: "kt-az-run".into(), grace_seconds: Some(3600) };
        alice_runs.push(t.alice.test_run_create(&req).await.unwrap().id);
    }
    let mut alice_tokens = Vec::new();
    for _ in 0..2 {
        alice_tokens.push(t.alice.token_create(&TokenCreateRequest::default()).await.unwrap().info.id);
    }

    // The endpoints, as the router serves them (its one route list): a route missing from
    // the OpenAPI document cannot escape this test.
    let mut endpoints: Vec<(String, String)> = kvmctl_server::route_list().into_iter().map(|(m, p)| (m, p.to_owned())).collect();
    // Deletes last, so the other calls find their resources.
    endpoints.sort_by_key(|(m, p)| (m == "DELETE", p.clone()));
    let rules = rules();
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    for (method, template) in &endpoints {
        let key = format!("{method} {template}");
        let Some(c) = rules.get(key.as_str()) else {
            missing.push(key);
            continue;
        };
        for (who, client) in [("anonymous", &t.anon), ("other", &t.bob), ("owner", &t.alice), ("admin", &t.admin)] {
            // Deletes take a resource of their own per caller that may succeed.
            let vm_name = match (method.as_str(), template.as_str(), who) {
                ("DELETE", "/v1/vms/{name}", "admin") => "kt-az-d2",
                ("DELETE", "/v1/vms/{name}", _) => "kt-az-d1",
                _ => "kt-az-vm",
            };
            let net = match (method.as_str(), who) {
                ("DELETE", "admin") => "kt-az-n2",
                ("DELETE", _) => "kt-az-n1",
                _ => "kt-az-n0",
            };
            let token_id = if who == "admin" { &alice_tokens[1] } else { &alice_tokens[0] };
            let run_id = if who == "admin" { &alice_runs[1] } else { &alice_runs[0] };
            let path = template
                .replace("/v1/test-runs/{id}", &format!("/v1/test-runs/{run_id}"))
                .replace("/v1/vms/{name}", &format!("/v1/vms/{vm_name}"))
                .replace("/v1/networks/{name}", &format!("/v1/networks/{net}"))
                .replace("/v1/users/{name}", "/v1/users/alice")
                .replace("/v1/plans/{name}", "/v1/plans/micro")
                .replace("/v1/images/{name}", "/v1/images/kt-az-img")
                .replace("/v1/pools/{name}", &format!("/v1/pools/{}", kvmctl_testkit::env("KVMCTL_TEST_POOL")))
                .replace("/v1/nodes/{name}/evacuate", "/v1/nodes/kt-az-nowhere/evacuate")
                .replace("/v1/nodes/{name}", "/v1/nodes/local")
                .replace("{id}", token_id)
                .replace("{protocol}", "tcp")
                .replace("{host_port}", &ssh_port.to_string())
                .replace("{snapshot}", "kt-az-snap")
                .replace("{disk}", "data1")
                .replace("{tag}", "t")
                + c.query;
            let (status, body) = run(client, method, &path, c).await;
            let message = body.as_ref().map(|b| b.message.clone()).unwrap_or_default();
            // A 404 that hides the path's own resource from the caller.
            let hidden = status == 404 && ["vm ", "network ", "user ", "token ", "test run "].iter().any(|k| message.starts_with(k));
            let ok = match (c.rule, who) {
                (Rule::Public, _) => status != 401 && status != 403,
                (Rule::Ticket, "anonymous") => status == 401,
                (Rule::Ticket, _) => status == 403 && message.contains("console ticket is unknown, used or expired"),
                (_, "anonymous") => status == 401,
                (Rule::Admin, "other" | "owner") => status == 403,
                (Rule::Owned, "other") => status == 404 && hidden,
                _ => status != 401 && status != 403 && !hidden,
            };
            if !ok {
                wrong.push(format!("{method} {path} as {who}: {status} {message}"));
            }
        }
    }
    assert!(missing.is_empty(), "endpoints without an authorization rule (add them to rules()): {missing:#?}");
    let stale: Vec<_> = rules.keys().filter(|k| !endpoints.iter().any(|(m, p)| &format!("{m} {p}") == *k)).collect();
    assert!(stale.is_empty(), "rules for endpoints that do not exist: {stale:?}");
    assert!(wrong.is_empty(), "authorization outcomes differ from the rules:\n{}", wrong.join("\n"));

    // What each one sees in lists.
    assert!(t.bob.vm_list().await.unwrap().is_empty());
    assert!(t.bob.network_list().await.unwrap().iter().all(|n| !n.name.starts_with("kt-az")));
    assert!(t.alice.vm_list().await.unwrap().iter().all(|v| v.owner == "alice"));
    assert!(t.admin.vm_list().await.unwrap().iter().any(|v| v.name == "kt-az-vm"));
    // Bob cannot put a VM on Alice's network.
    let (s, body) = api_err(t.bob.vm_create(&VmCreateRequest { network: Some("kt-az-n0".into()), ..vm("kt-az-never") }).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("network"), "{body:?}");

    for v in t.root.vm_list().await.unwrap() {
        t.root.vm_delete(&v.name, false).await.unwrap();
    }
    for n in ["kt-az-n0", "kt-az-n1", "kt-az-n2"] {
        let _ = t.root.network_delete(n).await;
    }
    t.root.image_delete("kt-az-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    t.server.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_creates_get_exactly_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names: Vec<String> = (0..200).map(|i| format!("kt-q-{i}")).collect();
    let sweep = Sweep::new(&names.iter().map(String::as_str).collect::<Vec<_>>(), &["kt-q-img"]);
    let t = tenants(d).await;
    daemon::tiny_image(&t.root, d, "kt-q-img").await;
    const N: u64 = 5;
    t.admin.quota_set("alice", &QuotaSetRequest { max_vms: Some(N), ..Default::default() }).await.unwrap();
    let tasks: Vec<_> = names
        .iter()
        .map(|n| {
            let c = t.alice.clone();
            let req = VmCreateRequest { no_start: true, no_ssh_forward: true, ..daemon::tiny_vm(n, "kt-q-img", vec![]) };
            tokio::spawn(async move { c.vm_create(&req).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let made = results.iter().filter(|r| r.is_ok()).count() as u64;
    // Which five win is up to the scheduler.
    let one = results.iter().find_map(|r| r.as_ref().ok()).map(|v| v.name.clone()).expect("some create succeeded");
    let mut refusals = Vec::new();
    for r in results.into_iter().filter_map(Result::err) {
        refusals.push(api_err(r));
    }
    assert_eq!(made, N, "exactly the quota; refusals: {:?}", refusals.iter().take(3).collect::<Vec<_>>());
    for (s, body) in &refusals {
        assert_eq!((*s, body.error.as_str()), (403, "quota_exceeded"), "{body:?}");
        assert!(body.message.contains("vms") && body.message.contains("limit 5, in use 5, requested 1"), "{body:?}");
    }
    let q = t.alice.quota_get("alice").await.unwrap();
    assert_eq!((q.used_vms, q.max_vms), (N, Some(N)));
    assert_eq!(t.alice.vm_list().await.unwrap().len() as u64, N);

    // Sizes count too, and a user without custom sizing must pick a plan.
    t.admin.quota_set("alice", &QuotaSetRequest { max_vms: Some(100), max_vcpus: Some(N + 1), ..Default::default() }).await.unwrap();
    let big = VmCreateRequest { vcpus: Some(2), no_start: true, ..daemon::tiny_vm("kt-q-199", "kt-q-img", vec![]) };
    let (s, body) = api_err(t.alice.vm_create(&big).await.unwrap_err());
    assert!(s == 403 && body.message.contains("vcpus") && body.message.contains("requested 2"), "{body:?}");
    t.admin.user_update("bob", &UserUpdateRequest { custom_sizing: Some(false), ..Default::default() }).await.unwrap();
    let (s, body) = api_err(t.bob.vm_create(&daemon::tiny_vm("kt-q-198", "kt-q-img", vec![])).await.unwrap_err());
    assert!(s == 403 && body.message.contains("plan"), "{body:?}");
    // Forwards are a quota too.
    t.admin.quota_set("alice", &QuotaSetRequest { max_forwards: Some(1), ..Default::default() }).await.unwrap();
    t.alice.forward_create(&one, &ForwardCreateRequest { guest_port: 80, ..Default::default() }).await.unwrap();
    let (s, body) =
        api_err(t.alice.forward_create(&one, &ForwardCreateRequest { guest_port: 81, ..Default::default() }).await.unwrap_err());
    assert!(s == 403 && body.message.contains("forwards"), "{body:?}");

    for v in t.root.vm_list().await.unwrap() {
        t.root.vm_delete(&v.name, false).await.unwrap();
    }
    t.root.image_delete("kt-q-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    t.server.stop().await;
}

/// Inputs no create or update endpoint may accept.
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let mut c: Vec<(&'static str, Vec<u8>)> = vec![
        ("malformed JSON", b"{\"name\": ".to_vec()),
        ("not an object", b"[1, 2, 3]".to_vec()),
        ("a bare string", b"\"vm\"".to_vec()),
        ("oversized body", [b"{\"name\": \"".as_slice(), &vec![b'a'; 3 << 20], b"\"}"].concat()),
        ("empty body", Vec::new()),
        ("nested too deep", ("[".repeat(10_000) + &"]".repeat(10_000)).into_bytes()),
    ];
    c.push(("unknown field", br#"{"name": "kt-bad", "unexpected": true}"#.to_vec()));
    c
}

/// Bodies that are JSON of the right shape but with bad values, per field kind.
fn bad_values() -> Vec<(&'static str, Value)> {
    vec![
        ("negative size", json!(-1)),
        ("absurd size", json!(18_446_744_073_709_551_615u64)),
        ("float for an integer", json!(1.5)),
        ("control characters", json!("kt\u{0007}bad\n")),
        ("XML metacharacters", json!("kt<bad>&'\"")),
        ("YAML metacharacters", json!("kt: bad\n- x")),
        ("path-like", json!("../../etc/passwd")),
        ("empty", json!("")),
        ("very long", json!("a".repeat(10_000))),
        ("a map of bad keys and values", json!({"kt<bad>&'\"": "x\n", "k": "a".repeat(10_000), "../../etc": ""})),
    ]
}

#[tokio::test]
async fn bad_input_is_refused_by_every_create_and_update_endpoint_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-bi-vm"], &["kt-bi-img"]);
    let t = tenants(d).await;
    daemon::tiny_image(&t.root, d, "kt-bi-img").await;
    t.root.vm_create(&VmCreateRequest { no_start: true, ..daemon::tiny_vm("kt-bi-vm", "kt-bi-img", vec![]) }).await.unwrap();
    // Each endpoint with a valid body, and the fields whose values the corpus replaces.
    let endpoints: Vec<(&str, &str, Value, Vec<&str>)> = vec![
        (
            "POST",
            "/v1/vms",
            json!({"name": "kt-bi-new", "image": "kt-bi-img", "vcpus": 1, "memory_mib": 256, "disk_gib": 1, "no_start": true}),
            vec![
                "name",
                "image",
                "vcpus",
                "memory_mib",
                "disk_gib",
                "network",
                "user",
                "firmware",
                "tpm",
                "plan",
                "placement",
                "node_labels",
                "install_iso",
                "extra_isos",
                "profile",
                "unattend",
                "shares",
                "labels",
            ],
        ),
        (
            "POST",
            "/v1/networks",
            json!({"name": "kt-bi-net", "subnet": "10.250.1.0/24", "isolated": true}),
            vec!["name", "subnet", "dhcp_range", "labels"],
        ),
        ("POST", "/v1/images", json!({"name": "kt-bi-new", "source": "/nonexistent"}), vec!["name", "source", "kind", "pool"]),
        (
            "POST",
            "/v1/pools",
            json!({"name": "kt-bi-pool", "kind": "dir", "path": "/nonexistent/kt-bi-pool"}),
            vec!["name", "kind", "path", "volume_group", "devices"],
        ),
        (
            "POST",
            "/v1/plans",
            json!({"name": "kt-bi-plan", "vcpus": 1, "memory_mib": 512, "disk_gib": 1, "price_hourly": "0.01"}),
            vec!["name", "vcpus", "memory_mib", "disk_gib", "price_hourly"],
        ),
        ("PATCH", "/v1/plans/micro", json!({"price_hourly": "0.01"}), vec!["vcpus", "memory_mib", "disk_gib", "price_hourly"]),
        ("POST", "/v1/users", json!({"name": "kt-bi-user"}), vec!["name", "role"]),
        ("PATCH", "/v1/users/alice", json!({"custom_sizing": true}), vec!["role"]),
        ("PUT", "/v1/users/alice/quota", json!({"max_vms": 3}), vec!["max_vms", "reset"]),
        ("PUT", "/v1/users/alice/password", json!({"password": "kt-bi-password"}), vec!["password", "current"]),
        ("POST", "/v1/tokens", json!({"description": "x"}), vec!["description", "expires_in_days", "user"]),
        (
            "POST",
            "/v1/users/alice/ssh-keys",
            json!({"name": "laptop", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl kt"}),
            vec!["name", "public_key"],
        ),
        ("POST", "/v1/vms/kt-bi-vm/console/ticket", json!({"kind": "serial"}), vec!["kind"]),
        ("POST", "/v1/vms/kt-bi-vm/forwards", json!({"guest_port": 80}), vec!["guest_port", "host_port", "pool", "protocol"]),
        ("POST", "/v1/vms/kt-bi-vm/resize", json!({"disk_gib": 2}), vec!["vcpus", "memory_mib", "disk_gib"]),
        ("PUT", "/v1/vms/kt-bi-vm/labels", json!({"labels": {"role": "db"}}), vec!["labels"]),
        ("POST", "/v1/vms/kt-bi-vm/exec", json!({"command": "true"}), vec!["timeout_seconds"]),
        ("POST", "/v1/vms/kt-bi-vm/disks", json!({"size_gib": 1}), vec!["name", "size_gib", "bus"]),
        ("POST", "/v1/vms/kt-bi-vm/shares", json!({"source": "/srv", "tag": "t"}), vec!["source", "tag", "readonly", "mount"]),
        ("POST", "/v1/vms/kt-bi-vm/snapshots", json!({"name": "kt-bi-snap"}), vec!["name", "memory", "description"]),
        (
            "POST",
            "/v1/vms/kt-bi-vm/clone",
            json!({"name": "kt-bi-clone", "no_start": true}),
            vec!["name", "from_snapshot", "mode", "ttl_seconds", "tpm"],
        ),
        ("POST", "/v1/vms/kt-bi-vm/stop", json!({"force": true}), vec!["timeout_seconds"]),
        (
            "POST",
            "/v1/nodes",
            json!({"name": "kt-bi-node", "uri": "qemu+tcp://127.0.0.1:1/system"}),
            vec!["name", "uri", "cpu_overcommit", "memory_overcommit", "reserved_cpus", "reserved_memory_mib", "labels"],
        ),
        (
            "PATCH",
            "/v1/nodes/local",
            json!({"cpu_overcommit": "2.0"}),
            vec!["cpu_overcommit", "memory_overcommit", "reserved_cpus", "reserved_memory_mib", "labels", "state"],
        ),
    ];
    let snapshot = |t: &Tenants| {
        let root = t.root.clone();
        async move {
            (
                root.vm_list()
                    .await
                    .unwrap()
                    .iter()
                    .map(|v| (v.name.clone(), v.vcpus, v.disk_gib, v.forwards.len(), v.labels.clone()))
                    .collect::<Vec<_>>(),
                root.network_list().await.unwrap().iter().filter(|n| n.managed).map(|n| n.labels.clone()).collect::<Vec<_>>(),
                root.image_list().await.unwrap().len(),
                root.pool_list().await.unwrap().len(),
                root.plan_list().await.unwrap(),
                root.user_list().await.unwrap(),
                root.token_list(None).await.unwrap().len(),
                root.quota_get("alice").await.unwrap(),
                root.ssh_key_list("alice").await.unwrap().len(),
                root.disk_list("kt-bi-vm").await.unwrap(),
                root.share_list("kt-bi-vm").await.unwrap(),
                root.node_list()
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|n| (n.name, n.state, n.cpu_overcommit, n.memory_overcommit, n.reserved_cpus, n.reserved_memory_mib, n.labels))
                    .collect::<Vec<_>>(),
            )
        }
    };
    let before = snapshot(&t).await;
    let mut accepted = Vec::new();
    for (method, path, valid, fields) in &endpoints {
        for (what, raw) in corpus() {
            let (s, body) = t.root.request(method.parse().unwrap(), path, Some(raw)).await.unwrap();
            let err: Option<ErrorBody> = serde_json::from_slice(&body).ok();
            if !(400..500).contains(&s.as_u16()) || err.as_ref().and_then(|e| e.field.clone()).is_none() {
                accepted.push(format!("{method} {path} with {what}: {s} {}", String::from_utf8_lossy(&body[..body.len().min(200)])));
            }
        }
        for field in fields {
            for (what, v) in bad_values() {
                let mut b = valid.clone();
                b[*field] = v.clone();
                let (s, body) = t.root.request(method.parse().unwrap(), path, Some(serde_json::to_vec(&b).unwrap())).await.unwrap();
                if s.is_success() {
                    // Some values are valid for some fields (an empty description, a long
                    // command timeout); what matters is that nothing bad was made, checked below.
                    // A description is free text: any printable value is fine.
                    // So is a password (of 10 to 256 bytes), and `current` is not asked of
                    // an admin setting another user's.
                    if !["description", "password", "current"].contains(field) {
                        accepted.push(format!("{method} {path} with {field} = {what}: {s}"));
                    }
                    continue;
                }
                let err: Option<ErrorBody> = serde_json::from_slice(&body).ok();
                let named = err.as_ref().and_then(|e| e.field.clone());
                if !(400..500).contains(&s.as_u16()) || (s.as_u16() == 400 && named.is_none()) {
                    accepted.push(format!("{method} {path} with {field} = {what}: {s} {}", String::from_utf8_lossy(&body)));
                }
            }
        }
    }
    assert!(accepted.is_empty(), "bad input accepted or answered without a field:\n{}", accepted.join("\n"));
    let mut after = snapshot(&t).await;
    // Token creation with a valid-but-odd description is allowed; compare the rest.
    after.6 = before.6;
    assert_eq!(before, after, "bad input changed something");
    t.root.vm_delete("kt-bi-vm", false).await.unwrap();
    t.root.image_delete("kt-bi-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    t.server.stop().await;
}

/// The next event, or a failure naming what was awaited (a broken stream must not hang the
/// suite; the limit is far above any normal delay and is not a speed check).
async fn next(rx: &mut tokio::sync::mpsc::Receiver<kvmctl_types::api::ApiEvent>, what: &str) -> kvmctl_types::api::ApiEvent {
    match tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("the event stream ended while waiting for {what}"),
        Err(_) => panic!("no event for {what}"),
    }
}

#[tokio::test]
async fn events_reach_only_those_who_may_see_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-ev-a", "kt-ev-b"], &["kt-ev-img"]);
    let t = tenants(d).await;
    daemon::tiny_image(&t.root, d, "kt-ev-img").await;
    let mut alice_events = t.alice.events(None).await.unwrap();
    let mut bob_events = t.bob.events(None).await.unwrap();
    let mut admin_events = t.admin.events(Some("kt-ev-a")).await.unwrap();
    let vm = |name: &str| VmCreateRequest { no_start: true, ..daemon::tiny_vm(name, "kt-ev-img", vec![]) };
    t.alice.vm_create(&vm("kt-ev-a")).await.unwrap();
    let first = next(&mut alice_events, "alice's create").await;
    assert_eq!((first.kind.as_str(), first.vm.as_str(), first.state.as_deref()), ("vm.state", "kt-ev-a", Some("creating")));
    let second = next(&mut alice_events, "alice's VM stopped").await;
    assert_eq!(second.state.as_deref(), Some("stopped"));
    assert_eq!(next(&mut admin_events, "the admin's copy").await.vm, "kt-ev-a", "admins see every VM's events");
    // Bob's stream is ordered: his own VM's first event comes before anything of Alice's
    // could, and none of hers is ever in it.
    t.bob.vm_create(&vm("kt-ev-b")).await.unwrap();
    let bobs = next(&mut bob_events, "bob's create").await;
    assert_eq!((bobs.vm.as_str(), bobs.owner.as_str()), ("kt-ev-b", "bob"));
    t.alice.vm_delete("kt-ev-a", false).await.unwrap();
    t.bob.vm_delete("kt-ev-b", false).await.unwrap();
    loop {
        let ev = next(&mut bob_events, "bob's delete").await;
        assert_eq!(ev.owner, "bob", "{ev:?}");
        if ev.kind == "vm.deleted" {
            break;
        }
    }
    t.root.image_delete("kt-ev-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    t.server.stop().await;
}
