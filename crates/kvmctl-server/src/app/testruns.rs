//! Test runs (`kvmctl test run`): the daemon's hold on an ephemeral test's VMs, so that
//! nothing of a run survives its runner.
//!
//! A runner opens a run, tags every VM it makes with it (`test_run` on create and clone:
//! quota, capacity and TTL apply as to any VM), sends a heartbeat every few seconds, and
//! finishes it with its summary. The reaper (every `REAP_EVERY`, and at start-up) abandons a
//! run whose runner has been silent for its grace period, and deletes the VMs of every run
//! that is no longer `running`, so a runner killed at any point, a crash of the daemon or a
//! VM made while its run was ending all converge on nothing left. `kvmctl test rm` ends a
//! run the same way and removes its record. Runs are their owner's: another user's run is
//! answered as absent.

use super::context::Context;
use kvmctl_core::{Caller, Error};
use kvmctl_store::{Scope, TestRunRecord};
use kvmctl_types::api::{TestRun, TestRunCreateRequest, TestRunFinishRequest};
use std::sync::Arc;
use std::time::Duration;

/// How often the reaper looks for silent runs and leftover VMs.
pub const REAP_EVERY: Duration = Duration::from_secs(3);
const GRACE_DEFAULT: u64 = 60;
const GRACE_RANGE: std::ops::RangeInclusive<u64> = 10..=3600;
/// The largest summary a runner may store (JSON bytes).
pub const SUMMARY_MAX: usize = 1 << 20;
const STATES_FINAL: [&str; 3] = ["passed", "failed", "error"];

fn not_found(id: &str) -> Error {
    Error::NotFound { kind: "test run", name: id.to_owned() }
}

/// Run ids are short (they name the run's VMs) and random: `r` and 10 hex digits.
fn run_id_new() -> String {
    format!("r{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

fn id_check(id: &str) -> Result<(), Error> {
    let ok = id.len() == 11 && id.starts_with('r') && id[1..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("test_run", format!("{id:?} is not a test run id (r and 10 hex digits, as `kvmctl test list` shows)")))
    }
}

async fn view(ctx: &Context, r: TestRunRecord) -> Result<TestRun, Error> {
    let vms = ctx.store.vm_list_of_run(&r.id).await?.into_iter().map(|(n, _)| n.to_string()).collect();
    Ok(view_with(r, vms))
}

fn view_with(r: TestRunRecord, vms: Vec<String>) -> TestRun {
    TestRun {
        summary: r.summary.as_deref().and_then(|s| serde_json::from_str(s).ok()),
        id: r.id,
        name: r.name,
        owner: r.owner,
        state: r.state,
        grace_seconds: r.grace_seconds.max(0) as u64,
        created_at: r.created_at,
        heartbeat_at: r.heartbeat_at,
        finished_at: r.finished_at,
        vms,
    }
}

async fn record(ctx: &Context, caller: &Caller, id: &str) -> Result<TestRunRecord, Error> {
    id_check(id)?;
    ctx.store.test_run_get(&Scope::of(caller), id).await?.ok_or_else(|| not_found(id))
}

/// The run `id` of the caller, still `running` (what a VM joining it needs).
pub(crate) async fn run_open(ctx: &Context, caller: &Caller, id: &str) -> Result<(), Error> {
    let r = record(ctx, caller, id).await.map_err(|e| match e {
        Error::NotFound { .. } => Error::invalid("test_run", format!("there is no test run {id}; open one with POST /v1/test-runs")),
        e => e,
    })?;
    if r.state != "running" {
        return Err(Error::invalid("test_run", format!("test run {id} has ended ({}); VMs cannot join it", r.state)));
    }
    Ok(())
}

pub async fn test_run_create(ctx: &Context, caller: &Caller, req: TestRunCreateRequest) -> Result<TestRun, Error> {
    let name = super::parse_name("name", &req.name)?;
    let grace = req.grace_seconds.unwrap_or(GRACE_DEFAULT);
    if !GRACE_RANGE.contains(&grace) {
        return Err(Error::invalid("grace_seconds", format!("{grace} is outside 10 to 3600 seconds")));
    }
    let now = ctx.clock.now();
    let r = TestRunRecord {
        id: run_id_new(),
        owner: caller.name.clone(),
        name: name.to_string(),
        state: "running".into(),
        grace_seconds: grace as i64,
        heartbeat_at: now,
        created_at: now,
        finished_at: None,
        summary: None,
    };
    ctx.store.test_run_insert(&r).await?;
    tracing::info!(run = %r.id, owner = %r.owner, name = %r.name, grace, "test run opened");
    view(ctx, r).await
}

pub async fn test_run_get(ctx: &Context, caller: &Caller, id: &str) -> Result<TestRun, Error> {
    view(ctx, record(ctx, caller, id).await?).await
}

pub async fn test_run_list(ctx: &Context, caller: &Caller) -> Result<Vec<TestRun>, Error> {
    let scope = Scope::of(caller);
    let mut vms = ctx.store.vm_names_by_run(&scope).await?;
    let runs = ctx.store.test_run_list(&scope).await?;
    Ok(runs
        .into_iter()
        .map(|r| {
            let v = vms.remove(&r.id).unwrap_or_default().into_iter().map(|n| n.to_string()).collect();
            view_with(r, v)
        })
        .collect())
}

/// The runner is alive. A run that has ended (abandoned by the reaper) answers a conflict:
/// its VMs are gone or going, and the runner must stop.
pub async fn test_run_heartbeat(ctx: &Context, caller: &Caller, id: &str) -> Result<TestRun, Error> {
    let r = record(ctx, caller, id).await?;
    if !ctx.store.test_run_heartbeat(&r.id, ctx.clock.now()).await? {
        return Err(Error::Conflict(format!(
            "test run {id} has ended ({}); its VMs are deleted; start a new run",
            ctx.store.test_run_get(&Scope::all(), id).await?.map(|r| r.state).unwrap_or_else(|| "removed".into())
        )));
    }
    view(ctx, record(ctx, caller, id).await?).await
}

/// The runner's result: the run ends in `state` with its summary; its VMs but the kept ones
/// are deleted (kept ones leave the run and live on until their TTL).
pub async fn test_run_finish(ctx: &Context, caller: &Caller, id: &str, req: TestRunFinishRequest) -> Result<TestRun, Error> {
    let r = record(ctx, caller, id).await?;
    if !STATES_FINAL.contains(&req.state.as_str()) {
        return Err(Error::invalid("state", format!("{:?} is not passed, failed or error", req.state)));
    }
    let summary = serde_json::to_string(&req.summary).map_err(|e| Error::invalid("summary", e.to_string()))?;
    if summary.len() > SUMMARY_MAX {
        return Err(Error::invalid("summary", format!("{} bytes is more than the {SUMMARY_MAX} a run keeps", summary.len())));
    }
    let vms = ctx.store.vm_list_of_run(&r.id).await?;
    for k in &req.keep {
        if !vms.iter().any(|(n, _)| n.as_str() == k) {
            return Err(Error::invalid("keep", format!("{k} is not a VM of test run {id}")));
        }
    }
    if r.state != "running" {
        return Err(Error::Conflict(format!("test run {id} has ended already ({})", r.state)));
    }
    for (n, vm) in &vms {
        if req.keep.iter().any(|k| k == n.as_str()) {
            ctx.store.vm_test_run_set(vm, None).await?;
        }
    }
    if !ctx.store.test_run_finish(&r.id, &req.state, Some(&summary)).await? {
        return Err(Error::Conflict(format!("test run {id} ended while its result came in")));
    }
    tracing::info!(run = %r.id, state = %req.state, kept = req.keep.len(), "test run finished");
    vms_delete(ctx, &r.id).await;
    view(ctx, record(ctx, caller, id).await?).await
}

/// Ends the run if it runs (abandoned), deletes its VMs and then its record.
pub async fn test_run_delete(ctx: &Context, caller: &Caller, id: &str) -> Result<(), Error> {
    let r = record(ctx, caller, id).await?;
    ctx.store.test_run_finish(&r.id, "abandoned", None).await?;
    if let Some(e) = vms_delete(ctx, &r.id).await {
        return Err(e);
    }
    ctx.store.test_run_delete(&r.id).await?;
    tracing::info!(run = %r.id, "test run removed");
    Ok(())
}

/// Deletes the VMs of run `id`; the first error, if any (the others are logged and the
/// reaper tries again).
async fn vms_delete(ctx: &Context, id: &str) -> Option<Error> {
    let admin = Caller::local_admin();
    let mut first = None;
    let vms = match ctx.store.vm_list_of_run(id).await {
        Ok(v) => v,
        Err(e) => return Some(e.into()),
    };
    for (name, vm) in vms {
        match super::vms::vm_delete_by_id(ctx, &admin, name.as_str(), &vm).await {
            Ok(()) | Err(Error::NotFound { .. }) => tracing::info!(run = id, vm = %name, "test VM deleted"),
            Err(e) => {
                tracing::warn!(run = id, vm = %name, error = %e, "cannot delete a test VM yet; the reaper tries again");
                first.get_or_insert(e);
            }
        }
    }
    first
}

/// One reaper pass: silent runs are abandoned, and the VMs of every ended run deleted.
pub async fn reap(ctx: &Context) -> Result<(), Error> {
    for r in ctx.store.test_run_silent(ctx.clock.now()).await? {
        if ctx.store.test_run_finish(&r.id, "abandoned", None).await? {
            tracing::warn!(run = %r.id, owner = %r.owner, grace = r.grace_seconds, "test run abandoned: its runner went silent");
            if let Ok(name) = super::parse_name("name", &r.name) {
                ctx.publish("test_run.abandoned", &name, &r.owner, None, None, Some(&format!("run {}: its runner went silent", r.id)));
            }
        }
    }
    for run in ctx.store.test_run_tags_ended().await? {
        vms_delete(ctx, &run).await;
    }
    Ok(())
}

pub async fn run(ctx: Arc<Context>) {
    loop {
        // Another daemon on the database reaps (ADR 0017).
        if !ctx.lead().await {
            tokio::time::sleep(REAP_EVERY).await;
            continue;
        }
        if let Err(e) = reap(&ctx).await {
            tracing::warn!(error = %e, "test run reaper pass failed; trying again");
        }
        tokio::time::sleep(REAP_EVERY).await;
    }
}
