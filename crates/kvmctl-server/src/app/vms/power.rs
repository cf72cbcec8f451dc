//! Start, stop and reboot: one libvirt call each, settled into the VM's state.

use super::*;

/// Moves a VM by a request event, by compare-and-set; the refusal names the state.
pub(super) async fn vm_begin(ctx: &Context, rec: &VmRecord, event: VmEvent) -> Result<VmState, Error> {
    let next = rec.state.apply(event).map_err(|e| Error::Conflict(format!("VM {}: {e}", rec.name)))?;
    if !ctx.vm_transition(&rec.name, rec.state, next, None).await? {
        return Err(Error::Conflict(format!("VM {} changed state meanwhile; look again (kvmctl vm show {})", rec.name, rec.name)));
    }
    Ok(next)
}

pub async fn vm_start(ctx: &Context, caller: &Caller, name: &str) -> Result<Vm, Error> {
    vm_boot(ctx, caller, name, "starting", VmEvent::Start).await
}

/// Start and reboot: one libvirt call that begins a new boot, whose readiness is watched.
pub(super) async fn vm_boot(ctx: &Context, caller: &Caller, name: &str, busy: &'static str, event: VmEvent) -> Result<Vm, Error> {
    let name = parse_name("name", name)?;
    vm_record(ctx, &Scope::of(caller), &name).await?;
    let _busy = ctx.vm_lock(&name, busy).await?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    let during = vm_begin(ctx, &rec, event).await?;
    let node = ctx.node_conn(&rec.node).await?;
    let called = match event {
        VmEvent::Reboot => node.domain_reboot(name.as_str()).await,
        _ => node.domain_start(name.as_str()).await,
    };
    let result = called.map_err(Error::from);
    let result = match result {
        Ok(()) => {
            ctx.store.vm_run_wanted_set(&rec.id, true).await?;
            readiness::boot_started(ctx, &rec).await?;
            ctx.failpoints.hit("start.booted").await?;
            vmnet::rules_apply(ctx, &rec).await
        }
        Err(e) => Err(e),
    };
    settle(ctx, &rec.node, &name, during, result).await
}

/// Records where an operation left the VM: libvirt's state on success, the previous
/// settled state (with the error) on failure.
pub(super) async fn settle(ctx: &Context, node: &str, name: &Name, during: VmState, result: Result<(), Error>) -> Result<Vm, Error> {
    let observed = observe(ctx, node, name).await;
    let after = match (&result, observed) {
        (_, Some(s)) => s,
        (Ok(()), None) => VmState::Failed,
        (Err(_), None) => VmState::Failed,
    };
    let msg = result.as_ref().err().map(ToString::to_string);
    ctx.vm_transition(name, during, after, msg.as_deref()).await?;
    result?;
    vm_out(ctx, vm_record(ctx, &Scope::all(), name).await?).await
}

/// libvirt's state of the VM's domain, as a VM state; `None` when there is no domain.
pub(super) async fn observe(ctx: &Context, node: &str, name: &Name) -> Option<VmState> {
    let node = ctx.node_conn(node).await.ok()?;
    node.domain_state(name.as_str()).await.ok().map(vm_state_of)
}

pub async fn vm_stop(ctx: &Context, caller: &Caller, name: &str, req: VmStopRequest) -> Result<Vm, Error> {
    let name = parse_name("name", name)?;
    vm_record(ctx, &Scope::of(caller), &name).await?;
    if let Some(t) = req.timeout_seconds.filter(|t| *t > 3600) {
        return Err(Error::invalid("timeout_seconds", format!("{t} is out of range; use 0 to 3600")));
    }
    let timeout = Duration::from_secs(req.timeout_seconds.unwrap_or(ctx.config.stop_timeout_seconds));
    let _busy = ctx.vm_lock(&name, "stopping").await?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    let during = vm_begin(ctx, &rec, VmEvent::Stop).await?;
    // Stopped by its owner: it stays stopped through host and libvirtd restarts.
    ctx.store.vm_run_wanted_set(&rec.id, false).await?;
    let node = ctx.node_conn(&rec.node).await?;
    let n = name.to_string();
    let result = node
        .run(move |node| -> Result<(), NodeError> {
            if !req.force {
                node.domain_shutdown(&n)?;
                let until = Instant::now() + timeout;
                while Instant::now() < until {
                    if node.domain_state(&n)? == DomainState::Shutoff {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                tracing::warn!(vm = %n, timeout_s = timeout.as_secs(), "guest did not shut down in time; powering it off");
            }
            node.domain_destroy(&n)
        })
        .await
        .map_err(Error::from);
    let result = match result {
        Ok(()) => vmnet::rules_remove(ctx, &rec).await,
        Err(e) => Err(e),
    };
    settle(ctx, &rec.node, &name, during, result).await
}

pub async fn vm_reboot(ctx: &Context, caller: &Caller, name: &str) -> Result<Vm, Error> {
    vm_boot(ctx, caller, name, "rebooting", VmEvent::Reboot).await
}
