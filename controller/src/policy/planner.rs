//! The planner: a pure function of (state, now) → commands that move every
//! pool toward its spec. No I/O, no clock: `now` is an argument, so it is
//! tested with tables of states.
//!
//! Per pool, in order:
//! 1. failed tasks whose backoff elapsed are issued again (next attempt);
//! 2. `deleting`: every member gets a `reset` (the pool goes with the last);
//! 3. no join secrets yet: `init_control_plane` on the first control plane;
//! 4. join secrets about to expire (kept fresh at all times, and never
//!    used stale): `refresh_join_token` on a joined control plane first;
//! 5. joining members: `join_control_plane` / `join_worker`;
//! 6. leaving members, once no member is still joining (replacements
//!    first): `drain_node`, then (a leaving control plane)
//!    `remove_etcd_member`, then `delete_node` (all run on another, joined
//!    control plane), then `reset` on the member;
//! 6b. a Kubernetes upgrade in progress: its next steps
//!    ([`crate::policy::upgrade`]);
//! 6c. a certificate renewal in progress: the next control plane
//!    ([`crate::policy::certs`]);
//! 7. everyone joined and no addons yet: `install_addons`;
//! 7b. etcd backups: a scheduled snapshot when due, deletions beyond the
//!    retention ([`crate::policy::backups`]);
//! 8. nothing left to do (no upgrade in progress either): phase `ready`.
//!
//! Healing ([`crate::policy::healing`]) comes first in each pool: a down member is
//! replaced (or an alert raised); its cleanup runs in step 6 like a
//! leaving member's (`remove_etcd_member`, `delete_node` on a healthy
//! control plane; a worker's only once its replacement joined), and a
//! control-plane replacement joins only after that cleanup. kubectl runs
//! only on a joined control plane whose host is ready. After the pools:
//! resets of fenced hosts that came back, and tasks far past their
//! deadline are failed.
//!
//! A step already issued (pending, or failed and waiting for its retry) is
//! not issued again. Task ids embed the applied index at planning time, so
//! an id is never reused (agents deduplicate on `(task_id, attempt)`).

use rpool_proto::units::format_size;

use crate::config::HealingConfig;
use crate::policy::healing;
use crate::state::State;
use crate::state::command::Command;
use crate::state::pool::{
    MAX_TASK_ATTEMPTS, MemberState, PoolPhase, PoolRecord, Role, TaskKind, TaskRecord, TaskState,
};

/// Join secrets are refreshed when they expire within this margin.
pub const REFRESH_MARGIN_MS: u64 = 10 * 60 * 1_000;

/// Commands that move every pool a step toward its spec, with the default
/// `[healing]` settings.
pub fn plan(state: &State, now_unix_ms: u64) -> Vec<Command> {
    plan_with(state, now_unix_ms, &HealingConfig::default())
}

/// Commands that move every pool a step toward its spec, healing as
/// `healing` says.
pub fn plan_with(state: &State, now_unix_ms: u64, healing: &HealingConfig) -> Vec<Command> {
    plan_replacing(state, now_unix_ms, healing, true)
}

/// [`plan_with`], holding every replacement back unless `replacing`: a
/// leader that has not yet judged every host for a full `down_after` does
/// not know who else is silent (`Liveness::judging`). The rest of each
/// pool is planned as if no member were down.
pub fn plan_replacing(
    state: &State,
    now_unix_ms: u64,
    healing: &HealingConfig,
    replacing: bool,
) -> Vec<Command> {
    let mut out = Vec::new();
    let storm = if healing.enabled {
        healing::storm(state, healing, now_unix_ms)
    } else {
        None
    };
    if healing.enabled {
        healing::plan_storm_edges(state, storm.as_deref(), now_unix_ms, &mut out);
    }
    let heal = (healing.enabled && replacing && storm.is_none()).then_some(healing.settle_ms);
    for pool in state.pools().values() {
        plan_pool(state, pool, now_unix_ms, heal, &mut out);
    }
    healing::plan_fences(state, now_unix_ms, &mut out);
    healing::plan_expired(state, now_unix_ms, &mut out);
    out
}

/// `heal`: replace down members that have been down this long (ms), or
/// not at all.
fn plan_pool(state: &State, pool: &PoolRecord, now: u64, heal: Option<u64>, out: &mut Vec<Command>) {
    let name = &pool.spec.name;
    if let Some(settle_ms) = heal {
        let before = out.len();
        healing::plan_pool(state, pool, now, settle_ms, out);
        if out[before..]
            .iter()
            .any(|c| matches!(c, Command::ReplaceMember { .. }))
        {
            return; // the rest is planned on the state after the replacement
        }
    }
    // Tasks of this pool's members (a fenced host's reset is not one).
    let tasks: Vec<&TaskRecord> = state
        .tasks()
        .values()
        .filter(|t| t.pool == *name && pool.members.contains_key(&t.host_id))
        .collect();
    let issued =
        |host_id: &str, kind: &TaskKind| tasks.iter().any(|t| t.host_id == host_id && t.kind == *kind);
    let mut issue = |host_id: &str, kind: TaskKind| {
        let Some(member) = pool.members.get(host_id) else {
            return;
        };
        let target = match &kind {
            TaskKind::DrainNode { target_node }
            | TaskKind::DeleteNode { target_node }
            | TaskKind::RemoveEtcdMember { target_node }
            | TaskKind::UncordonNode { target_node } => format!(".{target_node}"),
            _ => String::new(),
        };
        out.push(Command::IssueTask {
            task: TaskRecord {
                task_id: format!(
                    "{name}.{}.{}{target}.{}",
                    kind.as_str(),
                    member.node_name,
                    state.applied_index()
                ),
                host_id: host_id.to_owned(),
                pool: name.clone(),
                node_name: member.node_name.clone(),
                deadline_unix_ms: now + kind.timeout_ms(),
                kind,
                attempt: 1,
                state: TaskState::Pending,
                issued_at_unix_ms: now,
                retry_at_unix_ms: 0,
                last_error: String::new(),
            },
        });
    };

    // 1. Retries.
    let mut retries = Vec::new();
    for task in &tasks {
        if task.state == TaskState::Failed && task.attempt < MAX_TASK_ATTEMPTS && now >= task.retry_at_unix_ms
        {
            retries.push(Command::IssueTask {
                task: TaskRecord {
                    attempt: task.attempt + 1,
                    state: TaskState::Pending,
                    issued_at_unix_ms: now,
                    deadline_unix_ms: now + task.kind.timeout_ms(),
                    ..(*task).clone()
                },
            });
        }
    }

    // 2. Deleting.
    if pool.phase == PoolPhase::Deleting {
        for member in pool.members.values() {
            // A down member is fenced by healing instead of waited for.
            if heal.is_some() && healing::member_down(state, member) {
                continue;
            }
            if !issued(&member.host_id, &TaskKind::Reset) {
                issue(&member.host_id, TaskKind::Reset);
            }
        }
        out.extend(retries);
        return;
    }

    // 3. Init.
    let Some(join) = &pool.join else {
        if let Some(first) = pool.first_control_plane()
            && !issued(&first.host_id, &TaskKind::InitControlPlane)
        {
            issue(&first.host_id.clone(), TaskKind::InitControlPlane);
        }
        out.extend(retries);
        return;
    };
    let runner = healing::healthy_runner(state, pool).map(|m| m.host_id.clone());

    // 4. Join secrets are kept fresh (kubeadm: tokens last 24 h, uploaded
    //    certificates 2 h), so a host can join at any moment, and nobody
    //    joins with secrets about to expire.
    let joining: Vec<_> = pool
        .members
        .values()
        .filter(|m| m.state == MemberState::Joining)
        .collect();
    let stale = join.token_expires_unix_ms < now + REFRESH_MARGIN_MS
        || join.certificate_key_expires_unix_ms < now + REFRESH_MARGIN_MS;
    if stale {
        if let Some(runner) = &runner
            && !tasks.iter().any(|t| t.kind == TaskKind::RefreshJoinToken)
        {
            issue(runner, TaskKind::RefreshJoinToken);
        }
    } else {
        // 5. Joins. A control plane joins only once no replaced control
        //    plane is left in etcd (kubeadm checks etcd health first).
        let cleaning_cp = pool
            .members
            .values()
            .any(|m| m.role == Role::ControlPlane && matches!(m.state, MemberState::Replaced { .. }));
        for member in &joining {
            if member.role == Role::ControlPlane && cleaning_cp {
                continue;
            }
            let kind = match member.role {
                Role::ControlPlane => TaskKind::JoinControlPlane,
                Role::Worker => TaskKind::JoinWorker,
            };
            if !issued(&member.host_id, &kind) {
                issue(&member.host_id, kind);
            }
        }
    }

    // 6. Leaving (and replaced: their cleanup).
    for member in pool.members.values() {
        if let MemberState::Replaced {
            etcd_removed,
            deleted,
        } = member.state
        {
            let target_node = member.node_name.clone();
            let kind = if !etcd_removed {
                TaskKind::RemoveEtcdMember { target_node }
            } else if !deleted {
                // A worker's replacements join before its node goes.
                if member.role == Role::Worker && joining.iter().any(|m| m.role == Role::Worker) {
                    continue;
                }
                TaskKind::DeleteNode { target_node }
            } else {
                continue;
            };
            if let Some(runner) = &runner
                && !tasks.iter().any(|t| t.kind == kind)
            {
                issue(runner, kind);
            }
            continue;
        }
        let MemberState::Leaving {
            drained,
            deleted,
            etcd_removed,
        } = member.state
        else {
            continue;
        };
        let target_node = member.node_name.clone();
        let step = if !drained {
            // Replacements join first: capacity never dips while a host
            // is moved out (drain, maintenance), and a leaving control
            // plane's replacement is in etcd before it goes.
            if !joining.is_empty() {
                continue;
            }
            Some(TaskKind::DrainNode { target_node })
        } else if member.role == Role::ControlPlane && !etcd_removed {
            // The runner is another control plane (a leaving one is not
            // `joined`): etcd shrinks before the node goes.
            Some(TaskKind::RemoveEtcdMember { target_node })
        } else if !deleted {
            Some(TaskKind::DeleteNode { target_node })
        } else {
            None
        };
        match (step, &runner) {
            (Some(kind), Some(runner)) => {
                if !tasks.iter().any(|t| t.kind == kind) {
                    issue(runner, kind);
                }
            }
            (Some(_), None) => {} // no control plane to run kubectl on yet
            (None, _) => {
                if !issued(&member.host_id, &TaskKind::Reset) {
                    issue(&member.host_id, TaskKind::Reset);
                }
            }
        }
    }

    // 6b. A Kubernetes upgrade's next steps (see `policy::upgrade`).
    crate::policy::upgrade::plan(state, pool, &tasks, runner.as_deref(), &mut issue);
    // 6c. A certificate renewal's next control plane (see `policy::certs`).
    crate::policy::certs::plan(pool, &tasks, &mut issue);

    // 7. Addons once everyone is in.
    let settled = pool.members.values().all(|m| m.state == MemberState::Joined);
    if settled
        && !pool.addons_installed
        && let Some(runner) = &runner
        && !tasks.iter().any(|t| t.kind == TaskKind::InstallAddons)
    {
        issue(runner, TaskKind::InstallAddons);
    }

    // 7b. etcd backups: the schedule and retention (see `policy::backups`).
    crate::policy::backups::plan(state, pool, now, runner.as_deref(), out);

    // 8. Ready. A degraded pool is ready again once what degraded it is
    //    gone (no task failed for good, no member down).
    let busy = tasks.iter().any(|t| t.state == TaskState::Pending);
    let failed_for_good = tasks
        .iter()
        .any(|t| t.state == TaskState::Failed && t.attempt >= MAX_TASK_ATTEMPTS);
    let member_down = pool.members.values().any(|m| healing::member_down(state, m));
    let recovering = match pool.phase {
        PoolPhase::Provisioning | PoolPhase::Resizing | PoolPhase::Healing | PoolPhase::Upgrading => true,
        PoolPhase::Degraded => !failed_for_good,
        PoolPhase::Ready | PoolPhase::Deleting => false,
    };
    if settled && pool.addons_installed && !busy && !member_down && recovering && pool.upgrade.is_none() {
        let (cores, memory) = worker_totals(state, pool);
        out.push(Command::SetPoolPhase {
            pool: name.clone(),
            phase: PoolPhase::Ready,
            reason: format!(
                "{} host(s) joined; workers {cores} cores / {} for {} cores / {} requested",
                pool.members.len(),
                format_size(memory),
                pool.spec.cores,
                format_size(pool.spec.memory_bytes)
            ),
            at_unix_ms: now,
        });
    }
    out.extend(retries);
}

/// Cores and memory of the pool's workers that are not leaving (nor
/// replaced).
pub fn worker_totals(state: &State, pool: &PoolRecord) -> (u64, u64) {
    pool.members
        .values()
        .filter(|m| {
            m.role == Role::Worker
                && !matches!(
                    m.state,
                    MemberState::Leaving { .. } | MemberState::Replaced { .. }
                )
        })
        .filter_map(|m| state.host(&m.host_id))
        .fold((0, 0), |(c, mem), h| {
            (
                c + u64::from(h.facts.inventory.logical_cores),
                mem + h.facts.inventory.memory_total_bytes,
            )
        })
}

#[cfg(test)]
mod tests {
    //! The whole pool lifecycle, driven purely: the planner's commands are
    //! applied, and each issued task is "run" by finishing it as an agent
    //! would. No sockets, no processes, no clock.

    use super::*;
    use crate::policy::testing::{GIB, World};
    use crate::state::pool::PoolSpec;

    fn create(w: &mut World, control_planes: &[&str], workers: &[&str]) {
        w.create(control_planes, workers, 16, 128 * GIB);
    }

    #[test]
    fn a_pool_is_built_init_first_then_joins_then_addons_then_ready() {
        let mut w = World::new(&[
            ("h1", "a", 8),
            ("h2", "b", 8),
            ("h3", "c", 8),
            ("w1", "a", 8),
            ("w2", "b", 8),
        ]);
        create(&mut w, &["h1", "h2", "h3"], &["w1", "w2"]);
        assert_eq!(w.pool().phase, PoolPhase::Provisioning);
        // Only init, on the first control plane, until it is done.
        assert_eq!(w.plan_tasks(), vec!["init_control_plane@h1"]);
        assert!(w.plan_tasks().is_empty(), "a pending init is not issued twice");
        w.run_tasks();
        let mut joins = w.plan_tasks();
        joins.sort();
        assert_eq!(
            joins,
            vec![
                "join_control_plane@h2",
                "join_control_plane@h3",
                "join_worker@w1",
                "join_worker@w2"
            ]
        );
        w.run_tasks();
        assert_eq!(w.plan_tasks(), vec!["install_addons@h1"]);
        w.run_tasks();
        w.plan_tasks();
        assert_eq!(w.pool().phase, PoolPhase::Ready, "{}", w.pool().phase_reason);
        assert!(w.pool().members.values().all(|m| m.state == MemberState::Joined));
        // Secrets are kept but never shown.
        assert!(!format!("{:?}", w.pool()).contains("abcdef.0123456789abcdef"));
    }

    #[test]
    fn shrinking_drains_deletes_then_resets_and_releases_the_host() {
        let mut w = World::new(&[("h1", "a", 8), ("w1", "a", 8), ("w2", "b", 8)]);
        create(&mut w, &["h1"], &["w1", "w2"]);
        w.settle_idle();
        w.apply(Command::ResizePool {
            pool: "web".into(),
            cores: 8,
            memory_bytes: 64 * GIB,
            add: vec![],
            release: vec!["w2".into()],
            lb_range: None,
            at_unix_ms: w.now,
        });
        assert_eq!(
            w.plan_tasks(),
            vec!["drain_node@h1"],
            "kubectl runs on the control plane"
        );
        w.run_tasks();
        assert_eq!(w.plan_tasks(), vec!["delete_node@h1"]);
        w.run_tasks();
        assert_eq!(w.plan_tasks(), vec!["reset@w2"]);
        w.run_tasks();
        w.plan_tasks();
        assert_eq!(w.pool().phase, PoolPhase::Ready);
        assert!(!w.pool().members.contains_key("w2"));
        assert_eq!(w.sm.host("w2").unwrap().pool, None, "released to the fleet");
    }

    #[test]
    fn a_failing_task_is_retried_with_backoff_then_the_pool_is_degraded() {
        let mut w = World::new(&[("h1", "a", 8), ("w1", "a", 8)]);
        create(&mut w, &["h1"], &["w1"]);
        for attempt in 1..=MAX_TASK_ATTEMPTS {
            let issued = w.plan_tasks();
            assert_eq!(issued.len(), 1, "attempt {attempt}: {issued:?}");
            let task = w.sm.tasks().values().next().unwrap().clone();
            assert_eq!(task.attempt, attempt);
            w.apply(Command::FinishTask {
                task_id: task.task_id,
                attempt,
                ok: false,
                error: "kubeadm init: exit status 1: [ERROR Port-6443]: Port 6443 is in use".into(),
                join: None,
                kubeconfig: None,
                images: None,
                at_unix_ms: w.now,
            });
            assert!(w.plan_tasks().is_empty(), "retried before its backoff");
            w.now += 60_000;
        }
        assert_eq!(w.pool().phase, PoolPhase::Degraded);
        assert!(
            w.pool().phase_reason.contains("Port 6443 is in use"),
            "{}",
            w.pool().phase_reason
        );
        assert!(w.plan_tasks().is_empty(), "no retry after the last attempt");
    }

    #[test]
    fn destroying_resets_every_host_and_the_pool_goes_with_the_last() {
        let mut w = World::new(&[("h1", "a", 8), ("w1", "a", 8), ("w2", "b", 8)]);
        create(&mut w, &["h1"], &["w1", "w2"]);
        w.settle_idle();
        w.apply(Command::DestroyPool {
            pool: "web".into(),
            at_unix_ms: w.now,
        });
        let mut resets = w.plan_tasks();
        resets.sort();
        assert_eq!(resets, vec!["reset@h1", "reset@w1", "reset@w2"]);
        w.run_tasks();
        assert!(w.sm.pools().is_empty());
        assert!(w.sm.hosts().values().all(|h| h.pool.is_none()));
        let kinds: Vec<&str> = w.sm.events().iter().map(|e| e.kind.as_str()).collect();
        assert!(
            kinds.contains(&"pool_created") && kinds.contains(&"pool_destroyed"),
            "{kinds:?}"
        );
    }

    #[test]
    fn a_host_is_never_in_two_pools() {
        let mut w = World::new(&[("h1", "a", 8), ("h2", "b", 8), ("w1", "a", 8)]);
        create(&mut w, &["h1"], &["w1"]);
        let index = w.sm.applied_index() + 1;
        let err =
            w.sm.apply(
                index,
                &Command::CreatePool {
                    spec: PoolSpec {
                        name: "db".into(),
                        cores: 8,
                        memory_bytes: 64 * GIB,
                        control_planes: 1,
                        kubernetes_version: "v1.32.0".into(),
                        pod_network_cidr: "10.244.0.0/16".into(),
                        service_cidr: "10.96.0.0/12".into(),
                        vip: String::new(),
                        lb_range: String::new(),
                        ..Default::default()
                    },
                    control_planes: vec!["h2".into()],
                    workers: vec!["w1".into()],
                    control_plane_endpoint: "h2:6443".into(),
                    at_unix_ms: 5,
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("already belongs to pool web"), "{err}");
        assert!(!w.sm.pools().contains_key("db"));
        assert_eq!(
            w.sm.host("h2").unwrap().pool,
            None,
            "a refused command changed nothing"
        );
    }

    #[test]
    fn join_secrets_are_refreshed_before_they_expire_even_with_nothing_to_join() {
        let mut w = World::new(&[("h1", "a", 8), ("w1", "a", 8)]);
        create(&mut w, &["h1"], &["w1"]);
        w.settle_idle();
        assert_eq!(w.pool().phase, PoolPhase::Ready);
        // Uploaded certificates last 2 h: shortly before, they are renewed.
        w.now += 2 * 3_600_000 - REFRESH_MARGIN_MS + 1;
        assert_eq!(w.plan_tasks(), vec!["refresh_join_token@h1"]);
        w.run_tasks();
        assert!(w.plan_tasks().is_empty(), "fresh secrets need no refresh");
        assert_eq!(w.pool().phase, PoolPhase::Ready);
    }

    #[test]
    fn a_replacement_joins_before_the_host_it_replaces_is_drained() {
        let mut w = World::new(&[("h1", "a", 8), ("w1", "a", 8), ("w2", "b", 8)]);
        create(&mut w, &["h1"], &["w1"]);
        w.settle_idle();
        w.apply(Command::ResizePool {
            pool: "web".into(),
            cores: 16,
            memory_bytes: 128 * GIB,
            add: vec!["w2".into()],
            release: vec!["w1".into()],
            lb_range: None,
            at_unix_ms: w.now,
        });
        assert_eq!(
            w.plan_tasks(),
            vec!["join_worker@w2"],
            "no drain while the replacement joins"
        );
        w.run_tasks();
        assert_eq!(w.plan_tasks(), vec!["drain_node@h1"]);
    }

    #[test]
    fn stale_join_secrets_are_refreshed_before_a_join() {
        let mut w = World::new(&[("h1", "a", 8), ("w1", "a", 8), ("w2", "b", 8)]);
        create(&mut w, &["h1"], &["w1"]);
        w.settle_idle();
        // A day later the token has expired; growing needs a fresh one.
        w.now += 25 * 3_600_000;
        w.apply(Command::ResizePool {
            pool: "web".into(),
            cores: 16,
            memory_bytes: 128 * GIB,
            add: vec!["w2".into()],
            release: vec![],
            lb_range: None,
            at_unix_ms: w.now,
        });
        assert_eq!(w.plan_tasks(), vec!["refresh_join_token@h1"]);
        w.run_tasks();
        assert_eq!(w.plan_tasks(), vec!["join_worker@w2"]);
    }

    /// A 3-control-plane pool (endpoint h1) with a worker, settled, and a
    /// free host h4 in zone c.
    fn three_control_planes() -> World {
        let mut w = World::new(&[
            ("h1", "a", 8),
            ("h2", "b", 8),
            ("h3", "c", 8),
            ("w1", "a", 16),
            ("h4", "c", 4),
            ("h5", "b", 4),
        ]);
        create(&mut w, &["h1", "h2", "h3"], &["w1"]);
        w.settle_idle();
        w
    }

    #[test]
    fn a_drained_control_plane_is_replaced_first_then_drained_removed_from_etcd_deleted_and_reset() {
        let mut w = three_control_planes();
        let pool = w.pool().clone();
        let h2 = w.sm.host("h2").unwrap().clone();
        // The replacement goes to the zone h2 leaves (b), smallest host.
        let replacement = crate::policy::healing::control_plane_replacement(&w.sm, &pool, &h2).unwrap();
        assert_eq!(replacement, "h5");
        // What the admin path proposes: cordon, then the drain.
        w.apply(Command::SetHostState {
            host_id: "h2".into(),
            state: crate::state::command::HostState::Cordoned,
            reason: "cordoned by an admin".into(),
            at_unix_ms: w.now,
        });
        let drain = Command::DrainControlPlane {
            pool: "web".into(),
            host_id: "h2".into(),
            replacement: replacement.clone(),
            at_unix_ms: w.now,
        };
        w.apply(drain.clone());
        // A repeat (after a leader change) is refused and changes nothing.
        let index = w.sm.applied_index() + 1;
        assert!(w.sm.apply(index, &drain).is_err());
        assert_eq!(
            w.plan_tasks(),
            vec!["join_control_plane@h5"],
            "the replacement joins etcd before anything leaves"
        );
        w.run_tasks();
        assert_eq!(
            w.plan_tasks(),
            vec!["drain_node@h1"],
            "kubectl runs on another control plane"
        );
        w.run_tasks();
        assert_eq!(
            w.plan_tasks(),
            vec!["remove_etcd_member@h1"],
            "etcd shrinks on another control plane before the node goes"
        );
        w.run_tasks();
        assert_eq!(w.plan_tasks(), vec!["delete_node@h1"]);
        w.run_tasks();
        assert_eq!(w.plan_tasks(), vec!["reset@h2"], "the reset comes last");
        w.run_tasks();
        w.settle_idle();
        assert_eq!(w.pool().phase, PoolPhase::Ready, "{}", w.pool().phase_reason);
        let mut cps: Vec<&str> = w
            .pool()
            .members
            .values()
            .filter(|m| m.role == Role::ControlPlane && m.state == MemberState::Joined)
            .map(|m| m.host_id.as_str())
            .collect();
        cps.sort();
        assert_eq!(cps, vec!["h1", "h3", "h5"]);
        let h2 = w.sm.host("h2").unwrap();
        assert_eq!(h2.pool, None, "back in the fleet");
        assert_eq!(
            h2.state,
            crate::state::command::HostState::Cordoned,
            "and cordoned"
        );
        assert!(h2.fenced.is_none());
    }

    #[test]
    fn draining_a_control_plane_is_refused_for_one_control_plane_the_endpoint_or_no_free_host() {
        // A single control plane.
        let mut w = World::new(&[("h1", "a", 8), ("w1", "a", 8), ("h4", "b", 8)]);
        create(&mut w, &["h1"], &["w1"]);
        w.settle_idle();
        let h1 = w.sm.host("h1").unwrap().clone();
        let err = crate::policy::healing::control_plane_replacement(&w.sm, w.pool(), &h1).unwrap_err();
        assert!(
            err.contains("cannot lose its only control plane")
                && err.contains("create the pool with 3 control planes"),
            "{}",
            err
        );
        let index = w.sm.applied_index() + 1;
        let refused = w.sm.apply(
            index,
            &Command::DrainControlPlane {
                pool: "web".into(),
                host_id: "h1".into(),
                replacement: "h4".into(),
                at_unix_ms: w.now,
            },
        );
        assert!(refused.is_err(), "the state machine refuses it too");
        assert_eq!(w.pool().members["h1"].state, MemberState::Joined);

        // The endpoint host.
        let mut w = three_control_planes();
        let h1 = w.sm.host("h1").unwrap().clone();
        let err = crate::policy::healing::control_plane_replacement(&w.sm, w.pool(), &h1).unwrap_err();
        assert!(
            err.contains("API endpoint h1:6443") && err.contains("no virtual IP"),
            "{}",
            err
        );

        // With a VIP the endpoint moves: the first control plane may go.
        let mut v = World::new(&[
            ("h1", "a", 8),
            ("h2", "b", 8),
            ("h3", "c", 8),
            ("w1", "a", 16),
            ("h4", "a", 4),
        ]);
        v.vip = "198.51.100.7".into();
        create(&mut v, &["h1", "h2", "h3"], &["w1"]);
        v.settle_idle();
        assert_eq!(v.pool().control_plane_endpoint, "198.51.100.7:6443");
        let first = v.sm.host("h1").unwrap().clone();
        assert_eq!(
            crate::policy::healing::control_plane_replacement(&v.sm, v.pool(), &first).unwrap(),
            "h4"
        );

        // Another control plane not ready.
        w.apply(Command::SetHostState {
            host_id: "h3".into(),
            state: crate::state::command::HostState::Suspect,
            reason: "missed heartbeats".into(),
            at_unix_ms: w.now,
        });
        let h2 = w.sm.host("h2").unwrap().clone();
        let err = crate::policy::healing::control_plane_replacement(&w.sm, w.pool(), &h2).unwrap_err();
        assert!(err.contains("control plane h3"), "{}", err);
        w.apply(Command::SetHostState {
            host_id: "h3".into(),
            state: crate::state::command::HostState::Ready,
            reason: "back".into(),
            at_unix_ms: w.now,
        });

        // No free host.
        for id in ["h4", "h5"] {
            w.apply(Command::SetHostState {
                host_id: id.into(),
                state: crate::state::command::HostState::Cordoned,
                reason: "cordoned by an admin".into(),
                at_unix_ms: w.now,
            });
        }
        let err = crate::policy::healing::control_plane_replacement(&w.sm, w.pool(), &h2).unwrap_err();
        assert!(
            err.contains("no replacement control plane") && err.contains("0 free"),
            "{}",
            err
        );
    }
}
