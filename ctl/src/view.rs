//! The `-o json` schema: proto messages mapped to stable, documented JSON.
//!
//! Field names and meanings are a contract with scripts and tests; change
//! them only with a new schema version.

use std::collections::BTreeMap;

use rpool_proto::v1::{
    AdvertiseSource, Controller, Event, HealthCheck, HealthStatus, Host, HostState, Pool, PoolMember,
    ResizePoolResponse, StatusResponse, Utilization,
};
use serde::Serialize;

/// Every host state, in display order (also the accepted `--state` values).
pub const STATES: [&str; 6] = ["ready", "suspect", "down", "cordoned", "joining", "leaving"];

/// Lower-case state name (`ready`, ...), `unspecified` for 0 or unknown values.
pub fn state_name(state: i32) -> &'static str {
    match HostState::try_from(state) {
        Ok(HostState::Ready) => "ready",
        Ok(HostState::Suspect) => "suspect",
        Ok(HostState::Down) => "down",
        Ok(HostState::Cordoned) => "cordoned",
        Ok(HostState::Joining) => "joining",
        Ok(HostState::Leaving) => "leaving",
        Ok(HostState::Unspecified) | Err(_) => "unspecified",
    }
}

/// `ok`, `warn`, `fail` (`unspecified` for 0 or unknown values).
pub fn health_name(status: i32) -> &'static str {
    match HealthStatus::try_from(status) {
        Ok(HealthStatus::Ok) => "ok",
        Ok(HealthStatus::Warn) => "warn",
        Ok(HealthStatus::Fail) => "fail",
        Ok(HealthStatus::Unspecified) | Err(_) => "unspecified",
    }
}

/// The lower-case name of an `AdvertiseSource` ("" when unset).
pub fn advertise_source_name(source: i32) -> &'static str {
    match AdvertiseSource::try_from(source) {
        Ok(AdvertiseSource::Config) => "config",
        Ok(AdvertiseSource::Connection) => "connection",
        Ok(AdvertiseSource::Interface) => "interface",
        _ => "",
    }
}

/// One host, as printed by `host list -o json` (array) and `host show -o json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostView {
    pub host_id: String,
    pub hostname: String,
    pub zone: String,
    pub state: String,
    pub state_reason: String,
    pub state_since_unix_ms: u64,
    pub registered_at_unix_ms: u64,
    pub agent_version: String,
    pub simulated: bool,
    pub addresses: Vec<String>,
    /// The address the host's Kubernetes node advertises ("" none).
    pub advertise_address: String,
    /// Where it comes from: "config", "connection", "interface" ("" none).
    pub advertise_source: String,
    /// The CRI endpoint the node registers with ("" none reported).
    pub cri_socket: String,
    pub labels: BTreeMap<String, String>,
    pub cores: u32,
    pub physical_cores: u32,
    pub memory_bytes: u64,
    pub memory_available_bytes: u64,
    pub cpu_quota_millicores: u32,
    pub connected: bool,
    pub last_heartbeat_age_ms: u64,
    pub clock_skew_ms: i64,
    pub utilization: Option<UtilizationView>,
    pub health: Vec<HealthView>,
    /// Pool the host belongs to ("" = in the fleet, free).
    pub pool: String,
    /// Its role there ("control-plane", "worker"; "" when free).
    pub pool_role: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UtilizationView {
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub load_average_1m: f64,
    pub load_average_5m: f64,
    pub load_average_15m: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthView {
    pub name: String,
    pub status: String,
    pub message: String,
}

impl From<&Utilization> for UtilizationView {
    fn from(u: &Utilization) -> Self {
        Self {
            cpu_percent: u.cpu_percent,
            memory_used_bytes: u.memory_used_bytes,
            load_average_1m: u.load_average_1m,
            load_average_5m: u.load_average_5m,
            load_average_15m: u.load_average_15m,
        }
    }
}

impl From<&HealthCheck> for HealthView {
    fn from(h: &HealthCheck) -> Self {
        Self {
            name: h.name.clone(),
            status: health_name(h.status).to_string(),
            message: h.message.clone(),
        }
    }
}

impl From<&Host> for HostView {
    fn from(h: &Host) -> Self {
        let facts = h.facts.clone().unwrap_or_default();
        let inv = facts.inventory.unwrap_or_default();
        Self {
            host_id: h.host_id.clone(),
            hostname: facts.hostname,
            zone: facts.zone,
            state: state_name(h.state).to_string(),
            state_reason: h.state_reason.clone(),
            state_since_unix_ms: h.state_since_unix_ms,
            registered_at_unix_ms: h.registered_at_unix_ms,
            agent_version: h.agent_version.clone(),
            simulated: facts.simulated,
            addresses: facts.addresses,
            advertise_address: facts.advertise_address,
            advertise_source: advertise_source_name(facts.advertise_source).to_string(),
            cri_socket: facts.cri_socket,
            labels: facts.labels.into_iter().collect(),
            cores: inv.logical_cores,
            physical_cores: inv.physical_cores,
            memory_bytes: inv.memory_total_bytes,
            memory_available_bytes: inv.memory_available_bytes,
            cpu_quota_millicores: inv.cpu_quota_millicores,
            connected: h.connected,
            last_heartbeat_age_ms: h.last_heartbeat_age_ms,
            clock_skew_ms: h.clock_skew_ms,
            utilization: h.utilization.as_ref().map(UtilizationView::from),
            health: h.health.iter().map(HealthView::from).collect(),
            pool: h.pool.clone(),
            pool_role: h.pool_role.clone(),
        }
    }
}

impl HostView {
    /// Memory in use as a percentage of total, when known.
    pub fn memory_percent(&self) -> Option<f64> {
        let u = self.utilization.as_ref()?;
        (self.memory_bytes > 0).then(|| u.memory_used_bytes as f64 * 100.0 / self.memory_bytes as f64)
    }
}

/// `status -o json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusView {
    /// The controller that answered (a number, as in `controller list -o json`).
    pub controller_id: u64,
    pub version: String,
    /// The leader's id; null when none is known.
    pub leader_id: Option<u64>,
    pub applied_index: u64,
    pub hosts_total: u32,
    pub hosts_by_state: BTreeMap<String, u32>,
    pub agents_connected: u32,
    pub uptime_s: u64,
    pub heartbeat_interval_ms: u32,
    pub suspect_after_ms: u32,
    pub down_after_ms: u32,
    /// Raft role of the controller that answered ("leader", "follower", ...).
    pub role: String,
    pub term: u64,
    pub commit_index: u64,
    /// Address of the current leader ("" when none is known).
    pub leader_address: String,
    /// Number of voting controllers in the group.
    pub voters: u32,
}

impl From<&StatusResponse> for StatusView {
    fn from(s: &StatusResponse) -> Self {
        Self {
            controller_id: s.controller_id.parse().unwrap_or_default(),
            version: s.version.clone(),
            leader_id: s.leader_id.parse().ok().filter(|id| *id != 0),
            applied_index: s.applied_index,
            hosts_total: s.hosts_total,
            hosts_by_state: s.hosts_by_state.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            agents_connected: s.agents_connected,
            uptime_s: s.uptime_s,
            heartbeat_interval_ms: s.heartbeat_interval_ms,
            suspect_after_ms: s.suspect_after_ms,
            down_after_ms: s.down_after_ms,
            role: s.role.clone(),
            term: s.term,
            commit_index: s.commit_index,
            leader_address: s.leader_address.clone(),
            voters: s.voters,
        }
    }
}

/// One controller of the Raft group, as printed by `controller list -o json`
/// (an array, ordered by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControllerView {
    pub id: u64,
    pub address: String,
    /// "leader", "follower", "candidate", "pre-candidate", "learner" or
    /// "unreachable".
    pub role: String,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub match_index: u64,
    pub lag: u64,
}

impl From<&Controller> for ControllerView {
    fn from(c: &Controller) -> Self {
        Self {
            id: c.id,
            address: c.address.clone(),
            role: c.role.clone(),
            term: c.term,
            commit_index: c.commit_index,
            applied_index: c.applied_index,
            match_index: c.match_index,
            lag: c.lag,
        }
    }
}

/// One pool, as printed by `pool show -o json` and `pool create -o json`
/// (also `--dry-run`), and as the elements of `pool list -o json`:
///
/// ```json
/// {"name": "web", "phase": "ready", "phase_reason": "all members joined",
///  "cores": 40, "memory_bytes": 171798691840, "control_planes": 1,
///  "kubernetes_version": "v1.32.0", "control_plane_endpoint": "sim-a-1:6443",
///  "vip": "", "lb_range": "", "image_repository": "",
///  "worker_cores": 48, "worker_memory_bytes": 206158430208,
///  "created_at_unix_ms": 1700000000000,
///  "members": [{"host_id": "...", "hostname": "sim-a-1", "zone": "a",
///               "role": "control-plane", "node_name": "web-sim-a-1",
///               "state": "joined", "cores": 8, "memory_bytes": 34359738368,
///               "last_error": "", "liveness": "ready"}],
///  "attention": "members 1 down (sim-b-1); replacing: ...",  (only when some are not alive)
///  "events": [{"index": 42, "at_unix_ms": 1700000000000, "pool": "web",
///              "host_id": "", "kind": "pool_created", "message": "..."}],
///  "zone_policy": "any", "zones": [],
///  "zone_totals": [{"zone": "a", "workers": 1, "cores": 16, "memory_bytes": 68719476736}]}
/// ```
///
/// `zone_policy` is how workers are placed over zones (any, spread or pack;
/// chosen at creation, spread by default on a fleet of two or more zones),
/// `zones` the zones the pool may use ([] = all), `zone_totals` the workers
/// per zone (for a dry run: the workers it would take).
///
/// `cores`/`memory_bytes` are the request (worker capacity wanted),
/// `worker_cores`/`worker_memory_bytes` what the workers have. `phase` is
/// one of provisioning, ready, resizing, healing, degraded, deleting.
/// `vip` is the control-plane virtual IP and `lb_range` MetalLB's address
/// range ("" when the pool has none). `image_repository` is the registry
/// the pool's images come from ("" = the controller's `[kube]
/// image_repository`).
/// `events` holds the recent events (oldest first) for `pool show`, and is
/// empty in `pool list` and for a dry run. `created_at_unix_ms` is 0 for a
/// dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolView {
    pub name: String,
    pub phase: String,
    pub phase_reason: String,
    pub cores: u64,
    pub memory_bytes: u64,
    pub control_planes: u32,
    pub kubernetes_version: String,
    pub control_plane_endpoint: String,
    pub vip: String,
    pub lb_range: String,
    pub image_repository: String,
    pub worker_cores: u64,
    pub worker_memory_bytes: u64,
    pub created_at_unix_ms: u64,
    pub members: Vec<MemberView>,
    pub events: Vec<EventView>,
    /// Networks, shown by `pool show` (not part of the JSON schema).
    #[serde(skip)]
    pub pod_network_cidr: String,
    #[serde(skip)]
    pub service_cidr: String,
    /// Autoscaling policy and the leader's latest judgement; absent (not
    /// in the JSON) when autoscaling is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleView>,
    /// Zone policy of the workers ("any", "spread" or "pack") and the allowed
    /// zones (empty = all).
    pub zone_policy: String,
    pub zones: Vec<String>,
    /// Workers per zone, ordered by zone.
    pub zone_totals: Vec<ZoneTotalView>,
    /// When members' hosts are suspect or down: how many, and what rpool
    /// is doing about it (`pool show` only; absent when all are alive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention: Option<String>,
    /// The Kubernetes upgrade in progress (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeView>,
    /// The control planes' certificate that expires first, and a renewal
    /// in progress (absent: no control plane reported yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificates: Option<CertsView>,
}

/// A pool's certificates in `-o json`:
/// `{"name": "apiserver", "host_id": "...", "hostname": "cp1",
///   "expires_unix_ms": ..., "days_left": 364, "alerted_days": 0,
///   "renewal": null}` (`renewal`: `{"control_planes_done": 1,
///   "control_planes_total": 3, "started_at_unix_ms": ...}` while renewing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertsView {
    pub name: String,
    pub host_id: String,
    pub hostname: String,
    pub expires_unix_ms: u64,
    pub days_left: i64,
    pub alerted_days: u32,
    pub renewal: Option<CertRenewalView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertRenewalView {
    pub control_planes_done: u32,
    pub control_planes_total: u32,
    pub started_at_unix_ms: u64,
}

/// A pool's autoscaling in `-o json`:
///
/// ```json
/// {"min_cores": 16, "max_cores": 64, "cpu_target_percent": 70,
///  "memory_target_percent": 80, "up_window_ms": 60000,
///  "down_window_ms": 600000, "cooldown_ms": 300000,
///  "last_scaled_at_unix_ms": 0,
///  "status": {"decision": "hold", "explanation": "holding: cpu 55% within target 70%, ...",
///             "at_unix_ms": 1700000000000, "cpu_percent": 55.0,
///             "memory_percent": 40.0, "pending_pods": 0}}
/// ```
///
/// `status` is null until the leader has judged the pool; `decision` is
/// scale_up, scale_down or hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutoscaleView {
    pub min_cores: u64,
    pub max_cores: u64,
    pub cpu_target_percent: u32,
    pub memory_target_percent: u32,
    pub up_window_ms: u64,
    pub down_window_ms: u64,
    pub cooldown_ms: u64,
    pub last_scaled_at_unix_ms: u64,
    pub status: Option<AutoscaleStatusView>,
}

/// The leader's latest autoscaling judgement of a pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutoscaleStatusView {
    pub decision: String,
    pub explanation: String,
    pub at_unix_ms: u64,
    pub cpu_percent: f64,
    pub memory_percent: f64,
    pub pending_pods: u32,
}

impl Eq for AutoscaleView {}

impl From<&Pool> for AutoscaleView {
    fn from(p: &Pool) -> Self {
        let a = p.autoscale.unwrap_or_default();
        Self {
            min_cores: a.min_cores,
            max_cores: a.max_cores,
            cpu_target_percent: a.cpu_target_percent,
            memory_target_percent: a.memory_target_percent,
            up_window_ms: a.up_window_ms,
            down_window_ms: a.down_window_ms,
            cooldown_ms: a.cooldown_ms,
            last_scaled_at_unix_ms: a.last_scaled_at_unix_ms,
            status: p.autoscale_status.as_ref().map(|s| AutoscaleStatusView {
                decision: s.decision.clone(),
                explanation: s.explanation.clone(),
                at_unix_ms: s.at_unix_ms,
                cpu_percent: s.cpu_percent,
                memory_percent: s.memory_percent,
                pending_pods: s.pending_pods,
            }),
        }
    }
}

/// A pool's workers in one zone (`zone` "" = hosts without a zone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneTotalView {
    pub zone: String,
    pub workers: u32,
    pub cores: u64,
    pub memory_bytes: u64,
}

impl From<&rpool_proto::v1::ZoneTotal> for ZoneTotalView {
    fn from(t: &rpool_proto::v1::ZoneTotal) -> Self {
        Self {
            zone: t.zone.clone(),
            workers: t.workers,
            cores: t.cores,
            memory_bytes: t.memory_bytes,
        }
    }
}

/// One host of a pool. `role`: control-plane or worker; `state`: joining,
/// joined or leaving; `last_error`: the last task error ("" if none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    pub host_id: String,
    pub hostname: String,
    pub zone: String,
    pub role: String,
    pub node_name: String,
    pub state: String,
    pub cores: u32,
    pub memory_bytes: u64,
    pub last_error: String,
    /// The host's liveness as the controllers judge it (ready, suspect,
    /// down, cordoned, ...); "" when unknown (`pool show` fills it in).
    pub liveness: String,
    /// The Kubernetes version its kubelet runs ("" when unknown).
    pub kubernetes_version: String,
    /// During an upgrade: "draining", "upgrading", "uncordoning" ("" when
    /// not in flight).
    pub upgrade_step: String,
    /// Control planes: when the first of its certificates expires (Unix
    /// ms; 0 when not reported or a worker).
    pub cert_expires_unix_ms: u64,
}

/// A pool's upgrade in progress in `-o json`:
/// `{"from": "v1.32.0", "to": "v1.33.1", "max_unavailable": 1,
///   "members_done": 2, "members_total": 5, "started_at_unix_ms": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpgradeView {
    pub from: String,
    pub to: String,
    pub max_unavailable: u32,
    pub members_done: u32,
    pub members_total: u32,
    pub started_at_unix_ms: u64,
}

/// One event, as printed by `events -o json` (an array, oldest first; with
/// `--follow`, one compact object per line) and inside `pool show -o json`.
/// `index` orders events (the Raft index that recorded it); `pool` and
/// `host_id` are "" when the event concerns none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventView {
    pub index: u64,
    pub at_unix_ms: u64,
    pub pool: String,
    pub host_id: String,
    pub kind: String,
    pub message: String,
    /// "info" or "alert" ("info" from controllers that predate it).
    pub severity: String,
    /// Only on events of kind `audit` (absent from the JSON otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditView>,
}

/// Who changed what, on an `audit` event in `-o json`:
///
/// ```json
/// {"actor": "urn:rpool:admin:alice", "via_controller": 2,
///  "operation": "pool create", "arguments": {"pool": "web", "cores": "64"},
///  "outcome": "applied"}
/// ```
///
/// `actor` is the caller's certificate identity (for a call a follower
/// forwarded, the original caller's); `via_controller` is null unless a
/// follower forwarded the call. Arguments never hold secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditView {
    pub actor: String,
    pub via_controller: Option<u64>,
    pub operation: String,
    pub arguments: std::collections::BTreeMap<String, String>,
    pub outcome: String,
}

/// `pool resize -o json`: worker totals before and after, the hosts that
/// join and those released to the fleet (members as in [`PoolView`]), and
/// the pool after the change (after the wait, with `--wait`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResizeView {
    pub before_cores: u64,
    pub before_memory_bytes: u64,
    pub after_cores: u64,
    pub after_memory_bytes: u64,
    pub adding: Vec<MemberView>,
    pub releasing: Vec<MemberView>,
    pub pool: Option<PoolView>,
    /// Workers per zone after the change.
    pub after_zones: Vec<ZoneTotalView>,
}

impl From<&PoolMember> for MemberView {
    fn from(m: &PoolMember) -> Self {
        Self {
            host_id: m.host_id.clone(),
            hostname: m.hostname.clone(),
            zone: m.zone.clone(),
            role: m.role.clone(),
            node_name: m.node_name.clone(),
            state: m.state.clone(),
            cores: m.cores,
            memory_bytes: m.memory_bytes,
            last_error: m.last_error.clone(),
            liveness: String::new(),
            kubernetes_version: m.kubernetes_version.clone(),
            upgrade_step: m.upgrade_step.clone(),
            cert_expires_unix_ms: m.nearest_cert.as_ref().map_or(0, |c| c.expires_unix_ms),
        }
    }
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        Self {
            index: e.index,
            at_unix_ms: e.at_unix_ms,
            pool: e.pool.clone(),
            host_id: e.host_id.clone(),
            kind: e.kind.clone(),
            message: e.message.clone(),
            severity: if e.severity.is_empty() {
                "info".to_string()
            } else {
                e.severity.clone()
            },
            audit: e.audit.as_ref().map(|a| AuditView {
                actor: a.actor.clone(),
                via_controller: (a.via_controller != 0).then_some(a.via_controller),
                operation: a.operation.clone(),
                arguments: a.arguments.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                outcome: a.outcome.clone(),
            }),
        }
    }
}

impl From<&Pool> for PoolView {
    fn from(p: &Pool) -> Self {
        let spec = p.spec.clone().unwrap_or_default();
        Self {
            name: spec.name,
            phase: p.phase.clone(),
            phase_reason: p.phase_reason.clone(),
            cores: spec.cores,
            memory_bytes: spec.memory_bytes,
            control_planes: spec.control_planes,
            kubernetes_version: spec.kubernetes_version,
            control_plane_endpoint: p.control_plane_endpoint.clone(),
            vip: spec.vip,
            lb_range: spec.lb_range,
            image_repository: spec.image_repository,
            worker_cores: p.worker_cores,
            worker_memory_bytes: p.worker_memory_bytes,
            created_at_unix_ms: p.created_at_unix_ms,
            members: p.members.iter().map(MemberView::from).collect(),
            events: p.recent_events.iter().map(EventView::from).collect(),
            pod_network_cidr: spec.pod_network_cidr,
            service_cidr: spec.service_cidr,
            autoscale: p.autoscale.is_some().then(|| AutoscaleView::from(p)),
            attention: None,
            zone_policy: if spec.zone_policy.is_empty() {
                "any".to_owned()
            } else {
                spec.zone_policy.clone()
            },
            zones: spec.zones.clone(),
            zone_totals: p.zone_totals.iter().map(ZoneTotalView::from).collect(),
            certificates: p.certificates.as_ref().map(|c| CertsView {
                name: c.name.clone(),
                host_id: c.host_id.clone(),
                hostname: c.hostname.clone(),
                expires_unix_ms: c.expires_unix_ms,
                days_left: c.days_left,
                alerted_days: c.alerted_days,
                renewal: c.renewal.as_ref().map(|r| CertRenewalView {
                    control_planes_done: r.control_planes_done,
                    control_planes_total: r.control_planes_total,
                    started_at_unix_ms: r.started_at_unix_ms,
                }),
            }),
            upgrade: p.upgrade.as_ref().map(|u| UpgradeView {
                from: u.from_version.clone(),
                to: u.to_version.clone(),
                max_unavailable: u.max_unavailable,
                members_done: u.members_done,
                members_total: u.members_total,
                started_at_unix_ms: u.started_at_unix_ms,
            }),
        }
    }
}

impl From<&ResizePoolResponse> for ResizeView {
    fn from(r: &ResizePoolResponse) -> Self {
        Self {
            before_cores: r.before_cores,
            before_memory_bytes: r.before_memory_bytes,
            after_cores: r.after_cores,
            after_memory_bytes: r.after_memory_bytes,
            adding: r.adding.iter().map(MemberView::from).collect(),
            releasing: r.releasing.iter().map(MemberView::from).collect(),
            pool: r.pool.as_ref().map(PoolView::from),
            after_zones: r.after_zones.iter().map(ZoneTotalView::from).collect(),
        }
    }
}

/// Member counts of a pool, for tables and progress lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberCounts {
    /// Members staying in the pool (not leaving).
    pub staying: usize,
    /// Of those, the ones that joined.
    pub joined: usize,
    /// Members being released.
    pub leaving: usize,
    pub control_planes: usize,
    pub control_planes_joined: usize,
    pub workers: usize,
    pub workers_joined: usize,
}

impl PoolView {
    pub fn counts(&self) -> MemberCounts {
        let mut c = MemberCounts::default();
        for m in &self.members {
            if m.state == "leaving" {
                c.leaving += 1;
                continue;
            }
            let joined = m.state == "joined";
            c.staying += 1;
            c.joined += usize::from(joined);
            if m.role == "control-plane" {
                c.control_planes += 1;
                c.control_planes_joined += usize::from(joined);
            } else {
                c.workers += 1;
                c.workers_joined += usize::from(joined);
            }
        }
        c
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rpool_proto::v1::{HostFacts, Inventory};

    pub(crate) fn sample_host() -> Host {
        Host {
            host_id: "3f2a9c1d-0b4e-4c2a-9d7e-1a2b3c4d5e6f".into(),
            state: HostState::Ready as i32,
            state_reason: "registered".into(),
            state_since_unix_ms: 1_700_000_000_000,
            registered_at_unix_ms: 1_699_999_999_000,
            agent_version: "0.1.0".into(),
            facts: Some(HostFacts {
                hostname: "sim-b-2".into(),
                addresses: vec!["10.0.0.7".into(), "127.0.0.1".into()],
                zone: "b".into(),
                labels: [("rack".to_string(), "r12".to_string())].into_iter().collect(),
                inventory: Some(Inventory {
                    logical_cores: 16,
                    physical_cores: 8,
                    memory_total_bytes: 64 << 30,
                    memory_available_bytes: 56 << 30,
                    cpu_quota_millicores: 0,
                    memory_capped_by_cgroup: false,
                }),
                simulated: true,
                advertise_address: "10.0.0.7".into(),
                advertise_source: AdvertiseSource::Connection as i32,
                cri_socket: "unix:///run/containerd/containerd.sock".into(),
            }),
            connected: true,
            last_heartbeat_age_ms: 120,
            utilization: Some(Utilization {
                cpu_percent: 20.0,
                memory_used_bytes: 8 << 30,
                load_average_1m: 1.5,
                load_average_5m: 1.5,
                load_average_15m: 1.5,
            }),
            health: vec![HealthCheck {
                name: "disk_free".into(),
                status: HealthStatus::Ok as i32,
                message: "40.0GiB free (threshold 1.0GiB)".into(),
            }],
            clock_skew_ms: -3,
            pool: String::new(),
            pool_role: String::new(),
        }
    }

    #[test]
    fn a_proto_host_maps_to_the_documented_json_schema() {
        let json = serde_json::to_value(HostView::from(&sample_host())).unwrap();
        let want = serde_json::json!({
            "host_id": "3f2a9c1d-0b4e-4c2a-9d7e-1a2b3c4d5e6f",
            "hostname": "sim-b-2",
            "zone": "b",
            "state": "ready",
            "state_reason": "registered",
            "state_since_unix_ms": 1_700_000_000_000u64,
            "registered_at_unix_ms": 1_699_999_999_000u64,
            "agent_version": "0.1.0",
            "simulated": true,
            "addresses": ["10.0.0.7", "127.0.0.1"],
            "advertise_address": "10.0.0.7",
            "advertise_source": "connection",
            "cri_socket": "unix:///run/containerd/containerd.sock",
            "labels": {"rack": "r12"},
            "cores": 16,
            "physical_cores": 8,
            "memory_bytes": 68_719_476_736u64,
            "memory_available_bytes": 60_129_542_144u64,
            "cpu_quota_millicores": 0,
            "connected": true,
            "last_heartbeat_age_ms": 120,
            "clock_skew_ms": -3,
            "utilization": {"cpu_percent": 20.0, "memory_used_bytes": 8_589_934_592u64,
                            "load_average_1m": 1.5, "load_average_5m": 1.5, "load_average_15m": 1.5},
            "health": [{"name": "disk_free", "status": "ok", "message": "40.0GiB free (threshold 1.0GiB)"}],
            "pool": "",
            "pool_role": ""
        });
        assert_eq!(json, want);
    }

    #[test]
    fn json_keys_come_out_in_schema_order() {
        let text = serde_json::to_string(&HostView::from(&sample_host())).unwrap();
        assert!(text.starts_with("{\"host_id\":"), "{text}");
        let order = [
            "\"hostname\"",
            "\"zone\"",
            "\"state\"",
            "\"labels\"",
            "\"cores\"",
            "\"utilization\"",
            "\"health\"",
        ];
        let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn unknown_utilization_is_null_and_missing_facts_are_empty() {
        let host = Host {
            host_id: "abcd".into(),
            state: 99,
            ..Host::default()
        };
        let json = serde_json::to_value(HostView::from(&host)).unwrap();
        assert_eq!(json["utilization"], serde_json::Value::Null);
        assert_eq!(json["state"], "unspecified");
        assert_eq!(json["cores"], 0);
        assert_eq!(json["labels"], serde_json::json!({}));
    }

    #[test]
    fn health_and_state_names_are_lower_case() {
        assert_eq!(health_name(HealthStatus::Warn as i32), "warn");
        assert_eq!(health_name(HealthStatus::Fail as i32), "fail");
        for (i, name) in STATES.iter().enumerate() {
            assert_eq!(state_name(i as i32 + 1), *name);
        }
    }

    #[test]
    fn status_maps_to_the_documented_json_keys() {
        let s = StatusResponse {
            controller_id: "1".into(),
            version: "0.1.0".into(),
            leader_id: "1".into(),
            applied_index: 7,
            hosts_total: 2,
            hosts_by_state: [("ready".to_string(), 2)].into_iter().collect(),
            agents_connected: 2,
            uptime_s: 30,
            heartbeat_interval_ms: 1000,
            suspect_after_ms: 3000,
            down_after_ms: 5000,
            role: "follower".into(),
            term: 4,
            commit_index: 9,
            leader_address: "127.0.0.1:7441".into(),
            voters: 3,
        };
        let json = serde_json::to_value(StatusView::from(&s)).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        let mut want = vec![
            "controller_id",
            "version",
            "leader_id",
            "applied_index",
            "hosts_total",
            "hosts_by_state",
            "agents_connected",
            "uptime_s",
            "heartbeat_interval_ms",
            "suspect_after_ms",
            "down_after_ms",
            "role",
            "term",
            "commit_index",
            "leader_address",
            "voters",
        ];
        want.sort();
        let mut keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(keys, want);
        assert_eq!(json["hosts_by_state"]["ready"], 2);
        assert_eq!(json["role"], "follower");
        assert_eq!(json["term"], 4);
        // Ids are numbers, as in `controller list -o json`.
        assert_eq!(json["controller_id"], 1);
        assert_eq!(json["leader_id"], 1);
        let none = StatusView::from(&StatusResponse {
            leader_id: String::new(),
            ..s.clone()
        });
        assert_eq!(none.leader_id, None);
        assert_eq!(json["commit_index"], 9);
        assert_eq!(json["leader_address"], "127.0.0.1:7441");
        assert_eq!(json["voters"], 3);
    }

    #[test]
    fn a_controller_maps_to_the_documented_json_keys_in_order() {
        let c = Controller {
            id: 2,
            address: "127.0.0.1:7441".into(),
            role: "follower".into(),
            term: 3,
            commit_index: 40,
            applied_index: 39,
            match_index: 40,
            lag: 1,
        };
        let text = serde_json::to_string(&ControllerView::from(&c)).unwrap();
        assert_eq!(
            text,
            "{\"id\":2,\"address\":\"127.0.0.1:7441\",\"role\":\"follower\",\"term\":3,\
             \"commit_index\":40,\"applied_index\":39,\"match_index\":40,\"lag\":1}"
        );
    }
}
