//! `rpoolctl sandbox ...`: the sandbox noun.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{
    sandbox_controller, sandbox_down, sandbox_host, sandbox_kube, sandbox_load, sandbox_status, sandbox_up,
};
use crate::sandbox::layout::{Layout, Record, controller_config, log_file, resolve_dir};
use crate::sandbox::process::{AGENT_BIN, CONTROLLER_BIN, Proc};
use crate::settings::{Env, Settings};

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Start three controllers and N simulated hosts (agents) on this machine
    Up(sandbox_up::UpArgs),
    /// Start a sandbox controller again (one that was killed), as `sandbox up` started it
    StartController(sandbox_controller::StartControllerArgs),
    /// Stop the sandbox's processes (logs and state are kept)
    Down(sandbox_down::DownArgs),
    /// Show the sandbox's processes and whether they are alive
    Status(sandbox_status::StatusArgs),
    /// Set a sandbox host's simulated CPU/memory load, or pending pods in its cluster
    Load(sandbox_load::LoadArgs),
    /// Kill a simulated host: stop its agent and mark its kubesim node dead
    KillHost(sandbox_host::KillHostArgs),
    /// Bring a killed simulated host back: start its agent again
    ReviveHost(sandbox_host::ReviveHostArgs),
    /// Install a Kubernetes version on sandbox hosts (as apt-get install kubeadm/kubelet would)
    InstallKube(sandbox_kube::InstallKubeArgs),
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

    /// The sandbox's layout and record; NOT_FOUND naming the directory
    /// (and how to start one) when there is no sandbox there.
    pub fn load(&self, env: &Env) -> anyhow::Result<(Layout, Record)> {
        let layout = self.layout(env)?;
        let record = Record::load(&layout.record())?.ok_or_else(|| {
            crate::exit::Failure::new(
                crate::exit::NOT_FOUND,
                format!(
                    "no sandbox in {}; start one with `rpoolctl sandbox up{}`",
                    layout.dir.display(),
                    self.hint(&layout)
                ),
            )
        })?;
        Ok((layout, record))
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
        SandboxCommand::StartController(args) => sandbox_controller::exec_start_controller(args, env),
        SandboxCommand::Status(args) => sandbox_status::exec(args, env),
        SandboxCommand::Load(args) => sandbox_load::exec(args, env),
        SandboxCommand::KillHost(args) => sandbox_host::exec_kill_and_wait(args, settings, env).await,
        SandboxCommand::ReviveHost(args) => sandbox_host::exec_revive(args, env),
        SandboxCommand::InstallKube(args) => sandbox_kube::exec(args, env),
    }
}

/// One process a record describes, with where its log is and the port it
/// serves (controllers only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub proc: Proc,
    pub log: PathBuf,
    pub port: Option<u16>,
}

/// The processes a record describes: agents first, then the controllers in
/// id order (the order `down` stops them in), each with the pid it runs
/// under now (see [`Proc::resolve`]: a controller restarted by hand is
/// found, shown and stopped too).
pub fn members(layout: &Layout, record: &Record) -> Vec<Member> {
    let mut members = recorded_members(layout, record);
    for m in &mut members {
        m.proc = m.proc.resolve();
    }
    members
}

/// [`members`] with the pids as recorded.
fn recorded_members(layout: &Layout, record: &Record) -> Vec<Member> {
    let mut members: Vec<Member> = record
        .agents
        .iter()
        .map(|a| Member {
            proc: Proc {
                name: a.name.clone(),
                pid: a.pid,
                binary: AGENT_BIN,
                needle: a.dir.to_string_lossy().into_owned(),
            },
            log: log_file(&a.dir),
            port: None,
        })
        .collect();
    members.extend(record.controllers.iter().map(|c| Member {
        proc: Proc {
            name: c.name.clone(),
            pid: c.pid,
            binary: CONTROLLER_BIN,
            needle: controller_config(&c.dir).to_string_lossy().into_owned(),
        },
        log: log_file(&c.dir),
        port: c.address.rsplit_once(':').and_then(|(_, p)| p.parse().ok()),
    }));
    if let Some(pid) = record.controller_pid {
        let dir = layout.legacy_controller_dir();
        members.push(Member {
            proc: Proc {
                name: "controller".to_string(),
                pid,
                binary: CONTROLLER_BIN,
                needle: controller_config(&dir).to_string_lossy().into_owned(),
            },
            log: log_file(&dir),
            port: Some(record.port),
        });
    }
    members
}

/// The processes of [`members`], in the same order.
pub fn processes(layout: &Layout, record: &Record) -> Vec<Proc> {
    members(layout, record).into_iter().map(|m| m.proc).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::layout::{AgentRecord, three_controllers};

    #[test]
    fn agents_come_before_controllers_and_old_records_still_name_their_controller() {
        let layout = Layout::new("/sb".into());
        let mut record = Record {
            port: 7440,
            controllers: three_controllers(&layout),
            controller_pid: None,
            agents: vec![AgentRecord {
                name: "agent-1".into(),
                pid: 11,
                dir: "/sb/agents/agent-1".into(),
            }],
            started_at_unix_ms: 1,
        };
        let got: Vec<(String, Option<u16>, String)> = recorded_members(&layout, &record)
            .into_iter()
            .map(|m| (m.proc.name, m.port, m.log.display().to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("agent-1".to_string(), None, "/sb/agents/agent-1/log".to_string()),
                (
                    "controller-1".to_string(),
                    Some(7440),
                    "/sb/controllers/controller-1/log".to_string()
                ),
                (
                    "controller-2".to_string(),
                    Some(7441),
                    "/sb/controllers/controller-2/log".to_string()
                ),
                (
                    "controller-3".to_string(),
                    Some(7442),
                    "/sb/controllers/controller-3/log".to_string()
                ),
            ]
        );
        let procs: Vec<Proc> = recorded_members(&layout, &record)
            .into_iter()
            .map(|m| m.proc)
            .collect();
        assert_eq!(procs[1].needle, "/sb/controllers/controller-1/controller.toml");
        assert_eq!(procs[1].binary, CONTROLLER_BIN);

        record.controllers.clear();
        record.controller_pid = Some(9);
        let last = recorded_members(&layout, &record).pop().unwrap();
        assert_eq!(last.proc.name, "controller");
        assert_eq!(last.proc.needle, "/sb/controller/controller.toml");
        assert_eq!(last.port, Some(7440));
    }
}
