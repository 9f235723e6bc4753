//! The replica's loop body, synchronous: [`Core`] owns the `RawNode`, the
//! log, the state machine and the callers waiting for an answer; the async
//! driver ([`super::node::start`]) and the simulator (`sim`) call it.

// raft-rs messages are protobuf 2 structs, built field by field.
#![allow(clippy::field_reassign_with_default)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, MessageType, Snapshot,
};
use raft::{RawNode, ReadOnlyOption, SnapshotStatus, StateRole};
use tokio::sync::watch;

use super::incarnation::{self, Incarnations};
use super::log_store::{Compaction, LogError, LogStore};
use super::node::{RaftConfig, StateMachine, Transport};
use super::node_errors::NodeError;
use super::node_handle::{Input, RaftStatus, Reply, SubmitError};

struct Pending<O> {
    reply: Reply<O>,
    deadline: Instant,
}

/// A read waiting for its ReadIndex answer. raft-rs silently drops a read
/// index request that reaches a leader which has not yet committed an entry
/// in its term (or a follower with no leader), so unanswered requests are
/// issued again every [`READ_RETRY_TICKS`] ticks until their deadline.
struct PendingRead {
    reply: Reply<u64>,
    deadline: Instant,
    ticks_waiting: u32,
}

/// Ticks an unanswered read index request waits before it is issued again.
const READ_RETRY_TICKS: u32 = 4;

/// Ticks between the campaigns of the survivors of a leader whose
/// connection broke (by rank; see `Core::leader_lost`): more than a
/// pre-vote round with its log syncs.
const LOST_LEADER_STAGGER_TICKS: usize = 2;

/// A compaction whose snapshot file is being written ([`Core::compact`]).
struct Compacting {
    plan: Compaction,
    started: Instant,
    /// Time this thread spent copying the state.
    copied: std::time::Duration,
    work: CompactionWork,
}

/// Where a compaction's snapshot file is being written.
enum CompactionWork {
    /// On a thread of its own: its size in bytes, once written.
    Thread(std::thread::JoinHandle<Result<usize, LogError>>),
    /// Already written (by this thread), to be recorded by a later cycle.
    Done(Result<usize, LogError>),
}

/// The replica's state and every step of its loop, synchronous: the
/// `RawNode`, the log, the state machine and the callers waiting for an
/// answer. Time comes in as an argument and durability as a log sync the owner
/// does between [`Core::begin_ready`] and [`Core::finish_ready`], so the
/// tokio task ([`super::node::start`]) and the deterministic simulator (`sim`) drive the
/// very same code.
///
/// Pending maps are ordered (`BTreeMap`), so that the order of answers and
/// of re-issued reads depends on nothing but the inputs.
pub(super) struct Core<S: StateMachine, T: Transport> {
    pub(super) config: RaftConfig,
    raw: RawNode<LogStore>,
    log: LogStore,
    machine: S,
    transport: Arc<T>,
    status: watch::Sender<RaftStatus>,
    next_proposal: u64,
    proposals: BTreeMap<u64, Pending<S::Output>>,
    /// Log index of each proposal made while leader.
    proposed_at: BTreeMap<u64, u64>,
    conf_changes: BTreeMap<u64, Pending<ConfState>>,
    /// Read-index requests by context id, then waiting for an applied index.
    reads: BTreeMap<u64, PendingRead>,
    reads_ready: VecDeque<(u64, Reply<u64>)>,
    applied_since_snapshot: u64,
    /// Set by a membership change: the next compaction happens right away,
    /// so the snapshot a new member receives names it in its ConfState
    /// (raft-rs refuses a snapshot whose configuration lacks the receiver).
    snapshot_now: bool,
    /// A compaction whose snapshot file is being written (at most one).
    compacting: Option<Compacting>,
    /// Set when a peer showed that this replica lost acknowledged data:
    /// the next `Ready` cycle stops the node with it.
    lost: Option<NodeError>,
    /// This log's incarnation and the peers' (module `incarnation`).
    incarnations: Arc<Incarnations>,
}

impl<S: StateMachine, T: Transport> Core<S, T> {
    /// Opens and checks the log in `config.log_dir` (bootstrapping it when
    /// empty), rebuilds `machine` from it — the snapshot file restored, then
    /// every entry the log knows committed applied — and builds the
    /// `RawNode`. `machine` must be empty. `tune` may adjust raft-rs'
    /// configuration before it is validated (the simulator pins the
    /// election timeout); proposal and read ids start at `first_id`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open(
        config: RaftConfig,
        mut machine: S,
        transport: Arc<T>,
        logger: &slog::Logger,
        status: watch::Sender<RaftStatus>,
        first_id: u64,
        tune: impl FnOnce(&mut raft::Config),
    ) -> Result<Core<S, T>, NodeError> {
        // An earlier rpool kept the applied state in sled under `state/`:
        // such a dir without a log lost its log, which must not start over.
        let earlier_state = non_empty_dir(&config.state_dir);
        let log = LogStore::open(&config.log_dir, config.id, !earlier_state)?;
        log.set_preallocation(config.preallocate_bytes);
        if earlier_state {
            tracing::info!(
                dir = %config.state_dir.display(),
                "an earlier rpool's state store is no longer read (the raft log rebuilds the state); it can be removed"
            );
        }
        let incarnations = Arc::new(Incarnations::open(&config.log_dir, config.id)?);
        transport.set_incarnations(incarnations.clone());
        if log.is_empty() && !config.bootstrap_voters.is_empty() {
            let mut conf_state = ConfState::default();
            conf_state.voters = config.bootstrap_voters.clone();
            log.set_conf_state(&conf_state)?;
        }
        // The state as of the snapshot; the entries after it are applied
        // below, by the same code that applies them while running.
        let snapshot_index = log.snapshot_index();
        if snapshot_index > 0 {
            let snapshot = log.stored_snapshot()?.ok_or_else(|| LogError::Damaged {
                path: super::snapshot_file::path(&config.log_dir),
                detail: format!(
                    "the log starts after a snapshot at {snapshot_index} but there is no snapshot file"
                ),
            })?;
            machine
                .restore(snapshot_index, &snapshot.data)
                .map_err(|reason| LogError::Damaged {
                    path: super::snapshot_file::path(&config.log_dir),
                    detail: format!("the snapshot at {snapshot_index} does not restore ({reason})"),
                })?;
        }
        // Everything in a snapshot was committed (a compaction's checkpoint
        // records the commit index with it; this only guards raft-rs, which
        // refuses an applied index past the commit).
        if snapshot_index > log.hard_state().commit {
            log.set_commit(snapshot_index)?;
        }
        let mut raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            applied: machine.applied_index(),
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            // A new commit index reaches the followers with the next append
            // or heartbeat, not in an empty append of its own: that append
            // and its answer were half the messages of every write
            // (BENCHMARKS.md). Followers' reads go through ReadIndex,
            // whose heartbeat round carries the commit index anyway.
            skip_bcast_commit: true,
            ..Default::default()
        };
        tune(&mut raft_config);
        raft_config.validate()?;
        let raw = RawNode::new(&raft_config, log.clone(), logger)?;
        let replay_to = log.hard_state().commit;
        let mut core = Core {
            applied_since_snapshot: 0,
            config,
            raw,
            log,
            machine,
            transport,
            status,
            next_proposal: first_id,
            proposals: BTreeMap::new(),
            proposed_at: BTreeMap::new(),
            conf_changes: BTreeMap::new(),
            reads: BTreeMap::new(),
            reads_ready: VecDeque::new(),
            snapshot_now: false,
            compacting: None,
            lost: None,
            incarnations,
        };
        // Every entry known committed, applied before anyone is answered;
        // raft-rs hands them over as committed entries (all of them are in
        // the log, so the first Ready normally holds them all).
        while core.machine.applied_index() < replay_to && core.raw.has_ready() {
            core.on_ready_blocking()?;
        }
        core.publish_status();
        Ok(core)
    }

    /// A group of one needs no election timeout to find out it leads: its
    /// only voter campaigns at once (called by the task after `open`).
    pub(super) fn campaign_if_alone(&mut self) -> Result<(), NodeError> {
        let voters = self.raw.raft.prs().conf().voters();
        if voters.ids().len() == 1 && voters.contains(self.config.id) {
            self.raw.campaign()?;
            // Leading before the task answers anyone (status published).
            self.on_ready_blocking()?;
        }
        Ok(())
    }

    /// The state machine, once the core is no longer needed (an offline
    /// read of a stopped replica's data: [`super::node::load`]).
    pub(super) fn into_machine(self) -> S {
        self.machine
    }

    /// This log's incarnation and the peers': incoming batches are admitted
    /// through it before their messages are handed to [`Core::handle`].
    pub(super) fn incarnations(&self) -> &Arc<Incarnations> {
        &self.incarnations
    }

    #[cfg(test)]
    pub(super) fn raw(&self) -> &RawNode<LogStore> {
        &self.raw
    }

    /// A clean stop: a compaction in flight finished, the log durable, the
    /// commit index with it (the next start applies everything committed
    /// before it answers).
    pub(super) fn close_log(&mut self) -> Result<(), NodeError> {
        self.wait_compaction()?;
        Ok(self.log.close()?)
    }

    /// Makes the log durable: between the two halves of a `Ready` cycle.
    pub(super) fn sync_log(&mut self) -> Result<(), NodeError> {
        Ok(self.log.sync()?)
    }

    #[cfg(test)]
    pub(super) fn log(&self) -> &LogStore {
        &self.log
    }

    #[cfg(test)]
    pub(super) fn machine(&self) -> &S {
        &self.machine
    }

    /// One tick of the Raft clock: elections, heartbeats, read retries and
    /// expired callers.
    pub(super) fn tick(&mut self, now: Instant) {
        self.raw.tick();
        self.retry_reads();
        self.expire(now);
    }

    /// Handles one input; `now` sets the deadline of a caller who waits.
    pub(super) fn handle(&mut self, input: Input<S::Output>, now: Instant) {
        let deadline = now + self.config.propose_timeout;
        match input {
            Input::Propose { data, reply } => {
                if self.raw.raft.leader_id == raft::INVALID_ID {
                    let _ = reply.send(Err(SubmitError::NoLeader));
                    return;
                }
                let id = self.next_id();
                match self.raw.propose(id.to_be_bytes().to_vec(), data) {
                    Ok(()) => {
                        if self.raw.raft.state == StateRole::Leader {
                            // Known slot: if another entry lands there, ours was dropped.
                            self.proposed_at.insert(self.raw.raft.raft_log.last_index(), id);
                        }
                        self.proposals.insert(id, Pending { reply, deadline });
                    }
                    Err(_) => {
                        let _ = reply.send(Err(SubmitError::NoLeader));
                    }
                }
            }
            Input::ReadIndex { reply } => {
                if self.raw.raft.leader_id == raft::INVALID_ID {
                    let _ = reply.send(Err(SubmitError::NoLeader));
                    return;
                }
                let id = self.next_id();
                self.issue_read(id);
                self.reads.insert(
                    id,
                    PendingRead {
                        reply,
                        deadline,
                        ticks_waiting: 0,
                    },
                );
            }
            Input::ConfChange { change, reply } => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(SubmitError::Rejected(format!(
                        "membership changes go through the leader (controller {})",
                        self.raw.raft.leader_id
                    ))));
                    return;
                }
                if self.raw.raft.has_pending_conf() {
                    let _ = reply.send(Err(SubmitError::Rejected(
                        "another membership change is in progress; one at a time".into(),
                    )));
                    return;
                }
                let id = self.next_id();
                match self.raw.propose_conf_change(id.to_be_bytes().to_vec(), change) {
                    Ok(()) => {
                        self.conf_changes.insert(id, Pending { reply, deadline });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(SubmitError::Rejected(e.to_string())));
                    }
                }
            }
            Input::TransferLeader { to } => self.raw.transfer_leader(to),
            Input::Step(message) => {
                // A message for another node or from a removed peer is
                // dropped; raft-rs ignores stale terms itself.
                if message.to == self.config.id && !self.lost_data(&message) {
                    let _ = self.raw.step(message);
                }
            }
            Input::Refused(refusal) => self.stop_lost(incarnation::refused_detail(&refusal)),
            Input::Unreachable(peer) => self.raw.report_unreachable(peer),
            Input::Lost(peer) => self.leader_lost(peer),
            Input::SnapshotSent(peer, delivered) => {
                let status = if delivered {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(peer, status);
            }
        }
    }

    /// The connection to `peer` broke: its process died (kill -9, a crash,
    /// a restart) or the link did. A follower whose leader that was gives
    /// up the leader's lease at once, so it grants the pre-vote of the first
    /// survivor that asks, and the survivors campaign by rank instead of
    /// all waiting out a randomized election timeout: the lowest id at
    /// once, the next [`LOST_LEADER_STAGGER_TICKS`] ticks later, and so on
    /// (two campaigning together would split the vote). Nothing here
    /// bypasses Raft's checks: a leader that is in fact alive renews its
    /// followers' lease with its next heartbeat, and they ignore a
    /// pre-vote in the meantime (check_quorum), so a broken link costs at
    /// most a pre-vote round that fails. A hung leader (SIGSTOP, a host
    /// that lost power) breaks no connection: the election timeout
    /// remains the rule for those.
    fn leader_lost(&mut self, peer: u64) {
        let raft = &mut self.raw.raft;
        if raft.state != StateRole::Follower || raft.leader_id != peer {
            return;
        }
        let mut survivors: Vec<u64> = raft
            .prs()
            .conf()
            .voters()
            .ids()
            .iter()
            .filter(|&id| id != peer)
            .collect();
        survivors.sort_unstable();
        let Some(rank) = survivors.iter().position(|&id| id == self.config.id) else {
            return; // A learner does not campaign.
        };
        let lease = raft.election_timeout();
        if raft.election_elapsed >= lease {
            // Already out of the lease: this loss was handled (the peer
            // task reports a broken stream, then each failed reconnect).
            return;
        }
        let wait = LOST_LEADER_STAGGER_TICKS * rank;
        // Out of the lease (`election_elapsed >= election_timeout`), and
        // `wait` ticks before its own timeout fires (sooner when that was
        // drawn short).
        raft.election_elapsed = raft
            .election_elapsed
            .max(lease)
            .max(raft.randomized_election_timeout().saturating_sub(wait));
        tracing::info!(
            controller = self.config.id,
            leader = peer,
            rank,
            "lost the connection to the leader; campaigning by rank"
        );
        if rank == 0 {
            let _ = self.raw.campaign();
        }
    }

    /// Asks for a read index, unless this leader could not answer yet (no
    /// entry committed in its term): then the tick retries it.
    fn issue_read(&mut self, id: u64) {
        let raft = &self.raw.raft;
        if raft.state == StateRole::Leader && !raft.commit_to_current_term() {
            return;
        }
        self.raw.read_index(id.to_be_bytes().to_vec());
    }

    /// Issues again the read index requests that got no answer.
    fn retry_reads(&mut self) {
        let mut again = Vec::new();
        for (id, read) in &mut self.reads {
            read.ticks_waiting += 1;
            if read.ticks_waiting >= READ_RETRY_TICKS {
                read.ticks_waiting = 0;
                again.push(*id);
            }
        }
        if self.raw.raft.leader_id != raft::INVALID_ID {
            for id in again {
                self.issue_read(id);
            }
        }
    }

    /// True (and the node set to stop) when `message` is a heartbeat of
    /// the current leader that commits past this replica's last entry: the
    /// leader counts on entries we acknowledged and no longer hold (raft-rs
    /// would panic). The log is marked damaged so no restart trusts it.
    fn lost_data(&mut self, message: &Message) -> bool {
        let last = self.raw.raft.raft_log.last_index();
        if message.get_msg_type() != MessageType::MsgHeartbeat
            || message.term < self.raw.raft.term
            || message.commit <= last
        {
            return false;
        }
        let detail = format!(
            "leader {} (term {}) counts on this replica holding entry {}, but its log ends at {}: \
             acknowledged entries were lost (a wiped or damaged data dir, or a disk that lies about syncs)",
            message.from, message.term, message.commit, last
        );
        self.stop_lost(detail);
        true
    }

    /// Marks the log damaged with `detail` (so no restart trusts it) and
    /// stops the node at the next `Ready` cycle.
    fn stop_lost(&mut self, detail: String) {
        tracing::error!(controller = self.config.id, "{detail}");
        if let Err(e) = self.log.mark_damaged(&detail) {
            tracing::error!(error = %e, "could not mark the raft log as damaged");
        }
        if self.lost.is_none() {
            self.lost = Some(NodeError::Log(LogError::Damaged {
                path: self.log.dir().to_owned(),
                detail,
            }));
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_proposal;
        self.next_proposal = self.next_proposal.wrapping_add(1);
        id
    }

    /// First half of a `Ready` cycle, everything before the log sync: send
    /// `messages`, install a snapshot, apply committed entries, append new
    /// entries, persist the hard state, collect read states. Returns the
    /// `Ready` to hand to [`Core::finish_ready`] once the log is synced, or
    /// `None` when raft-rs had nothing ready (no sync needed).
    pub(super) fn begin_ready(&mut self) -> Result<Option<raft::Ready>, NodeError> {
        if let Some(lost) = self.lost.take() {
            return Err(lost);
        }
        if !self.raw.has_ready() {
            self.answer_reads();
            return Ok(None);
        }
        let mut ready = self.raw.ready();
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.install_snapshot(&snapshot)?;
        }
        let committed = ready.take_committed_entries();
        self.apply_entries(committed)?;
        // Entries and hard state in one write.
        self.log.persist_ready(ready.entries(), ready.hs())?;
        for read in ready.take_read_states() {
            let id = u64::from_be_bytes(read.request_ctx[..8].try_into().unwrap_or_default());
            if let Some(pending) = self.reads.remove(&id) {
                self.reads_ready.push_back((read.index, pending.reply));
            }
        }
        Ok(Some(ready))
    }

    /// Second half of a `Ready` cycle, once everything written by
    /// [`Core::begin_ready`] is durable: send `persisted_messages`,
    /// `advance`, record the new commit index, send and apply what `advance`
    /// returned, `advance_apply`, answer reads. The owner then compacts if
    /// [`Core::compaction_due`] and publishes the
    /// status.
    pub(super) fn finish_ready(&mut self, mut ready: raft::Ready) -> Result<(), NodeError> {
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
        }
        // A commit index learnt here (a group of one commits as its own
        // entries persist) is not written on its own: the log keeps it in
        // memory and writes it with its next batch, checkpoint or clean
        // stop. raft-rs reports it here only, not in a later hard state.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.log.note_commit(commit);
        }
        if !light.messages().is_empty() {
            self.transport.send(light.take_messages());
        }
        let committed = light.take_committed_entries();
        self.apply_entries(committed)?;
        self.raw.advance_apply();
        self.answer_reads();
        Ok(())
    }

    /// A whole `Ready` cycle: begin, sync the log, finish; then finish a
    /// compaction whose snapshot file is written, or start one if due.
    pub(super) fn on_ready_blocking(&mut self) -> Result<(), NodeError> {
        let ready = self.begin_ready()?;
        if let Some(ready) = ready {
            self.sync_log()?;
            self.finish_ready(ready)?;
            self.publish_status();
        }
        self.poll_compaction()?;
        if self.compacting.is_none() && self.compaction_due() {
            self.compact()?;
        }
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), NodeError> {
        // One writer of the snapshot file at a time.
        self.wait_compaction()?;
        let index = snapshot.get_metadata().index;
        self.machine
            .restore(index, &snapshot.data)
            .map_err(|reason| NodeError::Restore { index, reason })?;
        // The snapshot file is the state from now on (written and synced
        // before the log records it).
        self.log.apply_snapshot(snapshot)?;
        self.applied_since_snapshot = 0;
        // Our proposals at or below the snapshot may or may not be in it:
        // their entries will never be applied here one by one, so they can
        // be neither answered nor called dropped. They time out (outcome
        // unknown). Answering them `Dropped` when the next entry applied,
        // as before, told callers that committed writes were lost (found
        // by the simulator, seed 8).
        self.proposed_at = self.proposed_at.split_off(&(index + 1));
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        for entry in entries {
            let id = (entry.context.len() == 8)
                .then(|| u64::from_be_bytes(entry.context[..8].try_into().unwrap()));
            // Proposals placed at or before this index by an earlier term of
            // ours and not this entry were overwritten: tell their callers.
            while let Some((&index, &proposed)) = self.proposed_at.first_key_value() {
                if index > entry.index {
                    break;
                }
                self.proposed_at.pop_first();
                if Some(proposed) != id
                    && let Some(pending) = self.proposals.remove(&proposed)
                {
                    let _ = pending.reply.send(Err(SubmitError::Dropped));
                }
            }
            let index = entry.index;
            let failed = |reason| NodeError::Apply { index, reason };
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {
                    self.machine.skip(entry.index).map_err(failed)?;
                }
                EntryType::EntryNormal => {
                    let output = self.machine.apply(entry.index, &entry.data).map_err(failed)?;
                    if let Some(pending) = id.and_then(|id| self.proposals.remove(&id)) {
                        let _ = pending.reply.send(Ok(output));
                    }
                }
                EntryType::EntryConfChange => {
                    let change =
                        ConfChange::parse_from_bytes(&entry.data).map_err(|e| NodeError::Restore {
                            index: entry.index,
                            reason: format!("bad conf change: {e}").into(),
                        })?;
                    // A compaction in flight recorded the membership before
                    // this change: it finishes first (an interrupted one is
                    // completed on open with that membership).
                    self.wait_compaction()?;
                    let conf_state = self.raw.apply_conf_change(&change)?;
                    self.log.set_conf_state(&conf_state)?;
                    if change.get_change_type() == ConfChangeType::RemoveNode {
                        // Its id may be added again, with new data.
                        self.incarnations.forget(change.node_id)?;
                    }
                    self.machine
                        .apply_conf_change(entry.index, &change)
                        .map_err(failed)?;
                    // Whoever hears the answer must see the new membership.
                    self.publish_status();
                    self.snapshot_now = true;
                    if let Some(pending) = id.and_then(|id| self.conf_changes.remove(&id)) {
                        let _ = pending.reply.send(Ok(conf_state));
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    // Never proposed by rpool (single-step changes only).
                    self.machine.skip(entry.index).map_err(failed)?;
                }
            }
            self.applied_since_snapshot += 1;
        }
        Ok(())
    }

    fn answer_reads(&mut self) {
        let applied = self.machine.applied_index();
        while let Some((index, _)) = self.reads_ready.front() {
            if *index > applied {
                break;
            }
            let (index, reply) = self.reads_ready.pop_front().unwrap();
            let _ = reply.send(Ok(index));
        }
    }

    /// True when the log should be compacted now (`snapshot_every` entries
    /// applied since the last snapshot, or a membership change).
    pub(super) fn compaction_due(&self) -> bool {
        self.applied_since_snapshot >= self.config.snapshot_every || self.snapshot_now
    }

    /// Compacts the log into a snapshot of the state machine: the snapshot
    /// file (synced) replaces the entries up to the applied index.
    ///
    /// The state is copied here; encoding it and writing the file (tens of
    /// milliseconds for a state of megabytes, during which this thread
    /// would answer nobody) happen on a thread of their own
    /// (`RaftConfig::background_compaction`), and a later cycle records
    /// the snapshot in the log ([`Core::poll_compaction`]). A membership
    /// change compacts at once, here (the snapshot a new member receives
    /// must name it).
    pub(super) fn compact(&mut self) -> Result<(), NodeError> {
        let now = std::mem::take(&mut self.snapshot_now);
        let applied = self.machine.applied_index();
        self.applied_since_snapshot = 0;
        let Some(plan) = self.log.plan_compaction(applied)? else {
            return Ok(());
        };
        let started = Instant::now();
        let job = self.machine.snapshot_job();
        let copied = started.elapsed();
        let work = if self.config.background_compaction && !now {
            let writer = plan.clone();
            let thread = std::thread::Builder::new()
                .name(format!("raft-snap-{}", self.config.id))
                .spawn(move || {
                    let data = job();
                    let bytes = data.len();
                    writer.write(data).map(|()| bytes)
                })
                .map_err(|e| LogError::Io {
                    path: self.log.dir().to_owned(),
                    source: e,
                })?;
            CompactionWork::Thread(thread)
        } else {
            let data = job();
            let bytes = data.len();
            CompactionWork::Done(plan.write(data).map(|()| bytes))
        };
        self.compacting = Some(Compacting {
            plan,
            started,
            copied,
            work,
        });
        if now {
            self.wait_compaction()?;
        }
        Ok(())
    }

    /// Records a compaction in the log once its snapshot file is written
    /// (a thread's that has not finished is left running).
    pub(super) fn poll_compaction(&mut self) -> Result<(), NodeError> {
        match &self.compacting {
            Some(Compacting {
                work: CompactionWork::Thread(thread),
                ..
            }) if !thread.is_finished() => Ok(()),
            Some(_) => self.wait_compaction(),
            None => Ok(()),
        }
    }

    /// Waits for the compaction in flight, if any, and records it.
    fn wait_compaction(&mut self) -> Result<(), NodeError> {
        let Some(Compacting {
            plan,
            started,
            copied,
            work,
        }) = self.compacting.take()
        else {
            return Ok(());
        };
        let written = match work {
            CompactionWork::Done(written) => written,
            CompactionWork::Thread(thread) => thread.join().unwrap_or_else(|_| {
                Err(LogError::Invalid(format!(
                    "the thread writing the snapshot at {} panicked",
                    plan.index
                )))
            }),
        };
        let bytes = written?;
        self.log.finish_compaction(&plan)?;
        tracing::info!(
            controller = self.config.id,
            index = plan.index,
            bytes,
            copy_ms = copied.as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "raft log compacted into a snapshot"
        );
        Ok(())
    }

    fn expire(&mut self, now: Instant) {
        let timeout = SubmitError::Timeout(self.config.propose_timeout);
        expire(&mut self.proposals, now, &timeout);
        expire(&mut self.conf_changes, now, &timeout);
        let expired: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(read) = self.reads.remove(&id) {
                let _ = read.reply.send(Err(timeout.clone()));
            }
        }
    }

    /// Publishes the observable status if it changed.
    pub(super) fn publish_status(&self) {
        let raft = &self.raw.raft;
        let conf = raft.prs().conf().to_conf_state();
        let leader = raft.state == StateRole::Leader;
        let progress = if leader {
            raft.prs().iter().map(|(id, pr)| (*id, pr.matched)).collect()
        } else {
            BTreeMap::new()
        };
        let mut recent_active: Vec<u64> = if leader {
            raft.prs()
                .iter()
                .filter(|(id, pr)| pr.recent_active || **id == self.config.id)
                .map(|(id, _)| *id)
                .collect()
        } else {
            Vec::new()
        };
        recent_active.sort_unstable();
        let status = RaftStatus {
            id: self.config.id,
            leader_id: raft.leader_id,
            role: raft.state.into(),
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: self.machine.applied_index(),
            voters: conf.voters.clone(),
            learners: conf.learners.clone(),
            progress,
            recent_active,
        };
        self.status.send_if_modified(|old| {
            if *old != status {
                *old = status;
                true
            } else {
                false
            }
        });
    }
}

/// True when `dir` exists and holds anything.
fn non_empty_dir(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// A conf change adding `id` as a voter; `context` carries its address.
pub fn add_voter(id: u64, address: &str) -> ConfChange {
    let mut change = ConfChange::default();
    change.set_change_type(ConfChangeType::AddNode);
    change.node_id = id;
    change.context = address.as_bytes().to_vec().into();
    change
}

pub fn remove_voter(id: u64) -> ConfChange {
    let mut change = ConfChange::default();
    change.set_change_type(ConfChangeType::RemoveNode);
    change.node_id = id;
    change
}

fn expire<T>(pending: &mut BTreeMap<u64, Pending<T>>, now: Instant, error: &SubmitError) {
    let expired: Vec<u64> = pending
        .iter()
        .filter(|(_, p)| p.deadline <= now)
        .map(|(id, _)| *id)
        .collect();
    for id in expired {
        if let Some(p) = pending.remove(&id) {
            let _ = p.reply.send(Err(error.clone()));
        }
    }
}
