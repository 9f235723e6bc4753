//! Why a replica stopped ([`NodeError`]).

use super::log_store::LogError;

/// Why the state machine could not apply, skip or restore: its own error,
/// kept whole (not as text) so callers can tell e.g. a full disk apart.
pub type MachineError = Box<dyn std::error::Error + Send + Sync>;

/// Errors that stop the replica: the data dir can no longer be trusted.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The data dir contradicts itself (e.g. an earlier rpool's applied
    /// state without the log that goes with it): data was lost.
    #[error("damaged data: {0}. {REMEDY}", REMEDY = super::log_store::REMEDY)]
    Mismatch(String),
    #[error("restoring a snapshot at index {index}: {reason}")]
    Restore {
        index: u64,
        #[source]
        reason: MachineError,
    },
    #[error("applying entry {index}: {reason}")]
    Apply {
        index: u64,
        #[source]
        reason: MachineError,
    },
    #[error("starting the raft thread: {0}")]
    Runtime(String),
}
