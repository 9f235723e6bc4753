//! One file per subcommand, each with its clap struct and an `exec`.
//!
//! `host` and `sandbox` are nouns whose verbs live in `host_*.rs` and
//! `sandbox_*.rs`; `controller` keeps its verbs in `controller.rs`.

pub mod completions;
pub mod controller;
pub mod host;
pub mod host_label;
pub mod host_list;
pub mod host_show;
pub mod sandbox;
pub mod sandbox_down;
pub mod sandbox_status;
pub mod sandbox_up;
pub mod status;

use clap::Subcommand;

use crate::settings::{Env, Settings};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the controller: id, version, Raft role, leader, indexes, hosts by state
    Status(status::StatusArgs),
    /// Inspect hosts (servers running rpool-agent)
    #[command(subcommand)]
    Host(host::HostCommand),
    /// Inspect and change the controllers of the Raft group
    #[command(subcommand)]
    Controller(controller::ControllerCommand),
    /// Run a local controller with simulated hosts, for trying rpool
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
    /// Print a shell completion script
    Completions(completions::CompletionsArgs),
}

pub async fn exec(command: Command, settings: &Settings, env: &Env) -> anyhow::Result<()> {
    match command {
        Command::Status(args) => status::exec(args, settings).await,
        Command::Host(cmd) => host::exec(cmd, settings).await,
        Command::Controller(cmd) => controller::exec(cmd, settings).await,
        Command::Sandbox(cmd) => sandbox::exec(cmd, settings, env).await,
        Command::Completions(args) => completions::exec(args),
    }
}
