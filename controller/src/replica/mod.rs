//! The controller's handle on its Raft replica: propose commands, read the
//! state, ask who leads.
//!
//! Every state change is a [`Command`] proposed through
//! [`NodeHandle::propose`]: it is serialized, appended to the Raft log,
//! replicated, and answered once a quorum has it durably and this replica
//! has applied it ([`crate::replica::apply`]). Readers take short looks at the
//! applied state through [`NodeHandle::read`] (a shared `RwLock`, never held
//! across an `.await`); a read that must be current first calls
//! [`NodeHandle::read_barrier`] (Raft ReadIndex).

pub mod apply;
pub mod disk;
pub mod restore;

use std::sync::{Arc, RwLock};

use crate::raft::node::{self as raft_node, RaftHandle, RaftRole, RaftStatus};
use crate::replica::apply::Applied;
use crate::state::command::Command;
use crate::state::{ApplyError, ApplyOutcome, State};

/// The applied state in the data dir of the *stopped* controller `id`,
/// rebuilt from its Raft log as a start would (see [`raft_node::load`]).
pub fn load_stopped(data_dir: &std::path::Path, id: u64) -> Result<State, raft_node::NodeError> {
    let state = Arc::new(RwLock::new(State::new()));
    let config = raft_node::RaftConfig::new(id, Vec::new(), data_dir);
    raft_node::load(config, apply::Replicated::new(state.clone()))?;
    let loaded = state.read().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(loaded)
}

/// Why a proposal was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The state machine refused the command; nothing changed.
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    /// Not committed: no leader yet, leadership changed, or no quorum in
    /// time. Retrying is safe (commands are idempotent).
    #[error("not committed: {0}")]
    Unavailable(String),
    /// The replica has stopped (shutdown or a storage failure).
    #[error("the controller's state machine is not running")]
    Stopped,
}

impl From<raft_node::SubmitError> for ProposeError {
    fn from(e: raft_node::SubmitError) -> Self {
        match e {
            raft_node::SubmitError::Stopped => ProposeError::Stopped,
            other => ProposeError::Unavailable(other.to_string()),
        }
    }
}

/// Cheap, cloneable handle on the replica.
#[derive(Clone)]
pub struct NodeHandle {
    raft: RaftHandle<Applied>,
    state: Arc<RwLock<State>>,
}

impl NodeHandle {
    pub fn new(raft: RaftHandle<Applied>, state: Arc<RwLock<State>>) -> NodeHandle {
        NodeHandle { raft, state }
    }

    /// Replicates and applies `command`; returns its log index.
    pub async fn propose(&self, command: Command) -> Result<u64, ProposeError> {
        self.propose_with_outcome(command).await.map(|(index, _)| index)
    }

    /// Like [`NodeHandle::propose`], also returning what the command did.
    pub async fn propose_with_outcome(&self, command: Command) -> Result<(u64, ApplyOutcome), ProposeError> {
        let data = serde_json::to_vec(&command).expect("commands always encode as JSON");
        let (index, outcome) = self.raft.propose(data).await?;
        Ok((index, outcome?))
    }

    /// Waits until this replica has applied everything committed before
    /// the call, as confirmed by the leader (ReadIndex).
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        self.raft.read_barrier().await?;
        Ok(())
    }

    /// Runs `f` on the applied state. Keep `f` short.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let guard = self.state.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    /// Raft role, term, leader, indexes and membership of this replica.
    pub fn status(&self) -> RaftStatus {
        self.raft.status()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.status().role == RaftRole::Leader
    }

    pub fn raft(&self) -> &RaftHandle<Applied> {
        &self.raft
    }
}
