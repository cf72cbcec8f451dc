//! Carrying out a recipe. Every stage reports its name and duration; every tool it needs is
//! checked first, naming the package that provides it. The build happens in a work
//! directory next to the output and is renamed into place only when complete, so a failed
//! or interrupted build never leaves something that looks like an image.

use crate::recipe::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{tool} not found; install the {package} package (apt-get install {package})")]
    MissingTool { tool: &'static str, package: &'static str },
    #[error("building images needs root (mmdebstrap --mode=root, chroot); run as root")]
    NeedsRoot,
    #[error("stage {stage} failed: {message}")]
    Stage { stage: &'static str, message: String },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What was built, recorded beside the image as `image.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMeta {
    pub name: String,
    pub os: String,
    pub version: String,
    pub profile: Profile,
    /// `bios` and `uefi`.
    pub boot_modes: Vec<String>,
    pub format: String,
    pub path: PathBuf,
    /// Size of the qcow2 file.
    pub file_bytes: u64,
    /// Virtual disk size.
    pub virtual_bytes: u64,
    pub sha256: String,
    pub recipe_hash: String,
    /// Unix seconds.
    pub built_at: u64,
    pub build_seconds: f64,
    pub kernel: String,
    pub cloud_init: bool,
    pub default_user: Option<String>,
    /// `name=version` of every package in the image.
    pub packages: Vec<String>,
}

pub struct BuildOptions<'a> {
    pub recipe: &'a Recipe,
    pub name: String,
    /// Images live in `<cache>/<name>-<recipe hash>/`.
    pub cache_dir: PathBuf,
    /// Rebuild even when a build for this recipe exists.
    pub force: bool,
}

const TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("sfdisk", "fdisk"),
    ("mkfs.ext4", "e2fsprogs"),
    ("mkfs.fat", "dosfstools"),
    ("mmd", "mtools"),
    ("mcopy", "mtools"),
    ("grub-mkimage", "grub-common"),
    ("qemu-img", "qemu-utils"),
];

/// The packages the builder needs on the host (also installed by scripts/testenv.sh).
pub const HOST_PACKAGES: &[&str] = &["mmdebstrap", "fdisk", "e2fsprogs", "dosfstools", "mtools", "grub-pc-bin", "qemu-utils"];

fn have(tool: &str) -> bool {
    std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/sbin"]).any(|d| Path::new(d).join(tool).is_file())
}

pub fn check_host() -> Result<(), BuildError> {
    for (tool, package) in TOOLS {
        if !have(tool) {
            return Err(BuildError::MissingTool { tool, package });
        }
    }
    if !Path::new("/usr/lib/grub/i386-pc/kernel.img").exists() {
        return Err(BuildError::MissingTool { tool: "GRUB i386-pc modules", package: "grub-pc-bin" });
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(BuildError::NeedsRoot);
    }
    Ok(())
}

fn run(stage: &'static str, cmd: &mut Command) -> Result<String, BuildError> {
    let out = cmd.output().map_err(|e| BuildError::Stage { stage, message: format!("cannot run {:?}: {e}", cmd.get_program()) })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // apt's own verdicts ("E: Unable to locate package ...") first, wherever they stand;
        // then the last lines.
        let mut tail: Vec<&str> = err.lines().filter(|l| l.starts_with("E: ") && !l.starts_with("E: setup failed")).take(4).collect();
        tail.extend(err.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().filter(|l| !l.contains("Reading database")));
        return Err(BuildError::Stage {
            stage,
            message: format!("{:?} exited with {}: {}", cmd.get_program(), out.status, tail.join(" | ")),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io { path: path.to_owned(), source }
}

/// Builds (or reuses) the image; `progress` gets one line per stage.
pub fn build(opts: &BuildOptions<'_>, progress: &mut dyn FnMut(&str)) -> Result<ImageMeta, BuildError> {
    let r = opts.recipe;
    let hash = r.hash();
    let out_dir = opts.cache_dir.join(format!("{}-{hash}", opts.name));
    let meta_path = out_dir.join("image.json");
    if !opts.force {
        if let Ok(text) = std::fs::read_to_string(&meta_path) {
            if let Ok(meta) = serde_json::from_str::<ImageMeta>(&text) {
                if meta.path.exists() {
                    progress(&format!("reusing {} (recipe {hash} unchanged)", meta.path.display()));
                    return Ok(meta);
                }
            }
        }
    }
    check_host()?;
    let started = Instant::now();
    let work = opts.cache_dir.join(format!(".build-{}-{hash}-{}", opts.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io(&work))?;
    let result = build_in(opts, r, &hash, &work, &out_dir, started, progress);
    let _ = std::fs::remove_dir_all(&work); // the tree and the raw disk are large; never keep them
    result
}

fn build_in(
    opts: &BuildOptions<'_>,
    r: &Recipe,
    hash: &str,
    work: &Path,
    out_dir: &Path,
    started: Instant,
    progress: &mut dyn FnMut(&str),
) -> Result<ImageMeta, BuildError> {
    let root = work.join("root");
    let mut stage_start = Instant::now();
    let mut done = |name: &str, progress: &mut dyn FnMut(&str)| {
        progress(&format!("{name}: done in {:.1} s", stage_start.elapsed().as_secs_f64()));
        stage_start = Instant::now();
    };

    progress(&format!("root tree: mmdebstrap {} ({} packages) from {}", r.suite, r.packages.len(), r.mirror));
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=minbase", "--mode=root", "--format=directory", "--quiet"])
        .arg(format!("--include={}", r.packages.join(",")))
        .args([
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
        ]);
    if Path::new("/usr/share/mmdebstrap/hooks/merged-usr").is_dir() {
        cmd.arg("--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr");
    }
    run("root tree", cmd.arg(&r.suite).arg(&root).arg(&r.mirror))?;
    done("root tree", progress);

    progress("customise: cloud-init, networking, units, initramfs, GRUB files");
    for (path, content) in &r.files {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().expect("absolute paths have parents")).map_err(io(&p))?;
        std::fs::write(&p, content).map_err(io(&p))?;
    }
    for unit in &r.masked {
        let p = root.join("etc/systemd/system").join(unit);
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink("/dev/null", &p).map_err(io(&p))?;
    }
    for unit in &r.enabled {
        run("customise", Command::new("chroot").arg(&root).args(["systemctl", "enable", unit]))?;
    }
    // Host keys and ids are made per VM at first boot, never shared between VMs.
    for e in std::fs::read_dir(root.join("etc/ssh")).map_err(io(&root))?.flatten() {
        if e.file_name().to_string_lossy().starts_with("ssh_host_") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_file(root.join("var/lib/dbus/machine-id"));
    run("customise", Command::new("chroot").arg(&root).args(["update-initramfs", "-u", "-k", "all"]))?;
    run("customise", Command::new("cp").arg("-r").arg("/usr/lib/grub/i386-pc").arg(root.join("boot/grub")))?;
    let kernel = std::fs::read_link(root.join("vmlinuz"))
        .map(|p| p.to_string_lossy().trim_start_matches("boot/vmlinuz-").to_owned())
        .unwrap_or_default();
    let packages: Vec<String> =
        run("customise", Command::new("chroot").arg(&root).args(["dpkg-query", "-W", "-f=${Package}=${Version}\\n"]))?
            .lines()
            .map(str::to_owned)
            .collect();
    done("customise", progress);

    progress(&format!("disk: {} MiB, MBR with a {} MiB ESP and an ext4 root written from the tree", r.disk_mib, r.esp_mib));
    let raw = work.join("disk.raw");
    let f = std::fs::File::create(&raw).map_err(io(&raw))?;
    f.set_len(r.disk_mib << 20).map_err(io(&raw))?;
    drop(f);
    let mut sf = Command::new("sfdisk");
    sf.arg("-q").arg(&raw).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut child = sf.spawn().map_err(|e| BuildError::Stage { stage: "disk", message: format!("cannot run sfdisk: {e}") })?;
    std::io::Write::write_all(&mut child.stdin.take().expect("piped"), r.partition_script().as_bytes()).map_err(io(&raw))?;
    let o = child.wait_with_output().map_err(io(&raw))?;
    if !o.status.success() {
        return Err(BuildError::Stage { stage: "disk", message: format!("sfdisk: {}", String::from_utf8_lossy(&o.stderr)) });
    }
    let ((esp_off, esp_len), (root_off, root_len)) = r.layout();
    run(
        "disk",
        Command::new("mkfs.fat")
            .args(["-F", "16", "-n", ESP_LABEL, "--offset", &(esp_off / 512).to_string()])
            .arg(&raw)
            .arg((esp_len / 1024).to_string()),
    )?;
    run(
        "disk",
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", ROOT_LABEL, "-E", &format!("offset={root_off}"), "-d"])
            .arg(&root)
            .arg(&raw)
            .arg(format!("{}k", root_len / 1024)),
    )?;
    done("disk", progress);

    progress("boot: GRUB for BIOS (boot sector + core image); for UEFI, Debian's signed shim and GRUB (Secure Boot or not)");
    let early = work.join("early.cfg");
    std::fs::write(&early, GRUB_EARLY_CFG).map_err(io(&early))?;
    let core = work.join("core.img");
    run(
        "boot",
        Command::new("grub-mkimage")
            .args(["-O", "i386-pc", "-p", "/boot/grub", "-c"])
            .arg(&early)
            .arg("-o")
            .arg(&core)
            .args(GRUB_BIOS_MODULES),
    )?;
    let core_bytes = std::fs::read(&core).map_err(io(&core))?;
    if core_bytes.len() as u64 > esp_off - 512 {
        return Err(BuildError::Stage {
            stage: "boot",
            message: format!("GRUB's core image ({} bytes) does not fit before the first partition", core_bytes.len()),
        });
    }
    let boot_img = std::fs::read("/usr/lib/grub/i386-pc/boot.img").map_err(io(Path::new("/usr/lib/grub/i386-pc/boot.img")))?;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut disk = std::fs::OpenOptions::new().write(true).open(&raw).map_err(io(&raw))?;
        // The boot code only: bytes 440.. of the MBR hold the partition table sfdisk wrote.
        disk.write_all(&boot_img[..440]).map_err(io(&raw))?;
        disk.seek(SeekFrom::Start(512)).map_err(io(&raw))?;
        disk.write_all(&core_bytes).map_err(io(&raw))?;
    }
    // UEFI: shim (signed by Microsoft's UEFI CA) as the removable-media loader, chaining to
    // Debian's signed GRUB beside it, which finds no /EFI/debian and reads `grub.cfg` from its
    // own directory: the same early configuration as the BIOS core image. The kernel is
    // Debian's signed one, so the chain boots with Secure Boot enforced and without it.
    let early_on_esp = work.join("grub-esp.cfg");
    std::fs::write(&early_on_esp, GRUB_EARLY_CFG).map_err(io(&early_on_esp))?;
    let esp = format!("{}@@{}", raw.display(), esp_off);
    run("boot", Command::new("mmd").args(["-i", &esp, "::/EFI", "::/EFI/BOOT"]))?;
    for (from, to) in [
        (root.join(SHIM_SIGNED.trim_start_matches('/')), "::/EFI/BOOT/BOOTX64.EFI"),
        (root.join(GRUB_EFI_SIGNED.trim_start_matches('/')), "::/EFI/BOOT/grubx64.efi"),
        (early_on_esp, "::/EFI/BOOT/grub.cfg"),
    ] {
        run("boot", Command::new("mcopy").args(["-i", &esp]).arg(&from).arg(to))?;
    }
    done("boot", progress);

    progress("qcow2: compressing");
    let staging = work.join("image.qcow2");
    run("qcow2", Command::new("qemu-img").args(["convert", "-c", "-O", "qcow2"]).arg(&raw).arg(&staging))?;
    let sha256 = {
        let mut h = Sha256::new();
        let mut f = std::fs::File::open(&staging).map_err(io(&staging))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io(&staging))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        hex(&h.finalize())
    };
    done("qcow2", progress);

    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let path = out_dir.join("image.qcow2");
    std::fs::rename(&staging, &path).map_err(io(&path))?;
    let meta = ImageMeta {
        name: opts.name.clone(),
        os: r.os.clone(),
        version: r.version.clone(),
        profile: r.profile,
        boot_modes: vec!["bios".into(), "uefi".into(), "uefi-secure".into()],
        format: "qcow2".into(),
        file_bytes: std::fs::metadata(&path).map_err(io(&path))?.len(),
        virtual_bytes: r.disk_mib << 20,
        sha256,
        recipe_hash: hash.to_owned(),
        built_at: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        build_seconds: started.elapsed().as_secs_f64(),
        kernel,
        cloud_init: true,
        default_user: None,
        packages,
        path,
    };
    let meta_path = out_dir.join("image.json");
    std::fs::write(&meta_path, serde_json::to_string_pretty(&meta).expect("serialisable") + "\n").map_err(io(&meta_path))?;
    progress(&format!(
        "image: {} ({} MiB, sha256 {}) in {:.0} s",
        meta.path.display(),
        meta.file_bytes >> 20,
        &meta.sha256[..12],
        meta.build_seconds
    ));
    Ok(meta)
}
