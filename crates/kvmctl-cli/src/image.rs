//! `kvmctl image build` runs locally (it needs root and the package mirror, not the daemon);
//! `import`, `list`, `show` and `rm` are clients of the daemon's `/v1/images`.

use crate::output::{self, OutputFormat, Table};
use crate::progress::Progress;
use kvmctl_client::Client;
use kvmctl_image::build::{build, BuildOptions, ImageMeta};
use kvmctl_image::recipe::{Profile, Recipe};
use kvmctl_types::api::{Image, ImageImportRequest, ImageTemplate};
use std::path::PathBuf;
use std::process::ExitCode;

// Parsed once per process; the size of the import variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Build a cloud-init guest image offline from distribution packages (mmdebstrap): a
    /// compressed qcow2 with an MBR, an EFI system partition and an ext4 root, bootable with
    /// BIOS and UEFI, trimmed to boot fast under emulation. Reuses the last build while the
    /// recipe is unchanged.
    Build {
        /// What to build. Supported: debian-12, debian-13.
        #[arg(value_name = "OS")]
        os: String,
        #[arg(long, value_enum, default_value_t = ProfileArg::Minimal)]
        profile: ProfileArg,
        /// Image name [default: OS, or OS-standard for the standard profile].
        #[arg(long)]
        name: Option<String>,
        /// Where images are kept (one directory per name and recipe hash).
        #[arg(long, default_value = "/var/lib/kvmctl/image-cache", value_name = "DIR")]
        cache_dir: PathBuf,
        /// Debian mirror to install from.
        #[arg(long, default_value = "http://deb.debian.org/debian", value_name = "URL")]
        mirror: String,
        /// Build again even if a build of this recipe exists.
        #[arg(long)]
        force: bool,
        /// Then import the image into the daemon under its name, unless an image of that name
        /// with the same checksum is there already.
        #[arg(long)]
        import: bool,
    },
    /// Import a qcow2 or raw image into the storage pool (through the daemon): the format
    /// is read by qemu-img, backing files and corrupt or truncated files are refused, and
    /// the checksum is verified when given. A failed import leaves nothing behind.
    Import {
        /// A path on the daemon's host, or an http:// URL.
        #[arg(value_name = "PATH|URL")]
        source: String,
        /// Image name (a DNS label).
        #[arg(long)]
        name: String,
        /// Expected SHA-256 of the file.
        #[arg(long)]
        sha256: Option<String>,
        /// OS family recorded in the template (e.g. debian) [default: from a kvmctl
        /// image.json beside PATH].
        #[arg(long)]
        os: Option<String>,
        /// OS version recorded in the template (e.g. 12).
        #[arg(long)]
        os_version: Option<String>,
        /// The image runs cloud-init.
        #[arg(long)]
        cloud_init: bool,
        /// User cloud-init creates by default.
        #[arg(long)]
        default_user: Option<String>,
        /// Firmware the image boots with (bios, uefi, uefi-secure); repeat for several.
        #[arg(long = "boot-mode", value_name = "MODE")]
        boot_modes: Vec<String>,
        /// Boot this kernel directly (a path on the daemon's host) instead of through firmware.
        #[arg(long, value_name = "PATH")]
        kernel: Option<String>,
        /// Initrd for --kernel.
        #[arg(long, value_name = "PATH", requires = "kernel")]
        initrd: Option<String>,
        /// Kernel command line for --kernel [default: console=ttyS0].
        #[arg(long, requires = "kernel")]
        cmdline: Option<String>,
        /// disk (a qcow2 or raw disk image) or iso (an installer or driver ISO, such as
        /// Windows' or virtio-win's, for `vm create --install-iso` and `--extra-iso`).
        #[arg(long, value_parser = ["disk", "iso"], default_value = "disk")]
        kind: String,
        /// VMs made from it get an emulated TPM 2.0 (template default).
        #[arg(long)]
        tpm: bool,
        /// The guest profile VMs made from it get: windows-11 (template default).
        #[arg(long, value_parser = ["windows-11"])]
        profile: Option<String>,
        /// The directory storage pool it goes in (`kvmctl pool list`) [default: the daemon's].
        #[arg(long)]
        pool: Option<String>,
    },
    /// List images.
    List,
    /// Show one image and its template.
    Show { name: String },
    /// Remove an image; refused while a VM's disk is backed by it.
    Rm { name: String },
}

impl ImageCommand {
    /// Whether the command runs without the daemon.
    pub fn is_local(&self) -> bool {
        matches!(self, ImageCommand::Build { import: false, .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileArg {
    Minimal,
    Standard,
}

impl Table for ImageMeta {
    fn header(&self) -> bool {
        false
    }
    fn rows(&self) -> Vec<Vec<String>> {
        let m = self;
        vec![
            vec!["name:".into(), m.name.clone()],
            vec!["os:".into(), format!("{} ({:?} profile), kernel {}", m.os, m.profile, m.kernel).to_lowercase()],
            vec!["path:".into(), m.path.display().to_string()],
            vec!["size:".into(), format!("{} MiB file, {} MiB virtual", m.file_bytes >> 20, m.virtual_bytes >> 20)],
            vec!["boot:".into(), m.boot_modes.join(", ")],
            vec!["sha256:".into(), m.sha256.clone()],
            vec!["packages:".into(), m.packages.len().to_string()],
        ]
    }
}

impl Table for Vec<Image> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["name", "os", "format", "size", "boot", "cloud-init", "used by"].map(String::from).to_vec()];
        rows.extend(self.iter().map(|i| {
            let t = &i.template;
            vec![
                i.name.clone(),
                format!("{} {}", t.os_family.as_deref().unwrap_or("-"), t.os_version.as_deref().unwrap_or("")).trim().to_owned(),
                i.format.clone(),
                format!("{}M/{}G", i.file_bytes >> 20, i.virtual_bytes.div_ceil(1 << 30)),
                if i.kernel_boot.is_some() { "kernel".into() } else { t.boot_modes.join(",") },
                if t.cloud_init { "yes".into() } else { "no".into() },
                if i.used_by.is_empty() { "-".into() } else { i.used_by.len().to_string() },
            ]
        }));
        rows
    }
}

impl Table for Image {
    fn header(&self) -> bool {
        false
    }
    fn rows(&self) -> Vec<Vec<String>> {
        let i = self;
        let t = &i.template;
        let mut rows = vec![
            vec!["name:".into(), i.name.clone()],
            vec![
                "os:".into(),
                format!("{} {}", t.os_family.as_deref().unwrap_or("unknown"), t.os_version.as_deref().unwrap_or("")).trim().to_owned(),
            ],
            vec!["format:".into(), format!("{}, {} MiB file, {} MiB virtual", i.format, i.file_bytes >> 20, i.virtual_bytes >> 20)],
            vec!["boot:".into(), t.boot_modes.join(", ")],
            vec![
                "cloud-init:".into(),
                format!(
                    "{}{}",
                    if t.cloud_init { "yes" } else { "no" },
                    t.default_user.as_ref().map(|u| format!(", default user {u}")).unwrap_or_default()
                ),
            ],
            vec!["volume:".into(), format!("{} in pool {} on {} ({})", i.volume, i.pool, i.node, i.path)],
            vec!["sha256:".into(), i.sha256.clone()],
            vec!["source:".into(), i.source.clone()],
            vec!["used by:".into(), if i.used_by.is_empty() { "-".into() } else { i.used_by.join(", ") }],
        ];
        if let Some(k) = &i.kernel_boot {
            rows.insert(
                4,
                vec![
                    "kernel:".into(),
                    format!("{} initrd {} cmdline {:?}", k.kernel_volume, k.initrd_volume.as_deref().unwrap_or("-"), k.cmdline),
                ],
            );
        }
        rows
    }
}

/// The daemon-side image commands (and `build --import`).
pub async fn run_remote(client: &Client, cmd: ImageCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCommand::Build { .. } => {
            let (meta, format) = tokio::task::spawn_blocking(move || build_local(cmd, format)).await??;
            match client.image_get(&meta.name).await {
                Ok(img) if img.sha256 == meta.sha256 => {
                    eprintln!("image {} is already imported with this checksum", img.name);
                    output::print(&img, format)?;
                    return Ok(ExitCode::SUCCESS);
                }
                Ok(img) => anyhow::bail!(
                    "an image named {} with another checksum is imported already; remove it (kvmctl image rm {}) or build with --name",
                    img.name,
                    img.name
                ),
                Err(kvmctl_client::ClientError::Api { status: 404, .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let req = ImageImportRequest {
                name: meta.name.clone(),
                source: meta.path.display().to_string(),
                sha256: Some(meta.sha256.clone()),
                ..Default::default()
            };
            import(client, &req, format).await
        }
        ImageCommand::Import {
            source,
            name,
            sha256,
            os,
            os_version,
            cloud_init,
            default_user,
            boot_modes,
            kernel,
            initrd,
            cmdline,
            kind,
            tpm,
            profile,
            pool,
        } => {
            // A relative path means the caller's directory; the daemon needs it absolute.
            let source = if source.contains("://") { source } else { absolute(&source)? };
            let kernel = kernel.map(|k| absolute(&k)).transpose()?;
            let initrd = initrd.map(|k| absolute(&k)).transpose()?;
            let given = os.is_some()
                || os_version.is_some()
                || cloud_init
                || default_user.is_some()
                || !boot_modes.is_empty()
                || tpm
                || profile.is_some();
            let template = given.then_some(ImageTemplate { os_family: os, os_version, cloud_init, default_user, boot_modes, tpm, profile });
            let req = ImageImportRequest { name, source, sha256, template, kernel, initrd, cmdline, kind: Some(kind), pool };
            import(client, &req, format).await
        }
        ImageCommand::List => {
            output::print(&client.image_list().await?, format)?;
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Show { name } => {
            output::print(&client.image_get(&name).await?, format)?;
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Rm { name } => {
            client.image_delete(&name).await?;
            eprintln!("image {name} removed");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn absolute(path: &str) -> anyhow::Result<String> {
    Ok(std::path::absolute(path).map_err(|e| anyhow::anyhow!("cannot resolve {path}: {e}"))?.display().to_string())
}

async fn import(client: &Client, req: &ImageImportRequest, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let p = Progress::start(&format!("importing image {} (checking, hashing, uploading)", req.name));
    match client.image_import(req).await {
        Ok(img) => {
            p.finish(&format!("image {} imported", img.name));
            output::print(&img, format)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            p.fail();
            Err(e.into())
        }
    }
}

pub fn run(cmd: ImageCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let (meta, format) = build_local(cmd, format)?;
    output::print(&meta, format)?;
    Ok(ExitCode::SUCCESS)
}

fn build_local(cmd: ImageCommand, format: OutputFormat) -> anyhow::Result<(ImageMeta, OutputFormat)> {
    match cmd {
        ImageCommand::Build { os, profile, name, cache_dir, mirror, force, import: _ } => {
            let profile = match profile {
                ProfileArg::Minimal => Profile::Minimal,
                ProfileArg::Standard => Profile::Standard,
            };
            let Some(recipe) = Recipe::of(&os, profile, &mirror) else {
                anyhow::bail!("unknown OS {os:?}; supported: {}", Recipe::OSES.join(", "));
            };
            let name = name.unwrap_or_else(|| if profile == Profile::Standard { format!("{os}-standard") } else { os.clone() });
            if kvmctl_types::Name::parse(&name).is_err() {
                anyhow::bail!("invalid --name {name:?}: must be a DNS label (a-z, 0-9, '-')");
            }
            let started = std::time::Instant::now();
            let mut progress = |line: &str| eprintln!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64());
            let meta = build(&BuildOptions { recipe: &recipe, name, cache_dir, force }, &mut progress)?;
            Ok((meta, format))
        }
        _ => unreachable!("only build runs locally"),
    }
}
