#!/usr/bin/env bash
# Sets up this machine and runs kvmctl: the README's first command.
#   - build dependencies and the hypervisor stack from the distribution (apt);
#   - libvirtd: through systemd where it is PID 1; elsewhere started directly, inside the
#     kvmctl-test network namespace so guest networks stay off the host's network;
#   - builds kvmctl (release), installs it to /usr/local/bin, (re)starts the daemon;
#   - prints `kvmctl status`.
# Idempotent: run it again after pulling changes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
need_root "scripts/quickstart.sh"
distro_check
apt_ensure "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
cargo_check

run_in=()
if [ -d /run/systemd/system ]; then
  kvm_dev_permissions
  systemctl enable --now virtlogd.socket libvirtd.socket libvirtd.service >/dev/null
else
  netns_ensure
  libvirt_ensure
  run_in=(ip netns exec "$KVMCTL_NETNS")
fi

log "building kvmctl (release)"
(cd "$repo" && cargo build --release --quiet -p kvmctl-cli)
install -m 0755 "$repo/target/release/kvmctl" /usr/local/bin/kvmctl

sock=/run/kvmctl/kvmctl.sock
mkdir -p /var/log/kvmctl
if [ -f /run/kvmctl/kvmctl.pid ] && kill -0 "$(cat /run/kvmctl/kvmctl.pid)" 2>/dev/null; then
  log "stopping the running daemon (pid $(cat /run/kvmctl/kvmctl.pid))"
  kill "$(cat /run/kvmctl/kvmctl.pid)"
  for _ in $(seq 50); do [ -S "$sock" ] || break; sleep 0.1; done
fi
log "starting kvmctl serve (log: /var/log/kvmctl/kvmctl.log)"
mkdir -p /run/kvmctl
nohup "${run_in[@]}" /usr/local/bin/kvmctl serve >>/var/log/kvmctl/kvmctl.log 2>&1 &
echo $! > /run/kvmctl/kvmctl.pid
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
echo
kvmctl status
