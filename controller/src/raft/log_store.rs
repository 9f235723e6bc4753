//! The Raft log: raft-rs `Storage` over our write-ahead log ([`super::wal`])
//! and snapshot file ([`super::snapshot_file`]) in `{data_dir}/raft/`.
//!
//! The live log (entries after the last snapshot, hard state, conf state)
//! is held in memory as a [`LogState`]; every change is a [`Record`] applied
//! to it and appended to the live segment, so replaying the segment on open
//! rebuilds the same state. Writes are not durable until [`LogStore::sync`]
//! (fdatasync), which the node calls once per `Ready`, before it sends
//! `persisted_messages` or acknowledges anything (sync-before-ack). The
//! conf state, a snapshot and compaction are synced at once.
//!
//! Compaction: the snapshot file is written first, then a new segment with
//! a checkpoint of what is left; older segments are deleted. The log stays
//! at most `snapshot_every` entries (plus the unapplied tail), in memory
//! and on disk.

// raft-rs messages are protobuf 2 structs, built field by field.
#![allow(clippy::field_reassign_with_default)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::snapshot_file;
use super::wal::{self, Record, Wal};

/// What to do with a replica whose data is damaged or lost.
pub const REMEDY: &str = "This controller's data can no longer be trusted: do not restart it on this data dir. \
     Replace it: wipe its data dir, start it under a new id (not in its [[peers]]), \
     run `rpoolctl controller add NEW_ID ADDRESS`, then `rpoolctl controller remove OLD_ID` \
     (README, \"Replacing a dead controller\")";

/// Errors reading or writing the log. All of them stop the node: it must
/// not acknowledge what it cannot persist, nor serve a log it cannot trust.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("raft log I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Damaged or missing data, found by a check: names the file.
    #[error("damaged raft data in {path}: {detail}. {REMEDY}")]
    Damaged { path: PathBuf, detail: String },
    /// A write raft-rs should never ask for (a gap, a rewrite of the
    /// snapshot): a bug, reported instead of a panic.
    #[error("refused raft log write: {0}")]
    Invalid(String),
    #[error("raft log is missing entry {0} inside its range")]
    Missing(u64),
}

impl From<LogError> for raft::Error {
    fn from(err: LogError) -> raft::Error {
        raft::Error::Store(StorageError::Other(Box::new(err)))
    }
}

/// The log as the records written so far make it.
#[derive(Debug, Clone, Default)]
pub struct LogState {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// Index and term of the last snapshot (0, 0 when none): the log
    /// starts right after it.
    pub snapshot_index: u64,
    pub snapshot_term: u64,
    /// Entries `snapshot_index + 1 ..= last_index()`.
    pub entries: VecDeque<Entry>,
}

impl LogState {
    pub fn last_index(&self) -> u64 {
        self.snapshot_index + self.entries.len() as u64
    }

    /// Term of the entry at `index`, if the log holds it (or it is the
    /// snapshot's last one).
    pub fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if index < self.snapshot_index || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.snapshot_index - 1) as usize].term)
    }

    /// Applies one record, as a replay or a live write does.
    pub fn apply(&mut self, record: Record) -> Result<(), String> {
        match record {
            Record::Entry(entry) => {
                if entry.index <= self.snapshot_index {
                    return Err(format!(
                        "entry {} is at or below the snapshot at {}",
                        entry.index, self.snapshot_index
                    ));
                }
                if entry.index > self.last_index() + 1 {
                    return Err(format!(
                        "entry {} leaves a gap after {}",
                        entry.index,
                        self.last_index()
                    ));
                }
                self.entries
                    .truncate((entry.index - self.snapshot_index - 1) as usize);
                self.entries.push_back(entry);
            }
            Record::HardState(hard_state) => self.hard_state = hard_state,
            Record::ConfState(conf_state) => self.conf_state = conf_state,
            Record::Snapshot { index, term } => {
                if index < self.snapshot_index {
                    return Err(format!(
                        "snapshot mark {index} is behind the snapshot at {}",
                        self.snapshot_index
                    ));
                }
                // Keep the entries after it only if the log agrees with the
                // snapshot on its last entry (log matching), as raft-rs does.
                if self.term_of(index) == Some(term) {
                    self.entries.drain(..(index - self.snapshot_index) as usize);
                } else {
                    self.entries.clear();
                }
                self.snapshot_index = index;
                self.snapshot_term = term;
            }
        }
        Ok(())
    }

    /// Records that rebuild this state from nothing.
    pub fn checkpoint(&self) -> Vec<Record> {
        let mut records = vec![Record::Snapshot {
            index: self.snapshot_index,
            term: self.snapshot_term,
        }];
        records.extend(self.entries.iter().cloned().map(Record::Entry));
        records.push(Record::ConfState(self.conf_state.clone()));
        records.push(Record::HardState(self.hard_state.clone()));
        records
    }
}

struct Inner {
    state: LogState,
    wal: Wal,
    /// The commit index in `state` moved since the hard state was last
    /// written (see [`LogStore::persist_ready`]).
    commit_unwritten: bool,
}

/// A compaction in three steps, so that the slow one can run off the
/// replica's thread: [`LogStore::plan_compaction`] (index, term and
/// configuration, from the log), [`Compaction::write`] (the snapshot file,
/// synced and renamed into place: anywhere, any time), then
/// [`LogStore::finish_compaction`] (the log records it). A crash between
/// the last two leaves a snapshot file ahead of the log's snapshot mark,
/// which the next open takes as it is (the entries in between are simply
/// applied again from the snapshot's index on).
#[derive(Debug, Clone)]
pub struct Compaction {
    dir: PathBuf,
    pub index: u64,
    pub term: u64,
    conf_state: ConfState,
}

impl Compaction {
    /// Writes the snapshot file holding `data`, the state machine as of
    /// `self.index`.
    pub fn write(&self, data: Vec<u8>) -> Result<(), LogError> {
        let mut snapshot = Snapshot::default();
        snapshot.data = data.into();
        let mut meta = SnapshotMetadata::default();
        meta.index = self.index;
        meta.term = self.term;
        meta.set_conf_state(self.conf_state.clone());
        snapshot.set_metadata(meta);
        snapshot_file::write(&self.dir, &snapshot)
    }
}

/// raft-rs storage over the write-ahead log. Cheap to clone; every clone
/// shares the same log.
#[derive(Clone)]
pub struct LogStore {
    dir: PathBuf,
    inner: Arc<RwLock<Inner>>,
}

/// Text of the `MEMBER` file of controller `id`'s log.
fn member_text(id: u64) -> String {
    format!("rpool raft log of controller {id}\n")
}

impl LogStore {
    /// Opens the log of controller `id` in `dir`, checking it: checksums
    /// (a torn last write is cut off), the owner in `MEMBER`, the snapshot
    /// file against the log, the hard state's commit against the last
    /// entry. A directory without `MEMBER` is initialised empty only if
    /// `may_init` (nothing else in the data dir says the replica had data);
    /// otherwise the log was lost and opening fails.
    pub fn open(dir: &Path, id: u64, may_init: bool) -> Result<LogStore, LogError> {
        let damaged = |path: PathBuf, detail: String| LogError::Damaged { path, detail };
        if let Ok(text) = std::fs::read_to_string(dir.join(wal::DAMAGED_FILE)) {
            return Err(damaged(dir.join(wal::DAMAGED_FILE), text.trim().to_owned()));
        }
        let member = dir.join(wal::MEMBER_FILE);
        let mut state = LogState::default();
        let wal = match std::fs::read_to_string(&member) {
            Ok(text) if text == member_text(id) => Wal::open(dir, &mut state)?,
            Ok(text) => {
                return Err(damaged(
                    member,
                    format!("this log belongs to another controller ({:?})", text.trim()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !may_init {
                    return Err(damaged(
                        dir.to_owned(),
                        "the raft log is missing (no MEMBER file) while the data dir holds an \
                         earlier rpool's applied state (state/): the log was wiped or lost"
                            .into(),
                    ));
                }
                Self::init(dir, id)?
            }
            Err(e) => return Err(wal::io(&member, e)),
        };
        let store = LogStore {
            dir: dir.to_owned(),
            inner: Arc::new(RwLock::new(Inner {
                state,
                wal,
                commit_unwritten: false,
            })),
        };
        store.reconcile_snapshot()?;
        let inner = store.read();
        let (commit, last) = (inner.state.hard_state.commit, inner.state.last_index());
        if commit > last {
            return Err(damaged(
                dir.to_owned(),
                format!(
                    "the hard state says entry {commit} is committed but the log ends at {last}: entries were lost"
                ),
            ));
        }
        drop(inner);
        Ok(store)
    }

    /// Creates `dir` with its `MEMBER` file and an empty first segment. A
    /// first start interrupted before `MEMBER` may have left files: they
    /// hold nothing anyone relied on, and go.
    fn init(dir: &Path, id: u64) -> Result<Wal, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| wal::io(dir, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            wal::sync_dir(parent)?;
        }
        for item in std::fs::read_dir(dir).map_err(|e| wal::io(dir, e))? {
            let path = item.map_err(|e| wal::io(dir, e))?.path();
            std::fs::remove_file(&path).map_err(|e| wal::io(&path, e))?;
        }
        let wal = Wal::create(dir, &LogState::default())?;
        // A fresh incarnation (module `incarnation`), durable before MEMBER.
        super::incarnation::create(dir)?;
        // Written last: a log without MEMBER holds nothing worth keeping.
        wal::write_atomic(dir, wal::MEMBER_FILE, member_text(id).as_bytes())?;
        Ok(wal)
    }

    /// Completes a compaction or snapshot install interrupted between
    /// writing the snapshot file and recording it in the log; a snapshot
    /// file behind the log (or missing) is damage.
    fn reconcile_snapshot(&self) -> Result<(), LogError> {
        let file = snapshot_file::read(&self.dir)?;
        let mut inner = self.write();
        let logged = inner.state.snapshot_index;
        let (index, term) = file
            .as_ref()
            .map(|s| (s.get_metadata().index, s.get_metadata().term))
            .unwrap_or_default();
        if index < logged {
            return Err(LogError::Damaged {
                path: snapshot_file::path(&self.dir),
                detail: format!(
                    "the log starts after a snapshot at {logged} but the snapshot file holds {}",
                    if file.is_some() {
                        format!("index {index}")
                    } else {
                        "nothing".into()
                    }
                ),
            });
        }
        if index == logged {
            return Ok(());
        }
        let Some(snapshot) = file else { return Ok(()) };
        tracing::warn!(index, "raft log: completing an interrupted snapshot");
        // What the interrupted step would have recorded: the snapshot's
        // membership (the current one for a compaction, nothing having
        // happened since; the leader's for an install) and a commit index
        // that covers it. Entries after it stay if the log matches there.
        let mut hard_state = inner.state.hard_state.clone();
        hard_state.commit = hard_state.commit.max(index);
        hard_state.term = hard_state.term.max(term);
        let records = vec![
            Record::Snapshot { index, term },
            Record::ConfState(snapshot.get_metadata().get_conf_state().clone()),
            Record::HardState(hard_state),
        ];
        inner.write_records(records)?;
        inner.rotate()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when nothing was ever persisted: a brand-new member.
    pub fn is_empty(&self) -> bool {
        let s = &self.read().state;
        s.last_index() == 0 && s.conf_state.voters.is_empty() && s.hard_state.term == 0
    }

    pub fn hard_state(&self) -> HardState {
        self.read().state.hard_state.clone()
    }

    pub fn conf_state(&self) -> ConfState {
        self.read().state.conf_state.clone()
    }

    /// Index of the last snapshot, the point the log was compacted to.
    pub fn snapshot_index(&self) -> u64 {
        self.read().state.snapshot_index
    }

    pub fn last_index_now(&self) -> u64 {
        self.read().state.last_index()
    }

    /// Writes `hard_state` (not yet durable: see [`LogStore::sync`]), even
    /// when only its commit index changed.
    pub fn set_hard_state(&self, hard_state: &HardState) -> Result<(), LogError> {
        self.write()
            .write_records(vec![Record::HardState(hard_state.clone())])
    }

    /// Records a new commit index without changing term or vote.
    pub fn set_commit(&self, commit: u64) -> Result<(), LogError> {
        let mut hard_state = self.hard_state();
        hard_state.commit = commit;
        self.set_hard_state(&hard_state)
    }

    /// Records a new membership, durably at once: the conf change entry it
    /// comes from is applied (and may be recorded as applied) right away.
    pub fn set_conf_state(&self, conf_state: &ConfState) -> Result<(), LogError> {
        let mut inner = self.write();
        inner.write_records(vec![Record::ConfState(conf_state.clone())])?;
        inner.wal.sync()
    }

    /// Appends `entries`, replacing any existing suffix from the first new
    /// index on (a new leader may overwrite uncommitted entries).
    pub fn append(&self, entries: &[Entry]) -> Result<(), LogError> {
        self.persist_ready(entries, None)
    }

    /// What one `Ready` writes to the log: `entries` (replacing any
    /// existing suffix from the first new index on) and then the new hard
    /// state, in ONE batch (one `write`). Entries first: if a crash tears
    /// the batch, no hard state survives that commits a lost entry.
    ///
    /// A `Ready` that only moved the commit index (no entries, same term
    /// and vote) writes nothing, so it needs no sync: the commit index is
    /// kept in memory and reaches the file with the next batch (or the
    /// next checkpoint). Raft does not need it durable (etcd does not sync
    /// it either): after a crash the stored commit may trail, `Core::open`
    /// raises it to the applied index and the leader tells the rest. This
    /// halves the syncs of a sequential writer (the entry's `Ready`, then
    /// the commit's).
    pub fn persist_ready(&self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<(), LogError> {
        let mut inner = self.write();
        let mut records: Vec<Record> = entries.iter().cloned().map(Record::Entry).collect();
        match hard_state {
            Some(hs)
                if entries.is_empty()
                    && hs.term == inner.state.hard_state.term
                    && hs.vote == inner.state.hard_state.vote =>
            {
                inner.state.hard_state.commit = hs.commit;
                inner.commit_unwritten = true;
                return Ok(());
            }
            Some(hs) => records.push(Record::HardState(hs.clone())),
            None if inner.commit_unwritten && !records.is_empty() => {
                records.push(Record::HardState(inner.state.hard_state.clone()))
            }
            None => {}
        }
        if records.is_empty() {
            return Ok(());
        }
        inner.write_records(records)
    }

    /// Records a commit index raft-rs reported outside a hard state (a
    /// light ready), to be written with the next batch, checkpoint or
    /// [`LogStore::close`]; not durable by itself, like every commit index.
    pub fn note_commit(&self, commit: u64) {
        let mut inner = self.write();
        if commit > inner.state.hard_state.commit {
            inner.state.hard_state.commit = commit;
            inner.commit_unwritten = true;
        }
    }

    /// Writes a commit index kept in memory (see [`LogStore::persist_ready`])
    /// and makes everything durable: at a clean stop, so that the next
    /// start applies every entry this replica knew committed before it
    /// answers anyone.
    pub fn close(&self) -> Result<(), LogError> {
        let mut inner = self.write();
        if inner.commit_unwritten {
            let hard_state = inner.state.hard_state.clone();
            inner.write_records(vec![Record::HardState(hard_state)])?;
        }
        inner.wal.sync()
    }

    /// Makes everything written so far durable (fdatasync), replacing the
    /// segment by a checkpoint first when it grew past its limit.
    pub fn sync(&self) -> Result<(), LogError> {
        let mut inner = self.write();
        if inner.wal.wants_rotation() {
            return inner.rotate();
        }
        inner.wal.sync()
    }

    /// Installs a snapshot received from the leader: the log restarts after
    /// it. The caller restores the state machine from `snapshot.data`, and
    /// makes it durable, first.
    pub fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<(), LogError> {
        let meta = snapshot.get_metadata();
        snapshot_file::write(&self.dir, snapshot)?;
        let mut inner = self.write();
        let mut hard_state = inner.state.hard_state.clone();
        hard_state.commit = hard_state.commit.max(meta.index);
        hard_state.term = hard_state.term.max(meta.term);
        inner.write_records(vec![
            Record::Snapshot {
                index: meta.index,
                term: meta.term,
            },
            Record::ConfState(meta.get_conf_state().clone()),
            Record::HardState(hard_state),
        ])?;
        // An installed snapshot replaces the whole log: drop the old one.
        inner.state.entries.clear();
        inner.rotate()
    }

    /// Stores `data`, the state machine as of applied entry `index`, as the
    /// snapshot, and drops the log up to and including `index`: the three
    /// steps of a [`Compaction`] at once (tests; the replica runs them
    /// apart, `Core::compact`).
    #[cfg(test)]
    pub fn compact(&self, index: u64, data: Vec<u8>) -> Result<(), LogError> {
        let Some(plan) = self.plan_compaction(index)? else {
            return Ok(());
        };
        plan.write(data)?;
        self.finish_compaction(&plan)
    }

    /// The first step of a compaction at `index` (see [`Compaction`]);
    /// `None` when the log's snapshot is already there or past it.
    pub fn plan_compaction(&self, index: u64) -> Result<Option<Compaction>, LogError> {
        let inner = self.read();
        if index <= inner.state.snapshot_index {
            return Ok(None);
        }
        let term = inner.state.term_of(index).ok_or(LogError::Missing(index))?;
        Ok(Some(Compaction {
            dir: self.dir.clone(),
            index,
            term,
            conf_state: inner.state.conf_state.clone(),
        }))
    }

    /// The last step of a compaction whose snapshot file is written: the
    /// log records the snapshot and drops the entries it holds (a new
    /// segment). Nothing to do when a newer snapshot got there first.
    pub fn finish_compaction(&self, plan: &Compaction) -> Result<(), LogError> {
        let mut inner = self.write();
        if plan.index <= inner.state.snapshot_index {
            return Ok(());
        }
        inner.write_records(vec![Record::Snapshot {
            index: plan.index,
            term: plan.term,
        }])?;
        inner.rotate()
    }

    /// The stored snapshot, if any (data included).
    pub fn stored_snapshot(&self) -> Result<Option<Snapshot>, LogError> {
        snapshot_file::read(&self.dir)
    }

    /// Marks the log as damaged: every later open fails with `detail`.
    pub fn mark_damaged(&self, detail: &str) -> Result<(), LogError> {
        wal::write_atomic(&self.dir, wal::DAMAGED_FILE, detail.as_bytes())
    }

    /// Bytes the live log segment is extended by at a time (`[raft]
    /// preallocate_mib`; 0: none).
    pub fn set_preallocation(&self, bytes: u64) {
        self.write().wal.set_preallocation(bytes);
    }

    /// The live segment, its durable length and its length (simulator).
    #[cfg(test)]
    pub fn unsynced(&self) -> (PathBuf, u64, u64) {
        self.read().wal.unsynced()
    }
}

impl Inner {
    /// Applies `records` to the state and appends them as one batch; the
    /// file gets nothing the state refused. A failure leaves the memory
    /// ahead of the file: the node stops on it.
    fn write_records(&mut self, records: Vec<Record>) -> Result<(), LogError> {
        let batch = wal::encode_batch(&records);
        if records.iter().any(|r| matches!(r, Record::HardState(_))) {
            self.commit_unwritten = false;
        }
        for record in records {
            self.state.apply(record).map_err(LogError::Invalid)?;
        }
        self.wal.append(&batch)
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        // The checkpoint carries the whole hard state, commit included.
        self.commit_unwritten = false;
        self.wal.rotate(&self.state)
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let s = &self.read().state;
        Ok(RaftState::new(s.hard_state.clone(), s.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let inner = self.read();
        let s = &inner.state;
        if low <= s.snapshot_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > s.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - s.snapshot_index - 1) as usize;
        let to = (high - s.snapshot_index - 1) as usize;
        let mut entries: Vec<Entry> = s.entries.range(from..to).cloned().collect();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let s = &self.read().state;
        if idx < s.snapshot_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        s.term_of(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read().state.snapshot_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read().state.last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        match self.stored_snapshot()? {
            Some(snapshot) if snapshot.get_metadata().index >= request_index => Ok(snapshot),
            _ => Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)),
        }
    }
}

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;
