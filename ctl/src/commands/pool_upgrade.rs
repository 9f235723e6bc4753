//! `rpoolctl pool upgrade NAME --version vX.Y.Z`.
//!
//! Flow: a dry run first (the controller checks the version-skew rules and
//! answers the plan: which node, which step, in what order, the
//! versions), the plan printed, confirmation (`Upgrade pool NAME to V?
//! [y/N]` on a terminal; `--yes` otherwise), then the real call, then
//! `--wait` until the pool is ready again (or degraded: exit 1).
//! `--resume` (or the same command again) resumes a stopped upgrade.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Args;
use rpool_proto::v1::{UpgradePoolRequest, UpgradePoolResponse};

use super::pool::{self, parse_pool_name};
use super::pool_wait::{self, Until};
use crate::client::{self, Controller};
use crate::confirm::{self, Confirmation};
use crate::exit::Failure;
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::table::Table;
use crate::view::PoolView;

/// Most workers upgraded at once.
const MAX_UNAVAILABLE_MAX: u32 = 100;

/// Upgrade a pool's Kubernetes version, node by node, with kubeadm.
///
/// One minor at a time (v1.31.x -> v1.32.y; a patch of the same minor is
/// fine); a skip or a downgrade is refused with the next allowed version.
/// The first control plane runs `kubeadm upgrade plan` and `kubeadm
/// upgrade apply`, the other control planes and then the workers `kubeadm
/// upgrade node`; each node is drained first, its kubelet restarted on the
/// new version, and uncordoned after. Control planes go one at a time,
/// workers --max-unavailable at a time.
///
/// rpool installs no packages: install the kubeadm and kubelet packages of
/// the target version on every host first; a host whose `kubeadm version`
/// is not the target fails its step, which stops the upgrade and leaves
/// the pool degraded with the reason. Fix it, then `--resume` (or run the
/// same command again).
#[derive(Debug, Args)]
#[command(
    disable_version_flag = true,
    after_help = "\
Examples:
  rpoolctl pool upgrade web --version v1.33.1 --dry-run
  rpoolctl pool upgrade web --version v1.33.1 --yes --wait
  rpoolctl pool upgrade web --version v1.33.1 --max-unavailable 3 --yes
  rpoolctl pool upgrade web --resume --yes --wait"
)]
pub struct UpgradeArgs {
    /// Pool name
    #[arg(value_name = "NAME", value_parser = parse_pool_name)]
    pub name: String,
    /// Target Kubernetes version, vMAJOR.MINOR.PATCH (one minor above the pool's at most)
    #[arg(long, value_name = "VERSION", required_unless_present = "resume")]
    pub version: Option<String>,
    /// Workers drained and upgraded at once (1..=100)
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = crate::cli::whole_number::<u32>(1, MAX_UNAVAILABLE_MAX as u64))]
    pub max_unavailable: u32,
    /// Resume the pool's stopped upgrade (after fixing what failed)
    #[arg(long)]
    pub resume: bool,
    /// Only show the plan; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Wait until the pool is upgraded and ready, showing progress on stderr
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl UpgradeArgs {
    fn request(&self, dry_run: bool) -> UpgradePoolRequest {
        UpgradePoolRequest {
            name: self.name.clone(),
            version: self.version.clone().unwrap_or_default(),
            max_unavailable: self.max_unavailable,
            dry_run,
            resume: self.resume,
        }
    }
}

/// `-o json`: the plan, and the pool (after the call, or once ready with
/// `--wait`).
#[derive(Debug, serde::Serialize)]
struct UpgradeView {
    steps: Vec<StepView>,
    pool: Option<PoolView>,
}

#[derive(Debug, serde::Serialize)]
struct StepView {
    wave: u32,
    host_id: String,
    node_name: String,
    role: String,
    from: String,
    to: String,
    actions: String,
}

impl From<&UpgradePoolResponse> for UpgradeView {
    fn from(r: &UpgradePoolResponse) -> Self {
        UpgradeView {
            steps: r
                .steps
                .iter()
                .map(|s| StepView {
                    wave: s.wave,
                    host_id: s.host_id.clone(),
                    node_name: s.node_name.clone(),
                    role: s.role.clone(),
                    from: s.from_version.clone(),
                    to: s.to_version.clone(),
                    actions: s.actions.clone(),
                })
                .collect(),
            pool: r.pool.as_ref().map(PoolView::from),
        }
    }
}

pub async fn exec(args: UpgradeArgs, settings: &Settings) -> anyhow::Result<()> {
    if let Some(v) = &args.version
        && !is_version(v)
    {
        return Err(Failure::usage(format!(
            "--version: {v:?} is not of the form vMAJOR.MINOR.PATCH (e.g. v1.33.1)"
        ))
        .into());
    }
    let confirmation = if args.dry_run {
        Confirmation::Given
    } else {
        confirm::confirmation(
            args.yes,
            std::io::stdin().is_terminal(),
            &format!("upgrade pool {}", args.name),
        )?
    };
    let ctl = client::connect(&settings.controllers, pool::request_timeout(settings, args.wait)).await?;
    let plan = upgrade(&ctl, args.request(true)).await?;
    let json = args.output.output == Format::Json;
    let say = |text: &str| -> anyhow::Result<()> {
        if json {
            eprint!("{text}");
            Ok(())
        } else {
            output::print(text)
        }
    };
    let target = plan
        .steps
        .first()
        .map(|s| s.to_version.clone())
        .or_else(|| args.version.clone())
        .unwrap_or_default();
    say(&render_plan(&plan, &args.name, &target))?;
    if args.dry_run {
        say("Dry run: nothing was changed.\n")?;
        if json {
            output::print_json(&UpgradeView::from(&plan))?;
        }
        return Ok(());
    }
    if confirmation == Confirmation::Ask {
        let question = format!("Upgrade pool {} to {target}? [y/N]", args.name);
        confirm::ask_or_decline(&question, &format!("pool {} was not upgraded", args.name))?;
    }
    let done = upgrade(&ctl, args.request(false)).await?;
    say(&format!(
        "Upgrade of pool {} to {target} {}; follow it with `rpoolctl pool show {}` or `rpoolctl events --pool {} --follow`.\n",
        args.name,
        if args.resume { "resumed" } else { "started" },
        args.name,
        args.name
    ))?;
    let mut view = UpgradeView::from(&done);
    if args.wait {
        let ready = pool_wait::wait_on_stderr(&ctl, &args.name, Until::Ready, settings).await?;
        if let Some(ready) = &ready {
            say(&format!(
                "Pool {} is ready on Kubernetes {}.\n",
                ready.name, ready.kubernetes_version
            ))?;
        }
        view.pool = ready;
    }
    if json {
        output::print_json(&view)?;
    }
    Ok(())
}

/// `UpgradePool` (a dry run when the request says so).
async fn upgrade(ctl: &Controller, request: UpgradePoolRequest) -> anyhow::Result<UpgradePoolResponse> {
    let name = request.name.clone();
    let what = if request.dry_run {
        "planning the upgrade of pool"
    } else {
        "upgrading pool"
    };
    crate::rpc!(ctl, upgrade_pool, request).with_context(|| format!("{what} {name}"))
}

fn is_version(v: &str) -> bool {
    v.strip_prefix('v').is_some_and(|rest| {
        let parts: Vec<&str> = rest.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The plan: one row per member, in order.
fn render_plan(plan: &UpgradePoolResponse, name: &str, target: &str) -> String {
    let from = plan
        .pool
        .as_ref()
        .and_then(|p| p.spec.as_ref())
        .map_or("?", |s| s.kubernetes_version.as_str());
    let mut text = format!(
        "Upgrade pool {name} from {from} to {target}: {} member(s) to go, in this order:\n",
        plan.steps.len()
    );
    let mut table = Table::new(["WAVE", "NODE", "ROLE", "FROM", "TO", "STEPS"]);
    for s in &plan.steps {
        table.row([
            s.wave.to_string(),
            s.node_name.clone(),
            s.role.clone(),
            s.from_version.clone(),
            s.to_version.clone(),
            s.actions.clone(),
        ]);
    }
    text.push_str(&pool::indent(&table.render()));
    text.push_str(
        "Every host needs the kubeadm and kubelet packages of the target installed first (rpool installs no packages).\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_checked_before_any_call() {
        assert!(is_version("v1.33.1"));
        for bad in ["1.33.1", "v1.33", "v1.33.1-rc.0", "v1..1", "latest"] {
            assert!(!is_version(bad), "{bad}");
        }
    }
}
