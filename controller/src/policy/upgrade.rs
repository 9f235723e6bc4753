//! A pool's Kubernetes upgrade, planned: which member next, which step.
//! Pure like the planner it is part of (time and state are arguments).
//!
//! kubeadm's order (kubernetes.io "Upgrading kubeadm clusters"): the
//! first control plane runs `kubeadm upgrade plan` and `kubeadm upgrade
//! apply vX.Y.Z`, the other control planes `kubeadm upgrade node`, then
//! the workers `kubeadm upgrade node`; each node is drained before its
//! kubelet restarts on the new version and uncordoned after. rpool does
//! that one member at a time for control planes and `max_unavailable`
//! at a time for workers:
//!
//! 1. `drain_node` (from a joined control plane: kubectl runs there),
//! 2. `upgrade_node` on the member (the agent checks the installed
//!    kubeadm is the target, runs kubeadm, restarts the kubelet),
//! 3. `uncordon_node` (from a joined control plane).
//!
//! Issuing the drain puts the member in flight and each finished step
//! moves it on (`crate::state::pool_apply::upgrade`), so the progress is
//! replicated and a new leader issues the next step where the old one
//! stopped. Nothing is started while members join or leave (a
//! replacement joins first, at [`PoolRecord::join_version`]), and
//! nothing at all once a step failed for good: the pool is `degraded`
//! until an admin resumes.

use crate::state::State;
use crate::state::pool::{
    MAX_TASK_ATTEMPTS, Member, MemberState, PoolPhase, PoolRecord, Role, TaskKind, TaskRecord, TaskState,
};
use crate::state::pool_apply::upgrade::{control_planes_done, is_rollout_task};

/// Whether `host_id` is in the middle of an upgrade step that is still
/// going (healing leaves it alone; a stopped upgrade does not hold it).
pub fn in_flight(pool: &PoolRecord, host_id: &str) -> bool {
    pool.upgrade
        .as_ref()
        .is_some_and(|r| r.steps.contains_key(host_id))
        && pool.phase != PoolPhase::Degraded
}

/// The upgrade's next tasks for `pool` through `issue(host_id, kind)`;
/// `runner` is the joined control plane kubectl runs on.
pub fn plan(
    _state: &State,
    pool: &PoolRecord,
    tasks: &[&TaskRecord],
    runner: Option<&str>,
    issue: &mut dyn FnMut(&str, TaskKind),
) {
    let Some(rollout) = &pool.upgrade else {
        return;
    };
    if matches!(pool.phase, PoolPhase::Degraded | PoolPhase::Deleting) {
        return;
    }
    let stopped = tasks
        .iter()
        .any(|t| t.state == TaskState::Failed && t.attempt >= MAX_TASK_ATTEMPTS && is_rollout_task(pool, t));
    let moving = pool.members.values().any(|m| m.state != MemberState::Joined);
    let Some(runner) = runner else {
        return;
    };
    if stopped {
        return;
    }
    let exists =
        |host_id: &str, kind: &TaskKind| tasks.iter().any(|t| t.host_id == host_id && t.kind == *kind);
    let exists_anywhere = |kind: &TaskKind| tasks.iter().any(|t| t.kind == *kind);
    let control_plane_at_target = pool
        .members
        .values()
        .any(|m| m.role == Role::ControlPlane && pool.member_version(m) == rollout.to);

    // Members in flight: their next step.
    let mut in_flight = 0u32;
    for (host_id, step) in &rollout.steps {
        let Some(member) = pool
            .members
            .get(host_id)
            .filter(|m| m.state == MemberState::Joined)
        else {
            continue;
        };
        in_flight += 1;
        let target_node = member.node_name.clone();
        match step {
            crate::state::pool::UpgradeStep::Draining => {
                let kind = TaskKind::DrainNode { target_node };
                if !exists_anywhere(&kind) {
                    issue(runner, kind);
                }
            }
            crate::state::pool::UpgradeStep::Drained => {
                let kind = TaskKind::UpgradeNode {
                    version: rollout.to.clone(),
                    apply: member.role == Role::ControlPlane && !control_plane_at_target,
                };
                if !tasks
                    .iter()
                    .any(|t| t.host_id == *host_id && matches!(t.kind, TaskKind::UpgradeNode { .. }))
                {
                    issue(host_id, kind);
                }
            }
            crate::state::pool::UpgradeStep::Upgraded => {
                let kind = TaskKind::UncordonNode { target_node };
                if !exists_anywhere(&kind) {
                    issue(runner, kind);
                }
            }
        }
    }
    if moving {
        return; // joins and cleanups first
    }

    // Members to start: control planes one at a time, first; then
    // workers, `max_unavailable` at a time.
    let waiting =
        |m: &&Member| pool.member_version(m) != rollout.to && !rollout.steps.contains_key(&m.host_id);
    let mut next: Vec<&Member> = if !control_planes_done(pool) {
        if in_flight > 0 {
            return;
        }
        pool.members
            .values()
            .filter(|m| m.role == Role::ControlPlane)
            .filter(waiting)
            .min_by_key(|m| m.order)
            .into_iter()
            .collect()
    } else {
        let mut workers: Vec<&Member> = pool
            .members
            .values()
            .filter(|m| m.role == Role::Worker)
            .filter(waiting)
            .collect();
        workers.sort_by_key(|m| m.order);
        workers.truncate(rollout.max_unavailable.saturating_sub(in_flight) as usize);
        workers
    };
    for member in next.drain(..) {
        let kind = TaskKind::DrainNode {
            target_node: member.node_name.clone(),
        };
        if !exists(runner, &kind) {
            issue(runner, kind);
        }
    }
}

/// One step of an upgrade as `--dry-run` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    /// 1, 2, ...: members with the same number go at the same time.
    pub wave: u32,
    pub host_id: String,
    pub node_name: String,
    pub role: Role,
    pub from: String,
    pub to: String,
    /// What runs, in order, e.g. "drain; kubeadm upgrade plan v1.33.1 &&
    /// kubeadm upgrade apply v1.33.1 --yes; restart kubelet; uncordon".
    pub actions: String,
}

/// The whole upgrade of `pool` to `to`, in order, as it would run now
/// with `max_unavailable` workers at a time (members already at `to` are
/// left out).
pub fn preview(pool: &PoolRecord, to: &str, max_unavailable: u32) -> Vec<PlannedStep> {
    let mut out = Vec::new();
    let mut cps: Vec<&Member> = pool
        .members
        .values()
        .filter(|m| m.role == Role::ControlPlane && m.state == MemberState::Joined)
        .collect();
    cps.sort_by_key(|m| m.order);
    let mut applied = cps.iter().any(|m| pool.member_version(m) == to);
    let mut wave = 0;
    for m in cps.into_iter().filter(|m| pool.member_version(m) != to) {
        wave += 1;
        let kubeadm = if applied {
            "kubeadm upgrade node".to_owned()
        } else {
            applied = true;
            format!("kubeadm upgrade plan {to}; kubeadm upgrade apply {to} --yes")
        };
        out.push(step(pool, m, wave, to, &kubeadm));
    }
    let mut workers: Vec<&Member> = pool
        .members
        .values()
        .filter(|m| m.role == Role::Worker && m.state == MemberState::Joined)
        .filter(|m| pool.member_version(m) != to)
        .collect();
    workers.sort_by_key(|m| m.order);
    for batch in workers.chunks(max_unavailable.max(1) as usize) {
        wave += 1;
        for m in batch {
            out.push(step(pool, m, wave, to, "kubeadm upgrade node"));
        }
    }
    out
}

fn step(pool: &PoolRecord, m: &Member, wave: u32, to: &str, kubeadm: &str) -> PlannedStep {
    PlannedStep {
        wave,
        host_id: m.host_id.clone(),
        node_name: m.node_name.clone(),
        role: m.role,
        from: pool.member_version(m).to_owned(),
        to: to.to_owned(),
        actions: format!(
            "kubectl drain {node}; check kubeadm version is {to}; {kubeadm}; systemctl restart kubelet; kubectl uncordon {node}",
            node = m.node_name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{GIB, POOL, World};
    use crate::state::command::Command;
    use crate::state::pool::UpgradeStep;

    fn pool_of(cps: &[&str], workers: &[&str]) -> World {
        let hosts: Vec<(&str, &str, u32)> = cps.iter().chain(workers).map(|h| (*h, "a", 8)).collect();
        let mut w = World::new(&hosts);
        w.create(cps, workers, 8, GIB);
        w.settle_idle();
        assert_eq!(w.pool().phase, PoolPhase::Ready);
        w
    }

    fn upgrade(version: &str, max_unavailable: u32) -> Command {
        Command::UpgradePool {
            pool: POOL.into(),
            version: version.into(),
            max_unavailable,
            at_unix_ms: 2_000,
        }
    }

    /// Plans once; the pending tasks as "kind target@host", sorted.
    fn step(w: &mut World) -> Vec<String> {
        w.plan();
        let mut out: Vec<String> =
            w.sm.tasks()
                .values()
                .filter(|t| t.state == TaskState::Pending)
                .map(|t| match &t.kind {
                    TaskKind::DrainNode { target_node } | TaskKind::UncordonNode { target_node } => {
                        format!("{} {target_node}@{}", t.kind.as_str(), t.host_id)
                    }
                    TaskKind::UpgradeNode { version, apply } => {
                        format!(
                            "{} {version}{}@{}",
                            t.kind.as_str(),
                            if *apply { " apply" } else { "" },
                            t.host_id
                        )
                    }
                    other => format!("{}@{}", other.as_str(), t.host_id),
                })
                .collect();
        out.sort();
        out
    }

    #[test]
    fn control_planes_go_first_one_at_a_time_then_workers_with_drain_upgrade_uncordon() {
        let mut w = pool_of(&["h1", "h2", "h3"], &["w1", "w2"]);
        w.apply(upgrade("v1.33.1", 1));
        assert_eq!(w.pool().phase, PoolPhase::Upgrading);
        let mut seen = Vec::new();
        for _ in 0..40 {
            let tasks = step(&mut w);
            if tasks.is_empty() {
                break;
            }
            seen.push(tasks.join(", "));
            w.run_tasks();
        }
        let expected = [
            "drain_node h1@h1",
            "upgrade_node v1.33.1 apply@h1",
            "uncordon_node h1@h1",
            "drain_node h2@h1",
            "upgrade_node v1.33.1@h2",
            "uncordon_node h2@h1",
            "drain_node h3@h1",
            "upgrade_node v1.33.1@h3",
            "uncordon_node h3@h1",
            "drain_node w1@h1",
            "upgrade_node v1.33.1@w1",
            "uncordon_node w1@h1",
            "drain_node w2@h1",
            "upgrade_node v1.33.1@w2",
            "uncordon_node w2@h1",
        ];
        assert_eq!(seen, expected);
        let pool = w.pool();
        assert!(pool.upgrade.is_none());
        assert_eq!(pool.spec.kubernetes_version, "v1.33.1");
        assert!(pool.members.values().all(|m| m.version == "v1.33.1"));
        assert_eq!(pool.phase, PoolPhase::Ready, "{}", pool.phase_reason);
        let kinds: Vec<&str> = w.sm.events().iter().map(|e| e.kind.as_str()).collect();
        assert!(kinds.contains(&"upgrade_started") && kinds.contains(&"upgrade_done"));
    }

    #[test]
    fn max_unavailable_drains_that_many_workers_at_once_after_the_control_plane() {
        let mut w = pool_of(&["h1"], &["w1", "w2", "w3"]);
        w.apply(upgrade("v1.33.0", 2));
        for _ in 0..3 {
            step(&mut w);
            w.run_tasks();
        }
        assert_eq!(w.pool().members["h1"].version, "v1.33.0");
        assert_eq!(step(&mut w), vec!["drain_node w1@h1", "drain_node w2@h1"]);
        w.run_tasks();
        assert_eq!(
            step(&mut w),
            vec!["upgrade_node v1.33.0@w1", "upgrade_node v1.33.0@w2"]
        );
        w.run_tasks();
        step(&mut w);
        w.run_tasks();
        assert_eq!(step(&mut w), vec!["drain_node w3@h1"]);
    }

    #[test]
    fn a_failing_node_stops_the_upgrade_degraded_and_the_same_command_resumes_it() {
        let mut w = pool_of(&["h1"], &["w1", "w2"]);
        w.apply(upgrade("v1.33.0", 1));
        for _ in 0..3 {
            step(&mut w);
            w.run_tasks();
        }
        assert_eq!(step(&mut w), vec!["drain_node w1@h1"]);
        w.run_tasks();
        // w1's kubeadm is still the old one: every attempt fails.
        for attempt in 1..=MAX_TASK_ATTEMPTS {
            let tasks = step(&mut w);
            assert_eq!(tasks, vec!["upgrade_node v1.33.0@w1"], "attempt {attempt}");
            let task =
                w.sm.tasks()
                    .values()
                    .find(|t| t.state == TaskState::Pending)
                    .unwrap()
                    .clone();
            w.apply(Command::FinishTask {
                task_id: task.task_id,
                attempt: task.attempt,
                ok: false,
                error: "host w1: kubeadm is v1.32.4, not v1.33.0".into(),
                join: None,
                kubeconfig: None,
                at_unix_ms: w.now,
                images: None,
            });
            w.now += 60_000;
        }
        let pool = w.pool();
        assert_eq!(pool.phase, PoolPhase::Degraded);
        assert!(
            pool.phase_reason.starts_with(
                "upgrade to v1.33.0 stopped: upgrade_node on w1 failed 3 times: host w1: kubeadm is v1.32.4"
            ),
            "{}",
            pool.phase_reason
        );
        assert!(
            pool.phase_reason.ends_with("rpoolctl pool upgrade web --resume`"),
            "{}",
            pool.phase_reason
        );
        assert!(step(&mut w).is_empty(), "a stopped upgrade issues nothing");
        assert_eq!(w.pool().phase, PoolPhase::Degraded, "and stays degraded");
        // Another version is refused while this one is unfinished.
        let refused =
            w.sm.apply(w.sm.applied_index() + 1, &upgrade("v1.33.1", 1))
                .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("finish or resume that upgrade first"),
            "{refused}"
        );
        w.apply(upgrade("v1.33.0", 1));
        assert_eq!(w.pool().phase, PoolPhase::Upgrading);
        assert_eq!(
            w.pool().upgrade.as_ref().unwrap().steps["w1"],
            UpgradeStep::Drained
        );
        assert_eq!(step(&mut w), vec!["upgrade_node v1.33.0@w1"]);
        w.run_tasks();
        w.settle();
        assert_eq!(w.pool().phase, PoolPhase::Ready, "{}", w.pool().phase_reason);
        assert_eq!(w.pool().spec.kubernetes_version, "v1.33.0");
    }

    #[test]
    fn skips_downgrades_and_unready_pools_are_refused_and_change_nothing() {
        let mut w = pool_of(&["h1"], &["w1"]);
        let before = w.sm.applied_index();
        let err =
            |w: &mut World, c: Command| w.sm.apply(w.sm.applied_index() + 1, &c).unwrap_err().to_string();
        let skip = err(&mut w, upgrade("v1.34.0", 1));
        assert!(skip.contains("not supported"), "{skip}");
        let down = err(&mut w, upgrade("v1.31.5", 1));
        assert!(down.contains("downgrades are not supported"), "{down}");
        let zero = err(&mut w, upgrade("v1.33.0", 0));
        assert!(
            zero.contains("max_unavailable: 0 is out of range (accepted 1..=100)"),
            "{zero}"
        );
        assert_eq!(w.sm.applied_index(), before);
        assert!(w.pool().upgrade.is_none());
        // Not ready: refused.
        w.apply(Command::SetPoolPhase {
            pool: POOL.into(),
            phase: PoolPhase::Resizing,
            reason: "test".into(),
            at_unix_ms: 3_000,
        });
        let busy = err(&mut w, upgrade("v1.33.0", 1));
        assert!(busy.contains("an upgrade starts only from ready"), "{busy}");
    }

    #[test]
    fn a_replacement_joins_at_the_old_version_until_the_control_planes_run_the_new_one() {
        let mut w = pool_of(&["h1"], &["w1"]);
        w.apply(upgrade("v1.33.0", 1));
        assert_eq!(w.pool().join_version(), "v1.32.0");
        for _ in 0..3 {
            step(&mut w);
            w.run_tasks();
        }
        assert_eq!(w.pool().join_version(), "v1.33.0");
    }

    #[test]
    fn the_preview_lists_the_waves_in_order() {
        let w = pool_of(&["h1", "h2"], &["w1", "w2", "w3"]);
        let steps = preview(w.pool(), "v1.33.0", 2);
        let waves: Vec<(u32, &str)> = steps.iter().map(|s| (s.wave, s.node_name.as_str())).collect();
        assert_eq!(waves, vec![(1, "h1"), (2, "h2"), (3, "w1"), (3, "w2"), (4, "w3")]);
        assert!(
            steps[0]
                .actions
                .contains("kubeadm upgrade plan v1.33.0; kubeadm upgrade apply v1.33.0 --yes")
        );
        assert!(steps[1].actions.contains("kubeadm upgrade node"));
        assert_eq!(steps[0].from, "v1.32.0");
    }
}
