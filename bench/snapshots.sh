#!/usr/bin/env bash
# Snapshot benchmark (issue 16), one run on this host, tiny guest (256 MiB, 1 vCPU, TCG):
#   kv.snap_disk     `kvmctl vm snapshot create` of the running VM, disk only
#   kv.snap_mem      the same with --memory
#   vi.snap_internal libvirt's own internal snapshot of the same running BIOS VM
#                    (`virsh snapshot-create-as`, RAM included): the peer tools' way
#   kv.revert_mem    `kvmctl vm snapshot revert` to the memory snapshot, running again
#   vi.revert        `virsh snapshot-revert --running` to libvirt's snapshot
#   kv.revert_ssh    revert to the memory snapshot until a command ran over SSH in the guest
#   kv.cold_ssh      a cold start to the same point: `vm create --wait=ssh` of a new VM
#                    (the tiny guest makes new host keys every boot, so a restart of the
#                    same VM cannot log in: the pinned key refuses it)
#   kv.delete_snap   `kvmctl vm snapshot delete` of the memory snapshot (VM running)
# Prints medians and the kvmctl/libvirt ratios. Needs root and scripts/testenv.sh.
#
#   bench/snapshots.sh            # RUNS=5
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=../scripts/lib.sh
. "$repo/scripts/lib.sh"
need_root bench/snapshots.sh
# shellcheck disable=SC1091
. "$KVMCTL_RUN/env"
if [ "$(ip netns identify $$ 2>/dev/null)" != "$KVMCTL_NETNS" ]; then
  exec ip netns exec "$KVMCTL_NETNS" "$0" "$@"
fi
RUNS=${RUNS:-5}
W=/tmp/snapbench
rm -rf "$W"; mkdir -p "$W"
log "building kvmctl (release)"
(cd "$repo" && cargo build --release --quiet -p kvmctl-cli)
KV="$repo/target/release/kvmctl"
export KVMCTL_SOCKET="$W/k.sock"
KVMCTL_DATABASE="$W/k.db" KVMCTL_POOL="$KVMCTL_TEST_POOL" KVMCTL_NETWORK="$KVMCTL_TEST_NETWORK" \
  KVMCTL_CONSOLE_LOG_DIR="$W/console" KVMCTL_KEY_DIR="$W/keys" KVMCTL_SNAPSHOT_DIR="$W/snapshots" \
  KVMCTL_DOMAIN_TYPE=qemu KVMCTL_HOST_STATE_DIR="$W/host" KVMCTL_SSH_PORT_RANGE=29400-29409 \
  KVMCTL_GENERAL_PORT_RANGE=29410-29419 KVMCTL_VNC_PORT_RANGE=29420-29429 KVMCTL_LOG=info \
  "$KV" serve > "$W/serve.log" 2>&1 &
daemon=$!
vms=()
cleanup() {
  for v in "${vms[@]}"; do "$KV" vm delete "$v" >/dev/null 2>&1 || true; done
  "$KV" image rm sb-img >/dev/null 2>&1 || true
  kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do [ -S "$KVMCTL_SOCKET" ] && break; sleep 0.05; done
[ -S "$KVMCTL_SOCKET" ] || die "the daemon did not start: $(tail -3 "$W/serve.log")"
qemu-img create -q -f qcow2 "$W/base.qcow2" 64M
"$KV" image import "$W/base.qcow2" --name sb-img --kernel "$KVMCTL_TEST_TINY/vmlinuz" \
  --initrd "$KVMCTL_TEST_TINY/initrd.gz" --cmdline "console=ttyS0 quiet panic=-1" >/dev/null

R="$W/results"
: > "$R"
# timeit METRIC CMD...: appends METRIC and milliseconds to $R; a failing command stops the run.
timeit() {
  local m=$1; shift
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>"$W/last.err" || die "$m failed: $(cat "$W/last.err")"
  t1=$(date +%s%N)
  echo "$m $(( (t1 - t0) / 1000 ))" >> "$R"
}
revert_ssh() { "$KV" vm snapshot revert "$1" m && "$KV" vm exec "$1" -- true; }

for i in $(seq "$RUNS"); do
  vm="sb-$i"
  vms+=("$vm")
  timeit kv.cold_ssh "$KV" vm create "$vm" --image sb-img --cpus 1 --memory 256M --disk 1G --user root --wait=ssh
  timeit kv.snap_disk "$KV" vm snapshot create "$vm" d
  timeit kv.snap_mem "$KV" vm snapshot create "$vm" m --memory
  timeit vi.snap_internal virsh -q snapshot-create-as "$vm" --name lv
  timeit kv.revert_mem "$KV" vm snapshot revert "$vm" m
  timeit vi.revert virsh -q snapshot-revert "$vm" lv --running
  timeit kv.revert_ssh revert_ssh "$vm"
  timeit kv.delete_snap "$KV" vm snapshot delete "$vm" m
  virsh -q snapshot-delete "$vm" lv >/dev/null
  "$KV" vm delete "$vm" >/dev/null
done

python3 - "$R" <<'PY' | tee "$W/snapshots.table.md"
import collections, statistics, sys
v = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m, us = line.split()
    v[m].append(int(us) / 1000)
med = {m: statistics.median(x) for m, x in v.items()}
print("| metric | n | min ms | median ms | max ms |\n|---|---:|---:|---:|---:|")
for m, x in v.items():
    print(f"| {m} | {len(x)} | {min(x):.0f} | {med[m]:.0f} | {max(x):.0f} |")
print()
for a, b, what in [("kv.snap_mem", "vi.snap_internal", "memory snapshot, kvmctl / libvirt internal"),
                   ("kv.revert_mem", "vi.revert", "revert to it, kvmctl / libvirt internal"),
                   ("kv.revert_ssh", "kv.cold_ssh", "memory revert to SSH / cold create to SSH")]:
    print(f"- {what}: {med[a] / med[b]:.2f}x ({med[a]:.0f} / {med[b]:.0f} ms)")
PY
{ date -u +"%F %T UTC"; "$KV" --version; virsh --version; nproc; } > "$W/machine.txt"
