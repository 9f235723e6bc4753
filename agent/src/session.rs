//! The agent's side of `AgentService.Session`: connect, say Hello, wait for
//! the Welcome, heartbeat at the welcomed interval, and reconnect (rotating
//! through the configured controllers, with [`Backoff`]) when anything goes
//! wrong, until shutdown.

use std::time::Duration;

use rpool_proto::v1::agent_message::Msg as AgentMsg;
use rpool_proto::v1::agent_service_client::AgentServiceClient;
use rpool_proto::v1::controller_message::Msg as ControllerMsg;
use rpool_proto::v1::{AgentMessage, Heartbeat, Hello, Welcome};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::report::{Reporter, facts_changed};

/// TCP connect bound per attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings while connected (also while idle), and how long to wait for
/// their answer before declaring the connection dead.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// From sending the Hello to receiving the Welcome.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeats queued for sending; beyond this the controller is not reading
/// and a heartbeat is dropped (keep-alive will end a dead connection).
pub const OUTBOUND_QUEUE: usize = 4;
/// Largest controller message accepted.
pub const MAX_DECODING_MESSAGE_BYTES: usize = 4 << 20;
/// Accepted `Welcome.heartbeat_interval_ms` (the proto's range).
pub const HEARTBEAT_INTERVAL_MS_RANGE: (u32, u32) = (100, 60_000);
/// After shutdown, how long to wait for the controller to close the stream.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Why a session attempt ended.
#[derive(Debug)]
enum Ended {
    Shutdown,
    Lost { welcomed: bool, reason: Reason },
}

#[derive(Debug)]
enum Reason {
    Connect(tonic::transport::Error),
    Status(tonic::Status),
    NoWelcome,
    ClosedByController,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Connect(e) => {
                // The transport error chain repeats itself ("tcp connect
                // error: tcp connect error: ..."): print each text once.
                let mut text = format!("connect failed: {e}");
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    let part = s.to_string();
                    if !text.ends_with(&part) {
                        text.push_str(": ");
                        text.push_str(&part);
                    }
                    source = s.source();
                }
                f.write_str(&text)
            }
            Reason::Status(s) => write!(f, "{:?}: {}", s.code(), s.message()),
            Reason::NoWelcome => write!(f, "no Welcome within {}s", WELCOME_TIMEOUT.as_secs()),
            Reason::ClosedByController => f.write_str("stream closed by the controller"),
        }
    }
}

/// Resolves when shutdown was requested (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Runs sessions until `shutdown` turns true.
pub async fn run_sessions(
    config: &Config,
    host_id: &str,
    reporter: &mut Reporter,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(
        Duration::from_millis(config.reconnect.initial_backoff_ms),
        Duration::from_millis(config.reconnect.max_backoff_ms),
        fastrand::Rng::new(),
    );
    let mut index = 0usize;
    loop {
        let addr = &config.controllers[index];
        let (welcomed, reason) = match session(addr, host_id, reporter, &mut shutdown).await {
            Ended::Shutdown => return,
            Ended::Lost { welcomed, reason } => (welcomed, reason),
        };
        if welcomed {
            backoff.reset();
        }
        let rejected = matches!(&reason, Reason::Status(s) if s.code() == tonic::Code::InvalidArgument);
        if rejected {
            backoff.jump_to_max();
        }
        let delay = backoff.next_delay();
        let retry_in_ms = delay.as_millis() as u64;
        if rejected {
            let Reason::Status(s) = &reason else {
                unreachable!()
            };
            error!(controller = %addr, retry_in_ms, "controller rejected this agent's report: {}", s.message());
        } else if welcomed {
            info!(controller = %addr, retry_in_ms, reason = %reason, "disconnected");
        } else {
            warn!(controller = %addr, retry_in_ms, reason = %reason, "session failed");
        }
        index = (index + 1) % config.controllers.len();
        tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

/// One connection and stream, from connect to loss or shutdown.
async fn session(
    addr: &str,
    host_id: &str,
    reporter: &mut Reporter,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    let lost = |reason| Ended::Lost {
        welcomed: false,
        reason,
    };
    let endpoint = match endpoint(addr) {
        Ok(e) => e,
        Err(e) => return lost(Reason::Connect(e)),
    };
    let channel: Channel = tokio::select! {
        biased;
        _ = stopped(shutdown) => return Ended::Shutdown,
        r = endpoint.connect() => match r {
            Ok(c) => c,
            Err(e) => return lost(Reason::Connect(e)),
        },
    };
    info!(controller = %addr, "connected");
    let mut client = AgentServiceClient::new(channel).max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES);

    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    let first = reporter.sample();
    let mut sent_facts = first.facts.clone();
    let mut seq = 1u64;
    let hello = Hello {
        host_id: host_id.to_owned(),
        agent_version: rpool_proto::VERSION.to_owned(),
        facts: Some(first.facts),
        first_heartbeat: Some(Heartbeat {
            seq,
            sent_at_unix_ms: first.sent_at_unix_ms,
            utilization: Some(first.utilization),
            health: first.health,
            facts: None,
        }),
    };
    tx.try_send(AgentMessage {
        msg: Some(AgentMsg::Hello(hello)),
    })
    .expect("a new queue has room for the Hello");

    let opening = async {
        let mut inbound = client
            .session(ReceiverStream::new(rx))
            .await
            .map_err(Reason::Status)?
            .into_inner();
        loop {
            match inbound.message().await {
                Ok(Some(m)) => match m.msg {
                    Some(ControllerMsg::Welcome(w)) => return Ok((inbound, w)),
                    other => debug!(?other, "ignoring a message before the Welcome"),
                },
                Ok(None) => return Err(Reason::ClosedByController),
                Err(status) => return Err(Reason::Status(status)),
            }
        }
    };
    let (mut inbound, welcome): (_, Welcome) = tokio::select! {
        biased;
        _ = stopped(shutdown) => return Ended::Shutdown,
        r = tokio::time::timeout(WELCOME_TIMEOUT, opening) => match r {
            Ok(Ok(pair)) => pair,
            Ok(Err(reason)) => return lost(reason),
            Err(_) => return lost(Reason::NoWelcome),
        },
    };

    let (lo, hi) = HEARTBEAT_INTERVAL_MS_RANGE;
    let interval_ms = welcome.heartbeat_interval_ms.clamp(lo, hi);
    if interval_ms != welcome.heartbeat_interval_ms {
        warn!(
            controller = %addr,
            requested = welcome.heartbeat_interval_ms,
            used = interval_ms,
            "welcomed heartbeat interval out of range {lo}..={hi} ms; clamped"
        );
    }
    info!(
        controller = %addr,
        controller_id = %welcome.controller_id,
        heartbeat_interval_ms = interval_ms,
        "welcomed"
    );
    let period = Duration::from_millis(interval_ms as u64);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let lost = |reason| Ended::Lost {
        welcomed: true,
        reason,
    };
    loop {
        tokio::select! {
            biased;
            _ = stopped(shutdown) => {
                // End our half of the stream, then give the controller a
                // moment to see it before the connection is dropped.
                drop(tx);
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    while let Ok(Some(_)) = inbound.message().await {}
                })
                .await;
                info!(controller = %addr, "session closed for shutdown");
                return Ended::Shutdown;
            }
            m = inbound.message() => match m {
                Ok(Some(m)) => debug!(?m, "ignoring an unexpected controller message"),
                Ok(None) => return lost(Reason::ClosedByController),
                Err(status) => return lost(Reason::Status(status)),
            },
            _ = ticker.tick() => {
                seq += 1;
                let report = reporter.sample();
                let changed = facts_changed(&sent_facts, &report.facts);
                let facts = changed.then(|| report.facts.clone());
                let beat = AgentMessage {
                    msg: Some(AgentMsg::Heartbeat(Heartbeat {
                        seq,
                        sent_at_unix_ms: report.sent_at_unix_ms,
                        utilization: Some(report.utilization),
                        health: report.health,
                        facts,
                    })),
                };
                match tx.try_send(beat) {
                    Ok(()) => {
                        debug!(seq, with_facts = changed, "heartbeat sent");
                        if changed {
                            sent_facts = report.facts;
                        }
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        warn!(controller = %addr, seq, "controller is not reading; heartbeat dropped")
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        return lost(Reason::ClosedByController)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! A throwaway in-process controller: checks that the agent says Hello,
    //! heartbeats at the welcomed interval, resends facts when the simulated
    //! hardware changes, reconnects after the controller goes away, and
    //! closes its stream on shutdown.

    use super::*;
    use crate::config::{ReconnectConfig, SimulateConfig};
    use rpool_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
    use rpool_proto::v1::{ControllerMessage, Heartbeat};
    use std::net::SocketAddr;
    use std::pin::Pin;
    use tokio::net::TcpListener;
    use tokio::time::{Instant, timeout};
    use tokio_stream::Stream;
    use tokio_stream::wrappers::TcpListenerStream;

    const WAIT: Duration = Duration::from_secs(10);
    const INTERVAL_MS: u32 = 100;

    #[derive(Debug)]
    enum Event {
        Hello(Hello),
        Heartbeat(Heartbeat, Instant),
        /// The agent ended its half of the stream (`None`) or it broke.
        Ended(Option<tonic::Status>),
    }

    struct FakeController {
        events: mpsc::UnboundedSender<Event>,
        kill: watch::Receiver<bool>,
    }

    type Out = Pin<Box<dyn Stream<Item = Result<ControllerMessage, tonic::Status>> + Send>>;

    #[tonic::async_trait]
    impl AgentService for FakeController {
        type SessionStream = Out;

        async fn session(
            &self,
            request: tonic::Request<tonic::Streaming<AgentMessage>>,
        ) -> Result<tonic::Response<Out>, tonic::Status> {
            let mut inbound = request.into_inner();
            // Like a real controller: read the Hello before answering.
            match inbound.message().await? {
                Some(AgentMessage {
                    msg: Some(AgentMsg::Hello(h)),
                }) => {
                    self.events.send(Event::Hello(h)).unwrap();
                }
                other => {
                    return Err(tonic::Status::invalid_argument(format!(
                        "expected hello, got {other:?}"
                    )));
                }
            }
            let (out_tx, out_rx) = mpsc::channel(4);
            out_tx
                .send(Ok(ControllerMessage {
                    msg: Some(ControllerMsg::Welcome(Welcome {
                        controller_id: "7".into(),
                        heartbeat_interval_ms: INTERVAL_MS,
                        suspect_after_ms: 3000,
                        down_after_ms: 5000,
                    })),
                }))
                .await
                .unwrap();
            let events = self.events.clone();
            let mut kill = self.kill.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = async { let _ = kill.wait_for(|k| *k).await; } => {
                            let _ = out_tx.send(Err(tonic::Status::unavailable("controller going away"))).await;
                            return;
                        }
                        m = inbound.message() => match m {
                            Ok(Some(AgentMessage { msg: Some(AgentMsg::Heartbeat(hb)) })) => {
                                let _ = events.send(Event::Heartbeat(hb, Instant::now()));
                            }
                            Ok(other) if other.is_some() => panic!("unexpected {other:?}"),
                            Ok(_) => { let _ = events.send(Event::Ended(None)); return; }
                            Err(s) => { let _ = events.send(Event::Ended(Some(s))); return; }
                        }
                    }
                }
            });
            Ok(tonic::Response::new(
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(out_rx)) as Out,
            ))
        }
    }

    struct Server {
        handle: tokio::task::JoinHandle<()>,
        kill: watch::Sender<bool>,
    }

    impl Server {
        async fn start(listener: TcpListener, events: mpsc::UnboundedSender<Event>) -> Server {
            let (kill, kill_rx) = watch::channel(false);
            let svc = AgentServiceServer::new(FakeController {
                events,
                kill: kill_rx,
            });
            let handle = tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming(TcpListenerStream::new(listener))
                    .await
                    .unwrap();
            });
            Server { handle, kill }
        }

        /// Stops accepting and fails every open stream with UNAVAILABLE.
        async fn kill(self) {
            self.handle.abort();
            let _ = self.handle.await;
            self.kill.send(true).unwrap();
        }
    }

    async fn next(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
        timeout(WAIT, events.recv())
            .await
            .expect("event within the bound")
            .expect("server alive")
    }

    async fn next_heartbeat(events: &mut mpsc::UnboundedReceiver<Event>) -> (Heartbeat, Instant) {
        match next(events).await {
            Event::Heartbeat(hb, at) => (hb, at),
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }

    async fn next_hello(events: &mut mpsc::UnboundedReceiver<Event>) -> Hello {
        match next(events).await {
            Event::Hello(h) => h,
            other => panic!("expected a hello, got {other:?}"),
        }
    }

    fn config(dir: &std::path::Path, addr: SocketAddr) -> Config {
        let hw = dir.join("hardware.toml");
        std::fs::write(
            &hw,
            "logical_cores = 8\nmemory = \"32GiB\"\nzone = \"a\"\nhostname = \"sim-a-1\"\n",
        )
        .unwrap();
        Config {
            controllers: vec![addr.to_string()],
            state_dir: dir.join("state"),
            reconnect: ReconnectConfig {
                initial_backoff_ms: 10,
                max_backoff_ms: 50,
            },
            simulate: Some(SimulateConfig { file: hw }),
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn the_agent_says_hello_heartbeats_at_the_welcomed_interval_reconnects_and_stops_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let server = Server::start(listener, events_tx.clone()).await;

        let config = config(dir.path(), addr);
        let hw = config.simulate.clone().unwrap().file;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(crate::run(config, async {
            let _ = stop_rx.await;
        }));

        // 1. Hello first, with the persisted id, the simulated facts and heartbeat 1.
        let hello = next_hello(&mut events).await;
        let stored = std::fs::read_to_string(dir.path().join("state/host_id")).unwrap();
        assert_eq!(hello.host_id, stored.trim());
        assert_eq!(hello.agent_version, rpool_proto::VERSION);
        let facts = hello.facts.unwrap();
        assert!(facts.simulated);
        assert_eq!((facts.hostname.as_str(), facts.zone.as_str()), ("sim-a-1", "a"));
        assert_eq!(facts.inventory.unwrap().logical_cores, 8);
        let first = hello.first_heartbeat.unwrap();
        assert_eq!(first.seq, 1);
        assert!(first.health.iter().any(|c| c.name == "disk_free"));

        // 2. Heartbeats 2, 3, 4 at the welcomed interval, without facts.
        let mut previous: Option<Instant> = None;
        for seq in 2..=4 {
            let (hb, at) = next_heartbeat(&mut events).await;
            assert_eq!(hb.seq, seq);
            assert!(hb.facts.is_none(), "facts unchanged, not resent");
            assert!(hb.utilization.is_some());
            if let Some(prev) = previous {
                let gap = at - prev;
                assert!(
                    gap >= Duration::from_millis(INTERVAL_MS as u64 * 8 / 10),
                    "gap {gap:?}"
                );
            }
            previous = Some(at);
        }

        // 3. A changed simulated-hardware file is picked up and its facts sent once.
        std::fs::write(
            &hw,
            "logical_cores = 16\nmemory = \"32GiB\"\nzone = \"a\"\nhostname = \"sim-a-1\"\n",
        )
        .unwrap();
        let (hb, _) = next_heartbeat(&mut events).await;
        let changed = match hb.facts {
            Some(f) => f,
            None => next_heartbeat(&mut events)
                .await
                .0
                .facts
                .expect("facts after the change"),
        };
        assert_eq!(changed.inventory.unwrap().logical_cores, 16);
        let (hb, _) = next_heartbeat(&mut events).await;
        assert!(hb.facts.is_none(), "facts sent only once per change");

        // 4. The controller goes away; a new one on the same address gets a
        //    fresh Hello from the same host, with the new facts.
        server.kill().await;
        let listener = TcpListener::bind(addr).await.unwrap();
        let _server = Server::start(listener, events_tx.clone()).await;
        let again = loop {
            match next(&mut events).await {
                Event::Hello(h) => break h,
                Event::Heartbeat(..) | Event::Ended(_) => continue,
            }
        };
        assert_eq!(again.host_id, hello.host_id);
        assert_eq!(again.first_heartbeat.unwrap().seq, 1);
        assert_eq!(again.facts.unwrap().inventory.unwrap().logical_cores, 16);
        let (hb, _) = next_heartbeat(&mut events).await;
        assert_eq!(hb.seq, 2);

        // 5. Shutdown ends the agent's half of the stream and run returns Ok.
        stop_tx.send(()).unwrap();
        timeout(WAIT, agent)
            .await
            .expect("agent stops promptly")
            .unwrap()
            .unwrap();
        loop {
            match next(&mut events).await {
                Event::Ended(status) => {
                    assert!(status.is_none(), "clean end of stream, got {status:?}");
                    break;
                }
                Event::Heartbeat(..) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_rejected_report_is_retried_no_faster_than_max_backoff() {
        struct Rejecting(mpsc::UnboundedSender<Instant>);
        #[tonic::async_trait]
        impl AgentService for Rejecting {
            type SessionStream = Out;
            async fn session(
                &self,
                _request: tonic::Request<tonic::Streaming<AgentMessage>>,
            ) -> Result<tonic::Response<Out>, tonic::Status> {
                self.0.send(Instant::now()).unwrap();
                Err(tonic::Status::invalid_argument(
                    "hello.facts.inventory.logical_cores: 0 is out of range (accepted 1..=4096)",
                ))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut attempts) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(AgentServiceServer::new(Rejecting(tx)))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        let mut config = config(dir.path(), addr);
        config.reconnect = ReconnectConfig {
            initial_backoff_ms: 10,
            max_backoff_ms: 400,
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(crate::run(config, async {
            let _ = stop_rx.await;
        }));
        let first = timeout(WAIT, attempts.recv()).await.unwrap().unwrap();
        let second = timeout(WAIT, attempts.recv()).await.unwrap().unwrap();
        // max 400ms with jitter 0.5x..1.5x: at least 200ms, not initial's 10ms.
        assert!(
            second - first >= Duration::from_millis(190),
            "{:?}",
            second - first
        );
        stop_tx.send(()).unwrap();
        timeout(WAIT, agent).await.unwrap().unwrap().unwrap();
    }
}
