#!/usr/bin/env bash
# `kvmctl test run` (issue 17) against the shell flow seed 004 describes, one run on this
# host, side by side. The Debian 13 image (KVMCTL_TEST_DEBIAN13_IMAGE, built by
# scripts/test.sh or `kvmctl image build debian-13`), 1 vCPU and 1 GiB per VM, TCG. The spec
# installs a small systemd service from uploaded files and checks it (unit active, port,
# page); 8 cases, 2 at a time (this machine has 2 cores):
#   kv.cold_ready     a case booted cold from `provisioned` (linked clone) until SSH and
#                     cloud-init are done, per case (from report.json)
#   kv.warm_ready     a case woken warm from the `provisioned` memory snapshot until SSH, per case
#   kv.cold_total     the whole `kvmctl test run` with 8 cold cases (boot and provision once)
#   kv.warm_total     the same with --from-snapshot provisioned
#   sh.ready          seed 004's flow per case: qemu-img overlay, cloud-localds, virt-install
#                     --import, a wait loop for the address and SSH; until SSH works
#   sh.case           that plus scp, the provisioning and the same checks over ssh, and
#                     virsh destroy/undefine (no snapshot: that favours the shell)
#   sh.total          8 such cases, 2 at a time (xargs -P 2)
# Also prints the guest's own boot breakdown (systemd-analyze) beside the host-side stage
# times, so a slower machine and a slower image can be told apart.
#
#   bench/testrun.sh          # needs root, scripts/testenv.sh; about 15 minutes
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=../scripts/lib.sh
. "$repo/scripts/lib.sh"
need_root bench/testrun.sh
# shellcheck disable=SC1091
. "$KVMCTL_RUN/env"
for tool in virt-install cloud-localds; do
  command -v "$tool" >/dev/null || { log "installing virtinst cloud-image-utils (the shell flow's tools)"; apt-get install -y -q virtinst cloud-image-utils >/dev/null; }
done
if [ "$(ip netns identify $$ 2>/dev/null)" != "$KVMCTL_NETNS" ]; then
  exec ip netns exec "$KVMCTL_NETNS" "$0" "$@"
fi
image=${KVMCTL_TEST_DEBIAN13_IMAGE:-$(ls /var/cache/kvmctl-test/images/debian-13-*/image.qcow2 2>/dev/null | head -1)}
[ -f "$image" ] || die "no Debian 13 image: set KVMCTL_TEST_DEBIAN13_IMAGE (scripts/test.sh builds it)"
CASES=${CASES:-8}
PAR=${PAR:-2}
W=/tmp/testrunbench
rm -rf "$W"; mkdir -p "$W/hello/www"
# shellcheck source=lib.sh
. "$here/lib.sh"
bench_serve "$W" 29600
cleanup() {
  for d in $(virsh list --all --name | grep '^tb-sh-' || true); do virsh -q destroy "$d" >/dev/null 2>&1 || true; virsh -q undefine "$d" >/dev/null 2>&1 || true; done
  rm -f "$W"/tb-sh-*.qcow2 "$W"/tb-sh-*-seed.iso /var/log/libvirt/qemu/tb-sh-*.log
  for r in $("$KV" test list -o json 2>/dev/null | python3 -c 'import json,sys; [print(r["id"]) for r in json.load(sys.stdin)]' 2>/dev/null); do "$KV" test rm "$r" >/dev/null 2>&1 || true; done
  "$KV" image rm tb-debian >/dev/null 2>&1 || true
  virsh -q pool-destroy testrunbench >/dev/null 2>&1 || true
  kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true
}
trap cleanup EXIT
"$KV" image import "$image" --name tb-debian >/dev/null

# The project under test.
echo "hello from a kvmctl test service" > "$W/hello/www/index.html"
cat > "$W/hello/hello.service" <<'EOF'
[Unit]
Description=hello test service
[Service]
ExecStart=/usr/bin/python3 -m http.server 8080 --bind 0.0.0.0 --directory /srv/hello
[Install]
WantedBy=multi-user.target
EOF
cat > "$W/hello/install.sh" <<'EOF'
#!/bin/sh
set -eu
mkdir -p /srv/hello
cp /var/tmp/hello/www/index.html /srv/hello/
cp /var/tmp/hello/hello.service /etc/systemd/system/
systemctl daemon-reload
systemctl enable --now hello.service
for i in $(seq 1 60); do python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/')" 2>/dev/null && exit 0; sleep 1; done
exit 1
EOF
CHECKS='systemctl is-active hello && (ss -ltnH | grep -q ":8080 ") && python3 -c "import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:8080/\").read().decode())" | grep -q "hello from"'
{
  printf 'name: bench\nimage: tb-debian\nsize: {vcpus: 1, memory_mib: 1024, disk_gib: 4}\n'
  printf 'upload:\n  - from: hello\n    to: /var/tmp/hello\n'
  printf 'provision:\n  - script: hello/install.sh\n    sudo: true\n'
  printf 'checks:\n  - service: hello\n  - port: 8080\n  - name: page\n    run: python3 -c "import urllib.request; print(urllib.request.urlopen('"'"'http://127.0.0.1:8080/'"'"').read().decode())"\n    expect_output: hello from\n'
  printf '  - name: boot breakdown\n    run: (systemd-analyze || true); systemd-analyze blame | head -12\ncases:\n'
  for i in $(seq "$CASES"); do printf '  - name: c%s\n' "$i"; done
} > "$W/spec.yaml"

R="$W/results"
: > "$R"
kv_run() {  # MODE: cold|warm
  local extra=() t0 t1
  [ "$1" = warm ] && extra=(--from-snapshot provisioned)
  t0=$(date +%s%N)
  "$KV" test run "$W/spec.yaml" --parallel "$PAR" "${extra[@]}" --report-dir "$W/report-$1" -o json > "$W/$1.json" 2> "$W/$1.err" \
    || die "kvmctl test run ($1) failed: $(tail -5 "$W/$1.err")"
  t1=$(date +%s%N)
  echo "kv.${1}_total $(( (t1 - t0) / 1000 ))" >> "$R"
  python3 - "$W/$1.json" "$1" >> "$R" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for c in r["cases"]:
    print(f"kv.{sys.argv[2]}_ready {c['ready_ms'] * 1000}")
EOF
}
log "kvmctl test run: $CASES cold cases, $PAR at a time"
kv_run cold
log "kvmctl test run: $CASES warm cases (--from-snapshot provisioned), $PAR at a time"
kv_run warm

# Seed 004's shell flow, one VM per case.
ssh-keygen -q -t ed25519 -N '' -f "$W/key"
cat > "$W/user-data" <<EOF
#cloud-config
users:
  - name: bench
    sudo: ALL=(ALL) NOPASSWD:ALL
    shell: /bin/bash
    ssh_authorized_keys: [$(cat "$W/key.pub")]
EOF
SSH=(ssh -q -i "$W/key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=3 -o BatchMode=yes)
shell_case() {  # N: one case the way seed 004 does it; prints its timings
  local n=$1 name="tb-sh-$1" t0 ip="" t_ready
  t0=$(date +%s%N)
  qemu-img create -q -f qcow2 -b "$image" -F qcow2 "$W/$name.qcow2" 4G
  printf 'instance-id: %s\nlocal-hostname: %s\n' "$name" "$name" > "$W/$name.meta"
  cloud-localds "$W/$name-seed.iso" "$W/user-data" "$W/$name.meta"
  # virt-install 4.1 knows no Debian newer than 11; linux2022 is its generic modern Linux.
  if ! virt-install -q --name "$name" --memory 1024 --vcpus 1 --import --virt-type qemu --osinfo linux2022 \
    --disk "path=$W/$name.qcow2,format=qcow2,bus=virtio" --disk "path=$W/$name-seed.iso,format=raw,bus=virtio,readonly=on" \
    --network "network=$KVMCTL_TEST_NETWORK,model=virtio" --graphics none --noautoconsole > "$W/$name.vi.log" 2>&1; then
    echo "sh.check_failed virt-install: $(tail -2 "$W/$name.vi.log" | tr '\n' ' ')"; return 0
  fi
  local mac; mac=$(virsh domiflist "$name" | awk '/network/ {print $5}')
  for _ in $(seq 600); do
    ip=$(virsh net-dhcp-leases "$KVMCTL_TEST_NETWORK" --mac "$mac" 2>/dev/null | awk '/ipv4/ {sub("/.*", "", $5); print $5}' | tail -1)
    [ -n "$ip" ] && "${SSH[@]}" "bench@$ip" true 2>/dev/null && break
    ip=""
    sleep 1
  done
  [ -n "$ip" ] || { echo "sh.check_failed no SSH within 600 s"; virsh -q destroy "$name" >/dev/null; virsh -q undefine "$name" >/dev/null; return 0; }
  t_ready=$(date +%s%N)
  scp -q -r -i "$W/key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "$W/hello" "bench@$ip:/var/tmp/hello"
  "${SSH[@]}" "bench@$ip" "sudo sh /var/tmp/hello/install.sh" >/dev/null
  "${SSH[@]}" "bench@$ip" "$CHECKS" >/dev/null || echo "sh.check_failed 1"
  [ "$n" = 1 ] && "${SSH[@]}" "bench@$ip" "systemd-analyze; systemd-analyze blame | head -12" > "$W/shell-boot.txt" 2>&1
  virsh -q destroy "$name" >/dev/null; virsh -q undefine "$name" >/dev/null
  rm -f "$W/$name.qcow2" "$W/$name-seed.iso" "$W/$name.meta"
  echo "sh.ready $(( (t_ready - t0) / 1000 ))"
  echo "sh.case $(( ($(date +%s%N) - t0) / 1000 ))"
}
# virt-install defines a storage pool for the disks' directory on first use; two at once
# race to define it, so it exists before they run.
virsh -q pool-info testrunbench >/dev/null 2>&1 || virsh -q pool-create-as testrunbench dir --target "$W" >/dev/null
export -f shell_case
export W image KVMCTL_TEST_NETWORK CHECKS
export SSH_STR="${SSH[*]}"
log "shell flow (seed 004): $CASES cases, $PAR at a time"
t0=$(date +%s%N)
# shellcheck disable=SC2016
seq "$CASES" | xargs -P "$PAR" -I{} bash -c 'SSH=($SSH_STR); shell_case {}' >> "$R"
echo "sh.total $(( ($(date +%s%N) - t0) / 1000 ))" >> "$R"
if grep -q sh.check_failed "$R"; then die "the shell flow failed: $(grep sh.check_failed "$R" | head -3)"; fi

python3 "$here/table.py" "$R" \
  "kv.cold_ready:kv.warm_ready:cold case ready / warm case ready (goal: at least 10x)" \
  "kv.warm_ready:sh.ready:warm case ready / shell flow to SSH" \
  "kv.cold_ready:sh.ready:cold case ready (clone, boot, cloud-init) / shell flow to SSH" \
  "kv.cold_total:sh.total:$CASES cases cold, kvmctl / shell flow" \
  "kv.warm_total:sh.total:$CASES cases warm, kvmctl / shell flow" | tee "$W/testrun.table.md"
echo
echo "Host-side stages of the kvmctl base VM (cold run):"
python3 - "$W/cold.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(r["machine"])
for s in r["stages"]:
    print("  %-22s %7.1f s  %s" % (s["name"], s["ms"] / 1000, s.get("detail") or ""))
EOF
echo
echo "The guest's own boot breakdown (systemd-analyze in the base VM, via the first cold case):"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); c=r["cases"][0]; print([k for k in c["checks"] if k["name"]=="boot breakdown"][0]["stdout"])' "$W/cold.json"
echo "The shell flow's guest (first case):"
cat "$W/shell-boot.txt" 2>/dev/null || true
{ date -u +"%F %T UTC"; "$KV" --version; virsh --version; nproc; uptime; } > "$W/machine.txt"
cat "$W/machine.txt"
