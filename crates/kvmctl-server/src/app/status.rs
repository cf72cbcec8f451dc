//! `status`: what the daemon is and whether the hypervisor answers.

use super::context::Context;
use kvmctl_types::api::{DatabaseStatus, HypervisorStatus, StatusResponse};

pub async fn status_get(ctx: &Context, caller: &kvmctl_core::Caller) -> Result<StatusResponse, kvmctl_core::Error> {
    let schema_version = ctx.store.schema_version().await?;
    let uri = ctx.local_node.uri().to_owned();
    let versions = ctx.local_node.versions().await;
    let (domain_type, domain_type_source) = super::host::domain_type(ctx).await;
    let hypervisor = match versions {
        Ok(v) => HypervisorStatus {
            uri,
            reachable: true,
            libvirt_version: Some(v.libvirt),
            hypervisor_version: Some(v.hypervisor),
            driver: Some(v.driver),
            hostname: Some(v.hostname),
            error: None,
            domain_type,
            domain_type_source,
        },
        Err(e) => {
            let message = kvmctl_core::error::chain(&e);
            tracing::warn!(error = %message, "libvirt unreachable");
            HypervisorStatus {
                uri,
                reachable: false,
                libvirt_version: None,
                hypervisor_version: None,
                driver: None,
                hostname: None,
                error: Some(message),
                domain_type,
                domain_type_source,
            }
        }
    };
    Ok(StatusResponse {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        database: DatabaseStatus {
            engine: ctx.store.engine().as_str().into(),
            // Where the database is (a server and its user, on PostgreSQL) is the admins'.
            path: if caller.is_admin() { ctx.store.location().display() } else { String::new() },
            schema_version,
            leader: ctx.is_leader().await,
        },
        hypervisor,
        uptime_seconds: ctx.started.elapsed().as_secs(),
    })
}

/// The metrics text, with the database-derived gauges recomputed now (admins).
pub async fn metrics_text(ctx: &Context, caller: &kvmctl_core::Caller) -> Result<String, kvmctl_core::Error> {
    caller.require_admin("reading metrics")?;
    let m = &ctx.metrics;
    let vms = ctx.store.vm_list(&kvmctl_store::Scope::all()).await?;
    let mut counts: std::collections::BTreeMap<(String, String), i64> = Default::default();
    for v in &vms {
        *counts.entry((v.state.as_str().to_owned(), v.node.clone())).or_default() += 1;
    }
    m.vms.clear();
    for ((state, node), n) in counts {
        m.vms.get_or_create(&crate::metrics::VmLabels { state, node }).set(n);
    }
    for f in [
        &m.node_vcpus,
        &m.node_vcpus_allocated,
        &m.node_memory_bytes,
        &m.node_memory_allocated_bytes,
        &m.node_disk_bytes,
        &m.node_disk_allocated_bytes,
        &m.node_up,
    ] {
        f.clear();
    }
    const MIB: i64 = 1 << 20;
    const GIB: i64 = 1 << 30;
    for (r, c, a) in super::nodes::capacities(ctx).await? {
        let l = crate::metrics::NodeLabels { node: r.name.to_string() };
        m.node_vcpus.get_or_create(&l).set(c.vcpu_capacity() as i64);
        m.node_vcpus_allocated.get_or_create(&l).set(a.vcpus as i64);
        m.node_memory_bytes.get_or_create(&l).set(c.memory_capacity_mib() as i64 * MIB);
        m.node_memory_allocated_bytes.get_or_create(&l).set(a.memory_mib as i64 * MIB);
        m.node_disk_bytes.get_or_create(&l).set(c.disk_gib as i64 * GIB);
        m.node_disk_allocated_bytes.get_or_create(&l).set(a.disk_gib as i64 * GIB);
        m.node_up.get_or_create(&l).set(i64::from(r.error.is_none()));
    }
    Ok(m.encode())
}
