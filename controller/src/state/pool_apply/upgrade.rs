//! A pool's Kubernetes upgrade in the state machine: started (or resumed)
//! by `UpgradePool`, advanced as its tasks are issued and finished. The
//! order of the steps is the planner's ([`crate::policy::upgrade`]); here
//! the record only follows what happened, so a new leader reads exactly
//! which member is at which step.
//!
//! - Issuing a `drain_node` for a joined member of a pool being upgraded
//!   puts that member in flight (`Draining`).
//! - Its drain done: `Drained`; its `upgrade_node` done: `Upgraded` and its
//!   `Member::version` is the target; its `uncordon_node` done: out of
//!   flight. When no member is in flight and every joined member runs the
//!   target, the pool's version is the target and the upgrade is over.
//! - A step that fails for good stops the upgrade (the pool turns
//!   `degraded`, see `tasks.rs`); `UpgradePool` with the same version
//!   drops the failed steps' tasks so the planner issues them afresh.

use super::{Builder, refused};
use crate::kube::versions;
use crate::state::pool::{
    MAX_TASK_ATTEMPTS, MemberState, PoolPhase, PoolRecord, Role, Rollout, TaskKind, TaskRecord, TaskState,
    UpgradeStep,
};
use crate::state::{ApplyError, ApplyOutcome, Change, More, State};

/// Most workers an upgrade takes down at once.
pub const MAX_UNAVAILABLE_MAX: u32 = 100;

/// Whether `task` is one of an upgrade's steps in `pool`: an upgrade or
/// uncordon, or the drain of a member in flight.
pub fn is_rollout_task(pool: &PoolRecord, task: &TaskRecord) -> bool {
    let Some(rollout) = &pool.upgrade else {
        return false;
    };
    match &task.kind {
        TaskKind::UpgradeNode { .. } | TaskKind::UncordonNode { .. } => true,
        TaskKind::DrainNode { target_node } => pool
            .members
            .values()
            .any(|m| m.node_name == *target_node && rollout.steps.contains_key(&m.host_id)),
        _ => false,
    }
}

impl State {
    pub(super) fn upgrade_pool(
        &self,
        index: u64,
        name: &str,
        version: &str,
        max_unavailable: u32,
        at_unix_ms: u64,
    ) -> Result<Change, ApplyError> {
        let mut pool = self.pool_for_change(name)?;
        if !(1..=MAX_UNAVAILABLE_MAX).contains(&max_unavailable) {
            return Err(refused(format!(
                "max_unavailable: {max_unavailable} is out of range (accepted 1..={MAX_UNAVAILABLE_MAX})"
            )));
        }
        let mut b = Builder {
            index,
            at_unix_ms,
            more: More::default(),
        };
        if let Some(rollout) = pool.upgrade.clone() {
            return self.resume_upgrade(pool, rollout, version, max_unavailable, b);
        }
        if pool.cert_renewal.is_some() {
            return Err(refused(format!(
                "pool {name} is renewing its certificates; upgrade it once the renewal is done (rpoolctl pool show {name})"
            )));
        }
        if pool.phase != PoolPhase::Ready {
            return Err(refused(format!(
                "pool {name} is {} ({}); an upgrade starts only from ready",
                pool.phase.as_str(),
                pool.phase_reason
            )));
        }
        let from_text = pool.spec.kubernetes_version.clone();
        let from = versions::parse("kubernetes_version", &from_text).map_err(|e| refused(e.to_string()))?;
        let to = versions::parse("version", version).map_err(|e| refused(e.to_string()))?;
        versions::check_upgrade(from, to).map_err(|e| refused(format!("pool {name}: {e}")))?;
        if let Some(m) = pool
            .members
            .values()
            .find(|m| pool.member_version(m) != from_text)
        {
            return Err(refused(format!(
                "pool {name}: member {} runs {}, not the pool's {from_text}",
                m.node_name,
                pool.member_version(m)
            )));
        }
        for member in pool.members.values_mut() {
            if member.version.is_empty() {
                member.version = from_text.clone();
            }
        }
        pool.upgrade = Some(Rollout {
            from: from_text.clone(),
            to: to.to_string(),
            max_unavailable,
            started_at_unix_ms: at_unix_ms,
            steps: Default::default(),
        });
        pool.phase = PoolPhase::Upgrading;
        pool.phase_reason = format!("upgrading from {from_text} to {to}");
        b.event(
            name,
            "",
            "upgrade_started",
            format!(
                "pool {name}: upgrade from {from_text} to {to} started ({} member(s); workers {max_unavailable} at a time)",
                pool.members.len()
            ),
        );
        b.more.pools.push((name.to_owned(), Some(pool)));
        Ok(b.done(ApplyOutcome::Updated))
    }

    /// `UpgradePool` while an upgrade exists: the same version resumes it
    /// (failed steps issued afresh), another is refused.
    fn resume_upgrade(
        &self,
        mut pool: PoolRecord,
        rollout: Rollout,
        version: &str,
        max_unavailable: u32,
        mut b: Builder,
    ) -> Result<Change, ApplyError> {
        let name = pool.spec.name.clone();
        if rollout.to != version {
            return Err(refused(format!(
                "pool {name} is being upgraded from {} to {}; finish or resume that upgrade first (rpoolctl pool upgrade {name} --resume)",
                rollout.from, rollout.to
            )));
        }
        let failed: Vec<&TaskRecord> = self
            .tasks
            .values()
            .filter(|t| t.pool == name && t.state == TaskState::Failed && t.attempt >= MAX_TASK_ATTEMPTS)
            .filter(|t| is_rollout_task(&pool, t))
            .collect();
        let stopped = pool.phase != PoolPhase::Upgrading;
        if failed.is_empty() && !stopped && rollout.max_unavailable == max_unavailable {
            return Ok(Change::unchanged(b.index));
        }
        for task in &failed {
            b.more.tasks.push((task.task_id.clone(), None));
            if let Some(member) = pool.members.get_mut(&task.host_id) {
                member.last_error.clear();
            }
        }
        if let Some(r) = pool.upgrade.as_mut() {
            r.max_unavailable = max_unavailable;
        }
        pool.phase = PoolPhase::Upgrading;
        pool.phase_reason = format!("upgrading from {} to {} (resumed)", rollout.from, rollout.to);
        b.event(
            &name,
            "",
            "upgrade_resumed",
            format!(
                "pool {name}: upgrade to {} resumed ({} failed step(s) issued again; workers {max_unavailable} at a time)",
                rollout.to,
                failed.len()
            ),
        );
        b.more.pools.push((name, Some(pool)));
        Ok(b.done(ApplyOutcome::Updated))
    }

    /// A drain issued for a joined member of a pool being upgraded puts it
    /// in flight. Returns whether `pool` changed.
    pub(super) fn rollout_on_issue(&self, pool: &mut PoolRecord, task: &TaskRecord) -> bool {
        let TaskKind::DrainNode { target_node } = &task.kind else {
            return false;
        };
        let Some(host_id) = pool
            .members
            .values()
            .find(|m| m.node_name == *target_node && m.state == MemberState::Joined)
            .map(|m| m.host_id.clone())
        else {
            return false;
        };
        let Some(rollout) = pool.upgrade.as_mut() else {
            return false;
        };
        if rollout.steps.contains_key(&host_id) {
            return false;
        }
        rollout.steps.insert(host_id, UpgradeStep::Draining);
        true
    }

    /// `task` finished well: a rollout step moves its member on. Returns
    /// whether it was one.
    pub(super) fn rollout_on_done(&self, pool: &mut PoolRecord, task: &TaskRecord, b: &mut Builder) -> bool {
        let name = pool.spec.name.clone();
        let Some(rollout) = pool.upgrade.clone() else {
            return false;
        };
        let by_node = |node: &str| {
            pool.members
                .values()
                .find(|m| m.node_name == node)
                .map(|m| m.host_id.clone())
        };
        let (host_id, from_step, to_step) = match &task.kind {
            TaskKind::DrainNode { target_node } => (
                by_node(target_node),
                UpgradeStep::Draining,
                Some(UpgradeStep::Drained),
            ),
            TaskKind::UpgradeNode { .. } => (
                Some(task.host_id.clone()),
                UpgradeStep::Drained,
                Some(UpgradeStep::Upgraded),
            ),
            TaskKind::UncordonNode { target_node } => (by_node(target_node), UpgradeStep::Upgraded, None),
            _ => {
                // A join at the target or a member gone may be the last
                // thing the upgrade waited for.
                self.finish_rollout_if_done(pool, b);
                return false;
            }
        };
        let Some(host_id) = host_id else {
            return false;
        };
        if rollout.steps.get(&host_id) != Some(&from_step) {
            return false;
        }
        let hostname = self.hostname(&host_id);
        let r = pool.upgrade.as_mut().expect("checked above");
        match to_step {
            Some(step) => {
                r.steps.insert(host_id.clone(), step);
            }
            None => {
                r.steps.remove(&host_id);
            }
        }
        let message = match to_step {
            Some(UpgradeStep::Drained) => format!("pool {name} upgrade: {hostname} drained"),
            Some(_) => {
                if let Some(m) = pool.members.get_mut(&host_id) {
                    m.version = rollout.to.clone();
                    m.last_error.clear();
                }
                format!(
                    "pool {name} upgrade: {hostname} runs {} (kubelet restarted)",
                    rollout.to
                )
            }
            None => {
                let (done, total) = progress(pool);
                format!(
                    "pool {name} upgrade: {hostname} uncordoned ({done}/{total} members at {})",
                    rollout.to
                )
            }
        };
        b.event(&name, &host_id, "upgrade_step", message);
        self.finish_rollout_if_done(pool, b);
        true
    }

    /// Ends the upgrade when no member is in flight and every joined
    /// member runs the target.
    pub(super) fn finish_rollout_if_done(&self, pool: &mut PoolRecord, b: &mut Builder) {
        let Some(rollout) = &pool.upgrade else {
            return;
        };
        let live = |host_id: &str| {
            pool.members
                .get(host_id)
                .is_some_and(|m| m.state == MemberState::Joined)
        };
        if rollout.steps.keys().any(|h| live(h)) {
            return;
        }
        let (done, total) = progress(pool);
        if done < total {
            return;
        }
        let name = pool.spec.name.clone();
        let (from, to) = (rollout.from.clone(), rollout.to.clone());
        pool.spec.kubernetes_version = to.clone();
        pool.upgrade = None;
        pool.phase_reason = format!("upgraded from {from} to {to}");
        b.event(
            &name,
            "",
            "upgrade_done",
            format!("pool {name}: upgraded from {from} to {to} ({total} member(s))"),
        );
    }
}

/// Joined members running the upgrade's target, and joined members.
pub fn progress(pool: &PoolRecord) -> (usize, usize) {
    let Some(rollout) = &pool.upgrade else {
        return (0, 0);
    };
    let joined: Vec<_> = pool
        .members
        .values()
        .filter(|m| m.state == MemberState::Joined)
        .collect();
    let done = joined
        .iter()
        .filter(|m| pool.member_version(m) == rollout.to && !rollout.steps.contains_key(&m.host_id))
        .count();
    (done, joined.len())
}

/// Whether the control planes all run the target (workers may follow).
pub fn control_planes_done(pool: &PoolRecord) -> bool {
    let Some(rollout) = &pool.upgrade else {
        return true;
    };
    pool.members
        .values()
        .filter(|m| m.role == Role::ControlPlane && m.state == MemberState::Joined)
        .all(|m| pool.member_version(m) == rollout.to && !rollout.steps.contains_key(&m.host_id))
}
