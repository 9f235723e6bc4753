//! etcd backups of a pool: the replicated records, the limits, and the
//! pure decisions (retention, when the schedule is due).
//!
//! A backup is an etcd snapshot a pool's control-plane agent takes into its
//! own state dir (`{state_dir}/etcd-snapshots/POOL/POOL-STAMP.db`). Its
//! record lives in the pool record (so it is replicated, and goes with the
//! pool): `taking` while its `etcd_snapshot` task runs, then `done` (path,
//! size, SHA-256, etcd revision) or `failed` (the error). Scheduled
//! snapshots beyond the pool's `backup_keep` newest turn `deleting`: a
//! `delete_etcd_snapshot` task on the host that holds the file removes it,
//! then the record goes. Manual snapshots are never deleted by the schedule.
//!
//! The schedule runs on the leader's clock from a replicated anchor (the
//! time the last scheduled snapshot was requested, or when the schedule was
//! set): one is due at `anchor + interval`. A leader that takes over late
//! takes one snapshot, not one per missed interval.

use serde::{Deserialize, Serialize};

/// Shortest and longest schedule interval (1 s, 30 days).
pub const INTERVAL_MIN_MS: u64 = 1_000;
pub const INTERVAL_MAX_MS: u64 = 30 * 24 * 3_600 * 1_000;
/// Most scheduled snapshots kept.
pub const KEEP_MAX: u32 = 1_000;
/// Scheduled snapshots kept when a schedule gives no number.
pub const DEFAULT_KEEP: u32 = 7;
/// Failed attempts kept in the list (older ones are dropped).
pub const FAILED_KEPT: usize = 5;
/// Wait before a failed deletion is tried again.
pub const DELETE_RETRY_MS: u64 = 60_000;

/// A pool's backups: the records, newest last, and the schedule's anchor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolBackups {
    #[serde(default)]
    pub records: Vec<BackupRecord>,
    /// When the last scheduled snapshot was requested, or the schedule
    /// set (controller clock, Unix ms; 0 = the pool's creation).
    #[serde(default)]
    pub anchor_unix_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    Manual,
    Scheduled,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Manual => "manual",
            BackupKind::Scheduled => "scheduled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupState {
    Taking,
    Done,
    Failed,
    /// Beyond the retention: its file is being removed.
    Deleting,
}

impl BackupState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupState::Taking => "taking",
            BackupState::Done => "done",
            BackupState::Failed => "failed",
            BackupState::Deleting => "deleting",
        }
    }
}

/// One snapshot of a pool's etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// `snap-INDEX` (the Raft index that requested it).
    pub id: String,
    /// The control plane that takes (and holds) it.
    pub host_id: String,
    pub node_name: String,
    pub kind: BackupKind,
    pub state: BackupState,
    pub requested_at_unix_ms: u64,
    /// Its `etcd_snapshot` task.
    pub task_id: String,
    /// Set once done.
    #[serde(default)]
    pub file: Option<SnapshotTaken>,
    /// Why it failed, or why its deletion failed.
    #[serde(default)]
    pub error: String,
    /// A failed deletion is tried again from this time on.
    #[serde(default)]
    pub retry_at_unix_ms: u64,
}

/// The file an `etcd_snapshot` task wrote, as the agent reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTaken {
    pub path: String,
    pub size_bytes: u64,
    /// 64 lowercase hex.
    pub sha256: String,
    pub revision: u64,
    pub total_keys: u64,
    /// Agent clock, Unix ms.
    pub taken_at_unix_ms: u64,
}

/// The retention in force: `keep` scheduled snapshots (0 = the default).
pub fn effective_keep(keep: u32) -> u32 {
    if keep == 0 { DEFAULT_KEEP } else { keep }
}

/// Ids of the `done` scheduled snapshots beyond the `keep` newest (by
/// request time, then id), oldest first. Manual ones never count.
pub fn beyond_retention(records: &[BackupRecord], keep: u32) -> Vec<String> {
    let mut done: Vec<&BackupRecord> = records
        .iter()
        .filter(|r| r.kind == BackupKind::Scheduled && r.state == BackupState::Done)
        .collect();
    done.sort_by_key(|r| (r.requested_at_unix_ms, id_number(&r.id)));
    let extra = done.len().saturating_sub(keep as usize);
    done[..extra].iter().map(|r| r.id.clone()).collect()
}

/// Ids of `failed` records beyond the [`FAILED_KEPT`] newest.
pub fn stale_failures(records: &[BackupRecord]) -> Vec<String> {
    let mut failed: Vec<&BackupRecord> = records
        .iter()
        .filter(|r| r.state == BackupState::Failed)
        .collect();
    failed.sort_by_key(|r| (r.requested_at_unix_ms, id_number(&r.id)));
    let extra = failed.len().saturating_sub(FAILED_KEPT);
    failed[..extra].iter().map(|r| r.id.clone()).collect()
}

fn id_number(id: &str) -> u64 {
    id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// When the next scheduled snapshot is due: `None` without a schedule.
/// `anchor` 0 counts from `created_at`.
pub fn next_due(interval_ms: u64, anchor_unix_ms: u64, created_at_unix_ms: u64) -> Option<u64> {
    if interval_ms == 0 {
        return None;
    }
    let from = if anchor_unix_ms == 0 {
        created_at_unix_ms
    } else {
        anchor_unix_ms
    };
    Some(from.saturating_add(interval_ms))
}

/// Whether a scheduled snapshot is due at `now`.
pub fn due(interval_ms: u64, anchor_unix_ms: u64, created_at_unix_ms: u64, now: u64) -> bool {
    next_due(interval_ms, anchor_unix_ms, created_at_unix_ms).is_some_and(|at| now >= at)
}

/// The range check of a schedule: `interval_ms` 0 or within the limits,
/// `keep` at most [`KEEP_MAX`]. The message names the accepted range.
pub fn check_schedule(interval_ms: u64, keep: u32) -> Result<(), (&'static str, String)> {
    if interval_ms != 0 && !(INTERVAL_MIN_MS..=INTERVAL_MAX_MS).contains(&interval_ms) {
        return Err((
            "backup_interval_ms",
            format!(
                "{interval_ms} is out of range (accepted 0 = no schedule, or {INTERVAL_MIN_MS}..={INTERVAL_MAX_MS}, i.e. 1s..=30d)"
            ),
        ));
    }
    if keep > KEEP_MAX {
        return Err((
            "backup_keep",
            format!("{keep} is out of range (accepted 0 = {DEFAULT_KEEP}, or 1..={KEEP_MAX})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, kind: BackupKind, state: BackupState, at: u64) -> BackupRecord {
        BackupRecord {
            id: format!("snap-{id}"),
            host_id: "h1".into(),
            node_name: "cp1".into(),
            kind,
            state,
            requested_at_unix_ms: at,
            task_id: format!("t{id}"),
            file: None,
            error: String::new(),
            retry_at_unix_ms: 0,
        }
    }

    #[test]
    fn retention_deletes_only_the_oldest_done_scheduled_snapshots_beyond_keep() {
        use BackupKind::*;
        use BackupState::*;
        let records = vec![
            rec(10, Scheduled, Done, 1_000),
            rec(20, Manual, Done, 1_500),
            rec(30, Scheduled, Done, 2_000),
            rec(40, Scheduled, Failed, 2_500),
            rec(50, Scheduled, Done, 3_000),
            rec(60, Scheduled, Taking, 4_000),
            rec(70, Scheduled, Deleting, 500),
        ];
        assert_eq!(beyond_retention(&records, 2), vec!["snap-10"]);
        assert_eq!(beyond_retention(&records, 1), vec!["snap-10", "snap-30"]);
        assert!(beyond_retention(&records, 3).is_empty());
        assert!(beyond_retention(&records, 7).is_empty());
        // Same request time: the lower index is older.
        let tie = vec![rec(9, Scheduled, Done, 5), rec(11, Scheduled, Done, 5)];
        assert_eq!(beyond_retention(&tie, 1), vec!["snap-9"]);
        assert_eq!(effective_keep(0), DEFAULT_KEEP);
        assert_eq!(effective_keep(3), 3);
    }

    #[test]
    fn only_the_newest_failures_are_kept() {
        let records: Vec<BackupRecord> = (1..=8)
            .map(|i| rec(i, BackupKind::Manual, BackupState::Failed, i * 10))
            .collect();
        assert_eq!(stale_failures(&records), vec!["snap-1", "snap-2", "snap-3"]);
    }

    #[test]
    fn the_schedule_is_due_one_interval_after_its_anchor_and_never_in_a_burst() {
        // No schedule: never.
        assert_eq!(next_due(0, 5, 1), None);
        assert!(!due(0, 0, 0, u64::MAX));
        // From creation until the first one.
        assert_eq!(next_due(1_000, 0, 10_000), Some(11_000));
        assert!(!due(1_000, 0, 10_000, 10_999));
        assert!(due(1_000, 0, 10_000, 11_000));
        // After one was requested at 11_000, the next at 12_000.
        assert!(!due(1_000, 11_000, 10_000, 11_999));
        assert!(due(1_000, 11_000, 10_000, 12_000));
        // A leader that was away for ten intervals: one now (due), and
        // once it is requested (anchor = now), the next a whole interval
        // later, not the missed ones.
        let now = 23_000;
        assert!(due(1_000, 12_000, 10_000, now));
        assert!(!due(1_000, now, 10_000, now + 999));
    }

    #[test]
    fn schedule_ranges_name_the_field_and_the_accepted_values() {
        assert!(check_schedule(0, 0).is_ok());
        assert!(check_schedule(INTERVAL_MIN_MS, 1).is_ok());
        assert!(check_schedule(INTERVAL_MAX_MS, KEEP_MAX).is_ok());
        let (field, msg) = check_schedule(999, 1).unwrap_err();
        assert_eq!(field, "backup_interval_ms");
        assert!(msg.contains("1000..=2592000000"), "{msg}");
        assert_eq!(
            check_schedule(INTERVAL_MAX_MS + 1, 1).unwrap_err().0,
            "backup_interval_ms"
        );
        let (field, msg) = check_schedule(60_000, 1_001).unwrap_err();
        assert_eq!(field, "backup_keep");
        assert!(msg.contains("1..=1000"), "{msg}");
    }
}
