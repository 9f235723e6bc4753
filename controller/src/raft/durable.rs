//! Making sled's applied state durable.
//!
//! sled 0.34's `flush` ends in `sync_file_range`, which neither flushes the
//! drive's write cache nor commits a file's size (STACK.md, pitfall 9). The
//! applied state needs real durability only where the log that could
//! replay it is about to go: before compaction drops entries, and after a
//! snapshot from the leader is restored (before the log records it). There
//! [`sync_state`] flushes sled and then fdatasyncs every file of its
//! directory (an fsync on any descriptor of a file flushes that file) and
//! the directories themselves. Between those points a crash may lose
//! applied entries from sled; they are still in the log and are applied
//! again on restart.

use std::path::Path;

use super::log_store::LogError;
use super::wal::{io, sync_dir};

/// Flushes `db` and makes every file under `dir` (sled's directory) and
/// the directory durable.
pub fn sync_state(db: &sled::Db, dir: &Path) -> Result<(), LogError> {
    db.flush().map_err(|e| LogError::Io {
        path: dir.to_owned(),
        source: std::io::Error::other(e),
    })?;
    sync_tree(dir)
}

fn sync_tree(dir: &Path) -> Result<(), LogError> {
    for item in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let item = item.map_err(|e| io(dir, e))?;
        let path = item.path();
        let kind = item.file_type().map_err(|e| io(&path, e))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            match std::fs::File::open(&path) {
                Ok(file) => file.sync_data().map_err(|e| io(&path, e))?,
                // sled removes old snapshot files as it goes.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path, e)),
            }
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_sled_directory_syncs_and_a_missing_one_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("state")).unwrap();
        db.insert(b"k", b"v").unwrap();
        super::sync_state(&db, &dir.path().join("state")).unwrap();
        let err = super::sync_state(&db, &dir.path().join("absent")).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }
}
