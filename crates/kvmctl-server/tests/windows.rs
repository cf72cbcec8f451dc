//! Installs from ISO images and the `windows-11` profile on the real libvirtd. No Windows ISO
//! is available here, so stand-ins made by the test play the installer and virtio-win: the
//! VM is defined and started as a Windows 11 install would be (UEFI Secure Boot with
//! Microsoft's keys, SMM, TPM 2.0, the Windows clock, a USB tablet, the installer booted
//! first from SATA, virtio-win and the answer file beside it, an empty 64 GiB virtio disk),
//! and the answer file is read back from its ISO. Bad requests name their field and make
//! nothing; ISOs in use cannot be removed.

use kvmctl_client::ClientError;
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{ErrorBody, ImageImportRequest, UnattendSettings, VmCreateRequest};

const VM: &str = "kt-win-1";
const KVM_VM: &str = "kt-win-2";
const INSTALLER: &str = "kt-win-iso";
const VIRTIO: &str = "kt-win-virtio";
const DISK_IMG: &str = "kt-win-disk";

fn api_err(e: ClientError) -> (u16, ErrorBody) {
    match e {
        ClientError::Api { status, body } => (status, body),
        other => panic!("expected an API error, got {other}"),
    }
}

fn windows_vm(name: &str) -> VmCreateRequest {
    VmCreateRequest {
        name: name.into(),
        install_iso: Some(INSTALLER.into()),
        extra_isos: vec![VIRTIO.into()],
        profile: Some("windows-11".into()),
        vcpus: Some(2),
        memory_mib: Some(4096),
        disk_gib: Some(64),
        user: Some("alice".into()),
        unattend: Some(UnattendSettings { password: "correct horse battery".into(), ..Default::default() }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_windows_11_install_is_defined_and_started_with_its_devices_and_answer_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&[VM, KVM_VM, "kt-win-never"], &[INSTALLER, VIRTIO, DISK_IMG]);
    let (server, c) = daemon::start(&daemon::config(d)).await;

    // Stand-ins: an "installer" and a "virtio-win" ISO, with the files Setup would look for.
    let installer =
        kvmctl_cloudinit::iso::build("CCCOMA_X64FRE_EN-US_DV9", &[("setup.exe", b"MZ"), ("sources/install.wim", b"MSWIM")]).unwrap();
    let virtio = kvmctl_cloudinit::iso::build(
        "virtio-win-0.1",
        &[("viostor/w11/amd64/viostor.inf", b"[Version]"), ("guest-agent/qemu-ga-x86_64.msi", b"msi"), ("virtio-win-gt-x64.msi", b"msi")],
    )
    .unwrap();
    std::fs::write(d.join("win11.iso"), &installer).unwrap();
    std::fs::write(d.join("virtio-win.iso"), &virtio).unwrap();
    std::fs::write(d.join("not-an-iso.img"), vec![0u8; 1 << 16]).unwrap();
    let import = |name: &str, file: &str, kind: &str| ImageImportRequest {
        name: name.into(),
        source: d.join(file).display().to_string(),
        kind: Some(kind.into()),
        ..Default::default()
    };
    let (s, body) = api_err(c.image_import(&import("kt-win-bad", "not-an-iso.img", "iso")).await.unwrap_err());
    assert!(s == 400 && body.field.as_deref() == Some("source"), "{body:?}");
    // The installer carries the profile as its template's default.
    let template = kvmctl_types::api::ImageTemplate { profile: Some("windows-11".into()), ..Default::default() };
    let iso = c.image_import(&ImageImportRequest { template: Some(template), ..import(INSTALLER, "win11.iso", "iso") }).await.unwrap();
    assert_eq!(iso.template.profile.as_deref(), Some("windows-11"));
    assert_eq!((iso.format.as_str(), iso.virtual_bytes), ("iso", installer.len() as u64));
    c.image_import(&import(VIRTIO, "virtio-win.iso", "iso")).await.unwrap();
    c.image_import(&import(DISK_IMG, "not-an-iso.img", "disk")).await.unwrap();

    // Bad requests name their field and make nothing.
    let never = windows_vm("kt-win-never");
    for (req, field) in [
        (VmCreateRequest { memory_mib: Some(2048), ..never.clone() }, "memory_mib"),
        (VmCreateRequest { disk_gib: Some(32), ..never.clone() }, "disk_gib"),
        (VmCreateRequest { unattend: None, ..never.clone() }, "unattend"),
        (
            VmCreateRequest { unattend: Some(UnattendSettings { password: "short".into(), ..Default::default() }), ..never.clone() },
            "unattend.password",
        ),
        (VmCreateRequest { firmware: Some("bios".into()), ..never.clone() }, "firmware"),
        (VmCreateRequest { name: "kt-win-name-too-long".into(), ..never.clone() }, "name"),
        (VmCreateRequest { profile: Some("windows-95".into()), ..never.clone() }, "profile"),
        (VmCreateRequest { install_iso: Some(DISK_IMG.into()), ..never.clone() }, "install_iso"),
        (VmCreateRequest { extra_isos: vec![DISK_IMG.into()], ..never.clone() }, "extra_isos[0]"),
        (VmCreateRequest { image: INSTALLER.into(), install_iso: None, unattend: None, ..never.clone() }, "image"),
    ] {
        let (s, body) = api_err(c.vm_create(&req).await.unwrap_err());
        assert!(s == 400 && body.field.as_deref() == Some(field), "{field}: {body:?}");
    }
    assert!(c.vm_list().await.unwrap().is_empty());

    // The install: defined and started on the real libvirtd (TCG here).
    let vm = c.vm_create(&windows_vm(VM)).await.unwrap();
    assert_eq!((vm.state.as_str(), vm.firmware.as_str(), vm.tpm), ("running", "uefi-secure", true));
    assert_eq!(vm.profile.as_deref(), Some("windows-11"));
    assert_eq!(vm.media, vec![INSTALLER.to_owned(), VIRTIO.to_owned()]);
    let live = sweep.node_xml(VM);
    for want in [
        "<feature enabled='yes' name='secure-boot'/>",
        "<feature enabled='yes' name='enrolled-keys'/>",
        "<smm state='on'/>",
        "<vmport state='off'/>",
        "<tpm model='tpm-crb'>",
        "<clock offset='localtime'>",
        "<timer name='hpet' present='no'/>",
        "<input type='tablet' bus='usb'>",
    ] {
        assert!(live.contains(want), "{want} in the live definition:\n{live}");
    }
    let disks = kvmctl_libvirt::xml::domain_devices(&live);
    assert_eq!(disks.disk_targets, ["vda", "sda", "sdb", "sdc"], "libvirt sorts disks by target: {live}");
    assert!(live.contains(&format!("image-{INSTALLER}.iso")) && live.contains(&format!("image-{VIRTIO}.iso")));
    // The installer first, then the disk.
    let boot_of = |target: &str| {
        let at = live.find(&format!("<target dev='{target}'")).unwrap();
        let end = live[at..].find("</disk>").unwrap() + at;
        live[at..end].split("<boot order='").nth(1).map(|s| s[..1].to_owned())
    };
    assert_eq!((boot_of("sda").as_deref(), boot_of("vda").as_deref()), (Some("1"), Some("2")));
    // The empty root disk has the size asked for.
    let root = kvmctl_libvirt::Node::volume_get(&sweep.node, &sweep.pool, &format!("{VM}-root.qcow2")).unwrap().unwrap();
    assert_eq!(root.capacity_bytes, 64 << 30);

    // The answer file, read back from its ISO with isoinfo (by its Rock Ridge name).
    let seed = kvmctl_libvirt::Node::volume_get(&sweep.node, &sweep.pool, &format!("{VM}-seed.iso")).unwrap().unwrap();
    let read = |file: &str| {
        let out = std::process::Command::new("isoinfo").arg("-i").arg(&seed.path).args(["-R", "-x", file]).output().unwrap();
        assert!(out.status.success(), "isoinfo {file}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let xml = read("/autounattend.xml");
    for want in [
        "<ComputerName>kt-win-1</ComputerName>",
        "<Name>alice</Name>",
        "<TimeZone>UTC</TimeZone>",
        "<UILanguage>en-US</UILanguage>",
        "<Value>Windows 11 Pro</Value>",
        "E:\\viostor\\w11\\amd64",
        "<WillWipeDisk>true</WillWipeDisk>",
        "<PlainText>false</PlainText>",
    ] {
        assert!(xml.contains(want), "{want} in autounattend.xml:\n{xml}");
    }
    assert!(!xml.contains("correct horse"), "the password is not in plain text");
    assert!(read("/kvmctl-setup.cmd").contains("qemu-ga-x86_64.msi"));

    // ISOs in use stay.
    let (s, body) = api_err(c.image_delete(VIRTIO).await.unwrap_err());
    assert!(s == 409 && body.message.contains(VM), "{body:?}");

    c.vm_delete(VM, false).await.unwrap();
    server.stop().await;

    // Where KVM works the profile adds the Hyper-V enlightenments: libvirt 9.0 accepts the
    // set (defined, not started: KVM does not boot guests on this machine).
    let cfg = kvmctl_server::Config { domain_type: kvmctl_server::config::DomainTypeSetting::Kvm, ..daemon::config(d) };
    let (server, c) = daemon::start(&cfg).await;
    // No profile asked: the installer's template gives it.
    c.vm_create(&VmCreateRequest { no_start: true, profile: None, ..windows_vm(KVM_VM) }).await.unwrap();
    let defined = sweep.node_xml(KVM_VM);
    for want in [
        "<domain type='kvm'",
        "<hyperv mode='custom'>",
        "<spinlocks state='on' retries='8191'/>",
        "<timer name='hypervclock' present='yes'/>",
    ] {
        assert!(defined.contains(want), "{want} in the definition:\n{defined}");
    }
    c.vm_delete(KVM_VM, false).await.unwrap();
    for i in [INSTALLER, VIRTIO, DISK_IMG] {
        c.image_delete(i).await.unwrap();
    }
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}
