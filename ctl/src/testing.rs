//! An in-process fake `AdminService` for command tests: records every
//! request and answers with canned data, or with a given error.
//!
//! Pools: `GetPool` answers from a script (one answer per call, the last
//! one repeated) so waits can be driven through phases; `WatchEvents`
//! streams the canned events after `after_index`, then ends the stream
//! (a broken stream, for reconnect tests).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpool_proto::v1::admin_service_server::{AdminService, AdminServiceServer};
use rpool_proto::v1::*;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::client::{self, Controller as Client};

/// One CA per test process: writes the admin files into a temp dir,
/// points [`client::use_tls`] at them, and returns the fake controller's
/// server config (127.0.0.1).
pub fn test_tls() -> tonic::transport::ServerTlsConfig {
    use rpool_proto::pki::{Ca, Identity};
    struct Pki {
        _dir: tempfile::TempDir,
        files: rpool_proto::tls::TlsFiles,
        server: rpool_proto::tls::TlsMaterial,
    }
    static PKI: std::sync::OnceLock<Pki> = std::sync::OnceLock::new();
    let pki = PKI.get_or_init(|| {
        let ca = Ca::generate("ctl test CA").unwrap();
        let ttl = Duration::from_secs(3600);
        let dir = tempfile::tempdir().unwrap();
        let files = rpool_proto::tls::TlsFiles::in_dir(dir.path(), "admin");
        let admin = ca.issue(&Identity::Admin("test".into()), &[], ttl).unwrap();
        rpool_proto::pki::write_public(&files.ca, ca.cert_pem().as_bytes()).unwrap();
        rpool_proto::pki::write_public(&files.cert, admin.cert_pem.as_bytes()).unwrap();
        rpool_proto::pki::write_private(&files.key, admin.key_pem.as_bytes()).unwrap();
        let server = ca
            .issue(&Identity::Controller(1), &["127.0.0.1".into()], ttl)
            .unwrap();
        let server =
            rpool_proto::tls::TlsMaterial::from_pem(ca.cert_pem(), &server.cert_pem, &server.key_pem)
                .unwrap();
        Pki {
            _dir: dir,
            files,
            server,
        }
    });
    client::use_tls(Some(pki.files.clone()));
    pki.server.server_tls()
}

/// A request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Status,
    ListControllers,
    Add(AddControllerRequest),
    Remove(RemoveControllerRequest),
    Transfer(TransferLeaderRequest),
    SetLabels(SetHostLabelsRequest),
    CreatePool(CreatePoolRequest),
    ListPools,
    GetPool(String),
    ResizePool(ResizePoolRequest),
    DestroyPool(String),
    GetKubeconfig(String),
    ListEvents(ListEventsRequest),
    WatchEvents(ListEventsRequest),
    Other(&'static str),
}

#[derive(Clone, Default)]
pub struct Fake {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Answer every request with this error instead.
    pub fail: Option<Status>,
    pub controllers: Vec<Controller>,
    pub host: Host,
    /// `ListHosts` answer.
    pub hosts: Vec<Host>,
    /// `CreatePool` answer (the spec's name and sizes are copied in when
    /// this has no spec).
    pub pool: Pool,
    /// `GetPool` answers, one per call; the last is repeated. Empty: `pool`.
    pub get_pool: Arc<Mutex<VecDeque<Result<Pool, Status>>>>,
    /// `ResizePool` answers, one per call (dry run then real); the last is
    /// repeated. Empty: an answer built from `pool`.
    pub resize: Arc<Mutex<VecDeque<Result<ResizePoolResponse, Status>>>>,
    /// `ListPools` answer.
    pub pools: Vec<Pool>,
    /// `GetKubeconfig` answer.
    pub kubeconfig: String,
    /// `ListEvents` and `WatchEvents` source (filtered by pool and
    /// after_index; ListEvents keeps the newest `limit`).
    pub events: Arc<Mutex<Vec<Event>>>,
    /// `CreatePool` error, for failures of that call only.
    pub create_error: Option<Status>,
}

impl Fake {
    fn answer<T>(&self, seen: Seen, ok: T) -> Result<Response<T>, Status> {
        self.seen.lock().unwrap().push(seen);
        match &self.fail {
            Some(status) => Err(status.clone()),
            None => Ok(Response::new(ok)),
        }
    }

    fn list(&self) -> ListControllersResponse {
        ListControllersResponse {
            controllers: self.controllers.clone(),
            leader_id: 1,
        }
    }

    /// Queues `GetPool` answers.
    pub fn script_get_pool(&self, answers: impl IntoIterator<Item = Result<Pool, Status>>) {
        self.get_pool.lock().unwrap().extend(answers);
    }

    /// Queues `ResizePool` answers.
    pub fn script_resize(&self, answers: impl IntoIterator<Item = Result<ResizePoolResponse, Status>>) {
        self.resize.lock().unwrap().extend(answers);
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn next<T: Clone>(queue: &Mutex<VecDeque<Result<T, Status>>>) -> Option<Result<T, Status>> {
        let mut queue = queue.lock().unwrap();
        if queue.len() > 1 {
            queue.pop_front()
        } else {
            queue.front().cloned()
        }
    }

    fn matching_events(&self, r: &ListEventsRequest) -> Vec<Event> {
        let events = self.events.lock().unwrap();
        let matching: Vec<Event> = events
            .iter()
            .filter(|e| e.index > r.after_index && (r.pool.is_empty() || e.pool == r.pool))
            .filter(|e| r.kind.is_empty() || e.kind == r.kind)
            .cloned()
            .collect();
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        matching[matching.len().saturating_sub(limit)..].to_vec()
    }

    /// Serves on a free loopback port (mutual TLS with [`test_tls`]);
    /// returns a connected client.
    pub async fn serve(self) -> Client {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server_tls = test_tls();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .tls_config(server_tls)
                .unwrap()
                .add_service(AdminServiceServer::new(self))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        client::connect(&[address], Duration::from_secs(5)).await.unwrap()
    }
}

#[tonic::async_trait]
impl AdminService for Fake {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.answer(Seen::Status, StatusResponse::default())
    }
    async fn list_hosts(&self, _: Request<ListHostsRequest>) -> Result<Response<ListHostsResponse>, Status> {
        let hosts = ListHostsResponse {
            hosts: self.hosts.clone(),
        };
        self.answer(Seen::Other("ListHosts"), hosts)
    }
    async fn get_host(&self, _: Request<GetHostRequest>) -> Result<Response<Host>, Status> {
        self.answer(Seen::Other("GetHost"), self.host.clone())
    }
    async fn set_host_labels(&self, r: Request<SetHostLabelsRequest>) -> Result<Response<Host>, Status> {
        self.answer(Seen::SetLabels(r.into_inner()), self.host.clone())
    }
    async fn cordon_host(&self, _: Request<rpool_proto::v1::HostRequest>) -> Result<Response<Host>, Status> {
        self.answer(Seen::Other("CordonHost"), self.host.clone())
    }
    async fn uncordon_host(
        &self,
        _: Request<rpool_proto::v1::HostRequest>,
    ) -> Result<Response<Host>, Status> {
        self.answer(Seen::Other("UncordonHost"), self.host.clone())
    }
    async fn drain_host(
        &self,
        _: Request<rpool_proto::v1::DrainHostRequest>,
    ) -> Result<Response<rpool_proto::v1::DrainHostResponse>, Status> {
        let response = rpool_proto::v1::DrainHostResponse {
            host: Some(self.host.clone()),
            pool: String::new(),
            replacements: Vec::new(),
        };
        self.answer(Seen::Other("DrainHost"), response)
    }
    async fn list_controllers(
        &self,
        _: Request<ListControllersRequest>,
    ) -> Result<Response<ListControllersResponse>, Status> {
        self.answer(Seen::ListControllers, self.list())
    }
    async fn add_controller(
        &self,
        r: Request<AddControllerRequest>,
    ) -> Result<Response<ListControllersResponse>, Status> {
        self.answer(Seen::Add(r.into_inner()), self.list())
    }
    async fn remove_controller(
        &self,
        r: Request<RemoveControllerRequest>,
    ) -> Result<Response<ListControllersResponse>, Status> {
        self.answer(Seen::Remove(r.into_inner()), self.list())
    }
    async fn transfer_leader(
        &self,
        r: Request<TransferLeaderRequest>,
    ) -> Result<Response<ListControllersResponse>, Status> {
        self.answer(Seen::Transfer(r.into_inner()), self.list())
    }

    async fn create_pool(
        &self,
        r: Request<CreatePoolRequest>,
    ) -> Result<Response<CreatePoolResponse>, Status> {
        let request = r.into_inner();
        let mut pool = self.pool.clone();
        if pool.spec.is_none() {
            pool.spec = request.spec.clone();
        }
        if let Some(status) = &self.create_error {
            self.seen.lock().unwrap().push(Seen::CreatePool(request));
            return Err(status.clone());
        }
        self.answer(Seen::CreatePool(request), CreatePoolResponse { pool: Some(pool) })
    }
    async fn list_pools(&self, _: Request<ListPoolsRequest>) -> Result<Response<ListPoolsResponse>, Status> {
        let pools = ListPoolsResponse {
            pools: self.pools.clone(),
        };
        self.answer(Seen::ListPools, pools)
    }
    async fn get_pool(&self, r: Request<GetPoolRequest>) -> Result<Response<Pool>, Status> {
        let name = r.into_inner().name;
        match Self::next(&self.get_pool) {
            Some(Err(status)) => {
                self.seen.lock().unwrap().push(Seen::GetPool(name));
                Err(status)
            }
            Some(Ok(pool)) => self.answer(Seen::GetPool(name), pool),
            None => self.answer(Seen::GetPool(name), self.pool.clone()),
        }
    }
    async fn resize_pool(
        &self,
        r: Request<ResizePoolRequest>,
    ) -> Result<Response<ResizePoolResponse>, Status> {
        let request = r.into_inner();
        match Self::next(&self.resize) {
            Some(Err(status)) => {
                self.seen.lock().unwrap().push(Seen::ResizePool(request));
                Err(status)
            }
            Some(Ok(answer)) => self.answer(Seen::ResizePool(request), answer),
            None => {
                let answer = ResizePoolResponse {
                    before_cores: self.pool.worker_cores,
                    before_memory_bytes: self.pool.worker_memory_bytes,
                    after_cores: self.pool.worker_cores,
                    after_memory_bytes: self.pool.worker_memory_bytes,
                    pool: Some(self.pool.clone()),
                    ..ResizePoolResponse::default()
                };
                self.answer(Seen::ResizePool(request), answer)
            }
        }
    }
    async fn set_autoscale(
        &self,
        r: Request<rpool_proto::v1::SetAutoscaleRequest>,
    ) -> Result<Response<Pool>, Status> {
        let mut pool = self.pool.clone();
        pool.autoscale = r.into_inner().policy;
        self.answer(Seen::Other("SetAutoscale"), pool)
    }
    async fn create_token(
        &self,
        _: Request<rpool_proto::v1::CreateTokenRequest>,
    ) -> Result<Response<rpool_proto::v1::CreateTokenResponse>, Status> {
        Err(Status::unimplemented("tokens are tested end to end"))
    }
    async fn list_tokens(
        &self,
        _: Request<rpool_proto::v1::ListTokensRequest>,
    ) -> Result<Response<rpool_proto::v1::ListTokensResponse>, Status> {
        Err(Status::unimplemented("tokens are tested end to end"))
    }
    async fn revoke_token(
        &self,
        _: Request<rpool_proto::v1::RevokeTokenRequest>,
    ) -> Result<Response<rpool_proto::v1::TokenInfo>, Status> {
        Err(Status::unimplemented("tokens are tested end to end"))
    }
    async fn destroy_pool(&self, r: Request<DestroyPoolRequest>) -> Result<Response<Pool>, Status> {
        let mut pool = self.pool.clone();
        pool.phase = "deleting".into();
        self.answer(Seen::DestroyPool(r.into_inner().name), pool)
    }
    async fn get_kubeconfig(&self, r: Request<GetKubeconfigRequest>) -> Result<Response<Kubeconfig>, Status> {
        let content = Kubeconfig {
            content: self.kubeconfig.clone(),
        };
        self.answer(Seen::GetKubeconfig(r.into_inner().name), content)
    }
    async fn list_events(
        &self,
        r: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let request = r.into_inner();
        let events = ListEventsResponse {
            events: self.matching_events(&request),
        };
        self.answer(Seen::ListEvents(request), events)
    }

    type WatchEventsStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<Event, Status>> + Send>>;

    async fn watch_events(
        &self,
        r: Request<ListEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let request = r.into_inner();
        let events = self.matching_events(&ListEventsRequest {
            limit: 1000,
            ..request.clone()
        });
        let stream: Self::WatchEventsStream = Box::pin(tokio_stream::iter(events.into_iter().map(Ok)));
        self.answer(Seen::WatchEvents(request), stream)
    }

    type SaveSnapshotStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<rpool_proto::v1::SnapshotChunk, Status>> + Send>>;

    async fn save_snapshot(
        &self,
        _: Request<rpool_proto::v1::SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        Err(Status::unimplemented("backups are tested end to end"))
    }
    async fn what_if(
        &self,
        _: Request<rpool_proto::v1::WhatIfRequest>,
    ) -> Result<Response<rpool_proto::v1::WhatIfResponse>, Status> {
        Err(Status::unimplemented("what-if is tested end to end"))
    }

    async fn upgrade_pool(
        &self,
        _: Request<rpool_proto::v1::UpgradePoolRequest>,
    ) -> Result<Response<rpool_proto::v1::UpgradePoolResponse>, Status> {
        Err(Status::unimplemented("upgrades are tested end to end"))
    }
    async fn backup_pool(
        &self,
        _: Request<rpool_proto::v1::BackupPoolRequest>,
    ) -> Result<Response<rpool_proto::v1::PoolBackup>, Status> {
        Err(Status::unimplemented("pool backups are tested end to end"))
    }
    async fn list_pool_backups(
        &self,
        _: Request<rpool_proto::v1::ListPoolBackupsRequest>,
    ) -> Result<Response<rpool_proto::v1::ListPoolBackupsResponse>, Status> {
        Err(Status::unimplemented("pool backups are tested end to end"))
    }
    async fn set_pool_backup(
        &self,
        _: Request<rpool_proto::v1::SetPoolBackupRequest>,
    ) -> Result<Response<rpool_proto::v1::Pool>, Status> {
        Err(Status::unimplemented("pool backups are tested end to end"))
    }

    async fn renew_certs(
        &self,
        _: Request<rpool_proto::v1::RenewCertsRequest>,
    ) -> Result<Response<rpool_proto::v1::RenewCertsResponse>, Status> {
        Err(Status::unimplemented(
            "certificate renewals are tested end to end",
        ))
    }
}
