//! `kvmctl status`.

use crate::output::{self, OutputFormat, Table};
use kvmctl_client::Client;
use kvmctl_types::api::StatusResponse;
use std::process::ExitCode;

impl Table for StatusResponse {
    fn header(&self) -> bool {
        false
    }
    fn rows(&self) -> Vec<Vec<String>> {
        let s = self;
        let h = &s.hypervisor;
        let libvirt = if h.reachable {
            format!(
                "{} reachable: libvirt {}, {} {} on {}",
                h.uri,
                h.libvirt_version.as_deref().unwrap_or("?"),
                h.driver.as_deref().unwrap_or("hypervisor"),
                h.hypervisor_version.as_deref().unwrap_or("?"),
                h.hostname.as_deref().unwrap_or("?"),
            )
        } else {
            format!("{} UNREACHABLE: {}", h.uri, h.error.as_deref().unwrap_or("no reason given"))
        };
        vec![
            vec!["daemon:".into(), format!("kvmctl {} (up {}s)", s.version, s.uptime_seconds)],
            vec!["database:".into(), database_line(&s.database)],
            vec!["libvirt:".into(), libvirt],
            vec!["guests:".into(), format!("domain type {} ({})", h.domain_type, h.domain_type_source)],
        ]
    }
}

pub async fn run(client: &Client, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let status = client.status().await?;
    let reachable = status.hypervisor.reachable;
    output::print(&status, format)?;
    Ok(if reachable { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `sqlite /var/lib/kvmctl/kvmctl.db (schema 25)`; on PostgreSQL also who runs the periodic
/// work, since several daemons may share it.
fn database_line(d: &kvmctl_types::api::DatabaseStatus) -> String {
    let who = match (d.engine.as_str(), d.leader) {
        ("sqlite", _) => String::new(),
        (_, true) => "; this daemon leads".into(),
        (_, false) => "; another daemon leads".into(),
    };
    format!("{} {} (schema {}{who})", d.engine, d.path, d.schema_version)
}
