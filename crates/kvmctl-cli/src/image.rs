//! `kvmctl image build`: runs locally (it needs root and the package mirror, not the daemon).

use crate::output::{self, OutputFormat, Table};
use kvmctl_image::build::{build, BuildOptions, ImageMeta};
use kvmctl_image::recipe::{Profile, Recipe};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Build a cloud-init guest image offline from distribution packages (mmdebstrap): a
    /// compressed qcow2 with an MBR, an EFI system partition and an ext4 root, bootable with
    /// BIOS and UEFI, trimmed to boot fast under emulation. Reuses the last build while the
    /// recipe is unchanged.
    Build {
        /// What to build. Supported: debian-12.
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
    },
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

pub fn run(cmd: ImageCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCommand::Build { os, profile, name, cache_dir, mirror, force } => {
            if os != "debian-12" {
                anyhow::bail!("unknown OS {os:?}; supported: debian-12");
            }
            let profile = match profile {
                ProfileArg::Minimal => Profile::Minimal,
                ProfileArg::Standard => Profile::Standard,
            };
            let recipe = Recipe::debian_12(profile, &mirror);
            let name = name.unwrap_or_else(|| if profile == Profile::Standard { format!("{os}-standard") } else { os.clone() });
            if kvmctl_types::Name::parse(&name).is_err() {
                anyhow::bail!("invalid --name {name:?}: must be a DNS label (a-z, 0-9, '-')");
            }
            let started = std::time::Instant::now();
            let mut progress = |line: &str| eprintln!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64());
            let meta = build(&BuildOptions { recipe: &recipe, name, cache_dir, force }, &mut progress)?;
            output::print(&meta, format)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
