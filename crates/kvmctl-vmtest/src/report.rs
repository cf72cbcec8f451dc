//! What a run found, and the reports written from it: Markdown for people, JUnit XML for CI
//! systems, JSON for scripts (and, shortened, the summary the daemon keeps).

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every check passed.
    Passed,
    /// A provisioning step or a check failed: what is under test is wrong (exit 1).
    Failed,
    /// The runner or the environment failed (exit 2).
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Error => "error",
        }
    }

    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Passed => 0,
            Outcome::Failed => 1,
            Outcome::Error => 2,
        }
    }

    /// The worse of two.
    pub fn and(self, other: Outcome) -> Outcome {
        match (self, other) {
            (Outcome::Error, _) | (_, Outcome::Error) => Outcome::Error,
            (Outcome::Failed, _) | (_, Outcome::Failed) => Outcome::Failed,
            _ => Outcome::Passed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A provisioning or case step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    pub name: String,
    pub command: String,
    pub exit_status: i32,
    pub passed: bool,
    pub ms: u64,
    pub stdout: String,
    pub stderr: String,
    /// Its log in the artifacts directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub command: String,
    pub passed: bool,
    pub exit_status: i32,
    /// What was expected, in words.
    pub expected: String,
    /// Why it failed, in words (absent when it passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseResult {
    pub name: String,
    pub vm: String,
    pub outcome: Outcome,
    /// `cold` (booted) or `warm` (woken from the provisioned memory snapshot).
    pub start: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// From the clone request to SSH (and cloud-init) ready.
    pub ready_ms: u64,
    pub ms: u64,
    pub stages: Vec<Stage>,
    pub steps: Vec<StepResult>,
    pub checks: Vec<CheckResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_tail: Option<String>,
    /// Kept after a failure (`--keep-on-failure`).
    #[serde(default)]
    pub kept: bool,
    #[serde(default)]
    pub artifacts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    pub run_id: String,
    pub spec: String,
    pub image: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix seconds.
    pub started_at: i64,
    pub ms: u64,
    /// Where it ran: the daemon's host, its domain type (`kvm` or `qemu` for TCG), vCPUs.
    pub machine: String,
    pub stages: Vec<Stage>,
    pub provision: Vec<StepResult>,
    pub cases: Vec<CaseResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_console_tail: Option<String>,
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[... {} more bytes in the artifacts]", &s[..end], s.len() - end)
}

impl RunReport {
    /// The summary the daemon keeps: outputs shortened so it stays far below its limit.
    pub fn summary(&self) -> RunReport {
        let mut s = self.clone();
        let short = |t: &mut String| *t = cut(t, 2048);
        for p in &mut s.provision {
            short(&mut p.stdout);
            short(&mut p.stderr);
        }
        for c in &mut s.cases {
            c.console_tail = c.console_tail.as_deref().map(|t| cut(t, 4096));
            for st in &mut c.steps {
                short(&mut st.stdout);
                short(&mut st.stderr);
            }
            for k in &mut c.checks {
                short(&mut k.stdout);
                short(&mut k.stderr);
            }
        }
        s.base_console_tail = s.base_console_tail.as_deref().map(|t| cut(t, 4096));
        s
    }

    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let mark = |o: Outcome| match o {
            Outcome::Passed => "✅ passed",
            Outcome::Failed => "❌ failed",
            Outcome::Error => "⚠️ error",
        };
        let _ = writeln!(m, "# kvmctl test: {} ({})\n", self.spec, mark(self.outcome));
        let _ = writeln!(
            m,
            "- run: `{}`\n- image: `{}`\n- machine: {}\n- total: {:.1} s",
            self.run_id,
            self.image,
            self.machine,
            self.ms as f64 / 1000.0
        );
        if let Some(e) = &self.error {
            let _ = writeln!(m, "- **error**: {e}");
        }
        let _ = writeln!(m, "\n## Cases\n\n| case | result | start | ready | checks passed | time |\n|---|---|---|---|---|---|");
        for c in &self.cases {
            let passed = c.checks.iter().filter(|k| k.passed).count();
            let _ = writeln!(
                m,
                "| {} | {} | {} | {:.1} s | {passed}/{} | {:.1} s |",
                c.name,
                mark(c.outcome),
                c.start,
                c.ready_ms as f64 / 1000.0,
                c.checks.len(),
                c.ms as f64 / 1000.0
            );
        }
        let _ = writeln!(m, "\n## Stages\n\n| stage | time | detail |\n|---|---|---|");
        for s in &self.stages {
            let _ = writeln!(m, "| {} | {:.2} s | {} |", s.name, s.ms as f64 / 1000.0, s.detail.as_deref().unwrap_or(""));
        }
        if !self.provision.is_empty() {
            let _ = writeln!(m, "\n## Provisioning\n");
            for p in &self.provision {
                let _ = writeln!(m, "### {} {}\n", if p.passed { "✅" } else { "❌" }, p.name);
                let _ = writeln!(
                    m,
                    "`{}`: exit {} in {:.1} s{}\n",
                    p.command,
                    p.exit_status,
                    p.ms as f64 / 1000.0,
                    p.log.as_ref().map(|l| format!(" (log: `{l}`)")).unwrap_or_default()
                );
                if !p.passed {
                    output(&mut m, &p.stdout, &p.stderr);
                }
            }
        }
        for c in &self.cases {
            let _ = writeln!(m, "\n## Case {} ({})\n", c.name, mark(c.outcome));
            let _ = writeln!(
                m,
                "VM `{}`{}; ready in {:.1} s ({}).",
                c.vm,
                c.ip.as_ref().map(|i| format!(" at {i}")).unwrap_or_default(),
                c.ready_ms as f64 / 1000.0,
                c.start
            );
            if c.kept {
                let _ = writeln!(
                    m,
                    "\nKept for you: `kvmctl vm ssh {}` (it is deleted when its TTL runs out, or `kvmctl vm rm {}`).",
                    c.vm, c.vm
                );
            }
            if let Some(e) = &c.error {
                let _ = writeln!(m, "\n**error**: {e}");
            }
            if !c.stages.is_empty() {
                let stages: Vec<String> = c.stages.iter().map(|s| format!("{} {:.2} s", s.name, s.ms as f64 / 1000.0)).collect();
                let _ = writeln!(m, "\nStages: {}.", stages.join(", "));
            }
            for s in &c.steps {
                let _ = writeln!(m, "\n- step {} {}: exit {}", if s.passed { "✅" } else { "❌" }, s.name, s.exit_status);
                if !s.passed {
                    output(&mut m, &s.stdout, &s.stderr);
                }
            }
            for k in &c.checks {
                let _ = writeln!(m, "\n### {} {}\n", if k.passed { "✅" } else { "❌" }, k.name);
                let _ = writeln!(m, "`{}` (expected {}; exit {}, {:.2} s)\n", k.command, k.expected, k.exit_status, k.ms as f64 / 1000.0);
                if let Some(f) = &k.failure {
                    let _ = writeln!(m, "**{f}**\n");
                }
                output(&mut m, &k.stdout, &k.stderr);
            }
            if let Some(t) = &c.console_tail {
                let _ = writeln!(m, "\n### Console (last lines)\n\n```\n{}\n```", cut(t.trim_end(), 8192).replace("```", "'''"));
            }
            if !c.artifacts.is_empty() {
                let _ = writeln!(m, "\nArtifacts: {}", c.artifacts.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", "));
            }
        }
        if let Some(t) = &self.base_console_tail {
            let _ = writeln!(m, "\n## Console of the base VM (last lines)\n\n```\n{}\n```", cut(t.trim_end(), 8192).replace("```", "'''"));
        }
        m
    }

    /// JUnit XML: one suite for provisioning, one per case (each check a test case).
    pub fn junit(&self) -> String {
        use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
        let secs = |ms: u64| std::time::Duration::from_millis(ms);
        let mut report = Report::new(format!("kvmctl test {}", self.spec));
        report.set_time(secs(self.ms));
        let mut prov = TestSuite::new(format!("{}/provision", self.spec));
        for p in &self.provision {
            let status = if p.passed {
                TestCaseStatus::success()
            } else {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(format!("exit {}", p.exit_status));
                s.set_description(cut(&format!("{}\n{}", p.stdout, p.stderr), 65536));
                s
            };
            let mut tc = TestCase::new(p.name.clone(), status);
            tc.set_classname(format!("{}.provision", self.spec));
            tc.set_time(secs(p.ms));
            prov.add_test_case(tc);
        }
        if let (Some(e), true) = (&self.error, self.cases.is_empty()) {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            s.set_message(e.clone());
            let mut tc = TestCase::new("run", s);
            tc.set_classname(format!("{}.run", self.spec));
            prov.add_test_case(tc);
        }
        report.add_test_suite(prov);
        for c in &self.cases {
            let mut suite = TestSuite::new(format!("{}/{}", self.spec, c.name));
            suite.set_time(secs(c.ms));
            if let Some(e) = &c.error {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message(e.clone());
                if let Some(t) = &c.console_tail {
                    s.set_description(cut(t, 65536));
                }
                let mut tc = TestCase::new("case setup", s);
                tc.set_classname(format!("{}.{}", self.spec, c.name));
                suite.add_test_case(tc);
            }
            for k in &c.checks {
                let status = if k.passed {
                    TestCaseStatus::success()
                } else {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(k.failure.clone().unwrap_or_default());
                    s.set_description(cut(&format!("$ {}\n{}\n{}", k.command, k.stdout, k.stderr), 65536));
                    s
                };
                let mut tc = TestCase::new(k.name.clone(), status);
                tc.set_classname(format!("{}.{}", self.spec, c.name));
                tc.set_time(secs(k.ms));
                if !k.passed {
                    if let Some(t) = &c.console_tail {
                        tc.set_system_err(cut(t, 65536));
                    }
                }
                suite.add_test_case(tc);
            }
            report.add_test_suite(suite);
        }
        report.to_string().unwrap_or_else(|e| format!("<!-- cannot render the JUnit report: {e} -->\n"))
    }

    /// Writes `report.md`, `junit.xml` and `report.json` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        std::fs::write(dir.join("junit.xml"), self.junit())?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self).unwrap_or_default())
    }
}

fn output(m: &mut String, stdout: &str, stderr: &str) {
    for (what, text) in [("stdout", stdout), ("stderr", stderr)] {
        if !text.trim().is_empty() {
            let _ = writeln!(m, "{what}:\n\n```\n{}\n```\n", cut(text.trim_end(), 8192).replace("```", "'''"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RunReport {
        let check = |name: &str, passed: bool| CheckResult {
            name: name.into(),
            command: "curl -s localhost <&>".into(),
            passed,
            exit_status: if passed { 0 } else { 7 },
            expected: "exit 0".into(),
            failure: (!passed).then(|| "exit 7, expected 0".into()),
            stdout: "out <b>&".into(),
            stderr: String::new(),
            ms: 12,
        };
        RunReport {
            run_id: "r0123456789".into(),
            spec: "hello".into(),
            image: "debian-12".into(),
            outcome: Outcome::Failed,
            error: None,
            started_at: 0,
            ms: 1000,
            machine: "host (qemu, 2 vCPUs)".into(),
            stages: vec![Stage { name: "boot".into(), ms: 30_000, detail: None }],
            provision: vec![],
            cases: vec![CaseResult {
                name: "one".into(),
                vm: "r0123456789-one".into(),
                outcome: Outcome::Failed,
                start: "cold".into(),
                ip: None,
                ready_ms: 1,
                ms: 2,
                stages: vec![],
                steps: vec![],
                checks: vec![check("ok", true), check("broken", false)],
                error: None,
                console_tail: Some("login: ]]> <".into()),
                kept: false,
                artifacts: vec![],
            }],
            base_console_tail: None,
        }
    }

    #[test]
    fn junit_counts_failures_and_escapes_output() {
        let x = sample().junit();
        assert!(x.contains("tests=\"2\"") && x.contains("failures=\"1\""), "{x}");
        assert!(x.contains("out &lt;b&gt;&amp;"), "{x}");
        assert!(!x.contains("<b>"), "{x}");
    }

    #[test]
    fn markdown_shows_the_failure_with_its_output_and_console() {
        let m = sample().markdown();
        assert!(m.contains("❌ broken") && m.contains("exit 7, expected 0") && m.contains("out <b>&") && m.contains("login:"), "{m}");
    }
}
