//! The controller's state machine as Raft drives it: committed entries in,
//! durable host records out.
//!
//! [`Replicated`] implements [`crate::raft::node::StateMachine`]. For each
//! committed entry it decodes the [`Command`] (JSON), plans it against the
//! current state, writes the change and the applied index in one sled batch
//! and makes it visible to readers. A command that every replica rejects
//! (unknown host, ...) still advances the applied index: it is in every log.
//! Snapshots are the whole state as JSON ([`SnapshotData`]).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use raft::prelude::{ConfChange, ConfChangeType};

use crate::raft::node::MachineError;
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::replica::store::Store;
use crate::replica::writer::{Ops, Writer};
use crate::state::command::{Command, HostRecord};
use crate::state::pool::MAX_EVENTS;
use crate::state::{ApplyError, ApplyOutcome, State};

/// What a membership change carries in its `ConfChange.context`: the new
/// member's address and the audit record of the admin call that made it
/// (JSON). Older entries carry the bare address (which never starts with
/// `{`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MemberContext {
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub audit: Option<crate::state::audit::AuditRecord>,
}

impl MemberContext {
    /// The context bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a member context always encodes as JSON")
    }

    /// Reads a context written by [`MemberContext::encode`] or a bare address.
    pub fn decode(bytes: &[u8]) -> MemberContext {
        if bytes.first() == Some(&b'{')
            && let Ok(context) = serde_json::from_slice(bytes)
        {
            return context;
        }
        MemberContext {
            address: String::from_utf8_lossy(bytes).into_owned(),
            audit: None,
        }
    }
}

/// What applying one entry produced, for the proposer.
pub type Applied = (u64, Result<ApplyOutcome, ApplyError>);

/// Snapshot format: everything the state machine holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotData {
    pub applied_index: u64,
    pub members: BTreeMap<u64, String>,
    pub hosts: Vec<HostRecord>,
    #[serde(default)]
    pub pools: Vec<crate::state::pool::PoolRecord>,
    #[serde(default)]
    pub tasks: Vec<crate::state::pool::TaskRecord>,
    #[serde(default)]
    pub events: Vec<crate::state::pool::Event>,
    /// Bootstrap tokens (secrets hashed).
    #[serde(default)]
    pub tokens: Vec<crate::state::tokens::TokenRecord>,
}

/// [`SnapshotData`] borrowed from the state: the same fields, the same
/// JSON.
#[derive(Serialize)]
struct SnapshotView<'a> {
    applied_index: u64,
    members: &'a BTreeMap<u64, String>,
    hosts: Vec<&'a HostRecord>,
    pools: Vec<&'a crate::state::pool::PoolRecord>,
    tasks: Vec<&'a crate::state::pool::TaskRecord>,
    events: Vec<&'a crate::state::pool::Event>,
    tokens: Vec<&'a crate::state::tokens::TokenRecord>,
}

impl SnapshotData {
    /// Everything `state` holds, copied (tests compare it with
    /// [`SnapshotData::encode_state`]).
    #[cfg(test)]
    pub fn of(state: &State) -> SnapshotData {
        SnapshotData {
            applied_index: state.applied_index(),
            members: state.members().clone(),
            hosts: state.hosts().values().cloned().collect(),
            pools: state.pools().values().cloned().collect(),
            tasks: state.tasks().values().cloned().collect(),
            events: state.events().iter().cloned().collect(),
            tokens: state.tokens().values().cloned().collect(),
        }
    }

    /// The JSON snapshots and backups carry.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the state machine always encodes as JSON")
    }

    /// `SnapshotData::of(state).encode()` without copying the state first
    /// (the copy was half of a compaction's CPU).
    pub fn encode_state(state: &State) -> Vec<u8> {
        let view = SnapshotView {
            applied_index: state.applied_index(),
            members: state.members(),
            hosts: state.hosts().values().collect(),
            pools: state.pools().values().collect(),
            tasks: state.tasks().values().collect(),
            events: state.events().iter().collect(),
            tokens: state.tokens().values().collect(),
        };
        serde_json::to_vec(&view).expect("the state machine always encodes as JSON")
    }

    /// The state it describes.
    pub fn into_state(self) -> State {
        let hosts = self.hosts.into_iter().map(|h| (h.host_id.clone(), h)).collect();
        let mut state = State::from_parts(hosts, self.members, self.applied_index);
        state.set_pool_state(
            self.pools.into_iter().map(|p| (p.spec.name.clone(), p)).collect(),
            self.tasks.into_iter().map(|t| (t.task_id.clone(), t)).collect(),
            self.events.into_iter().collect(),
        );
        state.set_tokens(self.tokens.into_iter().map(|t| (t.id.clone(), t)).collect());
        state
    }
}

/// The state machine with its store, shared with readers through `state`.
///
/// The writes of the entries applied in one `Ready` are gathered in one
/// batch, written by `end_batch` (one write per Ready instead of one per
/// entry): by the caller's thread ([`Replicated::new`], the simulator's
/// choice: deterministic) or queued to a writer thread
/// ([`Replicated::with_writer`], the controller's: module
/// [`crate::replica::writer`]). Entries are durable in the Raft log before
/// they are applied, so answering a proposal before its state batch is
/// written loses nothing: a crash replays it from the log.
pub struct Replicated {
    store: Store,
    state: Arc<RwLock<State>>,
    pending: Ops,
    writer: Option<Writer>,
}

impl Replicated {
    pub fn new(store: Store, state: Arc<RwLock<State>>) -> Replicated {
        Replicated {
            store,
            state,
            pending: Ops::default(),
            writer: None,
        }
    }

    /// Like [`Replicated::new`], with the store's batches written by a
    /// thread of their own (named `name`).
    pub fn with_writer(store: Store, state: Arc<RwLock<State>>, name: String) -> std::io::Result<Replicated> {
        let writer = Writer::start(store.db().clone(), name)?;
        Ok(Replicated {
            writer: Some(writer),
            ..Replicated::new(store, state)
        })
    }

    /// Writes (or queues) what the entries applied since the last call
    /// changed.
    fn write_pending(&mut self) -> Result<(), MachineError> {
        let ops = std::mem::take(&mut self.pending);
        match &mut self.writer {
            Some(writer) => writer.write(ops).map_err(MachineError::from),
            None if ops.is_empty() => Ok(()),
            None => self
                .store
                .db()
                .apply_batch(ops.into_batch())
                .map_err(MachineError::from),
        }
    }

    /// Events past the kept window go from disk as they go from memory.
    /// The keys to remove are read off the in-memory window (which holds
    /// exactly the stored events), not found by scanning the store: within
    /// one batch the store does not yet see the removals of the entries
    /// before, and a scan found them again and again (quadratic in the
    /// batch; 9 % of a replica's CPU at 128 writes in flight).
    fn prune_events(&mut self, change: &crate::state::Change) -> Result<(), MachineError> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let total = state.events().len() + change.more.events.len();
        if total <= MAX_EVENTS {
            return Ok(());
        }
        let first_kept = {
            let mut all = state.events().iter().chain(&change.more.events);
            all.nth(total - MAX_EVENTS).map_or(0, |e| e.index)
        };
        let dropped = state
            .events()
            .iter()
            .map(|e| e.index)
            .take_while(|&index| index < first_kept);
        Store::remove_events_into(&mut self.pending, dropped);
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl crate::raft::node::StateMachine for Replicated {
    type Output = Applied;

    fn applied_index(&self) -> u64 {
        self.read().applied_index()
    }

    fn apply(&mut self, index: u64, data: &[u8]) -> Result<Applied, MachineError> {
        let command: Command = match serde_json::from_slice(data) {
            Ok(command) => command,
            Err(e) => {
                tracing::error!(index, error = %e, "committed entry does not decode; skipped");
                self.skip(index)?;
                return Ok((index, Err(ApplyError::Undecodable(e.to_string()))));
            }
        };
        let planned = self.read().plan(index, &command);
        let change = match planned {
            Ok(change) => change,
            Err(e) => {
                debug!(index, command = command.kind(), host_id = command.host_id(), error = %e, "command rejected");
                self.skip(index)?;
                return Ok((index, Err(e)));
            }
        };
        self.store
            .write_into(&mut self.pending, &change)
            .map_err(MachineError::from)?;
        self.prune_events(&change)?;
        let outcome = self.write().commit(change);
        log_outcome(index, &command, &outcome);
        Ok((index, Ok(outcome)))
    }

    fn skip(&mut self, index: u64) -> Result<(), MachineError> {
        Store::write_applied_into(&mut self.pending, index);
        self.write().skip(index);
        Ok(())
    }

    fn end_batch(&mut self) -> Result<(), MachineError> {
        self.write_pending()
    }

    fn settle(&mut self) -> Result<(), MachineError> {
        self.write_pending()?;
        match &mut self.writer {
            Some(writer) => writer.settle().map_err(MachineError::from),
            None => Ok(()),
        }
    }

    fn apply_conf_change(&mut self, index: u64, change: &ConfChange) -> Result<(), MachineError> {
        let context = MemberContext::decode(&change.context);
        let address = match change.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => Some(context.address),
            ConfChangeType::RemoveNode => None,
        };
        info!(index, controller = change.node_id, address = ?address, "controller membership changed");
        // The admin call's audit record lands in the same entry and batch.
        if let Some(mut audit) = context.audit
            && self.read().applied_index() + 1 == index
        {
            audit.outcome = "applied".to_owned();
            let mut recorded = crate::state::Change::unchanged(index);
            recorded.more.events.push(audit.event(index, "", ""));
            self.store
                .write_into(&mut self.pending, &recorded)
                .map_err(MachineError::from)?;
            self.prune_events(&recorded)?;
            self.write().commit(recorded);
        }
        Store::write_member_into(&mut self.pending, index, change.node_id, address.as_deref());
        self.write().set_member(index, change.node_id, address);
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        SnapshotData::encode_state(&self.read())
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), MachineError> {
        let data: SnapshotData =
            serde_json::from_slice(data).map_err(|e| format!("snapshot does not decode: {e}"))?;
        if data.applied_index != index {
            return Err(format!(
                "snapshot data is at {} but its metadata says {index}",
                data.applied_index
            )
            .into());
        }
        let restored = data.into_state();
        // Older applied entries first, then the snapshot replaces them all.
        self.settle()?;
        self.store.replace_all(&restored).map_err(MachineError::from)?;
        info!(
            index,
            hosts = restored.hosts().len(),
            "state restored from a snapshot"
        );
        *self.write() = restored;
        Ok(())
    }
}

fn log_outcome(index: u64, command: &Command, outcome: &ApplyOutcome) {
    match outcome {
        ApplyOutcome::Unchanged => {
            debug!(
                index,
                command = command.kind(),
                host_id = command.host_id(),
                "applied (no change)"
            )
        }
        ApplyOutcome::StateChanged { from, to } => info!(
            index,
            host_id = command.host_id(),
            from = from.as_str(),
            to = to.as_str(),
            reason = match command {
                Command::SetHostState { reason, .. } => reason.as_str(),
                _ => "",
            },
            "host state changed"
        ),
        ApplyOutcome::Registered => info!(index, host_id = command.host_id(), "host registered"),
        ApplyOutcome::Updated => debug!(
            index,
            command = command.kind(),
            host_id = command.host_id(),
            "host updated"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::node::StateMachine as _;
    use crate::state::command::tests::facts;
    use crate::state::pool::PoolSpec;

    fn commands() -> Vec<Command> {
        let mut out: Vec<Command> = ["h1", "h2"]
            .iter()
            .map(|id| Command::RegisterHost {
                host_id: id.to_string(),
                agent_version: "0.1.0".into(),
                facts: facts(id, 8),
                at_unix_ms: 1,
            })
            .collect();
        out.push(Command::CreateToken {
            token: crate::state::tokens::TokenRecord {
                id: "abcdef".into(),
                secret_sha256: crate::state::tokens::secret_sha256("0123456789abcdef"),
                description: "rack 1".into(),
                created_at_unix_ms: 1,
                expires_at_unix_ms: 1_000_000,
                uses_left: Some(3),
                revoked: false,
            },
            at_unix_ms: 1,
        });
        out.push(Command::CreatePool {
            spec: PoolSpec {
                name: "web".into(),
                cores: 8,
                memory_bytes: 64 << 30,
                control_planes: 1,
                kubernetes_version: "v1.32.0".into(),
                pod_network_cidr: "10.244.0.0/16".into(),
                service_cidr: "10.96.0.0/12".into(),
                vip: String::new(),
                lb_range: String::new(),
                ..Default::default()
            },
            control_planes: vec!["h1".into()],
            workers: vec!["h2".into()],
            control_plane_endpoint: "h1:6443".into(),
            at_unix_ms: 2,
        });
        out.extend(crate::policy::planner::plan(
            &{
                let mut sm = State::new();
                for (i, c) in out.iter().enumerate() {
                    sm.apply(i as u64 + 1, c).unwrap();
                }
                sm
            },
            3,
        ));
        out
    }

    #[test]
    fn every_applied_record_survives_a_reopen_and_a_snapshot_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let expected = {
            let store = Store::open(dir.path()).unwrap();
            let state = Arc::new(RwLock::new(store.load().unwrap()));
            let mut machine = Replicated::new(store.clone(), state.clone());
            for (i, command) in commands().iter().enumerate() {
                let (_, outcome) = machine
                    .apply(i as u64 + 1, &serde_json::to_vec(command).unwrap())
                    .unwrap();
                outcome.unwrap();
            }
            machine.end_batch().unwrap();
            store.db().flush().unwrap();
            let snapshot = machine.snapshot();
            let expected = state.read().unwrap().clone();
            assert_eq!(
                snapshot,
                SnapshotData::of(&expected).encode(),
                "the borrowed view encodes exactly what the owned form does"
            );
            assert!(
                !expected.pools().is_empty()
                    && !expected.tasks().is_empty()
                    && !expected.events().is_empty()
                    && !expected.tokens().is_empty()
            );
            // A snapshot restores the same state.
            let other = tempfile::tempdir().unwrap();
            let other_store = Store::open(other.path()).unwrap();
            let restored = Arc::new(RwLock::new(State::new()));
            let mut follower = Replicated::new(other_store.clone(), restored.clone());
            follower.restore(expected.applied_index(), &snapshot).unwrap();
            assert_eq!(*restored.read().unwrap(), expected);
            assert_eq!(
                other_store.load().unwrap(),
                expected,
                "a restored snapshot is on disk too"
            );
            expected
        };
        // Everything applied is on disk: hosts (with their pool), pools, tasks, events.
        let reopened = Store::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(reopened, expected);
        assert_eq!(reopened.host("h2").unwrap().pool.as_deref(), Some("web"));
    }

    /// Past [`MAX_EVENTS`] the oldest events leave the disk as they leave
    /// memory, whether the entries come one per batch or many in one.
    #[test]
    fn the_stored_event_window_follows_the_memory_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let state = Arc::new(RwLock::new(store.load().unwrap()));
        let mut machine = Replicated::new(store.clone(), state.clone());
        let register = Command::RegisterHost {
            host_id: "h1".into(),
            agent_version: "0.1.0".into(),
            facts: facts("h1", 8),
            at_unix_ms: 1,
        };
        machine
            .apply(1, &serde_json::to_vec(&register).unwrap())
            .unwrap()
            .1
            .unwrap();
        let labelled = |i: u64| Command::Audited {
            audit: crate::state::audit::AuditRecord {
                actor: "urn:rpool:admin:test".into(),
                via: None,
                operation: "host label".into(),
                args: [("n".to_owned(), i.to_string())].into(),
                outcome: String::new(),
                at_unix_ms: i,
            },
            command: Box::new(Command::SetHostLabels {
                host_id: "h1".into(),
                set: [("n".to_owned(), i.to_string())].into(),
                remove: vec![],
            }),
        };
        let last = MAX_EVENTS as u64 + 250;
        for index in 2..=last {
            machine
                .apply(index, &serde_json::to_vec(&labelled(index)).unwrap())
                .unwrap()
                .1
                .unwrap();
            // Small batches first, then one batch of a few hundred entries.
            if index < MAX_EVENTS as u64 + 50 && index % 7 == 0 {
                machine.end_batch().unwrap();
            }
        }
        machine.end_batch().unwrap();
        let memory = state.read().unwrap().clone();
        assert_eq!(memory.events().len(), MAX_EVENTS);
        assert_eq!(memory.events().back().unwrap().index, last);
        let reopened = store.load().unwrap();
        let indexes = |s: &State| s.events().iter().map(|e| e.index).collect::<Vec<_>>();
        assert_eq!(indexes(&reopened), indexes(&memory));
    }
}
