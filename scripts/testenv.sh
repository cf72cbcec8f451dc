#!/usr/bin/env bash
# Prepares the real-libvirt test environment on a Debian machine, idempotently:
#   - apt packages the tests need;
#   - network namespace $KVMCTL_NETNS with virtlogd and libvirtd running inside it, so that
#     libvirt networks, dnsmasq, guest NICs and nftables rules never touch the host's network;
#   - the isolated libvirt network and the storage pool tests use;
#   - a PostgreSQL server on a Unix socket (scripts/testpg.sh);
#   - a second compute node: another libvirtd in its own network and mount namespaces
#     (scripts/testnode2.sh), reached over a veth pair;
#   - guest fixtures, built once into $KVMCTL_CACHE keyed by a hash of their inputs.
# Writes the settings tests read to $KVMCTL_RUN/env (source it to run one test by hand).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
need_root "scripts/testenv.sh"
distro_check
apt_ensure "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
"$here/web-assets.sh"
netns_ensure

# The libvirt qemu hook that applies and removes port forwards when test domains start and
# stop (`kvmctl hook qemu`), running this checkout's binary. It sits in the hook directory
# beside any hook `kvmctl host setup` installed, does nothing until the binary is built, and
# never fails a domain operation. libvirtd reads hooks when it starts, so a new or changed
# hook restarts the test libvirtd (running guests survive it).
repo=$(cd "$here/.." && pwd)
hook=/etc/libvirt/hooks/qemu.d/kvmctl-test
hook_text="#!/bin/sh
# kvmctl test hook (scripts/testenv.sh): port forwards of test VMs.
bin=$repo/target/debug/kvmctl
if [ -x \"\$bin\" ]; then \"\$bin\" hook qemu \"\$@\"; else cat >/dev/null; fi
exit 0"
if [ "$(cat "$hook" 2>/dev/null)" != "$hook_text" ]; then
  log "installing the test libvirt hook $hook"
  mkdir -p "$(dirname "$hook")"
  printf '%s\n' "$hook_text" > "$hook.tmp" && chmod 755 "$hook.tmp" && mv "$hook.tmp" "$hook"
  pid=$(ns_daemon_pid libvirtd "$KVMCTL_NETNS")
  if [ -n "$pid" ]; then
    log "restarting libvirtd so it loads the hook"
    kill "$pid"; for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
fi
libvirt_ensure

KVMCTL_TEST_NETWORK=${KVMCTL_TEST_NETWORK:-kvmctl-test}
KVMCTL_TEST_POOL=${KVMCTL_TEST_POOL:-kvmctl-test}
KVMCTL_TEST_POOL_DIR=${KVMCTL_TEST_POOL_DIR:-/var/lib/kvmctl-test/pool}

# An isolated network (no forward element: nothing routes out of it) on a subnet that only
# exists inside the namespace. Its addresses are not reserved ahead (ADR 0015): the suite runs
# many daemons, each with its own database, on this one network, and only libvirt's refusal
# of a second live entry for an address keeps two of them from giving one address to two VMs.
net_xml="<network>
  <name>$KVMCTL_TEST_NETWORK</name>
  <bridge name='kvt0' stp='off'/>
  <ip address='10.77.0.1' netmask='255.255.255.0'>
    <dhcp><range start='10.77.0.100' end='10.77.0.250'/></dhcp>
  </ip>
</network>"
net_define() {  # [uuid of the network to redefine]
  local xml; xml=$(mktemp)
  if [[ -n "${1:-}" ]]; then echo "$net_xml" | sed "2i\\  <uuid>$1</uuid>" > "$xml"; else echo "$net_xml" > "$xml"; fi
  virsh -q net-define "$xml" >/dev/null; rm -f "$xml"
}
if ! virsh net-info "$KVMCTL_TEST_NETWORK" >/dev/null 2>&1; then
  log "defining libvirt network $KVMCTL_TEST_NETWORK"
  net_define
  virsh -q net-autostart "$KVMCTL_TEST_NETWORK" >/dev/null
elif [[ "$(virsh net-dumpxml --inactive "$KVMCTL_TEST_NETWORK")" == *"<host mac='52:4b:"* ]]; then
  # Defined with addresses reserved ahead by an earlier version of this script: without
  # them again, restarted when no guest is connected (otherwise at its next start).
  log "taking the addresses reserved ahead out of libvirt network $KVMCTL_TEST_NETWORK"
  net_define "$(virsh net-uuid "$KVMCTL_TEST_NETWORK")"
  live=$(virsh net-dumpxml "$KVMCTL_TEST_NETWORK")
  if [[ "$(virsh net-info "$KVMCTL_TEST_NETWORK")" =~ Active:\ +yes ]] && ! [[ "$live" =~ connections=\'[1-9] ]]; then
    virsh -q net-destroy "$KVMCTL_TEST_NETWORK" >/dev/null
  fi
fi
# A network left active in /run by a libvirtd whose configuration is gone is transient:
# define it as it is, so it survives and autostarts like one made here.
if ! [[ "$(virsh net-info "$KVMCTL_TEST_NETWORK")" =~ Persistent:\ +yes ]]; then
  log "making the transient network $KVMCTL_TEST_NETWORK persistent"
  xml=$(mktemp); virsh net-dumpxml "$KVMCTL_TEST_NETWORK" > "$xml"
  virsh -q net-define "$xml" >/dev/null; rm -f "$xml"
  virsh -q net-autostart "$KVMCTL_TEST_NETWORK" >/dev/null
fi
# (grep on a captured string: with pipefail, `virsh ... | grep -q` can fail on SIGPIPE)
[[ "$(virsh net-info "$KVMCTL_TEST_NETWORK")" =~ Active:\ +yes ]] || virsh -q net-start "$KVMCTL_TEST_NETWORK" >/dev/null

mkdir -p "$KVMCTL_TEST_POOL_DIR" "$KVMCTL_CACHE" "$KVMCTL_RUN"
if ! virsh pool-info "$KVMCTL_TEST_POOL" >/dev/null 2>&1; then
  virsh -q pool-define-as "$KVMCTL_TEST_POOL" dir --target "$KVMCTL_TEST_POOL_DIR" >/dev/null
  virsh -q pool-autostart "$KVMCTL_TEST_POOL" >/dev/null
fi
if ! [[ "$(virsh pool-info "$KVMCTL_TEST_POOL")" =~ Persistent:\ +yes ]]; then
  log "making the transient pool $KVMCTL_TEST_POOL persistent"
  xml=$(mktemp); virsh pool-dumpxml "$KVMCTL_TEST_POOL" > "$xml"
  virsh -q pool-define "$xml" >/dev/null; rm -f "$xml"
  virsh -q pool-autostart "$KVMCTL_TEST_POOL" >/dev/null
fi
[[ "$(virsh pool-info "$KVMCTL_TEST_POOL")" =~ State:\ +running ]] || virsh -q pool-start "$KVMCTL_TEST_POOL" >/dev/null

# The second compute node (its own libvirtd in its own namespaces), for placement tests.
# shellcheck source=testnode2.sh
. "$here/testnode2.sh"

# PostgreSQL for the store's tests on the second engine and for several daemons on one database.
# shellcheck source=testpg.sh
. "$here/testpg.sh"

tiny=$(KVMCTL_CACHE="$KVMCTL_CACHE" "$here/../tests/fixtures/tiny-guest/build.sh")

# Ansible from PyPI (the inventory test runs ansible-inventory and ansible against guests),
# in a virtualenv of its own, kept by version.
ansible_version=2.17.7
ansible_venv="$KVMCTL_CACHE/ansible-core-$ansible_version"
if [ ! -x "$ansible_venv/bin/ansible-inventory" ]; then
  log "installing ansible-core $ansible_version from PyPI into $ansible_venv"
  rm -rf "$ansible_venv"
  python3 -m venv "$ansible_venv"
  "$ansible_venv/bin/pip" install --quiet --disable-pip-version-check "ansible-core==$ansible_version"
fi

# KVM exists here but may hang guests; until `kvmctl host doctor` decides, tests use TCG
# unless told otherwise.
cat > "$KVMCTL_RUN/env" <<ENV
export KVMCTL_NETNS=$KVMCTL_NETNS
export KVMCTL_TEST_URI=qemu:///system
export KVMCTL_TEST_TINY=$tiny
export KVMCTL_TEST_NETWORK=$KVMCTL_TEST_NETWORK
export KVMCTL_TEST_POOL=$KVMCTL_TEST_POOL
export KVMCTL_TEST_POOL_DIR=$KVMCTL_TEST_POOL_DIR
export KVMCTL_TEST_DOMAIN_TYPE=${KVMCTL_TEST_DOMAIN_TYPE:-qemu}
export KVMCTL_TEST_NODE2_URI=$KVMCTL_TEST_NODE2_URI
export KVMCTL_TEST_NODE2_NETNS=$KVMCTL_NODE2_NETNS
export KVMCTL_TEST_NODE2_DIR=$KVMCTL_NODE2_DIR
export KVMCTL_TEST_MIG_NETWORK=$KVMCTL_TEST_MIG_NETWORK
export KVMCTL_TEST_ANSIBLE=$ansible_venv/bin
export KVMCTL_TEST_POSTGRES='$KVMCTL_TEST_POSTGRES'
ENV
log "test environment ready ($KVMCTL_RUN/env)"
