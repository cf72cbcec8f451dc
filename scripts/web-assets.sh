#!/usr/bin/env bash
# Fetches the web console's third-party browser code (noVNC, xterm.js) as the pinned npm
# packages crates/kvmctl-server/web/vendor.lock names, checks each against its registry
# integrity hash, and unpacks what the console uses into crates/kvmctl-server/web/vendor/
# (ignored by git), which the build embeds in the binary. No Node is needed, at build or run
# time. Idempotent: a package already unpacked at its pinned version is skipped; tarballs
# are cached in $KVMCTL_WEB_CACHE (default /var/cache/kvmctl/web).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
lock=$repo/crates/kvmctl-server/web/vendor.lock
dest=$repo/crates/kvmctl-server/web/vendor
cache=${KVMCTL_WEB_CACHE:-/var/cache/kvmctl/web}

# integrity FILE: the npm-style sha512 integrity of FILE (coreutils only).
integrity() {
  printf 'sha512-%s' "$(sha512sum "$1" | cut -c1-128 | tr a-f A-F | basenc --base16 -d | base64 -w0)"
}

mkdir -p "$dest" "$cache"
while read -r name version url want keep; do
  case "$name" in ''|'#'*) continue ;; esac
  [ "$(cat "$dest/$name/.pinned" 2>/dev/null)" = "$version $want" ] && continue
  tgz=$cache/$name-$version.tgz
  if [ ! -f "$tgz" ] || [ "$(integrity "$tgz")" != "$want" ]; then
    log "web assets: fetching $name $version ($url)"
    command -v curl >/dev/null || die "curl is missing; install it (apt-get install curl ca-certificates)"
    curl -fsSL --retry 3 -o "$tgz.part" "$url" || die "cannot fetch $url; the web console's assets come from the npm registry"
    got=$(integrity "$tgz.part")
    [ "$got" = "$want" ] || { rm -f "$tgz.part"; die "$name $version from $url has integrity $got, not the pinned $want"; }
    mv "$tgz.part" "$tgz"
  fi
  tmp=$(mktemp -d)
  tar -xzf "$tgz" -C "$tmp"
  rm -rf "$dest/$name"
  for p in ${keep//,/ }; do
    [ -e "$tmp/package/$p" ] || die "$name $version has no $p (vendor.lock names it)"
    mkdir -p "$dest/$name/$(dirname "$p")"
    cp -r "$tmp/package/$p" "$dest/$name/$p"
  done
  rm -rf "$tmp"
  printf '%s %s\n' "$version" "$want" >"$dest/$name/.pinned"
  log "web assets: $name $version in place"
done <"$lock"
