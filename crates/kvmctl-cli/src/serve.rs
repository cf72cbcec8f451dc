//! `kvmctl serve`: runs the daemon in the foreground until SIGINT or SIGTERM.

use kvmctl_server::{Config, RunningServer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Configuration file [default: /etc/kvmctl/kvmctl.toml when it exists].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Also listen on TCP; every request there needs a token. HTTPS with --tls-cert and
    /// --tls-key, plain HTTP otherwise (keep that on loopback) [config: listen].
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Certificate chain (PEM) for HTTPS on --listen [config: tls_cert; env: KVMCTL_TLS_CERT].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert [config: tls_key; env: KVMCTL_TLS_KEY].
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// SQLite database file [config: database; env: KVMCTL_DATABASE]. For PostgreSQL set
    /// database_url in the configuration file or KVMCTL_DATABASE_URL (no flag: a password on
    /// the command line would show in `ps`).
    #[arg(long, value_name = "FILE")]
    database: Option<PathBuf>,
    /// libvirt URI of the local node [config: libvirt_uri; env: KVMCTL_LIBVIRT_URI].
    #[arg(long, value_name = "URI")]
    libvirt_uri: Option<String>,
}

/// Flags beat the environment, which beats the file, which beats the defaults.
pub async fn run(args: ServeArgs, socket: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    // The daemon runs as root: whatever it creates (database, keys, seeds in temporary
    // directories, logs) is private unless it says otherwise.
    // SAFETY: umask only sets this process's file-creation mask; it cannot fail.
    unsafe { libc::umask(0o077) };
    let mut cfg = Config::load(args.config.as_deref(), |k| std::env::var(k).ok())?;
    if let Some(s) = socket {
        cfg.socket = s;
    }
    if let Some(l) = args.listen {
        cfg.listen = Some(l);
    }
    if let (Some(c), Some(k)) = (args.tls_cert, args.tls_key) {
        (cfg.tls_cert, cfg.tls_key) = (Some(c), Some(k));
    }
    if let Some(d) = args.database {
        cfg.database = d;
    }
    if let Some(u) = args.libvirt_uri {
        cfg.libvirt_uri = u;
    }
    init_tracing(&cfg.log);
    let server = RunningServer::start(&cfg).await?;
    wait_for_signal().await?;
    server.stop().await;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

pub(crate) async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
