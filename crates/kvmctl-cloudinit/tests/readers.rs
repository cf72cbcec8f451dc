//! The ISO writer checked by readers that are not ours: xorriso (Rock Ridge names, file
//! contents), isoinfo (Joliet names, volume label) and, where the kernel has iso9660, a
//! loop mount. The tiny guest's kernel reading a seed is the real-libvirt test's part.

use kvmctl_cloudinit::iso;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn tool(name: &str) -> Command {
    assert!(
        Command::new("sh").args(["-c", &format!("command -v {name}")]).output().unwrap().status.success(),
        "{name} is missing: run scripts/testenv.sh"
    );
    Command::new(name)
}

/// Extracts `img` with xorriso and returns every file (Rock Ridge path -> bytes).
fn extract(img: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("x.iso");
    std::fs::write(&iso, img).unwrap();
    let out = dir.path().join("out");
    let st = tool("xorriso")
        .args(["-abort_on", "FAILURE", "-indev"])
        .arg(&iso)
        .args(["-osirrox", "on", "-extract", "/"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(st.status.success(), "xorriso failed: {}", String::from_utf8_lossy(&st.stderr));
    let mut files = BTreeMap::new();
    walk(&out, &out, &mut files);
    files
}

fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(root, &p, files);
        } else {
            files.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap());
        }
    }
}

fn isoinfo_list(img: &[u8], flag: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("x.iso");
    std::fs::write(&iso, img).unwrap();
    let out = tool("isoinfo").args([flag, "-f", "-i"]).arg(&iso).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn nocloud_names_survive_in_every_hierarchy() {
    let img =
        iso::build("cidata", &[("user-data", b"#cloud-config\n"), ("meta-data", b"instance-id: x\n"), ("network-config", b"version: 2\n")])
            .unwrap();
    let files = extract(&img);
    assert_eq!(files.keys().collect::<Vec<_>>(), ["meta-data", "network-config", "user-data"]);
    assert_eq!(files["meta-data"], b"instance-id: x\n");
    let joliet = isoinfo_list(&img, "-J");
    assert!(joliet.contains("/user-data") && joliet.contains("/network-config"), "{joliet}");
    let rr = isoinfo_list(&img, "-R");
    assert!(rr.contains("/meta-data"), "{rr}");
    assert_eq!(&img[32808..32814], b"cidata", "volume id where blkid and the tiny guest read it");
}

#[test]
fn directories_and_many_files_cross_sector_boundaries() {
    // 80 long names: the root directory spans several sectors.
    let names: Vec<String> = (0..80).map(|i| format!("a-rather-long-file-name-number-{i:03}.json")).collect();
    let data: Vec<Vec<u8>> = (0..80).map(|i| vec![i as u8; i * 37]).collect();
    let mut files: Vec<(&str, &[u8])> = names.iter().zip(&data).map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    files.push(("openstack/latest/meta_data.json", b"{}"));
    files.push(("openstack/latest/user_data", b"#!/bin/sh\n"));
    let img = iso::build("config-2", &files).unwrap();
    let got = extract(&img);
    assert_eq!(got.len(), 82);
    for (n, d) in names.iter().zip(&data) {
        assert_eq!(&got[n], d, "{n}");
    }
    assert_eq!(got["openstack/latest/user_data"], b"#!/bin/sh\n");
}

#[test]
fn loop_mount_when_the_kernel_can() {
    let img = iso::build("cidata", &[("user-data", b"#cloud-config\n"), ("meta-data", b"instance-id: m\n")]).unwrap();
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.contains("iso9660")
        && !Command::new("modprobe").arg("isofs").stderr(std::process::Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
    {
        // This host's kernel has no iso9660; the tiny guest's kernel reads our seeds instead
        // (kvmctl-libvirt/tests/real_libvirt.rs).
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("m.iso");
    std::fs::write(&iso, img).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    assert!(Command::new("mount").args(["-o", "loop,ro"]).arg(&iso).arg(&mnt).status().unwrap().success());
    let content = std::fs::read_to_string(mnt.join("meta-data"));
    let _ = Command::new("umount").arg(&mnt).status();
    assert_eq!(content.unwrap(), "instance-id: m\n");
}

#[test]
fn bad_input_is_refused() {
    assert!(matches!(iso::build("cidata", &[("a/../b", b"")]), Err(iso::IsoError::BadName(_))));
    assert!(matches!(iso::build("cidata", &[("", b"")]), Err(iso::IsoError::BadName(_))));
    assert!(matches!(iso::build("cidata", &[("a", b""), ("a/b", b"")]), Err(iso::IsoError::Clash(_))));
    assert!(matches!(iso::build("", &[]), Err(iso::IsoError::BadLabel(_))));
    assert!(matches!(iso::build("cidata", &[(&"x".repeat(65), b"")]), Err(iso::IsoError::NameTooLong(_))));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Arbitrary names (letters, digits, punctuation, spaces, non-ASCII) and contents come
    /// back intact through xorriso, an independent reader.
    #[test]
    fn round_trip_through_xorriso(
        entries in proptest::collection::btree_map("[a-zA-Z0-9._ äöüß€-]{1,40}", proptest::collection::vec(any::<u8>(), 0..5000), 1..12)
    ) {
        let entries: BTreeMap<String, Vec<u8>> = entries.into_iter().filter(|(n, _)| n != "." && n != ".." && n.trim() == n).collect();
        prop_assume!(!entries.is_empty());
        let files: Vec<(&str, &[u8])> = entries.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
        let img = iso::build("cidata", &files).unwrap();
        prop_assert_eq!(img.clone(), iso::build("cidata", &files).unwrap(), "deterministic");
        let got = extract(&img);
        prop_assert_eq!(got, entries);
    }
}
