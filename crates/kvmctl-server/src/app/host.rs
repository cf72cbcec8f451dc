//! `host`: the last `kvmctl host doctor` report of this host, and the domain type it implies.

use super::context::Context;
use crate::config::DomainTypeSetting;
use kvmctl_core::Error;
use kvmctl_types::api::DoctorReport;

/// The report `kvmctl host doctor` (or `host setup`) recorded on this host.
pub async fn host_report(ctx: &Context, caller: &kvmctl_core::Caller) -> Result<DoctorReport, Error> {
    caller.require_admin("the host report")?;
    let path = ctx.config.host_state_dir.join("doctor.json");
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound {
                kind: "host report",
                name: format!("{} (run `kvmctl host doctor` on this host)", path.display()),
            })
        }
        Err(e) => return Err(Error::Unavailable(format!("cannot read {}: {e}", path.display()))),
    };
    let mut report: DoctorReport = serde_json::from_str(&text)
        .map_err(|e| Error::Internal(format!("{} is not a doctor report: {e}; run `kvmctl host doctor` again", path.display())))?;
    // The pools kvmctl made, as they are now (the doctor itself knows only the default one).
    report.checks.extend(super::pools::pool_checks(ctx).await);
    Ok(report)
}

/// `(domain type, why)` for new VMs.
pub async fn domain_type(ctx: &Context) -> (String, String) {
    match ctx.config.domain_type {
        DomainTypeSetting::Kvm => ("kvm".into(), "configuration (domain_type = kvm)".into()),
        DomainTypeSetting::Qemu => ("qemu".into(), "configuration (domain_type = qemu)".into()),
        DomainTypeSetting::Auto => match host_report(ctx, &kvmctl_core::Caller::local_admin()).await {
            Ok(r) => {
                let why = r.checks.iter().find(|c| c.id == "kvm.functional").map(|c| c.evidence.clone()).unwrap_or_default();
                (r.domain_type, format!("host doctor{}: {why}", r.checked_at.map(|t| format!(" at {t}")).unwrap_or_default()))
            }
            Err(_) => ("qemu".into(), "default: no host doctor report yet, so TCG; run `kvmctl host doctor` to probe KVM".into()),
        },
    }
}
