#!/usr/bin/env bash
# Readiness benchmark (issue 6): how soon after the guest's sshd accepts connections does
# kvmctl report "SSH ready"? An independent prober polls the guest's port 22 every 5 ms and
# notes when it first reads an SSH banner; kvmctl's stages (ssh_port, ssh_banner,
# ssh_login) are compared with that moment, per run. Also prints each stage's time since
# `started`, for the tiny guest (RUNS times) and, when KVMCTL_TEST_DEBIAN_IMAGE is set (or
# the cached build exists), once for the Debian cloud-init image.
#
#   bench/readiness.sh            # root; after scripts/testenv.sh; about 2 minutes
#   RUNS=10 DEBIAN=0 bench/readiness.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=../scripts/lib.sh
. "$repo/scripts/lib.sh"
need_root bench/readiness.sh
# shellcheck disable=SC1091
. "$KVMCTL_RUN/env"
if [ "$(ip netns identify $$ 2>/dev/null)" != "$KVMCTL_NETNS" ]; then
  exec ip netns exec "$KVMCTL_NETNS" "$0" "$@"
fi
: "${RUNS:=5}" "${DEBIAN:=1}"
DEBIAN_IMAGE=${KVMCTL_TEST_DEBIAN_IMAGE:-$(ls -t "$KVMCTL_CACHE"/images/debian-12-*/image.qcow2 2>/dev/null | head -1)}

(cd "$repo" && cargo build --release --quiet -p kvmctl-cli)
KV="$repo/target/release/kvmctl"
D=$(mktemp -d /tmp/kvmctl-readiness.XXXXXX)
export KVMCTL_SOCKET="$D/k.sock"
KVMCTL_DATABASE="$D/k.db" KVMCTL_POOL="$KVMCTL_TEST_POOL" KVMCTL_NETWORK="$KVMCTL_TEST_NETWORK" \
  KVMCTL_CONSOLE_LOG_DIR="$D/console" KVMCTL_KEY_DIR="$D/keys" KVMCTL_DOMAIN_TYPE=qemu KVMCTL_HOST_STATE_DIR="$D/host" \
  KVMCTL_LOG=warn "$KV" serve > "$D/serve.log" 2>&1 &
daemon=$!
cleanup() {
  for n in $("$KV" vm list -o json 2>/dev/null | python3 -c 'import json,sys; [print(v["name"]) for v in json.load(sys.stdin)]'); do "$KV" vm delete "$n" >/dev/null 2>&1 || true; done
  for i in kt-rb-tiny kt-rb-debian; do "$KV" image rm "$i" >/dev/null 2>&1 || true; done
  kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; rm -rf "$D"
}
trap cleanup EXIT
for _ in $(seq 100); do "$KV" plan list >/dev/null 2>&1 && break; sleep 0.05; done

qemu-img create -q -f qcow2 "$D/disk.qcow2" 64M
"$KV" image import "$D/disk.qcow2" --name kt-rb-tiny --kernel "$KVMCTL_TEST_TINY/vmlinuz" \
  --initrd "$KVMCTL_TEST_TINY/initrd.gz" --cmdline "console=ttyS0 quiet panic=-1" >/dev/null

# prober IP OUTFILE: epoch ms at which an SSH banner was first read from IP:22.
prober() {
  python3 - "$1" "$2" <<'PY'
import socket, sys, time
ip, out = sys.argv[1], sys.argv[2]
end = time.time() + 900
while time.time() < end:
    try:
        s = socket.create_connection((ip, 22), timeout=0.2)
        s.settimeout(2)
        if s.recv(64).startswith(b"SSH-"):
            open(out, "w").write(str(int(time.time() * 1000)))
            break
    except OSError:
        pass
    time.sleep(0.005)
PY
}

report() {  # NAME PROBEFILE
  "$KV" vm show "$1" -o json > "$D/vm.json"
  python3 - "$D/vm.json" "$2" <<'PY'
import json, sys
vm = json.load(open(sys.argv[1]))
probe = int(open(sys.argv[2]).read())
st = {s["stage"]: s for s in vm["readiness"]}
stages = " / ".join("%s %.2f" % (k, st[k]["elapsed_ms"] / 1000) for k in ["booting", "ssh_port", "ssh_login", "cloud_init"] if k in st)
gap = [st[k]["at_ms"] - probe for k in ["ssh_port", "ssh_banner", "ssh_login"]]
print("| %s | %s | %d | %d | %d |" % (vm["name"], stages, gap[0], gap[1], gap[2]))
PY
}

echo "| run | stages, seconds since started | ssh_port - sshd up (ms) | ssh_banner - sshd up (ms) | ssh_login - sshd up (ms) |"
echo "|---|---|---:|---:|---:|"
for i in $(seq "$RUNS"); do
  name="kt-rb-$i"
  ip=$("$KV" vm create "$name" --image kt-rb-tiny --cpus 1 --memory 256M --disk 1G -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["ip"])')
  prober "$ip" "$D/probe-$i"
  "$KV" vm wait "$name" --for ssh --timeout 300 >/dev/null 2>&1
  report "$name" "$D/probe-$i"
  "$KV" vm delete "$name" >/dev/null
done

if [ "$DEBIAN" = 1 ] && [ -f "$DEBIAN_IMAGE" ]; then
  "$KV" image import "$DEBIAN_IMAGE" --name kt-rb-debian >/dev/null
  ip=$("$KV" vm create kt-rb-deb --image kt-rb-debian --cpus 2 --memory 1G --disk 4G -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["ip"])')
  prober "$ip" "$D/probe-deb"
  "$KV" vm wait kt-rb-deb --for cloud-init --timeout 900 >/dev/null 2>&1
  report kt-rb-deb "$D/probe-deb"
fi
