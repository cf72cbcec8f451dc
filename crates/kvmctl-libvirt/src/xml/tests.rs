//! Parser and builder tests.
use super::*;
use kvmctl_types::VmId;
use std::collections::HashSet;

const NET: &str = "<network><name>n</name><forward mode='nat'/><ip address='192.168.122.1' netmask='255.255.255.0'>\
        <dhcp><range start='192.168.122.2' end='192.168.122.5'/><host mac='52:54:00:AA:00:01' name='a' ip='192.168.122.2'/></dhcp></ip>\
        <ip family='ipv6' address='fd00::1' prefix='64'><dhcp><range start='fd00::10' end='fd00::20'/></dhcp></ip></network>";

#[test]
fn reads_range_and_hosts_and_picks_a_free_address() {
    let info = network_dhcp_info(NET).unwrap();
    assert_eq!((info.range_start.to_string(), info.range_end.to_string()), ("192.168.122.2".into(), "192.168.122.5".into()));
    assert_eq!(info.hosts, vec![("52:54:00:aa:00:01".to_string(), "192.168.122.2".parse().unwrap())]);
    let taken: HashSet<_> = ["192.168.122.3".parse().unwrap()].into();
    assert_eq!(dhcp_pick(&info, &taken), Some("192.168.122.4".parse().unwrap()));
    let full: HashSet<_> = ["192.168.122.3", "192.168.122.4", "192.168.122.5"].iter().map(|i| i.parse().unwrap()).collect();
    assert_eq!(dhcp_pick(&info, &full), None);
}

#[test]
fn network_shape_is_read() {
    let i = network_info(NET);
    assert_eq!(i.forward_mode.as_deref(), Some("nat"));
    assert_eq!(i.ipv4, Some(("192.168.122.1".parse().unwrap(), 24)));
    let i = network_info("<network><name>t</name><bridge name='kvt0' stp='off'/><ip address='10.77.0.1' prefix='16'/></network>");
    assert_eq!((i.bridge.as_deref(), i.forward_mode, i.ipv4), (Some("kvt0"), None, Some(("10.77.0.1".parse().unwrap(), 16))));
}

fn lab() -> ManagedNetworkSpec {
    ManagedNetworkSpec {
        name: "lab".into(),
        nat: true,
        address: "192.168.100.1".parse().unwrap(),
        prefix: 24,
        dhcp_start: "192.168.100.2".parse().unwrap(),
        dhcp_end: "192.168.100.254".parse().unwrap(),
    }
}

#[test]
fn managed_networks_route_or_isolate() {
    let mut spec = lab();
    let x = managed_network_xml(&spec).unwrap();
    assert!(x.contains(r#"<forward mode="route"/>"#) && x.contains(r#"prefix="24""#), "{x}");
    assert_eq!(network_info(&x).forward_mode.as_deref(), Some("route"));
    spec.nat = false;
    assert!(!managed_network_xml(&spec).unwrap().contains("<forward"));
}

#[test]
fn metadata_round_trips_through_the_domain_xml() {
    let m = Metadata {
        vm_id: VmId::new(),
        owner: "alice".into(),
        plan: Some("small".into()),
        installation: Some("0f4c2a".into()),
        net: Some(NetMetadata {
            ip: "192.168.100.7".parse().unwrap(),
            bridge: "virbr3".into(),
            nat_subnet: Some(("192.168.100.0".parse().unwrap(), 24)),
            forwards: vec![
                ForwardMetadata { protocol: "tcp".into(), host_port: 2201, guest_port: 22 },
                ForwardMetadata { protocol: "udp".into(), host_port: 8053, guest_port: 53 },
            ],
        }),
    };
    // As written at define: inside <metadata>, with its own prefix declaration.
    let mut d = Doc::new();
    metadata_element(&mut d, &m, true).unwrap();
    let domain = format!("<domain type='qemu'><name>x</name><metadata>{}</metadata><devices/></domain>", d.finish());
    assert_eq!(metadata_parse(&domain), Some(m.clone()));
    // As libvirt prints it after virDomainSetMetadata: the root bound, children bare.
    let bare = metadata_xml(&m).unwrap();
    assert!(!bare.contains("kvmctl:") && !bare.contains("xmlns"), "{bare}");
    let set = format!(
        "<domain><metadata>{}</metadata></domain>",
        bare.replacen("<vm>", &format!("<kvmctl:vm xmlns:kvmctl=\"{METADATA_NS}\">"), 1).replace("</vm>", "</kvmctl:vm>")
    );
    assert_eq!(metadata_parse(&set), Some(m.clone()));
    // Bare elements outside our namespace are not ours.
    assert_eq!(metadata_parse(&format!("<domain><metadata>{bare}</metadata></domain>")), None);
    // Another prefix for the same namespace is the same metadata.
    let other = domain.replace("kvmctl:", "k:").replace("xmlns:kvmctl", "xmlns:k");
    assert_eq!(metadata_parse(&other), Some(m));
    assert_eq!(metadata_parse("<domain><name>not-ours</name></domain>"), None);
}

#[test]
fn no_dhcp_no_info() {
    assert_eq!(network_dhcp_info("<network><name>br</name><forward mode='bridge'/><bridge name='br0'/></network>"), None);
}

#[test]
fn host_entries_come_from_the_xml_writer() {
    assert_eq!(
        dhcp_host_xml("52:54:00:01:02:03", "10.0.0.9".parse().unwrap(), "web-1").unwrap(),
        "<host mac=\"52:54:00:01:02:03\" name=\"web-1\" ip=\"10.0.0.9\"/>\n"
    );
    assert!(dhcp_host_xml("52:54:00:01:02:03", "10.0.0.9".parse().unwrap(), "a\u{1}b").is_err(), "control characters are refused");
}

#[test]
fn domain_type_and_dhcp_host_names_are_read() {
    assert_eq!(domain_type_of("<domain type='kvm'><name>a</name></domain>"), Some(DomainType::Kvm));
    assert_eq!(domain_type_of("<?xml version='1.0'?>\n<domain type=\"qemu\"/>"), Some(DomainType::Qemu));
    // A `type='kvm'` further in (a disk, a comment) is not the domain's.
    assert_eq!(domain_type_of("<domain type='xen'><devices><x type='kvm'/></devices></domain>"), None);
    assert_eq!(domain_type_of("<network type='kvm'/>"), None);
    let hosts = network_dhcp_hosts(NET);
    assert_eq!(hosts, vec![DhcpHost { mac: "52:54:00:aa:00:01".into(), name: "a".into(), ip: "192.168.122.2".into() }]);
    assert!(network_dhcp_hosts("<network><ip><host name='x'/></ip></network>").is_empty());
    let entry = dhcp_host_entry_xml(&hosts[0]).unwrap();
    assert_eq!(network_dhcp_hosts(&format!("<dhcp>{entry}</dhcp>")), hosts);
    let d = domain_devices(
        "<domain><devices><disk type='file'><source file='/p/a b.qcow2'/><target dev='vdc' bus='virtio'/></disk><interface type='network'>\
         <mac address='52:54:00:AB:CD:EF'/><source network='default'/></interface><hostdev><source><address/></source></hostdev></devices></domain>",
    );
    assert_eq!(
        d,
        DomainDevices { macs: vec!["52:54:00:ab:cd:ef".into()], disk_files: vec!["/p/a b.qcow2".into()], disk_targets: vec!["vdc".into()] }
    );
}

#[test]
fn domain_identity_is_read() {
    let xml = "<domain type='qemu'><name>web&amp;1</name><uuid> 0c1d </uuid><devices><disk><name>no</name></disk></devices></domain>";
    assert_eq!(domain_identity(xml), (Some("web&1".into()), Some("0c1d".into())));
    assert_eq!(domain_identity("<domain/>"), (None, None));
}

#[test]
fn nvram_path_is_read_from_os_only() {
    let uefi = "<domain type='qemu'><name>a</name><os><type>hvm</type><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>\
                <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/a_VARS.fd</nvram></os></domain>";
    assert_eq!(domain_nvram(uefi), Some(std::path::PathBuf::from("/var/lib/libvirt/qemu/nvram/a_VARS.fd")));
    assert_eq!(domain_nvram("<domain><name>b</name><os><type>hvm</type></os></domain>"), None);
    // An <nvram> elsewhere (a guest's metadata) is not the domain's.
    assert_eq!(domain_nvram("<domain><metadata><nvram>/etc/shadow</nvram></metadata><os/></domain>"), None);
    assert_eq!(domain_nvram("<domain><os><nvram></nvram></os></domain>"), None);
}

#[test]
fn a_nic_can_start_with_its_link_down() {
    let mut nic = Nic { source: NicSource::Network("n".into()), mac: Some("52:54:00:aa:00:01".into()), filter: None, link_down: true };
    assert!(interface_xml(&nic).unwrap().contains(r#"<link state="down"/>"#));
    nic.link_down = false;
    assert!(!interface_xml(&nic).unwrap().contains("<link"));
}

#[test]
fn a_connected_guest_agent_is_read_from_the_live_xml() {
    let live = |state: &str| {
        format!(
            "<domain><devices><channel type='unix'><source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'{state}/>\
             </channel><channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0' state='connected'/></channel></devices></domain>"
        )
    };
    assert!(guest_agent_connected(&live(" state='connected'")));
    assert!(!guest_agent_connected(&live(" state='disconnected'")));
    assert!(!guest_agent_connected(&live("")));
    // Only a device's channel counts, not one a guest could name in metadata.
    assert!(!guest_agent_connected(
        "<domain><metadata><channel><target name='org.qemu.guest_agent.0' state='connected'/></channel></metadata><devices/></domain>"
    ));
}

#[test]
fn addresses_reserved_ahead_are_added_found_and_taken_out() {
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
    let ip_of = std::net::Ipv4Addr::from;
    assert_eq!(premade_mac(ip("10.77.0.100")), "52:4b:0a:4d:00:64");
    assert_eq!(network_reserved_ahead(NET), Some(false));
    let full = network_reserve_ahead(NET).unwrap().unwrap();
    assert_eq!(network_reserved_ahead(&full), Some(true));
    assert!(network_reserve_ahead(&full).unwrap().is_none(), "nothing more to add");
    // The upper half (.4, .5) is reserved ahead; .2 keeps its own entry, .3 stays dynamic;
    // the IPv6 range is left alone.
    let hosts = network_dhcp_hosts(&full);
    assert_eq!(hosts.len(), 3, "{full}");
    assert_eq!(hosts.iter().filter(|h| is_premade(h)).map(|h| h.ip.as_str()).collect::<Vec<_>>(), ["192.168.122.4", "192.168.122.5"]);
    assert!(full.contains("fd00::10"), "{full}");
    // A pick takes an address reserved ahead first, then one no entry holds; its MAC is found.
    let info = network_dhcp_info(&full).unwrap();
    assert_eq!(dhcp_pick(&info, &HashSet::new()), Some(ip("192.168.122.4")));
    let taken: HashSet<_> = [ip("192.168.122.4"), ip("192.168.122.5")].into();
    assert_eq!(dhcp_pick(&info, &taken), Some(ip("192.168.122.3")));
    assert_eq!(premade_mac_in(&info, ip("192.168.122.4")).as_deref(), Some("52:4b:c0:a8:7a:04"));
    assert_eq!(premade_mac_in(&info, ip("192.168.122.2")), None, "a VM's own entry is not reserved ahead");
    assert_eq!(premade_mac_in(&info, ip("192.168.122.3")), None);
    // Taken out again: the document is as before but for whitespace.
    let back = network_unreserve_ahead(&full).unwrap().unwrap();
    assert_eq!(network_dhcp_hosts(&back), network_dhcp_hosts(NET));
    assert!(network_unreserve_ahead(NET).unwrap().is_none());
    // A named entry with a MAC of that shape is somebody's, not reserved ahead.
    assert!(!is_premade(&DhcpHost { mac: premade_mac(ip("10.0.0.1")), name: "web".into(), ip: "10.0.0.1".into() }));
    // Of a large range, the last 1,024 addresses; of libvirt's default, .128-.254.
    let big = "<network><ip address='10.0.0.1' prefix='16'><dhcp><range start='10.0.0.2' end='10.0.255.254'/></dhcp></ip></network>";
    let big = network_reserve_ahead(big).unwrap().unwrap();
    assert_eq!(network_dhcp_hosts(&big).len(), 1024);
    assert_eq!(network_dhcp_hosts(&big)[0].ip, "10.0.251.255");
    let r = reserve_ahead_range(ip("192.168.122.2"), ip("192.168.122.254"));
    assert_eq!((ip_of(*r.start()), ip_of(*r.end())), (ip("192.168.122.128"), ip("192.168.122.254")));
    assert_eq!(reserve_ahead_range(ip("10.77.0.100"), ip("10.77.0.250")).count(), 76);
    assert_eq!(reserve_ahead_range(ip("10.0.0.9"), ip("10.0.0.1")).count(), 0);
    assert_eq!(network_reserved_ahead("<network><name>x</name></network>"), None);
    assert_eq!(network_connections("<network connections='3'><name>n</name></network>"), 3);
    assert_eq!(network_connections(NET), 0);
}

#[test]
fn networks_kvmctl_defines_are_reserved_ahead() {
    let spec = lab();
    assert_eq!(network_reserved_ahead(&managed_network_xml(&spec).unwrap()), Some(true));
    assert_eq!(network_reserved_ahead(&nat_network_xml(&NatNetworkSpec::libvirt_default()).unwrap()), Some(true));
}

#[test]
fn libvirts_default_network_file_is_reserved_ahead() {
    let shipped = "<network>\n  <name>default</name>\n  <bridge name='virbr0'/>\n  <forward/>\n  <ip address='192.168.122.1' netmask='255.255.255.0'>\n    <dhcp>\n      <range start='192.168.122.2' end='192.168.122.254'/>\n    </dhcp>\n  </ip>\n</network>\n";
    let x = network_reserve_ahead(shipped).unwrap().expect("entries to add");
    assert_eq!(network_reserved_ahead(&x), Some(true), "{x}");
    assert_eq!(network_dhcp_hosts(&x).len(), 127);
}
