//! `kvmctl vm share ...` and `kvmctl vm disk ...`: a VM's shared folders and data disks.

use crate::output::{self, OutputFormat, Table};
use crate::progress::with_progress;
use crate::vm::parse_gib;
use kvmctl_client::Client;

/// `HOST_DIR:TAG[:ro][:GUEST_DIR]`.
pub(crate) fn parse_share(s: &str) -> Result<kvmctl_types::api::VmShare, String> {
    let mut parts = s.split(':');
    let (Some(source), Some(tag)) = (parts.next(), parts.next()) else {
        return Err("expected HOST_DIR:TAG[:ro][:GUEST_DIR]".into());
    };
    let mut share = kvmctl_types::api::VmShare { source: source.into(), tag: tag.into(), ..Default::default() };
    for p in parts {
        match p {
            "ro" if !share.readonly && share.mount.is_none() => share.readonly = true,
            "rw" if share.mount.is_none() => {}
            m if m.starts_with('/') && share.mount.is_none() => share.mount = Some(m.into()),
            other => return Err(format!("{other:?}: expected HOST_DIR:TAG[:ro][:GUEST_DIR]")),
        }
    }
    if tag.is_empty() || source.is_empty() {
        return Err("expected HOST_DIR:TAG[:ro][:GUEST_DIR]".into());
    }
    Ok(share)
}

#[derive(clap::Subcommand, Debug)]
pub enum ShareCommand {
    /// Share HOST_DIR with stopped VM NAME as TAG (admins; under the daemon's share_roots).
    /// Mount it in the guest with `mount -t virtiofs TAG DIR` (cloud-init mounts only the
    /// shares given at create).
    Add {
        name: String,
        /// HOST_DIR:TAG[:ro]
        #[arg(value_parser = parse_share)]
        share: kvmctl_types::api::VmShare,
    },
    /// List VM NAME's shared folders.
    List { name: String },
    /// Stop sharing TAG with stopped VM NAME.
    Rm { name: String, tag: String },
}

impl Table for Vec<kvmctl_types::api::VmShare> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["tag", "host directory", "access", "guest mount"].map(String::from).to_vec()];
        rows.extend(self.iter().map(|s| {
            vec![
                s.tag.clone(),
                s.source.clone(),
                if s.readonly { "ro" } else { "rw" }.into(),
                s.mount.clone().unwrap_or_else(|| "-".into()),
            ]
        }));
        rows
    }
}

impl Table for kvmctl_types::api::VmShare {
    fn header(&self) -> bool {
        false
    }
    fn rows(&self) -> Vec<Vec<String>> {
        vec![
            vec!["tag:".into(), self.tag.clone()],
            vec!["host directory:".into(), self.source.clone()],
            vec!["access:".into(), if self.readonly { "read-only" } else { "read-write" }.into()],
        ]
    }
}

pub(crate) async fn share_run(client: &Client, cmd: ShareCommand, format: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        ShareCommand::Add { name, share } => output::print(&client.share_add(&name, &share).await?, format)?,
        ShareCommand::List { name } => output::print(&client.share_list(&name).await?, format)?,
        ShareCommand::Rm { name, tag } => {
            client.share_remove(&name, &tag).await?;
            eprintln!("share {tag} of VM {name} removed");
        }
    }
    Ok(())
}

#[derive(clap::Subcommand, Debug)]
pub enum DiskCommand {
    /// Add an empty disk to VM NAME (hot-plugged when it runs); its size counts against your
    /// disk quota. The guest sees the disk's name as its serial:
    /// /dev/disk/by-id/virtio-DISK (virtio) or /dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_DISK (scsi).
    Add {
        name: String,
        /// Size, e.g. 20G.
        #[arg(long, value_parser = parse_gib)]
        size: u64,
        /// virtio (default) or scsi.
        #[arg(long, value_parser = ["virtio", "scsi"])]
        bus: Option<String>,
        /// The disk's name: 1-16 lower-case letters and digits [default: disk1, disk2...].
        #[arg(long = "name", value_name = "DISK")]
        disk: Option<String>,
        /// The storage pool for it (`kvmctl pool list`) [default: the VM's].
        #[arg(long)]
        pool: Option<String>,
    },
    /// List VM NAME's data disks.
    List { name: String },
    /// Grow a data disk (online when the VM runs); disks only grow.
    Resize {
        name: String,
        disk: String,
        /// New size, e.g. 40G.
        #[arg(long, value_parser = parse_gib)]
        size: u64,
    },
    /// Detach a data disk and delete it with its data. A running guest is asked to let it go
    /// first; unmount it in the guest before.
    Rm { name: String, disk: String },
}

impl Table for Vec<kvmctl_types::api::VmDisk> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["name", "size", "bus", "device", "state"].map(String::from).to_vec()];
        rows.extend(
            self.iter().map(|d| vec![d.name.clone(), format!("{}G", d.size_gib), d.bus.clone(), d.target.clone(), d.state.clone()]),
        );
        rows
    }
}

impl Table for kvmctl_types::api::VmDisk {
    fn header(&self) -> bool {
        false
    }
    fn rows(&self) -> Vec<Vec<String>> {
        vec![
            vec!["disk:".into(), self.name.clone()],
            vec!["size:".into(), format!("{}G", self.size_gib)],
            vec!["bus:".into(), format!("{} ({})", self.bus, self.target)],
            vec!["state:".into(), self.state.clone()],
        ]
    }
}

pub(crate) async fn disk_run(client: &Client, cmd: DiskCommand, format: OutputFormat) -> anyhow::Result<()> {
    use kvmctl_types::api::{VmDiskAddRequest, VmDiskResizeRequest};
    match cmd {
        DiskCommand::Add { name, size, bus, disk, pool } => {
            let req = VmDiskAddRequest { name: disk, size_gib: size, bus, pool };
            let d = with_progress(
                &format!("adding a {size}G disk to VM {name}"),
                &format!("disk added to VM {name}"),
                client.disk_add(&name, &req),
            )
            .await?;
            output::print(&d, format)?;
        }
        DiskCommand::List { name } => output::print(&client.disk_list(&name).await?, format)?,
        DiskCommand::Resize { name, disk, size } => {
            let d = with_progress(
                &format!("growing disk {disk} of VM {name}"),
                &format!("disk {disk} of VM {name} grown"),
                client.disk_resize(&name, &disk, &VmDiskResizeRequest { size_gib: size }),
            )
            .await?;
            output::print(&d, format)?;
        }
        DiskCommand::Rm { name, disk } => {
            with_progress(
                &format!("removing disk {disk} of VM {name}"),
                &format!("disk {disk} of VM {name} removed"),
                client.disk_remove(&name, &disk),
            )
            .await?;
        }
    }
    Ok(())
}
