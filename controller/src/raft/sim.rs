//! Seeded, deterministic simulation of the controller trio.
//!
//! # Model
//!
//! One thread, one discrete-event loop, one virtual clock (milliseconds).
//! Three controllers run the production replica code, [`Core`] from
//! [`super::node`] — the same synchronous core the tokio task drives — with
//! the production state machine on the production storage:
//!
//! - **real**: raft-rs' `RawNode`, [`super::log_store::LogStore`] (one
//!   temp dir per controller: the write-ahead log and snapshot file in
//!   `raft/`, as in `crate::run`), the [`Replicated`] state machine rebuilt
//!   from it by [`Core::open`] at every (re)start, JSON-encoded [`Command`]s (`RegisterHost`,
//!   `SetHostState`, `SetHostLabels`, `CreatePool`, `DestroyPool`) proposed exactly as
//!   `NodeHandle::propose` does (the same `Input::Propose` path, replies on
//!   the same oneshot channels, ReadIndex reads like `read_barrier`);
//! - **simulated**: the clock (ticks and deadlines come from the virtual
//!   clock through an `Instant` offset from a fixed base), the network (a
//!   queue of in-flight raft messages), the agents and admins (clients that
//!   propose to a random controller or to the leader and read), and the
//!   crash (see Faults).
//!
//! Events: tick controller `i` (every `tick_ms`, each with its own phase);
//! deliver a message; a client proposal or read; crash, restart; isolate a
//! controller, heal. Every event is handled by one core input followed by a
//! full `Ready` cycle ([`Core::on_ready_blocking`]), as the task does.
//!
//! # Determinism
//!
//! Everything random is drawn from `fastrand::Rng::with_seed(seed)`.
//! raft-rs randomizes election timeouts with its own RNG, so each
//! incarnation of a controller gets a one-value range
//! (`min_election_tick = e`, `max_election_tick = e + 1`, `e` drawn from the
//! seed). raft-rs' maps hash with fxhash and the core's maps are ordered, so
//! iteration orders are fixed. No tokio runtime, no threads in the loop.
//! `same_seed_same_run` checks that a seed replays identically.
//!
//! # Faults (all from the seed)
//!
//! Per seed: a drop rate (0–10 %), a duplication rate (0–5 %), a maximum
//! delay (1–4 ticks; delays reorder messages). Every few dozen ticks a chaos
//! event: crash a random controller or the leader (at most one down at a
//! time) and restart it later; isolate a random controller or the leader
//! (in both directions) and heal later. A crash happens between events
//! (after a complete `Ready` cycle) or in the middle of one, after
//! [`Core::begin_ready`] and either after or before the log's sync (so
//! persisted messages are never sent, `advance` is never called and what it
//! would have committed is never applied). The core is dropped and the
//! same directory is reopened, through a storage fault model: of the bytes
//! the log wrote after its last fdatasync, the crash keeps all, none, or a
//! prefix whose last 1–64 bytes are garbage (a torn write); synced bytes
//! are never touched. The applied state is memory only: it is lost with
//! every crash and rebuilt from the log.
//!
//! So a crash exercises the restart — the log's torn-tail recovery and
//! self-checks, the state rebuilt from the snapshot file and the committed
//! entries after it, callers lost, a fresh election timeout.
//! A message dropped for a partition or a down peer is reported to its
//! sender as unreachable; a snapshot message reports its delivery or loss,
//! as the gRPC transport does.
//!
//! # Invariants, checked after every event
//!
//! 1. At most one leader per term (every controller's (term, role)).
//! 2. Committed entries never change: the first (term, content) seen at an
//!    index, in a controller's log up to its commit index or applied by a
//!    state machine, is the only one ever seen there.
//! 3. Replicas at the same applied index hold identical state (the
//!    `crate::state::State` values compared after every apply,
//!    snapshot restore and restart).
//! 4. Acknowledged writes survive: an acknowledged proposal's command is
//!    the committed entry at the acknowledged index; at the end, replaying
//!    the committed log from scratch yields every replica's final state.
//!    A proposal answered `Dropped` never commits. A ReadIndex answer is at
//!    least the index of every write acknowledged before the read.
//!
//! At the end of a seed everything heals (down controllers restart, the
//! partition heals, drops and duplicates stop) and the trio must converge
//! within a bound: one leader, every replica at the same applied index,
//! and a final write acknowledged. A seed must also have acknowledged
//! writes during the chaos.
//!
//! # Files
//!
//! This one (model, events, the loop); `sim_machine.rs` (the instrumented
//! state machine and outbox), `sim_clients.rs` (agents and admins),
//! `sim_storage.rs` (the storage fault model), `sim_checks.rs` (the
//! invariants), `sim_runner.rs` (a seed to convergence, the seeds, tests).
//!
//! # Running
//!
//! `cargo test -p rpool-controller simulation` runs seeds `0..N`,
//! `N = RPOOL_SIM_SEEDS` (default 200), then 10 fresh random seeds
//! (printed first); `RPOOL_SIM_SEED=k` runs seed `k` alone. A failure names the seed and how to reproduce it, with the last
//! events before it; `RPOOL_SIM_TRACE=1` prints every event as it runs.
//!
//! # What it found
//!
//! - Proposal ids counted from 1 on every replica: a replica answered its
//!   caller with another replica's entry that carried the same id (seed 0),
//!   so an acknowledged write could be lost. Ids now start at a random
//!   value per run of a replica.
//! - A replica that caught up through a snapshot answered its own earlier
//!   proposals `Dropped` although the snapshot contained them (seed 8,
//!   once the first bug was fixed). They now time out (outcome unknown).

// raft-rs messages are protobuf 2 structs.
#![allow(clippy::field_reassign_with_default)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::prelude::{ConfChange, EntryType, Message, MessageType};
use raft::{GetEntriesContext, StateRole, Storage as _};
use tokio::sync::{oneshot, watch};

use super::incarnation::{AdmitError, Refusal};
use super::log_store::{LogError, LogStore};
use super::node::StateMachine as _;
use super::node::{Core, Input, NodeError, RaftConfig, RaftStatus, SubmitError, Transport};
use crate::replica::apply::{Applied, Replicated};
use crate::state::State;
use crate::state::command::tests::facts;
use crate::state::command::{Command, HostState};

#[path = "sim_checks.rs"]
mod checks;
#[path = "sim_clients.rs"]
mod clients;
#[path = "sim_machine.rs"]
mod machine;
#[path = "sim_runner.rs"]
mod runner;
#[path = "sim_storage.rs"]
mod storage;

use checks::describe_event;
use machine::{Applying, Observations, Observed, Outbox};

/// Controllers in the group.
const NODES: u64 = 3;
/// Virtual milliseconds per Raft tick.
const TICK_MS: u64 = 50;
/// Ticks of chaos per seed.
const CHAOS_TICKS: u64 = 300;
/// Ticks allowed to converge once everything is healed.
const CONVERGE_TICKS: u64 = 400;
/// Hosts the simulated agents and admins talk about.
const HOSTS: u8 = 6;
/// Events kept for a failure report.
const TRACE: usize = 40;

/// What a committed log position holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    /// A new leader's empty entry.
    Empty,
    /// A command (its bytes).
    Command(Vec<u8>),
    /// A membership change (its encoding).
    Conf(Vec<u8>),
}

type SimCore = Core<Observed, Outbox>;

struct SimNode {
    id: u64,
    dir: PathBuf,
    core: Option<SimCore>,
    /// Keeps the status channel open (nobody reads it).
    _status: Option<watch::Receiver<RaftStatus>>,
    outbox: Arc<Outbox>,
    /// Bumped by every crash: ticks of an earlier life are ignored.
    incarnation: u64,
    /// Highest index of this node's log already checked as committed.
    checked: u64,
    /// Bumped by a wipe: which life of its data the controller runs on
    /// (ground truth, for the wipe invariant).
    data_life: u64,
    /// Stopped for good: it lost its data and was refused (or found out).
    retired: bool,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Random,
    Leader,
}

#[derive(Debug)]
enum Event {
    Tick {
        node: u64,
        incarnation: u64,
    },
    /// A message, the controller that sent it (raft-rs forwards a
    /// proposal or read request with its first sender in `from`), its data
    /// incarnation (as sent in the batch) and data life (ground truth).
    Deliver {
        message: Box<Message>,
        sender: u64,
        incarnation: u128,
        /// The incarnations the sender knew (`RaftBatch.known`).
        known: Vec<(u64, u128)>,
        life: u64,
    },
    /// `peer` refused `node`'s batch (its data is not the one it knew).
    Refused {
        node: u64,
        refusal: Refusal,
    },
    Propose,
    Read,
    Chaos,
    Crash(Target),
    /// Crash the target in its next `Ready` cycle, after or before its log sync.
    CrashMidReady(Target),
    Restart(u64),
    /// Crash the target, wipe its data dir, restart it later under its old id.
    Wipe(Target),
    /// The transport tells `node` that `peer` could not be reached.
    Unreachable {
        node: u64,
        peer: u64,
    },
    /// The transport tells `node` that its connection to `peer` broke.
    Lost {
        node: u64,
        peer: u64,
    },
    /// The transport tells `node` whether its snapshot reached `peer`.
    SnapshotReport {
        node: u64,
        peer: u64,
        delivered: bool,
    },
    Isolate(Target),
    Heal,
}

/// A client waiting for an answer.
enum Call {
    Write {
        node: u64,
        data: Vec<u8>,
        answer: oneshot::Receiver<Result<Applied, SubmitError>>,
    },
    Read {
        node: u64,
        /// Highest acknowledged index when the read was issued.
        floor: u64,
        answer: oneshot::Receiver<Result<u64, SubmitError>>,
    },
}

/// Per-seed fault rates.
#[derive(Debug)]
struct Faults {
    drop: f64,
    duplicate: f64,
    max_delay_ms: u64,
}

/// What a seed did, for the summary and the determinism check.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Summary {
    events: u64,
    acked: u64,
    dropped: u64,
    unknown: u64,
    reads: u64,
    crashes: u64,
    /// Of which in the middle of a `Ready` cycle.
    mid_ready_crashes: u64,
    /// Unsynced log bytes lost or torn by crashes.
    lost_log_bytes: u64,
    /// Data dirs wiped (then restarted under the old id).
    wipes: u64,
    /// Of which the controller led when it was wiped.
    leader_wipes: u64,
    /// Batches refused for a wrong incarnation.
    refused: u64,
    partitions: u64,
    snapshots: u64,
    final_applied: u64,
    max_term: u64,
    /// Digest of the committed log and the leaders per term.
    digest: u64,
}

struct Committed {
    term: Option<u64>,
    content: Content,
}

struct Sim {
    rng: fastrand::Rng,
    base: Instant,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<SimNode>,
    _dir: tempfile::TempDir,
    faults: Faults,
    isolated: Option<u64>,
    /// A controller to crash in the middle of its next `Ready` cycle.
    crash_mid_ready: Option<u64>,
    chaos: bool,
    seen: Observations,
    logger: slog::Logger,
    leaders: BTreeMap<u64, u64>,
    committed: BTreeMap<u64, Committed>,
    states: BTreeMap<u64, State>,
    calls: Vec<Call>,
    acked: Vec<(u64, Vec<u8>)>,
    max_acked: u64,
    /// Proposals answered `Dropped`: (controller, when, command).
    dropped: Vec<(u64, u64, Vec<u8>)>,
    next_command: u64,
    summary: Summary,
    trace: VecDeque<String>,
    /// `RPOOL_SIM_TRACE=1`: print every event as it happens.
    verbose: bool,
    /// Whether this seed wipes a controller's data (half of them do).
    wipes: bool,
    /// (receiver, sender, sender's data life) of every message stepped.
    heard: BTreeSet<(u64, u64, u64)>,
    /// `RPOOL_SIM_NO_INCARNATIONS=1`: skip the incarnation check, to see
    /// what a wipe does without it (the wipe invariant is off too).
    no_incarnations: bool,
}

fn temp_root() -> tempfile::TempDir {
    // Flushes are fsyncs: on tmpfs they cost nothing.
    let shm = std::path::Path::new("/dev/shm");
    let builder = tempfile::Builder::new().prefix("rpool-sim").tempdir_in(shm);
    builder.unwrap_or_else(|_| tempfile::tempdir().expect("a temp dir"))
}

impl Sim {
    fn new(seed: u64) -> Result<Sim, String> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let faults = Faults {
            drop: rng.f64() * 0.10,
            duplicate: rng.f64() * 0.05,
            max_delay_ms: rng.u64(1..=4 * TICK_MS),
        };
        let dir = temp_root();
        let nodes = (1..=NODES)
            .map(|id| SimNode {
                id,
                dir: dir.path().join(format!("c{id}")),
                core: None,
                _status: None,
                outbox: Arc::new(Outbox::default()),
                incarnation: 0,
                checked: 0,
                data_life: 0,
                retired: false,
            })
            .collect();
        let mut sim = Sim {
            rng,
            base: Instant::now(),
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            _dir: dir,
            faults,
            isolated: None,
            crash_mid_ready: None,
            chaos: true,
            seen: Arc::default(),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            states: BTreeMap::from([(0, State::new())]),
            calls: Vec::new(),
            acked: Vec::new(),
            max_acked: 0,
            dropped: Vec::new(),
            next_command: 1,
            summary: Summary::default(),
            trace: VecDeque::new(),
            verbose: std::env::var_os("RPOOL_SIM_TRACE").is_some(),
            wipes: false,
            heard: BTreeSet::new(),
            no_incarnations: std::env::var_os("RPOOL_SIM_NO_INCARNATIONS").is_some(),
        };
        sim.wipes = sim.rng.bool();
        for id in 1..=NODES {
            sim.boot(id)?;
        }
        let propose = sim.rng.u64(1..=2 * TICK_MS);
        sim.schedule(propose, Event::Propose);
        let read = sim.rng.u64(1..=4 * TICK_MS);
        sim.schedule(read, Event::Read);
        let chaos = sim.rng.u64(20..=60) * TICK_MS;
        sim.schedule(chaos, Event::Chaos);
        Ok(sim)
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((self.now + after_ms, self.seq), event);
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_millis(self.now)
    }

    fn node(&self, id: u64) -> &SimNode {
        &self.nodes[id as usize - 1]
    }

    fn node_mut(&mut self, id: u64) -> &mut SimNode {
        &mut self.nodes[id as usize - 1]
    }

    fn is_up(&self, id: u64) -> bool {
        self.node(id).core.is_some()
    }

    /// Controllers down that will come back (not the retired ones).
    fn down(&self) -> Vec<u64> {
        (1..=NODES)
            .filter(|id| !self.is_up(*id) && !self.node(*id).retired)
            .collect()
    }

    /// True once a controller's data was wiped in this seed.
    fn wiped_any(&self) -> bool {
        self.nodes.iter().any(|n| n.data_life > 0)
    }

    /// The up controller that leads in the highest term, if any.
    fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter_map(|n| n.core.as_ref().map(|c| (n.id, &c.raw().raft)))
            .filter(|(_, raft)| raft.state == StateRole::Leader)
            .max_by_key(|(_, raft)| raft.term)
            .map(|(id, _)| id)
    }

    fn cut(&self, a: u64, b: u64) -> bool {
        self.isolated.is_some_and(|i| i == a || i == b)
    }

    /// Opens (or reopens) controller `id` from its directory.
    fn boot(&mut self, id: u64) -> Result<(), String> {
        let dir = self.node(id).dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        // Empty: `Core::open` rebuilds it from the log, through `Observed`,
        // so every restored and replayed state is checked like any other.
        let state = Arc::new(RwLock::new(State::new()));
        let machine = Observed {
            inner: Replicated::new(state.clone()),
            state,
            node: id,
            seen: self.seen.clone(),
        };
        let mut config = RaftConfig::new(id, (1..=NODES).collect(), &dir);
        config.tick_ms = TICK_MS;
        config.snapshot_every = self.rng.u64(15..=60);
        // Deterministic: the snapshot file is written inline and recorded
        // one cycle later, so crashes and messages fall in between.
        config.background_compaction = false;
        let election = config.election_tick + self.rng.usize(0..config.election_tick);
        let (status_tx, status_rx) = watch::channel(RaftStatus::default());
        let outbox = self.node(id).outbox.clone();
        // As `start` does, a random first proposal id per incarnation (from
        // the seed here).
        let first_id = self.rng.u64(..);
        let core = Core::open(
            config,
            machine,
            outbox,
            &self.logger,
            status_tx,
            first_id,
            |raft| {
                raft.min_election_tick = election;
                raft.max_election_tick = election + 1;
            },
        )
        .map_err(|e| format!("controller {id}: starting the replica: {e}"))?;
        let node = self.node_mut(id);
        node.checked = core.log().snapshot_index();
        node.core = Some(core);
        node._status = Some(status_rx);
        let incarnation = node.incarnation;
        let phase = self.rng.u64(1..=TICK_MS);
        self.schedule(
            phase,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
        self.note(format!("controller {id} up (election timeout {election} ticks)"));
        Ok(())
    }

    fn note(&mut self, line: String) {
        if self.trace.len() == TRACE {
            self.trace.pop_front();
        }
        let line = format!("t={}ms {line}", self.now);
        if self.verbose {
            eprintln!("{line}");
        }
        self.trace.push_back(line);
    }

    /// Feeds one input to controller `id` (if up), runs its `Ready`
    /// cycle, then ships its messages and checks the invariants.
    fn input(&mut self, id: u64, input: Input<Applied>) -> Result<(), String> {
        let now = self.instant();
        let Some(core) = self.node_mut(id).core.as_mut() else {
            return Ok(());
        };
        core.handle(input, now);
        self.ready(id)
    }

    fn ready(&mut self, id: u64) -> Result<(), String> {
        if self.crash_mid_ready == Some(id) {
            return self.ready_then_crash(id);
        }
        let Some(core) = self.node_mut(id).core.as_mut() else {
            return Ok(());
        };
        if let Err(e) = core.on_ready_blocking() {
            return self.stopped(id, e);
        }
        self.ship(id);
        self.observe(id)?;
        self.poll_calls()
    }

    /// The first half of a `Ready` cycle, the log sync or not, then a crash
    /// before the second half: persisted messages never sent, `advance`
    /// never called, entries committed by it never applied; without the
    /// sync, what the cycle wrote is subject to [`Sim::lose_unsynced_log`].
    /// Waits for a `Ready` with something in it.
    fn ready_then_crash(&mut self, id: u64) -> Result<(), String> {
        let synced = self.rng.bool();
        let Some(core) = self.node_mut(id).core.as_mut() else {
            self.crash_mid_ready = None;
            return Ok(());
        };
        let begun = match core.begin_ready() {
            Ok(begun) => begun,
            Err(e) => {
                self.crash_mid_ready = None;
                return self.stopped(id, e);
            }
        };
        let Some(ready) = begun else {
            return self.poll_calls();
        };
        if synced {
            core.sync_log()
                .map_err(|e| format!("controller {id}: sync: {e}"))?;
        }
        drop(ready);
        // What `begin_ready` handed the transport may have left.
        self.ship(id);
        self.observe(id)?;
        self.crash_mid_ready = None;
        self.summary.mid_ready_crashes += 1;
        let when = if synced { "after" } else { "before" };
        self.note(format!(
            "controller {id} crashing {when} the log sync of its Ready"
        ));
        self.crash(id);
        let after = self.rng.u64(5..=80) * TICK_MS;
        self.schedule(after, Event::Restart(id));
        self.poll_calls()
    }

    /// Controller `id` stopped with `error`: the end of a wiped controller
    /// that was refused or found out (it retires for good), a failure for
    /// any other.
    fn stopped(&mut self, id: u64, error: NodeError) -> Result<(), String> {
        let damaged = matches!(error, NodeError::Log(LogError::Damaged { .. }));
        if !(damaged && self.node(id).data_life > 0) {
            return Err(format!("controller {id} stopped: {error}"));
        }
        self.note(format!("controller {id} (wiped) stopped: {error}"));
        let node = self.node_mut(id);
        node.core = None;
        node._status = None;
        node.incarnation += 1;
        node.retired = true;
        node.outbox.0.lock().unwrap().clear();
        // It marked its log: a restart must refuse at once.
        let dir = self.node(id).dir.clone();
        if LogStore::open(&dir.join("raft"), id, true).is_ok() {
            return Err(format!(
                "controller {id} stopped as wiped but its log still opens"
            ));
        }
        self.poll_calls()
    }

    /// Puts what `from` sent on the network, with drops, duplicates and
    /// delays.
    fn ship(&mut self, from: u64) {
        let messages: Vec<Message> = std::mem::take(&mut *self.node(from).outbox.0.lock().unwrap());
        let (incarnation, known) = self.node(from).core.as_ref().map_or((0, Vec::new()), |c| {
            (c.incarnations().own(), c.incarnations().table())
        });
        let life = self.node(from).data_life;
        for message in messages {
            let to = message.to;
            if self.cut(from, to) || !self.is_up(to) {
                self.lost(message);
                continue;
            }
            if self.chaos && self.rng.f64() < self.faults.drop {
                self.lost(message);
                continue;
            }
            let copies = if self.chaos && self.rng.f64() < self.faults.duplicate {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let delay = self.rng.u64(1..=self.faults.max_delay_ms);
                let deliver = Event::Deliver {
                    message: Box::new(message.clone()),
                    sender: from,
                    incarnation,
                    known: known.clone(),
                    life,
                };
                self.schedule(delay, deliver);
            }
        }
    }

    /// A message that will not arrive: its sender hears about it the way
    /// the gRPC transport reports it (later, as an event).
    fn lost(&mut self, message: Message) {
        let from = message.from;
        let to = message.to;
        let unreachable = self.cut(from, to) || !self.is_up(to);
        if message.get_msg_type() == MessageType::MsgSnapshot {
            let report = Event::SnapshotReport {
                node: from,
                peer: to,
                delivered: false,
            };
            self.schedule(1, report);
        } else if unreachable {
            self.schedule(1, Event::Unreachable { node: from, peer: to });
        }
    }

    fn deliver(
        &mut self,
        message: Message,
        from: u64,
        incarnation: u128,
        known: &[(u64, u128)],
        life: u64,
    ) -> Result<(), String> {
        let to = message.to;
        if self.cut(from, to) || !self.is_up(to) {
            self.lost(message);
            return Ok(());
        }
        // As the gRPC service does: the batch is admitted before any of its
        // messages is stepped; a refusal goes back to the sender.
        if !self.no_incarnations {
            let admitted =
                self.node(to)
                    .core
                    .as_ref()
                    .expect("up")
                    .incarnations()
                    .admit(from, Some(incarnation), known);
            match admitted {
                Ok(()) => {}
                Err(AdmitError::Refused(refusal)) => {
                    self.summary.refused += 1;
                    let delay = self.rng.u64(1..=self.faults.max_delay_ms);
                    self.schedule(delay, Event::Refused { node: from, refusal });
                    return Ok(());
                }
                Err(AdmitError::Io(e)) => return Err(format!("controller {to}: recording a peer: {e}")),
            }
            // The wipe invariant (ground truth): nobody that heard the
            // sender's earlier data life steps a message of a later one,
            // so a wiped controller never votes or acknowledges.
            if let Some((_, _, earlier)) = self.heard.range((to, from, 0)..(to, from, life)).next() {
                return Err(format!(
                    "controller {to} stepped a {:?} from controller {from} whose data was wiped \
                     (it had heard its data life {earlier}, this is life {life})",
                    message.get_msg_type()
                ));
            }
        }
        self.heard.insert((to, from, life));
        let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
        if snapshot {
            self.summary.snapshots += 1;
            self.note(format!(
                "snapshot {from} -> {to} at {}",
                message.get_snapshot().get_metadata().index
            ));
        }
        self.input(to, Input::Step(message))?;
        if snapshot {
            self.input(from, Input::SnapshotSent(to, true))?;
        }
        Ok(())
    }

    fn chaos_event(&mut self) {
        // After a wipe nothing else crashes: the wiped controller stops for
        // good, and the other two are the quorum.
        let down = !self.down().is_empty() || self.crash_mid_ready.is_some() || self.wiped_any();
        let leader = self.leader().is_some();
        let choice = self.rng.u8(0..8);
        match choice {
            6 if !down && self.wipes => self.schedule(0, Event::Wipe(Target::Random)),
            7 if !down && self.wipes && leader => self.schedule(0, Event::Wipe(Target::Leader)),
            0 if !down => self.schedule(0, Event::Crash(Target::Random)),
            1 if !down && leader => self.schedule(0, Event::Crash(Target::Leader)),
            4 if !down && leader => self.schedule(0, Event::CrashMidReady(Target::Leader)),
            5 if !down => self.schedule(0, Event::CrashMidReady(Target::Random)),
            2 if self.isolated.is_none() => self.schedule(0, Event::Isolate(Target::Random)),
            3 if self.isolated.is_none() && leader => self.schedule(0, Event::Isolate(Target::Leader)),
            _ => {}
        }
        let next = self.rng.u64(20..=60) * TICK_MS;
        self.schedule(next, Event::Chaos);
    }

    fn target(&mut self, target: Target) -> u64 {
        match target {
            Target::Leader => self.leader().unwrap_or_else(|| self.rng.u64(1..=NODES)),
            Target::Random => self.rng.u64(1..=NODES),
        }
    }

    fn handle(&mut self, event: Event) -> Result<(), String> {
        self.summary.events += 1;
        match event {
            Event::Tick { node, incarnation } => {
                if !self.is_up(node) || self.node(node).incarnation != incarnation {
                    return Ok(());
                }
                let now = self.instant();
                if let Some(core) = self.node_mut(node).core.as_mut() {
                    core.tick(now);
                }
                self.schedule(TICK_MS, Event::Tick { node, incarnation });
                self.ready(node)
            }
            Event::Deliver {
                message,
                sender,
                incarnation,
                known,
                life,
            } => self.deliver(*message, sender, incarnation, &known, life),
            Event::Refused { node, refusal } => {
                if self.node(node).data_life == 0 {
                    return Err(format!(
                        "controller {node}, whose data was never wiped, was refused: {}",
                        refusal.detail
                    ));
                }
                self.input(node, Input::Refused(refusal))
            }
            Event::Unreachable { node, peer } => self.input(node, Input::Unreachable(peer)),
            Event::Lost { node, peer } => self.input(node, Input::Lost(peer)),
            Event::SnapshotReport {
                node,
                peer,
                delivered,
            } => self.input(node, Input::SnapshotSent(peer, delivered)),
            Event::Propose => {
                let next = self.rng.u64(1..=2 * TICK_MS);
                self.schedule(next, Event::Propose);
                match self.pick() {
                    Some(id) => self.propose(id),
                    None => Ok(()),
                }
            }
            Event::Read => {
                let next = self.rng.u64(1..=6 * TICK_MS);
                self.schedule(next, Event::Read);
                match self.pick() {
                    Some(id) => self.read(id),
                    None => Ok(()),
                }
            }
            Event::Chaos => {
                if self.chaos {
                    self.chaos_event();
                }
                Ok(())
            }
            Event::Crash(target) => {
                let id = self.target(target);
                if self.is_up(id) {
                    self.crash(id);
                    let after = self.rng.u64(5..=80) * TICK_MS;
                    self.schedule(after, Event::Restart(id));
                }
                Ok(())
            }
            Event::CrashMidReady(target) => {
                let id = self.target(target);
                if self.is_up(id) && self.crash_mid_ready.is_none() {
                    self.crash_mid_ready = Some(id);
                }
                Ok(())
            }
            Event::Restart(id) => {
                if self.is_up(id) || self.node(id).retired {
                    return Ok(());
                }
                self.boot(id)
            }
            Event::Wipe(target) => {
                let id = self.target(target);
                if !self.is_up(id) || self.wiped_any() {
                    return Ok(());
                }
                let led = self.leader() == Some(id);
                self.crash(id);
                let dir = self.node(id).dir.clone();
                std::fs::remove_dir_all(&dir).map_err(|e| format!("wiping {}: {e}", dir.display()))?;
                self.node_mut(id).data_life += 1;
                self.summary.wipes += 1;
                if led {
                    self.summary.leader_wipes += 1;
                }
                let role = if led { "leader" } else { "follower" };
                self.note(format!("controller {id} ({role}) wiped"));
                let after = self.rng.u64(5..=80) * TICK_MS;
                self.schedule(after, Event::Restart(id));
                Ok(())
            }
            Event::Isolate(target) => {
                let id = self.target(target);
                self.isolated = Some(id);
                self.summary.partitions += 1;
                self.note(format!("controller {id} isolated"));
                // Streams across the cut break when their keep-alive runs
                // out (or survive a short cut): while the leader may be
                // alive on the other side, or after the cut healed.
                for other in (1..=NODES).filter(|&o| o != id) {
                    if self.rng.bool() {
                        let after = self.rng.u64(20..=80) * TICK_MS;
                        self.schedule(
                            after,
                            Event::Lost {
                                node: other,
                                peer: id,
                            },
                        );
                        let after = self.rng.u64(20..=80) * TICK_MS;
                        self.schedule(
                            after,
                            Event::Lost {
                                node: id,
                                peer: other,
                            },
                        );
                    }
                }
                let after = self.rng.u64(10..=120) * TICK_MS;
                self.schedule(after, Event::Heal);
                Ok(())
            }
            Event::Heal => {
                if self.isolated.take().is_some() {
                    self.note("partition healed".to_owned());
                }
                Ok(())
            }
        }
    }

    fn step(&mut self) -> Result<bool, String> {
        let Some(((at, _), event)) = self.queue.pop_first() else {
            return Ok(false);
        };
        self.now = at;
        if !matches!(event, Event::Tick { .. }) {
            let line = describe_event(&event);
            self.note(line);
        }
        self.handle(event)?;
        Ok(true)
    }

    fn run_until(&mut self, until_ms: u64) -> Result<(), String> {
        while self
            .queue
            .first_key_value()
            .is_some_and(|((at, _), _)| *at <= until_ms)
        {
            self.step()?;
        }
        self.now = until_ms;
        Ok(())
    }
}
