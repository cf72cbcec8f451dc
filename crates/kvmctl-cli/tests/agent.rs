//! The node agent on the second test node, from the real CLI: `kvmctl agent certs` makes
//! both sides' certificates, `kvmctl agent run` runs in node 2's own network and mount
//! namespaces, and a VM placed there gets an SSH forward that answers on node 2's address,
//! a readable console log, and its rules and logs removed when it goes. The agent holds no
//! state: restarted, it rebuilds the same table. It serves only controllers whose
//! certificate its CA signed, and never takes a name for a path.

mod common;

use common::Env;
use kvmctl_server::agent::client::{AgentClient, AgentTls};
use kvmctl_testkit::daemon::Sweep;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::node2::{agent_start, banner, banner_within, node2_table, on_node2, NODE2_ADDR};

#[test]
fn an_agent_gives_the_second_node_forwards_and_console_logs() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env { dir: dir.path().to_owned() };
    let sweep = Sweep::new(&["kt-ag", "kt-ag2"], &["kt-ag-img"]);
    let certs = dir.path().join("certs");
    let agent_log = dir.path().join("agent.log");
    let (port,) = kvmctl_testkit::daemon::port_block();

    // Certificates for one agent host and the controllers; a second run adds nothing.
    env.ok(&["agent", "certs", "--dir", &certs.display().to_string(), "--host", NODE2_ADDR]);
    let again = env.ok(&["agent", "certs", "--dir", &certs.display().to_string(), "--host", NODE2_ADDR]);
    assert!(!again.contains("made "), "{again}");
    let agent = agent_start(&certs, port, &agent_log);

    let f = |n: &str| certs.join(n).display().to_string();
    let _d = env.serve_with(
        "",
        &[("KVMCTL_AGENT_CA", &f("ca.pem")), ("KVMCTL_AGENT_CERT", &f("controller.pem")), ("KVMCTL_AGENT_KEY", &f("controller-key.pem"))],
    );
    common::tiny_import(&env, "kt-ag-img");
    let url = format!("https://{NODE2_ADDR}:{port}");
    let bad = env.kvmctl(&["node", "add", "kt-ag-n2", "--uri", &kvmctl_testkit::env("KVMCTL_TEST_NODE2_URI"), "--agent", "http://x:1"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("agent"), "{bad:?}");
    assert!(!env.ok(&["node", "list"]).contains("kt-ag-n2"), "a refused add records nothing");
    env.ok(&["node", "add", "kt-ag-n2", "--uri", &kvmctl_testkit::env("KVMCTL_TEST_NODE2_URI"), "--agent", &url, "--label", "zone=ag"]);

    // A VM placed on node 2 gets its SSH forward there, answering on node 2's address.
    let (key, public) = kvmctl_testkit::keypair(dir.path());
    let pubfile = dir.path().join("key.pub");
    std::fs::write(&pubfile, &public).unwrap();
    let key_arg = pubfile.display().to_string();
    let vm = common::tiny_create(&env, "kt-ag", "kt-ag-img", &["--node-label", "zone=ag", "--ssh-key", &key_arg]);
    assert_eq!(vm["node"], "kt-ag-n2", "{vm}");
    let fwd = vm["forwards"].as_array().unwrap().iter().find(|f| f["guest_port"] == 22).cloned().expect("an SSH forward");
    let host_port = fwd["host_port"].as_u64().unwrap() as u16;
    assert!(node2_table().contains(&format!("dport {host_port}")), "node 2's table: {}", node2_table());
    let b = banner_within(NODE2_ADDR, host_port, Duration::from_secs(180));
    assert!(
        b.is_some(),
        "the forward on node 2 answers with the guest's SSH server; agent log: {}",
        std::fs::read_to_string(&agent_log).unwrap_or_default()
    );
    let hostname = kvmctl_testkit::ssh_at(&key, "kvmctl", NODE2_ADDR, host_port, "hostname").unwrap();
    assert_eq!(hostname.trim(), "kt-ag");

    // The console log is read through the agent.
    let log = env.ok(&["vm", "console", "kt-ag", "--log", "--lines", "500"]);
    assert!(!log.trim().is_empty(), "the guest wrote its console");

    // A general forward added while it runs is written by the agent at once.
    let added: serde_json::Value =
        serde_json::from_str(&env.ok(&["vm", "forward", "add", "kt-ag", "--guest-port", "22", "-o", "json"])).unwrap();
    let second = added["host_port"].as_u64().unwrap() as u16;
    assert!(banner_within(NODE2_ADDR, second, Duration::from_secs(30)).is_some(), "the added forward answers");

    // The agent keeps no state: killed, the rules stay in the kernel; started again, it
    // rebuilds the same table from the domains' metadata.
    let before = node2_table();
    drop(agent);
    assert!(banner(NODE2_ADDR, host_port).is_some_and(|b| b.starts_with("SSH-2.0")));
    on_node2("nft").args(["delete", "table", "inet", "kvmctl"]).status().unwrap();
    assert!(banner(NODE2_ADDR, host_port).is_none(), "the table is gone");
    let agent = agent_start(&certs, port, &agent_log);
    assert!(banner_within(NODE2_ADDR, host_port, Duration::from_secs(30)).is_some(), "rebuilt at start");
    assert_eq!(node2_table(), before);

    // Only controllers whose certificate the agent CA signed are served; names are names.
    let tls = AgentTls::load(Path::new(&f("ca.pem")), Path::new(&f("controller.pem")), Path::new(&f("controller-key.pem"))).unwrap();
    let foreign = dir.path().join("foreign");
    kvmctl_server::agent::certs::certs(&foreign, &[NODE2_ADDR.into()]).unwrap();
    let g = |n: &str| foreign.join(n);
    let stranger = AgentTls::load(Path::new(&f("ca.pem")), &g("controller.pem"), &g("controller-key.pem")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ours = AgentClient::new(&url, tls).unwrap();
        let theirs = AgentClient::new(&url, stranger).unwrap();
        assert!(theirs.status().await.is_err(), "a client certificate of another CA is refused");
        let status = ours.status().await.unwrap();
        assert_eq!(status.forwards, 2, "{status:?}");
        for evil in ["..%2F..%2Fetc%2Fpasswd", "a%2Fb", "%2Fetc%2Fshadow"] {
            let (code, body) = ours.call("GET", &format!("/v1/agent/console/{evil}"), None).await.unwrap();
            assert!(code == 400 || code == 404, "{evil}: {code} {}", String::from_utf8_lossy(&body));
            assert!(!String::from_utf8_lossy(&body).contains("root:"), "{evil}");
        }
    });

    // The agent's KVM probe is reported on the node (it runs at the agent's start).
    let deadline = Instant::now() + Duration::from_secs(120);
    let shown = loop {
        let n: serde_json::Value = serde_json::from_str(&env.ok(&["node", "show", "kt-ag-n2", "-o", "json"])).unwrap();
        let s = n["agent_status"].as_str().unwrap_or_default().to_owned();
        if !s.contains("has not finished") || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(shown.starts_with("answers; domain type") && !shown.contains("has not finished"), "{shown}");

    // gc finds, through the agent, the logs of a VM that is gone from node 2 (never those of
    // one that is there).
    let logs = PathBuf::from(kvmctl_testkit::env("KVMCTL_TEST_NODE2_DIR")).join("log/qemu");
    std::fs::write(logs.join("kt-ag-junk-serial.log"), "left behind\n").unwrap();
    let report = env.ok(&["gc", "--dry-run"]);
    assert!(report.contains("kt-ag-n2/kt-ag-junk"), "{report}");
    assert!(!report.contains("kt-ag-n2/kt-ag "), "{report}");
    std::fs::remove_file(logs.join("kt-ag-junk-serial.log")).unwrap();

    // A managed network goes to node 2 with the first VM there that joins it (NAT by the
    // agent's table); the network's delete removes it there too.
    env.ok(&["network", "create", "kt-agnet", "--subnet", "10.75.0.0/24"]);
    let vm2 =
        common::tiny_create(&env, "kt-ag2", "kt-ag-img", &["--network", "kt-agnet", "--node-label", "zone=ag", "--ssh-key", &key_arg]);
    assert_eq!(vm2["node"], "kt-ag-n2", "{vm2}");
    assert!(vm2["ip"].as_str().unwrap_or_default().starts_with("10.75.0."), "{vm2}");
    let port2 = vm2["forwards"][0]["host_port"].as_u64().unwrap() as u16;
    assert!(
        banner_within(NODE2_ADDR, port2, Duration::from_secs(180)).is_some(),
        "a VM on the managed network answers through node 2's forward"
    );
    assert!(node2_table().contains("masquerade"), "its network's NAT is in node 2's table: {}", node2_table());
    env.ok(&["vm", "delete", "kt-ag2"]);
    env.ok(&["network", "delete", "kt-agnet"]);
    let nets = common::node2::virsh2(&["net-list", "--all", "--name"]);
    assert!(nets.contains("kvmctl-test") && !nets.contains("kt-agnet"), "gone from node 2: {nets}");

    // Deleted, its rules and its logs on node 2 go.
    env.ok(&["vm", "delete", "kt-ag"]);
    let table = node2_table();
    assert!(!table.contains(&format!("dport {host_port}")) && !table.contains(&format!("dport {second}")), "{table}");
    assert!(!logs.join("kt-ag-serial.log").exists() && !logs.join("kt-ag.log").exists());
    env.ok(&["node", "remove", "kt-ag-n2"]);
    let vols2 = common::node2::virsh2(&["vol-list", &kvmctl_testkit::env("KVMCTL_TEST_POOL")]);
    assert!(!vols2.contains("image-kt-ag-img."), "removing the node removes the image's copy there: {vols2}");
    env.ok(&["image", "rm", "kt-ag-img"]);
    drop(agent);
    assert!(sweep.leftovers().is_empty(), "{:?}", sweep.leftovers());
}
