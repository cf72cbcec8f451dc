#!/usr/bin/env bash
# The whole test suite, environment included: the README's test command and what CI runs.
#   1. scripts/testenv.sh: apt packages, network namespace, virtlogd + libvirtd inside it,
#      the test network and pool, guest fixtures (cached);
#   2. cargo fmt --check, cargo clippy -D warnings, cargo deny (licenses, bans, sources;
#      installed on first use);
#   3. every test, run inside the namespace so guest traffic never leaves it;
#   4. the daemon's logic, tenancy, metering and status tests again on PostgreSQL
#      (KVMCTL_TEST_ENGINE=postgres; the store's own tests cover both engines in step 3);
#   5. the tests that restart the shared libvirtd or change the host, one at a time, and
#      the package test (scripts/test-deb.sh: the .deb installed into a fresh Debian 12 root);
#   6. a leak check: no test domain, volume (clone bases included), log file, network or firewall rule may survive
#      (on the second test node either).
# Needs root. Pass cargo test filters after --, e.g. scripts/test.sh -- smoke
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
need_root "scripts/test.sh"
filter=()
[ "${1:-}" = "--" ] && { shift; filter=("$@"); }

"$here/testenv.sh"
# shellcheck disable=SC1091
. "$KVMCTL_RUN/env"
cd "$repo"

log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
if ! command -v cargo-deny >/dev/null; then
  log "installing cargo-deny (once; about 2 minutes)"
  cargo install --locked --quiet cargo-deny
fi
log "cargo deny (licenses, bans, sources; advisories need the RustSec database from the network)"
cargo deny --log-level error check licenses bans sources

log "building tests"
cargo test --workspace --no-run --quiet

# The Debian guest image, built by kvmctl itself outside the namespace (it needs the package
# mirror) and cached by recipe hash: only a change to the recipe pays for a new build.
log "kvmctl image build debian-12 (cached by recipe hash)"
cargo build --quiet -p kvmctl-cli
image_json=$("$repo/target/debug/kvmctl" image build debian-12 --cache-dir "$KVMCTL_CACHE/images" -o json)
KVMCTL_TEST_DEBIAN_IMAGE=$(printf '%s' "$image_json" | sed -n 's/^  "path": "\(.*\)",$/\1/p')
[ -f "$KVMCTL_TEST_DEBIAN_IMAGE" ] || die "image build did not report an image path: $image_json"
export KVMCTL_TEST_DEBIAN_IMAGE
# Debian 13, seed 004's base, for the test runner's own full-guest test.
log "kvmctl image build debian-13 (cached by recipe hash)"
image_json=$("$repo/target/debug/kvmctl" image build debian-13 --cache-dir "$KVMCTL_CACHE/images" -o json)
KVMCTL_TEST_DEBIAN13_IMAGE=$(printf '%s' "$image_json" | sed -n 's/^  "path": "\(.*\)",$/\1/p')
[ -f "$KVMCTL_TEST_DEBIAN13_IMAGE" ] || die "image build did not report an image path: $image_json"
export KVMCTL_TEST_DEBIAN13_IMAGE

# Entries of table inet kvmctl (in the namespace) whose VM has no running domain.
stale_forwards() {
  local running key
  running=$(virsh list --uuid | tr -d '-' | grep . || true)
  for key in $(netns_exec nft list table inet kvmctl 2>/dev/null | grep -oE 'comment "vm=[0-9a-f]{32}' | cut -d= -f2 | sort -u); do
    grep -qx "$key" <<<"$running" || echo "firewall rules of stopped or deleted VM $key"
  done
}

leak_check() {
  local left
  # kt-*: the tests' own names; r<10 hex>-*: VMs of test runs (`kvmctl test`).
  left=$( { virsh list --all --name | grep -E '^(kt-|r[0-9a-f]{10}-)' || true
            virsh pool-list --all --name | grep -E '^kt-' | sed 's/^/pool /' || true
            virsh pool-refresh "$KVMCTL_TEST_POOL" >/dev/null 2>&1 || true
            virsh vol-list "$KVMCTL_TEST_POOL" 2>/dev/null | awk 'NR>2 {print $1}' | grep -E '^((image-)?kt-|_base-|r[0-9a-f]{10}-)' | sed 's/^/volume /' || true
            ls /var/log/libvirt/qemu/ 2>/dev/null | grep -E '^(kt-|r[0-9a-f]{10}-)' | sed 's/^/log /' || true
            ls /var/log/swtpm/libvirt/qemu/ 2>/dev/null | grep -E '^(kt-|r[0-9a-f]{10}-)' | sed 's/^/swtpm log /' || true
            virsh net-dumpxml "$KVMCTL_TEST_NETWORK" 2>/dev/null | grep -oE "<host [^>]*name='(kt-|r[0-9a-f]{10}-)[^']*'" | sed 's/^/dhcp reservation /' || true
            virsh net-list --all --name | grep -E '^kt-' | sed 's/^/network /' || true
            netns_exec virsh -c "$KVMCTL_TEST_NODE2_URI" list --all --name | grep -E '^kt-' | sed 's/^/node 2 domain /' || true
            netns_exec virsh -c "$KVMCTL_TEST_NODE2_URI" vol-list "$KVMCTL_TEST_POOL" 2>/dev/null | awk 'NR>2 && $1 ~ /^(image-)?kt-/ {print "node 2 volume " $1}'
            netns_exec virsh -c "$KVMCTL_TEST_NODE2_URI" net-list --all --name | grep -E '^kt-' | sed 's/^/node 2 network /' || true
            stale_forwards; } )
  if [ -n "$left" ]; then
    printf 'LEAK: tests left behind:\n%s\n' "$left" >&2
    return 1
  fi
  log "leak check: no test domain, volume, log, DHCP reservation, network or firewall rule left"
}

log "running tests inside namespace $KVMCTL_NETNS"
status=0
netns_exec cargo test --workspace --offline --no-fail-fast -- "${filter[@]}" || status=$?
if [ ${#filter[@]} -eq 0 ]; then
  log "running the daemon's logic, tenancy, metering and status tests on PostgreSQL"
  KVMCTL_TEST_ENGINE=postgres netns_exec cargo test --offline --no-fail-fast -p kvmctl-server \
    --test logic --test tenancy --test metering --test status || status=$?
  log "running the tests that restart libvirtd"
  netns_exec cargo test --offline -p kvmctl-server --test libvirt_restart -- --ignored --test-threads=1 || status=$?
  log "running the tests that change the host (kvmctl host setup/uninstall)"
  netns_exec cargo test --offline -p kvmctl-cli --test host -- --ignored --test-threads=1 || status=$?
  log "running the package test (the .deb in a fresh Debian 12 root)"
  "$here/test-deb.sh" "$repo/target/debug/kvmctl" || status=$?
fi
leak_check || status=1
exit $status
