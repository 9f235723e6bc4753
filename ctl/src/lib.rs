//! `rpoolctl`: the rpool admin CLI.
//!
//! It talks to a controller's `AdminService` over gRPC (`status`, `host
//! list|show|label`, `pool create|list|show|resize|destroy|kubeconfig`,
//! `events`, `demo`, `controller list|add|remove|transfer-leader`; any
//! controller of the Raft group will do, followers forward to the leader) and
//! runs a local sandbox (a group of 1, 3 or 5 controllers and N simulated
//! agents as detached processes) for trying rpool on one machine.
//!
//! Modules:
//! - [`cli`]: the clap tree (global flags and the noun-verb subcommands).
//! - [`commands`]: one file per subcommand, each with its clap struct and `exec`.
//! - [`settings`]: where the controller addresses, timeout and ctl config
//!   path come from (flag > env > `ctl.toml` > default), and `ctl.toml` itself.
//! - [`client`]: connecting to the first controller that answers, and turning
//!   gRPC errors into exit codes.
//! - [`exit`]: the exit codes scripts can rely on, and the error that carries one.
//! - [`view`]: the JSON schema of hosts, status, controllers, pools, resize
//!   plans and events (the stable `-o json` output).
//! - [`confirm`]: the confirmation rules of disruptive commands (`--yes`, or
//!   a question on a terminal, else exit 64).
//! - [`complete`]: dynamic shell completion (pool, host and controller
//!   names asked from the controllers when the shell calls back).
//! - [`dashboard`]: the local web dashboard's server (one embedded page and a
//!   JSON snapshot rpoolctl assembles from the controllers).
//! - [`clock`]: now, UTC timestamps and ages for human output.
//! - [`output`]: `-o table|json` and writing to stdout (a closed pipe is fine).
//! - [`table`]: the small column formatter used for human output.
//! - [`sandbox`]: sandbox layout, generated config files and process control.
//!
//! Main flow of one invocation:
//! 1. `main` parses flags (clap errors exit 64, `--help`/`--version` exit 0)
//!    and snapshots the environment into [`settings::Env`].
//! 2. [`run`] resolves the settings (loading and validating `ctl.toml`).
//! 3. The subcommand's `exec` runs: RPC commands connect through
//!    [`client::connect`], call the controller with the timeout, and print a
//!    table or JSON; sandbox commands work on files and processes.
//! 4. `main` prints any error as `error: {:#}` and exits with
//!    [`exit::code_of`] the error.

pub mod cli;
pub mod client;
pub mod clock;
pub mod commands;
pub mod complete;
pub mod confirm;
pub mod dashboard;
pub mod exit;
pub mod output;
pub mod sandbox;
pub mod settings;
pub mod table;
#[cfg(test)]
pub(crate) mod testing;
pub mod view;

use cli::Cli;
use settings::{Env, Settings};

/// Exit code for a clap parse outcome: `--help`/`--version` are successes,
/// everything else (bad flag, bad value, missing subcommand) is a usage error.
pub fn clap_exit_code(kind: clap::error::ErrorKind) -> u8 {
    use clap::error::ErrorKind;
    match kind {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => exit::OK,
        _ => exit::USAGE,
    }
}

/// Runs one parsed invocation.
pub async fn run(cli: Cli, env: Env) -> anyhow::Result<()> {
    let settings = Settings::resolve(&cli.global, &env)?;
    client::use_tls(settings.tls.clone());
    commands::exec(cli.command, &settings, &env).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_code(args: &[&str]) -> u8 {
        match crate::cli::try_parse_from(args) {
            Ok(_) => exit::OK,
            Err(e) => clap_exit_code(e.kind()),
        }
    }

    #[test]
    fn help_and_version_exit_0_and_parse_errors_exit_64() {
        assert_eq!(parse_code(&["rpoolctl", "--help"]), 0);
        assert_eq!(parse_code(&["rpoolctl", "host", "list", "--help"]), 0);
        assert_eq!(parse_code(&["rpoolctl", "--version"]), 0);
        assert_eq!(parse_code(&["rpoolctl"]), 64);
        assert_eq!(parse_code(&["rpoolctl", "bogus"]), 64);
        assert_eq!(parse_code(&["rpoolctl", "host", "list", "--bogus"]), 64);
        assert_eq!(parse_code(&["rpoolctl", "host", "show"]), 64);
        assert_eq!(parse_code(&["rpoolctl", "status", "-o", "yaml"]), 64);
        assert_eq!(parse_code(&["rpoolctl", "host", "list", "-o", "json"]), 0);
    }
}
