//! The Raft log on disk: raft-rs `Storage` over a sled tree.
//!
//! Layout of the tree (keys are bytes, integers big-endian so that sled's
//! ordering is index order):
//! - `e` + index (8 bytes): an `eraftpb::Entry`;
//! - `hs`: the `HardState` (term, vote, commit);
//! - `cs`: the `ConfState` (voters, learners);
//! - `snap`: the last state-machine snapshot (`eraftpb::Snapshot`, metadata
//!   and data), written by compaction or received from the leader.
//!
//! Writes go into the tree without flushing; the node flushes the database
//! once per `Ready`, before it sends `persisted_messages` or acknowledges a
//! proposal (flush-before-ack). The first and last index, the hard state, the
//! conf state and the snapshot metadata are cached in memory so that raft-rs'
//! hot calls (`term`, `last_index`) cost no disk read.

// raft-rs messages are protobuf 2 structs, built field by field.
#![allow(clippy::field_reassign_with_default)]

use std::sync::{Arc, RwLock};

use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

const HARD_STATE: &[u8] = b"hs";
const CONF_STATE: &[u8] = b"cs";
const SNAPSHOT: &[u8] = b"snap";
const ENTRY_PREFIX: u8 = b'e';

fn entry_key(index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = ENTRY_PREFIX;
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

/// Errors reading or writing the log: sled I/O or a record that does not
/// decode (a corrupt data dir). Both make the node stop rather than guess.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("raft log I/O: {0}")]
    Io(#[from] sled::Error),
    #[error("raft log record {key} does not decode: {source}")]
    Corrupt {
        key: String,
        source: protobuf::ProtobufError,
    },
    #[error("raft log is missing entry {0} inside its range")]
    Missing(u64),
}

impl From<LogError> for raft::Error {
    fn from(err: LogError) -> raft::Error {
        raft::Error::Store(StorageError::Other(Box::new(err)))
    }
}

#[derive(Debug, Clone, Default)]
struct Cached {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the last snapshot (0, 0 when none): the log starts
    /// right after it.
    snapshot_index: u64,
    snapshot_term: u64,
    /// Last index in the log (== snapshot_index when the log is empty).
    last_index: u64,
}

/// raft-rs storage over a sled tree. Cheap to clone; every clone shares the
/// same tree and cache.
#[derive(Clone)]
pub struct LogStore {
    tree: sled::Tree,
    cached: Arc<RwLock<Cached>>,
}

fn decode<M: protobuf::Message>(key: &[u8], bytes: &[u8]) -> Result<M, LogError> {
    M::parse_from_bytes(bytes).map_err(|source| LogError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

fn encode<M: protobuf::Message>(message: &M) -> Vec<u8> {
    message
        .write_to_bytes()
        .expect("encoding a raft message into memory cannot fail")
}

impl LogStore {
    /// Opens the log in `tree`, reading back what an earlier run persisted.
    pub fn open(tree: sled::Tree) -> Result<LogStore, LogError> {
        let mut cached = Cached::default();
        if let Some(bytes) = tree.get(HARD_STATE)? {
            cached.hard_state = decode(HARD_STATE, &bytes)?;
        }
        if let Some(bytes) = tree.get(CONF_STATE)? {
            cached.conf_state = decode(CONF_STATE, &bytes)?;
        }
        if let Some(bytes) = tree.get(SNAPSHOT)? {
            let snapshot: Snapshot = decode(SNAPSHOT, &bytes)?;
            cached.snapshot_index = snapshot.get_metadata().index;
            cached.snapshot_term = snapshot.get_metadata().term;
        }
        cached.last_index = match tree.scan_prefix([ENTRY_PREFIX]).next_back() {
            Some(item) => {
                let (key, _) = item?;
                u64::from_be_bytes(key[1..9].try_into().expect("entry keys are 9 bytes"))
            }
            None => cached.snapshot_index,
        };
        Ok(LogStore {
            tree,
            cached: Arc::new(RwLock::new(cached)),
        })
    }

    /// True when nothing was ever persisted: a brand-new member.
    pub fn is_empty(&self) -> bool {
        let c = self.cached.read().unwrap();
        c.last_index == 0 && c.conf_state.voters.is_empty() && c.hard_state.term == 0
    }

    pub fn hard_state(&self) -> HardState {
        self.cached.read().unwrap().hard_state.clone()
    }

    pub fn conf_state(&self) -> ConfState {
        self.cached.read().unwrap().conf_state.clone()
    }

    /// Index of the last snapshot, the point the log was compacted to.
    pub fn snapshot_index(&self) -> u64 {
        self.cached.read().unwrap().snapshot_index
    }

    pub fn set_hard_state(&self, hard_state: &HardState) -> Result<(), LogError> {
        self.persist_ready(&[], Some(hard_state))
    }

    /// Records a new commit index without changing term or vote.
    pub fn set_commit(&self, commit: u64) -> Result<(), LogError> {
        let mut hard_state = self.hard_state();
        hard_state.commit = commit;
        self.set_hard_state(&hard_state)
    }

    pub fn set_conf_state(&self, conf_state: &ConfState) -> Result<(), LogError> {
        self.tree.insert(CONF_STATE, encode(conf_state))?;
        self.cached.write().unwrap().conf_state = conf_state.clone();
        Ok(())
    }

    /// Appends `entries`, replacing any existing suffix from the first new
    /// index on (a new leader may overwrite uncommitted entries).
    pub fn append(&self, entries: &[Entry]) -> Result<(), LogError> {
        self.persist_ready(entries, None)
    }

    /// What one `Ready` writes to the log: `entries` (replacing any
    /// existing suffix from the first new index on: a new leader may
    /// overwrite uncommitted entries) and the new hard state, in ONE sled
    /// batch, so a Ready costs one write however much it carries.
    pub fn persist_ready(&self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<(), LogError> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut cached = self.cached.write().unwrap();
        let mut batch = sled::Batch::default();
        if let Some(first) = entries.first() {
            assert!(
                first.index > cached.snapshot_index,
                "append at {} overlaps the snapshot at {}",
                first.index,
                cached.snapshot_index
            );
            assert!(
                first.index <= cached.last_index + 1,
                "append at {} leaves a gap after {}",
                first.index,
                cached.last_index
            );
            for index in first.index..=cached.last_index {
                batch.remove(&entry_key(index));
            }
            for entry in entries {
                batch.insert(&entry_key(entry.index), encode(entry));
            }
        }
        if let Some(hard_state) = hard_state {
            batch.insert(HARD_STATE, encode(hard_state));
        }
        self.tree.apply_batch(batch)?;
        if let Some(last) = entries.last() {
            cached.last_index = last.index;
        }
        if let Some(hard_state) = hard_state {
            cached.hard_state = hard_state.clone();
        }
        Ok(())
    }

    /// Installs a snapshot received from the leader: the log restarts after
    /// it. The caller restores the state machine from `snapshot.data`.
    pub fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<(), LogError> {
        let meta = snapshot.get_metadata();
        let mut cached = self.cached.write().unwrap();
        let mut batch = sled::Batch::default();
        for index in cached.snapshot_index + 1..=cached.last_index {
            batch.remove(&entry_key(index));
        }
        batch.insert(SNAPSHOT, encode(snapshot));
        batch.insert(CONF_STATE, encode(meta.get_conf_state()));
        let mut hard_state = cached.hard_state.clone();
        hard_state.commit = hard_state.commit.max(meta.index);
        hard_state.term = hard_state.term.max(meta.term);
        batch.insert(HARD_STATE, encode(&hard_state));
        self.tree.apply_batch(batch)?;
        cached.hard_state = hard_state;
        cached.conf_state = meta.get_conf_state().clone();
        cached.snapshot_index = meta.index;
        cached.snapshot_term = meta.term;
        cached.last_index = meta.index;
        Ok(())
    }

    /// Stores `data`, the state machine as of applied entry `index`, as the
    /// snapshot, and drops the log up to and including `index`.
    pub fn compact(&self, index: u64, data: Vec<u8>) -> Result<(), LogError> {
        let term = raft::Storage::term(self, index).map_err(|e| match e {
            raft::Error::Store(StorageError::Other(inner)) => match inner.downcast::<LogError>() {
                Ok(log_error) => *log_error,
                Err(other) => panic!("unexpected storage error: {other}"),
            },
            _ => LogError::Missing(index),
        })?;
        let mut cached = self.cached.write().unwrap();
        if index <= cached.snapshot_index {
            return Ok(());
        }
        assert!(index <= cached.last_index, "compacting past the log end");
        let mut snapshot = Snapshot::default();
        snapshot.data = data.into();
        let mut meta = SnapshotMetadata::default();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(cached.conf_state.clone());
        snapshot.set_metadata(meta);
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT, encode(&snapshot));
        for i in cached.snapshot_index + 1..=index {
            batch.remove(&entry_key(i));
        }
        self.tree.apply_batch(batch)?;
        cached.snapshot_index = index;
        cached.snapshot_term = term;
        Ok(())
    }

    /// The stored snapshot, if any (data included).
    pub fn stored_snapshot(&self) -> Result<Option<Snapshot>, LogError> {
        match self.tree.get(SNAPSHOT)? {
            Some(bytes) => Ok(Some(decode(SNAPSHOT, &bytes)?)),
            None => Ok(None),
        }
    }

    fn read_entry(&self, index: u64) -> Result<Entry, LogError> {
        let key = entry_key(index);
        let bytes = self.tree.get(key)?.ok_or(LogError::Missing(index))?;
        decode(&key, &bytes)
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.cached.read().unwrap();
        Ok(RaftState::new(c.hard_state.clone(), c.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let (first, last) = {
            let c = self.cached.read().unwrap();
            (c.snapshot_index + 1, c.last_index)
        };
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(high <= last + 1, "entries [{low}, {high}) past last index {last}");
        let max_size = max_size.into();
        let mut entries = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        for item in self.tree.range(entry_key(low)..entry_key(high)) {
            let (key, bytes) = item.map_err(LogError::from)?;
            let entry: Entry = decode(&key, &bytes)?;
            size += bytes.len() as u64;
            if !entries.is_empty() && max_size.is_some_and(|max| size > max) {
                break;
            }
            entries.push(entry);
        }
        let expected = entries.first().map(|e| e.index);
        if expected != Some(low) && low < high {
            return Err(LogError::Missing(low).into());
        }
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let (snapshot_index, snapshot_term, last) = {
            let c = self.cached.read().unwrap();
            (c.snapshot_index, c.snapshot_term, c.last_index)
        };
        if idx == snapshot_index {
            return Ok(snapshot_term);
        }
        if idx < snapshot_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > last {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.read_entry(idx)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.cached.read().unwrap().snapshot_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.cached.read().unwrap().last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        match self.stored_snapshot()? {
            Some(snapshot) if snapshot.get_metadata().index >= request_index => Ok(snapshot),
            _ => Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = format!("cmd-{index}").into_bytes().into();
        e
    }

    fn open(dir: &std::path::Path) -> (sled::Db, LogStore) {
        let db = sled::open(dir).unwrap();
        let store = LogStore::open(db.open_tree("raft").unwrap()).unwrap();
        (db, store)
    }

    #[test]
    fn appended_entries_hard_state_and_conf_state_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (db, store) = open(dir.path());
            assert!(store.is_empty());
            store.append(&[entry(1, 1), entry(2, 1), entry(3, 2)]).unwrap();
            let mut hs = HardState::default();
            hs.term = 2;
            hs.vote = 3;
            hs.commit = 2;
            store.set_hard_state(&hs).unwrap();
            let mut cs = ConfState::default();
            cs.voters = vec![1, 2, 3];
            store.set_conf_state(&cs).unwrap();
            db.flush().unwrap();
        }
        let (_db, store) = open(dir.path());
        assert!(!store.is_empty());
        let state = store.initial_state().unwrap();
        assert_eq!(
            (
                state.hard_state.term,
                state.hard_state.vote,
                state.hard_state.commit
            ),
            (2, 3, 2)
        );
        assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(
            (store.first_index().unwrap(), store.last_index().unwrap()),
            (1, 3)
        );
        assert_eq!(store.term(3).unwrap(), 2);
        let got = store
            .entries(1, 4, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn a_conflicting_append_replaces_the_uncommitted_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = open(dir.path());
        store
            .append(&[entry(1, 1), entry(2, 1), entry(3, 1), entry(4, 1)])
            .unwrap();
        store.append(&[entry(3, 2)]).unwrap();
        assert_eq!(store.last_index().unwrap(), 3);
        assert_eq!(store.term(3).unwrap(), 2);
        assert!(matches!(
            store.term(4),
            Err(raft::Error::Store(StorageError::Unavailable))
        ));
        let got = store
            .entries(1, 4, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn compaction_drops_the_prefix_and_keeps_its_term() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = open(dir.path());
        store
            .append(&(1..=10).map(|i| entry(i, 1 + i / 5)).collect::<Vec<_>>())
            .unwrap();
        store.compact(6, b"state at 6".to_vec()).unwrap();
        assert_eq!(store.first_index().unwrap(), 7);
        assert_eq!(store.term(6).unwrap(), 2);
        assert!(matches!(
            store.term(5),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            store.entries(5, 8, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let snap = store.snapshot(0, 2).unwrap();
        assert_eq!(snap.get_metadata().index, 6);
        assert_eq!(&snap.data[..], b"state at 6");
        assert!(
            store.snapshot(7, 2).is_err(),
            "a snapshot older than requested was served"
        );
        // Size limit: at least one entry, then stop at the budget.
        let one = store
            .entries(7, 11, Some(1), GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn an_installed_snapshot_replaces_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (db, store) = open(dir.path());
            store.append(&[entry(1, 1), entry(2, 1)]).unwrap();
            let mut snapshot = Snapshot::default();
            snapshot.data = b"leader state".to_vec().into();
            let meta = snapshot.mut_metadata();
            meta.index = 50;
            meta.term = 4;
            meta.mut_conf_state().voters = vec![1, 2, 3];
            store.apply_snapshot(&snapshot).unwrap();
            db.flush().unwrap();
        }
        let (_db, store) = open(dir.path());
        assert_eq!(
            (store.first_index().unwrap(), store.last_index().unwrap()),
            (51, 50)
        );
        assert_eq!(store.term(50).unwrap(), 4);
        assert_eq!(store.hard_state().commit, 50);
        assert_eq!(store.conf_state().voters, vec![1, 2, 3]);
        store.append(&[entry(51, 4)]).unwrap();
        assert_eq!(store.last_index().unwrap(), 51);
    }
}
