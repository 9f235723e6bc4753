//! The autoscaler on the leader: window tracking in memory, decisions, and
//! proposing them.
//!
//! Every planner tick ([`crate::leader::dispatch::run`], after its ReadIndex barrier)
//! [`tick`] feeds each pool with a policy its current signals (from the
//! liveness observations), decides with [`crate::policy::autoscale::decide`], keeps
//! the latest decision and its explanation per pool (served by `GetPool`),
//! and proposes a scale as `Command::AutoscalePool`. Nothing here is
//! replicated except that command: after a leader change (a new Raft term)
//! every window starts over, and the cooldown comes from the pool record.

use std::collections::HashMap;

use rpool_proto::v1;
use tracing::{debug, info};

use crate::Shared;
use crate::policy::autoscale::{self, PoolFacts, Reported, Signals, Windows};
use crate::replica::ProposeError;
use crate::state::State;
use crate::state::command::Command;
use rpool_proto::clock::unix_ms_now;

/// The latest judgement of one pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub decision: &'static str,
    pub explanation: String,
    pub at_unix_ms: u64,
    pub signals: Signals,
}

impl Status {
    pub fn to_proto(&self) -> v1::AutoscaleStatus {
        v1::AutoscaleStatus {
            decision: self.decision.to_owned(),
            explanation: self.explanation.clone(),
            at_unix_ms: self.at_unix_ms,
            cpu_percent: self.signals.cpu_percent.unwrap_or(0.0),
            memory_percent: self.signals.memory_percent.unwrap_or(0.0),
            pending_pods: self.signals.pending_pods.unwrap_or(0),
        }
    }
}

#[derive(Debug, Default)]
struct Track {
    windows: Windows,
    status: Option<Status>,
}

/// Per-pool windows and latest status, in the leader's memory
/// (`AutoscaleTracker` keyed by pool name).
#[derive(Debug, Default)]
pub struct AutoscaleTracker {
    term: u64,
    pools: HashMap<String, Track>,
}

impl AutoscaleTracker {
    /// The latest judgement of `pool`, if it has a policy and was judged
    /// in this leader's term.
    pub fn status(&self, pool: &str) -> Option<&Status> {
        self.pools.get(pool).and_then(|t| t.status.as_ref())
    }

    /// One tick at `now_ms` in Raft term `term`: observe every pool with a
    /// policy, decide, and return the scale commands to propose (at most
    /// one per pool). Deterministic given its inputs.
    pub fn step(
        &mut self,
        term: u64,
        sm: &State,
        reported: impl Fn(&str) -> Option<Reported>,
        now_ms: u64,
    ) -> Vec<Command> {
        if term != self.term {
            // A new leadership: every window starts over.
            self.term = term;
            self.pools.clear();
        }
        self.pools
            .retain(|name, _| sm.pools().get(name).is_some_and(|p| p.autoscale.policy.is_some()));
        let mut out = Vec::new();
        for (name, pool) in sm.pools() {
            let Some(policy) = pool.autoscale.policy else {
                continue;
            };
            let signals = autoscale::signals(sm, pool, &reported);
            let facts = PoolFacts::of(sm, pool);
            let track = self.pools.entry(name.clone()).or_default();
            track.windows.observe(
                &policy,
                &signals,
                facts.phase == crate::state::pool::PoolPhase::Ready,
                now_ms,
            );
            let decision = autoscale::decide(&policy, &facts, &track.windows, &signals, now_ms);
            track.status = Some(Status {
                decision: decision.kind(),
                explanation: decision.why().to_owned(),
                at_unix_ms: now_ms,
                signals,
            });
            if let Some(command) = decision.command(&facts, now_ms) {
                // The pool changes: judge it afresh once it is ready again.
                track.windows = Windows::default();
                out.push(command);
            }
        }
        out
    }

    /// A proposed scale was refused: say so in the pool's status.
    fn refused(&mut self, pool: &str, error: &str) {
        if let Some(status) = self.pools.get_mut(pool).and_then(|t| t.status.as_mut()) {
            status.decision = "hold";
            status.explanation = format!("holding: the scale was refused: {error}");
        }
    }
}

/// Runs one autoscaler tick on the leader (called by the planner loop).
pub(crate) async fn tick(shared: &Shared) {
    let term = shared.node.status().term;
    let commands = {
        let live = shared.liveness.lock().unwrap_or_else(|e| e.into_inner());
        let reported = |host_id: &str| {
            live.observation(host_id).map(|o| Reported {
                utilization: o.utilization,
                pending_pods: o.pending_pods,
            })
        };
        let mut tracker = shared.autoscale.lock().unwrap_or_else(|e| e.into_inner());
        shared
            .node
            .read(|sm| tracker.step(term, sm, reported, unix_ms_now()))
    };
    for command in commands {
        let Command::AutoscalePool { pool, why, .. } = &command else {
            continue;
        };
        let (pool, why) = (pool.clone(), why.clone());
        match shared.node.propose(command).await {
            Ok(_) => info!(pool = %pool, decision = %why, "autoscaled"),
            Err(ProposeError::Rejected(e)) => {
                debug!(pool = %pool, error = %e, "autoscale refused");
                shared
                    .autoscale
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .refused(&pool, &e.to_string());
            }
            Err(e) => {
                debug!(pool = %pool, error = %e, "autoscale not committed");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The tracker and the autoscaling commands on a real state machine,
    //! driven purely (the planner's commands applied, tasks finished as
    //! agents would): no sockets, no clock.

    use super::*;
    use crate::state::ApplyError;
    use crate::state::command::tests::facts;
    use crate::state::pool::{AutoscalePolicy, JoinSecrets, PoolPhase, PoolSpec, Secret, TaskState};

    const S: u64 = 1_000;
    const T0: u64 = 1_700_000_000_000;

    fn apply(sm: &mut State, command: Command) -> Result<(), ApplyError> {
        let index = sm.applied_index() + 1;
        match sm.plan(index, &command) {
            Ok(change) => {
                sm.commit(change);
                Ok(())
            }
            Err(e) => {
                sm.skip(index);
                Err(e)
            }
        }
    }

    /// Plans and finishes tasks until the pool settles.
    fn settle(sm: &mut State, now: u64) {
        for _ in 0..30 {
            for command in crate::policy::planner::plan(sm, now) {
                let _ = apply(sm, command);
            }
            let pending: Vec<_> = sm
                .tasks()
                .values()
                .filter(|t| t.state == TaskState::Pending)
                .cloned()
                .collect();
            for task in pending {
                let join = matches!(
                    task.kind,
                    crate::state::pool::TaskKind::InitControlPlane
                        | crate::state::pool::TaskKind::RefreshJoinToken
                )
                .then(|| JoinSecrets {
                    control_plane_endpoint: "h1:6443".into(),
                    token: Secret::new("abcdef.0123456789abcdef"),
                    ca_cert_hash: format!("sha256:{}", "0".repeat(64)),
                    certificate_key: Secret::new("1".repeat(64)),
                    token_expires_unix_ms: now + 24 * 3_600_000,
                    certificate_key_expires_unix_ms: now + 2 * 3_600_000,
                });
                let _ = apply(
                    sm,
                    Command::FinishTask {
                        task_id: task.task_id.clone(),
                        attempt: task.attempt,
                        ok: true,
                        error: String::new(),
                        join,
                        kubeconfig: Some(Secret::new("apiVersion: v1")),
                        images: None,
                        at_unix_ms: now,
                    },
                );
            }
            if sm.tasks().is_empty() && sm.pools().get("web").is_some_and(|p| p.phase == PoolPhase::Ready) {
                return;
            }
        }
        panic!("the pool never settled: {:?}", sm.pools().get("web"));
    }

    fn policy() -> AutoscalePolicy {
        AutoscalePolicy {
            min_cores: 16,
            max_cores: 32,
            cpu_target_percent: 70,
            memory_target_percent: 80,
            up_window_ms: 2 * S,
            down_window_ms: 10 * S,
            cooldown_ms: 5 * S,
        }
    }

    /// h1 control plane, h2 worker (16c), h3 free (16c); pool web ready.
    fn world() -> State {
        let mut sm = State::new();
        for id in ["h1", "h2", "h3"] {
            apply(
                &mut sm,
                Command::RegisterHost {
                    host_id: id.into(),
                    agent_version: "0.1.0".into(),
                    facts: facts(id, 16),
                    at_unix_ms: 1,
                },
            )
            .unwrap();
        }
        apply(
            &mut sm,
            Command::CreatePool {
                spec: PoolSpec {
                    name: "web".into(),
                    cores: 16,
                    memory_bytes: 64 << 30,
                    control_planes: 1,
                    kubernetes_version: "v1.32.0".into(),
                    pod_network_cidr: "10.244.0.0/16".into(),
                    service_cidr: "10.96.0.0/12".into(),
                    vip: String::new(),
                    lb_range: String::new(),
                    ..Default::default()
                },
                control_planes: vec!["h1".into()],
                workers: vec!["h2".into()],
                control_plane_endpoint: "h1:6443".into(),
                at_unix_ms: T0,
            },
        )
        .unwrap();
        settle(&mut sm, T0);
        sm
    }

    fn busy(host_id: &str) -> Option<Reported> {
        let utilization = v1::Utilization {
            cpu_percent: 90.0,
            memory_used_bytes: 8 << 30,
            ..Default::default()
        };
        match host_id {
            "h1" => Some(Reported {
                utilization: Some(utilization),
                pending_pods: Some(0),
            }),
            _ => Some(Reported {
                utilization: Some(utilization),
                pending_pods: None,
            }),
        }
    }

    #[test]
    fn busy_workers_grow_the_pool_through_a_replicated_resize_with_an_event() {
        let mut sm = world();
        apply(
            &mut sm,
            Command::SetAutoscale {
                pool: "web".into(),
                policy: Some(policy()),
                at_unix_ms: T0,
            },
        )
        .unwrap();
        let last = sm.events().back().unwrap();
        assert_eq!(last.kind, "autoscale_set");
        assert_eq!(
            last.message,
            "pool web: autoscaling on: 16..=32 worker cores, cpu target 70%, memory target 80%, \
             up-window 2s, down-window 10s, cooldown 5s"
        );
        let mut tracker = AutoscaleTracker::default();
        assert!(tracker.step(1, &sm, busy, T0).is_empty());
        assert_eq!(
            tracker.status("web").unwrap().explanation,
            "holding: cpu 90% > 70% for 0ms of the 2s up-window"
        );
        // A new term restarts the windows.
        assert!(tracker.step(2, &sm, busy, T0 + S).is_empty());
        assert!(tracker.step(2, &sm, busy, T0 + 2 * S).is_empty());
        let commands = tracker.step(2, &sm, busy, T0 + 3 * S);
        assert_eq!(commands.len(), 1, "{commands:?}");
        assert_eq!(tracker.status("web").unwrap().decision, "scale_up");
        for command in commands {
            apply(&mut sm, command).unwrap();
        }
        let pool = sm.pools().get("web").unwrap();
        assert_eq!(pool.phase, PoolPhase::Resizing);
        assert_eq!(pool.spec.cores, 32);
        assert!(pool.members.contains_key("h3"));
        assert_eq!(pool.autoscale.last_scaled_at_unix_ms, T0 + 3 * S);
        let e: Vec<_> = sm.events().iter().rev().take(2).collect();
        assert_eq!(e[1].kind, "autoscale");
        assert_eq!(
            e[1].message,
            "pool web: cpu 90% > 70% for 2s: +1 host h3 (16c/64GiB)"
        );
        assert_eq!(e[1].host_id, "h3");
        assert_eq!(e[0].kind, "pool_resized");

        // While it resizes, nothing more; then at max-cores and cooling down.
        assert!(tracker.step(2, &sm, busy, T0 + 4 * S).is_empty());
        assert_eq!(
            tracker.status("web").unwrap().explanation,
            "holding: pool is resizing"
        );
        settle(&mut sm, T0 + 5 * S);
        assert!(tracker.step(2, &sm, busy, T0 + 6 * S).is_empty());
        assert_eq!(
            tracker.status("web").unwrap().explanation,
            "holding: cooldown 2s left"
        );
        for t in 8..12 {
            assert!(tracker.step(2, &sm, busy, T0 + t * S).is_empty());
        }
        assert_eq!(
            tracker.status("web").unwrap().explanation,
            "holding: at max-cores 32 (cpu 90% > 70% for 2s)"
        );
    }

    #[test]
    fn a_stale_scale_is_refused_and_changes_nothing() {
        let mut sm = world();
        let scale = Command::AutoscalePool {
            pool: "web".into(),
            cores: 32,
            memory_bytes: 128 << 30,
            add: vec!["h3".into()],
            release: vec![],
            why: "pool web: cpu 90% > 70% for 2s: +1 host h3 (16c/64GiB)".into(),
            at_unix_ms: T0,
        };
        // No policy (turned off meanwhile).
        let before = sm.pools().clone();
        let err = apply(&mut sm, scale.clone()).unwrap_err();
        assert_eq!(err.to_string(), "pool web has no autoscaling policy");
        assert_eq!(sm.pools(), &before);
        // Not ready (an admin resize got there first).
        apply(
            &mut sm,
            Command::SetAutoscale {
                pool: "web".into(),
                policy: Some(policy()),
                at_unix_ms: T0,
            },
        )
        .unwrap();
        apply(
            &mut sm,
            Command::SetPoolPhase {
                pool: "web".into(),
                phase: PoolPhase::Resizing,
                reason: "admin".into(),
                at_unix_ms: T0,
            },
        )
        .unwrap();
        let before = sm.pools().clone();
        let err = apply(&mut sm, scale).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pool web is resizing; the autoscaler acts only on ready pools"
        );
        assert_eq!(sm.pools(), &before);
        // Off again: the policy goes, the event says so.
        apply(
            &mut sm,
            Command::SetAutoscale {
                pool: "web".into(),
                policy: None,
                at_unix_ms: T0,
            },
        )
        .unwrap();
        assert_eq!(sm.pools()["web"].autoscale.policy, None);
        assert_eq!(sm.events().back().unwrap().message, "pool web: autoscaling off");
    }

    #[test]
    fn records_without_autoscaling_still_load() {
        let sm = world();
        let mut json = serde_json::to_value(&sm.pools()["web"]).unwrap();
        json.as_object_mut().unwrap().remove("autoscale");
        let pool: crate::state::pool::PoolRecord = serde_json::from_value(json).unwrap();
        assert_eq!(pool.autoscale, Default::default());
    }
}
