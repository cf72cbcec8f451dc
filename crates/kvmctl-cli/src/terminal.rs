//! Interactive terminals through the daemon (`vm console`, `vm ssh`): the local terminal in
//! raw mode while a session runs, restored on the way out whatever happens.

use futures_util::{SinkExt, StreamExt};
use kvmctl_client::Terminal;
use std::io::{IsTerminal, Write};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

/// Ctrl-] leaves a console session, as in virsh and telnet.
pub const ESCAPE: u8 = 0x1d;

/// Puts stdin in raw mode until dropped (when it is a terminal).
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enter() -> Self {
        if !std::io::stdin().is_terminal() {
            return RawMode(None);
        }
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return RawMode(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the attributes read in `enter`.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}

/// Bridges stdin/stdout with the session until it ends, or until `escape` is typed.
/// Returns the exit status the daemon reported on close (`exit N`), if any.
pub async fn run(ws: Terminal, escape: Option<u8>) -> anyhow::Result<Option<i32>> {
    let _raw = RawMode::enter();
    let (mut to_daemon, mut from_daemon) = ws.split();
    let upstream = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            let n = stdin.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                // End of input (a pipe): let the session finish its output.
                std::future::pending::<()>().await;
            }
            let mut chunk = &buf[..n];
            let mut leave = false;
            if let Some(pos) = escape.and_then(|e| chunk.iter().position(|b| *b == e)) {
                chunk = &chunk[..pos];
                leave = true;
            }
            if !chunk.is_empty() && to_daemon.send(Message::Binary(chunk.to_vec().into())).await.is_err() {
                return;
            }
            if leave {
                let _ = to_daemon.send(Message::Close(None)).await;
                return;
            }
        }
    };
    let downstream = async {
        let mut stdout = std::io::stdout();
        while let Some(Ok(msg)) = from_daemon.next().await {
            match msg {
                Message::Binary(b) => {
                    let _ = stdout.write_all(&b);
                    let _ = stdout.flush();
                }
                Message::Text(t) => {
                    let _ = stdout.write_all(t.as_bytes());
                    let _ = stdout.flush();
                }
                Message::Close(frame) => {
                    return frame.and_then(|f| f.reason.strip_prefix("exit ").and_then(|s| s.parse().ok()));
                }
                _ => {}
            }
        }
        None
    };
    tokio::select! {
        _ = upstream => Ok(None),
        status = downstream => Ok(status),
    }
}

/// `vm console --vnc`: a local port that relays each connection to the VM's VNC display
/// through the daemon (a fresh single-use ticket per connection; no VNC password, as the
/// daemon's own socket to QEMU skips it). The port is on 127.0.0.1 only, so users of this
/// machine can reach it while the relay runs.
pub async fn vnc_relay(client: &kvmctl_client::Client, name: &str) -> anyhow::Result<()> {
    // Fails early (and clearly) when the VM is not there or has no display to give.
    client.console_ticket(name, kvmctl_types::api::ConsoleKind::Vnc).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    eprintln!("VNC display of {name} on 127.0.0.1:{port}; open it with one of:");
    eprintln!("  vncviewer 127.0.0.1::{port}");
    eprintln!("  remote-viewer vnc://127.0.0.1:{port}");
    eprintln!("(no password: only this machine can connect; Ctrl-C stops the relay)");
    println!("vnc://127.0.0.1:{port}");
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let ticket = match client.console_ticket(name, kvmctl_types::api::ConsoleKind::Vnc).await {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cannot open the display: {e}");
                continue;
            }
        };
        let ws = match client.terminal(&ticket.path).await {
            Ok(ws) => ws,
            Err(e) => {
                eprintln!("cannot open the display: {e}");
                continue;
            }
        };
        tokio::spawn(vnc_bridge(tcp, ws));
    }
}

/// Copies bytes between a local VNC viewer and the daemon's WebSocket until either side ends.
async fn vnc_bridge(tcp: tokio::net::TcpStream, ws: Terminal) {
    use tokio::io::AsyncWriteExt;
    let (mut tcp_rx, mut tcp_tx) = tcp.into_split();
    let (mut to_daemon, mut from_daemon) = ws.split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tcp_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_daemon.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_daemon.send(Message::Close(None)).await;
    };
    let down = async {
        while let Some(Ok(m)) = from_daemon.next().await {
            let written = match m {
                Message::Binary(b) => tcp_tx.write_all(&b).await,
                Message::Close(_) => break,
                _ => Ok(()),
            };
            if written.is_err() {
                break;
            }
        }
        let _ = tcp_tx.shutdown().await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
