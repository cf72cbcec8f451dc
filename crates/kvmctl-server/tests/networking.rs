//! Networks and port forwards against the real libvirtd and nftables, inside the test
//! namespace: forwards reach the guests they belong to (SSH and the tiny guest's HTTP
//! server) from loopback and from a client in a namespace of its own, follow the VM through
//! stop and start, are repaired after drift, are applied by the libvirt hook without the
//! daemon, and bad input changes nothing.

use kvmctl_client::{Client, ClientError};
use kvmctl_libvirt::Node;
use kvmctl_testkit::daemon::{self, Sweep};
use kvmctl_types::api::{ErrorBody, ForwardCreateRequest, NetworkCreateRequest, VmCreateRequest, VmStopRequest};
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

fn api_err(e: ClientError) -> (u16, ErrorBody) {
    match e {
        ClientError::Api { status, body } => (status, body),
        other => panic!("expected an API error, got {other}"),
    }
}

fn sh(cmd: &str) -> String {
    let out = Command::new("bash").args(["-c", cmd]).output().unwrap();
    assert!(out.status.success(), "{cmd} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One HTTP GET of `/` at `addr`; the response, or why there is none.
fn http_get(addr: &str) -> Result<String, String> {
    let a: std::net::SocketAddr = addr.parse().unwrap();
    let mut s = std::net::TcpStream::connect_timeout(&a, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: kvmctl\r\n\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Polls `f` until it returns `Ok`; fails with the last error.
async fn eventually<T>(what: &str, tries: u32, mut f: impl FnMut() -> Result<T, String>) -> T {
    let mut last = String::new();
    for _ in 0..tries {
        match f() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{what} never happened; last: {last}");
}

fn range(r: &str) -> (u16, u16) {
    let (a, b) = r.split_once('-').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

fn table_has(vm: &kvmctl_types::api::Vm) -> Option<kvmctl_netfw::VmRules> {
    kvmctl_netfw::table_read(kvmctl_netfw::TABLE).unwrap().remove(&kvmctl_netfw::vm_key(&vm.id.to_string()))
}

#[tokio::test]
async fn forwards_reach_their_own_guest_and_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-fwa", "kt-fwb"], &["kt-fw-img"]);
    let cfg = daemon::config(d);
    let (ssh_pool, general) = (range(&cfg.ssh_port_range), range(&cfg.general_port_range));
    let (server, client) = daemon::start(&cfg).await;
    daemon::tiny_image(&client, d, "kt-fw-img").await;
    let (key, public) = kvmctl_testkit::keypair(d);

    // Every VM gets an SSH forward from the SSH pool, the lowest free port first.
    let a = client.vm_create(&daemon::tiny_vm("kt-fwa", "kt-fw-img", vec![public.clone()])).await.unwrap();
    let b = client.vm_create(&daemon::tiny_vm("kt-fwb", "kt-fw-img", vec![public])).await.unwrap();
    let ssh_of = |vm: &kvmctl_types::api::Vm| {
        assert_eq!(vm.forwards.len(), 1, "{vm:?}");
        let f = &vm.forwards[0];
        assert_eq!((f.protocol.as_str(), f.guest_port, f.pool.as_str()), ("tcp", 22, "ssh"));
        f.host_port
    };
    let (pa, pb) = (ssh_of(&a), ssh_of(&b));
    assert_eq!((pa, pb), (ssh_pool.0, ssh_pool.0 + 1));
    client.vm_wait("kt-fwa", "ssh", 120).await.unwrap();
    client.vm_wait("kt-fwb", "ssh", 120).await.unwrap();

    // SSH through each host port lands on that VM and no other.
    for (name, port) in [("kt-fwa", pa), ("kt-fwb", pb)] {
        let host = eventually(&format!("SSH to {name} through 127.0.0.1:{port}"), 20, || {
            kvmctl_testkit::ssh_at(&key, "kvmctl", "127.0.0.1", port, "hostname")
        })
        .await;
        assert_eq!(host.trim(), name);
    }

    // The guests' HTTP servers through forwards from the general pool.
    let fa = client.forward_create("kt-fwa", &ForwardCreateRequest { guest_port: 80, ..Default::default() }).await.unwrap();
    let fb = client.forward_create("kt-fwb", &ForwardCreateRequest { guest_port: 80, ..Default::default() }).await.unwrap();
    assert_eq!((fa.pool.as_str(), fa.host_port, fb.host_port), ("general", general.0, general.0 + 1));
    for (name, port) in [("kt-fwa", fa.host_port), ("kt-fwb", fb.host_port)] {
        let page = eventually("HTTP through the forward", 10, || http_get(&format!("127.0.0.1:{port}"))).await;
        assert!(page.contains(&format!("kvmctl tiny guest {name}")), "{port} reaches {name}: {page}");
    }
    let shown = client.vm_get("kt-fwa").await.unwrap();
    assert_eq!(shown.forwards.iter().map(|f| (f.host_port, f.guest_port)).collect::<Vec<_>>(), [(pa, 22), (fa.host_port, 80)]);
    assert_eq!(client.forward_list("kt-fwa").await.unwrap(), shown.forwards);
    let rules = table_has(&a).expect("kt-fwa's rules are in table inet kvmctl");
    assert_eq!(rules.forwards.len(), 2);
    assert_eq!(rules.guest_ip.to_string(), a.ip.clone().unwrap());
    // ... and in the domain's metadata, where the libvirt hook reads them.
    let xml = sweep.node_xml("kt-fwa");
    assert!(xml.contains(&format!("host=\"{}\"", fa.host_port)) || xml.contains(&format!("host='{}'", fa.host_port)), "{xml}");

    // Drift: an entry removed by hand comes back with the reconciler's next pass.
    kvmctl_netfw::vm_remove(kvmctl_netfw::TABLE, &a.id.to_string()).unwrap();
    eventually("the reconciler to repair kt-fwa's rules", 20, || table_has(&a).ok_or("not yet".to_string())).await;
    let page = eventually("HTTP after the repair", 10, || http_get(&format!("127.0.0.1:{}", fa.host_port))).await;
    assert!(page.contains("kt-fwa"));

    // A chosen host port, then removed: nothing answers on it any more.
    let chosen = general.0 + 5;
    let fx = client
        .forward_create("kt-fwa", &ForwardCreateRequest { guest_port: 80, host_port: Some(chosen), ..Default::default() })
        .await
        .unwrap();
    assert_eq!((fx.host_port, fx.pool.as_str()), (chosen, "general"));
    assert!(http_get(&format!("127.0.0.1:{chosen}")).unwrap().contains("kt-fwa"));
    client.forward_delete("kt-fwa", "tcp", chosen).await.unwrap();
    assert!(http_get(&format!("127.0.0.1:{chosen}")).is_err(), "a removed forward still answers");
    assert_eq!(api_err(client.forward_delete("kt-fwa", "tcp", chosen).await.unwrap_err()).0, 404);

    // Stopping a VM removes its rules; starting it restores them.
    client.vm_stop("kt-fwb", &VmStopRequest { force: true, timeout_seconds: None }).await.unwrap();
    assert!(table_has(&b).is_none(), "a stopped VM keeps no rules");
    assert_eq!(client.vm_get("kt-fwb").await.unwrap().forwards.len(), 2, "the forwards stay recorded");
    client.vm_start("kt-fwb").await.unwrap();
    assert_eq!(table_has(&b).expect("rules back on start").forwards.len(), 2);
    let page = eventually("HTTP after the restart", 60, || http_get(&format!("127.0.0.1:{}", fb.host_port))).await;
    assert!(page.contains("kt-fwb"));

    // Deleting a VM frees its ports: the next VM gets the lowest again.
    client.vm_delete("kt-fwa", false).await.unwrap();
    assert!(table_has(&a).is_none());
    let pools = client.port_pool_list().await.unwrap();
    let used = |n: &str| pools.iter().find(|p| p.name == n).unwrap().used;
    assert_eq!((used("ssh"), used("general"), used("vnc")), (1, 1, 0), "{pools:?}");
    let again = client.vm_create(&VmCreateRequest { no_start: true, ..daemon::tiny_vm("kt-fwa", "kt-fw-img", vec![]) }).await.unwrap();
    assert_eq!(again.forwards[0].host_port, pa, "the freed port is handed out again");
    client.vm_delete("kt-fwa", false).await.unwrap();
    client.vm_delete("kt-fwb", false).await.unwrap();
    assert!(table_has(&b).is_none());
    client.image_delete("kt-fw-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

#[tokio::test]
async fn the_libvirt_hook_applies_forwards_without_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-hook"], &["kt-hook-img"]);
    let cfg = daemon::config(d);
    let (server, client) = daemon::start(&cfg).await;
    daemon::tiny_image(&client, d, "kt-hook-img").await;
    let (key, public) = kvmctl_testkit::keypair(d);
    let vm =
        client.vm_create(&VmCreateRequest { no_start: true, ..daemon::tiny_vm("kt-hook", "kt-hook-img", vec![public]) }).await.unwrap();
    let port = vm.forwards[0].host_port;
    server.stop().await;

    // No daemon: libvirt starts the domain, and its hook writes the rules from the metadata.
    sweep.node.domain_start("kt-hook").unwrap();
    let rules = eventually("the hook to apply kt-hook's rules", 20, || table_has(&vm).ok_or("not yet".to_string())).await;
    assert_eq!(rules.forwards.iter().map(|f| (f.host_port, f.guest_port)).collect::<Vec<_>>(), [(port, 22)]);
    let host =
        eventually("SSH through the hook's forward", 180, || kvmctl_testkit::ssh_at(&key, "kvmctl", "127.0.0.1", port, "hostname")).await;
    assert_eq!(host.trim(), "kt-hook");
    sweep.node.domain_destroy("kt-hook").unwrap();
    eventually("the hook to remove kt-hook's rules", 20, || if table_has(&vm).is_none() { Ok(()) } else { Err("still there".into()) })
        .await;

    let (server, client) = daemon::start(&cfg).await;
    client.vm_delete("kt-hook", false).await.unwrap();
    client.image_delete("kt-hook-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

/// A client namespace joined to the test namespace by a veth pair; removed on drop.
struct ClientNs {
    ns: String,
    host_if: String,
}

impl ClientNs {
    fn new(tag: u32, host_ip: &str, client_ip: &str) -> Self {
        let c = ClientNs { ns: format!("kt-cl-{tag}"), host_if: format!("kt-vh-{tag}") };
        let peer = format!("kt-vc-{tag}");
        sh(&format!(
            "ip netns add {ns} && ip link add {h} type veth peer name {peer} && ip link set {peer} netns {ns} && \
             ip addr add {host_ip}/30 dev {h} && ip link set {h} up && \
             ip netns exec {ns} ip addr add {client_ip}/30 dev {peer} && ip netns exec {ns} ip link set {peer} up && \
             ip netns exec {ns} ip link set lo up",
            ns = c.ns,
            h = c.host_if
        ));
        c
    }
}

impl Drop for ClientNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[tokio::test]
async fn a_managed_nat_network_serves_forwards_and_masquerades() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-natvm"], &["kt-nat-img"]).with_networks(&["kt-nat"]);
    let cfg = daemon::config(d);
    let (server, client) = daemon::start(&cfg).await;
    let tag = std::process::id() % 200;
    let subnet = format!("10.{}.{}.0/24", 150 + tag % 50, tag);
    let before = client.network_list().await.unwrap();

    // Bad input first: each is refused and makes nothing.
    let req = |s: &str| NetworkCreateRequest { name: "kt-nat".into(), subnet: s.into(), ..Default::default() };
    for (bad, field, says) in [
        (req("10.77.0.0/16"), "subnet", "overlaps network"),
        (req("10.150.0.9/24"), "subnet", "did you mean"),
        (req("10.150.0.0/31"), "subnet", "/8 to /29"),
        (NetworkCreateRequest { dhcp_range: Some("10.9.9.2-10.9.9.9".into()), ..req(&subnet) }, "dhcp_range", "must lie within"),
        (NetworkCreateRequest { name: "Bad_Name".into(), ..req(&subnet) }, "name", ""),
    ] {
        let (s, body) = api_err(client.network_create(&bad).await.unwrap_err());
        assert!(s == 400 && body.field.as_deref() == Some(field) && body.message.contains(says), "{bad:?}: {s} {body:?}");
    }
    assert_eq!(client.network_list().await.unwrap(), before, "refused creates changed nothing");

    let net = client.network_create(&req(&subnet)).await.unwrap();
    assert!(net.managed && net.mode == "nat" && net.state == "active", "{net:?}");
    let bridge = net.bridge.clone().expect("libvirt named a bridge");
    assert_eq!(api_err(client.network_create(&req(&subnet.replace(".0/24", ".0/25"))).await.unwrap_err()).0, 409, "the name is taken");
    let listed = client.network_list().await.unwrap();
    assert!(listed.iter().any(|n| n.name == kvmctl_testkit::env("KVMCTL_TEST_NETWORK") && !n.managed), "{listed:?}");
    assert!(
        sweep.node.network_xml("kt-nat").unwrap().contains("mode=\"route\"")
            || sweep.node.network_xml("kt-nat").unwrap().contains("mode='route'")
    );

    daemon::tiny_image(&client, d, "kt-nat-img").await;
    let (key, public) = kvmctl_testkit::keypair(d);
    let vm = client
        .vm_create(&VmCreateRequest { network: Some("kt-nat".into()), ..daemon::tiny_vm("kt-natvm", "kt-nat-img", vec![public]) })
        .await
        .unwrap();
    let prefix = subnet.trim_end_matches("0/24");
    assert!(vm.ip.as_deref().unwrap_or("").starts_with(prefix), "{vm:?}");
    // A network kvmctl made has the upper half of its range reserved ahead (ADR 0015): the
    // VM takes an address there with its entry's MAC, and reaches SSH below with it.
    let ip: std::net::Ipv4Addr = vm.ip.as_deref().unwrap().parse().unwrap();
    assert_eq!(vm.mac, kvmctl_libvirt::xml::premade_mac(ip), "{vm:?}");
    assert!(ip.octets()[3] >= 128, "an address of the upper half: {ip}");
    let rules = table_has(&vm).expect("rules for the VM");
    assert_eq!((rules.bridge.as_str(), rules.nat_subnet.map(|s| s.1)), (bridge.as_str(), Some(24)));
    client.vm_wait("kt-natvm", "ssh", 120).await.unwrap();
    let (s, body) = api_err(client.network_delete("kt-nat").await.unwrap_err());
    assert!(s == 409 && body.message.contains("kt-natvm"), "{body:?}");

    // A client in a namespace of its own reaches the guest through the host's address.
    let (host_ip, client_ip) = (format!("172.30.{tag}.1"), format!("172.30.{tag}.2"));
    let cl = ClientNs::new(std::process::id(), &host_ip, &client_ip);
    let port = vm.forwards[0].host_port;
    let ssh_cmd = format!(
        "ip netns exec {} ssh -i {} -p {port} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
         -o ConnectTimeout=10 -o LogLevel=ERROR kvmctl@{host_ip} hostname",
        cl.ns,
        key.display()
    );
    let host = eventually("SSH from the client namespace", 20, || {
        let out = Command::new("bash").args(["-c", &ssh_cmd]).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await;
    assert_eq!(host.trim(), "kt-natvm");

    // The guest's own connections leave masqueraded behind the host's address.
    let mut listener = Command::new("ip")
        .args(["netns", "exec", &cl.ns, "timeout", "60", "python3", "-c"])
        .arg(format!(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{client_ip}',9999))\ns.listen(1)\nprint('listening',flush=True)\nc,a=s.accept()\nprint(a[0],flush=True)"
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(listener.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "listening");
    let sent = client
        .vm_exec(
            "kt-natvm",
            &kvmctl_types::api::VmExecRequest { command: format!("echo hi | nc {client_ip} 9999"), timeout_seconds: Some(30) },
        )
        .await
        .unwrap();
    assert_eq!(sent.exit_status, 0, "{sent:?}");
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), host_ip, "the client sees the host's address, not the guest's");
    assert!(listener.wait().unwrap().success());

    client.vm_delete("kt-natvm", false).await.unwrap();
    assert!(table_has(&vm).is_none());
    client.network_delete("kt-nat").await.unwrap();
    assert!(sweep.node.network_state("kt-nat").unwrap().is_none(), "the libvirt network is gone");
    assert_eq!(api_err(client.network_delete("kt-nat").await.unwrap_err()).0, 404);
    let (s, body) = api_err(client.network_delete(&kvmctl_testkit::env("KVMCTL_TEST_NETWORK")).await.unwrap_err());
    assert!(s == 409 && body.message.contains("not made by kvmctl"), "{body:?}");
    client.image_delete("kt-nat-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    drop(cl);
    server.stop().await;
}

#[tokio::test]
async fn bad_forwards_and_attachments_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-bad1", "kt-bad2", "kt-bad3"], &["kt-bad-img"]);
    let mut cfg = daemon::config(d);
    let ssh_pool = range(&cfg.ssh_port_range);
    cfg.ssh_port_range = format!("{0}-{0}", ssh_pool.0);
    cfg.forwards_per_vm = 3;
    let (server, client) = daemon::start(&cfg).await;
    daemon::tiny_image(&client, d, "kt-bad-img").await;
    let vm = |name: &str| VmCreateRequest { no_start: true, ..daemon::tiny_vm(name, "kt-bad-img", vec![]) };

    // The SSH pool has one port: the second VM is refused, naming the pool and the setting.
    let one = client.vm_create(&vm("kt-bad1")).await.unwrap();
    assert_eq!(one.forwards[0].host_port, ssh_pool.0);
    let (s, body) = api_err(client.vm_create(&vm("kt-bad2")).await.unwrap_err());
    assert!(s == 503 && body.message.contains("pool ssh") && body.message.contains("ssh_port_range"), "{body:?}");
    assert_eq!(client.vm_list().await.unwrap().len(), 1, "the refused VM left no record");
    assert!(sweep.leftovers().iter().all(|l| !l.contains("kt-bad2")), "{:?}", sweep.leftovers());
    let two = client.vm_create(&VmCreateRequest { no_ssh_forward: true, ..vm("kt-bad2") }).await.unwrap();
    assert!(two.forwards.is_empty());
    client.vm_delete("kt-bad2", false).await.unwrap();

    // Forward requests that are wrong, each naming its field; none leaves a forward.
    let general = range(&cfg.general_port_range);
    let f = |guest_port: u16, host_port: Option<u16>, pool: Option<&str>, protocol: Option<&str>| ForwardCreateRequest {
        guest_port,
        host_port,
        pool: pool.map(Into::into),
        protocol: protocol.map(Into::into),
    };
    for (req, status, field) in [
        (f(80, Some(80), None, None), 400, Some("host_port")),
        (f(80, Some(ssh_pool.0), None, None), 409, None),
        (f(80, Some(general.0), Some("ssh"), None), 400, Some("host_port")),
        (f(80, None, Some("nope"), None), 400, Some("pool")),
        (f(80, None, Some("vnc"), None), 400, Some("pool")),
        (f(80, None, None, Some("icmp")), 400, Some("protocol")),
        (f(0, None, None, None), 400, Some("guest_port")),
    ] {
        let (s, body) = api_err(client.forward_create("kt-bad1", &req).await.unwrap_err());
        assert!(s == status && body.field.as_deref() == field, "{req:?}: {s} {body:?}");
    }
    assert_eq!(client.forward_list("kt-bad1").await.unwrap().len(), 1);
    assert_eq!(api_err(client.forward_create("kt-nobody", &f(80, None, None, None)).await.unwrap_err()).0, 404);
    // At most forwards_per_vm (3) forwards.
    for _ in 0..2 {
        client.forward_create("kt-bad1", &f(80, None, None, None)).await.unwrap();
    }
    let (s, body) = api_err(client.forward_create("kt-bad1", &f(81, None, None, None)).await.unwrap_err());
    assert!(s == 503 && body.message.contains("forwards_per_vm"), "{body:?}");
    assert_eq!(api_err(client.forward_delete("kt-bad1", "tcp", general.1).await.unwrap_err()).0, 404);
    assert_eq!(api_err(client.forward_delete("kt-bad1", "sctp", general.0).await.unwrap_err()).0, 400);

    // Attachments that do not exist, or are not what they claim.
    let tag = std::process::id() % 100_000;
    for (network, says) in [
        (format!("bridge:kt-nobr{tag}"), "no bridge"),
        ("bridge:lo".to_string(), "not a bridge"),
        ("macvtap:kt-nonic".to_string(), "no network interface"),
        ("no-such-net".to_string(), "kvmctl network list"),
    ] {
        let (s, body) = api_err(client.vm_create(&VmCreateRequest { network: Some(network.clone()), ..vm("kt-bad3") }).await.unwrap_err());
        assert!(s == 400 && body.field.as_deref() == Some("network") && body.message.contains(says), "{network}: {body:?}");
    }
    assert_eq!(client.vm_list().await.unwrap().len(), 1);

    // A real host bridge: the VM is attached to it, with no reserved address and no forward.
    let br = format!("kt-br{tag}");
    sh(&format!("ip link add {br} type bridge"));
    let bridged = client.vm_create(&VmCreateRequest { network: Some(format!("bridge:{br}")), ..vm("kt-bad3") }).await;
    let _ = Command::new("ip").args(["link", "del", &br]).status();
    let bridged = bridged.unwrap();
    assert!(bridged.forwards.is_empty() && bridged.ip.is_none(), "{bridged:?}");
    let xml = sweep.node_xml("kt-bad3");
    assert!(xml.contains("<interface type='bridge'>") && xml.contains(&format!("bridge='{br}'")), "{xml}");
    let (s, body) = api_err(client.forward_create("kt-bad3", &f(80, None, None, None)).await.unwrap_err());
    assert!(s == 400 && body.message.contains("bridge:"), "{body:?}");

    for n in ["kt-bad1", "kt-bad3"] {
        client.vm_delete(n, false).await.unwrap();
    }
    assert!(client.port_pool_list().await.unwrap().iter().all(|p| p.used == 0));
    client.image_delete("kt-bad-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

#[tokio::test]
async fn concurrent_creates_never_share_a_port() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names: Vec<String> = (0..24).map(|i| format!("kt-race-{i}")).collect();
    let sweep = Sweep::new(&names.iter().map(String::as_str).collect::<Vec<_>>(), &["kt-race-img"]);
    let cfg = daemon::config(d);
    let ssh_pool = range(&cfg.ssh_port_range);
    let size = (ssh_pool.1 - ssh_pool.0 + 1) as usize;
    let (server, client) = daemon::start(&cfg).await;
    daemon::tiny_image(&client, d, "kt-race-img").await;
    // More creates than the SSH pool has ports, all at once: each VM needs one.
    let tasks: Vec<_> = names
        .iter()
        .map(|n| {
            let c: Client = client.clone();
            let req = VmCreateRequest { no_start: true, ..daemon::tiny_vm(n, "kt-race-img", vec![]) };
            tokio::spawn(async move { c.vm_create(&req).await })
        })
        .collect();
    // Every request finishes before anything is asserted, so a failure leaks nothing.
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let mut ports = Vec::new();
    for r in results {
        match r {
            Ok(vm) => ports.push(vm.forwards[0].host_port),
            Err(e) => {
                let (s, body) = api_err(e);
                assert!(s == 503 && body.message.contains("ssh_port_range"), "{s} {body:?}");
            }
        }
    }
    ports.sort();
    assert_eq!(ports, (ssh_pool.0..=ssh_pool.1).collect::<Vec<_>>(), "every port handed out exactly once");
    assert_eq!(ports.len(), size);
    let listed = client.vm_list().await.unwrap();
    assert_eq!(listed.len(), size, "the refused creates left no record");
    for vm in listed {
        client.vm_delete(&vm.name, false).await.unwrap();
    }
    client.image_delete("kt-race-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}

#[tokio::test]
async fn a_vnc_forward_serves_the_console_behind_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sweep = Sweep::new(&["kt-vnc"], &["kt-vnc-img"]);
    let mut cfg = daemon::config(d);
    cfg.vnc_forwards = true;
    let vnc_pool = range(&cfg.vnc_port_range);
    let (server, client) = daemon::start(&cfg).await;
    daemon::tiny_image(&client, d, "kt-vnc-img").await;
    client.vm_create(&VmCreateRequest { no_start: true, ..daemon::tiny_vm("kt-vnc", "kt-vnc-img", vec![]) }).await.unwrap();
    let vnc = ForwardCreateRequest { pool: Some("vnc".into()), ..Default::default() };
    let f = client.forward_create("kt-vnc", &vnc).await.unwrap();
    assert_eq!((f.pool.as_str(), f.host_port), ("vnc", vnc_pool.0));
    let password = f.vnc_password.clone().expect("the owner sees the VNC password");
    assert_eq!(api_err(client.forward_create("kt-vnc", &vnc).await.unwrap_err()).0, 409, "one VNC forward per VM");
    let xml = sweep.node_xml("kt-vnc");
    assert!(xml.contains(&format!("port='{}'", f.host_port)) && xml.contains("address='0.0.0.0'"), "{xml}");
    assert!(!client.vm_get("kt-vnc").await.unwrap().forwards.iter().any(|f| f.vnc_password.is_some()), "not in the VM view");

    // The VM's VNC server answers on the host port and offers only password authentication.
    let vm = client.vm_start("kt-vnc").await.unwrap();
    assert!(table_has(&vm).unwrap().forwards.iter().all(|r| r.host_port != f.host_port), "VNC is no firewall rule");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", f.host_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut version = [0u8; 12];
    s.read_exact(&mut version).unwrap();
    assert_eq!(&version, b"RFB 003.008\n");
    s.write_all(b"RFB 003.008\n").unwrap();
    let mut n = [0u8; 1];
    s.read_exact(&mut n).unwrap();
    let mut types = vec![0u8; n[0] as usize];
    s.read_exact(&mut types).unwrap();
    assert_eq!(types, [2], "VNC authentication only (no type 1, None)");
    drop(s);
    let (st, _) = api_err(client.forward_delete("kt-vnc", "tcp", f.host_port).await.unwrap_err());
    assert_eq!(st, 409, "a running VM keeps its VNC listener");
    client.vm_stop("kt-vnc", &VmStopRequest { force: true, timeout_seconds: None }).await.unwrap();
    client.forward_delete("kt-vnc", "tcp", f.host_port).await.unwrap();
    let xml = sweep.node_xml("kt-vnc");
    assert!(xml.contains("address='127.0.0.1'") && !xml.contains("0.0.0.0"), "back on localhost: {xml}");
    assert!(!password.is_empty());
    client.vm_delete("kt-vnc", false).await.unwrap();
    client.image_delete("kt-vnc-img").await.unwrap();
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
    server.stop().await;
}
