//! The Debian image with the devices of issue 19, one full guest: a TPM 2.0 (`--tpm`) that
//! the guest's kernel finds and that answers a TPM2 command; a folder shared at create that
//! cloud-init mounts (host to guest and back); a data disk hot-plugged into the running
//! guest, formatted, mounted through fstab, written; then a reboot, after which the TPM, the
//! share and the disk's data are all there again; then the disk unmounted and removed while
//! the guest runs. About two minutes under TCG.

use kvmctl_client::Client;
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{ImageImportRequest, VmCreateRequest, VmDiskAddRequest, VmExecRequest, VmShare};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

const VM: &str = "kt-debdev";
const IMG: &str = "kt-debdev-img";

async fn exec(c: &Client, command: &str) -> String {
    let out = c.vm_exec(VM, &VmExecRequest { command: command.into(), timeout_seconds: Some(120) }).await.unwrap();
    assert_eq!(out.exit_status, 0, "{command}: {}{}", out.stdout, out.stderr);
    out.stdout
}

/// TPM2_GetRandom for 8 bytes through /dev/tpm0 (as root); the response's header as hex.
const GET_RANDOM: &str = "sudo sh -c \"exec 3<>/dev/tpm0 && printf '\\200\\001\\000\\000\\000\\014\\000\\000\\001\\173\\000\\010' >&3 \
                          && dd bs=64 count=1 <&3 2>/dev/null | od -An -tx1 | tr -d ' \\n'\"";

#[tokio::test]
async fn a_debian_guest_uses_its_tpm_shared_folder_and_hotplugged_data_disk_across_a_reboot() {
    let image = PathBuf::from(kvmctl_testkit::env("KVMCTL_TEST_DEBIAN_IMAGE"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&[VM], &[IMG]);
    let share_dir = d.join("shares/project");
    std::fs::create_dir_all(&share_dir).unwrap();
    std::fs::set_permissions(&share_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(share_dir.join("from-host.txt"), "hello guest\n").unwrap();
    let mut cfg = daemon::config(d);
    cfg.share_roots = vec![d.join("shares")];
    cfg.share_helper = d.join("virtiofsd-ro");
    let (server, c) = daemon::start(&cfg).await;
    c.image_import(&ImageImportRequest { name: IMG.into(), source: image.display().to_string(), ..Default::default() }).await.unwrap();

    let req = VmCreateRequest {
        name: VM.into(),
        image: IMG.into(),
        vcpus: Some(2),
        memory_mib: Some(1024),
        disk_gib: Some(4),
        tpm: true,
        shares: vec![VmShare {
            source: share_dir.display().to_string(),
            tag: "project".into(),
            readonly: false,
            mount: Some("/srv/project".into()),
        }],
        ..Default::default()
    };
    c.vm_create(&req).await.unwrap();
    c.vm_wait(VM, "cloud-init", 900).await.unwrap();

    // The TPM: the kernel found a TPM 2.0, and it answers TPM2_GetRandom.
    assert_eq!(exec(&c, "cat /sys/class/tpm/tpm0/tpm_version_major").await.trim(), "2");
    assert!(exec(&c, GET_RANDOM).await.starts_with("80010000001400000000"), "TPM2_GetRandom succeeds");
    // The share, mounted by cloud-init where asked: both ways.
    assert_eq!(exec(&c, "cat /srv/project/from-host.txt").await, "hello guest\n");
    exec(&c, "echo hello host > /srv/project/from-guest.txt").await;
    assert_eq!(std::fs::read_to_string(share_dir.join("from-guest.txt")).unwrap(), "hello host\n");

    // A data disk into the running guest: found by its serial, formatted, mounted by UUID.
    c.disk_add(VM, &VmDiskAddRequest { name: Some("data".into()), size_gib: 2, ..Default::default() }).await.unwrap();
    exec(&c, "for i in $(seq 300); do test -e /dev/disk/by-id/virtio-data && break; sleep 0.1; done; test -e /dev/disk/by-id/virtio-data")
        .await;
    exec(
        &c,
        "sudo mkfs.ext4 -q /dev/disk/by-id/virtio-data && sudo mkdir -p /data \
         && echo \"UUID=$(sudo blkid -s UUID -o value /dev/disk/by-id/virtio-data) /data ext4 defaults,nofail 0 2\" | sudo tee -a /etc/fstab >/dev/null \
         && sudo mount /data && echo kept | sudo tee /data/proof >/dev/null && sync",
    )
    .await;
    assert_eq!(exec(&c, "lsblk -bno SIZE /dev/disk/by-id/virtio-data").await.trim(), (2u64 << 30).to_string());

    // A reboot: everything comes back.
    let boot_id = exec(&c, "cat /proc/sys/kernel/random/boot_id").await;
    c.vm_reboot(VM).await.unwrap();
    let mut rebooted = false;
    for _ in 0..300 {
        let out = c.vm_exec(VM, &VmExecRequest { command: "cat /proc/sys/kernel/random/boot_id".into(), timeout_seconds: Some(10) }).await;
        if out.is_ok_and(|o| o.exit_status == 0 && !o.stdout.is_empty() && o.stdout != boot_id) {
            rebooted = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(rebooted, "the guest came back from its reboot");
    exec(&c, "for i in $(seq 600); do mountpoint -q /data && mountpoint -q /srv/project && break; sleep 0.1; done").await;
    assert_eq!(exec(&c, "cat /data/proof").await, "kept\n", "the data disk, mounted from fstab");
    assert_eq!(exec(&c, "cat /srv/project/from-host.txt").await, "hello guest\n", "the share, mounted again");
    assert!(exec(&c, GET_RANDOM).await.starts_with("80010000001400000000"), "the TPM after the reboot");

    // Unmounted and removed while the guest runs: the guest lets it go.
    exec(&c, "sudo umount /data && sudo sed -i '/ \\/data ext4 /d' /etc/fstab").await;
    c.disk_remove(VM, "data").await.unwrap();
    assert!(exec(&c, "test -e /dev/disk/by-id/virtio-data && echo present || echo gone").await.contains("gone"));

    c.vm_delete(VM, false).await.unwrap();
    c.image_delete(IMG).await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}
