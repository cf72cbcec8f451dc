//! `plans`: the named sizes VMs are created with.

use super::Context;
use kvmctl_core::Error;
use kvmctl_types::api::Plan;

pub async fn plan_list(ctx: &Context) -> Result<Vec<Plan>, Error> {
    Ok(ctx
        .store
        .plan_list()
        .await?
        .into_iter()
        .map(|p| Plan { name: p.name, vcpus: p.vcpus, memory_mib: p.memory_mib, disk_gib: p.disk_gib })
        .collect())
}
