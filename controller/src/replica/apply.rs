//! The controller's state machine as Raft drives it: committed entries in,
//! the applied state out.
//!
//! [`Replicated`] implements [`crate::raft::node::StateMachine`]. For each
//! committed entry it decodes the [`Command`] (JSON), plans it against the
//! current state and makes the change visible to readers; the Raft log
//! (entries and snapshot file) is what makes it durable. A command that
//! every replica rejects (unknown host, ...) still advances the applied
//! index: it is in every log.
//! Snapshots are the whole state as JSON ([`SnapshotData`]).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use raft::prelude::{ConfChange, ConfChangeType};

use crate::raft::node::MachineError;
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::state::command::{Command, HostRecord};
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

/// The state machine, shared with readers through `state`.
///
/// It holds the applied state in memory only: what makes it durable is the
/// Raft log, whose snapshot file (written at every compaction) and entries
/// after it rebuild it on start ([`crate::raft::node`], `Core::open`).
/// Applying an entry is decode, plan, commit: no store write per entry.
pub struct Replicated {
    state: Arc<RwLock<State>>,
}

impl Replicated {
    pub fn new(state: Arc<RwLock<State>>) -> Replicated {
        Replicated { state }
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
        let outcome = self.write().commit(change);
        log_outcome(index, &command, &outcome);
        Ok((index, Ok(outcome)))
    }

    fn skip(&mut self, index: u64) -> Result<(), MachineError> {
        self.write().skip(index);
        Ok(())
    }

    fn apply_conf_change(&mut self, index: u64, change: &ConfChange) -> Result<(), MachineError> {
        let context = MemberContext::decode(&change.context);
        let address = match change.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => Some(context.address),
            ConfChangeType::RemoveNode => None,
        };
        info!(index, controller = change.node_id, address = ?address, "controller membership changed");
        // The admin call's audit record lands with the change.
        if let Some(mut audit) = context.audit
            && self.read().applied_index() + 1 == index
        {
            audit.outcome = "applied".to_owned();
            let mut recorded = crate::state::Change::unchanged(index);
            recorded.more.events.push(audit.event(index, "", ""));
            self.write().commit(recorded);
        }
        self.write().set_member(index, change.node_id, address);
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        SnapshotData::encode_state(&self.read())
    }

    fn snapshot_job(&self) -> Box<dyn FnOnce() -> Vec<u8> + Send + 'static> {
        let state = self.read().clone();
        Box::new(move || SnapshotData::encode_state(&state))
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
        debug!(
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
    fn every_applied_record_survives_a_snapshot_round_trip() {
        let state = Arc::new(RwLock::new(State::new()));
        let mut machine = Replicated::new(state.clone());
        for (i, command) in commands().iter().enumerate() {
            let (_, outcome) = machine
                .apply(i as u64 + 1, &serde_json::to_vec(command).unwrap())
                .unwrap();
            outcome.unwrap();
        }
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
        assert_eq!(expected.host("h2").unwrap().pool.as_deref(), Some("web"));
        // A snapshot restores the same state, replacing what was there.
        let restored = Arc::new(RwLock::new(State::new()));
        let mut follower = Replicated::new(restored.clone());
        let (_, outcome) = follower
            .apply(1, &serde_json::to_vec(&commands()[0]).unwrap())
            .unwrap();
        outcome.unwrap();
        follower.restore(expected.applied_index(), &snapshot).unwrap();
        assert_eq!(*restored.read().unwrap(), expected);
        // A snapshot whose data disagrees with its index is refused.
        let err = follower
            .restore(expected.applied_index() + 1, &snapshot)
            .unwrap_err();
        assert!(err.to_string().contains("metadata says"), "{err}");
    }
}
