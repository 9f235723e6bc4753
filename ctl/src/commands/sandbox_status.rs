//! `rpoolctl sandbox status`.

use clap::Args;
use serde::Serialize;

use super::sandbox::{DirArgs, processes};
use crate::output::{self, Format, OutputArgs};
use crate::sandbox::layout::{Layout, Record, log_file};
use crate::settings::Env;
use crate::table::Table;

/// Show each sandbox process: name, pid, whether it is alive, port and log.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl sandbox status
  rpoolctl sandbox status -o json | jq '.processes[] | select(.alive | not)'")]
pub struct StatusArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `sandbox status -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxStatusView {
    pub dir: String,
    /// True when a record exists and every process is alive.
    pub running: bool,
    pub port: Option<u16>,
    pub started_at_unix_ms: Option<u64>,
    pub processes: Vec<ProcessView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessView {
    pub name: String,
    pub pid: u32,
    pub alive: bool,
    pub log: String,
}

pub fn exec(args: StatusArgs, env: &Env) -> anyhow::Result<()> {
    let layout = args.dir.layout(env)?;
    let record = Record::load(&layout.record())?;
    let view = build(&layout, record.as_ref());
    match args.output.output {
        Format::Json => output::print_json(&view),
        Format::Table => output::print(&render(&view)),
    }
}

fn build(layout: &Layout, record: Option<&Record>) -> SandboxStatusView {
    let Some(record) = record else {
        return SandboxStatusView {
            dir: layout.dir.display().to_string(),
            running: false,
            port: None,
            started_at_unix_ms: None,
            processes: Vec::new(),
        };
    };
    let processes: Vec<ProcessView> = processes(layout, record)
        .into_iter()
        .map(|p| {
            let dir = if p.name == "controller" {
                layout.controller_dir()
            } else {
                layout.agent_dir(&p.name)
            };
            ProcessView {
                alive: p.is_alive(),
                name: p.name,
                pid: p.pid,
                log: log_file(&dir).display().to_string(),
            }
        })
        .collect();
    SandboxStatusView {
        dir: layout.dir.display().to_string(),
        running: processes.iter().all(|p| p.alive),
        port: Some(record.port),
        started_at_unix_ms: Some(record.started_at_unix_ms),
        processes,
    }
}

pub fn render(view: &SandboxStatusView) -> String {
    let Some(port) = view.port else {
        return format!("No sandbox in {}.\n", view.dir);
    };
    // Controller first for humans.
    let mut procs: Vec<&ProcessView> = view.processes.iter().filter(|p| p.name == "controller").collect();
    procs.extend(view.processes.iter().filter(|p| p.name != "controller"));
    let mut table = Table::new(["NAME", "PID", "ALIVE", "PORT", "LOG"]);
    for p in procs {
        let port = if p.name == "controller" {
            port.to_string()
        } else {
            "-".to_string()
        };
        table.row([
            p.name.clone(),
            p.pid.to_string(),
            if p.alive { "yes" } else { "no" }.to_string(),
            port,
            p.log.clone(),
        ]);
    }
    let alive = view.processes.iter().filter(|p| p.alive).count();
    format!(
        "Sandbox in {}: controller on 127.0.0.1:{port}, {alive}/{} processes alive.\n{}",
        view.dir,
        view.processes.len(),
        table.render()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_record_says_no_sandbox() {
        let view = build(&Layout::new("/sb".into()), None);
        assert_eq!(render(&view), "No sandbox in /sb.\n");
        assert_eq!(
            serde_json::to_value(&view).unwrap(),
            serde_json::json!({"dir": "/sb", "running": false, "port": null, "started_at_unix_ms": null, "processes": []})
        );
    }

    #[test]
    fn dead_processes_show_as_not_alive_with_the_controller_first() {
        let record = Record {
            port: 7440,
            controller_pid: 0,
            agents: vec![crate::sandbox::layout::AgentRecord {
                name: "agent-1".into(),
                pid: 0,
                dir: "/sb/agents/agent-1".into(),
            }],
            started_at_unix_ms: 1,
        };
        let view = build(&Layout::new("/sb".into()), Some(&record));
        assert!(!view.running);
        assert_eq!(
            render(&view),
            "Sandbox in /sb: controller on 127.0.0.1:7440, 0/2 processes alive.\n\
             NAME        PID  ALIVE  PORT  LOG\n\
             controller  0    no     7440  /sb/controller/log\n\
             agent-1     0    no     -     /sb/agents/agent-1/log\n"
        );
    }
}
