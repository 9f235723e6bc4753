//! The single writer: the only task that changes the state machine.
//!
//! Everything that wants to change state (agent sessions, the liveness
//! ticker, later the admin API and the planner) calls
//! [`NodeHandle::propose`]. Proposals go through a bounded queue
//! ([`PROPOSAL_QUEUE_CAPACITY`]; a full queue makes proposers wait, which is
//! the back-pressure) to one task that, for each command in arrival order:
//!
//! 1. assigns `index = applied_index + 1`,
//! 2. plans the command against the current state (rejections change
//!    nothing and consume no index),
//! 3. writes the change and the index in one sled batch and waits for the
//!    flush,
//! 4. commits the change in memory, where readers see it,
//! 5. replies with the index.
//!
//! So a proposal is acknowledged only once it is durable, and readers never
//! see state that could be lost in a crash. If storage fails, the node stops:
//! memory and disk must not diverge, and a controller that cannot persist
//! must not acknowledge anything. [`run`](crate::run) then exits with an
//! error.
//!
//! Readers take cheap snapshots through [`NodeHandle::read`] (a shared
//! `RwLock`, held only for the duration of the closure, never across an
//! `.await`).
//!
//! **Raft seam.** This is exactly where Raft slots in next issue:
//! [`NodeHandle::propose`] keeps its signature, and the task's body becomes
//! "append to the Raft log, wait until committed by a quorum, then steps
//! 2–5 for each committed entry". The state machine and store are already
//! deterministic and index-driven for that. One difference to note then: a
//! committed entry that the state machine rejects must still advance the
//! applied index, since every replica has it in its log.

use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info};

use crate::command::Command;
use crate::state::{ApplyError, ApplyOutcome, StateMachine};
use crate::store::{Store, StoreError};

/// Proposals that may wait for the writer before proposers are slowed down.
pub const PROPOSAL_QUEUE_CAPACITY: usize = 1024;

/// Why a proposal was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The state machine refused the command; nothing changed.
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    /// The node is stopping or has stopped (shutdown or a storage failure).
    #[error("the controller's state machine is not running")]
    Stopped,
    /// The change could not be made durable; the node stops after this.
    #[error("persisting the change failed: {0}")]
    Storage(String),
}

type Reply = oneshot::Sender<Result<(u64, ApplyOutcome), ProposeError>>;

struct Proposal {
    command: Command,
    reply: Reply,
}

/// Cheap, cloneable handle to the node: propose commands, read state.
#[derive(Clone)]
pub struct NodeHandle {
    proposals: mpsc::Sender<Proposal>,
    state: Arc<RwLock<StateMachine>>,
}

impl NodeHandle {
    /// Applies `command` durably and returns its index. Waits for room in
    /// the queue, then for the flush.
    pub async fn propose(&self, command: Command) -> Result<u64, ProposeError> {
        self.propose_with_outcome(command).await.map(|(index, _)| index)
    }

    /// Like [`NodeHandle::propose`], also returning what the command did.
    pub async fn propose_with_outcome(&self, command: Command) -> Result<(u64, ApplyOutcome), ProposeError> {
        let (reply, answer) = oneshot::channel();
        self.proposals
            .send(Proposal { command, reply })
            .await
            .map_err(|_| ProposeError::Stopped)?;
        answer.await.map_err(|_| ProposeError::Stopped)?
    }

    /// Runs `f` on the current state. Keep `f` short: the writer waits for it.
    pub fn read<R>(&self, f: impl FnOnce(&StateMachine) -> R) -> R {
        // A poisoned lock means a reader panicked; the data itself is only
        // ever changed by `commit`, which cannot panic midway.
        let guard = self.state.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }
}

/// Starts the writer task on the current runtime with the state loaded from
/// `store`. The task runs until `stop` turns true (or every handle is
/// dropped); it then answers the proposals already queued, flushes the
/// store and returns. It returns an error if storage failed.
pub fn spawn(
    store: Store,
    initial: StateMachine,
    stop: watch::Receiver<bool>,
) -> (NodeHandle, tokio::task::JoinHandle<Result<(), StoreError>>) {
    let (tx, rx) = mpsc::channel(PROPOSAL_QUEUE_CAPACITY);
    let state = Arc::new(RwLock::new(initial));
    let handle = NodeHandle {
        proposals: tx,
        state: state.clone(),
    };
    let task = tokio::spawn(writer(store, state, rx, stop));
    (handle, task)
}

async fn writer(
    store: Store,
    state: Arc<RwLock<StateMachine>>,
    mut proposals: mpsc::Receiver<Proposal>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let applied = state.read().unwrap_or_else(|e| e.into_inner()).applied_index();
    info!(applied_index = applied, "state machine writer started");
    loop {
        let proposal = tokio::select! {
            biased;
            p = proposals.recv() => p,
            _ = crate::stopped(&mut stop) => {
                // Refuse new proposals; answer the ones already queued.
                proposals.close();
                proposals.recv().await
            }
        };
        let Some(Proposal { command, reply }) = proposal else {
            break;
        };
        if let Err(e) = handle(&store, &state, command, reply).await {
            error!(error = %e, "state store failed; stopping the state machine writer");
            proposals.close();
            while let Some(p) = proposals.recv().await {
                let _ = p.reply.send(Err(ProposeError::Stopped));
            }
            return Err(e);
        }
    }
    store.flush().await?;
    info!("state machine writer stopped; store flushed");
    Ok(())
}

async fn handle(
    store: &Store,
    state: &RwLock<StateMachine>,
    command: Command,
    reply: Reply,
) -> Result<(), StoreError> {
    let planned = {
        let sm = state.read().unwrap_or_else(|e| e.into_inner());
        sm.plan(sm.applied_index() + 1, &command)
    };
    let change = match planned {
        Ok(change) => change,
        Err(e) => {
            debug!(command = command.kind(), host_id = command.host_id(), error = %e, "command rejected");
            let _ = reply.send(Err(ProposeError::Rejected(e)));
            return Ok(());
        }
    };
    if let Err(e) = store.persist(&change).await {
        let _ = reply.send(Err(ProposeError::Storage(e.to_string())));
        return Err(e);
    }
    let index = change.index;
    let outcome = state.write().unwrap_or_else(|e| e.into_inner()).commit(change);
    match &outcome {
        ApplyOutcome::Unchanged => {
            debug!(
                index,
                command = command.kind(),
                host_id = command.host_id(),
                "command applied (no change)"
            )
        }
        ApplyOutcome::StateChanged { from, to } => info!(
            index,
            host_id = command.host_id(),
            from = from.as_str(),
            to = to.as_str(),
            reason = match &command {
                Command::SetHostState { reason, .. } => reason.as_str(),
                _ => "",
            },
            "host state changed"
        ),
        ApplyOutcome::Registered => info!(index, host_id = command.host_id(), "host registered"),
        ApplyOutcome::Updated => info!(index, host_id = command.host_id(), "host facts updated"),
    }
    // The proposer may have given up waiting; the command is applied anyway.
    let _ = reply.send(Ok((index, outcome)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::HostState;
    use crate::command::tests::facts;

    fn register(id: &str) -> Command {
        Command::RegisterHost {
            host_id: id.to_owned(),
            agent_version: "0.1.0".to_owned(),
            facts: facts(id, 8),
            at_unix_ms: 1,
        }
    }

    #[tokio::test]
    async fn proposals_get_consecutive_indexes_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let store = Store::open(dir.path()).unwrap();
        let (node, task) = spawn(store.clone(), store.load().unwrap(), stop_rx);
        assert_eq!(node.propose(register("h1")).await.unwrap(), 1);
        assert_eq!(node.propose(register("h2")).await.unwrap(), 2);
        let err = node
            .propose(Command::SetHostState {
                host_id: "nope".to_owned(),
                state: HostState::Down,
                reason: String::new(),
                at_unix_ms: 2,
            })
            .await
            .unwrap_err();
        assert!(matches!(err, ProposeError::Rejected(ApplyError::UnknownHost(_))));
        // A rejection consumes no index.
        assert_eq!(node.propose(register("h3")).await.unwrap(), 3);
        assert_eq!(node.read(|sm| sm.hosts().len()), 3);

        stop_tx.send(true).unwrap();
        task.await.unwrap().unwrap();
        assert!(matches!(
            node.propose(register("h4")).await,
            Err(ProposeError::Stopped)
        ));
        drop(node);
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let sm = store.load().unwrap();
        assert_eq!(sm.applied_index(), 3);
        assert_eq!(sm.hosts().len(), 3);
    }
}
