//! An emulated TPM 2.0 (`vm create --tpm`) on the real libvirtd with the tiny guest: the
//! guest sees a TPM 2.0 and a TPM2 command succeeds; the TPM's state (kept by libvirt per VM)
//! survives stop and start; a snapshot and a clone behave as documented (the clone gets a
//! TPM of its own); delete removes the state.

use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{SnapshotCreateRequest, VmCloneRequest, VmExecRequest, VmStopRequest};
use std::path::PathBuf;

const VM: &str = "kt-tpm-1";
const CLONE: &str = "kt-tpm-2";
const COPY: &str = "kt-tpm-3";
const RESTORED: &str = "kt-tpm-4";
const IMG: &str = "kt-tpm-img";

async fn exec(c: &kvmctl_client::Client, vm: &str, command: &str) -> String {
    let out = c.vm_exec(vm, &VmExecRequest { command: command.into(), timeout_seconds: Some(60) }).await.unwrap();
    assert_eq!(out.exit_status, 0, "{command}: {}{}", out.stdout, out.stderr);
    out.stdout
}

/// TPM2_GetRandom for 8 bytes, written to /dev/tpm0 by the guest's shell; the response's
/// header as hex (tag 8001, size 0x14, return code 0 on success).
const GET_RANDOM: &str = "exec 3<>/dev/tpm0 && printf '\\200\\001\\000\\000\\000\\014\\000\\000\\001\\173\\000\\010' >&3 \
                          && dd bs=64 count=1 <&3 2>/dev/null | od -An -tx1 | tr -d ' \\n'";

/// Where libvirt keeps a domain's TPM state.
fn tpm_state(id: &kvmctl_types::VmId) -> PathBuf {
    PathBuf::from("/var/lib/libvirt/swtpm").join(id.to_string())
}

#[tokio::test]
async fn a_tpm_is_seen_by_the_guest_kept_across_restarts_fresh_in_clones_and_removed_with_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&[VM, CLONE, COPY, RESTORED], &[IMG, "kt-tpm-base"]);
    let (server, c) = daemon::start(&daemon::config(d)).await;
    // The image's template makes the TPM the default of its VMs (the request does not ask).
    daemon::tiny_image(&c, d, "kt-tpm-base").await;
    let tiny = PathBuf::from(kvmctl_testkit::env("KVMCTL_TEST_TINY"));
    let import = kvmctl_types::api::ImageImportRequest {
        name: IMG.into(),
        source: d.join("kt-tpm-base-disk.qcow2").display().to_string(),
        kernel: Some(tiny.join("vmlinuz").display().to_string()),
        initrd: Some(tiny.join("initrd.gz").display().to_string()),
        cmdline: Some("console=ttyS0 quiet panic=-1".into()),
        template: Some(kvmctl_types::api::ImageTemplate { tpm: true, boot_modes: vec!["bios".into()], ..Default::default() }),
        ..Default::default()
    };
    assert!(c.image_import(&import).await.unwrap().template.tpm);
    c.image_delete("kt-tpm-base").await.unwrap();

    let vm = c.vm_create(&daemon::tiny_vm(VM, IMG, vec![])).await.unwrap();
    assert!(vm.tpm, "the VM says it has a TPM (its template's default)");
    c.vm_wait(VM, "ssh", 300).await.unwrap();
    assert_eq!(exec(&c, VM, "cat /sys/class/tpm/tpm0/tpm_version_major").await.trim(), "2", "a TPM 2.0");
    let answer = exec(&c, VM, GET_RANDOM).await;
    assert!(answer.starts_with("80010000001400000000"), "TPM2_GetRandom succeeds: {answer}");
    let state = tpm_state(&vm.id);
    assert!(state.join("tpm2").is_dir(), "libvirt keeps the TPM's state at {}", state.display());

    // The guest's init asks the TPM too, at every boot, and says so on the console.
    const BOOT_ANSWER: &str = "kvmctl-tiny: tpm 2 getrandom 80010000001400000000";
    assert_eq!(c.vm_console_log(VM, 200).await.unwrap().matches(BOOT_ANSWER).count(), 1);

    // Stopped and started: the same state, and the TPM still answers at the next boot (the
    // tiny guest makes a new SSH host key at each boot, so the console tells, not SSH).
    c.vm_stop(VM, &VmStopRequest { force: true, ..Default::default() }).await.unwrap();
    assert!(state.join("tpm2").is_dir(), "the state outlives the stop");
    // The console log starts afresh with each boot (append off).
    c.vm_start(VM).await.unwrap();
    let mut log = String::new();
    for _ in 0..600 {
        log = c.vm_console_log(VM, 400).await.unwrap();
        if log.contains("KVMCTL_TINY_READY") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(log.matches(BOOT_ANSWER).count(), 1, "the TPM answers after the restart: {log}");

    // Snapshots of the running VM: a disk-only one, and one with memory, whose saved state
    // carries the TPM's (QEMU migrates swtpm's state with the memory); a revert to it resumes.
    c.snapshot_create(VM, &SnapshotCreateRequest { name: "s1".into(), memory: false, description: None }).await.unwrap();
    let s2 = c.snapshot_create(VM, &SnapshotCreateRequest { name: "s2".into(), memory: true, description: None }).await.unwrap();
    assert!(s2.memory);
    c.snapshot_revert(VM, "s2").await.unwrap();
    assert_eq!(c.vm_get(VM).await.unwrap().state, "running", "resumed from the memory snapshot");
    assert!(state.join("tpm2").is_dir());

    // A clone gets a TPM of its own, fresh.
    c.vm_stop(VM, &VmStopRequest { force: true, ..Default::default() }).await.unwrap();
    let clone = c.vm_clone(VM, &VmCloneRequest { name: CLONE.into(), ..Default::default() }).await.unwrap();
    assert!(clone.tpm);
    c.vm_wait(CLONE, "ssh", 300).await.unwrap();
    assert!(exec(&c, CLONE, GET_RANDOM).await.starts_with("80010000001400000000"));
    assert!(tpm_state(&clone.id).join("tpm2").is_dir() && tpm_state(&clone.id) != state, "its own state");

    // Deleted: the state goes with each VM.
    c.vm_delete(CLONE, false).await.unwrap();
    assert!(!tpm_state(&clone.id).exists(), "the clone's TPM state is removed");

    // As asked: a clone with a copy of the source's TPM state (the source stopped, so the
    // state is at rest): the same bytes before its first start, and a TPM that answers after.
    let permall = |id: &kvmctl_types::VmId| std::fs::read(tpm_state(id).join("tpm2/tpm2-00.permall")).unwrap();
    let copied = c
        .vm_clone(VM, &VmCloneRequest { name: COPY.into(), tpm: Some("copy".into()), no_start: true, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(permall(&copied.id), permall(&vm.id), "the source's TPM state, copied");
    c.vm_start(COPY).await.unwrap();
    c.vm_wait(COPY, "ssh", 300).await.unwrap();
    assert!(exec(&c, COPY, GET_RANDOM).await.starts_with("80010000001400000000"), "the copied TPM answers");
    c.vm_delete(COPY, false).await.unwrap();
    let (s, _) =
        match c.vm_clone(VM, &VmCloneRequest { name: COPY.into(), tpm: Some("borrow".into()), ..Default::default() }).await.unwrap_err() {
            kvmctl_client::ClientError::Api { status, body } => (status, body),
            e => panic!("{e}"),
        };
    assert_eq!(s, 400, "tpm is fresh or copy");

    // Exported and restored: the archive carries the TPM's state.
    let archive = dir.path().join("tpm-vm.tar");
    let mut out = tokio::fs::File::create(&archive).await.unwrap();
    c.vm_export(VM, &mut out).await.unwrap();
    drop(out);
    let listing = std::process::Command::new("tar").arg("-tf").arg(&archive).output().unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).lines().any(|l| l == "tpm.state"), "{listing:?}");
    let req = kvmctl_client::RestoreRequest { name: RESTORED.into(), no_start: true, ..Default::default() };
    let restored = c.vm_restore(&req, tokio::fs::File::open(&archive).await.unwrap(), Default::default()).await.unwrap();
    assert!(restored.tpm);
    assert_eq!(permall(&restored.id), permall(&vm.id), "the archive's TPM state");
    c.vm_delete(RESTORED, false).await.unwrap();
    for s in c.snapshot_list(VM).await.unwrap() {
        c.snapshot_delete(VM, &s.name).await.unwrap();
    }
    c.vm_delete(VM, false).await.unwrap();
    assert!(!state.exists(), "the TPM state is removed with the VM");
    assert!(!std::path::Path::new(&format!("/var/log/swtpm/libvirt/qemu/{VM}-swtpm.log")).exists(), "and swtpm's log");
    c.image_delete(IMG).await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}
