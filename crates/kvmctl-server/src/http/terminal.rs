//! Terminals over WebSocket: the serial console and SSH shells. Binary frames carry the
//! terminal's bytes both ways; the connection closes when either side ends. The web console
//! will use the same endpoints.

use super::body::Body;
use super::call::Call;
use super::error::ApiError;
use crate::app::{self};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{SinkExt, StreamExt};
use kvmctl_types::api::{ConsoleTicket, ConsoleTicketRequest, ErrorBody};
use std::time::Duration;

/// Largest frame and message a client may send: keystrokes and pastes, not bulk data. The
/// server never holds more than a few of them per session (bounded channels between the
/// socket and the guest), so a client that sends faster than the guest reads waits.
const MAX_CLIENT_FRAME: usize = 64 * 1024;

fn bounded(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_frame_size(MAX_CLIENT_FRAME).max_message_size(MAX_CLIENT_FRAME)
}

/// The VM's serial console, interactive (WebSocket; binary frames both ways).
#[utoipa::path(get, path = "/v1/vms/{name}/console", tag = "vms", operation_id = "vm_console",
    params(("name" = String, Path, description = "VM name")),
    responses((status = 101, description = "Switching to WebSocket"), (status = 409, description = "Not running, or another console session is open", body = ErrorBody)))]
pub(crate) async fn vm_console(Call { ctx, caller }: Call, Path(name): Path<String>, ws: WebSocketUpgrade) -> Response {
    match app::vms::vm_console_open(&ctx, &caller, &name).await {
        Ok((stream, guard)) => bounded(ws).on_upgrade(move |socket| async move {
            console_bridge(stream, socket).await;
            drop(guard);
        }),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// A single-use ticket for one console WebSocket of the web console (valid 60 s, for the
/// caller, this VM and this kind; ADR 0013).
#[utoipa::path(post, path = "/v1/vms/{name}/console/ticket", tag = "vms", operation_id = "vm_console_ticket",
    params(("name" = String, Path, description = "VM name")), request_body = ConsoleTicketRequest,
    responses((status = 201, description = "The ticket, in the WebSocket's path", body = ConsoleTicket),
        (status = 404, description = "No such VM", body = ErrorBody), (status = 409, description = "Not running", body = ErrorBody),
        (status = 429, description = "Too many unused tickets", body = ErrorBody)))]
pub(crate) async fn vm_console_ticket(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Body(req): Body<ConsoleTicketRequest>,
) -> Result<(StatusCode, Json<ConsoleTicket>), ApiError> {
    Ok((StatusCode::CREATED, Json(app::vms::console_ticket(&ctx, &caller, &name, req).await?)))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TicketQuery {
    /// The ticket from `POST /v1/vms/{name}/console/ticket`.
    ticket: String,
}

/// The serial console for the web console: a ticket's WebSocket (binary frames both ways).
/// It first replays the end of the console log (VMs on the daemon's own node), then goes
/// live. One viewer at a time: a second is refused (409).
#[utoipa::path(get, path = "/v1/vms/{name}/console/serial", tag = "vms", operation_id = "vm_console_serial",
    params(("name" = String, Path, description = "VM name"), TicketQuery),
    responses((status = 101, description = "Switching to WebSocket"), (status = 403, description = "Ticket unknown, used, expired or another user's", body = ErrorBody),
        (status = 409, description = "Not running, or another console session is open", body = ErrorBody)))]
pub(crate) async fn vm_console_serial(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Query(q): Query<TicketQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let opened = app::vms::console_serial_open(&ctx, &caller, &name, &q.ticket);
    match opened.await {
        Ok((replay, stream, guard)) => bounded(ws).on_upgrade(move |mut socket| async move {
            if replay.is_empty() || socket.send(Message::Binary(replay.into())).await.is_ok() {
                console_bridge(stream, socket).await;
            }
            drop(guard);
        }),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The VNC display for the web console (noVNC): a ticket's WebSocket carrying the RFB
/// protocol in binary frames, proxied by the daemon to QEMU (no VNC port is opened; the
/// VM's VNC password is not needed, the ticket was the check). Viewers share the display.
#[utoipa::path(get, path = "/v1/vms/{name}/console/vnc", tag = "vms", operation_id = "vm_console_vnc",
    params(("name" = String, Path, description = "VM name"), TicketQuery),
    responses((status = 101, description = "Switching to WebSocket"), (status = 403, description = "Ticket unknown, used, expired or another user's", body = ErrorBody),
        (status = 409, description = "Not running, too many sessions, or the VM's node cannot hand over its display", body = ErrorBody)))]
pub(crate) async fn vm_console_vnc(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Query(q): Query<TicketQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let opened = app::vms::console_vnc_open(&ctx, &caller, &name, &q.ticket);
    match opened.await {
        Ok((fd, guard)) => bounded(ws).on_upgrade(move |socket| async move {
            vnc_bridge(fd, socket).await;
            drop(guard);
        }),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Bytes between the browser's WebSocket and QEMU's VNC socket, both ways, until either ends.
async fn vnc_bridge(fd: std::os::fd::OwnedFd, socket: WebSocket) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let std_sock = std::os::unix::net::UnixStream::from(fd);
    if std_sock.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(vnc) = tokio::net::UnixStream::from_std(std_sock) else { return };
    let (mut vnc_rx, mut vnc_tx) = vnc.into_split();
    let (mut to_client, mut from_client) = socket.split();
    let upstream = async {
        while let Some(Ok(msg)) = from_client.next().await {
            let Some(bytes) = frame_bytes(msg) else { break };
            if !bytes.is_empty() && vnc_tx.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    let downstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match vnc_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_client.send(Message::Close(None)).await;
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogQuery {
    /// How many of the last lines (default 100).
    lines: Option<usize>,
}

/// What the VM wrote on its serial console (plain text, the last `lines` lines).
#[utoipa::path(get, path = "/v1/vms/{name}/console/log", tag = "vms", operation_id = "vm_console_log",
    params(("name" = String, Path, description = "VM name"), LogQuery),
    responses((status = 200, description = "Console output", body = String, content_type = "text/plain"), (status = 404, description = "No such VM", body = ErrorBody)))]
pub(crate) async fn vm_console_log(Call { ctx, caller }: Call, Path(name): Path<String>, Query(q): Query<LogQuery>) -> Response {
    match app::vms::vm_console_log(&ctx, &caller, &name, q.lines.unwrap_or(100)).await {
        Ok(text) => ([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ShellQuery {
    /// Run this instead of a login shell.
    command: Option<String>,
    /// Terminal width (default 80).
    cols: Option<u32>,
    /// Terminal height (default 24).
    rows: Option<u32>,
}

/// An SSH session in the guest with a PTY, as the VM's user with the VM's key
/// (WebSocket; binary frames both ways).
#[utoipa::path(get, path = "/v1/vms/{name}/ssh", tag = "vms", operation_id = "vm_ssh",
    params(("name" = String, Path, description = "VM name"), ShellQuery),
    responses((status = 101, description = "Switching to WebSocket"), (status = 409, description = "Not running, no address yet, or the login was refused", body = ErrorBody)))]
pub(crate) async fn vm_ssh(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Query(q): Query<ShellQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    match app::vms::vm_shell_open(&ctx, &caller, &name, q.command.as_deref(), q.cols.unwrap_or(80), q.rows.unwrap_or(24)).await {
        Ok(shell) => bounded(ws).on_upgrade(move |socket| shell_bridge(shell, socket)),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The keystrokes a client frame carries (none for pings and the like); `None` when the
/// client closes the session.
fn frame_bytes(msg: Message) -> Option<Vec<u8>> {
    match msg {
        Message::Binary(b) => Some(b.to_vec()),
        Message::Text(t) => Some(t.as_bytes().to_vec()),
        Message::Close(_) => None,
        _ => Some(Vec::new()),
    }
}

/// One thread owns the (non-blocking) libvirt stream and moves bytes both ways.
async fn console_bridge(stream: Box<dyn kvmctl_libvirt::Console>, socket: WebSocket) {
    let (mut to_client, mut from_client) = socket.split();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let (in_tx, mut in_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let pump = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let mut busy = false;
            match stream.try_recv(&mut buf) {
                Ok(Some(0)) | Err(_) => break,
                Ok(Some(n)) => {
                    busy = true;
                    if out_tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Ok(None) => {}
            }
            match in_rx.try_recv() {
                Ok(keys) => {
                    busy = true;
                    if stream.send(&keys).is_err() {
                        break;
                    }
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {}
            }
            if !busy {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
    let upstream = async {
        while let Some(Ok(msg)) = from_client.next().await {
            let Some(bytes) = frame_bytes(msg) else { break };
            if !bytes.is_empty() && in_tx.send(bytes).await.is_err() {
                break;
            }
        }
    };
    let downstream = async {
        while let Some(bytes) = out_rx.recv().await {
            if to_client.send(Message::Binary(bytes.into())).await.is_err() {
                break;
            }
        }
        let _ = to_client.send(Message::Close(None)).await;
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
    drop(in_tx);
    let _ = pump.await;
}

async fn shell_bridge(mut shell: app::ssh::Shell, socket: WebSocket) {
    use tokio::io::AsyncWriteExt;
    let (mut to_client, mut from_client) = socket.split();
    let mut writer = shell.channel.make_writer();
    let upstream = async move {
        while let Some(Ok(msg)) = from_client.next().await {
            let Some(bytes) = frame_bytes(msg) else { break };
            if !bytes.is_empty() && (writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err()) {
                break;
            }
        }
    };
    let downstream = async {
        let mut status = None;
        while let Some(msg) = shell.channel.wait().await {
            match msg {
                russh::ChannelMsg::Data { data } | russh::ChannelMsg::ExtendedData { data, .. }
                    if to_client.send(Message::Binary(data.to_vec().into())).await.is_err() =>
                {
                    return;
                }
                russh::ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                _ => {}
            }
        }
        // The exit status rides on the close frame's reason, for `kvmctl vm ssh -- CMD`.
        let reason = format!("exit {}", status.unwrap_or(255));
        let _ = to_client.send(Message::Close(Some(axum::extract::ws::CloseFrame { code: 1000, reason: reason.into() }))).await;
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FileQuery {
    /// Absolute path in the guest.
    path: String,
    /// With PUT: make the directory `path` (the body is ignored).
    #[serde(default)]
    dir: bool,
}

/// Writes the request body to a file in the guest over SFTP (or makes a directory).
#[utoipa::path(put, path = "/v1/vms/{name}/files", tag = "vms", operation_id = "vm_file_put",
    params(("name" = String, Path, description = "VM name"), FileQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 204, description = "Written"), (status = 400, description = "Not an absolute path", body = ErrorBody),
        (status = 409, description = "Not running, no address, login refused, or the guest refused the write", body = ErrorBody)))]
pub(crate) async fn vm_file_put(
    Call { ctx, caller }: Call,
    Path(name): Path<String>,
    Query(q): Query<FileQuery>,
    body: axum::body::Body,
) -> Response {
    match app::files::vm_file_put(&ctx, &caller, &name, &q.path, q.dir, body.into_data_stream()).await {
        Ok(_) => axum::http::StatusCode::NO_CONTENT.into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// A file in the guest (its bytes), or a directory (a JSON listing, with header
/// `x-kvmctl-kind: dir`), over SFTP.
#[utoipa::path(get, path = "/v1/vms/{name}/files", tag = "vms", operation_id = "vm_file_get",
    params(("name" = String, Path, description = "VM name"), FileQuery),
    responses((status = 200, description = "The file's bytes, or a directory listing", body = [kvmctl_types::api::GuestFileEntry]),
        (status = 404, description = "No such path in the guest", body = ErrorBody)))]
pub(crate) async fn vm_file_get(Call { ctx, caller }: Call, Path(name): Path<String>, Query(q): Query<FileQuery>) -> Response {
    use axum::http::header::CONTENT_TYPE;
    match app::files::vm_file_get(&ctx, &caller, &name, &q.path).await {
        Ok(app::files::Download::File(_size, stream)) => (
            [(CONTENT_TYPE, "application/octet-stream"), (axum::http::HeaderName::from_static("x-kvmctl-kind"), "file")],
            axum::body::Body::from_stream(stream),
        )
            .into_response(),
        Ok(app::files::Download::Dir(entries)) => {
            ([(axum::http::HeaderName::from_static("x-kvmctl-kind"), "dir")], axum::Json(entries)).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}
