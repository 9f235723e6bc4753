//! The backup file `rpoolctl snapshot save` writes and `rpoolctl snapshot
//! inspect` and `rpool-controller --restore` read.
//!
//! Layout: the line [`MAGIC_LINE`], one line of JSON ([`Header`]), then the
//! payload: the replicated state as the controllers' own Raft snapshots
//! hold it (JSON). The header records the payload's length and SHA-256,
//! and its own SHA-256 (over the header with that field empty), so one
//! flipped byte anywhere in the file is found before anything is used.
//!
//! The payload holds secrets (pool kubeconfigs, kubeadm join secrets;
//! bootstrap tokens only as hashes): files are written 0600.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// First line of every backup file.
pub const MAGIC_LINE: &str = "rpool-backup\n";
/// The payload format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest header line accepted (bytes).
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// What a backup holds, besides the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format_version: u32,
    /// The group's cluster id, if it has one (rpool groups have none yet).
    pub cluster_id: Option<String>,
    /// The leader that took it.
    pub controller_id: u64,
    /// Index of the last entry applied to the state in the payload.
    pub applied_index: u64,
    /// Raft term of the leader that took it.
    pub term: u64,
    /// Voting controllers when it was taken.
    pub voters: Vec<u64>,
    /// Leader's clock when it was taken (Unix ms).
    pub created_at_unix_ms: u64,
    pub payload_bytes: u64,
    /// SHA-256 of the payload, lowercase hex.
    pub payload_sha256: String,
    /// SHA-256 of this header serialized with this field empty.
    pub header_sha256: String,
}

impl Header {
    fn own_sha256(&self) -> String {
        let mut unsealed = self.clone();
        unsealed.header_sha256 = String::new();
        sha256_hex(&serde_json::to_vec(&unsealed).expect("a header always encodes"))
    }

    /// Sets `header_sha256`.
    pub fn seal(&mut self) {
        self.header_sha256 = self.own_sha256();
    }

    /// The magic line and the sealed header line: what precedes the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut sealed = self.clone();
        sealed.seal();
        let mut out = MAGIC_LINE.as_bytes().to_vec();
        out.extend(serde_json::to_vec(&sealed).expect("a header always encodes"));
        out.push(b'\n');
        out
    }
}

/// Why a backup file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("reading the backup file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file fails a check: cut short, a flipped byte, not a backup.
    #[error(
        "the backup file {path} is damaged: {detail}; it cannot be used (take a new one with `rpoolctl snapshot \
         save`, or use another copy)"
    )]
    Damaged { path: PathBuf, detail: String },
}

/// Streaming SHA-256 (ring).
pub struct Sha256(ring::digest::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Sha256(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl Sha256 {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Lowercase hex.
    pub fn finish(self) -> String {
        hex(self.0.finish().as_ref())
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads `path` and checks it whole: magic, header checksum, payload length
/// and checksum. Returns the header and the payload.
pub fn read(path: &Path) -> Result<(Header, Vec<u8>), BackupError> {
    let bytes = std::fs::read(path).map_err(|source| BackupError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&bytes).map_err(|detail| BackupError::Damaged {
        path: path.to_owned(),
        detail,
    })
}

/// [`read`] on bytes in memory; `Err` says what is wrong.
pub fn parse(bytes: &[u8]) -> Result<(Header, Vec<u8>), String> {
    let rest = bytes.strip_prefix(MAGIC_LINE.as_bytes()).ok_or(
        "it does not start with the line \"rpool-backup\" (not an rpool backup, or its first bytes changed)",
    )?;
    let end = rest
        .iter()
        .take(MAX_HEADER_BYTES)
        .position(|b| *b == b'\n')
        .ok_or("its header line is missing or longer than 64 KiB")?;
    let header: Header =
        serde_json::from_slice(&rest[..end]).map_err(|e| format!("its header does not decode ({e})"))?;
    if header.header_sha256 != header.own_sha256() {
        return Err("its header fails its SHA-256 checksum".into());
    }
    if header.format_version != FORMAT_VERSION {
        return Err(format!(
            "its format version is {} (this build reads {FORMAT_VERSION})",
            header.format_version
        ));
    }
    let payload = &rest[end + 1..];
    if payload.len() as u64 != header.payload_bytes {
        return Err(format!(
            "it holds {} payload bytes, its header says {} (cut short or grown)",
            payload.len(),
            header.payload_bytes
        ));
    }
    if sha256_hex(payload) != header.payload_sha256 {
        return Err("its payload fails its SHA-256 checksum".into());
    }
    Ok((header, payload.to_vec()))
}

/// What a payload holds, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub applied_index: u64,
    pub controllers: usize,
    pub hosts: usize,
    pub pools: usize,
    pub tasks: usize,
    pub events: usize,
    pub tokens: usize,
}

/// Counts the records of a payload (the JSON of the controllers' state
/// snapshot); `Err` when it is not one.
pub fn count(payload: &[u8]) -> Result<Counts, String> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("the payload is not JSON ({e})"))?;
    let object = value.as_object().ok_or("the payload is not a JSON object")?;
    let len = |key: &str| -> Result<usize, String> {
        match object.get(key) {
            None => Ok(0),
            Some(serde_json::Value::Array(items)) => Ok(items.len()),
            Some(serde_json::Value::Object(items)) => Ok(items.len()),
            Some(_) => Err(format!("the payload's {key:?} is not a list")),
        }
    };
    Ok(Counts {
        applied_index: object
            .get("applied_index")
            .and_then(serde_json::Value::as_u64)
            .ok_or("the payload has no applied_index")?,
        controllers: len("members")?,
        hosts: len("hosts")?,
        pools: len("pools")?,
        tasks: len("tasks")?,
        events: len("events")?,
        tokens: len("tokens")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(payload: &[u8]) -> Vec<u8> {
        let header = Header {
            format_version: FORMAT_VERSION,
            cluster_id: None,
            controller_id: 2,
            applied_index: 41,
            term: 3,
            voters: vec![1, 2, 3],
            created_at_unix_ms: 1_700_000_000_000,
            payload_bytes: payload.len() as u64,
            payload_sha256: sha256_hex(payload),
            header_sha256: String::new(),
        };
        let mut out = header.encode();
        out.extend_from_slice(payload);
        out
    }

    const PAYLOAD: &[u8] =
        br#"{"applied_index":41,"members":{"1":"a:1"},"hosts":[{},{}],"pools":[{}],"events":[],"tokens":[{}]}"#;

    #[test]
    fn a_written_file_reads_back_and_counts_its_records() {
        let (header, payload) = parse(&file(PAYLOAD)).unwrap();
        assert_eq!(
            (header.applied_index, header.term, payload.as_slice()),
            (41, 3, PAYLOAD)
        );
        let counts = count(&payload).unwrap();
        assert_eq!(
            counts,
            Counts {
                applied_index: 41,
                controllers: 1,
                hosts: 2,
                pools: 1,
                tasks: 0,
                events: 0,
                tokens: 1
            }
        );
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_found() {
        let good = file(PAYLOAD);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(parse(&bad).is_err(), "a flipped bit at byte {i} went unnoticed");
        }
        for len in 0..good.len() {
            assert!(
                parse(&good[..len]).is_err(),
                "a file cut at {len} bytes went unnoticed"
            );
        }
        let mut longer = good.clone();
        longer.push(b' ');
        let err = parse(&longer).unwrap_err();
        assert!(err.contains("cut short or grown"), "{err}");
    }

    #[test]
    fn a_damaged_file_is_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.rpool");
        let mut bytes = file(PAYLOAD);
        let last = bytes.len() - 3;
        bytes[last] ^= 0x20;
        std::fs::write(&path, bytes).unwrap();
        let text = read(&path).unwrap_err().to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("payload fails its SHA-256 checksum"), "{text}");
        assert!(text.contains("rpoolctl snapshot save"), "{text}");
    }
}
