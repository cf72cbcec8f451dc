//! Export and restore against the real libvirtd with the tiny guest: a running VM exported,
//! deleted and restored comes back with its data and a new identity; its processes ran on
//! through the export. A truncated, damaged or hostile archive is refused with a clear error
//! and leaves nothing (no VM, no volume, no staging files).

use kvmctl_client::{Client, ClientError, RestoreRequest};
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{VmCreateRequest, VmExecRequest};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

const VM: &str = "kt-bk";
const BACK: &str = "kt-bk-back";
const BAD: &str = "kt-bk-bad";

async fn sh(client: &Client, vm: &str, command: &str) -> String {
    let out = client.vm_exec(vm, &VmExecRequest { command: command.into(), timeout_seconds: Some(60) }).await.unwrap();
    assert_eq!(out.exit_status, 0, "{vm}: {command}: {}", out.stderr);
    out.stdout.trim().to_owned()
}

async fn restore(client: &Client, name: &str, file: &Path) -> Result<kvmctl_types::api::Vm, ClientError> {
    let f = tokio::fs::File::open(file).await.unwrap();
    client.vm_restore(&RestoreRequest { name: name.into(), ..Default::default() }, f, Arc::new(AtomicU64::new(0))).await
}

/// The refusal of a restore: a 400 naming the archive, whose message has `says`.
async fn refused(client: &Client, file: &Path, says: &str) {
    match restore(client, BAD, file).await {
        Err(ClientError::Api { status, body }) => {
            assert!(status == 400 && body.field.as_deref() == Some("archive"), "{status} {body:?}");
            assert!(body.message.contains(says), "expected {says:?} in {:?}", body.message);
        }
        other => panic!("a bad archive was not refused: {other:?}"),
    }
}

/// The members of an archive, unpacked into `dir`.
fn unpack(archive: &Path, dir: &Path) -> Vec<String> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut names = Vec::new();
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        e.unpack(dir.join(&name)).unwrap();
        names.push(name);
    }
    names
}

/// An archive of `members` (name, file), with a manifest listing each one's true sha256.
fn pack(out: &Path, members: &[(&str, PathBuf)]) {
    let mut tar = tar::Builder::new(std::fs::File::create(out).unwrap());
    let mut listed = Vec::new();
    for (name, file) in members {
        let data = std::fs::read(file).unwrap();
        let sha: String = sha2::Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
        listed.push(serde_json::json!({"name": name, "size": data.len(), "sha256": sha}));
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        // Written raw: the tar crate itself refuses names with `..`, a hostile tool does not.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        tar.append(&h, data.as_slice()).unwrap();
    }
    let manifest =
        serde_json::to_vec(&serde_json::json!({"format": "kvmctl-export", "version": 1, "exported_at": 0, "members": listed})).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(manifest.len() as u64);
    h.set_mode(0o600);
    h.set_cksum();
    tar.append_data(&mut h, "manifest.json", manifest.as_slice()).unwrap();
    tar.finish().unwrap();
}

#[tokio::test]
async fn an_exported_vm_restores_with_its_data_and_bad_archives_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&[VM, BACK, BAD], &["kt-bk-img"]);
    let cfg = daemon::config(d);
    let (server, client) = daemon::start(&cfg).await;
    let image = daemon::tiny_image(&client, d, "kt-bk-img").await;
    let pool_dir = PathBuf::from(&image.path).parent().unwrap().to_path_buf();
    let vm = client.vm_create(&VmCreateRequest { user: Some("root".into()), ..daemon::tiny_vm(VM, "kt-bk-img", vec![]) }).await.unwrap();
    client.vm_wait(VM, "ssh", 300).await.unwrap();
    sh(&client, VM, "printf saved | dd of=/dev/vda bs=1 seek=536870912 conv=notrunc 2>/dev/null && sync").await;
    sh(&client, VM, "setsid sh -c 'echo $$ > /tmp/pid; while true; do sleep 1; done' </dev/null >/dev/null 2>&1 &").await;
    let pid = sh(&client, VM, "cat /tmp/pid").await;

    // Export the running VM: it runs on, the same process alive.
    let archive = d.join("kt-bk.tar");
    let mut out = tokio::fs::File::create(&archive).await.unwrap();
    let bytes = client.vm_export(VM, &mut out).await.unwrap();
    drop(out);
    assert_eq!(bytes, std::fs::metadata(&archive).unwrap().len());
    assert_eq!(client.vm_get(VM).await.unwrap().state, "running");
    sh(&client, VM, &format!("kill -0 {pid}")).await;
    let unpacked = d.join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    assert_eq!(unpack(&archive, &unpacked), ["vm.json", "domain.xml", "disk.qcow2", "manifest.json"]);
    let info = std::process::Command::new("qemu-img").args(["info", "--output=json"]).arg(unpacked.join("disk.qcow2")).output().unwrap();
    assert!(!String::from_utf8_lossy(&info.stdout).contains("backing-filename"), "the exported disk is flattened");
    assert_eq!(api_status(client.vm_export("kt-no-such", &mut tokio::io::sink()).await), 404);
    // An export hands out a whole disk: it is in the audit log, though a GET.
    let audit = client.audit_list(None, None, Some(100)).await.unwrap();
    assert!(audit.iter().any(|a| a.method == "GET" && a.path == format!("/v1/vms/{VM}/export") && a.status == 200), "{audit:?}");

    // Restore it under a new name once the original is gone: the data is back, the
    // identity is new.
    client.vm_delete(VM, false).await.unwrap();
    let back = restore(&client, BACK, &archive).await.unwrap();
    client.vm_wait(BACK, "ssh", 300).await.unwrap();
    assert_eq!(sh(&client, BACK, "dd if=/dev/vda bs=1 skip=536870912 count=5 2>/dev/null").await, "saved");
    assert_eq!(sh(&client, BACK, "hostname").await, BACK);
    assert_ne!(back.mac, vm.mac);
    assert_ne!(back.id, vm.id);
    assert_eq!((back.vcpus, back.memory_mib, back.disk_gib), (vm.vcpus, vm.memory_mib, vm.disk_gib));
    // The name is taken now.
    match restore(&client, BACK, &archive).await {
        Err(ClientError::Api { status, .. }) => assert_eq!(status, 409),
        other => panic!("{other:?}"),
    }

    // A refusal that needs none of the upload (a bad name) still comes back as an answer
    // while the client is sending 64 MiB, not as a broken connection.
    let big = d.join("big.tar");
    std::fs::write(&big, vec![0u8; 64 << 20]).unwrap();
    let f = tokio::fs::File::open(&big).await.unwrap();
    match client.vm_restore(&RestoreRequest { name: "Bad Name".into(), ..Default::default() }, f, Arc::new(AtomicU64::new(0))).await {
        Err(ClientError::Api { status, body }) => assert!(status == 400 && body.field.as_deref() == Some("name"), "{body:?}"),
        other => panic!("{other:?}"),
    }

    // Bad archives: each refused, nothing left.
    let len = std::fs::metadata(&archive).unwrap().len();
    let truncated = d.join("truncated.tar");
    std::fs::write(&truncated, &std::fs::read(&archive).unwrap()[..(len / 2) as usize]).unwrap();
    refused(&client, &truncated, "truncated").await;
    let damaged = d.join("damaged.tar");
    let mut data = std::fs::read(&archive).unwrap();
    // A byte inside disk.qcow2's data (the first member's header and data come first).
    let at = data.len() / 3;
    data[at] ^= 0x5a;
    std::fs::write(&damaged, &data).unwrap();
    refused(&client, &damaged, "sha256").await;
    let garbage = d.join("garbage.tar");
    std::fs::write(&garbage, b"not an archive at all").unwrap();
    refused(&client, &garbage, "").await;
    // A member that is not part of an export, even with a true manifest.
    let evil = d.join("evil.tar");
    pack(&evil, &[("vm.json", unpacked.join("vm.json")), ("../../etc/kt-bk", unpacked.join("vm.json"))]);
    refused(&client, &evil, "not part of an export").await;
    assert!(!Path::new("/etc/kt-bk").exists());
    // A disk that would read a host file through its backing file.
    let backed = d.join("backed.qcow2");
    let st = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw"])
        .arg(&backed)
        .status()
        .unwrap();
    assert!(st.success());
    let hostile = d.join("backing.tar");
    pack(&hostile, &[("vm.json", unpacked.join("vm.json")), ("disk.qcow2", backed)]);
    refused(&client, &hostile, "backing file").await;
    // A manifest that lists a member the archive lacks.
    let lacking = d.join("lacking.tar");
    pack(&lacking, &[("vm.json", unpacked.join("vm.json"))]);
    refused(&client, &lacking, "disk.qcow2").await;

    assert_eq!(client.vm_list().await.unwrap().iter().map(|v| v.name.clone()).collect::<Vec<_>>(), [BACK]);
    assert!(!pool_dir.join(format!("{BAD}-root.qcow2")).exists());
    let staged: Vec<_> = std::fs::read_dir(&cfg.snapshot_dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    assert!(staged.iter().all(|p| !p.file_name().unwrap().to_string_lossy().starts_with("restore-")), "{staged:?}");

    client.vm_delete(BACK, false).await.unwrap();
    client.image_delete("kt-bk-img").await.unwrap();
    drop(server);
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
}

fn api_status<T: std::fmt::Debug>(r: Result<T, ClientError>) -> u16 {
    match r {
        Err(ClientError::Api { status, .. }) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}
