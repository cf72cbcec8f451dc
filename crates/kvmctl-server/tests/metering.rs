//! Hourly metering against the real daemon and libvirtd, with time moved by a manual clock:
//! one record per VM-hour, priced by plan and state, exactly once across a daemon restart.

use kvmctl_server::clock::ManualClock;
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{PlanCreateRequest, UsageRecord, VmCreateRequest};
use std::collections::BTreeMap;
use std::sync::Arc;

const HOUR: i64 = 3600;

#[tokio::test]
async fn every_vm_hour_is_recorded_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-me-on", "kt-me-off"], &["kt-me-img"]);
    let mut cfg = daemon::config(d);
    cfg.stopped_price_percent = 25;
    let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let h0 = t0 - t0.rem_euclid(HOUR);
    let clock = Arc::new(ManualClock::new(t0));

    let (server, c) = daemon::start_with_clock(&cfg, clock.clone()).await;
    daemon::tiny_image(&c, d, "kt-me-img").await;
    c.plan_create(&PlanCreateRequest {
        name: "kt-me".into(),
        vcpus: 1,
        memory_mib: 256,
        disk_gib: 1,
        price_hourly: "0.5".into(),
        sort_order: None,
    })
    .await
    .unwrap();
    let vm = |name: &str, no_start: bool| VmCreateRequest {
        plan: Some("kt-me".into()),
        vcpus: None,
        memory_mib: None,
        disk_gib: None,
        no_start,
        no_ssh_forward: true,
        ..daemon::tiny_vm(name, "kt-me-img", vec![])
    };
    c.vm_create(&vm("kt-me-on", false)).await.unwrap();
    c.vm_create(&vm("kt-me-off", true)).await.unwrap();
    assert!(c.usage_list(None, None, None).await.unwrap().is_empty(), "no hour is over since the VMs exist");

    // The hour they were created in ends: one record each, priced by state.
    clock.advance(HOUR);
    let first = daemon::usage_reaching(&c, 2).await;
    assert_eq!(first.len(), 2, "{first:#?}");
    let by_vm: BTreeMap<&str, &UsageRecord> = first.iter().map(|r| (r.vm.as_str(), r)).collect();
    let on = by_vm["kt-me-on"];
    assert_eq!((on.hour, on.state.as_str(), on.cost.as_str(), on.plan.as_deref()), (h0, "running", "0.50", Some("kt-me")));
    let off = by_vm["kt-me-off"];
    assert_eq!((off.state.as_str(), off.cost.as_str(), off.price_hourly.as_str()), ("stopped", "0.125", "0.50"));
    assert_eq!(on.hour_utc, kvmctl_core::metering::utc(h0));

    // Down for three hours: the restart catches them up, once.
    server.stop().await;
    clock.advance(3 * HOUR);
    let (server, c) = daemon::start_with_clock(&cfg, clock.clone()).await;
    let all = daemon::usage_reaching(&c, 8).await;
    let mut keys: Vec<(String, i64)> = all.iter().map(|r| (r.vm.clone(), r.hour)).collect();
    keys.sort();
    let expected: Vec<(String, i64)> =
        ["kt-me-off", "kt-me-on"].iter().flat_map(|v| (0..4).map(move |i| (v.to_string(), h0 + i * HOUR))).collect();
    assert_eq!(keys, expected, "exactly one record per VM-hour");
    // Restarting again at the same time adds nothing; filters narrow by hour.
    server.stop().await;
    let (server, c) = daemon::start_with_clock(&cfg, clock.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(c.usage_list(None, None, None).await.unwrap().len(), 8);
    assert_eq!(c.usage_list(None, Some(h0 + HOUR), Some(h0 + 3 * HOUR)).await.unwrap().len(), 4);

    for v in ["kt-me-on", "kt-me-off"] {
        c.vm_delete(v, false).await.unwrap();
    }
    // Records outlive their VMs: they are what was used.
    assert_eq!(c.usage_list(None, None, None).await.unwrap().len(), 8);
    c.image_delete("kt-me-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

/// The next event of `kind` for `vm`, or a failure naming it (never a speed check).
async fn event(rx: &mut tokio::sync::mpsc::Receiver<kvmctl_types::api::ApiEvent>, kind: &str, vm: &str) -> kvmctl_types::api::ApiEvent {
    let wait = async {
        while let Some(ev) = rx.recv().await {
            if ev.kind == kind && ev.vm == vm {
                return ev;
            }
        }
        panic!("the event stream ended before {kind} of {vm}");
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), wait).await.unwrap_or_else(|_| panic!("no {kind} event for {vm}"))
}

/// Waits for every (kind, vm) pair, in any order; returns them in the order asked.
async fn events_all(
    rx: &mut tokio::sync::mpsc::Receiver<kvmctl_types::api::ApiEvent>,
    want: &[(&str, &str)],
) -> Vec<kvmctl_types::api::ApiEvent> {
    let mut found: Vec<Option<kvmctl_types::api::ApiEvent>> = vec![None; want.len()];
    let wait = async {
        while found.iter().any(Option::is_none) {
            let Some(ev) = rx.recv().await else { panic!("the event stream ended") };
            if let Some(i) = want.iter().position(|(k, v)| ev.kind == *k && ev.vm == *v) {
                found[i].get_or_insert(ev);
            }
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(60), wait).await.is_err() {
        panic!("missing events: {:?}", want.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(w, _)| w).collect::<Vec<_>>());
    }
    found.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn ephemeral_vms_expire_and_long_stopped_vms_are_warned_then_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-hy-ttl", "kt-hy-old", "kt-hy-used"], &["kt-hy-img"]);
    let mut cfg = daemon::config(d);
    cfg.stopped_vm_cleanup_hours = 3;
    cfg.stopped_vm_warning_hours = 1;
    let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let clock = Arc::new(ManualClock::new(t0));
    let (server, c) = daemon::start_with_clock(&cfg, clock.clone()).await;
    daemon::tiny_image(&c, d, "kt-hy-img").await;
    let vm = |name: &str| VmCreateRequest { no_start: true, no_ssh_forward: true, ..daemon::tiny_vm(name, "kt-hy-img", vec![]) };
    let mut events = c.events(None).await.unwrap();
    // Out of range TTLs are refused, naming the field.
    match c.vm_create(&VmCreateRequest { ttl_seconds: Some(5), ..vm("kt-hy-ttl") }).await {
        Err(kvmctl_client::ClientError::Api { status: 400, body }) => assert_eq!(body.field.as_deref(), Some("ttl_seconds")),
        other => panic!("{other:?}"),
    }
    let ttl = c.vm_create(&VmCreateRequest { ttl_seconds: Some(2 * HOUR as u64), ..vm("kt-hy-ttl") }).await.unwrap();
    assert_eq!(ttl.expires_at, Some(t0 + 2 * HOUR));
    let old = c.vm_create(&vm("kt-hy-old")).await.unwrap();
    // How long a VM has been stopped counts from its row's last change, stamped with the
    // system's time when the create finished; the clock is set from that stamp (with room
    // for the create itself), not from `t0`, so a slow image import or create under load
    // cannot make the VM look stopped for less time than intended.
    let since = old.created_at.max(t0) + 120;

    // Two hours on: the ephemeral VM is gone, the stopped one warned (3 h limit, 1 h notice).
    // One pass handles both VMs, in whatever order it lists them.
    clock.set(since + 2 * HOUR);
    let seen =
        events_all(&mut events, &[("vm.expired", "kt-hy-ttl"), ("vm.deleted", "kt-hy-ttl"), ("vm.cleanup_warning", "kt-hy-old")]).await;
    let warning = &seen[2];
    assert!(warning.detail.as_deref().unwrap_or_default().contains("deleted after 3 h"), "{warning:?}");
    assert!(c.vm_get("kt-hy-old").await.is_ok(), "warned, not yet deleted");
    // Another hour: deleted.
    clock.set(since + 3 * HOUR);
    event(&mut events, "vm.deleted", "kt-hy-old").await;
    assert!(c.vm_list().await.unwrap().is_empty());

    c.image_delete("kt-hy-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

/// Expiry deletes the VM it decided about, by id: a VM deleted and created again under the
/// same name while the expiry was under way is not deleted by it.
#[tokio::test]
async fn expiry_never_deletes_a_vm_recreated_under_the_same_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-hy-same", "kt-hy-next"], &["kt-hy-same-img"]);
    let go = d.join("go");
    let cfg = kvmctl_server::Config { failpoints: format!("hygiene.expire=wait:{}", go.display()), ..daemon::config(d) };
    let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let clock = Arc::new(ManualClock::new(t0));
    let (server, c) = daemon::start_with_clock(&cfg, clock.clone()).await;
    daemon::tiny_image(&c, d, "kt-hy-same-img").await;
    let vm = |name: &str, ttl: u64| VmCreateRequest {
        no_start: true,
        no_ssh_forward: true,
        ttl_seconds: Some(ttl),
        ..daemon::tiny_vm(name, "kt-hy-same-img", vec![])
    };
    let mut events = c.events(None).await.unwrap();
    c.vm_create(&vm("kt-hy-same", HOUR as u64)).await.unwrap();

    // The expiry of kt-hy-same is announced and held; meanwhile its name is taken anew.
    clock.advance(HOUR + 60);
    event(&mut events, "vm.expired", "kt-hy-same").await;
    c.vm_delete("kt-hy-same", false).await.unwrap();
    event(&mut events, "vm.deleted", "kt-hy-same").await;
    let again = c.vm_create(&vm("kt-hy-same", 100 * HOUR as u64)).await.unwrap();
    // A VM that expires in the next pass: its deletion shows that pass ran, after this one.
    c.vm_create(&vm("kt-hy-next", 60)).await.unwrap();
    std::fs::write(&go, b"").unwrap();
    // The held pass ends whenever it notices `go`; the clock moves a minute at a time until
    // a later pass has run.
    let mut next_deleted = false;
    for _ in 0..120 {
        clock.advance(60);
        let wait = async {
            while let Some(ev) = events.recv().await {
                assert!(!(ev.kind == "vm.deleted" && ev.vm == "kt-hy-same"), "the expiry deleted the new kt-hy-same");
                if ev.kind == "vm.deleted" && ev.vm == "kt-hy-next" {
                    return;
                }
            }
        };
        if tokio::time::timeout(std::time::Duration::from_millis(500), wait).await.is_ok() {
            next_deleted = true;
            break;
        }
    }
    assert!(next_deleted, "no later pass deleted kt-hy-next");
    assert_eq!(c.vm_get("kt-hy-same").await.unwrap().id, again.id, "the new VM of that name is still there");

    c.vm_delete("kt-hy-same", false).await.unwrap();
    c.image_delete("kt-hy-same-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}
