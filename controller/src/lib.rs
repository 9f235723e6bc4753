//! rpool controller: the replicated host registry, host liveness, and the
//! agent, admin and Raft gRPC APIs.
//!
//! Controllers form a Raft group (raft-rs; three or five in production, one
//! is allowed). Every state change is a [`state::command::Command`]
//! committed by a quorum (durable in each replica's write-ahead log) and
//! applied by every replica to the same deterministic state machine,
//! persisted in sled. Only the leader keeps agent sessions and
//! judges liveness; followers relay agent sessions to it (`api::relay`) and forward admin requests.
//!
//! # Modules
//!
//! Grouped by concern; the arrows run one way (`api` → `leader` →
//! `policy` → `state`), checked by `controller/tests/layers.rs`.
//!
//! - [`config`]: `controller.toml`, defaults and validation.
//! - [`state`]: the replicated state machine and its records (pure:
//!   commands, pools, tasks, events, tokens, `plan` / `commit` / `apply`).
//! - [`policy`]: pure decisions, time as an argument (placement, planner,
//!   healing, autoscaling).
//! - [`replica`]: the handle everything else uses (propose, read, read
//!   barrier, who leads), the state as Raft drives it, sled persistence.
//! - [`raft`]: the write-ahead log, the replica task and the peer transport.
//! - [`leader`]: the loops that act only while leading (liveness, task
//!   dispatch, autoscaler, webhook).
//! - [`api`]: the gRPC services (admin, agent, enroll), authorization,
//!   forwarding to the leader, validation, the status mapping.
//! - [`kube`]: pure building blocks for real clusters (versions, networks,
//!   kubeadm files, addon manifests).
//! - [`metrics`]: the Prometheus `/metrics` endpoint (`[metrics] listen`).
//!
//! # Main loop ([`run`])
//!
//! 1. Open sled at `{data_dir}/state`, rebuild the applied state, open and
//!    check the Raft log at `{data_dir}/raft`.
//! 2. Start the Raft replica (bootstrapping the initial group from
//!    `peers` on first start), the peer transport, the task that keeps the
//!    transport's peer list in line with the membership, and the liveness
//!    ticker (active only while leading; every new term starts a full grace
//!    period).
//! 3. Serve `AgentService`, `AdminService` and `RaftService` on the given
//!    listener: mutual TLS only, every request authorized by [`api::authz`]
//!    first (HTTP/2 keep-alive, message size limits).
//! 4. When `shutdown` resolves: close agent sessions, stop the server
//!    (bounded by [`SHUTDOWN_GRACE`]), stop the ticker and the replica
//!    (which syncs sled), return.
//!
//! If the store fails, the replica stops, and `run` shuts down and returns
//! the error: a controller that cannot persist must not acknowledge.

pub mod api;
pub mod config;
pub mod kube;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod raft;
pub mod replica;
pub mod state;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use rpool_proto::v1::admin_service_server::AdminServiceServer;
use rpool_proto::v1::agent_service_server::AgentServiceServer;
use rpool_proto::v1::raft_service_server::RaftServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

pub use config::Config;

/// HTTP/2 keep-alive ping interval.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// HTTP/2 keep-alive ping timeout.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// HTTP/2 streams the listener admits at once on one connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1_024;
/// Largest agent or admin message accepted.
pub const MAX_DECODING_MESSAGE_BYTES: usize = 4 << 20;
/// How long the server may take to close connections after shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every service shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) node: replica::NodeHandle,
    pub(crate) liveness: Arc<Mutex<leader::liveness::Liveness>>,
    pub(crate) started: Instant,
    /// Turns true when the controller shuts down.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Agent sessions' outbound queues, for task delivery.
    pub(crate) links: leader::dispatch::Links,
    /// Autoscaling windows and latest judgements (leader memory).
    pub(crate) autoscale: Mutex<leader::autoscaler::AutoscaleTracker>,
    /// This controller's TLS material (server config, and client config
    /// for calls to other controllers).
    pub(crate) tls: rpool_proto::tls::TlsMaterial,
}

impl Shared {
    /// Address of controller `id`: from replicated membership changes,
    /// else from the initial group in the config.
    pub(crate) fn address_of(&self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if id == self.config.id {
            return Some(self.config.advertised());
        }
        self.node
            .read(|sm| sm.members().get(&id).cloned())
            .or_else(|| self.config.initial_members().get(&id).cloned())
    }
}

/// Every member's address: the initial group overlaid with replicated
/// membership changes, restricted to the current voters and learners.
pub(crate) fn member_addresses(config: &Config, node: &replica::NodeHandle) -> BTreeMap<u64, String> {
    let status = node.status();
    let mut known = config.initial_members();
    node.read(|sm| known.extend(sm.members().iter().map(|(id, a)| (*id, a.clone()))));
    let members: Vec<u64> = status.voters.iter().chain(&status.learners).copied().collect();
    // A new controller knows no membership until the leader's snapshot
    // arrives: it must still be able to answer the group it was told of.
    if !members.is_empty() {
        known.retain(|id, _| members.contains(id));
    }
    known
}

/// True when `error` (as `run` returns it) means this controller's data
/// failed a check: restarting cannot help, the member must be replaced
/// (the binary exits 65, which the systemd unit does not restart).
pub fn is_damaged_data(error: &anyhow::Error) -> bool {
    use raft::log_store::LogError;
    use raft::node::NodeError;
    error.chain().any(|e| {
        matches!(e.downcast_ref::<LogError>(), Some(LogError::Damaged { .. }))
            || matches!(
                e.downcast_ref::<replica::restore::RestoreError>(),
                Some(replica::restore::RestoreError::Interrupted(_))
            )
            || matches!(
                e.downcast_ref::<NodeError>(),
                Some(NodeError::Log(LogError::Damaged { .. }) | NodeError::Mismatch(_))
            )
    })
}

/// Resolves once `flag` is true (or its sender is gone). Holds no lock
/// across an await, unlike `watch::Receiver::wait_for`'s guard.
pub(crate) async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}

/// Runs the controller on `listener` until `shutdown` resolves, then stops
/// cleanly (sled flushed). `config` should already be validated; it is
/// checked again and rejected if not.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate().context("invalid configuration")?;
    rpool_proto::tls::install_crypto_provider();
    let tls = config
        .tls
        .load(config.id)
        .map_err(anyhow::Error::msg)
        .context("loading the TLS files ([tls])")?;
    let started = Instant::now();
    let metrics_listener = metrics::bind(&config).await?;
    let webhook_client = leader::webhook::prepare(&config.webhook)?;

    // 0. A disk that filled up: write nothing until there is room again
    // (see `replica::disk`).
    tokio::pin!(shutdown);
    let mut waiting_since: Option<Instant> = None;
    loop {
        match replica::disk::free_bytes(&config.data_dir) {
            Ok(free) if free >= replica::disk::MIN_FREE_BYTES => break,
            Ok(free) => {
                if waiting_since.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    warn!(
                        data_dir = %config.data_dir.display(),
                        free_bytes = free,
                        need_bytes = replica::disk::MIN_FREE_BYTES,
                        "the data dir's disk is full: waiting for free space before starting (nothing is written)"
                    );
                    waiting_since = Some(Instant::now());
                }
            }
            Err(e) => {
                warn!(data_dir = %config.data_dir.display(), error = %e, "cannot read the free space of the data dir; going on");
                break;
            }
        }
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(replica::disk::SPACE_POLL) => {}
        }
    }
    // 1. Not over a restore that was cut short.
    replica::restore::check_not_interrupted(&config.data_dir)?;

    // 2. Raft replica, transport, membership sync, liveness ticker.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (node_stop_tx, node_stop_rx) = watch::channel(false);
    let state = Arc::new(RwLock::new(crate::state::State::new()));
    let members = config.initial_members();
    let transport = raft::transport::GrpcTransport::new(config.id, &members, tls.clone());
    let mut raft_config = raft::node::RaftConfig::new(
        config.id,
        if config.joins_existing_group() {
            Vec::new()
        } else {
            members.keys().copied().collect()
        },
        &config.data_dir,
    );
    raft_config.tick_ms = config.raft.tick_ms;
    raft_config.heartbeat_tick = config.raft.heartbeat_ticks as usize;
    raft_config.election_tick = config.raft.election_ticks as usize;
    raft_config.snapshot_every = config.raft.snapshot_every;
    raft_config.preallocate_bytes = config.raft.preallocate_mib << 20;
    // The log rebuilds the state (snapshot file, then the committed
    // entries after it) before the replica starts.
    let (raft_handle, mut node_task) = raft::node::start(
        raft_config,
        replica::apply::Replicated::new(state.clone()),
        transport.clone(),
        raft::logger(config.id),
        node_stop_rx,
    )
    .context("starting the raft replica")?;
    {
        let state = state.read().unwrap_or_else(|e| e.into_inner());
        info!(
            id = config.id,
            data_dir = %config.data_dir.display(),
            applied_index = state.applied_index(),
            hosts = state.hosts().len(),
            "state loaded"
        );
    }
    {
        let report = raft_handle.clone();
        transport.on_event(move |event| match event {
            raft::transport::PeerEvent::Unreachable(peer) => report.report_unreachable(peer),
            raft::transport::PeerEvent::Lost(peer) => report.report_lost(peer),
            raft::transport::PeerEvent::SnapshotSent(peer, ok) => report.report_snapshot(peer, ok),
            raft::transport::PeerEvent::Refused(refusal) => report.report_refused(refusal),
        });
    }
    let node = replica::NodeHandle::new(raft_handle, state);
    let sync = tokio::spawn(sync_peers(
        config.clone(),
        node.clone(),
        transport.clone(),
        stop_rx.clone(),
    ));
    let live = Arc::new(Mutex::new(leader::liveness::Liveness::new(
        config.liveness,
        started,
    )));
    let ticker = tokio::spawn(leader::liveness::run_ticker(
        node.clone(),
        live.clone(),
        stop_rx.clone(),
    ));

    // 3. Serve.
    let shared = Arc::new(Shared {
        config,
        node: node.clone(),
        liveness: live,
        started,
        shutdown: stop_rx.clone(),
        links: leader::dispatch::Links::default(),
        autoscale: Default::default(),
        tls: tls.clone(),
    });
    let planner = tokio::spawn(leader::dispatch::run(shared.clone()));
    let metrics_server = metrics::start(metrics_listener, shared.clone());
    let webhook = leader::webhook::start(webhook_client, shared.clone());
    let agents = api::agent::AgentSvc::new(shared.clone());
    let relay = rpool_proto::v1::relay_service_server::RelayServiceServer::new(api::relay::RelaySvc::new(
        agents.clone(),
        stop_rx.clone(),
    ))
    .max_decoding_message_size(api::relay::MAX_RELAY_MESSAGE_BYTES)
    .max_encoding_message_size(api::relay::MAX_RELAY_MESSAGE_BYTES);
    let agent = AgentServiceServer::new(agents).max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES);
    let enroll = rpool_proto::v1::enroll_service_server::EnrollServiceServer::new(
        api::enroll::EnrollSvc::new(shared.clone()),
    )
    .max_decoding_message_size(api::enroll::MAX_MESSAGE_BYTES);
    let admin = AdminServiceServer::new(api::admin::AdminSvc::new(shared.clone()))
        .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES);
    let peers = RaftServiceServer::new(raft::transport::RaftPeerService::new(
        node.raft().clone(),
        stop_rx.clone(),
    ))
    .max_decoding_message_size(raft::transport::MAX_RAFT_MESSAGE_BYTES);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut server_stop = stop_rx.clone();
    let server = Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        // One connection carries one agent session, one Raft or relay
        // stream, or a follower's forwarded admin calls (api::forward):
        // a bound on a client that opens streams without end, far above
        // what any of them needs.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .initial_connection_window_size(Some(api::relay::RELAY_CONNECTION_WINDOW))
        // Mutual TLS only; client certificates optional at the handshake
        // (enrollment), required per service by the authorization layer.
        .tls_config(tls.server_tls())
        .context("configuring TLS")?
        .layer(api::authz::AuthzLayer)
        .add_service(agent)
        .add_service(admin)
        .add_service(enroll)
        .add_service(peers)
        .add_service(relay)
        .serve_with_incoming_shutdown(incoming, async move { stopped(&mut server_stop).await });
    tokio::pin!(server);

    let mut server_result = None;
    let mut node_result = None;
    tokio::select! {
        r = &mut server => server_result = Some(r),
        r = &mut node_task => node_result = Some(r),
        () = &mut shutdown => info!("shutting down"),
    }

    // 4. Stop: sessions and ticker first, then the server (bounded), then the replica.
    stop_tx.send_replace(true);
    if server_result.is_none() {
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
            Ok(r) => server_result = Some(r),
            Err(_) => warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "connections still open after the shutdown grace period; closing them"
            ),
        }
    }
    if let Err(e) = ticker.await {
        warn!(error = %e, "liveness ticker panicked");
    }
    let _ = sync.await;
    let _ = planner.await;
    let _ = webhook.await;
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    drop(shared);
    node_stop_tx.send_replace(true);
    let node_result = match node_result {
        Some(r) => r,
        None => node_task.await,
    };
    node_result
        .context("the raft replica panicked")?
        .context("the raft replica failed")?;
    if let Some(r) = server_result {
        r.context("the gRPC server failed")?;
    }
    info!("controller stopped");
    Ok(())
}

/// Keeps the transport's peers equal to the current membership (addresses
/// from the config and from replicated membership changes).
async fn sync_peers(
    config: Config,
    node: replica::NodeHandle,
    transport: Arc<raft::transport::GrpcTransport>,
    mut stop: watch::Receiver<bool>,
) {
    let mut status = node.raft().watch_status();
    let mut current = config.initial_members();
    loop {
        let wanted = member_addresses(&config, &node);
        if wanted != current {
            for id in current.keys().filter(|id| !wanted.contains_key(id)) {
                transport.remove_peer(*id);
            }
            for (id, address) in &wanted {
                transport.set_peer(*id, address);
            }
            info!(members = ?wanted, "controller group changed");
            current = wanted;
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() { return },
            _ = stopped(&mut stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    //! In-process tests of the whole controller over real gRPC on loopback.

    use std::time::Duration;

    use rpool_proto::v1::admin_service_client::AdminServiceClient;
    use rpool_proto::v1::agent_message::Msg;
    use rpool_proto::v1::agent_service_client::AgentServiceClient;
    use rpool_proto::v1::{self, AgentMessage, ControllerMessage};
    use tokio::sync::{mpsc, oneshot};
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::Streaming;

    use super::*;

    #[test]
    fn damaged_data_is_told_apart_from_other_failures() {
        use crate::raft::log_store::LogError;
        use crate::raft::node::NodeError;
        let damaged = || LogError::Damaged {
            path: "/var/lib/rpool/raft/0001.wal".into(),
            detail: "checksum mismatch".into(),
        };
        let wrapped = anyhow::Error::new(NodeError::Log(damaged())).context("the raft replica stopped");
        assert!(is_damaged_data(&wrapped));
        assert!(is_damaged_data(&anyhow::Error::new(damaged()).context("opening")));
        assert!(is_damaged_data(&anyhow::Error::new(NodeError::Mismatch(
            "applied 9 > last 4".into()
        ))));
        assert!(!is_damaged_data(&anyhow::anyhow!(
            "binding 127.0.0.1:7443: address in use"
        )));
        assert!(!is_damaged_data(&anyhow::Error::new(NodeError::Log(
            LogError::Missing(4)
        ))));
        assert!(is_damaged_data(
            &anyhow::Error::new(crate::replica::restore::RestoreError::Interrupted("/d".into()))
                .context("starting")
        ));
    }
    use crate::api::validate::tests::{ID, good_heartbeat, good_hello};

    struct Running {
        addr: String,
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    /// One CA for every test of this process: a controller-1 certificate
    /// (127.0.0.1), an admin and an agent certificate (for validate's `ID`).
    struct TestPki {
        ca: String,
        controller: rpool_proto::pki::Issued,
        admin: rpool_proto::tls::TlsMaterial,
        agent: rpool_proto::tls::TlsMaterial,
    }

    fn test_pki() -> &'static TestPki {
        use rpool_proto::pki::{Ca, Identity};
        static PKI: std::sync::OnceLock<TestPki> = std::sync::OnceLock::new();
        PKI.get_or_init(|| {
            let ca = Ca::generate("rpool test CA").unwrap();
            let day = Duration::from_secs(86_400);
            let material = |id: Identity| {
                let issued = ca.issue(&id, &[], day).unwrap();
                rpool_proto::tls::TlsMaterial::from_pem(ca.cert_pem(), &issued.cert_pem, &issued.key_pem)
                    .unwrap()
            };
            TestPki {
                ca: ca.cert_pem().to_owned(),
                controller: ca
                    .issue(&Identity::Controller(1), &["127.0.0.1".into()], day)
                    .unwrap(),
                admin: material(Identity::Admin("test".into())),
                agent: material(Identity::Agent(ID.to_owned())),
            }
        })
    }

    /// Writes the controller's TLS files under `dir/pki`.
    fn write_tls(dir: &std::path::Path) -> config::TlsConfig {
        let pki = test_pki();
        let tls = config::TlsConfig {
            ca: dir.join("pki/ca.crt"),
            cert: dir.join("pki/controller.crt"),
            key: dir.join("pki/controller.key"),
            ca_key: dir.join("pki/ca.key"),
            ..Default::default()
        };
        rpool_proto::pki::write_public(&tls.ca, pki.ca.as_bytes()).unwrap();
        rpool_proto::pki::write_public(&tls.cert, pki.controller.cert_pem.as_bytes()).unwrap();
        rpool_proto::pki::write_private(&tls.key, pki.controller.key_pem.as_bytes()).unwrap();
        tls
    }

    async fn admin_client(
        addr: &str,
    ) -> Result<AdminServiceClient<tonic::transport::Channel>, tonic::transport::Error> {
        let channel = test_pki().admin.endpoint(addr).unwrap().connect().await?;
        Ok(AdminServiceClient::new(channel))
    }

    async fn start(dir: &std::path::Path) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut config = Config {
            data_dir: dir.to_owned(),
            tls: write_tls(dir),
            ..Config::default()
        };
        config.liveness.heartbeat_interval_ms = 100;
        // Short enough to see a host go down quickly, long enough that a
        // loaded machine does not mark a just-reconnected host suspect
        // before the test looks at it.
        config.liveness.suspect_after_ms = 1_000;
        config.liveness.down_after_ms = 1_500;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, listener, async {
            let _ = stopped.await;
        }));
        // Bounded wait until it leads and has applied its term's first entry.
        for _ in 0..200 {
            if let Ok(mut admin) = admin_client(&addr).await
                && let Ok(status) = admin.status(v1::StatusRequest {}).await
                && status.get_ref().role == "leader"
                && status.get_ref().applied_index >= status.get_ref().commit_index
                && status.get_ref().applied_index > 0
            {
                return Running { addr, stop, task };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the controller did not start leading within 5s");
    }

    impl Running {
        async fn shutdown(self) {
            let _ = self.stop.send(());
            tokio::time::timeout(Duration::from_secs(10), self.task)
                .await
                .expect("run returns within the grace period")
                .unwrap()
                .unwrap();
        }
    }

    struct Session {
        tx: mpsc::Sender<AgentMessage>,
        rx: Streaming<ControllerMessage>,
    }

    async fn open(addr: &str, hello: v1::Hello) -> Session {
        let channel = test_pki().agent.endpoint(addr).unwrap().connect().await.unwrap();
        let mut client = AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(8);
        tx.send(AgentMessage {
            msg: Some(Msg::Hello(hello)),
        })
        .await
        .unwrap();
        let rx = client
            .session(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Session { tx, rx }
    }

    impl Session {
        async fn next(&mut self) -> Result<Option<ControllerMessage>, tonic::Status> {
            tokio::time::timeout(Duration::from_secs(10), self.rx.message())
                .await
                .expect("controller answers in time")
        }
        async fn heartbeat(&self, hb: v1::Heartbeat) {
            let _ = self
                .tx
                .send(AgentMessage {
                    msg: Some(Msg::Heartbeat(hb)),
                })
                .await;
        }
    }

    async fn host_state(addr: &str) -> (i32, bool, String) {
        let mut admin = admin_client(addr).await.unwrap();
        let host = admin
            .get_host(v1::GetHostRequest {
                host_id: ID[..8].to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        (host.state, host.connected, host.state_reason)
    }

    async fn wait_for_state(addr: &str, state: v1::HostState) -> String {
        for _ in 0..100 {
            let (s, _, reason) = host_state(addr).await;
            if s == state as i32 {
                return reason;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("host never reached {state:?}");
    }

    #[tokio::test]
    async fn an_agent_registers_heartbeats_goes_down_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let running = start(dir.path()).await;

        let mut session = open(&running.addr, good_hello()).await;
        let welcome = match session.next().await.unwrap().unwrap().msg {
            Some(v1::controller_message::Msg::Welcome(w)) => w,
            other => panic!("expected a welcome, got {other:?}"),
        };
        assert_eq!(welcome.controller_id, "1");
        assert_eq!(
            (
                welcome.heartbeat_interval_ms,
                welcome.suspect_after_ms,
                welcome.down_after_ms
            ),
            (100, 1_000, 1_500)
        );

        session.heartbeat(good_heartbeat(1)).await;
        let mut admin = admin_client(&running.addr).await.unwrap();
        let status = admin.status(v1::StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(status.controller_id, "1");
        assert_eq!(status.leader_id, "1");
        assert_eq!(status.hosts_total, 1);
        assert_eq!(status.hosts_by_state["ready"], 1);
        assert_eq!(status.agents_connected, 1);
        let list = admin
            .list_hosts(v1::ListHostsRequest {
                state: "ready".into(),
                zone: "a".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.hosts.len(), 1);
        assert!(list.hosts[0].connected);
        let err = admin
            .list_hosts(v1::ListHostsRequest {
                state: "gone".into(),
                zone: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = admin
            .get_host(v1::GetHostRequest {
                host_id: "ffff".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (tonic::Code::NotFound, "no host with id ffff")
        );

        // The heartbeat was acknowledged; repeating its sequence number
        // ends the stream with INVALID_ARGUMENT.
        match session.next().await.unwrap().and_then(|m| m.msg) {
            Some(v1::controller_message::Msg::HeartbeatAck(ack)) => assert_eq!(ack.seq, 1),
            other => panic!("expected a heartbeat ack, got {other:?}"),
        }
        session.heartbeat(good_heartbeat(1)).await;
        let err = session.next().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().starts_with("heartbeat.seq: 1 is out of range"),
            "{}",
            err.message()
        );

        // Silence: suspect, then down, with the reason.
        let reason = wait_for_state(&running.addr, v1::HostState::Down).await;
        assert!(reason.starts_with("no heartbeat for 1."), "{reason}");

        // Coming back makes it ready again.
        let mut back = open(&running.addr, good_hello()).await;
        assert!(back.next().await.unwrap().is_some());
        let (state, connected, reason) = host_state(&running.addr).await;
        assert_eq!(
            (state, connected, reason.as_str()),
            (v1::HostState::Ready as i32, true, "agent reconnected")
        );

        // A newer session replaces the older one.
        let mut newer = open(&running.addr, good_hello()).await;
        assert!(newer.next().await.unwrap().is_some());
        let err = back.next().await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (tonic::Code::Aborted, "replaced by a newer session")
        );

        // Shutdown closes the open session and returns.
        running.shutdown().await;
        let err = newer.next().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);

        // Restart: the host is still known (and gets a grace period).
        let running = start(dir.path()).await;
        let (state, connected, _) = host_state(&running.addr).await;
        assert_eq!((state, connected), (v1::HostState::Ready as i32, false));
        running.shutdown().await;
    }

    #[tokio::test]
    async fn an_invalid_hello_is_rejected_and_registers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let running = start(dir.path()).await;
        let mut hello = good_hello();
        hello
            .facts
            .as_mut()
            .unwrap()
            .inventory
            .as_mut()
            .unwrap()
            .logical_cores = 1_000_000_000;
        let mut session = open(&running.addr, hello).await;
        let err = session.next().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            err.message(),
            "hello.facts.inventory.logical_cores: 1000000000 is out of range (accepted 1..=4096)"
        );
        let mut admin = admin_client(&running.addr).await.unwrap();
        let status = admin.status(v1::StatusRequest {}).await.unwrap().into_inner();
        // Index 1 is the leader's empty entry of its first term; nothing else.
        assert_eq!((status.hosts_total, status.applied_index), (0, 1));
        running.shutdown().await;
    }
}
