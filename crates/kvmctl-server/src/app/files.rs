//! `vm cp`: files and directories into and out of a running guest over SFTP, as the VM's
//! user with the VM's key. One file or one directory level per request; the CLI walks trees.

use super::context::{parse_name, Context};
use super::vms;
use futures_util::StreamExt;
use kvmctl_core::Error;
use kvmctl_types::api::GuestFileEntry;
use kvmctl_types::Name;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A guest file's bytes as they are read, in chunks: nothing of it is held beyond one chunk.
pub type FileStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send>>;

/// What a path in the guest holds.
pub enum Download {
    /// The size the guest reports (only a hint: the guest may lie) and the bytes.
    File(u64, FileStream),
    Dir(Vec<GuestFileEntry>),
}

/// Bytes read from the guest per chunk, and how long one read may take.
const CHUNK: usize = 256 * 1024;
const READ_STALL: std::time::Duration = std::time::Duration::from_secs(60);

use kvmctl_types::guest_entry_name_ok as entry_name_ok;

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
    let opened = async {
        let meta = sftp.metadata(path).await.map_err(|e| Error::NotFound { kind: "guest file", name: format!("{name}:{path} ({e})") })?;
        if meta.is_dir() {
            return list_dir(&session, &name, path).await.map(Err);
        }
        let file = sftp.open(path).await.map_err(|e| Error::Conflict(format!("cannot open {path} in {name}: {e}")))?;
        Ok(Ok((meta.len(), file)))
    }
    .await;
    let (size, file) = match opened {
        Ok(Ok(f)) => f,
        Ok(Err(entries)) => {
            drop(sftp);
            session.close().await;
            return Ok(Download::Dir(entries));
        }
        Err(e) => {
            drop(sftp);
            session.close().await;
            return Err(e);
        }
    };
    // The stream owns the file, the SFTP session and the login (and so the session's place)
    // until the last chunk is read or the client goes away.
    let state = (file, Some((sftp, session)), name.to_string());
    let stream = futures_util::stream::unfold(state, |(mut file, mut held, name)| async move {
        let (sftp, session) = held.take()?;
        let mut buf = vec![0u8; CHUNK];
        match tokio::time::timeout(READ_STALL, file.read(&mut buf)).await {
            Ok(Ok(0)) => {
                drop(sftp);
                session.close().await;
                None
            }
            Ok(Ok(n)) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), (file, Some((sftp, session)), name)))
            }
            Ok(Err(e)) => Some((Err(std::io::Error::other(format!("reading from {name} failed: {e}"))), (file, None, name))),
            Err(_) => Some((Err(std::io::Error::other(format!("{name} sent nothing for 60 s"))), (file, None, name))),
        }
    });
    Ok(Download::File(size, Box::pin(stream)))
}

/// Most entries of one guest directory listed.
const LISTING_MAX: usize = 10_000;

/// Reads the guest's directory at `path` a reply at a time, so a guest that sends endless or
/// hostile entries is refused before they are all read: every name is checked as it comes
/// (one plain path component) and the listing ends after `LISTING_MAX` entries.
async fn list_dir(session: &super::ssh::Session, vm: &Name, path: &str) -> Result<Vec<GuestFileEntry>, Error> {
    let failed = |e: String| Error::Conflict(format!("cannot list {path} in {vm}: {e}"));
    let raw = session.sftp_raw().await.map_err(failed)?;
    let handle = raw.opendir(path).await.map_err(|e| failed(e.to_string()))?.handle;
    let mut out = Vec::new();
    let result = loop {
        match raw.readdir(handle.as_str()).await {
            Ok(batch) => {
                let entries = batch.files.into_iter().map(|f| (f.filename, f.attrs.is_dir(), f.attrs.size.unwrap_or(0)));
                if let Err(e) = listing_add(&mut out, vm, path, entries) {
                    break Err(e);
                }
            }
            Err(russh_sftp::client::error::Error::Status(s)) if s.status_code == russh_sftp::protocol::StatusCode::Eof => break Ok(()),
            Err(e) => break Err(failed(e.to_string())),
        }
    };
    let _ = raw.close(handle).await;
    result?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Adds a guest's directory entries to a listing, refusing names that are not one plain
/// path component and listings longer than `LISTING_MAX`.
fn listing_add(
    out: &mut Vec<GuestFileEntry>,
    vm: &Name,
    path: &str,
    entries: impl Iterator<Item = (String, bool, u64)>,
) -> Result<(), Error> {
    for (entry, dir, size) in entries {
        if entry == "." || entry == ".." {
            continue;
        }
        if !entry_name_ok(&entry) {
            return Err(Error::Conflict(format!(
                "{vm} listed an entry of {path} that is not a plain file name ({:?}); refusing the listing",
                entry.chars().take(64).collect::<String>()
            )));
        }
        if out.len() >= LISTING_MAX {
            return Err(Error::Conflict(format!(
                "{path} in {vm} has more than {LISTING_MAX} entries; copy it as an archive (vm exec {vm} -- tar ...)"
            )));
        }
        out.push(GuestFileEntry { name: entry, dir, size });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_names_pass() {
        for ok in ["a", "file.txt", ".hidden", "..x", "x..", "ü"] {
            assert!(super::entry_name_ok(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "a\0b", &"x".repeat(256)] {
            assert!(!super::entry_name_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_hostile_listing_is_refused_whole() {
        let vm = kvmctl_types::Name::parse("vm").unwrap();
        let listing = |entries: Vec<(String, bool, u64)>| {
            let mut out = Vec::new();
            super::listing_add(&mut out, &vm, "/d", entries.into_iter()).map(|()| out)
        };
        let ok = listing(vec![(".".into(), true, 0), ("b".into(), false, 1), ("a".into(), true, 0)]).unwrap();
        assert_eq!(ok.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        for bad in ["../../root/.ssh/authorized_keys", "/etc/shadow"] {
            let e = listing(vec![("a".into(), false, 1), (bad.into(), false, 1)]).unwrap_err();
            assert!(e.to_string().contains("not a plain file name"), "{e}");
        }
        let many = (0..=super::LISTING_MAX).map(|i| (format!("f{i}"), false, 0)).collect();
        assert!(listing(many).unwrap_err().to_string().contains("more than"));
    }
}
