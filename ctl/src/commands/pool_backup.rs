//! `rpoolctl pool backup NAME [--wait]`: an etcd snapshot of the pool's
//! cluster, taken by a healthy control plane's agent into its state dir.
//! With `--wait`, polls `ListPoolBackups` until the snapshot is done
//! (prints its path and SHA-256) or failed (exit 1 with the error).

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rpool_proto::v1::{BackupPoolRequest, ListPoolBackupsRequest, PoolBackup};

use super::pool::{self, parse_pool_name};
use super::pool_backups::BackupView;
use crate::client;
use crate::exit::{Failure, TIMED_OUT, UNEXPECTED};
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;

/// How often `--wait` asks.
const POLL: Duration = Duration::from_millis(500);

/// Take an etcd snapshot of a pool now.
///
/// A healthy joined control plane's agent runs `etcdctl snapshot save`
/// against its local etcd member (with kubeadm's etcd healthcheck client
/// certificate) into `{state_dir}/etcd-snapshots/NAME/NAME-STAMP.db` on
/// that host, then reports the file's path, size, SHA-256 and etcd
/// revision (also in the `etcd_snapshot_taken` event). One snapshot of a
/// pool at a time. A failure (etcd down, not a control plane) is an alert
/// event; the pool is untouched. See "Restoring a pool's etcd" in the
/// README for the way back.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl pool backup web --wait
  rpoolctl pool backups web")]
pub struct BackupArgs {
    /// Pool name
    #[arg(value_name = "NAME", value_parser = parse_pool_name, add = crate::complete::pools())]
    pub name: String,
    /// Wait until the snapshot is taken, showing progress on stderr (bounded by --timeout, default 10m)
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn exec(args: BackupArgs, settings: &Settings) -> anyhow::Result<()> {
    let ctl = client::connect(&settings.controllers, pool::request_timeout(settings, args.wait)).await?;
    let request = BackupPoolRequest {
        name: args.name.clone(),
    };
    let started = crate::rpc!(ctl, backup_pool, request)
        .with_context(|| format!("taking an etcd snapshot of pool {}", args.name))?;
    let json = args.output.output == Format::Json;
    let host = host_of(&started);
    if !args.wait {
        return match args.output.output {
            Format::Json => output::print_json(&BackupView::from(&started)),
            Format::Table => output::print(&format!(
                "etcd snapshot {} of pool {} requested on {host}; follow it with `rpoolctl pool backups {}` (or --wait).\n",
                started.id, args.name, args.name
            )),
        };
    }
    eprintln!(
        "etcd snapshot {} of pool {}: taking on {host} ...",
        started.id, args.name
    );
    let deadline = Instant::now() + pool::wait_budget(settings);
    loop {
        let list = crate::rpc!(
            ctl,
            list_pool_backups,
            ListPoolBackupsRequest {
                name: args.name.clone()
            }
        )
        .with_context(|| format!("listing the backups of pool {}", args.name))?;
        let Some(now) = list.backups.iter().find(|b| b.id == started.id) else {
            return Err(Failure::new(
                UNEXPECTED,
                format!(
                    "etcd snapshot {} of pool {} is gone (its task was lost: see `rpoolctl events --pool {}`)",
                    started.id, args.name, args.name
                ),
            )
            .into());
        };
        match now.state.as_str() {
            "taking" => {}
            "failed" => {
                return Err(Failure::new(
                    UNEXPECTED,
                    format!(
                        "etcd snapshot {} of pool {} on {host} failed: {}",
                        now.id, args.name, now.error
                    ),
                )
                .into());
            }
            _ => {
                if json {
                    return output::print_json(&BackupView::from(now));
                }
                return output::print(&render_done(now));
            }
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                TIMED_OUT,
                format!(
                    "etcd snapshot {} of pool {} is still being taken after {}; it goes on (rpoolctl pool backups {})",
                    started.id,
                    args.name,
                    rpool_proto::units::format_duration(pool::wait_budget(settings)),
                    args.name
                ),
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
}

fn host_of(b: &PoolBackup) -> String {
    if b.hostname.is_empty() {
        b.node_name.clone()
    } else {
        b.hostname.clone()
    }
}

/// What a taken snapshot looks like to a human.
pub fn render_done(b: &PoolBackup) -> String {
    format!(
        "etcd snapshot {} of pool {} taken on {} ({}):\n  path    {}\n  sha256  {}\n  size    {}\n  etcd revision {}, {} keys\n",
        b.id,
        b.pool,
        host_of(b),
        b.node_name,
        b.path,
        b.sha256,
        rpool_proto::units::format_size(b.size_bytes),
        b.revision,
        b.total_keys
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_snapshot_shows_host_path_and_checksum() {
        let b = PoolBackup {
            id: "snap-42".into(),
            pool: "web".into(),
            hostname: "cp-1".into(),
            node_name: "cp-1".into(),
            path: "/var/lib/rpool/agent/etcd-snapshots/web/web-20261206T231245Z.db".into(),
            sha256: "ab".repeat(32),
            size_bytes: 2048,
            revision: 7,
            total_keys: 70,
            state: "done".into(),
            ..Default::default()
        };
        let text = render_done(&b);
        assert!(text.contains("snap-42 of pool web taken on cp-1"), "{text}");
        assert!(text.contains(&"ab".repeat(32)), "{text}");
        assert!(text.contains("web-20261206T231245Z.db"), "{text}");
    }
}
