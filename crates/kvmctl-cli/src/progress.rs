//! Progress for long operations: on a terminal, a spinner with what is happening and the
//! elapsed time; otherwise (scripts, CI logs) one plain line.

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Progress {
    started: Instant,
    ticker: Option<tokio::task::JoinHandle<()>>,
    /// The latest step reported (from the daemon's events), shown after the stage.
    note: std::sync::Arc<std::sync::Mutex<String>>,
    terminal: bool,
}

impl Progress {
    pub fn start(stage: &str) -> Self {
        let started = Instant::now();
        let note = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let terminal = std::io::stderr().is_terminal();
        let ticker = if terminal {
            let line = stage.to_owned();
            let note = note.clone();
            Some(tokio::spawn(async move {
                const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
                for i in 0.. {
                    let n = note.lock().map(|n| if n.is_empty() { String::new() } else { format!(": {n}") }).unwrap_or_default();
                    eprint!("\r\x1b[2K{} {line}{n} ({:.1}s)", FRAMES[i % FRAMES.len()], started.elapsed().as_secs_f64());
                    let _ = std::io::stderr().flush();
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }))
        } else {
            eprintln!("{stage} ...");
            None
        };
        Progress { started, ticker, note, terminal }
    }

    /// A handle that reports steps while the operation runs: on a terminal beside the
    /// spinner, otherwise one line each.
    pub fn reporter(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let (note, terminal, started) = (self.note.clone(), self.terminal, self.started);
        move |step: &str| {
            if terminal {
                if let Ok(mut n) = note.lock() {
                    *n = step.to_owned();
                }
            } else {
                eprintln!("  {step} (+{:.1}s)", started.elapsed().as_secs_f64());
            }
        }
    }

    /// Ends the spinner with a final line.
    pub fn finish(mut self, outcome: &str) {
        self.clear();
        eprintln!("{outcome} ({:.1}s)", self.started.elapsed().as_secs_f64());
    }

    /// Ends the spinner silently (an error follows).
    pub fn fail(mut self) {
        self.clear();
    }

    fn clear(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
            eprint!("\r\x1b[2K");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Runs `op` behind a progress line.
pub(crate) async fn with_progress<T>(
    doing: &str,
    done: &str,
    op: impl std::future::Future<Output = Result<T, kvmctl_client::ClientError>>,
) -> anyhow::Result<T> {
    settle_progress(Progress::start(doing), done, op.await)
}

/// Ends a progress line with `done` or as failed, by the result.
pub(crate) fn settle_progress<T>(p: Progress, done: &str, result: Result<T, kvmctl_client::ClientError>) -> anyhow::Result<T> {
    match result {
        Ok(v) => {
            p.finish(done);
            Ok(v)
        }
        Err(e) => {
            p.fail();
            Err(e.into())
        }
    }
}
