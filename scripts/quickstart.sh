#!/usr/bin/env bash
# Sets up this machine and runs kvmctl: the README's first command. Idempotent.
#   1. build dependencies (apt), then builds kvmctl (release) and installs /usr/local/bin/kvmctl;
#   2. `kvmctl host setup --yes`: QEMU/libvirt packages, /dev/kvm permissions, virtlogd and
#      libvirtd (systemd; or started directly, inside the kvmctl-test network namespace, on
#      hosts without systemd so guest networks stay off the host's network), the libvirt
#      hook, the default network, kvmctl's storage pool; then `host doctor` verifies;
#   3. (re)starts the daemon and prints `kvmctl status`;
#   4. builds the Debian 12 image (reused while its recipe is unchanged), imports it, and
#      creates and starts the VM `demo` from it (kept if it exists).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
need_root "scripts/quickstart.sh"
distro_check
apt_ensure "${BUILD_PACKAGES[@]}" "${IMAGE_PACKAGES[@]}"
cargo_check
"$here/web-assets.sh"

log "building kvmctl (release)"
(cd "$repo" && cargo build --release --quiet -p kvmctl-cli)
install -m 0755 "$repo/target/release/kvmctl" /usr/local/bin/kvmctl

run_in=()
setup_args=(--yes)
if [ ! -d /run/systemd/system ]; then
  setup_args+=(--netns "$KVMCTL_NETNS")
  run_in=(ip netns exec "$KVMCTL_NETNS")
fi
log "kvmctl host setup ${setup_args[*]}"
/usr/local/bin/kvmctl host setup "${setup_args[@]}"

sock=/run/kvmctl/kvmctl.sock
mkdir -p /var/log/kvmctl /run/kvmctl
if [ -f /run/kvmctl/kvmctl.pid ] && kill -0 "$(cat /run/kvmctl/kvmctl.pid)" 2>/dev/null; then
  log "stopping the running daemon (pid $(cat /run/kvmctl/kvmctl.pid))"
  kill "$(cat /run/kvmctl/kvmctl.pid)"
  for _ in $(seq 50); do [ -S "$sock" ] || break; sleep 0.1; done
fi
log "starting kvmctl serve (log: /var/log/kvmctl/kvmctl.log)"
nohup "${run_in[@]}" /usr/local/bin/kvmctl serve >>/var/log/kvmctl/kvmctl.log 2>&1 &
echo $! > /run/kvmctl/kvmctl.pid
# Wait until it answers (a socket file may be left from before a reboot: /run persists here).
for _ in $(seq 100); do /usr/local/bin/kvmctl plan list >/dev/null 2>&1 && break; sleep 0.1; done
echo
/usr/local/bin/kvmctl status

log "kvmctl image build debian-12 --import (about a minute the first time; reused afterwards)"
/usr/local/bin/kvmctl image build debian-12 --import >/dev/null
keys=()
for k in "$HOME"/.ssh/id_ed25519.pub "$HOME"/.ssh/id_ecdsa.pub "$HOME"/.ssh/id_rsa.pub; do
  [ -f "$k" ] && { keys=(--ssh-key "$k"); break; }
done
if /usr/local/bin/kvmctl vm show demo >/dev/null 2>&1; then
  log "VM demo exists; keeping it"
else
  log "kvmctl vm create demo --image debian-12 --plan micro ${keys[*]}"
  /usr/local/bin/kvmctl vm create demo --image debian-12 --plan micro "${keys[@]}" --wait >/dev/null
fi
echo
/usr/local/bin/kvmctl vm list
