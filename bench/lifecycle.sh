#!/usr/bin/env bash
# VM lifecycle benchmark (issue 5): kvmctl against kcli, virt-install, a plain shell sequence
# and the floor (a minimal compiled libvirt client), in one run on this host, same tiny guest,
# same size (1 vCPU, 256 MiB), TCG. Drives the peers with the scripts in ../shared/peers
# (called, not copied) and measures kvmctl with the same timing helpers.
#
#   bench/lifecycle.sh                 # everything: peers, then kvmctl (~15 min)
#   PEERS_RUN=0 bench/lifecycle.sh     # kvmctl only, against the peers' last results
#   RUNS=7 SETTLE=6 LIST_VMS=100 ...   # knobs (the peers' env.sh has the rest)
#
# Metrics added here (seconds per line in $RESULTS, summarised in ms):
#   kv.create      `kvmctl vm create` (CLI process) until it returns with the domain running
#   kv.list_1vm    `kvmctl vm list` with one VM
#   kv.delete      `kvmctl vm delete` (stop, undefine, volumes, logs)
#   kv.list_0vm    `kvmctl vm list` with no VM
#   kv.list_100vm  `kvmctl vm list` with $LIST_VMS VMs (defined, stopped)
#   kc.list_100vm, vi.virsh_list_100vm: kcli and `virsh list --all` with the same domains
#   kv.help        `kvmctl --help`
# and the daemon's idle RSS. Needs root and scripts/testenv.sh's libvirtd (network `default`
# active in namespace kvmctl-test: run `kvmctl host setup --netns kvmctl-test` once).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PEERS=${PEERS:-$repo/../shared/peers}
[ -d "$PEERS" ] || { echo "peer scripts not found at $PEERS (set PEERS=)" >&2; exit 1; }
# shellcheck source=../scripts/lib.sh
. "$repo/scripts/lib.sh"
need_root bench/lifecycle.sh
# shellcheck disable=SC1091
. "$KVMCTL_RUN/env"

export KERNEL=${KERNEL:-$KVMCTL_TEST_TINY/vmlinuz} KT_INITRD=${KT_INITRD:-$KVMCTL_TEST_TINY/initrd.gz}
: "${PEERS_RUN:=1}" "${LIST_VMS:=100}"
export PEERS_RUN LIST_VMS

# The peers' setup installs packages (apt, pip): it runs in the host's namespace, where the
# registries are reachable. Everything else runs inside the test namespace, where libvirtd's
# networks and the guests live.
if [ "$(ip netns identify $$ 2>/dev/null)" != "$KVMCTL_NETNS" ]; then
  [ "$PEERS_RUN" = 1 ] && "$PEERS/setup.sh"
  exec ip netns exec "$KVMCTL_NETNS" "$0" "$@"
fi
# shellcheck source=/dev/null
. "$PEERS/lib.sh"
mkdir -p "$WORK"
virsh net-info "$NET" >/dev/null 2>&1 || die "libvirt network $NET is missing; run: kvmctl host setup --netns $KVMCTL_NETNS"
[[ "$(virsh net-info "$NET")" =~ Active:\ +yes ]] || virsh -q net-start "$NET" >/dev/null
# Its addresses are reserved ahead (ADR 0015), as `kvmctl host setup` leaves it; otherwise
# every create would change the network live and this would measure that instead.
[[ "$(virsh net-dumpxml "$NET")" == *"<host mac='52:4b:"* ]] ||
  die "network $NET has no addresses reserved ahead; run: kvmctl host setup --netns $KVMCTL_NETNS"

if [ "$PEERS_RUN" = 1 ]; then
  INSTALL=0 "$PEERS/setup.sh"
  "$PEERS/cleanup.sh"
  for b in bench_raw.sh bench_shell.sh bench_virtinstall.sh bench_kcli.sh; do
    log "peers: $b"; "$PEERS/$b"
  done
fi

log "building kvmctl (release)"
(cd "$repo" && cargo build --release --quiet -p kvmctl-cli)
KV="$repo/target/release/kvmctl"
D="$WORK/kvmctl"
rm -rf "$D"; mkdir -p "$D"
export KVMCTL_SOCKET="$D/k.sock"
# The list benchmark defines $LIST_VMS stopped VMs: the daemon's node must admit them
# whatever this host's size (6.9 GB of memory was too little for 100 x 256 MiB at the
# default 1.0 memory overcommit).
cat > "$D/kvmctl.toml" <<EOF
local_cpu_overcommit = "100.0"
local_memory_overcommit = "$(( (LIST_VMS * MEM_MB) / 1024 + 16 > 100 ? 100 : (LIST_VMS * MEM_MB) / 1024 + 16 )).0"
EOF
# Logged at info: each create's "VM created" line carries its step times (steps=...).
KVMCTL_CONFIG="$D/kvmctl.toml" KVMCTL_DATABASE="$D/k.db" KVMCTL_POOL="$KCLI_POOL" KVMCTL_NETWORK="$NET" \
  KVMCTL_CONSOLE_LOG_DIR="$D/console" KVMCTL_DOMAIN_TYPE=qemu KVMCTL_HOST_STATE_DIR="$D/host" KVMCTL_LOG=info \
  "$KV" serve > "$D/serve.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; "$PEERS/cleanup.sh" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 100); do [ -S "$KVMCTL_SOCKET" ] && break; sleep 0.05; done
[ -S "$KVMCTL_SOCKET" ] && kill -0 "$daemon" 2>/dev/null || die "the daemon did not start: $(tail -3 "$D/serve.log")"
rss_idle_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon/status")
ssh-keygen -q -t ed25519 -N '' -f "$D/key"
# Volumes of an earlier run's image (its daemon's database went with $D).
for v in $(virsh -q vol-list "$KCLI_POOL" | awk -v p="image-$PREFIX-base." 'index($1, p) == 1 {print $1}'); do
  virsh -q vol-delete "$v" --pool "$KCLI_POOL" >/dev/null
done
"$KV" image import "$BASE" --name "$PREFIX-base" --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$KARGS" >/dev/null

reset kv.create kv.list_1vm kv.delete kv.list_0vm kv.list_100vm kc.list_100vm vi.virsh_list_100vm kv.help c.create_kvxml vi.dhcp_host_add
create() { "$KV" vm create "$1" --image "$PREFIX-base" --cpus "$VCPUS" --memory "${MEM_MB}M" --disk 1G --ssh-key "$D/key.pub" "${@:2}"; }
for i in $(iters); do
  norec_for "$i"
  name="$PREFIX-kv-$i"
  timeit kv.create create "$name"
  expect_running "$name" kv.create
  sleep "$SETTLE"
  timeit kv.list_1vm "$KV" vm list
  timeit kv.delete "$KV" vm delete "$name"
done
for i in $(iters); do norec_for "$i"; timeit kv.list_0vm "$KV" vm list; done
for i in $(iters); do norec_for "$i"; timeit kv.help "$KV" --help; done

# The floor with kvmctl's own domain XML (q35, virtio RNG, guest-agent channel, VNC, serial
# log, ...): the minimal compiled client starting a transient copy of a kvmctl-defined VM.
if [ -x "$WORK/raw_lv" ]; then
  create "$PREFIX-kvx" --no-start >/dev/null
  virsh dumpxml "$PREFIX-kvx" | sed -e '/<uuid>/d' > "$D/kvx.xml.in"
  net_prefix=$(virsh net-dumpxml "$NET" | sed -n "s/.*<ip address='\([0-9]*\.[0-9]*\.[0-9]*\)\.[0-9]*'.*/\1/p" | head -1)
  k=0
  for i in $(iters); do
    norec_for "$i"
    name="$PREFIX-kvx-$i"
    sed -e "s|<name>$PREFIX-kvx</name>|<name>$name</name>|" "$D/kvx.xml.in" > "$D/$name.xml"
    timeit c.create_kvxml "$WORK/raw_lv" "$URI" create "$D/$name.xml"
    expect_running "$name" c.create_kvxml
    sleep "$SETTLE"
    nuke "$name"
    # The call kvmctl made before its networks' addresses were reserved ahead (ADR 0015),
    # and still makes on other networks: a live DHCP host entry, for which libvirt 9.0
    # reloads every firewall rule of the network. The address's entry reserved ahead is
    # taken out around it (untimed), as an address has one entry only.
    k=$((k + 1))
    ip="$net_prefix.$((250 - k))"
    premade="<host mac='$(printf '52:4b:%02x:%02x:%02x:%02x' ${ip//./ })' ip='$ip'/>"
    host="<host mac='52:54:00:fe:00:$(printf %02x "$k")' name='$name' ip='$ip'/>"
    virsh -q net-update "$NET" delete ip-dhcp-host "$premade" --live --config >/dev/null
    timeit vi.dhcp_host_add virsh -q net-update "$NET" add ip-dhcp-host "$host" --live --config
    virsh -q net-update "$NET" delete ip-dhcp-host "$host" --live --config >/dev/null
    virsh -q net-update "$NET" add ip-dhcp-host "$premade" --live --config >/dev/null
  done
  "$KV" vm delete "$PREFIX-kvx" >/dev/null
fi

log "defining $LIST_VMS stopped VMs for the list benchmark"
for n in $(seq "$LIST_VMS"); do
  create "$PREFIX-kl-$n" --no-start >/dev/null || die "defining $PREFIX-kl-$n for the list benchmark failed (see above and $D/serve.log)"
done
[ "$("$KV" vm list --output json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" -ge "$LIST_VMS" ] \
  || die "the list benchmark needs $LIST_VMS VMs defined"
for i in $(iters); do norec_for "$i"; timeit kv.list_100vm "$KV" vm list; done
for i in $(iters); do norec_for "$i"; timeit vi.virsh_list_100vm virsh list --all; done
if [ -x "$KCLI_VENV/bin/kcli" ]; then
  for i in $(iters); do norec_for "$i"; HOME="$KCLI_HOME" timeit kc.list_100vm "$KCLI_VENV/bin/kcli" list vm; done
fi
rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon/status")
for n in $(seq "$LIST_VMS"); do "$KV" vm delete "$PREFIX-kl-$n" >/dev/null || log "could not delete $PREFIX-kl-$n"; done
"$KV" image rm "$PREFIX-base" >/dev/null || log "could not remove image $PREFIX-base"

"$KV" --version > "$WORK/version.kvmctl"
{
  date -u +"%F %T UTC"
  cat "$WORK"/version.* 2>/dev/null
  echo "kvmctl daemon RSS: $((rss_idle_kib / 1024)) MiB idle at start; $((rss_kib / 1024)) MiB after the run ($LIST_VMS VMs defined and listed)"
} | tee "$WORK/kvmctl-run.txt"
# Where a create's time goes, from the daemon's log (median ms per step over the creates).
python3 - "$D/serve.log" <<'PY' | tee "$WORK/kvmctl-create-steps.md"
import re, statistics, sys
steps = {}
for line in open(sys.argv[1], errors="replace"):
    if "VM created" not in line or "steps=" not in line:
        continue
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    for name, ms in re.findall(r"(\w+)=([0-9.]+)", line.split("steps=", 1)[1]):
        steps.setdefault(name, []).append(float(ms))
print("| create step (daemon) | median ms | runs |\n|---|---|---|")
for name, v in steps.items():
    print(f"| {name} | {statistics.median(v):.1f} | {len(v)} |")
PY
python3 "$PEERS/stats.py" "$RESULTS" \
  c.create_nodisk c.create_kvxml vi.dhcp_host_add c.destroy kv.create kc.create vi.create_import sh.create_total sh.create_total_1virsh \
  kv.delete kc.delete vi.delete_total sh.delete_total \
  kv.list_0vm kc.list_0vm tool.virsh_list_0vm kv.list_1vm kc.list_1vm vi.virsh_list \
  kv.list_100vm kc.list_100vm vi.virsh_list_100vm kv.help kc.help vi.help | tee "$WORK/lifecycle.table.md"
