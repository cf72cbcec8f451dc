//! Guest access: waiting for readiness stages, SSH login (with host-key pinning), exec,
//! shell and the serial console.

use super::*;

/// The stage a `wait` asks for: `running`, `ssh` or `cloud-init`.
pub(super) fn wait_stage(what: &str) -> Result<&'static str, Error> {
    match what {
        "running" => Ok("started"),
        "ssh" => Ok("ssh_login"),
        "cloud-init" => Ok("cloud_init"),
        other => Err(Error::invalid("for", format!("{other:?} is not a stage to wait for; use running, ssh or cloud-init"))),
    }
}

/// Blocks until the VM's current boot reaches the stage, and returns the VM with its stages.
/// A timeout says the last stage reached and shows the end of the console log.
pub async fn vm_wait(ctx: &Context, caller: &Caller, name: &str, what: &str, timeout: Duration) -> Result<Vm, Error> {
    let name = parse_name("name", name)?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    let stage = wait_stage(what)?;
    if !(1..=3600).contains(&timeout.as_secs()) {
        return Err(Error::invalid("timeout_seconds", format!("{} is out of range; use 1 to 3600", timeout.as_secs())));
    }
    if stage == "cloud_init" {
        let image = images::image_record(ctx, &rec.image).await?;
        if !image.cloud_init {
            return Err(Error::invalid("for", format!("image {} does not run cloud-init; wait for ssh", image.name)));
        }
    }
    let until = Instant::now() + timeout;
    // Woken by the VM's stage and state events, not by polling; a lagged or quiet stream
    // still looks again every second.
    let mut events = ctx.events.subscribe();
    loop {
        let rec = vm_record(ctx, &Scope::all(), &name).await?;
        let stages = readiness::stages(ctx, &rec.id).await?;
        if stages.iter().any(|s| s.stage == stage) {
            return vm_get(ctx, caller, name.as_str()).await;
        }
        if matches!(rec.state, VmState::Stopped | VmState::Failed | VmState::Deleting) {
            return Err(Error::Conflict(format!("VM {name} is {}; start it first (kvmctl vm start {name})", rec.state)));
        }
        if Instant::now() >= until {
            let last = stages
                .last()
                .map(|s| format!("{} after {:.1} s", s.stage, s.elapsed_ms.unwrap_or(0) as f64 / 1000.0))
                .unwrap_or_else(|| "none".into());
            let console = console_tail(&console_log(ctx, &name)).unwrap_or_default();
            let tail: Vec<&str> = console.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect();
            return Err(Error::Unavailable(format!(
                "VM {name} did not reach {what} within {} s; last stage reached: {last}; console (last lines):\n{}",
                timeout.as_secs(),
                tail.join("\n")
            )));
        }
        let left = until.saturating_duration_since(Instant::now()).min(Duration::from_secs(1));
        let _ = tokio::time::timeout(left, async {
            loop {
                match events.recv().await {
                    Ok(e) if e.vm == name.as_str() => break,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep(left).await;
                        break;
                    }
                }
            }
        })
        .await;
    }
}

/// Logs in to a running VM over SSH with its key; errors name the last stage reached.
pub(crate) async fn vm_login(ctx: &Context, caller: &Caller, name: &Name) -> Result<ssh::Session, Error> {
    let rec = vm_record(ctx, &Scope::of(caller), name).await?;
    if rec.state != VmState::Running {
        return Err(Error::Conflict(format!("VM {name} is {}; start it first (kvmctl vm start {name})", rec.state)));
    }
    let stages = readiness::stages(ctx, &rec.id).await?;
    let last = stages.last().map(|s| s.stage.clone()).unwrap_or_else(|| "none".into());
    let vm = with_addresses(ctx, vec![vm_view(rec.clone())]).await.remove(0);
    let Some(ip) = vm.ip.as_deref().and_then(|i| i.parse::<std::net::IpAddr>().ok()) else {
        return Err(Error::Conflict(format!(
            "VM {name} has no address yet (last stage reached: {last}); try `kvmctl vm wait {name} --for ssh`"
        )));
    };
    let guard = ctx.session_open(&rec.id, name, &caller.name)?;
    let session = ssh_session(ctx, &rec, ip)
        .await
        .map_err(|e| Error::Conflict(format!("{e} (last stage reached: {last}); try `kvmctl vm wait {name} --for ssh`")))?;
    Ok(session.hold(guard))
}

/// Runs one command in the guest over SSH, as the VM's user with the VM's key.
pub async fn vm_exec(
    ctx: &Context,
    caller: &Caller,
    name: &str,
    req: kvmctl_types::api::VmExecRequest,
) -> Result<kvmctl_types::api::VmExecResponse, Error> {
    let name = parse_name("name", name)?;
    vm_record(ctx, &Scope::of(caller), &name).await?;
    if req.command.trim().is_empty() {
        return Err(Error::invalid("command", "is empty"));
    }
    if let Some(t) = req.timeout_seconds.filter(|t| !(1..=86_400).contains(t)) {
        return Err(Error::invalid("timeout_seconds", format!("{t} is out of range; use 1 to 86400")));
    }
    let timeout = Duration::from_secs(req.timeout_seconds.unwrap_or(300));
    let limit = usize::try_from(ctx.config.exec_output_max_bytes).unwrap_or(usize::MAX);
    let run = async {
        let session = vm_login(ctx, caller, &name).await?;
        let out =
            session.exec(&req.command, limit).await.map_err(|e| Error::Unavailable(format!("running the command on {name} failed: {e}")));
        session.close().await;
        out
    };
    let out = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| Error::Unavailable(format!("the command on {name} did not finish within {} s", timeout.as_secs())))??;
    if out.truncated {
        tracing::info!(vm = %name, limit, "exec output cut off at the limit");
    }
    Ok(kvmctl_types::api::VmExecResponse {
        exit_status: out.exit_status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        truncated: out.truncated,
    })
}

/// The VM's serial console, for a live session: the VM must be running.
pub async fn vm_console_open(
    ctx: &Context,
    caller: &Caller,
    name: &str,
) -> Result<(Box<dyn kvmctl_libvirt::Console>, crate::app::context::SessionGuard), Error> {
    let name = parse_name("name", name)?;
    console_open(ctx, caller, &vm_record(ctx, &Scope::of(caller), &name).await?).await
}

/// `vm_console_open` for a VM record the caller may see.
pub(super) async fn console_open(
    ctx: &Context,
    caller: &Caller,
    rec: &VmRecord,
) -> Result<(Box<dyn kvmctl_libvirt::Console>, crate::app::context::SessionGuard), Error> {
    let name = &rec.name;
    if rec.state != VmState::Running {
        return Err(Error::Conflict(format!(
            "VM {name} is {}; start it first (kvmctl vm start {name}), or read its log with `kvmctl vm console {name} --log`",
            rec.state
        )));
    }
    let guard = ctx.session_open(&rec.id, name, &caller.name)?;
    let node = ctx.node_conn(&rec.node).await?;
    let stream = node.domain_console(name.as_str()).await.map_err(|e| match e {
        NodeError::InvalidState { .. } | NodeError::Libvirt { .. } => Error::Conflict(format!(
            "cannot open the console of {name} (is another console session open?): {}",
            kvmctl_core::error::chain(&e)
        )),
        e => e.into(),
    })?;
    Ok((stream, guard))
}

/// The last `lines` lines the VM wrote on its serial console since it last started (logged
/// by virtlogd; libvirt starts the log afresh at each start).
pub async fn vm_console_log(ctx: &Context, caller: &Caller, name: &str, lines: usize) -> Result<String, Error> {
    let name = parse_name("name", name)?;
    console_log_tail(ctx, &vm_record(ctx, &Scope::of(caller), &name).await?, lines).await
}

/// `vm_console_log` for a VM record the caller may see.
pub(super) async fn console_log_tail(ctx: &Context, rec: &VmRecord, lines: usize) -> Result<String, Error> {
    let name = &rec.name;
    let Some(text) = crate::app::guest::console_text(ctx, rec).await? else {
        return Err(Error::Conflict(format!(
            "VM {name} runs on node {node}, whose host keeps its console log ({}), and node {node} runs no agent to read it (docs/nodes.md); use the live console (kvmctl vm console {name})",
            serial_log_on_node(ctx, rec).display(),
            node = rec.node,
        )));
    };
    let all: Vec<&str> = text.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n") + if all.is_empty() { "" } else { "\n" })
}

/// An interactive session in the guest over SSH (a PTY, then a shell or `command`).
pub async fn vm_shell_open(
    ctx: &Context,
    caller: &Caller,
    name: &str,
    command: Option<&str>,
    cols: u32,
    rows: u32,
) -> Result<ssh::Shell, Error> {
    let name = parse_name("name", name)?;
    let session = vm_login(ctx, caller, &name).await?;
    session.shell(command, cols, rows).await.map_err(|e| Error::Unavailable(format!("cannot open a shell on {name}: {e}")))
}
