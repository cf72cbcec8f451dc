//! What an image file is, read without trusting it: a private copy of the source, the format
//! by its magic bytes (never probed), `qemu-img info` and `check` under resource limits, ISO
//! descriptors, and its SHA-256.

use kvmctl_core::Error;
use kvmctl_libvirt::xml::DiskFormat;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::process::Command;

/// What `qemu-img info` says of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiskFacts {
    pub format: DiskFormat,
    pub virtual_bytes: u64,
}

/// An ISO image: an ISO 9660 volume descriptor (`CD001`) or a UDF one (`BEA01`, Windows' ISOs
/// carry both) at sector 16; its size is the file's.
pub(super) fn iso_inspect(path: &Path) -> Result<DiskFacts, Error> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| Error::invalid("source", format!("cannot read it: {e}")))?;
    let len = f.metadata().map_err(|e| Error::invalid("source", format!("cannot read it: {e}")))?.len();
    let mut id = [0u8; 5];
    let read = f.seek(SeekFrom::Start(0x8001)).and_then(|_| f.read_exact(&mut id));
    if read.is_err() || !(&id == b"CD001" || &id == b"BEA01") {
        return Err(Error::invalid(
            "source",
            "it is not an ISO image (no ISO 9660 or UDF volume descriptor at sector 16); import disks with kind disk",
        ));
    }
    Ok(DiskFacts { format: DiskFormat::Raw, virtual_bytes: len })
}

/// Copies the file at `from` into the daemon's private `to` (mode 0600), reading it through
/// one descriptor opened once.
pub(super) fn source_copy(from: &Path, to: &Path) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = std::fs::File::open(from).map_err(|e| Error::invalid("source", format!("cannot read {}: {e}", from.display())))?;
    if !src.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(Error::invalid("source", format!("{} is not a regular file", from.display())));
    }
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| Error::Internal(format!("cannot make {}: {e}", to.display())))?;
    std::io::copy(&mut src, &mut dst).map_err(|e| Error::invalid("source", format!("cannot copy {}: {e}", from.display())))?;
    Ok(())
}

/// Limits for a `qemu-img` run on a file someone else made (as OpenStack Nova does): 1 GiB of
/// address space and 30 s of CPU, so a crafted header (a huge L1 table, say) fails
/// instead of taking the host's memory.
pub(super) const QEMU_IMG_LIMITS: [&str; 2] = ["--as=1073741824", "--cpu=30"];

/// `qemu-img` under `prlimit` with `QEMU_IMG_LIMITS`.
pub(super) fn qemu_img_limited() -> Command {
    let mut c = Command::new("prlimit");
    c.args(QEMU_IMG_LIMITS).arg("--").arg("qemu-img");
    c
}

/// The format by its first bytes: qcow2's magic, or raw. Never left to qemu-img's probing,
/// which would follow whatever a crafted header names.
pub(super) fn format_sniff(path: &Path) -> Result<DiskFormat, Error> {
    use std::io::Read;
    let mut head = [0u8; 512];
    let mut f = std::fs::File::open(path).map_err(|e| Error::invalid("source", format!("cannot read it: {e}")))?;
    let n = f.read(&mut head).map_err(|e| Error::invalid("source", format!("cannot read it: {e}")))?;
    let head = &head[..n];
    if head.starts_with(b"QFI\xfb") {
        return Ok(DiskFormat::Qcow2);
    }
    // Other formats' magic: refused by name rather than imported as raw bytes.
    let others: [(&[u8], &str); 6] = [
        (b"KDMV", "vmdk"),
        (b"# Disk DescriptorFile", "vmdk"),
        (b"vhdxfile", "vhdx"),
        (b"conectix", "vpc"),
        (b"QED\0", "qed"),
        (b"<<< Oracle VM VirtualBox Disk Image >>>", "vdi"),
    ];
    if let Some((_, other)) = others.iter().find(|(m, _)| head.starts_with(m)) {
        return Err(Error::invalid(
            "source",
            format!("format {other} is not supported; convert it first: qemu-img convert -O qcow2 {} out.qcow2", path.display()),
        ));
    }
    Ok(DiskFormat::Raw)
}

/// Reads size, backing file and data file with `qemu-img info` (run with the format given
/// and under limits), and checks a qcow2's consistency with `qemu-img check`. Anything but a
/// self-contained qcow2 or raw image is refused, naming the problem.
pub(crate) fn disk_inspect(path: &Path) -> Result<DiskFacts, Error> {
    let sniffed = format_sniff(path)?;
    let out = qemu_img_limited().args(["info", "--output=json", "-f", sniffed.as_str()]).arg(path).output().map_err(|e| {
        Error::Unavailable(format!("cannot run qemu-img under prlimit ({e}); install qemu-utils and util-linux (kvmctl host setup does)"))
    })?;
    if !out.status.success() {
        return Err(Error::invalid(
            "source",
            format!("qemu-img cannot read it as a disk image: {}", String::from_utf8_lossy(&out.stderr).trim()),
        ));
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Internal(format!("qemu-img info printed something that is not JSON: {e}")))?;
    let format = match info["format"].as_str() {
        Some("qcow2") => DiskFormat::Qcow2,
        Some("raw") => DiskFormat::Raw,
        Some(other) => {
            return Err(Error::invalid(
                "source",
                format!("format {other} is not supported; convert it first: qemu-img convert -O qcow2 {} out.qcow2", path.display()),
            ))
        }
        None => return Err(Error::invalid("source", "qemu-img reports no format")),
    };
    if let Some(b) = info["backing-filename"].as_str() {
        return Err(Error::invalid(
            "source",
            format!("it has a backing file ({b}); flatten it first: qemu-img convert -O qcow2 {} out.qcow2", path.display()),
        ));
    }
    // An external data file would make the image's content another file of the host's.
    let data_file = &info["format-specific"]["data"]["data-file"];
    if !data_file.is_null() || info["format-specific"]["data"]["data-file-raw"].as_bool() == Some(true) {
        return Err(Error::invalid(
            "source",
            format!(
                "it keeps its data in an external data file ({}); only self-contained images are imported: qemu-img convert -O qcow2 {} out.qcow2",
                data_file.as_str().unwrap_or("unnamed"),
                path.display()
            ),
        ));
    }
    let virtual_bytes = info["virtual-size"].as_u64().ok_or_else(|| Error::invalid("source", "qemu-img reports no virtual size"))?;
    if format == DiskFormat::Qcow2 {
        let check = qemu_img_limited()
            .args(["check", "-f", "qcow2"])
            .arg(path)
            .output()
            .map_err(|e| Error::Unavailable(format!("cannot run qemu-img: {e}")))?;
        // 0: clean; 3: leaked clusters only (harmless, space is merely wasted).
        if !matches!(check.status.code(), Some(0) | Some(3)) {
            let detail = String::from_utf8_lossy(&check.stderr);
            let detail = if detail.trim().is_empty() { String::from_utf8_lossy(&check.stdout) } else { detail };
            return Err(Error::invalid(
                "source",
                format!("the qcow2 is corrupt or truncated (qemu-img check: {})", detail.lines().last().unwrap_or("failed").trim()),
            ));
        }
    } else {
        // qemu-img rounds a raw file's size up to a sector; a cut-off or stray file shows in the real length.
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len == 0 || len % 512 != 0 {
            return Err(Error::invalid("source", format!("a raw image of {len} bytes is not a whole number of 512-byte sectors")));
        }
    }
    Ok(DiskFacts { format, virtual_bytes })
}

pub(super) fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((h.finalize().iter().map(|b| format!("{b:02x}")).collect(), len))
}

#[cfg(test)]
mod tests {
    /// What is inspected, hashed and uploaded is the private copy: swapping or rewriting the
    /// source after the copy changes none of it, and the copy is the daemon's alone.
    #[test]
    fn the_source_is_read_once_into_a_private_copy() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (src, copy) = (dir.path().join("src"), dir.path().join("copy"));
        std::fs::write(&src, vec![7u8; 4096]).unwrap();
        super::source_copy(&src, &copy).unwrap();
        std::fs::write(&src, b"swapped").unwrap();
        std::fs::remove_file(&src).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", &src).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), vec![7u8; 4096]);
        assert_eq!(std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777, 0o600);
        // An existing file is never overwritten (the copy is always a new file).
        assert!(super::source_copy(&copy, &copy).is_err());
    }

    #[test]
    fn formats_are_named_by_their_magic_not_probed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(super::format_sniff(&f).unwrap(), kvmctl_libvirt::xml::DiskFormat::Qcow2);
        std::fs::write(&f, b"KDMV\x01").unwrap();
        assert!(super::format_sniff(&f).unwrap_err().to_string().contains("vmdk"));
        std::fs::write(&f, vec![0u8; 512]).unwrap();
        assert_eq!(super::format_sniff(&f).unwrap(), kvmctl_libvirt::xml::DiskFormat::Raw);
    }
}
