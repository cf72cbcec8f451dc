//! Nodes, placement and metrics against the real daemon and libvirtd: capacity read from
//! libvirt, concurrent creates that never overfill a node, draining, explanations, a second
//! node registered and removed, and `/metrics` read back with a Prometheus text parser.

use kvmctl_client::ClientError;
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{NodeAddRequest, NodeUpdateRequest, VmCreateRequest};

/// CPUs and memory (KiB) as `virsh nodeinfo` reports them.
fn virsh_nodeinfo() -> (u64, u64) {
    let uri = kvmctl_testkit::env("KVMCTL_TEST_URI");
    let out = std::process::Command::new("virsh").args(["-c", &uri, "nodeinfo"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {text}"));
        line.split(':').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
    };
    (field("CPU(s)"), field("Memory size"))
}

#[tokio::test]
async fn placement_never_overfills_a_node_and_explains_itself() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names: Vec<String> = (0..8).map(|i| format!("kt-pl-{i}")).collect();
    let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
    all.push("kt-pl-x");
    let sweep = Sweep::new(&all, &["kt-pl-img"]);
    let mut cfg = daemon::config(d);
    // Capacity = physical CPUs exactly: the test fills it.
    cfg.local_cpu_overcommit = "1.0".into();
    let (server, c) = daemon::start(&cfg).await;
    daemon::tiny_image(&c, d, "kt-pl-img").await;

    // Capacity comes from libvirt.
    let (cpus, mem_kib) = virsh_nodeinfo();
    let local = c.node_get("local").await.unwrap();
    assert_eq!((local.state.as_str(), local.cpus, local.memory_mib), ("active", cpus, mem_kib / 1024), "{local:?}");
    assert_eq!((local.capacity_vcpus, local.cpu_overcommit.as_str()), (cpus, "1.00"));
    assert!(local.disk_gib > 0, "the pool's size: {local:?}");

    // More concurrent creates than the node has vCPUs: exactly `cpus` succeed.
    let vm = |name: &str| VmCreateRequest { no_start: true, no_ssh_forward: true, ..daemon::tiny_vm(name, "kt-pl-img", vec![]) };
    let tasks: Vec<_> = names
        .iter()
        .take((cpus + 3) as usize)
        .map(|n| {
            let (c, req) = (c.clone(), vm(n));
            tokio::spawn(async move { c.vm_create(&req).await })
        })
        .collect();
    let mut made = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => made.push(v),
            Err(ClientError::Api { status: 503, body }) => {
                assert_eq!(body.error, "insufficient_capacity");
                assert!(body.message.contains("local: not enough vCPUs"), "{}", body.message);
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(made.len() as u64, cpus, "exactly the node's vCPUs");
    let local = c.node_get("local").await.unwrap();
    assert_eq!((local.allocated_vcpus, local.available_vcpus, local.vms), (cpus, 0, cpus));
    assert_eq!(local.vm_names.len() as u64, cpus);
    // The admin's answer says how the node was chosen.
    assert!(made[0].placement.iter().any(|v| v.node == "local" && v.chosen && v.reason.starts_with("chosen")), "{:?}", made[0].placement);

    // Overcommit makes room; draining closes it; a second node is weighed and explained.
    c.node_update("local", &NodeUpdateRequest { cpu_overcommit: Some("2".into()), ..Default::default() }).await.unwrap();
    c.node_update("local", &NodeUpdateRequest { state: Some("draining".into()), ..Default::default() }).await.unwrap();
    match c.vm_create(&vm("kt-pl-x")).await {
        Err(ClientError::Api { status: 503, body }) => assert!(body.message.contains("local: draining"), "{}", body.message),
        other => panic!("created on a drained node: {other:?}"),
    }
    c.node_update("local", &NodeUpdateRequest { state: Some("active".into()), ..Default::default() }).await.unwrap();
    // Unreachable: refused, naming the URI; nothing recorded.
    let bad = NodeAddRequest { name: "kt-pl-far".into(), uri: "qemu+tcp://127.0.0.1:1/system".into(), ..Default::default() };
    match c.node_add(&bad).await {
        Err(ClientError::Api { status: 400, body }) => assert_eq!(body.field.as_deref(), Some("uri"), "{body:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.node_list().await.unwrap().len(), 1);
    // The same libvirtd under another URI is a reachable second node.
    let uri = kvmctl_testkit::env("KVMCTL_TEST_URI");
    let other_uri = if uri.contains('?') { format!("{uri}&kvmctl_node=second") } else { format!("{uri}?kvmctl_node=second") };
    let second = c
        .node_add(&NodeAddRequest {
            name: "kt-pl-second".into(),
            uri: other_uri,
            labels: [("zone".to_owned(), "b".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((second.cpus, second.state.as_str()), (cpus, "active"));
    let x = c.vm_create(&vm("kt-pl-x")).await.unwrap();
    assert_eq!(x.node, "local");
    let verdicts: Vec<(&str, bool)> = x.placement.iter().map(|v| (v.node.as_str(), v.chosen)).collect();
    assert_eq!(verdicts, vec![("kt-pl-second", false), ("local", true)], "{:?}", x.placement);
    let labelled = VmCreateRequest { node_labels: [("zone".to_owned(), "a".to_owned())].into(), ..vm("kt-pl-7") };
    match c.vm_create(&labelled).await {
        Err(ClientError::Api { status: 503, body }) => {
            assert!(body.message.contains("label mismatch: needs zone=a, has no zone"), "{}", body.message)
        }
        other => panic!("{other:?}"),
    }

    // Metrics parse as Prometheus text and agree with the database.
    let text = c.metrics().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses as Prometheus text");
    let value = |metric: &str, labels: &[(&str, &str)]| -> Option<f64> {
        scrape.samples.iter().find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(|s| {
            match &s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => *v,
                other => panic!("{metric}: {other:?}"),
            }
        })
    };
    assert_eq!(value("kvmctl_vms", &[("state", "stopped"), ("node", "local")]), Some((cpus + 1) as f64), "{text}");
    assert_eq!(value("kvmctl_node_vcpus", &[("node", "local")]), Some((cpus * 2) as f64), "{text}");
    assert_eq!(value("kvmctl_node_vcpus_allocated", &[("node", "local")]), Some((cpus + 1) as f64), "{text}");
    assert_eq!(value("kvmctl_node_up", &[("node", "kt-pl-second")]), Some(1.0), "{text}");
    assert!(
        value("kvmctl_http_requests_total", &[("route", "/v1/vms"), ("method", "POST"), ("status", "201")]).unwrap_or(0.0)
            >= (cpus + 1) as f64,
        "{text}"
    );
    assert!(value("kvmctl_reconciler_runs_total", &[]).unwrap_or(0.0) >= 1.0, "{text}");
    assert!(
        scrape.samples.iter().any(|s| s.metric == "kvmctl_vm_operation_seconds" && s.labels.get("op") == Some("create")),
        "create latency histogram: {text}"
    );

    // A node with VMs stays; without, it goes. The local node always stays.
    c.node_remove("kt-pl-second").await.unwrap();
    match c.node_remove("local").await {
        Err(ClientError::Api { status: 409, .. }) => {}
        other => panic!("{other:?}"),
    }
    for v in c.vm_list().await.unwrap() {
        c.vm_delete(&v.name, false).await.unwrap();
    }
    c.image_delete("kt-pl-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

/// `virsh` against the second test node (its own libvirtd, reached over the veth).
fn virsh2(args: &[&str]) -> String {
    let uri = kvmctl_testkit::env("KVMCTL_TEST_NODE2_URI");
    let out = std::process::Command::new("virsh").args(["-q", "-c", &uri]).args(args).output().unwrap();
    assert!(out.status.success(), "virsh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_vm_is_placed_on_the_second_node_and_reached_there() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-n2-vm"], &["kt-n2-img"]);
    let pool = kvmctl_testkit::env("KVMCTL_TEST_POOL");
    let (server, c) = daemon::start(&daemon::config(d)).await;
    daemon::tiny_image(&c, d, "kt-n2-img").await;
    let (key, public) = kvmctl_testkit::keypair(d);

    // The second node: another libvirtd in its own namespaces, over qemu+tcp.
    let node2 = c
        .node_add(&NodeAddRequest {
            name: "kt-n2".into(),
            uri: kvmctl_testkit::env("KVMCTL_TEST_NODE2_URI"),
            labels: [("zone".to_owned(), "b".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(node2.state, "active", "{node2:?}");
    assert!(node2.cpus > 0 && node2.memory_mib > 0 && node2.disk_gib > 0, "capacity read from its libvirt: {node2:?}");

    // Asked for zone b, it lands there; the explanation covers both nodes.
    let req = VmCreateRequest {
        node_labels: [("zone".to_owned(), "b".to_owned())].into(),
        no_ssh_forward: true,
        ..daemon::tiny_vm("kt-n2-vm", "kt-n2-img", vec![public])
    };
    let vm = c.vm_create(&req).await.unwrap();
    assert_eq!(vm.node, "kt-n2");
    let verdicts: Vec<(&str, bool, &str)> = vm.placement.iter().map(|v| (v.node.as_str(), v.chosen, v.reason.as_str())).collect();
    assert_eq!(verdicts.len(), 2, "{verdicts:?}");
    assert!(verdicts.iter().any(|(n, chosen, _)| *n == "kt-n2" && *chosen), "{verdicts:?}");
    assert!(verdicts.iter().any(|(n, chosen, r)| *n == "local" && !chosen && r.contains("label mismatch")), "{verdicts:?}");
    assert!(vm.forwards.is_empty(), "forwards are the local node's: {vm:?}");
    let ip = vm.ip.clone().expect("an address reserved on the node's network");
    assert!(ip.starts_with("10.78.0."), "the second node's subnet: {ip}");

    // The domain and its volumes are on the second node (the image copied there), not here.
    assert!(virsh2(&["list", "--name"]).lines().any(|l| l.trim() == "kt-n2-vm"));
    let local_uri = kvmctl_testkit::env("KVMCTL_TEST_URI");
    let local = std::process::Command::new("virsh").args(["-c", &local_uri, "list", "--all", "--name"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&local.stdout).lines().any(|l| l.trim() == "kt-n2-vm"));
    let vols = virsh2(&["vol-list", &pool]);
    for v in ["kt-n2-vm-root.qcow2", "kt-n2-vm-seed.iso", "image-kt-n2-img.qcow2", "image-kt-n2-img.kernel"] {
        assert!(vols.contains(v), "{v} on node 2: {vols}");
    }
    assert!(virsh2(&["net-dumpxml", "kvmctl-test"]).contains(&vm.mac.to_ascii_lowercase()), "DHCP reservation on node 2");

    // Reached there: readiness over SSH, a command through the daemon, and SSH from here.
    c.vm_wait("kt-n2-vm", "ssh", 300).await.unwrap();
    let out =
        c.vm_exec("kt-n2-vm", &kvmctl_types::api::VmExecRequest { command: "hostname".into(), timeout_seconds: Some(30) }).await.unwrap();
    assert_eq!((out.exit_status, out.stdout.trim()), (0, "kt-n2-vm"), "{out:?}");
    let host = kvmctl_testkit::ssh_at(&key, "kvmctl", &ip, 22, "hostname").unwrap();
    assert_eq!(host.trim(), "kt-n2-vm");

    // Forwards are refused with the reason; stop and start go through the node.
    match c.forward_create("kt-n2-vm", &kvmctl_types::api::ForwardCreateRequest { guest_port: 80, ..Default::default() }).await {
        Err(ClientError::Api { status: 409, body }) => assert!(body.message.contains("runs on node kt-n2"), "{body:?}"),
        other => panic!("{other:?}"),
    }
    let stopped = c.vm_stop("kt-n2-vm", &kvmctl_types::api::VmStopRequest { force: true, timeout_seconds: None }).await.unwrap();
    assert_eq!(stopped.state, "stopped");
    assert!(virsh2(&["domstate", "kt-n2-vm"]).contains("shut off"));
    // The reconciler follows the node: a start behind kvmctl's back is noticed.
    virsh2(&["start", "kt-n2-vm"]);
    let mut seen = String::new();
    for _ in 0..100 {
        seen = c.vm_get("kt-n2-vm").await.unwrap().state;
        if seen == "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen, "running", "the reconciler reads the second node's domains");
    let n = c.node_get("kt-n2").await.unwrap();
    assert_eq!((n.vms, n.allocated_vcpus), (1, 1), "{n:?}");

    // Delete removes everything on the node; the image delete removes its copy there.
    c.vm_delete("kt-n2-vm", false).await.unwrap();
    assert!(!virsh2(&["list", "--all", "--name"]).lines().any(|l| l.trim() == "kt-n2-vm"));
    let vols = virsh2(&["vol-list", &pool]);
    assert!(!vols.contains("kt-n2-vm-"), "{vols}");
    assert!(!virsh2(&["net-dumpxml", "kvmctl-test"]).contains(&vm.mac.to_ascii_lowercase()));
    c.image_delete("kt-n2-img").await.unwrap();
    assert!(!virsh2(&["vol-list", &pool]).contains("kt-n2-img"), "the image's copy is gone");
    c.node_remove("kt-n2").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}
