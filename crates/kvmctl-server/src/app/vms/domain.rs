//! The VM's libvirt domain: its definition from the record and image, where its volumes
//! and console log are, and its redefinition after a change.

use super::*;

/// The console log of a VM on the local node.
pub(super) fn console_log(ctx: &Context, name: &Name) -> PathBuf {
    ctx.config.console_log_dir.join(format!("{name}.log"))
}

/// Most of a console log the daemon reads at once: the guest writes it, so only its end is
/// read, whatever its size.
pub(crate) const CONSOLE_TAIL_MAX: u64 = 1 << 20;

/// The last `CONSOLE_TAIL_MAX` bytes of a console log (empty when there is none), as text.
pub(crate) fn console_tail(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(CONSOLE_TAIL_MAX)))?;
    let mut buf = Vec::new();
    f.take(CONSOLE_TAIL_MAX).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Where the VM's serial console is logged on its node: `console_log_dir` on the local node,
/// libvirt's own log directory (present on every libvirt host) on the others.
pub(super) fn serial_log_on_node(ctx: &Context, rec: &VmRecord) -> PathBuf {
    if rec.node == crate::app::nodes::LOCAL {
        console_log(ctx, &rec.name)
    } else {
        PathBuf::from(format!("/var/log/libvirt/qemu/{}-serial.log", rec.name))
    }
}

/// The libvirt domain of a VM, built from its record and image, on the node its volumes
/// are at (`paths`).
pub(super) fn domain_spec(
    ctx: &Context,
    rec: &VmRecord,
    image: &ImageRecord,
    paths: ImagePaths,
    domain_type: DomainType,
    (metadata, vnc_port): (Metadata, Option<u16>),
) -> DomainSpec {
    let (pool_dir, kernel) = paths;
    let boot = match kernel {
        Some((kernel, initrd)) => Boot::Kernel { kernel, initrd, cmdline: image.cmdline.clone().unwrap_or_default() },
        None => Boot::Disk,
    };
    DomainSpec {
        name: rec.name.clone(),
        domain_type,
        firmware: Firmware::parse(&rec.firmware).unwrap_or(Firmware::Bios),
        vcpus: rec.vcpus,
        memory_mib: rec.memory_mib,
        boot,
        disks: vec![
            Disk { source: pool_dir.join(&rec.root_volume), format: DiskFormat::Qcow2, target: "vda".into(), readonly: false },
            Disk { source: pool_dir.join(&rec.seed_volume), format: DiskFormat::Raw, target: "vdb".into(), readonly: true },
        ],
        nics: vec![Nic {
            source: match Attachment::parse(&rec.network) {
                Attachment::Network(n) => NicSource::Network(n),
                Attachment::Bridge(b) => NicSource::Bridge(b),
                Attachment::Macvtap(d) => NicSource::Direct(d),
            },
            mac: Some(rec.mac.clone()),
            // No spoofing of a neighbour's MAC, IP or ARP on a shared network: the guest may
            // use its reserved address only (or the one its DHCP gave it).
            filter: (!ctx.config.nic_filter.is_empty())
                .then(|| NicFilter { name: ctx.config.nic_filter.clone(), ip: rec.ip.as_deref().and_then(|i| i.parse().ok()) }),
        }],
        serial_log: Some(serial_log_on_node(ctx, rec)),
        vnc_password: Some(rec.vnc_password.clone()),
        vnc_port,
        guest_agent: true,
        metadata,
    }
}

/// Where an image's volumes are on the node: the pool's directory (from the image volume's
/// path there), and a direct-kernel image's kernel and initrd.
pub(super) type ImagePaths = (PathBuf, Option<(PathBuf, Option<PathBuf>)>);

pub(super) async fn image_paths(node: &NodeHandle, image: &ImageRecord) -> Result<ImagePaths, Error> {
    let pool_dir = image_volume(node, image, &image.volume).await?.parent().map(PathBuf::from).unwrap_or_default();
    let Some(k) = &image.kernel_volume else { return Ok((pool_dir, None)) };
    let kernel = image_volume(node, image, k).await?;
    let initrd = match &image.initrd_volume {
        Some(i) => Some(image_volume(node, image, i).await?),
        None => None,
    };
    Ok((pool_dir, Some((kernel, initrd))))
}

/// The path of the image's volume `v` on the node.
pub(super) async fn image_volume(node: &NodeHandle, image: &ImageRecord, v: &str) -> Result<PathBuf, Error> {
    node.volume_get(&image.pool, v).await?.map(|i| i.path).ok_or_else(|| {
        Error::Conflict(format!(
            "volume {v} of image {} is missing from pool {} on node {}; re-import the image",
            image.name,
            image.pool,
            node.uri()
        ))
    })
}

/// The domain type for a new VM on `node`: the local node's from `host doctor`'s functional
/// probe; other nodes' from `domain_type` when it is forced, else `qemu` (TCG), since whether
/// KVM really boots guests there has not been probed.
pub(super) async fn domain_type(ctx: &Context, node: &str) -> DomainType {
    if node != crate::app::nodes::LOCAL {
        return match ctx.config.domain_type {
            crate::config::DomainTypeSetting::Kvm => DomainType::Kvm,
            _ => DomainType::Qemu,
        };
    }
    match crate::app::host::domain_type(ctx).await.0.as_str() {
        "kvm" => DomainType::Kvm,
        _ => DomainType::Qemu,
    }
}

/// Defines the VM's domain again from `rec` (size, network, forwards, VNC), keeping the
/// domain type it has (kvm or qemu: a redefinition is not a migration). A running domain
/// takes the new definition at its next start.
pub(crate) async fn domain_redefine(ctx: &Context, rec: &VmRecord) -> Result<(), Error> {
    let image = images::image_record(ctx, &rec.image).await?;
    let conn = ctx.node_conn(&rec.node).await?;
    let current = conn.domain_xml(rec.name.as_str()).await?;
    let dtype = xml::domain_type_of(&current).unwrap_or(DomainType::Qemu);
    let paths = image_paths(&conn, &image).await?;
    conn.domain_define(domain_xml_of(ctx, rec, &image, paths, dtype).await?).await?;
    Ok(())
}

/// The domain definition of a VM as it should be now: its record, image, forwards and VNC.
pub(super) async fn domain_xml_of(
    ctx: &Context,
    rec: &VmRecord,
    image: &ImageRecord,
    paths: ImagePaths,
    dtype: DomainType,
) -> Result<String, Error> {
    let extras = (forwards::metadata_of(ctx, rec).await?, forwards::vnc_port(ctx, rec).await?);
    Ok(xml::domain_xml(&domain_spec(ctx, rec, image, paths, dtype, extras))?)
}
