//! One Raft replica: a raft-rs `RawNode` owned by a single task.
//!
//! Everything that touches the Raft state goes through [`RaftHandle`], which
//! sends an [`Input`] to the task; the task is the only owner of the
//! `RawNode`, the log and the state machine, so nothing is locked across
//! awaits. The loop, per iteration:
//!
//! 1. wait for a tick (every `tick_ms`) or an input; drain up to
//!    `MAX_INPUTS_PER_READY` more inputs without waiting (batching);
//! 2. if raft-rs has a `Ready`: publish leadership changes; send `messages`
//!    (a leader may send before persisting, raft thesis 10.2.1); install a
//!    snapshot; apply committed entries; append new entries; persist the hard
//!    state; **sync the log** (fdatasync, [`LogStore::sync`](super::log_store::LogStore::sync)); send
//!    `persisted_messages`; `advance`; record the
//!    new commit index, send and apply what `advance` returned;
//!    `advance_apply`;
//! 3. answer proposals whose entries were applied, read-index waiters whose
//!    index was applied; compact the log when `snapshot_every` entries were
//!    applied since the last snapshot.
//!
//! The loop body is synchronous and lives in [`Core`] (inputs, ticks, the
//! two halves of a `Ready` cycle around the sync, compaction); the task is
//! a thin async shell that owns the input queue and the ticker and syncs
//! the log between them. The deterministic simulator (`sim`, tests only)
//! drives the same `Core` with a virtual clock and a crash model that
//! loses whatever was not synced.
//!
//! On open ([`Core::open`]): the log's own checks
//! ([`LogStore::open`](super::log_store::LogStore::open)), then the state
//! machine is rebuilt from the log alone: the snapshot file restored, the
//! committed entries after it applied (at most `snapshot_every`; the log is
//! the only store of the applied state). While running, a heartbeat
//! from a leader that counts on entries this replica no longer holds (its
//! data was lost or wiped) stops the node, and marks the log damaged so
//! that it refuses every later start, instead of raft-rs' panic.
//!
//! Files: this one (the [`StateMachine`] and [`Transport`] the node needs,
//! [`RaftConfig`], [`start`] and the async driver); `node_core.rs`
//! ([`Core`]: the synchronous loop body); `node_handle.rs` ([`RaftHandle`],
//! what callers see); `node_errors.rs` ([`NodeError`]).
//!
//! Proposals carry an id in the entry's context, unique across replicas
//! and restarts (a random start per run, `first_proposal_id`); the node that
//! proposed answers its caller when it applies that entry, whoever led when
//! it committed (raft-rs forwards a follower's proposal to the leader).

// raft-rs messages are protobuf 2 structs, built field by field.
#![allow(clippy::field_reassign_with_default)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::prelude::{ConfChange, Message};
use tokio::sync::{mpsc, watch};

pub(super) use super::node_core::Core;
pub use super::node_core::{add_voter, remove_voter};
pub use super::node_errors::{MachineError, NodeError};
pub(super) use super::node_handle::Input;
pub use super::node_handle::{RaftHandle, RaftRole, RaftStatus, SubmitError, until};

/// Most inputs handled before the next `Ready`: bounds latency under load.
const MAX_INPUTS_PER_READY: usize = 4096;

/// What the replicated state machine must offer the node.
pub trait StateMachine: Send + 'static {
    /// What applying a command returns to the proposer.
    type Output: Send + 'static;
    /// Index of the last applied entry.
    fn applied_index(&self) -> u64;
    /// Applies a committed command at `index`. The machine need not persist
    /// anything: the entry is durable in the log, and the log (snapshot
    /// file, then the entries after it) rebuilds the machine on open. An
    /// error stops the node.
    fn apply(&mut self, index: u64, data: &[u8]) -> Result<Self::Output, MachineError>;
    /// Records that `index` carried no command (a new leader's empty entry).
    fn skip(&mut self, index: u64) -> Result<(), MachineError>;
    /// Records a membership change applied at `index`. `change.context`
    /// holds the address of an added controller.
    fn apply_conf_change(&mut self, index: u64, change: &ConfChange) -> Result<(), MachineError>;
    /// The whole state as of `applied_index`, for a snapshot.
    fn snapshot(&self) -> Vec<u8>;
    /// The same, as a job another thread can run: a machine whose state is
    /// large copies it here (fast) and encodes it in the job (slow).
    fn snapshot_job(&self) -> Box<dyn FnOnce() -> Vec<u8> + Send + 'static> {
        let data = self.snapshot();
        Box::new(move || data)
    }
    /// Replaces the whole state with a snapshot taken at `index`.
    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), MachineError>;
}

/// Where outgoing messages go. Implementations must not block: queue and
/// return (a slow peer must never stall the leader).
pub trait Transport: Send + Sync + 'static {
    fn send(&self, messages: Vec<Message>);
    /// This replica's data incarnation and the ones it knows of its peers
    /// ([`super::incarnation`]), to send with every batch; called by
    /// [`Core::open`] before any message is sent.
    fn set_incarnations(&self, _incarnations: Arc<super::incarnation::Incarnations>) {}
}

/// Timing and limits of one replica.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    pub id: u64,
    /// Voters at bootstrap (used only when the log is empty). Empty for a
    /// member that joins an existing group.
    pub bootstrap_voters: Vec<u64>,
    pub tick_ms: u64,
    pub heartbeat_tick: usize,
    pub election_tick: usize,
    /// Compact the log into a snapshot after this many applied entries.
    pub snapshot_every: u64,
    /// Bytes the live log segment is preallocated by at a time (0: none).
    pub preallocate_bytes: u64,
    /// Encode and write compaction snapshots on a thread of their own (the
    /// simulator writes them inline, to stay deterministic, and records
    /// them a cycle later, as a thread would).
    pub background_compaction: bool,
    /// A proposal not applied within this time fails (outcome unknown).
    pub propose_timeout: Duration,
    /// The Raft log ([`LogStore`](super::log_store::LogStore)): `{data_dir}/raft`.
    pub log_dir: PathBuf,
    /// Where an earlier rpool kept its applied state (sled):
    /// `{data_dir}/state`. No longer written or read; a log missing beside
    /// a non-empty one is data loss (`Core::open`).
    pub state_dir: PathBuf,
}

impl RaftConfig {
    /// Defaults for controller `id` storing under `data_dir`.
    pub fn new(id: u64, voters: Vec<u64>, data_dir: &Path) -> RaftConfig {
        RaftConfig {
            id,
            log_dir: data_dir.join("raft"),
            state_dir: data_dir.join("state"),
            bootstrap_voters: voters,
            tick_ms: 50,
            heartbeat_tick: 2,
            election_tick: 10,
            snapshot_every: 10_000,
            preallocate_bytes: super::wal::PREALLOCATE_BYTES,
            background_compaction: true,
            propose_timeout: Duration::from_secs(5),
        }
    }
}

/// The replica task: the core plus its input queue.
struct Node<S: StateMachine, T: Transport> {
    core: Core<S, T>,
    inputs: mpsc::Receiver<Input<S::Output>>,
}

/// The replica task, as `start` returns it.
pub type NodeTask = tokio::task::JoinHandle<Result<(), NodeError>>;

/// Opens the log, rebuilds `machine` from it (snapshot file, then the
/// committed entries after it) and starts the replica task.
pub fn start<S: StateMachine, T: Transport>(
    config: RaftConfig,
    machine: S,
    transport: Arc<T>,
    logger: slog::Logger,
    stop: watch::Receiver<bool>,
) -> Result<(RaftHandle<S::Output>, NodeTask), NodeError> {
    let (status_tx, status_rx) = watch::channel(RaftStatus {
        id: config.id,
        ..Default::default()
    });
    let first_id = first_proposal_id();
    let mut core = Core::open(config, machine, transport, &logger, status_tx, first_id, |_| {})?;
    core.campaign_if_alone()?;
    let incarnations = core.incarnations().clone();
    let (input_tx, input_rx) = mpsc::channel(16_384);
    let mut node = Node {
        core,
        inputs: input_rx,
    };
    // The replica runs on a thread of its own with its own single-threaded
    // runtime: thousands of agent sessions on the main runtime must never
    // delay a Raft tick or heartbeat (a starved leader loses its term; the
    // heartbeat benchmark showed exactly that at 10,000 agents).
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let id = node.core.config.id;
    std::thread::Builder::new()
        .name(format!("raft-{id}"))
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(node.run(stop)),
                Err(e) => Err(NodeError::Runtime(e.to_string())),
            };
            let _ = done_tx.send(result);
        })
        .map_err(|e| NodeError::Runtime(e.to_string()))?;
    let task = tokio::spawn(async move {
        match done_rx.await {
            Ok(result) => result,
            // The thread ended without an answer: it panicked.
            Err(_) => panic!("the raft thread of controller {id} panicked"),
        }
    });
    Ok((RaftHandle::new(input_tx, status_rx, incarnations), task))
}

/// Rebuilds `machine` from the log of a *stopped* replica (its snapshot
/// file and the committed entries after it), as a start would, without
/// starting anything: for offline inspection of a data dir. Refuses a dir
/// without a log instead of creating one.
pub fn load<S: StateMachine>(config: RaftConfig, machine: S) -> Result<S, NodeError> {
    struct Silent;
    impl Transport for Silent {
        fn send(&self, _: Vec<Message>) {}
    }
    if !config.log_dir.join(super::wal::MEMBER_FILE).exists() {
        return Err(NodeError::Mismatch(format!(
            "{} holds no raft log",
            config.log_dir.display()
        )));
    }
    let (status, _) = watch::channel(RaftStatus::default());
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let core = Core::open(config, machine, Arc::new(Silent), &logger, status, 0, |_| {})?;
    Ok(core.into_machine())
}

/// First proposal (and read) id of this run of the replica.
///
/// An entry carries its proposer's id in its context, and every replica
/// applies every entry and answers the caller waiting under that id: ids
/// must differ across replicas and across restarts of one, or a replica
/// answers its caller with another proposal's entry (and the caller's own
/// entry may then be lost unnoticed). Counting from 1 on every replica did
/// exactly that (found by the simulator, seed 0). A random start per run
/// makes a collision as unlikely as two random 64-bit numbers landing
/// within a few billion of each other.
fn first_proposal_id() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(since_epoch.as_nanos());
    hasher.finish()
}

impl<S: StateMachine, T: Transport> Node<S, T> {
    async fn run(&mut self, mut stop: watch::Receiver<bool>) -> Result<(), NodeError> {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.core.config.tick_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = crate::stopped(&mut stop) => {
                    self.core.close_log()?;
                    return Ok(());
                }
                _ = ticker.tick() => self.core.tick(Instant::now()),
                input = self.inputs.recv() => {
                    let Some(input) = input else { return Ok(()) };
                    let now = Instant::now();
                    self.core.handle(input, now);
                    for _ in 0..MAX_INPUTS_PER_READY {
                        match self.inputs.try_recv() {
                            Ok(input) => self.core.handle(input, now),
                            Err(_) => break,
                        }
                    }
                }
            }
            self.on_ready().await?;
        }
    }

    /// One `Ready` cycle. The sync blocks this thread (the replica's own)
    /// for one fdatasync: nothing else could go on before it anyway.
    async fn on_ready(&mut self) -> Result<(), NodeError> {
        self.core.on_ready_blocking()
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
