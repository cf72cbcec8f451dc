//! The test spec (YAML): what a run boots, uploads, provisions and checks. Parsing is strict
//! (unknown keys are errors) and every error names the file, the line and the field, so a
//! typo never turns into a silently skipped check. `docs/testing-vms.md` documents the format
//! with a complete example.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A bad spec: where (line, when known) and which field, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {field}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct SpecError {
    pub file: String,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    image: String,
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    size: Option<Size>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    grace: Option<String>,
    #[serde(default)]
    upload: Vec<Upload>,
    #[serde(default)]
    provision: Vec<RawStep>,
    #[serde(default)]
    checks: Vec<RawCheck>,
    #[serde(default)]
    collect: Vec<String>,
    #[serde(default)]
    cases: Vec<RawCase>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    /// A file or directory, relative to the spec's directory.
    pub from: PathBuf,
    /// An absolute path in the guest.
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    run: Option<String>,
    /// A local script (relative to the spec), uploaded and run with `sh`.
    #[serde(default)]
    script: Option<PathBuf>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    sudo: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    run: Option<String>,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    expect_status: Option<i32>,
    #[serde(default)]
    expect_output: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    sudo: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    #[serde(default)]
    steps: Vec<RawStep>,
    #[serde(default)]
    checks: Vec<RawCheck>,
}

/// A command run in the guest as its user (through `sudo -n` with `sudo: true`), with its
/// environment and a time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub command: String,
    /// A local script to upload first (the command then runs it).
    pub script: Option<(PathBuf, String)>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// A command: its exit status, and its standard output against a pattern.
    Command { command: String, status: i32, output: Option<String> },
    /// A path exists in the guest (and its content matches, with `expect_output`).
    File { path: String, output: Option<String> },
    /// A TCP port is listening in the guest.
    Port(u16),
    /// A systemd unit is active.
    Service(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub kind: CheckKind,
    pub sudo: bool,
    pub timeout: Duration,
}

impl Check {
    /// The shell command that performs the check in the guest.
    pub fn command(&self) -> String {
        let cmd = match &self.kind {
            CheckKind::Command { command, .. } => command.clone(),
            CheckKind::File { path, output: None } => format!("test -e {}", quote(path)),
            CheckKind::File { path, output: Some(_) } => format!("cat {}", quote(path)),
            CheckKind::Port(p) => format!(
                "(ss -ltnH 2>/dev/null || netstat -ltn 2>/dev/null) | awk '{{print $4}}' | grep -qE '[:.]{p}$' || {{ echo 'nothing listens on TCP port {p}'; exit 1; }}"
            ),
            CheckKind::Service(u) => format!("systemctl is-active {}", quote(u)),
        };
        if self.sudo {
            format!("sudo -n sh -c {}", quote(&cmd))
        } else {
            cmd
        }
    }

    /// The exit status it expects, and the pattern its output must match.
    pub fn expects(&self) -> (i32, Option<&str>) {
        match &self.kind {
            CheckKind::Command { status, output, .. } => (*status, output.as_deref()),
            CheckKind::File { output, .. } => (0, output.as_deref()),
            _ => (0, None),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub name: String,
    pub steps: Vec<Step>,
    pub checks: Vec<Check>,
}

/// A validated spec, with paths resolved against its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub image: String,
    pub plan: Option<String>,
    pub size: Option<Size>,
    pub user: Option<String>,
    pub ttl: Duration,
    pub grace: Duration,
    pub upload: Vec<Upload>,
    pub provision: Vec<Step>,
    /// Guest paths copied into the report's artifacts from every case.
    pub collect: Vec<String>,
    pub cases: Vec<Case>,
}

const STEP_TIMEOUT: Duration = Duration::from_secs(600);
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest case name: the run's VM names are `<run id>-<case>` (11 + 1 + 51 = 63).
pub const CASE_NAME_MAX: usize = 51;

/// One argument as the guest's shell reads it back unchanged.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `90`, `90s`, `10m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a duration such as 90s, 10m or 2h"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?} is not a duration such as 90s, 10m or 2h")),
    };
    n.checked_mul(mult).map(Duration::from_secs).ok_or_else(|| format!("{s:?} is too long"))
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

struct Ctx<'a> {
    file: String,
    text: &'a str,
    dir: &'a Path,
}

impl Ctx<'_> {
    /// The first line (1-based) holding `key:` followed by `value`, else holding `key:`.
    fn line_of(&self, key: &str, value: Option<&str>) -> Option<usize> {
        let key = key.rsplit('.').next().unwrap_or(key);
        let key = key.split('[').next().unwrap_or(key);
        let has_key = |l: &str| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&format!("{key}:"))
        };
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            if let Some(i) = self.text.lines().position(|l| has_key(l) && l.contains(v)) {
                return Some(i + 1);
            }
        }
        self.text.lines().position(has_key).map(|i| i + 1)
    }

    fn err(&self, field: &str, value: Option<&str>, message: impl Into<String>) -> SpecError {
        SpecError { file: self.file.clone(), line: self.line_of(field, value), field: field.into(), message: message.into() }
    }

    fn duration(&self, field: &str, v: &Option<String>, default: Duration, range: (u64, u64)) -> Result<Duration, SpecError> {
        let Some(s) = v else { return Ok(default) };
        let d = parse_duration(s).map_err(|m| self.err(field, Some(s), m))?;
        if d.as_secs() < range.0 || d.as_secs() > range.1 {
            return Err(self.err(field, Some(s), format!("{s} is outside {}s to {}s", range.0, range.1)));
        }
        Ok(d)
    }

    fn step(&self, field: &str, i: usize, raw: &RawStep) -> Result<Step, SpecError> {
        let timeout = self.duration(&format!("{field}.timeout"), &raw.timeout, STEP_TIMEOUT, (1, 24 * 3600))?;
        let mut env = String::new();
        for (k, v) in &raw.env {
            let ok = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(self.err(&format!("{field}.env"), Some(k), format!("{k:?} is not an environment variable name")));
            }
            env.push_str(&format!("{k}={} ", quote(v)));
        }
        let (body, script, default_name) = match (&raw.run, &raw.script) {
            (Some(run), None) => (run.clone(), None, run.lines().next().unwrap_or_default().chars().take(60).collect::<String>()),
            (None, Some(path)) => {
                let local = self.dir.join(path);
                if !local.is_file() {
                    return Err(self.err(
                        &format!("{field}.script"),
                        Some(&path.display().to_string()),
                        format!("{} is not a file", local.display()),
                    ));
                }
                let guest = format!("/tmp/kvmctl-step-{i}.sh");
                (format!("sh {}", quote(&guest)), Some((local, guest)), path.display().to_string())
            }
            _ => return Err(self.err(field, None, "a step has one of run (a command) or script (a local file)")),
        };
        let inner = if env.is_empty() { body } else { format!("env {env}sh -c {}", quote(&body)) };
        let command = if raw.sudo { format!("sudo -n sh -c {}", quote(&inner)) } else { inner };
        Ok(Step { name: raw.name.clone().unwrap_or(default_name), command, script, timeout })
    }

    fn check(&self, field: &str, raw: &RawCheck) -> Result<Check, SpecError> {
        let timeout = self.duration(&format!("{field}.timeout"), &raw.timeout, CHECK_TIMEOUT, (1, 3600))?;
        if let Some(p) = &raw.expect_output {
            regex::Regex::new(p)
                .map_err(|e| self.err(&format!("{field}.expect_output"), Some(p), format!("not a regular expression: {e}")))?;
        }
        let kinds = [raw.run.is_some(), raw.file.is_some(), raw.port.is_some(), raw.service.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(self.err(field, raw.name.as_deref(), "a check has exactly one of run, file, port or service"));
        }
        if raw.expect_status.is_some() && raw.run.is_none() {
            return Err(self.err(&format!("{field}.expect_status"), None, "only run checks have an exit status to expect"));
        }
        if raw.expect_output.is_some() && raw.port.is_some() | raw.service.is_some() {
            return Err(self.err(&format!("{field}.expect_output"), None, "only run and file checks have output to match"));
        }
        let (kind, default_name) = if let Some(c) = &raw.run {
            let name = c.lines().next().unwrap_or_default().chars().take(60).collect();
            (CheckKind::Command { command: c.clone(), status: raw.expect_status.unwrap_or(0), output: raw.expect_output.clone() }, name)
        } else if let Some(f) = &raw.file {
            if !f.starts_with('/') {
                return Err(self.err(&format!("{field}.file"), Some(f), "the guest path must be absolute"));
            }
            (CheckKind::File { path: f.clone(), output: raw.expect_output.clone() }, format!("file {f}"))
        } else if let Some(p) = raw.port {
            if p == 0 {
                return Err(self.err(&format!("{field}.port"), None, "port 0 is not a port"));
            }
            (CheckKind::Port(p), format!("port {p} listening"))
        } else {
            let u = raw.service.clone().unwrap_or_default();
            if u.is_empty() || !u.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c)) {
                return Err(self.err(&format!("{field}.service"), Some(&u), format!("{u:?} is not a systemd unit name")));
            }
            (CheckKind::Service(u.clone()), format!("service {u} active"))
        };
        Ok(Check { name: raw.name.clone().unwrap_or(default_name), kind, sudo: raw.sudo, timeout })
    }
}

/// Reads and validates the spec at `path` (relative paths in it are against its directory).
pub fn load(path: &Path) -> Result<Spec, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        file: path.display().to_string(),
        line: None,
        field: "spec".into(),
        message: format!("cannot read it: {e}"),
    })?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    parse(&path.display().to_string(), &text, dir)
}

/// Validates spec `text` (named `file` in errors); relative paths are against `dir`.
pub fn parse(file: &str, text: &str, dir: &Path) -> Result<Spec, SpecError> {
    let cx = Ctx { file: file.to_owned(), text, dir };
    let raw: RawSpec = serde_yaml::from_str(text).map_err(|e| SpecError {
        file: file.to_owned(),
        line: e.location().map(|l| l.line()),
        field: "spec".into(),
        message: e.to_string().split(" at line ").next().unwrap_or_default().to_owned(),
    })?;
    if !dns_label(&raw.name) || raw.name.len() > 40 {
        return Err(cx.err("name", Some(&raw.name), "a lower-case DNS label of at most 40 characters (a-z, 0-9, -)"));
    }
    if raw.image.is_empty() {
        return Err(cx.err("image", None, "name an image the daemon has (`kvmctl image list`)"));
    }
    if raw.plan.is_some() && raw.size.is_some() {
        return Err(cx.err("size", None, "give a plan or a size, not both"));
    }
    let ttl = cx.duration("ttl", &raw.ttl, Duration::from_secs(2 * 3600), (60, 30 * 86400))?;
    let grace = cx.duration("grace", &raw.grace, Duration::from_secs(60), (10, 3600))?;
    for (i, u) in raw.upload.iter().enumerate() {
        let local = dir.join(&u.from);
        if !local.exists() {
            return Err(cx.err(
                &format!("upload[{i}].from"),
                Some(&u.from.display().to_string()),
                format!("{} does not exist", local.display()),
            ));
        }
        if !u.to.starts_with('/') {
            return Err(cx.err(&format!("upload[{i}].to"), Some(&u.to), "the guest path must be absolute"));
        }
    }
    for (i, c) in raw.collect.iter().enumerate() {
        if !c.starts_with('/') {
            return Err(cx.err(&format!("collect[{i}]"), Some(c), "the guest path must be absolute"));
        }
    }
    let provision =
        raw.provision.iter().enumerate().map(|(i, s)| cx.step(&format!("provision[{i}]"), i, s)).collect::<Result<Vec<_>, _>>()?;
    let common = raw.checks.iter().enumerate().map(|(i, c)| cx.check(&format!("checks[{i}]"), c)).collect::<Result<Vec<_>, _>>()?;
    let raw_cases = if raw.cases.is_empty() { vec![RawCase { name: "default".into(), steps: vec![], checks: vec![] }] } else { raw.cases };
    let mut cases = Vec::new();
    for (i, c) in raw_cases.iter().enumerate() {
        if !dns_label(&c.name) || c.name.len() > CASE_NAME_MAX {
            return Err(cx.err(
                &format!("cases[{i}].name"),
                Some(&c.name),
                format!("{:?} is not a lower-case DNS label of at most {CASE_NAME_MAX} characters", c.name),
            ));
        }
        if cases.iter().any(|k: &Case| k.name == c.name) {
            return Err(cx.err(&format!("cases[{i}].name"), Some(&c.name), format!("two cases are named {}", c.name)));
        }
        let steps = c
            .steps
            .iter()
            .enumerate()
            .map(|(j, s)| cx.step(&format!("cases[{i}].steps[{j}]"), 100 + 100 * i + j, s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut checks = common.clone();
        for (j, k) in c.checks.iter().enumerate() {
            checks.push(cx.check(&format!("cases[{i}].checks[{j}]"), k)?);
        }
        if checks.is_empty() {
            return Err(cx.err(&format!("cases[{i}]"), Some(&c.name), "a case with no checks tests nothing; add checks"));
        }
        cases.push(Case { name: c.name.clone(), steps, checks });
    }
    Ok(Spec {
        name: raw.name,
        image: raw.image,
        plan: raw.plan,
        size: raw.size,
        user: raw.user,
        ttl,
        grace,
        upload: raw.upload.into_iter().map(|u| Upload { from: dir.join(u.from), to: u.to }).collect(),
        provision,
        collect: raw.collect,
        cases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name: hello\nimage: debian-12\nsize: {vcpus: 1, memory_mib: 512}\n\
        provision:\n  - name: install\n    run: echo hi\n    env: {PORT: \"80 80\"}\n    timeout: 5m\n\
        checks:\n  - name: answers\n    run: curl -s localhost\n    expect_output: hello\n  - port: 22\n\
        cases:\n  - name: one\n  - name: two\n    checks:\n      - file: /etc/hostname\n";

    fn p(text: &str) -> Result<Spec, SpecError> {
        parse("spec.yaml", text, Path::new("."))
    }

    #[test]
    fn a_good_spec_parses_with_its_defaults() {
        let s = p(GOOD).unwrap();
        assert_eq!(s.cases.len(), 2);
        assert_eq!(s.cases[0].checks.len(), 2);
        assert_eq!(s.cases[1].checks.len(), 3);
        assert_eq!(s.provision[0].timeout, Duration::from_secs(300));
        assert_eq!(s.provision[0].command, "env PORT='80 80' sh -c 'echo hi'");
        assert_eq!(s.grace, Duration::from_secs(60));
        let only = p("name: a\nimage: i\nchecks:\n  - run: 'true'\n").unwrap();
        assert_eq!(only.cases.len(), 1, "no cases: one named default");
        assert_eq!(only.cases[0].name, "default");
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let e = p(&GOOD.replace("  - name: two", "  - name: Two_Bad")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(16), "cases[1].name"), "{e}");
        let e = p(&GOOD.replace("    expect_output: hello", "    expect_ouput: hello")).unwrap_err();
        assert_eq!(e.line, Some(12), "{e}");
        assert!(e.message.contains("unknown field"), "{e}");
        let e = p(&GOOD.replace("timeout: 5m", "timeout: 5 parsecs")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(8), "provision[0].timeout"), "{e}");
        let e = p(&GOOD.replace("expect_output: hello", "expect_output: '(unclosed'")).unwrap_err();
        assert_eq!(e.field, "checks[0].expect_output", "{e}");
        let e = p(&GOOD.replace("  - port: 22", "  - port: 22\n    service: ssh")).unwrap_err();
        assert_eq!(e.field, "checks[1]", "{e}");
        let e = p(&GOOD.replace("env: {PORT", "env: {\"BAD KEY\"")).unwrap_err();
        assert_eq!(e.field, "provision[0].env", "{e}");
        let e = p("name: a\nimage: i\n").unwrap_err();
        assert!(e.message.contains("tests nothing"), "{e}");
        assert!(e.to_string().starts_with("spec.yaml:"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("").is_err());
    }
}
