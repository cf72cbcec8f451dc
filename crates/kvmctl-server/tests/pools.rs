//! Storage pools on the real libvirtd: a directory pool holds a VM's root disk and seed (the
//! tiny guest boots from it) and another VM's data disk; an LVM pool is made on a loop device
//! the test creates, and a VM's root disk on it boots where the kernel has device-mapper (on
//! a kernel without it, the create fails at the logical volume and leaves nothing). Bad input
//! names its field; only admins manage pools; a pool in use is not removed; removing an LVM
//! pool removes its volume group.

use kvmctl_client::{Client, ClientError};
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{
    ErrorBody, PoolCreateRequest, SnapshotCreateRequest, TokenCreateRequest, UserCreateRequest, VmCreateRequest, VmDiskAddRequest,
};
use std::process::Command;
use std::time::Duration;

const IMG: &str = "kt-pool-img";
const DIR_POOL: &str = "kt-pool-dir";
const LVM_POOL: &str = "kt-pool-lvm";
const IMG2: &str = "kt-pool-img2";

fn api_err(e: ClientError) -> (u16, ErrorBody) {
    match e {
        ClientError::Api { status, body } => (status, body),
        other => panic!("expected an API error, got {other}"),
    }
}

async fn console_ready(c: &Client, vm: &str) -> String {
    let mut log = String::new();
    for _ in 0..3000 {
        log = c.vm_console_log(vm, 400).await.unwrap();
        if log.contains("KVMCTL_TINY_READY") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    log
}

/// A loop device over a sparse file, detached on drop (with the volume group on it gone).
struct Loop {
    dev: String,
    vg: String,
}

impl Loop {
    fn new(file: &std::path::Path, vg: &str) -> Loop {
        assert!(Command::new("truncate").args(["-s", "2G"]).arg(file).status().unwrap().success());
        let out = Command::new("losetup").args(["--find", "--show"]).arg(file).output().unwrap();
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        Loop { dev: String::from_utf8(out.stdout).unwrap().trim().to_owned(), vg: vg.to_owned() }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("vgremove").args(["-f", &self.vg]).output();
        let _ = Command::new("pvremove").args(["-f", &self.dev]).output();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

#[tokio::test]
async fn directory_and_lvm_pools_hold_vm_disks_and_go_only_when_empty() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-pool-vm1", "kt-pool-vm2", "kt-pool-vm3", "kt-pool-vm4"], &[IMG, IMG2]).with_pools(&[DIR_POOL, LVM_POOL]);
    let mut cfg = daemon::config(d);
    cfg.listen = Some("127.0.0.1:0".parse().unwrap());
    let (server, c) = daemon::start(&cfg).await;
    daemon::tiny_image(&c, d, IMG).await;
    let node = || sweep.node_xml("kt-pool-vm1");

    // Admins only.
    c.user_create(&UserCreateRequest { name: "alice".into(), ..Default::default() }).await.unwrap();
    let token = c.token_create(&TokenCreateRequest { user: Some("alice".into()), ..Default::default() }).await.unwrap().token;
    let alice = Client::http(&format!("http://{}", server.tcp_addr.unwrap())).unwrap().with_token(token);
    assert_eq!(api_err(alice.pool_list().await.unwrap_err()).0, 403);
    // Bad input names its field and makes nothing.
    for (req, field) in [
        (PoolCreateRequest { name: "kt-pool-x".into(), kind: "zfs".into(), ..Default::default() }, "kind"),
        (
            PoolCreateRequest { name: "kt-pool-x".into(), kind: "dir".into(), path: Some("relative/dir".into()), ..Default::default() },
            "path",
        ),
        (
            PoolCreateRequest { name: "kt-pool-x".into(), kind: "dir".into(), path: Some("/srv/../etc".into()), ..Default::default() },
            "path",
        ),
        (PoolCreateRequest { name: "Bad_Name".into(), kind: "dir".into(), path: Some("/srv/x".into()), ..Default::default() }, "name"),
        (PoolCreateRequest { name: "kt-pool-x".into(), kind: "lvm".into(), ..Default::default() }, "volume_group"),
        (
            PoolCreateRequest { name: "kt-pool-x".into(), kind: "lvm".into(), volume_group: Some("-bad".into()), ..Default::default() },
            "volume_group",
        ),
        (
            PoolCreateRequest {
                name: "kt-pool-x".into(),
                kind: "lvm".into(),
                volume_group: Some("ktvgx".into()),
                devices: vec!["/etc/passwd".into()],
                ..Default::default()
            },
            "devices[0]",
        ),
        (
            PoolCreateRequest {
                name: "kt-pool-x".into(),
                kind: "lvm".into(),
                volume_group: Some("ktvg-none".into()),
                ..Default::default()
            },
            "devices",
        ),
    ] {
        let (s, body) = api_err(c.pool_create(&req).await.unwrap_err());
        assert!(s == 400 && body.field.as_deref() == Some(field), "{req:?}: {body:?}");
    }
    assert_eq!(c.pool_list().await.unwrap().len(), 1, "only the daemon's own pool");

    // A directory pool: a VM's root disk and seed in it; the tiny guest boots.
    let pool_dir = d.join("pool2");
    let p = c
        .pool_create(&PoolCreateRequest {
            name: DIR_POOL.into(),
            kind: "dir".into(),
            path: Some(pool_dir.display().to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((p.kind.as_str(), p.state.as_str()), ("dir", "active"));
    assert!(p.capacity_bytes > 0 && p.available_bytes > 0);
    let vm = c.vm_create(&VmCreateRequest { pool: Some(DIR_POOL.into()), ..daemon::tiny_vm("kt-pool-vm1", IMG, vec![]) }).await.unwrap();
    assert_eq!(vm.state, "running");
    assert!(pool_dir.join("kt-pool-vm1-root.qcow2").exists() && pool_dir.join("kt-pool-vm1-seed.iso").exists());
    assert!(node().contains(&format!("{}/kt-pool-vm1-root.qcow2", pool_dir.display())), "{}", node());
    assert!(console_ready(&c, "kt-pool-vm1").await.contains("KVMCTL_TINY_READY"), "the guest boots from the pool's disk");
    // A data disk of a VM in the default pool, in the directory pool.
    c.vm_create(&daemon::tiny_vm("kt-pool-vm2", IMG, vec![])).await.unwrap();
    let disk =
        c.disk_add("kt-pool-vm2", &VmDiskAddRequest { size_gib: 1, pool: Some(DIR_POOL.into()), ..Default::default() }).await.unwrap();
    assert_eq!(disk.pool, DIR_POOL);
    assert!(pool_dir.join("kt-pool-vm2-data-disk1.qcow2").exists());
    // Snapshots work on the image's pool only.
    let (s, _) = api_err(
        c.snapshot_create("kt-pool-vm1", &SnapshotCreateRequest { name: "s".into(), memory: false, description: None }).await.unwrap_err(),
    );
    assert_eq!(s, 409);
    // An unknown pool, and one without room.
    let (s, body) = api_err(
        c.vm_create(&VmCreateRequest { pool: Some("kt-pool-none".into()), ..daemon::tiny_vm("kt-pool-vm3", IMG, vec![]) })
            .await
            .unwrap_err(),
    );
    assert!(s == 400 && body.field.as_deref() == Some("pool"), "{body:?}");
    let huge = VmCreateRequest { pool: Some(DIR_POOL.into()), disk_gib: Some(16384), ..daemon::tiny_vm("kt-pool-vm3", IMG, vec![]) };
    assert_eq!(api_err(c.vm_create(&huge).await.unwrap_err()).0, 503);
    // An image in the directory pool: a VM made from it has its disks there too.
    let tiny = std::path::PathBuf::from(kvmctl_testkit::env("KVMCTL_TEST_TINY"));
    let import = kvmctl_types::api::ImageImportRequest {
        name: IMG2.into(),
        source: d.join(format!("{IMG}-disk.qcow2")).display().to_string(),
        kernel: Some(tiny.join("vmlinuz").display().to_string()),
        initrd: Some(tiny.join("initrd.gz").display().to_string()),
        cmdline: Some("console=ttyS0 quiet panic=-1".into()),
        pool: Some(DIR_POOL.into()),
        ..Default::default()
    };
    let img2 = c.image_import(&import).await.unwrap();
    assert_eq!(img2.pool, DIR_POOL);
    assert!(pool_dir.join(format!("image-{IMG2}.qcow2")).exists());
    c.vm_create(&daemon::tiny_vm("kt-pool-vm4", IMG2, vec![])).await.unwrap();
    assert!(pool_dir.join("kt-pool-vm4-root.qcow2").exists());
    assert!(console_ready(&c, "kt-pool-vm4").await.contains("KVMCTL_TINY_READY"));
    // In use: not removed, and it says by what.
    let (s, body) = api_err(c.pool_delete(DIR_POOL).await.unwrap_err());
    assert!(s == 409 && body.message.contains("vm kt-pool-vm1") && body.message.contains("disk kt-pool-vm2/disk1"), "{body:?}");
    c.vm_delete("kt-pool-vm1", false).await.unwrap();
    c.vm_delete("kt-pool-vm2", false).await.unwrap();
    c.vm_delete("kt-pool-vm4", false).await.unwrap();
    let (s, body) = api_err(c.pool_delete(DIR_POOL).await.unwrap_err());
    assert!(s == 409 && body.message.contains(&format!("image {IMG2}")), "{body:?}");
    c.image_delete(IMG2).await.unwrap();
    assert!(!pool_dir.join("kt-pool-vm1-root.qcow2").exists() && !pool_dir.join("kt-pool-vm2-data-disk1.qcow2").exists());
    c.pool_delete(DIR_POOL).await.unwrap();
    assert!(kvmctl_libvirt::Node::pool_info(&sweep.node, DIR_POOL).unwrap().is_none());

    // An LVM pool on a loop device the test made.
    let vg = format!("ktvg{}", std::process::id());
    let lo = Loop::new(&d.join("lvm.img"), &vg);
    let p = c
        .pool_create(&PoolCreateRequest {
            name: LVM_POOL.into(),
            kind: "lvm".into(),
            volume_group: Some(vg.clone()),
            devices: vec![lo.dev.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((p.kind.as_str(), p.state.as_str(), p.path.clone()), ("lvm", "active", format!("/dev/{vg}")));
    assert!(p.capacity_bytes > (1 << 30), "{p:?}");
    // Images are files: not in an LVM pool.
    let (s, body) = api_err(
        c.image_import(&kvmctl_types::api::ImageImportRequest {
            name: "kt-pool-never".into(),
            pool: Some(LVM_POOL.into()),
            ..import.clone()
        })
        .await
        .unwrap_err(),
    );
    assert!(s == 400 && body.field.as_deref() == Some("pool"), "{body:?}");
    let vgs = Command::new("vgs").args(["--noheadings", "-o", "vg_name"]).output().unwrap();
    assert!(String::from_utf8_lossy(&vgs.stdout).contains(&vg), "the volume group exists");
    let dm = std::fs::read_to_string("/proc/misc").unwrap_or_default().contains("device-mapper");
    let made = c.vm_create(&VmCreateRequest { pool: Some(LVM_POOL.into()), ..daemon::tiny_vm("kt-pool-vm3", IMG, vec![]) }).await;
    if dm {
        // The root disk, a raw copy of the image in a logical volume, boots.
        made.unwrap();
        assert!(sweep.node_xml("kt-pool-vm3").contains(&format!("/dev/{vg}/kt-pool-vm3-root.qcow2")));
        assert!(console_ready(&c, "kt-pool-vm3").await.contains("KVMCTL_TINY_READY"));
        c.vm_delete("kt-pool-vm3", false).await.unwrap();
    } else {
        // This kernel has no device-mapper: no logical volume can be made. The create says so
        // and leaves nothing.
        let (s, body) = api_err(made.unwrap_err());
        assert!(s == 503 && body.message.contains("device-mapper"), "{body:?}");
        assert!(c.vm_list().await.unwrap().is_empty());
        eprintln!("kernel without device-mapper: the LVM root disk boot was not tried");
    }
    let lvs = Command::new("lvs").args(["--noheadings", &vg]).output().unwrap();
    assert!(String::from_utf8_lossy(&lvs.stdout).trim().is_empty(), "no logical volume left: {lvs:?}");
    c.pool_delete(LVM_POOL).await.unwrap();
    let vgs = Command::new("vgs").args(["--noheadings", "-o", "vg_name"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&vgs.stdout).contains(&vg), "the volume group went with the pool");
    drop(lo);

    c.image_delete(IMG).await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}
