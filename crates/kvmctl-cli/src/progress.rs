//! Progress for long operations: on a terminal, a spinner with what is happening and the
//! elapsed time; otherwise (scripts, CI logs) one plain line.

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Progress {
    started: Instant,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn start(stage: &str) -> Self {
        let started = Instant::now();
        let ticker = if std::io::stderr().is_terminal() {
            let line = stage.to_owned();
            Some(tokio::spawn(async move {
                const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
                for i in 0.. {
                    eprint!("\r\x1b[2K{} {line} ({:.1}s)", FRAMES[i % FRAMES.len()], started.elapsed().as_secs_f64());
                    let _ = std::io::stderr().flush();
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }))
        } else {
            eprintln!("{stage} ...");
            None
        };
        Progress { started, ticker }
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
