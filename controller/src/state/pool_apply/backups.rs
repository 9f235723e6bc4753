//! etcd backups of a pool in the state machine (see
//! [`crate::state::backups`]): a snapshot requested with its task, taken
//! (retention applied), failed, deleted; the schedule set; records the
//! leader can no longer act on dropped.

use super::{Builder, refused};
use crate::state::backups::{
    BackupKind, BackupRecord, BackupState, DELETE_RETRY_MS, SnapshotTaken, beyond_retention, check_schedule,
    effective_keep, stale_failures,
};
use crate::state::command::Command;
use crate::state::pool::{MemberState, PoolRecord, Role, Severity, TaskKind, TaskRecord, TaskState};
use crate::state::{ApplyError, ApplyOutcome, Change, More, State};

/// Short form of a SHA-256 for sentences that also carry the full one.
fn bytes(n: u64) -> String {
    rpool_proto::units::format_size(n)
}

impl State {
    pub(crate) fn plan_backup(&self, index: u64, command: &Command) -> Result<Change, ApplyError> {
        match command {
            Command::BackupPool {
                pool,
                host_id,
                scheduled,
                at_unix_ms,
            } => self.backup_pool(index, pool, host_id, *scheduled, *at_unix_ms),
            Command::EtcdSnapshotTaken {
                task_id,
                attempt,
                snapshot,
                at_unix_ms,
            } => Ok(self.etcd_snapshot_taken(index, task_id, *attempt, snapshot, *at_unix_ms)),
            Command::SetPoolBackup {
                pool,
                interval_ms,
                keep,
                at_unix_ms,
            } => self.set_pool_backup(index, pool, *interval_ms, *keep, *at_unix_ms),
            Command::ForgetPoolBackups {
                pool,
                ids,
                reason,
                at_unix_ms,
            } => self.forget_pool_backups(index, pool, ids, reason, *at_unix_ms),
            _ => unreachable!("plan_backup is only called with backup commands"),
        }
    }

    fn backup_pool(
        &self,
        index: u64,
        name: &str,
        host_id: &str,
        scheduled: bool,
        at_unix_ms: u64,
    ) -> Result<Change, ApplyError> {
        let mut pool = self.pool_for_change(name)?;
        if pool.join.is_none() {
            return Err(refused(format!(
                "pool {name} has no cluster yet ({}); an etcd snapshot needs a running control plane",
                pool.phase.as_str()
            )));
        }
        let member = pool
            .members
            .get(host_id)
            .filter(|m| m.role == Role::ControlPlane && m.state == MemberState::Joined)
            .cloned()
            .ok_or_else(|| {
                refused(format!(
                    "host {host_id} is not a joined control plane of pool {name}"
                ))
            })?;
        if let Some(busy) = pool
            .backups
            .records
            .iter()
            .find(|r| r.state == BackupState::Taking)
        {
            return Err(refused(format!(
                "an etcd snapshot of pool {name} is being taken ({} on {}); wait for it (rpoolctl pool backups {name})",
                busy.id, busy.node_name
            )));
        }
        let id = format!("snap-{index}");
        let kind = if scheduled {
            BackupKind::Scheduled
        } else {
            BackupKind::Manual
        };
        let task_kind = TaskKind::EtcdSnapshot {
            backup_id: id.clone(),
        };
        let task = TaskRecord {
            task_id: format!("{name}.snap.{index}"),
            host_id: host_id.to_owned(),
            pool: name.to_owned(),
            node_name: member.node_name.clone(),
            deadline_unix_ms: at_unix_ms + task_kind.timeout_ms(),
            kind: task_kind,
            attempt: 1,
            state: TaskState::Pending,
            issued_at_unix_ms: at_unix_ms,
            retry_at_unix_ms: 0,
            last_error: String::new(),
        };
        pool.backups.records.push(BackupRecord {
            id: id.clone(),
            host_id: host_id.to_owned(),
            node_name: member.node_name.clone(),
            kind,
            state: BackupState::Taking,
            requested_at_unix_ms: at_unix_ms,
            task_id: task.task_id.clone(),
            file: None,
            error: String::new(),
            retry_at_unix_ms: 0,
        });
        if scheduled {
            pool.backups.anchor_unix_ms = at_unix_ms;
        }
        let mut b = Builder {
            index,
            at_unix_ms,
            more: More::default(),
        };
        b.event(
            name,
            host_id,
            "etcd_snapshot_requested",
            format!(
                "pool {name}: etcd snapshot {id} ({}) requested on {}",
                kind.as_str(),
                self.hostname(host_id)
            ),
        );
        b.more.tasks.push((task.task_id.clone(), Some(task)));
        b.more.pools.push((name.to_owned(), Some(pool)));
        Ok(b.done(ApplyOutcome::Updated))
    }

    fn etcd_snapshot_taken(
        &self,
        index: u64,
        task_id: &str,
        attempt: u32,
        file: &SnapshotTaken,
        at_unix_ms: u64,
    ) -> Change {
        let Some(task) = self
            .tasks
            .get(task_id)
            .filter(|t| t.attempt == attempt && t.state == TaskState::Pending)
        else {
            return Change::unchanged(index);
        };
        let TaskKind::EtcdSnapshot { backup_id } = &task.kind else {
            return Change::unchanged(index);
        };
        let Some(mut pool) = self.pools.get(&task.pool).cloned() else {
            return Change::unchanged(index);
        };
        let mut b = Builder {
            index,
            at_unix_ms,
            more: More::default(),
        };
        b.more.tasks.push((task_id.to_owned(), None));
        let host = self.hostname(&task.host_id);
        if let Some(record) = pool.backups.records.iter_mut().find(|r| r.id == *backup_id) {
            record.state = BackupState::Done;
            record.file = Some(file.clone());
            record.error.clear();
        }
        b.event(
            &task.pool,
            &task.host_id,
            "etcd_snapshot_taken",
            format!(
                "pool {}: etcd snapshot {backup_id} taken on {host}: {} ({}, revision {}, sha256 {})",
                task.pool,
                file.path,
                bytes(file.size_bytes),
                file.revision,
                file.sha256
            ),
        );
        apply_retention(&mut pool);
        b.more.pools.push((task.pool.clone(), Some(pool)));
        b.done(ApplyOutcome::Updated)
    }

    /// How an `etcd_snapshot` or `delete_etcd_snapshot` task ended without
    /// a file (from `FinishTask`): a failed snapshot is recorded as failed
    /// (an alert; never retried, the pool's phase untouched); a deletion
    /// done drops the record, a failed one is retried later.
    pub(super) fn finish_backup_task(
        &self,
        index: u64,
        task: &TaskRecord,
        mut pool: PoolRecord,
        ok: bool,
        error: &str,
        at_unix_ms: u64,
    ) -> Change {
        let mut b = Builder {
            index,
            at_unix_ms,
            more: More::default(),
        };
        b.more.tasks.push((task.task_id.clone(), None));
        let name = pool.spec.name.clone();
        let host = self.hostname(&task.host_id);
        match &task.kind {
            TaskKind::EtcdSnapshot { backup_id } => {
                let error = if ok {
                    "the agent reported success but no snapshot file (an older agent?)"
                } else {
                    error
                };
                if let Some(record) = pool.backups.records.iter_mut().find(|r| r.id == *backup_id) {
                    record.state = BackupState::Failed;
                    record.error = error.to_owned();
                }
                b.event_with(
                    &name,
                    &task.host_id,
                    "etcd_snapshot_failed",
                    Severity::Alert,
                    format!("pool {name}: etcd snapshot {backup_id} on {host} failed: {error}"),
                );
                let stale = stale_failures(&pool.backups.records);
                pool.backups.records.retain(|r| !stale.contains(&r.id));
            }
            TaskKind::DeleteEtcdSnapshot { backup_id, path } => {
                if ok {
                    pool.backups.records.retain(|r| r.id != *backup_id);
                    b.event(
                        &name,
                        &task.host_id,
                        "etcd_snapshot_deleted",
                        format!(
                            "pool {name}: etcd snapshot {backup_id} deleted from {host} ({path}; keeping the {} newest scheduled)",
                            effective_keep(pool.spec.backup_keep)
                        ),
                    );
                } else {
                    if let Some(record) = pool.backups.records.iter_mut().find(|r| r.id == *backup_id) {
                        record.error = error.to_owned();
                        record.retry_at_unix_ms = at_unix_ms + DELETE_RETRY_MS;
                    }
                    b.event(
                        &name,
                        &task.host_id,
                        "task_failed",
                        format!(
                            "pool {name}: deleting etcd snapshot {backup_id} ({path}) on {host} failed, tried again in {}s: {error}",
                            DELETE_RETRY_MS / 1_000
                        ),
                    );
                }
            }
            _ => {}
        }
        b.more.pools.push((name, Some(pool)));
        b.done(ApplyOutcome::Updated)
    }

    fn set_pool_backup(
        &self,
        index: u64,
        name: &str,
        interval_ms: u64,
        keep: u32,
        at_unix_ms: u64,
    ) -> Result<Change, ApplyError> {
        let mut pool = self.pool_for_change(name)?;
        check_schedule(interval_ms, keep)
            .map_err(|(field, message)| refused(format!("{field}: {message}")))?;
        if pool.spec.backup_interval_ms == interval_ms && pool.spec.backup_keep == keep {
            return Ok(Change::unchanged(index));
        }
        let was = pool.spec.backup_interval_ms;
        pool.spec.backup_interval_ms = interval_ms;
        pool.spec.backup_keep = keep;
        // A new (or changed) schedule counts from now.
        if interval_ms != was {
            pool.backups.anchor_unix_ms = at_unix_ms;
        }
        let mut b = Builder {
            index,
            at_unix_ms,
            more: More::default(),
        };
        let sentence = if interval_ms == 0 {
            format!("pool {name}: scheduled etcd snapshots off (existing snapshots are kept)")
        } else {
            format!(
                "pool {name}: an etcd snapshot every {}, keeping the {} newest scheduled",
                rpool_proto::units::format_duration(std::time::Duration::from_millis(interval_ms)),
                effective_keep(keep)
            )
        };
        b.event(name, "", "backup_schedule", sentence);
        if interval_ms != 0 {
            apply_retention(&mut pool);
        }
        b.more.pools.push((name.to_owned(), Some(pool)));
        Ok(b.done(ApplyOutcome::Updated))
    }

    fn forget_pool_backups(
        &self,
        index: u64,
        name: &str,
        ids: &[String],
        reason: &str,
        at_unix_ms: u64,
    ) -> Result<Change, ApplyError> {
        let mut pool = self
            .pools
            .get(name)
            .cloned()
            .ok_or_else(|| ApplyError::UnknownPool(name.to_owned()))?;
        let before = pool.backups.records.len();
        pool.backups.records.retain(|r| !ids.contains(&r.id));
        if pool.backups.records.len() == before {
            return Ok(Change::unchanged(index));
        }
        let mut b = Builder {
            index,
            at_unix_ms,
            more: More::default(),
        };
        b.event(
            name,
            "",
            "etcd_snapshot_forgotten",
            format!(
                "pool {name}: etcd snapshot record(s) {} dropped: {reason}",
                ids.join(", ")
            ),
        );
        b.more.pools.push((name.to_owned(), Some(pool)));
        Ok(b.done(ApplyOutcome::Updated))
    }
}

/// Marks the scheduled snapshots beyond the pool's retention `deleting`
/// (only while a schedule is set).
fn apply_retention(pool: &mut PoolRecord) {
    if pool.spec.backup_interval_ms == 0 {
        return;
    }
    let expired = beyond_retention(&pool.backups.records, effective_keep(pool.spec.backup_keep));
    for record in pool
        .backups
        .records
        .iter_mut()
        .filter(|r| expired.contains(&r.id))
    {
        record.state = BackupState::Deleting;
    }
}
