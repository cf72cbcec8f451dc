//! Volume uploads over a libvirt stream, in 1 MiB chunks.

use super::conn::LibvirtNode;
use super::VolumeInfo;
use crate::error::NodeError;
use virt::connect::Connect;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

/// Creates the volume `vol_xml` describes in `pool` and fills it with `len` bytes of `data`;
/// a failed upload deletes the volume again.
pub(super) fn upload(
    c: &Connect,
    pool: &str,
    name: &str,
    vol_xml: &str,
    len: u64,
    data: &mut dyn std::io::Read,
) -> Result<VolumeInfo, NodeError> {
    let p = LibvirtNode::pool(c, pool)?;
    let err = |op| move |e| NodeError::from_virt(op, "volume", name, e);
    let vol = StorageVol::create_xml(&p, vol_xml, 0).map_err(err("create"))?;
    let sent = (|| {
        let stream = Stream::new(c, 0).map_err(err("open a stream to"))?;
        vol.upload(&stream, 0, len, 0).map_err(err("upload to"))?;
        // libvirt refuses stream messages over 32 MiB; 1 MiB keeps memory flat.
        let mut buf = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        while sent < len {
            let want = buf.len().min((len - sent) as usize);
            let got = match data.read(&mut buf[..want]) {
                Ok(0) => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("source ended after {sent} of {len} bytes"))),
                Ok(n) => Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let got = match got {
                Ok(n) => n,
                Err(source) => {
                    let _ = stream.abort();
                    return Err(NodeError::Read { name: name.to_owned(), source });
                }
            };
            let mut off = 0;
            while off < got {
                match stream.send(&buf[off..got]) {
                    Ok(0) => {
                        let _ = stream.abort();
                        return Err(NodeError::Read {
                            name: name.to_owned(),
                            source: std::io::Error::new(std::io::ErrorKind::WriteZero, "libvirt stream accepted no data"),
                        });
                    }
                    Ok(n) => off += n,
                    Err(e) => {
                        let _ = stream.abort();
                        return Err(err("send data to")(e));
                    }
                }
            }
            sent += got as u64;
        }
        stream.finish().map_err(err("finish upload to"))
    })();
    if let Err(e) = sent {
        let _ = vol.delete(0); // no half-written volume survives a failed upload
        return Err(e);
    }
    LibvirtNode::volume_info(&vol, name)
}
