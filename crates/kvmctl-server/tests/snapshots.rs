//! Snapshots against the real libvirtd with the tiny guest: what is on the disk comes back
//! with a revert, and with `memory` so does what runs (a counter process carries on from
//! where it was). Deleting a snapshot in the middle of the tree leaves the others valid.

use kvmctl_client::{Client, ClientError};
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{SnapshotCreateRequest, VmCreateRequest, VmExecRequest, VmStopRequest};

fn api_err(e: ClientError) -> (u16, kvmctl_types::api::ErrorBody) {
    match e {
        ClientError::Api { status, body } => (status, body),
        other => panic!("expected an API error, got {other}"),
    }
}

const VM: &str = "kt-snap";
/// Where on the guest's disk the test writes its marker (past the image's data).
const MARK: &str = "bs=1 seek=536870912";

async fn sh(client: &Client, command: &str) -> String {
    let out = client.vm_exec(VM, &VmExecRequest { command: command.into(), timeout_seconds: Some(60) }).await.unwrap();
    assert_eq!(out.exit_status, 0, "{command}: {}", out.stderr);
    out.stdout.trim().to_owned()
}

async fn mark(client: &Client, word: &str) {
    assert_eq!(word.len(), 5, "markers are five bytes, each overwriting the last whole");
    sh(client, &format!("printf {word} | dd of=/dev/vda {MARK} conv=notrunc 2>/dev/null && sync")).await;
}

async fn marked(client: &Client) -> String {
    sh(client, "dd if=/dev/vda bs=1 skip=536870912 count=5 2>/dev/null").await.trim_end_matches('\0').to_owned()
}

/// The guest's counter once it exceeds `above` (it counts five times a second; a guest under
/// emulation may be slower, so this waits for the value, not for a time).
async fn counter_above(client: &Client, above: u64) -> u64 {
    let mut last = 0;
    for _ in 0..300 {
        last = sh(client, "cat /tmp/c 2>/dev/null || echo 0").await.parse().unwrap_or(0);
        if last > above {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("the guest's counter stayed at {last}, not above {above}");
}

/// The root disk's file, from the domain's definition.
fn root_disk(sweep: &Sweep) -> String {
    use kvmctl_libvirt::Node;
    let xml = sweep.node.domain_xml(VM).unwrap();
    kvmctl_libvirt::xml::domain_devices(&xml).disk_files.into_iter().next().expect("a disk")
}

/// The marker as the stopped VM's disk holds it, read on the host.
fn on_disk(disk: &str) -> String {
    let out = std::process::Command::new("qemu-io").args(["-r", "-c", "read -v 536870912 5", disk]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "qemu-io: {text} {}", String::from_utf8_lossy(&out.stderr));
    // `20000000:  74 68 72 65 65  three`: the bytes in hex after the offset.
    let hex = text.lines().next().unwrap_or("").split(':').nth(1).unwrap_or("");
    let bytes: Vec<u8> = hex.split_whitespace().take(5).filter_map(|h| u8::from_str_radix(h, 16).ok()).collect();
    String::from_utf8_lossy(&bytes).trim_end_matches('\0').to_owned()
}

fn snap(name: &str, memory: bool) -> SnapshotCreateRequest {
    SnapshotCreateRequest { name: name.into(), memory, description: Some(format!("test {name}")) }
}

#[tokio::test]
async fn snapshots_bring_back_disk_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&[VM], &["kt-snap-img"]);
    let cfg = daemon::config(d);
    let (server, client) = daemon::start(&cfg).await;
    daemon::tiny_image(&client, d, "kt-snap-img").await;
    client.vm_create(&VmCreateRequest { user: Some("root".into()), ..daemon::tiny_vm(VM, "kt-snap-img", vec![]) }).await.unwrap();
    client.vm_wait(VM, "ssh", 300).await.unwrap();

    // Bad input changes nothing.
    let (s, body) = api_err(client.snapshot_create(VM, &snap("Not A Name", false)).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("name"), "{body:?}");
    let (s, body) = api_err(
        client.snapshot_create(VM, &SnapshotCreateRequest { description: Some("a\u{7}b".into()), ..snap("ok", false) }).await.unwrap_err(),
    );
    assert!(s == 400 && body.field.as_deref() == Some("description"), "{body:?}");
    assert_eq!(api_err(client.snapshot_revert(VM, "nope").await.unwrap_err()).0, 404);
    assert_eq!(api_err(client.snapshot_create("kt-no-such-vm", &snap("a", false)).await.unwrap_err()).0, 404);
    assert!(client.snapshot_list(VM).await.unwrap().is_empty());

    // A memory snapshot of the running VM: a marker on the disk, a counter in RAM.
    mark(&client, "one__").await;
    sh(
        &client,
        "setsid sh -c 'echo $$ > /tmp/pid; i=0; while true; do i=$((i+1)); echo $i > /tmp/c; sleep 0.2; done' </dev/null >/dev/null 2>&1 &",
    )
    .await;
    counter_above(&client, 2).await;
    let s1 = client.snapshot_create(VM, &snap("s1", true)).await.unwrap();
    assert!(s1.memory && s1.current && s1.parent.is_none() && s1.vm_state == "running" && s1.state == "ready", "{s1:?}");
    assert!(s1.size_bytes > 0, "the memory image counts: {s1:?}");
    assert_eq!(client.vm_get(VM).await.unwrap().state, "running", "the VM runs on after the snapshot");
    let (s, _) = api_err(client.snapshot_create(VM, &snap("s1", false)).await.unwrap_err());
    assert_eq!(s, 409, "a taken snapshot name");

    // Change both, then revert: the disk has its marker back, and the counter runs on from
    // where it was, in the same process.
    let pid = sh(&client, "cat /tmp/pid").await;
    mark(&client, "two__").await;
    sh(&client, &format!("kill {pid}; echo gone > /tmp/c")).await;
    assert_eq!(marked(&client).await, "two__");
    let back = client.snapshot_revert(VM, "s1").await.unwrap();
    assert!(back.current, "{back:?}");
    assert_eq!(client.vm_get(VM).await.unwrap().state, "running");
    assert_eq!(marked(&client).await, "one__");
    assert_eq!(sh(&client, "cat /tmp/pid").await, pid);
    let c1: u64 = sh(&client, "cat /tmp/c").await.parse().expect("the counter's file is back");
    counter_above(&client, c1).await;
    sh(&client, &format!("kill -0 {pid}")).await;

    // A disk-only snapshot of the running VM, a child of s1; a stopped VM reverts to it and
    // stays stopped. (The tiny guest makes new SSH host keys every boot, which the daemon's
    // pin refuses, so what a cold boot would see is read from the disk on the host.)
    mark(&client, "three").await;
    let s2 = client.snapshot_create(VM, &snap("s2", false)).await.unwrap();
    assert!(!s2.memory && s2.parent.as_deref() == Some("s1") && s2.current, "{s2:?}");
    assert_eq!(sh(&client, "cat /tmp/pid").await, pid, "the VM ran on through a disk-only snapshot");
    mark(&client, "four_").await;
    client.vm_stop(VM, &VmStopRequest { force: true, timeout_seconds: None }).await.unwrap();
    let disk = root_disk(&sweep);
    assert_eq!(on_disk(&disk), "four_");
    let (s, body) = api_err(client.snapshot_create(VM, &snap("s3", true)).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("memory"), "no memory to keep in a stopped VM: {body:?}");
    client.snapshot_revert(VM, "s2").await.unwrap();
    assert_eq!(client.vm_get(VM).await.unwrap().state, "stopped");
    assert_eq!(on_disk(&disk), "three");

    // Deleting s1, the middle of the tree, leaves s2 whole: s2 takes s1's parent and still
    // reverts; a memory revert of a stopped VM to s1 is no longer possible.
    client.snapshot_delete(VM, "s1").await.unwrap();
    let list = client.snapshot_list(VM).await.unwrap();
    assert_eq!(list.iter().map(|s| (s.name.as_str(), s.parent.clone())).collect::<Vec<_>>(), [("s2", None)]);
    assert_eq!(api_err(client.snapshot_revert(VM, "s1").await.unwrap_err()).0, 404);
    let s3 = client.snapshot_create(VM, &snap("s3", false)).await.unwrap();
    assert!(s3.vm_state == "stopped" && s3.parent.as_deref() == Some("s2"), "{s3:?}");
    client.vm_start(VM).await.unwrap();
    client.vm_wait(VM, "running", 60).await.unwrap();
    client.snapshot_revert(VM, "s2").await.unwrap();
    assert_eq!(client.vm_get(VM).await.unwrap().state, "running", "a running VM boots again from a disk-only snapshot");
    client.vm_stop(VM, &VmStopRequest { force: true, timeout_seconds: None }).await.unwrap();
    assert_eq!(on_disk(&disk), "three");

    // The VM's delete takes its snapshots' files with it.
    let snaps = cfg.snapshot_dir.clone();
    client.vm_delete(VM, false).await.unwrap();
    assert!(std::fs::read_dir(&snaps).map(|d| d.count()).unwrap_or(0) == 0, "snapshot files go with the VM");
    client.image_delete("kt-snap-img").await.unwrap();
    drop(server);
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
}

/// Snapshot space counts in the owner's disk quota, admitted in the statement that records
/// the snapshot: a memory snapshot past the quota is refused and leaves nothing; once made,
/// it is used disk that a new VM's disk must fit beside.
#[tokio::test]
async fn snapshot_space_counts_in_the_disk_quota() {
    use kvmctl_types::api::{QuotaSetRequest, TokenCreateRequest, UserCreateRequest};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-snapq", "kt-snapq2"], &["kt-snapq-img"]);
    let mut cfg = daemon::config(d);
    cfg.listen = Some("127.0.0.1:0".parse().unwrap());
    let (server, root) = daemon::start(&cfg).await;
    daemon::tiny_image(&root, d, "kt-snapq-img").await;
    root.user_create(&UserCreateRequest { name: "carol".into(), ..Default::default() }).await.unwrap();
    let token = root.token_create(&TokenCreateRequest { user: Some("carol".into()), ..Default::default() }).await.unwrap().token;
    let carol = Client::http(&format!("http://{}", server.tcp_addr.unwrap())).unwrap().with_token(token);
    root.quota_set("carol", &QuotaSetRequest { max_disk_gib: Some(1), ..Default::default() }).await.unwrap();
    carol.vm_create(&daemon::tiny_vm("kt-snapq", "kt-snapq-img", vec![])).await.unwrap();

    // 1 GiB of disk is the whole quota: a memory snapshot (256 MiB of RAM) does not fit.
    let (s, body) = api_err(carol.snapshot_create("kt-snapq", &snap("full", true)).await.unwrap_err());
    assert!(s == 403 && body.message.contains("disk"), "{s} {body:?}");
    assert!(carol.snapshot_list("kt-snapq").await.unwrap().is_empty(), "a refused snapshot leaves no row");
    assert!(std::fs::read_dir(&cfg.snapshot_dir)
        .map(|d| d.flatten().all(|e| std::fs::read_dir(e.path()).unwrap().count() == 0))
        .unwrap_or(true));
    // A disk-only snapshot holds no files of its own: it fits.
    carol.snapshot_create("kt-snapq", &snap("disk", false)).await.unwrap();

    root.quota_set("carol", &QuotaSetRequest { max_disk_gib: Some(2), ..Default::default() }).await.unwrap();
    let m = carol.snapshot_create("kt-snapq", &snap("mem", true)).await.unwrap();
    assert!(m.size_bytes > 0 && m.size_bytes <= 1 << 30, "{m:?}");
    assert_eq!(root.quota_get("carol").await.unwrap().used_disk_gib, 2, "1 GiB of disk and the memory image, rounded up");
    let (s, body) = api_err(carol.vm_create(&daemon::tiny_vm("kt-snapq2", "kt-snapq-img", vec![])).await.unwrap_err());
    assert!(s == 403 && body.message.contains("disk"), "a new disk must fit beside the snapshot: {s} {body:?}");
    carol.snapshot_delete("kt-snapq", "mem").await.unwrap();
    assert_eq!(root.quota_get("carol").await.unwrap().used_disk_gib, 1, "a deleted snapshot frees its space");

    carol.vm_delete("kt-snapq", false).await.unwrap();
    root.image_delete("kt-snapq-img").await.unwrap();
    drop(server);
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
}
