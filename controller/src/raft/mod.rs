//! Raft replication of the controller's state machine, on raft-rs.
//!
//! - [`log_store`]: the Raft log, hard state, conf state and snapshot,
//!   implementing raft-rs' `Storage`, checked on open; over
//!   [`wal`] (our segmented write-ahead log, fdatasync before any
//!   acknowledgement) and [`snapshot_file`], in `{data_dir}/raft/`.
//! - [`incarnation`]: each log's random incarnation, sent with every
//!   batch, and the one seen for each peer: a member that lost its data and
//!   came back under its old id is refused and stops.
//! - [`node`]: one replica: the `RawNode` owned by a single task, its
//!   `Ready` loop (flush before anything is acknowledged or sent as
//!   persisted), proposals, ReadIndex reads, membership changes, log
//!   compaction; on open, the state machine rebuilt from the snapshot file
//!   and the committed entries after it (the log is the only store).
//! - [`transport`]: peer messages over gRPC (`RaftService.Send`), bounded
//!   per-peer queues that never block the leader.
//!
//! raft-rs logs through `slog`; [`logger`] bridges those records into
//! `tracing` (target `raft`).

pub mod incarnation;
pub mod log_store;
pub mod node;
mod node_core;
mod node_errors;
mod node_handle;
#[cfg(test)]
mod sim;
pub mod snapshot_file;
pub mod transport;
pub mod wal;

// What the rest of the controller uses of this layer. Code outside `raft/`
// imports these paths only, so the layer can be rearranged inside.
pub use node::{RaftRole, RaftStatus, add_voter, remove_voter};

use std::fmt::Write as _;

/// A slog logger whose records go to `tracing` under target `raft`, with
/// their key-values appended (`msg key=value ...`). raft-rs' informational
/// chatter (every vote, every term change) is logged at debug, except the
/// lines that say who leads, which stay at info.
pub fn logger(id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("controller" => id))
}

struct TracingDrain;

struct KvText(String);

impl slog::Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        // raft-rs attaches whole messages (`"msg" => ?m`) and entries
        // (`"ents" => ?ents`) to some records; their payloads are our
        // commands, which can carry join secrets.
        if PAYLOAD_KEYS.contains(&key) {
            let _ = write!(self.0, " {key}=[payload omitted]");
        } else {
            let _ = write!(self.0, " {key}={val}");
        }
        Ok(())
    }
}

/// slog keys under which raft-rs logs message or entry contents.
const PAYLOAD_KEYS: [&str; 2] = ["msg", "ents"];

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        use slog::KV as _;
        let mut text = KvText(record.msg().to_string());
        let _ = record.kv().serialize(record, &mut text);
        let _ = values.serialize(record, &mut text);
        let line = text.0;
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "raft", "{line}"),
            slog::Level::Warning => tracing::warn!(target: "raft", "{line}"),
            slog::Level::Info if line.starts_with("became leader") => {
                tracing::info!(target: "raft", "{line}")
            }
            slog::Level::Info | slog::Level::Debug => tracing::debug!(target: "raft", "{line}"),
            slog::Level::Trace => tracing::trace!(target: "raft", "{line}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    /// The text a raft-rs record's key-values become.
    fn text_of(kv: &dyn slog::KV) -> String {
        let mut text = super::KvText(String::new());
        let record_static = slog::record_static!(slog::Level::Debug, "");
        let args = format_args!("");
        let record = slog::Record::new(&record_static, &args, slog::BorrowedKV(&()));
        kv.serialize(&record, &mut text).unwrap();
        text.0
    }

    #[test]
    fn raft_records_never_carry_message_or_entry_payloads() {
        let text = text_of(&slog::o!("msg" => "MsgAppend [token abcdef.0123456789abcdef]", "term" => 3));
        assert!(!text.contains("abcdef.0123456789abcdef"), "{text}");
        assert!(text.contains("term=3"), "{text}");
        let text = text_of(&slog::o!("ents" => "[certificate key 0123]"));
        assert!(!text.contains("0123"), "{text}");
    }
}
