//! `rpoolctl pool backups NAME [-o json]`: a pool's etcd snapshots, newest
//! first, and its schedule.

use anyhow::Context;
use clap::Args;
use rpool_proto::units::{format_duration, format_size};
use rpool_proto::v1::{ListPoolBackupsRequest, ListPoolBackupsResponse, PoolBackup};
use serde::Serialize;

use super::pool::parse_pool_name;
use crate::client;
use crate::clock::format_utc;
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::table::Table;

/// List a pool's etcd snapshots (newest first) and its backup schedule.
///
/// KIND is manual (`rpoolctl pool backup`) or scheduled (`pool set-backup`,
/// `pool create --backup-every`). HOST is the control plane whose agent
/// holds the file at PATH; "(gone)" when that host left the pool (the file
/// may still be on it, rpool cannot reach it). Snapshots being taken,
/// failed or being deleted (retention) show in STATE; `-o json` has every
/// field (full SHA-256, revision, errors).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl pool backups web
  rpoolctl pool backups web -o json")]
pub struct BackupsArgs {
    /// Pool name
    #[arg(value_name = "NAME", value_parser = parse_pool_name, add = crate::complete::pools())]
    pub name: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `-o json` of one snapshot.
#[derive(Debug, Serialize)]
pub struct BackupView {
    pub id: String,
    pub pool: String,
    pub state: String,
    pub kind: String,
    pub host_id: String,
    pub hostname: String,
    pub node_name: String,
    pub host_gone: bool,
    pub path: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub revision: u64,
    pub total_keys: u64,
    pub requested_at_unix_ms: u64,
    pub taken_at_unix_ms: u64,
    pub error: String,
}

impl From<&PoolBackup> for BackupView {
    fn from(b: &PoolBackup) -> Self {
        BackupView {
            id: b.id.clone(),
            pool: b.pool.clone(),
            state: b.state.clone(),
            kind: b.kind.clone(),
            host_id: b.host_id.clone(),
            hostname: b.hostname.clone(),
            node_name: b.node_name.clone(),
            host_gone: b.host_gone,
            path: b.path.clone(),
            size_bytes: b.size_bytes,
            sha256: b.sha256.clone(),
            revision: b.revision,
            total_keys: b.total_keys,
            requested_at_unix_ms: b.requested_at_unix_ms,
            taken_at_unix_ms: b.taken_at_unix_ms,
            error: b.error.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
struct ListView {
    pool: String,
    interval_ms: u64,
    keep: u32,
    next_at_unix_ms: u64,
    backups: Vec<BackupView>,
}

pub async fn exec(args: BackupsArgs, settings: &Settings) -> anyhow::Result<()> {
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let request = ListPoolBackupsRequest {
        name: args.name.clone(),
    };
    let list = crate::rpc!(ctl, list_pool_backups, request)
        .with_context(|| format!("listing the backups of pool {}", args.name))?;
    match args.output.output {
        Format::Json => output::print_json(&ListView {
            pool: args.name.clone(),
            interval_ms: list.interval_ms,
            keep: list.keep,
            next_at_unix_ms: list.next_at_unix_ms,
            backups: list.backups.iter().map(BackupView::from).collect(),
        }),
        Format::Table => output::print(&render(&args.name, &list)),
    }
}

/// The table and the schedule line.
pub fn render(name: &str, list: &ListPoolBackupsResponse) -> String {
    let mut text = if list.interval_ms == 0 {
        format!("Pool {name}: no backup schedule (rpoolctl pool set-backup {name} --every 6h --keep 7).\n")
    } else {
        format!(
            "Pool {name}: an etcd snapshot every {}, keeping the {} newest scheduled; next at {}.\n",
            format_duration(std::time::Duration::from_millis(list.interval_ms)),
            list.keep,
            format_utc(list.next_at_unix_ms)
        )
    };
    if list.backups.is_empty() {
        text.push_str("No etcd snapshots yet (rpoolctl pool backup NAME).\n");
        return text;
    }
    let mut table = Table::new(["ID", "TAKEN", "HOST", "SIZE", "SHA256", "PATH", "KIND", "STATE"]);
    for b in &list.backups {
        let host = match (b.hostname.is_empty(), b.host_gone) {
            (true, false) => b.node_name.clone(),
            (false, false) => b.hostname.clone(),
            (true, true) => format!("{} (gone)", b.node_name),
            (false, true) => format!("{} (gone)", b.hostname),
        };
        let taken = if b.taken_at_unix_ms == 0 {
            format_utc(b.requested_at_unix_ms)
        } else {
            format_utc(b.taken_at_unix_ms)
        };
        let state = if b.state == "failed" {
            format!("failed: {}", b.error.chars().take(60).collect::<String>())
        } else {
            b.state.clone()
        };
        table.row([
            b.id.clone(),
            taken,
            host,
            if b.path.is_empty() {
                "-".to_owned()
            } else {
                format_size(b.size_bytes)
            },
            if b.sha256.is_empty() {
                "-".to_owned()
            } else {
                b.sha256.chars().take(12).collect()
            },
            if b.path.is_empty() {
                "-".to_owned()
            } else {
                b.path.clone()
            },
            b.kind.clone(),
            state,
        ]);
    }
    text.push_str(&table.render());
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_the_columns_an_admin_needs_and_gone_hosts() {
        let list = ListPoolBackupsResponse {
            interval_ms: 6 * 3_600_000,
            keep: 7,
            next_at_unix_ms: 1_796_598_765_000,
            backups: vec![
                PoolBackup {
                    id: "snap-9".into(),
                    pool: "web".into(),
                    hostname: "cp-1".into(),
                    state: "done".into(),
                    kind: "scheduled".into(),
                    path: "/var/lib/rpool/agent/etcd-snapshots/web/web-20261206T231245Z.db".into(),
                    size_bytes: 4096,
                    sha256: "0123456789abcdef".repeat(4),
                    taken_at_unix_ms: 1_796_598_765_000,
                    ..Default::default()
                },
                PoolBackup {
                    id: "snap-5".into(),
                    node_name: "cp-0".into(),
                    host_gone: true,
                    state: "failed".into(),
                    kind: "manual".into(),
                    error: "Error: context deadline exceeded".into(),
                    ..Default::default()
                },
            ],
        };
        let text = render("web", &list);
        for needle in [
            "every 6h",
            "keeping the 7 newest",
            "ID",
            "SHA256",
            "0123456789ab ",
            "web-20261206T231245Z.db",
            "2026-12-06T23:12:45Z",
            "scheduled",
            "cp-0 (gone)",
            "failed: Error: context deadline exceeded",
        ] {
            assert!(text.contains(needle), "{needle:?} in\n{text}");
        }
        let empty = render("web", &ListPoolBackupsResponse::default());
        assert!(empty.contains("no backup schedule"), "{empty}");
    }
}
