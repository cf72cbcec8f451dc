//! Images and templates.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What an image is and how it boots: the template, in the sense of a VM's starting point.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct ImageTemplate {
    /// OS family, e.g. `debian`, `ubuntu`, `windows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_family: Option<String>,
    /// OS version, e.g. `12`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Whether the image runs cloud-init (VMs then get a NoCloud seed).
    #[serde(default)]
    pub cloud_init: bool,
    /// The user cloud-init creates when a VM names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_user: Option<String>,
    /// Firmware the image boots with: `bios`, `uefi` (no Secure Boot), `uefi-secure` (Secure
    /// Boot with Microsoft's keys enrolled). The first is the default.
    #[serde(default)]
    pub boot_modes: Vec<String>,
    /// VMs made from it get an emulated TPM 2.0 (as if created with `tpm`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tpm: bool,
    /// The guest profile VMs made from it get: `windows-11` (see `VmCreateRequest.profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// A base image on a node: VMs' root disks are copy-on-write overlays of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Image {
    pub name: String,
    /// `qcow2` or `raw`; `iso` for installer and driver ISOs (`kind: iso`).
    pub format: String,
    /// Disk size the guest sees, in bytes.
    pub virtual_bytes: u64,
    /// Size of the file on the node, in bytes.
    pub file_bytes: u64,
    /// SHA-256 of the imported file.
    pub sha256: String,
    /// Where it was imported from.
    pub source: String,
    pub node: String,
    pub pool: String,
    pub volume: String,
    /// Path of the volume on the node.
    pub path: String,
    pub template: ImageTemplate,
    /// Set for images that boot a kernel directly rather than through firmware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_boot: Option<KernelBoot>,
    /// VMs whose root disk is backed by this image; `rm` refuses while any exist.
    pub used_by: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// Direct kernel boot: kernel and initrd volumes beside the disk image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KernelBoot {
    pub kernel_volume: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_volume: Option<String>,
    pub cmdline: String,
}

/// `POST /v1/images`: import a disk image into the node's storage pool.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageImportRequest {
    /// Image name (a DNS label).
    pub name: String,
    /// Absolute path on the daemon's host, or an `http://`/`https://` URL.
    pub source: String,
    /// Expected SHA-256 (hex); the import fails when the file differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Template metadata; when absent and the source has a kvmctl `image.json` beside it,
    /// that file's metadata is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<ImageTemplate>,
    /// Kernel to boot directly (absolute path on the daemon's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Initrd for `kernel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// Kernel command line for `kernel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// `disk` (default: a qcow2 or raw disk image VMs' root disks are overlays of) or `iso`
    /// (an installer or driver ISO, such as Windows' or virtio-win's, that VMs boot or
    /// attach as a CD-ROM: `install_iso`, `extra_isos`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The directory storage pool it goes in (`kvmctl pool list`); default: the daemon's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}
