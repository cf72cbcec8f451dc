//! Placement: which compute node takes a new VM, and why each node was chosen or refused.
//!
//! Pure and deterministic. A node's capacity after overcommit is
//! `(physical - reserved) × overcommit`, per resource (vCPUs and memory; disk is the pool's
//! capacity, never overcommitted). A node fits when it is `active`, carries every label the
//! request asks for, and each resource's allocation plus the request stays within capacity.
//! Among the nodes that fit, **best fit** (the default, seed 003's "least wasted space")
//! takes the one whose capacity left after the VM is smallest; **spread** the one where
//! most is left. Waste is the sum over resources of the fraction left (parts per million,
//! integers, so the same input always gives the same answer); ties go to the node whose
//! name sorts first.

use std::collections::BTreeMap;

/// Overcommit ratios in hundredths: `Ratio(200)` is 2.0×.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ratio(pub u32);

impl Ratio {
    pub const ONE: Ratio = Ratio(100);

    /// Parses `2`, `2.0`, `1.5`, `0.75` (at most two decimals, 0.1 to 100).
    pub fn parse(s: &str) -> Result<Ratio, String> {
        let bad = || format!("{s:?} is not a ratio; use a decimal from 0.1 to 100 with at most two decimals, such as 1.5");
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty()
            || int.len() > 3
            || frac.len() > 2
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let hundredths = int.parse::<u32>().map_err(|_| bad())? * 100 + format!("{frac:0<2}").parse::<u32>().map_err(|_| bad())?;
        if !(10..=10_000).contains(&hundredths) {
            return Err(bad());
        }
        Ok(Ratio(hundredths))
    }

    /// `base × ratio`, rounded down.
    pub fn apply(self, base: u64) -> u64 {
        (base as u128 * self.0 as u128 / 100) as u64
    }
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// Whether a node takes new VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    Active,
    /// Keeps its VMs, takes no new ones.
    Draining,
    /// Unreachable at the last capacity refresh.
    Down,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Down => "down",
        }
    }

    pub fn parse(s: &str) -> Option<NodeState> {
        match s {
            "active" => Some(NodeState::Active),
            "draining" => Some(NodeState::Draining),
            "down" => Some(NodeState::Down),
            _ => None,
        }
    }
}

/// What placement knows of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCapacity {
    pub name: String,
    pub state: NodeState,
    /// Physical CPUs (libvirt's node info).
    pub cpus: u64,
    pub memory_mib: u64,
    /// The storage pool's capacity.
    pub disk_gib: u64,
    pub reserved_cpus: u64,
    pub reserved_memory_mib: u64,
    pub cpu_overcommit: Ratio,
    pub memory_overcommit: Ratio,
    /// What the node's VMs are given (all of them, running or not: a stopped VM may start).
    pub allocated_vcpus: u64,
    pub allocated_memory_mib: u64,
    pub allocated_disk_gib: u64,
    pub labels: BTreeMap<String, String>,
}

impl NodeCapacity {
    /// vCPUs the node may give out in total.
    pub fn vcpu_capacity(&self) -> u64 {
        self.cpu_overcommit.apply(self.cpus.saturating_sub(self.reserved_cpus))
    }

    pub fn memory_capacity_mib(&self) -> u64 {
        self.memory_overcommit.apply(self.memory_mib.saturating_sub(self.reserved_memory_mib))
    }

    pub fn available_vcpus(&self) -> u64 {
        self.vcpu_capacity().saturating_sub(self.allocated_vcpus)
    }

    pub fn available_memory_mib(&self) -> u64 {
        self.memory_capacity_mib().saturating_sub(self.allocated_memory_mib)
    }

    pub fn available_disk_gib(&self) -> u64 {
        self.disk_gib.saturating_sub(self.allocated_disk_gib)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Least capacity left after the VM (packs nodes, keeps big holes for big VMs).
    #[default]
    BestFit,
    /// Most capacity left after the VM (spreads load).
    Spread,
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Strategy> {
        match s {
            "best-fit" => Some(Strategy::BestFit),
            "spread" => Some(Strategy::Spread),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::BestFit => "best-fit",
            Strategy::Spread => "spread",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlacementRequest {
    pub vcpus: u64,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// Labels the node must carry with these values.
    pub labels: BTreeMap<String, String>,
    pub strategy: Strategy,
}

/// One node's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub node: String,
    pub chosen: bool,
    /// Whether the node could take the VM at all.
    pub fits: bool,
    /// Why: the first failed condition for a refused node, the fit for the others.
    pub reason: String,
    /// Capacity left after the VM, in parts per million summed over resources; `None` when
    /// the node does not fit.
    pub waste_ppm: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub chosen: Option<String>,
    /// Every node, in name order.
    pub verdicts: Vec<Verdict>,
}

impl Placement {
    /// The reasons every node was refused, for an `InsufficientCapacity` error.
    pub fn refusals(&self) -> Vec<String> {
        self.verdicts.iter().filter(|v| !v.fits).map(|v| format!("{}: {}", v.node, v.reason)).collect()
    }
}

/// Fraction left, in parts per million (0 when the capacity is 0).
fn left_ppm(available_after: u64, capacity: u64) -> u64 {
    if capacity == 0 {
        0
    } else {
        (available_after as u128 * 1_000_000 / capacity as u128) as u64
    }
}

/// Why a node cannot take the VM; numbers only, so deciding allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal<'a> {
    Draining,
    Down,
    LabelMissing { key: &'a str, want: &'a str },
    LabelMismatch { key: &'a str, want: &'a str, have: &'a str },
    Vcpus { need: u64 },
    Memory { need: u64 },
    Disk { need: u64 },
}

impl Refusal<'_> {
    fn describe(self, node: &NodeCapacity) -> String {
        match self {
            Refusal::Draining => "draining: takes no new VMs (kvmctl node undrain to reopen it)".into(),
            Refusal::Down => "down: unreachable at the last capacity check".into(),
            Refusal::LabelMissing { key, want } => format!("label mismatch: needs {key}={want}, has no {key}"),
            Refusal::LabelMismatch { key, want, have } => format!("label mismatch: needs {key}={want}, has {key}={have}"),
            Refusal::Vcpus { need } => format!(
                "not enough vCPUs: needs {need}, {} available after overcommit ({} CPUs - {} reserved) x {} - {} allocated",
                node.available_vcpus(),
                node.cpus,
                node.reserved_cpus,
                node.cpu_overcommit,
                node.allocated_vcpus
            ),
            Refusal::Memory { need } => format!(
                "not enough memory: needs {need} MiB, {} MiB available after overcommit ({} MiB - {} reserved) x {} - {} allocated",
                node.available_memory_mib(),
                node.memory_mib,
                node.reserved_memory_mib,
                node.memory_overcommit,
                node.allocated_memory_mib
            ),
            Refusal::Disk { need } => format!(
                "not enough disk: needs {need} GiB, {} GiB available in the pool ({} GiB - {} allocated)",
                node.available_disk_gib(),
                node.disk_gib,
                node.allocated_disk_gib
            ),
        }
    }
}

/// Checks one node; `Ok(waste)` when it fits.
fn check<'a>(node: &'a NodeCapacity, req: &'a PlacementRequest) -> Result<u64, Refusal<'a>> {
    match node.state {
        NodeState::Active => {}
        NodeState::Draining => return Err(Refusal::Draining),
        NodeState::Down => return Err(Refusal::Down),
    }
    for (k, v) in &req.labels {
        match node.labels.get(k) {
            Some(have) if have == v => {}
            Some(have) => return Err(Refusal::LabelMismatch { key: k, want: v, have }),
            None => return Err(Refusal::LabelMissing { key: k, want: v }),
        }
    }
    let (cpu_cap, mem_cap) = (node.vcpu_capacity(), node.memory_capacity_mib());
    let (cpu_free, mem_free, disk_free) = (node.available_vcpus(), node.available_memory_mib(), node.available_disk_gib());
    if req.vcpus > cpu_free {
        return Err(Refusal::Vcpus { need: req.vcpus });
    }
    if req.memory_mib > mem_free {
        return Err(Refusal::Memory { need: req.memory_mib });
    }
    if req.disk_gib > disk_free {
        return Err(Refusal::Disk { need: req.disk_gib });
    }
    Ok(left_ppm(cpu_free - req.vcpus, cpu_cap)
        + left_ppm(mem_free - req.memory_mib, mem_cap)
        + left_ppm(disk_free - req.disk_gib, node.disk_gib))
}

/// Whether `a` (waste, name) beats `b` under the strategy; ties go to the name first.
fn better(strategy: Strategy, a: (u64, &str), b: (u64, &str)) -> bool {
    match strategy {
        Strategy::BestFit => (a.0, a.1) < (b.0, b.1),
        Strategy::Spread => a.0 > b.0 || (a.0 == b.0 && a.1 < b.1),
    }
}

/// The node for `req`, as an index into `nodes`, without explanations (allocates nothing).
pub fn choose(nodes: &[NodeCapacity], req: &PlacementRequest) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (i, n) in nodes.iter().enumerate() {
        if let Ok(w) = check(n, req) {
            if best.is_none_or(|(j, bw)| better(req.strategy, (w, &n.name), (bw, &nodes[j].name))) {
                best = Some((i, w));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// Chooses a node for `req` and explains every node's verdict (in name order).
pub fn place(nodes: &[NodeCapacity], req: &PlacementRequest) -> Placement {
    let chosen = choose(nodes, req);
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by(|a, b| nodes[*a].name.cmp(&nodes[*b].name));
    let verdicts = order
        .into_iter()
        .map(|i| {
            let n = &nodes[i];
            let is_chosen = chosen == Some(i);
            match check(n, req) {
                Ok(w) => Verdict {
                    node: n.name.clone(),
                    chosen: is_chosen,
                    fits: true,
                    reason: format!(
                        "{}: leaves {} vCPUs, {} MiB, {} GiB (waste {:.3} by {})",
                        if is_chosen { "chosen" } else { "fits" },
                        n.available_vcpus() - req.vcpus,
                        n.available_memory_mib() - req.memory_mib,
                        n.available_disk_gib() - req.disk_gib,
                        w as f64 / 1_000_000.0,
                        req.strategy.as_str()
                    ),
                    waste_ppm: Some(w),
                },
                Err(r) => Verdict { node: n.name.clone(), chosen: false, fits: false, reason: r.describe(n), waste_ppm: None },
            }
        })
        .collect();
    Placement { chosen: chosen.map(|i| nodes[i].name.clone()), verdicts }
}

#[cfg(test)]
mod tests {
    use super::{choose, place, NodeCapacity, NodeState, PlacementRequest, Ratio, Verdict};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    type Strat = super::Strategy;

    /// Node names are unique (the database's primary key).
    fn unique(nodes: Vec<NodeCapacity>) -> Vec<NodeCapacity> {
        nodes.into_iter().enumerate().map(|(i, n)| NodeCapacity { name: format!("{}{i}", n.name), ..n }).collect()
    }

    fn node(name: &str, cpus: u64, mem: u64) -> NodeCapacity {
        NodeCapacity {
            name: name.into(),
            state: NodeState::Active,
            cpus,
            memory_mib: mem,
            disk_gib: 1000,
            reserved_cpus: 0,
            reserved_memory_mib: 0,
            cpu_overcommit: Ratio(200),
            memory_overcommit: Ratio::ONE,
            allocated_vcpus: 0,
            allocated_memory_mib: 0,
            allocated_disk_gib: 0,
            labels: BTreeMap::new(),
        }
    }

    fn req(vcpus: u64, mem: u64) -> PlacementRequest {
        PlacementRequest { vcpus, memory_mib: mem, disk_gib: 10, ..Default::default() }
    }

    #[test]
    fn ratios() {
        assert_eq!(Ratio::parse("2").unwrap(), Ratio(200));
        assert_eq!(Ratio::parse("1.5").unwrap(), Ratio(150));
        assert_eq!(Ratio::parse("0.75").unwrap(), Ratio(75));
        assert_eq!(Ratio(150).to_string(), "1.50");
        for bad in ["", "x", "-1", "1.234", "0", "0.05", "101", "1e3", ".5", "1,5"] {
            assert!(Ratio::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Ratio(200).apply(16), 32);
    }

    #[test]
    fn best_fit_packs_and_spread_spreads() {
        let mut big = node("big", 32, 65536);
        let small = node("small", 4, 8192);
        big.allocated_vcpus = 2;
        let nodes = vec![big, small];
        assert_eq!(place(&nodes, &req(2, 4096)).chosen.as_deref(), Some("small"));
        let spread = PlacementRequest { strategy: Strat::Spread, ..req(2, 4096) };
        assert_eq!(place(&nodes, &spread).chosen.as_deref(), Some("big"));
    }

    #[test]
    fn every_refusal_says_why() {
        let mut drained = node("a-drained", 64, 65536);
        drained.state = NodeState::Draining;
        let mut down = node("b-down", 64, 65536);
        down.state = NodeState::Down;
        let mut full = node("c-full", 2, 4096);
        full.allocated_memory_mib = 3072;
        full.reserved_memory_mib = 512;
        full.labels.insert("zone".into(), "a".into());
        let mut labelled = node("d-zone", 64, 65536);
        labelled.labels.insert("zone".into(), "b".into());
        let nodes = vec![drained, down, full, labelled];
        let mut r = req(1, 1024);
        r.labels.insert("zone".into(), "a".into());
        let p = place(&nodes, &r);
        assert_eq!(p.chosen, None);
        let reasons = p.refusals();
        assert!(reasons[0].starts_with("a-drained: draining"), "{reasons:?}");
        assert!(reasons[1].starts_with("b-down: down"), "{reasons:?}");
        assert!(reasons[2].contains("not enough memory: needs 1024 MiB, 512 MiB available"), "{reasons:?}");
        assert!(reasons[3].contains("label mismatch: needs zone=a, has zone=b"), "{reasons:?}");
    }

    fn arb_node() -> impl Strategy<Value = NodeCapacity> {
        (
            "[a-z]{1,6}",
            1u64..128,
            512u64..262_144,
            1u64..4000,
            0u64..4,
            0u64..2048,
            prop_oneof![Just(Ratio(100)), Just(Ratio(150)), Just(Ratio(200)), Just(Ratio(400))],
            prop_oneof![Just(Ratio(100)), Just(Ratio(120))],
            0u64..256,
            0u64..262_144,
            0u64..4000,
            prop_oneof![Just(NodeState::Active), Just(NodeState::Active), Just(NodeState::Draining), Just(NodeState::Down)],
        )
            .prop_map(|(name, cpus, mem, disk, rc, rm, co, mo, av, am, ad, state)| NodeCapacity {
                name,
                state,
                cpus,
                memory_mib: mem,
                disk_gib: disk,
                reserved_cpus: rc,
                reserved_memory_mib: rm,
                cpu_overcommit: co,
                memory_overcommit: mo,
                allocated_vcpus: av,
                allocated_memory_mib: am,
                allocated_disk_gib: ad,
                labels: BTreeMap::new(),
            })
    }

    fn arb_req() -> impl Strategy<Value = PlacementRequest> {
        (1u64..32, 128u64..65536, 1u64..500, any::<bool>()).prop_map(|(v, m, d, spread)| PlacementRequest {
            vcpus: v,
            memory_mib: m,
            disk_gib: d,
            labels: BTreeMap::new(),
            strategy: if spread { Strat::Spread } else { Strat::BestFit },
        })
    }

    proptest! {
        #[test]
        fn never_exceeds_overcommitted_capacity(nodes in proptest::collection::vec(arb_node(), 0..12), r in arb_req()) {
            let nodes = unique(nodes);
            let p = place(&nodes, &r);
            if let Some(c) = &p.chosen {
                let n = nodes.iter().find(|n| &n.name == c).unwrap();
                prop_assert_eq!(n.state, NodeState::Active);
                prop_assert!(n.allocated_vcpus + r.vcpus <= n.vcpu_capacity());
                prop_assert!(n.allocated_memory_mib + r.memory_mib <= n.memory_capacity_mib());
                prop_assert!(n.allocated_disk_gib + r.disk_gib <= n.disk_gib);
            }
            prop_assert_eq!(p.verdicts.len(), nodes.len());
            prop_assert_eq!(p.verdicts.iter().filter(|v| v.chosen).count(), usize::from(p.chosen.is_some()));
        }

        #[test]
        fn choose_agrees_with_place(nodes in proptest::collection::vec(arb_node(), 0..12), r in arb_req()) {
            let nodes = unique(nodes);
            prop_assert_eq!(choose(&nodes, &r).map(|i| nodes[i].name.clone()), place(&nodes, &r).chosen);
        }

        #[test]
        fn deterministic_whatever_the_order(nodes in proptest::collection::vec(arb_node(), 0..12), r in arb_req()) {
            let mut nodes = unique(nodes);
            let first = place(&nodes, &r);
            nodes.reverse();
            prop_assert_eq!(place(&nodes, &r), first);
        }

        #[test]
        fn best_fit_is_the_least_waste(nodes in proptest::collection::vec(arb_node(), 1..12), r in arb_req()) {
            let r = PlacementRequest { strategy: Strat::BestFit, ..r };
            let nodes = unique(nodes);
            let p = place(&nodes, &r);
            let fitting: Vec<&Verdict> = p.verdicts.iter().filter(|v| v.fits).collect();
            prop_assert_eq!(p.chosen.is_some(), !fitting.is_empty(), "a node is chosen exactly when one fits");
            if let Some(chosen) = p.verdicts.iter().find(|v| v.chosen) {
                for v in &fitting {
                    prop_assert!(chosen.waste_ppm <= v.waste_ppm, "{:?} wastes more than {:?}", chosen, v);
                }
            }
        }
    }
}
