//! The functional KVM probe.
//!
//! `/dev/kvm` existing proves nothing: on some hosts (nested virtualisation without proper
//! support) KVM guests make progress so slowly that an ordinary kernel never finishes
//! decompressing. The probe boots a 512-byte boot sector (`probe/probe.asm`: timer
//! interrupts, long mode, 64 MiB of memory writes, then a marker on the serial port) once
//! under TCG as a control and once under KVM, and compares. KVM is functional when it
//! reaches the marker and is not slower than emulation.

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The assembled `probe/probe.asm`.
pub const PROBE_BOOT_SECTOR: &[u8; 512] = include_bytes!("../probe/probe.bin");
pub const MARKER: &str = "KVMCTL-PROBE-OK";

/// One run of the probe guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRun {
    pub accel: String,
    /// Whether the marker appeared before the time limit.
    pub reached_marker: bool,
    pub seconds: f64,
    /// QEMU's own error output, when it failed to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub use kvmctl_types::api::KvmVerdict;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub verdict: KvmVerdict,
    pub tcg: Option<ProbeRun>,
    pub kvm: Option<ProbeRun>,
    /// One sentence for people.
    pub summary: String,
}

/// The verdict from the two runs (pure, so it is tested without QEMU).
pub fn judge(kvm_dev: bool, tcg: Option<ProbeRun>, kvm: Option<ProbeRun>) -> ProbeResult {
    let (verdict, summary) = match (&tcg, &kvm) {
        _ if !kvm_dev => (KvmVerdict::Absent, "/dev/kvm is absent: guests run under TCG emulation".to_owned()),
        (_, None) => (KvmVerdict::Absent, "QEMU could not be run: KVM was not probed".to_owned()),
        (_, Some(k)) if !k.reached_marker => (
            KvmVerdict::NotFunctional,
            match &k.error {
                Some(e) => format!("KVM present but not functional: QEMU failed under KVM ({e}); use TCG"),
                None => format!(
                    "KVM present but not functional: the probe guest did not reach its marker within {:.0} s under KVM; use TCG",
                    k.seconds
                ),
            },
        ),
        (Some(t), Some(k)) if t.reached_marker && k.seconds > t.seconds => (
            KvmVerdict::NotFunctional,
            format!(
                "KVM present but not functional: the probe guest took {:.1} s under KVM against {:.1} s under TCG emulation; use TCG",
                k.seconds, t.seconds
            ),
        ),
        (_, Some(k)) => (KvmVerdict::Functional, format!("KVM works: the probe guest reached its marker in {:.2} s", k.seconds)),
    };
    ProbeResult { verdict, tcg, kvm, summary }
}

/// Boots the probe under `accel` (`kvm` or `tcg`) for at most `limit`.
pub fn run_once(qemu: &Path, accel: &str, limit: Duration, workdir: &Path) -> ProbeRun {
    let img = workdir.join("kvmctl-probe.img");
    if let Err(e) = std::fs::write(&img, PROBE_BOOT_SECTOR) {
        return ProbeRun {
            accel: accel.into(),
            reached_marker: false,
            seconds: 0.0,
            error: Some(format!("cannot write {}: {e}", img.display())),
        };
    }
    let started = Instant::now();
    let child = Command::new(qemu)
        .args([
            "-accel",
            accel,
            "-machine",
            "pc",
            "-m",
            "96",
            "-display",
            "none",
            "-nodefaults",
            "-no-user-config",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=ide,snapshot=on", img.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return ProbeRun {
                accel: accel.into(),
                reached_marker: false,
                seconds: 0.0,
                error: Some(format!("cannot run {}: {e}", qemu.display())),
            }
        }
    };
    // Read stdout on a thread so the deadline below is kept even if QEMU prints nothing.
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if String::from_utf8_lossy(&buf).contains(MARKER) {
                let _ = tx.send(());
                break;
            }
        }
    });
    let reached = rx.recv_timeout(limit).is_ok();
    let seconds = started.elapsed().as_secs_f64();
    let _ = child.kill();
    let out = child.wait_with_output().ok();
    let error = if reached {
        None
    } else {
        out.map(|o| {
            String::from_utf8_lossy(&o.stderr).lines().filter(|l| !l.contains("terminating on signal")).collect::<Vec<_>>().join("; ")
        })
        .filter(|s| !s.trim().is_empty())
    };
    ProbeRun { accel: accel.into(), reached_marker: reached, seconds, error }
}

/// The whole probe: TCG control, then KVM.
pub fn probe(qemu: Option<&Path>, kvm_dev: bool, workdir: &Path) -> ProbeResult {
    let Some(qemu) = qemu else { return judge(kvm_dev, None, None) };
    if !kvm_dev {
        return judge(false, None, None);
    }
    let tcg = run_once(qemu, "tcg", Duration::from_secs(30), workdir);
    let kvm = run_once(qemu, "kvm", Duration::from_secs(15), workdir);
    judge(true, Some(tcg), Some(kvm))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(accel: &str, ok: bool, s: f64) -> Option<ProbeRun> {
        Some(ProbeRun { accel: accel.into(), reached_marker: ok, seconds: s, error: None })
    }

    #[test]
    fn verdicts() {
        assert_eq!(judge(false, None, None).verdict, KvmVerdict::Absent);
        assert_eq!(judge(true, run("tcg", true, 0.3), run("kvm", true, 0.05)).verdict, KvmVerdict::Functional);
        let slow = judge(true, run("tcg", true, 0.3), run("kvm", true, 8.2));
        assert_eq!(slow.verdict, KvmVerdict::NotFunctional);
        assert!(slow.summary.contains("KVM present but not functional") && slow.summary.contains("8.2 s"), "{}", slow.summary);
        let hung = judge(true, run("tcg", true, 0.3), run("kvm", false, 15.0));
        assert_eq!(hung.verdict, KvmVerdict::NotFunctional);
        assert!(hung.summary.contains("did not reach its marker"));
    }

    #[test]
    fn boot_sector_is_well_formed() {
        assert_eq!(&PROBE_BOOT_SECTOR[510..], &[0x55, 0xaa]);
        let text = String::from_utf8_lossy(PROBE_BOOT_SECTOR);
        assert!(text.contains(MARKER));
    }

    /// The embedded bytes are the assembled source, when nasm is there to check.
    #[test]
    fn boot_sector_matches_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("p.bin");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("probe/probe.asm");
        match Command::new("nasm").args(["-f", "bin"]).arg(&src).arg("-o").arg(&out).status() {
            Ok(st) if st.success() => assert_eq!(std::fs::read(&out).unwrap(), PROBE_BOOT_SECTOR.to_vec(), "re-assemble probe/probe.bin"),
            Ok(st) => panic!("nasm failed on probe.asm: {st}"),
            Err(_) => {} // nasm is installed by scripts/testenv.sh; without it there is nothing to compare
        }
    }
}
