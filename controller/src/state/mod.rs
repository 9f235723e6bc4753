//! The replicated state machine: every host record and the index of the last
//! applied command.
//!
//! Applying is split in two so that nothing becomes visible before it is
//! durable:
//!
//! 1. [`State::plan`] checks a command against the current state and
//!    computes the [`Change`] it makes. It is pure: no clock, no I/O, no
//!    mutation. A command that does not fit (wrong index, unknown host, a
//!    second registration with other facts) is rejected here and changes
//!    nothing.
//! 2. The caller persists the change (see [`crate::replica::store`]) and then
//!    [`State::commit`]s it, which cannot fail.
//!
//! [`State::apply`] does both steps in memory, for tests and for
//! replaying.
//!
//! Idempotence: re-registering a host with identical facts, updating with
//! identical facts, or setting the state a host already has are accepted as
//! no-ops ([`ApplyOutcome::Unchanged`]); they still consume their index.

pub mod audit;
pub mod autoscale_apply;
pub mod backups;
pub mod command;
pub mod pool;
pub mod pool_apply;
pub mod tokens;

use std::collections::BTreeMap;

use crate::state::command::{Command, HostRecord, HostState};
use crate::state::pool::{Event, MAX_EVENTS, PoolRecord, TaskRecord};

/// Records a pool command changes besides `Change::record`. `None` in
/// `pools` / `tasks` deletes the record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct More {
    pub hosts: Vec<HostRecord>,
    pub pools: Vec<(String, Option<PoolRecord>)>,
    pub tasks: Vec<(String, Option<TaskRecord>)>,
    pub events: Vec<Event>,
    /// Bootstrap tokens (`None` deletes).
    pub tokens: crate::state::tokens::TokenChanges,
}

/// All hosts and the applied index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    hosts: BTreeMap<String, HostRecord>,
    pub(crate) pools: BTreeMap<String, PoolRecord>,
    pub(crate) tasks: BTreeMap<String, TaskRecord>,
    pub(crate) events: std::collections::VecDeque<Event>,
    /// Bootstrap tokens by id ([`crate::state::tokens`]).
    pub(crate) tokens: BTreeMap<String, crate::state::tokens::TokenRecord>,
    /// Controller group: id -> address, changed by Raft membership entries.
    members: BTreeMap<u64, String>,
    applied_index: u64,
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// A new host record was created (state ready).
    Registered,
    /// Facts or agent version of a host changed.
    Updated,
    /// A host moved from one state to another.
    StateChanged {
        /// Previous state.
        from: HostState,
        /// New state.
        to: HostState,
    },
    /// The command was valid but the state already matched it.
    Unchanged,
}

/// Why a command was rejected. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Commands must be applied in index order without gaps.
    #[error("command index {got} does not follow applied index {applied}")]
    OutOfOrder {
        /// Index of the last applied command.
        applied: u64,
        /// Index of the rejected command.
        got: u64,
    },
    /// The command names a host that is not registered.
    #[error("no host with id {0}")]
    UnknownHost(String),
    /// RegisterHost for a host that exists with other facts or version.
    #[error("host {0} is already registered")]
    AlreadyRegistered(String),
    /// SetHostLabels would leave more than [`MAX_ADMIN_LABELS`] labels.
    #[error("host {host_id} would have {count} admin labels (accepted at most 64)")]
    TooManyLabels {
        /// Host id.
        host_id: String,
        /// Labels after the change.
        count: usize,
    },
    /// A pool command that does not fit the current state (the message
    /// says why: host busy, pool exists, ...).
    #[error("{0}")]
    Refused(String),
    /// The command names a pool that does not exist.
    #[error("no pool named {0}")]
    UnknownPool(String),
    /// The entry did not decode as a command (written by a newer version?).
    #[error("entry does not decode as a command: {0}")]
    Undecodable(String),
}

/// Most admin labels a host may carry.
pub const MAX_ADMIN_LABELS: usize = 64;

/// The effect of one planned command: the record to write (if any) and the
/// new applied index. Produced by [`State::plan`], consumed by
/// [`State::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Index the command was applied at.
    pub index: u64,
    /// The host record after the command, `None` when unchanged.
    pub record: Option<HostRecord>,
    /// Pool commands change more: other hosts, pools, tasks, events.
    pub more: More,
    /// What happened.
    pub outcome: ApplyOutcome,
}

impl Change {
    /// A command that fits but changes nothing; it still consumes `index`.
    pub fn unchanged(index: u64) -> Change {
        Change {
            index,
            record: None,
            more: More::default(),
            outcome: ApplyOutcome::Unchanged,
        }
    }
}

impl State {
    /// An empty state machine (no hosts, applied index 0).
    pub fn new() -> Self {
        State::default()
    }

    /// Rebuilds a state machine from persisted parts.
    pub fn from_parts(
        hosts: BTreeMap<String, HostRecord>,
        members: BTreeMap<u64, String>,
        applied_index: u64,
    ) -> Self {
        State {
            hosts,
            members,
            applied_index,
            ..State::default()
        }
    }

    /// Controllers added or removed through Raft membership changes
    /// (id -> address). Empty until the first change; the initial group
    /// comes from the config.
    pub fn members(&self) -> &BTreeMap<u64, String> {
        &self.members
    }

    /// Advances the applied index over an entry that changes nothing here
    /// (a leader's empty entry, or a command every replica rejects).
    pub fn skip(&mut self, index: u64) {
        self.applied_index = self.applied_index.max(index);
    }

    /// Records a membership change at `index`: `address` Some adds or moves
    /// controller `id`, None removes it.
    pub fn set_member(&mut self, index: u64, id: u64, address: Option<String>) {
        match address {
            Some(address) => {
                self.members.insert(id, address);
            }
            None => {
                self.members.remove(&id);
            }
        }
        self.skip(index);
    }

    /// Index of the last applied command (0 before the first).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// All hosts, ordered by id.
    pub fn hosts(&self) -> &BTreeMap<String, HostRecord> {
        &self.hosts
    }

    /// One host by exact id.
    pub fn host(&self, host_id: &str) -> Option<&HostRecord> {
        self.hosts.get(host_id)
    }

    /// Hosts whose id starts with `prefix`, in id order.
    pub fn hosts_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a HostRecord> + 'a {
        self.hosts
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(move |(id, _)| id.starts_with(prefix))
            .map(|(_, record)| record)
    }

    /// Computes what `cmd` at `index` would change, without changing
    /// anything. Deterministic: the result depends only on `self`, `index`
    /// and `cmd`.
    pub fn plan(&self, index: u64, cmd: &Command) -> Result<Change, ApplyError> {
        if index != self.applied_index + 1 {
            return Err(ApplyError::OutOfOrder {
                applied: self.applied_index,
                got: index,
            });
        }
        let unchanged = || Change::unchanged(index);
        match cmd {
            Command::RegisterHost {
                host_id,
                agent_version,
                facts,
                at_unix_ms,
            } => match self.hosts.get(host_id) {
                Some(existing) if existing.facts == *facts && existing.agent_version == *agent_version => {
                    Ok(unchanged())
                }
                Some(_) => Err(ApplyError::AlreadyRegistered(host_id.clone())),
                None => Ok(Change {
                    index,
                    more: More::default(),
                    record: Some(HostRecord {
                        host_id: host_id.clone(),
                        state: HostState::Ready,
                        state_reason: "registered".to_owned(),
                        state_since_unix_ms: *at_unix_ms,
                        registered_at_unix_ms: *at_unix_ms,
                        agent_version: agent_version.clone(),
                        facts: facts.clone(),
                        admin_labels: BTreeMap::new(),
                        pool: None,
                        fenced: None,
                    }),
                    outcome: ApplyOutcome::Registered,
                }),
            },
            Command::UpdateHost {
                host_id,
                agent_version,
                facts,
                at_unix_ms: _,
            } => {
                let existing = self
                    .hosts
                    .get(host_id)
                    .ok_or_else(|| ApplyError::UnknownHost(host_id.clone()))?;
                if existing.facts == *facts && existing.agent_version == *agent_version {
                    return Ok(unchanged());
                }
                Ok(Change {
                    index,
                    more: More::default(),
                    record: Some(HostRecord {
                        agent_version: agent_version.clone(),
                        facts: facts.clone(),
                        ..existing.clone()
                    }),
                    outcome: ApplyOutcome::Updated,
                })
            }
            Command::SetHostState {
                host_id,
                state,
                reason,
                at_unix_ms,
            } => {
                let existing = self
                    .hosts
                    .get(host_id)
                    .ok_or_else(|| ApplyError::UnknownHost(host_id.clone()))?;
                if existing.state == *state {
                    return Ok(unchanged());
                }
                Ok(Change {
                    index,
                    more: More::default(),
                    record: Some(HostRecord {
                        state: *state,
                        state_reason: reason.clone(),
                        state_since_unix_ms: *at_unix_ms,
                        ..existing.clone()
                    }),
                    outcome: ApplyOutcome::StateChanged {
                        from: existing.state,
                        to: *state,
                    },
                })
            }
            command @ (Command::CreatePool { .. }
            | Command::ResizePool { .. }
            | Command::DestroyPool { .. }
            | Command::IssueTask { .. }
            | Command::FinishTask { .. }
            | Command::SetPoolPhase { .. }
            | Command::ReplaceMember { .. }
            | Command::DrainControlPlane { .. }
            | Command::Alert { .. }
            | Command::UpgradePool { .. }
            | Command::ReportCerts { .. }
            | Command::RenewCerts { .. }) => self.plan_pool(index, command),
            command @ (Command::CreateToken { .. }
            | Command::UseToken { .. }
            | Command::RevokeToken { .. }) => self.plan_token(index, command),
            command @ (Command::SetAutoscale { .. } | Command::AutoscalePool { .. }) => {
                self.plan_autoscale(index, command)
            }
            command @ (Command::BackupPool { .. }
            | Command::EtcdSnapshotTaken { .. }
            | Command::SetPoolBackup { .. }
            | Command::ForgetPoolBackups { .. }) => self.plan_backup(index, command),
            Command::Audited { audit, command } => self.plan_audited(index, audit, command),
            Command::SetHostLabels { host_id, set, remove } => {
                let existing = self
                    .hosts
                    .get(host_id)
                    .ok_or_else(|| ApplyError::UnknownHost(host_id.clone()))?;
                let mut labels = existing.admin_labels.clone();
                for key in remove {
                    labels.remove(key);
                }
                labels.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
                if labels.len() > MAX_ADMIN_LABELS {
                    return Err(ApplyError::TooManyLabels {
                        host_id: host_id.clone(),
                        count: labels.len(),
                    });
                }
                if labels == existing.admin_labels {
                    return Ok(unchanged());
                }
                Ok(Change {
                    index,
                    more: More::default(),
                    record: Some(HostRecord {
                        admin_labels: labels,
                        ..existing.clone()
                    }),
                    outcome: ApplyOutcome::Updated,
                })
            }
        }
    }

    /// Makes a planned change visible. The change must come from
    /// [`State::plan`] on this very state (the single writer plans
    /// and commits one command at a time); a stale change is ignored.
    pub fn commit(&mut self, change: Change) -> ApplyOutcome {
        if change.index != self.applied_index + 1 {
            // Unreachable with a single writer; refusing keeps the state
            // consistent rather than panicking in a server.
            tracing::error!(
                index = change.index,
                applied_index = self.applied_index,
                "ignoring a stale state-machine change"
            );
            return ApplyOutcome::Unchanged;
        }
        if let Some(record) = change.record {
            self.hosts.insert(record.host_id.clone(), record);
        }
        for record in change.more.hosts {
            self.hosts.insert(record.host_id.clone(), record);
        }
        for (name, pool) in change.more.pools {
            match pool {
                Some(pool) => self.pools.insert(name, pool),
                None => self.pools.remove(&name),
            };
        }
        for (id, task) in change.more.tasks {
            match task {
                Some(task) => self.tasks.insert(id, task),
                None => self.tasks.remove(&id),
            };
        }
        for (id, token) in change.more.tokens {
            match token {
                Some(token) => self.tokens.insert(id, token),
                None => self.tokens.remove(&id),
            };
        }
        for event in change.more.events {
            self.events.push_back(event);
            if self.events.len() > MAX_EVENTS {
                self.events.pop_front();
            }
        }
        self.applied_index = change.index;
        change.outcome
    }

    /// Plans and commits `cmd` at `index` in memory.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Result<ApplyOutcome, ApplyError> {
        let change = self.plan(index, cmd)?;
        Ok(self.commit(change))
    }

    /// Pools by name.
    pub fn pools(&self) -> &BTreeMap<String, PoolRecord> {
        &self.pools
    }

    /// Pending and failed tasks by id.
    pub fn tasks(&self) -> &BTreeMap<String, TaskRecord> {
        &self.tasks
    }

    /// Recent events, oldest first.
    pub fn events(&self) -> &std::collections::VecDeque<Event> {
        &self.events
    }

    /// Replaces pools, tasks and events (restoring a snapshot or loading).
    pub fn set_pool_state(
        &mut self,
        pools: BTreeMap<String, PoolRecord>,
        tasks: BTreeMap<String, TaskRecord>,
        events: std::collections::VecDeque<Event>,
    ) {
        self.pools = pools;
        self.tasks = tasks;
        self.events = events;
    }

    /// Bootstrap tokens by id.
    pub fn tokens(&self) -> &BTreeMap<String, crate::state::tokens::TokenRecord> {
        &self.tokens
    }

    /// Replaces the bootstrap tokens (restoring a snapshot or loading).
    pub fn set_tokens(&mut self, tokens: BTreeMap<String, crate::state::tokens::TokenRecord>) {
        self.tokens = tokens;
    }

    /// Number of hosts in each state (every state present, zeros included).
    pub fn count_by_state(&self) -> BTreeMap<HostState, u32> {
        let mut counts: BTreeMap<HostState, u32> = HostState::ALL.into_iter().map(|s| (s, 0)).collect();
        for record in self.hosts.values() {
            *counts.entry(record.state).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::tests::facts;

    fn register(id: &str, at: u64) -> Command {
        Command::RegisterHost {
            host_id: id.to_owned(),
            agent_version: "0.1.0".to_owned(),
            facts: facts(id, 8),
            at_unix_ms: at,
        }
    }

    fn update(id: &str, cores: u32, at: u64) -> Command {
        Command::UpdateHost {
            host_id: id.to_owned(),
            agent_version: "0.1.0".to_owned(),
            facts: facts(id, cores),
            at_unix_ms: at,
        }
    }

    fn set(id: &str, state: HostState, at: u64) -> Command {
        Command::SetHostState {
            host_id: id.to_owned(),
            state,
            reason: format!("to {state}"),
            at_unix_ms: at,
        }
    }

    /// Each case: commands applied first, then the command under test and
    /// the expected result.
    #[test]
    #[allow(clippy::type_complexity)]
    fn commands_apply_as_the_table_says() {
        use ApplyOutcome::*;
        use HostState::*;
        let cases: Vec<(&str, Vec<Command>, Command, Result<ApplyOutcome, ApplyError>)> = vec![
            ("register a new host", vec![], register("h1", 10), Ok(Registered)),
            (
                "register the same host again identically",
                vec![register("h1", 10)],
                register("h1", 20),
                Ok(Unchanged),
            ),
            (
                "register a known host with other facts",
                vec![register("h1", 10), update("h1", 16, 11)],
                register("h1", 20),
                Err(ApplyError::AlreadyRegistered("h1".to_owned())),
            ),
            (
                "update facts",
                vec![register("h1", 10)],
                update("h1", 16, 20),
                Ok(Updated),
            ),
            (
                "update with identical facts",
                vec![register("h1", 10)],
                update("h1", 8, 20),
                Ok(Unchanged),
            ),
            (
                "update an unknown host",
                vec![],
                update("h9", 8, 20),
                Err(ApplyError::UnknownHost("h9".to_owned())),
            ),
            (
                "ready to suspect",
                vec![register("h1", 10)],
                set("h1", Suspect, 20),
                Ok(StateChanged {
                    from: Ready,
                    to: Suspect,
                }),
            ),
            (
                "suspect to down",
                vec![register("h1", 10), set("h1", Suspect, 20)],
                set("h1", Down, 30),
                Ok(StateChanged {
                    from: Suspect,
                    to: Down,
                }),
            ),
            (
                "down back to ready",
                vec![register("h1", 10), set("h1", Down, 20)],
                set("h1", Ready, 30),
                Ok(StateChanged {
                    from: Down,
                    to: Ready,
                }),
            ),
            (
                "set the state a host already has",
                vec![register("h1", 10)],
                set("h1", Ready, 20),
                Ok(Unchanged),
            ),
            (
                "set the state of an unknown host",
                vec![register("h1", 10)],
                set("h2", Down, 20),
                Err(ApplyError::UnknownHost("h2".to_owned())),
            ),
        ];
        for (name, setup, cmd, want) in cases {
            let mut sm = State::new();
            for (i, c) in setup.iter().enumerate() {
                sm.apply(i as u64 + 1, c)
                    .unwrap_or_else(|e| panic!("{name}: setup: {e}"));
            }
            let before = sm.clone();
            let index = sm.applied_index() + 1;
            let got = sm.apply(index, &cmd);
            assert_eq!(got, want, "{name}");
            match got {
                Ok(_) => assert_eq!(sm.applied_index(), index, "{name}: index advances"),
                Err(_) => assert_eq!(sm, before, "{name}: a rejected command changes nothing"),
            }
        }
    }

    #[test]
    fn an_out_of_order_index_is_rejected_and_changes_nothing() {
        let mut sm = State::new();
        sm.apply(1, &register("h1", 10)).unwrap();
        let before = sm.clone();
        for index in [1, 3, 0] {
            assert_eq!(
                sm.apply(index, &register("h2", 20)),
                Err(ApplyError::OutOfOrder {
                    applied: 1,
                    got: index
                })
            );
        }
        assert_eq!(sm, before);
    }

    #[test]
    fn state_changes_record_reason_and_time_from_the_command_only() {
        let mut sm = State::new();
        sm.apply(1, &register("h1", 10)).unwrap();
        let h = sm.host("h1").unwrap();
        assert_eq!(
            (h.state, h.state_since_unix_ms, h.registered_at_unix_ms),
            (HostState::Ready, 10, 10)
        );
        sm.apply(2, &set("h1", HostState::Down, 99)).unwrap();
        let h = sm.host("h1").unwrap();
        assert_eq!(h.state, HostState::Down);
        assert_eq!(h.state_reason, "to down");
        assert_eq!(h.state_since_unix_ms, 99);
        assert_eq!(h.registered_at_unix_ms, 10);
        // An update keeps the state and its timestamp.
        sm.apply(3, &update("h1", 32, 200)).unwrap();
        let h = sm.host("h1").unwrap();
        assert_eq!((h.state, h.state_since_unix_ms), (HostState::Down, 99));
        assert_eq!(h.facts.inventory.logical_cores, 32);
    }

    #[test]
    fn the_same_log_gives_the_same_state_on_every_replica() {
        let log = [
            register("a", 1),
            register("b", 2),
            set("a", HostState::Suspect, 3),
            update("b", 64, 4),
            set("a", HostState::Ready, 5),
        ];
        let run = || {
            let mut sm = State::new();
            for (i, c) in log.iter().enumerate() {
                sm.apply(i as u64 + 1, c).unwrap();
            }
            sm
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn prefixes_and_counts_see_every_host() {
        let mut sm = State::new();
        sm.apply(1, &register("abc1", 1)).unwrap();
        sm.apply(2, &register("abc2", 1)).unwrap();
        sm.apply(3, &register("abd1", 1)).unwrap();
        sm.apply(4, &set("abd1", HostState::Down, 2)).unwrap();
        let ids: Vec<_> = sm.hosts_with_prefix("abc").map(|h| h.host_id.as_str()).collect();
        assert_eq!(ids, ["abc1", "abc2"]);
        let counts = sm.count_by_state();
        assert_eq!(counts[&HostState::Ready], 2);
        assert_eq!(counts[&HostState::Down], 1);
        assert_eq!(counts[&HostState::Cordoned], 0);
        assert_eq!(counts.len(), HostState::ALL.len());
    }
}
