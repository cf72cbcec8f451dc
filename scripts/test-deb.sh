#!/usr/bin/env bash
# The package test: builds the .deb from this checkout's binary, installs it into a fresh
# Debian 12 root made with mmdebstrap (cached by its package list), and checks what a user
# gets: `kvmctl --version`, `systemd-analyze verify` of the unit, the kvmctl group, the
# completions loading in bash, zsh and fish, the man pages, the hook; then an upgrade
# (reinstall) and a purge that keeps the VMs' disks, and one that removes them when asked.
#   scripts/test-deb.sh [BINARY]     (default: target/debug/kvmctl)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
need_root "scripts/test-deb.sh"
repo=$(cd "$here/.." && pwd)
binary=${1:-$repo/target/debug/kvmctl}
work=$(mktemp -d)
trap 'umount -R "$work/root/proc" 2>/dev/null || true; rm -rf "$work"' EXIT

deb=$(KVMCTL_DEB_COMPRESS=gzip "$here/build-deb.sh" --binary "$binary" --out "$work")
log "built $(basename "$deb") ($(du -h "$deb" | cut -f1))"

packages="systemd,bash-completion,zsh,fish,man-db,libvirt0,adduser"
tarball="$KVMCTL_CACHE/deb-test-root-$(printf '%s' "bookworm $packages" | sha256sum | cut -c1-16).tar"
if [ ! -f "$tarball" ]; then
  log "making the Debian 12 test root with mmdebstrap (once; cached as $tarball)"
  mmdebstrap --quiet --format=tar --variant=apt --include="$packages" bookworm "$tarball.part" http://deb.debian.org/debian
  mv "$tarball.part" "$tarball"
fi
mkdir "$work/root"
tar -C "$work/root" -xf "$tarball"
in_root() { chroot "$work/root" "$@"; }
fail() { echo "package test FAILED: $*" >&2; exit 1; }

cp "$deb" "$work/root/tmp/kvmctl.deb"
in_root dpkg -i /tmp/kvmctl.deb >/dev/null || fail "dpkg -i"
in_root kvmctl --version | grep -q '^kvmctl ' || fail "kvmctl --version"
in_root getent group kvmctl >/dev/null || fail "the kvmctl group"
in_root systemd-analyze verify /lib/systemd/system/kvmctl.service 2>"$work/verify.log" || { cat "$work/verify.log" >&2; fail "systemd-analyze verify"; }
# Unknown units it names (libvirtd.service is not in the test root) are not the unit's faults.
if grep -v -e 'libvirtd.service' -e 'virtqemud.service' "$work/verify.log" | grep -q .; then cat "$work/verify.log" >&2; fail "systemd-analyze verify warned"; fi
in_root bash -c '. /usr/share/bash-completion/bash_completion; _completion_loader kvmctl; complete -p kvmctl' | grep -q 'kvmctl' || fail "bash completion"
in_root zsh -c 'autoload -Uz compinit && compinit -u && (( $+_comps[kvmctl] ))' || fail "zsh completion"
in_root fish -c 'complete -C "kvmctl vm cr"' | grep -q '^create' || fail "fish completion"
in_root man -w kvmctl-vm-create >/dev/null || fail "man page kvmctl-vm-create"
in_root test -x /etc/libvirt/hooks/qemu.d/kvmctl || fail "libvirt hook"
log "installed: --version, unit verified, group, completions (bash, zsh, fish), man pages, hook"

# Upgrade: the same package again keeps the configuration and the group.
mkdir -p "$work/root/etc/kvmctl" "$work/root/var/lib/kvmctl/images"
echo 'currency = "EUR"' > "$work/root/etc/kvmctl/kvmctl.toml"
echo disk > "$work/root/var/lib/kvmctl/images/vm-1-root.qcow2"
echo db > "$work/root/var/lib/kvmctl/kvmctl.db"
in_root dpkg -i /tmp/kvmctl.deb >/dev/null || fail "upgrade"
[ -f "$work/root/etc/kvmctl/kvmctl.toml" ] || fail "the upgrade lost the configuration"
# Purge keeps the VMs' disks; asked, it removes them.
in_root dpkg --purge kvmctl >/dev/null 2>"$work/purge.log" || fail "purge"
[ -f "$work/root/var/lib/kvmctl/images/vm-1-root.qcow2" ] || fail "purge removed the VMs' disks"
[ ! -e "$work/root/var/lib/kvmctl/kvmctl.db" ] && [ ! -e "$work/root/etc/kvmctl" ] || fail "purge left the database or configuration"
[ ! -e "$work/root/usr/bin/kvmctl" ] && ! in_root getent group kvmctl >/dev/null || fail "purge left the binary or the group"
grep -q 'kept the VMs' "$work/purge.log" || fail "purge did not say it kept the disks"
in_root dpkg -i /tmp/kvmctl.deb >/dev/null || fail "reinstall"
in_root env KVMCTL_PURGE_DISKS=yes dpkg --purge kvmctl >/dev/null 2>&1 || fail "purge with disks"
[ ! -e "$work/root/var/lib/kvmctl" ] || fail "KVMCTL_PURGE_DISKS=yes left /var/lib/kvmctl"
log "package test: install, upgrade, purge (disks kept), purge with KVMCTL_PURGE_DISKS=yes: ok"
