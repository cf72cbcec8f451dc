//! Hourly usage metering. Once an hour is over (by the daemon's `Clock`), every VM that
//! existed before its end gets one record for it: state, size, plan, price and cost. Hours
//! missed while the daemon was down are caught up at start; an hour and its cursor are
//! written in one transaction, and a VM-hour already recorded is never written again, so
//! each VM-hour is recorded exactly once.

use super::context::Context;
use kvmctl_core::metering::{hour_cost, hours_due, Money, HOUR};
use kvmctl_core::{Caller, Error, VmState};
use kvmctl_store::{Scope, UsageRecord};
use kvmctl_types::api;
use std::collections::HashMap;

/// Most hours one pass writes (a week): a long outage is caught up over several passes.
const MAX_HOURS_PER_PASS: usize = 24 * 7;

/// Whether an hour in this state is billed at the running price.
fn running(state: VmState) -> bool {
    matches!(state, VmState::Running | VmState::Starting | VmState::Stopping | VmState::Rebooting)
}

/// The hourly price of a VM: its plan's, or the per-unit prices for a custom size.
fn price_of(ctx: &Context, vm: &kvmctl_store::VmRecord, plans: &HashMap<String, Money>) -> Money {
    if let Some(p) = vm.plan.as_ref().and_then(|p| plans.get(p)) {
        return *p;
    }
    let unit = |s: &str| Money::parse(s).unwrap_or_default().0 as i128;
    let micros = vm.vcpus as i128 * unit(&ctx.config.price_vcpu_hourly)
        + vm.memory_mib as i128 * unit(&ctx.config.price_memory_gib_hourly) / 1024
        + vm.disk_gib as i128 * unit(&ctx.config.price_disk_gib_hourly);
    Money(micros.min(i64::MAX as i128) as i64)
}

/// Meters every hour that is over and not yet metered; returns the records written.
pub async fn meter_pass(ctx: &Context) -> Result<u64, Error> {
    let mut written = 0;
    loop {
        let due = hours_due(ctx.store.meter_cursor().await?, ctx.clock.now(), MAX_HOURS_PER_PASS);
        if due.is_empty() {
            return Ok(written);
        }
        let vms = ctx.store.vm_list(&Scope::all()).await?;
        let plans: HashMap<String, Money> =
            ctx.store.plan_list(true).await?.into_iter().map(|p| (p.name, Money::parse(&p.price_hourly).unwrap_or_default())).collect();
        for hour in due {
            let records: Vec<UsageRecord> = vms
                .iter()
                .filter(|v| v.created_at < hour + HOUR && !matches!(v.state, VmState::Deleted | VmState::Creating))
                .map(|v| {
                    let price = price_of(ctx, v, &plans);
                    let cost = hour_cost(price, running(v.state), ctx.config.stopped_price_percent);
                    UsageRecord {
                        vm_id: v.id.to_string(),
                        hour,
                        vm_name: v.name.to_string(),
                        owner: v.owner.clone(),
                        node: v.node.clone(),
                        state: v.state.as_str().to_owned(),
                        vcpus: v.vcpus.into(),
                        memory_mib: v.memory_mib,
                        disk_gib: v.disk_gib,
                        plan: v.plan.clone(),
                        price_hourly: price.to_string(),
                        cost: cost.to_string(),
                        cost_micros: cost.0,
                        currency: ctx.config.currency.clone(),
                        recorded_at: 0,
                    }
                })
                .collect();
            let added = ctx.store.meter_hour(hour, &records).await?;
            ctx.metrics.usage_records.inc_by(added);
            tracing::info!(hour = %kvmctl_core::metering::utc(hour), vms = records.len(), added, "metered an hour");
            written += added;
        }
    }
}

/// Runs `meter_pass` at start and after every hour boundary, until the task is aborted.
pub async fn run(ctx: std::sync::Arc<Context>) {
    loop {
        // Another daemon on the database meters (ADR 0017); this one asks again in a minute.
        if !ctx.lead().await {
            let t = ctx.clock.now() + 60;
            ctx.clock.sleep_until(t).await;
            continue;
        }
        if let Err(e) = meter_pass(&ctx).await {
            tracing::warn!(error = %e, "metering pass failed; retrying in a minute");
            let t = ctx.clock.now() + 60;
            ctx.clock.sleep_until(t).await;
            continue;
        }
        let next = kvmctl_core::metering::hour_of(ctx.clock.now()) + HOUR;
        ctx.clock.sleep_until(next).await;
    }
}

/// Usage records: a user's own, or (admins) anyone's or one user's; hours in `[from, to)`.
pub async fn usage_list(
    ctx: &Context,
    caller: &Caller,
    user: Option<&str>,
    from: Option<i64>,
    to: Option<i64>,
) -> Result<Vec<api::UsageRecord>, Error> {
    let owner = match (caller.owner_scope(), user) {
        (None, u) => u,
        (Some(me), None) => Some(me),
        (Some(me), Some(u)) if u == me => Some(me),
        (Some(_), Some(_)) => return Err(Error::Forbidden("another user's usage is for admins".into())),
    };
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(Error::invalid("from", "from must be before to"));
        }
    }
    let rows = ctx.store.usage_list(owner, from, to).await?;
    Ok(rows
        .into_iter()
        .map(|r| api::UsageRecord {
            vm: r.vm_name,
            vm_id: r.vm_id,
            owner: r.owner,
            node: r.node,
            hour: r.hour,
            hour_utc: kvmctl_core::metering::utc(r.hour),
            state: r.state,
            vcpus: r.vcpus,
            memory_mib: r.memory_mib,
            disk_gib: r.disk_gib,
            plan: r.plan,
            price_hourly: r.price_hourly,
            cost: r.cost,
            currency: r.currency,
        })
        .collect())
}
