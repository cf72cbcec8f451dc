//! The web console's consoles (ADR 0013): single-use tickets and the VNC display.
//!
//! A page asks for a ticket (`POST /v1/vms/{name}/console/ticket`), then opens the WebSocket
//! with it. A ticket is 32 random bytes, kept only as its SHA-256 hash, in memory (a restart
//! forgets them all, which costs a user one click), bound to the user who asked, the VM (by
//! id: a VM deleted and made again under the same name is another VM) and the console kind,
//! valid for [`TICKET_SECONDS`] and once: redeeming removes it whatever the outcome. The
//! WebSocket must also authenticate as the same user (the session cookie or a token), so a
//! ticket URL that leaks (a screenshot, a proxy log) opens nothing by itself.

use super::*;
use kvmctl_types::api::{ConsoleKind, ConsoleTicket, ConsoleTicketRequest};
use std::collections::HashMap;
use std::sync::Mutex;

/// How long a ticket is valid.
pub const TICKET_SECONDS: i64 = 60;
/// Unused tickets one user may hold at once.
const TICKETS_PER_USER: usize = 16;
/// Unused tickets the daemon holds at most (all users).
const TICKETS_MAX: usize = 4096;

struct Ticket {
    user: String,
    vm: VmId,
    kind: ConsoleKind,
    expires_at: i64,
}

/// The unused tickets, by the SHA-256 of the secret.
#[derive(Default)]
pub(crate) struct Tickets(Mutex<HashMap<String, Ticket>>);

/// What every refused ticket gets: the same words whether it never existed, was used,
/// expired, or belongs to someone else, so a guess learns nothing.
fn refused() -> Error {
    Error::Forbidden("the console ticket is unknown, used or expired; open the console again from its page".into())
}

/// Issues a ticket for the caller's console of `name` (running VMs only).
pub async fn console_ticket(ctx: &Context, caller: &Caller, name: &str, req: ConsoleTicketRequest) -> Result<ConsoleTicket, Error> {
    let name = parse_name("name", name)?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await?;
    if rec.state != VmState::Running {
        return Err(Error::Conflict(format!("VM {name} is {}; start it first, then open its console", rec.state)));
    }
    let now = ctx.clock.now();
    let secret = super::super::users::random_hex(32);
    let mut map = ctx.tickets.0.lock().expect("ticket map poisoned");
    map.retain(|_, t| t.expires_at > now);
    if map.values().filter(|t| t.user == caller.name).count() >= TICKETS_PER_USER || map.len() >= TICKETS_MAX {
        return Err(Error::TooManyRequests {
            message: format!("too many unused console tickets; they expire {TICKET_SECONDS} s after they are issued"),
            retry_after: TICKET_SECONDS as u64,
        });
    }
    let expires_at = now + TICKET_SECONDS;
    map.insert(super::super::users::hash_hex(&secret), Ticket { user: caller.name.clone(), vm: rec.id, kind: req.kind, expires_at });
    Ok(ConsoleTicket { kind: req.kind, path: format!("/v1/vms/{name}/console/{}?ticket={secret}", req.kind.as_str()), expires_at })
}

/// Spends a ticket: the caller's, for this VM and kind, not expired. Returns the VM.
async fn console_ticket_redeem(ctx: &Context, caller: &Caller, name: &str, kind: ConsoleKind, secret: &str) -> Result<VmRecord, Error> {
    // Spent before anything is checked: a ticket is tried once, right or wrong.
    let ticket = ctx.tickets.0.lock().expect("ticket map poisoned").remove(&super::super::users::hash_hex(secret));
    let ticket = ticket.ok_or_else(refused)?;
    if ticket.user != caller.name || ticket.kind != kind || ticket.expires_at <= ctx.clock.now() {
        return Err(refused());
    }
    let name = parse_name("name", name).map_err(|_| refused())?;
    let rec = vm_record(ctx, &Scope::of(caller), &name).await.map_err(|_| refused())?;
    if rec.id != ticket.vm {
        return Err(refused());
    }
    Ok(rec)
}

/// How much of the console log the serial console replays first.
const REPLAY_LINES: usize = 200;
const REPLAY_BYTES: usize = 64 * 1024;

/// The serial console for a ticket: the end of the console log to replay first (VMs on the
/// daemon's own node, which keeps the log; `\r\n` line ends for a terminal), then the live
/// console with its session place. One viewer at a time, as for `kvmctl vm console`.
pub async fn console_serial_open(
    ctx: &Context,
    caller: &Caller,
    name: &str,
    ticket: &str,
) -> Result<(Vec<u8>, Box<dyn kvmctl_libvirt::Console>, crate::app::context::SessionGuard), Error> {
    let rec = console_ticket_redeem(ctx, caller, name, ConsoleKind::Serial, ticket).await?;
    // Empty for a VM on another node, whose host keeps its log.
    let replay = super::access::console_log_tail(ctx, &rec, REPLAY_LINES).await.unwrap_or_default();
    let replay = replay.replace('\n', "\r\n").into_bytes();
    let replay = replay[replay.len().saturating_sub(REPLAY_BYTES)..].to_vec();
    let (stream, guard) = super::access::console_open(ctx, caller, &rec).await?;
    Ok((replay, stream, guard))
}

/// The VNC display for a ticket (`vm_vnc_open`).
pub async fn console_vnc_open(
    ctx: &Context,
    caller: &Caller,
    name: &str,
    ticket: &str,
) -> Result<(std::os::fd::OwnedFd, crate::app::context::SessionGuard), Error> {
    let rec = console_ticket_redeem(ctx, caller, name, ConsoleKind::Vnc, ticket).await?;
    vm_vnc_open(ctx, caller, &rec).await
}

/// A connection to the VM's VNC display for a redeemed ticket: a socket to QEMU's VNC server
/// with its password check skipped (the ticket was the check), and a guest-session place.
/// Viewers share the display (noVNC asks for a shared session) up to `sessions_per_vm`.
async fn vm_vnc_open(
    ctx: &Context,
    caller: &Caller,
    rec: &VmRecord,
) -> Result<(std::os::fd::OwnedFd, crate::app::context::SessionGuard), Error> {
    let name = &rec.name;
    if rec.state != VmState::Running {
        return Err(Error::Conflict(format!("VM {name} is {}; start it first", rec.state)));
    }
    let guard = ctx.session_open(&rec.id, name, &caller.name)?;
    let node = ctx.node_conn(&rec.node).await?;
    let fd = node.domain_open_graphics(name.as_str()).await.map_err(|e| match e {
        NodeError::InvalidState { .. } | NodeError::Libvirt { .. } => Error::Conflict(format!(
            "cannot open the VNC display of {name}{}: {}",
            if rec.node == crate::app::context::LOCAL {
                String::new()
            } else {
                format!(
                    " (node {} is reached over the network, and libvirt hands a display's socket only over a local connection)",
                    rec.node
                )
            },
            kvmctl_core::error::chain(&e)
        )),
        e => e.into(),
    })?;
    Ok((fd, guard))
}
