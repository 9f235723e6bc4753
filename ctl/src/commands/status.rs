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

/// Show the group as its leader sees it: id, version, Raft role, term,
/// leader, voters, commit and applied index, uptime, hosts by state, agents
/// connected (agents talk to the leader) and liveness settings.
///
/// Whichever controller answers first, a follower that knows the leader is
/// left for the leader; with no leader known (an election, a lost quorum)
/// the answering controller's own view is shown, and says so.
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
    let mut response =
        crate::rpc!(ctl, status, StatusRequest {}).context("asking the controller for its status")?;
    if let Some(leader) = leader_to_ask(&response) {
        // The leader's view: it judges liveness and holds the agents' streams.
        // If it cannot be asked, the follower's answer stands.
        if let Ok(channel) =
            client::connect_one(&leader, client::CONNECT_TIMEOUT_CAP.min(settings.timeout())).await
        {
            let mut client = rpool_proto::v1::admin_service_client::AdminServiceClient::new(channel);
            if let Ok(Ok(answer)) =
                tokio::time::timeout(settings.timeout(), client.status(StatusRequest {})).await
            {
                response = answer.into_inner();
            }
        }
    }
    let view = StatusView::from(&response);
    match args.output.output {
        Format::Json => output::print_json(&view),
        Format::Table => output::print(&render(&view)),
    }
}

/// The leader's address when the answer came from another controller.
fn leader_to_ask(answer: &rpool_proto::v1::StatusResponse) -> Option<String> {
    (answer.role != "leader" && !answer.leader_address.is_empty()).then(|| answer.leader_address.clone())
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

/// `ID (ADDRESS)`, just `ID` when the address is unknown, `none known` when
/// there is no leader ("" or "0").
pub fn leader_text(leader_id: &str, leader_address: &str) -> String {
    match (leader_id, leader_address) {
        ("" | "0", _) => "none known".to_string(),
        (id, "") => id.to_string(),
        (id, address) => format!("{id} ({address})"),
    }
}

pub fn render(view: &StatusView) -> String {
    let ms = |v: u32| format_duration(Duration::from_millis(v.into()));
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "unknown".to_string()
        } else {
            s.to_string()
        }
    };
    let leader_id = view.leader_id.map(|id| id.to_string()).unwrap_or_default();
    let role = if view.role == "leader" {
        view.role.clone()
    } else {
        // Only when the leader could not be asked: say whose view this is.
        format!(
            "{} (the leader could not be asked: this is controller {}'s own view)",
            or_unknown(&view.role),
            view.controller_id
        )
    };
    key_values(&[
        ("Controller", view.controller_id.to_string()),
        ("Version", view.version.clone()),
        ("Role", role),
        ("Term", view.term.to_string()),
        ("Leader", leader_text(&leader_id, &view.leader_address)),
        ("Voters", view.voters.to_string()),
        ("Commit index", view.commit_index.to_string()),
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
            controller_id: 1,
            version: "0.1.0".into(),
            leader_id: Some(2),
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
            role: "follower".into(),
            term: 7,
            commit_index: 43,
            leader_address: "10.0.0.2:7443".into(),
            voters: 3,
        };
        assert_eq!(
            render(&view),
            "Controller:        1\n\
             Version:           0.1.0\n\
             Role:              follower (the leader could not be asked: this is controller 1's own view)\n\
             Term:              7\n\
             Leader:            2 (10.0.0.2:7443)\n\
             Voters:            3\n\
             Commit index:      43\n\
             Applied index:     42\n\
             Uptime:            3m10s\n\
             Hosts:             6 (ready 5, down 1)\n\
             Agents connected:  5\n\
             Liveness:          heartbeat every 1s, suspect after 3s, down after 5s\n"
        );
    }

    #[test]
    fn a_follower_answer_sends_rpoolctl_to_the_leader() {
        let mut answer = rpool_proto::v1::StatusResponse {
            role: "follower".into(),
            leader_address: "127.0.0.1:7444".into(),
            ..Default::default()
        };
        assert_eq!(leader_to_ask(&answer).as_deref(), Some("127.0.0.1:7444"));
        answer.role = "leader".into();
        assert_eq!(leader_to_ask(&answer), None);
        answer.role = "candidate".into();
        answer.leader_address.clear();
        assert_eq!(leader_to_ask(&answer), None);
    }

    #[test]
    fn the_leader_is_id_and_address_or_none_known() {
        assert_eq!(leader_text("2", "10.0.0.2:7443"), "2 (10.0.0.2:7443)");
        assert_eq!(leader_text("2", ""), "2");
        assert_eq!(leader_text("", ""), "none known");
        assert_eq!(leader_text("0", "10.0.0.2:7443"), "none known");
    }
}
