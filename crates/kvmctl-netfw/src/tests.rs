//! Rendering and parsing the table, without nft.

use super::*;

fn vm(id: &str, ip: [u8; 4], fwds: &[(u16, u16)], nat: bool) -> VmRules {
    VmRules {
        vm: id.into(),
        guest_ip: ip.into(),
        bridge: "virbr7".into(),
        nat_subnet: nat.then_some(([192, 168, 100, 0].into(), 24)),
        forwards: fwds.iter().map(|(h, g)| Forward { protocol: Protocol::Tcp, host_port: *h, guest_port: *g }).collect(),
    }
}

#[test]
fn comments_round_trip_and_fit_nftables_limit() {
    let v = vm("0f4c2b9e-8a1d-4c3e-9b7a-1234567890ab", [192, 168, 100, 200], &[(65535, 65535)], true);
    let c = comment(&v, Some(&v.forwards[0]));
    assert!(c.len() <= 128, "{} bytes: {c}", c.len());
    let (back, fwd) = comment_parse(&c).unwrap();
    assert_eq!(back.vm, v.key());
    assert_eq!((back.guest_ip, back.bridge.as_str(), back.nat_subnet), (v.guest_ip, "virbr7", v.nat_subnet));
    assert_eq!(fwd, Some(v.forwards[0]));
    assert!(comment_parse("guard: loopback source off loopback").is_none());
    assert!(comment_parse("somebody else's rule").is_none());
}

#[test]
fn the_rendered_table_reads_back_as_the_same_set() {
    let vms = vec![vm("a-1", [10, 0, 0, 5], &[(2201, 22), (8080, 80)], true), vm("b-2", [10, 0, 0, 6], &[(2202, 22)], false)];
    let doc = serde_json::to_value(table_render("kvmctl", &vms)).unwrap();
    // What `nft -j list` prints has the same rule objects (without the command wrapper).
    let listed: Vec<serde_json::Value> = doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("add").and_then(|a| a.get("rule")).map(|r| serde_json::json!({ "rule": r })))
        .collect();
    let back = table_parse(&serde_json::json!({ "nftables": listed }).to_string()).unwrap();
    let want: BTreeMap<String, VmRules> = vms.iter().map(|v| (v.key(), v.normalized())).collect();
    assert_eq!(back, want);
}

#[test]
fn a_vm_without_forwards_or_nat_has_no_rules() {
    let doc = serde_json::to_string(&table_render("kvmctl", &[vm("c", [10, 0, 0, 7], &[], false)])).unwrap();
    assert!(!doc.contains("vm=c"), "{doc}");
}

#[test]
fn interface_names_are_checked() {
    assert!(valid_ifname("virbr0") && valid_ifname("kvt0"));
    assert!(!valid_ifname("") && !valid_ifname("a b") && !valid_ifname("../../x") && !valid_ifname("sixteen-chars-xx"));
}
