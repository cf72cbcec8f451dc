//! Test runs on the in-process daemon with the real libvirtd (VMs made stopped, nothing
//! boots): a run is its owner's (another user's is absent everywhere, and cannot be joined);
//! bad input is refused naming the field and changes nothing; a run whose runner goes silent
//! is abandoned after its grace period and its VMs deleted; a finish deletes the run's VMs
//! but the kept ones, which leave the run; `rm` ends a run and forgets it.

use kvmctl_client::ClientError;
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{TestRunCreateRequest, TestRunFinishRequest, TokenCreateRequest, UserCreateRequest, VmCreateRequest};

fn api_err(e: ClientError) -> (u16, kvmctl_types::api::ErrorBody) {
    match e {
        ClientError::Api { status, body } => (status, body),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn runs_are_owned_bounded_reaped_and_finished() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _sweep = Sweep::new(&["kt-run-a", "kt-run-b", "kt-run-c", "kt-run-bob"], &["kt-run-img"]);
    let mut cfg = daemon::config(d);
    cfg.listen = Some("127.0.0.1:0".parse().unwrap());
    let (server, root) = daemon::start(&cfg).await;
    daemon::tiny_image(&root, d, "kt-run-img").await;
    let anon = kvmctl_client::Client::http(&format!("http://{}", server.tcp_addr.unwrap())).unwrap();
    let mut users = Vec::new();
    for name in ["alice", "bob"] {
        root.user_create(&UserCreateRequest { name: name.into(), ..Default::default() }).await.unwrap();
        let t = root.token_create(&TokenCreateRequest { user: Some(name.into()), ..Default::default() }).await.unwrap();
        users.push(anon.clone().with_token(t.token));
    }
    let (alice, bob) = (users[0].clone(), users[1].clone());
    let vm = |name: &str, run: Option<&str>| VmCreateRequest {
        no_start: true,
        no_ssh_forward: true,
        test_run: run.map(str::to_owned),
        ..daemon::tiny_vm(name, "kt-run-img", vec![])
    };
    let open = |grace: u64| TestRunCreateRequest { name: "web".into(), grace_seconds: Some(grace) };

    // Bad input: the field is named, nothing is opened.
    let (s, body) = api_err(alice.test_run_create(&open(5)).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("grace_seconds"), "{body:?}");
    let (s, body) =
        api_err(alice.test_run_create(&TestRunCreateRequest { name: "Bad Name".into(), grace_seconds: None }).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("name"), "{body:?}");
    assert!(alice.test_run_list().await.unwrap().is_empty());

    let run = alice.test_run_create(&open(10)).await.unwrap();
    assert_eq!(run.state, "running");
    alice.vm_create(&vm("kt-run-a", Some(&run.id))).await.unwrap();
    assert_eq!(alice.test_run_get(&run.id).await.unwrap().vms, vec!["kt-run-a".to_string()]);

    // Bob: Alice's run does not exist for him, and he cannot join it.
    assert!(bob.test_run_list().await.unwrap().is_empty());
    assert_eq!(api_err(bob.test_run_get(&run.id).await.unwrap_err()).0, 404);
    assert_eq!(api_err(bob.test_run_heartbeat(&run.id).await.unwrap_err()).0, 404);
    let fin = TestRunFinishRequest { state: "passed".into(), ..Default::default() };
    assert_eq!(api_err(bob.test_run_finish(&run.id, &fin).await.unwrap_err()).0, 404);
    assert_eq!(api_err(bob.test_run_delete(&run.id).await.unwrap_err()).0, 404);
    let (s, body) = api_err(bob.vm_create(&vm("kt-run-bob", Some(&run.id))).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("test_run"), "{body:?}");
    assert!(bob.vm_list().await.unwrap().is_empty(), "a refused join makes nothing");
    let (s, body) = api_err(alice.vm_create(&vm("kt-run-bob", Some("not-a-run"))).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("test_run"), "{body:?}");

    // A finish with bad parts changes nothing.
    let (s, body) =
        api_err(alice.test_run_finish(&run.id, &TestRunFinishRequest { state: "great".into(), ..Default::default() }).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("state"), "{body:?}");
    let huge = TestRunFinishRequest { state: "passed".into(), summary: serde_json::json!({"x": "y".repeat(1_100_000)}), keep: vec![] };
    let (s, body) = api_err(alice.test_run_finish(&run.id, &huge).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("summary"), "{body:?}");
    let keep_other = TestRunFinishRequest { state: "passed".into(), keep: vec!["kt-run-bob".into()], ..Default::default() };
    let (s, body) = api_err(alice.test_run_finish(&run.id, &keep_other).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("keep"), "{body:?}");
    assert_eq!(alice.test_run_get(&run.id).await.unwrap().state, "running");

    // The runner goes silent: after its 10 s grace the run is abandoned and its VM deleted.
    let mut events = alice.events(None).await.unwrap();
    let abandoned = loop {
        let e = tokio::time::timeout(std::time::Duration::from_secs(60), events.recv()).await.expect("an event within 60 s").unwrap();
        if e.kind == "vm.deleted" && e.vm == "kt-run-a" {
            break e;
        }
    };
    assert_eq!(abandoned.owner, "alice");
    let r = alice.test_run_get(&run.id).await.unwrap();
    assert_eq!((r.state.as_str(), r.vms.len()), ("abandoned", 0), "{r:?}");
    let (s, body) = api_err(alice.test_run_heartbeat(&run.id).await.unwrap_err());
    assert_eq!(s, 409, "a heartbeat for an ended run tells the runner to stop: {body:?}");
    let (s, body) = api_err(alice.vm_create(&vm("kt-run-b", Some(&run.id))).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("test_run") && body.message.contains("ended"), "{body:?}");

    // A finish deletes the run's VMs but the kept one, which leaves the run.
    let run2 = alice.test_run_create(&open(600)).await.unwrap();
    alice.test_run_heartbeat(&run2.id).await.unwrap();
    alice.vm_create(&vm("kt-run-b", Some(&run2.id))).await.unwrap();
    alice.vm_create(&vm("kt-run-c", Some(&run2.id))).await.unwrap();
    let done = alice
        .test_run_finish(
            &run2.id,
            &TestRunFinishRequest { state: "failed".into(), summary: serde_json::json!({"cases": []}), keep: vec!["kt-run-c".into()] },
        )
        .await
        .unwrap();
    assert_eq!((done.state.as_str(), done.vms.len()), ("failed", 0), "{done:?}");
    assert_eq!(done.summary, Some(serde_json::json!({"cases": []})));
    let names: Vec<String> = alice.vm_list().await.unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, vec!["kt-run-c".to_string()], "the kept VM lives on, the other is gone");
    alice.vm_delete("kt-run-c", false).await.unwrap();

    // rm forgets a run (and would delete its VMs).
    alice.test_run_delete(&run2.id).await.unwrap();
    assert_eq!(api_err(alice.test_run_get(&run2.id).await.unwrap_err()).0, 404);
    assert_eq!(alice.test_run_list().await.unwrap().len(), 1);
    server.stop().await;
}
