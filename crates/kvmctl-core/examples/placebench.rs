//! Placement speed: one decision over N nodes (median of runs), and M sequential
//! placements over K nodes with allocations updated after each. Prints
//! `single_us sequential_total_ms placed` for bench/placement.sh.
//!   placebench [nodes=10000] [runs=200] [seq_nodes=1000] [seq_placements=10000]

use kvmctl_core::placement::{choose, place, NodeCapacity, NodeState, PlacementRequest, Ratio, Strategy};
use std::collections::BTreeMap;
use std::time::Instant;

/// A deterministic spread of node sizes and fill levels (a small LCG, no dependency).
fn nodes(n: usize) -> Vec<NodeCapacity> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |m: u64| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) % m
    };
    (0..n)
        .map(|i| {
            let cpus = [16, 32, 64, 128][next(4) as usize];
            let memory_mib = cpus * 4096;
            NodeCapacity {
                name: format!("node-{i:05}"),
                state: if next(50) == 0 { NodeState::Draining } else { NodeState::Active },
                cpus,
                memory_mib,
                disk_gib: 4000,
                reserved_cpus: 2,
                reserved_memory_mib: 4096,
                cpu_overcommit: Ratio(200),
                memory_overcommit: Ratio::ONE,
                allocated_vcpus: next(cpus * 2),
                allocated_memory_mib: next(memory_mib / 2),
                allocated_disk_gib: next(2000),
                labels: BTreeMap::new(),
            }
        })
        .collect()
}

fn arg(i: usize, default: usize) -> usize {
    std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() {
    let (n, runs, seq_nodes, seq_count) = (arg(1, 10_000), arg(2, 200), arg(3, 1_000), arg(4, 10_000));
    let big = nodes(n);
    let req = PlacementRequest { vcpus: 2, memory_mib: 4096, disk_gib: 20, labels: BTreeMap::new(), strategy: Strategy::BestFit };
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let p = choose(&big, &req);
            std::hint::black_box(&p);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let single_us = times[times.len() / 2];

    let mut fleet = nodes(seq_nodes);
    let sizes = [(1, 1024, 10), (2, 4096, 20), (4, 8192, 40), (8, 16384, 80)];
    let t = Instant::now();
    let mut placed = 0;
    for i in 0..seq_count {
        let (vcpus, memory_mib, disk_gib) = sizes[i % sizes.len()];
        let r = PlacementRequest { vcpus, memory_mib, disk_gib, ..req.clone() };
        if let Some(i) = choose(&fleet, &r) {
            let node = &mut fleet[i];
            node.allocated_vcpus += vcpus;
            node.allocated_memory_mib += memory_mib;
            node.allocated_disk_gib += disk_gib;
            placed += 1;
        }
    }
    let seq_ms = t.elapsed().as_secs_f64() * 1e3;
    // With every node's explanation (what `vm create --explain` shows).
    let mut explained: Vec<f64> = (0..runs.min(50))
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(place(&big, &req));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    explained.sort_by(f64::total_cmp);
    println!("{single_us:.1} {seq_ms:.1} {placed} {:.1}", explained[explained.len() / 2]);
}
