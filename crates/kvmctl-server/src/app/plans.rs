//! `plans`: the named sizes VMs are created with, and their hourly prices. Admins create,
//! change and retire them; a retired plan keeps its VMs.

use super::context::{parse_name, Context};
use kvmctl_core::{Caller, Error};
use kvmctl_store::PlanRecord;
use kvmctl_types::api::{Plan, PlanCreateRequest, PlanUpdateRequest};

fn plan_view(ctx: &Context, p: PlanRecord) -> Plan {
    Plan {
        name: p.name,
        vcpus: p.vcpus,
        memory_mib: p.memory_mib,
        disk_gib: p.disk_gib,
        price_hourly: p.price_hourly,
        currency: ctx.config.currency.clone(),
        sort_order: p.sort_order,
        active: p.active,
    }
}

/// A price as an exact decimal string: digits, optionally a point and up to 6 decimals.
pub(crate) fn price_check(field: &str, price: &str) -> Result<String, Error> {
    let bad = || Error::invalid(field, format!("{price:?} is not a price; write a decimal such as 0.0125 (at most 6 decimals)"));
    let (int, frac) = price.split_once('.').unwrap_or((price, ""));
    if int.is_empty()
        || int.len() > 9
        || !int.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 6
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    if price.ends_with('.') {
        return Err(bad());
    }
    Ok(price.to_owned())
}

pub async fn plan_list(ctx: &Context, caller: &Caller) -> Result<Vec<Plan>, Error> {
    Ok(ctx.store.plan_list(caller.is_admin()).await?.into_iter().map(|p| plan_view(ctx, p)).collect())
}

pub async fn plan_get(ctx: &Context, caller: &Caller, name: &str) -> Result<Plan, Error> {
    match ctx.store.plan_get(name).await? {
        Some(p) if p.active || caller.is_admin() => Ok(plan_view(ctx, p)),
        _ => Err(Error::NotFound { kind: "plan", name: name.to_owned() }),
    }
}

pub async fn plan_create(ctx: &Context, caller: &Caller, req: PlanCreateRequest) -> Result<Plan, Error> {
    caller.require_admin("creating plans")?;
    let name = parse_name("name", &req.name)?.to_string();
    kvmctl_core::rules::size_check(Some(req.vcpus), Some(req.memory_mib), Some(req.disk_gib))?;
    let rec = PlanRecord {
        name: name.clone(),
        vcpus: req.vcpus,
        memory_mib: req.memory_mib,
        disk_gib: req.disk_gib,
        price_hourly: price_check("price_hourly", &req.price_hourly)?,
        sort_order: req.sort_order.unwrap_or(i64::from(req.vcpus) * 100_000 + req.memory_mib as i64),
        active: true,
    };
    ctx.store.plan_insert(&rec).await.map_err(|e| match e {
        kvmctl_store::StoreError::Exists { .. } => Error::Conflict(format!("a plan named {name} exists already")),
        e => e.into(),
    })?;
    tracing::info!(plan = %name, by = %caller.name, "plan created");
    plan_get(ctx, caller, &name).await
}

pub async fn plan_update(ctx: &Context, caller: &Caller, name: &str, req: PlanUpdateRequest) -> Result<Plan, Error> {
    caller.require_admin("changing plans")?;
    let cur = ctx.store.plan_get(name).await?.ok_or_else(|| Error::NotFound { kind: "plan", name: name.to_owned() })?;
    kvmctl_core::rules::size_check(req.vcpus, req.memory_mib, req.disk_gib)?;
    let rec = PlanRecord {
        vcpus: req.vcpus.unwrap_or(cur.vcpus),
        memory_mib: req.memory_mib.unwrap_or(cur.memory_mib),
        disk_gib: req.disk_gib.unwrap_or(cur.disk_gib),
        price_hourly: match &req.price_hourly {
            Some(p) => price_check("price_hourly", p)?,
            None => cur.price_hourly.clone(),
        },
        sort_order: req.sort_order.unwrap_or(cur.sort_order),
        active: req.active.unwrap_or(cur.active),
        name: cur.name.clone(),
    };
    ctx.store.plan_update(&rec).await?;
    tracing::info!(plan = %rec.name, by = %caller.name, ?req, "plan changed");
    plan_get(ctx, caller, &rec.name).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn prices_are_exact_decimals() {
        for ok in ["0", "0.0125", "12", "999999999.999999"] {
            assert_eq!(super::price_check("p", ok).unwrap(), ok);
        }
        for bad in ["", "-1", "1.", ".5", "1e3", "0.1234567", "1,5", "NaN", "1234567890"] {
            assert!(super::price_check("p", bad).is_err(), "{bad}");
        }
    }
}
