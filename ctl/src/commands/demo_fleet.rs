//! The demo's failure and load steps: kill a worker host and watch the pool
//! heal, then load the workers and watch autoscaling grow the pool.
//!
//! They act on hosts, which only the sandbox can do from here (a real fleet
//! would need someone to pull a plug), so they go through [`Fleet`]:
//! [`SandboxFleet`] when the demo runs against `rpoolctl sandbox up`'s
//! controllers, nothing otherwise (the steps are then skipped, saying why).

use std::time::Duration;

use anyhow::Context;
use rpool_proto::units::format_duration;
use rpool_proto::v1::{AutoscalePolicy, HostState, ListHostsRequest, SetAutoscaleRequest};
use tokio::time::Instant;

use super::demo::Demo;
use super::pool::capacity;
use super::sandbox::DirArgs;
use super::{pool_show, sandbox_host, sandbox_load};
use crate::exit::{self, Failure};
use crate::sandbox::layout::Record;
use crate::settings::{Env, Settings};
use crate::view::PoolView;

/// Acting on hosts the way an outage or a busy workload would.
pub trait Fleet {
    /// Stops the host (its agent and its Kubernetes node).
    fn kill(&mut self, host_id: &str) -> anyhow::Result<()>;
    /// Starts a killed host again.
    fn revive(&mut self, host_id: &str) -> anyhow::Result<()>;
    /// Makes the host report `cpu_percent` busy.
    fn load(&mut self, host_id: &str, cpu_percent: f64) -> anyhow::Result<()>;
}

/// The local sandbox's hosts, through `sandbox kill-host | revive-host | load`.
pub struct SandboxFleet {
    env: Env,
    dir: DirArgs,
}

impl SandboxFleet {
    /// The sandbox, if one is running and the demo talks to its controllers.
    pub fn detect(dir: &DirArgs, env: &Env, settings: &Settings) -> Option<SandboxFleet> {
        let layout = dir.layout(env).ok()?;
        let record = Record::load(&layout.record()).ok()??;
        let ours = record
            .controllers
            .iter()
            .any(|c| settings.controllers.contains(&c.address));
        ours.then(|| SandboxFleet {
            env: env.clone(),
            dir: dir.clone(),
        })
    }
}

impl Fleet for SandboxFleet {
    fn kill(&mut self, host_id: &str) -> anyhow::Result<()> {
        sandbox_host::exec_kill(
            sandbox_host::KillHostArgs {
                host: host_id.to_string(),
                wait: false,
                dir: self.dir.clone(),
            },
            &self.env,
        )
    }

    fn revive(&mut self, host_id: &str) -> anyhow::Result<()> {
        sandbox_host::exec_revive(
            sandbox_host::ReviveHostArgs {
                host: host_id.to_string(),
                bin_dir: None,
                dir: self.dir.clone(),
            },
            &self.env,
        )
    }

    fn load(&mut self, host_id: &str, cpu_percent: f64) -> anyhow::Result<()> {
        sandbox_load::exec(
            sandbox_load::LoadArgs {
                host: host_id.to_string(),
                cpu: Some(cpu_percent),
                memory: None,
                pending_pods: None,
                dir: self.dir.clone(),
            },
            &self.env,
        )
    }
}

/// How often the steps poll the pool while they wait.
const POLL: Duration = Duration::from_millis(500);

impl Demo<'_> {
    /// Polls the pool until `done` holds for it, within the step's budget,
    /// printing a progress line when what it sees changes.
    async fn wait_for(
        &mut self,
        what: &str,
        mut done: impl FnMut(&PoolView) -> bool,
    ) -> anyhow::Result<PoolView> {
        let deadline = Instant::now() + self.bounds.budget;
        let mut last = String::new();
        loop {
            let view = PoolView::from(&pool_show::get(self.ctl, &self.name).await?);
            if done(&view) {
                return Ok(view);
            }
            let c = view.counts();
            let now = format!(
                "{}: {} joined of {}, {} leaving",
                view.phase, c.joined, c.staying, c.leaving
            );
            if now != last {
                (self.progress)(&now);
                last = now;
            }
            if Instant::now() >= deadline {
                return Err(Failure::new(
                    exit::TIMED_OUT,
                    format!(
                        "waited {} for {what}; pool {} is {} ({})",
                        format_duration(self.bounds.budget),
                        self.name,
                        view.phase,
                        view.phase_reason
                    ),
                )
                .into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Step: a worker host dies; the pool heals; the host comes back and is
    /// fenced (reset) into the fleet.
    pub(super) async fn heal(&mut self, n: usize) -> anyhow::Result<String> {
        self.step(
            n,
            &format!("kill a worker host of pool {} and watch it heal", self.name),
        );
        let Some(fleet) = self.fleet.as_mut() else {
            return Ok("skipped: killing a host needs the local sandbox (rpoolctl sandbox up)".into());
        };
        let before = PoolView::from(&pool_show::get(self.ctl, &self.name).await?);
        let victim = before
            .members
            .iter()
            .find(|m| m.role == "worker" && m.state == "joined")
            .cloned()
            .context("the pool has no joined worker to kill")?;
        let start = Instant::now();
        fleet.kill(&victim.host_id)?;
        (self.out)(&format!(
            "    killed {} ({}c); waiting for the controllers to declare it down and replace it\n",
            victim.hostname, victim.cores
        ));
        let healed = self
            .wait_for(&format!("{} to be replaced", victim.hostname), |p| {
                p.phase == "ready" && !p.members.iter().any(|m| m.host_id == victim.host_id)
            })
            .await?;
        let healed_in = start.elapsed();
        let replacement: Vec<String> = healed
            .members
            .iter()
            .filter(|m| !before.members.iter().any(|b| b.host_id == m.host_id))
            .map(|m| format!("{} ({}c)", m.hostname, m.cores))
            .collect();
        let fleet = self.fleet.as_mut().context("the sandbox went away")?;
        fleet.revive(&victim.host_id)?;
        (self.out)(&format!(
            "    revived {}; it must be reset before it is placed again\n",
            victim.hostname
        ));
        let deadline = Instant::now() + self.bounds.budget;
        loop {
            let hosts = crate::rpc!(self.ctl, list_hosts, ListHostsRequest::default())
                .context("listing hosts")?
                .hosts;
            let back = hosts
                .iter()
                .find(|h| h.host_id == victim.host_id)
                .is_some_and(|h| {
                    h.state == HostState::Ready as i32
                        && h.pool.is_empty()
                        && !h.state_reason.contains("fenced")
                });
            if back {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Failure::new(
                    exit::TIMED_OUT,
                    format!("{} did not come back to the fleet", victim.hostname),
                )
                .into());
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(format!(
            "{} replaced by {} in {}; workers {}; {} is back in the fleet",
            victim.hostname,
            if replacement.is_empty() {
                "a fleet host".to_string()
            } else {
                replacement.join(", ")
            },
            format_duration(healed_in),
            capacity(healed.worker_cores, healed.worker_memory_bytes),
            victim.hostname
        ))
    }

    /// Step: turn autoscaling on with short windows, load every worker to
    /// 95 % and watch the pool grow by a host; then unload and turn it off.
    pub(super) async fn scale_by_load(&mut self, n: usize) -> anyhow::Result<String> {
        self.step(
            n,
            &format!("load the workers of pool {} and watch it autoscale", self.name),
        );
        if self.fleet.is_none() {
            return Ok("skipped: loading hosts needs the local sandbox (rpoolctl sandbox up)".into());
        }
        let before = PoolView::from(&pool_show::get(self.ctl, &self.name).await?);
        let hosts = crate::rpc!(self.ctl, list_hosts, ListHostsRequest::default())
            .context("listing hosts")?
            .hosts;
        let free_cores: u64 = super::demo::free_hosts(&hosts)
            .iter()
            .filter_map(|h| h.facts.as_ref()?.inventory.as_ref())
            .map(|i| u64::from(i.logical_cores))
            .sum();
        if free_cores == 0 {
            return Ok("skipped: no free host left to grow onto".into());
        }
        let policy = AutoscalePolicy {
            min_cores: before.cores,
            max_cores: before.cores + free_cores,
            cpu_target_percent: 70,
            memory_target_percent: 80,
            up_window_ms: 3_000,
            down_window_ms: 3_600_000,
            cooldown_ms: 60_000,
            last_scaled_at_unix_ms: 0,
        };
        let request = SetAutoscaleRequest {
            name: self.name.clone(),
            policy: Some(policy),
        };
        crate::rpc!(self.ctl, set_autoscale, request).context("turning autoscaling on")?;
        (self.out)(&format!(
            "    autoscale on: {}..={} worker cores, cpu target 70%, up-window 3s\n",
            before.cores,
            before.cores + free_cores
        ));
        let workers: Vec<String> = before
            .members
            .iter()
            .filter(|m| m.role == "worker")
            .map(|m| m.host_id.clone())
            .collect();
        let fleet = self.fleet.as_mut().context("the sandbox went away")?;
        for w in &workers {
            fleet.load(w, 95.0)?;
        }
        (self.out)(&format!("    loaded {} worker(s) to 95% cpu\n", workers.len()));
        let start = Instant::now();
        let grown = self
            .wait_for("the pool to grow", |p| {
                p.phase == "ready" && p.worker_cores > before.worker_cores
            })
            .await;
        // Unload and stop autoscaling whatever happened, so the next steps
        // start from a quiet pool.
        if let Some(fleet) = self.fleet.as_mut() {
            for w in &workers {
                fleet.load(w, 10.0)?;
            }
        }
        let off = SetAutoscaleRequest {
            name: self.name.clone(),
            policy: None,
        };
        crate::rpc!(self.ctl, set_autoscale, off).context("turning autoscaling off")?;
        let grown = grown?;
        Ok(format!(
            "grew in {}: workers {} -> {}; autoscaling off again",
            format_duration(start.elapsed()),
            capacity(before.worker_cores, before.worker_memory_bytes),
            capacity(grown.worker_cores, grown.worker_memory_bytes)
        ))
    }
}
