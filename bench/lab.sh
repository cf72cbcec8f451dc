#!/usr/bin/env bash
# Labs as code (issue 21): what `kvmctl apply` costs against doing the same by hand, one run
# on this host. A lab of N tiny VMs (1 vCPU, 256 MiB, 1 GiB, TCG) with no dependencies
# between them, on the test network:
#   kv.apply         `kvmctl apply -f lab.yaml --wait running`: the plan, then the N creates
#                    together (one dependency level)
#   kv.creates       the same N VMs by N sequential `kvmctl vm create --wait running`
#   kv.apply_noop    a second apply: reading the lab's VMs and planning, nothing to do
#   kv.delete_f      `kvmctl delete -f lab.yaml` (the N deletes together)
#   kv.deletes       N sequential `kvmctl vm delete`
# Prints medians and the ratios. Needs root and scripts/testenv.sh.
#
#   bench/lab.sh          # RUNS=3 VMS=4
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=../scripts/lib.sh
. "$repo/scripts/lib.sh"
need_root bench/lab.sh
# shellcheck disable=SC1091
. "$KVMCTL_RUN/env"
if [ "$(ip netns identify $$ 2>/dev/null)" != "$KVMCTL_NETNS" ]; then
  exec ip netns exec "$KVMCTL_NETNS" "$0" "$@"
fi
RUNS=${RUNS:-3}
VMS=${VMS:-4}
W=/tmp/labbench
rm -rf "$W"; mkdir -p "$W"
# shellcheck source=lib.sh
. "$here/lib.sh"
bench_serve "$W" 29600
cleanup() {
  for i in $(seq "$VMS"); do "$KV" vm delete "lb-$i" >/dev/null 2>&1 || true; done
  "$KV" image rm lb-img >/dev/null 2>&1 || true
  kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true
}
trap cleanup EXIT
qemu-img create -q -f qcow2 "$W/disk.qcow2" 64M
"$KV" image import "$W/disk.qcow2" --name lb-img --kernel "$KVMCTL_TEST_TINY/vmlinuz" --initrd "$KVMCTL_TEST_TINY/initrd.gz" >/dev/null
ssh-keygen -q -t ed25519 -N "" -f "$W/key"

{
  echo "lab: lb"
  echo "vms:"
  for i in $(seq "$VMS"); do
    printf '  - name: lb-%s\n    image: lb-img\n    cpus: 1\n    memory: 256M\n    disk: 1G\n    ssh_keys: [key.pub]\n' "$i"
  done
} > "$W/lab.yaml"

creates() { for i in $(seq "$VMS"); do "$KV" vm create "lb-$i" --image lb-img --cpus 1 --memory 256M --disk 1G --ssh-key "$W/key.pub" --wait running || return 1; done; }
deletes() { for i in $(seq "$VMS"); do "$KV" vm delete "lb-$i" || return 1; done; }

R="$W/results"
: > "$R"
for _ in $(seq "$RUNS"); do
  timeit kv.apply "$KV" apply -f "$W/lab.yaml" --wait running
  timeit kv.apply_noop "$KV" apply -f "$W/lab.yaml"
  timeit kv.delete_f "$KV" delete -f "$W/lab.yaml"
  timeit kv.creates creates
  timeit kv.deletes deletes
done

python3 - "$R" "$VMS" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m, us = line.split()
    rows.setdefault(m, []).append(int(us) / 1e6)
med = {m: statistics.median(v) for m, v in rows.items()}
n = sys.argv[2]
print(f"| measure ({n} tiny VMs) | median s | runs |")
print("|---|---|---|")
for m in ["kv.apply", "kv.creates", "kv.apply_noop", "kv.delete_f", "kv.deletes"]:
    print(f"| {m} | {med[m]:.2f} | {len(rows[m])} |")
print()
print(f"apply vs sequential creates: {med['kv.creates'] / med['kv.apply']:.2f}x; delete -f vs sequential deletes: {med['kv.deletes'] / med['kv.delete_f']:.2f}x")
EOF
