//! The `-o json` schema: proto messages mapped to stable, documented JSON.
//!
//! Field names and meanings are a contract with scripts and tests; change
//! them only with a new schema version.

use std::collections::BTreeMap;

use rpool_proto::v1::{Controller, HealthCheck, HealthStatus, Host, HostState, StatusResponse, Utilization};
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
    pub controller_id: String,
    pub version: String,
    pub leader_id: String,
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
            controller_id: s.controller_id.clone(),
            version: s.version.clone(),
            leader_id: s.leader_id.clone(),
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
            "health": [{"name": "disk_free", "status": "ok", "message": "40.0GiB free (threshold 1.0GiB)"}]
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
