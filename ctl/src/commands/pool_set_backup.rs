//! `rpoolctl pool set-backup NAME --every 6h [--keep 7]` and
//! `rpoolctl pool set-backup NAME --off`.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rpool_proto::units::{format_duration, parse_duration};
use rpool_proto::v1::SetPoolBackupRequest;

use super::pool::parse_pool_name;
use crate::client;
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::view::PoolView;

/// Shortest and longest schedule interval.
pub const EVERY_MIN: Duration = Duration::from_secs(1);
pub const EVERY_MAX: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most scheduled snapshots kept.
pub const KEEP_MAX: u32 = 1_000;
/// Kept when --keep is not given.
pub const KEEP_DEFAULT: u32 = 7;

/// Set or turn off a pool's scheduled etcd snapshots and their retention.
///
/// The leader takes a snapshot every --every (on its own clock, counting
/// from the last scheduled one; a new leader carries on without catching
/// up missed ones) on a healthy joined control plane, and deletes the
/// scheduled snapshots beyond the --keep newest (the agent holding the
/// file removes it, then the record goes). Manual snapshots (`pool
/// backup`) are never deleted by the schedule. --off stops the schedule
/// and keeps every snapshot.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl pool set-backup web --every 6h --keep 14
  rpoolctl pool set-backup web --off")]
pub struct SetBackupArgs {
    /// Pool name
    #[arg(value_name = "NAME", value_parser = parse_pool_name, add = crate::complete::pools())]
    pub name: String,
    /// Take a snapshot this often (1s..=30d, written like 30m, 6h, 1d)
    #[arg(long, value_name = "DURATION", value_parser = parse_every, required_unless_present = "off")]
    pub every: Option<Duration>,
    /// Scheduled snapshots kept (1..=1000)
    #[arg(long, value_name = "N", default_value_t = KEEP_DEFAULT, value_parser = crate::cli::whole_number::<u32>(1, KEEP_MAX as u64))]
    pub keep: u32,
    /// Turn the schedule off (existing snapshots are kept)
    #[arg(long, conflicts_with_all = ["every"])]
    pub off: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// clap value parser for `--every` / `--backup-every`.
pub fn parse_every(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text).map_err(|e| e.to_string())?;
    if !(EVERY_MIN..=EVERY_MAX).contains(&d) {
        return Err(format!(
            "{} is out of range (accepted 1s..=30d, written like 30m, 6h, 1d)",
            text.trim()
        ));
    }
    Ok(d)
}

pub async fn exec(args: SetBackupArgs, settings: &Settings) -> anyhow::Result<()> {
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let request = SetPoolBackupRequest {
        name: args.name.clone(),
        interval_ms: if args.off {
            0
        } else {
            args.every.map_or(0, |d| d.as_millis() as u64)
        },
        keep: if args.off { 0 } else { args.keep },
    };
    let pool = crate::rpc!(ctl, set_pool_backup, request)
        .with_context(|| format!("setting the backup schedule of pool {}", args.name))?;
    match args.output.output {
        Format::Json => output::print_json(&PoolView::from(&pool)),
        Format::Table => output::print(&match (args.off, args.every) {
            (false, Some(every)) => format!(
                "Pool {}: an etcd snapshot every {}, keeping the {} newest scheduled.\n",
                args.name,
                format_duration(every),
                args.keep
            ),
            _ => format!(
                "Pool {}: scheduled etcd snapshots off (existing snapshots are kept).\n",
                args.name
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: SetBackupArgs,
    }

    fn parse(args: &[&str]) -> Result<SetBackupArgs, clap::Error> {
        let mut argv = vec!["set-backup"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| c.args)
    }

    #[test]
    fn every_and_keep_are_checked_and_off_excludes_every() {
        let a = parse(&["web", "--every", "6h", "--keep", "14"]).unwrap();
        assert_eq!(a.every, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(a.keep, 14);
        assert_eq!(parse(&["web", "--every", "1d"]).unwrap().keep, KEEP_DEFAULT);
        assert!(parse(&["web", "--off"]).unwrap().off);
        for (bad, needle) in [
            (vec!["web"], "--every"),
            (vec!["web", "--every", "500ms"], "1s..=30d"),
            (vec!["web", "--every", "31d"], "1s..=30d"),
            (vec!["web", "--every", "1h", "--keep", "0"], "--keep"),
            (vec!["web", "--every", "1h", "--keep", "1001"], "--keep"),
            (vec!["web", "--every", "1h", "--off"], "--off"),
        ] {
            let err = parse(&bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }
}
