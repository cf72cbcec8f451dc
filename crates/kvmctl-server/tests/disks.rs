//! Data disks (`vm disk add|list|resize|rm`) on the real libvirtd with the tiny guest: a disk
//! hot-plugged into a running guest appears there as a block device with its name as serial
//! and its size; it grows online; it is hot-unplugged and its volume deleted; a SCSI disk
//! brings its controller; a stopped VM's disks change in its definition and boot with it.
//! Quota and bad input refuse a disk and leave nothing; another user never sees the VM; a
//! failure at each step of an add leaves nothing; snapshots and clones refuse VMs with data
//! disks; delete removes them.

use kvmctl_client::{Client, ClientError};
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{
    ErrorBody, QuotaSetRequest, SnapshotCreateRequest, TokenCreateRequest, UserCreateRequest, VmCloneRequest, VmCreateRequest,
    VmDiskAddRequest, VmDiskResizeRequest, VmExecRequest, VmStopRequest,
};
use std::time::Duration;

const VM: &str = "kt-dsk-1";
const IMG: &str = "kt-dsk-img";

fn api_err(e: ClientError) -> (u16, ErrorBody) {
    match e {
        ClientError::Api { status, body } => (status, body),
        other => panic!("expected an API error, got {other}"),
    }
}

async fn exec(c: &Client, vm: &str, command: &str) -> String {
    let out = c.vm_exec(vm, &VmExecRequest { command: command.into(), timeout_seconds: Some(60) }).await.unwrap();
    assert_eq!(out.exit_status, 0, "{command}: {}{}", out.stdout, out.stderr);
    out.stdout
}

/// Waits until `command`'s output in the guest satisfies `ok` (a hotplug lands when the guest
/// has handled its ACPI event); the last output.
async fn guest_until(c: &Client, vm: &str, command: &str, ok: impl Fn(&str) -> bool) -> String {
    let mut out = String::new();
    for _ in 0..300 {
        out = exec(c, vm, command).await;
        if ok(&out) {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{command} never gave the expected output; last: {out}");
}

/// The guest's block devices with their serials and sizes (512-byte sectors).
const BLOCKS: &str = "for b in /sys/block/*; do echo \"$(basename $b) $(cat $b/serial 2>/dev/null || cat $b/device/serial 2>/dev/null || echo -) $(cat $b/size)\"; done";

fn volume_exists(sweep: &Sweep, name: &str) -> bool {
    use kvmctl_libvirt::Node;
    sweep.node.volume_get(&sweep.pool, name).unwrap().is_some()
}

#[tokio::test]
async fn data_disks_hotplug_grow_unplug_and_are_admitted_and_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&[VM, "kt-dsk-clone"], &[IMG]);
    let mut cfg = daemon::config(d);
    cfg.listen = Some("127.0.0.1:0".parse().unwrap());
    let (server, c) = daemon::start(&cfg).await;
    daemon::tiny_image(&c, d, IMG).await;
    c.user_create(&UserCreateRequest { name: "alice".into(), ..Default::default() }).await.unwrap();
    c.user_create(&UserCreateRequest { name: "bob".into(), ..Default::default() }).await.unwrap();
    let url = format!("http://{}", server.tcp_addr.unwrap());
    let as_user = |user: &str| {
        let (c, url, user) = (c.clone(), url.clone(), user.to_owned());
        async move {
            let t = c.token_create(&TokenCreateRequest { user: Some(user), ..Default::default() }).await.unwrap().token;
            Client::http(&url).unwrap().with_token(t)
        }
    };
    let alice = as_user("alice").await;
    let bob = as_user("bob").await;

    alice.vm_create(&daemon::tiny_vm(VM, IMG, vec![])).await.unwrap();
    c.vm_wait(VM, "ssh", 300).await.unwrap();

    // A virtio disk into the running guest: its name is the serial, 2 GiB = 4194304 sectors.
    let added = alice.disk_add(VM, &VmDiskAddRequest { name: Some("data1".into()), size_gib: 2, ..Default::default() }).await.unwrap();
    assert_eq!((added.target.as_str(), added.bus.as_str(), added.state.as_str()), ("vdc", "virtio", "attached"));
    let blocks = guest_until(&c, VM, BLOCKS, |o| o.contains("vdc data1 4194304")).await;
    assert!(blocks.contains("vdc data1 4194304"), "{blocks}");
    assert!(volume_exists(&sweep, &format!("{VM}-data-data1.qcow2")));
    let vm = alice.vm_get(VM).await.unwrap();
    assert_eq!(vm.disks.len(), 1, "the VM shows its disks");
    // In the persistent definition too: it would come back after a stop.
    let def = sweep.node_xml(VM);
    assert!(def.contains("<serial>data1</serial>"), "{def}");

    // Grown online: the guest sees 3 GiB at once.
    alice.disk_resize(VM, "data1", &VmDiskResizeRequest { size_gib: 3 }).await.unwrap();
    guest_until(&c, VM, BLOCKS, |o| o.contains("vdc data1 6291456")).await;
    let (s, body) = api_err(alice.disk_resize(VM, "data1", &VmDiskResizeRequest { size_gib: 1 }).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("size_gib"), "a shrink is refused: {body:?}");

    // A SCSI disk brings its virtio-scsi controller; the default name is disk1.
    let scsi = alice.disk_add(VM, &VmDiskAddRequest { size_gib: 1, bus: Some("scsi".into()), ..Default::default() }).await.unwrap();
    assert_eq!((scsi.name.as_str(), scsi.target.as_str()), ("disk1", "sde"));
    guest_until(&c, VM, BLOCKS, |o| o.lines().any(|l| l.starts_with("sd") && l.ends_with(" 2097152"))).await;

    // Quota: alice may have 6 GiB of disk; the root disk (1) and the data disks (3 + 1) leave 1.
    c.quota_set("alice", &QuotaSetRequest { max_disk_gib: Some(6), ..Default::default() }).await.unwrap();
    let (s, body) = api_err(alice.disk_add(VM, &VmDiskAddRequest { size_gib: 2, ..Default::default() }).await.unwrap_err());
    assert_eq!(s, 403, "over the disk quota: {body:?}");
    assert!(body.message.contains("disk"), "{body:?}");
    let (s, _) = api_err(alice.disk_resize(VM, "data1", &VmDiskResizeRequest { size_gib: 5 }).await.unwrap_err());
    assert_eq!(s, 403, "a grow past the quota is refused too");
    assert_eq!(alice.disk_list(VM).await.unwrap().len(), 2, "nothing was added");
    assert!(!volume_exists(&sweep, &format!("{VM}-data-disk2.qcow2")));
    // Bad input names its field and makes nothing.
    for (req, field) in [
        (VmDiskAddRequest { size_gib: 0, ..Default::default() }, "size_gib"),
        (VmDiskAddRequest { size_gib: 1, bus: Some("ide".into()), ..Default::default() }, "bus"),
        (VmDiskAddRequest { size_gib: 1, name: Some("../../etc".into()), ..Default::default() }, "name"),
        (VmDiskAddRequest { size_gib: 1, name: Some("Data".into()), ..Default::default() }, "name"),
    ] {
        let (s, body) = api_err(alice.disk_add(VM, &req).await.unwrap_err());
        assert!(s == 400 && body.field.as_deref() == Some(field), "{req:?}: {body:?}");
    }
    let (s, _) =
        api_err(alice.disk_add(VM, &VmDiskAddRequest { size_gib: 1, name: Some("data1".into()), ..Default::default() }).await.unwrap_err());
    assert_eq!(s, 409, "a taken name");
    // Bob does not learn that the VM exists.
    let (s, body) = api_err(bob.disk_list(VM).await.unwrap_err());
    assert!(s == 404 && body.message.starts_with("vm "), "{body:?}");
    let (s, _) = api_err(bob.disk_add(VM, &VmDiskAddRequest { size_gib: 1, ..Default::default() }).await.unwrap_err());
    assert_eq!(s, 404);
    let (s, _) = api_err(bob.disk_remove(VM, "data1").await.unwrap_err());
    assert_eq!(s, 404);

    // Snapshots and clones cover the root disk only: refused while data disks exist.
    let (s, body) = api_err(
        alice.snapshot_create(VM, &SnapshotCreateRequest { name: "s1".into(), memory: false, description: None }).await.unwrap_err(),
    );
    assert!(s == 409 && body.message.contains("data disks"), "{body:?}");
    let (s, _) = api_err(alice.vm_clone(VM, &VmCloneRequest { name: "kt-dsk-clone".into(), ..Default::default() }).await.unwrap_err());
    assert_eq!(s, 409);

    // Unplugged from the running guest: gone there, and its volume deleted.
    alice.disk_remove(VM, "disk1").await.unwrap();
    // QEMU removes a SCSI disk at once and tells the guest after; the guest's kernel drops it
    // when it handles that event (later under load).
    let gone = |b: &str| !b.lines().any(|l| l.starts_with("sd") && l.ends_with(" 2097152"));
    let blocks = guest_until(&c, VM, BLOCKS, gone).await;
    assert!(gone(&blocks), "{blocks}");
    assert!(!volume_exists(&sweep, &format!("{VM}-data-disk1.qcow2")));

    // Stopped: a disk added now is in the definition and boots with the VM.
    alice.vm_stop(VM, &VmStopRequest { force: true, ..Default::default() }).await.unwrap();
    let added = alice.disk_add(VM, &VmDiskAddRequest { name: Some("cold".into()), size_gib: 1, ..Default::default() }).await.unwrap();
    assert_eq!(added.target, "vdd");
    alice.disk_resize(VM, "cold", &VmDiskResizeRequest { size_gib: 2 }).await.unwrap();
    alice.vm_start(VM).await.unwrap();
    // The tiny guest makes a new SSH host key at each boot, so its console tells: it lists
    // its block devices before it says it is ready.
    let mut log = String::new();
    for _ in 0..3000 {
        log = c.vm_console_log(VM, 400).await.unwrap();
        if log.contains("KVMCTL_TINY_READY") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        log.contains("kvmctl-tiny: block vdc data1 6291456") && log.contains("kvmctl-tiny: block vdd cold 4194304"),
        "both disks after the restart, the cold one grown: {log}"
    );

    // Delete takes the data disks with it.
    alice.vm_delete(VM, false).await.unwrap();
    assert!(!volume_exists(&sweep, &format!("{VM}-data-data1.qcow2")) && !volume_exists(&sweep, &format!("{VM}-data-cold.qcow2")));
    c.image_delete(IMG).await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

/// A failure at each step of an add (before the volume, after it, after the attach) leaves
/// no volume, no row and no device; the VM keeps working.
#[tokio::test]
async fn a_failed_disk_add_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    const FVM: &str = "kt-dsk-f";
    let sweep = Sweep::new(&[FVM], &["kt-dsk-fimg"]);
    for step in ["before_volume", "volume", "attach"] {
        let cfg = kvmctl_server::Config { failpoints: format!("disk.{step}=error"), ..daemon::config(d) };
        let (server, c) = daemon::start(&cfg).await;
        if step == "before_volume" {
            daemon::tiny_image(&c, d, "kt-dsk-fimg").await;
            c.vm_create(&VmCreateRequest { no_start: true, ..daemon::tiny_vm(FVM, "kt-dsk-fimg", vec![]) }).await.unwrap();
        }
        let (s, _) = api_err(c.disk_add(FVM, &VmDiskAddRequest { size_gib: 1, ..Default::default() }).await.unwrap_err());
        assert_eq!(s, 500, "{step}");
        assert!(c.disk_list(FVM).await.unwrap().is_empty(), "{step}: no row");
        assert!(!volume_exists(&sweep, &format!("{FVM}-data-disk1.qcow2")), "{step}: no volume");
        let def = sweep.node_xml(FVM);
        assert!(!def.contains("data-disk1"), "{step}: no device: {def}");
        server.stop().await;
    }
    // The quota counts nothing for the failed adds.
    let (server, c) = daemon::start(&daemon::config(d)).await;
    let added = c.disk_add(FVM, &VmDiskAddRequest { size_gib: 1, ..Default::default() }).await.unwrap();
    assert_eq!(added.name, "disk1");
    c.vm_delete(FVM, false).await.unwrap();
    c.image_delete("kt-dsk-fimg").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}
