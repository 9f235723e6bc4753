//! `rpoolctl host list`.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use rpool_proto::units::{format_duration, format_size};
use rpool_proto::v1::ListHostsRequest;

use crate::client;
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::table::Table;
use crate::view::HostView;

/// Host states accepted by `--state` (checked before calling the controller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    Ready,
    Suspect,
    Down,
    Cordoned,
    Joining,
    Leaving,
}

impl StateFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Suspect => "suspect",
            Self::Down => "down",
            Self::Cordoned => "cordoned",
            Self::Joining => "joining",
            Self::Leaving => "leaving",
        }
    }
}

/// List hosts, ordered by zone, hostname and id.
///
/// LAST SEEN is the age of the host's last heartbeat ("-" when none was
/// received by this controller). CPU% and MEM% come from the last heartbeat.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl host list
  rpoolctl host list --state down
  rpoolctl host list --zone b -o json | jq -r '.[].hostname'")]
pub struct ListArgs {
    /// Only hosts in this state
    #[arg(long, value_enum, value_name = "STATE")]
    pub state: Option<StateFilter>,
    /// Only hosts in this zone
    #[arg(long, value_name = "ZONE")]
    pub zone: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn exec(args: ListArgs, settings: &Settings) -> anyhow::Result<()> {
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let request = ListHostsRequest {
        state: args.state.map(|s| s.as_str().to_string()).unwrap_or_default(),
        zone: args.zone.clone().unwrap_or_default(),
    };
    let response = crate::rpc!(ctl, list_hosts, request).context("listing hosts")?;
    let hosts: Vec<HostView> = response.hosts.iter().map(HostView::from).collect();
    match args.output.output {
        Format::Json => output::print_json(&hosts),
        Format::Table => output::print(&render(&hosts)),
    }
}

/// The `host list` table, or `No hosts.`.
pub fn render(hosts: &[HostView]) -> String {
    if hosts.is_empty() {
        return "No hosts.\n".to_string();
    }
    let mut table = Table::new([
        "ID",
        "HOSTNAME",
        "ZONE",
        "STATE",
        "POOL",
        "ROLE",
        "CORES",
        "MEMORY",
        "CPU%",
        "MEM%",
        "LAST SEEN",
    ]);
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    for h in hosts {
        table.row([
            h.host_id.chars().take(8).collect::<String>(),
            h.hostname.clone(),
            h.zone.clone(),
            h.state.clone(),
            or_dash(&h.pool),
            or_dash(&h.pool_role),
            h.cores.to_string(),
            format_size(h.memory_bytes),
            h.utilization
                .as_ref()
                .map_or("-".to_string(), |u| format!("{:.1}", u.cpu_percent)),
            h.memory_percent().map_or("-".to_string(), |p| format!("{p:.1}")),
            last_seen(h),
        ]);
    }
    table.render()
}

/// Heartbeat age, or `-` when this controller never heard from the host.
pub fn last_seen(h: &HostView) -> String {
    if h.last_heartbeat_age_ms == 0 && !h.connected {
        "-".to_string()
    } else {
        format_duration(Duration::from_millis(h.last_heartbeat_age_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::view::tests::sample_host;
    use clap::Parser;

    #[test]
    fn the_table_has_the_documented_columns() {
        let mut other = HostView::from(&sample_host());
        other.host_id = "77aa0000-0000-4000-8000-000000000000".into();
        other.hostname = "sim-c-1".into();
        other.zone = "c".into();
        other.state = "down".into();
        other.connected = false;
        other.last_heartbeat_age_ms = 0;
        other.utilization = None;
        other.memory_bytes = 128 << 30;
        other.pool = String::new();
        other.pool_role = String::new();
        let mut first = HostView::from(&sample_host());
        first.pool = "web".into();
        first.pool_role = "worker".into();
        let text = render(&[first, other]);
        assert_eq!(
            text,
            "ID        HOSTNAME  ZONE  STATE  POOL  ROLE    CORES  MEMORY  CPU%  MEM%  LAST SEEN\n\
             3f2a9c1d  sim-b-2   b     ready  web   worker  16     64GiB   20.0  12.5  120ms\n\
             77aa0000  sim-c-1   c     down   -     -       16     128GiB  -     -     -\n"
        );
    }

    #[test]
    fn an_empty_list_says_no_hosts() {
        assert_eq!(render(&[]), "No hosts.\n");
        assert_eq!(serde_json::to_string(&Vec::<HostView>::new()).unwrap(), "[]");
    }

    #[test]
    fn every_known_state_is_accepted_by_the_state_filter() {
        for state in crate::view::STATES {
            let cli = Cli::try_parse_from(["rpoolctl", "host", "list", "--state", state]).unwrap();
            let crate::commands::Command::Host(super::super::host::HostCommand::List(args)) = cli.command
            else {
                panic!("parsed as something else");
            };
            assert_eq!(args.state.unwrap().as_str(), state);
        }
    }

    #[test]
    fn an_unknown_state_is_a_usage_error_naming_the_flag_and_accepted_values() {
        let err = Cli::try_parse_from(["rpoolctl", "host", "list", "--state", "sleeping"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        let text = err.to_string();
        assert!(text.contains("--state"), "{text}");
        assert!(
            text.contains("ready, suspect, down, cordoned, joining, leaving"),
            "{text}"
        );
    }
}
