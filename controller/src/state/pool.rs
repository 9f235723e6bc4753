//! Pools, their members, the tasks that build them, and events: the
//! replicated records (serde) and their wire forms.
//!
//! A pool is one Kubernetes cluster built from hosts. Its members move
//! `joining` → `joined`, and when released `leaving` (drained, node deleted,
//! reset) → gone. Tasks are steps on one host, issued and finished through
//! Raft commands so a new leader knows exactly which are still pending; the
//! agent keys its idempotency on `(task_id, attempt)`. Join secrets and the
//! admin kubeconfig live in the pool record as [`Secret`]s: they are
//! replicated (a new leader needs them) but never displayed, logged, or put
//! in events.

use std::collections::BTreeMap;
use std::fmt;

use rpool_proto::v1;
use serde::{Deserialize, Serialize};

/// A value that must never appear in logs, events or error messages.
/// Debug and Display print `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What a node needs to join the cluster (see `rpool.v1.JoinSecrets`).
/// How a task's images step ended (init and control-plane joins), as the
/// agent reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagesStep {
    /// Every image pulled (or already present).
    pub ok: bool,
    /// What kubeadm reported pulled.
    pub pulled: Vec<String>,
    /// When not ok: the image that could not be pulled ("" if unnamed).
    pub failed_image: String,
    /// The addon images the host's pool runs (flannel, kube-vip, MetalLB),
    /// through the image repository: named in the event so a mirror can
    /// be completed; the runtime pulls them when their pods start.
    #[serde(default)]
    pub addon_images: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinSecrets {
    pub control_plane_endpoint: String,
    pub token: Secret,
    pub ca_cert_hash: String,
    pub certificate_key: Secret,
    pub token_expires_unix_ms: u64,
    pub certificate_key_expires_unix_ms: u64,
}

impl JoinSecrets {
    pub fn to_proto(&self) -> v1::JoinSecrets {
        v1::JoinSecrets {
            control_plane_endpoint: self.control_plane_endpoint.clone(),
            token: self.token.expose().to_owned(),
            ca_cert_hash: self.ca_cert_hash.clone(),
            certificate_key: self.certificate_key.expose().to_owned(),
            token_expires_unix_ms: self.token_expires_unix_ms,
            certificate_key_expires_unix_ms: self.certificate_key_expires_unix_ms,
        }
    }

    pub fn from_proto(p: &v1::JoinSecrets) -> JoinSecrets {
        JoinSecrets {
            control_plane_endpoint: p.control_plane_endpoint.clone(),
            token: Secret::new(p.token.clone()),
            ca_cert_hash: p.ca_cert_hash.clone(),
            certificate_key: Secret::new(p.certificate_key.clone()),
            token_expires_unix_ms: p.token_expires_unix_ms,
            certificate_key_expires_unix_ms: p.certificate_key_expires_unix_ms,
        }
    }
}

/// The pool as requested.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    pub name: String,
    pub cores: u64,
    pub memory_bytes: u64,
    pub control_planes: u32,
    pub kubernetes_version: String,
    pub pod_network_cidr: String,
    pub service_cidr: String,
    /// The control-plane VIP ("" = none; absent in records written before
    /// VIPs existed). Chosen before the create command is proposed, so
    /// every replica stores the same address.
    #[serde(default)]
    pub vip: String,
    /// MetalLB's address range, `FIRST-LAST` or `ADDRESS/PREFIX` ("" = none).
    #[serde(default)]
    pub lb_range: String,
    /// Where workers go among the fleet's zones (absent in records written
    /// before zone policies existed: spread over every zone).
    #[serde(default)]
    pub zones: ZonePolicy,
    /// The pool's image repository ("" = the fleet's `[kube]
    /// image_repository`; absent in records written before per-pool
    /// repositories existed). Fixed at creation.
    #[serde(default)]
    pub image_repository: String,
    /// Scheduled etcd snapshots: every this many ms (0 = none; absent in
    /// records written before backups existed), and how many scheduled
    /// ones are kept (0 = [`crate::state::backups::DEFAULT_KEEP`]). See
    /// [`crate::state::backups`].
    #[serde(default)]
    pub backup_interval_ms: u64,
    #[serde(default)]
    pub backup_keep: u32,
}

/// How a pool's workers are placed over the fleet's zones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneMode {
    /// Zones ignored: the least-overshoot cover of the whole fleet (what
    /// every pool did before zone policies: records without a mode read as
    /// any). A pool created without a policy gets spread when the hosts it
    /// may take are in two or more zones, else any
    /// (`api::admin::pools::default_zone_mode`), recorded here.
    #[default]
    Any,
    /// Balanced over the zones, so losing one zone loses about 1/zones of
    /// the capacity.
    Spread,
    /// In as few zones as possible.
    Pack,
}

impl ZoneMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneMode::Any => "any",
            ZoneMode::Spread => "spread",
            ZoneMode::Pack => "pack",
        }
    }
}

/// A pool's zone policy: the mode, and the zones its hosts may come from
/// (empty = every zone). Fixed at creation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZonePolicy {
    #[serde(default)]
    pub mode: ZoneMode,
    /// Allowed zones, sorted, no duplicates (empty = all).
    #[serde(default)]
    pub allowed: Vec<String>,
}

impl ZonePolicy {
    /// Whether a host of `zone` may be in the pool.
    pub fn allows(&self, zone: &str) -> bool {
        self.allowed.is_empty() || self.allowed.iter().any(|z| z == zone)
    }
}

impl PoolSpec {
    pub fn to_proto(&self) -> v1::PoolSpec {
        v1::PoolSpec {
            name: self.name.clone(),
            cores: self.cores,
            memory_bytes: self.memory_bytes,
            control_planes: self.control_planes,
            kubernetes_version: self.kubernetes_version.clone(),
            pod_network_cidr: self.pod_network_cidr.clone(),
            service_cidr: self.service_cidr.clone(),
            vip: self.vip.clone(),
            lb_range: self.lb_range.clone(),
            zone_policy: self.zones.mode.as_str().to_owned(),
            zones: self.zones.allowed.clone(),
            image_repository: self.image_repository.clone(),
            backup_interval_ms: self.backup_interval_ms,
            backup_keep: self.backup_keep,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }
}

/// Where a member is in its life in the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    Joining,
    Joined,
    /// Being released: drained, then (a control plane) its etcd member
    /// removed by another control plane, then its node deleted, then reset.
    Leaving {
        drained: bool,
        deleted: bool,
        /// Control planes only (workers have no etcd member).
        #[serde(default)]
        etcd_removed: bool,
    },
    /// Its host is down and being replaced (see [`crate::policy::healing`]): a
    /// healthy control plane removes its etcd member (control planes
    /// only), then deletes its node; then it leaves the pool and its host
    /// is fenced.
    Replaced {
        etcd_removed: bool,
        deleted: bool,
    },
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Joined => "joined",
            MemberState::Leaving { .. } => "leaving",
            MemberState::Replaced { .. } => "replaced",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub host_id: String,
    pub role: Role,
    pub node_name: String,
    pub state: MemberState,
    /// Order of joining (the first control plane has 0 and runs init).
    pub order: u32,
    pub last_error: String,
    /// The Kubernetes version its kubelet runs: the version it joined at,
    /// moved on by an upgrade ("" in records written before upgrades
    /// existed: the pool's `spec.kubernetes_version`).
    #[serde(default)]
    pub version: String,
    /// Control planes: the certificate that expires first, as the agent
    /// last reported it (`None`: not reported, or a worker).
    #[serde(default)]
    pub certs: Option<MemberCerts>,
}

/// A control plane's certificate that expires first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCerts {
    /// kubeadm's name, e.g. "apiserver".
    pub name: String,
    pub expires_unix_ms: u64,
}

/// `rpoolctl pool renew-certs` in progress: the control planes done so
/// far (one at a time, in join order; see [`crate::policy::certs`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRenewal {
    pub started_at_unix_ms: u64,
    pub done: std::collections::BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolPhase {
    Provisioning,
    Ready,
    Resizing,
    Healing,
    Degraded,
    Deleting,
    /// A Kubernetes upgrade is rolling through the members.
    Upgrading,
}

impl PoolPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolPhase::Provisioning => "provisioning",
            PoolPhase::Ready => "ready",
            PoolPhase::Resizing => "resizing",
            PoolPhase::Healing => "healing",
            PoolPhase::Degraded => "degraded",
            PoolPhase::Deleting => "deleting",
            PoolPhase::Upgrading => "upgrading",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    pub spec: PoolSpec,
    pub phase: PoolPhase,
    pub phase_reason: String,
    /// By host id.
    pub members: BTreeMap<String, Member>,
    pub control_plane_endpoint: String,
    pub created_at_unix_ms: u64,
    /// Set by a successful init, refreshed by refresh_join_token.
    pub join: Option<JoinSecrets>,
    pub kubeconfig: Secret,
    pub addons_installed: bool,
    /// Members ever added (for `Member::order`).
    pub next_order: u32,
    /// Autoscaling policy and when it last acted (absent in records
    /// written before autoscaling existed).
    #[serde(default)]
    pub autoscale: Autoscale,
    /// The Kubernetes upgrade in progress (`None`: none; see
    /// [`crate::policy::upgrade`]).
    #[serde(default)]
    pub upgrade: Option<Rollout>,
    /// etcd snapshots of the pool and the schedule's anchor (absent in
    /// records written before backups existed; see
    /// [`crate::state::backups`]).
    #[serde(default)]
    pub backups: crate::state::backups::PoolBackups,
    /// The most severe certificate-expiry alert raised for the pool's
    /// nearest expiry: 30, 7, or 0 (none; back to 0 once it is more than
    /// 30 days away again). Replicated, so an alert is raised once.
    #[serde(default)]
    pub cert_alerted_days: u32,
    /// A certificate renewal in progress.
    #[serde(default)]
    pub cert_renewal: Option<CertRenewal>,
}

/// A Kubernetes upgrade of a pool, replicated so a new leader carries on
/// where the old one stopped. Members move one at a time (control planes
/// always; workers `max_unavailable` at a time): drained, `kubeadm
/// upgrade` + kubelet restart on the node, uncordoned; a member is done
/// when its `Member::version` is `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// The version the pool ran when the upgrade started.
    pub from: String,
    /// The target version.
    pub to: String,
    /// Workers upgraded at once (control planes: always one).
    pub max_unavailable: u32,
    pub started_at_unix_ms: u64,
    /// Members in flight, by host id, with their step.
    pub steps: BTreeMap<String, UpgradeStep>,
}

/// Where a member in flight is in its upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradeStep {
    /// Chosen: its drain is issued.
    Draining,
    /// Drained: `kubeadm upgrade` and the kubelet restart are issued.
    Drained,
    /// Upgraded: its uncordon is issued.
    Upgraded,
}

impl UpgradeStep {
    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeStep::Draining => "draining",
            UpgradeStep::Drained => "upgrading",
            UpgradeStep::Upgraded => "uncordoning",
        }
    }
}

/// A pool's autoscaling: the policy (`None`: off) and when the autoscaler
/// last changed the pool (the cooldown's origin, replicated so a new
/// leader honours it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Autoscale {
    #[serde(default)]
    pub policy: Option<AutoscalePolicy>,
    #[serde(default)]
    pub last_scaled_at_unix_ms: u64,
}

/// When to add or remove a worker (see `rpool.v1.AutoscalePolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoscalePolicy {
    pub min_cores: u64,
    pub max_cores: u64,
    pub cpu_target_percent: u32,
    pub memory_target_percent: u32,
    pub up_window_ms: u64,
    pub down_window_ms: u64,
    pub cooldown_ms: u64,
}

impl AutoscalePolicy {
    pub fn to_proto(&self, last_scaled_at_unix_ms: u64) -> v1::AutoscalePolicy {
        v1::AutoscalePolicy {
            min_cores: self.min_cores,
            max_cores: self.max_cores,
            cpu_target_percent: self.cpu_target_percent,
            memory_target_percent: self.memory_target_percent,
            up_window_ms: self.up_window_ms,
            down_window_ms: self.down_window_ms,
            cooldown_ms: self.cooldown_ms,
            last_scaled_at_unix_ms,
        }
    }
}

impl PoolRecord {
    /// The control plane that runs `kubeadm init` (lowest order).
    pub fn first_control_plane(&self) -> Option<&Member> {
        self.members
            .values()
            .filter(|m| m.role == Role::ControlPlane)
            .min_by_key(|m| m.order)
    }

    /// The version member `m`'s kubelet runs.
    pub fn member_version<'a>(&'a self, m: &'a Member) -> &'a str {
        if m.version.is_empty() {
            &self.spec.kubernetes_version
        } else {
            &m.version
        }
    }

    /// The version a member joins at: during an upgrade, the target once
    /// every control plane runs it (the previous version before), else the
    /// pool's version.
    pub fn join_version(&self) -> &str {
        match &self.upgrade {
            Some(r) => {
                let cps_done = self
                    .members
                    .values()
                    .filter(|m| {
                        m.role == Role::ControlPlane && !matches!(m.state, MemberState::Replaced { .. })
                    })
                    .all(|m| self.member_version(m) == r.to);
                if cps_done { &r.to } else { &r.from }
            }
            None => &self.spec.kubernetes_version,
        }
    }

    /// The control plane whose certificate expires first: (host id, it).
    pub fn nearest_cert(&self) -> Option<(&str, &MemberCerts)> {
        self.members
            .values()
            .filter(|m| m.role == Role::ControlPlane && m.state == MemberState::Joined)
            .filter_map(|m| m.certs.as_ref().map(|c| (m.host_id.as_str(), c)))
            .min_by_key(|(_, c)| c.expires_unix_ms)
    }

    /// A joined control plane (lowest order) to run kubectl on.
    pub fn joined_control_plane(&self) -> Option<&Member> {
        self.members
            .values()
            .filter(|m| m.role == Role::ControlPlane && m.state == MemberState::Joined)
            .min_by_key(|m| m.order)
    }
}

/// What a task does, with its parameters (secrets come from the pool
/// record when the task is sent, never stored twice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskKind {
    InitControlPlane,
    JoinControlPlane,
    JoinWorker,
    DrainNode {
        target_node: String,
    },
    DeleteNode {
        target_node: String,
    },
    RemoveEtcdMember {
        target_node: String,
    },
    Reset,
    InstallAddons,
    RefreshJoinToken,
    FetchKubeconfig,
    /// Upgrade: on the member itself, check kubeadm is `version`, run
    /// `kubeadm upgrade plan` + `kubeadm upgrade apply` (`apply`: the
    /// first control plane) or `kubeadm upgrade node`, restart the kubelet.
    UpgradeNode {
        version: String,
        apply: bool,
    },
    /// Upgrade: `kubectl uncordon` of another node, from a control plane.
    UncordonNode {
        target_node: String,
    },
    /// Backups: an etcd snapshot on this control plane, into its agent's
    /// state dir (see [`crate::state::backups`]).
    EtcdSnapshot {
        backup_id: String,
    },
    /// Backups: removes a snapshot file this host holds (retention).
    DeleteEtcdSnapshot {
        backup_id: String,
        path: String,
    },
    /// `kubeadm certs renew all` and the static pods restarted, on a
    /// control plane itself.
    RenewCerts,
}

impl TaskKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskKind::InitControlPlane => "init_control_plane",
            TaskKind::JoinControlPlane => "join_control_plane",
            TaskKind::JoinWorker => "join_worker",
            TaskKind::DrainNode { .. } => "drain_node",
            TaskKind::DeleteNode { .. } => "delete_node",
            TaskKind::RemoveEtcdMember { .. } => "remove_etcd_member",
            TaskKind::Reset => "reset",
            TaskKind::InstallAddons => "install_addons",
            TaskKind::RefreshJoinToken => "refresh_join_token",
            TaskKind::FetchKubeconfig => "fetch_kubeconfig",
            TaskKind::UpgradeNode { .. } => "upgrade_node",
            TaskKind::UncordonNode { .. } => "uncordon_node",
            TaskKind::EtcdSnapshot { .. } => "etcd_snapshot",
            TaskKind::DeleteEtcdSnapshot { .. } => "delete_etcd_snapshot",
            TaskKind::RenewCerts => "renew_certs",
        }
    }

    /// How long the agent may take before it reports a timeout.
    pub fn timeout_ms(&self) -> u64 {
        match self {
            TaskKind::DrainNode { .. } => (DRAIN_TIMEOUT_S + 60) * 1_000,
            TaskKind::InitControlPlane
            | TaskKind::JoinControlPlane
            | TaskKind::JoinWorker
            | TaskKind::UpgradeNode { .. }
            | TaskKind::EtcdSnapshot { .. } => 600_000,
            TaskKind::RenewCerts => 600_000,
            _ => 120_000,
        }
    }
}

/// `kubectl drain --timeout` (s).
pub const DRAIN_TIMEOUT_S: u64 = 300;
/// Attempts of one task before the pool turns degraded.
pub const MAX_TASK_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task_id: String,
    pub host_id: String,
    pub pool: String,
    /// Node name of the host the task runs on.
    pub node_name: String,
    pub kind: TaskKind,
    pub attempt: u32,
    pub state: TaskState,
    pub issued_at_unix_ms: u64,
    pub deadline_unix_ms: u64,
    /// A failed task may be retried from this time on (backoff).
    pub retry_at_unix_ms: u64,
    pub last_error: String,
}

/// A replicated record of what happened (see `rpool.v1.Event`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub index: u64,
    pub at_unix_ms: u64,
    pub pool: String,
    pub host_id: String,
    pub kind: String,
    pub message: String,
    /// `info` for steps, `alert` for what needs a human (storm, lost
    /// quorum, no replacement fits). Absent in events written before it.
    #[serde(default)]
    pub severity: Severity,
    /// Events of kind `audit` only: who changed what (see
    /// [`crate::state::audit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<crate::state::audit::AuditRecord>,
}

/// How much an [`Event`] needs a human.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A step that happened as planned.
    #[default]
    Info,
    /// Something rpool will not fix by itself.
    Alert,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Alert => "alert",
        }
    }
}

/// The mark on a host that was removed from its pool while down (see
/// [`crate::policy::healing`]): when it comes back it is told `kubeadm reset`
/// before it may be placed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// The pool it was removed from.
    pub pool: String,
    /// Its node name there.
    pub node_name: String,
    /// When it was fenced (controller clock, Unix ms).
    pub since_unix_ms: u64,
}

impl Event {
    pub fn to_proto(&self) -> v1::Event {
        v1::Event {
            index: self.index,
            at_unix_ms: self.at_unix_ms,
            pool: self.pool.clone(),
            host_id: self.host_id.clone(),
            kind: self.kind.clone(),
            message: self.message.clone(),
            severity: self.severity.as_str().to_string(),
            audit: self.audit.as_ref().map(|a| a.to_proto()),
        }
    }
}

/// Events kept in the state machine (older ones are dropped).
pub const MAX_EVENTS: usize = 10_000;

/// Event kind when a storm starts (severity alert).
pub const STORM: &str = "storm";
/// Event kind when a storm ends.
pub const STORM_OVER: &str = "storm_over";
/// Kinds that are edge-triggered: at most one per edge.
pub fn is_edge_kind(kind: &str) -> bool {
    kind == STORM || kind == STORM_OVER
}

/// The latest storm or storm-over event, if any is still kept.
pub fn last_edge(state: &crate::state::State) -> Option<&Event> {
    state.events().iter().rev().find(|e| is_edge_kind(&e.kind))
}

/// True when a storm alert is out and not yet over.
pub fn storm_raised(state: &crate::state::State) -> bool {
    last_edge(state).is_some_and(|e| e.kind == STORM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let join = JoinSecrets {
            token: Secret::new("abcdef.0123456789abcdef"),
            certificate_key: Secret::new("f".repeat(64)),
            ..JoinSecrets::default()
        };
        let shown = format!("{join:?} {}", join.token);
        assert!(!shown.contains("abcdef.0123456789abcdef"), "{shown}");
        assert!(!shown.contains(&"f".repeat(64)), "{shown}");
        assert!(shown.contains("[redacted]"));
        // But they do travel to the agent.
        assert_eq!(join.to_proto().token, "abcdef.0123456789abcdef");
    }
}
