//! The snapshot file `{data_dir}/raft/snapshot`: the last state-machine
//! snapshot (an `eraftpb::Snapshot`, metadata and data), checksummed.
//!
//! Format: [`MAGIC`] | `len: u64 LE` | `crc32: u32 LE` | protobuf bytes.
//! Replaced atomically ([`super::wal::write_atomic`]: `.tmp`, synced,
//! renamed, directory synced), always before the log records that the
//! prefix it covers was dropped.

use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::prelude::Snapshot;

use super::log_store::LogError;
use super::wal::{io, write_atomic};

/// File name inside the log directory.
pub const FILE: &str = "snapshot";
const MAGIC: &[u8; 8] = b"RPSNAP01";
const HEADER: usize = MAGIC.len() + 12;

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Stores `snapshot` durably, replacing the previous one.
pub fn write(dir: &Path, snapshot: &Snapshot) -> Result<(), LogError> {
    let body = snapshot
        .write_to_bytes()
        .expect("encoding a raft snapshot into memory cannot fail");
    let mut bytes = Vec::with_capacity(HEADER + body.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    write_atomic(dir, FILE, &bytes)
}

/// The stored snapshot, `None` when there is none yet. A file that is cut
/// short, fails its checksum or does not decode is damage.
pub fn read(dir: &Path) -> Result<Option<Snapshot>, LogError> {
    let path = path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path, e)),
    };
    let damaged = |detail: &str| LogError::Damaged {
        path: path.clone(),
        detail: detail.to_owned(),
    };
    if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return Err(damaged("the snapshot header is missing or wrong"));
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(bytes[16..20].try_into().unwrap_or_default());
    let body = &bytes[HEADER..];
    if body.len() as u64 != len {
        return Err(damaged(&format!(
            "the snapshot holds {} bytes, its header says {len}",
            body.len()
        )));
    }
    if crc32fast::hash(body) != crc {
        return Err(damaged("the snapshot fails its checksum"));
    }
    Snapshot::parse_from_bytes(body)
        .map(Some)
        .map_err(|e| damaged(&format!("the snapshot does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::field_reassign_with_default)]

    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_any_flipped_or_cut_byte_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        let mut snapshot = Snapshot::default();
        snapshot.data = b"state".to_vec().into();
        snapshot.mut_metadata().index = 7;
        write(dir.path(), &snapshot).unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap(), snapshot);
        let good = std::fs::read(path(dir.path())).unwrap();
        for at in [3, 10, 17, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(path(dir.path()), &bad).unwrap();
            let err = read(dir.path()).unwrap_err().to_string();
            assert!(err.contains("raft/") || err.contains(FILE), "{err}");
        }
        std::fs::write(path(dir.path()), &good[..good.len() - 2]).unwrap();
        assert!(matches!(read(dir.path()), Err(LogError::Damaged { .. })));
    }
}
