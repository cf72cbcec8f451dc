#!/usr/bin/env bash
# Builds the kvmctl Debian package: the binary, the systemd unit, the libvirt hook (in
# qemu.d, beside any other hook), shell completions and man pages generated from the CLI.
#   scripts/build-deb.sh [--binary PATH] [--out DIR]
# KVMCTL_DEB_COMPRESS=gzip makes it faster to build (tests). Without --binary it builds the release binary first (cargo build --release). Prints the
# path of the .deb it wrote.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
binary="" out="$repo/target/deb"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--out DIR]" >&2; exit 2 ;;
  esac
done
if [ -z "$binary" ]; then
  (cd "$repo" && cargo build --release --quiet -p kvmctl-cli)
  binary="$repo/target/release/kvmctl"
fi
[ -x "$binary" ] || { echo "no kvmctl binary at $binary" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/kvmctl_${version}_$arch"
install -D -m 0755 "$binary" "$root/usr/bin/kvmctl"
install -D -m 0644 "$repo/packaging/deb/kvmctl.service" "$root/lib/systemd/system/kvmctl.service"
install -d -m 0755 "$root/etc/libvirt/hooks/qemu.d"
cat > "$root/etc/libvirt/hooks/qemu.d/kvmctl" <<'HOOK'
#!/bin/sh
# kvmctl libvirt hook (from the kvmctl package): applies and removes kvmctl's port forwards
# as domains start and stop.
exec /usr/bin/kvmctl hook qemu "$@"
HOOK
chmod 0755 "$root/etc/libvirt/hooks/qemu.d/kvmctl"
install -d "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/fish/vendor_completions.d" "$root/usr/share/man/man1" "$root/usr/share/doc/kvmctl"
"$binary" completion bash > "$root/usr/share/bash-completion/completions/kvmctl"
"$binary" completion zsh > "$root/usr/share/zsh/vendor-completions/_kvmctl"
"$binary" completion fish > "$root/usr/share/fish/vendor_completions.d/kvmctl.fish"
"$binary" man --dir "$root/usr/share/man/man1" 2>/dev/null
gzip -9n "$root"/usr/share/man/man1/*.1
cp "$repo/README.md" "$root/usr/share/doc/kvmctl/"
cp -r "$repo/docs/examples" "$root/usr/share/doc/kvmctl/"
printf 'kvmctl is licensed as stated in its Cargo.toml; see the source tree.\n' > "$root/usr/share/doc/kvmctl/copyright"
install -d "$root/DEBIAN"
for s in postinst prerm postrm; do install -m 0755 "$repo/packaging/deb/$s" "$root/DEBIAN/$s"; done
echo /etc/libvirt/hooks/qemu.d/kvmctl > "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: kvmctl
Version: $version
Architecture: $arch
Maintainer: kvmctl developers <kvmctl@localhost>
Installed-Size: $size
Depends: libvirt0 (>= 9.0), libc6, adduser
Recommends: libvirt-daemon-system, qemu-system-x86, qemu-utils, nftables, dnsmasq-base
Suggests: ovmf, swtpm, swtpm-tools
Section: admin
Priority: optional
Homepage: https://github.com/kvmctl/kvmctl
Description: virtual machines on KVM/QEMU hosts through libvirt
 One binary: kvmctl host doctor|setup prepares the host, kvmctl serve runs the daemon
 (REST API, web console, multi-tenant quotas and placement), and the other commands are
 its clients: VMs from images with cloud-init, networks and port forwards, snapshots and
 clones, ephemeral test VMs, labs as code and an Ansible inventory.
CONTROL
mkdir -p "$out"
dpkg-deb --root-owner-group -Z"${KVMCTL_DEB_COMPRESS:-xz}" --build "$root" "$out/kvmctl_${version}_$arch.deb" >/dev/null
echo "$out/kvmctl_${version}_$arch.deb"
