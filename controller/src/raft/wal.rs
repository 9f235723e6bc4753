//! The write-ahead log on disk: segment files of checksummed batches.
//!
//! Directory `{data_dir}/raft/`:
//! - `MEMBER`: `rpool raft log of controller {id}`, written (and synced,
//!   with the directory) when the log is initialised;
//! - `{seq:020}.wal`: segments. A segment opens with [`SEGMENT_MAGIC`],
//!   then batches: `len: u32 LE | crc32: u32 LE | payload`, the payload a
//!   run of records `type: u8 | len: u32 LE | bytes` ([`Record`]). A batch
//!   is one `write`; the whole batch is accepted or none of it;
//! - `snapshot`: the last snapshot (see [`super::snapshot_file`]);
//! - `DAMAGED`: written when the replica found it lost acknowledged data;
//!   every later open refuses with its text.
//!
//! The live segment is preallocated ([`PREALLOCATE_BYTES`] at a time,
//! `fallocate`) and written in place: an `fdatasync` after a write inside
//! the file's size flushes the data alone, where one after an append must
//! also write the inode's new size (a journal commit where the filesystem
//! keeps one; on this machine's ext4: 0.12 ms against 0.17 ms per sync).
//! So a segment ends in zeros: after the last batch, all zeros is the
//! unwritten rest, not a torn write.
//!
//! Only the newest segment is live. A new segment ([`Wal::rotate`]) starts
//! with a checkpoint batch (snapshot mark, every retained entry, conf state,
//! hard state), written to `.tmp`, synced, renamed and the directory synced;
//! only then are older segments deleted. So replaying the newest segment
//! alone rebuilds the log, and compaction drops every older segment.
//!
//! Recovery on open: a batch that runs past the end of the file, or whose
//! checksum fails with nothing valid after it, is a torn last write (never
//! synced, so never acknowledged): the file is cut there (and preallocated
//! again). Zeros alone after the last batch are the preallocated rest. A failing batch
//! followed by a valid one is damage: an error naming the file.

// raft-rs messages are protobuf 2 structs, built field by field.
#![allow(clippy::field_reassign_with_default)]

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState};

use super::log_store::{LogError, LogState};

/// First bytes of every segment (format version 1).
pub const SEGMENT_MAGIC: &[u8; 8] = b"RPWAL001";
/// A segment past this size is replaced by a checkpoint of the live log.
pub const SEGMENT_MAX_BYTES: u64 = 64 << 20;
/// The live segment is extended by this much at a time (see the module
/// docs); unit tests and the simulator, which rewrite whole segments to
/// model crashes, use small chunks (and so cross them often).
pub const PREALLOCATE_BYTES: u64 = if cfg!(test) { 64 << 10 } else { 16 << 20 };
/// Batch header: length and checksum.
const BATCH_HEADER: usize = 8;
/// Largest batch accepted when reading (a length above it is garbage).
const BATCH_MAX_BYTES: usize = 1 << 30;
/// File naming the controller the log belongs to.
pub const MEMBER_FILE: &str = "MEMBER";
/// File left by a replica that found it lost acknowledged data.
pub const DAMAGED_FILE: &str = "DAMAGED";

const ENTRY: u8 = 1;
const HARD_STATE: u8 = 2;
const CONF_STATE: u8 = 3;
const SNAPSHOT_MARK: u8 = 4;

/// One record of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// An entry at `entry.index`; any existing entry at or after that index
    /// is replaced (a new leader overwrote an uncommitted suffix).
    Entry(Entry),
    HardState(HardState),
    ConfState(ConfState),
    /// The log now starts after `index` (compaction or installed snapshot).
    Snapshot {
        index: u64,
        term: u64,
    },
}

impl Record {
    fn encode_into(&self, out: &mut Vec<u8>) {
        let (kind, bytes) = match self {
            Record::Entry(e) => (ENTRY, protobuf_bytes(e)),
            Record::HardState(hs) => (HARD_STATE, protobuf_bytes(hs)),
            Record::ConfState(cs) => (CONF_STATE, protobuf_bytes(cs)),
            Record::Snapshot { index, term } => {
                let mut b = index.to_le_bytes().to_vec();
                b.extend_from_slice(&term.to_le_bytes());
                (SNAPSHOT_MARK, b)
            }
        };
        out.push(kind);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }

    fn decode(kind: u8, bytes: &[u8]) -> Result<Record, String> {
        let proto = |e: protobuf::ProtobufError| format!("record of type {kind} does not decode: {e}");
        Ok(match kind {
            ENTRY => Record::Entry(Entry::parse_from_bytes(bytes).map_err(proto)?),
            HARD_STATE => Record::HardState(HardState::parse_from_bytes(bytes).map_err(proto)?),
            CONF_STATE => Record::ConfState(ConfState::parse_from_bytes(bytes).map_err(proto)?),
            SNAPSHOT_MARK if bytes.len() == 16 => Record::Snapshot {
                index: u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default()),
                term: u64::from_le_bytes(bytes[8..].try_into().unwrap_or_default()),
            },
            other => return Err(format!("unknown record type {other} ({} bytes)", bytes.len())),
        })
    }
}

fn protobuf_bytes<M: protobuf::Message>(message: &M) -> Vec<u8> {
    message
        .write_to_bytes()
        .expect("encoding a raft message into memory cannot fail")
}

/// Encodes `records` as one batch (header included).
pub fn encode_batch(records: &[Record]) -> Vec<u8> {
    let mut out = vec![0u8; BATCH_HEADER];
    for record in records {
        record.encode_into(&mut out);
    }
    let len = (out.len() - BATCH_HEADER) as u32;
    let crc = crc32fast::hash(&out[BATCH_HEADER..]);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// What reading the batch at the start of `data` found.
enum Batch {
    /// Valid: its records and its total size.
    Valid(Vec<Record>, usize),
    /// Runs past the end of the data.
    Short,
    /// Checksum or length field wrong.
    Bad(String),
}

fn read_batch(data: &[u8]) -> Batch {
    if data.len() < BATCH_HEADER {
        return Batch::Short;
    }
    let len = u32::from_le_bytes(data[..4].try_into().unwrap_or_default()) as usize;
    let crc = u32::from_le_bytes(data[4..8].try_into().unwrap_or_default());
    if len == 0 || len > BATCH_MAX_BYTES {
        return Batch::Bad(format!("batch length {len} is out of range"));
    }
    if data.len() < BATCH_HEADER + len {
        return Batch::Short;
    }
    let payload = &data[BATCH_HEADER..BATCH_HEADER + len];
    if crc32fast::hash(payload) != crc {
        return Batch::Bad("checksum mismatch".into());
    }
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < payload.len() {
        if payload.len() - pos < 5 {
            return Batch::Bad("a record header is cut short inside a valid batch".into());
        }
        let kind = payload[pos];
        let rlen = u32::from_le_bytes(payload[pos + 1..pos + 5].try_into().unwrap_or_default()) as usize;
        let end = pos + 5 + rlen;
        if end > payload.len() {
            return Batch::Bad("a record runs past its batch".into());
        }
        match Record::decode(kind, &payload[pos + 5..end]) {
            Ok(record) => records.push(record),
            Err(e) => return Batch::Bad(e),
        }
        pos = end;
    }
    Batch::Valid(records, BATCH_HEADER + len)
}

/// Reads every batch of a segment's bytes into `state`. Returns the length
/// of the valid prefix: shorter than `data` when the last write was torn.
pub fn replay(path: &Path, data: &[u8], state: &mut LogState) -> Result<usize, LogError> {
    let damaged = |detail: String| LogError::Damaged {
        path: path.to_owned(),
        detail,
    };
    if data.len() < SEGMENT_MAGIC.len() || &data[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        return Err(damaged("the segment header is missing or wrong".into()));
    }
    let mut pos = SEGMENT_MAGIC.len();
    while pos < data.len() {
        match read_batch(&data[pos..]) {
            Batch::Valid(records, size) => {
                for record in records {
                    state
                        .apply(record)
                        .map_err(|e| damaged(format!("batch at byte {pos}: {e}")))?;
                }
                pos += size;
            }
            Batch::Short => return Ok(pos),
            // The preallocated rest of the segment.
            Batch::Bad(_) if data[pos..].iter().all(|b| *b == 0) => return Ok(pos),
            Batch::Bad(why) => {
                if valid_batch_after(&data[pos..]) {
                    return Err(damaged(format!(
                        "batch at byte {pos}: {why}, and valid data follows it"
                    )));
                }
                return Ok(pos);
            }
        }
    }
    Ok(pos)
}

/// True when a valid batch starts anywhere after the first byte of `data`
/// (a bad batch with valid data after it is damage, not a torn tail).
fn valid_batch_after(data: &[u8]) -> bool {
    (1..data.len()).any(|offset| matches!(read_batch(&data[offset..]), Batch::Valid(..)))
}

/// Name of segment `seq`.
fn segment_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

/// Sequence numbers of the segments in `dir`, ascending; `.tmp` leftovers
/// of an interrupted rotation are removed.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut seqs = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let item = item.map_err(|e| io(dir, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            std::fs::remove_file(item.path()).map_err(|e| io(&item.path(), e))?;
        } else if let Some(seq) = name.strip_suffix(".wal").and_then(|s| s.parse().ok()) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

pub fn io(path: &Path, source: std::io::Error) -> LogError {
    LogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Syncs a directory, so that files created, renamed or removed in it stay so.
pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

/// Writes `bytes` to `dir/name` atomically and durably: a `.tmp` file,
/// synced, renamed, the directory synced.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), LogError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| io(&tmp, e))?;
    file.sync_all().map_err(|e| io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    sync_dir(dir)
}

/// The live segment: appends batches, syncs them, rotates.
pub struct Wal {
    dir: PathBuf,
    seq: u64,
    path: PathBuf,
    file: File,
    /// Bytes of batches in the file (where the next one is written).
    len: u64,
    /// Bytes known to be on disk (fdatasync'ed).
    synced_len: u64,
    /// The file's size: `len` and the preallocated zeros after it.
    allocated: u64,
    /// Bytes preallocated at a time; 0: none.
    chunk: u64,
}

impl Wal {
    /// Opens the newest segment of `dir` (which must hold one), rebuilding
    /// `state` from it; a torn last write is cut off and older segments
    /// left by an interrupted rotation are removed.
    pub fn open(dir: &Path, state: &mut LogState) -> Result<Wal, LogError> {
        let seqs = list_segments(dir)?;
        let Some(&seq) = seqs.last() else {
            return Err(LogError::Damaged {
                path: dir.to_owned(),
                detail: "the raft log directory holds no segment".into(),
            });
        };
        let path = dir.join(segment_name(seq));
        let data = std::fs::read(&path).map_err(|e| io(&path, e))?;
        let valid = replay(&path, &data, state)? as u64;
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let mut allocated = data.len() as u64;
        if data[valid as usize..].iter().any(|b| *b != 0) {
            tracing::warn!(
                file = %path.display(),
                cut_bytes = data.len() as u64 - valid,
                "raft log: cutting off a torn last write (never acknowledged)"
            );
            file.set_len(valid).map_err(|e| io(&path, e))?;
            file.sync_all().map_err(|e| io(&path, e))?;
            allocated = valid;
        }
        for old in &seqs[..seqs.len() - 1] {
            let old_path = dir.join(segment_name(*old));
            std::fs::remove_file(&old_path).map_err(|e| io(&old_path, e))?;
        }
        if seqs.len() > 1 {
            sync_dir(dir)?;
        }
        let wal = Wal {
            dir: dir.to_owned(),
            seq,
            path,
            file,
            len: valid,
            synced_len: valid,
            allocated,
            chunk: PREALLOCATE_BYTES,
        };
        Ok(wal)
    }

    /// Creates the first segment of a new log in `dir` from `state`.
    pub fn create(dir: &Path, state: &LogState) -> Result<Wal, LogError> {
        let (seq, path, file, len) = write_segment(dir, 1, state)?;
        let wal = Wal {
            dir: dir.to_owned(),
            seq,
            path,
            file,
            len,
            synced_len: len,
            allocated: len,
            chunk: PREALLOCATE_BYTES,
        };
        Ok(wal)
    }

    /// Appends one batch made by [`encode_batch`] (not yet durable: see
    /// [`Wal::sync`]).
    pub fn append(&mut self, batch: &[u8]) -> Result<(), LogError> {
        let need = batch.len() as u64;
        if self.len + need > self.allocated {
            self.preallocate(need);
        }
        self.file
            .write_all_at(batch, self.len)
            .map_err(|e| io(&self.path, e))?;
        self.len += need;
        self.allocated = self.allocated.max(self.len);
        Ok(())
    }

    /// Sets how much the live segment is extended by at a time (0: not
    /// preallocated; writes extend it), from the next extension on.
    pub fn set_preallocation(&mut self, bytes: u64) {
        self.chunk = bytes;
    }

    /// Extends the file to hold at least `need` more bytes after the last
    /// batch, by whole chunks. Only a speed-up: where it fails (no room for
    /// a whole chunk, a filesystem without `fallocate`) writes simply
    /// extend the file, and a full disk is reported by the write itself.
    fn preallocate(&mut self, need: u64) {
        if self.chunk == 0 {
            return;
        }
        let want = (self.len + need.max(1)).div_ceil(self.chunk) * self.chunk;
        if want <= self.allocated {
            return;
        }
        let Ok(offset) = i64::try_from(self.allocated) else {
            return;
        };
        let Ok(extra) = i64::try_from(want - self.allocated) else {
            return;
        };
        // SAFETY: fallocate on a descriptor this struct owns; no memory is
        // passed.
        let rc = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&self.file), 0, offset, extra) };
        if rc == 0 {
            self.allocated = want;
        } else {
            tracing::debug!(
                file = %self.path.display(),
                error = %std::io::Error::last_os_error(),
                "raft log: could not preallocate; appending"
            );
        }
    }

    /// Makes every appended batch durable (fdatasync).
    pub fn sync(&mut self) -> Result<(), LogError> {
        if self.synced_len == self.len {
            return Ok(());
        }
        self.file.sync_data().map_err(|e| io(&self.path, e))?;
        self.synced_len = self.len;
        Ok(())
    }

    /// True when the live segment should be replaced by a checkpoint.
    pub fn wants_rotation(&self) -> bool {
        self.len > SEGMENT_MAX_BYTES
    }

    /// Replaces the live segment by a new one holding a checkpoint of
    /// `state`, durably, then removes the old one.
    pub fn rotate(&mut self, state: &LogState) -> Result<(), LogError> {
        self.sync()?;
        let (seq, path, file, len) = write_segment(&self.dir, self.seq + 1, state)?;
        let old = std::mem::replace(&mut self.path, path);
        self.seq = seq;
        self.file = file;
        self.len = len;
        self.synced_len = len;
        self.allocated = len;
        std::fs::remove_file(&old).map_err(|e| io(&old, e))?;
        sync_dir(&self.dir)
    }

    /// The live segment and how much of it is durable (the simulator's
    /// crash model loses the rest).
    #[cfg(test)]
    pub fn unsynced(&self) -> (PathBuf, u64, u64) {
        (self.path.clone(), self.synced_len, self.len)
    }
}

/// Writes segment `seq` holding a checkpoint of `state`: `.tmp`, synced,
/// renamed, directory synced. Returns it open for writing after its end.
fn write_segment(dir: &Path, seq: u64, state: &LogState) -> Result<(u64, PathBuf, File, u64), LogError> {
    let mut bytes = SEGMENT_MAGIC.to_vec();
    bytes.extend_from_slice(&encode_batch(&state.checkpoint()));
    let name = segment_name(seq);
    write_atomic(dir, &name, &bytes)?;
    let path = dir.join(name);
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| io(&path, e))?;
    Ok((seq, path, file, bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = vec![index as u8; 40].into();
        e
    }

    fn segment(batches: &[Vec<Record>]) -> Vec<u8> {
        let mut data = SEGMENT_MAGIC.to_vec();
        for batch in batches {
            data.extend_from_slice(&encode_batch(batch));
        }
        data
    }

    fn three_batches() -> Vec<u8> {
        segment(&[
            vec![Record::Entry(entry(1, 1)), Record::Entry(entry(2, 1))],
            vec![Record::Entry(entry(3, 1))],
            vec![Record::Entry(entry(4, 2))],
        ])
    }

    #[test]
    fn every_cut_of_the_last_batch_is_a_torn_tail_and_keeps_the_prefix() {
        let data = three_batches();
        let last_start = data.len() - encode_batch(&[Record::Entry(entry(4, 2))]).len();
        for cut in last_start..data.len() {
            let mut state = LogState::default();
            let valid = replay(Path::new("x.wal"), &data[..cut], &mut state).unwrap();
            assert_eq!(valid, last_start, "cut at {cut}");
            assert_eq!(state.last_index(), 3, "cut at {cut}");
        }
    }

    #[test]
    fn garbage_in_the_last_batch_is_a_torn_tail() {
        let mut data = three_batches();
        let n = data.len();
        data[n - 3] ^= 0xff;
        let mut state = LogState::default();
        let valid = replay(Path::new("x.wal"), &data, &mut state).unwrap();
        assert!(valid < n);
        assert_eq!(state.last_index(), 3);
    }

    #[test]
    fn an_overwritten_byte_before_valid_data_is_damage_naming_the_file() {
        let mut data = three_batches();
        data[SEGMENT_MAGIC.len() + 12] ^= 0x01;
        let mut state = LogState::default();
        let err = replay(Path::new("/d/raft/00000000000000000001.wal"), &data, &mut state).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("00000000000000000001.wal"), "{text}");
        assert!(text.contains("checksum mismatch"), "{text}");
    }

    #[test]
    fn zeroed_tail_after_a_size_change_is_torn_not_empty_batches() {
        let mut data = three_batches();
        let n = data.len();
        data.extend_from_slice(&[0u8; 64]);
        let mut state = LogState::default();
        assert_eq!(replay(Path::new("x.wal"), &data, &mut state).unwrap(), n);
        assert_eq!(state.last_index(), 4);
    }
}
