//! Resize: CPU, memory and disk, admitted against quota and capacity first.

use super::*;

/// CPU and memory change while the VM is stopped (the domain is redefined); the disk grows
/// online (block resize) or offline (volume resize). Shrinking is refused.
///
/// A new size is a new claim on the owner's quota and the node's capacity: it is admitted by
/// the same one-statement check as create (`vm_resize_admit`) before anything on the node
/// changes, and a user without `custom_sizing` may only move to a plan's size.
pub async fn vm_resize(ctx: &Context, caller: &Caller, name: &str, req: VmResizeRequest) -> Result<Vm, Error> {
    let name = parse_name("name", name)?;
    // Whether the caller may see the VM comes before anything about the request.
    vm_record(ctx, &Scope::of(caller), &name).await?;
    let custom = req.vcpus.is_some() || req.memory_mib.is_some() || req.disk_gib.is_some();
    if !caller.custom_sizing && custom {
        return Err(Error::Forbidden(format!(
            "user {} may not size VMs with vcpus, memory_mib or disk_gib; resize to a plan instead (kvmctl vm resize {name} --plan P; kvmctl plan list)",
            caller.name
        )));
    }
    let plan = match &req.plan {
        Some(p) if custom => {
            return Err(Error::invalid("plan", format!("give either a plan ({p}) or sizes (vcpus, memory_mib, disk_gib), not both")))
        }
        Some(p) => Some(plan_active(ctx, p).await?),
        None => None,
    };
    let (want_vcpus, want_memory, want_disk) = match &plan {
        Some(p) => (Some(p.vcpus), Some(p.memory_mib), Some(p.disk_gib)),
        None => (req.vcpus, req.memory_mib, req.disk_gib),
    };
    size_check(want_vcpus, want_memory, want_disk)?;
    if want_vcpus.is_none() && want_memory.is_none() && want_disk.is_none() {
        return Err(Error::invalid("vcpus", "nothing to change; give a plan, or vcpus, memory_mib or disk_gib"));
    }
    let _busy = ctx.vm_lock(&name, "resizing").await?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    let cpu_mem = want_vcpus.is_some_and(|v| v != rec.vcpus) || want_memory.is_some_and(|m| m != rec.memory_mib);
    if cpu_mem && rec.state != VmState::Stopped {
        return Err(Error::Conflict(format!("VM {name} is {}; stop it to change CPUs or memory (kvmctl vm stop {name})", rec.state)));
    }
    if let Some(d) = want_disk.filter(|d| *d < rec.disk_gib) {
        let field = if plan.is_some() { "plan" } else { "disk_gib" };
        return Err(Error::invalid(field, format!("{d} GiB is smaller than the disk ({} GiB); disks only grow", rec.disk_gib)));
    }
    if !matches!(rec.state, VmState::Stopped | VmState::Running) {
        return Err(Error::Conflict(format!("VM {name} is {}; resize it when it is running or stopped", rec.state)));
    }
    let (vcpus, memory_mib, disk_gib) =
        (want_vcpus.unwrap_or(rec.vcpus), want_memory.unwrap_or(rec.memory_mib), want_disk.unwrap_or(rec.disk_gib));
    // A plan names the size; sizes given by hand leave the VM without a plan.
    let plan_name = match &plan {
        Some(p) => Some(p.name.clone()),
        None if (vcpus, memory_mib, disk_gib) == (rec.vcpus, rec.memory_mib, rec.disk_gib) => rec.plan.clone(),
        None => None,
    };
    // Admission first, in one statement: the owner's quota and the node's capacity after
    // overcommit, counting every other VM as it is now.
    let limits = crate::app::users::limits_of(ctx, &rec.owner).await?;
    let node_cap = crate::app::nodes::capacity_total(ctx, &rec.node).await?;
    let old = (rec.vcpus, rec.memory_mib, rec.disk_gib);
    if !ctx.store.vm_resize_admit(&rec.id, (vcpus, memory_mib, disk_gib), plan_name.as_deref(), limits.as_ref(), node_cap).await? {
        return Err(resize_refusal(ctx, &rec, (vcpus, memory_mib, disk_gib), limits.as_ref(), node_cap).await);
    }
    let applied = async {
        if disk_gib != rec.disk_gib {
            let node = ctx.node_conn(&rec.node).await?;
            if rec.state == VmState::Running {
                node.domain_block_resize(name.as_str(), "vda", disk_gib * GIB).await?;
            } else {
                node.volume_resize(&rec.pool, &rec.root_volume, disk_gib * GIB).await?;
            }
        }
        if cpu_mem {
            domain_redefine(ctx, &VmRecord { vcpus, memory_mib, ..rec.clone() }).await?;
        }
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = applied {
        // Give the claim back: the VM keeps its old size (a disk never shrinks, so a disk
        // that did grow keeps counting at its new size).
        let grown = disk_gib != rec.disk_gib && disk_grown(ctx, &rec, disk_gib).await;
        let back = (old.0, old.1, if grown { disk_gib } else { old.2 });
        ctx.store.vm_resize_admit(&rec.id, back, rec.plan.as_deref(), None, None).await?;
        return Err(e);
    }
    tracing::info!(vm = %name, vcpus, memory_mib, disk_gib, plan = ?plan_name, "VM resized");
    vm_out(ctx, vm_record(ctx, &Scope::all(), &name).await?).await
}

/// Whether the VM's root volume reached `disk_gib` (a failed resize may have grown it).
pub(super) async fn disk_grown(ctx: &Context, rec: &VmRecord, disk_gib: u64) -> bool {
    let Ok(node) = ctx.node_conn(&rec.node).await else { return true };
    match node.volume_get(&rec.pool, &rec.root_volume).await {
        Ok(Some(v)) => v.capacity_bytes >= disk_gib * GIB,
        _ => true,
    }
}

/// Why a resize was not admitted: the owner's quota (named like create's refusal), or the
/// node's room.
pub(super) async fn resize_refusal(
    ctx: &Context,
    rec: &VmRecord,
    size: (u32, u64, u64),
    limits: Option<&kvmctl_core::QuotaLimits>,
    node_cap: Option<(u64, u64, u64)>,
) -> Error {
    let extra = kvmctl_core::Usage {
        vms: 0,
        vcpus: u64::from(size.0).saturating_sub(rec.vcpus.into()),
        memory_mib: size.1.saturating_sub(rec.memory_mib),
        disk_gib: size.2.saturating_sub(rec.disk_gib),
        forwards: 0,
    };
    if let Some(e) = crate::app::users::quota_refusal_if_over(ctx, &rec.owner, limits, &extra).await {
        return e;
    }
    let room = node_cap.map(|(c, m, d)| format!(" (it gives out {c} vCPUs, {m} MiB, {d} GiB in all after overcommit)")).unwrap_or_default();
    Error::InsufficientCapacity {
        reasons: vec![format!(
            "node {} has no room for {} at {} vCPUs, {} MiB, {} GiB{room}; pick a smaller size, or stop or shrink other VMs there",
            rec.node, rec.name, size.0, size.1, size.2
        )],
    }
}
