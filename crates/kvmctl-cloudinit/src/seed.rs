//! Rendering a VM's seed: `meta-data`, `user-data` (#cloud-config, merged with the user's
//! own user-data as a MIME multipart document) and `network-config` v2, packed as a NoCloud
//! (`cidata`) or config-drive v2 (`config-2`) ISO.
//!
//! Everything is validated before anything is rendered; a `SeedError` names the field.

use serde::Serialize;
use std::net::Ipv4Addr;

/// Largest user-supplied user-data accepted.
pub const USER_DATA_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct SeedError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> SeedError {
    SeedError { field: field.into(), message: message.into() }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkConfig {
    Dhcp,
    Static { address: Ipv4Addr, prefix: u8, gateway: Option<Ipv4Addr>, dns: Vec<Ipv4Addr> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFile {
    pub path: String,
    pub content: String,
    /// Octal mode, e.g. `0644`.
    pub permissions: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedSpec {
    pub instance_id: String,
    pub hostname: String,
    pub user: String,
    pub ssh_keys: Vec<String>,
    /// Passwordless sudo for the user.
    pub sudo: bool,
    /// The user's password as a SHA-512 crypt hash (`$6$...`, from `hash_password`), for
    /// console login; SSH password login stays off. The plain password is never stored.
    pub password_hash: Option<String>,
    pub packages: Vec<String>,
    pub write_files: Vec<WriteFile>,
    pub runcmd: Vec<String>,
    /// Commands run at every boot, early (cloud-init's `bootcmd`): mounting shared folders.
    pub bootcmd: Vec<String>,
    pub network: NetworkConfig,
    /// The user's own user-data (`#cloud-config` or a `#!` script), merged with ours.
    pub user_data: Option<String>,
    /// The guest's SSH host key, made by kvmctl so that its public half is pinned before the
    /// guest boots (cloud-init's `ssh_keys`; the guest's own keys are deleted).
    pub host_key: Option<HostKey>,
}

/// An ed25519 SSH host key handed to the guest: the private key in OpenSSH format and the
/// public key line.
#[derive(Clone, PartialEq, Eq)]
pub struct HostKey {
    pub private_openssh: String,
    pub public: String,
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKey").field("public", &self.public).finish_non_exhaustive()
    }
}

impl SeedSpec {
    /// A seed with one sudo user and its keys, DHCP, and nothing else to do at first boot.
    pub fn new(instance_id: &str, hostname: &str, user: &str, ssh_keys: Vec<String>) -> Self {
        SeedSpec {
            instance_id: instance_id.to_owned(),
            hostname: hostname.to_owned(),
            user: user.to_owned(),
            ssh_keys,
            sudo: true,
            password_hash: None,
            packages: vec![],
            write_files: vec![],
            runcmd: vec![],
            bootcmd: vec![],
            network: NetworkConfig::Dhcp,
            user_data: None,
            host_key: None,
        }
    }
}

/// The three NoCloud documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub meta_data: String,
    pub user_data: String,
    pub network_config: String,
}

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let t = s.trim_end_matches('=');
    if s.len() % 4 != 0 || s.len() - t.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(t.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in t.bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// An OpenSSH public key line: known type, base64 blob that decodes, and whose embedded
/// type matches the declared one.
pub fn ssh_key_check(line: &str) -> Result<(), String> {
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err("expected \"TYPE BASE64 [COMMENT]\" (an OpenSSH public key, e.g. the contents of ~/.ssh/id_ed25519.pub)".into());
    };
    if !KEY_TYPES.contains(&kind) {
        return Err(format!("unknown key type {kind:?}; expected one of {}", KEY_TYPES.join(", ")));
    }
    let bytes = base64_decode(blob).ok_or("the key data is not valid base64")?;
    let n = bytes.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).ok_or("the key data is truncated")?;
    let embedded = bytes.get(4..4 + n).ok_or("the key data is truncated")?;
    if embedded != kind.as_bytes() {
        return Err(format!("the key data says {:?} but the line says {kind:?}", String::from_utf8_lossy(embedded)));
    }
    if line.contains(['\n', '\r']) {
        return Err("a key must be on one line".into());
    }
    Ok(())
}

/// Hashes a password as SHA-512 crypt (`$6$`, 5000 rounds, random salt), the form
/// cloud-init's `passwd` and /etc/shadow take.
pub fn hash_password(plain: &str) -> Result<String, SeedError> {
    if plain.is_empty() || plain.len() > 256 || plain.contains(['\0', '\n']) {
        return Err(err("password", "must be 1-256 characters on one line"));
    }
    let params = sha_crypt::Sha512Params::new(5000).map_err(|e| err("password", format!("{e:?}")))?;
    sha_crypt::sha512_simple(plain, &params).map_err(|e| err("password", format!("cannot hash: {e:?}")))
}

/// A SHA-512 crypt hash: `$6$[rounds=N$]SALT$HASH` with an 86-character hash.
fn password_hash_check(h: &str) -> Result<(), String> {
    let parts: Vec<&str> = h.split('$').collect();
    let ok = parts.first() == Some(&"")
        && parts.get(1) == Some(&"6")
        && parts.last().is_some_and(|x| x.len() == 86 && x.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '/'))
        && (parts.len() == 4 || (parts.len() == 5 && parts[2].starts_with("rounds=")));
    ok.then_some(()).ok_or_else(|| "must be a SHA-512 crypt hash ($6$...); kvmctl never stores plain passwords".into())
}

fn check_hostname(h: &str) -> Result<(), SeedError> {
    let ok = !h.is_empty()
        && h.len() <= 63
        && h.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !h.starts_with('-')
        && !h.ends_with('-');
    ok.then_some(()).ok_or_else(|| err("hostname", "must be a DNS label: 1-63 of a-z, 0-9, '-', not starting or ending with '-'"))
}

fn check_user(u: &str) -> Result<(), SeedError> {
    let ok = !u.is_empty()
        && u.len() <= 32
        && u.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && u.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    ok.then_some(()).ok_or_else(|| err("user", "must be a Linux user name: 1-32 of a-z, 0-9, '_', '-', starting with a letter or '_'"))
}

#[derive(Serialize)]
struct CloudConfigUser<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sudo: Option<&'a str>,
    shell: &'a str,
    lock_passwd: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    passwd: Option<&'a str>,
    ssh_authorized_keys: &'a [String],
}

#[derive(Serialize)]
struct CloudConfigFile<'a> {
    path: &'a str,
    content: &'a str,
    permissions: &'a str,
}

#[derive(Serialize)]
struct CloudConfigSshKeys<'a> {
    ed25519_private: &'a str,
    ed25519_public: &'a str,
}

#[derive(Serialize)]
struct CloudConfig<'a> {
    hostname: &'a str,
    preserve_hostname: bool,
    users: Vec<CloudConfigUser<'a>>,
    ssh_pwauth: bool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    packages: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    write_files: Vec<CloudConfigFile<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    runcmd: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    bootcmd: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    ssh_deletekeys: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ssh_keys: Option<CloudConfigSshKeys<'a>>,
}

/// Validates `spec` and renders the three documents.
pub fn render(spec: &SeedSpec) -> Result<Seed, SeedError> {
    if spec.instance_id.is_empty() || spec.instance_id.len() > 128 || spec.instance_id.chars().any(|c| c.is_control() || c == '"') {
        return Err(err("instance_id", "must be 1-128 printable characters without quotes"));
    }
    check_hostname(&spec.hostname)?;
    check_user(&spec.user)?;
    for (i, k) in spec.ssh_keys.iter().enumerate() {
        ssh_key_check(k).map_err(|m| err(format!("ssh_keys[{i}]"), m))?;
    }
    if let Some(h) = &spec.password_hash {
        password_hash_check(h).map_err(|m| err("password", m))?;
    }
    for (i, f) in spec.write_files.iter().enumerate() {
        if !f.path.starts_with('/') || f.path.contains('\0') {
            return Err(err(format!("write_files[{i}].path"), "must be an absolute path"));
        }
        if !(f.permissions.len() == 4 && f.permissions.starts_with('0') && f.permissions[1..].chars().all(|c| ('0'..='7').contains(&c))) {
            return Err(err(format!("write_files[{i}].permissions"), "must be an octal mode like 0644"));
        }
    }
    if let NetworkConfig::Static { prefix, .. } = spec.network {
        if !(1..=32).contains(&prefix) {
            return Err(err("network.prefix", "must be 1-32"));
        }
    }
    if let Some(k) = &spec.host_key {
        if !k.public.starts_with("ssh-ed25519 ") {
            return Err(err("host_key", "must be an ssh-ed25519 key"));
        }
        ssh_key_check(&k.public).map_err(|m| err("host_key", m))?;
        let body = k.private_openssh.trim_end();
        if !body.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") || !body.ends_with("-----END OPENSSH PRIVATE KEY-----") {
            return Err(err("host_key", "the private key must be in OpenSSH format"));
        }
    }
    let theirs = spec.user_data.as_deref().map(user_data_check).transpose()?;

    let meta_data = serde_yaml::to_string(&serde_json::json!({ "instance-id": spec.instance_id, "local-hostname": spec.hostname }))
        .map_err(|e| err("meta_data", e.to_string()))?;
    // cloud-init (22.4, Debian 12) writes the public half of a given host key with mode 0600;
    // a public key is for everyone to read (the guest's users check it against a pin).
    let runcmd: Vec<String> = spec
        .host_key
        .as_ref()
        .map(|_| "chmod 0644 /etc/ssh/ssh_host_ed25519_key.pub".to_owned())
        .into_iter()
        .chain(spec.runcmd.iter().cloned())
        .collect();
    let ours = CloudConfig {
        hostname: &spec.hostname,
        preserve_hostname: false,
        users: vec![CloudConfigUser {
            name: &spec.user,
            sudo: spec.sudo.then_some("ALL=(ALL) NOPASSWD:ALL"),
            shell: "/bin/bash",
            lock_passwd: spec.password_hash.is_none(),
            passwd: spec.password_hash.as_deref(),
            ssh_authorized_keys: &spec.ssh_keys,
        }],
        ssh_pwauth: false,
        packages: &spec.packages,
        write_files: spec
            .write_files
            .iter()
            .map(|f| CloudConfigFile { path: &f.path, content: &f.content, permissions: &f.permissions })
            .collect(),
        runcmd: &runcmd,
        bootcmd: &spec.bootcmd,
        ssh_deletekeys: spec.host_key.as_ref().map(|_| true),
        ssh_keys: spec.host_key.as_ref().map(|k| CloudConfigSshKeys { ed25519_private: &k.private_openssh, ed25519_public: &k.public }),
    };
    let ours = format!("#cloud-config\n{}", serde_yaml::to_string(&ours).map_err(|e| err("user_data", e.to_string()))?);
    let user_data = match theirs {
        None => ours,
        Some(kind) => multipart(&ours, spec.user_data.as_deref().unwrap_or_default(), kind),
    };
    Ok(Seed { meta_data, user_data, network_config: network_config(&spec.network) })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UserDataKind {
    CloudConfig,
    Script,
}

fn user_data_check(ud: &str) -> Result<UserDataKind, SeedError> {
    if ud.len() > USER_DATA_MAX {
        return Err(err("user_data", format!("is {} bytes; the limit is {USER_DATA_MAX} (64 KiB)", ud.len())));
    }
    if let Some(body) = ud.strip_prefix("#cloud-config") {
        serde_yaml::from_str::<serde_yaml::Value>(body).map_err(|e| err("user_data", format!("is not valid YAML: {e}")))?;
        Ok(UserDataKind::CloudConfig)
    } else if ud.starts_with("#!") {
        Ok(UserDataKind::Script)
    } else {
        Err(err("user_data", "must start with #cloud-config or #! (a script)"))
    }
}

/// Ours first, theirs second, as a MIME multipart document: cloud-init applies both, and
/// theirs merges into ours (lists appended, keys they set win).
fn multipart(ours: &str, theirs: &str, kind: UserDataKind) -> String {
    // A boundary that cannot occur in either part, and that depends only on the input.
    let mut n = 0u32;
    let boundary = loop {
        let b = format!("==kvmctl-boundary-{n}==");
        if !ours.contains(&b) && !theirs.contains(&b) {
            break b;
        }
        n += 1;
    };
    let (ctype, name) = match kind {
        UserDataKind::CloudConfig => ("text/cloud-config", "user.yaml"),
        UserDataKind::Script => ("text/x-shellscript", "user.sh"),
    };
    let mut s = format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n");
    s += &format!("--{boundary}\nContent-Type: text/cloud-config; charset=\"utf-8\"\nMIME-Version: 1.0\nContent-Disposition: attachment; filename=\"kvmctl.yaml\"\n\n{ours}\n");
    s += &format!(
        "--{boundary}\nContent-Type: {ctype}; charset=\"utf-8\"\nMIME-Version: 1.0\nContent-Disposition: attachment; filename=\"{name}\"\n"
    );
    if kind == UserDataKind::CloudConfig {
        s += "Merge-Type: list(append)+dict(recurse_array,no_replace)+str()\n";
    }
    s += &format!("\n{theirs}\n--{boundary}--\n");
    s
}

fn network_config(n: &NetworkConfig) -> String {
    let eth = match n {
        NetworkConfig::Dhcp => serde_json::json!({ "match": { "name": "e*" }, "dhcp4": true }),
        NetworkConfig::Static { address, prefix, gateway, dns } => {
            let mut v = serde_json::json!({ "match": { "name": "e*" }, "dhcp4": false, "addresses": [format!("{address}/{prefix}")] });
            if let Some(g) = gateway {
                v["routes"] = serde_json::json!([{ "to": "default", "via": g.to_string() }]);
            }
            if !dns.is_empty() {
                v["nameservers"] = serde_json::json!({ "addresses": dns.iter().map(ToString::to_string).collect::<Vec<_>>() });
            }
            v
        }
    };
    serde_yaml::to_string(&serde_json::json!({ "version": 2, "ethernets": { "primary": eth } })).expect("JSON values serialise")
}

/// The NoCloud seed: `cidata` with `meta-data`, `user-data`, `network-config`.
pub fn nocloud_iso(seed: &Seed) -> Vec<u8> {
    crate::iso::build(
        "cidata",
        &[
            ("meta-data", seed.meta_data.as_bytes()),
            ("user-data", seed.user_data.as_bytes()),
            ("network-config", seed.network_config.as_bytes()),
        ],
    )
    .expect("fixed names and label are valid")
}

/// The config-drive v2 seed (cloudbase-init on Windows, and cloud-init's ConfigDrive).
pub fn config_drive_iso(spec: &SeedSpec, seed: &Seed) -> Vec<u8> {
    let keys: serde_json::Map<String, serde_json::Value> =
        spec.ssh_keys.iter().enumerate().map(|(i, k)| (format!("key-{i}"), serde_json::Value::String(k.clone()))).collect();
    let meta = serde_json::json!({
        "uuid": spec.instance_id,
        "hostname": spec.hostname,
        "name": spec.hostname,
        "public_keys": keys,
        "admin_username": spec.user,
    });
    let network = match &spec.network {
        NetworkConfig::Dhcp => {
            serde_json::json!({ "links": [{ "id": "eth0", "type": "phy" }], "networks": [{ "id": "n0", "link": "eth0", "type": "ipv4_dhcp" }], "services": [] })
        }
        NetworkConfig::Static { address, prefix, gateway, dns } => {
            let mask = if *prefix == 0 { 0 } else { u32::MAX << (32 - *prefix as u32) };
            let mut net = serde_json::json!({ "id": "n0", "link": "eth0", "type": "ipv4", "ip_address": address.to_string(), "netmask": Ipv4Addr::from(mask).to_string() });
            if let Some(g) = gateway {
                net["routes"] = serde_json::json!([{ "network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": g.to_string() }]);
            }
            let services: Vec<_> = dns.iter().map(|d| serde_json::json!({ "type": "dns", "address": d.to_string() })).collect();
            serde_json::json!({ "links": [{ "id": "eth0", "type": "phy" }], "networks": [net], "services": services })
        }
    };
    let meta = serde_json::to_string_pretty(&meta).expect("serialises");
    let network = serde_json::to_string_pretty(&network).expect("serialises");
    crate::iso::build(
        "config-2",
        &[
            ("openstack/latest/meta_data.json", meta.as_bytes()),
            ("openstack/latest/user_data", seed.user_data.as_bytes()),
            ("openstack/latest/network_data.json", network.as_bytes()),
        ],
    )
    .expect("fixed names and label are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOxUWba4YdBS5XkAif3ox+1YEyWpPoBfVHn6xdpQ7/F+ test@kvmctl";

    pub(crate) fn spec() -> SeedSpec {
        SeedSpec::new("6f1c2a1e-8d4b-4c1e-9a57-0c1d2e3f4a5b", "web-1", "alice", vec![KEY.into()])
    }

    #[test]
    fn ssh_keys_are_parsed() {
        assert_eq!(ssh_key_check(KEY), Ok(()));
        assert!(ssh_key_check("ssh-ed25519").unwrap_err().contains("TYPE BASE64"));
        assert!(ssh_key_check("ssh-dsa AAAA x").unwrap_err().contains("unknown key type"));
        assert!(ssh_key_check("ssh-ed25519 !!!! x").unwrap_err().contains("base64"));
        // An RSA blob labelled ed25519.
        let rsa_blob = "AAAAB3NzaC1yc2EAAAADAQABAAABAQC7";
        assert!(ssh_key_check(&format!("ssh-ed25519 {rsa_blob}")).is_err());
    }

    #[test]
    fn rejections_name_the_field() {
        let mut s = spec();
        s.ssh_keys.push("not a key".into());
        assert_eq!(render(&s).unwrap_err().field, "ssh_keys[1]");
        let mut s = spec();
        s.user_data = Some("#cloud-config\nusers: [unclosed".into());
        let e = render(&s).unwrap_err();
        assert_eq!((e.field.as_str(), e.message.contains("not valid YAML")), ("user_data", true));
        let mut s = spec();
        s.user_data = Some(format!("#!/bin/sh\n{}", "x".repeat(USER_DATA_MAX)));
        assert!(render(&s).unwrap_err().message.contains("64 KiB"));
        let mut s = spec();
        s.user_data = Some("hello".into());
        assert!(render(&s).unwrap_err().message.contains("#cloud-config or #!"));
        let mut s = spec();
        s.hostname = "Web_1".into();
        assert_eq!(render(&s).unwrap_err().field, "hostname");
        let mut s = spec();
        s.user = "root; rm".into();
        assert_eq!(render(&s).unwrap_err().field, "user");
    }

    #[test]
    fn documents_parse_and_say_what_we_asked() {
        let seed = render(&spec()).unwrap();
        let meta: serde_yaml::Value = serde_yaml::from_str(&seed.meta_data).unwrap();
        assert_eq!(meta["local-hostname"], "web-1");
        assert!(seed.user_data.starts_with("#cloud-config\n"));
        let ud: serde_yaml::Value = serde_yaml::from_str(&seed.user_data).unwrap();
        assert_eq!(ud["users"][0]["name"], "alice");
        assert_eq!(ud["users"][0]["ssh_authorized_keys"][0], KEY);
        assert_eq!(ud["users"][0]["sudo"], "ALL=(ALL) NOPASSWD:ALL");
        let net: serde_yaml::Value = serde_yaml::from_str(&seed.network_config).unwrap();
        assert_eq!(net["version"], 2);
        assert_eq!(net["ethernets"]["primary"]["dhcp4"], true);
    }

    #[test]
    fn a_host_key_replaces_the_guests_own() {
        let mut s = spec();
        let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        s.host_key = Some(HostKey { private_openssh: private.into(), public: KEY.into() });
        let ud: serde_yaml::Value = serde_yaml::from_str(&render(&s).unwrap().user_data).unwrap();
        assert_eq!(ud["ssh_deletekeys"], true);
        assert_eq!(ud["ssh_keys"]["ed25519_private"], private);
        assert_eq!(ud["ssh_keys"]["ed25519_public"], KEY);
        assert_eq!(ud["runcmd"][0], "chmod 0644 /etc/ssh/ssh_host_ed25519_key.pub", "the public half readable by all");
        assert!(!format!("{s:?}").contains("BEGIN OPENSSH"), "Debug never shows the private key");
        s.host_key = Some(HostKey { private_openssh: "not a key".into(), public: KEY.into() });
        assert_eq!(render(&s).unwrap_err().field, "host_key");
        // Without one, the guest makes its own and nothing about host keys is said.
        let ud = render(&spec()).unwrap().user_data;
        assert!(!ud.contains("ssh_keys") && !ud.contains("ssh_deletekeys") && !ud.contains("chmod"));
    }

    #[test]
    fn static_network_and_yaml_metacharacters_survive() {
        let mut s = spec();
        s.network = NetworkConfig::Static {
            address: [10, 0, 0, 5].into(),
            prefix: 24,
            gateway: Some([10, 0, 0, 1].into()),
            dns: vec![[10, 0, 0, 1].into()],
        };
        s.runcmd = vec!["echo 'a: b' # not a comment \"quoted\" {x: [y]}".into()];
        s.write_files = vec![WriteFile { path: "/etc/motd".into(), content: "key: value\n- list\n".into(), permissions: "0644".into() }];
        let seed = render(&s).unwrap();
        let ud: serde_yaml::Value = serde_yaml::from_str(&seed.user_data).unwrap();
        assert_eq!(ud["runcmd"][0], s.runcmd[0].as_str());
        assert_eq!(ud["write_files"][0]["content"], "key: value\n- list\n");
        let net: serde_yaml::Value = serde_yaml::from_str(&seed.network_config).unwrap();
        assert_eq!(net["ethernets"]["primary"]["addresses"][0], "10.0.0.5/24");
        assert_eq!(net["ethernets"]["primary"]["routes"][0]["via"], "10.0.0.1");
    }

    #[test]
    fn user_data_is_merged_as_multipart() {
        let mut s = spec();
        s.user_data = Some("#!/bin/sh\necho hi\n".into());
        let ud = render(&s).unwrap().user_data;
        assert!(ud.starts_with("Content-Type: multipart/mixed; boundary=\"==kvmctl-boundary-0==\""));
        assert!(ud.contains("text/x-shellscript") && ud.contains("echo hi") && ud.contains("ssh_authorized_keys"));
        assert!(ud.trim_end().ends_with("--==kvmctl-boundary-0==--"));
        // A boundary that appears in the user's data is not used.
        s.user_data = Some("#!/bin/sh\necho ==kvmctl-boundary-0==\n".into());
        assert!(render(&s).unwrap().user_data.contains("boundary=\"==kvmctl-boundary-1==\""));
        s.user_data = Some("#cloud-config\npackages: [htop]\n".into());
        let ud = render(&s).unwrap().user_data;
        assert!(ud.contains("text/cloud-config; charset=\"utf-8\"\nMIME-Version: 1.0\nContent-Disposition: attachment; filename=\"user.yaml\"\nMerge-Type: list(append)"));
    }

    #[test]
    fn passwords_are_stored_only_as_sha512_crypt() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$6$"), "{h}");
        assert!(sha_crypt::sha512_check("correct horse", &h).is_ok());
        let mut s = spec();
        s.password_hash = Some(h.clone());
        let ud = render(&s).unwrap().user_data;
        assert!(ud.contains(&h) && !ud.contains("correct horse"));
        let v: serde_yaml::Value = serde_yaml::from_str(&ud).unwrap();
        assert_eq!(v["users"][0]["lock_passwd"], false);
        assert_eq!(v["ssh_pwauth"], false);
        s.password_hash = Some("hunter2".into());
        assert_eq!(render(&s).unwrap_err().field, "password");
        assert!(hash_password("").is_err());
    }

    #[test]
    fn seeds_are_deterministic() {
        let seed = render(&spec()).unwrap();
        assert_eq!(nocloud_iso(&seed), nocloud_iso(&render(&spec()).unwrap()));
        let cd = config_drive_iso(&spec(), &seed);
        assert_eq!(&cd[32808..32816], b"config-2");
        assert_eq!(&nocloud_iso(&seed)[32808..32814], b"cidata");
    }
}
