//! Daemon configuration: built-in defaults, overridden by `/etc/kvmctl/kvmctl.toml` (or the
//! file named by `--config`/`KVMCTL_CONFIG`), overridden by environment variables, overridden
//! by command-line flags. Every key is documented in `docs/configuration.md`.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/kvmctl/kvmctl.toml";
pub use kvmctl_types::DEFAULT_SOCKET;
pub const DEFAULT_DATABASE: &str = "/var/lib/kvmctl/kvmctl.db";
pub const DEFAULT_LIBVIRT_URI: &str = "qemu:///system";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Unix socket the API listens on.
    pub socket: PathBuf,
    /// Group that may use the socket (mode 0660); unset leaves it to root (0600).
    pub socket_group: Option<String>,
    /// Optional TCP listen address, e.g. `127.0.0.1:8443`.
    pub listen: Option<SocketAddr>,
    /// SQLite database file.
    pub database: PathBuf,
    /// A PostgreSQL database (`postgres://USER:PASSWORD@HOST/DB`), used instead of `database`;
    /// several daemons may share one.
    pub database_url: Option<String>,
    /// libvirt URI of the local compute node.
    pub libvirt_uri: String,
    /// tracing filter, e.g. `info` or `kvmctl_server=debug`.
    pub log: String,
    /// Where `kvmctl host doctor|setup` record their reports (`doctor.json`, `state.json`).
    pub host_state_dir: PathBuf,
    /// Domain type for new VMs: `auto` (from the last `kvmctl host doctor` verdict), `kvm`
    /// or `qemu` (TCG emulation).
    pub domain_type: DomainTypeSetting,
    /// libvirt storage pool that holds images, root disks and seeds (made by `kvmctl host setup`).
    pub pool: String,
    /// libvirt network new VMs join unless they name one.
    pub network: String,
    /// Directory on the node where each VM's serial console is logged (`<vm>.log`).
    pub console_log_dir: PathBuf,
    /// Where the daemon keeps each VM's own SSH key (`<vm id>`, mode 0600).
    pub key_dir: PathBuf,
    /// Where the daemon keeps snapshots' memory images and NVRAM copies (`<vm id>/`).
    pub snapshot_dir: PathBuf,
    /// Seconds `vm stop` waits for an ACPI shutdown before powering the VM off.
    pub stop_timeout_seconds: u64,
    /// Seconds between reconciler passes (database against libvirt).
    pub reconcile_interval_seconds: u64,
    /// Seconds between starts of VMs brought back after a failure shut them off (host or
    /// libvirtd restart, QEMU killed), so a host with many VMs does not boot them all at once.
    pub restart_stagger_seconds: u64,
    /// Host ports for the SSH forward every VM gets (`A-B`, inclusive).
    pub ssh_port_range: String,
    /// Host ports for VNC forwards (only used when `vnc_forwards` is on).
    pub vnc_port_range: String,
    /// Host ports for other forwards (`kvmctl vm forward add`).
    pub general_port_range: String,
    /// Whether `vm create` gives each VM an SSH forward from `ssh_port_range` (a request can
    /// opt out with `no_ssh_forward`).
    pub ssh_forward: bool,
    /// Whether VNC consoles may be forwarded to host ports (off: VNC listens on localhost).
    pub vnc_forwards: bool,
    /// Most forwards one VM may have.
    pub forwards_per_vm: u32,
    /// Default quotas of users (role `user`; admins have none): VMs, vCPUs, memory, disk
    /// and port forwards one user may hold. `kvmctl quota set` overrides them per user.
    pub quota_vms: u64,
    pub quota_vcpus: u64,
    pub quota_memory_mib: u64,
    pub quota_disk_gib: u64,
    pub quota_forwards: u64,
    /// Currency of plan prices (ISO 4217 code), shown with them.
    pub currency: String,
    /// Settings the local node gets when it is first registered (later: `kvmctl node set
    /// local`): overcommit ratios (decimals) and what is kept for the host.
    pub local_cpu_overcommit: String,
    pub local_memory_overcommit: String,
    pub local_reserved_cpus: u64,
    pub local_reserved_memory_mib: u64,
    /// Delete VMs stopped longer than this many hours (0: never), warning their owners on
    /// the events stream `stopped_vm_warning_hours` before.
    pub stopped_vm_cleanup_hours: u64,
    pub stopped_vm_warning_hours: u64,
    /// Minutes between `gc` passes in the background (0: none); they report, and remove
    /// debris only with `gc_clean`.
    pub gc_interval_minutes: u64,
    pub gc_clean: bool,
    /// Debris is removed only once it has been reported for this long (seconds): a create
    /// in flight, here or in another daemon on the same libvirt, is never mistaken for it.
    pub gc_grace_seconds: u64,
    /// What a stopped VM-hour costs, in percent of the running price (0 to 100).
    pub stopped_price_percent: u32,
    /// Hourly prices of VMs sized without a plan: per vCPU, per GiB of memory, per GiB of disk.
    pub price_vcpu_hourly: String,
    pub price_memory_gib_hourly: String,
    pub price_disk_gib_hourly: String,
    /// PEM certificate chain and private key: with both, `listen` serves HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Node agents (`kvmctl agent`, docs/nodes.md): the CA that signed the agents'
    /// certificates, and this daemon's client certificate and key (`kvmctl agent certs`
    /// makes all three). Without them, nodes with an agent are not reached.
    pub agent_ca: Option<PathBuf>,
    pub agent_cert: Option<PathBuf>,
    pub agent_key: Option<PathBuf>,
    /// Address pools users' networks are carved from (CIDRs); a user's subnet must lie
    /// within one. Admins may use any private range.
    pub user_network_pools: Vec<String>,
    /// Most networks one user (role `user`) may have.
    pub networks_per_user: u64,
    /// libvirt network filter (nwfilter) on every VM's NIC on a network or bridge; empty
    /// for none. The default, `clean-traffic`, stops a guest from using another's MAC, IP or
    /// ARP identity (and passes only IPv4 and ARP).
    pub nic_filter: String,
    /// Most bytes of output `vm exec` keeps (stdout and stderr together); past it the command
    /// is cut off and the answer says `truncated`. The guest decides how much it prints.
    pub exec_output_max_bytes: u64,
    /// Most guest sessions (console, SSH, exec, file copies) open at once on one VM, and for
    /// one user over all their VMs; more get a 409 until one ends.
    pub sessions_per_vm: u32,
    pub sessions_per_user: u32,
    /// Host directories under which admins may share folders with VMs over virtio-fs
    /// (`vm create --share`); empty (the default): no sharing. A share's path is resolved
    /// (symlinks followed) before it is checked against these.
    pub share_roots: Vec<PathBuf>,
    /// Where the daemon writes its read-only virtiofsd wrapper (see docs/vms.md, Shared
    /// folders).
    pub share_helper: PathBuf,
    /// Testing only: steps that fail on purpose, `step=error|crash|pause,...` (see
    /// docs/testing.md). Empty in production.
    pub failpoints: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainTypeSetting {
    Auto,
    Kvm,
    Qemu,
}

impl Config {
    /// Where the daemon's database is: `database_url` when set, else the SQLite file.
    pub fn database_location(&self) -> kvmctl_store::Location {
        match &self.database_url {
            Some(url) => kvmctl_store::Location::Postgres(url.clone()),
            None => kvmctl_store::Location::Sqlite(self.database.clone()),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: DEFAULT_SOCKET.into(),
            socket_group: None,
            listen: None,
            database: DEFAULT_DATABASE.into(),
            database_url: None,
            libvirt_uri: DEFAULT_LIBVIRT_URI.into(),
            log: "info".into(),
            host_state_dir: "/var/lib/kvmctl/host".into(),
            domain_type: DomainTypeSetting::Auto,
            pool: "kvmctl".into(),
            network: "default".into(),
            console_log_dir: "/var/log/kvmctl/console".into(),
            key_dir: "/var/lib/kvmctl/keys".into(),
            snapshot_dir: "/var/lib/kvmctl/snapshots".into(),
            stop_timeout_seconds: 60,
            reconcile_interval_seconds: 10,
            restart_stagger_seconds: 5,
            ssh_port_range: "2200-2299".into(),
            vnc_port_range: "5900-5999".into(),
            general_port_range: "10000-10999".into(),
            ssh_forward: true,
            vnc_forwards: false,
            forwards_per_vm: 16,
            quota_vms: 10,
            quota_vcpus: 32,
            quota_memory_mib: 64 * 1024,
            quota_disk_gib: 1000,
            quota_forwards: 32,
            currency: "EUR".into(),
            local_cpu_overcommit: "2.0".into(),
            local_memory_overcommit: "1.0".into(),
            local_reserved_cpus: 0,
            local_reserved_memory_mib: 0,
            stopped_vm_cleanup_hours: 0,
            stopped_vm_warning_hours: 24,
            gc_interval_minutes: 60,
            gc_clean: false,
            gc_grace_seconds: 600,
            stopped_price_percent: 100,
            price_vcpu_hourly: "0".into(),
            price_memory_gib_hourly: "0".into(),
            price_disk_gib_hourly: "0".into(),
            tls_cert: None,
            tls_key: None,
            agent_ca: None,
            agent_cert: None,
            agent_key: None,
            user_network_pools: vec!["10.200.0.0/16".into()],
            networks_per_user: 4,
            nic_filter: "clean-traffic".into(),
            share_roots: Vec::new(),
            share_helper: PathBuf::from("/var/lib/kvmctl/virtiofsd-ro"),
            exec_output_max_bytes: 8 << 20,
            sessions_per_vm: 4,
            sessions_per_user: 16,
            failpoints: String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration file {path} is invalid")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("environment variable {name}={value:?} is invalid: {message}")]
    Env { name: &'static str, value: String, message: String },
    #[error("configuration is invalid: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then the file (`path`, or the default path when it exists), then the
    /// environment as read by `env` (a parameter so tests need not touch the process).
    pub fn load(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let explicit = path.map(Path::to_path_buf).or_else(|| env("KVMCTL_CONFIG").map(PathBuf::from));
        let file = explicit.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        let mut cfg = match std::fs::read_to_string(&file) {
            Ok(text) => toml::from_str(&text).map_err(|source| ConfigError::Parse { path: file.clone(), source })?,
            // A missing default file is normal; a missing file the user named is an error.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => Config::default(),
            Err(source) => return Err(ConfigError::Read { path: file, source }),
        };
        if let Some(v) = env("KVMCTL_SOCKET") {
            cfg.socket = v.into();
        }
        if let Some(v) = env("KVMCTL_SOCKET_GROUP") {
            cfg.socket_group = Some(v).filter(|g| !g.is_empty());
        }
        if let Some(v) = env("KVMCTL_LISTEN") {
            cfg.listen = if v.is_empty() {
                None
            } else {
                Some(v.parse().map_err(|e: std::net::AddrParseError| ConfigError::Env {
                    name: "KVMCTL_LISTEN",
                    value: v.clone(),
                    message: format!("{e}; expected ADDRESS:PORT such as 127.0.0.1:8443"),
                })?)
            };
        }
        if let Some(v) = env("KVMCTL_DATABASE") {
            cfg.database = v.into();
        }
        if let Some(v) = env("KVMCTL_DATABASE_URL") {
            cfg.database_url = (!v.is_empty()).then_some(v);
        }
        if let Some(v) = env("KVMCTL_LIBVIRT_URI") {
            cfg.libvirt_uri = v;
        }
        if let Some(v) = env("KVMCTL_LOG") {
            cfg.log = v;
        }
        if let Some(v) = env("KVMCTL_HOST_STATE_DIR") {
            cfg.host_state_dir = v.into();
        }
        if let Some(v) = env("KVMCTL_POOL") {
            cfg.pool = v;
        }
        if let Some(v) = env("KVMCTL_NETWORK") {
            cfg.network = v;
        }
        if let Some(v) = env("KVMCTL_CONSOLE_LOG_DIR") {
            cfg.console_log_dir = v.into();
        }
        if let Some(v) = env("KVMCTL_KEY_DIR") {
            cfg.key_dir = v.into();
        }
        if let Some(v) = env("KVMCTL_SNAPSHOT_DIR") {
            cfg.snapshot_dir = v.into();
        }
        for (name, slot) in [
            ("KVMCTL_SSH_PORT_RANGE", &mut cfg.ssh_port_range),
            ("KVMCTL_VNC_PORT_RANGE", &mut cfg.vnc_port_range),
            ("KVMCTL_GENERAL_PORT_RANGE", &mut cfg.general_port_range),
        ] {
            if let Some(v) = env(name) {
                *slot = v;
            }
        }
        if let Some(v) = env("KVMCTL_SSH_FORWARD") {
            cfg.ssh_forward = match v.as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => return Err(ConfigError::Env { name: "KVMCTL_SSH_FORWARD", value: v, message: "expected true or false".into() }),
            };
        }
        if let Some(v) = env("KVMCTL_TLS_CERT") {
            cfg.tls_cert = Some(v.into()).filter(|p: &PathBuf| !p.as_os_str().is_empty());
        }
        if let Some(v) = env("KVMCTL_TLS_KEY") {
            cfg.tls_key = Some(v.into()).filter(|p: &PathBuf| !p.as_os_str().is_empty());
        }
        for (name, slot) in
            [("KVMCTL_AGENT_CA", &mut cfg.agent_ca), ("KVMCTL_AGENT_CERT", &mut cfg.agent_cert), ("KVMCTL_AGENT_KEY", &mut cfg.agent_key)]
        {
            if let Some(v) = env(name) {
                *slot = Some(v.into()).filter(|p: &PathBuf| !p.as_os_str().is_empty());
            }
        }
        if let Some(v) = env("KVMCTL_FAILPOINTS") {
            cfg.failpoints = v;
        }
        if let Some(v) = env("KVMCTL_DOMAIN_TYPE") {
            cfg.domain_type = match v.as_str() {
                "auto" => DomainTypeSetting::Auto,
                "kvm" => DomainTypeSetting::Kvm,
                "qemu" => DomainTypeSetting::Qemu,
                _ => return Err(ConfigError::Env { name: "KVMCTL_DOMAIN_TYPE", value: v, message: "expected auto, kvm or qemu".into() }),
            };
        }
        cfg.port_pools().map_err(ConfigError::Invalid)?;
        if let Some(url) = &cfg.database_url {
            if !matches!(kvmctl_store::Location::parse(url), kvmctl_store::Location::Postgres(_)) {
                return Err(ConfigError::Invalid(format!(
                    "database_url = {:?} is not a PostgreSQL URL; write postgres://USER:PASSWORD@HOST/DATABASE, or leave it out and set database (a SQLite file)",
                    kvmctl_store::redact_url(url)
                )));
            }
        }
        if cfg.tls_cert.is_some() != cfg.tls_key.is_some() {
            return Err(ConfigError::Invalid("tls_cert and tls_key go together: set both for HTTPS, or neither".into()));
        }
        if [&cfg.agent_ca, &cfg.agent_cert, &cfg.agent_key].iter().filter(|v| v.is_some()).count() % 3 != 0 {
            return Err(ConfigError::Invalid(
                "agent_ca, agent_cert and agent_key go together: set all three to reach node agents (kvmctl agent certs makes them), or none".into(),
            ));
        }
        for (key, v) in [("local_cpu_overcommit", &cfg.local_cpu_overcommit), ("local_memory_overcommit", &cfg.local_memory_overcommit)] {
            kvmctl_core::placement::Ratio::parse(v).map_err(|e| ConfigError::Invalid(format!("{key}: {e}")))?;
        }
        if cfg.stopped_vm_cleanup_hours > 0 && cfg.stopped_vm_warning_hours >= cfg.stopped_vm_cleanup_hours {
            return Err(ConfigError::Invalid(format!(
                "stopped_vm_warning_hours ({}) must be less than stopped_vm_cleanup_hours ({})",
                cfg.stopped_vm_warning_hours, cfg.stopped_vm_cleanup_hours
            )));
        }
        for pool in &cfg.user_network_pools {
            if kvmctl_core::rules::cidr_parse(pool).is_none() {
                return Err(ConfigError::Invalid(format!("user_network_pools: {pool:?} is not an IPv4 subnet such as 10.200.0.0/16")));
            }
        }
        if cfg.stopped_price_percent > 100 {
            return Err(ConfigError::Invalid(format!("stopped_price_percent = {} is over 100", cfg.stopped_price_percent)));
        }
        for (key, v) in [
            ("price_vcpu_hourly", &cfg.price_vcpu_hourly),
            ("price_memory_gib_hourly", &cfg.price_memory_gib_hourly),
            ("price_disk_gib_hourly", &cfg.price_disk_gib_hourly),
        ] {
            if kvmctl_core::metering::Money::parse(v).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "{key} = {v:?} is not a price; write a decimal such as 0.002 (at most 6 decimals)"
                )));
            }
        }
        Ok(cfg)
    }

    /// The local node's settings at its first registration.
    pub fn local_node_settings(&self) -> kvmctl_store::NodeSettings {
        let ratio = |s: &str, d: u32| kvmctl_core::placement::Ratio::parse(s).map(|r| r.0).unwrap_or(d);
        kvmctl_store::NodeSettings {
            cpu_overcommit: ratio(&self.local_cpu_overcommit, 200),
            memory_overcommit: ratio(&self.local_memory_overcommit, 100),
            reserved_cpus: self.local_reserved_cpus,
            reserved_memory_mib: self.local_reserved_memory_mib,
            labels: Default::default(),
        }
    }

    /// The default quota of users.
    pub fn quota_defaults(&self) -> kvmctl_core::QuotaLimits {
        kvmctl_core::QuotaLimits {
            vms: self.quota_vms,
            vcpus: self.quota_vcpus,
            memory_mib: self.quota_memory_mib,
            disk_gib: self.quota_disk_gib,
            forwards: self.quota_forwards,
        }
    }

    /// The forward pools `ssh`, `vnc` and `general`, checked: well-formed, above 1023, and
    /// not overlapping.
    pub fn port_pools(&self) -> Result<PortPools, String> {
        let pool = |name: &str, key: &str, range: &str| {
            kvmctl_netfw::pool::PortPool::parse(name, range).map_err(|e| format!("{key} = {range:?}: {e}"))
        };
        let pools = PortPools {
            ssh: pool("ssh", "ssh_port_range", &self.ssh_port_range)?,
            vnc: pool("vnc", "vnc_port_range", &self.vnc_port_range)?,
            general: pool("general", "general_port_range", &self.general_port_range)?,
        };
        kvmctl_netfw::pool::pools_check(&[pools.ssh.clone(), pools.vnc.clone(), pools.general.clone()])?;
        Ok(pools)
    }
}

/// The forward pools, by purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPools {
    pub ssh: kvmctl_netfw::pool::PortPool,
    pub vnc: kvmctl_netfw::pool::PortPool,
    pub general: kvmctl_netfw::pool::PortPool,
}

impl PortPools {
    pub fn get(&self, name: &str) -> Option<&kvmctl_netfw::pool::PortPool> {
        match name {
            "ssh" => Some(&self.ssh),
            "vnc" => Some(&self.vnc),
            "general" => Some(&self.general),
            _ => None,
        }
    }

    /// The configuration key that sets a pool's range.
    pub fn key(name: &str) -> &'static str {
        match name {
            "ssh" => "ssh_port_range",
            "vnc" => "vnc_port_range",
            _ => "general_port_range",
        }
    }

    /// The pool holding `port`, if any.
    pub fn holding(&self, port: u16) -> Option<&kvmctl_netfw::pool::PortPool> {
        [&self.ssh, &self.vnc, &self.general].into_iter().find(|p| p.contains(port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.toml");
        std::fs::write(&f, "socket = \"/tmp/a.sock\"\nlibvirt_uri = \"test:///default\"\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        let cfg = Config::load(Some(&f), env_of(&[("KVMCTL_LIBVIRT_URI", "qemu:///session")])).unwrap();
        assert_eq!(cfg.socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(cfg.libvirt_uri, "qemu:///session", "environment beats the file");
        assert_eq!(cfg.listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(cfg.database, PathBuf::from(DEFAULT_DATABASE));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.toml");
        std::fs::write(&f, "sockett = \"/x\"\n").unwrap();
        let e = Config::load(Some(&f), env_of(&[])).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        let e = Config::load(Some(&dir.path().join("missing.toml")), env_of(&[])).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        let empty = dir.path().join("empty.toml");
        std::fs::write(&empty, "").unwrap();
        let e = Config::load(Some(&empty), env_of(&[("KVMCTL_LISTEN", "nope")])).unwrap_err().to_string();
        assert!(e.contains("KVMCTL_LISTEN") && e.contains("127.0.0.1:8443"), "{e}");
        let e = Config::load(Some(&empty), env_of(&[("KVMCTL_GENERAL_PORT_RANGE", "2250-2300")])).unwrap_err().to_string();
        assert!(e.contains("overlap"), "{e}");
        let e = Config::load(Some(&empty), env_of(&[("KVMCTL_SSH_PORT_RANGE", "22-80")])).unwrap_err().to_string();
        assert!(e.contains("ssh_port_range"), "{e}");
    }
}
