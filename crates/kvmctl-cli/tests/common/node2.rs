//! The second test node, as the CLI tests drive it: commands in its namespaces, its agent,
//! its firewall table, and what answers on its address.

use super::BIN;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NODE2_ADDR: &str = "10.79.0.2";

/// An agent process on node 2; killed when dropped.
pub struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A command run inside node 2's network and mount namespaces (those of its libvirtd).
pub fn on_node2(program: &str) -> Command {
    let dir = PathBuf::from(kvmctl_testkit::env("KVMCTL_TEST_NODE2_DIR"));
    let pid = std::fs::read_to_string(dir.join("libvirtd.pid")).unwrap();
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", kvmctl_testkit::env("KVMCTL_TEST_NODE2_NETNS")))
        .arg(format!("--mount=/proc/{}/ns/mnt", pid.trim()))
        .arg(program);
    c
}

/// Starts `kvmctl agent run` on node 2 with the certificates in `certs`, and waits until it
/// accepts connections.
pub fn agent_start(certs: &Path, port: u16, log: &Path) -> Agent {
    let f = |n: &str| certs.join(n).display().to_string();
    let child = on_node2(BIN)
        .args(["agent", "run", "--listen", &format!("{NODE2_ADDR}:{port}")])
        .args(["--tls-cert", &f(&format!("agent-{NODE2_ADDR}.pem")), "--tls-key", &f(&format!("agent-{NODE2_ADDR}-key.pem"))])
        .args(["--client-ca", &f("ca.pem")])
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .unwrap();
    let agent = Agent(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect((NODE2_ADDR, port)).is_ok() {
            return agent;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the agent did not listen: {}", std::fs::read_to_string(log).unwrap_or_default());
}

/// What node 2's `inet kvmctl` table holds (empty when there is none).
pub fn node2_table() -> String {
    let out = on_node2("nft").args(["list", "table", "inet", "kvmctl"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first line a TCP server at `addr:port` sends (an SSH banner), if it sends one.
pub fn banner(addr: &str, port: u16) -> Option<String> {
    use std::io::BufRead;
    let s = std::net::TcpStream::connect_timeout(&format!("{addr}:{port}").parse().ok()?, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).ok()?;
    Some(line)
}

pub fn banner_within(addr: &str, port: u16, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        match banner(addr, port) {
            Some(b) if b.starts_with("SSH-2.0") => return Some(b),
            _ if Instant::now() > deadline => return None,
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `virsh` against node 2.
pub fn virsh2(args: &[&str]) -> String {
    let uri = kvmctl_testkit::env("KVMCTL_TEST_NODE2_URI");
    let out = Command::new("virsh").args(["-q", "-c", &uri]).args(args).output().unwrap();
    assert!(out.status.success(), "virsh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Certificates in `dir/certs`, an agent on node 2 with them, and the daemon environment
/// that reaches it; returns the agent, its URL and that environment.
pub fn agent_for(dir: &Path) -> (Agent, String, Vec<(String, String)>) {
    let certs = dir.join("certs");
    kvmctl_server::agent::certs::certs(&certs, &[NODE2_ADDR.into()]).unwrap();
    let (port,) = kvmctl_testkit::daemon::port_block();
    let agent = agent_start(&certs, port, &dir.join("agent.log"));
    let f = |n: &str| certs.join(n).display().to_string();
    let env = vec![
        ("KVMCTL_AGENT_CA".to_owned(), f("ca.pem")),
        ("KVMCTL_AGENT_CERT".to_owned(), f("controller.pem")),
        ("KVMCTL_AGENT_KEY".to_owned(), f("controller-key.pem")),
    ];
    (agent, format!("https://{NODE2_ADDR}:{port}"), env)
}
