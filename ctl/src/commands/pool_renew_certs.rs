//! `rpoolctl pool renew-certs NAME`.
//!
//! Flow: a dry run first (the controller answers the control planes in
//! order and what runs on each), the plan printed, confirmation (`Renew
//! the certificates of pool NAME? [y/N]` on a terminal; `--yes`
//! otherwise), then the real call, then `--wait` until every control plane
//! is done (or the pool is degraded: exit 1). The same command again
//! resumes a renewal stopped by a failure.

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use rpool_proto::v1::{GetPoolRequest, RenewCertsRequest, RenewCertsResponse};

use super::pool::{self, parse_pool_name};
use super::pool_wait;
use crate::client::{self, Controller};
use crate::confirm::{self, Confirmation};
use crate::exit::{self, Failure};
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::view::PoolView;

/// Renew a pool's kubeadm certificates, one control plane at a time.
///
/// On each control plane in turn: `kubeadm certs renew all`, then the
/// static pods (etcd, kube-apiserver, kube-controller-manager,
/// kube-scheduler) restarted by moving their manifests out of
/// /etc/kubernetes/manifests and back, as kubeadm's guide says (they do
/// not all reload certificates), then the API server waited for and the
/// expiry read again. Certificate authorities (10 years) are not renewed.
/// Refused while the pool is being upgraded (`kubeadm upgrade` renews the
/// certificates too). A failed step leaves the pool degraded with the
/// reason; fix it and run the same command again to resume.
#[derive(Debug, Args)]
#[command(
    disable_version_flag = true,
    after_help = "\
Examples:
  rpoolctl pool renew-certs web --dry-run
  rpoolctl pool renew-certs web --yes --wait
  rpoolctl pool show web            # the Certificates line: first to expire"
)]
pub struct RenewCertsArgs {
    /// Pool name
    #[arg(value_name = "NAME", value_parser = parse_pool_name)]
    pub name: String,
    /// Only show the plan; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Wait until every control plane is renewed, showing progress on stderr
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `-o json`: the control planes in order, what runs, and the pool.
#[derive(Debug, serde::Serialize)]
struct RenewView {
    hosts: Vec<String>,
    actions: String,
    pool: Option<PoolView>,
}

impl From<&RenewCertsResponse> for RenewView {
    fn from(r: &RenewCertsResponse) -> Self {
        RenewView {
            hosts: r.hosts.clone(),
            actions: r.actions.clone(),
            pool: r.pool.as_ref().map(PoolView::from),
        }
    }
}

pub async fn exec(args: RenewCertsArgs, settings: &Settings) -> anyhow::Result<()> {
    let confirmation = if args.dry_run {
        Confirmation::Given
    } else {
        confirm::confirmation(
            args.yes,
            std::io::stdin().is_terminal(),
            &format!("renew the certificates of pool {}", args.name),
        )?
    };
    let ctl = client::connect(&settings.controllers, pool::request_timeout(settings, args.wait)).await?;
    let request = |dry_run| RenewCertsRequest {
        name: args.name.clone(),
        dry_run,
    };
    let plan = renew(&ctl, request(true)).await?;
    let json = args.output.output == Format::Json;
    let say = |text: &str| -> anyhow::Result<()> {
        if json {
            eprint!("{text}");
            Ok(())
        } else {
            output::print(text)
        }
    };
    say(&format!(
        "Renew the certificates of pool {} on {} control plane(s), one at a time, in this order: {}\nOn each: {}.\n",
        args.name,
        plan.hosts.len(),
        plan.hosts.join(", "),
        plan.actions
    ))?;
    if args.dry_run {
        say("Dry run: nothing was changed.\n")?;
        if json {
            output::print_json(&RenewView::from(&plan))?;
        }
        return Ok(());
    }
    if confirmation == Confirmation::Ask {
        let question = format!("Renew the certificates of pool {}? [y/N]", args.name);
        confirm::ask_or_decline(
            &question,
            &format!("the certificates of pool {} were not renewed", args.name),
        )?;
    }
    let done = renew(&ctl, request(false)).await?;
    say(&format!(
        "Certificate renewal of pool {} started; follow it with `rpoolctl pool show {}` or `rpoolctl events --pool {} --follow`.\n",
        args.name, args.name, args.name
    ))?;
    let mut view = RenewView::from(&done);
    if args.wait {
        view.pool = Some(wait(&ctl, &args.name, settings).await?);
        if let Some(c) = view.pool.as_ref().and_then(|p| p.certificates.as_ref()) {
            say(&format!(
                "Certificates of pool {} renewed; the first to expire is {} on {} ({} days).\n",
                args.name, c.name, c.hostname, c.days_left
            ))?;
        }
    }
    if json {
        output::print_json(&view)?;
    }
    Ok(())
}

/// Polls until the renewal is over and the pool ready (degraded: an error).
async fn wait(ctl: &Controller, name: &str, settings: &Settings) -> anyhow::Result<PoolView> {
    let budget = pool::wait_budget(settings);
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let p = crate::rpc!(
            ctl,
            get_pool,
            GetPoolRequest {
                name: name.to_owned()
            }
        )
        .with_context(|| format!("reading pool {name}"))?;
        let renewal = p.certificates.as_ref().and_then(|c| c.renewal.as_ref());
        let line = match renewal {
            Some(r) => format!(
                "pool {name}: certificates renewed on {}/{} control planes",
                r.control_planes_done, r.control_planes_total
            ),
            None => format!("pool {name}: {}", p.phase),
        };
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if p.phase == "degraded" {
            return Err(Failure::new(
                exit::UNEXPECTED,
                format!("pool {name} is degraded: {}", p.phase_reason),
            )
            .into());
        }
        if renewal.is_none() && p.phase == "ready" {
            return Ok(PoolView::from(&p));
        }
        if start.elapsed() >= budget {
            return Err(Failure::new(
                exit::TIMED_OUT,
                format!(
                    "pool {name}: the renewal did not finish within {}s (it goes on; see `rpoolctl pool show {name}`)",
                    budget.as_secs()
                ),
            )
            .into());
        }
        tokio::time::sleep(pool_wait::POLL).await;
    }
}

/// `RenewCerts` (a dry run when the request says so).
async fn renew(ctl: &Controller, request: RenewCertsRequest) -> anyhow::Result<RenewCertsResponse> {
    let name = request.name.clone();
    let what = if request.dry_run {
        "planning the certificate renewal of pool"
    } else {
        "renewing the certificates of pool"
    };
    crate::rpc!(ctl, renew_certs, request).with_context(|| format!("{what} {name}"))
}
