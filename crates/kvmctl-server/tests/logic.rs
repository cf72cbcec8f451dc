//! The daemon's logic on the in-memory node (`kvmctl_testkit::memory::MemoryNode`): create
//! and its undo at every step, delete, the reconciler's answers to drift, gc and hygiene.
//! No libvirtd, no guest: these run in seconds, beside the real-libvirt tests that cover
//! every capability end to end. `KVMCTL_TEST_ENGINE=postgres` runs them on PostgreSQL
//! (scripts/test.sh does both).

use kvmctl_core::{Caller, Error, VmState};
use kvmctl_libvirt::xml::{self, DhcpHost};
use kvmctl_libvirt::Node;
use kvmctl_server::app::{self, Context};
use kvmctl_server::clock::ManualClock;
use kvmctl_server::Config;
use kvmctl_store::{DataStore, ImageRecord, Scope};
use kvmctl_testkit::memory::MemoryNode;
use kvmctl_types::api::VmCreateRequest;
use kvmctl_types::Name;
use std::sync::Arc;

const IMAGE_VOLUME: &str = "image-base.qcow2";
const START: i64 = 1_800_000_000;

/// A daemon's context over a fresh database and an in-memory node with one image.
struct Logic {
    dir: tempfile::TempDir,
    store: DataStore,
    node: Arc<MemoryNode>,
    clock: Arc<ManualClock>,
}

impl Logic {
    async fn new() -> Logic {
        let dir = tempfile::tempdir().unwrap();
        let store = DataStore::connect(&kvmctl_store::testing::location_for_tests(dir.path()).await).await.unwrap();
        let node = Arc::new(MemoryNode::new("memory:///local", &dir.path().join("pool")));
        node.with(|st| {
            let p = st.pools.remove("default").unwrap();
            st.pools.insert("kvmctl".into(), p);
        });
        let image_path = node
            .volume_create(
                "kvmctl",
                &xml::VolumeSpec {
                    name: IMAGE_VOLUME.into(),
                    capacity_bytes: 1 << 30,
                    format: xml::DiskFormat::Qcow2,
                    backing: None,
                    private: false,
                },
            )
            .unwrap()
            .path;
        let cfg = Self::config(dir.path(), "");
        store.node_upsert(&Name::parse("local").unwrap(), node.uri(), &cfg.local_node_settings()).await.unwrap();
        store
            .image_insert(&ImageRecord {
                name: Name::parse("base").unwrap(),
                node: "local".into(),
                pool: "kvmctl".into(),
                volume: IMAGE_VOLUME.into(),
                path: image_path.display().to_string(),
                format: "qcow2".into(),
                virtual_bytes: 1 << 30,
                file_bytes: 1 << 20,
                sha256: "0".repeat(64),
                source: "test".into(),
                os_family: None,
                os_version: None,
                cloud_init: true,
                default_user: None,
                boot_modes: vec!["bios".into()],
                kernel_volume: None,
                initrd_volume: None,
                cmdline: None,
                created_at: 0,
                tpm: false,
                profile: None,
            })
            .await
            .unwrap();
        Logic { dir, store, node, clock: Arc::new(ManualClock::new(START)) }
    }

    fn config(dir: &std::path::Path, failpoints: &str) -> Config {
        Config {
            database: dir.join("kvmctl.db"),
            libvirt_uri: "memory:///local".into(),
            key_dir: dir.join("keys"),
            snapshot_dir: dir.join("snapshots"),
            console_log_dir: dir.join("console"),
            host_state_dir: dir.join("host"),
            domain_type: kvmctl_server::config::DomainTypeSetting::Qemu,
            pool: "kvmctl".into(),
            network: "default".into(),
            gc_grace_seconds: 0,
            failpoints: failpoints.into(),
            ..Config::default()
        }
    }

    /// A context with `failpoints` armed (`create.define=fail`).
    fn ctx(&self, failpoints: &str) -> Context {
        let (mut ctx, boots) = Context::new(self.store.clone(), self.node.clone(), Self::config(self.dir.path(), failpoints));
        // Boots are watched by the server's readiness task, which these tests do not run.
        std::mem::forget(boots);
        ctx.clock = self.clock.clone();
        // Each context of a test is the same daemon again (a restart per failpoint): on
        // PostgreSQL its leases are its own, as its busy map would be.
        ctx.instance = "logic".into();
        ctx
    }

    /// `ctx` with the nodes' capacity read, as the daemon does before it serves.
    async fn ready(&self, failpoints: &str) -> Context {
        let ctx = self.ctx(failpoints);
        app::nodes::refresh(&ctx).await.unwrap();
        ctx
    }

    /// What the node holds of VMs: domains, volumes besides the image, DHCP entries, keys.
    fn leftovers(&self) -> (Vec<String>, Vec<String>, Vec<DhcpHost>, usize) {
        let volumes = self.node.volume_names("kvmctl").into_iter().filter(|v| v != IMAGE_VOLUME).collect();
        let keys = std::fs::read_dir(self.dir.path().join("keys")).map(|d| d.count()).unwrap_or(0);
        (self.node.domain_names(), volumes, self.node.dhcp_hosts("default"), keys)
    }
}

fn admin() -> Caller {
    Caller::local_admin()
}

fn request(name: &str) -> VmCreateRequest {
    VmCreateRequest {
        name: name.into(),
        image: "base".into(),
        vcpus: Some(1),
        memory_mib: Some(256),
        disk_gib: Some(2),
        no_ssh_forward: true,
        ..Default::default()
    }
}

async fn state_of(l: &Logic, name: &str) -> Option<VmState> {
    l.store.vm_get(&Scope::all(), &Name::parse(name).unwrap()).await.unwrap().map(|r| r.state)
}

#[tokio::test]
async fn create_makes_everything_and_delete_removes_it() {
    let l = Logic::new().await;
    let ctx = l.ready("").await;
    let vm = app::vms::vm_create(&ctx, &admin(), request("web")).await.unwrap();
    assert_eq!(vm.state, "running");
    let ip = vm.ip.clone().expect("an address reserved on the NAT network");
    let (domains, volumes, hosts, keys) = l.leftovers();
    assert_eq!(domains, ["web"]);
    assert_eq!(volumes, ["web-root.qcow2", "web-seed.iso"]);
    assert_eq!(hosts.len(), 1);
    assert_eq!((hosts[0].name.as_str(), hosts[0].ip.as_str(), hosts[0].mac.as_str()), ("web", ip.as_str(), vm.mac.as_str()));
    assert_eq!(keys, 1, "the VM's own SSH key");
    // The domain carries the VM's id, and its root disk is backed by the image.
    let dom = l.node.domain_xml("web").unwrap();
    assert_eq!(xml::metadata_parse(&dom).map(|m| m.vm_id), Some(vm.id));
    assert!(xml::domain_devices(&dom).disk_files.iter().any(|f| f.ends_with("web-root.qcow2")));

    // A second VM gets the next address, never the first one's.
    let other = app::vms::vm_create(&ctx, &admin(), request("db")).await.unwrap();
    assert_ne!(other.ip, vm.ip);
    // A taken name is a conflict that changes nothing.
    let again = app::vms::vm_create(&ctx, &admin(), request("web")).await.unwrap_err();
    assert!(matches!(again, Error::Conflict(_)), "{again:?}");
    assert_eq!(l.node.domain_names(), ["db", "web"]);

    app::vms::vm_delete(&ctx, &admin(), "web", false).await.unwrap();
    app::vms::vm_delete(&ctx, &admin(), "db", false).await.unwrap();
    assert_eq!(l.leftovers(), (vec![], vec![], vec![], 0));
    assert!(l.store.vm_list(&Scope::all()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_create_that_fails_at_any_step_leaves_nothing() {
    let l = Logic::new().await;
    for step in [
        "create.reserve",
        "create.address",
        "create.before_volumes",
        "create.root_volume",
        "create.seed_volume",
        "create.define",
        "create.start",
        "create.rules",
    ] {
        let ctx = l.ready(&format!("{step}=fail")).await;
        let e = app::vms::vm_create(&ctx, &admin(), request("web")).await.unwrap_err();
        assert!(e.to_string().contains(step), "{step}: {e}");
        assert_eq!(l.leftovers(), (vec![], vec![], vec![], 0), "after {step}");
        assert_eq!(state_of(&l, "web").await, None, "after {step}");
    }
    // The node refusing a call is undone the same way.
    for op in ["volume_create", "volume_upload_from", "domain_define", "domain_start", "network_dhcp_host"] {
        l.node.fail(op, 1);
        let e = app::vms::vm_create(&l.ready("").await, &admin(), request("web")).await.unwrap_err();
        assert!(e.to_string().contains("injected failure"), "{op}: {e}");
        assert_eq!(l.leftovers(), (vec![], vec![], vec![], 0), "after {op} failed");
        assert_eq!(state_of(&l, "web").await, None, "after {op} failed");
    }
    // And the next create succeeds.
    app::vms::vm_create(&l.ready("").await, &admin(), request("web")).await.unwrap();
}

#[tokio::test]
async fn a_create_never_removes_what_it_did_not_make() {
    let l = Logic::new().await;
    // Someone else's volume of the name the VM would use: refused before anything is made.
    let spec =
        xml::VolumeSpec { name: "web-seed.iso".into(), capacity_bytes: 1, format: xml::DiskFormat::Raw, backing: None, private: false };
    l.node.volume_create("kvmctl", &spec).unwrap();
    let e = app::vms::vm_create(&l.ready("").await, &admin(), request("web")).await.unwrap_err();
    assert!(matches!(&e, Error::Conflict(m) if m.contains("web-seed.iso")), "{e:?}");
    assert_eq!(l.node.volume_names("kvmctl"), [IMAGE_VOLUME, "web-seed.iso"]);
    // A domain of that name kvmctl does not manage: the same.
    l.node.volume_delete("kvmctl", "web-seed.iso").unwrap();
    l.node.domain_define("<domain type='qemu'><name>web</name></domain>").unwrap();
    let e = app::vms::vm_create(&l.ready("").await, &admin(), request("web")).await.unwrap_err();
    assert!(matches!(&e, Error::Conflict(m) if m.contains("does not manage")), "{e:?}");
    assert_eq!(l.node.domain_names(), ["web"]);
    assert_eq!(l.node.domain_xml("web").unwrap(), "<domain type='qemu'><name>web</name></domain>");
}

#[tokio::test]
async fn stop_start_and_resize_follow_the_node() {
    let l = Logic::new().await;
    let ctx = l.ready("").await;
    app::vms::vm_create(&ctx, &admin(), request("web")).await.unwrap();
    let req = kvmctl_types::api::VmStopRequest { force: false, timeout_seconds: Some(5) };
    assert_eq!(app::vms::vm_stop(&ctx, &admin(), "web", req).await.unwrap().state, "stopped");
    let grow = kvmctl_types::api::VmResizeRequest { vcpus: Some(2), memory_mib: Some(512), disk_gib: Some(4), plan: None };
    let vm = app::vms::vm_resize(&ctx, &admin(), "web", grow).await.unwrap();
    assert_eq!((vm.vcpus, vm.memory_mib, vm.disk_gib), (2, 512, 4));
    let dom = l.node.domain_xml("web").unwrap();
    assert_eq!(xml::domain_type_of(&dom), Some(xml::DomainType::Qemu), "a redefinition keeps the domain type");
    assert!(dom.contains("<vcpu>2</vcpu>") || dom.contains(">2</vcpu>"), "{dom}");
    let root = l.node.volume_get("kvmctl", "web-root.qcow2").unwrap().unwrap();
    assert_eq!(root.capacity_bytes, 4 << 30);
    // A shrink is refused and changes nothing.
    let shrink = kvmctl_types::api::VmResizeRequest { vcpus: None, memory_mib: None, disk_gib: Some(3), plan: None };
    assert!(matches!(app::vms::vm_resize(&ctx, &admin(), "web", shrink).await, Err(Error::InvalidRequest { .. })));
    assert_eq!(app::vms::vm_start(&ctx, &admin(), "web").await.unwrap().state, "running");
    // A start the node refuses leaves the VM as it was, with the error.
    let req = kvmctl_types::api::VmStopRequest { force: true, timeout_seconds: None };
    app::vms::vm_stop(&ctx, &admin(), "web", req).await.unwrap();
    l.node.fail("domain_start", 1);
    assert!(app::vms::vm_start(&ctx, &admin(), "web").await.is_err());
    let rec = l.store.vm_get(&Scope::all(), &Name::parse("web").unwrap()).await.unwrap().unwrap();
    assert_eq!(rec.state, VmState::Stopped);
    assert!(rec.error.unwrap_or_default().contains("injected failure"));
}

#[tokio::test]
async fn the_reconciler_answers_drift() {
    let l = Logic::new().await;
    let ctx = l.ready("").await;
    for n in ["crashed", "vanished", "stopped-inside", "creating"] {
        app::vms::vm_create(&ctx, &admin(), request(n)).await.unwrap();
    }
    // QEMU dies: stopped, and due to start again.
    l.node.crash("crashed");
    // The domain is removed behind kvmctl's back: failed.
    l.node.domain_destroy("vanished").unwrap();
    l.node.domain_undefine("vanished").unwrap();
    // The guest powers off: stopped, not wanted running.
    l.node.domain_shutdown("stopped-inside").unwrap();
    // A create interrupted by a crash of the daemon: undone.
    assert!(l.store.vm_transition(&Name::parse("creating").unwrap(), VmState::Running, VmState::Creating, None).await.unwrap());

    let report = app::reconcile::reconcile(&ctx).await.unwrap();
    assert_eq!(report.creates_undone, ["creating"]);
    assert_eq!(report.restarts_due, ["crashed"]);
    assert_eq!(state_of(&l, "crashed").await, Some(VmState::Stopped));
    assert_eq!(state_of(&l, "vanished").await, Some(VmState::Failed));
    assert_eq!(state_of(&l, "stopped-inside").await, Some(VmState::Stopped));
    assert_eq!(state_of(&l, "creating").await, None);
    assert!(!l.node.domain_names().contains(&"creating".to_string()));
    assert!(!l.node.volume_names("kvmctl").iter().any(|v| v.starts_with("creating-")));
    // A second pass finds nothing more to do but the restart still due.
    let again = app::reconcile::reconcile(&ctx).await.unwrap();
    assert!(again.creates_undone.is_empty() && again.states_changed.is_empty(), "{again:?}");
}

#[tokio::test]
async fn gc_reports_debris_then_removes_it() {
    let l = Logic::new().await;
    let ctx = l.ready("").await;
    let vm = app::vms::vm_create(&ctx, &admin(), request("kept")).await.unwrap();
    // Debris: a volume and a DHCP entry of a VM with no row, a domain with kvmctl's mark.
    let spec = xml::VolumeSpec {
        name: "ghost-root.qcow2".into(),
        capacity_bytes: 1,
        format: xml::DiskFormat::Qcow2,
        backing: None,
        private: true,
    };
    l.node.volume_create("kvmctl", &spec).unwrap();
    let host = xml::dhcp_host_xml("52:54:00:00:00:99", "192.168.122.250".parse().unwrap(), "ghost").unwrap();
    l.node.network_dhcp_host("default", &host, true).unwrap();
    let meta = xml::metadata_xml(&xml::Metadata {
        vm_id: kvmctl_types::VmId::new(),
        owner: "x".into(),
        plan: None,
        installation: None,
        net: None,
    })
    .unwrap();
    let meta = kvmctl_testkit::memory::metadata_bound(&meta);
    l.node.domain_define(&format!("<domain type='qemu'><name>orphan</name><metadata>{meta}</metadata></domain>")).unwrap();

    let report = app::gc::gc(&ctx, &admin(), false).await.unwrap();
    let mut found: Vec<(String, String, bool)> = report.items.iter().map(|i| (i.kind.clone(), i.name.clone(), i.removed)).collect();
    found.sort();
    let want = |removed| {
        vec![
            ("dhcp_host".to_string(), "default/ghost".to_string(), removed),
            ("domain".to_string(), "orphan".to_string(), removed),
            ("volume".to_string(), "kvmctl/ghost-root.qcow2".to_string(), removed),
        ]
    };
    assert_eq!(found, want(false));
    // Users may not collect garbage.
    let user = Caller { name: "bob".into(), role: kvmctl_core::auth::Role::User, custom_sizing: false };
    assert!(matches!(app::gc::gc(&ctx, &user, true).await, Err(Error::Forbidden(_))));

    let report = app::gc::gc(&ctx, &admin(), true).await.unwrap();
    let mut found: Vec<(String, String, bool)> = report.items.iter().map(|i| (i.kind.clone(), i.name.clone(), i.removed)).collect();
    found.sort();
    assert_eq!(found, want(true));
    // The VM with a row keeps everything.
    assert_eq!(l.node.domain_names(), ["kept"]);
    assert_eq!(l.node.volume_names("kvmctl"), [IMAGE_VOLUME, "kept-root.qcow2", "kept-seed.iso"]);
    assert_eq!(l.node.dhcp_hosts("default").iter().map(|h| h.mac.clone()).collect::<Vec<_>>(), [vm.mac]);
}

#[tokio::test]
async fn hygiene_deletes_expired_vms_only() {
    let l = Logic::new().await;
    let ctx = l.ready("").await;
    app::vms::vm_create(&ctx, &admin(), VmCreateRequest { ttl_seconds: Some(600), ..request("brief") }).await.unwrap();
    app::vms::vm_create(&ctx, &admin(), request("lasting")).await.unwrap();
    app::hygiene::pass(&ctx).await.unwrap();
    assert_eq!(state_of(&l, "brief").await, Some(VmState::Running), "not expired yet");
    l.clock.set(START + 601);
    app::hygiene::pass(&ctx).await.unwrap();
    assert_eq!(state_of(&l, "brief").await, None);
    assert_eq!(state_of(&l, "lasting").await, Some(VmState::Running));
    assert_eq!(l.node.domain_names(), ["lasting"]);
    assert!(!l.node.volume_names("kvmctl").iter().any(|v| v.starts_with("brief-")));
}

#[tokio::test]
async fn a_network_reserved_ahead_is_not_changed_by_creates_deletes_or_gc() {
    let l = Logic::new().await;
    let premade: Vec<DhcpHost> = (2..=254u8)
        .map(|i| {
            let ip = std::net::Ipv4Addr::new(10, 9, 0, i);
            DhcpHost { mac: xml::premade_mac(ip), name: String::new(), ip: ip.to_string() }
        })
        .collect();
    l.node.with(|st| {
        let xml = kvmctl_testkit::memory::nat_network_xml("lab", "virbr9", "10.9.0");
        let net = kvmctl_testkit::memory::MemNetwork { xml, active: true, autostart: true, hosts: premade.clone(), leases: Vec::new() };
        st.networks.insert("lab".into(), net);
    });
    let ctx = l.ready("").await;
    let on_lab = |name: &str| VmCreateRequest { network: Some("lab".into()), ..request(name) };
    let web = app::vms::vm_create(&ctx, &admin(), on_lab("web")).await.unwrap();
    let db = app::vms::vm_create(&ctx, &admin(), on_lab("db")).await.unwrap();
    // Each takes an address and the MAC reserved ahead for it; the domain carries that MAC.
    assert_eq!((web.ip.as_deref(), web.mac.as_str()), (Some("10.9.0.2"), "52:4b:0a:09:00:02"));
    assert_eq!((db.ip.as_deref(), db.mac.as_str()), (Some("10.9.0.3"), "52:4b:0a:09:00:03"));
    assert!(l.node.domain_xml("web").unwrap().contains("52:4b:0a:09:00:02"));
    // Nothing reserved live, nothing removed, nothing called debris.
    let report = app::gc::gc(&ctx, &admin(), true).await.unwrap();
    assert!(report.items.is_empty(), "{:?}", report.items);
    app::vms::vm_delete(&ctx, &admin(), "web", false).await.unwrap();
    assert!(!l.node.calls().iter().any(|c| c.starts_with("network_dhcp_host")), "{:?}", l.node.calls());
    assert_eq!(l.node.dhcp_hosts("lab"), premade);
    // The address is free again, with its MAC.
    let again = app::vms::vm_create(&ctx, &admin(), on_lab("cache")).await.unwrap();
    assert_eq!((again.ip.as_deref(), again.mac.as_str()), (Some("10.9.0.2"), "52:4b:0a:09:00:02"));
}

#[tokio::test]
async fn an_address_taken_meanwhile_is_replaced_before_the_domain_is_made() {
    let l = Logic::new().await;
    let ctx = l.ready("").await;
    // libvirt refuses the first reservation: something else took the address in between.
    l.node.fail_with("network_dhcp_host", 1, || kvmctl_libvirt::NodeError::AlreadyExists {
        kind: "DHCP host entry for that address or name in network",
        name: "default".into(),
    });
    let vm = app::vms::vm_create(&ctx, &admin(), request("web")).await.unwrap();
    let ip = vm.ip.clone().unwrap();
    assert_ne!(ip, "192.168.122.2", "the first pick was refused");
    let hosts = l.node.dhcp_hosts("default");
    assert_eq!(hosts.iter().map(|h| h.ip.as_str()).collect::<Vec<_>>(), [ip.as_str()]);
    // The domain was defined with the new address in its traffic filter, and runs.
    let dom = l.node.domain_xml("web").unwrap();
    assert!(dom.contains(&ip) && !dom.contains("192.168.122.2"), "{dom}");
    assert_eq!(l.node.domain_state("web").unwrap(), kvmctl_libvirt::DomainState::Running);
    let calls = l.node.calls();
    let started = calls.iter().position(|c| c == "domain_start web").expect("started");
    let reserved = calls.iter().rposition(|c| c.starts_with("network_dhcp_host")).unwrap();
    assert!(reserved < started, "the guest starts only once its address is reserved: {calls:?}");
}

#[tokio::test]
async fn hygiene_runs_again_when_the_clock_moves_during_a_pass() {
    let l = Logic::new().await;
    let gate = l.dir.path().join("go");
    let ctx = Arc::new(l.ready(&format!("hygiene.expire=wait:{}", gate.display())).await);
    app::vms::vm_create(&ctx, &admin(), VmCreateRequest { ttl_seconds: Some(600), ..request("first") }).await.unwrap();
    app::vms::vm_create(&ctx, &admin(), VmCreateRequest { ttl_seconds: Some(4000), ..request("second") }).await.unwrap();
    let task = tokio::spawn(app::hygiene::run(ctx.clone()));
    let mut events = ctx_events(&ctx);
    // The pass that expires `first` is held at its failpoint while the clock moves past
    // `second`'s expiry too; `second` was not due when that pass began.
    l.clock.set(START + 601);
    until_event(&mut events, "vm.expired", "first").await;
    l.clock.set(START + 4001);
    std::fs::write(&gate, b"").unwrap();
    // The next pass is due a minute after the last one began, so it runs at once.
    until_event(&mut events, "vm.deleted", "second").await;
    assert_eq!(l.store.vm_list(&Scope::all()).await.unwrap().len(), 0);
    task.abort();
}

fn ctx_events(ctx: &Context) -> tokio::sync::broadcast::Receiver<kvmctl_types::api::ApiEvent> {
    ctx.subscribe()
}

/// Waits for the event (a minute at most: a hang, not a speed check).
async fn until_event(rx: &mut tokio::sync::broadcast::Receiver<kvmctl_types::api::ApiEvent>, kind: &str, vm: &str) {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) if e.kind == kind && e.vm == vm => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), wait).await.unwrap_or_else(|_| panic!("no {kind} for {vm}"));
}
