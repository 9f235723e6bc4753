//! Raft replication of the controller's state machine, on raft-rs.
//!
//! - [`log_store`]: the Raft log, hard state, conf state and snapshot in a
//!   sled tree (`raft`), implementing raft-rs' `Storage`.
//! - [`node`]: one replica: the `RawNode` owned by a single task, its
//!   `Ready` loop (flush before anything is acknowledged or sent as
//!   persisted), proposals, ReadIndex reads, membership changes, log
//!   compaction.
//! - [`transport`]: peer messages over gRPC (`RaftService.Send`), bounded
//!   per-peer queues that never block the leader.
//!
//! raft-rs logs through `slog`; [`logger`] bridges those records into
//! `tracing` (target `raft`).

pub mod log_store;
pub mod node;
#[cfg(test)]
mod sim;
pub mod transport;

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
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

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
