//! `kvmctl gc` against the real libvirtd: debris planted by hand (a domain with kvmctl's
//! metadata and no row, a root volume of no VM, a DHCP reservation of no VM's MAC) is found
//! by the report and removed by the clean; a real VM, objects without kvmctl's marks and a
//! domain of another installation (its metadata names another database) are never touched, and nothing is removed before it has been reported for `gc_grace_seconds`
//! (an injected clock moves time on). Its own test binary: no other test daemon runs beside
//! it (gc treats every kvmctl-marked domain without a row as debris).

use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::VmCreateRequest;
use std::process::Command;

fn virsh(args: &[&str]) -> String {
    let uri = kvmctl_testkit::env("KVMCTL_TEST_URI");
    let out = Command::new("virsh").arg("-c").arg(&uri).args(args).output().unwrap();
    assert!(out.status.success(), "virsh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A domain with kvmctl's metadata (`marked`), naming `installation` when given.
fn domain_xml(name: &str, id: &str, marked: bool, installation: Option<&str>) -> String {
    let inst = installation.map(|i| format!("<kvmctl:installation>{i}</kvmctl:installation>")).unwrap_or_default();
    let meta = if marked {
        format!("<metadata><kvmctl:vm xmlns:kvmctl='https://kvmctl.dev/xmlns/domain/1'><kvmctl:id>{id}</kvmctl:id>{inst}</kvmctl:vm></metadata>")
    } else {
        String::new()
    };
    format!(
        "<domain type='qemu'><name>{name}</name><uuid>{id}</uuid><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64'>hvm</type></os>{meta}</domain>"
    )
}

#[tokio::test]
async fn gc_reports_planted_debris_then_removes_it_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-gc-real", "kt-gc-dom", "kt-gc-foreign", "kt-gc-other", "kt-gc-vol"], &["kt-gc-img"]);
    let mut cfg = daemon::config(d);
    cfg.gc_grace_seconds = 600;
    let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let clock = std::sync::Arc::new(kvmctl_server::clock::ManualClock::new(t0));
    let (server, c) = daemon::start_with_clock(&cfg, clock.clone()).await;
    daemon::tiny_image(&c, d, "kt-gc-img").await;
    let real = c.vm_create(&VmCreateRequest { no_start: true, ..daemon::tiny_vm("kt-gc-real", "kt-gc-img", vec![]) }).await.unwrap();

    // Debris, and look-alikes that are not ours.
    let pool = kvmctl_testkit::env("KVMCTL_TEST_POOL");
    let network = kvmctl_testkit::env("KVMCTL_TEST_NETWORK");
    // The real VM's domain names this installation.
    assert!(sweep.node_xml("kt-gc-real").contains("installation>"), "{}", sweep.node_xml("kt-gc-real"));
    // kt-gc-other: another installation's VM on the same libvirt (its metadata names another
    // database), which this one must never judge.
    for (name, id, marked, installation) in [
        ("kt-gc-dom", "6b1f0c1e-0000-4000-8000-00000000a001", true, None),
        ("kt-gc-foreign", "6b1f0c1e-0000-4000-8000-00000000a002", false, None),
        ("kt-gc-other", "6b1f0c1e-0000-4000-8000-00000000a003", true, Some("another-installation")),
    ] {
        let f = d.join(format!("{name}.xml"));
        std::fs::write(&f, domain_xml(name, id, marked, installation)).unwrap();
        virsh(&["define", f.to_str().unwrap()]);
    }
    virsh(&["vol-create-as", &pool, "kt-gc-vol-root.qcow2", "1M", "--format", "qcow2"]);
    virsh(&["vol-create-as", &pool, "kt-gc-foreign-data.img", "1M", "--format", "raw"]);
    virsh(&[
        "net-update",
        &network,
        "add",
        "ip-dhcp-host",
        "<host mac='52:54:00:6b:1f:0c' name='kt-gc-vol' ip='10.77.0.49'/>",
        "--live",
        "--config",
    ]);

    let report = c.gc(false).await.unwrap();
    let found: Vec<(String, String, bool)> = report.items.iter().map(|i| (i.kind.clone(), i.name.clone(), i.removed)).collect();
    for want in [
        ("domain", "kt-gc-dom".to_owned()),
        ("volume", format!("{pool}/kt-gc-vol-root.qcow2")),
        ("dhcp_host", format!("{network}/kt-gc-vol")),
    ] {
        assert!(found.iter().any(|(k, n, removed)| k == want.0 && *n == want.1 && !removed), "{want:?} not in {found:#?}");
    }
    for (_, n, _) in &found {
        assert!(!n.contains("kt-gc-real") && !n.contains("kt-gc-foreign") && !n.contains("kt-gc-other"), "{n} is not debris: {found:#?}");
        assert!(!n.ends_with('/'), "an address reserved ahead is the network's, not debris: {found:#?}");
    }
    // The report changed nothing.
    assert!(virsh(&["list", "--all", "--name"]).contains("kt-gc-dom"));

    assert!(report.items.iter().all(|i| i.first_seen_at == t0), "{report:#?}");

    // Within the grace period a clean removes nothing (it could be a create in flight).
    let early = c.gc(true).await.unwrap();
    assert!(early.items.iter().all(|i| !i.removed && i.first_seen_at == t0), "{early:#?}");
    assert!(virsh(&["list", "--all", "--name"]).contains("kt-gc-dom"));

    clock.advance(600);
    let cleaned = c.gc(true).await.unwrap();
    assert!(cleaned.items.iter().filter(|i| i.kind != "row").all(|i| i.removed), "{cleaned:#?}");
    let domains = virsh(&["list", "--all", "--name"]);
    assert!(
        !domains.contains("kt-gc-dom")
            && domains.contains("kt-gc-foreign")
            && domains.contains("kt-gc-other")
            && domains.contains("kt-gc-real"),
        "{domains}"
    );
    let vols = virsh(&["vol-list", &pool]);
    assert!(!vols.contains("kt-gc-vol-root") && vols.contains("kt-gc-foreign-data.img") && vols.contains("kt-gc-real-root"), "{vols}");
    let net = virsh(&["net-dumpxml", &network]);
    assert!(!net.contains("kt-gc-vol") && net.contains(&real.mac.to_ascii_lowercase()), "{net}");
    assert!(c.gc(false).await.unwrap().items.iter().all(|i| !i.name.contains("kt-gc")), "nothing of ours is left to collect");

    virsh(&["undefine", "kt-gc-foreign"]);
    virsh(&["undefine", "kt-gc-other"]);
    virsh(&["vol-delete", "--pool", &pool, "kt-gc-foreign-data.img"]);
    c.vm_delete("kt-gc-real", false).await.unwrap();
    c.image_delete("kt-gc-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}
