//! Guest access for `kvmctl vm`: quoting a command for the guest's shell, the terminal's
//! size, and copying files in and out (`kvmctl vm cp`), where the guest is not trusted.

use kvmctl_client::Client;

/// One argument as the guest's shell reads it back unchanged.
pub(crate) fn shell_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// The local terminal's size, 80x24 when it has none.
pub(crate) fn terminal_size() -> (u16, u16) {
    // SAFETY: TIOCGWINSZ fills a winsize we own.
    unsafe {
        let mut w: libc::winsize = std::mem::zeroed();
        if libc::ioctl(1, libc::TIOCGWINSZ, &mut w) == 0 && w.ws_col > 0 {
            return (w.ws_col, w.ws_row);
        }
    }
    (80, 24)
}

/// Percent-encodes a query parameter value.
pub(crate) fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// `NAME:/PATH` as (VM, path); `None` for a local path.
pub(crate) fn guest_side(arg: &str) -> Option<(&str, &str)> {
    let (vm, path) = arg.split_once(':')?;
    (kvmctl_types::Name::parse(vm).is_ok() && path.starts_with('/')).then_some((vm, path))
}

/// Copies a file or tree at `path` in the VM to `local`; returns the bytes copied.
///
/// The guest is not trusted: every name it lists must be one plain path component (else the
/// copy stops), files are streamed to disk, and nothing is written through a symlink: files
/// are opened with `O_NOFOLLOW`, and a directory that exists must be a real one.
pub(crate) fn download<'a>(
    client: &'a Client,
    vm: &'a str,
    path: &'a str,
    local: &'a std::path::Path,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<u64>> + 'a>> {
    Box::pin(async move {
        // The file is made only once the guest says `path` is a file.
        let mut out = LazyFile { path: local, file: None };
        match client.vm_file_download(vm, path, &mut out).await? {
            kvmctl_client::GuestDownload::File(n) => {
                if out.file.is_none() {
                    out.open().map_err(|e| anyhow::anyhow!("cannot write {}: {e}", local.display()))?;
                }
                Ok(n)
            }
            kvmctl_client::GuestDownload::Dir(entries) => {
                dir_ensure(local)?;
                let mut total = 0;
                for e in entries {
                    if !kvmctl_types::guest_entry_name_ok(&e.name) {
                        anyhow::bail!(
                            "{vm} listed {:?} in {path}, which is not a plain file name; refusing to copy it (the guest may be hostile)",
                            e.name
                        );
                    }
                    total += download(client, vm, &format!("{}/{}", path.trim_end_matches('/'), e.name), &local.join(&e.name)).await?;
                }
                Ok(total)
            }
        }
    })
}

/// Makes `dir` unless it is a directory already; a symlink there is refused, never followed.
fn dir_ensure(dir: &std::path::Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_dir() => Ok(()),
        Ok(m) if m.file_type().is_symlink() => anyhow::bail!("{} is a symlink; refusing to copy into it", dir.display()),
        Ok(_) => anyhow::bail!("{} exists and is not a directory", dir.display()),
        Err(_) => std::fs::create_dir(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display())),
    }
}

/// A local file opened on the first write, without following a symlink at its name.
struct LazyFile<'a> {
    path: &'a std::path::Path,
    file: Option<tokio::fs::File>,
}

impl LazyFile<'_> {
    fn open(&mut self) -> std::io::Result<&mut tokio::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        if self.file.is_none() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(self.path)
                .map_err(|e| {
                    if e.raw_os_error() == Some(libc::ELOOP) {
                        std::io::Error::other("it is a symlink; refusing to write through it")
                    } else {
                        e
                    }
                })?;
            self.file = Some(tokio::fs::File::from_std(f));
        }
        Ok(self.file.as_mut().expect("just opened"))
    }
}

impl tokio::io::AsyncWrite for LazyFile<'_> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let f = match self.open() {
            Ok(f) => f,
            Err(e) => return std::task::Poll::Ready(Err(e)),
        };
        std::pin::Pin::new(f).poll_write(cx, buf)
    }
    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        match self.file.as_mut() {
            Some(f) => std::pin::Pin::new(f).poll_flush(cx),
            None => std::task::Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        match self.file.as_mut() {
            Some(f) => std::pin::Pin::new(f).poll_shutdown(cx),
            None => std::task::Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod quote_tests {
    #[test]
    fn quoting() {
        assert_eq!(super::shell_quote("ls"), "ls");
        assert_eq!(super::shell_quote("a b"), "'a b'");
        assert_eq!(super::shell_quote("it's"), "'it'\\''s'");
        assert_eq!(super::shell_quote(""), "''");
    }
}
