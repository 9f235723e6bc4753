//! What-if: what the leader's planner would do if some hosts went down now.
//! Pure, like the planner it runs: a function of (state, `[healing]`
//! config, now, the hosts assumed down) → an [`Answer`].
//!
//! Nothing here re-decides healing. On a copy of the state, the named hosts
//! are marked `down` at `now` (as liveness would once they were silent for
//! `down_after_ms`); the clock moves on by `settle_ms`; then the leader's
//! own [`planner::plan_with`] runs round after round on the copy, its
//! commands applied to the copy, and the tasks it issues to hosts that are
//! still ready "run" successfully, as their agents would — until a round
//! has nothing left to do. What the planner proposed along the way
//! (`ReplaceMember`, storm and healing alerts) is the answer: which members
//! are replaced by which fleet hosts (the placement healing chooses), what
//! is held back (storm, lost etcd quorum, nothing fits) and where each
//! affected pool ends up. The copy is then dropped; the real state is
//! never touched.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::HealingConfig;
use crate::policy::{healing, planner};
use crate::state::State;
use crate::state::command::{Command, HostState};
use crate::state::pool::{MemberState, PoolRecord, Role, STORM, Secret, TaskKind, TaskRecord, TaskState};

/// Planner rounds simulated at most (each round replaces at most one
/// member per pool; the cleanup of a control plane takes a few).
pub const MAX_ROUNDS: usize = 200;

/// Why a down member would not be replaced.
pub const HELD_STORM: &str = "storm";
pub const HELD_QUORUM: &str = "quorum_lost";
pub const HELD_NO_FIT: &str = "no_replacement";
pub const HELD_DISABLED: &str = "healing_disabled";
pub const HELD_WAITING: &str = "waiting";

/// What would happen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// Host ids assumed down (sorted, each once).
    pub hosts_down: Vec<String>,
    /// The storm guard's reason for holding every replacement back, if it
    /// would.
    pub storm: Option<String>,
    /// Pools with a member on a host assumed down, by name.
    pub pools: Vec<PoolImpact>,
    /// Replacements in the order the planner would decide them.
    pub replacements: Vec<Replacement>,
    /// Down members left in their pool, not replaced.
    pub held_back: Vec<HeldBack>,
}

/// One affected pool: right after the failure, and once the planner is
/// done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolImpact {
    pub pool: String,
    /// Host ids of its members assumed down.
    pub members_down: Vec<String>,
    /// Control planes of the pool, and how many of them are down.
    pub control_planes: usize,
    pub control_planes_down: usize,
    /// No majority of the control planes joined and ready: etcd has no
    /// quorum (healing's own rule), so no control plane is replaced.
    pub etcd_quorum_lost: bool,
    pub cores_requested: u64,
    pub memory_requested: u64,
    /// Workers' totals left without the down ones.
    pub worker_cores_left: u64,
    pub worker_memory_left: u64,
    /// `worker_*_left` below the request.
    pub below_request: bool,
    /// Workers' totals once the replacements joined.
    pub worker_cores_after: u64,
    pub worker_memory_after: u64,
    pub below_request_after: bool,
    /// Phase and its reason once the planner is done.
    pub phase_after: String,
    pub phase_reason_after: String,
}

/// A down member and the fleet hosts that would replace it (none when the
/// other workers still cover the request: its node is only removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    pub pool: String,
    pub host_id: String,
    pub role: Role,
    pub replacements: Vec<String>,
    /// The planner's own sentence (the `host_replacing` event's text).
    pub why: String,
}

/// A down member that would stay in its pool, not replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBack {
    pub pool: String,
    pub host_id: String,
    pub role: Role,
    /// One of the `HELD_*` names.
    pub reason: &'static str,
    /// The alert rpool would raise (or why it waits).
    pub message: String,
}

/// What the planner would do with `down` (host ids known to the state;
/// unknown ones are ignored, the caller validates) marked down at `now`.
/// `copy` is a copy of the leader's state, changed here and dropped.
pub fn simulate(copy: State, config: &HealingConfig, now: u64, down: &[String]) -> Answer {
    let mut sim = copy;
    let hosts_down: Vec<String> = down
        .iter()
        .filter(|id| sim.host(id).is_some())
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for id in &hosts_down {
        apply(
            &mut sim,
            &Command::SetHostState {
                host_id: id.clone(),
                state: HostState::Down,
                reason: "what-if: assumed down".into(),
                at_unix_ms: now,
            },
        );
    }
    let down_set: BTreeSet<&str> = hosts_down.iter().map(String::as_str).collect();
    let affected: Vec<String> = sim
        .pools()
        .values()
        .filter(|p| p.members.keys().any(|h| down_set.contains(h.as_str())))
        .map(|p| p.spec.name.clone())
        .collect();
    let mut impacts: BTreeMap<String, PoolImpact> = affected
        .iter()
        .filter_map(|name| sim.pools().get(name))
        .map(|p| (p.spec.name.clone(), impact_now(&sim, p, &down_set)))
        .collect();

    // The planner, as the leader runs it, once the hosts settled.
    let t = now.saturating_add(config.settle_ms);
    let storm = if config.enabled {
        healing::storm(&sim, config, t)
    } else {
        None
    };
    let mut replacements = Vec::new();
    let mut alerts: BTreeMap<String, (String, String)> = BTreeMap::new();
    for _ in 0..MAX_ROUNDS {
        let commands = planner::plan_with(&sim, t, config);
        let ran = commands.is_empty() && !runnable(&sim);
        if ran {
            break;
        }
        for command in commands {
            match &command {
                Command::ReplaceMember {
                    pool,
                    host_id,
                    replacements: with,
                    why,
                    ..
                } => {
                    let role = sim
                        .pools()
                        .get(pool)
                        .and_then(|p| p.members.get(host_id))
                        .map_or(Role::Worker, |m| m.role);
                    replacements.push(Replacement {
                        pool: pool.clone(),
                        host_id: host_id.clone(),
                        role,
                        replacements: with.clone(),
                        why: why.clone(),
                    });
                }
                Command::Alert {
                    pool, kind, message, ..
                } if !pool.is_empty() && kind != STORM => {
                    alerts.insert(pool.clone(), (kind.clone(), message.clone()));
                }
                _ => {}
            }
            apply(&mut sim, &command);
        }
        run_tasks(&mut sim, t);
    }

    let mut held_back = Vec::new();
    for (name, impact) in &mut impacts {
        let Some(pool) = sim.pools().get(name) else {
            impact.phase_after = "destroyed".into();
            continue;
        };
        let (cores, memory) = live_worker_totals(&sim, pool);
        impact.worker_cores_after = cores;
        impact.worker_memory_after = memory;
        impact.below_request_after = cores < pool.spec.cores || memory < pool.spec.memory_bytes;
        impact.phase_after = pool.phase.as_str().to_owned();
        impact.phase_reason_after = pool.phase_reason.clone();
        for member in pool.members.values() {
            if !healing::member_down(&sim, member) {
                continue;
            }
            let (reason, message) = if !config.enabled {
                (
                    HELD_DISABLED,
                    "[healing] enabled = false: nothing is replaced".to_owned(),
                )
            } else if let Some(why) = &storm {
                (HELD_STORM, why.clone())
            } else {
                match alerts.get(name) {
                    Some((kind, message)) if kind == HELD_QUORUM => (HELD_QUORUM, message.clone()),
                    Some((kind, message)) if kind == HELD_NO_FIT => (HELD_NO_FIT, message.clone()),
                    _ => (
                        HELD_WAITING,
                        format!(
                            "pool {name}: waiting (one control plane at a time, or more than {MAX_ROUNDS} \
                             planner rounds)"
                        ),
                    ),
                }
            };
            held_back.push(HeldBack {
                pool: name.clone(),
                host_id: member.host_id.clone(),
                role: member.role,
                reason,
                message,
            });
        }
    }
    Answer {
        hosts_down,
        storm,
        pools: impacts.into_values().collect(),
        replacements,
        held_back,
    }
}

/// The pool right after its down members went down.
fn impact_now(sim: &State, pool: &PoolRecord, down: &BTreeSet<&str>) -> PoolImpact {
    let live: Vec<_> = pool
        .members
        .values()
        .filter(|m| !matches!(m.state, MemberState::Replaced { .. }))
        .collect();
    let cps: Vec<_> = live.iter().filter(|m| m.role == Role::ControlPlane).collect();
    let ready_cps = cps
        .iter()
        .filter(|m| {
            m.state == MemberState::Joined
                && sim.host(&m.host_id).is_some_and(|h| h.state == HostState::Ready)
        })
        .count();
    let left = live_worker_totals(sim, pool);
    PoolImpact {
        pool: pool.spec.name.clone(),
        members_down: live
            .iter()
            .filter(|m| down.contains(m.host_id.as_str()))
            .map(|m| m.host_id.clone())
            .collect(),
        control_planes: cps.len(),
        control_planes_down: cps.iter().filter(|m| down.contains(m.host_id.as_str())).count(),
        etcd_quorum_lost: !cps.is_empty() && ready_cps * 2 <= cps.len(),
        cores_requested: pool.spec.cores,
        memory_requested: pool.spec.memory_bytes,
        worker_cores_left: left.0,
        worker_memory_left: left.1,
        below_request: left.0 < pool.spec.cores || left.1 < pool.spec.memory_bytes,
        ..PoolImpact::default()
    }
}

/// Cores and memory of the pool's workers that count
/// ([`planner::worker_totals`]) and whose host is not down.
fn live_worker_totals(sim: &State, pool: &PoolRecord) -> (u64, u64) {
    let (cores, memory) = planner::worker_totals(sim, pool);
    pool.members
        .values()
        .filter(|m| m.role == Role::Worker && healing::member_down(sim, m))
        .filter(|m| !matches!(m.state, MemberState::Leaving { .. }))
        .filter_map(|m| sim.host(&m.host_id))
        .fold((cores, memory), |(c, mem), h| {
            (
                c.saturating_sub(u64::from(h.facts.inventory.logical_cores)),
                mem.saturating_sub(h.facts.inventory.memory_total_bytes),
            )
        })
}

/// Applies `command` at the copy's next index; a refused one changes
/// nothing (as on the leader, where the next round plans again).
fn apply(sim: &mut State, command: &Command) {
    let index = sim.applied_index() + 1;
    let _ = sim.apply(index, command);
}

fn answers(sim: &State, task: &TaskRecord) -> bool {
    task.state == TaskState::Pending
        && sim
            .host(&task.host_id)
            .is_some_and(|h| h.state == HostState::Ready)
}

/// A pending task on a ready host (its agent would answer).
fn runnable(sim: &State) -> bool {
    sim.tasks().values().any(|t| answers(sim, t))
}

/// Finishes every pending task of a ready host successfully, as its agent
/// would. A token refresh keeps the pool's secrets with fresh expiries
/// (the copy is dropped; nothing here leaves it).
fn run_tasks(sim: &mut State, now: u64) {
    let pending: Vec<TaskRecord> = sim
        .tasks()
        .values()
        .filter(|t| answers(sim, t))
        .cloned()
        .collect();
    for task in pending {
        let join = match task.kind {
            TaskKind::RefreshJoinToken | TaskKind::InitControlPlane => sim
                .pools()
                .get(&task.pool)
                .and_then(|p| p.join.clone())
                .map(|mut j| {
                    j.token_expires_unix_ms = now + 24 * 3_600_000;
                    j.certificate_key_expires_unix_ms = now + 2 * 3_600_000;
                    j
                }),
            _ => None,
        };
        apply(
            sim,
            &Command::FinishTask {
                task_id: task.task_id.clone(),
                attempt: task.attempt,
                ok: true,
                error: String::new(),
                join,
                kubeconfig: None::<Secret>,
                at_unix_ms: now,
                images: None,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{GIB, World};
    use crate::state::pool::PoolPhase;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// web: h1 control plane, workers w1 + w2 (8 cores each) for 16 cores;
    /// spares s1 (8), s2 (4), s3 (16).
    fn workers_world() -> World {
        let mut w = World::new(&[
            ("h1", "a", 4),
            ("w1", "a", 8),
            ("w2", "b", 8),
            ("s1", "c", 8),
            ("s2", "c", 4),
            ("s3", "c", 16),
            ("s4", "d", 4),
            ("s5", "d", 4),
        ]);
        w.create(&["h1"], &["w1", "w2"], 16, 2 * 64 * GIB);
        w.settle_idle();
        w
    }

    #[test]
    fn a_dead_worker_is_replaced_by_the_host_the_planner_then_really_chooses() {
        let mut w = workers_world();
        let answer = simulate(w.sm.clone(), &w.config, w.now, &ids(&["w2"]));
        assert_eq!(answer.hosts_down, ids(&["w2"]));
        assert_eq!(answer.storm, None);
        assert_eq!(answer.held_back, vec![]);
        let [pool] = answer.pools.as_slice() else {
            panic!("{answer:?}")
        };
        assert_eq!((pool.worker_cores_left, pool.below_request), (8, true));
        assert_eq!((pool.control_planes_down, pool.etcd_quorum_lost), (0, false));
        assert_eq!(pool.members_down, ids(&["w2"]));
        assert_eq!((pool.worker_cores_after, pool.below_request_after), (16, false));
        assert_eq!(pool.phase_after, "ready", "{}", pool.phase_reason_after);
        let [r] = answer.replacements.as_slice() else {
            panic!("{answer:?}")
        };
        assert_eq!((r.host_id.as_str(), r.role), ("w2", Role::Worker));
        assert_eq!(r.replacements, ids(&["s1"]), "the exact fit");

        // The same twice (deterministic), and what the real planner does.
        assert_eq!(simulate(w.sm.clone(), &w.config, w.now, &ids(&["w2"])), answer);
        w.set("w2", HostState::Down);
        assert_eq!(w.plan(), vec!["replace w2 by s1".to_owned()]);
    }

    #[test]
    fn two_workers_of_a_pool_down_are_held_back_by_the_storm_guard() {
        let mut w = workers_world();
        let answer = simulate(w.sm.clone(), &w.config, w.now, &ids(&["w1", "w2"]));
        let storm = answer.storm.clone().expect("a storm");
        assert!(storm.contains("members of pool web"), "{storm}");
        assert!(answer.replacements.is_empty(), "{answer:?}");
        let held: Vec<(&str, &str)> = answer
            .held_back
            .iter()
            .map(|h| (h.host_id.as_str(), h.reason))
            .collect();
        assert_eq!(held, vec![("w1", HELD_STORM), ("w2", HELD_STORM)]);
        let pool = &answer.pools[0];
        assert_eq!((pool.worker_cores_left, pool.below_request), (0, true));
        assert!(pool.below_request_after);

        // The real planner agrees: one storm alert, no replacement.
        w.set("w1", HostState::Down);
        w.set("w2", HostState::Down);
        assert_eq!(w.plan(), vec!["alert storm".to_owned()]);

        // Without the guard (shares at 100 %) both would be replaced.
        let mut lax = w.config;
        lax.storm_fleet_share = 1.0;
        lax.storm_pool_share = 1.0;
        let fresh = workers_world();
        let answer = simulate(fresh.sm.clone(), &lax, fresh.now, &ids(&["w1", "w2"]));
        assert_eq!(answer.storm, None);
        assert_eq!(answer.replacements.len(), 2, "{answer:?}");
        assert!(!answer.pools[0].below_request_after, "{answer:?}");
    }

    /// db: control planes h1 h2 h3 (zones a b c), worker w1; spares.
    fn control_plane_world() -> World {
        let mut w = World::new(&[
            ("h1", "a", 4),
            ("h2", "b", 4),
            ("h3", "c", 4),
            ("w1", "a", 16),
            ("s1", "b", 4),
            ("s2", "d", 2),
            ("s3", "d", 8),
            ("s4", "e", 8),
            ("s5", "e", 8),
            ("s6", "f", 8),
        ]);
        w.vip = "198.51.100.7".into();
        w.create(&["h1", "h2", "h3"], &["w1"], 8, 64 * GIB);
        w.settle_idle();
        w
    }

    #[test]
    fn two_control_planes_of_three_down_lose_etcd_quorum_and_nothing_is_replaced() {
        let mut w = control_plane_world();
        // Lax storm shares: only the quorum rule holds the pool back here.
        w.config.storm_pool_share = 1.0;
        w.config.storm_fleet_share = 1.0;
        let answer = simulate(w.sm.clone(), &w.config, w.now, &ids(&["h2", "h3"]));
        let pool = &answer.pools[0];
        assert_eq!((pool.control_planes, pool.control_planes_down), (3, 2));
        assert!(pool.etcd_quorum_lost);
        assert!(!pool.below_request, "the worker is alive");
        assert!(answer.replacements.is_empty(), "{answer:?}");
        assert_eq!(answer.held_back.len(), 2);
        assert!(
            answer.held_back.iter().all(|h| h.reason == HELD_QUORUM),
            "{answer:?}"
        );
        assert!(
            answer.held_back[0].message.contains("etcd quorum lost"),
            "{}",
            answer.held_back[0].message
        );
        assert_eq!(pool.phase_after, PoolPhase::Degraded.as_str());
    }

    #[test]
    fn one_control_plane_down_is_replaced_in_its_zone_and_the_pool_is_whole_again() {
        let w = control_plane_world();
        let answer = simulate(w.sm.clone(), &w.config, w.now, &ids(&["h2"]));
        let pool = &answer.pools[0];
        assert!(!pool.etcd_quorum_lost);
        let [r] = answer.replacements.as_slice() else {
            panic!("{answer:?}")
        };
        assert_eq!(r.role, Role::ControlPlane);
        assert_eq!(r.replacements, ids(&["s2"]), "an empty zone's smallest host");
        assert!(answer.held_back.is_empty(), "{answer:?}");
        assert_eq!(pool.phase_after, "ready", "{}", pool.phase_reason_after);
    }

    #[test]
    fn a_zone_down_replaces_each_of_its_members_one_after_the_other() {
        // Zone a holds the control plane h1 and the worker w1 of db; ten
        // hosts, so two silent is no fleet storm, and 2 of 4 members is one
        // at the default 50 %: with a 0.6 pool share both are replaced.
        let mut w = control_plane_world();
        w.config.storm_pool_share = 0.6;
        let zone_a: Vec<String> =
            w.sm.hosts()
                .values()
                .filter(|h| h.facts.zone == "a")
                .map(|h| h.host_id.clone())
                .collect();
        assert_eq!(zone_a, ids(&["h1", "w1"]));
        let answer = simulate(w.sm.clone(), &w.config, w.now, &zone_a);
        assert_eq!(answer.storm, None);
        let mut replaced: Vec<(&str, Vec<String>)> = answer
            .replacements
            .iter()
            .map(|r| (r.host_id.as_str(), r.replacements.clone()))
            .collect();
        replaced.sort();
        assert_eq!(
            replaced,
            vec![("h1", ids(&["s2"])), ("w1", ids(&["s3"]))],
            "{answer:?}"
        );
        assert!(!answer.pools[0].below_request_after);
        // The default pool share would call it a storm.
        let strict = control_plane_world();
        let answer = simulate(strict.sm.clone(), &strict.config, strict.now, &zone_a);
        assert!(answer.storm.is_some(), "{answer:?}");
        assert_eq!(answer.held_back.len(), 2);
    }

    #[test]
    fn unknown_hosts_are_ignored_and_a_spare_down_affects_no_pool() {
        let w = workers_world();
        let answer = simulate(w.sm.clone(), &w.config, w.now, &ids(&["s5", "nope", "s5"]));
        assert_eq!(answer.hosts_down, ids(&["s5"]));
        assert!(answer.pools.is_empty() && answer.replacements.is_empty() && answer.held_back.is_empty());
        assert_eq!(answer.storm, None);
    }
}
