#!/usr/bin/env bash
# A PostgreSQL 15 server for the tests, idempotently: Debian's `postgresql` package, a
# cluster of its own in $KVMCTL_PG_DIR run by pg_ctl as the `postgres` user (no systemd
# needed), listening on a Unix socket in $KVMCTL_RUN/pg only (no TCP port: nothing but this
# machine's root and postgres can reach it; trust authentication on that socket). Tests make
# a database each (kvmctl-store's test helper), which the next run of this script drops.
# Sourced by scripts/testenv.sh; sets KVMCTL_TEST_POSTGRES.
set -euo pipefail

KVMCTL_PG_DIR=${KVMCTL_PG_DIR:-/var/lib/kvmctl-test/pg}
pg_sock="$KVMCTL_RUN/pg"
pg_bin=/usr/lib/postgresql/15/bin
[ -x "$pg_bin/pg_ctl" ] || die "PostgreSQL 15 is missing ($pg_bin/pg_ctl); the package postgresql-15 should have installed it"
pgu() { runuser -u postgres -- "$@"; }

mkdir -p "$pg_sock" && chown postgres:postgres "$pg_sock" && chmod 0770 "$pg_sock"
if [ ! -s "$KVMCTL_PG_DIR/data/PG_VERSION" ]; then
  log "initialising the test PostgreSQL cluster in $KVMCTL_PG_DIR"
  mkdir -p "$KVMCTL_PG_DIR" && chown postgres:postgres "$KVMCTL_PG_DIR"
  pgu "$pg_bin/initdb" -D "$KVMCTL_PG_DIR/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >/dev/null || die "initdb failed in $KVMCTL_PG_DIR"
  # Unix socket only; enough connections for the suite's concurrent daemons (each pools
  # a few); fsync off: test data needs no durability, and it is 10x faster on this disk.
  cat >> "$KVMCTL_PG_DIR/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$pg_sock'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
fi
if ! pgu "$pg_bin/pg_ctl" -D "$KVMCTL_PG_DIR/data" status >/dev/null 2>&1; then
  log "starting the test PostgreSQL"
  pgu "$pg_bin/pg_ctl" -D "$KVMCTL_PG_DIR/data" -l "$KVMCTL_PG_DIR/server.log" -w -t 60 start >/dev/null \
    || { tail -20 "$KVMCTL_PG_DIR/server.log" >&2; die "the test PostgreSQL did not start (log: $KVMCTL_PG_DIR/server.log)"; }
fi
KVMCTL_TEST_POSTGRES="postgres://postgres@localhost/postgres?host=$pg_sock"
# Databases earlier test runs made (kt_*): tests do not drop their own (a failed test's
# database is kept for a look until the next run).
pg_psql() { runuser -u postgres -- psql -qAt -h "$pg_sock" -d postgres "$@"; }
old=$(pg_psql -c "SELECT datname FROM pg_database WHERE datname LIKE 'kt\_%'")
if [ -n "$old" ]; then
  log "dropping $(wc -l <<<"$old") databases of earlier test runs"
  while read -r db; do pg_psql -c "DROP DATABASE \"$db\" WITH (FORCE)"; done <<<"$old"
fi
