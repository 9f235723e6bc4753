//! The progress line `sandbox up` shows while it waits for its agents.

use std::io::{IsTerminal, Write};

/// "waiting for N agents... k/N ready" on stderr: rewritten in place on a
/// terminal, one line per change otherwise.
pub struct Progress {
    total: usize,
    last: Option<usize>,
    tty: bool,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Self {
            total,
            last: None,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn line(&self, ready: usize) -> String {
        progress_line(self.total, ready)
    }

    pub fn show(&mut self, ready: usize) {
        if self.last == Some(ready) {
            return;
        }
        self.last = Some(ready);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{}", self.line(ready));
        } else {
            let _ = writeln!(err, "{}", self.line(ready));
        }
        let _ = err.flush();
    }

    pub fn finish(&mut self) {
        if self.tty && self.last.is_some() {
            eprintln!();
        }
    }
}

/// Ends an in-place progress line on a terminal before other output.
pub fn end_progress_line() {
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}

/// The progress text.
pub fn progress_line(total: usize, ready: usize) -> String {
    format!("waiting for {total} agents... {ready}/{total} ready")
}
