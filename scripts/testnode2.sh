#!/usr/bin/env bash
# A second compute node for the tests, idempotently: its own libvirtd (and virtlogd) in its
# own network namespace ($KVMCTL_NODE2_NETNS) and mount namespace, with /etc/libvirt,
# /var/lib/libvirt, /run/libvirt and /var/log/libvirt bind-mounted from directories under
# $KVMCTL_NODE2_DIR, so nothing of it is shared with the first libvirtd. Tests reach it from
# the test namespace over a veth pair (10.79.0.1 <-> 10.79.0.2) at
# qemu+tcp://10.79.0.2/system, bound to that address only (no authentication: nothing
# outside the two namespaces can reach it). Its guests sit on a routed network
# 10.78.0.0/24 (named like the first node's test network), reached from the test namespace
# through the veth. Sourced by scripts/testenv.sh after the test namespace exists.
set -euo pipefail

KVMCTL_NODE2_NETNS=${KVMCTL_NODE2_NETNS:-kvmctl-node2}
KVMCTL_NODE2_DIR=${KVMCTL_NODE2_DIR:-/var/lib/kvmctl-test/node2}
node2_uri=qemu+tcp://10.79.0.2/system
ns2() { ip netns exec "$KVMCTL_NODE2_NETNS" "$@"; }
nst() { ip netns exec "$KVMCTL_NETNS" "$@"; }
virsh2() { nst virsh -q -c "$node2_uri" "$@"; }

node2_alive() {
  local pid
  pid=$(cat "$KVMCTL_NODE2_DIR/libvirtd.pid" 2>/dev/null || true)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && virsh2 version >/dev/null 2>&1
}

if [ -e "/run/netns/$KVMCTL_NODE2_NETNS" ] && ! ns2 true 2>/dev/null; then
  ip netns delete "$KVMCTL_NODE2_NETNS"
fi
[ -e "/run/netns/$KVMCTL_NODE2_NETNS" ] || { log "creating network namespace $KVMCTL_NODE2_NETNS (second test node)"; ip netns add "$KVMCTL_NODE2_NETNS"; }
ns2 ip link set lo up
if ! nst ip link show kvn2a >/dev/null 2>&1; then
  log "connecting $KVMCTL_NETNS and $KVMCTL_NODE2_NETNS with a veth pair"
  ns2 ip link del kvn2b 2>/dev/null || true
  ip link add kvn2a type veth peer name kvn2b
  ip link set kvn2a netns "$KVMCTL_NETNS"
  ip link set kvn2b netns "$KVMCTL_NODE2_NETNS"
  nst ip addr add 10.79.0.1/30 dev kvn2a
  ns2 ip addr add 10.79.0.2/30 dev kvn2b
  nst ip link set kvn2a up
  ns2 ip link set kvn2b up
fi
nst ip route replace 10.78.0.0/24 via 10.79.0.2 dev kvn2a

# Live migration needs the two libvirtds to be distinct hosts to libvirt: its own host UUID
# (both would otherwise read the machine's SMBIOS UUID and refuse to migrate "to the same host").
restart_node2=
if [ -f "$KVMCTL_NODE2_DIR/etc/libvirtd.conf" ] && ! grep -q '^host_uuid' "$KVMCTL_NODE2_DIR/etc/libvirtd.conf"; then
  echo "host_uuid = \"$(cat /proc/sys/kernel/random/uuid)\"" >> "$KVMCTL_NODE2_DIR/etc/libvirtd.conf"
  restart_node2=1
fi
if [ -n "$restart_node2" ] || ! node2_alive; then
  for f in libvirtd virtlogd; do
    pid=$(cat "$KVMCTL_NODE2_DIR/$f.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid"; for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  d=$KVMCTL_NODE2_DIR
  mkdir -p "$d/etc" "$d/lib" "$d/run" "$d/log/qemu"
  chmod 755 "$d" "$d/lib"
  if [ ! -f "$d/etc/libvirtd.conf" ]; then
    # libvirt's stock configuration, without the first node's objects and hooks.
    cp -a /etc/libvirt/. "$d/etc/"
    rm -rf "$d/etc/hooks" "$d/etc/qemu/networks" "$d/etc/storage" "$d/etc/secrets"
    find "$d/etc/qemu" -maxdepth 1 -name '*.xml' -delete
    mkdir -p "$d/etc/qemu/networks/autostart" "$d/etc/storage/autostart"
    cat >> "$d/etc/libvirtd.conf" <<CONF
# kvmctl test node 2: plain TCP on the veth address only, inside its own namespace.
listen_tls = 0
listen_tcp = 1
listen_addr = "10.79.0.2"
auth_tcp = "none"
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
CONF
    mkdir -p "$d/lib/boot" "$d/lib/dnsmasq" "$d/lib/images" "$d/lib/qemu"
  fi
  log "starting the second test node's libvirtd in namespace $KVMCTL_NODE2_NETNS"
  ns2 unshare --mount --propagation private sh -c "
    mount --bind '$d/etc' /etc/libvirt &&
    mount --bind '$d/lib' /var/lib/libvirt &&
    mount --bind '$d/run' /run/libvirt &&
    mount --bind '$d/log' /var/log/libvirt &&
    virtlogd -d -p '$d/virtlogd.pid' &&
    libvirtd -d --listen -p '$d/libvirtd.pid'"
  for _ in $(seq 100); do node2_alive && break; sleep 0.1; done
  node2_alive || die "the second test node's libvirtd did not answer at $node2_uri; see $d/log/libvirtd.log"
fi

# The migration tests' network, on both nodes with the same subnet (a live migration keeps
# the guest's address): routed (so forwarded connections reach guests; libvirt rejects
# forwarding into an isolated network), and reached from the test namespace through
# forwards on node 2, where the route to the subnet is node 1's own bridge.
mig_xml() {
  cat <<XML
<network>
  <name>$KVMCTL_TEST_MIG_NETWORK</name>
  <forward mode='route'$2/>
  <bridge name='$1' stp='off'/>
  <ip address='10.76.0.1' netmask='255.255.255.0'>
    <dhcp><range start='10.76.0.100' end='10.76.0.250'/></dhcp>
  </ip>
</network>
XML
}
KVMCTL_TEST_MIG_NETWORK=${KVMCTL_TEST_MIG_NETWORK:-kvmctl-mig}
for side in 1 2; do
  if [ $side = 1 ]; then vsh() { virsh -q "$@"; }; else vsh() { virsh2 "$@"; }; fi
  # An earlier, isolated version of it is replaced.
  if vsh net-info "$KVMCTL_TEST_MIG_NETWORK" >/dev/null 2>&1 && [[ "$(vsh net-dumpxml --inactive "$KVMCTL_TEST_MIG_NETWORK")" != *"mode='route'"* ]]; then
    vsh net-destroy "$KVMCTL_TEST_MIG_NETWORK" >/dev/null 2>&1 || true
    vsh net-undefine "$KVMCTL_TEST_MIG_NETWORK" >/dev/null
  fi
  if ! vsh net-info "$KVMCTL_TEST_MIG_NETWORK" >/dev/null 2>&1; then
    log "defining libvirt network $KVMCTL_TEST_MIG_NETWORK on node $side"
    dev=""; [ $side = 2 ] && dev=" dev='kvn2b'"
    xml=$(mktemp); mig_xml "kvmig$side" "$dev" > "$xml"
    if [ $side = 1 ]; then virsh -q net-define "$xml" >/dev/null; else nst virsh -q -c "$node2_uri" net-define "$xml" >/dev/null; fi
    rm -f "$xml"
    vsh net-autostart "$KVMCTL_TEST_MIG_NETWORK" >/dev/null
  fi
  [[ "$(vsh net-info "$KVMCTL_TEST_MIG_NETWORK")" =~ Active:\ +yes ]] || vsh net-start "$KVMCTL_TEST_MIG_NETWORK" >/dev/null
done

# Its network (routed, so the test namespace reaches guests) and pool, named as on node 1.
if ! virsh2 net-info "$KVMCTL_TEST_NETWORK" >/dev/null 2>&1; then
  xml=$(mktemp)
  cat > "$xml" <<XML
<network>
  <name>$KVMCTL_TEST_NETWORK</name>
  <forward mode='route' dev='kvn2b'/>
  <bridge name='kvt1' stp='off'/>
  <ip address='10.78.0.1' netmask='255.255.255.0'>
    <dhcp><range start='10.78.0.100' end='10.78.0.250'/></dhcp>
  </ip>
</network>
XML
  nst virsh -q -c "$node2_uri" net-define "$xml" >/dev/null; rm -f "$xml"
  virsh2 net-autostart "$KVMCTL_TEST_NETWORK" >/dev/null
fi
[[ "$(virsh2 net-info "$KVMCTL_TEST_NETWORK")" =~ Active:\ +yes ]] || virsh2 net-start "$KVMCTL_TEST_NETWORK" >/dev/null
if ! virsh2 pool-info "$KVMCTL_TEST_POOL" >/dev/null 2>&1; then
  virsh2 pool-define-as "$KVMCTL_TEST_POOL" dir --target /var/lib/libvirt/kvmctl-pool >/dev/null
  virsh2 pool-build "$KVMCTL_TEST_POOL" >/dev/null
  virsh2 pool-autostart "$KVMCTL_TEST_POOL" >/dev/null
fi
[[ "$(virsh2 pool-info "$KVMCTL_TEST_POOL")" =~ State:\ +running ]] || virsh2 pool-start "$KVMCTL_TEST_POOL" >/dev/null
KVMCTL_TEST_NODE2_URI=$node2_uri
