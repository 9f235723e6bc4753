//! What callers of the replica see: [`RaftHandle`] (propose, read barrier,
//! membership, status), the [`Input`]s it sends to the replica task, and
//! why a call failed ([`SubmitError`]).

use std::collections::BTreeMap;
use std::time::Duration;

use raft::StateRole;
use raft::prelude::{ConfChange, ConfState, Message};
use tokio::sync::{mpsc, oneshot, watch};

use super::incarnation::{Incarnations, Refusal};
use std::sync::Arc;

/// Why a proposal or read failed. All but `Rejected` are worth a retry.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("no leader is known yet; retry shortly")]
    NoLeader,
    #[error("not applied within {0:?}; the outcome is unknown")]
    Timeout(Duration),
    #[error("the entry was replaced after a leader change; retry")]
    Dropped,
    #[error("the raft node has stopped")]
    Stopped,
    #[error("{0}")]
    Rejected(String),
}

/// Observable state of the replica, published on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub id: u64,
    pub leader_id: u64,
    pub role: RaftRole,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Leader only: match index of each peer.
    pub progress: BTreeMap<u64, u64>,
    /// Leader only: members heard from within the last election timeout
    /// (the leader included).
    pub recent_active: Vec<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RaftRole {
    #[default]
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl From<StateRole> for RaftRole {
    fn from(role: StateRole) -> RaftRole {
        match role {
            StateRole::Follower => RaftRole::Follower,
            StateRole::PreCandidate => RaftRole::PreCandidate,
            StateRole::Candidate => RaftRole::Candidate,
            StateRole::Leader => RaftRole::Leader,
        }
    }
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, SubmitError>>;

pub(super) enum Input<O> {
    Propose {
        data: Vec<u8>,
        reply: Reply<O>,
    },
    ReadIndex {
        reply: Reply<u64>,
    },
    ConfChange {
        change: ConfChange,
        reply: Reply<ConfState>,
    },
    TransferLeader {
        to: u64,
    },
    Step(Message),
    /// A peer refused this replica's messages: its data is not the one the
    /// peer knew under this id (module `incarnation`). The node stops.
    Refused(Refusal),
    Unreachable(u64),
    /// The connection to this peer broke (see [`RaftHandle::report_lost`]).
    Lost(u64),
    SnapshotSent(u64, bool),
}

/// Cheap, cloneable access to the replica task.
pub struct RaftHandle<O> {
    inputs: mpsc::Sender<Input<O>>,
    status: watch::Receiver<RaftStatus>,
    incarnations: Arc<Incarnations>,
}

impl<O> Clone for RaftHandle<O> {
    fn clone(&self) -> Self {
        RaftHandle {
            inputs: self.inputs.clone(),
            status: self.status.clone(),
            incarnations: self.incarnations.clone(),
        }
    }
}

impl<O: Send + 'static> RaftHandle<O> {
    pub(super) fn new(
        inputs: mpsc::Sender<Input<O>>,
        status: watch::Receiver<RaftStatus>,
        incarnations: Arc<Incarnations>,
    ) -> RaftHandle<O> {
        RaftHandle {
            inputs,
            status,
            incarnations,
        }
    }

    /// This replica's incarnation and the ones it knows of its peers: the
    /// transport admits each incoming batch through it before stepping.
    pub fn incarnations(&self) -> &Arc<Incarnations> {
        &self.incarnations
    }

    /// Tells the replica a peer refused its messages: it stops. (A full
    /// queue loses it; the peer refuses the next batch again.)
    pub fn report_refused(&self, refusal: Refusal) {
        let _ = self.inputs.try_send(Input::Refused(refusal));
    }

    /// Replicates `data` and returns what applying it produced, once it is
    /// committed by a quorum and applied here.
    pub async fn propose(&self, data: Vec<u8>) -> Result<O, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.send(Input::Propose { data, reply }).await?;
        answer.await.map_err(|_| SubmitError::Stopped)?
    }

    /// Waits until this replica has applied everything committed before the
    /// call (raft ReadIndex): a read served after it is linearizable.
    pub async fn read_barrier(&self) -> Result<u64, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.send(Input::ReadIndex { reply }).await?;
        answer.await.map_err(|_| SubmitError::Stopped)?
    }

    /// Adds a voter, or removes one; returns the new configuration.
    pub async fn change_membership(&self, change: ConfChange) -> Result<ConfState, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.send(Input::ConfChange { change, reply }).await?;
        answer.await.map_err(|_| SubmitError::Stopped)?
    }

    pub async fn transfer_leader(&self, to: u64) -> Result<(), SubmitError> {
        self.send(Input::TransferLeader { to }).await
    }

    /// Hands a message from a peer to the replica (applies backpressure).
    pub async fn step(&self, message: Message) -> Result<(), SubmitError> {
        self.send(Input::Step(message)).await
    }

    /// Tells raft-rs a peer could not be reached, so it probes instead of
    /// streaming appends into the void.
    pub fn report_unreachable(&self, peer: u64) {
        let _ = self.inputs.try_send(Input::Unreachable(peer));
    }

    /// Tells the replica that its connection to `peer` broke: a follower
    /// whose leader that was stops waiting out the election timeout (see
    /// `Core::leader_lost`).
    pub fn report_lost(&self, peer: u64) {
        let _ = self.inputs.try_send(Input::Lost(peer));
    }

    /// Tells raft-rs whether a snapshot reached a peer's stream, so the
    /// peer's progress leaves the snapshot state either way.
    pub fn report_snapshot(&self, peer: u64, delivered: bool) {
        let _ = self.inputs.try_send(Input::SnapshotSent(peer, delivered));
    }

    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    pub fn watch_status(&self) -> watch::Receiver<RaftStatus> {
        self.status.clone()
    }

    async fn send(&self, input: Input<O>) -> Result<(), SubmitError> {
        self.inputs.send(input).await.map_err(|_| SubmitError::Stopped)
    }
}

/// Resolves once `status` satisfies `condition` (or the replica is gone).
/// Holds no lock across an await.
pub async fn until(status: &mut watch::Receiver<RaftStatus>, condition: impl FnMut(&RaftStatus) -> bool) {
    let _ = status.wait_for(condition).await;
}
