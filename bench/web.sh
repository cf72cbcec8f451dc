#!/usr/bin/env bash
# Web console benchmark (issue 18), in a real headless Chromium against `kvmctl serve`
# (release) and tiny guests under TCG:
#   - from clicking Create to the VM page showing running (the event stream, no reload);
#   - from clicking a console to its first frame (VNC: lit pixels on the canvas) or first
#     bytes (serial);
#   - the daemon's resident memory with no console, with 20 consoles open at once (5 VMs,
#     each with its serial console and 3 VNC viewers), and after they closed.
# No peer has a web console with in-page consoles (kcli, virt-install, Multipass and virter
# are CLIs), so there is no ratio: the numbers stand alone, with the machine beside them.
#
#   bench/web.sh            # root; after scripts/testenv.sh; about 3 minutes
#   RUNS=5 bench/web.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=../scripts/lib.sh
. "$repo/scripts/lib.sh"
# shellcheck source=lib.sh
. "$here/lib.sh"
need_root bench/web.sh
# shellcheck disable=SC1091
. "$KVMCTL_RUN/env"
if [ "$(ip netns identify $$ 2>/dev/null)" != "$KVMCTL_NETNS" ]; then
  exec ip netns exec "$KVMCTL_NETNS" "$0" "$@"
fi
: "${RUNS:=3}"
D=$(mktemp -d /tmp/kvmctl-webbench.XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# 20 consoles of one user: above the default of 16 guest sessions per user.
printf 'sessions_per_user = 32\n' >"$D/kvmctl.toml"
export KVMCTL_CONFIG="$D/kvmctl.toml" KVMCTL_LISTEN="127.0.0.1:$port" KVMCTL_LOG=warn
bench_serve "$D" 47300
cleanup() {
  for n in $("$KV" vm list -o json 2>/dev/null | python3 -c 'import json,sys; [print(v["name"]) for v in json.load(sys.stdin)]'); do "$KV" vm delete "$n" >/dev/null 2>&1 || true; done
  "$KV" image rm kt-wb-tiny >/dev/null 2>&1 || true
  kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; rm -rf "$D"
}
trap cleanup EXIT
log "building the benchmark driver (release)"
(cd "$repo" && cargo build --release --quiet -p kvmctl-server --example webbench)

qemu-img create -q -f qcow2 "$D/disk.qcow2" 64M
"$KV" image import "$D/disk.qcow2" --name kt-wb-tiny --kernel "$KVMCTL_TEST_TINY/vmlinuz" \
  --initrd "$KVMCTL_TEST_TINY/initrd.gz" --cmdline "console=ttyS0 quiet panic=-1" >/dev/null
"$KV" plan create kt-wb --cpus 1 --memory 256M --disk 1G --price 0.01 >/dev/null
"$KV" user create kt-wb-user >/dev/null
# Five tiny guests on two CPUs: more vCPUs than the default overcommit gives.
"$KV" node set local --cpu-overcommit 8 >/dev/null
"$KV" quota set kt-wb-user --vms 10 --vcpus 10 --memory 4096 --disk 20 >/dev/null
token=$("$KV" token create --user kt-wb-user --description bench -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

log "driving Chromium ($RUNS runs)"
"$repo/target/release/examples/webbench" --url "http://127.0.0.1:$port" --token "$token" --image kt-wb-tiny \
  --plan kt-wb --pid "$daemon" --runs "$RUNS" | tee "$D/out"

python3 - "$D/out" <<'PY'
import statistics, sys
vals = {}
for line in open(sys.argv[1]):
    k, v, *_ = line.split()
    vals.setdefault(k, []).append(float(v))
def med(k):
    v = vals.get(k, [])
    return f"{statistics.median(v):.0f}" if v else "-"
print()
print("| measure | result |")
print("|---|---|")
print(f"| Create clicked to page shows running (median of {len(vals.get('create_to_running_ms', []))}) | {med('create_to_running_ms')} ms |")
print(f"| VNC console clicked to first frame (median) | {med('vnc_first_frame_ms')} ms |")
print(f"| serial console clicked to first bytes (median) | {med('serial_first_bytes_ms')} ms |")
print(f"| daemon RSS, no console open | {med('daemon_rss_no_console_kib')} KiB |")
print(f"| daemon RSS, 20 consoles open ({med('consoles_open')} connected) | {med('daemon_rss_20_consoles_kib')} KiB |")
print(f"| per console | {med('daemon_rss_per_console_kib')} KiB |")
print(f"| daemon RSS after they closed | {med('daemon_rss_after_close_kib')} KiB |")
PY
