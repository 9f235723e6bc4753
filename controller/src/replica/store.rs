//! Durable state in sled.
//!
//! Layout: one sled database at `{data_dir}/state`, one tree (the default
//! one), two kinds of keys:
//!
//! | key                  | value                       |
//! |----------------------|-----------------------------|
//! | `host/{host_id}`     | JSON [`HostRecord`]         |
//! | `member/{id}`        | controller address (UTF-8)  |
//! | `pool/{name}`        | JSON [`PoolRecord`](crate::state::pool::PoolRecord) |
//! | `task/{id}`          | JSON [`TaskRecord`](crate::state::pool::TaskRecord) |
//! | `event/{index}`      | JSON [`Event`](crate::state::pool::Event), index big-endian |
//! | `token/{id}`         | JSON [`TokenRecord`](crate::state::tokens::TokenRecord) (secret hashed) |
//! | `meta/applied_index` | `u64`, 8 bytes big-endian   |
//!
//! The Raft log lives in `{data_dir}/raft` ([`crate::raft::wal`]).
//!
//! Every applied entry writes its changed record *and* the applied index in
//! one [`sled::Batch`] (atomic; the controller merges the batches of
//! 100 ms, in order, into one for its writer thread:
//! [`crate::replica::writer`]).
//! sled is synced (flush + fdatasync of its
//! files, [`crate::raft::durable`]) before compaction drops log entries and
//! after a snapshot restore; after a crash the store holds a prefix of the
//! applied entries with a matching applied index, and the log still holds
//! every entry after it, which are applied again.
//!
//! sled holds a file lock on the directory: every handle must be dropped
//! before the same path is opened again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::replica::writer::Ops;
use crate::state::command::HostRecord;
use crate::state::{Change, State};

const HOST_PREFIX: &str = "host/";
const MEMBER_PREFIX: &str = "member/";
const POOL_PREFIX: &str = "pool/";
const TASK_PREFIX: &str = "task/";
const EVENT_PREFIX: &str = "event/";
const TOKEN_PREFIX: &str = "token/";
const APPLIED_INDEX_KEY: &str = "meta/applied_index";
/// How long [`Store::open`] waits for another opener's file lock.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Storage failures. Any of them means the controller cannot make progress
/// safely.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled could not open the database (permissions, lock held by another
    /// process, corrupt files).
    #[error("opening the state store at {path}")]
    Open {
        /// Database directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A read, write or flush failed.
    #[error("state store I/O failed")]
    Io(#[from] sled::Error),
    /// A stored value could not be decoded.
    #[error("state store key {key:?} holds an invalid value: {problem}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A record could not be encoded (should not happen).
    #[error("encoding host record {host_id}")]
    Encode {
        /// Host id.
        host_id: String,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    /// True when the store's files are damaged (sled found a checksum
    /// mismatch, or a stored value does not decode): restarting cannot help.
    pub fn is_damage(&self) -> bool {
        match self {
            StoreError::Corrupt { .. } => true,
            StoreError::Open { source, .. } | StoreError::Io(source) => {
                matches!(source, sled::Error::Corruption { .. })
            }
            StoreError::Encode { .. } => false,
        }
    }
}

/// Handle on the sled database. Cheap to clone (sled handles are `Arc`s).
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) `{data_dir}/state`.
    ///
    /// sled's file lock is released by a background thread shortly after the
    /// last handle of a previous opener is dropped (a restart in the same
    /// process, or a process that is still exiting), so a held lock is
    /// retried for up to [`LOCK_WAIT`] before it is reported.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join("state");
        let started = std::time::Instant::now();
        loop {
            // No timed flushes: everything sled holds is also in the Raft
            // log until sled is synced, before every compaction
            // (`raft::durable::sync_state`); sled's flusher thread only
            // spent CPU. HighThroughput: fewer segment rewrites.
            let config = sled::Config::new()
                .path(&path)
                .flush_every_ms(None)
                .mode(sled::Mode::HighThroughput);
            match config.open() {
                Ok(db) => return Ok(Store { db, path }),
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock") && started.elapsed() < LOCK_WAIT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(source) => return Err(StoreError::Open { path, source }),
            }
        }
    }

    /// Directory of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rebuilds the state machine from what is stored.
    pub fn load(&self) -> Result<State, StoreError> {
        let mut hosts = BTreeMap::new();
        for item in self.db.scan_prefix(HOST_PREFIX) {
            let (key, value) = item?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let record: HostRecord = serde_json::from_slice(&value).map_err(|e| StoreError::Corrupt {
                key: key.clone(),
                problem: e.to_string(),
            })?;
            if key[HOST_PREFIX.len()..] != record.host_id {
                return Err(StoreError::Corrupt {
                    problem: format!("record is for host {}", record.host_id),
                    key,
                });
            }
            hosts.insert(record.host_id.clone(), record);
        }
        let mut members = BTreeMap::new();
        for item in self.db.scan_prefix(MEMBER_PREFIX) {
            let (key, value) = item?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let corrupt = |problem: &str| StoreError::Corrupt {
                key: key.clone(),
                problem: problem.to_owned(),
            };
            let id: u64 = key[MEMBER_PREFIX.len()..]
                .parse()
                .map_err(|_| corrupt("id is not a number"))?;
            let address = String::from_utf8(value.to_vec()).map_err(|_| corrupt("address is not UTF-8"))?;
            members.insert(id, address);
        }
        let pools = load_json(&self.db, POOL_PREFIX, |p: &crate::state::pool::PoolRecord| {
            p.spec.name.clone()
        })?;
        let tasks = load_json(&self.db, TASK_PREFIX, |t: &crate::state::pool::TaskRecord| {
            t.task_id.clone()
        })?;
        let events: std::collections::VecDeque<crate::state::pool::Event> =
            load_json(&self.db, EVENT_PREFIX, |e: &crate::state::pool::Event| {
                format!("{:020}", e.index)
            })?
            .into_values()
            .collect();
        let applied_index = match self.db.get(APPLIED_INDEX_KEY)? {
            None => 0,
            Some(bytes) => {
                let bytes: [u8; 8] = bytes.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    key: APPLIED_INDEX_KEY.to_owned(),
                    problem: format!("expected 8 bytes, found {}", bytes.len()),
                })?;
                u64::from_be_bytes(bytes)
            }
        };
        let mut state = State::from_parts(hosts, members, applied_index);
        state.set_pool_state(pools, tasks, events);
        state.set_tokens(load_json(
            &self.db,
            TOKEN_PREFIX,
            |t: &crate::state::tokens::TokenRecord| t.id.clone(),
        )?);
        Ok(state)
    }

    /// The database, shared with the Raft log (tree `raft`).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Writes `change` (its records and its index) in one atomic batch,
    /// without waiting for the disk (see the module doc).
    pub fn write(&self, change: &Change) -> Result<(), StoreError> {
        let mut ops = Ops::default();
        self.write_into(&mut ops, change)?;
        self.db.apply_batch(ops.into_batch())?;
        Ok(())
    }

    /// Adds what `change` writes to `batch`: its host records, pools,
    /// tasks and events, and the applied index.
    pub fn write_into(&self, batch: &mut Ops, change: &Change) -> Result<(), StoreError> {
        for record in change.record.iter().chain(&change.more.hosts) {
            batch.insert(
                format!("{HOST_PREFIX}{}", record.host_id).as_bytes(),
                encode(record)?,
            );
        }
        for (name, pool) in &change.more.pools {
            let key = format!("{POOL_PREFIX}{name}");
            match pool {
                Some(pool) => batch.insert(key.as_bytes(), json(pool)),
                None => batch.remove(key.as_bytes()),
            }
        }
        for (id, task) in &change.more.tasks {
            let key = format!("{TASK_PREFIX}{id}");
            match task {
                Some(task) => batch.insert(key.as_bytes(), json(task)),
                None => batch.remove(key.as_bytes()),
            }
        }
        for event in &change.more.events {
            batch.insert(event_key(event.index), json(event));
        }
        for (id, token) in &change.more.tokens {
            let key = format!("{TOKEN_PREFIX}{id}");
            match token {
                Some(token) => batch.insert(key.as_bytes(), json(token)),
                None => batch.remove(key.as_bytes()),
            }
        }
        batch.insert(APPLIED_INDEX_KEY, &change.index.to_be_bytes());
        Ok(())
    }

    /// Adds to `batch` the removal of the stored events at `indexes` (the
    /// state machine keeps the newest
    /// [`MAX_EVENTS`](crate::state::pool::MAX_EVENTS); usually one goes).
    pub fn remove_events_into(batch: &mut Ops, indexes: impl IntoIterator<Item = u64>) {
        for index in indexes {
            batch.remove(event_key(index));
        }
    }

    /// Adds to `batch` that entries up to `index` are applied (an entry
    /// that changed nothing).
    pub fn write_applied_into(batch: &mut Ops, index: u64) {
        batch.insert(APPLIED_INDEX_KEY, &index.to_be_bytes());
    }

    /// Adds to `batch` a membership change at `index` (None removes `id`).
    pub fn write_member_into(batch: &mut Ops, index: u64, id: u64, address: Option<&str>) {
        let key = format!("{MEMBER_PREFIX}{id}");
        match address {
            Some(address) => batch.insert(key.as_bytes(), address.as_bytes()),
            None => batch.remove(key.as_bytes()),
        }
        batch.insert(APPLIED_INDEX_KEY, &index.to_be_bytes());
    }

    /// Replaces everything stored with `state` in one atomic batch (a
    /// snapshot from the leader), and flushes.
    pub fn replace_all(&self, state: &State) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for prefix in [
            HOST_PREFIX,
            MEMBER_PREFIX,
            POOL_PREFIX,
            TASK_PREFIX,
            EVENT_PREFIX,
            TOKEN_PREFIX,
        ] {
            for item in self.db.scan_prefix(prefix) {
                let (key, _) = item?;
                batch.remove(key);
            }
        }
        for record in state.hosts().values() {
            batch.insert(
                format!("{HOST_PREFIX}{}", record.host_id).as_bytes(),
                encode(record)?,
            );
        }
        for (id, address) in state.members() {
            batch.insert(format!("{MEMBER_PREFIX}{id}").as_bytes(), address.as_bytes());
        }
        for (name, pool) in state.pools() {
            batch.insert(format!("{POOL_PREFIX}{name}").as_bytes(), json(pool));
        }
        for (id, task) in state.tasks() {
            batch.insert(format!("{TASK_PREFIX}{id}").as_bytes(), json(task));
        }
        for event in state.events() {
            batch.insert(event_key(event.index).as_slice(), json(event));
        }
        for (id, token) in state.tokens() {
            batch.insert(format!("{TOKEN_PREFIX}{id}").as_bytes(), json(token));
        }
        batch.insert(APPLIED_INDEX_KEY, &state.applied_index().to_be_bytes());
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// [`Store::write`], then waits until it is on disk.
    pub async fn persist(&self, change: &Change) -> Result<(), StoreError> {
        self.write(change)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Waits until everything written so far is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always encode as JSON")
}

fn event_key(index: u64) -> Vec<u8> {
    let mut key = EVENT_PREFIX.as_bytes().to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// Every JSON record under `prefix`, keyed by `key_of(record)`.
fn load_json<T: serde::de::DeserializeOwned>(
    db: &sled::Db,
    prefix: &str,
    key_of: impl Fn(&T) -> String,
) -> Result<BTreeMap<String, T>, StoreError> {
    let mut out = BTreeMap::new();
    for item in db.scan_prefix(prefix) {
        let (key, value) = item?;
        let record: T = serde_json::from_slice(&value).map_err(|e| StoreError::Corrupt {
            key: String::from_utf8_lossy(&key).into_owned(),
            problem: e.to_string(),
        })?;
        out.insert(key_of(&record), record);
    }
    Ok(out)
}

fn encode(record: &HostRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|source| StoreError::Encode {
        host_id: record.host_id.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::tests::facts;
    use crate::state::command::{Command, HostState};

    async fn apply_and_persist(store: &Store, sm: &mut State, cmd: Command) {
        let change = sm.plan(sm.applied_index() + 1, &cmd).unwrap();
        store.persist(&change).await.unwrap();
        sm.commit(change);
    }

    #[tokio::test]
    async fn a_reopened_store_holds_every_persisted_command() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = State::new();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.load().unwrap(), State::new());
            apply_and_persist(
                &store,
                &mut sm,
                Command::RegisterHost {
                    host_id: "h1".to_owned(),
                    agent_version: "0.1.0".to_owned(),
                    facts: facts("h1", 8),
                    at_unix_ms: 10,
                },
            )
            .await;
            apply_and_persist(
                &store,
                &mut sm,
                Command::SetHostState {
                    host_id: "h1".to_owned(),
                    state: HostState::Down,
                    reason: "no heartbeat for 5.0s".to_owned(),
                    at_unix_ms: 20,
                },
            )
            .await;
            // A no-op still advances the persisted index.
            apply_and_persist(
                &store,
                &mut sm,
                Command::SetHostState {
                    host_id: "h1".to_owned(),
                    state: HostState::Down,
                    reason: "again".to_owned(),
                    at_unix_ms: 30,
                },
            )
            .await;
            // `store` (the only sled handle) is dropped here, releasing the lock.
        }
        let reopened = Store::open(dir.path()).unwrap();
        let loaded = reopened.load().unwrap();
        assert_eq!(loaded, sm);
        assert_eq!(loaded.applied_index(), 3);
        assert_eq!(loaded.host("h1").unwrap().state, HostState::Down);
        assert_eq!(reopened.path(), dir.path().join("state"));
    }

    #[tokio::test]
    async fn a_corrupt_record_is_reported_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.db.insert("host/h1", b"not json".to_vec()).unwrap();
            store.flush().await.unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let err = store.load().unwrap_err();
        assert!(err.to_string().contains("host/h1"), "{err}");
    }

    #[tokio::test]
    async fn a_truncated_applied_index_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.db.insert(APPLIED_INDEX_KEY, &[1u8, 2][..]).unwrap();
        let err = store.load().unwrap_err();
        assert!(err.to_string().contains("expected 8 bytes"), "{err}");
    }

    #[test]
    fn a_second_open_of_a_locked_store_fails_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("state"), "{err}");
    }
}
