//! Every external program kvmctl runs, and the package that brings it on each supported
//! distribution family. One table: `host doctor` checks each program the daemon needs
//! (with the install command as the fix), `host setup` installs their packages, and a test
//! reads the sources for every program they invoke and fails when this table misses one.

use crate::facts::Family;

/// Who runs a program: the daemon (needed on every host that serves), the image builder
/// (`kvmctl image build` and the quick start's build step), host setup itself, or tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Daemon,
    ImageBuild,
    Setup,
    Test,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    pub name: &'static str,
    pub apt: &'static str,
    pub dnf: &'static str,
    pub role: Role,
    pub why: &'static str,
}

const fn p(name: &'static str, apt: &'static str, dnf: &'static str, role: Role, why: &'static str) -> Program {
    Program { name, apt, dnf, role, why }
}

pub const PROGRAMS: &[Program] = &[
    p("qemu-img", "qemu-utils", "qemu-img", Role::Daemon, "image import checks, overlays, image builds, snapshots"),
    p("prlimit", "util-linux", "util-linux", Role::Daemon, "limits for qemu-img on imported files"),
    p("qemu-system-x86_64", "qemu-system-x86", "qemu-kvm", Role::Daemon, "running guests, the KVM probe"),
    p("nft", "nftables", "nftables", Role::Daemon, "port forwards"),
    p("dnsmasq", "dnsmasq-base", "dnsmasq", Role::Daemon, "DHCP and DNS on libvirt networks"),
    p("ip", "iproute2", "iproute", Role::Setup, "network namespaces on hosts without systemd"),
    p("getent", "libc-bin", "glibc-common", Role::Setup, "group checks"),
    p("id", "coreutils", "coreutils", Role::Setup, "group membership"),
    p("dpkg-query", "dpkg", "dpkg", Role::Setup, "installed packages (apt hosts)"),
    p("rpm", "rpm", "rpm", Role::Setup, "installed packages (dnf hosts)"),
    p("sudo", "sudo", "sudo", Role::Setup, "host commands run by a non-root user"),
    p("mmdebstrap", "mmdebstrap", "mmdebstrap", Role::ImageBuild, "the guest's root tree"),
    p("chroot", "coreutils", "coreutils", Role::ImageBuild, "customising the guest's tree"),
    p("cp", "coreutils", "coreutils", Role::ImageBuild, "copying boot files"),
    p("sfdisk", "fdisk", "util-linux", Role::ImageBuild, "partitioning the image"),
    p("mkfs.ext4", "e2fsprogs", "e2fsprogs", Role::ImageBuild, "the root filesystem"),
    p("mkfs.fat", "dosfstools", "dosfstools", Role::ImageBuild, "the EFI system partition"),
    p("mmd", "mtools", "mtools", Role::ImageBuild, "the EFI system partition"),
    p("mcopy", "mtools", "mtools", Role::ImageBuild, "the EFI system partition"),
    p("grub-mkimage", "grub-pc-bin", "grub2-tools", Role::ImageBuild, "BIOS and UEFI boot code"),
    p("nasm", "nasm", "nasm", Role::Test, "re-assembling the KVM probe's boot sector"),
    p("ssh", "openssh-client", "openssh-clients", Role::Test, "logging in to test guests"),
    p("ssh-keygen", "openssh-client", "openssh-clients", Role::Test, "test keys"),
];

/// The table's entry for `name`.
pub fn program(name: &str) -> Option<&'static Program> {
    PROGRAMS.iter().find(|p| p.name == name)
}

/// The package bringing `prog` on `family`.
pub fn package_of(prog: &Program, family: Family) -> &'static str {
    match family {
        Family::Apt => prog.apt,
        Family::Dnf => prog.dnf,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every program the product's sources (`crates/*/src`, the test kit aside) run by name
    /// (`Command::new("...")`) is in the table. Test files' programs come with the test
    /// packages (`scripts/lib.sh`).
    #[test]
    fn every_program_the_code_runs_is_in_the_table() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut missing = Vec::new();
        let mut seen = 0;
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = e.path();
                let product = path.components().any(|c| c.as_os_str() == "src")
                    && !path.components().any(|c| c.as_os_str() == "kvmctl-testkit")
                    && !path.ends_with("programs.rs");
                if path.is_dir() && !path.ends_with("target") && !path.ends_with("tests") {
                    stack.push(path);
                } else if product && path.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for piece in text.split("Command::new(\"").skip(1) {
                        let name = piece.split('"').next().unwrap_or_default();
                        seen += 1;
                        if program(name).is_none() {
                            missing.push(format!("{name} ({})", path.display()));
                        }
                    }
                }
            }
        }
        assert!(seen > 10, "the scan found the invocations ({seen})");
        assert!(missing.is_empty(), "programs run but not in kvmctl_host::programs::PROGRAMS: {missing:?}");
    }

    /// What the daemon runs is installed by `host setup` on both families (or is part of
    /// every base system).
    #[test]
    fn setup_installs_what_the_daemon_runs() {
        const BASE: [&str; 2] = ["util-linux", "iproute2"];
        for family in [Family::Apt, Family::Dnf] {
            for prog in PROGRAMS.iter().filter(|p| p.role == Role::Daemon) {
                let pkg = package_of(prog, family);
                assert!(
                    crate::facts::packages_for(family).contains(&pkg)
                        || BASE.contains(&pkg)
                        || (family == Family::Dnf && pkg == "util-linux"),
                    "{} ({pkg}) is not installed by host setup on {family:?}",
                    prog.name
                );
            }
        }
    }
}
