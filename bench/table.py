#!/usr/bin/env python3
"""Medians of a benchmark's results file (lines `METRIC MICROSECONDS`) as a Markdown table,
then ratios of medians: each argument `A:B:what` prints `what: A/B`."""
import collections
import statistics
import sys

v = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m, us = line.split()
    v[m].append(int(us) / 1000)
med = {m: statistics.median(x) for m, x in v.items()}
print("| metric | n | min ms | median ms | max ms |\n|---|---:|---:|---:|---:|")
for m, x in v.items():
    print(f"| {m} | {len(x)} | {min(x):.0f} | {med[m]:.0f} | {max(x):.0f} |")
print()
for spec in sys.argv[2:]:
    a, b, what = spec.split(":", 2)
    print(f"- {what}: {med[a] / med[b]:.2f}x ({med[a]:.0f} / {med[b]:.0f} ms)")
