//! `AdminService`: what `rpoolctl` reads.
//!
//! - `Status`: identity (`controller_id` and, with one controller,
//!   `leader_id`: the id in decimal), applied index, host counts per state
//!   (every state name present), connected agents, uptime, liveness
//!   settings.
//! - `ListHosts`: optional state and zone filters; ordered by zone, hostname,
//!   host id; durable records merged with this controller's live
//!   observations (connected, heartbeat age, utilization, health, skew).
//! - `GetHost`: a full id or a unique prefix of at least 4 characters.
//!
//! Requests are validated first ([`crate::validate`]); errors map to
//! `tonic::Status` in one place, `From<AdminError> for Status`.

use std::sync::Arc;
use std::time::Instant;

use rpool_proto::v1::admin_service_server::AdminService;
use rpool_proto::v1::{
    self, GetHostRequest, ListHostsRequest, ListHostsResponse, StatusRequest, StatusResponse,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::Shared;
use crate::command::HostRecord;
use crate::liveness::{Liveness, Observation};
use crate::validate::{self, Invalid};

/// Matches listed in an "ambiguous prefix" error.
const AMBIGUOUS_MATCHES_SHOWN: usize = 10;

/// The service.
pub struct AdminSvc {
    shared: Arc<Shared>,
}

impl AdminSvc {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        AdminSvc { shared }
    }
}

/// Everything an admin request can fail with.
#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("no host with id {0}")]
    NotFound(String),
    #[error(
        "get_host.host_id: prefix {prefix:?} matches {count} hosts: {shown} (accepted a full id or a unique prefix)"
    )]
    Ambiguous {
        prefix: String,
        count: usize,
        shown: String,
    },
}

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(e) => e.into(),
            e @ AdminError::NotFound(_) => Status::not_found(e.to_string()),
            e @ AdminError::Ambiguous { .. } => Status::invalid_argument(e.to_string()),
        }
    }
}

/// A durable record plus what this controller observes live.
pub(crate) fn host_view(record: &HostRecord, obs: Option<&Observation>, now: Instant) -> v1::Host {
    let mut host = record.to_proto();
    if let Some(obs) = obs {
        host.connected = obs.session.is_some();
        host.last_heartbeat_age_ms =
            u64::try_from(now.saturating_duration_since(obs.last_heartbeat).as_millis()).unwrap_or(u64::MAX);
        host.utilization = obs.utilization;
        host.health = obs.health.clone();
        host.clock_skew_ms = obs.clock_skew_ms;
    }
    host
}

impl AdminSvc {
    fn list(&self, req: &ListHostsRequest) -> Result<Vec<v1::Host>, AdminError> {
        let state = validate::list_hosts(req)?;
        let now = Instant::now();
        let live = self.shared.liveness.lock().unwrap_or_else(|e| e.into_inner());
        let mut hosts: Vec<v1::Host> = self.shared.node.read(|sm| {
            sm.hosts()
                .values()
                .filter(|r| state.is_none_or(|s| r.state == s))
                .filter(|r| req.zone.is_empty() || r.facts.zone == req.zone)
                .map(|r| host_view(r, live.observation(&r.host_id), now))
                .collect()
        });
        drop(live);
        hosts.sort_by(|a, b| {
            let key = |h: &v1::Host| {
                let f = h.facts.as_ref();
                (
                    f.map(|f| f.zone.clone()).unwrap_or_default(),
                    f.map(|f| f.hostname.clone()).unwrap_or_default(),
                    h.host_id.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        Ok(hosts)
    }

    fn get(&self, req: &GetHostRequest) -> Result<v1::Host, AdminError> {
        validate::get_host(req)?;
        let now = Instant::now();
        let live = self.shared.liveness.lock().unwrap_or_else(|e| e.into_inner());
        self.shared
            .node
            .read(|sm| find_host(sm.hosts_with_prefix(&req.host_id), &req.host_id, &live, now))
    }
}

fn find_host<'a>(
    mut matches: impl Iterator<Item = &'a HostRecord>,
    prefix: &str,
    live: &Liveness,
    now: Instant,
) -> Result<v1::Host, AdminError> {
    let Some(first) = matches.next() else {
        return Err(AdminError::NotFound(prefix.to_owned()));
    };
    // An exact id wins even if it is also a prefix of other ids (it cannot be
    // with 36-character UUIDs, but ids are opaque here).
    if first.host_id == prefix {
        return Ok(host_view(first, live.observation(&first.host_id), now));
    }
    let rest: Vec<&HostRecord> = matches.collect();
    if rest.is_empty() {
        return Ok(host_view(first, live.observation(&first.host_id), now));
    }
    let count = rest.len() + 1;
    let mut shown: Vec<&str> = std::iter::once(first)
        .chain(rest)
        .take(AMBIGUOUS_MATCHES_SHOWN)
        .map(|r| r.host_id.as_str())
        .collect();
    if count > AMBIGUOUS_MATCHES_SHOWN {
        shown.push("...");
    }
    Err(AdminError::Ambiguous {
        prefix: prefix.to_owned(),
        count,
        shown: shown.join(", "),
    })
}

#[tonic::async_trait]
impl AdminService for AdminSvc {
    #[instrument(skip_all)]
    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let shared = &self.shared;
        let agents_connected = shared
            .liveness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .connected_count();
        let (applied_index, hosts_total, by_state) = shared
            .node
            .read(|sm| (sm.applied_index(), sm.hosts().len(), sm.count_by_state()));
        let (heartbeat_interval_ms, suspect_after_ms, down_after_ms) = shared.config.liveness.wire_ms();
        let id = shared.config.id.to_string();
        Ok(Response::new(StatusResponse {
            controller_id: id.clone(),
            version: rpool_proto::VERSION.to_owned(),
            leader_id: id,
            applied_index,
            hosts_total: u32::try_from(hosts_total).unwrap_or(u32::MAX),
            hosts_by_state: by_state
                .into_iter()
                .map(|(state, n)| (state.as_str().to_owned(), n))
                .collect(),
            agents_connected: u32::try_from(agents_connected).unwrap_or(u32::MAX),
            uptime_s: shared.started.elapsed().as_secs(),
            heartbeat_interval_ms,
            suspect_after_ms,
            down_after_ms,
        }))
    }

    #[instrument(skip_all, fields(state = %request.get_ref().state, zone = %request.get_ref().zone))]
    async fn list_hosts(
        &self,
        request: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        let hosts = self.list(request.get_ref())?;
        Ok(Response::new(ListHostsResponse { hosts }))
    }

    #[instrument(skip_all, fields(host_id = %request.get_ref().host_id))]
    async fn get_host(&self, request: Request<GetHostRequest>) -> Result<Response<v1::Host>, Status> {
        Ok(Response::new(self.get(request.get_ref())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::tests::facts;
    use crate::command::{Command, HostState};
    use crate::config::LivenessConfig;
    use crate::state::StateMachine;

    fn machine(ids: &[&str]) -> StateMachine {
        let mut sm = StateMachine::new();
        for (i, id) in ids.iter().enumerate() {
            sm.apply(
                i as u64 + 1,
                &Command::RegisterHost {
                    host_id: (*id).to_owned(),
                    agent_version: "0.1.0".to_owned(),
                    facts: facts(id, 8),
                    at_unix_ms: 0,
                },
            )
            .unwrap();
        }
        sm
    }

    #[test]
    fn a_unique_prefix_finds_the_host_and_an_ambiguous_one_lists_matches() {
        let sm = machine(&["abcd-1", "abcd-2", "abce-1"]);
        let t0 = Instant::now();
        let live = Liveness::new(LivenessConfig::default(), t0);
        let get = |p: &str| find_host(sm.hosts_with_prefix(p), p, &live, t0);
        assert_eq!(get("abce").unwrap().host_id, "abce-1");
        assert_eq!(get("abcd-2").unwrap().host_id, "abcd-2");
        let status = Status::from(get("abcd").unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "get_host.host_id: prefix \"abcd\" matches 2 hosts: abcd-1, abcd-2 (accepted a full id or a unique prefix)"
        );
        let status = Status::from(get("ffff").unwrap_err());
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "no host with id ffff");
    }

    #[test]
    fn a_host_view_merges_live_observations() {
        let sm = machine(&["h1"]);
        let t0 = Instant::now();
        let mut live = Liveness::new(LivenessConfig::default(), t0);
        let record = sm.host("h1").unwrap();
        let view = host_view(record, live.observation("h1"), t0);
        assert!(!view.connected);
        assert_eq!(view.utilization, None);
        live.connect("h1", 1, t0);
        let view = host_view(
            record,
            live.observation("h1"),
            t0 + std::time::Duration::from_millis(120),
        );
        assert!(view.connected);
        assert_eq!(view.last_heartbeat_age_ms, 120);
        assert_eq!(view.state, HostState::Ready.to_proto() as i32);
    }
}
