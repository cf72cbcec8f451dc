//! `kvmctl vm create`: its options and the request made of them.

use crate::output::{self, OutputFormat};
use crate::vm::{default_keys, parse_gib, parse_mib, read, wait_for, with_vm_progress};
use crate::vm_devices::parse_share;
use kvmctl_client::Client;
use kvmctl_types::api::VmCreateRequest;
use std::path::PathBuf;
use std::process::ExitCode;

// The options of `vm create` (its help text is the variant's, in `vm.rs`).
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// VM name: a DNS label (a-z, 0-9, '-'), also the guest's hostname.
    pub name: String,
    /// Image to boot (`kvmctl image list`).
    #[arg(long, required_unless_present = "install_iso", conflicts_with = "install_iso")]
    pub image: Option<String>,
    /// The storage pool for the root disk and seed (`kvmctl pool list`) [default: the
    /// image's]; on an LVM pool the root disk is a raw copy of the image.
    #[arg(long)]
    pub pool: Option<String>,
    /// Install from this ISO image (`image import --kind iso`): an empty root disk of
    /// --disk, the ISO booted first.
    #[arg(long, value_name = "IMAGE")]
    pub install_iso: Option<String>,
    /// Attach this ISO image as a CD-ROM too (virtio-win's drivers); up to 2.
    #[arg(long = "extra-iso", value_name = "IMAGE")]
    pub extra_isos: Vec<String>,
    /// Guest profile: windows-11 (UEFI Secure Boot, TPM 2.0, Hyper-V enlightenments,
    /// a Windows clock; with --install-iso, an install without clicks) [default: the
    /// image's].
    #[arg(long, value_parser = ["windows-11"])]
    pub profile: Option<String>,
    /// windows-11 installs: the account's password, read from FILE (`-`: stdin).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// windows-11 installs: locale [default: en-US].
    #[arg(long)]
    pub locale: Option<String>,
    /// windows-11 installs: Windows time zone name [default: UTC].
    #[arg(long)]
    pub time_zone: Option<String>,
    /// windows-11 installs: the edition to install [default: Windows 11 Pro].
    #[arg(long)]
    pub edition: Option<String>,
    /// Size by plan (`kvmctl plan list`); --cpus, --memory and --disk override it.
    #[arg(long)]
    pub plan: Option<String>,
    /// Virtual CPUs.
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory, e.g. 512M or 2G.
    #[arg(long, value_parser = parse_mib)]
    pub memory: Option<u64>,
    /// Root disk size, e.g. 20G (at least the image's size).
    #[arg(long, value_parser = parse_gib)]
    pub disk: Option<u64>,
    /// OpenSSH public key file for the default user; repeat for more
    /// [default: ~/.ssh/id_ed25519.pub or ~/.ssh/id_rsa.pub when present].
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub ssh_keys: Vec<PathBuf>,
    /// User cloud-init creates [default: the image's default user, else kvmctl].
    #[arg(long)]
    pub user: Option<String>,
    /// Your own user-data (cloud-config or script), merged with kvmctl's.
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// Network to join: a libvirt network (`kvmctl network list`), bridge:BR (an existing
    /// host bridge) or macvtap:DEV (a host NIC) [default: the daemon's `network` setting].
    #[arg(long)]
    pub network: Option<String>,
    /// bios, uefi or uefi-secure (Secure Boot) [default: the image's first boot mode].
    #[arg(long)]
    pub firmware: Option<String>,
    /// Give the VM an emulated TPM 2.0 (swtpm); its state is kept per VM and removed with it.
    #[arg(long)]
    pub tpm: bool,
    /// Share a host directory over virtio-fs (admins; under the daemon's share_roots):
    /// HOST_DIR:TAG[:ro][:GUEST_DIR]; cloud-init mounts it at GUEST_DIR [default:
    /// /mnt/TAG]. Repeat for more.
    #[arg(long = "share", value_name = "HOST_DIR:TAG[:ro][:GUEST_DIR]", value_parser = parse_share)]
    pub shares: Vec<kvmctl_types::api::VmShare>,
    /// Define the VM but leave it stopped.
    #[arg(long, conflicts_with = "wait")]
    pub no_start: bool,
    /// Do not forward a host port from the SSH pool to the guest's port 22.
    #[arg(long)]
    pub no_ssh_forward: bool,
    /// Only nodes carrying this label may take the VM, KEY=VALUE (repeat).
    #[arg(long = "node-label", value_name = "KEY=VALUE", value_parser = crate::node::parse_label)]
    pub node_labels: Vec<(String, String)>,
    /// A label on the VM, KEY=VALUE (repeat); `vm list --label` selects by them.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = crate::node::parse_label)]
    pub labels: Vec<(String, String)>,
    /// How to pick the node: best-fit (least capacity left after the VM) or spread.
    #[arg(long, value_name = "STRATEGY")]
    pub placement: Option<String>,
    /// Delete the VM this long after it is created (an ephemeral VM), e.g. 90m, 2h,
    /// 7d; 1m to 30d.
    #[arg(long, value_name = "DURATION", value_parser = crate::users::parse_duration)]
    pub ttl: Option<i64>,
    /// Print why each node was chosen or refused (admins).
    #[arg(long)]
    pub explain: bool,
    /// Return once the VM reaches a readiness stage: running (the default for a bare
    /// --wait), ssh (login with the VM's key works) or cloud-init (finished); the stages
    /// and their timings are shown.
    #[arg(long, value_name = "STAGE", num_args = 0..=1, default_missing_value = "running")]
    pub wait: Option<String>,
    /// Seconds --wait waits.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

pub async fn create(client: &Client, args: CreateArgs, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let CreateArgs {
        name,
        image,
        pool,
        install_iso,
        extra_isos,
        profile,
        password_file,
        locale,
        time_zone,
        edition,
        plan,
        cpus,
        memory,
        disk,
        ssh_keys,
        user,
        user_data,
        network,
        firmware,
        tpm,
        shares,
        no_start,
        no_ssh_forward,
        node_labels,
        labels,
        placement,
        ttl,
        explain,
        wait,
        timeout,
    } = args;
    let key_files = if ssh_keys.is_empty() { default_keys() } else { ssh_keys };
    let mut keys = Vec::new();
    for f in &key_files {
        keys.extend(read("--ssh-key", f)?.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned));
    }
    let user_data = user_data.as_ref().map(|f| read("--user-data", f)).transpose()?;
    let unattend = match password_file {
        Some(f) => {
            let text = if f.as_os_str() == "-" { std::io::read_to_string(std::io::stdin())? } else { read("--password-file", &f)? };
            let password = text.lines().next().unwrap_or_default().to_owned();
            Some(kvmctl_types::api::UnattendSettings { password, locale, time_zone, edition, product_key: None })
        }
        None if locale.is_some() || time_zone.is_some() || edition.is_some() => {
            anyhow::bail!("--locale, --time-zone and --edition go with --password-file (a windows-11 install)")
        }
        None => None,
    };
    let req = VmCreateRequest {
        name: name.clone(),
        image: image.unwrap_or_default(),
        pool,
        install_iso,
        extra_isos,
        profile,
        unattend,
        plan,
        vcpus: cpus,
        memory_mib: memory,
        disk_gib: disk,
        ssh_keys: keys,
        user,
        user_data,
        network,
        firmware,
        tpm,
        shares,
        no_start,
        no_ssh_forward,
        node_labels: node_labels.into_iter().collect(),
        labels: labels.into_iter().collect(),
        placement,
        ttl_seconds: ttl.map(|t| t as u64),
        test_run: None,
    };
    let mut vm =
        with_vm_progress(client, &name, &format!("creating VM {name}"), &format!("VM {name} created"), client.vm_create(&req)).await?;
    if let Some(stage) = wait {
        vm = wait_for(client, &name, &stage, timeout).await?;
    }
    if explain && format == OutputFormat::Table {
        let mut rows = vec![["node", "verdict", "reason"].map(String::from).to_vec()];
        rows.extend(vm.placement.iter().map(|v| {
            vec![
                v.node.clone(),
                if v.chosen {
                    "chosen"
                } else if v.fits {
                    "fits"
                } else {
                    "refused"
                }
                .into(),
                v.reason.clone(),
            ]
        }));
        eprint!("{}", output::table(&rows, true));
    }
    output::print(&vm, format)?;
    Ok(ExitCode::SUCCESS)
}
