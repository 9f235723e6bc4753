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
//! - `SetHostLabels`: a replicated write.
//! - `ListControllers`, `AddController`, `RemoveController`,
//!   `TransferLeader`: Raft membership, one change at a time.
//! - `SaveSnapshot`: a backup of the whole state (`backup.rs`), streamed.
//! - `BackupPool`, `ListPoolBackups`, `SetPoolBackup`: etcd snapshots of
//!   a pool's cluster, taken by its control plane's agent
//!   (`pool_backups.rs`).
//! - `WhatIf`: the planner run on a copy of the state with hosts assumed
//!   down, and the group's quorum without some controllers (`what_if.rs`).
//!
//! Only `Status` is answered by whichever controller is asked. Everything
//! else runs on the leader: a follower forwards the request to the leader
//! (marked with [`crate::api::forward::FORWARDED`] so it is never forwarded twice) and relays the
//! answer. The leader serves reads after a ReadIndex round
//! ([`NodeHandle::read_barrier`](crate::replica::NodeHandle::read_barrier)), so
//! they are linearizable, and its live observations (connected,
//! utilization) are the only ones there are.
//!
//! Requests are validated first ([`crate::api::validate`]); errors map to
//! `tonic::Status` in one place, `From<AdminError> for Status`.

mod audit;
pub mod autoscale;
mod backup;
pub mod certs;
mod controllers;
pub mod pool_backups;
pub mod pools;
pub mod tokens;
pub mod upgrade;
mod what_if;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rpool_proto::v1::admin_service_client::AdminServiceClient;
use rpool_proto::v1::admin_service_server::AdminService;
use rpool_proto::v1::{
    self, AddControllerRequest, GetHostRequest, ListControllersRequest, ListControllersResponse,
    ListHostsRequest, ListHostsResponse, RemoveControllerRequest, SetHostLabelsRequest, StatusRequest,
    StatusResponse, TransferLeaderRequest,
};
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use crate::Shared;
use crate::api::forward::{
    ForwardMark, LeaderLink, PeerAdminClient, Route, forwarded_request, relay, was_forwarded,
};
use crate::api::status::{Refusal, membership_status, propose_status};
use crate::api::validate::{self, Invalid};
use crate::leader::liveness::{Liveness, Observation};
use crate::raft::node::{add_voter, remove_voter};
use crate::replica::apply::MemberContext;
use crate::state::command::{Command, HostRecord};
use controllers::{PEER_STATUS_TIMEOUT, role_name};

/// How long TransferLeader waits for the new leader to take over.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);

/// Matches listed in an "ambiguous prefix" error.
const AMBIGUOUS_MATCHES_SHOWN: usize = 10;

/// Answers from the leader when this controller does not lead: forwards
/// the call (`api::forward::relay`) and returns its answer.
macro_rules! forward_unless_leader {
    ($svc:ident, $request:ident, $method:ident) => {
        if let Some((mut client, route)) = $svc.leader_client(&$request)? {
            let forwarded = forwarded_request($svc.shared.config.id, $request.into_inner());
            return relay(&$svc.shared, &$svc.leader, &route, client.$method(forwarded)).await;
        }
    };
}

/// `forward_unless_leader`, then, on the leader, the ReadIndex barrier
/// (what follows reads everything committed before the call).
macro_rules! forward_or_barrier {
    ($svc:ident, $request:ident, $method:ident) => {
        forward_unless_leader!($svc, $request, $method);
        $svc.barrier().await?;
    };
}

/// The service.
pub struct AdminSvc {
    shared: Arc<Shared>,
    /// Channel to the leader, reused while the leader's address holds.
    leader: LeaderLink,
}

impl AdminSvc {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        AdminSvc {
            shared,
            leader: LeaderLink::default(),
        }
    }

    /// `None` when this controller leads (serve here); otherwise a client
    /// for the leader and the route it takes (see [`crate::api::forward`]).
    fn leader_client<T>(&self, request: &Request<T>) -> Result<Option<(PeerAdminClient, Route)>, Status> {
        let Some(route) = self.leader.route(&self.shared, was_forwarded(request))? else {
            return Ok(None);
        };
        let mark = ForwardMark::new(self.shared.config.id, crate::api::authz::caller(request));
        let client = AdminServiceClient::with_interceptor(route.channel.clone(), mark);
        Ok(Some((client, route)))
    }

    /// Waits until this leader has applied everything committed so far
    /// (ReadIndex), so the read that follows is linearizable.
    async fn barrier(&self) -> Result<(), Status> {
        self.shared
            .node
            .read_barrier()
            .await
            .map_err(|e| propose_status(e, Refusal::Race))
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

    /// Cordons (or uncordons) the host `host_id` names and answers its new view.
    async fn set_cordon(
        &self,
        host_id: &str,
        cordon: bool,
        audit: &crate::state::audit::AuditRecord,
    ) -> Result<Response<v1::Host>, Status> {
        let host = self.get(&GetHostRequest {
            host_id: host_id.to_owned(),
        })?;
        pools::set_cordon(&self.shared, &host.host_id, cordon, audit).await?;
        Ok(Response::new(self.get(&GetHostRequest {
            host_id: host.host_id,
        })?))
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
    type WatchEventsStream = EventStream;

    #[instrument(skip_all, fields(pool = %request.get_ref().spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")))]
    async fn create_pool(
        &self,
        request: Request<v1::CreatePoolRequest>,
    ) -> Result<Response<v1::CreatePoolResponse>, Status> {
        crate::api::admin::pools::spec("create_pool.spec", request.get_ref().spec.as_ref())?;
        forward_or_barrier!(self, request, create_pool);
        let audit = audit::record(&request, "pool create");
        Ok(Response::new(
            crate::api::admin::pools::create(&self.shared, request.into_inner(), &audit).await?,
        ))
    }

    #[instrument(skip_all)]
    async fn list_pools(
        &self,
        request: Request<v1::ListPoolsRequest>,
    ) -> Result<Response<v1::ListPoolsResponse>, Status> {
        forward_or_barrier!(self, request, list_pools);
        let pools = self.shared.node.read(|sm| {
            sm.pools()
                .values()
                .map(|p| crate::api::admin::pools::pool_view(sm, p, false))
                .collect()
        });
        Ok(Response::new(v1::ListPoolsResponse { pools }))
    }

    #[instrument(skip_all, fields(pool = %request.get_ref().name))]
    async fn get_pool(&self, request: Request<v1::GetPoolRequest>) -> Result<Response<v1::Pool>, Status> {
        crate::api::admin::pools::pool_name("get_pool.name", &request.get_ref().name)?;
        forward_or_barrier!(self, request, get_pool);
        let name = &request.get_ref().name;
        self.shared
            .node
            .read(|sm| {
                sm.pools()
                    .get(name)
                    .map(|p| crate::api::admin::pools::pool_view(sm, p, true))
            })
            .map(|p| crate::api::admin::autoscale::with_status(&self.shared, p))
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no pool named {name}")))
    }

    #[instrument(skip_all, fields(pool = %request.get_ref().name))]
    async fn set_autoscale(
        &self,
        request: Request<v1::SetAutoscaleRequest>,
    ) -> Result<Response<v1::Pool>, Status> {
        crate::api::admin::autoscale::check(request.get_ref())?;
        forward_or_barrier!(self, request, set_autoscale);
        let audit = audit::record(&request, "pool autoscale");
        Ok(Response::new(
            crate::api::admin::autoscale::set(&self.shared, request.into_inner(), &audit).await?,
        ))
    }

    #[instrument(skip_all, fields(pool = %request.get_ref().name))]
    async fn resize_pool(
        &self,
        request: Request<v1::ResizePoolRequest>,
    ) -> Result<Response<v1::ResizePoolResponse>, Status> {
        forward_or_barrier!(self, request, resize_pool);
        let audit = audit::record(&request, "pool resize");
        Ok(Response::new(
            crate::api::admin::pools::resize(&self.shared, request.into_inner(), &audit).await?,
        ))
    }

    #[instrument(skip_all, fields(pool = %request.get_ref().name))]
    async fn backup_pool(
        &self,
        request: Request<v1::BackupPoolRequest>,
    ) -> Result<Response<v1::PoolBackup>, Status> {
        crate::api::admin::pools::pool_name("backup_pool.name", &request.get_ref().name)?;
        forward_or_barrier!(self, request, backup_pool);
        let audit = audit::record(&request, "pool backup");
        Ok(Response::new(
            crate::api::admin::pool_backups::backup(&self.shared, request.into_inner(), &audit).await?,
        ))
    }

    #[instrument(skip_all, fields(pool = %request.get_ref().name))]
    async fn list_pool_backups(
        &self,
        request: Request<v1::ListPoolBackupsRequest>,
    ) -> Result<Response<v1::ListPoolBackupsResponse>, Status> {
        crate::api::admin::pools::pool_name("list_pool_backups.name", &request.get_ref().name)?;
        forward_or_barrier!(self, request, list_pool_backups);
        Ok(Response::new(crate::api::admin::pool_backups::list(
            &self.shared,
            request.get_ref(),
        )?))
    }

    #[instrument(skip_all, fields(pool = %request.get_ref().name))]
    async fn set_pool_backup(
        &self,
        request: Request<v1::SetPoolBackupRequest>,
    ) -> Result<Response<v1::Pool>, Status> {
        crate::api::admin::pool_backups::check_set(request.get_ref())?;
        forward_or_barrier!(self, request, set_pool_backup);
        let audit = audit::record(&request, "pool set-backup");
        Ok(Response::new(
            crate::api::admin::pool_backups::set(&self.shared, request.into_inner(), &audit).await?,
        ))
    }

    #[instrument(skip_all, fields(pool = %request.get_ref().name))]
    async fn upgrade_pool(
        &self,
        request: Request<v1::UpgradePoolRequest>,
    ) -> Result<Response<v1::UpgradePoolResponse>, Status> {
        crate::api::admin::upgrade::check(request.get_ref())?;
        forward_or_barrier!(self, request, upgrade_pool);
        let audit = audit::record(&request, "pool upgrade");
        Ok(Response::new(
            crate::api::admin::upgrade::upgrade(&self.shared, request.into_inner(), &audit).await?,
        ))
    }

    #[instrument(skip_all, fields(pool = %request.get_ref().name))]
    async fn renew_certs(
        &self,
        request: Request<v1::RenewCertsRequest>,
    ) -> Result<Response<v1::RenewCertsResponse>, Status> {
        crate::api::admin::certs::check(request.get_ref())?;
        forward_or_barrier!(self, request, renew_certs);
        let audit = audit::record(&request, "pool renew-certs");
        Ok(Response::new(
            crate::api::admin::certs::renew(&self.shared, request.into_inner(), &audit).await?,
        ))
    }

    #[instrument(skip_all, fields(pool = %request.get_ref().name))]
    async fn destroy_pool(
        &self,
        request: Request<v1::DestroyPoolRequest>,
    ) -> Result<Response<v1::Pool>, Status> {
        forward_or_barrier!(self, request, destroy_pool);
        let audit = audit::record(&request, "pool destroy");
        Ok(Response::new(
            crate::api::admin::pools::destroy(&self.shared, &request.get_ref().name, &audit).await?,
        ))
    }

    #[instrument(skip_all, fields(pool = %request.get_ref().name))]
    async fn get_kubeconfig(
        &self,
        request: Request<v1::GetKubeconfigRequest>,
    ) -> Result<Response<v1::Kubeconfig>, Status> {
        crate::api::admin::pools::pool_name("get_kubeconfig.name", &request.get_ref().name)?;
        forward_or_barrier!(self, request, get_kubeconfig);
        let name = &request.get_ref().name;
        let content = self
            .shared
            .node
            .read(|sm| sm.pools().get(name).map(|p| p.kubeconfig.expose().to_owned()))
            .ok_or_else(|| Status::not_found(format!("no pool named {name}")))?;
        if content.is_empty() {
            return Err(Status::failed_precondition(format!(
                "pool {name} has no kubeconfig yet (its first control plane has not finished kubeadm init)"
            )));
        }
        Ok(Response::new(v1::Kubeconfig { content }))
    }

    #[instrument(skip_all)]
    async fn list_events(
        &self,
        request: Request<v1::ListEventsRequest>,
    ) -> Result<Response<v1::ListEventsResponse>, Status> {
        forward_or_barrier!(self, request, list_events);
        let events = self
            .shared
            .node
            .read(|sm| crate::api::admin::pools::events(sm, request.get_ref()))?;
        Ok(Response::new(v1::ListEventsResponse { events }))
    }

    #[instrument(skip_all)]
    async fn watch_events(
        &self,
        request: Request<v1::ListEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let mut request = request.into_inner();
        // Checked first (bad input changes nothing), then a ReadIndex round
        // (here or through the leader) so a partitioned replica refuses
        // instead of following from a stale copy.
        self.shared
            .node
            .read(|sm| crate::api::admin::pools::events(sm, &request))?;
        self.barrier().await?;
        let shared = self.shared.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut stop = shared.shutdown.clone();
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = crate::stopped(&mut stop) => return,
                    _ = tx.closed() => return,
                }
                let events = shared
                    .node
                    .read(|sm| crate::api::admin::pools::events(sm, &request))
                    .unwrap_or_default();
                for event in events {
                    request.after_index = event.index;
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

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
        let raft = shared.node.status();
        let leader_id = if raft.leader_id == 0 {
            String::new()
        } else {
            raft.leader_id.to_string()
        };
        Ok(Response::new(StatusResponse {
            controller_id: shared.config.id.to_string(),
            version: rpool_proto::VERSION.to_owned(),
            leader_id,
            leader_address: shared.address_of(raft.leader_id).unwrap_or_default(),
            role: role_name(raft.role).to_owned(),
            term: raft.term,
            commit_index: raft.commit_index,
            voters: u32::try_from(raft.voters.len()).unwrap_or(u32::MAX),
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
        validate::list_hosts(request.get_ref())?;
        forward_or_barrier!(self, request, list_hosts);
        let hosts = self.list(request.get_ref())?;
        Ok(Response::new(ListHostsResponse { hosts }))
    }

    #[instrument(skip_all, fields(host_id = %request.get_ref().host_id))]
    async fn get_host(&self, request: Request<GetHostRequest>) -> Result<Response<v1::Host>, Status> {
        validate::get_host(request.get_ref())?;
        forward_or_barrier!(self, request, get_host);
        Ok(Response::new(self.get(request.get_ref())?))
    }

    #[instrument(skip_all, fields(host_id = %request.get_ref().host_id))]
    async fn set_host_labels(
        &self,
        request: Request<SetHostLabelsRequest>,
    ) -> Result<Response<v1::Host>, Status> {
        validate::set_host_labels(request.get_ref())?;
        forward_unless_leader!(self, request, set_host_labels);
        let audit = audit::record(&request, "host label");
        // No read barrier up front: the proposal itself is linearizable.
        // Only a lookup that finds nothing is repeated after one, in case
        // this leader has not applied everything committed yet.
        let req = request.into_inner();
        let lookup = GetHostRequest {
            host_id: req.host_id.clone(),
        };
        let host = match self.get(&lookup) {
            Ok(host) => host,
            Err(_) => {
                self.barrier().await?;
                self.get(&lookup)?
            }
        };
        let set: std::collections::BTreeMap<String, String> = req.set.into_iter().collect();
        let audit = audit
            .arg("host", &host.host_id)
            .arg(
                "set",
                set.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .arg("remove", req.remove.join(","));
        let command = audit.wrap(Command::SetHostLabels {
            host_id: host.host_id.clone(),
            set,
            remove: req.remove,
        });
        match self.shared.node.propose(command).await {
            Ok(_) => {}
            Err(crate::replica::ProposeError::Rejected(e)) => {
                return Err(Status::invalid_argument(format!("set_host_labels: {e}")));
            }
            Err(e) => return Err(propose_status(e, Refusal::Race)),
        }
        Ok(Response::new(self.get(&GetHostRequest {
            host_id: host.host_id,
        })?))
    }

    #[instrument(skip_all, fields(host_id = %request.get_ref().host_id))]
    async fn cordon_host(&self, request: Request<v1::HostRequest>) -> Result<Response<v1::Host>, Status> {
        validate::host_id_prefix("cordon_host.host_id", &request.get_ref().host_id)?;
        forward_or_barrier!(self, request, cordon_host);
        let audit = audit::record(&request, "host cordon");
        self.set_cordon(&request.get_ref().host_id, true, &audit).await
    }

    #[instrument(skip_all, fields(host_id = %request.get_ref().host_id))]
    async fn uncordon_host(&self, request: Request<v1::HostRequest>) -> Result<Response<v1::Host>, Status> {
        validate::host_id_prefix("uncordon_host.host_id", &request.get_ref().host_id)?;
        forward_or_barrier!(self, request, uncordon_host);
        let audit = audit::record(&request, "host uncordon");
        self.set_cordon(&request.get_ref().host_id, false, &audit).await
    }

    #[instrument(skip_all, fields(host_id = %request.get_ref().host_id))]
    async fn drain_host(
        &self,
        request: Request<v1::DrainHostRequest>,
    ) -> Result<Response<v1::DrainHostResponse>, Status> {
        validate::host_id_prefix("drain_host.host_id", &request.get_ref().host_id)?;
        forward_or_barrier!(self, request, drain_host);
        let host = self.get(&GetHostRequest {
            host_id: request.get_ref().host_id.clone(),
        })?;
        let audit = audit::record(&request, "host drain");
        let (pool, replacements) =
            crate::api::admin::pools::drain(&self.shared, &host.host_id, request.get_ref().dry_run, &audit)
                .await?;
        Ok(Response::new(v1::DrainHostResponse {
            host: Some(self.get(&GetHostRequest {
                host_id: host.host_id,
            })?),
            pool,
            replacements,
        }))
    }

    #[instrument(skip_all)]
    async fn list_controllers(
        &self,
        request: Request<ListControllersRequest>,
    ) -> Result<Response<ListControllersResponse>, Status> {
        forward_unless_leader!(self, request, list_controllers);
        Ok(Response::new(self.controllers().await))
    }

    #[instrument(skip_all, fields(id = request.get_ref().id, address = %request.get_ref().address))]
    async fn add_controller(
        &self,
        request: Request<AddControllerRequest>,
    ) -> Result<Response<ListControllersResponse>, Status> {
        let req = request.get_ref();
        validate::controller_id("add_controller.id", req.id)?;
        validate::controller_address("add_controller.address", &req.address)?;
        forward_unless_leader!(self, request, add_controller);
        let status = self.shared.node.status();
        if status.voters.contains(&req.id) || status.learners.contains(&req.id) {
            return Err(Status::already_exists(format!(
                "controller {} is already a member",
                req.id
            )));
        }
        let mut change = add_voter(req.id, &req.address);
        change.context = MemberContext {
            address: req.address.clone(),
            audit: Some(
                audit::record(&request, "controller add")
                    .arg("id", req.id)
                    .arg("address", &req.address),
            ),
        }
        .encode()
        .into();
        self.shared
            .node
            .raft()
            .change_membership(change)
            .await
            .map_err(membership_status)?;
        info!(id = req.id, address = %req.address, "controller added");
        Ok(Response::new(self.controllers().await))
    }

    #[instrument(skip_all, fields(id = request.get_ref().id))]
    async fn remove_controller(
        &self,
        request: Request<RemoveControllerRequest>,
    ) -> Result<Response<ListControllersResponse>, Status> {
        let id = request.get_ref().id;
        validate::controller_id("remove_controller.id", id)?;
        forward_unless_leader!(self, request, remove_controller);
        let status = self.shared.node.status();
        if !status.voters.contains(&id) && !status.learners.contains(&id) {
            return Err(Status::not_found(format!("controller {id} is not a member")));
        }
        if id == self.shared.config.id {
            return Err(Status::failed_precondition(format!(
                "controller {id} leads the group; transfer leadership first (rpoolctl controller transfer-leader)"
            )));
        }
        // The group left behind must still have a quorum. Asked now, of
        // every remaining voter (the leader counts itself): raft-rs'
        // recent-activity flags lag a heartbeat round and flap, so they
        // are not used for this.
        let remaining: Vec<u64> = status.voters.iter().copied().filter(|v| *v != id).collect();
        let reachable = self.probe_quorum(&remaining, status.term).await;
        let quorum = remaining.len() / 2 + 1;
        if reachable < quorum {
            return Err(Status::failed_precondition(format!(
                "removing controller {id} would leave {} voters of which {reachable} answered within {} ms \
                 in term {}; a quorum needs {quorum}",
                remaining.len(),
                PEER_STATUS_TIMEOUT.as_millis(),
                status.term
            )));
        }
        let mut change = remove_voter(id);
        change.context = MemberContext {
            address: String::new(),
            audit: Some(audit::record(&request, "controller remove").arg("id", id)),
        }
        .encode()
        .into();
        self.shared
            .node
            .raft()
            .change_membership(change)
            .await
            .map_err(membership_status)?;
        info!(id, "controller removed");
        Ok(Response::new(self.controllers().await))
    }

    #[instrument(skip_all, fields(id = request.get_ref().id))]
    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<ListControllersResponse>, Status> {
        let id = request.get_ref().id;
        validate::controller_id("transfer_leader.id", id)?;
        forward_unless_leader!(self, request, transfer_leader);
        let status = self.shared.node.status();
        if !status.voters.contains(&id) {
            return Err(Status::not_found(format!(
                "controller {id} is not a voting member"
            )));
        }
        if id != status.id {
            // Recorded (with who asked) while this controller still leads:
            // once the transfer starts it can no longer propose.
            let from = status.id;
            let note = audit::record(&request, "controller transfer-leader")
                .arg("from", from)
                .arg("to", id)
                .wrap(Command::Alert {
                    pool: String::new(),
                    host_id: String::new(),
                    kind: "leader_transfer".to_owned(),
                    severity: crate::state::pool::Severity::Info,
                    message: format!(
                        "leadership handed from controller {from} to controller {id} on request"
                    ),
                    degrade: false,
                    at_unix_ms: rpool_proto::clock::unix_ms_now(),
                });
            self.shared
                .node
                .propose(note)
                .await
                .map_err(|e| propose_status(e, Refusal::Race))?;
            self.shared
                .node
                .raft()
                .transfer_leader(id)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let mut watch = self.shared.node.raft().watch_status();
            let moved = tokio::time::timeout(
                TRANSFER_TIMEOUT,
                crate::raft::node::until(&mut watch, |s| s.leader_id == id),
            )
            .await;
            if moved.is_err() {
                return Err(Status::deadline_exceeded(format!(
                    "controller {id} did not take over within {}s (is it reachable and caught up?)",
                    TRANSFER_TIMEOUT.as_secs()
                )));
            }
            info!(id, "leadership transferred");
            // The new leader answers with its view of the group.
            let address = self.shared.address_of(id).unwrap_or_default();
            if let Ok(mut client) = crate::api::forward::admin_client(&self.shared, id, &address).await
                && let Ok(list) = client.list_controllers(ListControllersRequest {}).await
            {
                return Ok(list);
            }
        }
        Ok(Response::new(self.controllers().await))
    }

    #[instrument(skip_all)]
    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        crate::api::admin::tokens::validate_create(request.get_ref())?;
        forward_unless_leader!(self, request, create_token);
        let audit = audit::record(&request, "token create");
        Ok(Response::new(
            crate::api::admin::tokens::create(&self.shared, request.get_ref(), &audit).await?,
        ))
    }

    #[instrument(skip_all)]
    async fn list_tokens(
        &self,
        request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        forward_or_barrier!(self, request, list_tokens);
        let now = rpool_proto::clock::unix_ms_now();
        let tokens = self
            .shared
            .node
            .read(|sm| crate::api::admin::tokens::list(sm, now));
        Ok(Response::new(v1::ListTokensResponse { tokens }))
    }

    #[instrument(skip_all, fields(token_id = %request.get_ref().id))]
    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::TokenInfo>, Status> {
        crate::api::admin::tokens::token_id("revoke_token.id", &request.get_ref().id)?;
        forward_or_barrier!(self, request, revoke_token);
        Ok(Response::new(
            crate::api::admin::tokens::revoke(
                &self.shared,
                &request.get_ref().id,
                &audit::record(&request, "token revoke"),
            )
            .await?,
        ))
    }

    type SaveSnapshotStream = backup::SnapshotStream;

    #[instrument(skip_all)]
    async fn save_snapshot(
        &self,
        request: Request<v1::SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        if let Some((mut client, route)) = self.leader_client(&request)? {
            let forwarded = forwarded_request(self.shared.config.id, request.into_inner());
            let answer = relay(
                &self.shared,
                &self.leader,
                &route,
                client.save_snapshot(forwarded),
            )
            .await?;
            return Ok(Response::new(Box::pin(answer.into_inner())));
        }
        self.barrier().await?;
        let caller =
            crate::api::authz::caller(&request).map_or_else(|| "unknown".to_owned(), |id| id.to_string());
        Ok(Response::new(backup::save(&self.shared, &caller)))
    }

    #[instrument(skip_all)]
    async fn what_if(
        &self,
        request: Request<v1::WhatIfRequest>,
    ) -> Result<Response<v1::WhatIfResponse>, Status> {
        what_if::check(request.get_ref())?;
        forward_or_barrier!(self, request, what_if);
        Ok(Response::new(self.answer_what_if(request.get_ref()).await?))
    }
}

/// Events after `after_index` as they are recorded (polled from the
/// replicated state, so any controller can serve a follow).
pub type EventStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::Event, Status>> + Send>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LivenessConfig;
    use crate::state::State;
    use crate::state::command::tests::facts;
    use crate::state::command::{Command, HostState};

    fn machine(ids: &[&str]) -> State {
        let mut sm = State::new();
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
