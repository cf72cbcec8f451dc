//! A guest's console log and SSH sessions: where the serial console is logged, reading its
//! end (whatever the guest wrote), and logging in with the VM's key, the host key pinned at
//! the first login and checked against what cloud-init printed on the console.

use super::context::{Context, LOCAL};
use super::ssh;
use kvmctl_store::{Scope, VmRecord};
use kvmctl_types::Name;
use std::path::PathBuf;

/// The console log of a VM on the local node.
pub(crate) fn console_log(ctx: &Context, name: &Name) -> PathBuf {
    ctx.config.console_log_dir.join(format!("{name}.log"))
}

/// Most of a console log the daemon reads at once: the guest writes it, so only its end is
/// read, whatever its size.
pub(crate) const CONSOLE_TAIL_MAX: u64 = 1 << 20;

/// The last `CONSOLE_TAIL_MAX` bytes of a console log (empty when there is none), as text.
pub(crate) fn console_tail(path: &std::path::Path) -> std::io::Result<String> {
    file_tail(path, CONSOLE_TAIL_MAX)
}

/// The last `max` bytes of a file a guest writes (empty when there is none), as text: only
/// its end is read, whatever its size.
pub(crate) fn file_tail(path: &std::path::Path, max: u64) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The end of the VM's console log wherever its node keeps it: read here for the local
/// node, through the node's agent for another (`Ok(None)`: that node runs no agent).
pub(crate) async fn console_text(ctx: &Context, rec: &VmRecord) -> Result<Option<String>, kvmctl_core::Error> {
    if rec.node == LOCAL {
        let path = console_log(ctx, &rec.name);
        let name = rec.name.clone();
        return match super::context::blocking(move || console_tail(&path)).await? {
            Ok(t) => Ok(Some(t)),
            Err(e) => Err(kvmctl_core::Error::Unavailable(format!("cannot read the console log of {name}: {e}"))),
        };
    }
    let Some(agent) = ctx.node_agent(&rec.node).await? else { return Ok(None) };
    agent
        .console(&rec.name, CONSOLE_TAIL_MAX)
        .await
        .map(Some)
        .map_err(|e| kvmctl_core::Error::Unavailable(format!("cannot read the console log of {} on node {}: {e}", rec.name, rec.node)))
}

/// Where the VM's serial console is logged on its node: `console_log_dir` on the local node,
/// libvirt's own log directory (present on every libvirt host) on the others.
pub(crate) fn serial_log_on_node(ctx: &Context, rec: &VmRecord) -> PathBuf {
    if rec.node == LOCAL {
        console_log(ctx, &rec.name)
    } else {
        PathBuf::from(format!("/var/log/libvirt/qemu/{}-serial.log", rec.name))
    }
}

/// Logs in to the VM at `ip` with its key, holding it to its pinned host key; the first login
/// pins the key offered, after checking it against the fingerprints cloud-init printed on
/// the console when it printed any.
pub(crate) async fn ssh_session(ctx: &Context, rec: &VmRecord, ip: std::net::IpAddr) -> Result<ssh::Session, ssh::SshError> {
    let addr = std::net::SocketAddr::new(ip, 22);
    let pinned = match ctx.store.vm_get(&Scope::all(), &rec.name).await {
        Ok(Some(now)) => now.host_key,
        _ => rec.host_key.clone(),
    };
    let session = ssh::login(addr, &rec.ssh_user, &ssh::key_path(&ctx.config.key_dir, &rec.id), pinned.as_deref()).await?;
    if pinned.is_none() {
        let console = console_text(ctx, rec).await.ok().flatten().unwrap_or_default();
        let printed = console_fingerprints(&console);
        let source = if printed.is_empty() {
            "first use"
        } else if printed.contains(&session.1) {
            "console"
        } else {
            let offered = session.1.clone();
            session.close().await;
            return Err(ssh::SshError::HostKey { addr, pinned: printed.join(" or "), offered });
        };
        if let Err(e) = ctx.store.vm_host_key_pin(&rec.id, &session.1, source).await {
            tracing::error!(vm = %rec.name, error = %e, "cannot record the pinned host key");
            session.close().await;
            return Err(ssh::SshError::Session(addr, "cannot record the guest's host key; try again".into()));
        }
        tracing::info!(vm = %rec.name, fingerprint = %session.1, source, "host key pinned");
    }
    Ok(session)
}

/// The `SHA256:` fingerprints between cloud-init's "BEGIN SSH HOST KEY FINGERPRINTS" markers.
pub(crate) fn console_fingerprints(console: &str) -> Vec<String> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in console.lines() {
        if line.contains("BEGIN SSH HOST KEY FINGERPRINTS") {
            inside = true;
        } else if line.contains("END SSH HOST KEY FINGERPRINTS") {
            inside = false;
        } else if inside {
            out.extend(line.split_whitespace().filter(|w| w.starts_with("SHA256:")).map(str::to_owned));
        }
    }
    out
}

#[cfg(test)]
mod fingerprint_tests {
    #[test]
    fn reads_cloud_inits_fingerprint_block() {
        let console = "boot\nci-info: no\n<14>Nov 22 ec2: #############################################################\n\
            ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\nec2: 256 SHA256:AbC+/1 root@web (ED25519)\n\
            ec2: -----END SSH HOST KEY FINGERPRINTS-----\nSHA256:outside\n";
        assert_eq!(super::console_fingerprints(console), vec!["SHA256:AbC+/1".to_string()]);
        assert!(super::console_fingerprints("nothing here").is_empty());
    }
}
