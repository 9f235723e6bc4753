//! `rpoolctl sandbox kill-host` and `revive-host`: simulate a host dying and
//! coming back, for trying self-healing.
//!
//! A sandbox host is one agent process plus its kubesim node root. Killing
//! it stops the agent (SIGTERM, SIGKILL after a moment: a dead host sends
//! nothing more) and touches `<node_root>/kubesim-down`, so kubesim shows
//! its node `NotReady` and its etcd member unhealthy. Reviving removes the
//! marker and starts the agent again with the same config and environment;
//! its pid is written back to `sandbox.json`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::sandbox::DirArgs;
use crate::client;
use crate::exit::{self, Failure};
use crate::output;
use crate::sandbox::layout::{self, AgentRecord, Record};
use crate::sandbox::process::{self, AGENT_BIN, Proc};
use crate::sandbox::profile;
use crate::settings::{Env, Settings};
use crate::view::{PoolView, state_name};
use rpool_proto::units::format_duration;
use rpool_proto::v1::GetHostRequest;

/// The file kubesim looks for to treat a node as dead.
pub const DOWN_MARKER: &str = "kubesim-down";
/// SIGTERM grace before SIGKILL when killing a host (short: it is a crash).
const KILL_GRACE: Duration = Duration::from_millis(200);

/// Kill a sandbox host: stop its agent and mark its kubesim node dead.
/// The controllers declare it suspect after 3 s, down after 5 s and, if it
/// is in a pool, replace it.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl sandbox kill-host sim-b-1
  rpoolctl sandbox kill-host sim-b-1 --wait   # until it is down and its pool healed
  rpoolctl sandbox kill-host agent-3
  rpoolctl sandbox kill-host 5f0c2a   (a host id or its prefix)")]
pub struct KillHostArgs {
    /// Host id (or a unique prefix), hostname, or agent name (agent-N)
    #[arg(value_name = "ID|HOSTNAME", add = crate::complete::hosts())]
    pub host: String,
    /// Wait until the controllers declare it down and, if it was in a pool,
    /// until the pool is ready again without it (bounded by --timeout, default 10m)
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Revive a killed sandbox host: clear its kubesim marker and start its
/// agent again with the same config. A host that was replaced meanwhile is
/// reset by the controllers and returns to the fleet.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl sandbox revive-host sim-b-1")]
pub struct ReviveHostArgs {
    /// Host id (or a unique prefix), hostname, or agent name (agent-N)
    #[arg(value_name = "ID|HOSTNAME", add = crate::complete::hosts())]
    pub host: String,
    /// Directory holding rpool-agent [default: next to rpoolctl, else PATH]
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    #[command(flatten)]
    pub dir: DirArgs,
}

/// One sandbox host as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Index in `Record::agents`.
    pub index: usize,
    pub agent: AgentRecord,
    pub hostname: String,
    pub host_id: String,
}

impl Host {
    fn proc(&self) -> Proc {
        Proc {
            name: self.agent.name.clone(),
            pid: self.agent.pid,
            binary: AGENT_BIN,
            needle: self.agent.dir.to_string_lossy().into_owned(),
        }
    }

    fn node_root(&self) -> PathBuf {
        layout::agent_node_root(&self.agent.dir)
    }

    fn label(&self) -> String {
        let id: String = self.host_id.chars().take(8).collect();
        format!("{} ({}, host {id})", self.hostname, self.agent.name)
    }
}

/// `hostname = "..."` from a simulated-hardware file.
pub fn hostname_of(hardware_toml: &str) -> Option<String> {
    hardware_toml.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "hostname").then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// The hosts of a sandbox, read from each agent's directory.
fn hosts(record: &Record) -> Vec<Host> {
    record
        .agents
        .iter()
        .enumerate()
        .map(|(index, agent)| Host {
            index,
            agent: agent.clone(),
            hostname: std::fs::read_to_string(layout::agent_hardware(&agent.dir))
                .ok()
                .and_then(|t| hostname_of(&t))
                .unwrap_or_else(|| agent.name.clone()),
            host_id: std::fs::read_to_string(layout::agent_state(&agent.dir).join("host_id"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        })
        .collect()
}

/// The one host `wanted` names: exact hostname, agent name or host id
/// first, else a unique host-id prefix.
pub fn find<'a>(hosts: &'a [Host], wanted: &str) -> Result<&'a Host, Failure> {
    if wanted.is_empty() {
        return Err(Failure::usage(
            "ID|HOSTNAME: empty (accepted a host id, hostname or agent-N)",
        ));
    }
    if let Some(host) = hosts
        .iter()
        .find(|h| h.hostname == wanted || h.agent.name == wanted || h.host_id == wanted)
    {
        return Ok(host);
    }
    let matches: Vec<&Host> = hosts
        .iter()
        .filter(|h| !h.host_id.is_empty() && h.host_id.starts_with(wanted))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(Failure::new(
            exit::NOT_FOUND,
            format!(
                "no sandbox host {wanted:?} (hosts: {})",
                hosts
                    .iter()
                    .map(|h| h.hostname.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        many => Err(Failure::usage(format!(
            "{wanted:?} matches {} hosts ({}); give more of the id",
            many.len(),
            many.iter()
                .map(|h| h.hostname.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `kill-host`, and with `--wait` the controllers' verdict and the heal.
pub async fn exec_kill_and_wait(args: KillHostArgs, settings: &Settings, env: &Env) -> anyhow::Result<()> {
    if !args.wait {
        return exec_kill(args, env);
    }
    let (_layout, record) = args.dir.load(env)?;
    let host = find(&hosts(&record), &args.host)?.clone();
    let budget = super::pool::wait_budget(settings);
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let get_host = |id: String| {
        let ctl = &ctl;
        async move { crate::rpc!(ctl, get_host, GetHostRequest { host_id: id }) }
    };
    let pool = get_host(host.host_id.clone()).await?.pool;
    let members_before: Vec<String> = if pool.is_empty() {
        Vec::new()
    } else {
        PoolView::from(&super::pool_show::get(&ctl, &pool).await?)
            .members
            .iter()
            .map(|m| m.host_id.clone())
            .collect()
    };
    exec_kill(args, env)?;
    let started = Instant::now();
    let deadline = started + budget;
    let timed_out = |what: &str| {
        Failure::new(
            exit::TIMED_OUT,
            format!("waited {} for {what} (raise --timeout)", format_duration(budget)),
        )
    };
    loop {
        let now = get_host(host.host_id.clone()).await?;
        if state_name(now.state) == "down" {
            break;
        }
        if Instant::now() >= deadline {
            return Err(timed_out(&format!("{} to be declared down", host.hostname)).into());
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
    output::print(&format!(
        "{} is down after {}.\n",
        host.hostname,
        seconds_since(started)
    ))?;
    if pool.is_empty() {
        return Ok(());
    }
    loop {
        let view = PoolView::from(&super::pool_show::get(&ctl, &pool).await?);
        let still_in = view
            .members
            .iter()
            .any(|m| m.host_id == host.host_id && m.state != "replaced");
        if !still_in && view.phase == "ready" {
            let new: Vec<String> = view
                .members
                .iter()
                .filter(|m| !members_before.contains(&m.host_id))
                .map(|m| m.hostname.clone())
                .collect();
            return output::print(&format!(
                "Pool {pool} is ready again after {}{}.\n",
                seconds_since(started),
                if new.is_empty() {
                    String::new()
                } else {
                    format!(": {} replaced by {}", host.hostname, new.join(", "))
                }
            ));
        }
        if Instant::now() >= deadline {
            return Err(timed_out(&format!("pool {pool} to heal")).into());
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// How often `kill-host --wait` asks the controllers.
const WAIT_POLL: Duration = Duration::from_millis(200);

fn seconds_since(start: Instant) -> String {
    format!("{:.1} s", start.elapsed().as_secs_f64())
}

pub fn exec_kill(args: KillHostArgs, env: &Env) -> anyhow::Result<()> {
    let (_layout, record) = args.dir.load(env)?;
    let all = hosts(&record);
    let host = find(&all, &args.host)?;
    let marker = host.node_root().join(DOWN_MARKER);
    std::fs::create_dir_all(host.node_root())
        .and_then(|()| std::fs::write(&marker, b""))
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", marker.display()))?;
    let report = process::stop(&[host.proc()], KILL_GRACE);
    let how = if !report.survivors.is_empty() {
        anyhow::bail!("{} is still running after SIGKILL", host.label());
    } else if report.not_running.is_empty() {
        "agent stopped"
    } else {
        "agent was not running"
    };
    output::print(&format!(
        "Killed {}: {how}; kubesim marks its node down ({}).\n\
         The controllers declare it suspect after {} and down after {} (then replace it if it is in a pool); \
         watch with `rpoolctl events --follow`.\n",
        host.label(),
        marker.display(),
        seconds(profile::SUSPECT_AFTER_MS),
        seconds(profile::DOWN_AFTER_MS),
    ))
}

/// "5 s", "1.5 s": a sandbox liveness threshold as people say it.
fn seconds(ms: u32) -> String {
    if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{} s", f64::from(ms) / 1000.0)
    }
}

pub fn exec_revive(args: ReviveHostArgs, env: &Env) -> anyhow::Result<()> {
    let (layout, mut record) = args.dir.load(env)?;
    let all = hosts(&record);
    let host = find(&all, &args.host)?.clone();
    if host.proc().is_alive() {
        return Err(Failure::usage(format!(
            "{} is running (pid {}); kill it first with `rpoolctl sandbox kill-host {}`",
            host.label(),
            host.agent.pid,
            host.hostname
        ))
        .into());
    }
    let agent_bin = process::find_binary(AGENT_BIN, args.bin_dir.as_deref()).map_err(Failure::usage)?;
    let marker = host.node_root().join(DOWN_MARKER);
    match std::fs::remove_file(&marker) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("removing {}: {e}", marker.display()),
    }
    // As `sandbox up` started it: same config, kubesim environment and log.
    let pid = process::start_agent(&agent_bin, &layout, &host.agent.dir, &host.hostname)?.id();
    record.agents[host.index].pid = pid;
    record.save(&layout.record())?;
    output::print(&format!(
        "Revived {}: agent started (pid {pid}), kubesim node marker removed.\n\
         If it was replaced while down, the controllers reset it and return it to the fleet.\n",
        host.label()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(index: usize, name: &str, hostname: &str, id: &str) -> Host {
        Host {
            index,
            agent: AgentRecord {
                name: name.into(),
                pid: 0,
                dir: format!("/sb/agents/{name}").into(),
            },
            hostname: hostname.into(),
            host_id: id.into(),
        }
    }

    #[test]
    fn a_host_is_found_by_hostname_agent_name_id_or_unique_id_prefix() {
        let hosts = vec![
            host(0, "agent-1", "sim-a-1", "5f0c2a11-0000"),
            host(1, "agent-2", "sim-b-1", "5f9d0000-1111"),
        ];
        assert_eq!(find(&hosts, "sim-b-1").unwrap().index, 1);
        assert_eq!(find(&hosts, "agent-1").unwrap().index, 0);
        assert_eq!(find(&hosts, "5f9d0000-1111").unwrap().index, 1);
        assert_eq!(find(&hosts, "5f0c").unwrap().index, 0);
        let many = find(&hosts, "5f").unwrap_err();
        assert_eq!(many.code, exit::USAGE);
        assert!(many.message.contains("matches 2 hosts"), "{}", many.message);
        let none = find(&hosts, "nope").unwrap_err();
        assert_eq!(none.code, exit::NOT_FOUND);
        assert!(none.message.contains("sim-a-1, sim-b-1"), "{}", none.message);
        assert_eq!(find(&hosts, "").unwrap_err().code, exit::USAGE);
    }

    #[test]
    fn the_hostname_is_read_from_the_hardware_file() {
        let text = "hostname = \"sim-c-2\"\nzone = \"c\"\nlogical_cores = 8\n";
        assert_eq!(hostname_of(text).as_deref(), Some("sim-c-2"));
        assert_eq!(hostname_of("zone = \"c\"\n"), None);
    }

    #[test]
    fn liveness_thresholds_are_said_in_seconds() {
        assert_eq!(seconds(5000), "5 s");
        assert_eq!(seconds(1500), "1.5 s");
    }
}
