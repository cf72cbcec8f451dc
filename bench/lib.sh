# Shared by the benchmarks that time kvmctl against the test environment's libvirtd.
# shellcheck shell=bash

# bench_serve DIR PORTBASE: builds kvmctl (release), sets KV to it, starts `kvmctl serve` with
# its state under DIR and 50 ports from PORTBASE (SSH, general, VNC), sets KVMCTL_SOCKET and
# `daemon` (its pid), and waits for its socket.
bench_serve() {
  local dir=$1 base=$2
  log "building kvmctl (release)"
  (cd "$repo" && cargo build --release --quiet -p kvmctl-cli)
  KV="$repo/target/release/kvmctl"
  export KVMCTL_SOCKET="$dir/k.sock"
  KVMCTL_DATABASE="$dir/k.db" KVMCTL_POOL="$KVMCTL_TEST_POOL" KVMCTL_NETWORK="$KVMCTL_TEST_NETWORK" \
    KVMCTL_CONSOLE_LOG_DIR="$dir/console" KVMCTL_KEY_DIR="$dir/keys" KVMCTL_SNAPSHOT_DIR="$dir/snapshots" \
    KVMCTL_DOMAIN_TYPE=qemu KVMCTL_HOST_STATE_DIR="$dir/host" KVMCTL_SSH_PORT_RANGE="$base-$((base + 19))" \
    KVMCTL_GENERAL_PORT_RANGE="$((base + 20))-$((base + 29))" KVMCTL_VNC_PORT_RANGE="$((base + 30))-$((base + 49))" KVMCTL_LOG=${KVMCTL_LOG:-info} \
    "$KV" serve > "$dir/serve.log" 2>&1 &
  daemon=$!
  for _ in $(seq 100); do [ -S "$KVMCTL_SOCKET" ] && break; sleep 0.05; done
  [ -S "$KVMCTL_SOCKET" ] || die "the daemon did not start: $(tail -3 "$dir/serve.log")"
}

# timeit METRIC CMD...: appends METRIC and microseconds to $R; a failing command stops the run.
timeit() {
  local m=$1; shift
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>"$R.err" || die "$m failed: $(cat "$R.err")"
  t1=$(date +%s%N)
  echo "$m $(( (t1 - t0) / 1000 ))" >> "$R"
}
