//! Two daemons on one PostgreSQL database (ADR 0017), against the real libvirtd:
//! - 200 concurrent creates by one user, split across both daemons, get exactly the quota;
//!   a token made through one daemon works on the other, and each sees the other's VMs;
//! - one daemon leads (runs the periodic work) and the other takes over when it stops;
//! - usage is metered once per VM-hour with both daemons running, and on by the other when
//!   the leader stops (time moved by a manual clock both share);
//! - a VM one daemon holds busy is busy for the other too.
//!
//! The daemon killed by SIGKILL during a create is `kvmctl-cli/tests/shared_db.rs`.

use kvmctl_client::{Client, ClientError};
use kvmctl_libvirt::Node;
use kvmctl_server::{Config, RunningServer};
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{QuotaSetRequest, TokenCreateRequest, UserCreateRequest, VmCreateRequest};

struct Pair {
    a: RunningServer,
    b: RunningServer,
    root_a: Client,
    root_b: Client,
    cfg_a: Config,
}

/// Daemon A on a fresh PostgreSQL database, daemon B on the same one; each has its own
/// socket, directories and port block.
async fn pair(dir: &std::path::Path, failpoints_a: &str) -> Pair {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    pair_with_clock(dir, failpoints_a, std::sync::Arc::new(kvmctl_server::clock::ManualClock::new(now))).await
}

async fn pair_with_clock(dir: &std::path::Path, failpoints_a: &str, clock: std::sync::Arc<kvmctl_server::clock::ManualClock>) -> Pair {
    let url = kvmctl_store::testing::postgres_database().await.unwrap();
    let mut cfg_a = daemon::config(&dir.join("a"));
    cfg_a.failpoints = failpoints_a.into();
    cfg_a.database_url = Some(url.clone());
    cfg_a.listen = Some("127.0.0.1:0".parse().unwrap());
    let mut cfg_b = daemon::config(&dir.join("b"));
    cfg_b.database_url = Some(url);
    cfg_b.listen = Some("127.0.0.1:0".parse().unwrap());
    for d in ["a", "b"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let (a, root_a) = daemon::start_with_clock(&cfg_a, clock.clone()).await;
    let (b, root_b) = daemon::start_with_clock(&cfg_b, clock).await;
    Pair { a, b, root_a, root_b, cfg_a }
}

fn api_status(e: &ClientError) -> (u16, String, String) {
    match e {
        ClientError::Api { status, body } => (*status, body.error.clone(), body.message.clone()),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn two_daemons_on_one_database_admit_exactly_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names: Vec<String> = (0..200).map(|i| format!("kt-sq-{i}")).collect();
    let sweep = Sweep::new(&names.iter().map(String::as_str).collect::<Vec<_>>(), &["kt-sq-img"]);
    // A's deletes wait after the domain is destroyed until the test says go.
    let go = d.join("go");
    let p = pair(d, &format!("delete.destroy=wait:{}", go.display())).await;
    let status = p.root_a.status().await.unwrap();
    assert_eq!(
        (status.database.engine.as_str(), status.database.schema_version),
        ("postgres", kvmctl_store::DataStore::schema_version_known())
    );

    // Users and tokens live in the database: made through A, used through B.
    p.root_a.user_create(&UserCreateRequest { name: "alice".into(), ..Default::default() }).await.unwrap();
    let token = p
        .root_a
        .token_create(&TokenCreateRequest { user: Some("alice".into()), description: Some("t".into()), ..Default::default() })
        .await
        .unwrap()
        .token;
    let alice_a = Client::http(&format!("http://{}", p.a.tcp_addr.unwrap())).unwrap().with_token(token.clone());
    let alice_b = Client::http(&format!("http://{}", p.b.tcp_addr.unwrap())).unwrap().with_token(token);
    assert_eq!(alice_b.whoami().await.unwrap().name, "alice");
    // Where the database is, is the admins': a user sees the engine only.
    let seen = alice_a.status().await.unwrap().database;
    assert_eq!((seen.engine.as_str(), seen.path.as_str()), ("postgres", ""));
    assert!(status.database.path.starts_with("postgres://postgres@"), "{}", status.database.path);
    daemon::tiny_image(&p.root_a, &d.join("a"), "kt-sq-img").await;
    assert_eq!(p.root_b.image_list().await.unwrap().iter().filter(|i| i.name == "kt-sq-img").count(), 1);

    const N: u64 = 5;
    p.root_b.quota_set("alice", &QuotaSetRequest { max_vms: Some(N), ..Default::default() }).await.unwrap();
    let tasks: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let c = if i % 2 == 0 { alice_a.clone() } else { alice_b.clone() };
            let req = VmCreateRequest { no_start: true, no_ssh_forward: true, ..daemon::tiny_vm(n, "kt-sq-img", vec![]) };
            tokio::spawn(async move { c.vm_create(&req).await })
        })
        .collect();
    let mut made = Vec::new();
    let mut refusals = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(vm) => made.push(vm.name),
            Err(e) => refusals.push(api_status(&e)),
        }
    }
    assert_eq!(made.len() as u64, N, "exactly the quota across both daemons; refusals: {:?}", &refusals[..3.min(refusals.len())]);
    for (status, error, message) in &refusals {
        assert_eq!((*status, error.as_str()), (403, "quota_exceeded"), "{message}");
    }
    // Both daemons see the same VMs, and the node holds exactly them.
    let mut seen_a: Vec<String> = alice_a.vm_list().await.unwrap().into_iter().map(|v| v.name).collect();
    let mut seen_b: Vec<String> = alice_b.vm_list().await.unwrap().into_iter().map(|v| v.name).collect();
    made.sort();
    seen_a.sort();
    seen_b.sort();
    assert_eq!((&seen_a, &seen_b), (&made, &made));
    let domains: Vec<String> = sweep.node.domain_list().unwrap().into_iter().map(|d| d.name).filter(|n| n.starts_with("kt-sq-")).collect();
    assert_eq!(domains.len() as u64, N, "{domains:?}");

    // A VM A is deleting is busy for B too: B says so, and changes nothing.
    let first = made[0].clone();
    let deleting = tokio::spawn({
        let root_a = p.root_a.clone();
        let first = first.clone();
        async move { root_a.vm_delete(&first, false).await }
    });
    // Until A's delete has begun (the VM is `deleting`: A holds it).
    for _ in 0..600 {
        if p.root_b.vm_get(&first).await.unwrap().state == "deleting" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, error, message) = api_status(&p.root_b.vm_delete(&first, false).await.expect_err("B cannot delete a VM A holds"));
    assert!(error == "conflict" && message.contains("busy (deleting)"), "{message}");
    std::fs::write(&go, "").unwrap();
    deleting.await.unwrap().unwrap();
    for v in &made[1..] {
        p.root_b.vm_delete(v, false).await.unwrap();
    }
    p.root_a.image_delete("kt-sq-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    p.a.stop().await;
    p.b.stop().await;
}

#[tokio::test]
async fn one_daemon_leads_and_the_other_takes_over_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let p = pair(dir.path(), "").await;
    let store = kvmctl_store::DataStore::connect(&p.cfg_a.database_location()).await.unwrap();
    let leader = || async { store.lease_get("leader").await.unwrap().map(|(holder, _, _)| holder) };
    // A started first and took the lease before it served; B found it taken.
    let first = leader().await.expect("a daemon leads");
    assert!(p.root_a.status().await.unwrap().database.leader, "A leads");
    assert!(!p.root_b.status().await.unwrap().database.leader, "B does not");
    p.a.stop().await;
    // A gave the lease up as it stopped; B's next reconciler pass (every second here) takes it.
    let mut now = None;
    for _ in 0..600 {
        now = leader().await;
        if now.as_ref().is_some_and(|h| *h != first) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(now.is_some_and(|h| h != first), "B took the lease");
    assert!(p.root_b.status().await.unwrap().database.leader, "B leads");
    p.b.stop().await;
}

#[tokio::test]
async fn usage_is_metered_once_by_whichever_daemon_leads() {
    const HOUR: i64 = 3600;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-sm-1", "kt-sm-2"], &["kt-sm-img"]);
    let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let clock = std::sync::Arc::new(kvmctl_server::clock::ManualClock::new(t0));
    let p = pair_with_clock(d, "", clock.clone()).await;
    daemon::tiny_image(&p.root_a, &d.join("a"), "kt-sm-img").await;
    for (c, n) in [(&p.root_a, "kt-sm-1"), (&p.root_b, "kt-sm-2")] {
        c.vm_create(&VmCreateRequest { no_start: true, no_ssh_forward: true, ..daemon::tiny_vm(n, "kt-sm-img", vec![]) }).await.unwrap();
    }
    // Two hours end with both daemons running: two records per VM, not four.
    clock.advance(2 * HOUR);
    let two = daemon::usage_reaching(&p.root_b, 4).await;
    assert_eq!(two.len(), 4, "{two:#?}");
    // The leader stops; the other meters the next hour.
    p.a.stop().await;
    clock.advance(HOUR);
    let three = daemon::usage_reaching(&p.root_b, 6).await;
    assert_eq!(three.len(), 6, "{three:#?}");
    let mut keys: Vec<(String, i64)> = three.iter().map(|r| (r.vm.clone(), r.hour)).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 6, "one record per VM-hour");
    for n in ["kt-sm-1", "kt-sm-2"] {
        p.root_b.vm_delete(n, false).await.unwrap();
    }
    p.root_b.image_delete("kt-sm-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    p.b.stop().await;
}
