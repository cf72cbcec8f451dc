#!/usr/bin/env bash
# Create throughput by database (issue 20): COUNT creates of the tiny image (not started, no
# SSH forward), CONCURRENCY at a time, through the API of
#   1. one daemon on SQLite (the default),
#   2. one daemon on PostgreSQL (the test environment's PostgreSQL 15, Unix socket),
#   3. two daemons on that PostgreSQL database, requests spread over both,
# all on the test environment's libvirtd, each on an isolated network it makes with
# `kvmctl network create` (addresses reserved ahead, ADR 0015: a create changes nothing in the
# network, so libvirt's network updates, 0.4-0.6 s each, do not hide the control plane).
# Prints creates per second, p50 and p99 latency.
# The peers (kcli, virt-install, Multipass, virter) keep no database, so there is no ratio:
# the rows compare kvmctl's engines with each other on one machine in one run.
#
#   bench/shared_db.sh                     # root; after scripts/testenv.sh; about 2 minutes
#   COUNT=200 CONCURRENCY=16 bench/shared_db.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=../scripts/lib.sh
. "$repo/scripts/lib.sh"
# shellcheck source=lib.sh
. "$here/lib.sh"
need_root bench/shared_db.sh
# shellcheck disable=SC1091
. "$KVMCTL_RUN/env"
if [ "$(ip netns identify $$ 2>/dev/null)" != "$KVMCTL_NETNS" ]; then
  exec ip netns exec "$KVMCTL_NETNS" "$0" "$@"
fi
: "${COUNT:=100}" "${CONCURRENCY:=8}"
D=$(mktemp -d /tmp/kvmctl-dbbench.XXXXXX)
# COUNT one-vCPU VMs on this host: capacity admission is not what is measured here.
printf 'local_cpu_overcommit = "100"\n' > "$D/kvmctl.toml"
export KVMCTL_CONFIG="$D/kvmctl.toml"
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; pids=(); }
cleanup() { stop_all; rm -rf "$D"; }
trap cleanup EXIT
log "building the benchmark driver (release)"
(cd "$repo" && cargo build --release --quiet -p kvmctl-server --example createbench)
CB="$repo/target/release/examples/createbench"
pg_sock=$(sed -n 's/.*host=\([^&]*\).*/\1/p' <<<"$KVMCTL_TEST_POSTGRES")

fresh_pg() {  # NAME: an empty database; its URL
  runuser -u postgres -- psql -qAt -h "$pg_sock" -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
  printf 'postgres://postgres@localhost/%s?host=%s' "$1" "$pg_sock"
}

tiny_image() {  # SOCKET NAME
  local disk="$D/disk-$2.qcow2"
  qemu-img create -q -f qcow2 "$disk" 64M
  KVMCTL_SOCKET=$1 "$KV" image import "$disk" --name "$2" --kernel "$KVMCTL_TEST_TINY/vmlinuz" --initrd "$KVMCTL_TEST_TINY/initrd.gz" >/dev/null
}

run() {  # LABEL DAEMONS DATABASE_URL(or empty) TITLE SUBNET
  local label=$1 n=$2 url=$3 socks=() i
  for i in $(seq "$n"); do
    mkdir -p "$D/$label-$i"
    KVMCTL_DATABASE_URL=$url KVMCTL_LOG=warn bench_serve "$D/$label-$i" $((47400 + i * 50)) 2>/dev/null
    pids+=("$daemon"); socks+=("$KVMCTL_SOCKET")
  done
  tiny_image "${socks[0]}" "kt-dbb-$label"
  KVMCTL_SOCKET=${socks[0]} "$KV" network create "kt-dbbn-$label" --subnet "$5" --isolated >/dev/null
  "$CB" --image "kt-dbb-$label" --network "kt-dbbn-$label" --count "$COUNT" --concurrency "$CONCURRENCY" \
    --prefix "kt-dbb-$label" "${socks[@]}" > "$D/$label.out"
  KVMCTL_SOCKET=${socks[0]} "$KV" network delete "kt-dbbn-$label" >/dev/null
  KVMCTL_SOCKET=${socks[0]} "$KV" image rm "kt-dbb-$label" >/dev/null
  stop_all
  local cps p50 p99 made
  cps=$(awk '$1 == "creates_per_second" {print $2}' "$D/$label.out")
  p50=$(awk '$1 == "p50_ms" {print $2}' "$D/$label.out")
  p99=$(awk '$1 == "p99_ms" {print $2}' "$D/$label.out")
  made=$(awk '$1 == "made" {print $2}' "$D/$label.out")
  printf '| %s | %s | %s | %s | %s/%s |\n' "$4" "$cps" "$p50" "$p99" "$made" "$COUNT"
}

log "$COUNT creates, $CONCURRENCY at a time, per configuration"
printf '| configuration | creates/s | p50 ms | p99 ms | made |\n|---|---|---|---|---|\n'
run sqlite 1 "" "one daemon, SQLite" 10.231.0.0/22
run pg1 1 "$(fresh_pg kt_dbbench1)" "one daemon, PostgreSQL" 10.232.0.0/22
run pg2 2 "$(fresh_pg kt_dbbench2)" "two daemons, one PostgreSQL" 10.233.0.0/22
