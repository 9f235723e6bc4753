//! `rpoolctl demo`: a guided tour of pools against a running fleet (the
//! sandbox, or whatever `ctl.toml` / `--controller` points at).
//!
//! Steps, each waited for before the next, each followed by the events it
//! caused:
//! 1. create the pool (1 control plane; workers sized at half of what the
//!    fleet has free for workers), after showing the dry-run placement;
//! 2. show it;
//! 3. resize it up (half of the cores still free, added to its workers);
//! 4. kill one of its worker hosts and wait for the pool to heal, then
//!    revive the host and wait for it to be reset into the fleet;
//! 5. turn autoscaling on, load its workers and wait for it to grow;
//! 6. resize it back down to the first request;
//! 7. destroy it and check that every host is back in the fleet.
//!
//! Steps 4 and 5 act on hosts, so they need the local sandbox
//! ([`super::demo_fleet`]); against any other fleet they are skipped.
//!
//! A failing step ends the demo with that step's error and exit code,
//! naming the step, and leaves the pool as it is for inspection.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Args;
use rpool_proto::clock::unix_ms_now;
use rpool_proto::units::format_duration;
use rpool_proto::v1::{Host, HostState, ListHostsRequest, PoolSpec, ResizePoolRequest};
use tokio::time::Instant;

use super::demo_fleet::{Fleet, SandboxFleet};
use super::pool::{self, MEMORY_MIN, capacity, indent, parse_pool_name, totals_against_request};
use super::pool_wait::{self, Until, Wait};
use super::sandbox::DirArgs;
use super::{events, pool_create, pool_destroy, pool_resize, pool_show};
use crate::client::{self, Controller};
use crate::confirm::{self, Confirmation};
use crate::exit::{self, Failure};
use crate::output;
use crate::settings::{Env, Settings};
use crate::view::{PoolView, ResizeView};

const STEPS: usize = 7;

/// Walk through pools on the running fleet: create → show → resize up →
/// host failure healed → scaled by load → resize down → destroy, waiting
/// for each step and printing what happened (with the events each step
/// caused). The failure and load steps need the sandbox.
///
/// Sizes come from the fleet: the pool asks for half of the worker capacity
/// that is free (one host is kept aside for the control plane), then grows
/// by half of the cores still free. It needs at least 3 free ready hosts.
/// The demo changes the fleet, so it asks first; without a terminal, pass
/// --yes. --timeout bounds each step's wait (default 10m).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl sandbox up && rpoolctl demo
  rpoolctl demo --pool tour --yes")]
pub struct DemoArgs {
    /// Name of the pool the demo creates and destroys (it must not exist)
    #[arg(long, value_name = "NAME", default_value = "demo", value_parser = parse_pool_name)]
    pub pool: String,
    /// Do not ask before changing the fleet (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// The sandbox whose hosts the failure and load steps act on (they are
    /// skipped when the controllers are not this sandbox's)
    #[command(flatten)]
    pub dir: DirArgs,
}

pub async fn exec(args: DemoArgs, settings: &Settings, env: &Env) -> anyhow::Result<()> {
    let confirmation = confirm::confirmation(
        args.yes,
        std::io::stdin().is_terminal(),
        &format!(
            "run the demo (it creates, resizes and destroys pool {})",
            args.pool
        ),
    )?;
    let ctl = client::connect(&settings.controllers, pool::request_timeout(settings, true)).await?;
    let bounds = Wait {
        budget: pool::wait_budget(settings),
        poll: pool_wait::POLL,
    };
    let mut sandbox = SandboxFleet::detect(&args.dir, env, settings);
    let mut demo = Demo {
        fleet: sandbox.as_mut().map(|s| s as &mut dyn Fleet),
        ctl: &ctl,
        name: args.pool.clone(),
        bounds,
        out: &mut |text: &str| {
            let _ = output::print(text);
        },
        progress: &mut |line: &str| eprintln!("    {line}"),
        after: 0,
    };
    let sizes = demo.prepare().await?;
    if confirmation == Confirmation::Ask {
        let question = format!(
            "The demo creates pool {} ({}) on the fleet at {}, resizes it up, kills and revives one of \
             its hosts and loads it (sandbox only), resizes it down, then destroys it. Go ahead? [y/N]",
            args.pool,
            sizes.describe(),
            ctl.address()
        );
        confirm::ask_or_decline(&question, "the fleet was not changed")?;
    }
    demo.run(sizes).await
}

/// What the demo asks for, from the free capacity of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizes {
    /// Free ready hosts.
    pub free_hosts: usize,
    /// Free capacity for workers: the free hosts less the largest one (kept
    /// for the control plane).
    pub worker_cores: u64,
    pub worker_memory_bytes: u64,
    /// The first request: half of that.
    pub cores: u64,
    pub memory_bytes: u64,
}

impl Sizes {
    fn describe(&self) -> String {
        format!(
            "1 control plane, {} of workers",
            capacity(self.cores, self.memory_bytes)
        )
    }
}

/// Hosts a pool may use: ready and in no pool.
pub fn free_hosts(hosts: &[Host]) -> Vec<&Host> {
    hosts
        .iter()
        .filter(|h| h.state == HostState::Ready as i32 && h.pool.is_empty())
        .collect()
}

fn inventory(h: &Host) -> (u64, u64) {
    let inv = h.facts.as_ref().and_then(|f| f.inventory.as_ref());
    inv.map_or((0, 0), |i| (u64::from(i.logical_cores), i.memory_total_bytes))
}

/// Sizes the first request from the fleet (exit 65 when it is too small).
pub fn plan_sizes(hosts: &[Host]) -> Result<Sizes, Failure> {
    let free = free_hosts(hosts);
    let too_small = |why: String| {
        Failure::new(
            exit::REJECTED,
            format!(
                "the fleet is too small for the demo: {why} (it needs at least 3 free ready hosts: a control \
                 plane, a worker, and one to grow onto; e.g. rpoolctl sandbox up --agents 6)"
            ),
        )
    };
    if free.len() < 3 {
        return Err(too_small(format!("{} free ready host(s)", free.len())));
    }
    let sizes: Vec<(u64, u64)> = free.iter().map(|h| inventory(h)).collect();
    let total = sizes.iter().fold((0, 0), |(c, m), (hc, hm)| (c + hc, m + hm));
    let largest = sizes
        .iter()
        .fold((0, 0), |(c, m), (hc, hm)| (c.max(*hc), m.max(*hm)));
    let worker_cores = total.0 - largest.0;
    let worker_memory_bytes = total.1 - largest.1;
    let cores = (worker_cores / 2).max(1);
    // Whole GiB, at least the controller's minimum.
    let memory_bytes = (worker_memory_bytes / 2 / MEMORY_MIN * MEMORY_MIN).max(MEMORY_MIN);
    if worker_cores == 0 || worker_memory_bytes < 2 * MEMORY_MIN {
        return Err(too_small(format!(
            "{} free for workers",
            capacity(worker_cores, worker_memory_bytes)
        )));
    }
    Ok(Sizes {
        free_hosts: free.len(),
        worker_cores,
        worker_memory_bytes,
        cores,
        memory_bytes,
    })
}

/// The cores to grow to: the pool's worker cores plus half of the cores
/// still free (at least 1); `None` when no host is free.
pub fn grow_cores(pool: &PoolView, hosts: &[Host]) -> Option<u64> {
    let free_cores: u64 = free_hosts(hosts).iter().map(|h| inventory(h).0).sum();
    (free_cores > 0).then(|| pool.worker_cores.max(pool.cores) + (free_cores / 2).max(1))
}

/// `text` indented by four spaces (under a step header).
fn nest(text: &str) -> String {
    indent(&indent(text))
}

/// One demo run.
pub struct Demo<'a> {
    pub ctl: &'a Controller,
    /// Host actions for the failure and load steps (the sandbox), if any.
    pub fleet: Option<&'a mut dyn Fleet>,
    pub name: String,
    pub bounds: Wait,
    /// What happened (stdout).
    pub out: &'a mut dyn FnMut(&str),
    /// Progress lines while waiting (stderr).
    pub progress: &'a mut dyn FnMut(&str),
    /// Index of the last event of the pool already printed.
    pub after: u64,
}

impl Demo<'_> {
    /// Checks the pool does not exist, notes where its events start, and
    /// sizes the request from the fleet.
    pub async fn prepare(&mut self) -> anyhow::Result<Sizes> {
        match pool_show::get(self.ctl, &self.name).await {
            Ok(_) => {
                return Err(Failure::new(
                    exit::REJECTED,
                    format!(
                        "pool {0} already exists; destroy it first (rpoolctl pool destroy {0}) or pick another \
                         name with --pool",
                        self.name
                    ),
                )
                .into());
            }
            Err(e) if exit::code_of(&e) == exit::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
        // Events of an earlier pool of the same name are not this run's.
        let earlier = events::list(self.ctl, &self.name, 0, 1).await?;
        self.after = earlier.last().map_or(0, |e| e.index);
        Ok(plan_sizes(&self.hosts().await?)?)
    }

    async fn hosts(&self) -> anyhow::Result<Vec<Host>> {
        let request = ListHostsRequest::default();
        Ok(crate::rpc!(self.ctl, list_hosts, request)
            .context("listing hosts")?
            .hosts)
    }

    /// Runs the five steps.
    pub async fn run(&mut self, sizes: Sizes) -> anyhow::Result<()> {
        let start = Instant::now();
        let name = self.name.clone();
        let titles = [
            "create",
            "show",
            "resize up",
            "heal",
            "scale by load",
            "resize down",
            "destroy",
        ];
        for (i, title) in titles.iter().enumerate() {
            let step_start = Instant::now();
            let outcome = match i {
                0 => self.create(&sizes).await,
                1 => self.show().await,
                2 => self.resize_up().await,
                3 => self.heal(4).await,
                4 => self.scale_by_load(5).await,
                5 => self.resize_down(&sizes).await,
                _ => self.destroy().await,
            };
            // The events the step caused, even when it failed.
            let seen = self.print_events().await;
            match outcome.and_then(|summary| seen.map(|()| summary)) {
                Ok(summary) => (self.out)(&format!(
                    "    ok ({}): {summary}\n\n",
                    format_duration(step_start.elapsed())
                )),
                Err(e) => {
                    return Err(e.context(format!(
                        "demo step {}/{STEPS} ({title}) failed; pool {name} is left as it is \
                         (rpoolctl pool show {name}; rpoolctl pool destroy {name} --yes)",
                        i + 1
                    )));
                }
            }
        }
        (self.out)(&format!(
            "Demo done in {}: create, show, resize up, heal, scale by load, resize down and destroy of pool \
             {name} all succeeded.\n",
            format_duration(start.elapsed())
        ));
        Ok(())
    }

    pub(super) fn step(&mut self, n: usize, text: &str) {
        (self.out)(&format!("==> [{n}/{STEPS}] {text}\n"));
    }

    async fn wait(&mut self, until: Until) -> anyhow::Result<Option<PoolView>> {
        pool_wait::wait(self.ctl, &self.name, until, self.bounds, self.progress).await
    }

    async fn create(&mut self, sizes: &Sizes) -> anyhow::Result<String> {
        self.step(
            1,
            &format!(
                "create pool {}: {} (half of the {} free for workers on {} free hosts)",
                self.name,
                sizes.describe(),
                capacity(sizes.worker_cores, sizes.worker_memory_bytes),
                sizes.free_hosts
            ),
        );
        // Zones ignored (`any`): the sizes above are for the least-overshoot
        // cover, in which every worker is needed, so the heal step's dead
        // worker is replaced and the autoscale step has room to grow. The
        // sandbox's three zones would make the default spread: a worker per
        // zone, more than the request, so losing one replaces nothing.
        let spec = PoolSpec {
            name: self.name.clone(),
            cores: sizes.cores,
            memory_bytes: sizes.memory_bytes,
            control_planes: 1,
            zone_policy: "any".into(),
            ..PoolSpec::default()
        };
        let plan = PoolView::from(&pool_create::create(self.ctl, spec.clone(), true).await?);
        (self.out)(&nest(&pool_create::render_plan(
            &plan,
            "Plan (asked with --dry-run first): pool",
        )));
        let created = PoolView::from(&pool_create::create(self.ctl, spec, false).await?);
        (self.out)(&format!(
            "    created: pool {} is {} on {} hosts; waiting for it to be ready\n",
            created.name,
            created.phase,
            created.members.len()
        ));
        let ready = self
            .wait(Until::Ready)
            .await?
            .context("the pool is ready but was not returned")?;
        Ok(format!(
            "pool {} is ready at {}; workers {}",
            ready.name,
            ready.control_plane_endpoint,
            totals_against_request(
                ready.worker_cores,
                ready.worker_memory_bytes,
                ready.cores,
                ready.memory_bytes
            )
        ))
    }

    async fn show(&mut self) -> anyhow::Result<String> {
        self.step(2, &format!("show pool {}", self.name));
        let view = PoolView::from(&pool_show::get(self.ctl, &self.name).await?);
        (self.out)(&nest(&pool_show::render(&view, unix_ms_now())));
        let c = view.counts();
        Ok(format!(
            "{} joined of {} ({} control plane(s), {} worker(s))",
            c.joined, c.staying, c.control_planes, c.workers
        ))
    }

    async fn resize(&mut self, n: usize, what: &str, cores: u64) -> anyhow::Result<String> {
        self.step(n, &format!("{what} pool {} to {cores} worker cores", self.name));
        let request = ResizePoolRequest {
            name: self.name.clone(),
            cores,
            memory_bytes: 0,
            dry_run: true,
            lb_range: String::new(),
        };
        let plan = pool_resize::resize(self.ctl, request.clone()).await?;
        let args = pool_resize::ResizeArgs {
            name: self.name.clone(),
            cores: Some(cores),
            memory: None,
            lb_range: None,
            yes: true,
            wait: true,
            output: Default::default(),
        };
        (self.out)(&nest(&pool_resize::render_plan(&plan, &args)));
        let done = pool_resize::resize(
            self.ctl,
            ResizePoolRequest {
                dry_run: false,
                ..request
            },
        )
        .await?;
        (self.out)(&nest(&pool_resize::render_started(&done, &self.name)));
        let done = ResizeView::from(&done);
        let ready = self
            .wait(Until::Ready)
            .await?
            .context("the pool is ready but was not returned")?;
        Ok(format!(
            "+{} -{} worker(s); workers {} -> {}",
            done.adding.len(),
            done.releasing.len(),
            capacity(done.before_cores, done.before_memory_bytes),
            totals_against_request(
                ready.worker_cores,
                ready.worker_memory_bytes,
                ready.cores,
                ready.memory_bytes
            )
        ))
    }

    async fn resize_up(&mut self) -> anyhow::Result<String> {
        let current = PoolView::from(&pool_show::get(self.ctl, &self.name).await?);
        let hosts = self.hosts().await?;
        let Some(cores) = grow_cores(&current, &hosts) else {
            self.step(3, &format!("resize pool {} up", self.name));
            return Err(Failure::new(
                exit::REJECTED,
                "no free host left to grow onto (start the sandbox with more agents, e.g. --agents 8)",
            )
            .into());
        };
        self.resize(3, "resize up", cores).await
    }

    async fn resize_down(&mut self, sizes: &Sizes) -> anyhow::Result<String> {
        self.resize(6, "resize down", sizes.cores).await
    }

    async fn destroy(&mut self) -> anyhow::Result<String> {
        self.step(7, &format!("destroy pool {}", self.name));
        let pool = PoolView::from(&pool_destroy::destroy(self.ctl, &self.name).await?);
        (self.out)(&nest(&pool_destroy::render_started(&pool)));
        self.wait(Until::Gone).await?;
        let left: Vec<String> = self
            .hosts()
            .await?
            .iter()
            .filter(|h| h.pool == self.name)
            .map(|h| h.facts.as_ref().map_or(h.host_id.clone(), |f| f.hostname.clone()))
            .collect();
        if !left.is_empty() {
            return Err(Failure::new(
                exit::UNEXPECTED,
                format!(
                    "pool {} is gone but hosts still name it: {}",
                    self.name,
                    left.join(", ")
                ),
            )
            .into());
        }
        Ok(format!(
            "pool {} is gone; its {} host(s) are back in the fleet",
            self.name,
            pool.members.len()
        ))
    }

    /// Prints the pool's events recorded since the last call.
    async fn print_events(&mut self) -> anyhow::Result<()> {
        let new = events::list(self.ctl, &self.name, self.after, 1000).await?;
        if let Some(last) = new.last() {
            self.after = last.index;
            (self.out)("    events:\n");
            (self.out)(&nest(&indent(&pool_show::events_table(&new, false))));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::pool_wait::tests::pool as proto_pool;
    use crate::testing::{Fake, Seen};
    use rpool_proto::v1::{Event, HostFacts, Inventory, ResizePoolResponse};
    use std::time::Duration;
    use tonic::Status;

    /// The sandbox's six profiles: 8c/32G, 16c/64G, 32c/128G, 16c/64G,
    /// 64c/256G, 8c/16G.
    fn fleet() -> Vec<Host> {
        [(8, 32), (16, 64), (32, 128), (16, 64), (64, 256), (8, 16)]
            .iter()
            .enumerate()
            .map(|(i, (cores, gib))| Host {
                host_id: format!("h{i}"),
                state: HostState::Ready as i32,
                facts: Some(HostFacts {
                    hostname: format!("sim-{i}"),
                    inventory: Some(Inventory {
                        logical_cores: *cores,
                        memory_total_bytes: gib << 30,
                        ..Inventory::default()
                    }),
                    ..HostFacts::default()
                }),
                ..Host::default()
            })
            .collect()
    }

    #[test]
    fn the_request_is_half_of_the_free_worker_capacity() {
        let sizes = plan_sizes(&fleet()).unwrap();
        assert_eq!(
            sizes,
            Sizes {
                free_hosts: 6,
                worker_cores: 80,
                worker_memory_bytes: 304 << 30,
                cores: 40,
                memory_bytes: 152 << 30,
            }
        );
        assert_eq!(sizes.describe(), "1 control plane, 40 cores / 152GiB of workers");
    }

    #[test]
    fn hosts_in_a_pool_or_not_ready_are_not_free_and_a_small_fleet_is_refused() {
        let mut hosts = fleet();
        hosts[0].pool = "web".into();
        hosts[1].state = HostState::Down as i32;
        hosts[2].state = HostState::Cordoned as i32;
        hosts[3].pool = "ci".into();
        let err = plan_sizes(&hosts).unwrap_err();
        assert_eq!(err.code, exit::REJECTED);
        assert!(err.message.contains("2 free ready host(s)"), "{}", err.message);
        assert!(
            err.message.contains("at least 3 free ready hosts"),
            "{}",
            err.message
        );
    }

    #[test]
    fn growing_adds_half_of_the_free_cores() {
        let mut hosts = fleet();
        let pool = PoolView::from(&proto_pool("ready", &["joined", "joined"], None)); // 32 worker cores
        for h in &mut hosts[..4] {
            h.pool = "web".into();
        }
        // Free: 64 + 8 cores.
        assert_eq!(grow_cores(&pool, &hosts), Some(32 + 36));
        for h in &mut hosts {
            h.pool = "web".into();
        }
        assert_eq!(grow_cores(&pool, &hosts), None);
    }

    fn resize_answer(before: u64, after: u64, adding: usize, releasing: usize) -> ResizePoolResponse {
        let m = crate::commands::pool_wait::tests::member("worker", "sim-b-9", "");
        ResizePoolResponse {
            before_cores: before,
            before_memory_bytes: 192 << 30,
            after_cores: after,
            after_memory_bytes: 192 << 30,
            adding: vec![m.clone(); adding],
            releasing: vec![m; releasing],
            pool: Some(proto_pool("ready", &["joined", "joined"], None)),
            ..Default::default()
        }
    }

    async fn run_demo(fake: Fake) -> (anyhow::Result<()>, String) {
        let ctl = fake.serve().await;
        let mut out = String::new();
        let result = {
            let mut demo = Demo {
                ctl: &ctl,
                fleet: None,
                name: "demo".into(),
                bounds: Wait {
                    budget: Duration::from_secs(5),
                    poll: Duration::from_millis(10),
                },
                out: &mut |t: &str| out.push_str(t),
                progress: &mut |_| {},
                after: 0,
            };
            match demo.prepare().await {
                Ok(sizes) => demo.run(sizes).await,
                Err(e) => Err(e),
            }
        };
        (result, out)
    }

    #[tokio::test]
    async fn the_demo_walks_create_show_resize_up_and_down_and_destroy() {
        let fake = Fake {
            hosts: fleet(),
            ..Fake::default()
        };
        fake.events.lock().unwrap().push(Event {
            index: 5,
            pool: "demo".into(),
            kind: "pool_created".into(),
            message: "pool demo created".into(),
            ..Event::default()
        });
        fake.script_get_pool([
            Err(Status::not_found("no pool named demo")),
            Ok(proto_pool("ready", &["joined", "joined"], None)),
            Ok(proto_pool("ready", &["joined", "joined"], None)),
            Ok(proto_pool("ready", &["joined", "joined"], None)),
            Ok(proto_pool("ready", &["joined", "joined"], None)),
            Ok(proto_pool("ready", &["joined", "joined"], None)),
            Err(Status::not_found("no pool named demo")),
        ]);
        fake.script_resize([
            Ok(resize_answer(32, 96, 1, 0)),
            Ok(resize_answer(32, 96, 1, 0)),
            Ok(resize_answer(96, 32, 0, 1)),
            Ok(resize_answer(96, 32, 0, 1)),
        ]);
        let (result, out) = run_demo(fake.clone()).await;
        result.unwrap();
        for step in [
            "==> [1/7] create pool demo: 1 control plane, 40 cores / 152GiB of workers (half of the 80 cores / 304GiB free for workers on 6 free hosts)",
            "==> [2/7] show pool demo",
            "==> [3/7] resize up pool demo to",
            "==> [4/7] kill a worker host of pool demo",
            "skipped: killing a host needs the local sandbox",
            "==> [5/7] load the workers of pool demo",
            "skipped: loading hosts needs the local sandbox",
            "==> [6/7] resize down pool demo to 40 worker cores",
            "==> [7/7] destroy pool demo",
            "Plan (asked with --dry-run first): pool demo would be built on",
            "ok (",
            "Demo done in",
        ] {
            assert!(out.contains(step), "missing {step:?} in:\n{out}");
        }
        // The event from before the run is not shown as this run's.
        assert!(!out.contains("pool demo created"), "{out}");
        let seen = fake.seen();
        let creates: Vec<bool> = seen
            .iter()
            .filter_map(|s| match s {
                Seen::CreatePool(r) => Some(r.dry_run),
                _ => None,
            })
            .collect();
        assert_eq!(creates, [true, false]);
        let resizes: Vec<(u64, bool)> = seen
            .iter()
            .filter_map(|s| match s {
                Seen::ResizePool(r) => Some((r.cores, r.dry_run)),
                _ => None,
            })
            .collect();
        assert_eq!(resizes[2..], [(40, true), (40, false)]);
        assert_eq!(resizes[0].0, resizes[1].0);
        assert!(resizes[0].0 > 40);
        assert!(seen.contains(&Seen::DestroyPool("demo".into())));
    }

    #[tokio::test]
    async fn a_failing_step_is_named_and_keeps_its_exit_code() {
        let fake = Fake {
            hosts: fleet(),
            ..Fake::default()
        };
        let mut degraded = proto_pool("degraded", &["joined", "joining"], None);
        degraded.phase_reason = "join_worker on sim-a-2 failed 5 times: bad token".into();
        fake.script_get_pool([Err(Status::not_found("no pool named demo")), Ok(degraded)]);
        let (result, out) = run_demo(fake).await;
        let err = result.unwrap_err();
        assert_eq!(exit::code_of(&err), 1);
        let text = format!("{err:#}");
        assert!(
            text.starts_with("demo step 1/7 (create) failed; pool demo is left as it is"),
            "{text}"
        );
        assert!(
            text.ends_with("pool demo is degraded: join_worker on sim-a-2 failed 5 times: bad token"),
            "{text}"
        );
        assert!(out.contains("==> [1/7] create"), "{out}");
        assert!(!out.contains("[2/7]"), "{out}");
    }

    #[tokio::test]
    async fn an_existing_pool_is_not_touched() {
        let fake = Fake {
            hosts: fleet(),
            ..Fake::default()
        };
        fake.script_get_pool([Ok(proto_pool("ready", &["joined"], None))]);
        let (result, _) = run_demo(fake.clone()).await;
        let err = result.unwrap_err();
        assert_eq!(exit::code_of(&err), exit::REJECTED);
        assert!(format!("{err:#}").contains("pool demo already exists"));
        assert!(!fake.seen().iter().any(|s| matches!(s, Seen::CreatePool(_))));
    }
}
