//! A VM's libvirt domain: its definition from the record, the image and the node (where the
//! image's volumes are there, the domain type), and its redefinition after a change.

use super::context::{Context, LOCAL};
use super::guest::serial_log_on_node;
use super::{host, images, vmnet};
use crate::node::NodeHandle;
use kvmctl_core::rules::Attachment;
use kvmctl_core::Error;
use kvmctl_libvirt::xml::{self, Boot, Disk, DiskFormat, DomainSpec, DomainType, Firmware, Metadata, Nic, NicFilter, NicSource};
use kvmctl_store::{ImageRecord, VmRecord};
use std::path::PathBuf;

/// The libvirt domain of a VM, built from its record and image, on the node its volumes
/// are at (`paths`).
pub(crate) fn domain_spec(
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
            Disk::virtio(pool_dir.join(&rec.root_volume), DiskFormat::Qcow2, "vda", false),
            Disk::virtio(pool_dir.join(&rec.seed_volume), DiskFormat::Raw, "vdb", true),
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
            filter: (!ctx.config.nic_filter.is_empty()).then(|| NicFilter {
                name: ctx.config.nic_filter.clone(),
                ip: rec.ip.as_deref().and_then(|i| i.parse().ok()),
                also: None,
            }),
            link_down: false,
        }],
        serial_log: Some(serial_log_on_node(ctx, rec)),
        vnc_password: Some(rec.vnc_password.clone()),
        vnc_port,
        guest_agent: true,
        tpm: rec.tpm,
        shares: Vec::new(),
        windows: false,
        metadata,
    }
}

/// Where an image's volumes are on the node: the pool's directory (from the image volume's
/// path there), and a direct-kernel image's kernel and initrd.
pub(crate) type ImagePaths = (PathBuf, Option<(PathBuf, Option<PathBuf>)>);

pub(crate) async fn image_paths(node: &NodeHandle, image: &ImageRecord) -> Result<ImagePaths, Error> {
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
pub(crate) async fn image_volume(node: &NodeHandle, image: &ImageRecord, v: &str) -> Result<PathBuf, Error> {
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
/// probe; another node's from `domain_type` when it is forced, else from its agent's probe,
/// else `qemu` (TCG), since whether KVM really boots guests there has not been probed.
pub(crate) async fn domain_type(ctx: &Context, node: &str) -> DomainType {
    if node != LOCAL {
        return match ctx.config.domain_type {
            crate::config::DomainTypeSetting::Kvm => DomainType::Kvm,
            crate::config::DomainTypeSetting::Qemu => DomainType::Qemu,
            crate::config::DomainTypeSetting::Auto => match ctx.node_agent(node).await {
                Ok(Some(agent)) => match agent.status().await {
                    Ok(s) if s.domain_type == "kvm" => DomainType::Kvm,
                    Ok(_) => DomainType::Qemu,
                    Err(e) => {
                        tracing::warn!(%node, error = %e, "cannot ask the node's agent whether KVM works there; using TCG");
                        DomainType::Qemu
                    }
                },
                _ => DomainType::Qemu,
            },
        };
    }
    match host::domain_type(ctx).await.0.as_str() {
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
/// A warm clone's definitions: the domain it wakes as, and its NIC twice: as defined (its
/// filter on its own MAC and address, link up) and widened, letting it use its source's MAC
/// and address besides its own (what the woken guest still has). A guest with an agent wakes
/// with its NIC's link down and no filter, and the wake applies the first at once; one
/// re-identified over the network wakes with the widened NIC, and the first replaces it once
/// the guest has moved.
pub(crate) struct WakeXml {
    pub definition: String,
    pub wide_nic: Option<String>,
    pub own_nic: Option<String>,
}

pub(crate) async fn domain_xml_waking(
    ctx: &Context,
    rec: &VmRecord,
    image: &ImageRecord,
    paths: ImagePaths,
    dtype: DomainType,
    source: &VmRecord,
    agent: bool,
) -> Result<WakeXml, Error> {
    let extras = (vmnet::metadata_of(ctx, rec).await?, vmnet::vnc_port(ctx, rec).await?);
    let spec = domain_spec(ctx, rec, image, paths, dtype, extras);
    let Some(nic) = spec.nics.first().filter(|n| n.filter.is_some()).cloned() else {
        return Ok(WakeXml { definition: xml::domain_xml(&spec)?, wide_nic: None, own_nic: None });
    };
    let mut wide = nic.clone();
    if let (Some(f), Some(ip)) = (&mut wide.filter, source.ip.as_deref().and_then(|i| i.parse().ok())) {
        f.also = Some((source.mac.clone(), ip));
    }
    let mut waking = spec.clone();
    if agent {
        // The link down and no filter (building the filter is most of a restore's time): one
        // update brings both while the agent re-identifies the guest.
        waking.nics[0].filter = None;
        waking.nics[0].link_down = true;
    } else {
        // Reached at its source's address at once: a guest whose DHCP client saw its link
        // go down would drop that address.
        waking.nics[0] = wide.clone();
    }
    Ok(WakeXml {
        definition: xml::domain_xml(&waking)?,
        wide_nic: Some(xml::interface_xml(&wide)?),
        own_nic: Some(xml::interface_xml(&nic)?),
    })
}

pub(crate) async fn domain_xml_of(
    ctx: &Context,
    rec: &VmRecord,
    image: &ImageRecord,
    paths: ImagePaths,
    dtype: DomainType,
) -> Result<String, Error> {
    let extras = (vmnet::metadata_of(ctx, rec).await?, vmnet::vnc_port(ctx, rec).await?);
    let pool_dir = paths.0.clone();
    let mut spec = domain_spec(ctx, rec, image, paths, dtype, extras);
    super::devices::root_on_pool(ctx, rec, image, &mut spec).await?;
    spec.disks.extend(super::devices::data_disks_of(ctx, rec, &pool_dir, &image.pool).await?);
    spec.shares = super::devices::shares_of(ctx, rec).await?;
    super::devices::media_apply(ctx, rec, &mut spec, &pool_dir).await?;
    Ok(xml::domain_xml(&spec)?)
}
