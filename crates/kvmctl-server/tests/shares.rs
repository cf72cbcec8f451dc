//! Shared folders (virtio-fs) on the real libvirtd with the tiny guest: a file written on the
//! host is read in the guest and one written in the guest appears on the host; a read-only
//! share refuses the guest's writes on the host's side (the guest mounts it read-write); a
//! path outside `share_roots`, a symlink out of them and a non-admin are refused and leave
//! nothing; shares change only while the VM is stopped; memory snapshots are refused.

use kvmctl_client::{Client, ClientError};
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{
    ErrorBody, SnapshotCreateRequest, TokenCreateRequest, UserCreateRequest, VmCreateRequest, VmExecRequest, VmShare, VmStopRequest,
};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const VM: &str = "kt-shr-1";
const IMG: &str = "kt-shr-img";

fn api_err(e: ClientError) -> (u16, ErrorBody) {
    match e {
        ClientError::Api { status, body } => (status, body),
        other => panic!("expected an API error, got {other}"),
    }
}

async fn exec(c: &Client, command: &str) -> (i32, String) {
    let out = c.vm_exec(VM, &VmExecRequest { command: command.into(), timeout_seconds: Some(60) }).await.unwrap();
    (out.exit_status, format!("{}{}", out.stdout, out.stderr))
}

fn share(source: &std::path::Path, tag: &str, readonly: bool) -> VmShare {
    VmShare { source: source.display().to_string(), tag: tag.into(), readonly, mount: None }
}

fn open_dir(p: &std::path::Path) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
}

#[tokio::test]
async fn shared_folders_carry_files_both_ways_and_read_only_is_enforced_on_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&[VM, "kt-shr-never"], &[IMG]);
    let roots = d.join("shares");
    let (rw, ro, outside) = (roots.join("rw"), roots.join("ro"), d.join("outside"));
    for p in [&rw, &ro, &outside] {
        open_dir(p);
    }
    std::fs::write(rw.join("hello.txt"), "from-host\n").unwrap();
    std::fs::write(ro.join("keep.txt"), "read-only\n").unwrap();
    std::os::unix::fs::symlink(&outside, roots.join("escape")).unwrap();

    let mut cfg = daemon::config(d);
    cfg.listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.share_roots = vec![roots.clone()];
    cfg.share_helper = d.join("virtiofsd-ro");
    let (server, c) = daemon::start(&cfg).await;
    daemon::tiny_image(&c, d, IMG).await;

    // Refused before anything is made: outside the roots, a symlink out of them, a bad tag,
    // and anyone but an admin.
    let never = |shares: Vec<VmShare>| VmCreateRequest { shares, ..daemon::tiny_vm("kt-shr-never", IMG, vec![]) };
    for (shares, field) in [
        (vec![share(&outside, "out", false)], "shares[0].source"),
        (vec![share(&roots.join("escape"), "esc", false)], "shares[0].source"),
        (vec![share(&roots.join("missing"), "gone", false)], "shares[0].source"),
        (vec![share(&rw, "bad tag", false)], "shares[0].tag"),
        (vec![share(&rw, "a", false), share(&ro, "a", true)], "shares[1].tag"),
    ] {
        let (s, body) = api_err(c.vm_create(&never(shares.clone())).await.unwrap_err());
        assert!(s == 400 && body.field.as_deref() == Some(field), "{shares:?}: {body:?}");
    }
    c.user_create(&UserCreateRequest { name: "alice".into(), ..Default::default() }).await.unwrap();
    let token = c.token_create(&TokenCreateRequest { user: Some("alice".into()), ..Default::default() }).await.unwrap().token;
    let alice = Client::http(&format!("http://{}", server.tcp_addr.unwrap())).unwrap().with_token(token);
    let (s, _) = api_err(alice.vm_create(&never(vec![share(&rw, "rw", false)])).await.unwrap_err());
    assert_eq!(s, 403, "only admins share host paths");
    assert!(c.vm_list().await.unwrap().is_empty(), "nothing was made");

    let shares = vec![VmShare { mount: Some("/srv/data".into()), ..share(&rw, "rw", false) }, share(&ro, "ro", true)];
    let vm = c.vm_create(&VmCreateRequest { shares, ..daemon::tiny_vm(VM, IMG, vec![]) }).await.unwrap();
    assert_eq!(vm.shares.len(), 2);
    c.vm_wait(VM, "ssh", 300).await.unwrap();
    let log = c.vm_console_log(VM, 200).await.unwrap();
    assert!(log.contains("kvmctl-tiny: share rw at /srv/data") && log.contains("kvmctl-tiny: share ro at /mnt/ro"), "{log}");

    // Host to guest, guest to host.
    assert_eq!(exec(&c, "cat /srv/data/hello.txt").await, (0, "from-host\n".into()));
    assert_eq!(exec(&c, "echo from-guest > /srv/data/guest.txt").await.0, 0);
    assert_eq!(std::fs::read_to_string(rw.join("guest.txt")).unwrap(), "from-guest\n");
    // Read-only: readable, and the guest's write fails on the host's side (the guest mounted
    // it read-write).
    assert_eq!(exec(&c, "cat /mnt/ro/keep.txt").await, (0, "read-only\n".into()));
    let (status, out) = exec(&c, "echo x > /mnt/ro/nope").await;
    assert!(status != 0 && out.contains("Read-only file system"), "{status} {out}");
    assert!(!ro.join("nope").exists());
    // The host's own view of the directory stays writable, and the guest sees its changes.
    std::fs::write(ro.join("later.txt"), "host wrote\n").unwrap();
    let mut seen = (1, String::new());
    for _ in 0..50 {
        seen = exec(&c, "cat /mnt/ro/later.txt").await;
        if seen.0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, (0, "host wrote\n".into()));

    // Memory snapshots cannot carry a virtio-fs device.
    let (s, body) =
        api_err(c.snapshot_create(VM, &SnapshotCreateRequest { name: "m".into(), memory: true, description: None }).await.unwrap_err());
    assert!(s == 409 && body.message.contains("shared folders"), "{body:?}");

    // Shares change while the VM is stopped.
    let late = roots.join("late");
    open_dir(&late);
    let (s, _) = api_err(c.share_add(VM, &share(&late, "late", false)).await.unwrap_err());
    assert_eq!(s, 409, "refused while running");
    c.vm_stop(VM, &VmStopRequest { force: true, ..Default::default() }).await.unwrap();
    c.share_add(VM, &share(&late, "late", false)).await.unwrap();
    assert!(sweep.node_xml(VM).contains(&format!("dir='{}'", late.display())));
    let (s, body) = api_err(c.share_add(VM, &share(&roots.join("escape"), "esc", false)).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("source"), "{body:?}");
    c.share_remove(VM, "late").await.unwrap();
    c.share_remove(VM, "ro").await.unwrap();
    let def = sweep.node_xml(VM);
    assert!(!def.contains("'late'") && !def.contains(&format!("dir='{}'", ro.display())), "{def}");
    assert_eq!(c.share_list(VM).await.unwrap().len(), 1);
    // It still boots with the one left.
    c.vm_start(VM).await.unwrap();
    daemon::until(&c, VM, "running", |v| v.state == "running").await;

    c.vm_delete(VM, false).await.unwrap();
    let logs: Vec<_> = std::fs::read_dir("/var/log/libvirt/qemu")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("kt-shr-1"))
        .collect();
    assert!(logs.is_empty(), "the VM's logs (virtiofsd's too) go with it: {logs:?}");
    c.image_delete(IMG).await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}
