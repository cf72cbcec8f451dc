//! What tests against the real libvirtd share: the environment `scripts/test.sh` exports,
//! cleanup that runs whatever happens to the test, and SSH to guests.

pub mod memory;

use kvmctl_libvirt::{LibvirtNode, Node};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A `KVMCTL_TEST_*` setting; fails (never skips) when the environment is missing.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, or `source /run/kvmctl-test/env` after scripts/testenv.sh")
    })
}

/// Everything a test made on the node, removed on drop whatever happened: the domain
/// (stopped and undefined), volumes (in reverse order of creation) and files.
pub struct Debris<'a> {
    pub node: &'a LibvirtNode,
    pub pool: String,
    pub domain: Option<String>,
    pub volumes: Vec<String>,
    pub files: Vec<PathBuf>,
}

impl<'a> Debris<'a> {
    /// Registers the logs libvirt and the serial console write for domain `name`.
    pub fn new(node: &'a LibvirtNode, pool: &str, name: &str) -> Self {
        let files = vec![serial_log(name), PathBuf::from(format!("/var/log/libvirt/qemu/{name}.log"))];
        Debris { node, pool: pool.to_owned(), domain: None, volumes: Vec::new(), files }
    }
}

impl Drop for Debris<'_> {
    fn drop(&mut self) {
        if let Some(d) = &self.domain {
            let _ = self.node.domain_destroy(d);
            let _ = self.node.domain_undefine(d);
        }
        for v in self.volumes.iter().rev() {
            let _ = self.node.volume_delete(&self.pool, v);
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Where tests log a domain's serial console.
pub fn serial_log(name: &str) -> PathBuf {
    PathBuf::from(format!("/var/log/libvirt/qemu/{name}-serial.log"))
}

/// A fresh ed25519 key pair in `dir`: (private key path, public key line).
pub fn keypair(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kvmctl-test", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen runs");
    assert!(st.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key").trim().to_owned();
    (key, public)
}

/// Runs `cmd` as `user@host` with `key`; stdout, or the error output.
pub fn ssh(key: &Path, user: &str, host: &str, cmd: &str) -> Result<String, String> {
    ssh_at(key, user, host, 22, cmd)
}

/// As [`ssh`], to `port`.
pub fn ssh_at(key: &Path, user: &str, host: &str, port: u16, cmd: &str) -> Result<String, String> {
    let out = Command::new("ssh")
        .arg("-i")
        .arg(key)
        .arg("-p")
        .arg(port.to_string())
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{user}@{host}"))
        .arg(cmd)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

pub mod browser;

/// A kvmctl daemon for tests: in-process on a temporary socket and database, against the
/// test environment's libvirtd, pool and network, with the tiny guest importable as an image.
pub mod daemon {
    use kvmctl_client::Client;
    use kvmctl_libvirt::{LibvirtNode, Node};
    use kvmctl_server::{Config, RunningServer};
    use kvmctl_types::api::{Image, ImageImportRequest, VmCreateRequest};
    use std::path::{Path, PathBuf};

    /// The daemon's configuration for a test in `dir`.
    pub fn config(dir: &Path) -> Config {
        let ports = port_block();
        Config {
            socket: dir.join("kvmctl.sock"),
            database: dir.join("kvmctl.db"),
            database_url: database_url(),
            libvirt_uri: super::env("KVMCTL_TEST_URI"),
            host_state_dir: dir.join("host"),
            domain_type: kvmctl_server::config::DomainTypeSetting::Qemu,
            pool: super::env("KVMCTL_TEST_POOL"),
            network: super::env("KVMCTL_TEST_NETWORK"),
            console_log_dir: dir.join("console"),
            key_dir: dir.join("keys"),
            snapshot_dir: dir.join("snapshots"),
            stop_timeout_seconds: 30,
            reconcile_interval_seconds: 1,
            ssh_port_range: format!("{}-{}", ports.0, ports.0 + 9),
            general_port_range: format!("{}-{}", ports.0 + 10, ports.0 + 19),
            vnc_port_range: format!("{}-{}", ports.0 + 20, ports.0 + 29),
            // Test VMs are tiny and mostly stopped; capacity is not what these tests test.
            local_cpu_overcommit: "100".into(),
            // Background gc would see other test daemons' VMs as debris (tests/gc.rs runs it alone).
            gc_interval_minutes: 0,
            // Tests' networks take subnets all over 10/8 (each test its own); the address
            // policy itself is tested with the default pools (tests/adversarial.rs).
            user_network_pools: vec!["10.0.0.0/8".into()],
            networks_per_user: 100,
            ..Config::default()
        }
    }

    /// With `KVMCTL_TEST_ENGINE=postgres`, a fresh database on the test PostgreSQL server
    /// (made on a thread of its own: tests call `config` inside and outside a runtime);
    /// otherwise none, and the daemon uses its SQLite file.
    pub fn database_url() -> Option<String> {
        (std::env::var("KVMCTL_TEST_ENGINE").as_deref() == Ok("postgres")).then(|| {
            std::thread::spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                rt.block_on(kvmctl_store::testing::postgres_database()).expect("the test PostgreSQL makes a database")
            })
            .join()
            .expect("the database thread")
        })
    }

    /// A block of 30 host ports for one test daemon's pools (ssh, general, vnc: 10 each).
    /// Test daemons share the namespace's firewall table, so each takes its own block: from
    /// the process id (tests run one per process) and a counter (several daemons in one).
    pub fn port_block() -> (u16,) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = std::process::id().wrapping_mul(7).wrapping_add(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        (20000 + (n % 1300) as u16 * 30,)
    }

    /// Sends the in-process daemon's log (level `KVMCTL_TEST_LOG`, default `info`) to the
    /// test's captured output, which the harness shows when the test fails: a 500's detail
    /// is in that log under the request id the error names.
    pub fn log_to_test_output() {
        let level = std::env::var("KVMCTL_TEST_LOG").unwrap_or_else(|_| "info".into());
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new(level))
            .try_init();
    }

    /// Starts a daemon whose background work runs on `clock`.
    pub async fn start_with_clock(cfg: &Config, clock: std::sync::Arc<dyn kvmctl_server::clock::Clock>) -> (RunningServer, Client) {
        log_to_test_output();
        let server = RunningServer::start_with_clock(cfg, clock).await.expect("daemon starts");
        let client = Client::unix(&server.socket);
        (server, client)
    }

    /// Starts a daemon; the client talks to it.
    pub async fn start(cfg: &Config) -> (RunningServer, Client) {
        log_to_test_output();
        let server = RunningServer::start(cfg).await.expect("daemon starts");
        let client = Client::unix(&server.socket);
        (server, client)
    }

    /// Removes, on drop, every domain and volume a test's VMs and images could have left,
    /// by name, straight through libvirt: a failing test must not leak into the next.
    pub struct Sweep {
        pub node: LibvirtNode,
        pub pool: String,
        pub vms: Vec<String>,
        pub images: Vec<String>,
        pub networks: Vec<String>,
        /// Storage pools the test makes (their volumes go first).
        pub pools: Vec<String>,
    }

    impl Sweep {
        pub fn new(vms: &[&str], images: &[&str]) -> Self {
            Sweep {
                node: LibvirtNode::new(super::env("KVMCTL_TEST_URI")),
                pool: super::env("KVMCTL_TEST_POOL"),
                vms: vms.iter().map(|s| s.to_string()).collect(),
                images: images.iter().map(|s| s.to_string()).collect(),
                networks: Vec::new(),
                pools: Vec::new(),
            }
        }

        /// Also removes these storage pools, with their volumes (a failed test's leftovers).
        pub fn with_pools(mut self, pools: &[&str]) -> Self {
            self.pools = pools.iter().map(|s| s.to_string()).collect();
            self.clear_pools();
            self
        }

        fn clear_pools(&self) {
            for p in &self.pools {
                if let Ok(vols) = self.node.volume_list(p) {
                    for v in vols {
                        let _ = self.node.volume_delete(p, &v.name);
                    }
                }
                let _ = self.node.pool_remove(p, false);
            }
        }

        /// Also removes these libvirt networks (and their kvmctl rows die with the test's
        /// database).
        pub fn with_networks(mut self, networks: &[&str]) -> Self {
            self.networks = networks.iter().map(|s| s.to_string()).collect();
            self
        }

        /// The domain's XML as libvirt has it.
        pub fn node_xml(&self, name: &str) -> String {
            self.node.domain_xml(name).expect("domain exists")
        }

        /// Linked clones' bases in the test pool over this test's images (by the images'
        /// volume paths, which stay the same after the images are gone).
        fn bases(&self) -> Vec<String> {
            let dir = PathBuf::from(super::env("KVMCTL_TEST_POOL_DIR"));
            self.images
                .iter()
                .flat_map(|n| ["qcow2", "raw"].map(|ext| dir.join(format!("image-{n}.{ext}"))))
                .flat_map(|image| clone_bases(&dir, &image))
                .collect()
        }

        /// Domains and volumes in the test pool that belong to this test's VMs and images.
        pub fn leftovers(&self) -> Vec<String> {
            let mut left: Vec<String> = self
                .node
                .domain_list()
                .unwrap()
                .into_iter()
                .filter(|d| self.vms.contains(&d.name))
                .map(|d| format!("domain {}", d.name))
                .collect();
            for v in self.node.volume_list(&self.pool).unwrap() {
                if self.vms.iter().any(|n| v.name.starts_with(&format!("{n}-")))
                    || self.images.iter().any(|n| v.name.starts_with(&format!("image-{n}.")))
                {
                    left.push(format!("volume {}", v.name));
                }
            }
            left.extend(self.bases().into_iter().map(|b| format!("volume {b}")));
            left
        }
    }

    impl Drop for Sweep {
        fn drop(&mut self) {
            // DHCP reservations named after the test's VMs (libvirt's XML, given back as is).
            let network = super::env("KVMCTL_TEST_NETWORK");
            if let Ok(xml) = self.node.network_xml(&network) {
                for host in kvmctl_libvirt::xml::network_dhcp_hosts(&xml) {
                    if self.vms.contains(&host.name) {
                        if let Ok(entry) = kvmctl_libvirt::xml::dhcp_host_entry_xml(&host) {
                            let _ = self.node.network_dhcp_host(&network, &entry, false);
                        }
                    }
                }
            }
            // The firewall entries of the test's domains (a failed test leaves them behind).
            if let Ok(domains) = self.node.domain_list() {
                for d in domains.iter().filter(|d| self.vms.contains(&d.name)) {
                    let _ = kvmctl_netfw::vm_remove(kvmctl_netfw::TABLE, &d.uuid);
                }
            }
            for vm in &self.vms {
                let _ = self.node.domain_destroy(vm);
                let _ = self.node.domain_undefine(vm);
                let _ = std::fs::remove_file(format!("/var/log/libvirt/qemu/{vm}.log"));
                for n in 0..8 {
                    let _ = std::fs::remove_file(format!("/var/log/libvirt/qemu/{vm}-fs{n}-virtiofsd.log"));
                }
                let _ = std::fs::remove_file(format!("/var/log/swtpm/libvirt/qemu/{vm}-swtpm.log"));
            }
            for b in self.bases() {
                let _ = self.node.volume_delete(&self.pool, &b);
            }
            if let Ok(vols) = self.node.volume_list(&self.pool) {
                for v in vols {
                    if self.vms.iter().any(|n| v.name.starts_with(&format!("{n}-")))
                        || self.images.iter().any(|n| v.name.starts_with(&format!("image-{n}.")))
                    {
                        let _ = self.node.volume_delete(&self.pool, &v.name);
                    }
                }
            }
            for n in &self.networks {
                let _ = self.node.network_delete(n);
            }
            self.clear_pools();
        }
    }

    /// Imports the tiny guest (kernel + initrd, with a small empty disk) as image `name`.
    pub async fn tiny_image(client: &Client, dir: &Path, name: &str) -> Image {
        let tiny = PathBuf::from(super::env("KVMCTL_TEST_TINY"));
        let disk = dir.join(format!("{name}-disk.qcow2"));
        let st = std::process::Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&disk).arg("64M").status().unwrap();
        assert!(st.success());
        let req = ImageImportRequest {
            name: name.into(),
            source: disk.display().to_string(),
            kernel: Some(tiny.join("vmlinuz").display().to_string()),
            initrd: Some(tiny.join("initrd.gz").display().to_string()),
            cmdline: Some("console=ttyS0 quiet panic=-1".into()),
            ..Default::default()
        };
        client.image_import(&req).await.expect("tiny image imports")
    }

    /// Sends `input` on a terminal session, then collects what comes back until `until`
    /// appears, the session closes (its close reason is returned too), or `tries` quiet
    /// half-seconds pass.
    pub async fn terminal_talk(ws: &mut kvmctl_client::Terminal, input: &[u8], until: &str, tries: u32) -> (String, Option<String>) {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        if !input.is_empty() {
            ws.send(Message::Binary(input.to_vec().into())).await.expect("send to the terminal");
        }
        let mut seen = String::new();
        let mut quiet = 0;
        while quiet < tries && !seen.contains(until) {
            match tokio::time::timeout(std::time::Duration::from_millis(500), ws.next()).await {
                Err(_) => quiet += 1,
                Ok(Some(Ok(Message::Binary(b)))) => seen.push_str(&String::from_utf8_lossy(&b)),
                Ok(Some(Ok(Message::Close(f)))) => return (seen, f.map(|f| f.reason.to_string())),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) | Ok(None) => return (seen, None),
            }
        }
        (seen, None)
    }

    /// A small VM of the tiny image.
    /// Polls the VM every 100 ms until `pred` holds, for up to two minutes; panics with the
    /// VM as last seen, naming `what` it never became.
    pub async fn until(client: &Client, name: &str, what: &str, pred: impl Fn(&kvmctl_types::api::Vm) -> bool) {
        let mut last = None;
        for _ in 0..1200 {
            let vm = client.vm_get(name).await.unwrap();
            if pred(&vm) {
                return;
            }
            last = Some(vm);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("VM {name} never became {what}: {last:?}");
    }

    /// The linked clones' bases (`_base-*.qcow2`) in `pool_dir` that lie over `image_file`:
    /// the ones a test's own image made (other tests share the pool and run at the same time).
    pub fn clone_bases(pool_dir: &Path, image_file: &Path) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(pool_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("_base-"))
            .filter(|n| {
                let out = std::process::Command::new("qemu-img")
                    .args(["info", "-U", "--output=json"])
                    .arg(pool_dir.join(n))
                    .output()
                    .expect("qemu-img runs");
                // A base removed meanwhile (another test's) has no info: not ours.
                let info = String::from_utf8_lossy(&out.stdout);
                info.contains(&format!("\"backing-filename\": \"{}\"", image_file.display()))
            })
            .collect();
        found.sort();
        found
    }

    /// Usage once it holds `n` records (metering runs in the background after a test's clock
    /// moves), then again after half a second, so records a second pass (or a second daemon)
    /// would add are in it too; fails with what it saw after a generous wait, never on speed.
    pub async fn usage_reaching(c: &Client, n: usize) -> Vec<kvmctl_types::api::UsageRecord> {
        let mut seen = Vec::new();
        for _ in 0..200 {
            seen = c.usage_list(None, None, None).await.unwrap();
            if seen.len() >= n {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                return c.usage_list(None, None, None).await.unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("expected {n} usage records, have {}: {seen:#?}", seen.len());
    }

    pub fn tiny_vm(name: &str, image: &str, keys: Vec<String>) -> VmCreateRequest {
        VmCreateRequest {
            name: name.into(),
            image: image.into(),
            vcpus: Some(1),
            memory_mib: Some(256),
            disk_gib: Some(1),
            ssh_keys: keys,
            ..Default::default()
        }
    }

    /// The address the tiny guest announces on its console once SSH is up; polls the log
    /// (a guest under emulation takes seconds; a broken one never announces, so the caller
    /// gets the log instead of a hang after `tries` half-seconds).
    pub async fn tiny_guest_ip(console_log: &Path, tries: u32) -> Result<String, String> {
        for _ in 0..tries {
            let log = std::fs::read_to_string(console_log).unwrap_or_default();
            if let Some(ip) = log.lines().find_map(|l| l.split("KVMCTL_TINY_READY ip=").nth(1)) {
                return Ok(ip.split_whitespace().next().unwrap_or_default().to_owned());
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        Err(std::fs::read_to_string(console_log).unwrap_or_else(|e| format!("no console log {}: {e}", console_log.display())))
    }
}
