#!/usr/bin/env bash
# Migration of the tiny guest between the test environment's two nodes (issue 20), ROUNDS
# times: a live migration local -> node 2 (`kvmctl vm migrate --live`: the overlay mirrored,
# then memory; peer to peer), then a cold one back (stopped; the overlay and seed copied by
# libvirt stream through the daemon). Prints per round:
#   - live: kvmctl's wall time (the CLI's request); the time of libvirt's migration call in it
#     (virDomainMigrateToURI3, peer to peer, from the daemon's step log); the ratio of the
#     two: what kvmctl adds around libvirt (precreating the overlay, copying the seed, the
#     DHCP reservations on both nodes, the row, forwards and metadata, cleaning the source);
#     and, from the destination's completed job (`virsh domjobinfo --completed`), libvirt's
#     own job time and the guest's downtime;
#   - cold: kvmctl's wall time.
# The peers (kcli, virt-install, Multipass, virter) have no migration command: libvirt's own
# time is the baseline. Run on one machine in one run, after scripts/testenv.sh.
#
#   bench/migration.sh            # root; about a minute
#   ROUNDS=5 bench/migration.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=../scripts/lib.sh
. "$repo/scripts/lib.sh"
# shellcheck source=lib.sh
. "$here/lib.sh"
need_root bench/migration.sh
# shellcheck disable=SC1091
. "$KVMCTL_RUN/env"
if [ "$(ip netns identify $$ 2>/dev/null)" != "$KVMCTL_NETNS" ]; then
  exec ip netns exec "$KVMCTL_NETNS" "$0" "$@"
fi
: "${ROUNDS:=3}"
D=$(mktemp -d /tmp/kvmctl-migbench.XXXXXX)
cleanup() {
  [ -n "${KV:-}" ] && "$KV" vm delete kt-bmig >/dev/null 2>&1 || true
  [ -n "${KV:-}" ] && "$KV" node remove kt-bmig-n2 >/dev/null 2>&1 || true
  [ -n "${KV:-}" ] && "$KV" image rm kt-bmig-img >/dev/null 2>&1 || true
  [ -n "${daemon:-}" ] && { kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; }
  if [ -n "${KEEP:-}" ]; then echo "kept $D"; else rm -rf "$D"; fi
}
trap cleanup EXIT
bench_serve "$D" 47900
qemu-img create -q -f qcow2 "$D/disk.qcow2" 64M
"$KV" image import "$D/disk.qcow2" --name kt-bmig-img --kernel "$KVMCTL_TEST_TINY/vmlinuz" --initrd "$KVMCTL_TEST_TINY/initrd.gz" >/dev/null
"$KV" vm create kt-bmig --image kt-bmig-img --cpus 1 --memory 256M --disk 1G --network "$KVMCTL_TEST_MIG_NETWORK" --no-ssh-forward --wait=ssh >/dev/null 2>&1
"$KV" node add kt-bmig-n2 --uri "$KVMCTL_TEST_NODE2_URI" >/dev/null
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
printf '%-6s %9s %12s %7s %10s %12s %9s\n' round live_ms migrate_call ratio job_ms downtime_ms cold_ms
for r in $(seq "$ROUNDS"); do
  t=$(date +%s%N); "$KV" vm migrate kt-bmig --to kt-bmig-n2 --live >/dev/null 2>"$D/err" || die "live migration failed: $(cat "$D/err")"; live=$(ms "$t")
  job=$(virsh -q -c "$KVMCTL_TEST_NODE2_URI" domjobinfo kt-bmig --completed 2>/dev/null || true)
  lv=$(awk -F: '/^Time elapsed:/ {gsub(/[^0-9]/,"",$2); print $2; exit}' <<<"$job"); dt=$(awk -F: '/^Total downtime:/ {gsub(/[^0-9]/,"",$2); print $2; exit}' <<<"$job")
  "$KV" vm stop kt-bmig --force >/dev/null 2>&1
  t=$(date +%s%N); "$KV" vm migrate kt-bmig --to local >/dev/null 2>"$D/err" || die "cold migration failed: $(cat "$D/err")"; cold=$(ms "$t")
  "$KV" vm start kt-bmig >/dev/null 2>&1
  call=$(grep 'VM migrated' "$D/serve.log" | grep 'live=true' | tail -1 | sed -n 's/.* migrate=\([0-9.]*\).*/\1/p')
  ratio=$(awk -v a="$live" -v b="${call:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
  printf '%-6s %9s %12s %7s %10s %12s %9s\n' "$r" "$live" "${call:--}" "$ratio" "${lv:--}" "${dt:--}" "$cold"
  # The guest is up again before the next live migration.
  for _ in $(seq 100); do "$KV" vm show kt-bmig -o json | grep -q '"state": "running"' && break; sleep 0.1; done
  sleep 3
done
echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%d GiB", $2/1048576}' /proc/meminfo), guests under TCG; $(date -u +%Y-%m-%d)"
