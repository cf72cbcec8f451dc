//! `status`: what the daemon is and whether the hypervisor answers.

use super::{blocking, Context};
use kvmctl_libvirt::Node;
use kvmctl_types::api::{DatabaseStatus, HypervisorStatus, StatusResponse};

pub async fn status_get(ctx: &Context, _caller: &kvmctl_core::Caller) -> Result<StatusResponse, kvmctl_core::Error> {
    let schema_version = ctx.store.schema_version().await?;
    let node = ctx.local_node.clone();
    let uri = node.uri().to_owned();
    let versions = blocking(move || node.versions()).await?;
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
        database: DatabaseStatus { path: ctx.store.path().display().to_string(), schema_version },
        hypervisor,
        uptime_seconds: ctx.started.elapsed().as_secs(),
    })
}
