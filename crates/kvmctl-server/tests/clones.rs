//! Clones against the real libvirtd with the tiny guest: a linked clone of a snapshot and a
//! full clone of the running source both boot with the disk they were cloned from and an
//! identity of their own (hostname, MAC, address, VM key); the source is untouched; linked
//! clones of one snapshot share one base, which outlives the source and goes with its last
//! clone. Bad requests change nothing.

use kvmctl_client::{Client, ClientError};
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{SnapshotCreateRequest, VmCloneRequest, VmCreateRequest, VmExecRequest};

fn api_err(e: ClientError) -> (u16, kvmctl_types::api::ErrorBody) {
    match e {
        ClientError::Api { status, body } => (status, body),
        other => panic!("expected an API error, got {other}"),
    }
}

const SRC: &str = "kt-clsrc";
const LINKED: &str = "kt-cl-linked";
const LINKED2: &str = "kt-cl-linked2";
const FULL: &str = "kt-cl-full";
/// Where on the guest's disk the test writes its marker (past the image's data).
const MARK: &str = "bs=1 seek=536870912";

async fn sh(client: &Client, vm: &str, command: &str) -> String {
    let out = client.vm_exec(vm, &VmExecRequest { command: command.into(), timeout_seconds: Some(60) }).await.unwrap();
    assert_eq!(out.exit_status, 0, "{vm}: {command}: {}", out.stderr);
    out.stdout.trim().to_owned()
}

async fn mark(client: &Client, vm: &str, word: &str) {
    sh(client, vm, &format!("printf {word} | dd of=/dev/vda {MARK} conv=notrunc 2>/dev/null && sync")).await;
}

async fn marked(client: &Client, vm: &str) -> String {
    sh(client, vm, "dd if=/dev/vda bs=1 skip=536870912 count=5 2>/dev/null").await.trim_end_matches('\0').to_owned()
}

fn clone(name: &str, snapshot: Option<&str>, mode: &str) -> VmCloneRequest {
    VmCloneRequest { name: name.into(), from_snapshot: snapshot.map(str::to_owned), mode: Some(mode.into()), ..Default::default() }
}

#[tokio::test]
async fn clones_boot_with_the_source_disk_and_their_own_identity() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&[SRC, LINKED, LINKED2, FULL], &["kt-clone-img"]);
    let cfg = daemon::config(d);
    let (server, client) = daemon::start(&cfg).await;
    let image = daemon::tiny_image(&client, d, "kt-clone-img").await;
    let image_file = std::path::PathBuf::from(&image.path);
    let pool_dir = image_file.parent().unwrap().to_path_buf();
    let src =
        client.vm_create(&VmCreateRequest { user: Some("root".into()), ..daemon::tiny_vm(SRC, "kt-clone-img", vec![]) }).await.unwrap();
    client.vm_wait(SRC, "ssh", 300).await.unwrap();
    mark(&client, SRC, "snap_").await;
    client.snapshot_create(SRC, &SnapshotCreateRequest { name: "s1".into(), ..Default::default() }).await.unwrap();
    mark(&client, SRC, "now__").await;

    // Bad requests: each is refused and leaves no VM.
    let (s, body) = api_err(client.vm_clone(SRC, &clone("Bad Name", None, "linked")).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("name"), "{body:?}");
    let (s, body) = api_err(client.vm_clone(SRC, &clone(LINKED, None, "thin")).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("mode"), "{body:?}");
    assert_eq!(api_err(client.vm_clone(SRC, &clone(LINKED, Some("nope"), "linked")).await.unwrap_err()).0, 404);
    assert_eq!(api_err(client.vm_clone("kt-no-such", &clone(LINKED, None, "linked")).await.unwrap_err()).0, 404);
    assert_eq!(api_err(client.vm_clone(SRC, &clone(SRC, None, "full")).await.unwrap_err()).0, 400);
    assert_eq!(client.vm_list().await.unwrap().len(), 1);
    assert!(daemon::clone_bases(&pool_dir, &image_file).is_empty());

    // A linked clone of the snapshot, while the source runs on.
    let linked = client.vm_clone(SRC, &clone(LINKED, Some("s1"), "linked")).await.unwrap();
    client.vm_wait(LINKED, "ssh", 300).await.unwrap();
    assert_eq!(marked(&client, LINKED).await, "snap_", "the clone has the snapshot's disk");
    assert_eq!(sh(&client, LINKED, "hostname").await, LINKED);
    assert_eq!(daemon::clone_bases(&pool_dir, &image_file).len(), 1, "a linked clone lies on one base");
    // A second linked clone of the same snapshot shares it.
    client.vm_clone(SRC, &clone(LINKED2, Some("s1"), "linked")).await.unwrap();
    client.vm_wait(LINKED2, "ssh", 300).await.unwrap();
    assert_eq!(daemon::clone_bases(&pool_dir, &image_file).len(), 1, "clones of one snapshot share its base");

    // A full clone of the running source as it is now.
    let full = client.vm_clone(SRC, &clone(FULL, None, "full")).await.unwrap();
    client.vm_wait(FULL, "ssh", 300).await.unwrap();
    assert_eq!(marked(&client, FULL).await, "now__", "the full clone has the source's disk as it was");
    assert_eq!(sh(&client, FULL, "hostname").await, FULL);
    assert_eq!(client.vm_get(SRC).await.unwrap().state, "running", "the source runs on");

    // Each has its own MAC and address.
    let mut macs = vec![src.mac.clone(), linked.mac.clone(), full.mac.clone()];
    let mut ips = vec![src.ip.clone(), linked.ip.clone(), full.ip.clone()];
    assert!(ips.iter().all(Option::is_some), "{ips:?}");
    macs.sort();
    macs.dedup();
    ips.sort();
    ips.dedup();
    assert_eq!((macs.len(), ips.len()), (3, 3), "MACs {macs:?}, addresses {ips:?}");
    // And its own SSH forward.
    let ssh_port = |vm: &kvmctl_types::api::Vm| vm.forwards.iter().find(|f| f.pool == "ssh").map(|f| f.host_port);
    let mut ports = vec![ssh_port(&src), ssh_port(&linked), ssh_port(&full)];
    assert!(ports.iter().all(Option::is_some), "{ports:?}");
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "{ports:?}");
    let guest_ip = |vm: &str| {
        let client = client.clone();
        let vm = vm.to_owned();
        async move { sh(&client, &vm, "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1").await }
    };
    assert_eq!(Some(guest_ip(LINKED).await), linked.ip, "the guest has its reserved address");
    assert_eq!(Some(guest_ip(FULL).await), full.ip);

    // Writing in the clones leaves the source as it was.
    mark(&client, LINKED, "clone").await;
    mark(&client, FULL, "clone").await;
    assert_eq!(marked(&client, SRC).await, "now__");
    assert_eq!(marked(&client, LINKED2).await, "snap_", "clones sharing a base do not see each other's writes");

    // The source goes; its clones and their base stay.
    client.vm_delete(SRC, false).await.unwrap();
    assert_eq!(marked(&client, LINKED).await, "clone");
    assert_eq!(
        sh(&client, LINKED2, "dd if=/dev/vda bs=1M skip=500 count=30 2>/dev/null | wc -c").await,
        "31457280",
        "the base reads whole"
    );
    client.vm_delete(LINKED, false).await.unwrap();
    assert_eq!(daemon::clone_bases(&pool_dir, &image_file).len(), 1, "the base stays while a clone uses it");
    client.vm_delete(LINKED2, false).await.unwrap();
    assert!(daemon::clone_bases(&pool_dir, &image_file).is_empty(), "the base goes with its last clone");
    client.vm_delete(FULL, false).await.unwrap();
    client.image_delete("kt-clone-img").await.unwrap();
    drop(server);
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
}

/// A clone's base counts in its owner's disk quota; a clone past the quota is refused and
/// leaves nothing (no VM, no base).
#[tokio::test]
async fn clones_pass_the_quota_and_leave_nothing_when_refused() {
    use kvmctl_types::api::{QuotaSetRequest, TokenCreateRequest, UserCreateRequest};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-clq", "kt-clq2", "kt-clq3"], &["kt-clq-img"]);
    let mut cfg = daemon::config(d);
    cfg.listen = Some("127.0.0.1:0".parse().unwrap());
    let (server, root) = daemon::start(&cfg).await;
    let image = daemon::tiny_image(&root, d, "kt-clq-img").await;
    let image_file = std::path::PathBuf::from(&image.path);
    let pool_dir = image_file.parent().unwrap().to_path_buf();
    root.user_create(&UserCreateRequest { name: "dave".into(), ..Default::default() }).await.unwrap();
    root.user_create(&UserCreateRequest { name: "erin".into(), ..Default::default() }).await.unwrap();
    let http = format!("http://{}", server.tcp_addr.unwrap());
    let as_user = |name: &str| {
        let root = root.clone();
        let (name, http) = (name.to_owned(), http.clone());
        async move {
            let token = root.token_create(&TokenCreateRequest { user: Some(name), ..Default::default() }).await.unwrap().token;
            Client::http(&http).unwrap().with_token(token)
        }
    };
    let dave = as_user("dave").await;
    let erin = as_user("erin").await;
    root.quota_set("dave", &QuotaSetRequest { max_disk_gib: Some(3), ..Default::default() }).await.unwrap();
    dave.vm_create(&VmCreateRequest { no_start: true, ..daemon::tiny_vm("kt-clq", "kt-clq-img", vec![]) }).await.unwrap();

    // Another user cannot clone dave's VM, nor learn that it exists.
    let (s, _) = api_err(erin.vm_clone("kt-clq", &clone("kt-clq3", None, "linked")).await.unwrap_err());
    assert_eq!(s, 404);

    // A stopped source clones at once; the clone's disk (1 GiB) and its base (rounded up to
    // 1 GiB) fit beside the source's in the quota of 3.
    dave.vm_clone("kt-clq", &VmCloneRequest { no_start: true, ..clone("kt-clq2", None, "linked") }).await.unwrap();
    assert_eq!(daemon::clone_bases(&pool_dir, &image_file).len(), 1);
    assert_eq!(root.quota_get("dave").await.unwrap().used_disk_gib, 3, "two disks and the base, rounded up");
    // The next is past the quota: refused, and nothing of it is left.
    let (s, body) = api_err(dave.vm_clone("kt-clq", &clone("kt-clq3", None, "full")).await.unwrap_err());
    assert!(s == 403 && body.message.contains("disk"), "{s} {body:?}");
    assert_eq!(dave.vm_list().await.unwrap().len(), 2);
    assert_eq!(daemon::clone_bases(&pool_dir, &image_file).len(), 1);
    assert!(!pool_dir.join("kt-clq3-root.qcow2").exists());
    dave.vm_delete("kt-clq2", false).await.unwrap();
    assert!(daemon::clone_bases(&pool_dir, &image_file).is_empty());
    assert_eq!(root.quota_get("dave").await.unwrap().used_disk_gib, 1);
    dave.vm_delete("kt-clq", false).await.unwrap();
    root.image_delete("kt-clq-img").await.unwrap();
    drop(server);
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
}
