//! How the daemons log: to stderr (journald under systemd), filtered by
//! `RPOOL_LOG` (default `info`), as text (colours only on a terminal) or one
//! JSON object per line.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `json` picks one JSON object per line.
pub fn install(json: bool) {
    let filter = EnvFilter::try_from_env("RPOOL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
