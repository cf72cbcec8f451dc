//! `kvmctl test`: ephemeral test VMs from a spec (run), and the runs the daemon keeps
//! (list, show, rm). The runner is `kvmctl-vmtest`; this module parses flags and prints.

use crate::output::{self, age, OutputFormat, Table};
use clap::Subcommand;
use kvmctl_client::Client;
use kvmctl_types::api::TestRun;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum TestCommand {
    /// Run a spec: boot a VM from its image, upload, provision, snapshot (clean-boot,
    /// provisioned), then each case in a linked clone of `provisioned`, checked and removed.
    /// Writes report.md, junit.xml and report.json (and artifacts) to the report directory.
    /// Exit status: 0 all passed, 1 a check or provisioning step failed, 2 the runner or the
    /// environment failed. The run's VMs are deleted with it, and by the daemon if this
    /// command dies. The format: docs/testing-vms.md.
    Run {
        /// The spec (YAML).
        spec: PathBuf,
        /// Only this case (repeatable).
        #[arg(long = "case", value_name = "NAME")]
        cases: Vec<String>,
        /// Cases run at a time, each in its own VM.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        parallel: u16,
        /// Keep a failed case's VM (until its TTL) and print how to reach it.
        #[arg(long)]
        keep_on_failure: bool,
        /// Start every case from this snapshot of the base VM's memory instead of booting
        /// it: `provisioned` (ready in seconds; each case still gets its own identity,
        /// address and clock).
        #[arg(long, value_name = "SNAPSHOT", value_parser = ["provisioned"])]
        from_snapshot: Option<String>,
        /// Where the reports go (default: kvmctl-test-<run id> in the current directory).
        #[arg(long, value_name = "DIR")]
        report_dir: Option<PathBuf>,
        /// Seconds a boot may take to reach SSH (and cloud-init).
        #[arg(long, default_value_t = 900)]
        boot_timeout: u64,
    },
    /// Your test runs, newest first.
    #[command(alias = "ls")]
    List,
    /// A run: its state, VMs and results.
    Show { run: String },
    /// End a run (if it runs), delete its VMs and forget it.
    #[command(alias = "delete")]
    Rm { run: String },
}

impl Table for Vec<TestRun> {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["RUN", "SPEC", "STATE", "CASES", "VMS", "AGE"].map(String::from).to_vec()];
        for r in self {
            rows.push(vec![r.id.clone(), r.name.clone(), r.state.clone(), cases_summary(r), r.vms.len().to_string(), age(r.created_at)]);
        }
        rows
    }
}

impl Table for kvmctl_vmtest::RunReport {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![["CASE", "OUTCOME", "START", "READY_MS", "CHECKS_PASSED", "CHECKS", "VM"].map(String::from).to_vec()];
        for c in &self.cases {
            rows.push(vec![
                c.name.clone(),
                c.outcome.as_str().into(),
                c.start.clone(),
                c.ready_ms.to_string(),
                c.checks.iter().filter(|k| k.passed).count().to_string(),
                c.checks.len().to_string(),
                c.vm.clone(),
            ]);
        }
        rows
    }
}

fn cases_summary(r: &TestRun) -> String {
    let Some(cases) = r.summary.as_ref().and_then(|s| s.get("cases")).and_then(|c| c.as_array()) else { return "-".into() };
    let passed = cases.iter().filter(|c| c.get("outcome").and_then(|o| o.as_str()) == Some("passed")).count();
    format!("{passed}/{} passed", cases.len())
}

impl Table for TestRun {
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![
            vec!["run".into(), self.id.clone()],
            vec!["spec".into(), self.name.clone()],
            vec!["state".into(), self.state.clone()],
            vec!["owner".into(), self.owner.clone()],
            vec!["started".into(), age(self.created_at)],
            vec!["vms".into(), if self.vms.is_empty() { "-".into() } else { self.vms.join(", ") }],
            vec!["cases".into(), cases_summary(self)],
        ];
        if let Some(cases) = self.summary.as_ref().and_then(|s| s.get("cases")).and_then(|c| c.as_array()) {
            for c in cases {
                let name = c.get("name").and_then(|v| v.as_str()).unwrap_or("?");
                let outcome = c.get("outcome").and_then(|v| v.as_str()).unwrap_or("?");
                let failed: Vec<&str> = c
                    .get("checks")
                    .and_then(|k| k.as_array())
                    .map(|k| {
                        k.iter()
                            .filter(|k| k.get("passed") == Some(&serde_json::Value::Bool(false)))
                            .filter_map(|k| k.get("name")?.as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                let detail = if failed.is_empty() { String::new() } else { format!(" (failed: {})", failed.join(", ")) };
                rows.push(vec![format!("case {name}"), format!("{outcome}{detail}")]);
            }
        }
        if let Some(e) = self.summary.as_ref().and_then(|s| s.get("error")).and_then(|e| e.as_str()) {
            rows.push(vec!["error".into(), e.into()]);
        }
        rows
    }
}

pub async fn run(client: &Client, cmd: TestCommand, format: OutputFormat) -> anyhow::Result<ExitCode> {
    match cmd {
        TestCommand::Run { spec, cases, parallel, keep_on_failure, from_snapshot, report_dir, boot_timeout } => {
            let spec = match kvmctl_vmtest::load(&spec) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            // The report directory is named after the run, which the daemon names; until then
            // a temporary name, renamed when the run is known.
            let pending = report_dir.is_none();
            let dir = report_dir.unwrap_or_else(|| PathBuf::from(format!("kvmctl-test-{}-{}", spec.name, std::process::id())));
            let opts = kvmctl_vmtest::Options {
                cases,
                parallel: parallel as usize,
                keep_on_failure,
                warm: from_snapshot.is_some(),
                report_dir: dir.clone(),
                boot_timeout: std::time::Duration::from_secs(boot_timeout),
            };
            let started = std::time::Instant::now();
            let say: kvmctl_vmtest::Say = Arc::new(move |line: &str| eprintln!("[{:>6.1}s] {line}", started.elapsed().as_secs_f64()));
            let report = kvmctl_vmtest::run(client, &spec, &opts, say).await;
            let mut dir = dir;
            if pending && !report.run_id.is_empty() {
                let named = PathBuf::from(format!("kvmctl-test-{}", report.run_id));
                if std::fs::rename(&dir, &named).is_ok() {
                    dir = named;
                }
            }
            match format {
                OutputFormat::Table => {
                    for c in &report.cases {
                        let passed = c.checks.iter().filter(|k| k.passed).count();
                        eprintln!(
                            "  {:<20} {:<7} {} start, ready in {:.1} s, {passed}/{} checks{}",
                            c.name,
                            c.outcome.as_str(),
                            c.start,
                            c.ready_ms as f64 / 1000.0,
                            c.checks.len(),
                            if c.kept { format!(" (kept: kvmctl vm ssh {})", c.vm) } else { String::new() }
                        );
                        for k in c.checks.iter().filter(|k| !k.passed) {
                            eprintln!("      failed: {}: {}", k.name, k.failure.as_deref().unwrap_or(""));
                        }
                    }
                    if let Some(e) = &report.error {
                        eprintln!("error: {e}");
                    }
                    println!(
                        "{} {} in {:.1} s; reports in {}",
                        report.spec,
                        report.outcome.as_str(),
                        report.ms as f64 / 1000.0,
                        dir.display()
                    );
                }
                _ => output::print(&report, format)?,
            }
            Ok(ExitCode::from(report.outcome.exit_code() as u8))
        }
        TestCommand::List => {
            output::print(&client.test_run_list().await?, format)?;
            Ok(ExitCode::SUCCESS)
        }
        TestCommand::Show { run } => {
            output::print(&client.test_run_get(&run).await?, format)?;
            Ok(ExitCode::SUCCESS)
        }
        TestCommand::Rm { run } => {
            client.test_run_delete(&run).await?;
            eprintln!("test run {run} removed with its VMs");
            Ok(ExitCode::SUCCESS)
        }
    }
}
