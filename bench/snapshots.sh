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
# shellcheck source=lib.sh
. "$here/lib.sh"
bench_serve "$W" 29400
vms=()
cleanup() {
  for v in "${vms[@]}"; do "$KV" vm delete "$v" >/dev/null 2>&1 || true; done
  "$KV" image rm sb-img >/dev/null 2>&1 || true
  kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true
}
trap cleanup EXIT
qemu-img create -q -f qcow2 "$W/base.qcow2" 64M
"$KV" image import "$W/base.qcow2" --name sb-img --kernel "$KVMCTL_TEST_TINY/vmlinuz" \
  --initrd "$KVMCTL_TEST_TINY/initrd.gz" --cmdline "console=ttyS0 quiet panic=-1" >/dev/null

R="$W/results"
: > "$R"
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

python3 "$here/table.py" "$R" \
  "kv.snap_mem:vi.snap_internal:memory snapshot, kvmctl / libvirt internal" \
  "kv.revert_mem:vi.revert:revert to it, kvmctl / libvirt internal" \
  "kv.revert_ssh:kv.cold_ssh:memory revert to SSH / cold create to SSH" | tee "$W/snapshots.table.md"
{ date -u +"%F %T UTC"; "$KV" --version; virsh --version; nproc; } > "$W/machine.txt"
