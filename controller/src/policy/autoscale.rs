//! Autoscaling decisions: pure code, no I/O, no clock (time is an argument).
//!
//! Per pool with a policy (see `rpool.v1.AutoscalePolicy`):
//!
//! 1. **Signals** ([`signals`]): CPU% averaged over the pool's joined,
//!    ready workers weighted by their cores; memory% as used over total of
//!    the same workers; pods pending in the cluster, the largest count a
//!    joined control plane of the pool reports. All from the leader's
//!    in-memory liveness observations (heartbeats), never replicated.
//! 2. **Windows** ([`Windows::observe`]): since when each condition has held
//!    without a break: CPU above its target, memory above its target, pods
//!    pending, and "low" (CPU and memory both below half their targets, no
//!    pod pending). A tick without signals, or with the pool not `ready`,
//!    restarts every window. Pending pods count only once the pool has
//!    been ready for [`PENDING_SETTLE_MS`] (a count taken while it was
//!    still changing may be a few seconds old). The windows live in leader memory
//!    ([`crate::leader::autoscaler`]); after a leader change they start over, so a
//!    new leader waits a full window before it acts (it never acts on
//!    less than a window of its own observations).
//! 3. **Decision** ([`decide`]), in this order: nothing unless the pool is
//!    `ready`; nothing during the cooldown after the autoscaler's last
//!    change (replicated in the pool record, so a new leader honours it);
//!    a pool whose workers are below `min_cores` (or above `max_cores`)
//!    is moved toward the range one host at a time; scale up when CPU or
//!    memory has been above its target, or pods pending, for the
//!    up-window; scale down when low for the down-window. Never above
//!    `max_cores` nor below `min_cores` of workers; one host at a time.
//! 4. **Host**: up adds the fleet host placement picks to cover one more
//!    unit of the dimension that triggered (one core for CPU or pending
//!    pods, 1 GiB for memory) among the hosts that keep the pool within
//!    `max_cores`; down releases the worker whose removal keeps the pool
//!    at or above `min_cores` with the least overshoot over it (ties: the
//!    smaller host, then the host id).
//!
//! Acting is proposing `Command::AutoscalePool`, applied as the same
//! `ResizePool` an admin resize makes (request changed by that host's
//! capacity, one host added or released), so the planner's join or
//! drain → delete → reset flow does the work.

use std::time::Duration;

use rpool_proto::units::{format_duration, format_size, format_span};
use rpool_proto::v1;

use crate::policy::placement::{self, Candidate, Request};
use crate::state::State;
use crate::state::command::{Command, HostState};
use crate::state::pool::{AutoscalePolicy, MemberState, PoolPhase, PoolRecord, Role, ZoneMode, ZonePolicy};

/// Smallest memory request a pool may have (as `ResizePool` accepts).
const MEMORY_REQUEST_MIN: u64 = 1 << 30;

/// What the autoscaler measures for one pool at one tick.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    /// CPU busy % over the reporting workers (weighted by cores).
    pub cpu_percent: Option<f64>,
    /// Memory used % over the reporting workers.
    pub memory_percent: Option<f64>,
    /// Pods pending in the cluster (from a control-plane agent).
    pub pending_pods: Option<u32>,
}

/// How long a pool must have been `ready` before pending pods count: a
/// control-plane agent counts them every 3 s, so a count taken while
/// nodes were still joining (e.g. CoreDNS waiting for the pod network)
/// may still be reported just after the pool turns ready.
pub const PENDING_SETTLE_MS: u64 = 10_000;

/// Since when (Unix ms) each condition has held continuously.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Windows {
    /// Since when the pool has been ready with signals.
    pub ready_since: Option<u64>,
    pub cpu_high_since: Option<u64>,
    pub memory_high_since: Option<u64>,
    pub pending_since: Option<u64>,
    pub low_since: Option<u64>,
}

impl Windows {
    /// Feeds one tick's signals. `eligible`: the pool is `ready`; when it
    /// is not, or there is no utilization signal, every window restarts.
    pub fn observe(&mut self, policy: &AutoscalePolicy, signals: &Signals, eligible: bool, now_ms: u64) {
        let (Some(cpu), Some(memory), true) = (signals.cpu_percent, signals.memory_percent, eligible) else {
            *self = Windows::default();
            return;
        };
        let ready_since = *self.ready_since.get_or_insert(now_ms);
        let pending = signals.pending_pods.unwrap_or(0);
        let pending_counts = now_ms.saturating_sub(ready_since) >= PENDING_SETTLE_MS;
        let cpu_target = f64::from(policy.cpu_target_percent);
        let memory_target = f64::from(policy.memory_target_percent);
        let hold = |since: &mut Option<u64>, holds: bool| {
            *since = if holds {
                Some(since.unwrap_or(now_ms))
            } else {
                None
            };
        };
        hold(&mut self.cpu_high_since, cpu > cpu_target);
        hold(&mut self.memory_high_since, memory > memory_target);
        hold(&mut self.pending_since, pending > 0 && pending_counts);
        hold(
            &mut self.low_since,
            cpu < cpu_target / 2.0 && memory < memory_target / 2.0 && pending == 0,
        );
    }
}

/// One worker or fleet host, as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub host_id: String,
    pub hostname: String,
    pub zone: String,
    pub cores: u64,
    pub memory_bytes: u64,
}

impl Host {
    fn candidate(&self) -> Candidate {
        Candidate {
            host_id: self.host_id.clone(),
            zone: self.zone.clone(),
            cores: u32::try_from(self.cores).unwrap_or(u32::MAX),
            memory_bytes: self.memory_bytes,
        }
    }

    /// `h9 (16c/64GiB)`.
    fn describe(&self) -> String {
        format!(
            "{} ({}c/{})",
            self.hostname,
            self.cores,
            format_size(self.memory_bytes)
        )
    }
}

/// The pool as the decision needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolFacts {
    pub name: String,
    pub phase: PoolPhase,
    /// Requested worker capacity.
    pub cores: u64,
    pub memory_bytes: u64,
    /// Workers that are not leaving (joined or joining).
    pub workers: Vec<Host>,
    /// Hosts that may be placed (ready, in no pool).
    pub fleet: Vec<Host>,
    /// When the autoscaler last changed the pool (Unix ms, 0 = never).
    pub last_scaled_at_unix_ms: u64,
    /// The pool's zone policy: a scale-up takes a host where it says
    /// (spread: the zone with the fewest worker cores; pack: a zone already
    /// in use), a scale-down releases from where it says.
    pub zones: ZonePolicy,
}

impl PoolFacts {
    /// The facts of `pool` in `sm`.
    pub fn of(sm: &State, pool: &PoolRecord) -> PoolFacts {
        let host = |id: &str| {
            sm.host(id).map(|h| Host {
                host_id: h.host_id.clone(),
                hostname: h.facts.hostname.clone(),
                zone: h.facts.zone.clone(),
                cores: u64::from(h.facts.inventory.logical_cores),
                memory_bytes: h.facts.inventory.memory_total_bytes,
            })
        };
        let workers = pool
            .members
            .values()
            .filter(|m| m.role == Role::Worker && !matches!(m.state, MemberState::Leaving { .. }))
            .filter_map(|m| host(&m.host_id))
            .collect();
        let fleet = crate::policy::fleet::candidates(sm)
            .iter()
            .filter_map(|c| host(&c.host_id))
            .collect();
        PoolFacts {
            name: pool.spec.name.clone(),
            phase: pool.phase,
            cores: pool.spec.cores,
            memory_bytes: pool.spec.memory_bytes,
            workers,
            fleet,
            last_scaled_at_unix_ms: pool.autoscale.last_scaled_at_unix_ms,
            zones: pool.spec.zones.clone(),
        }
    }

    fn worker_cores(&self) -> u64 {
        self.workers.iter().map(|w| w.cores).sum()
    }

    fn worker_memory(&self) -> u64 {
        self.workers.iter().map(|w| w.memory_bytes).sum()
    }
}

/// What the autoscaler does about one pool now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Add `host` as a worker.
    ScaleUp { host: Host, why: String },
    /// Release worker `host`.
    ScaleDown { host: Host, why: String },
    /// Change nothing.
    Hold { why: String },
}

impl Decision {
    /// `scale_up`, `scale_down`, `hold` (as in `rpool.v1.AutoscaleStatus`).
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::ScaleUp { .. } => "scale_up",
            Decision::ScaleDown { .. } => "scale_down",
            Decision::Hold { .. } => "hold",
        }
    }

    /// The sentence explaining it.
    pub fn why(&self) -> &str {
        match self {
            Decision::ScaleUp { why, .. } | Decision::ScaleDown { why, .. } | Decision::Hold { why } => why,
        }
    }

    /// The command that carries it out: the pool's request changed by the
    /// host's capacity (a scale-down never asks for more than what stays),
    /// with the host to add or release. `None` for a hold.
    pub fn command(&self, pool: &PoolFacts, at_unix_ms: u64) -> Option<Command> {
        let (cores, memory_bytes, add, release, why) = match self {
            Decision::Hold { .. } => return None,
            Decision::ScaleUp { host, why } => (
                pool.cores.saturating_add(host.cores),
                pool.memory_bytes.saturating_add(host.memory_bytes),
                vec![host.host_id.clone()],
                Vec::new(),
                why,
            ),
            Decision::ScaleDown { host, why } => {
                // The request follows what is left, and only down: a pool
                // above its request (a replacement larger than the host it
                // replaced) keeps its request when the surplus goes.
                // Subtracting the host from the request instead turned a
                // 48-core request into 1 core when a 64-core worker of a
                // 112-core pool went for max-cores 96.
                let left_cores = pool.worker_cores().saturating_sub(host.cores);
                let left_memory = pool.worker_memory().saturating_sub(host.memory_bytes);
                (
                    pool.cores.min(left_cores).max(1),
                    pool.memory_bytes.min(left_memory).max(MEMORY_REQUEST_MIN),
                    Vec::new(),
                    vec![host.host_id.clone()],
                    why,
                )
            }
        };
        Some(Command::AutoscalePool {
            pool: pool.name.clone(),
            cores,
            memory_bytes,
            add,
            release,
            why: why.clone(),
            at_unix_ms,
        })
    }
}

/// What a host reported, as the signals need it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reported {
    pub utilization: Option<v1::Utilization>,
    pub pending_pods: Option<u32>,
}

/// The signals of `pool`, from what each host last reported
/// (`reported(host_id)`). Only joined workers in state `ready` count
/// toward utilization; only joined control planes toward pending pods.
pub fn signals(sm: &State, pool: &PoolRecord, reported: impl Fn(&str) -> Option<Reported>) -> Signals {
    let (mut cpu_weighted, mut cores, mut used, mut total) = (0.0f64, 0u64, 0u64, 0u64);
    let mut pending: Option<u32> = None;
    for m in pool.members.values().filter(|m| m.state == MemberState::Joined) {
        let Some(host) = sm.host(&m.host_id) else {
            continue;
        };
        let Some(report) = reported(&m.host_id) else {
            continue;
        };
        match m.role {
            Role::Worker => {
                if host.state != HostState::Ready {
                    continue;
                }
                let Some(u) = report.utilization else {
                    continue;
                };
                let c = u64::from(host.facts.inventory.logical_cores.max(1));
                cpu_weighted += u.cpu_percent.clamp(0.0, 100.0) * c as f64;
                cores += c;
                used += u.memory_used_bytes.min(host.facts.inventory.memory_total_bytes);
                total += host.facts.inventory.memory_total_bytes;
            }
            Role::ControlPlane => {
                if let Some(n) = report.pending_pods {
                    pending = Some(pending.map_or(n, |p| p.max(n)));
                }
            }
        }
    }
    Signals {
        cpu_percent: (cores > 0).then(|| cpu_weighted / cores as f64),
        memory_percent: (total > 0).then(|| used as f64 * 100.0 / total as f64),
        pending_pods: pending,
    }
}

fn pct(v: f64) -> String {
    format!("{:.0}%", v)
}

/// Decides what to do about `pool` at `now_ms`. Pure.
pub fn decide(
    policy: &AutoscalePolicy,
    pool: &PoolFacts,
    windows: &Windows,
    signals: &Signals,
    now_ms: u64,
) -> Decision {
    let name = &pool.name;
    let hold = |why: String| Decision::Hold { why };
    if pool.phase != PoolPhase::Ready {
        return hold(format!("holding: pool is {}", pool.phase.as_str()));
    }
    if pool.last_scaled_at_unix_ms > 0 {
        let until = pool.last_scaled_at_unix_ms.saturating_add(policy.cooldown_ms);
        if now_ms < until {
            return hold(format!(
                "holding: cooldown {} left",
                format_duration(Duration::from_millis(until - now_ms))
            ));
        }
    }
    let have = pool.worker_cores();
    // Bring the pool into [min, max] first.
    if have < policy.min_cores {
        let reason = format!("worker cores {have} < min-cores {}", policy.min_cores);
        return match pick_up(pool, policy, ScaleFor::Cores) {
            Some(host) => Decision::ScaleUp {
                why: format!("pool {name}: {reason}: +1 host {}", host.describe()),
                host,
            },
            None => hold(format!(
                "holding: {reason}, but no free host fits under max-cores {}",
                policy.max_cores
            )),
        };
    }
    if have > policy.max_cores {
        let reason = format!("worker cores {have} > max-cores {}", policy.max_cores);
        return match pick_down(pool, policy) {
            Some(host) => Decision::ScaleDown {
                why: format!("pool {name}: {reason}: -1 host {}", host.describe()),
                host,
            },
            None => hold(format!(
                "holding: {reason}, but no worker can go without falling below min-cores {}",
                policy.min_cores
            )),
        };
    }
    let (Some(cpu), Some(memory)) = (signals.cpu_percent, signals.memory_percent) else {
        return hold("holding: no utilization reported by the workers yet".to_owned());
    };
    let pending = signals.pending_pods.unwrap_or(0);
    let held = |since: Option<u64>| since.map(|s| now_ms.saturating_sub(s));
    let up_window = policy.up_window_ms;
    let cpu_target = policy.cpu_target_percent;
    let memory_target = policy.memory_target_percent;
    // Scale up: the first condition that held for the up-window.
    let up = [
        (
            held(windows.cpu_high_since),
            format!("cpu {} > {cpu_target}%", pct(cpu)),
            ScaleFor::Cores,
        ),
        (
            held(windows.memory_high_since),
            format!("memory {} > {memory_target}%", pct(memory)),
            ScaleFor::Memory,
        ),
        (
            held(windows.pending_since),
            format!("{pending} pod(s) pending"),
            ScaleFor::Cores,
        ),
    ];
    if let Some((_, reason, dimension)) = up.iter().find(|(h, _, _)| h.is_some_and(|h| h >= up_window)) {
        let reason = format!("{reason} for {}", format_span(up_window));
        if have >= policy.max_cores {
            return hold(format!("holding: at max-cores {} ({reason})", policy.max_cores));
        }
        return match pick_up(pool, policy, *dimension) {
            Some(host) => Decision::ScaleUp {
                why: format!("pool {name}: {reason}: +1 host {}", host.describe()),
                host,
            },
            None if pool.fleet.is_empty() => {
                hold(format!("holding: {reason}, but no free host in the fleet"))
            }
            None => hold(format!(
                "holding: {reason}, but no free host fits under max-cores {} (workers have {have})",
                policy.max_cores
            )),
        };
    }
    let low = format!(
        "cpu {} < {}%, memory {} < {}%",
        pct(cpu),
        pct_half(cpu_target),
        pct(memory),
        pct_half(memory_target)
    );
    if let Some(h) = held(windows.low_since) {
        let down_window = policy.down_window_ms;
        if h >= down_window {
            let reason = format!("{low} for {}", format_span(down_window));
            return match pick_down(pool, policy) {
                Some(host) => Decision::ScaleDown {
                    why: format!("pool {name}: {reason}: -1 host {}", host.describe()),
                    host,
                },
                None => hold(format!("holding: at min-cores {} ({reason})", policy.min_cores)),
            };
        }
        return hold(format!(
            "holding: {low} for {} of the {} down-window",
            format_duration(Duration::from_millis(h)),
            format_span(down_window)
        ));
    }
    if let Some((Some(h), reason, _)) = up.iter().find(|(h, _, _)| h.is_some()) {
        return hold(format!(
            "holding: {reason} for {} of the {} up-window",
            format_duration(Duration::from_millis(*h)),
            format_span(up_window)
        ));
    }
    if pending > 0 && windows.pending_since.is_none() {
        return hold(format!(
            "holding: {pending} pod(s) pending, counted once the pool has been ready for {}",
            format_span(PENDING_SETTLE_MS)
        ));
    }
    hold(format!(
        "holding: cpu {} within target {cpu_target}%, memory {} within target {memory_target}%",
        pct(cpu),
        pct(memory)
    ))
}

/// `35` for a target of 70, `40.5` for 81.
fn pct_half(target: u32) -> String {
    if target.is_multiple_of(2) {
        format!("{}", target / 2)
    } else {
        format!("{}.5", target / 2)
    }
}

/// The dimension a scale-up covers one more unit of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScaleFor {
    Cores,
    Memory,
}

/// The fleet host placement picks to grow by one unit of `dimension`,
/// among those that keep the workers within `max_cores`.
fn pick_up(pool: &PoolFacts, policy: &AutoscalePolicy, dimension: ScaleFor) -> Option<Host> {
    let have = pool.worker_cores();
    let fits: Vec<Candidate> = pool
        .fleet
        .iter()
        .filter(|h| have.saturating_add(h.cores) <= policy.max_cores)
        .map(Host::candidate)
        .collect();
    let workers: Vec<Candidate> = pool.workers.iter().map(Host::candidate).collect();
    let fits = crate::policy::zones::scale_up_hosts(&fits, &workers, &pool.zones);
    let want = match dimension {
        ScaleFor::Cores => Request {
            cores: 1,
            memory_bytes: 0,
            control_planes: 0,
        },
        ScaleFor::Memory => Request {
            cores: 0,
            memory_bytes: 1 << 30,
            control_planes: 0,
        },
    };
    // The zones are narrowed above; among them, one host (pack: a single
    // zone's least-overshoot cover of one unit).
    let one_zone = ZonePolicy {
        mode: if pool.zones.mode == ZoneMode::Any {
            ZoneMode::Any
        } else {
            ZoneMode::Pack
        },
        allowed: Vec::new(),
    };
    let chosen = placement::grow(&fits, &[], &want, &one_zone).ok()?;
    let id = chosen.first()?;
    pool.fleet.iter().find(|h| &h.host_id == id).cloned()
}

/// The worker whose release keeps the workers at or above `min_cores`
/// with the least overshoot over it (ties: smaller host, then id). A pool
/// keeps at least one worker.
fn pick_down(pool: &PoolFacts, policy: &AutoscalePolicy) -> Option<Host> {
    let have = pool.worker_cores();
    if pool.workers.len() < 2 {
        return None;
    }
    let workers: Vec<Candidate> = pool.workers.iter().map(Host::candidate).collect();
    let zone = crate::policy::zones::scale_down_zone(&workers, &pool.zones);
    let allowed = |w: &&Host| have.saturating_sub(w.cores) >= policy.min_cores.max(1);
    // The policy's zone when one of its workers may go, else any zone.
    let in_zone = pool
        .workers
        .iter()
        .filter(allowed)
        .any(|w| Some(&w.zone) == zone.as_ref());
    pool.workers
        .iter()
        .filter(allowed)
        .filter(|w| !in_zone || Some(&w.zone) == zone.as_ref())
        .min_by_key(|w| {
            (
                have - w.cores - policy.min_cores,
                w.cores,
                w.memory_bytes,
                w.host_id.clone(),
            )
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000;
    const T0: u64 = 1_700_000_000_000;

    fn policy() -> AutoscalePolicy {
        AutoscalePolicy {
            min_cores: 16,
            max_cores: 48,
            cpu_target_percent: 70,
            memory_target_percent: 80,
            up_window_ms: 60 * S,
            down_window_ms: 600 * S,
            cooldown_ms: 300 * S,
        }
    }

    fn host(name: &str, cores: u64) -> Host {
        Host {
            host_id: format!("id-{name}"),
            hostname: name.to_owned(),
            zone: "a".to_owned(),
            cores,
            memory_bytes: (cores * 4) << 30,
        }
    }

    /// Workers h1 (8c) and h2 (16c); fleet h9 (16c), h10 (32c).
    fn pool() -> PoolFacts {
        PoolFacts {
            name: "web".to_owned(),
            phase: PoolPhase::Ready,
            cores: 24,
            memory_bytes: 96 << 30,
            workers: vec![host("h1", 8), host("h2", 16)],
            fleet: vec![host("h9", 16), host("h10", 32)],
            last_scaled_at_unix_ms: 0,
            zones: ZonePolicy::default(),
        }
    }

    fn signals(cpu: f64, memory: f64, pending: u32) -> Signals {
        Signals {
            cpu_percent: Some(cpu),
            memory_percent: Some(memory),
            pending_pods: Some(pending),
        }
    }

    /// Feeds `signals` every second from T0 up to `until` and decides.
    fn run(p: &AutoscalePolicy, pool: &PoolFacts, s: Signals, until: u64) -> Decision {
        let mut w = Windows::default();
        let mut t = T0;
        while t <= until {
            w.observe(p, &s, pool.phase == PoolPhase::Ready, t);
            t += S;
        }
        decide(p, pool, &w, &s, until)
    }

    #[test]
    fn cpu_above_target_scales_up_after_the_window_and_not_before() {
        let p = policy();
        let before = run(&p, &pool(), signals(91.0, 40.0, 0), T0 + 59 * S);
        assert_eq!(
            before,
            Decision::Hold {
                why: "holding: cpu 91% > 70% for 59s of the 1m up-window".to_owned()
            }
        );
        let after = run(&p, &pool(), signals(91.0, 40.0, 0), T0 + 60 * S);
        assert_eq!(
            after,
            Decision::ScaleUp {
                host: host("h9", 16),
                why: "pool web: cpu 91% > 70% for 1m: +1 host h9 (16c/64GiB)".to_owned()
            }
        );
        let cmd = after.command(&pool(), T0 + 60 * S).unwrap();
        assert_eq!(
            cmd,
            Command::AutoscalePool {
                pool: "web".to_owned(),
                cores: 40,
                memory_bytes: 160 << 30,
                add: vec!["id-h9".to_owned()],
                release: vec![],
                why: "pool web: cpu 91% > 70% for 1m: +1 host h9 (16c/64GiB)".to_owned(),
                at_unix_ms: T0 + 60 * S,
            }
        );
    }

    #[test]
    fn a_dip_below_target_restarts_the_up_window() {
        let p = policy();
        let mut w = Windows::default();
        let high = signals(91.0, 40.0, 0);
        for t in 0..50 {
            w.observe(&p, &high, true, T0 + t * S);
        }
        w.observe(&p, &signals(60.0, 40.0, 0), true, T0 + 50 * S);
        for t in 51..=100 {
            w.observe(&p, &high, true, T0 + t * S);
        }
        assert!(matches!(
            decide(&p, &pool(), &w, &high, T0 + 100 * S),
            Decision::Hold { .. }
        ));
        w.observe(&p, &high, true, T0 + 111 * S);
        assert!(matches!(
            decide(&p, &pool(), &w, &high, T0 + 111 * S),
            Decision::ScaleUp { .. }
        ));
    }

    #[test]
    fn memory_above_target_scales_up_by_the_host_with_the_least_memory() {
        let mut pool = pool();
        pool.fleet = vec![host("h10", 32), host("h9", 16)];
        let d = run(&policy(), &pool, signals(20.0, 95.0, 0), T0 + 60 * S);
        assert_eq!(
            d.why(),
            "pool web: memory 95% > 80% for 1m: +1 host h9 (16c/64GiB)"
        );
    }

    #[test]
    fn pending_pods_scale_up_after_the_window() {
        let p = policy();
        // Pending pods count once the pool has been ready for 10s.
        let d = run(&p, &pool(), signals(30.0, 30.0, 3), T0 + 70 * S);
        assert_eq!(
            d.why(),
            "pool web: 3 pod(s) pending for 1m: +1 host h9 (16c/64GiB)"
        );
        let early = run(&p, &pool(), signals(30.0, 30.0, 3), T0 + 40 * S);
        assert_eq!(
            early.why(),
            "holding: 3 pod(s) pending for 30s of the 1m up-window"
        );
    }

    #[test]
    fn pending_pods_count_only_once_the_pool_has_settled() {
        let p = AutoscalePolicy {
            up_window_ms: S,
            ..policy()
        };
        let s = signals(30.0, 30.0, 2);
        let mut w = Windows::default();
        // Ready at T0 with a count taken before: nothing pending yet.
        for t in 0..=9 {
            w.observe(&p, &s, true, T0 + t * S);
        }
        assert_eq!(w.pending_since, None);
        assert_eq!(
            decide(&p, &pool(), &w, &s, T0 + 9 * S).why(),
            "holding: 2 pod(s) pending, counted once the pool has been ready for 10s"
        );
        w.observe(&p, &s, true, T0 + 10 * S);
        assert_eq!(w.pending_since, Some(T0 + 10 * S));
        w.observe(&p, &s, true, T0 + 11 * S);
        assert!(matches!(
            decide(&p, &pool(), &w, &s, T0 + 11 * S),
            Decision::ScaleUp { .. }
        ));
        // Not ready again: the settling starts over.
        w.observe(&p, &s, false, T0 + 12 * S);
        w.observe(&p, &s, true, T0 + 13 * S);
        assert_eq!(w.pending_since, None);
    }

    #[test]
    fn never_above_max_cores() {
        let mut p = policy();
        p.max_cores = 24;
        assert_eq!(
            run(&p, &pool(), signals(95.0, 40.0, 0), T0 + 60 * S).why(),
            "holding: at max-cores 24 (cpu 95% > 70% for 1m)"
        );
        // 24 + 16 > 32: h9 would overshoot max; nothing smaller is free.
        p.max_cores = 32;
        assert_eq!(
            run(&p, &pool(), signals(95.0, 40.0, 0), T0 + 60 * S).why(),
            "holding: cpu 95% > 70% for 1m, but no free host fits under max-cores 32 (workers have 24)"
        );
        p.max_cores = 40;
        let d = run(&p, &pool(), signals(95.0, 40.0, 0), T0 + 60 * S);
        assert!(
            matches!(&d, Decision::ScaleUp { host, .. } if host.hostname == "h9"),
            "{d:?}"
        );
    }

    #[test]
    fn low_utilization_scales_down_after_the_down_window_never_below_min() {
        let p = policy();
        let low = signals(20.0, 10.0, 0);
        let early = run(&p, &pool(), low, T0 + 599 * S);
        assert_eq!(
            early.why(),
            "holding: cpu 20% < 35%, memory 10% < 40% for 9m59s of the 10m down-window"
        );
        // 24 cores, min 16: only h1 (8c) can go.
        let d = run(&p, &pool(), low, T0 + 600 * S);
        assert_eq!(
            d,
            Decision::ScaleDown {
                host: host("h1", 8),
                why: "pool web: cpu 20% < 35%, memory 10% < 40% for 10m: -1 host h1 (8c/32GiB)".to_owned()
            }
        );
        assert_eq!(
            d.command(&pool(), T0),
            Some(Command::AutoscalePool {
                pool: "web".to_owned(),
                cores: 16,
                memory_bytes: 64 << 30,
                add: vec![],
                release: vec!["id-h1".to_owned()],
                why: d.why().to_owned(),
                at_unix_ms: T0,
            })
        );
        let mut at_min = p;
        at_min.min_cores = 20;
        assert_eq!(
            run(&at_min, &pool(), low, T0 + 600 * S).why(),
            "holding: at min-cores 20 (cpu 20% < 35%, memory 10% < 40% for 10m)"
        );
        // Only one condition low is not low.
        let half = run(&p, &pool(), signals(20.0, 60.0, 0), T0 + 600 * S);
        assert_eq!(
            half.why(),
            "holding: cpu 20% within target 70%, memory 60% within target 80%"
        );
        // Pending pods are not low either.
        assert!(matches!(
            run(&p, &pool(), signals(20.0, 10.0, 1), T0 + 600 * S),
            Decision::ScaleUp { .. }
        ));
    }

    #[test]
    fn scale_down_picks_the_worker_leaving_the_least_overshoot_over_min() {
        let mut pool = pool();
        pool.workers = vec![host("h1", 8), host("h2", 16), host("h3", 16), host("h4", 32)];
        let mut p = policy();
        p.max_cores = 100;
        // 72 cores, min 16: dropping h4 leaves 40 (overshoot 24), the least.
        let d = run(&p, &pool, signals(5.0, 5.0, 0), T0 + 600 * S);
        assert!(
            matches!(&d, Decision::ScaleDown { host, .. } if host.hostname == "h4"),
            "{d:?}"
        );
        // min 60: only h1 (8c) keeps >= 60 (64 left).
        p.min_cores = 60;
        let d = run(&p, &pool, signals(5.0, 5.0, 0), T0 + 600 * S);
        assert!(
            matches!(&d, Decision::ScaleDown { host, .. } if host.hostname == "h1"),
            "{d:?}"
        );
    }

    #[test]
    fn the_cooldown_holds_after_any_scale() {
        let p = policy();
        let mut pool = pool();
        pool.last_scaled_at_unix_ms = T0 - 108 * S;
        let d = run(&p, &pool, signals(95.0, 40.0, 0), T0 + 60 * S);
        assert_eq!(d.why(), "holding: cooldown 2m12s left");
        pool.last_scaled_at_unix_ms = T0 - 240 * S;
        let d = run(&p, &pool, signals(95.0, 40.0, 0), T0 + 60 * S);
        assert!(matches!(d, Decision::ScaleUp { .. }), "{d:?}");
    }

    #[test]
    fn nothing_happens_unless_the_pool_is_ready() {
        let p = policy();
        for phase in [
            PoolPhase::Provisioning,
            PoolPhase::Resizing,
            PoolPhase::Healing,
            PoolPhase::Degraded,
            PoolPhase::Deleting,
        ] {
            let mut pool = pool();
            pool.phase = phase;
            let d = run(&p, &pool, signals(99.0, 99.0, 9), T0 + 3_600 * S);
            assert_eq!(d.why(), format!("holding: pool is {}", phase.as_str()));
        }
        // The windows restart while the pool is not ready.
        let mut w = Windows::default();
        let high = signals(99.0, 40.0, 0);
        w.observe(&p, &high, true, T0);
        w.observe(&p, &high, false, T0 + S);
        assert_eq!(w, Windows::default());
    }

    #[test]
    fn the_pool_is_brought_into_its_range_one_host_at_a_time() {
        let mut p = policy();
        p.min_cores = 32;
        let quiet = signals(50.0, 50.0, 0);
        let d = run(&p, &pool(), quiet, T0);
        assert_eq!(
            d.why(),
            "pool web: worker cores 24 < min-cores 32: +1 host h9 (16c/64GiB)"
        );
        p.min_cores = 8;
        p.max_cores = 16;
        let d = run(&p, &pool(), quiet, T0);
        // Releasing h2 (16c) leaves 8, right at min: the least overshoot.
        assert_eq!(
            d.why(),
            "pool web: worker cores 24 > max-cores 16: -1 host h2 (16c/64GiB)"
        );
    }

    /// A pool above its request (a replacement bigger than the host it
    /// replaced) that goes back under max-cores keeps its request; a pool
    /// at its request shrinks it by what went.
    #[test]
    fn scaling_down_never_takes_the_request_below_what_is_left() {
        // Request 48 cores; workers 16 + 32 + 64 = 112 after a drain;
        // max-cores 96: the 64-core worker goes, 48 are left.
        let mut over = pool();
        over.cores = 48;
        over.memory_bytes = 192 << 30;
        over.workers = vec![host("h1", 16), host("h2", 32), host("h3", 64)];
        let mut p = policy();
        p.max_cores = 96;
        let d = run(&p, &over, signals(50.0, 50.0, 0), T0);
        let Some(Command::AutoscalePool {
            cores,
            memory_bytes,
            release,
            ..
        }) = d.command(&over, T0)
        else {
            panic!("expected a scale-down, got {d:?}");
        };
        assert_eq!(release, ["id-h3"]);
        assert_eq!((cores, memory_bytes), (48, 192 << 30), "the request stays");
        // At its request (24 = 8 + 16), releasing 16 takes it to 8.
        let mut p = policy();
        p.min_cores = 8;
        p.max_cores = 16;
        let d = run(&p, &pool(), signals(50.0, 50.0, 0), T0);
        let Some(Command::AutoscalePool {
            cores, memory_bytes, ..
        }) = d.command(&pool(), T0)
        else {
            panic!("expected a scale-down, got {d:?}");
        };
        assert_eq!((cores, memory_bytes), (8, 32 << 30));
    }

    #[test]
    fn without_signals_it_holds_and_says_so() {
        let d = run(&policy(), &pool(), Signals::default(), T0 + 3_600 * S);
        assert_eq!(d.why(), "holding: no utilization reported by the workers yet");
    }
}
