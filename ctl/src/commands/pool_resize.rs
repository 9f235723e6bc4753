//! `rpoolctl pool resize NAME [--cores N] [--memory SIZE]`.
//!
//! Flow: a dry run first (the controller computes the hosts to add or
//! release), the plan printed (before -> after totals, hosts added and
//! released), confirmation (`Resize pool NAME? [y/N]` on a terminal;
//! `--yes` otherwise), then the real call, then `--wait` until ready.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Args;
use rpool_proto::units::format_size;
use rpool_proto::v1::{ResizePoolRequest, ResizePoolResponse};

use super::pool::{self, CORES_MAX, capacity, indent, parse_lb_range, parse_memory, parse_pool_name, plural};
use super::pool_wait::{self, Until};
use crate::client::{self, Controller};
use crate::confirm::{self, Confirmation};
use crate::exit::Failure;
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::table::Table;
use crate::view::{MemberView, PoolView, ResizeView};

/// Change a pool's worker capacity. Growing places more workers; shrinking
/// drains and releases workers, never below the new request. A flag left
/// out keeps its current value. The pool's networks, VIP and image
/// repository (`pool create --image-repository`) are fixed at creation;
/// a resize never changes them.
///
/// Shows the plan (worker totals before -> after, hosts added and released)
/// and asks `Resize pool NAME? [y/N]` when stdin is a terminal; otherwise
/// --yes is required (exit 64). `--wait` shows progress on stderr until the
/// pool is ready again (bounded by --timeout, default 10m).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl pool resize web --cores 64
  rpoolctl pool resize web --cores 16 --memory 64GiB --yes --wait
  rpoolctl pool resize web --memory 1.5TiB --yes -o json | jq '.adding[].hostname'")]
pub struct ResizeArgs {
    /// Pool name
    #[arg(value_name = "NAME", value_parser = parse_pool_name, add = crate::complete::pools())]
    pub name: String,
    /// New worker cores (1..=1000000) [default: keep]
    #[arg(long, value_name = "N", value_parser = crate::cli::whole_number::<u64>(1, CORES_MAX))]
    pub cores: Option<u64>,
    /// New worker memory, e.g. 64GiB, 512MiB, 1.5TiB (1GiB..=64PiB) [default: keep]
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory: Option<u64>,
    /// New range MetalLB gives Services of type LoadBalancer, FIRST-LAST or
    /// ADDRESS/PREFIX (re-applied to the cluster) [default: keep]
    #[arg(long, value_name = "RANGE", value_parser = parse_lb_range)]
    pub lb_range: Option<String>,
    /// Do not ask for confirmation (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Wait until the pool is ready again, showing progress on stderr
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl ResizeArgs {
    /// The request (0 keeps a dimension), or exit 64 when neither flag is given.
    pub fn request(&self, dry_run: bool) -> Result<ResizePoolRequest, Failure> {
        if self.cores.is_none() && self.memory.is_none() && self.lb_range.is_none() {
            return Err(Failure::usage(format!(
                "nothing to resize: give --cores, --memory, --lb-range or several (e.g. rpoolctl pool resize {} --cores 64)",
                self.name
            )));
        }
        Ok(ResizePoolRequest {
            name: self.name.clone(),
            cores: self.cores.unwrap_or(0),
            memory_bytes: self.memory.unwrap_or(0),
            dry_run,
            lb_range: self.lb_range.clone().unwrap_or_default(),
        })
    }
}

pub async fn exec(args: ResizeArgs, settings: &Settings) -> anyhow::Result<()> {
    let plan_request = args.request(true)?;
    // Refuse before touching the network: the answer does not depend on it.
    let confirmation = confirm::confirmation(
        args.yes,
        std::io::stdin().is_terminal(),
        &format!("resize pool {}", args.name),
    )?;
    let ctl = client::connect(&settings.controllers, pool::request_timeout(settings, args.wait)).await?;
    let plan = resize(&ctl, plan_request).await?;
    let json = args.output.output == Format::Json;
    // Human text goes to stdout for tables, to stderr when stdout is JSON.
    let say = |text: &str| -> anyhow::Result<()> {
        if json {
            eprint!("{text}");
            Ok(())
        } else {
            output::print(text)
        }
    };
    if is_no_op(&plan, &args) {
        say(&format!(
            "Pool {} already asks for {}; nothing to do.\n",
            args.name,
            requested(&plan).map_or("that".to_string(), |(c, m)| capacity(c, m))
        ))?;
        if json {
            output::print_json(&ResizeView::from(&plan))?;
        }
        return Ok(());
    }
    say(&render_plan(&plan, &args))?;
    if confirmation == Confirmation::Ask {
        let question = format!("Resize pool {}? [y/N]", args.name);
        confirm::ask_or_decline(&question, &format!("pool {} was not resized", args.name))?;
    }
    let done = resize(&ctl, args.request(false)?).await?;
    say(&render_started(&done, &args.name))?;
    let mut view = ResizeView::from(&done);
    if args.wait {
        let ready = pool_wait::wait_on_stderr(&ctl, &args.name, Until::Ready, settings).await?;
        if let Some(ready) = &ready {
            say(&format!(
                "Pool {} is ready: workers {}.\n",
                ready.name,
                pool::totals_against_request(
                    ready.worker_cores,
                    ready.worker_memory_bytes,
                    ready.cores,
                    ready.memory_bytes
                )
            ))?;
        }
        view.pool = ready;
    }
    if json {
        output::print_json(&view)?;
    }
    Ok(())
}

/// `ResizePool` (a dry run when the request says so).
pub async fn resize(ctl: &Controller, request: ResizePoolRequest) -> anyhow::Result<ResizePoolResponse> {
    let name = request.name.clone();
    let what = if request.dry_run {
        "planning the resize of pool"
    } else {
        "resizing pool"
    };
    crate::rpc!(ctl, resize_pool, request).with_context(|| format!("{what} {name}"))
}

/// The request as it stands (from the pool in the answer).
fn requested(plan: &ResizePoolResponse) -> Option<(u64, u64)> {
    let spec = plan.pool.as_ref()?.spec.as_ref()?;
    Some((spec.cores, spec.memory_bytes))
}

/// The request after the change: given flags, else the current values.
fn new_request(plan: &ResizePoolResponse, args: &ResizeArgs) -> Option<(u64, u64)> {
    let (cores, memory) = requested(plan)?;
    Some((args.cores.unwrap_or(cores), args.memory.unwrap_or(memory)))
}

/// The pool's current LB range ("" = none).
fn current_lb_range(plan: &ResizePoolResponse) -> &str {
    plan.pool
        .as_ref()
        .and_then(|p| p.spec.as_ref())
        .map_or("", |s| s.lb_range.as_str())
}

/// The LB range changes: `(before, after)`.
fn lb_change<'a>(plan: &'a ResizePoolResponse, args: &'a ResizeArgs) -> Option<(&'a str, &'a str)> {
    let after = args.lb_range.as_deref()?;
    let before = current_lb_range(plan);
    (before != after).then_some((before, after))
}

/// Nothing would change: same request and LB range, no host added or released.
pub fn is_no_op(plan: &ResizePoolResponse, args: &ResizeArgs) -> bool {
    plan.adding.is_empty()
        && plan.releasing.is_empty()
        && requested(plan).is_some()
        && requested(plan) == new_request(plan, args)
        && lb_change(plan, args).is_none()
}

/// The plan: totals before -> after, the request before -> after, hosts
/// added and released.
pub fn render_plan(plan: &ResizePoolResponse, args: &ResizeArgs) -> String {
    let mut text = format!(
        "Pool {}: workers {} -> {}",
        args.name,
        capacity(plan.before_cores, plan.before_memory_bytes),
        capacity(plan.after_cores, plan.after_memory_bytes)
    );
    if let (Some(before), Some(after)) = (requested(plan), new_request(plan, args)) {
        text.push_str(&format!(
            " (request {} -> {})",
            capacity(before.0, before.1),
            capacity(after.0, after.1)
        ));
    }
    text.push('\n');
    if let Some((before, after)) = lb_change(plan, args) {
        let before = if before.is_empty() { "none" } else { before };
        text.push_str(&format!(
            "Load balancer range: {before} -> {after} (MetalLB re-applied)\n"
        ));
    }
    let adding: Vec<MemberView> = plan.adding.iter().map(MemberView::from).collect();
    let releasing: Vec<MemberView> = plan.releasing.iter().map(MemberView::from).collect();
    text.push_str(&hosts_section(
        "Adding",
        &adding,
        "joins as a worker",
        "join as workers",
    ));
    text.push_str(&hosts_section(
        "Releasing",
        &releasing,
        "is drained, reset and returned to the fleet",
        "are drained, reset and returned to the fleet",
    ));
    let after: Vec<crate::view::ZoneTotalView> = plan.after_zones.iter().map(Into::into).collect();
    text.push_str(&super::pool_zones::zone_block("Workers per zone after", &after));
    text
}

fn hosts_section(verb: &str, hosts: &[MemberView], one: &str, many: &str) -> String {
    if hosts.is_empty() {
        return format!("{verb}: no hosts\n");
    }
    let mut text = format!(
        "{verb} {} ({}):\n",
        plural(hosts.len(), "host", "hosts"),
        if hosts.len() == 1 { one } else { many }
    );
    let mut table = Table::new(["HOSTNAME", "ZONE", "CORES", "MEMORY"]);
    for h in hosts {
        table.row([
            h.hostname.clone(),
            h.zone.clone(),
            h.cores.to_string(),
            format_size(h.memory_bytes),
        ]);
    }
    text.push_str(&indent(&table.render()));
    text
}

/// After the real call.
pub fn render_started(done: &ResizePoolResponse, name: &str) -> String {
    let phase = done
        .pool
        .as_ref()
        .map(|p| PoolView::from(p).phase)
        .unwrap_or_else(|| "resizing".into());
    format!(
        "Pool {name} is {phase}: +{} -{} toward {}. Follow it with: rpoolctl events --pool {name} --follow\n",
        plural(done.adding.len(), "worker", "workers"),
        plural(done.releasing.len(), "worker", "workers"),
        capacity(done.after_cores, done.after_memory_bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::commands::Command;
    use crate::commands::pool::PoolCommand;
    use crate::commands::pool_wait::tests::{member, pool};
    use crate::exit;
    use crate::testing::{Fake, Seen};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<ResizeArgs, clap::Error> {
        let argv: Vec<&str> = ["rpoolctl", "pool", "resize"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        match Cli::try_parse_from(argv)?.command {
            Command::Pool(PoolCommand::Resize(a)) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn grow_plan() -> ResizePoolResponse {
        let mut added = member("worker", "sim-c-1", "");
        added.cores = 32;
        added.memory_bytes = 128 << 30;
        ResizePoolResponse {
            before_cores: 32,
            before_memory_bytes: 128 << 30,
            after_cores: 64,
            after_memory_bytes: 256 << 30,
            adding: vec![added],
            releasing: vec![],
            pool: Some(pool("ready", &["joined", "joined", "joined"], None)),
            ..Default::default()
        }
    }

    #[test]
    fn flags_become_the_request_and_zero_keeps_a_dimension() {
        let a = parse(&["web", "--cores", "64", "--yes", "--wait", "-o", "json"]).unwrap();
        assert!(a.yes && a.wait);
        assert_eq!(
            a.request(true).unwrap(),
            ResizePoolRequest {
                name: "web".into(),
                cores: 64,
                memory_bytes: 0,
                dry_run: true,
                lb_range: String::new(),
            }
        );
        let a = parse(&["web", "--memory", "1.5TiB"]).unwrap();
        assert_eq!(a.request(false).unwrap().memory_bytes, 3 << 39);
        assert_eq!(a.request(false).unwrap().cores, 0);
        let err = parse(&["web"]).unwrap().request(true).unwrap_err();
        assert_eq!(err.code, exit::USAGE);
        assert!(
            err.message
                .contains("give --cores, --memory, --lb-range or several"),
            "{}",
            err.message
        );
        for bad in [
            &["web", "--memory", "64G"][..],
            &["web", "--cores", "0"],
            &["web", "--cores", "x"],
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(crate::clap_exit_code(err.kind()), exit::USAGE, "{bad:?}");
        }
    }

    #[test]
    fn the_plan_shows_before_and_after_and_the_hosts() {
        let a = parse(&["web", "--cores", "60"]).unwrap();
        assert_eq!(
            render_plan(&grow_plan(), &a),
            "Pool web: workers 32 cores / 128GiB -> 64 cores / 256GiB (request 30 cores / 120GiB -> 60 cores / 120GiB)\n\
             Adding 1 host (joins as a worker):\n\
             \x20 HOSTNAME  ZONE  CORES  MEMORY\n\
             \x20 sim-c-1   c     32     128GiB\n\
             Releasing: no hosts\n"
        );
        let mut shrink = grow_plan();
        shrink.adding.clear();
        shrink.releasing = vec![member("worker", "sim-a-2", ""), member("worker", "sim-b-1", "")];
        let text = render_plan(&shrink, &parse(&["web", "--cores", "8"]).unwrap());
        assert!(
            text.contains(
                "Adding: no hosts\nReleasing 2 hosts (are drained, reset and returned to the fleet):\n"
            ),
            "{text}"
        );
        assert!(!is_no_op(&shrink, &parse(&["web", "--cores", "8"]).unwrap()));
    }

    #[test]
    fn asking_for_the_current_request_is_a_no_op() {
        let mut plan = grow_plan();
        plan.adding.clear();
        assert!(is_no_op(&plan, &parse(&["web", "--cores", "30"]).unwrap()));
        assert!(is_no_op(&plan, &parse(&["web", "--memory", "120GiB"]).unwrap()));
        assert!(!is_no_op(&plan, &parse(&["web", "--cores", "31"]).unwrap()));
    }

    #[test]
    fn started_says_what_moves() {
        let mut done = grow_plan();
        done.pool.as_mut().unwrap().phase = "resizing".into();
        assert_eq!(
            render_started(&done, "web"),
            "Pool web is resizing: +1 worker -0 workers toward 64 cores / 256GiB. \
             Follow it with: rpoolctl events --pool web --follow\n"
        );
    }

    #[test]
    fn the_json_has_totals_hosts_and_the_pool() {
        let json = serde_json::to_value(ResizeView::from(&grow_plan())).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "before_cores",
            "before_memory_bytes",
            "after_cores",
            "after_memory_bytes",
            "adding",
            "releasing",
            "pool",
            "after_zones",
        ];
        want.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, want);
        assert_eq!(json["adding"][0]["hostname"], "sim-c-1");
        assert_eq!(json["pool"]["name"], "web");
    }

    #[tokio::test]
    async fn the_dry_run_comes_first_then_the_real_call() {
        let fake = Fake::default();
        fake.script_resize([Ok(grow_plan())]);
        let ctl = fake.clone().serve().await;
        let a = parse(&["web", "--cores", "60", "--yes"]).unwrap();
        resize(&ctl, a.request(true).unwrap()).await.unwrap();
        resize(&ctl, a.request(false).unwrap()).await.unwrap();
        let dry: Vec<bool> = fake
            .seen()
            .into_iter()
            .map(|s| match s {
                Seen::ResizePool(r) => r.dry_run,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(dry, [true, false]);

        let fake = Fake::default();
        fake.script_resize([Err(tonic::Status::not_found("no pool named web"))]);
        let ctl = fake.serve().await;
        let err = resize(&ctl, a.request(true).unwrap()).await.unwrap_err();
        assert_eq!(exit::code_of(&err), exit::NOT_FOUND);
        assert_eq!(
            format!("{err:#}"),
            "planning the resize of pool web: no pool named web"
        );
    }
}
