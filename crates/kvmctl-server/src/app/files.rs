//! `vm cp`: files and directories into and out of a running guest over SFTP, as the VM's
//! user with the VM's key. One file or one directory level per request; the CLI walks trees.

use super::{parse_name, vms, Context};
use futures_util::StreamExt;
use kvmctl_core::Error;
use kvmctl_types::api::GuestFileEntry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a path in the guest holds.
pub enum Download {
    File(Vec<u8>),
    Dir(Vec<GuestFileEntry>),
}

fn guest_path(path: &str) -> Result<&str, Error> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(Error::invalid("path", format!("{path:?} is not an absolute path in the guest")));
    }
    Ok(path)
}

/// Writes `body` to the file at `path` (created or truncated), or makes the directory
/// `path` when `dir` (an existing one is fine).
pub async fn vm_file_put<S, E>(
    ctx: &Context,
    caller: &kvmctl_core::Caller,
    name: &str,
    path: &str,
    dir: bool,
    mut body: S,
) -> Result<u64, Error>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let name = parse_name("name", name)?;
    let path = guest_path(path)?;
    let (sftp, session) = vms::vm_login(ctx, caller, &name).await?.sftp().await.map_err(|e| Error::Unavailable(format!("{name}: {e}")))?;
    let failed = |what: &str, e: &dyn std::fmt::Display| Error::Conflict(format!("cannot {what} {path} in {name}: {e}"));
    let result = async {
        if dir {
            if !matches!(sftp.metadata(path).await, Ok(m) if m.is_dir()) {
                sftp.create_dir(path).await.map_err(|e| failed("create the directory", &e))?;
            }
            return Ok(0);
        }
        let mut file = sftp.create(path).await.map_err(|e| failed("create", &e))?;
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::invalid("body", format!("the upload broke off: {e}")))?;
            file.write_all(&chunk).await.map_err(|e| failed("write", &e))?;
            written += chunk.len() as u64;
        }
        file.shutdown().await.map_err(|e| failed("finish writing", &e))?;
        Ok(written)
    }
    .await;
    drop(sftp);
    session.close().await;
    result
}

/// The file at `path`, or the listing of the directory at `path`.
pub async fn vm_file_get(ctx: &Context, caller: &kvmctl_core::Caller, name: &str, path: &str) -> Result<Download, Error> {
    let name = parse_name("name", name)?;
    let path = guest_path(path)?;
    let (sftp, session) = vms::vm_login(ctx, caller, &name).await?.sftp().await.map_err(|e| Error::Unavailable(format!("{name}: {e}")))?;
    let result = async {
        let meta = sftp.metadata(path).await.map_err(|e| Error::NotFound { kind: "guest file", name: format!("{name}:{path} ({e})") })?;
        if meta.is_dir() {
            let entries = sftp.read_dir(path).await.map_err(|e| Error::Conflict(format!("cannot list {path} in {name}: {e}")))?;
            let mut out: Vec<GuestFileEntry> = entries
                .filter(|e| e.file_name() != "." && e.file_name() != "..")
                .map(|e| GuestFileEntry { name: e.file_name(), dir: e.metadata().is_dir(), size: e.metadata().len() })
                .collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(Download::Dir(out));
        }
        let mut file = sftp.open(path).await.map_err(|e| Error::Conflict(format!("cannot open {path} in {name}: {e}")))?;
        let mut data = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut data).await.map_err(|e| Error::Conflict(format!("cannot read {path} in {name}: {e}")))?;
        Ok(Download::File(data))
    }
    .await;
    drop(sftp);
    session.close().await;
    result
}
