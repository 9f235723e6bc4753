//! `rpoolctl pool autoscale NAME --min-cores N --max-cores N [...]` and
//! `rpoolctl pool autoscale NAME --off`.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rpool_proto::units::{format_duration, parse_duration};
use rpool_proto::v1::{AutoscalePolicy, SetAutoscaleRequest};

use super::pool::{CORES_MAX, parse_pool_name};
use crate::client;
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::view::{AutoscaleView, PoolView};

/// Shortest and longest window or cooldown.
pub const SPAN_MIN: Duration = Duration::from_secs(1);
pub const SPAN_MAX: Duration = Duration::from_secs(24 * 3600);

/// Let the leader add or remove workers with load.
///
/// Every 200 ms the leader averages CPU and memory utilization over the
/// pool's workers (from their agents' heartbeats) and reads the pods
/// pending in the cluster (counted by a control-plane agent). It adds one
/// worker when CPU or memory stays above its target, or pods stay pending,
/// for the up-window; it releases one worker when CPU and memory both stay
/// below half their targets for the down-window. Workers never go above
/// --max-cores nor below --min-cores (a pool outside that range is moved
/// into it one host at a time); after any change it waits --cooldown.
/// Every decision is an event saying why; `pool show` says why it holds.
/// A new leader starts the windows over.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl pool autoscale web --min-cores 16 --max-cores 64
  rpoolctl pool autoscale web --min-cores 16 --max-cores 64 --cpu-target 60 --up-window 30s --cooldown 2m
  rpoolctl pool autoscale web --off")]
pub struct AutoscaleArgs {
    /// Pool name
    #[arg(value_name = "NAME", value_parser = parse_pool_name, add = crate::complete::pools())]
    pub name: String,
    /// Turn autoscaling off (the pool keeps its current size)
    #[arg(long, conflicts_with_all = ["min_cores", "max_cores", "cpu_target", "memory_target", "up_window", "down_window", "cooldown"])]
    pub off: bool,
    /// Fewest worker cores (1..=1000000)
    #[arg(long, value_name = "N", value_parser = parse_cores, required_unless_present = "off")]
    pub min_cores: Option<u64>,
    /// Most worker cores (1..=1000000, at least --min-cores)
    #[arg(long, value_name = "N", value_parser = parse_cores, required_unless_present = "off")]
    pub max_cores: Option<u64>,
    /// CPU utilization target in percent (1..=100)
    #[arg(long, value_name = "PERCENT", default_value = "70", value_parser = crate::cli::whole_number::<u32>(1, 100))]
    pub cpu_target: u32,
    /// Memory utilization target in percent (1..=100)
    #[arg(long, value_name = "PERCENT", default_value = "80", value_parser = crate::cli::whole_number::<u32>(1, 100))]
    pub memory_target: u32,
    /// How long a target must be exceeded (or pods pending) before adding a worker (1s..=24h)
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_span)]
    pub up_window: Duration,
    /// How long utilization must stay below half the targets before removing a worker (1s..=24h)
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_span)]
    pub down_window: Duration,
    /// Pause after any change before the next (1s..=24h)
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_span)]
    pub cooldown: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// clap value parser for `--min-cores` / `--max-cores`.
pub fn parse_cores(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if (1..=CORES_MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?} is out of range (accepted an integer 1..=1000000)"
        )),
    }
}

/// clap value parser for windows and the cooldown: `30s`, `1m`, `10m`, `1h`
/// within 1s..=24h.
pub fn parse_span(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text).map_err(|e| e.to_string())?;
    if !(SPAN_MIN..=SPAN_MAX).contains(&d) {
        return Err(format!(
            "{} is out of range (accepted 1s..=24h, written like 30s, 10m, 1h)",
            text.trim()
        ));
    }
    Ok(d)
}

impl AutoscaleArgs {
    /// The policy asked for; `None` with `--off`. The min <= max check is
    /// the controller's (it names the field).
    pub fn policy(&self) -> Option<AutoscalePolicy> {
        if self.off {
            return None;
        }
        Some(AutoscalePolicy {
            min_cores: self.min_cores.unwrap_or_default(),
            max_cores: self.max_cores.unwrap_or_default(),
            cpu_target_percent: self.cpu_target,
            memory_target_percent: self.memory_target,
            up_window_ms: self.up_window.as_millis() as u64,
            down_window_ms: self.down_window.as_millis() as u64,
            cooldown_ms: self.cooldown.as_millis() as u64,
            last_scaled_at_unix_ms: 0,
        })
    }
}

pub async fn exec(args: AutoscaleArgs, settings: &Settings) -> anyhow::Result<()> {
    if let (Some(min), Some(max)) = (args.min_cores, args.max_cores)
        && min > max
    {
        return Err(crate::exit::Failure::usage(format!(
            "--min-cores {min} is above --max-cores {max} (accepted min <= max)"
        ))
        .into());
    }
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let request = SetAutoscaleRequest {
        name: args.name.clone(),
        policy: args.policy(),
    };
    let pool = crate::rpc!(ctl, set_autoscale, request)
        .with_context(|| format!("setting the autoscaling of pool {}", args.name))?;
    let view = PoolView::from(&pool);
    match args.output.output {
        Format::Json => output::print_json(&view),
        Format::Table => output::print(&match &view.autoscale {
            Some(a) => format!("Pool {}: autoscaling on: {}.\n", view.name, describe(a)),
            None => format!("Pool {}: autoscaling off.\n", view.name),
        }),
    }
}

/// `16..=64 worker cores, cpu target 70%, memory target 80%, up-window 1m,
/// down-window 10m, cooldown 5m`.
pub fn describe(a: &AutoscaleView) -> String {
    let span = |ms: u64| format_duration(Duration::from_millis(ms)).replace("m0s", "m");
    format!(
        "{}..={} worker cores, cpu target {}%, memory target {}%, up-window {}, down-window {}, cooldown {}",
        a.min_cores,
        a.max_cores,
        a.cpu_target_percent,
        a.memory_target_percent,
        span(a.up_window_ms),
        span(a.down_window_ms),
        span(a.cooldown_ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<AutoscaleArgs, clap::Error> {
        let argv: Vec<&str> = ["rpoolctl", "pool", "autoscale"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        let cli = Cli::try_parse_from(&argv)?;
        match cli.command {
            crate::commands::Command::Pool(super::super::pool::PoolCommand::Autoscale(a)) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn defaults_fill_the_policy() {
        let a = parse(&["web", "--min-cores", "16", "--max-cores", "64"]).unwrap();
        let p = a.policy().unwrap();
        assert_eq!((p.min_cores, p.max_cores), (16, 64));
        assert_eq!((p.cpu_target_percent, p.memory_target_percent), (70, 80));
        assert_eq!(
            (p.up_window_ms, p.down_window_ms, p.cooldown_ms),
            (60_000, 600_000, 300_000)
        );
        let view = AutoscaleView {
            min_cores: 16,
            max_cores: 64,
            cpu_target_percent: 70,
            memory_target_percent: 80,
            up_window_ms: 60_000,
            down_window_ms: 600_000,
            cooldown_ms: 1_500,
            last_scaled_at_unix_ms: 0,
            status: None,
        };
        assert_eq!(
            describe(&view),
            "16..=64 worker cores, cpu target 70%, memory target 80%, up-window 1m, down-window 10m, cooldown 1.5s"
        );
        let off = parse(&["web", "--off"]).unwrap();
        assert_eq!(off.policy(), None);
    }

    #[test]
    fn bad_flags_are_usage_errors_naming_the_flag() {
        for (args, flag) in [
            (
                &["web", "--min-cores", "0", "--max-cores", "4"][..],
                "--min-cores",
            ),
            (&["web", "--min-cores", "4"], "--max-cores"),
            (
                &[
                    "web",
                    "--min-cores",
                    "4",
                    "--max-cores",
                    "8",
                    "--cpu-target",
                    "101",
                ],
                "--cpu-target",
            ),
            (
                &[
                    "web",
                    "--min-cores",
                    "4",
                    "--max-cores",
                    "8",
                    "--up-window",
                    "500ms",
                ],
                "--up-window",
            ),
            (
                &["web", "--min-cores", "4", "--max-cores", "8", "--cooldown", "2d"],
                "--cooldown",
            ),
            (&["web", "--off", "--min-cores", "4"], "--off"),
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(crate::clap_exit_code(err.kind()), crate::exit::USAGE, "{args:?}");
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }
}
