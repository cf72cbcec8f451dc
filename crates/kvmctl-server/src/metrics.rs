//! Prometheus metrics (`GET /metrics`, OpenMetrics text) through `prometheus-client`.
//!
//! Counters and histograms are updated where things happen (requests, VM operations,
//! readiness stages, reconciler passes, metering); gauges that describe the database (VMs by
//! state and node, node capacity and allocation) are recomputed at each scrape, so they can
//! never drift from it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's pattern (`/v1/vms/{name}`), never the raw path: bounded cardinality.
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `create`, `delete`, `start`, `stop`, `reboot`, `resize`.
    pub op: String,
    /// `ok` or the error kind.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VmLabels {
    pub state: String,
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepairLabels {
    /// `create_undone`, `delete_finished`, `state_changed`, `network_finished`, `rules_repaired`.
    pub kind: String,
}

fn seconds_histogram() -> Histogram {
    // 50 ms to about 7 minutes: API calls to full guests booting under emulation.
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub operations: Family<OpLabels, Histogram, fn() -> Histogram>,
    pub stages: Family<StageLabels, Histogram, fn() -> Histogram>,
    pub reconciler_runs: Counter,
    pub reconciler_failures: Counter,
    pub reconciler_repairs: Family<RepairLabels, Counter>,
    pub usage_records: Counter,
    pub vm_restarts: Counter,
    pub vms: Family<VmLabels, Gauge>,
    pub node_vcpus: Family<NodeLabels, Gauge>,
    pub node_vcpus_allocated: Family<NodeLabels, Gauge>,
    pub node_memory_bytes: Family<NodeLabels, Gauge>,
    pub node_memory_allocated_bytes: Family<NodeLabels, Gauge>,
    pub node_disk_bytes: Family<NodeLabels, Gauge>,
    pub node_disk_allocated_bytes: Family<NodeLabels, Gauge>,
    pub node_up: Family<NodeLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kvmctl");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "API requests by route, method and status", requests.clone());
        let request_seconds = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(seconds_histogram);
        registry.register("http_request_seconds", "API request durations", request_seconds.clone());
        let operations = Family::<OpLabels, Histogram, fn() -> Histogram>::new_with_constructor(seconds_histogram);
        registry.register("vm_operation_seconds", "VM operation durations by operation and outcome", operations.clone());
        let stages = Family::<StageLabels, Histogram, fn() -> Histogram>::new_with_constructor(seconds_histogram);
        registry.register("vm_boot_stage_seconds", "Seconds from a VM's start to each readiness stage", stages.clone());
        let reconciler_runs = Counter::default();
        registry.register("reconciler_runs", "Reconciler passes", reconciler_runs.clone());
        let reconciler_failures = Counter::default();
        registry.register(
            "reconciler_failures",
            "Reconciler passes that could not run (libvirt or database down)",
            reconciler_failures.clone(),
        );
        let reconciler_repairs = Family::<RepairLabels, Counter>::default();
        registry.register("reconciler_repairs", "Drift the reconciler repaired, by kind", reconciler_repairs.clone());
        let usage_records = Counter::default();
        registry.register("usage_records", "Hourly usage records written", usage_records.clone());
        let vm_restarts = Counter::default();
        registry.register("vm_restarts", "VMs wanted running started again after a failure shut them off", vm_restarts.clone());
        let vms = Family::<VmLabels, Gauge>::default();
        registry.register("vms", "VMs by state and node", vms.clone());
        let g = |registry: &mut Registry, name: &str, help: &str| {
            let f = Family::<NodeLabels, Gauge>::default();
            registry.register(name, help, f.clone());
            f
        };
        let node_vcpus = g(&mut registry, "node_vcpus", "vCPUs a node may give out (after reservations and overcommit)");
        let node_vcpus_allocated = g(&mut registry, "node_vcpus_allocated", "vCPUs given to a node's VMs");
        let node_memory_bytes = g(&mut registry, "node_memory_bytes", "Memory a node may give out (after reservations and overcommit)");
        let node_memory_allocated_bytes = g(&mut registry, "node_memory_allocated_bytes", "Memory given to a node's VMs");
        let node_disk_bytes = g(&mut registry, "node_disk_bytes", "Capacity of a node's storage pool");
        let node_disk_allocated_bytes = g(&mut registry, "node_disk_allocated_bytes", "Root disk sizes of a node's VMs");
        let node_up = g(&mut registry, "node_up", "1 when the node answered its last capacity check");
        Metrics {
            registry,
            requests,
            request_seconds,
            operations,
            stages,
            reconciler_runs,
            reconciler_failures,
            reconciler_repairs,
            usage_records,
            vm_restarts,
            vms,
            node_vcpus,
            node_vcpus_allocated,
            node_memory_bytes,
            node_memory_allocated_bytes,
            node_disk_bytes,
            node_disk_allocated_bytes,
            node_up,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text of everything registered.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn operation(&self, op: &str, outcome: &str, seconds: f64) {
        self.operations.get_or_create(&OpLabels { op: op.into(), outcome: outcome.into() }).observe(seconds);
    }

    /// One reconciler pass, with how many repairs of each kind it made.
    pub fn reconciled(&self, repairs: &[(&'static str, usize)]) {
        self.reconciler_runs.inc();
        for (kind, n) in repairs {
            if *n > 0 {
                self.reconciler_repairs.get_or_create(&RepairLabels { kind: (*kind).into() }).inc_by(*n as u64);
            }
        }
    }
}
