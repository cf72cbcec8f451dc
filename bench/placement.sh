#!/usr/bin/env bash
# Placement speed (issue 9): one best-fit decision over 10,000 nodes, and 10,000 sequential
# placements over 1,000 nodes with allocations updated after each. The peers (kcli,
# virt-install, Multipass, virter) have no placement to compare with; the seed's Python
# best-fit loop is the reference design. Prints a markdown table.
#   bench/placement.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
(cd "$repo" && cargo build --release --quiet -p kvmctl-core --examples)
read -r single_us seq_ms placed explained_us < <("$repo/target/release/examples/placebench" 10000 200 1000 10000)
printf '| measure | result | goal |\n|---|---|---|\n'
printf '| one decision over 10,000 nodes (median of 200) | %s µs | under 1 ms |\n' "$single_us"
printf '| the same with every node explained (`--explain`) | %s µs | - |\n' "$explained_us"
printf '| 10,000 sequential placements over 1,000 nodes | %s ms total (%s placed) | - |\n' "$seq_ms" "$placed"
