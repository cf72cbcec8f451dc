//! SSH to guests with the VM's own key, through russh (no `ssh` binary): key generation,
//! login, and running one command.
//!
//! Each VM gets an ed25519 key made by the daemon at create; its public half goes into the
//! seed for the VM's user, its private half lives in `key_dir/<vm id>` (mode 0600) and is
//! removed with the VM. On images with cloud-init the guest's host key is made here too and
//! handed over in the seed, so its fingerprint is pinned before the guest boots (source
//! `seed`); on other images it is pinned at the first login, checked against the fingerprints
//! cloud-init prints on the serial console when there are any, trusted on first use
//! otherwise. Every login requires the pinned key.

use kvmctl_core::Error;
use russh::keys::{Algorithm, PrivateKey, PrivateKeyWithHashAlg};
use russh::{client, ChannelMsg, Disconnect};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A fresh ed25519 key: the private key in OpenSSH format, the public key line, and the
/// public key's SHA-256 fingerprint (the form the SSH handshake's check compares).
fn key_make(comment: &str) -> Result<(String, String, String), Error> {
    let mut key = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519)
        .map_err(|e| Error::Internal(format!("cannot make an SSH key: {e}")))?;
    key.set_comment(comment);
    let fingerprint = key.public_key().fingerprint(russh::keys::HashAlg::Sha256).to_string();
    let private =
        key.to_openssh(russh::keys::ssh_key::LineEnding::LF).map_err(|e| Error::Internal(format!("cannot encode an SSH key: {e}")))?;
    let public = key.public_key().to_openssh().map_err(|e| Error::Internal(format!("cannot encode an SSH key: {e}")))?;
    Ok((private.to_string(), public, fingerprint))
}

/// A fresh key: the private key in OpenSSH format, and the public key line.
pub(crate) fn key_generate(comment: &str) -> Result<(String, String), Error> {
    key_make(comment).map(|(private, public, _)| (private, public))
}

/// A host key for a guest: the key for the seed, and the fingerprint pinned before the
/// guest boots.
pub(crate) fn host_key_generate(vm: &str) -> Result<(kvmctl_cloudinit::seed::HostKey, String), Error> {
    let (private_openssh, public, fingerprint) = key_make(&format!("root@{vm}"))?;
    Ok((kvmctl_cloudinit::seed::HostKey { private_openssh, public }, fingerprint))
}

pub(crate) fn key_path(dir: &Path, vm_id: &kvmctl_types::VmId) -> PathBuf {
    dir.join(vm_id.to_string())
}

/// Writes the VM's private key, readable by root only.
pub(crate) fn key_store(path: &Path, private: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(private.as_bytes()).map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))
}

/// Checks the guest's host key against the pinned fingerprint, when there is one, and
/// remembers the key it was offered.
struct HostKeyCheck {
    pinned: Option<String>,
    offered: Arc<std::sync::Mutex<Option<String>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &russh::keys::PublicKey) -> Result<bool, Self::Error> {
        let fp = key.fingerprint(russh::keys::HashAlg::Sha256).to_string();
        let ok = self.pinned.as_ref().is_none_or(|p| *p == fp);
        if let Ok(mut o) = self.offered.lock() {
            *o = Some(fp);
        }
        Ok(ok)
    }
}

/// A logged-in SSH session to a guest, and the fingerprint of the host key it offered.
pub struct Session(client::Handle<HostKeyCheck>, pub String, Option<super::context::SessionGuard>);

/// Why a login did not work, for the readiness stages and error messages.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SshError {
    #[error("cannot reach {0}: {1}")]
    Connect(SocketAddr, String),
    #[error("{user}@{addr} refused the VM's key")]
    Refused { user: String, addr: SocketAddr },
    #[error("SSH session to {0} failed: {1}")]
    Session(SocketAddr, String),
    #[error(
        "{addr} offered host key {offered}, not the pinned {pinned}; refusing to log in (the guest was replaced, or someone is in between)"
    )]
    HostKey { addr: SocketAddr, pinned: String, offered: String },
}

/// Logs in as `user` with the key in `key_file`; with `pinned`, only to a guest offering that
/// host key.
pub(crate) async fn login(addr: SocketAddr, user: &str, key_file: &Path, pinned: Option<&str>) -> Result<Session, SshError> {
    let pem = std::fs::read_to_string(key_file)
        .map_err(|e| SshError::Session(addr, format!("cannot read the VM's key {}: {e}", key_file.display())))?;
    let key = PrivateKey::from_openssh(&pem).map_err(|e| SshError::Session(addr, format!("the VM's key is unreadable: {e}")))?;
    // A command may be silent for long (`cloud-init status --wait` on a loaded host): the
    // session stays up while the guest answers keepalives, and ends after 4 unanswered ones.
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        ..Default::default()
    });
    let offered = Arc::new(std::sync::Mutex::new(None));
    let check = HostKeyCheck { pinned: pinned.map(str::to_owned), offered: offered.clone() };
    let connect = tokio::time::timeout(Duration::from_secs(10), client::connect(config, addr, check));
    let offered_fp = || offered.lock().ok().and_then(|o| o.clone()).unwrap_or_default();
    let mut handle = match connect.await {
        Ok(Ok(h)) => h,
        Ok(Err(_)) if pinned.is_some_and(|p| !offered_fp().is_empty() && p != offered_fp()) => {
            return Err(SshError::HostKey { addr, pinned: pinned.unwrap_or_default().to_owned(), offered: offered_fp() })
        }
        Ok(Err(e)) => return Err(SshError::Connect(addr, e.to_string())),
        Err(_) => return Err(SshError::Connect(addr, "no answer within 10 s".into())),
    };
    let auth = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), None))
        .await
        .map_err(|e| SshError::Session(addr, e.to_string()))?;
    if !auth.success() {
        return Err(SshError::Refused { user: user.to_owned(), addr });
    }
    Ok(Session(handle, offered_fp(), None))
}

/// What a command printed and how it ended.
pub(crate) struct Output {
    pub exit_status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// More than the limit was printed: the output stops there and the channel was closed.
    pub truncated: bool,
}

/// Appends what fits under `limit` bytes in all; false when something did not fit.
fn keep_within(buf: &mut Vec<u8>, data: &[u8], used: &mut usize, limit: usize) -> bool {
    let room = limit.saturating_sub(*used);
    let take = data.len().min(room);
    buf.extend_from_slice(&data[..take]);
    *used += take;
    take == data.len()
}

impl Session {
    /// Runs `command` through the guest's shell and collects at most `limit` bytes of its
    /// output (stdout and stderr together). The guest decides how much it prints, so past
    /// the limit the channel is closed and the output marked truncated; nothing more is read.
    pub(crate) async fn exec(&self, command: &str, limit: usize) -> Result<Output, String> {
        let mut channel = self.0.channel_open_session().await.map_err(|e| e.to_string())?;
        channel.exec(true, command).await.map_err(|e| e.to_string())?;
        let mut out = Output { exit_status: -1, stdout: Vec::new(), stderr: Vec::new(), truncated: false };
        let mut used = 0usize;
        while let Some(msg) = channel.wait().await {
            let fits = match msg {
                ChannelMsg::Data { data } => keep_within(&mut out.stdout, &data, &mut used, limit),
                ChannelMsg::ExtendedData { data, ext: 1 } => keep_within(&mut out.stderr, &data, &mut used, limit),
                ChannelMsg::ExitStatus { exit_status } => {
                    out.exit_status = exit_status as i32;
                    true
                }
                ChannelMsg::ExitSignal { .. } => {
                    out.exit_status = 255;
                    true
                }
                _ => true,
            };
            if !fits {
                out.truncated = true;
                out.exit_status = -1;
                let _ = channel.close().await;
                break;
            }
        }
        Ok(out)
    }

    /// A PTY channel running a shell, or `command` when given.
    pub(crate) async fn shell(self, command: Option<&str>, cols: u32, rows: u32) -> Result<Shell, String> {
        let channel = self.0.channel_open_session().await.map_err(|e| e.to_string())?;
        channel.request_pty(true, "xterm-256color", cols, rows, 0, 0, &[]).await.map_err(|e| e.to_string())?;
        match command {
            Some(c) => channel.exec(true, c).await.map_err(|e| e.to_string())?,
            None => channel.request_shell(true).await.map_err(|e| e.to_string())?,
        }
        Ok(Shell { channel, _session: self })
    }

    /// The SFTP subsystem; the session lives as long as the returned handle.
    pub(crate) async fn sftp(self) -> Result<(russh_sftp::client::SftpSession, Session), String> {
        let channel = self.0.channel_open_session().await.map_err(|e| e.to_string())?;
        channel.request_subsystem(true, "sftp").await.map_err(|e| e.to_string())?;
        let sftp = russh_sftp::client::SftpSession::new(channel.into_stream()).await.map_err(|e| format!("SFTP: {e}"))?;
        Ok((sftp, self))
    }

    /// The SFTP subsystem at the protocol level, on a channel of its own: for reading a
    /// directory a reply at a time (the high-level `read_dir` holds every entry the guest
    /// sends before returning).
    pub(crate) async fn sftp_raw(&self) -> Result<russh_sftp::client::RawSftpSession, String> {
        let channel = self.0.channel_open_session().await.map_err(|e| e.to_string())?;
        channel.request_subsystem(true, "sftp").await.map_err(|e| e.to_string())?;
        let raw = russh_sftp::client::RawSftpSession::new(channel.into_stream());
        raw.init().await.map_err(|e| format!("SFTP: {e}"))?;
        Ok(raw)
    }

    /// Counts this session against the VM's and the user's limits while it lives.
    pub(crate) fn hold(mut self, guard: super::context::SessionGuard) -> Self {
        self.2 = Some(guard);
        self
    }

    pub(crate) async fn close(self) {
        let _ = self.0.disconnect(Disconnect::ByApplication, "", "en").await;
    }
}

/// An interactive channel; the session lives as long as it does.
pub struct Shell {
    pub channel: russh::Channel<client::Msg>,
    _session: Session,
}

#[cfg(test)]
mod tests {
    #[test]
    fn output_is_kept_within_the_limit_across_streams() {
        let (mut out, mut err, mut used) = (Vec::new(), Vec::new(), 0);
        assert!(super::keep_within(&mut out, b"hello", &mut used, 8));
        assert!(!super::keep_within(&mut err, b"world", &mut used, 8), "the limit counts both streams");
        assert_eq!((out.as_slice(), err.as_slice(), used), (&b"hello"[..], &b"wor"[..], 8));
        assert!(!super::keep_within(&mut out, b"x", &mut used, 8));
        assert_eq!(out.len() + err.len(), 8);
    }
}
