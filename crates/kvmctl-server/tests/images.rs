//! Image import and the registry against the real libvirtd: every rejection leaves no
//! volume and no row; a good import becomes a pool volume; `rm` refuses while a VM uses it.

use kvmctl_client::{Client, ClientError};
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{ImageImportRequest, ImageTemplate};
use std::path::Path;
use std::process::Command;

fn qemu_img(args: &[&str]) {
    let st = Command::new("qemu-img").args(args).status().unwrap();
    assert!(st.success(), "qemu-img {args:?}");
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The import fails with 4xx naming `field`, and nothing of it exists afterwards.
async fn refused(client: &Client, sweep: &Sweep, req: ImageImportRequest, status: u16, field: Option<&str>, says: &str) {
    let err = client.image_import(&req).await.unwrap_err();
    match &err {
        ClientError::Api { status: s, body } => {
            assert_eq!(*s, status, "{req:?}: {body:?}");
            assert_eq!(body.field.as_deref(), field, "{body:?}");
            assert!(body.message.contains(says), "{:?} should say {says:?}", body.message);
        }
        other => panic!("{req:?}: expected an API error, got {other}"),
    }
    assert!(sweep.leftovers().is_empty(), "{req:?} left {:?}", sweep.leftovers());
    assert!(client.image_list().await.unwrap().iter().all(|i| i.name != req.name), "{req:?} left a row");
}

#[tokio::test]
async fn every_bad_import_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&[], &["kt-bad"]);
    let (server, client) = daemon::start(&daemon::config(d)).await;
    let req = |source: String| ImageImportRequest { name: "kt-bad".into(), source, ..Default::default() };

    qemu_img(&["create", "-q", "-f", "qcow2", &p(&d.join("good.qcow2")), "16M"]);
    qemu_img(&["create", "-q", "-f", "vmdk", &p(&d.join("disk.vmdk")), "16M"]);
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", &p(&d.join("good.qcow2")), "-F", "qcow2", &p(&d.join("child.qcow2"))]);
    // A qcow2 cut short: its header points at tables past the end of the file.
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", &p(&d.join("full.qcow2")), "64M"]);
    let full = std::fs::read(d.join("full.qcow2")).unwrap();
    std::fs::write(d.join("truncated.qcow2"), &full[..full.len() / 2]).unwrap();
    std::fs::write(d.join("notes.txt"), "not a disk image\n").unwrap();
    // A qcow2 whose external data file is /etc/shadow: made with a harmless data file whose
    // path has the same length, then the path in its header rewritten.
    let harmless = tempfile::Builder::new().prefix("kt-").tempfile_in("/tmp").unwrap();
    let decoy = "/tmp/kt-dfx";
    std::fs::copy(harmless.path(), decoy).unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", &format!("data_file={decoy}"), &p(&d.join("shadow.qcow2")), "1M"]);
    std::fs::remove_file(decoy).unwrap();
    let mut bytes = std::fs::read(d.join("shadow.qcow2")).unwrap();
    let at = bytes.windows(decoy.len()).position(|w| w == decoy.as_bytes()).expect("the data file's name is in the header");
    bytes[at..at + decoy.len()].copy_from_slice(b"/etc/shadow");
    std::fs::write(d.join("shadow.qcow2"), &bytes).unwrap();
    // A qcow2 whose header claims an L1 table of 0x3fffffff entries (8 GiB).
    let mut huge = std::fs::read(d.join("good.qcow2")).unwrap();
    huge[36..40].copy_from_slice(&0x3fff_ffffu32.to_be_bytes());
    std::fs::write(d.join("huge-l1.qcow2"), &huge).unwrap();

    refused(
        &client,
        &sweep,
        ImageImportRequest { name: "Bad_Name".into(), ..req(p(&d.join("good.qcow2"))) },
        400,
        Some("name"),
        "lowercase",
    )
    .await;
    refused(&client, &sweep, req("good.qcow2".into()), 400, Some("source"), "absolute").await;
    refused(&client, &sweep, req(p(&d.join("missing.qcow2"))), 400, Some("source"), "cannot read").await;
    refused(&client, &sweep, req(p(d)), 400, Some("source"), "not a regular file").await;
    refused(&client, &sweep, req(p(&d.join("disk.vmdk"))), 400, Some("source"), "format vmdk is not supported").await;
    refused(&client, &sweep, req(p(&d.join("child.qcow2"))), 400, Some("source"), "backing file").await;
    refused(&client, &sweep, req(p(&d.join("truncated.qcow2"))), 400, Some("source"), "corrupt or truncated").await;
    refused(&client, &sweep, req(p(&d.join("notes.txt"))), 400, Some("source"), "512-byte sectors").await;
    refused(&client, &sweep, req(p(&d.join("shadow.qcow2"))), 400, Some("source"), "external data file (/etc/shadow)").await;
    refused(&client, &sweep, req(p(&d.join("huge-l1.qcow2"))), 400, Some("source"), "qemu-img cannot read it").await;
    let wrong = "0".repeat(64);
    refused(
        &client,
        &sweep,
        ImageImportRequest { sha256: Some(wrong), ..req(p(&d.join("good.qcow2"))) },
        400,
        Some("sha256"),
        "SHA-256 is",
    )
    .await;
    refused(
        &client,
        &sweep,
        ImageImportRequest { sha256: Some("abc".into()), ..req(p(&d.join("good.qcow2"))) },
        400,
        Some("sha256"),
        "64 hexadecimal",
    )
    .await;
    refused(
        &client,
        &sweep,
        ImageImportRequest { initrd: Some(p(&d.join("good.qcow2"))), ..req(p(&d.join("good.qcow2"))) },
        400,
        Some("kernel"),
        "need a kernel",
    )
    .await;
    let bad_mode = ImageTemplate { boot_modes: vec!["pxe".into()], ..Default::default() };
    refused(
        &client,
        &sweep,
        ImageImportRequest { template: Some(bad_mode), ..req(p(&d.join("good.qcow2"))) },
        400,
        Some("template.boot_modes"),
        "pxe",
    )
    .await;
    refused(&client, &sweep, req("http://127.0.0.1:9/none.qcow2".into()), 400, Some("source"), "cannot fetch").await;
    // A body that is not the request at all is a 400 naming the field, like everything else.
    let (status, body) = client.request(hyper::Method::POST, "/v1/images", Some(br#"{"name": 7}"#.to_vec())).await.unwrap();
    assert_eq!(status, 400, "{body:?}");
    let body: kvmctl_types::api::ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(body.field.as_deref(), Some("name"), "{body:?}");

    // A good import, then the same name again.
    let sha = sha256sum(&d.join("good.qcow2"));
    let img = client.image_import(&ImageImportRequest { sha256: Some(sha.to_uppercase()), ..req(p(&d.join("good.qcow2"))) }).await.unwrap();
    assert_eq!((img.format.as_str(), img.virtual_bytes, img.sha256.as_str()), ("qcow2", 16 << 20, sha.as_str()));
    assert_eq!(img.template.boot_modes, vec!["bios".to_string()]);
    let again = client.image_import(&req(p(&d.join("good.qcow2")))).await.unwrap_err();
    assert!(matches!(&again, ClientError::Api { status: 409, .. }), "{again}");
    client.image_delete("kt-bad").await.unwrap();
    assert!(sweep.leftovers().is_empty());
    let gone = client.image_get("kt-bad").await.unwrap_err();
    assert!(matches!(gone, ClientError::Api { status: 404, .. }));
    server.stop().await;
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

/// Serves `data` once per connection over HTTP/1.0 on loopback; returns the URL.
fn serve_once(data: Vec<u8>, name: &str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/{name}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", data.len());
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&data);
        }
    });
    url
}

#[tokio::test]
async fn url_import_template_metadata_and_rm_refused_while_used() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-img-user"], &["kt-web", "kt-built", "kt-kern"]);
    let (server, client) = daemon::start(&daemon::config(d)).await;

    // Over HTTP (loopback), raw, checksum verified.
    let raw = vec![0u8; 4 << 20];
    let url = serve_once(raw.clone(), "disk.raw");
    let want = {
        std::fs::write(d.join("disk.raw"), &raw).unwrap();
        sha256sum(&d.join("disk.raw"))
    };
    let img = client
        .image_import(&ImageImportRequest { name: "kt-web".into(), source: url.clone(), sha256: Some(want.clone()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(
        (img.format.as_str(), img.file_bytes, img.source.as_str(), img.sha256.as_str()),
        ("raw", 4 << 20, url.as_str(), want.as_str())
    );

    // The template comes from a kvmctl image.json beside the file.
    let built = d.join("built");
    std::fs::create_dir(&built).unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", &p(&built.join("disk.qcow2")), "32M"]);
    let meta = serde_json::json!({"path": p(&built.join("disk.qcow2")), "os": "debian", "version": "12", "cloud_init": true,
        "default_user": "debian", "boot_modes": ["bios", "uefi"]});
    std::fs::write(built.join("image.json"), meta.to_string()).unwrap();
    let img = client
        .image_import(&ImageImportRequest { name: "kt-built".into(), source: p(&built.join("disk.qcow2")), ..Default::default() })
        .await
        .unwrap();
    let t = &img.template;
    assert_eq!(
        (t.os_family.as_deref(), t.os_version.as_deref(), t.cloud_init, t.default_user.as_deref()),
        (Some("debian"), Some("12"), true, Some("debian"))
    );
    assert_eq!(t.boot_modes, vec!["bios".to_string(), "uefi".to_string()]);

    // A VM on an image pins it.
    let tiny = daemon::tiny_image(&client, d, "kt-kern").await;
    assert!(tiny.kernel_boot.is_some());
    let vm = client
        .vm_create(&kvmctl_types::api::VmCreateRequest { no_start: true, ..daemon::tiny_vm("kt-img-user", "kt-kern", vec![]) })
        .await
        .unwrap();
    assert_eq!(vm.state, "stopped");
    assert_eq!(client.image_get("kt-kern").await.unwrap().used_by, vec!["kt-img-user".to_string()]);
    let err = client.image_delete("kt-kern").await.unwrap_err();
    match err {
        ClientError::Api { status: 409, body } => assert!(body.message.contains("kt-img-user"), "{body:?}"),
        other => panic!("expected 409, got {other}"),
    }
    client.vm_delete("kt-img-user", false).await.unwrap();
    for name in ["kt-kern", "kt-web", "kt-built"] {
        client.image_delete(name).await.unwrap();
    }
    assert!(client.image_list().await.unwrap().is_empty());
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}
