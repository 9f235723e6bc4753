//! `rpoolctl sandbox status`.

use clap::Args;
use serde::Serialize;

use super::sandbox::{DirArgs, members};
use super::sandbox_host::hostname_of;
use crate::output::{self, Format, OutputArgs};
use crate::sandbox::layout::{self, Layout, Record};
use crate::settings::Env;
use crate::table::Table;

/// Show each sandbox process (controllers first): name, pid, whether it is
/// alive, port and log.
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
    /// Port of the first controller.
    pub port: Option<u16>,
    pub started_at_unix_ms: Option<u64>,
    pub processes: Vec<ProcessView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessView {
    /// `controller-N` or `agent-N`.
    pub name: String,
    /// The simulated host's name (`sim-a-1`, as in `host list`); null for controllers.
    pub host: Option<String>,
    pub pid: u32,
    pub alive: bool,
    /// The port a controller listens on on 127.0.0.1; null for agents.
    pub port: Option<u16>,
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
    let processes: Vec<ProcessView> = members(layout, record)
        .into_iter()
        .map(|m| ProcessView {
            alive: m.proc.is_alive(),
            host: record
                .agents
                .iter()
                .find(|a| a.name == m.proc.name)
                .and_then(|a| std::fs::read_to_string(layout::agent_hardware(&a.dir)).ok())
                .and_then(|text| hostname_of(&text)),
            name: m.proc.name,
            pid: m.proc.pid,
            port: m.port,
            log: m.log.display().to_string(),
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
    if view.port.is_none() {
        return format!("No sandbox in {}.\n", view.dir);
    }
    // Controllers (they have a port) first for humans.
    let mut procs: Vec<&ProcessView> = view.processes.iter().filter(|p| p.port.is_some()).collect();
    procs.extend(view.processes.iter().filter(|p| p.port.is_none()));
    let mut table = Table::new(["NAME", "HOST", "PID", "ALIVE", "PORT", "LOG"]);
    for p in &procs {
        table.row([
            p.name.clone(),
            p.host.clone().unwrap_or_else(|| "-".to_string()),
            p.pid.to_string(),
            if p.alive { "yes" } else { "no" }.to_string(),
            p.port.map_or("-".to_string(), |port| port.to_string()),
            p.log.clone(),
        ]);
    }
    let ports: Vec<u16> = procs.iter().filter_map(|p| p.port).collect();
    let controllers = match ports.as_slice() {
        [] => "no controllers".to_string(),
        [one] => format!("controller on 127.0.0.1:{one}"),
        [first, .., last] => format!("{} controllers on 127.0.0.1:{first}-{last}", ports.len()),
    };
    let alive = view.processes.iter().filter(|p| p.alive).count();
    format!(
        "Sandbox in {}: {controllers}, {alive}/{} processes alive.\n{}",
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
        let layout = Layout::new("/sb".into());
        let record = Record {
            port: 7440,
            controllers: (1..=3)
                .map(|id| crate::sandbox::layout::ControllerRecord {
                    name: format!("controller-{id}"),
                    id,
                    pid: 0,
                    address: format!("127.0.0.1:{}", 7439 + id),
                    dir: layout.controller_dir(id),
                })
                .collect(),
            controller_pid: None,
            agents: vec![crate::sandbox::layout::AgentRecord {
                name: "agent-1".into(),
                pid: 0,
                dir: "/sb/agents/agent-1".into(),
            }],
            started_at_unix_ms: 1,
        };
        let view = build(&layout, Some(&record));
        assert!(!view.running);
        assert_eq!(
            render(&view),
            "Sandbox in /sb: 3 controllers on 127.0.0.1:7440-7442, 0/4 processes alive.\n\
             NAME          HOST  PID  ALIVE  PORT  LOG\n\
             controller-1  -     0    no     7440  /sb/controllers/controller-1/log\n\
             controller-2  -     0    no     7441  /sb/controllers/controller-2/log\n\
             controller-3  -     0    no     7442  /sb/controllers/controller-3/log\n\
             agent-1       -     0    no     -     /sb/agents/agent-1/log\n"
        );
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["port"], 7440);
        assert_eq!(json["processes"][0]["name"], "agent-1");
        assert_eq!(json["processes"][0]["port"], serde_json::Value::Null);
        assert_eq!(json["processes"][3]["name"], "controller-3");
        assert_eq!(json["processes"][3]["port"], 7442);
    }

    #[test]
    fn a_single_controller_is_named_as_before() {
        let layout = Layout::new("/sb".into());
        let record = Record {
            port: 7440,
            controllers: vec![crate::sandbox::layout::ControllerRecord {
                name: "controller-1".into(),
                id: 1,
                pid: 0,
                address: "127.0.0.1:7440".into(),
                dir: layout.controller_dir(1),
            }],
            controller_pid: None,
            agents: vec![],
            started_at_unix_ms: 1,
        };
        let text = render(&build(&layout, Some(&record)));
        assert!(
            text.starts_with("Sandbox in /sb: controller on 127.0.0.1:7440, 0/1 processes alive.\n"),
            "{text}"
        );
    }

    #[test]
    fn agents_show_the_host_name_the_other_commands_use() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_path_buf());
        let agent_dir = layout.agent_dir("agent-1");
        std::fs::create_dir_all(&agent_dir).unwrap();
        std::fs::write(
            layout::agent_hardware(&agent_dir),
            "hostname = \"sim-a-1\"\nzone = \"a\"\n",
        )
        .unwrap();
        let record = Record {
            port: 7443,
            controllers: vec![],
            controller_pid: None,
            agents: vec![crate::sandbox::layout::AgentRecord {
                name: "agent-1".into(),
                pid: 0,
                dir: agent_dir,
            }],
            started_at_unix_ms: 1,
        };
        let view = build(&layout, Some(&record));
        assert_eq!(view.processes[0].host.as_deref(), Some("sim-a-1"));
        let text = render(&view);
        assert!(text.contains("agent-1  sim-a-1  0"), "{text}");
    }
}
