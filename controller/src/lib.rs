//! rpool controller: the durable host registry, host liveness, and the agent
//! and admin gRPC APIs.
//!
//! This issue runs one controller; the structure is the one Raft will slot
//! into (see [`node`]).
//!
//! # Modules
//!
//! - [`config`]: `controller.toml`, defaults and validation.
//! - [`command`]: state-machine commands and records (own serde types, plus
//!   conversions to and from `rpool_proto::v1`).
//! - [`state`]: the deterministic state machine (`plan` / `commit` / `apply`).
//! - [`store`]: sled persistence (one batch + flush per command).
//! - [`node`]: the single writer that orders, persists and acknowledges
//!   commands; readers take snapshots through its handle.
//! - [`liveness`]: in-memory heartbeats and the pure suspect/down decision,
//!   plus the ticker that proposes it.
//! - [`validate`]: validation of every agent and admin message.
//! - [`agent_service`]: `AgentService.Session`, one stream per agent.
//! - [`admin_service`]: `AdminService` (`Status`, `ListHosts`, `GetHost`).
//!
//! # Main loop ([`run`])
//!
//! 1. Open sled at `{data_dir}/state` and rebuild the state machine.
//! 2. Start the writer task ([`node::spawn`]) and the liveness ticker, which
//!    every 100 ms proposes suspect/down transitions for silent hosts (hosts
//!    from the store get a full grace period from start).
//! 3. Serve `AgentService` and `AdminService` on the given listener (HTTP/2
//!    keep-alive 10 s / 20 s, 4 MiB max message). Sessions validate,
//!    record heartbeats in memory and propose only state changes.
//! 4. When `shutdown` resolves: close agent sessions (`UNAVAILABLE`), stop
//!    the server (bounded by [`SHUTDOWN_GRACE`]), stop the ticker, let the
//!    writer answer what is queued, flush sled, return.
//!
//! If the store fails, the writer stops, and `run` shuts down and returns
//! the error: a controller that cannot persist must not acknowledge.

pub mod admin_service;
pub mod agent_service;
pub mod command;
pub mod config;
pub mod liveness;
pub mod node;
pub mod state;
pub mod store;
pub mod validate;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rpool_proto::v1::admin_service_server::AdminServiceServer;
use rpool_proto::v1::agent_service_server::AgentServiceServer;
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
/// Largest gRPC message accepted.
pub const MAX_DECODING_MESSAGE_BYTES: usize = 4 << 20;
/// How long the server may take to close connections after shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every service shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) node: node::NodeHandle,
    pub(crate) liveness: Arc<Mutex<liveness::Liveness>>,
    pub(crate) started: Instant,
    /// Turns true when the controller shuts down.
    pub(crate) shutdown: watch::Receiver<bool>,
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
    let started = Instant::now();

    // 1. Store and state.
    let data_dir = config.data_dir.clone();
    let (store, state) = tokio::task::spawn_blocking(move || {
        let store = store::Store::open(&data_dir)?;
        let state = store.load()?;
        Ok::<_, store::StoreError>((store, state))
    })
    .await
    .context("opening the state store")??;
    info!(
        id = config.id,
        data_dir = %store.path().display(),
        applied_index = state.applied_index(),
        hosts = state.hosts().len(),
        "state loaded"
    );

    // 2. Writer and ticker.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (node_stop_tx, node_stop_rx) = watch::channel(false);
    let known_hosts = state.hosts().len();
    let (node, mut node_task) = node::spawn(store, state, node_stop_rx);
    let live = liveness::Liveness::new(config.liveness, started);
    liveness::log_grace(&live, known_hosts);
    let live = Arc::new(Mutex::new(live));
    let ticker = tokio::spawn(liveness::run_ticker(node.clone(), live.clone(), stop_rx.clone()));

    // 3. Serve.
    let shared = Arc::new(Shared {
        config,
        node,
        liveness: live,
        started,
        shutdown: stop_rx.clone(),
    });
    let agent = AgentServiceServer::new(agent_service::AgentSvc::new(shared.clone()))
        .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES);
    let admin = AdminServiceServer::new(admin_service::AdminSvc::new(shared.clone()))
        .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut server_stop = stop_rx.clone();
    let server = Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .add_service(agent)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming, async move { stopped(&mut server_stop).await });
    tokio::pin!(server);
    tokio::pin!(shutdown);

    let mut server_result = None;
    let mut node_result = None;
    tokio::select! {
        r = &mut server => server_result = Some(r),
        r = &mut node_task => node_result = Some(r),
        () = &mut shutdown => info!("shutting down"),
    }

    // 4. Stop: sessions and ticker first, then the server (bounded), then the writer.
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
    drop(shared);
    node_stop_tx.send_replace(true);
    let node_result = match node_result {
        Some(r) => r,
        None => node_task.await,
    };

    node_result
        .context("the state machine writer panicked")?
        .context("the state store failed")?;
    if let Some(r) = server_result {
        r.context("the gRPC server failed")?;
    }
    info!("controller stopped");
    Ok(())
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
    use crate::validate::tests::{ID, good_heartbeat, good_hello};

    struct Running {
        addr: String,
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    async fn start(dir: &std::path::Path) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let mut config = Config {
            data_dir: dir.to_owned(),
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
        Running { addr, stop, task }
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
        let mut client = AgentServiceClient::connect(addr.to_owned()).await.unwrap();
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
        let mut admin = AdminServiceClient::connect(addr.to_owned()).await.unwrap();
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
        let mut admin = AdminServiceClient::connect(running.addr.clone()).await.unwrap();
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

        // A repeated sequence number ends the stream with INVALID_ARGUMENT.
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
        let mut admin = AdminServiceClient::connect(running.addr.clone()).await.unwrap();
        let status = admin.status(v1::StatusRequest {}).await.unwrap().into_inner();
        assert_eq!((status.hosts_total, status.applied_index), (0, 0));
        running.shutdown().await;
    }
}
