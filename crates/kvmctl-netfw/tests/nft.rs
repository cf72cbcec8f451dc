//! The table against the real `nft` and kernel: written, read back, changed per VM, and
//! nothing outside it touched. Runs in the test network namespace (scripts/test.sh) on a
//! table of its own, with ports and addresses no other test uses.

use kvmctl_netfw::{table_delete, table_read, vm_apply, vm_remove, Forward, Protocol, VmRules};
use std::process::Command;

fn nft(args: &str) -> String {
    let out = Command::new("nft").args(args.split_whitespace()).output().expect("nft runs");
    assert!(out.status.success(), "nft {args}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn vm(id: &str, last: u8, fwds: &[(u16, u16)], nat: bool) -> VmRules {
    VmRules {
        vm: id.into(),
        guest_ip: [192, 0, 2, last].into(),
        bridge: "kt-nobr0".into(),
        nat_subnet: nat.then_some(([192, 0, 2, 0].into(), 24)),
        forwards: fwds.iter().map(|(h, g)| Forward { protocol: Protocol::Tcp, host_port: *h, guest_port: *g }).collect(),
    }
}

/// Deletes the table whatever happens to the test.
struct Table(String);
impl Drop for Table {
    fn drop(&mut self) {
        let _ = table_delete(&self.0);
    }
}

#[test]
fn per_vm_changes_are_atomic_idempotent_and_stay_in_the_table() {
    if std::env::var("KVMCTL_NETNS").is_err() {
        eprintln!("skipped: run with scripts/test.sh (needs root and the test namespace)");
        return;
    }
    let t = Table(format!("kt_fw_{}", std::process::id()));
    let before_other = nft("list tables");
    let a = vm("aaaaaaaa-0000-0000-0000-000000000001", 10, &[(61001, 22), (61002, 80)], true);
    let b = vm("bbbbbbbb-0000-0000-0000-000000000002", 11, &[(61003, 22)], false);
    assert!(vm_apply(&t.0, &a).unwrap(), "the first apply writes the table");
    assert!(!vm_apply(&t.0, &a).unwrap(), "the same rules again change nothing");
    assert!(vm_apply(&t.0, &b).unwrap());
    let set = table_read(&t.0).unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set[&a.key()], a.normalized());
    assert_eq!(set[&b.key()], b.normalized());

    let listing = nft(&format!("list table inet {}", t.0));
    for want in ["dnat ip to 192.0.2.10:22", "tcp dport 61002 dnat ip to 192.0.2.10:80", "dnat ip to 192.0.2.11:22", "masquerade"] {
        assert!(listing.contains(want), "{want:?} missing from\n{listing}");
    }
    // Rules of one VM never match another's traffic: each DNAT names one host port and one guest.
    let dnat_lines: Vec<&str> = listing.lines().filter(|l| l.contains("dnat ip to")).collect();
    assert_eq!(dnat_lines.len(), 6, "two chains x three forwards:\n{listing}");
    for l in &dnat_lines {
        let ok = (l.contains("61001") && l.contains("192.0.2.10:22"))
            || (l.contains("61002") && l.contains("192.0.2.10:80"))
            || (l.contains("61003") && l.contains("192.0.2.11:22"));
        assert!(ok, "a forward rule mixes VMs: {l}");
    }

    // Changing A leaves B as it was; removing A twice is fine.
    let a2 = vm("aaaaaaaa-0000-0000-0000-000000000001", 10, &[(61001, 22)], true);
    assert!(vm_apply(&t.0, &a2).unwrap());
    assert_eq!(table_read(&t.0).unwrap()[&b.key()], b.normalized());
    assert!(vm_remove(&t.0, &a.vm).unwrap());
    assert!(!vm_remove(&t.0, &a.vm).unwrap());
    let set = table_read(&t.0).unwrap();
    assert_eq!(set.keys().cloned().collect::<Vec<_>>(), vec![b.key()]);

    // A table flushed by hand reads as empty, and is rebuilt by the next apply.
    nft(&format!("flush table inet {}", t.0));
    assert!(table_read(&t.0).unwrap().is_empty());
    assert!(vm_apply(&t.0, &b).unwrap());
    assert_eq!(table_read(&t.0).unwrap().len(), 1);

    // Other tables were not touched.
    let after_other: Vec<String> = nft("list tables").lines().filter(|l| !l.contains(&t.0)).map(str::to_owned).collect();
    let before: Vec<String> = before_other.lines().filter(|l| !l.contains(&t.0)).map(str::to_owned).collect();
    assert_eq!(before, after_other);
    table_delete(&t.0).unwrap();
    assert!(table_read(&t.0).unwrap().is_empty());
}

/// `route_localnet` is switched on only after the table with its loopback guard is written,
/// and switched off again when writing fails (issue 14): never on without the guard.
#[test]
fn route_localnet_only_behind_the_guard() {
    if std::env::var("KVMCTL_NETNS").is_err() {
        eprintln!("skipped: run with scripts/test.sh (needs root and the test namespace)");
        return;
    }
    let br = format!("kt-lbr{}", std::process::id() % 10_000);
    let made = Command::new("ip").args(["link", "add", &br, "type", "bridge"]).status().unwrap();
    assert!(made.success());
    struct Link(String);
    impl Drop for Link {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
    let _link = Link(br.clone());
    let flag = || std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{br}/route_localnet")).unwrap().trim().to_owned();
    let rules = VmRules { bridge: br.clone(), ..vm("cccccccc-0000-0000-0000-000000000003", 12, &[(61010, 22)], false) };
    // A table nft refuses to write (its name is not valid): the flag stays (or goes back) off.
    std::fs::write(format!("/proc/sys/net/ipv4/conf/{br}/route_localnet"), "1").unwrap();
    assert!(kvmctl_netfw::vm_apply_guarded("bad name!", &rules).is_err());
    assert_eq!(flag(), "0", "a failed write leaves no route_localnet without its guard");
    // A table that is written: then, and only then, the flag is on, with the guard in place.
    let t = Table(format!("kt_lo_{}", std::process::id()));
    kvmctl_netfw::vm_apply_guarded(&t.0, &rules).unwrap();
    assert_eq!(flag(), "1");
    let listing = nft(&format!("list table inet {}", t.0));
    assert!(listing.contains("127.0.0.0/8"), "the loopback guard is in the table:\n{listing}");
}
