//! Readiness of each boot, as stages with timestamps: `defined`, `started` (recorded by the
//! operations themselves), then, watched here: `booting` (the first console output),
//! `address` (reserved before boot on managed networks, else the DHCP lease), `ssh_port`
//! (a TCP connection to port 22 is accepted), `ssh_banner` (the server's identification
//! line is read), `ssh_login` (the VM's own key is accepted) and, for cloud-init images,
//! `cloud_init` (its final status, read from the guest, errors included).
//!
//! No fixed sleeps: each stage is polled only while it is the next one, at a short interval
//! (50 ms for the console and the port, so "SSH ready" follows the guest's sshd within a
//! poll and a handshake), and the watch ends when the VM stops, is deleted, or after 15
//! minutes.

use super::context::Context;
use kvmctl_core::{Error, VmState};
use kvmctl_types::api::ReadinessStage;
use kvmctl_types::Name;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// The stages in the order a boot reaches them.
pub const STAGES: [&str; 8] = ["defined", "started", "booting", "address", "ssh_port", "ssh_banner", "ssh_login", "cloud_init"];

const POLL: Duration = Duration::from_millis(50);
const WATCH_LIMIT: Duration = Duration::from_secs(15 * 60);
/// Most of `cloud-init status --format json` kept; its verdict is far shorter.
const CLOUD_INIT_OUTPUT_MAX: usize = 64 * 1024;

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Starts a watch for every VM that boots.
pub async fn run(ctx: Arc<Context>, mut boots: tokio::sync::mpsc::UnboundedReceiver<Name>) {
    while let Some(name) = boots.recv().await {
        tokio::spawn(watch(ctx.clone(), name));
    }
}

/// Watches again every running VM whose boot has not reached its last stage (`ssh_login`,
/// or `cloud_init` on cloud-init images): after a daemon restart mid-boot, the stages
/// reached stay, and the rest are still recorded (a stage already reached is not moved).
pub(crate) async fn resume(ctx: &Context) {
    let Ok(vms) = ctx.store.vm_list(&kvmctl_store::Scope::all()).await else { return };
    for rec in vms.into_iter().filter(|v| v.state == VmState::Running) {
        let Ok(rows) = ctx.store.vm_stages(&rec.id).await else { continue };
        if !rows.iter().any(|(s, _, _)| s == "started") {
            continue;
        }
        let cloud_init = matches!(ctx.store.image_get(&rec.image).await, Ok(Some(i)) if i.cloud_init);
        let last = if cloud_init { "cloud_init" } else { "ssh_login" };
        if rows.iter().any(|(s, _, _)| s == last) {
            continue;
        }
        tracing::info!(vm = %rec.name, "resuming the readiness watch of a boot in progress");
        let _ = ctx.booted.send(rec.name.clone());
    }
}

/// Records a boot starting: earlier stages are forgotten, `started` (and a reserved
/// address) are reached now, and the watch begins.
pub(crate) async fn boot_started(ctx: &Context, rec: &kvmctl_store::VmRecord) -> Result<(), Error> {
    ctx.store.vm_stages_clear(&rec.id).await?;
    let now = now_ms();
    ctx.store.vm_stage_reached(&rec.id, "defined", now, None).await?;
    ctx.store.vm_stage_reached(&rec.id, "started", now, None).await?;
    if let Some(ip) = &rec.ip {
        ctx.store.vm_stage_reached(&rec.id, "address", now, Some(&format!("{ip} (reserved)"))).await?;
    }
    let _ = ctx.booted.send(rec.name.clone());
    Ok(())
}

/// The stages reached, with the time since `started`.
pub(crate) async fn stages(ctx: &Context, id: &kvmctl_types::VmId) -> Result<Vec<ReadinessStage>, Error> {
    let rows = ctx.store.vm_stages(id).await?;
    let started = rows.iter().find(|(s, _, _)| s == "started").map(|(_, at, _)| *at);
    let mut out: Vec<ReadinessStage> = rows
        .into_iter()
        .map(|(stage, at_ms, detail)| ReadinessStage { elapsed_ms: started.map(|s| at_ms - s), stage, at_ms, detail })
        .collect();
    out.sort_by_key(|s| STAGES.iter().position(|x| *x == s.stage).unwrap_or(usize::MAX));
    Ok(out)
}

/// Whether the VM is still running this boot; the watch stops otherwise. The operation that
/// started the boot may still be finishing (`creating`, `starting`, `rebooting` until its
/// forwards are written and libvirt's state is read): that is this boot too.
async fn still_running(ctx: &Context, name: &Name, started_at: i64) -> bool {
    let Ok(Some(rec)) = ctx.store.vm_get(&kvmctl_store::Scope::all(), name).await else { return false };
    if !matches!(rec.state, VmState::Running | VmState::Creating | VmState::Starting | VmState::Rebooting) {
        return false;
    }
    matches!(ctx.store.vm_stages(&rec.id).await, Ok(rows) if rows.iter().any(|(s, at, _)| s == "started" && *at == started_at))
}

async fn watch(ctx: Arc<Context>, name: Name) {
    let Ok(Some(rec)) = ctx.store.vm_get(&kvmctl_store::Scope::all(), &name).await else { return };
    let Ok(rows) = ctx.store.vm_stages(&rec.id).await else { return };
    let Some(started_at) = rows.iter().find(|(s, _, _)| s == "started").map(|(_, at, _)| *at) else { return };
    let cloud_init = matches!(ctx.store.image_get(&rec.image).await, Ok(Some(i)) if i.cloud_init);
    let deadline = Instant::now() + WATCH_LIMIT;
    let console = ctx.config.console_log_dir.join(format!("{name}.log"));
    let (id, vm) = (rec.id, rec.name.clone());
    let owner = rec.owner.clone();
    let reached = |stage: &'static str, detail: Option<String>| {
        let (ctx, vm, owner) = (ctx.clone(), vm.clone(), owner.clone());
        async move {
            let now = now_ms();
            if let Err(e) = ctx.store.vm_stage_reached(&id, stage, now, detail.as_deref()).await {
                tracing::warn!(%vm, stage, error = %kvmctl_core::error::chain(&e), "cannot record a readiness stage");
            }
            ctx.metrics
                .stages
                .get_or_create(&crate::metrics::StageLabels { stage: stage.into() })
                .observe((now - started_at).max(0) as f64 / 1000.0);
            ctx.publish("vm.stage", &vm, &owner, None, Some(stage), detail.as_deref());
            tracing::debug!(%vm, stage, ?detail, "readiness");
        }
    };
    let mut last_check = Instant::now();
    // Polls until `probe` says the stage is reached; false when the watch should end.
    macro_rules! until {
        ($every:expr, $probe:expr) => {{
            loop {
                if let Some(v) = $probe {
                    break Some(v);
                }
                if Instant::now() > deadline {
                    break None;
                }
                if last_check.elapsed() > Duration::from_secs(1) {
                    if !still_running(&ctx, &name, started_at).await {
                        break None;
                    }
                    last_check = Instant::now();
                }
                tokio::time::sleep($every).await;
            }
        }};
    }

    // The console log is on this host only for the local node's VMs; elsewhere the boot is
    // taken as begun when the domain started.
    let local = rec.node == super::context::LOCAL;
    if local && until!(POLL, std::fs::metadata(&console).ok().filter(|m| m.len() > 0)).is_none() {
        return;
    }
    reached("booting", if local { None } else { Some(format!("on node {}", rec.node)) }).await;

    let ip: IpAddr = match rec.ip.as_deref().and_then(|i| i.parse().ok()) {
        Some(ip) => ip,
        None => {
            let Some((ip, source)) =
                until!(Duration::from_millis(500), address_of(&ctx, &rec.node, &rec.name, &rec.network, &rec.mac).await)
            else {
                return;
            };
            reached("address", Some(format!("{ip} ({source})"))).await;
            ip
        }
    };
    let addr = SocketAddr::new(ip, 22);

    let Some(banner) = until!(POLL, banner_of(addr).await) else { return };
    reached("ssh_port", None).await;
    reached("ssh_banner", Some(banner)).await;

    let Some(session) = until!(Duration::from_millis(100), super::guest::ssh_session(&ctx, &rec, ip).await.ok()) else { return };
    reached("ssh_login", Some(format!("{}@{ip}, host key {}", rec.ssh_user, session.1))).await;
    let session_fp = session.1.clone();
    if !cloud_init {
        session.close().await;
        return;
    }
    // Blocks in the guest until cloud-init has finished, then reads its verdict: the guest
    // answers, so the answer is bounded in size and the wait in time (the watch's limit).
    let left = deadline.saturating_duration_since(Instant::now());
    let status = tokio::time::timeout(
        left,
        session.exec("cloud-init status --wait >/dev/null 2>&1; cloud-init status --format json", CLOUD_INIT_OUTPUT_MAX),
    )
    .await;
    session.close().await;
    let detail = match status {
        Ok(Ok(out)) if out.truncated => format!("unknown: cloud-init's status was longer than {CLOUD_INIT_OUTPUT_MAX} bytes"),
        Ok(Ok(out)) if out.stdout.is_empty() => {
            format!("unknown: the SSH session ended before cloud-init answered (exit status {})", out.exit_status)
        }
        Ok(Ok(out)) => cloud_init_verdict(&out.stdout),
        Ok(Err(e)) => format!("unknown: {e}"),
        Err(_) => format!("unknown: cloud-init did not finish within {} minutes of the boot", WATCH_LIMIT.as_secs() / 60),
    };
    // cloud-init prints the host key fingerprints on the console in its final stage, after
    // the first login pinned the key: now the pin can be checked against them.
    let console_text = super::guest::console_tail(&console).unwrap_or_default();
    let printed = super::guest::console_fingerprints(&console_text);
    let from_seed = rec.host_key_source.as_deref() == Some("seed");
    let detail = if printed.is_empty() {
        detail
    } else if printed.contains(&session_fp) {
        // A key from the seed stays `seed`: it was known before the guest booted.
        if !from_seed {
            if let Err(e) = ctx.store.vm_host_key_source(&id, &session_fp, "console").await {
                tracing::error!(%vm, error = %e, "cannot record where the host key was confirmed");
            }
        }
        detail
    } else {
        tracing::error!(vm = %vm, pinned = %session_fp, printed = ?printed, "host key differs from the console's fingerprints");
        format!(
            "{detail}; WARNING: the SSH host key pinned ({session_fp}) is not among those the guest printed on its console ({})",
            printed.join(", ")
        )
    };
    reached("cloud_init", Some(detail)).await;
}

/// `done`, or `error: ...` with cloud-init's own errors, from `cloud-init status --format json`.
pub(crate) fn cloud_init_verdict(json: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return format!("unknown: {}", String::from_utf8_lossy(json).trim());
    };
    let status = v["status"].as_str().unwrap_or("unknown").to_owned();
    let errors: Vec<String> =
        v["errors"].as_array().map(|a| a.iter().filter_map(|e| e.as_str().map(str::to_owned)).collect()).unwrap_or_default();
    if errors.is_empty() {
        status
    } else {
        format!("{status}: {}", errors.join("; "))
    }
}

/// The address of an unreserved VM, and who told: the guest agent, the network's DHCP
/// leases, or the host's neighbour (ARP) table, asked in that order.
async fn address_of(ctx: &Context, node: &str, vm: &Name, network: &str, mac: &str) -> Option<(IpAddr, &'static str)> {
    let local = node == super::context::LOCAL;
    let node = ctx.node_conn(node).await.ok()?;
    let (vm, network, mac) = (vm.to_string(), network.to_owned(), mac.to_ascii_lowercase());
    let found = node.run(move |node| -> Result<_, kvmctl_libvirt::NodeError> {
        Ok((|| {
            let find = |pairs: Vec<(String, String)>| pairs.into_iter().find(|(m, _)| *m == mac).and_then(|(_, ip)| ip.parse().ok());
            if let Some(ip) = node.domain_agent_addresses(&vm).ok().and_then(find) {
                return Some((ip, "guest agent"));
            }
            if let Some(ip) = node.network_leases(&network).ok().and_then(find) {
                return Some((ip, "DHCP lease"));
            }
            if !local {
                return None;
            }
            let arp = std::fs::read_to_string("/proc/net/arp").ok()?;
            arp_lookup(&arp, &mac).map(|ip| (ip, "neighbour table"))
        })())
    });
    found.await.ok().flatten()
}

/// The IPv4 address `/proc/net/arp` lists for `mac` (complete entries only).
pub(crate) fn arp_lookup(table: &str, mac: &str) -> Option<IpAddr> {
    table.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.len() >= 4 && cols[3].eq_ignore_ascii_case(mac) && cols[2] != "0x0").then(|| cols[0].parse().ok()).flatten()
    })
}

/// Connects to the SSH port and reads the server's identification line.
async fn banner_of(addr: SocketAddr) -> Option<String> {
    let mut stream = tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await.ok()?.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !buf.contains(&b'\n') && buf.len() < 1024 {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(())
    });
    read.await.ok()??;
    let line = String::from_utf8_lossy(&buf).lines().find(|l| l.starts_with("SSH-"))?.trim().to_owned();
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_table() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 10.0.0.7         0x1         0x2         52:54:00:aa:bb:cc     *        br0\n\
                 10.0.0.8         0x1         0x0         52:54:00:aa:bb:dd     *        br0\n";
        assert_eq!(arp_lookup(t, "52:54:00:AA:BB:CC"), Some("10.0.0.7".parse().unwrap()));
        assert_eq!(arp_lookup(t, "52:54:00:aa:bb:dd"), None, "incomplete entries do not count");
        assert_eq!(arp_lookup(t, "52:54:00:00:00:00"), None);
    }

    #[test]
    fn cloud_init_verdicts() {
        assert_eq!(cloud_init_verdict(br#"{"status": "done", "errors": []}"#), "done");
        assert_eq!(cloud_init_verdict(br#"{"status": "error", "errors": ["a failed", "b failed"]}"#), "error: a failed; b failed");
        assert_eq!(cloud_init_verdict(b"nonsense"), "unknown: nonsense");
    }
}
