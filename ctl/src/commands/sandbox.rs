//! `rpoolctl sandbox ...`: the sandbox noun.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{sandbox_down, sandbox_status, sandbox_up};
use crate::sandbox::layout::{Layout, Record, resolve_dir};
use crate::sandbox::process::{AGENT_BIN, CONTROLLER_BIN, Proc};
use crate::settings::{Env, Settings};

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Start a controller and N simulated agents on this machine
    Up(sandbox_up::UpArgs),
    /// Stop the sandbox's processes (logs and state are kept)
    Down(sandbox_down::DownArgs),
    /// Show the sandbox's processes and whether they are alive
    Status(sandbox_status::StatusArgs),
}

/// `--dir`, shared by every sandbox verb.
#[derive(Debug, Clone, Default, Args)]
pub struct DirArgs {
    /// Sandbox directory [env: RPOOL_SANDBOX_DIR] [default: $XDG_STATE_HOME/rpool/sandbox, else ~/.local/state/rpool/sandbox]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl DirArgs {
    pub fn layout(&self, env: &Env) -> anyhow::Result<Layout> {
        Ok(Layout::new(resolve_dir(self.dir.as_deref(), env)?))
    }

    /// ` --dir DIR` when the user gave one, for hints.
    pub fn hint(&self, layout: &Layout) -> String {
        if self.dir.is_some() {
            format!(" --dir {}", layout.dir.display())
        } else {
            String::new()
        }
    }
}

pub async fn exec(cmd: SandboxCommand, settings: &Settings, env: &Env) -> anyhow::Result<()> {
    match cmd {
        SandboxCommand::Up(args) => sandbox_up::exec(args, settings, env).await,
        SandboxCommand::Down(args) => sandbox_down::exec(args, settings, env),
        SandboxCommand::Status(args) => sandbox_status::exec(args, env),
    }
}

/// The processes a record describes, agents first, controller last.
pub fn processes(layout: &Layout, record: &Record) -> Vec<Proc> {
    let mut procs: Vec<Proc> = record
        .agents
        .iter()
        .map(|a| Proc {
            name: a.name.clone(),
            pid: a.pid,
            binary: AGENT_BIN,
            needle: a.dir.to_string_lossy().into_owned(),
        })
        .collect();
    procs.push(Proc {
        name: "controller".to_string(),
        pid: record.controller_pid,
        binary: CONTROLLER_BIN,
        needle: layout.controller_config().to_string_lossy().into_owned(),
    });
    procs
}
