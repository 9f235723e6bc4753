//! The leader's part of a pool's etcd backups (see
//! [`crate::state::backups`]), pure like the rest of the planner:
//!
//! 1. a scheduled snapshot when one is due (leader's clock, replicated
//!    anchor) and none is being taken, on the healthy joined control plane
//!    kubectl steps run on (none healthy: it waits);
//! 2. records `taking` whose task is gone (the host was reset or replaced
//!    while it ran) are dropped, saying so;
//! 3. records `deleting` (beyond the retention): a `delete_etcd_snapshot`
//!    task on the host that holds the file while it is a ready member; a
//!    host that left the pool cannot be reached: the record is dropped,
//!    naming the host and path left behind.

use crate::state::State;
use crate::state::backups::{BackupState, due};
use crate::state::command::{Command, HostState};
use crate::state::pool::{MemberState, PoolPhase, PoolRecord, TaskKind, TaskRecord, TaskState};

/// Backup commands for `pool` at `now`; `runner` is the healthy joined
/// control plane (see [`crate::policy::healing::healthy_runner`]).
pub fn plan(state: &State, pool: &PoolRecord, now: u64, runner: Option<&str>, out: &mut Vec<Command>) {
    let name = &pool.spec.name;
    if pool.phase == PoolPhase::Deleting || pool.join.is_none() {
        return;
    }
    let records = &pool.backups.records;
    let taking = records.iter().any(|r| r.state == BackupState::Taking);

    // 1. The schedule.
    if !taking
        && due(
            pool.spec.backup_interval_ms,
            pool.backups.anchor_unix_ms,
            pool.created_at_unix_ms,
            now,
        )
        && let Some(runner) = runner
    {
        out.push(Command::BackupPool {
            pool: name.clone(),
            host_id: runner.to_owned(),
            scheduled: true,
            at_unix_ms: now,
        });
    }

    // 2. Lost snapshot tasks.
    let lost: Vec<String> = records
        .iter()
        .filter(|r| r.state == BackupState::Taking && !state.tasks().contains_key(&r.task_id))
        .map(|r| r.id.clone())
        .collect();
    if !lost.is_empty() {
        out.push(Command::ForgetPoolBackups {
            pool: name.clone(),
            ids: lost,
            reason: "the snapshot task was lost (its host was reset or replaced while it ran)".to_owned(),
            at_unix_ms: now,
        });
    }

    // 3. Retention.
    let mut gone = Vec::new();
    let mut places = Vec::new();
    for record in records.iter().filter(|r| r.state == BackupState::Deleting) {
        let path = record.file.as_ref().map(|f| f.path.clone()).unwrap_or_default();
        let member = pool
            .members
            .get(&record.host_id)
            .filter(|m| !matches!(m.state, MemberState::Replaced { .. }));
        let Some(member) = member else {
            gone.push(record.id.clone());
            places.push(format!(
                "{path} on {}",
                state
                    .host(&record.host_id)
                    .map_or(record.host_id.as_str(), |h| h.facts.hostname.as_str())
            ));
            continue;
        };
        let ready = state
            .host(&record.host_id)
            .is_some_and(|h| h.state == HostState::Ready);
        let issued = state.tasks().values().any(
            |t| matches!(&t.kind, TaskKind::DeleteEtcdSnapshot { backup_id, .. } if *backup_id == record.id),
        );
        if !ready || issued || now < record.retry_at_unix_ms {
            continue;
        }
        let kind = TaskKind::DeleteEtcdSnapshot {
            backup_id: record.id.clone(),
            path,
        };
        out.push(Command::IssueTask {
            task: TaskRecord {
                task_id: format!("{name}.snapdel.{}.{}", record.id, state.applied_index()),
                host_id: record.host_id.clone(),
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
    }
    if !gone.is_empty() {
        out.push(Command::ForgetPoolBackups {
            pool: name.clone(),
            ids: gone,
            reason: format!(
                "beyond the retention, but their host left the pool; the file(s) may remain: {}",
                places.join(", ")
            ),
            at_unix_ms: now,
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::testing::{GIB, World};
    use crate::state::backups::{BackupKind, BackupState, SnapshotTaken};
    use crate::state::command::Command;
    use crate::state::pool::{PoolPhase, TaskKind};

    fn ready_pool() -> World {
        let mut w = World::new(&[("cp1", "a", 8), ("w1", "a", 8)]);
        w.create(&["cp1"], &["w1"], 8, 8 * GIB);
        w.settle();
        assert_eq!(w.pool().phase, PoolPhase::Ready);
        w
    }

    fn snapshot_tasks(w: &World) -> Vec<(String, String)> {
        w.sm.tasks()
            .values()
            .filter_map(|t| match &t.kind {
                TaskKind::EtcdSnapshot { backup_id } => Some((backup_id.clone(), t.task_id.clone())),
                _ => None,
            })
            .collect()
    }

    /// Answers every pending snapshot task with a file; returns the ids.
    fn take_snapshots(w: &mut World) -> Vec<String> {
        let mut ids = Vec::new();
        for (id, task_id) in snapshot_tasks(w) {
            let attempt = w.sm.tasks()[&task_id].attempt;
            let now = w.now;
            w.apply(Command::EtcdSnapshotTaken {
                task_id,
                attempt,
                snapshot: SnapshotTaken {
                    path: format!("/var/lib/rpool/agent/etcd-snapshots/web/{id}.db"),
                    size_bytes: 4096,
                    sha256: "ab".repeat(32),
                    revision: 7,
                    total_keys: 70,
                    taken_at_unix_ms: now,
                },
                at_unix_ms: now,
            });
            ids.push(id);
        }
        ids
    }

    fn plan(w: &World) -> Vec<Command> {
        crate::policy::planner::plan(&w.sm, w.now)
    }

    #[test]
    fn a_schedule_takes_one_snapshot_per_interval_on_the_leaders_clock_and_keeps_the_newest() {
        let mut w = ready_pool();
        w.apply(Command::SetPoolBackup {
            pool: "web".into(),
            interval_ms: 60_000,
            keep: 2,
            at_unix_ms: w.now,
        });
        let set_at = w.now;
        // Not due before one interval.
        w.now = set_at + 59_999;
        assert!(!plan(&w).iter().any(|c| matches!(c, Command::BackupPool { .. })));
        // Due: one snapshot, on the control plane.
        let mut taken = Vec::new();
        for round in 1..=4u64 {
            w.now = set_at + round * 60_000;
            let backups: Vec<Command> = plan(&w)
                .into_iter()
                .filter(|c| matches!(c, Command::BackupPool { .. }))
                .collect();
            assert_eq!(backups.len(), 1, "round {round}: {backups:?}");
            assert!(
                matches!(&backups[0], Command::BackupPool { host_id, scheduled: true, .. } if host_id == "cp1")
            );
            w.apply(backups[0].clone());
            // While it is being taken, no second one.
            w.now += 60_000;
            assert!(!plan(&w).iter().any(|c| matches!(c, Command::BackupPool { .. })));
            w.now -= 60_000;
            taken.extend(take_snapshots(&mut w));
            // Retention: the deletions run on the holder and finish.
            w.settle();
        }
        let records = &w.pool().backups.records;
        let done: Vec<&str> = records
            .iter()
            .filter(|r| r.state == BackupState::Done)
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(done, [taken[2].as_str(), taken[3].as_str()], "{records:?}");
        assert!(records.iter().all(|r| r.kind == BackupKind::Scheduled));
        assert!(w.sm.events().iter().any(|e| e.kind == "etcd_snapshot_deleted"));
    }

    #[test]
    fn a_leader_that_takes_over_late_takes_one_snapshot_not_a_burst() {
        let mut w = ready_pool();
        w.apply(Command::SetPoolBackup {
            pool: "web".into(),
            interval_ms: 1_000,
            keep: 3,
            at_unix_ms: w.now,
        });
        // Ten intervals with no leader.
        w.now += 10_000;
        let first: Vec<Command> = plan(&w)
            .into_iter()
            .filter(|c| matches!(c, Command::BackupPool { .. }))
            .collect();
        assert_eq!(first.len(), 1);
        w.apply(first[0].clone());
        take_snapshots(&mut w);
        // Right after it: nothing due until a whole interval passed.
        w.now += 999;
        assert!(!plan(&w).iter().any(|c| matches!(c, Command::BackupPool { .. })));
        w.now += 1;
        assert!(plan(&w).iter().any(|c| matches!(c, Command::BackupPool { .. })));
    }

    #[test]
    fn a_failed_snapshot_is_an_alert_and_leaves_the_pool_ready_and_untried() {
        let mut w = ready_pool();
        w.apply(Command::BackupPool {
            pool: "web".into(),
            host_id: "cp1".into(),
            scheduled: false,
            at_unix_ms: w.now,
        });
        let (id, task_id) = snapshot_tasks(&w).pop().unwrap();
        // A second request while it is being taken is refused.
        let again = w.sm.clone().apply(
            w.sm.applied_index() + 1,
            &Command::BackupPool {
                pool: "web".into(),
                host_id: "cp1".into(),
                scheduled: false,
                at_unix_ms: w.now,
            },
        );
        assert!(format!("{again:?}").contains("is being taken"), "{again:?}");
        w.apply(Command::FinishTask {
            task_id,
            attempt: 1,
            ok: false,
            error: "Error: context deadline exceeded".into(),
            join: None,
            kubeconfig: None,
            at_unix_ms: w.now,
            images: None,
        });
        let record = w.pool().backups.records.iter().find(|r| r.id == id).unwrap();
        assert_eq!(record.state, BackupState::Failed);
        assert!(record.error.contains("context deadline exceeded"));
        assert_eq!(w.pool().phase, PoolPhase::Ready);
        assert!(snapshot_tasks(&w).is_empty(), "never retried");
        let alert =
            w.sm.events()
                .iter()
                .find(|e| e.kind == "etcd_snapshot_failed")
                .unwrap();
        assert_eq!(alert.severity, crate::state::pool::Severity::Alert);
        assert!(
            plan(&w)
                .iter()
                .all(|c| !matches!(c, Command::BackupPool { .. } | Command::IssueTask { .. }))
        );
    }
}
