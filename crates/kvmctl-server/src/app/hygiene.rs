//! Lifecycle hygiene, once a minute by the daemon's clock: ephemeral VMs (`--ttl`) are
//! deleted when they expire; with `stopped_vm_cleanup_hours`, VMs stopped that long are
//! deleted after a `vm.cleanup_warning` event to their owner; every `gc_interval_minutes`
//! a gc pass reports debris (and removes it with `gc_clean`). Each step is idempotent and
//! logged.

use super::context::Context;
use kvmctl_core::{Caller, Error, VmState};
use kvmctl_store::Scope;
use std::sync::Arc;

pub async fn pass(ctx: &Context) -> Result<(), Error> {
    let now = ctx.clock.now();
    let admin = Caller::local_admin();
    for v in ctx.store.vm_list(&Scope::all()).await? {
        let settled = matches!(v.state, VmState::Stopped | VmState::Running | VmState::Failed);
        if let Some(at) = v.expires_at.filter(|at| *at <= now) {
            if settled {
                tracing::info!(vm = %v.name, owner = %v.owner, expired_at = at, "deleting an expired VM");
                ctx.publish("vm.expired", &v.name, &v.owner, None, None, Some("its --ttl ran out; deleting it"));
                ctx.failpoints.hit("hygiene.expire").await?;
                match super::vms::vm_delete_by_id(ctx, &admin, v.name.as_str(), &v.id).await {
                    Ok(()) | Err(Error::NotFound { .. }) => {}
                    Err(e) => tracing::warn!(vm = %v.name, error = %e, "could not delete an expired VM; trying again next pass"),
                }
            }
            continue;
        }
        let cleanup = ctx.config.stopped_vm_cleanup_hours as i64 * 3600;
        if cleanup == 0 {
            continue;
        }
        let warned = ctx.store.vm_cleanup_warned_at(&v.id).await?;
        if v.state != VmState::Stopped {
            if warned.is_some() {
                ctx.store.vm_cleanup_warned(&v.id, None).await?;
            }
            continue;
        }
        let stopped_for = now - v.updated_at;
        let warn_at = cleanup - ctx.config.stopped_vm_warning_hours as i64 * 3600;
        if stopped_for >= cleanup && warned.is_some() {
            tracing::info!(vm = %v.name, owner = %v.owner, stopped_for, "deleting a VM stopped too long");
            match super::vms::vm_delete_by_id(ctx, &admin, v.name.as_str(), &v.id).await {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(vm = %v.name, error = %e, "could not delete a long-stopped VM; trying again next pass"),
            }
        } else if stopped_for >= warn_at && warned.is_none() {
            let detail = format!(
                "stopped for {} h; it is deleted after {} h stopped unless started",
                stopped_for / 3600,
                ctx.config.stopped_vm_cleanup_hours
            );
            tracing::info!(vm = %v.name, owner = %v.owner, %detail, "cleanup warning");
            ctx.publish("vm.cleanup_warning", &v.name, &v.owner, Some("stopped"), None, Some(&detail));
            ctx.store.vm_cleanup_warned(&v.id, Some(now)).await?;
        }
    }
    Ok(())
}

/// Runs `pass` every minute and gc every `gc_interval_minutes`, until aborted.
pub async fn run(ctx: Arc<Context>) {
    let mut next_gc = ctx.clock.now() + ctx.config.gc_interval_minutes as i64 * 60;
    loop {
        // The next pass is a minute after this one began: when the clock moves on during a
        // pass (a jump, or a test's clock), the next pass is not pushed back by it.
        let began = ctx.clock.now();
        // Another daemon on the database does it (ADR 0017).
        if !ctx.lead().await {
            ctx.clock.sleep_until(began + 60).await;
            continue;
        }
        if let Err(e) = pass(&ctx).await {
            tracing::warn!(error = %e, "hygiene pass failed; trying again in a minute");
        }
        if ctx.config.gc_interval_minutes > 0 && ctx.clock.now() >= next_gc {
            next_gc = ctx.clock.now() + ctx.config.gc_interval_minutes as i64 * 60;
            match super::gc::gc(&ctx, &Caller::local_admin(), ctx.config.gc_clean).await {
                Ok(r) if !r.items.is_empty() => {
                    tracing::warn!(
                        items = r.items.len(),
                        removed = r.items.iter().filter(|i| i.removed).count(),
                        "gc found debris (kvmctl gc --dry-run lists it)"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "gc pass failed"),
            }
        }
        ctx.clock.sleep_until(began + 60).await;
    }
}
