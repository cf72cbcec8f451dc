//! Installs from ISO images and guest profiles.
//!
//! `install_iso` gives a VM an empty root disk and boots the installer ISO first (then the
//! disk), with `extra_isos` (virtio-win's drivers) beside it as CD-ROMs and its seed as a
//! CD-ROM too: for the `windows-11` profile the seed is the answer-file ISO
//! (`kvmctl_cloudinit::unattend`), which Windows Setup finds by itself. The profile sets up
//! the machine for Windows 11 (UEFI Secure Boot with Microsoft's keys, SMM, TPM 2.0, Hyper-V
//! enlightenments with KVM, a Windows clock, a USB tablet) and holds its minimum size.
//!
//! What a VM boots besides its disks is recorded (`vm_media`), so its definition is written
//! from the record like everything else, and the images it uses cannot be removed under it.
//! CD-ROMs sit on SATA: `sda` the installer, `sdb` and `sdd` the extra ISOs, `sdc` the seed
//! (SCSI data disks start at `sde`).

use super::*;
use kvmctl_store::MediaRecord;

pub use crate::app::devices::WINDOWS_11;

/// Extra ISOs one VM may have.
pub const MAX_EXTRA_ISOS: usize = 2;

/// Windows 11's minimum: 2 vCPUs, 4 GiB, 64 GiB.
const WINDOWS_MIN: (u32, u64, u64) = (2, 4096, 64);

/// What a create asks of media and profile, checked: the media record, the firmware and TPM
/// the profile needs, and whether the seed is a Windows answer file.
pub(super) struct MediaPlan {
    pub media: MediaRecord,
    pub firmware: Option<String>,
    pub tpm: bool,
}

/// The image a create boots: `image`, or the installer ISO with `install_iso`.
pub(super) async fn boot_image(ctx: &Context, req: &VmCreateRequest) -> Result<ImageRecord, Error> {
    let get = |field: &'static str, name: Name| async move {
        ctx.store
            .image_get(&name)
            .await?
            .ok_or_else(|| Error::invalid(field, format!("there is no image {name}; `kvmctl image list` shows them")))
    };
    match (&req.install_iso, req.image.is_empty()) {
        (Some(_), false) => Err(Error::invalid("install_iso", "give an image or an install_iso, not both")),
        (None, true) => Err(Error::invalid("image", "name an image (kvmctl image list), or install_iso to install from an ISO")),
        (Some(iso), true) => {
            let image = get("install_iso", parse_name("install_iso", iso)?).await?;
            if image.format != "iso" {
                return Err(Error::invalid(
                    "install_iso",
                    format!("image {} is a disk image, not an ISO (import ISOs with kind iso)", image.name),
                ));
            }
            Ok(image)
        }
        (None, false) => {
            let image = get("image", parse_name("image", &req.image)?).await?;
            if image.format == "iso" {
                return Err(Error::invalid("image", format!("image {} is an ISO; install from it with install_iso", image.name)));
            }
            Ok(image)
        }
    }
}

/// Checks the profile, the extra ISOs and the VM's size against the profile.
pub(super) async fn media_plan(
    ctx: &Context,
    req: &VmCreateRequest,
    image: &ImageRecord,
    size: (u32, u64, u64),
) -> Result<MediaPlan, Error> {
    let profile = req.profile.clone().or_else(|| image.profile.clone());
    if let Some(p) = profile.as_deref().filter(|p| *p != WINDOWS_11) {
        return Err(Error::invalid("profile", format!("{p:?} is not a profile; the one there is: {WINDOWS_11}")));
    }
    if req.extra_isos.len() > MAX_EXTRA_ISOS {
        return Err(Error::invalid("extra_isos", format!("at most {MAX_EXTRA_ISOS} extra ISOs")));
    }
    let mut extras = Vec::new();
    for (i, e) in req.extra_isos.iter().enumerate() {
        let field = format!("extra_isos[{i}]");
        let n = parse_name(&field, e)?;
        let img = ctx
            .store
            .image_get(&n)
            .await?
            .ok_or_else(|| Error::invalid(&field, format!("there is no image {n}; `kvmctl image list` shows them")))?;
        if img.format != "iso" {
            return Err(Error::invalid(&field, format!("image {n} is a disk image, not an ISO (import ISOs with kind iso)")));
        }
        if extras.contains(&n.to_string()) || req.install_iso.as_deref() == Some(n.as_str()) {
            return Err(Error::invalid(&field, format!("image {n} is attached already")));
        }
        extras.push(n.to_string());
    }
    let windows = profile.as_deref() == Some(WINDOWS_11);
    if req.unattend.is_some() && !(windows && req.install_iso.is_some()) {
        return Err(Error::invalid("unattend", format!("answers are for installs with profile {WINDOWS_11} (install_iso)")));
    }
    let (mut firmware, mut tpm) = (None, req.tpm || image.tpm);
    if windows {
        if let Some(f) = req.firmware.as_deref().filter(|f| *f != "uefi-secure") {
            return Err(Error::invalid("firmware", format!("{WINDOWS_11} boots with uefi-secure (Secure Boot), not {f}")));
        }
        firmware = Some("uefi-secure".to_owned());
        tpm = true;
        let (c, m, d) = WINDOWS_MIN;
        for (field, have, need, unit) in
            [("vcpus", u64::from(size.0), u64::from(c), ""), ("memory_mib", size.1, m, " MiB"), ("disk_gib", size.2, d, " GiB")]
        {
            if have < need {
                return Err(Error::invalid(field, format!("{WINDOWS_11} needs at least {need}{unit}; {have}{unit} is too small")));
            }
        }
        if req.install_iso.is_some() && req.unattend.is_none() {
            return Err(Error::invalid(
                "unattend",
                format!("a {WINDOWS_11} install answers its questions from unattend: give at least unattend.password (the account's)"),
            ));
        }
    }
    let installer = req.install_iso.is_some().then(|| image.name.to_string());
    Ok(MediaPlan { media: MediaRecord { profile, installer, extras }, firmware, tpm })
}

/// The Windows answer-file ISO for a `windows-11` install (its seed).
pub(super) fn unattend_seed(req: &VmCreateRequest, name: &Name, user: &str) -> Result<Vec<u8>, Error> {
    let a = req.unattend.clone().unwrap_or_default();
    let spec = kvmctl_cloudinit::unattend::UnattendSpec {
        computer_name: name.to_string(),
        user: user.to_owned(),
        password: a.password,
        locale: a.locale.unwrap_or_else(|| "en-US".into()),
        time_zone: a.time_zone.unwrap_or_else(|| "UTC".into()),
        edition: a.edition.unwrap_or_else(|| "Windows 11 Pro".into()),
        product_key: a.product_key,
    };
    kvmctl_cloudinit::unattend::unattend_iso(&spec).map_err(|e| {
        let field = match e.field.as_str() {
            "name" | "user" => e.field.clone(),
            f => format!("unattend.{f}"),
        };
        Error::invalid(field, e.message)
    })
}

/// Copies the extra ISOs to the VM's node (the installer is its image, copied with it).
pub(super) async fn media_to_node(ctx: &Context, rec: &VmRecord) -> Result<(), Error> {
    for extra in ctx.store.media_get(&rec.id).await?.extras {
        let image = images::image_record(ctx, &parse_name("extra_isos", &extra)?).await?;
        images::image_to_node(ctx, &rec.node, &image).await?;
    }
    Ok(())
}
