//! One run of a spec on the daemon: the base VM booted and provisioned once, its snapshots
//! `clean-boot` and `provisioned`, then each case in a linked clone of `provisioned` (booted
//! cold, or woken warm from its memory), checked, reported and removed.
//!
//! Everything the run makes is tagged with the run (`test_run`) and has a TTL, and the run
//! is held by heartbeats: the daemon deletes its VMs when the runner finishes, when it is
//! interrupted (Ctrl-C finishes the run), and when it dies (its heartbeats stop and the
//! run's grace period passes). The runner itself never has to clean up to be safe.

use crate::report::{CaseResult, CheckResult, Outcome, RunReport, Stage, StepResult};
use crate::spec::{Case, Check, Spec, Step};
use kvmctl_client::{Client, ClientError};
use kvmctl_types::api::{
    DoctorReport, SnapshotCreateRequest, TestRunCreateRequest, TestRunFinishRequest, Vm, VmCloneRequest, VmCreateRequest, VmExecRequest,
    VmStopRequest,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Options {
    /// Only these cases (all when empty).
    pub cases: Vec<String>,
    pub parallel: usize,
    pub keep_on_failure: bool,
    /// Wake cases from the `provisioned` memory snapshot instead of booting them.
    pub warm: bool,
    pub report_dir: PathBuf,
    /// How long a boot may take to reach SSH (and cloud-init).
    pub boot_timeout: Duration,
}

/// Progress lines (stage started, stage done with its time).
pub type Say = Arc<dyn Fn(&str) + Send + Sync>;

/// A failure of the runner or the environment (exit 2), with what to do.
#[derive(Debug)]
struct Broke(String);

impl From<ClientError> for Broke {
    fn from(e: ClientError) -> Self {
        Broke(e.to_string())
    }
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

struct Run<'a> {
    client: &'a Client,
    spec: &'a Spec,
    opts: &'a Options,
    say: Say,
    id: String,
    base: String,
    artifacts: PathBuf,
    cloud_init: bool,
    /// Set when the daemon has ended the run (heartbeat refused): stop at once.
    lost: Arc<AtomicBool>,
    /// Clones of the base are made one at a time (the daemon holds the source busy).
    clone_lock: tokio::sync::Mutex<()>,
    /// Case VMs that exist now, and a signal when one is gone (room for a waiting case).
    live: std::sync::atomic::AtomicUsize,
    ended: tokio::sync::broadcast::Sender<()>,
}

/// Runs `spec`; never fails: what went wrong is in the report's outcome and error. The
/// report is also written to `opts.report_dir`.
pub async fn run(client: &Client, spec: &Spec, opts: &Options, say: Say) -> RunReport {
    let started = Instant::now();
    let started_at = now_unix();
    let mut report = RunReport {
        run_id: String::new(),
        spec: spec.name.clone(),
        image: spec.image.clone(),
        outcome: Outcome::Passed,
        error: None,
        started_at,
        ms: 0,
        machine: String::new(),
        stages: Vec::new(),
        provision: Vec::new(),
        cases: Vec::new(),
        base_console_tail: None,
    };
    for c in &opts.cases {
        if !spec.cases.iter().any(|k| &k.name == c) {
            let names: Vec<&str> = spec.cases.iter().map(|k| k.name.as_str()).collect();
            return finish_early(report, opts, format!("--case {c}: the spec has no such case (it has {})", names.join(", ")), started);
        }
    }
    // Prerequisites: the daemon's host doctor, and the image.
    let t = Instant::now();
    say("prerequisites: host doctor and image");
    let cloud_init = match prerequisites(client, spec, &mut report).await {
        Ok(c) => c,
        Err(Broke(e)) => return finish_early(report, opts, e, started),
    };
    report.stages.push(Stage { name: "prerequisites".into(), ms: ms(t), detail: Some(report.machine.clone()) });

    let opened = client.test_run_create(&TestRunCreateRequest { name: spec.name.clone(), grace_seconds: Some(spec.grace.as_secs()) }).await;
    let run_rec = match opened {
        Ok(r) => r,
        Err(e) => return finish_early(report, opts, format!("cannot open a test run: {e}"), started),
    };
    report.run_id = run_rec.id.clone();
    say(&format!("run {} opened (its VMs go with it; grace {} s)", run_rec.id, spec.grace.as_secs()));
    let lost = Arc::new(AtomicBool::new(false));
    let beat = {
        let (client, id, lost) = (client.clone(), run_rec.id.clone(), lost.clone());
        let every = (spec.grace / 6).clamp(Duration::from_secs(1), Duration::from_secs(10));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(ClientError::Api { status: 404 | 409, .. }) = client.test_run_heartbeat(&id).await {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
            }
        })
    };
    let run = Run {
        client,
        spec,
        opts,
        say: say.clone(),
        base: format!("{}-base", run_rec.id),
        artifacts: opts.report_dir.join("artifacts"),
        id: run_rec.id.clone(),
        cloud_init,
        lost: lost.clone(),
        clone_lock: tokio::sync::Mutex::new(()),
        live: std::sync::atomic::AtomicUsize::new(0),
        ended: tokio::sync::broadcast::channel(16).0,
    };
    let _ = std::fs::create_dir_all(&run.artifacts);
    let body = run.body(&mut report);
    let interrupted = tokio::select! {
        r = body => {
            if let Err(Broke(e)) = r {
                report.outcome = Outcome::Error;
                report.error = Some(e);
            }
            false
        }
        _ = tokio::signal::ctrl_c() => true,
    };
    if interrupted {
        report.outcome = Outcome::Error;
        report.error = Some("interrupted (Ctrl-C); the run's VMs are deleted".into());
    }
    beat.abort();
    // Cleanup: the daemon deletes the run's VMs but the kept ones.
    let t = Instant::now();
    say("cleanup: the run's VMs are deleted");
    let keep: Vec<String> = report.cases.iter().filter(|c| c.kept).map(|c| c.vm.clone()).collect();
    let mut summary = report.summary();
    summary.ms = ms(started);
    let fin =
        TestRunFinishRequest { state: report.outcome.as_str().into(), summary: serde_json::to_value(&summary).unwrap_or_default(), keep };
    if let Err(e) = client.test_run_finish(&run.id, &fin).await {
        // Ended already (abandoned) or refused: removing it deletes whatever is left.
        let _ = client.test_run_delete(&run.id).await;
        if report.error.is_none() {
            report.outcome = Outcome::Error;
            report.error = Some(format!("the run could not be finished ({e}); it was removed with its VMs"));
        }
    }
    report.stages.push(Stage { name: "cleanup".into(), ms: ms(t), detail: None });
    report.ms = ms(started);
    // A report cannot hold the time of its own writing: that stage is only streamed.
    let t = Instant::now();
    match report.write(&opts.report_dir) {
        Ok(()) => say(&format!("report: written to {} ({} ms)", opts.report_dir.display(), ms(t))),
        Err(e) => {
            report.outcome = Outcome::Error;
            report.error = Some(format!("cannot write the report to {}: {e}", opts.report_dir.display()));
        }
    }
    report
}

fn finish_early(mut report: RunReport, opts: &Options, error: String, started: Instant) -> RunReport {
    report.outcome = Outcome::Error;
    report.error = Some(error);
    report.ms = ms(started);
    let _ = report.write(&opts.report_dir);
    report
}

/// `host doctor` on the daemon's host (blocking failures stop the run, with their fixes) and
/// the image; whether the image runs cloud-init.
async fn prerequisites(client: &Client, spec: &Spec, report: &mut RunReport) -> Result<bool, Broke> {
    // The report `kvmctl host doctor` recorded on the daemon's host; a host where it never
    // ran is judged by the daemon's own status (libvirt reachable) alone.
    let doctor: Option<DoctorReport> = match client.get("/v1/host").await {
        Ok(d) => Some(d),
        Err(ClientError::Api { status: 404, .. }) => None,
        Err(e) => return Err(Broke(format!("cannot ask the daemon for its host report: {e}"))),
    };
    let status = client.status().await.map_err(|e| Broke(format!("cannot ask the daemon for its status: {e}")))?;
    if !status.hypervisor.reachable {
        return Err(Broke(format!(
            "the daemon cannot reach libvirt at {}: {}",
            status.hypervisor.uri,
            status.hypervisor.error.clone().unwrap_or_default()
        )));
    }
    let status = Some(status);
    let nodes = client.node_list().await.unwrap_or_default();
    // Nodes are listed for admins only; a tenant's report says less.
    let cpus: u64 = nodes.iter().map(|n| n.cpus).sum();
    let nodes = if nodes.is_empty() { String::new() } else { format!("; {} node(s), {cpus} CPUs", nodes.len()) };
    report.machine = format!(
        "daemon on {} ({}{nodes}; libvirt {})",
        status.as_ref().and_then(|s| s.hypervisor.hostname.clone()).unwrap_or_else(|| "?".into()),
        match status.as_ref().map(|s| s.hypervisor.domain_type.as_str()) {
            Some("kvm") => "KVM",
            _ => "TCG emulation, no KVM",
        },
        status.as_ref().and_then(|s| s.hypervisor.libvirt_version.clone()).unwrap_or_else(|| "?".into()),
    );
    if doctor.is_none() {
        report.machine.push_str("; no `kvmctl host doctor` report recorded there");
    }
    if let Some(doctor) = doctor.filter(|d| !d.blocking_failures.is_empty()) {
        let fixes: Vec<String> = doctor
            .checks
            .iter()
            .filter(|c| doctor.blocking_failures.contains(&c.id))
            .map(|c| format!("{}: {} (fix: {})", c.id, c.evidence, c.fix))
            .collect();
        return Err(Broke(format!("the host cannot run VMs: {}; `kvmctl host doctor` says more", fixes.join("; "))));
    }
    let image = client.image_get(&spec.image).await.map_err(|e| match e {
        ClientError::Api { status: 404, .. } => Broke(format!(
            "there is no image {}; `kvmctl image list` shows them, `kvmctl image build {}` makes one",
            spec.image, spec.image
        )),
        e => e.into(),
    })?;
    Ok(image.template.cloud_init)
}

impl Run<'_> {
    fn check_lost(&self) -> Result<(), Broke> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Broke(format!("the daemon ended run {} (its grace period passed without a heartbeat); its VMs are gone", self.id)));
        }
        Ok(())
    }

    fn stage(&self, report: &mut RunReport, name: &str, t: Instant, detail: Option<String>) {
        let ms = ms(t);
        (self.say)(&format!("{name}: {:.1} s{}", ms as f64 / 1000.0, detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()));
        report.stages.push(Stage { name: name.into(), ms, detail });
    }

    fn ready_stage(&self) -> &'static str {
        if self.cloud_init {
            "cloud-init"
        } else {
            "ssh"
        }
    }

    async fn body(&self, report: &mut RunReport) -> Result<(), Broke> {
        let spec = self.spec;
        // overlay + seed + define + start: one create on the daemon.
        let t = Instant::now();
        (self.say)(&format!("overlay, seed and boot of {} from {}", self.base, spec.image));
        let size = spec.size.unwrap_or(crate::spec::Size { vcpus: None, memory_mib: None, disk_gib: None });
        let req = VmCreateRequest {
            name: self.base.clone(),
            image: spec.image.clone(),
            plan: spec.plan.clone(),
            vcpus: size.vcpus,
            memory_mib: size.memory_mib,
            disk_gib: size.disk_gib,
            user: spec.user.clone(),
            ttl_seconds: Some(spec.ttl.as_secs()),
            test_run: Some(self.id.clone()),
            ..Default::default()
        };
        self.client.vm_create(&req).await?;
        self.stage(report, "overlay+seed+start", t, None);
        let vm = match self.wait_ready(&self.base, self.ready_stage()).await {
            Ok(vm) => vm,
            Err(e) => {
                report.base_console_tail = self.client.vm_console_log(&self.base, 80).await.ok();
                return Err(e);
            }
        };
        for (name, detail) in boot_stages(&vm) {
            report.stages.push(Stage { name: name.0, ms: name.1, detail });
        }
        self.check_lost()?;
        let t = Instant::now();
        self.guest_sync().await?;
        self.client.snapshot_create(&self.base, &SnapshotCreateRequest { name: "clean-boot".into(), ..Default::default() }).await?;
        self.stage(report, "snapshot clean-boot", t, None);

        let t = Instant::now();
        let mut bytes = 0;
        for u in &spec.upload {
            bytes += self.client.vm_upload(&self.base, &u.from, &u.to).await?;
        }
        self.stage(report, "upload", t, Some(format!("{} item(s), {bytes} bytes", spec.upload.len())));

        let t = Instant::now();
        for (i, step) in spec.provision.iter().enumerate() {
            self.check_lost()?;
            (self.say)(&format!("provision: {}", step.name));
            let r = self.step(&self.base, step, &format!("provision-{i}")).await?;
            let passed = r.passed;
            report.provision.push(r);
            if !passed {
                self.stage(report, "provision", t, Some(format!("step {:?} failed", step.name)));
                report.outcome = Outcome::Failed;
                report.base_console_tail = self.client.vm_console_log(&self.base, 80).await.ok();
                return Ok(());
            }
        }
        self.stage(report, "provision", t, Some(format!("{} step(s)", spec.provision.len())));

        let t = Instant::now();
        // What provisioning wrote may still be in the guest's page cache: a cold case boots
        // from the disk alone.
        self.guest_sync().await?;
        let snap = SnapshotCreateRequest { name: "provisioned".into(), memory: self.opts.warm, ..Default::default() };
        self.client.snapshot_create(&self.base, &snap).await?;
        // The cases are clones: the base is not needed running (a warm clone needs it
        // stopped, and a stopped base leaves the CPUs to the cases).
        self.client.vm_stop(&self.base, &VmStopRequest { force: true, ..Default::default() }).await?;
        self.stage(report, "snapshot provisioned", t, Some(if self.opts.warm { "disk and memory" } else { "disk" }.into()));

        let t = Instant::now();
        let chosen: Vec<&Case> = spec.cases.iter().filter(|c| self.opts.cases.is_empty() || self.opts.cases.contains(&c.name)).collect();
        let gate = Arc::new(tokio::sync::Semaphore::new(self.opts.parallel.max(1)));
        let runs = chosen.iter().map(|c| {
            let gate = gate.clone();
            async move {
                let _slot = gate.acquire().await;
                self.case(c).await
            }
        });
        let results = futures_util::future::join_all(runs).await;
        let mut outcome = report.outcome;
        for r in &results {
            outcome = outcome.and(r.outcome);
        }
        report.cases = results;
        report.outcome = outcome;
        self.stage(report, "cases", t, Some(format!("{} case(s), {} at a time", chosen.len(), self.opts.parallel.max(1))));
        self.check_lost()
    }

    /// Flushes the base VM's page cache to its disk before a disk snapshot.
    async fn guest_sync(&self) -> Result<(), Broke> {
        let out = self.client.vm_exec(&self.base, &VmExecRequest { command: "sync".into(), timeout_seconds: Some(120) }).await?;
        if out.exit_status != 0 {
            return Err(Broke(format!("`sync` in {} failed (exit {}): {}", self.base, out.exit_status, out.stderr.trim())));
        }
        Ok(())
    }

    async fn wait_ready(&self, vm: &str, stage: &str) -> Result<Vm, Broke> {
        self.client.vm_wait(vm, stage, self.opts.boot_timeout.as_secs()).await.map_err(|e| Broke(format!("{vm}: {e}")))
    }

    /// Runs `step` in `vm` (uploading its script first); its log goes to the artifacts.
    async fn step(&self, vm: &str, step: &Step, log: &str) -> Result<StepResult, Broke> {
        if let Some((local, guest)) = &step.script {
            let data = std::fs::read(local).map_err(|e| Broke(format!("cannot read {}: {e}", local.display())))?;
            self.client.vm_file_put(vm, guest, false, data).await?;
        }
        let t = Instant::now();
        let out =
            self.client.vm_exec(vm, &VmExecRequest { command: step.command.clone(), timeout_seconds: Some(step.timeout.as_secs()) }).await;
        let (exit_status, stdout, stderr) = match out {
            Ok(o) => (o.exit_status, o.stdout, o.stderr),
            Err(ClientError::Api { status, body }) if status == 504 || status == 408 => {
                (-1, String::new(), format!("timed out after {} s: {}", step.timeout.as_secs(), body.message))
            }
            Err(e) => return Err(e.into()),
        };
        let file = format!("{log}.log");
        let _ = std::fs::write(
            self.artifacts.join(&file),
            format!("$ {}\nexit {exit_status} after {} ms\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n", step.command, ms(t)),
        );
        Ok(StepResult {
            name: step.name.clone(),
            command: step.command.clone(),
            passed: exit_status == 0,
            exit_status,
            ms: ms(t),
            stdout,
            stderr,
            log: Some(format!("artifacts/{file}")),
        })
    }

    async fn check(&self, vm: &str, check: &Check) -> Result<CheckResult, Broke> {
        let command = check.command();
        let t = Instant::now();
        let (status, pattern) = check.expects();
        let out =
            self.client.vm_exec(vm, &VmExecRequest { command: command.clone(), timeout_seconds: Some(check.timeout.as_secs()) }).await;
        let (exit_status, stdout, stderr) = match out {
            Ok(o) => (o.exit_status, o.stdout, o.stderr),
            Err(ClientError::Api { status, body }) if status == 504 || status == 408 => (-1, String::new(), body.message),
            Err(e) => return Err(e.into()),
        };
        let mut failure = None;
        if exit_status != status {
            failure = Some(format!("exit {exit_status}, expected {status}"));
        } else if let Some(p) = pattern {
            let re = regex::Regex::new(p).map_err(|e| Broke(format!("check {}: {e}", check.name)))?;
            if !re.is_match(&stdout) {
                failure = Some(format!("the output does not match /{p}/"));
            }
        }
        let expected = match pattern {
            Some(p) => format!("exit {status} and output matching /{p}/"),
            None => format!("exit {status}"),
        };
        Ok(CheckResult {
            name: check.name.clone(),
            command,
            passed: failure.is_none(),
            exit_status,
            expected,
            failure,
            stdout,
            stderr,
            ms: ms(t),
        })
    }

    /// One case: its clone, steps, checks, collected files; removed unless kept.
    async fn case(&self, case: &Case) -> CaseResult {
        let t = Instant::now();
        let vm = format!("{}-{}", self.id, case.name);
        let mut r = CaseResult {
            name: case.name.clone(),
            vm: vm.clone(),
            outcome: Outcome::Passed,
            start: if self.opts.warm { "warm" } else { "cold" }.into(),
            ip: None,
            ready_ms: 0,
            ms: 0,
            stages: Vec::new(),
            steps: Vec::new(),
            checks: Vec::new(),
            error: None,
            console_tail: None,
            kept: false,
            artifacts: Vec::new(),
        };
        let made = self.case_body(case, &vm, &mut r).await;
        if let Err(Broke(e)) = &made {
            r.error = Some(e.clone());
            r.outcome = Outcome::Error;
        }
        let created = !(made.is_err() && r.stages.is_empty());
        if r.outcome != Outcome::Passed && created {
            if let Ok(tail) = self.client.vm_console_log(&vm, 60).await {
                let file = format!("{}.console.log", case.name);
                let _ = std::fs::write(self.artifacts.join(&file), &tail);
                r.artifacts.push(format!("artifacts/{file}"));
                r.console_tail = Some(tail);
            }
        }
        if created {
            self.live.fetch_sub(1, Ordering::SeqCst);
            if r.outcome != Outcome::Passed && self.opts.keep_on_failure {
                r.kept = true;
                (self.say)(&format!("case {}: {} — kept: kvmctl vm ssh {vm}", case.name, r.outcome.as_str()));
            } else {
                // On an error here the run's finish deletes it.
                let _ = self.client.vm_delete(&vm, false).await;
            }
        }
        let _ = self.ended.send(());
        r.ms = ms(t);
        if !r.kept {
            (self.say)(&format!("case {}: {} in {:.1} s", case.name, r.outcome.as_str(), r.ms as f64 / 1000.0));
        }
        r
    }

    async fn case_body(&self, case: &Case, vm: &str, r: &mut CaseResult) -> Result<(), Broke> {
        self.check_lost()?;
        let t = Instant::now();
        let req = VmCloneRequest {
            name: vm.to_owned(),
            from_snapshot: Some("provisioned".into()),
            mode: Some("linked".into()),
            ttl_seconds: Some(self.spec.ttl.as_secs()),
            warm: self.opts.warm,
            test_run: Some(self.id.clone()),
            ..Default::default()
        };
        // A full node (or quota) refuses a clone while other cases hold it: this case waits
        // for one of them to end, as --parallel asks more than the node has.
        let mut waited = false;
        loop {
            let made = {
                let _one = self.clone_lock.lock().await;
                self.client.vm_clone(&self.base, &req).await
            };
            match made {
                Ok(_) => break,
                Err(ClientError::Api { body, .. })
                    if (body.error == "insufficient_capacity" || body.error == "quota_exceeded")
                        && self.live.load(Ordering::SeqCst) > 0
                        && t.elapsed() < self.opts.boot_timeout =>
                {
                    if !waited {
                        (self.say)(&format!("case {}: waiting for room ({})", case.name, body.message));
                        waited = true;
                    }
                    let mut ended = self.ended.subscribe();
                    let _ = tokio::time::timeout(Duration::from_secs(5), ended.recv()).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.live.fetch_add(1, Ordering::SeqCst);
        r.stages.push(Stage { name: if self.opts.warm { "wake" } else { "clone+start" }.into(), ms: ms(t), detail: None });
        let stage = if self.opts.warm { "ssh" } else { self.ready_stage() };
        let ready = self.wait_ready(vm, stage).await?;
        r.ready_ms = ms(t);
        r.ip = ready.ip.clone();
        r.stages.push(Stage { name: "ready".into(), ms: r.ready_ms, detail: Some(stage.into()) });
        for (i, step) in case.steps.iter().enumerate() {
            let s = self.step(vm, step, &format!("{}-step-{i}", case.name)).await?;
            let ok = s.passed;
            r.artifacts.extend(s.log.clone());
            r.steps.push(s);
            if !ok {
                r.outcome = Outcome::Failed;
                return Ok(());
            }
        }
        for check in &case.checks {
            self.check_lost()?;
            let c = self.check(vm, check).await?;
            if !c.passed {
                r.outcome = Outcome::Failed;
            }
            r.checks.push(c);
        }
        for path in &self.spec.collect {
            let base = path.trim_end_matches('/').rsplit('/').next().unwrap_or("file");
            let name = format!("{}-{}", case.name, base.replace(|c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-', "_"));
            let local = self.artifacts.join(&name);
            let mut f = tokio::fs::File::create(&local).await.map_err(|e| Broke(format!("cannot create {}: {e}", local.display())))?;
            match self.client.vm_file_download(vm, path, &mut f).await {
                Ok(_) => r.artifacts.push(format!("artifacts/{name}")),
                Err(e) => {
                    let _ = tokio::fs::remove_file(&local).await;
                    (self.say)(&format!("case {}: cannot collect {path}: {e}", case.name));
                }
            }
        }
        Ok(())
    }
}

/// The boot's stages as the daemon timed them: (name, ms since start), detail.
fn boot_stages(vm: &Vm) -> Vec<((String, u64), Option<String>)> {
    let at = |s: &str| vm.readiness.iter().find(|r| r.stage == s).and_then(|r| r.elapsed_ms.map(|e| (e.max(0) as u64, r.detail.clone())));
    let mut out = Vec::new();
    let mut last = 0;
    for (stage, name) in [("booting", "boot"), ("address", "address"), ("ssh_login", "ssh"), ("cloud_init", "cloud-init")] {
        if let Some((ms, detail)) = at(stage) {
            out.push(((name.to_owned(), ms.saturating_sub(last)), detail));
            last = ms.max(last);
        }
    }
    out
}
