//! The Debian image built by `kvmctl image build` (scripts/test.sh builds it, cached by
//! recipe hash, and exports its path), through the product path: imported by the daemon
//! (template read from its image.json), two VMs created from it, one booting through BIOS
//! (GRUB in the MBR), one through UEFI (OVMF; shim and GRUB on the ESP) and one through UEFI
//! with Secure Boot enforced (Microsoft's keys enrolled), each with a kvmctl seed
//! that merges the user's own cloud-config. cloud-init creates the user with the key; SSH
//! as that user works; the root grew to the VM's disk; cloud-init finished without errors.
//! The Secure Boot guest is snapshotted with memory and reverted, cloned (linked from the
//! snapshot, full from its disk now) and a clone exported and restored: each new VM boots
//! with its data, Secure Boot and an identity of its own. Then a stop of a real guest on
//! request, a start, and delete of everything. Three full guests in parallel, three more
//! after: about seven minutes under TCG.

use kvmctl_client::Client;
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{ImageImportRequest, VmCreateRequest, VmStopRequest};
use std::path::PathBuf;
use std::time::Duration;

/// One VM per boot mode of the image.
const FIRMWARES: [&str; 3] = ["bios", "uefi", "uefi-secure"];

/// Polls the VM's address and runs `cmd` over SSH until it answers; bounded only so that a
/// broken image fails instead of hanging the suite.
async fn ssh_when_up(client: Client, vm: String, key: PathBuf, console: PathBuf, cmd: String) -> String {
    for _ in 0..300 {
        if let Some(ip) = client.vm_get(&vm).await.unwrap().ip {
            let (key, cmd) = (key.clone(), cmd.clone());
            if let Ok(Ok(out)) = tokio::task::spawn_blocking(move || kvmctl_testkit::ssh(&key, "alice", &ip, &cmd)).await {
                return out;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let serial = std::fs::read_to_string(&console).unwrap_or_default();
    panic!(
        "{vm}: no SSH login within 10 minutes; console tail:\n{}",
        serial.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test]
async fn debian_vms_boot_with_bios_and_uefi_and_serve_ssh() {
    let image = PathBuf::from(kvmctl_testkit::env("KVMCTL_TEST_DEBIAN_IMAGE"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(
        &["kt-deb-bios", "kt-deb-uefi", "kt-deb-uefi-secure", "kt-deb-cl-linked", "kt-deb-cl-full", "kt-deb-restored"],
        &["kt-debian"],
    );
    let cfg = daemon::config(d);
    let (server, client) = daemon::start(&cfg).await;

    let img = client
        .image_import(&ImageImportRequest { name: "kt-debian".into(), source: image.display().to_string(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(img.template.os_family.as_deref(), Some("debian"));
    assert!(img.template.cloud_init, "{img:?}");
    assert_eq!(img.template.boot_modes, FIRMWARES.map(String::from).to_vec());

    let (key, public) = kvmctl_testkit::keypair(d);
    let user_data = "#cloud-config\nwrite_files:\n  - path: /etc/kvmctl-seeded\n    content: \"yes\\n\"\n".to_owned();
    for fw in FIRMWARES {
        let req = VmCreateRequest {
            name: format!("kt-deb-{fw}"),
            image: "kt-debian".into(),
            vcpus: Some(2),
            memory_mib: Some(1024),
            disk_gib: Some(4),
            ssh_keys: vec![public.clone()],
            user: Some("alice".into()),
            user_data: Some(user_data.clone()),
            firmware: Some(fw.into()),
            ..Default::default()
        };
        let vm = client.vm_create(&req).await.unwrap();
        assert_eq!((vm.state.as_str(), vm.firmware.as_str()), ("running", fw));
    }

    let cmd = "cloud-init status --wait >/dev/null; hostname; id -un; cat /etc/kvmctl-seeded; sudo -n true && echo sudo; df --output=size -B1G / | tail -1; cloud-init status; test -d /sys/firmware/efi && echo uefi || echo bios; od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c 2>/dev/null | awk '{print \"secure-boot=\" $NF}'";
    // Readiness through the API: every boot reaches cloud-init's end, and it reports done.
    let readies: Vec<_> = FIRMWARES
        .iter()
        .map(|fw| {
            let client = client.clone();
            let vm = format!("kt-deb-{fw}");
            tokio::spawn(async move { client.vm_wait(&vm, "cloud-init", 900).await })
        })
        .collect();
    for (fw, ready) in FIRMWARES.iter().zip(readies) {
        let vm = ready.await.unwrap().unwrap_or_else(|e| panic!("{fw}: {e}"));
        let stages: Vec<&str> = vm.readiness.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(stages, ["defined", "started", "booting", "address", "ssh_port", "ssh_banner", "ssh_login", "cloud_init"], "{vm:?}");
        // The guest agent reports the same address (the source used on networks kvmctl does
        // not reserve in).
        let agent = kvmctl_libvirt::Node::domain_agent_addresses(&sweep.node, &vm.name).unwrap();
        assert!(agent.contains(&(vm.mac.clone(), vm.ip.clone().unwrap())), "{agent:?} vs {vm:?}");
        // The host key was made by kvmctl and pinned before boot; the guest really uses it
        // (it prints it among its fingerprints on the console, and the login checked it).
        let pin = vm.host_key.clone().unwrap_or_default();
        assert!(pin.starts_with("SHA256:") && pin.ends_with("(seed)"), "pinned from the seed, before boot: {pin}");
        let fp = pin.trim_end_matches(" (seed)");
        let login = vm.readiness.iter().find(|s| s.stage == "ssh_login").and_then(|s| s.detail.clone()).unwrap_or_default();
        assert!(login.ends_with(&format!("host key {fp}")), "the first login met the seeded key: {login}");
        let printed = std::fs::read_to_string(cfg.console_log_dir.join(format!("{}.log", vm.name))).unwrap();
        assert!(printed.contains(fp), "the guest printed the seeded key's fingerprint on its console");
        let ci = vm.readiness.last().unwrap();
        assert_eq!(ci.detail.as_deref(), Some("done"), "cloud-init's own verdict, read from the guest: {vm:?}");
        let out = client
            .vm_exec(
                &vm.name,
                &kvmctl_types::api::VmExecRequest { command: "id -un; test -d /sys/firmware/efi".into(), timeout_seconds: None },
            )
            .await
            .unwrap();
        assert_eq!(out.stdout.trim(), "alice", "exec logs in as the VM's user with the VM's key");
        assert_eq!(out.exit_status, if *fw == "bios" { 1 } else { 0 }, "exit status passed through: {out:?}");
    }
    let waits: Vec<_> = FIRMWARES
        .iter()
        .map(|fw| {
            let vm = format!("kt-deb-{fw}");
            let console = cfg.console_log_dir.join(format!("{vm}.log"));
            tokio::spawn(ssh_when_up(client.clone(), vm, key.clone(), console, cmd.to_owned()))
        })
        .collect();
    let mut answers = Vec::new();
    for w in waits {
        answers.push(w.await.unwrap());
    }
    for (fw, answer) in FIRMWARES.iter().zip(answers) {
        let fw = *fw;
        let lines: Vec<&str> = answer.lines().map(str::trim).collect();
        assert_eq!(&lines[..4], [format!("kt-deb-{fw}").as_str(), "alice", "yes", "sudo"], "{answer}");
        let size_gib: u64 = lines[4].parse().unwrap();
        assert!(size_gib >= 3, "cloud-init grew the root to the 4 GiB disk: {answer}");
        assert_eq!(lines[5], "status: done", "cloud-init finished without errors: {answer}");
        assert_eq!(lines[6], if fw == "bios" { "bios" } else { "uefi" }, "the guest booted through {fw} firmware: {answer}");
        // The SecureBoot variable: 1 when enforced; absent without UEFI.
        let secure = lines.get(7).copied().unwrap_or("");
        match fw {
            "uefi-secure" => assert_eq!(secure, "secure-boot=1", "Secure Boot enforced, and the signed chain booted: {answer}"),
            "uefi" => assert_ne!(secure, "secure-boot=1", "plain UEFI does not enforce Secure Boot: {answer}"),
            _ => assert_eq!(secure, "", "{answer}"),
        }
        let console = std::fs::read_to_string(cfg.console_log_dir.join(format!("kt-deb-{fw}.log"))).unwrap();
        assert!(console.contains("Cloud-init v.") && console.contains("finished at"), "cloud-init reported on the serial console");
    }
    // A Secure Boot guest's memory snapshot: after a revert the file written before it is
    // back, a process started before it runs on, and Secure Boot is still enforced.
    let vm = "kt-deb-uefi-secure";
    let run = |command: &str| {
        let (client, command) = (client.clone(), command.to_owned());
        async move {
            let out = client
                .vm_exec(vm, &kvmctl_types::api::VmExecRequest { command: command.clone(), timeout_seconds: Some(120) })
                .await
                .unwrap();
            assert_eq!(out.exit_status, 0, "{command}: {out:?}");
            out.stdout.trim().to_owned()
        }
    };
    // Synced: a clone of the snapshot (below) boots from its disk, not its memory.
    run("echo before > /home/alice/marker; sync; setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $! > /dev/shm/sleeper").await;
    let snap = client
        .snapshot_create(vm, &kvmctl_types::api::SnapshotCreateRequest { name: "booted".into(), memory: true, description: None })
        .await
        .unwrap();
    assert!(snap.memory && snap.vm_state == "running" && snap.size_bytes > 0, "{snap:?}");
    let pid = run("cat /dev/shm/sleeper").await;
    run(&format!("echo after > /home/alice/marker; sync; kill {pid}")).await;
    // Let the host's clock move well past the snapshot's: after the revert the guest's clock
    // must follow the host's (set through the guest agent), not resume where it was saved.
    tokio::time::sleep(std::time::Duration::from_secs(40)).await;
    client.snapshot_revert(vm, "booted").await.unwrap();
    let guest_now: i64 = run("date +%s").await.parse().unwrap();
    let host_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((guest_now - host_now).abs() < 20, "the guest's clock was set after the revert: guest {guest_now}, host {host_now}");
    let after = run(&format!(
        "cat /home/alice/marker; kill -0 {pid} && echo alive; od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c | awk '{{print \"secure-boot=\" $NF}}'"
    ))
    .await;
    assert_eq!(after.lines().map(str::trim).collect::<Vec<_>>(), ["before", "alive", "secure-boot=1"], "{after}");
    client.vm_delete("kt-deb-uefi", false).await.unwrap();

    // Clones of the Secure Boot guest: linked from the snapshot (while the source runs on),
    // full from its disk as it is now (the source paused while it is read). Each boots with
    // its disk and an identity of its own; the source is untouched.
    run("echo now > /home/alice/marker; sync").await;
    let identity = "hostname; cat /etc/machine-id; ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub 2>&1 | awk '{print $2}'; cat /home/alice/marker 2>&1; \
        grep -c 'kvmctl-kt-deb-uefi-secure$' /home/alice/.ssh/authorized_keys; \
        od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c | awk '{print \"secure-boot=\" $NF}'";
    let ask = |vm: String| {
        let client = client.clone();
        async move {
            let out = client
                .vm_exec(&vm, &kvmctl_types::api::VmExecRequest { command: identity.into(), timeout_seconds: Some(120) })
                .await
                .unwrap();
            assert_eq!(out.exit_status, 0, "{vm}: {out:?}");
            out.stdout.lines().map(|l| l.trim().to_owned()).collect::<Vec<_>>()
        }
    };
    let source = ask(vm.into()).await;
    let clone_req = |name: &str, from: Option<&str>, mode: &str| kvmctl_types::api::VmCloneRequest {
        name: name.into(),
        from_snapshot: from.map(str::to_owned),
        mode: Some(mode.into()),
        ..Default::default()
    };
    let linked = client.vm_clone(vm, &clone_req("kt-deb-cl-linked", Some("booted"), "linked")).await.unwrap();
    let full = client.vm_clone(vm, &clone_req("kt-deb-cl-full", None, "full")).await.unwrap();
    assert_eq!(run("cat /home/alice/marker").await, "now", "the source runs on, untouched");
    let mut seen = vec![(source.clone(), client.vm_get(vm).await.unwrap())];
    for (clone, marker) in [(&linked, "before"), (&full, "now")] {
        let ready = client.vm_wait(&clone.name, "cloud-init", 900).await.unwrap_or_else(|e| panic!("{}: {e}", clone.name));
        assert_eq!(ready.readiness.last().and_then(|s| s.detail.as_deref()), Some("done"), "{ready:?}");
        let id = ask(clone.name.clone()).await;
        let pin = ready.host_key.clone().unwrap_or_default();
        assert_eq!(id[0], clone.name, "{id:?}");
        assert!(pin.starts_with(&format!("{} ", id[2])), "the clone serves its own pinned host key: {pin} vs {id:?}");
        assert_eq!((id[3].as_str(), id[4].as_str(), id[5].as_str()), (marker, "0", "secure-boot=1"), "{} {id:?}", clone.name);
        seen.push((id, ready));
    }
    for (i, (a, va)) in seen.iter().enumerate() {
        for (b, vb) in &seen[i + 1..] {
            assert!(a[0] != b[0] && a[1] != b[1] && a[2] != b[2], "hostname, machine-id and host key differ: {a:?} {b:?}");
            assert!(va.mac != vb.mac && va.ip != vb.ip, "MAC and address differ: {va:?} {vb:?}");
        }
    }
    assert_eq!(ask(vm.into()).await, source, "the source is as it was");

    // Export the running full clone, delete it, restore it: its data, Secure Boot and a new
    // identity.
    let archive = d.join("kt-deb-cl-full.tar");
    let mut out = tokio::fs::File::create(&archive).await.unwrap();
    client.vm_export("kt-deb-cl-full", &mut out).await.unwrap();
    drop(out);
    client.vm_delete("kt-deb-cl-full", false).await.unwrap();
    let file = tokio::fs::File::open(&archive).await.unwrap();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let restored = client
        .vm_restore(&kvmctl_client::RestoreRequest { name: "kt-deb-restored".into(), ..Default::default() }, file, sent)
        .await
        .unwrap();
    client.vm_wait(&restored.name, "cloud-init", 900).await.unwrap();
    let id = ask(restored.name.clone()).await;
    assert_eq!((id[0].as_str(), id[3].as_str(), id[5].as_str()), ("kt-deb-restored", "now", "secure-boot=1"), "{id:?}");
    assert!(seen.iter().all(|(other, _)| other[1] != id[1] && other[2] != id[2]), "a new machine-id and host key: {id:?}");
    for v in ["kt-deb-cl-linked", "kt-deb-restored", vm] {
        client.vm_delete(v, false).await.unwrap();
    }

    // 10 MiB through SFTP and back, byte for byte, and the guest's own checksum agrees.
    let big: Vec<u8> = (0..10u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    client.vm_file_put("kt-deb-bios", "/home/alice/big", false, big.clone()).await.unwrap();
    match client.vm_file_get("kt-deb-bios", "/home/alice/big").await.unwrap() {
        kvmctl_client::GuestFile::File(back) => assert!(back == big, "10 MiB round trip differs ({} bytes back)", back.len()),
        other => panic!("a file, not {other:?}"),
    }
    let sum = client
        .vm_exec("kt-deb-bios", &kvmctl_types::api::VmExecRequest { command: "sha256sum /home/alice/big".into(), timeout_seconds: None })
        .await
        .unwrap()
        .stdout;
    let local: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&big).iter().map(|b| format!("{b:02x}")).collect()
    };
    assert!(sum.starts_with(&local), "{sum} vs {local}");

    // The serial console, interactive through the daemon: Enter brings the login prompt.
    let mut console = client.terminal("/v1/vms/kt-deb-bios/console").await.unwrap();
    let (seen, _) = kvmctl_testkit::daemon::terminal_talk(&mut console, b"\r", "login:", 20).await;
    assert!(seen.contains("kt-deb-bios login:"), "the console shows the login prompt: {seen:?}");
    drop(console);

    // A real guest shuts down on ACPI, and boots again from its disk.
    let vm = client.vm_stop("kt-deb-bios", &VmStopRequest { force: false, timeout_seconds: Some(300) }).await.unwrap();
    assert_eq!(vm.state, "stopped");
    assert!(
        std::fs::read_to_string(cfg.console_log_dir.join("kt-deb-bios.log")).unwrap().contains("reboot: Power down"),
        "the guest powered itself off on request (agent or ACPI); it was not forced"
    );
    client.vm_start("kt-deb-bios").await.unwrap();
    let again = ssh_when_up(
        client.clone(),
        "kt-deb-bios".into(),
        key.clone(),
        cfg.console_log_dir.join("kt-deb-bios.log"),
        "cat /etc/kvmctl-seeded".into(),
    )
    .await;
    assert_eq!(again.trim(), "yes");

    client.vm_delete("kt-deb-bios", false).await.unwrap();
    client.image_delete("kt-debian").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}
