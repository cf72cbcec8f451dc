//! Image recipes as data. `Recipe::hash` covers everything that changes the output.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// What cloud-init, SSH and the guest agent need, nothing else.
    Minimal,
    /// Minimal plus everyday tools (less, an editor, curl, ping).
    Standard,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// `debian-12`
    pub os: String,
    pub suite: String,
    pub version: String,
    pub profile: Profile,
    pub mirror: String,
    pub packages: Vec<String>,
    /// Files written into the tree: (path, contents).
    pub files: Vec<(String, String)>,
    /// systemd units masked (linked to /dev/null).
    pub masked: Vec<String>,
    /// systemd units enabled.
    pub enabled: Vec<String>,
    /// Virtual size of the disk in MiB (VM disks grow from here; cloud-init grows the root).
    pub disk_mib: u64,
    pub esp_mib: u64,
}

pub const ROOT_LABEL: &str = "kvmroot";
pub const ESP_LABEL: &str = "KVMESP";

/// GRUB's configuration inside the image, shared by the BIOS and UEFI loaders.
pub const GRUB_CFG: &str =
    "set timeout=0\nlinux /vmlinuz root=LABEL=kvmroot ro console=tty0 console=ttyS0,115200 quiet\ninitrd /initrd.img\nboot\n";
/// Embedded in both loaders: find the root by label, whatever the disk is called.
pub const GRUB_EARLY_CFG: &str =
    "search --no-floppy --label kvmroot --set root\nset prefix=($root)/boot/grub\nconfigfile ($root)/boot/grub/grub.cfg\n";
pub const GRUB_BIOS_MODULES: &[&str] =
    &["biosdisk", "part_msdos", "ext2", "normal", "linux", "search", "search_label", "configfile", "echo", "test"];
/// Debian's signed UEFI loaders, installed in the image by `shim-signed` and
/// `grub-efi-amd64-signed` and copied from there to the ESP.
pub const SHIM_SIGNED: &str = "/usr/lib/shim/shimx64.efi.signed";
pub const GRUB_EFI_SIGNED: &str = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
impl Recipe {
    /// The OS names `image build` knows.
    pub const OSES: [&'static str; 2] = ["debian-12", "debian-13"];

    /// The recipe of `os` (one of `OSES`).
    pub fn of(os: &str, profile: Profile, mirror: &str) -> Option<Recipe> {
        match os {
            "debian-12" => Some(Recipe::debian_12(profile, mirror)),
            "debian-13" => Some(Recipe::debian_13(profile, mirror)),
            _ => None,
        }
    }

    /// Debian 13 (trixie): Debian 12's recipe on the newer suite. Its cloud-init and systemd
    /// read the same settings.
    pub fn debian_13(profile: Profile, mirror: &str) -> Recipe {
        let mut r = Recipe::debian_12(profile, mirror);
        r.os = "debian-13".into();
        r.suite = "trixie".into();
        r.version = "13".into();
        r
    }

    /// Debian 12 (bookworm).
    pub fn debian_12(profile: Profile, mirror: &str) -> Recipe {
        let mut packages: Vec<String> = [
            "linux-image-cloud-amd64",
            "systemd-sysv",
            "udev",
            "cloud-init",
            "cloud-guest-utils",
            "openssh-server",
            "qemu-guest-agent",
            "sudo",
            "netbase",
            "iproute2",
            "e2fsprogs",
            "ca-certificates",
            // logind needs D-Bus; without it the ACPI power button (`kvmctl vm stop`) is ignored.
            "dbus",
            // Secure Boot: Microsoft-signed shim, Debian-signed GRUB (the kernel is signed too).
            "shim-signed",
            "grub-efi-amd64-signed",
        ]
        .map(String::from)
        .to_vec();
        if profile == Profile::Standard {
            packages.extend(["less", "vim-tiny", "curl", "iputils-ping", "procps", "locales"].map(String::from));
        }
        let files = vec![
            // What measured to matter under emulation (../shared/guest-image-notes.md): the
            // datasources we serve, ed25519 host keys only (RSA generation is slow under TCG).
            ("/etc/cloud/cloud.cfg.d/90-kvmctl.cfg".into(), "datasource_list: [ NoCloud, ConfigDrive, None ]\nssh_genkeytypes: [ ed25519 ]\nssh_deletekeys: true\nmanage_etc_hosts: true\n".into()),
            // minbase has no `locales`: cloud-init's locale module would fail the boot's status.
            ("/etc/cloud/cloud.cfg.d/91-kvmctl-locale.cfg".into(), if profile == Profile::Standard { "locale: C.UTF-8\n" } else { "locale: false\n" }.into()),
            ("/etc/systemd/network/80-kvmctl-dhcp.network".into(), "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n".into()),
            ("/etc/fstab".into(), format!("LABEL={ROOT_LABEL} / ext4 defaults,discard,errors=remount-ro 0 1\n")),
            ("/etc/hostname".into(), "localhost\n".into()),
            // Empty, not absent: systemd then makes a fresh id at first boot (networkd needs
            // it for its DHCP client id) without the first-boot prompt.
            ("/etc/machine-id".into(), String::new()),
            // A small initramfs with what a virtio guest needs.
            ("/etc/initramfs-tools/conf.d/kvmctl".into(), "MODULES=list\n".into()),
            ("/etc/initramfs-tools/modules".into(), "virtio_pci\nvirtio_blk\nvirtio_scsi\nvirtio_net\next4\n".into()),
            ("/boot/grub/grub.cfg".into(), GRUB_CFG.into()),
        ];
        let masked = [
            "systemd-networkd-wait-online.service",
            "systemd-firstboot.service",
            "apt-daily.timer",
            "apt-daily-upgrade.timer",
            "e2scrub_all.timer",
            "fstrim.timer",
            // Measured in the guest's boot (`systemd-analyze blame`, bench/testrun.sh): GRUB's
            // "record successful boot" (6.6 s under TCG; a cloud guest boots one entry) and
            // e2scrub's reaper of stale LVM snapshots (48 s on a loaded machine; no LVM here).
            "grub-common.service",
            "e2scrub_reap.service",
        ]
        .map(String::from)
        .to_vec();
        Recipe {
            os: "debian-12".into(),
            suite: "bookworm".into(),
            version: "12".into(),
            profile,
            mirror: mirror.into(),
            packages,
            files,
            masked,
            enabled: vec!["systemd-networkd.service".into()],
            disk_mib: 2048,
            esp_mib: 64,
        }
    }

    /// Hash of the recipe and of the builder's own logic version; names the cached build.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(BUILDER_VERSION.as_bytes());
        h.update(serde_json::to_vec(self).expect("serialisable"));
        h.update(GRUB_EARLY_CFG.as_bytes());
        h.update(GRUB_BIOS_MODULES.join(",").as_bytes());
        h.update(SHIM_SIGNED.as_bytes());
        h.update(GRUB_EFI_SIGNED.as_bytes());
        hex(&h.finalize())[..16].to_owned()
    }

    /// The sfdisk script: an MBR with the ESP first (type ef, found by OVMF) and the
    /// bootable root after it; sectors before 1 MiB hold GRUB's BIOS core image.
    pub fn partition_script(&self) -> String {
        let esp_sectors = self.esp_mib * 2048;
        format!("label: dos\nstart=2048, size={esp_sectors}, type=ef\nstart={}, type=83, bootable\n", 2048 + esp_sectors)
    }

    /// Byte offsets and sizes of the ESP and the root partition.
    pub fn layout(&self) -> ((u64, u64), (u64, u64)) {
        let esp = (1 << 20, self.esp_mib << 20);
        let root_start = esp.0 + esp.1;
        (esp, (root_start, (self.disk_mib << 20) - root_start))
    }
}

/// Bump when `build` changes what it produces from the same recipe.
pub const BUILDER_VERSION: &str = "kvmctl-image-builder/1";

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_follows_the_recipe() {
        let a = Recipe::debian_12(Profile::Minimal, "http://deb.debian.org/debian");
        assert_eq!(a.hash(), Recipe::debian_12(Profile::Minimal, "http://deb.debian.org/debian").hash());
        assert_ne!(a.hash(), Recipe::debian_12(Profile::Standard, "http://deb.debian.org/debian").hash());
        assert_ne!(a.hash(), Recipe::debian_12(Profile::Minimal, "http://mirror.example/debian").hash());
        assert_eq!(a.hash().len(), 16);
    }

    #[test]
    fn layout_matches_the_partition_script() {
        let r = Recipe::debian_12(Profile::Minimal, "m");
        assert_eq!(r.partition_script(), "label: dos\nstart=2048, size=131072, type=ef\nstart=133120, type=83, bootable\n");
        let ((es, el), (rs, rl)) = r.layout();
        assert_eq!((es, el, rs), (1 << 20, 64 << 20, 133120 * 512));
        assert_eq!(rs + rl, 2048 << 20);
    }

    #[test]
    fn minimal_disables_the_locale_module_it_cannot_run() {
        let r = Recipe::debian_12(Profile::Minimal, "m");
        assert!(!r.packages.contains(&"locales".to_owned()));
        assert!(r.files.iter().any(|(p, c)| p.ends_with("91-kvmctl-locale.cfg") && c == "locale: false\n"));
        let s = Recipe::debian_12(Profile::Standard, "m");
        assert!(s.packages.contains(&"locales".to_owned()));
    }
}
