#!/usr/bin/env bash
# Seed build time: kvmctl's in-process ISO writer against cloud-localds and genisoimage on
# the same user-data/meta-data, in one run. Prints a markdown table (median ms, ratio).
#   RUNS=30 bench/seed.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=../scripts/lib.sh
. "$repo/scripts/lib.sh"
need_root "bench/seed.sh"
apt_ensure cloud-image-utils genisoimage bc
RUNS=${RUNS:-30}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cat > "$work/user-data" <<'UD'
#cloud-config
hostname: pbvm
users:
  - name: bench
    ssh_authorized_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOxUWba4YdBS5XkAif3ox+1YEyWpPoBfVHn6xdpQ7/F+ bench@example
runcmd:
  - echo hello from cloud-init
UD
printf 'instance-id: pbvm\nlocal-hostname: pbvm\n' > "$work/meta-data"
(cd "$repo" && cargo build --release --quiet -p kvmctl-cloudinit --examples)
read -r kv_us kv_min < <("$repo/target/release/examples/seedbench" 1000 "$work/user-data" "$work/meta-data")

median_ms() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]*1000}'; }
time_cmd() {  # time_cmd CMD...: RUNS wall times in seconds, one per line
  local i s
  for i in $(seq "$RUNS"); do
    s=$EPOCHREALTIME; "$@" >/dev/null 2>&1; echo "$EPOCHREALTIME - $s" | bc -l
  done
}
cl=$(time_cmd cloud-localds "$work/cl.iso" "$work/user-data" "$work/meta-data" | median_ms)
gi=$(time_cmd genisoimage -quiet -output "$work/gi.iso" -volid cidata -joliet -rock "$work/user-data" "$work/meta-data" | median_ms)
# kvmctl as a whole process too (the seed example writes one file), to compare like with like.
kp=$(time_cmd "$repo/target/release/examples/seed" cidata "$work/kv.iso" "user-data=$work/user-data" "meta-data=$work/meta-data" | median_ms)
kv_ms=$(echo "$kv_us / 1000" | bc -l)
printf '| tool | median ms | vs kvmctl in-process |\n|---|---|---|\n'
printf '| kvmctl in-process (1000 builds) | %.3f | 1x |\n' "$kv_ms"
printf '| kvmctl as a process (write file) | %.2f | %.0fx |\n' "$kp" "$(echo "$kp / $kv_ms" | bc -l)"
printf '| genisoimage | %.2f | %.0fx |\n' "$gi" "$(echo "$gi / $kv_ms" | bc -l)"
printf '| cloud-localds | %.2f | %.0fx |\n' "$cl" "$(echo "$cl / $kv_ms" | bc -l)"
printf '\n%s runs per external tool; %s; cloud-localds %s; genisoimage %s\n' "$RUNS" "$(date -u +%F)" \
  "$(dpkg-query -W -f='${Version}' cloud-image-utils)" "$(dpkg-query -W -f='${Version}' genisoimage)"
