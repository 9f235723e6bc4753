//! `rpool-controller --restore FILE`: a new data dir from a backup
//! (`rpoolctl snapshot save`), after every data dir of the group is lost.
//!
//! The backup is checked whole first (checksums, [`rpool_proto::backup`]);
//! then, in an empty data dir only, the Raft log is created holding the
//! backup's state as its snapshot (the log is the only store: the state is
//! rebuilt from it on start): a snapshot at the
//! backup's applied index and term whose voters are this config's
//! `[[peers]]` (the controller itself for a group of one), with the state's
//! controller addresses replaced by the configured ones. Each member of the
//! group restored from the same file starts from the very same point, as if
//! all of them had compacted their logs there; raft-rs needs nothing else.
//! A member left empty catches up from the others by snapshot.
//!
//! `RESTORING` marks a restore in progress: a restore cut short (a crash, a
//! full disk) leaves it, and the controller refuses to start on that dir
//! ([`check_not_interrupted`]) instead of serving half a state.

// raft-rs messages are protobuf 2 structs, built field by field.
#![allow(clippy::field_reassign_with_default)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use raft::prelude::{ConfState, Snapshot, SnapshotMetadata};
use rpool_proto::backup::{self, BackupError, Counts, Header};

use crate::raft::log_store::{LogError, LogStore};
use crate::raft::wal;
use crate::replica::apply::SnapshotData;

/// Present in a data dir while a restore fills it.
pub const RESTORING_FILE: &str = "RESTORING";

/// Why a restore did not happen (or did not finish).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "the data dir {0} is not empty: a restore fills only an empty data dir and never mixes with old data; \
         move it away (or wipe it) and run the restore again"
    )]
    NotEmpty(PathBuf),
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// The checksums hold but the payload is not a state this build reads.
    #[error("the backup file {path} cannot be restored: {detail}")]
    Payload { path: PathBuf, detail: String },
    #[error(
        "a restore into the data dir {0} was cut short ({RESTORING_FILE} is still there): it holds part of a \
         state; wipe the data dir and run `rpool-controller --restore FILE` again"
    )]
    Interrupted(PathBuf),
    #[error("writing the restored data into {dir}: {source}")]
    Write {
        dir: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl RestoreError {
    /// True when the backup file is at fault (damaged or not a state).
    pub fn is_damaged_backup(&self) -> bool {
        matches!(
            self,
            RestoreError::Backup(BackupError::Damaged { .. }) | RestoreError::Payload { .. }
        )
    }
}

/// What was restored.
#[derive(Debug, Clone)]
pub struct Restored {
    pub header: Header,
    pub counts: Counts,
    /// Voters of the restored group.
    pub voters: Vec<u64>,
}

/// Fails when `data_dir` holds a restore that was cut short.
pub fn check_not_interrupted(data_dir: &Path) -> Result<(), RestoreError> {
    if data_dir.join(RESTORING_FILE).exists() {
        return Err(RestoreError::Interrupted(data_dir.to_owned()));
    }
    Ok(())
}

/// Fails unless `dir` is missing or an empty directory.
fn check_empty(dir: &Path) -> Result<(), RestoreError> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
        Ok(true) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(RestoreError::NotEmpty(dir.to_owned())),
    }
}

/// Restores `file` into the empty `data_dir` of controller `id`, founding
/// a group of `members` (id → address; `id` among them).
pub fn restore(
    data_dir: &Path,
    id: u64,
    members: &BTreeMap<u64, String>,
    file: &Path,
) -> Result<Restored, RestoreError> {
    check_empty(data_dir)?;
    let (header, payload) = backup::read(file)?;
    let bad_payload = |detail: String| RestoreError::Payload {
        path: file.to_owned(),
        detail,
    };
    let counts = backup::count(&payload).map_err(bad_payload)?;
    let mut data: SnapshotData = serde_json::from_slice(&payload)
        .map_err(|e| bad_payload(format!("its state does not decode ({e})")))?;
    if data.applied_index != header.applied_index {
        return Err(bad_payload(format!(
            "its state is at index {} but its header says {}",
            data.applied_index, header.applied_index
        )));
    }
    // The restored group is the configured one, at the configured addresses.
    data.members = members.clone();
    let encoded = data.encode();
    let voters: Vec<u64> = members.keys().copied().collect();
    let write_error = |source: Box<dyn std::error::Error + Send + Sync>| RestoreError::Write {
        dir: data_dir.to_owned(),
        source,
    };
    let log_error = |e: LogError| write_error(Box::new(e));

    std::fs::create_dir_all(data_dir).map_err(|e| write_error(Box::new(e)))?;
    if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        wal::sync_dir(parent).map_err(log_error)?;
    }
    let marker = format!(
        "restore of {} (applied index {}) in progress\n",
        file.display(),
        header.applied_index
    );
    wal::write_atomic(data_dir, RESTORING_FILE, marker.as_bytes()).map_err(log_error)?;

    let log = LogStore::open(&data_dir.join("raft"), id, true).map_err(log_error)?;
    let mut conf_state = ConfState::default();
    conf_state.voters = voters.clone();
    let mut meta = SnapshotMetadata::default();
    meta.index = header.applied_index;
    meta.term = header.term.max(1);
    meta.set_conf_state(conf_state);
    let mut snapshot = Snapshot::default();
    snapshot.data = encoded.into();
    snapshot.set_metadata(meta);
    log.apply_snapshot(&snapshot).map_err(log_error)?;
    drop(log);

    let marker = data_dir.join(RESTORING_FILE);
    std::fs::remove_file(&marker).map_err(|e| log_error(wal::io(&marker, e)))?;
    wal::sync_dir(data_dir).map_err(log_error)?;
    Ok(Restored {
        header,
        counts,
        voters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup_file(dir: &Path, state: &crate::state::State, term: u64) -> PathBuf {
        let payload = SnapshotData::encode_state(state);
        let header = Header {
            format_version: backup::FORMAT_VERSION,
            cluster_id: None,
            controller_id: 1,
            applied_index: state.applied_index(),
            term,
            voters: vec![1],
            created_at_unix_ms: 1,
            payload_bytes: payload.len() as u64,
            payload_sha256: backup::sha256_hex(&payload),
            header_sha256: String::new(),
        };
        let mut bytes = header.encode();
        bytes.extend(payload);
        let path = dir.join("backup.rpool");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn some_state() -> crate::state::State {
        use crate::state::command::Command;
        use crate::state::command::tests::facts;
        let mut state = crate::state::State::new();
        for (i, id) in ["h1", "h2"].iter().enumerate() {
            let command = Command::RegisterHost {
                host_id: id.to_string(),
                agent_version: "0.1.0".into(),
                facts: facts(id, 8),
                at_unix_ms: 1,
            };
            state.apply(i as u64 + 1, &command).unwrap();
        }
        state.set_member(3, 5, Some("10.9.9.9:7443".into()));
        state
    }

    #[test]
    fn a_restored_dir_holds_the_state_and_a_log_starting_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = some_state();
        let file = backup_file(dir.path(), &state, 4);
        let data_dir = dir.path().join("data");
        let members: BTreeMap<u64, String> = [(1, "a:1".to_owned()), (2, "b:2".to_owned())].into();
        let restored = restore(&data_dir, 1, &members, &file).unwrap();
        assert_eq!((restored.counts.hosts, restored.voters.clone()), (2, vec![1, 2]));
        assert!(!data_dir.join(RESTORING_FILE).exists());
        check_not_interrupted(&data_dir).unwrap();

        let log = LogStore::open(&data_dir.join("raft"), 1, false).unwrap();
        let snapshot = log.stored_snapshot().unwrap().expect("a snapshot file");
        let loaded = serde_json::from_slice::<SnapshotData>(&snapshot.data)
            .unwrap()
            .into_state();
        assert_eq!(loaded.applied_index(), 3);
        assert_eq!(loaded.hosts().len(), 2);
        assert_eq!(
            loaded.members(),
            &members,
            "the configured group replaces the recorded one"
        );
        assert_eq!((log.snapshot_index(), log.last_index_now()), (3, 3));
        assert_eq!((log.hard_state().commit, log.hard_state().term), (3, 4));
        assert_eq!(log.conf_state().voters, vec![1, 2]);
        assert!(
            LogStore::open(&data_dir.join("raft"), 2, false).is_err(),
            "the log is controller 1's"
        );
    }

    #[test]
    fn a_non_empty_data_dir_and_a_damaged_file_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = backup_file(dir.path(), &some_state(), 4);
        let members: BTreeMap<u64, String> = [(1, "a:1".to_owned())].into();

        let used = dir.path().join("used");
        std::fs::create_dir_all(used.join("raft")).unwrap();
        let err = restore(&used, 1, &members, &file).unwrap_err();
        assert!(matches!(err, RestoreError::NotEmpty(_)), "{err}");
        assert!(err.to_string().contains(&used.display().to_string()), "{err}");

        let mut bytes = std::fs::read(&file).unwrap();
        let at = bytes.len() - 10;
        bytes[at] ^= 0x04;
        std::fs::write(&file, bytes).unwrap();
        let fresh = dir.path().join("fresh");
        let err = restore(&fresh, 1, &members, &file).unwrap_err();
        assert!(err.is_damaged_backup(), "{err}");
        assert!(err.to_string().contains(&file.display().to_string()), "{err}");
        assert!(!fresh.exists(), "nothing is written for a damaged file");
    }

    #[test]
    fn a_restore_cut_short_is_found_before_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RESTORING_FILE), "x").unwrap();
        let err = check_not_interrupted(dir.path()).unwrap_err();
        assert!(err.to_string().contains("wipe the data dir"), "{err}");
    }
}
