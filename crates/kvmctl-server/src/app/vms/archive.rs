//! The export archive's format (`kvmctl-export` version 1, see `backup.rs`): its members and
//! bounds, the manifest, and the tar stream written to and read from a channel, every
//! member checked as it is read.

use super::*;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;

pub(super) const FORMAT: &str = "kvmctl-export";
pub(super) const VERSION: u32 = 1;
/// The members, in the order an export writes them; the manifest names all but itself.
pub(super) const MEMBERS: [&str; 5] = ["vm.json", "domain.xml", "nvram.fd", "tpm.state", "disk.qcow2"];
pub(super) const MANIFEST: &str = "manifest.json";
/// Largest JSON or XML member, and largest UEFI variable store.
pub(super) const SMALL_MAX: u64 = 1 << 20;
pub(super) const NVRAM_MAX: u64 = 64 << 20;
/// Largest TPM state (swtpm's is tens of KiB).
pub(super) const TPM_MAX: u64 = 4 << 20;
/// What a qcow2 file may hold beyond its virtual size (metadata).
pub(super) const QCOW2_OVERHEAD: u64 = 256 << 20;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Manifest {
    pub(super) format: String,
    pub(super) version: u32,
    /// Unix seconds.
    pub(super) exported_at: i64,
    pub(super) members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Member {
    pub(super) name: String,
    pub(super) size: u64,
    sha256: String,
}

/// Sends what is written to it down a channel in 256 KiB chunks (blocking: the writer runs
/// on a blocking thread); fails once the receiver is gone (the client went away).
pub(super) struct ChanWriter {
    pub(super) tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    pub(super) buf: Vec<u8>,
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 << 10 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

/// Reads through to `inner`, hashing what passes.
pub(super) struct Hashing<R> {
    pub(super) inner: R,
    pub(super) hash: Sha256,
    pub(super) read: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

pub(super) fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(kvmctl_store::unix_now().max(0) as u64);
    h
}

/// Writes the archive: each member from `dir`, hashed as it goes, then the manifest; the
/// bytes written.
pub(super) fn tar_write(dir: &Path, members: &[&str], out: ChanWriter) -> std::io::Result<u64> {
    let mut tar = tar::Builder::new(out);
    let mut listed = Vec::new();
    let mut total = 0;
    for m in members {
        let file = std::fs::File::open(dir.join(m))?;
        let size = file.metadata()?.len();
        let mut reader = Hashing { inner: file, hash: Sha256::new(), read: 0 };
        tar.append_data(&mut tar_header(size), m, &mut reader)?;
        if reader.read != size {
            return Err(std::io::Error::other(format!("{m} changed while it was archived")));
        }
        listed.push(Member { name: (*m).to_owned(), size, sha256: hex(&reader.hash.finalize()) });
        total += size;
    }
    let manifest = Manifest { format: FORMAT.into(), version: VERSION, exported_at: kvmctl_store::unix_now(), members: listed };
    let data = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
    tar.append_data(&mut tar_header(data.len() as u64), MANIFEST, data.as_slice())?;
    let mut out = tar.into_inner()?;
    out.flush()?;
    Ok(total + data.len() as u64)
}

/// Reads an upload's chunks (sent from the async side) as a blocking reader.
pub(super) struct ChanReader {
    pub(super) rx: tokio::sync::mpsc::Receiver<Bytes>,
    pub(super) chunk: Bytes,
}

impl Read for ChanReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(c) => self.chunk = c,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

pub(super) fn damaged(message: impl Into<String>) -> Error {
    Error::invalid("archive", message)
}

/// Reads the archive's members into `dir` (fixed names, bounds, no duplicates); each
/// member's size and sha256, and the manifest's bytes.
pub(super) fn tar_read(reader: impl Read, dir: &Path, disk_max: u64) -> Result<(Vec<Member>, Vec<u8>), Error> {
    let mut tar = tar::Archive::new(reader);
    let mut seen: Vec<Member> = Vec::new();
    let mut manifest = None;
    let entries = tar.entries().map_err(|e| damaged(format!("is not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| damaged(format!("cannot be read as a tar archive (truncated or damaged?): {e}")))?;
        let path = entry.path().map_err(|e| damaged(format!("has a member with an unreadable name: {e}")))?.to_string_lossy().into_owned();
        let known = MEMBERS.iter().chain(std::iter::once(&MANIFEST)).find(|m| **m == path).copied();
        let Some(member) = known else {
            return Err(damaged(format!(
                "has a member {:?} that is not part of an export ({})",
                path.chars().take(100).collect::<String>(),
                MEMBERS.join(", ")
            )));
        };
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(damaged(format!("member {member} is not a regular file")));
        }
        if seen.iter().any(|m| m.name == member) || (member == MANIFEST && manifest.is_some()) {
            return Err(damaged(format!("has member {member} twice")));
        }
        let max = match member {
            "disk.qcow2" => disk_max,
            "nvram.fd" => NVRAM_MAX,
            "tpm.state" => TPM_MAX,
            _ => SMALL_MAX,
        };
        let size = entry.header().size().map_err(|e| damaged(format!("member {member} has no size: {e}")))?;
        if size > max {
            return Err(if member == "disk.qcow2" {
                Error::invalid(
                    "archive",
                    format!("its disk is {} GiB, more than the {} GiB your disk quota has left", size.div_ceil(GIB), disk_max / GIB),
                )
            } else {
                damaged(format!("member {member} is {size} bytes, more than the {max} it may be"))
            });
        }
        if member == MANIFEST {
            let mut data = Vec::new();
            (&mut entry).take(max).read_to_end(&mut data).map_err(|e| damaged(format!("member {member} broke off: {e}")))?;
            manifest = Some(data);
            continue;
        }
        let mut file = std::fs::File::create(dir.join(member)).map_err(|e| internal(&format!("cannot stage {member}"), e))?;
        let mut reader = Hashing { inner: (&mut entry).take(max), hash: Sha256::new(), read: 0 };
        std::io::copy(&mut reader, &mut file).map_err(|e| damaged(format!("member {member} broke off (a truncated archive?): {e}")))?;
        if reader.read != size {
            return Err(damaged(format!("member {member} is truncated: {} of {size} bytes", reader.read)));
        }
        seen.push(Member { name: member.to_owned(), size, sha256: hex(&reader.hash.finalize()) });
    }
    let manifest = manifest.ok_or_else(|| damaged("has no manifest.json (a truncated archive?)"))?;
    Ok((seen, manifest))
}

/// The manifest agrees with what came: the same members, sizes and sha256.
pub(super) fn manifest_check(data: &[u8], seen: &[Member]) -> Result<(), Error> {
    let m: Manifest = serde_json::from_slice(data).map_err(|e| damaged(format!("has a manifest.json that cannot be read: {e}")))?;
    if m.format != FORMAT || m.version != VERSION {
        return Err(damaged(format!("is a {} version {} archive; this kvmctl reads {FORMAT} version {VERSION}", m.format, m.version)));
    }
    for listed in &m.members {
        match seen.iter().find(|s| s.name == listed.name) {
            None => return Err(damaged(format!("lacks member {}, which its manifest lists", listed.name))),
            Some(s) if s.size != listed.size => {
                return Err(damaged(format!("member {} is {} bytes; the manifest says {}", s.name, s.size, listed.size)))
            }
            Some(s) if s.sha256 != listed.sha256 => {
                return Err(damaged(format!("member {}'s sha256 is {}; the manifest says {} (damaged)", s.name, s.sha256, listed.sha256)))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = seen.iter().find(|s| !m.members.iter().any(|l| l.name == s.name)) {
        return Err(damaged(format!("has member {}, which its manifest does not list", extra.name)));
    }
    for needed in ["vm.json", "disk.qcow2"] {
        if !seen.iter().any(|s| s.name == needed) {
            return Err(damaged(format!("lacks member {needed}")));
        }
    }
    Ok(())
}

pub(super) fn internal(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{what}: {e}"))
}
