#!/usr/bin/env bash
# Installs, idempotently, what building kvmctl needs (libvirt headers, pkg-config, a C toolchain).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
need_root "scripts/bootstrap.sh"
distro_check
apt_ensure "${BUILD_PACKAGES[@]}"
cargo_check
"$here/web-assets.sh"
log "build dependencies present"
