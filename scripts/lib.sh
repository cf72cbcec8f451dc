# Shared helpers for kvmctl's scripts. Sourced, never run.
# Every function is idempotent: calling it twice changes nothing the second time.

KVMCTL_NETNS="${KVMCTL_NETNS:-kvmctl-test}"
KVMCTL_CACHE="${KVMCTL_CACHE:-/var/cache/kvmctl-test}"
KVMCTL_RUN="${KVMCTL_RUN:-/run/kvmctl-test}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" = 0 ] || die "$1 needs root (it installs packages and starts libvirtd); run it as root or with sudo"
}

# distro_check: only Debian 12 (and derivatives that say ID_LIKE=debian) are known here.
distro_check() {
  [ -r /etc/os-release ] || die "cannot read /etc/os-release; supported: Debian 12 (bookworm), Ubuntu 22.04+"
  # shellcheck disable=SC1091
  . /etc/os-release
  case "${ID:-}:${ID_LIKE:-}" in
    debian:*|ubuntu:*|*:*debian*) ;;
    *) die "unsupported distribution '${PRETTY_NAME:-$ID}'; supported: Debian 12 (bookworm), Ubuntu 22.04+ (apt). Install libvirt-dev, pkg-config, qemu-system-x86 and libvirt-daemon-system by hand, then re-run" ;;
  esac
}

# apt_ensure PKG...: installs the packages that are missing, and only those.
apt_ensure() {
  local missing=() p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "${p%%/*}" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "apt: installing ${missing[*]}"
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    apt-get update -q >/dev/null || die "apt-get update failed; check /etc/apt/sources.list"
  fi
  local extra=()
  # qemu-utils from bookworm-backports blocks the stock qemu-system-x86 (Breaks: qemu-system-common < 8);
  # take the distribution's qemu-utils so the pair matches.
  if [[ " ${missing[*]} " == *" qemu-system"* ]] && dpkg --compare-versions \
       "$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || echo 0)" gt \
       "$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')"; then
    extra=(--allow-downgrades "qemu-utils/${VERSION_CODENAME:-bookworm}")
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${extra[@]}" "${missing[@]}" >/tmp/kvmctl-apt.log 2>&1 \
    || { tail -20 /tmp/kvmctl-apt.log >&2; die "apt-get install failed (full log: /tmp/kvmctl-apt.log)"; }
}

# Packages the build needs (curl fetches the web console's pinned npm assets: scripts/web-assets.sh).
BUILD_PACKAGES=(pkg-config libvirt-dev gcc libc6-dev curl ca-certificates)
# Packages `kvmctl image build` needs (the quick start builds an image).
IMAGE_PACKAGES=(mmdebstrap qemu-utils fdisk e2fsprogs dosfstools mtools grub-pc-bin)
# Packages the tests and the sandboxed quick start need.
TEST_PACKAGES=(qemu-system-x86 libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
  dnsmasq-base nftables iptables ovmf swtpm swtpm-tools busybox-static dropbear-bin iproute2
  xorriso genisoimage cpio kmod lvm2 sqlite3 postgresql-15 openssh-client openssh-sftp-server procps nasm chromium chromium-driver python3-venv "${IMAGE_PACKAGES[@]}")

cargo_check() {
  command -v cargo >/dev/null || die "cargo not found; install Rust (https://rustup.rs) and re-run"
}

netns_exec() { ip netns exec "$KVMCTL_NETNS" "$@"; }

# netns_ensure: the namespace every test guest, libvirt network and dnsmasq lives in.
# Only loopback exists in it, plus what libvirt creates; nothing in it routes to the outside.
# /run survives a reboot on some hosts (these machines among them): a name left there from
# before is a plain file, not a namespace, and is deleted and created afresh.
netns_ensure() {
  if [ -e "/run/netns/$KVMCTL_NETNS" ] && ! netns_exec true 2>/dev/null; then
    log "/run/netns/$KVMCTL_NETNS is not a live namespace (left from before a reboot); recreating it"
    ip netns delete "$KVMCTL_NETNS"
  fi
  [ -e "/run/netns/$KVMCTL_NETNS" ] || { log "creating network namespace $KVMCTL_NETNS"; ip netns add "$KVMCTL_NETNS"; }
  netns_exec ip link set lo up
}

pid_netns() { ip netns identify "$1" 2>/dev/null; }

# daemon_pid NAME: pid of a running daemon named NAME, or nothing (and success: callers run
# under set -e and pipefail, where pgrep's "none found" would end the script).
daemon_pid() { { pgrep -x "$1" || true; } | head -1; }

# ns_daemon_pid NAME NS: pid of daemon NAME running in network namespace NS ("" for the
# host's), or nothing. Several libvirtds run here (the second test node's among them).
ns_daemon_pid() {
  local p
  for p in $(pgrep -x "$1" || true); do
    if [ "$(pid_netns "$p")" = "$2" ]; then echo "$p"; return 0; fi
  done
}

# kvm_dev_permissions: /dev/kvm as udev sets it on an ordinary host (0660 root:kvm).
# Without udev it stays 0600 root:root; libvirt then finds KVM "not available" to the qemu
# user and re-probes QEMU's capabilities on every domain define (30-70 s each here).
kvm_dev_permissions() {
  [ -c /dev/kvm ] || return 0
  getent group kvm >/dev/null || groupadd -r kvm
  [ "$(stat -c '%G %a' /dev/kvm)" = "kvm 660" ] || { log "setting /dev/kvm to 0660 root:kvm (as udev does)"; chgrp kvm /dev/kvm; chmod 0660 /dev/kvm; }
}

# libvirt_ensure: virtlogd and libvirtd running inside the namespace.
# Hosts without systemd (these machines) get them started directly. A libvirtd already
# running outside the namespace is stopped and restarted inside it, so that guest
# networks never appear in the host's own network stack.
libvirt_ensure() {
  local d pid
  kvm_dev_permissions
  for d in virtlogd libvirtd; do
    pid=$(ns_daemon_pid "$d" "$KVMCTL_NETNS")
    [ -n "$pid" ] || pid=$(ns_daemon_pid "$d" "")
    if [ -n "$pid" ] && [ "$(pid_netns "$pid")" != "$KVMCTL_NETNS" ]; then
      if [ -d /run/systemd/system ]; then
        die "$d is running in the host network namespace under systemd; stop it (systemctl stop $d ${d}.socket) so the test $d can run in namespace $KVMCTL_NETNS"
      fi
      log "$d (pid $pid) runs outside namespace $KVMCTL_NETNS; restarting it inside"
      kill "$pid"; for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      pid=""
    fi
    if [ -z "$pid" ]; then
      log "starting $d in namespace $KVMCTL_NETNS"
      netns_exec "$d" -d || die "could not start $d; see /var/log/libvirt/"
    fi
  done
  for _ in $(seq 100); do virsh -c qemu:///system version >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "libvirtd did not answer on qemu:///system within 10 s; check /var/log/libvirt/libvirtd.log"
}
