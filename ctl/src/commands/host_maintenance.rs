//! `rpoolctl host cordon|uncordon|drain ID`: host maintenance.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Args;
use rpool_proto::units::format_size;
use rpool_proto::v1::{DrainHostRequest, HostRequest};

use super::pool_wait::{self, Until};
use crate::client;
use crate::confirm::{self, Confirmation};
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::view::HostView;

/// Cordon a host: it is never placed in a pool (it stays in the pool it is
/// in; `host drain` moves it out).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  rpoolctl host cordon 3f2a\n  rpoolctl host uncordon 3f2a")]
pub struct CordonArgs {
    /// Host id, a unique prefix of it (at least 4 characters), or its hostname
    #[arg(value_name = "ID|HOSTNAME", add = crate::complete::hosts())]
    pub id: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Cordon a host and move it out of its pool: when the pool would fall
/// below its request, replacement workers join first; then the host is
/// drained, deleted from the cluster and reset. A control plane (of a pool
/// with 3 or more, not the one serving the API endpoint) is replaced by a
/// new control plane that joins etcd first; then it is drained, its etcd
/// member removed, its node deleted and the host reset.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl host drain 3f2a --dry-run     # which replacements would join
  rpoolctl host drain 3f2a --yes --wait  # move it out, wait until the pool is ready")]
pub struct DrainArgs {
    /// Host id, a unique prefix of it (at least 4 characters), or its hostname
    #[arg(value_name = "ID|HOSTNAME", add = crate::complete::hosts())]
    pub id: String,
    /// Only show what would happen
    #[arg(long, conflicts_with_all = ["yes", "wait"])]
    pub dry_run: bool,
    /// Do not ask for confirmation
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Wait until the pool is ready again (bounded by --timeout)
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn cordon(args: CordonArgs, settings: &Settings, cordon: bool) -> anyhow::Result<()> {
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let request = HostRequest {
        host_id: super::host::resolve_id(&ctl, &args.id).await?,
    };
    let host = if cordon {
        crate::rpc!(ctl, cordon_host, request)
    } else {
        crate::rpc!(ctl, uncordon_host, request)
    }
    .with_context(|| {
        format!(
            "{} host {}",
            if cordon { "cordoning" } else { "uncordoning" },
            args.id
        )
    })?;
    let view = HostView::from(&host);
    match args.output.output {
        Format::Json => output::print_json(&view),
        Format::Table => {
            println!("Host {} ({}) is {}.", view.hostname, view.host_id, view.state);
            Ok(())
        }
    }
}

pub async fn drain(mut args: DrainArgs, settings: &Settings) -> anyhow::Result<()> {
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    args.id = super::host::resolve_id(&ctl, &args.id).await?;
    let plan = crate::rpc!(
        ctl,
        drain_host,
        DrainHostRequest {
            host_id: args.id.clone(),
            dry_run: true,
        }
    )
    .with_context(|| format!("planning the drain of host {}", args.id))?;
    let host = plan.host.as_ref().map(HostView::from);
    let name = host.as_ref().map_or(args.id.clone(), |h| h.hostname.clone());
    let mut said = if plan.pool.is_empty() {
        format!("Host {name} is in no pool: it will only be cordoned.\n")
    } else if plan.replacements.is_empty() {
        format!(
            "Host {name} leaves pool {}; the pool keeps its request without a replacement.\n",
            plan.pool
        )
    } else {
        let mut text = format!(
            "Host {name} leaves pool {}; first joining as replacement:\n",
            plan.pool
        );
        for r in &plan.replacements {
            text.push_str(&format!(
                "  {}  {}  {} cores  {}\n",
                r.hostname,
                r.zone,
                r.cores,
                format_size(r.memory_bytes)
            ));
        }
        text
    };
    if args.dry_run {
        said.push_str("Dry run: nothing was changed.\n");
        return match args.output.output {
            Format::Json => output::print_json(&serde_json::json!({
                "host": host,
                "pool": plan.pool,
                "replacements": plan.replacements.iter().map(|r| serde_json::json!({
                    "host_id": r.host_id, "hostname": r.hostname, "zone": r.zone,
                    "cores": r.cores, "memory_bytes": r.memory_bytes,
                })).collect::<Vec<_>>(),
            })),
            Format::Table => {
                print!("{said}");
                Ok(())
            }
        };
    }
    eprint!("{said}");
    if confirm::confirmation(
        args.yes,
        std::io::stdin().is_terminal(),
        &format!("drain host {name}"),
    )? == Confirmation::Ask
    {
        confirm::ask_or_decline(
            &format!("Drain host {name}? [y/N]"),
            &format!("host {name} was not drained"),
        )?;
    }
    let done = crate::rpc!(
        ctl,
        drain_host,
        DrainHostRequest {
            host_id: args.id.clone(),
            dry_run: false,
        }
    )
    .with_context(|| format!("draining host {}", args.id))?;
    if args.wait && !done.pool.is_empty() {
        pool_wait::wait_on_stderr(&ctl, &done.pool, Until::Ready, settings).await?;
    }
    let view = done.host.as_ref().map(HostView::from);
    match args.output.output {
        Format::Json => output::print_json(&view),
        Format::Table => {
            println!(
                "Host {name} is cordoned{}.",
                if done.pool.is_empty() {
                    String::new()
                } else if args.wait {
                    format!(" and out of pool {}", done.pool)
                } else {
                    format!(
                        " and leaving pool {} (rpoolctl pool show {})",
                        done.pool, done.pool
                    )
                }
            );
            Ok(())
        }
    }
}
