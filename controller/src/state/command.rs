//! State-machine commands and the records they change.
//!
//! These are the controller's own serde types, independent of the wire
//! contract: they are what gets persisted (and, next issue, replicated in the
//! Raft log), so their JSON shape is a storage format. Conversions to and
//! from the `rpool_proto::v1` types live here too.
//!
//! Every command carries its own timestamp (`at_unix_ms`, taken by the
//! proposer): applying a command never reads a clock, so every replica that
//! applies the same log reaches the same state.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rpool_proto::v1;
use serde::{Deserialize, Serialize};

use crate::state::pool::{ImagesStep, JoinSecrets, PoolPhase, PoolSpec, Secret, TaskRecord};

/// Lifecycle state of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Heartbeating and usable.
    Ready,
    /// Silent for `suspect_after_ms`.
    Suspect,
    /// Silent for `down_after_ms`.
    Down,
    /// Admin maintenance: never placed.
    Cordoned,
    /// Being added to a pool.
    Joining,
    /// Being removed from a pool.
    Leaving,
}

impl HostState {
    /// Every state, in declaration order.
    pub const ALL: [HostState; 6] = [
        HostState::Ready,
        HostState::Suspect,
        HostState::Down,
        HostState::Cordoned,
        HostState::Joining,
        HostState::Leaving,
    ];

    /// The lowercase name used in configs, the admin API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Ready => "ready",
            HostState::Suspect => "suspect",
            HostState::Down => "down",
            HostState::Cordoned => "cordoned",
            HostState::Joining => "joining",
            HostState::Leaving => "leaving",
        }
    }

    /// The names accepted by [`FromStr`], joined by `|`.
    pub fn accepted() -> String {
        HostState::ALL.map(HostState::as_str).join("|")
    }

    /// The wire enum.
    pub fn to_proto(self) -> v1::HostState {
        match self {
            HostState::Ready => v1::HostState::Ready,
            HostState::Suspect => v1::HostState::Suspect,
            HostState::Down => v1::HostState::Down,
            HostState::Cordoned => v1::HostState::Cordoned,
            HostState::Joining => v1::HostState::Joining,
            HostState::Leaving => v1::HostState::Leaving,
        }
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`HostState::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown host state {0:?} (accepted {accepted})", accepted = HostState::accepted())]
pub struct UnknownState(pub String);

impl FromStr for HostState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// Cores and memory of a host (see `rpool.v1.Inventory`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Logical CPUs, already capped by a cgroup quota.
    pub logical_cores: u32,
    /// Physical cores.
    pub physical_cores: u32,
    /// Total memory usable by workloads.
    pub memory_total_bytes: u64,
    /// Memory available at report time.
    pub memory_available_bytes: u64,
    /// cgroup cpu.max quota in millicores, 0 when none.
    pub cpu_quota_millicores: u32,
    /// True when memory was capped by a cgroup memory.max.
    pub memory_capped_by_cgroup: bool,
}

/// Slow-changing description of a host (see `rpool.v1.HostFacts`). Labels
/// are a `BTreeMap` so that serialization and comparison are deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Host name.
    pub hostname: String,
    /// IP addresses, loopback last.
    pub addresses: Vec<String>,
    /// Failure domain.
    pub zone: String,
    /// Admin labels.
    pub labels: BTreeMap<String, String>,
    /// Cores and memory.
    pub inventory: Inventory,
    /// True for simulated hardware (sandbox, tests).
    pub simulated: bool,
    /// The address the host's node advertises, "" when the agent found none.
    #[serde(default)]
    pub advertise_address: String,
    /// Where `advertise_address` comes from.
    #[serde(default)]
    pub advertise_source: AdvertiseSource,
    /// The CRI endpoint the node registers with (`unix:///path`), "" when
    /// the agent found none.
    #[serde(default)]
    pub cri_socket: String,
}

/// Where a host's advertise address comes from (see
/// `rpool.v1.AdvertiseSource`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvertiseSource {
    /// No address.
    #[default]
    None,
    /// `advertise_address` in agent.toml.
    Config,
    /// The local address of the agent's connection to the controllers.
    Connection,
    /// Another interface's (the connection's was on a bridge/CNI/veth/lo one).
    Interface,
}

impl AdvertiseSource {
    /// The name `host show` and `-o json` use ("" for none).
    pub fn as_str(self) -> &'static str {
        match self {
            AdvertiseSource::None => "",
            AdvertiseSource::Config => "config",
            AdvertiseSource::Connection => "connection",
            AdvertiseSource::Interface => "interface",
        }
    }

    fn from_proto(v: i32) -> Self {
        match v1::AdvertiseSource::try_from(v) {
            Ok(v1::AdvertiseSource::Config) => AdvertiseSource::Config,
            Ok(v1::AdvertiseSource::Connection) => AdvertiseSource::Connection,
            Ok(v1::AdvertiseSource::Interface) => AdvertiseSource::Interface,
            _ => AdvertiseSource::None,
        }
    }

    fn to_proto(self) -> v1::AdvertiseSource {
        match self {
            AdvertiseSource::None => v1::AdvertiseSource::Unspecified,
            AdvertiseSource::Config => v1::AdvertiseSource::Config,
            AdvertiseSource::Connection => v1::AdvertiseSource::Connection,
            AdvertiseSource::Interface => v1::AdvertiseSource::Interface,
        }
    }
}

/// What the controller knows durably about a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Stable host id (lowercase UUID).
    pub host_id: String,
    /// Current state.
    pub state: HostState,
    /// Why the host is in that state.
    pub state_reason: String,
    /// When the state was entered (controller clock, Unix ms).
    pub state_since_unix_ms: u64,
    /// When the host first registered (controller clock, Unix ms).
    pub registered_at_unix_ms: u64,
    /// Version of the host's agent.
    pub agent_version: String,
    /// Last reported facts.
    pub facts: HostFacts,
    /// Labels set by admins (`rpoolctl host label`); they win over agent
    /// labels with the same key.
    #[serde(default)]
    pub admin_labels: BTreeMap<String, String>,
    /// The pool the host belongs to (`None`: in the fleet). A host is in at
    /// most one pool: only pool commands set it, and they refuse hosts
    /// that already have one.
    #[serde(default)]
    pub pool: Option<String>,
    /// Set when the host was removed from its pool while down (healing):
    /// it is reset when it comes back and never placed before that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced: Option<crate::state::pool::Fence>,
}

impl HostRecord {
    /// The wire form, without live observations (`connected = false`,
    /// no utilization): the admin service merges those in.
    pub fn to_proto(&self) -> v1::Host {
        v1::Host {
            host_id: self.host_id.clone(),
            state: self.state.to_proto() as i32,
            state_reason: match &self.fenced {
                // Fenced hosts are not placed: say why next to the state.
                Some(fence) => format!(
                    "{}; fenced: replaced in pool {} while down, reset pending",
                    self.state_reason, fence.pool
                ),
                None => self.state_reason.clone(),
            },
            state_since_unix_ms: self.state_since_unix_ms,
            registered_at_unix_ms: self.registered_at_unix_ms,
            agent_version: self.agent_version.clone(),
            pool: self.pool.clone().unwrap_or_default(),
            facts: Some({
                let mut facts = v1::HostFacts::from(&self.facts);
                facts
                    .labels
                    .extend(self.admin_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                facts
            }),
            ..v1::Host::default()
        }
    }
}

/// A change to the replicated state. Applied by
/// [`State::apply`](crate::state::State::apply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// A host the controller has never seen; it starts `ready`.
    RegisterHost {
        /// Host id.
        host_id: String,
        /// Agent version.
        agent_version: String,
        /// Facts from the Hello.
        facts: HostFacts,
        /// Proposer's clock (Unix ms).
        at_unix_ms: u64,
    },
    /// New facts or agent version for a known host; the state is untouched.
    UpdateHost {
        /// Host id.
        host_id: String,
        /// Agent version.
        agent_version: String,
        /// New facts.
        facts: HostFacts,
        /// Proposer's clock (Unix ms).
        at_unix_ms: u64,
    },
    /// Moves a known host to another state.
    SetHostState {
        /// Host id.
        host_id: String,
        /// New state.
        state: HostState,
        /// Human-readable cause, e.g. "no heartbeat for 5.0s".
        reason: String,
        /// Proposer's clock (Unix ms).
        at_unix_ms: u64,
    },
    /// Reserves hosts for a new pool (state provisioning).
    CreatePool {
        spec: PoolSpec,
        control_planes: Vec<String>,
        workers: Vec<String>,
        control_plane_endpoint: String,
        at_unix_ms: u64,
    },
    /// New worker capacity: `add` joins, `release` leaves.
    ResizePool {
        pool: String,
        cores: u64,
        memory_bytes: u64,
        add: Vec<String>,
        release: Vec<String>,
        /// A new MetalLB range (`None`: unchanged; absent in commands
        /// written before LB ranges existed).
        #[serde(default)]
        lb_range: Option<String>,
        at_unix_ms: u64,
    },
    /// Every member leaves; the pool goes when the last is reset.
    DestroyPool { pool: String, at_unix_ms: u64 },
    /// A step for one host (issued by the leader's planner).
    IssueTask { task: TaskRecord },
    /// How a task ended, as its agent reported it.
    FinishTask {
        task_id: String,
        attempt: u32,
        ok: bool,
        error: String,
        join: Option<JoinSecrets>,
        kubeconfig: Option<Secret>,
        at_unix_ms: u64,
        /// The images step of an init or control-plane join (absent: it
        /// did not run, or a command written before it existed).
        #[serde(default)]
        images: Option<ImagesStep>,
    },
    /// The planner moves a pool to another phase.
    SetPoolPhase {
        pool: String,
        phase: PoolPhase,
        reason: String,
        at_unix_ms: u64,
    },
    /// Healing: the member `host_id` of `pool` is down; `replacements` join
    /// with its role, and it is cleaned out of the cluster (etcd member,
    /// node) and fenced (see [`crate::policy::healing`]). Refused unless the host
    /// is down and the member not already replaced, so a replacement
    /// happens once even across leader changes.
    ReplaceMember {
        pool: String,
        host_id: String,
        replacements: Vec<String>,
        /// The event sentence, e.g. "pool web: host h7 down (no heartbeat
        /// for 5.0s), replacing with h12 (zone b, 16c/64GiB)".
        why: String,
        at_unix_ms: u64,
    },
    /// An admin drains the live control plane `host_id` of `pool`:
    /// `replacement` joins as a control plane first, then the old one is
    /// drained, its etcd member removed (by another control plane), its
    /// node deleted and the host reset. Refused unless `host_id` is a
    /// joined control plane and `replacement` is free, so it happens once
    /// even across leader changes.
    DrainControlPlane {
        pool: String,
        host_id: String,
        replacement: String,
        at_unix_ms: u64,
    },
    /// Healing needs a human (storm, lost quorum, nothing fits) or an
    /// alert ends: an event with `severity`; with `degrade`, the pool turns
    /// `degraded` with `message` as its reason. A repeat changes nothing.
    Alert {
        /// "" for fleet-wide alerts.
        pool: String,
        host_id: String,
        /// e.g. "storm", "storm_over", "quorum_lost", "no_replacement".
        kind: String,
        severity: crate::state::pool::Severity,
        message: String,
        degrade: bool,
        at_unix_ms: u64,
    },
    /// Sets and removes admin labels of a known host.
    SetHostLabels {
        /// Host id.
        host_id: String,
        /// Labels to set.
        set: BTreeMap<String, String>,
        /// Keys to remove (applied before `set`).
        remove: Vec<String>,
    },
    /// A new bootstrap token (its secret only as a hash); prunes tokens
    /// expired for a day (see [`crate::state::tokens`]).
    CreateToken {
        token: crate::state::tokens::TokenRecord,
        /// Proposer's clock (Unix ms).
        at_unix_ms: u64,
    },
    /// One enrollment with a token: refused unless the token is active at
    /// `at_unix_ms` and `secret_sha256` matches; takes one use.
    UseToken {
        token_id: String,
        /// SHA-256 (hex) of the secret the agent presented.
        secret_sha256: String,
        /// The host that enrolls.
        host_id: String,
        /// Proposer's clock (Unix ms).
        at_unix_ms: u64,
    },
    /// An admin revokes a token.
    RevokeToken { token_id: String, at_unix_ms: u64 },
    /// Sets (`Some`) or removes (`None`) a pool's autoscaling policy.
    SetAutoscale {
        pool: String,
        policy: Option<crate::state::pool::AutoscalePolicy>,
        at_unix_ms: u64,
    },
    /// The leader's autoscaler adds or releases one worker: applied as the
    /// equivalent `ResizePool`, plus an `autoscale` event saying `why`, and
    /// starts the cooldown. Refused when the policy is gone or the pool is
    /// not ready.
    AutoscalePool {
        pool: String,
        cores: u64,
        memory_bytes: u64,
        add: Vec<String>,
        release: Vec<String>,
        /// e.g. "pool web: cpu 91% > 70% for 60s: +1 host h9 (16c/64GiB)".
        why: String,
        at_unix_ms: u64,
    },
    /// An admin change and its audit record in one entry: `command` is
    /// applied as it would be alone and, only when it fits, an `audit`
    /// event is recorded with it (see [`crate::state::audit`]).
    Audited {
        audit: crate::state::audit::AuditRecord,
        command: Box<Command>,
    },
    /// An admin upgrades a pool's Kubernetes to `version` (see
    /// [`crate::policy::upgrade`]); the same version again while that
    /// upgrade is stopped by a failure resumes it. Refused unless the
    /// version-skew rules allow it and the pool is ready (or degraded by
    /// this upgrade).
    UpgradePool {
        pool: String,
        version: String,
        /// Workers upgraded at once (1 or more).
        max_unavailable: u32,
        at_unix_ms: u64,
    },
    /// An etcd snapshot of `pool` on its joined control plane `host_id`
    /// (an admin's, or the leader's schedule with `scheduled`): a backup
    /// record `snap-INDEX` and its `etcd_snapshot` task (see
    /// [`crate::state::backups`]). Refused while one is being taken.
    BackupPool {
        pool: String,
        host_id: String,
        scheduled: bool,
        at_unix_ms: u64,
    },
    /// An `etcd_snapshot` task succeeded with this file.
    EtcdSnapshotTaken {
        task_id: String,
        attempt: u32,
        snapshot: crate::state::backups::SnapshotTaken,
        at_unix_ms: u64,
    },
    /// Sets a pool's backup schedule (0 = none) and retention.
    SetPoolBackup {
        pool: String,
        interval_ms: u64,
        keep: u32,
        at_unix_ms: u64,
    },
    /// The leader drops backup records it cannot act on any more (their
    /// host left the pool, or their task was lost), saying why.
    ForgetPoolBackups {
        pool: String,
        ids: Vec<String>,
        reason: String,
        at_unix_ms: u64,
    },
    /// The leader saw control planes' certificate expiry change (each
    /// report: the member's nearest certificate), or the pool's nearest
    /// expiry cross 30 or 7 days: members updated, an alert event raised
    /// once per threshold, an info event when a member's certificates
    /// were renewed (see [`crate::state::pool_apply::certs`]). A repeat
    /// changes nothing.
    ReportCerts {
        pool: String,
        reports: Vec<CertReportEntry>,
        at_unix_ms: u64,
    },
    /// An admin renews a pool's certificates (`kubeadm certs renew all` and
    /// a static-pod restart on each control plane, one at a time; see
    /// [`crate::policy::certs`]); again while a renewal is stopped by a
    /// failure: resumes it. Refused during an upgrade.
    RenewCerts { pool: String, at_unix_ms: u64 },
}

/// One control plane's nearest certificate, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertReportEntry {
    pub host_id: String,
    pub name: String,
    pub expires_unix_ms: u64,
}

impl Command {
    /// The host the command is about.
    pub fn host_id(&self) -> &str {
        match self {
            Command::RegisterHost { host_id, .. }
            | Command::UpdateHost { host_id, .. }
            | Command::SetHostState { host_id, .. }
            | Command::SetHostLabels { host_id, .. } => host_id,
            Command::IssueTask { task } => &task.host_id,
            Command::DrainControlPlane { host_id, .. } | Command::ReplaceMember { host_id, .. } => host_id,
            Command::Audited { command, .. } => command.host_id(),
            _ => "",
        }
    }

    /// The pool the command is about ("" for none).
    pub fn pool(&self) -> &str {
        match self {
            Command::CreatePool { spec, .. } => &spec.name,
            Command::ResizePool { pool, .. }
            | Command::DestroyPool { pool, .. }
            | Command::SetPoolPhase { pool, .. }
            | Command::ReplaceMember { pool, .. }
            | Command::DrainControlPlane { pool, .. }
            | Command::Alert { pool, .. }
            | Command::SetAutoscale { pool, .. }
            | Command::AutoscalePool { pool, .. }
            | Command::UpgradePool { pool, .. }
            | Command::BackupPool { pool, .. }
            | Command::SetPoolBackup { pool, .. }
            | Command::ForgetPoolBackups { pool, .. } => pool,
            Command::ReportCerts { pool, .. } | Command::RenewCerts { pool, .. } => pool,
            Command::IssueTask { task } => &task.pool,
            Command::Audited { command, .. } => command.pool(),
            _ => "",
        }
    }

    /// The command's name as in its serialized `type` tag, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::RegisterHost { .. } => "register_host",
            Command::UpdateHost { .. } => "update_host",
            Command::SetHostState { .. } => "set_host_state",
            Command::SetHostLabels { .. } => "set_host_labels",
            Command::CreatePool { .. } => "create_pool",
            Command::ResizePool { .. } => "resize_pool",
            Command::DestroyPool { .. } => "destroy_pool",
            Command::IssueTask { .. } => "issue_task",
            Command::FinishTask { .. } => "finish_task",
            Command::SetPoolPhase { .. } => "set_pool_phase",
            Command::ReplaceMember { .. } => "replace_member",
            Command::DrainControlPlane { .. } => "drain_control_plane",
            Command::Alert { .. } => "alert",
            Command::CreateToken { .. } => "create_token",
            Command::UseToken { .. } => "use_token",
            Command::RevokeToken { .. } => "revoke_token",
            Command::SetAutoscale { .. } => "set_autoscale",
            Command::AutoscalePool { .. } => "autoscale_pool",
            Command::Audited { command, .. } => command.kind(),
            Command::UpgradePool { .. } => "upgrade_pool",
            Command::BackupPool { .. } => "backup_pool",
            Command::EtcdSnapshotTaken { .. } => "etcd_snapshot_taken",
            Command::SetPoolBackup { .. } => "set_pool_backup",
            Command::ForgetPoolBackups { .. } => "forget_pool_backups",
            Command::ReportCerts { .. } => "report_certs",
            Command::RenewCerts { .. } => "renew_certs",
        }
    }
}

impl From<&v1::Inventory> for Inventory {
    fn from(p: &v1::Inventory) -> Self {
        Inventory {
            logical_cores: p.logical_cores,
            physical_cores: p.physical_cores,
            memory_total_bytes: p.memory_total_bytes,
            memory_available_bytes: p.memory_available_bytes,
            cpu_quota_millicores: p.cpu_quota_millicores,
            memory_capped_by_cgroup: p.memory_capped_by_cgroup,
        }
    }
}

impl From<&Inventory> for v1::Inventory {
    fn from(i: &Inventory) -> Self {
        v1::Inventory {
            logical_cores: i.logical_cores,
            physical_cores: i.physical_cores,
            memory_total_bytes: i.memory_total_bytes,
            memory_available_bytes: i.memory_available_bytes,
            cpu_quota_millicores: i.cpu_quota_millicores,
            memory_capped_by_cgroup: i.memory_capped_by_cgroup,
        }
    }
}

/// A missing `inventory` becomes all zeros; validation rejects that before a
/// conversion matters.
impl From<&v1::HostFacts> for HostFacts {
    fn from(p: &v1::HostFacts) -> Self {
        HostFacts {
            hostname: p.hostname.clone(),
            addresses: p.addresses.clone(),
            zone: p.zone.clone(),
            labels: p.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            inventory: p.inventory.as_ref().map(Inventory::from).unwrap_or_default(),
            simulated: p.simulated,
            advertise_address: p.advertise_address.clone(),
            advertise_source: AdvertiseSource::from_proto(p.advertise_source),
            cri_socket: p.cri_socket.clone(),
        }
    }
}

impl From<&HostFacts> for v1::HostFacts {
    fn from(f: &HostFacts) -> Self {
        v1::HostFacts {
            hostname: f.hostname.clone(),
            addresses: f.addresses.clone(),
            zone: f.zone.clone(),
            labels: f.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            inventory: Some(v1::Inventory::from(&f.inventory)),
            simulated: f.simulated,
            advertise_address: f.advertise_address.clone(),
            advertise_source: f.advertise_source.to_proto() as i32,
            cri_socket: f.cri_socket.clone(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn facts(hostname: &str, cores: u32) -> HostFacts {
        HostFacts {
            hostname: hostname.to_owned(),
            addresses: vec!["10.0.0.1".to_owned(), "127.0.0.1".to_owned()],
            zone: "a".to_owned(),
            labels: BTreeMap::from([("rack".to_owned(), "r1".to_owned())]),
            inventory: Inventory {
                logical_cores: cores,
                physical_cores: cores / 2,
                memory_total_bytes: 64 << 30,
                memory_available_bytes: 32 << 30,
                cpu_quota_millicores: 0,
                memory_capped_by_cgroup: false,
            },
            simulated: true,
            advertise_address: "10.0.0.1".to_owned(),
            advertise_source: AdvertiseSource::Connection,
            cri_socket: "unix:///run/containerd/containerd.sock".to_owned(),
        }
    }

    #[test]
    fn state_names_round_trip_and_unknown_names_list_the_accepted_ones() {
        for state in HostState::ALL {
            assert_eq!(state.as_str().parse::<HostState>(), Ok(state));
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{}\"", state.as_str())
            );
        }
        let err = "gone".parse::<HostState>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown host state \"gone\" (accepted ready|suspect|down|cordoned|joining|leaving)"
        );
    }

    #[test]
    fn commands_serialize_with_a_snake_case_type_tag() {
        let cmd = Command::SetHostState {
            host_id: "h".to_owned(),
            state: HostState::Down,
            reason: "no heartbeat for 5.0s".to_owned(),
            at_unix_ms: 42,
        };
        let json = serde_json::to_value(&cmd).unwrap();
        assert_eq!(json["type"], "set_host_state");
        assert_eq!(json["state"], "down");
        let back: Command = serde_json::from_value(json).unwrap();
        assert_eq!(back, cmd);
    }

    #[test]
    fn facts_survive_a_trip_through_the_wire_types() {
        let ours = facts("h1", 16);
        let wire = v1::HostFacts::from(&ours);
        assert_eq!(HostFacts::from(&wire), ours);
    }

    #[test]
    fn a_record_converts_to_a_disconnected_wire_host() {
        let record = HostRecord {
            host_id: "h".to_owned(),
            state: HostState::Suspect,
            state_reason: "r".to_owned(),
            state_since_unix_ms: 5,
            registered_at_unix_ms: 1,
            agent_version: "0.1.0".to_owned(),
            facts: facts("h1", 8),
            admin_labels: Default::default(),
            pool: None,
            fenced: None,
        };
        let host = record.to_proto();
        assert_eq!(host.state, v1::HostState::Suspect as i32);
        assert!(!host.connected);
        assert_eq!(host.facts.unwrap().hostname, "h1");
    }
}
