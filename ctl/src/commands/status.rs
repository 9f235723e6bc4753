//! `rpoolctl status`: the controller and a fleet summary.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rpool_proto::units::format_duration;
use rpool_proto::v1::StatusRequest;

use crate::client;
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::table::key_values;
use crate::view::{STATES, StatusView};

/// Show the controller that answers: id, version, leader, applied index,
/// uptime, hosts by state, agents connected and liveness settings.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl status
  rpoolctl status -o json | jq .hosts_by_state")]
pub struct StatusArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn exec(args: StatusArgs, settings: &Settings) -> anyhow::Result<()> {
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let response = ctl
        .call(ctl.client.clone().status(StatusRequest {}))
        .await
        .context("asking the controller for its status")?;
    let view = StatusView::from(&response);
    match args.output.output {
        Format::Json => output::print_json(&view),
        Format::Table => output::print(&render(&view)),
    }
}

/// `ready 5, down 1` in the canonical state order, unknown states last.
pub fn hosts_by_state_text(view: &StatusView) -> String {
    let mut parts: Vec<String> = STATES
        .iter()
        .filter_map(|s| {
            view.hosts_by_state
                .get(*s)
                .filter(|n| **n > 0)
                .map(|n| format!("{s} {n}"))
        })
        .collect();
    parts.extend(
        view.hosts_by_state
            .iter()
            .filter(|(k, n)| !STATES.contains(&k.as_str()) && **n > 0)
            .map(|(k, n)| format!("{k} {n}")),
    );
    if parts.is_empty() {
        format!("{}", view.hosts_total)
    } else {
        format!("{} ({})", view.hosts_total, parts.join(", "))
    }
}

pub fn render(view: &StatusView) -> String {
    let ms = |v: u32| format_duration(Duration::from_millis(v.into()));
    let leader = if view.leader_id.is_empty() {
        "none known".to_string()
    } else {
        view.leader_id.clone()
    };
    key_values(&[
        ("Controller", view.controller_id.clone()),
        ("Version", view.version.clone()),
        ("Leader", leader),
        ("Applied index", view.applied_index.to_string()),
        ("Uptime", format_duration(Duration::from_secs(view.uptime_s))),
        ("Hosts", hosts_by_state_text(view)),
        ("Agents connected", view.agents_connected.to_string()),
        (
            "Liveness",
            format!(
                "heartbeat every {}, suspect after {}, down after {}",
                ms(view.heartbeat_interval_ms),
                ms(view.suspect_after_ms),
                ms(view.down_after_ms)
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_renders_as_aligned_key_values() {
        let view = StatusView {
            controller_id: "1".into(),
            version: "0.1.0".into(),
            leader_id: "1".into(),
            applied_index: 42,
            hosts_total: 6,
            hosts_by_state: [
                ("down".to_string(), 1),
                ("ready".to_string(), 5),
                ("suspect".to_string(), 0),
            ]
            .into_iter()
            .collect(),
            agents_connected: 5,
            uptime_s: 190,
            heartbeat_interval_ms: 1000,
            suspect_after_ms: 3000,
            down_after_ms: 5000,
        };
        assert_eq!(
            render(&view),
            "Controller:        1\n\
             Version:           0.1.0\n\
             Leader:            1\n\
             Applied index:     42\n\
             Uptime:            3m10s\n\
             Hosts:             6 (ready 5, down 1)\n\
             Agents connected:  5\n\
             Liveness:          heartbeat every 1s, suspect after 3s, down after 5s\n"
        );
    }
}
