#!/usr/bin/env bash
# Snapshots, clones and backups of the Debian guest (issue 16), one run on this host, side by
# side with libvirt's own tools where they do the same thing. The Debian test image
# (KVMCTL_TEST_DEBIAN_IMAGE, built by scripts/testenv.sh or scripts/test.sh), BIOS, 2 vCPUs,
# 1 GiB, 4 GiB disk, TCG:
#   kv.cold_ssh          `vm create --wait=ssh`: a cold boot until a command ran over SSH
#   kv.snap_disk         `vm snapshot create` of the running VM, disk only
#   kv.snap_mem          the same with --memory
#   vi.snap_internal     `virsh snapshot-create-as` (libvirt internal, RAM included; BIOS only)
#   kv.revert_mem_ssh    `vm snapshot revert` to the memory snapshot until a command ran over SSH
#   vi.revert            `virsh snapshot-revert --running` to libvirt's snapshot
#   kv.clone_linked_ssh  `vm clone --from-snapshot m --wait=ssh`: a linked clone booted to SSH
#                        (new identity: cloud-init's per-instance steps run)
#   kv.clone_full_run    `vm clone --full --no-start` of the running source (paused while read)
#   kv.clone_full        the same of the stopped source
#   vi.virt_clone        `virt-clone --auto-clone` of the stopped source (the peer tool)
#   kv.export            `vm export` of the stopped source (flattened disk, archive, sha256)
#   fl.export            the floor: `qemu-img convert` of its disk and `sha256sum` of the copy
#   kv.restore           `vm restore --no-start` of that archive (verified, a new VM)
#   fl.restore           the floor: `cp` of the archive and `sha256sum`
# Prints medians and the ratios. Needs root, scripts/testenv.sh and the Debian image.
#
#   KVMCTL_TEST_DEBIAN_IMAGE=/var/cache/kvmctl-test/images/debian-12-*/image.qcow2 bench/clones.sh   # RUNS=3
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=../scripts/lib.sh
. "$repo/scripts/lib.sh"
need_root bench/clones.sh
# shellcheck disable=SC1091
. "$KVMCTL_RUN/env"
if [ "$(ip netns identify $$ 2>/dev/null)" != "$KVMCTL_NETNS" ]; then
  exec ip netns exec "$KVMCTL_NETNS" "$0" "$@"
fi
image=${KVMCTL_TEST_DEBIAN_IMAGE:-$(ls /var/cache/kvmctl-test/images/debian-12-*/image.qcow2 2>/dev/null | head -1)}
[ -f "$image" ] || die "no Debian test image: set KVMCTL_TEST_DEBIAN_IMAGE (scripts/test.sh builds it)"
RUNS=${RUNS:-3}
W=/tmp/clonebench
rm -rf "$W"; mkdir -p "$W"
# shellcheck source=lib.sh
. "$here/lib.sh"
bench_serve "$W" 29500
vms=()
cleanup() {
  for v in "${vms[@]}"; do "$KV" vm delete "$v" >/dev/null 2>&1 || true; done
  for i in $(seq "$RUNS"); do virsh -q undefine "cb-vc-$i" --remove-all-storage >/dev/null 2>&1 || true; done
  "$KV" image rm cb-debian >/dev/null 2>&1 || true
  kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true
}
trap cleanup EXIT
"$KV" image import "$image" --name cb-debian >/dev/null

R="$W/results"
: > "$R"
revert_ssh() { "$KV" vm snapshot revert "$1" m && "$KV" vm exec "$1" -- true; }
floor_export() { qemu-img convert -O qcow2 "$1" "$W/floor.qcow2" && sha256sum "$W/floor.qcow2"; rm -f "$W/floor.qcow2"; }
floor_restore() { cp "$1" "$W/floor.tar" && sha256sum "$W/floor.tar"; rm -f "$W/floor.tar"; }

for i in $(seq "$RUNS"); do
  vm="cb-$i"
  vms+=("$vm" "cb-l-$i" "cb-f-$i" "cb-s-$i" "cb-r-$i")
  timeit kv.cold_ssh "$KV" vm create "$vm" --image cb-debian --cpus 2 --memory 1G --disk 4G --firmware bios --wait=ssh
  timeit kv.snap_disk "$KV" vm snapshot create "$vm" d
  timeit kv.snap_mem "$KV" vm snapshot create "$vm" m --memory
  timeit vi.snap_internal virsh -q snapshot-create-as "$vm" --name lv
  timeit kv.revert_mem_ssh revert_ssh "$vm"
  timeit vi.revert virsh -q snapshot-revert "$vm" lv --running
  virsh -q snapshot-delete "$vm" lv >/dev/null
  timeit kv.clone_linked_ssh "$KV" vm clone "$vm" "cb-l-$i" --from-snapshot m --wait=ssh
  "$KV" vm delete "cb-l-$i" >/dev/null
  timeit kv.clone_full_run "$KV" vm clone "$vm" "cb-f-$i" --full --no-start
  "$KV" vm delete "cb-f-$i" >/dev/null
  "$KV" vm stop "$vm" --force >/dev/null
  timeit kv.clone_full "$KV" vm clone "$vm" "cb-s-$i" --full --no-start
  "$KV" vm delete "cb-s-$i" >/dev/null
  timeit vi.virt_clone virt-clone -q --original "$vm" --name "cb-vc-$i" --auto-clone
  virsh -q undefine "cb-vc-$i" --remove-all-storage >/dev/null
  timeit kv.export "$KV" vm export "$vm" "$W/$vm.tar"
  disk=$(virsh -q domblklist "$vm" | awk '$1 == "vda" {print $2}')
  timeit fl.export floor_export "$disk"
  timeit kv.restore "$KV" vm restore "$W/$vm.tar" --name "cb-r-$i" --no-start
  timeit fl.restore floor_restore "$W/$vm.tar"
  "$KV" vm delete "cb-r-$i" >/dev/null
  "$KV" vm delete "$vm" >/dev/null
  rm -f "$W/$vm.tar"
done

python3 "$here/table.py" "$R" \
  "kv.snap_mem:vi.snap_internal:memory snapshot, kvmctl / libvirt internal" \
  "kv.revert_mem_ssh:kv.cold_ssh:memory revert to SSH / cold boot to SSH" \
  "kv.clone_linked_ssh:kv.cold_ssh:linked clone to SSH / cold create to SSH" \
  "kv.clone_full:vi.virt_clone:full clone of the stopped VM, kvmctl / virt-clone" \
  "kv.export:fl.export:export / qemu-img convert + sha256sum" \
  "kv.restore:fl.restore:restore / cp + sha256sum" | tee "$W/clones.table.md"
{ date -u +"%F %T UTC"; "$KV" --version; virsh --version; nproc; } > "$W/machine.txt"
