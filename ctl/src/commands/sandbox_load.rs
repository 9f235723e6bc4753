//! `rpoolctl sandbox load ID|HOSTNAME [PERCENT] [--memory PERCENT]
//! [--pending-pods N]`: simulated load on a sandbox host.

use std::path::{Path, PathBuf};

use clap::Args;
use rpool_proto::units::parse_size;

use super::sandbox::DirArgs;
use crate::exit::{self, Failure};
use crate::output;
use crate::sandbox::layout::{Record, agent_hardware, agent_node_root, agent_state};
use crate::settings::Env;

/// Most pending pods `--pending-pods` writes.
pub const PENDING_PODS_MAX: u32 = 100_000;

/// Set a sandbox host's simulated CPU and memory utilization, or the pods
/// pending in the pool it is a control plane of.
///
/// PERCENT and --memory rewrite `cpu_percent` / `memory_used` in the host's
/// simulated-hardware file (`agents/agent-N/hardware.toml`); the agent
/// reloads it and reports it with its next heartbeat, which is what the
/// autoscaler averages over a pool's workers. --pending-pods writes
/// kubesim's `pending-pods` count for the cluster whose control plane this
/// host is (`kubesim/state/clusters/<id>/pending-pods`); that control
/// plane's agent counts them with `kubectl get pods -A
/// --field-selector=status.phase=Pending` every few seconds; 0 clears them.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl sandbox load sim-b-1 90
  rpoolctl sandbox load 3f2a 20 --memory 85
  rpoolctl sandbox load sim-a-1 --pending-pods 5")]
pub struct LoadArgs {
    /// Host: hostname (sim-a-1), agent name (agent-1), or host id or a unique prefix of it (4+ characters)
    #[arg(value_name = "ID|HOSTNAME", add = crate::complete::hosts())]
    pub host: String,
    /// CPU busy percent to report (0..=100)
    #[arg(value_name = "PERCENT", value_parser = parse_percent)]
    pub cpu: Option<f64>,
    /// Memory used, in percent of the host's memory (0..=100)
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub memory: Option<f64>,
    /// Pods pending in the cluster this host is a control plane of (0..=100000)
    #[arg(long, value_name = "N", value_parser = crate::cli::whole_number::<u32>(0, PENDING_PODS_MAX as u64))]
    pub pending_pods: Option<u32>,
    #[command(flatten)]
    pub dir: DirArgs,
}

/// clap value parser for a percentage 0..=100.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    match text.trim().trim_end_matches('%').parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{text:?} is out of range (accepted a number 0..=100)")),
    }
}

pub fn exec(args: LoadArgs, env: &Env) -> anyhow::Result<()> {
    if args.cpu.is_none() && args.memory.is_none() && args.pending_pods.is_none() {
        return Err(
            Failure::usage("say what to set: PERCENT (cpu), --memory PERCENT or --pending-pods N").into(),
        );
    }
    let (layout, record) = args.dir.load(env)?;
    let agent_dir = find_agent(&record, &args.host)?;
    let hardware_path = agent_hardware(&agent_dir);
    let hostname = hardware_value(&hardware_path, "hostname").unwrap_or_else(|| args.host.clone());
    let mut said = Vec::new();
    if args.cpu.is_some() || args.memory.is_some() {
        let text = std::fs::read_to_string(&hardware_path)
            .map_err(|e| Failure::new(exit::UNEXPECTED, format!("{}: {e}", hardware_path.display())))?;
        let updated = set_load(&text, args.cpu, args.memory)
            .map_err(|e| Failure::new(exit::UNEXPECTED, format!("{}: {e}", hardware_path.display())))?;
        write_atomically(&hardware_path, &updated)?;
        if let Some(cpu) = args.cpu {
            said.push(format!("cpu {cpu}%"));
        }
        if let Some(memory) = args.memory {
            said.push(format!("memory {memory}%"));
        }
    }
    if let Some(n) = args.pending_pods {
        let cluster = cluster_of(&layout.kubesim_state(), &agent_node_root(&agent_dir))
            .map_err(|e| Failure::new(exit::REJECTED, format!("--pending-pods: {hostname}: {e}")))?;
        write_atomically(&cluster.join("pending-pods"), &format!("{n}\n"))?;
        said.push(format!("{n} pending pod(s) in its cluster"));
    }
    output::print(&format!(
        "{hostname}: {} (reported with its next heartbeat).\n",
        said.join(", ")
    ))
}

/// The directory of the sandbox agent `key` names: its hostname, agent
/// name, host id or a unique host-id prefix of at least 4 characters.
pub(crate) fn find_agent(record: &Record, key: &str) -> Result<PathBuf, Failure> {
    let mut matches = Vec::new();
    for agent in &record.agents {
        let hostname = hardware_value(&agent_hardware(&agent.dir), "hostname").unwrap_or_default();
        let host_id = std::fs::read_to_string(agent_state(&agent.dir).join("host_id"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let by_id = !host_id.is_empty() && (host_id == key || (key.len() >= 4 && host_id.starts_with(key)));
        if agent.name == key || hostname == key || by_id {
            matches.push(agent.dir.clone());
        }
    }
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(Failure::new(
            exit::NOT_FOUND,
            format!(
                "no sandbox host {key:?} (give a hostname like sim-a-1, agent-1, or a host id prefix; see `rpoolctl host list`)"
            ),
        )),
        n => Err(Failure::usage(format!(
            "{key:?} matches {n} sandbox hosts; give more of the host id"
        ))),
    }
}

/// A top-level string value of a hardware file.
pub(crate) fn hardware_value(path: &Path, key: &str) -> Option<String> {
    let table: toml::Table = std::fs::read_to_string(path).ok()?.parse().ok()?;
    table.get(key)?.as_str().map(str::to_string)
}

/// The hardware file with `cpu_percent` and/or `memory_used` (as a
/// percentage of `memory`) replaced; other lines, comments included, stay.
pub fn set_load(text: &str, cpu: Option<f64>, memory_percent: Option<f64>) -> Result<String, String> {
    let table: toml::Table = text.parse().map_err(|e| format!("not TOML: {e}"))?;
    let mut set: Vec<(&str, String)> = Vec::new();
    if let Some(cpu) = cpu {
        set.push(("cpu_percent", format!("{cpu:.1}")));
    }
    if let Some(pct) = memory_percent {
        let memory = table
            .get("memory")
            .and_then(|v| v.as_str())
            .ok_or("no memory = \"...\" to take a percentage of")?;
        let total = parse_size(memory).map_err(|e| format!("memory: {e}"))?;
        let used = ((total as f64) * pct / 100.0) as u64;
        set.push(("memory_used", format!("\"{}MiB\"", used >> 20)));
    }
    let mut out = String::new();
    let mut done = vec![false; set.len()];
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        match set.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                out.push_str(&format!("{} = {}\n", set[i].0, set[i].1));
                done[i] = true;
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (i, (k, v)) in set.iter().enumerate() {
        if !done[i] {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    Ok(out)
}

/// The kubesim cluster directory of the cluster whose control plane has
/// `node_root`: found by the API server its admin kubeconfig points at.
fn cluster_of(kubesim_state: &Path, node_root: &Path) -> Result<PathBuf, String> {
    let admin = node_root.join("etc/kubernetes/admin.conf");
    let text = std::fs::read_to_string(&admin).map_err(|_| {
        "not a control plane (no /etc/kubernetes/admin.conf on it); pick the pool's control plane".to_string()
    })?;
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .map(|s| s.trim().trim_start_matches("https://").to_string())
        .ok_or_else(|| format!("{}: no server in the kubeconfig", admin.display()))?;
    let clusters = kubesim_state.join("clusters");
    let entries = std::fs::read_dir(&clusters).map_err(|e| format!("{}: {e}", clusters.display()))?;
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("cluster.json")) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if json["endpoint"].as_str() == Some(server.as_str()) {
            return Ok(entry.path());
        }
    }
    Err(format!("no kubesim cluster answers on {server}"))
}

fn write_atomically(path: &Path, text: &str) -> Result<(), Failure> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Failure::new(exit::UNEXPECTED, format!("writing {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# Simulated hardware for sim-a-1\nlogical_cores = 8\nmemory = \"32GiB\"\n\
                        hostname = \"sim-a-1\"\ncpu_percent = 12.5\nmemory_used = \"6GiB\"\n";

    #[test]
    fn load_rewrites_only_the_utilization_lines() {
        let out = set_load(FILE, Some(90.0), Some(50.0)).unwrap();
        assert_eq!(
            out,
            "# Simulated hardware for sim-a-1\nlogical_cores = 8\nmemory = \"32GiB\"\n\
             hostname = \"sim-a-1\"\ncpu_percent = 90.0\nmemory_used = \"16384MiB\"\n"
        );
        let cpu_only = set_load("logical_cores = 8\nmemory = \"32GiB\"\n", Some(5.0), None).unwrap();
        assert_eq!(
            cpu_only,
            "logical_cores = 8\nmemory = \"32GiB\"\ncpu_percent = 5.0\n"
        );
        assert!(set_load("logical_cores = 8\n", None, Some(5.0)).is_err());
    }

    #[test]
    fn percentages_are_checked() {
        assert_eq!(parse_percent("90"), Ok(90.0));
        assert_eq!(parse_percent("12.5%"), Ok(12.5));
        for bad in ["101", "-1", "lots", "NaN"] {
            assert!(
                parse_percent(bad)
                    .unwrap_err()
                    .contains("accepted a number 0..=100"),
                "{bad}"
            );
        }
    }
}
