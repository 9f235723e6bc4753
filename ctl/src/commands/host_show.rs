//! `rpoolctl host show ID`.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rpool_proto::units::{format_duration, format_size};
use rpool_proto::v1::GetHostRequest;

use crate::client;
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::table::{Table, key_values};
use crate::view::HostView;

/// Show one host: state, inventory, utilization, health checks, labels and
/// addresses.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl host show 3f2a9c1d-0b4e-4c2a-9d7e-1a2b3c4d5e6f
  rpoolctl host show 3f2a              # a unique prefix of at least 4 characters
  rpoolctl host show sim-a-1           # or its hostname
  rpoolctl host show 3f2a -o json | jq .health")]
pub struct ShowArgs {
    /// Host id, a unique prefix of it (at least 4 characters), or its hostname
    #[arg(value_name = "ID|HOSTNAME", add = crate::complete::hosts())]
    pub id: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn exec(args: ShowArgs, settings: &Settings) -> anyhow::Result<()> {
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let host_id = super::host::resolve_id(&ctl, &args.id).await?;
    let host = crate::rpc!(ctl, get_host, GetHostRequest { host_id })
        .with_context(|| format!("showing host {}", args.id))?;
    let view = HostView::from(&host);
    match args.output.output {
        Format::Json => output::print_json(&view),
        Format::Table => output::print(&render(&view, rpool_proto::clock::unix_ms_now())),
    }
}

fn ago(now_ms: u64, then_ms: u64) -> String {
    if then_ms == 0 {
        return "-".to_string();
    }
    format!(
        "{} ago",
        format_duration(Duration::from_millis(now_ms.saturating_sub(then_ms)))
    )
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// The human view of one host; `now_ms` makes "ago" deterministic in tests.
pub fn render(h: &HostView, now_ms: u64) -> String {
    let mut state = format!(
        "{} for {}",
        h.state,
        ago(now_ms, h.state_since_unix_ms).trim_end_matches(" ago")
    );
    if !h.state_reason.is_empty() {
        state.push_str(&format!(" ({})", h.state_reason));
    }
    let connected = if h.connected {
        format!(
            "yes, last heartbeat {} ago, clock skew {}ms",
            format_duration(Duration::from_millis(h.last_heartbeat_age_ms)),
            h.clock_skew_ms
        )
    } else if h.last_heartbeat_age_ms > 0 {
        format!(
            "no, last heartbeat {} ago",
            format_duration(Duration::from_millis(h.last_heartbeat_age_ms))
        )
    } else {
        "no".to_string()
    };
    let labels = if h.labels.is_empty() {
        "-".to_string()
    } else {
        h.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let addresses = if h.addresses.is_empty() {
        "-".to_string()
    } else {
        h.addresses.join(", ")
    };
    let advertises = match (h.advertise_address.as_str(), h.advertise_source.as_str()) {
        ("", _) => "- (none found; kubeadm picks)".to_string(),
        (address, "config") => format!("{address} (advertise_address in agent.toml)"),
        (address, "connection") => format!("{address} (its connection to the controllers)"),
        (address, "interface") => {
            format!("{address} (an interface's: its connection's is on a bridge/CNI/veth/loopback one)")
        }
        (address, other) => format!("{address} ({other})"),
    };
    let advertises = if h.simulated && !h.advertise_address.is_empty() {
        format!("{advertises}; unused on simulated hardware")
    } else {
        advertises
    };
    let pool = match (h.pool.as_str(), h.pool_role.as_str()) {
        ("", _) => "- (free, in the fleet)".to_string(),
        (pool, "") => pool.to_string(),
        (pool, role) => format!("{pool} ({role})"),
    };
    let quota = if h.cpu_quota_millicores == 0 {
        String::new()
    } else {
        format!(", cgroup quota {}m", h.cpu_quota_millicores)
    };
    let utilization = match &h.utilization {
        None => "unknown".to_string(),
        Some(u) => format!(
            "cpu {:.1}%, memory {} used ({:.1}%), load {:.2} {:.2} {:.2}",
            u.cpu_percent,
            format_size(u.memory_used_bytes),
            h.memory_percent().unwrap_or(0.0),
            u.load_average_1m,
            u.load_average_5m,
            u.load_average_15m
        ),
    };
    let mut text = key_values(&[
        ("ID", h.host_id.clone()),
        ("Hostname", h.hostname.clone()),
        ("Zone", h.zone.clone()),
        ("State", state),
        ("Registered", ago(now_ms, h.registered_at_unix_ms)),
        ("Agent version", h.agent_version.clone()),
        ("Simulated", yes_no(h.simulated)),
        ("Connected", connected),
        (
            "Cores",
            format!("{} logical, {} physical{quota}", h.cores, h.physical_cores),
        ),
        (
            "Memory",
            format!(
                "{} total, {} available",
                format_size(h.memory_bytes),
                format_size(h.memory_available_bytes)
            ),
        ),
        ("Utilization", utilization),
        ("Addresses", addresses),
        ("Advertises", advertises),
        ("CRI socket", or_dash(&h.cri_socket)),
        ("Labels", labels),
        ("Pool", pool),
    ]);
    text.push_str("Health:\n");
    if h.health.is_empty() {
        text.push_str("  (no checks reported)\n");
    } else {
        let mut table = Table::new(["STATUS", "CHECK", "MESSAGE"]);
        for c in &h.health {
            table.row([c.status.to_uppercase(), c.name.clone(), c.message.clone()]);
        }
        for line in table.render().lines() {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::tests::sample_host;

    #[test]
    fn show_lists_every_field_with_health_as_a_table() {
        let view = HostView::from(&sample_host());
        let text = render(&view, 1_700_000_010_000);
        assert_eq!(
            text,
            "ID:             3f2a9c1d-0b4e-4c2a-9d7e-1a2b3c4d5e6f\n\
             Hostname:       sim-b-2\n\
             Zone:           b\n\
             State:          ready for 10s (registered)\n\
             Registered:     11s ago\n\
             Agent version:  0.1.0\n\
             Simulated:      yes\n\
             Connected:      yes, last heartbeat 120ms ago, clock skew -3ms\n\
             Cores:          16 logical, 8 physical\n\
             Memory:         64GiB total, 56GiB available\n\
             Utilization:    cpu 20.0%, memory 8GiB used (12.5%), load 1.50 1.50 1.50\n\
             Addresses:      10.0.0.7, 127.0.0.1\n\
             Advertises:     10.0.0.7 (its connection to the controllers); unused on simulated hardware\n\
             CRI socket:     unix:///run/containerd/containerd.sock\n\
             Labels:         rack=r12\n\
             Pool:           - (free, in the fleet)\n\
             Health:\n\
             \x20 STATUS  CHECK      MESSAGE\n\
             \x20 OK      disk_free  40.0GiB free (threshold 1.0GiB)\n"
        );
    }
}
