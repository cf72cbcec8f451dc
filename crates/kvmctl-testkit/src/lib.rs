//! What tests against the real libvirtd share: the environment `scripts/test.sh` exports,
//! cleanup that runs whatever happens to the test, and SSH to guests.

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
    let out = Command::new("ssh")
        .arg("-i")
        .arg(key)
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
