//! `rpoolctl sandbox down`.

use std::time::Duration;

use clap::Args;

use super::sandbox::{DirArgs, processes};
use crate::output;
use crate::sandbox::is_managed_config;
use crate::sandbox::layout::Record;
use crate::sandbox::process::{self, AGENT_BIN, Proc, StopReport};
use crate::settings::{Env, Settings};

/// How long processes get to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Stop the sandbox: agents first, then the controllers. SIGTERM each
/// recorded process that is still ours, wait up to 5s, SIGKILL leftovers;
/// remove the ctl.toml that `sandbox up` wrote.
/// Logs and state stay in the sandbox dir until the next `sandbox up`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl sandbox down
  rpoolctl sandbox down --dir /tmp/rpool-sandbox")]
pub struct DownArgs {
    #[command(flatten)]
    pub dir: DirArgs,
}

pub fn exec(args: DownArgs, settings: &Settings, env: &Env) -> anyhow::Result<()> {
    let layout = args.dir.layout(env)?;
    let Some(record) = Record::load(&layout.record())? else {
        return output::print(&format!(
            "No sandbox in {}; nothing to stop.\n",
            layout.dir.display()
        ));
    };
    let report = stop_in_order(&processes(&layout, &record), STOP_GRACE);
    let removed_config = settings
        .config_path
        .as_deref()
        .filter(|path| remove_managed_config(path));
    std::fs::remove_file(layout.record())
        .map_err(|e| anyhow::anyhow!("removing {}: {e}", layout.record().display()))?;
    let mut text = describe(&report);
    if let Some(path) = removed_config {
        text.push_str(&format!("Removed {} (written by sandbox up).\n", path.display()));
    }
    text.push_str(&format!("Logs and state are kept in {}.\n", layout.dir.display()));
    output::print(&text)?;
    if !report.survivors.is_empty() {
        let names: Vec<String> = report
            .survivors
            .iter()
            .map(|p| format!("{} (pid {})", p.name, p.pid))
            .collect();
        anyhow::bail!("still running after SIGKILL: {}", names.join(", "));
    }
    Ok(())
}

/// Stops the agents, then (once they are gone) the controllers, so no agent
/// is left reconnecting to a group that is shutting down.
pub fn stop_in_order(procs: &[Proc], grace: Duration) -> StopReport {
    let (agents, controllers): (Vec<Proc>, Vec<Proc>) =
        procs.iter().cloned().partition(|p| p.binary == AGENT_BIN);
    let mut report = process::stop(&agents, grace);
    let rest = process::stop(&controllers, grace);
    report.stopped.extend(rest.stopped);
    report.killed.extend(rest.killed);
    report.not_running.extend(rest.not_running);
    report.survivors.extend(rest.survivors);
    report
}

/// Removes `path` if `sandbox up` wrote it; returns whether it did.
pub fn remove_managed_config(path: &std::path::Path) -> bool {
    match std::fs::read_to_string(path) {
        Ok(text) if is_managed_config(&text) => std::fs::remove_file(path).is_ok(),
        _ => false,
    }
}

/// One line per outcome.
pub fn describe(report: &StopReport) -> String {
    let list = |procs: &[process::Proc]| {
        procs
            .iter()
            .map(|p| format!("{} (pid {})", p.name, p.pid))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = String::new();
    if !report.stopped.is_empty() {
        text.push_str(&format!("Stopped {}.\n", list(&report.stopped)));
    }
    if !report.killed.is_empty() {
        text.push_str(&format!(
            "Killed {} (did not exit within {}s of SIGTERM).\n",
            list(&report.killed),
            STOP_GRACE.as_secs()
        ));
    }
    if !report.not_running.is_empty() {
        text.push_str(&format!("Already gone: {}.\n", list(&report.not_running)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::process::CONTROLLER_BIN;

    #[test]
    fn the_report_names_each_process_once() {
        let p = |name: &str, pid| Proc {
            name: name.into(),
            pid,
            binary: AGENT_BIN,
            needle: String::new(),
        };
        let report = StopReport {
            stopped: vec![p("agent-1", 10), p("controller", 9)],
            killed: vec![p("agent-2", 11)],
            not_running: vec![p("agent-3", 12)],
            survivors: vec![],
        };
        assert_eq!(
            describe(&report),
            "Stopped agent-1 (pid 10), controller (pid 9).\n\
             Killed agent-2 (pid 11) (did not exit within 5s of SIGTERM).\n\
             Already gone: agent-3 (pid 12).\n"
        );
    }

    #[test]
    fn only_a_managed_ctl_config_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("ctl.toml");
        std::fs::write(
            &mine,
            crate::sandbox::managed_config(&["127.0.0.1:7440".to_string()]),
        )
        .unwrap();
        assert!(remove_managed_config(&mine));
        assert!(!mine.exists());
        std::fs::write(&mine, "controllers = [\"10.0.0.1:7443\"]\n").unwrap();
        assert!(!remove_managed_config(&mine));
        assert!(mine.exists());
    }

    #[test]
    fn agents_are_stopped_before_controllers_and_reported_together() {
        // Pids that are not ours (our own test process, pid 0) are left alone
        // and reported, agents first.
        let p = |name: &str, pid, binary| Proc {
            name: name.into(),
            pid,
            binary,
            needle: "/nowhere/controller.toml".into(),
        };
        let procs = [
            p("controller-1", std::process::id(), CONTROLLER_BIN),
            p("agent-1", 0, AGENT_BIN),
        ];
        let report = stop_in_order(&procs, Duration::from_millis(10));
        let names: Vec<&str> = report.not_running.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["agent-1", "controller-1"]);
        assert!(report.stopped.is_empty() && report.killed.is_empty() && report.survivors.is_empty());
    }
}
