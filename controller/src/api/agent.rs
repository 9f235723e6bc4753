//! `AgentService.Session`: one bidirectional stream per agent.
//!
//! Protocol (see `rpool/v1/agent.proto`):
//!
//! 1. The first message must be a `Hello` (within [`HELLO_TIMEOUT`]); it is
//!    validated as a whole before anything is recorded.
//! 2. The session claims its host id; an older session for the same host is
//!    closed with `ABORTED` "replaced by a newer session".
//! 3. The Hello counts as a heartbeat. Then the host is reconciled through the
//!    log: unknown -> `RegisterHost`; facts or version changed ->
//!    `UpdateHost`; suspect or down -> `SetHostState ready` ("agent
//!    reconnected").
//! 4. The controller answers with a `Welcome` (its id, liveness settings).
//! 5. Each `Heartbeat` is validated (strictly increasing `seq`, memory used
//!    within the host's memory, ...), recorded in [`Liveness`](crate::leader::liveness::Liveness), and
//!    reconciled: new facts -> `UpdateHost`; suspect or down ->
//!    `SetHostState ready` ("heartbeat resumed"). Plain heartbeats never touch
//!    the log.
//!
//! Only agent certificates reach this service ([`crate::api::authz`]); the
//! Hello's host id must be the certificate's (else `PERMISSION_DENIED`), and
//! one identity holds at most [`crate::api::authz::MAX_SESSIONS_PER_IDENTITY`]
//! streams at once (else `RESOURCE_EXHAUSTED`).
//!
//! Admission: at most [`MAX_SETUPS`] sessions are between their opening and
//! their Welcome (or Redirect) at once. When a leader dies, its whole fleet
//! reconnects to the new one together; the streams beyond that bound are
//! refused at once with `UNAVAILABLE` and a retry hint
//! ([`rpool_proto::RETRY_AFTER_MS`], [`ADMISSION_RETRY_HINT`]) that the agent
//! spreads its retry over, instead of all of them queueing for the CPU.
//!
//! Relays ([`crate::api::relay`], with `[liveness] relay_sessions`): a
//! follower relays the session to the leader instead of redirecting the
//! agent, and a leader with reachable followers hands direct sessions to
//! them (`Redirect { relay: true }`) unless it is busy admitting sessions
//! or the Hello asks to be served here.
//!
//! Any invalid message ends the stream with `INVALID_ARGUMENT` naming the
//! field; nothing from that message is applied. When the stream ends the
//! host is marked disconnected; its liveness clock keeps running.
//!
//! Proposal failures map to `tonic::Status` in one place,
//! [`crate::api::status`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpool_proto::v1::agent_message::Msg;
use rpool_proto::v1::agent_service_server::AgentService;
use rpool_proto::v1::{self, AgentMessage, ControllerMessage};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::Shared;
use crate::api::status::{Refusal, propose_status};
use crate::api::validate::{self, Invalid};
use crate::leader::dispatch::Outbound;
use crate::raft::node::RaftRole;
use crate::replica::ProposeError;
use crate::state::State;
use crate::state::command::{Command, HostFacts, HostRecord, HostState};
use rpool_proto::clock::unix_ms_now;

/// How long a new stream may take to send its Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued toward one agent (Welcome, tasks, a final status).
pub const OUTBOUND_CAPACITY: usize = 64;
/// Agent sessions served at once by this controller.
pub const MAX_SESSIONS: usize = 20_000;
/// Sessions between opening and Welcome (or Redirect) at once.
pub const MAX_SETUPS: usize = 128;
/// Retry hint sent with a refusal for [`MAX_SETUPS`]: agents retry after a
/// random delay up to it.
pub const ADMISSION_RETRY_HINT: Duration = Duration::from_millis(2_000);

/// The service. Cheap to share (a clone shares the session table).
#[derive(Clone)]
pub struct AgentSvc {
    shared: Arc<Shared>,
    sessions: Arc<Sessions>,
    permits: Arc<Semaphore>,
    /// Sessions being set up ([`MAX_SETUPS`]).
    setups: Arc<Semaphore>,
    per_identity: crate::api::authz::SessionLimiter,
    /// This controller's connection to the leader for relayed sessions.
    relay: Arc<crate::api::relay::RelayLink>,
}

impl AgentSvc {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        AgentSvc {
            shared,
            sessions: Arc::new(Sessions::default()),
            permits: Arc::new(Semaphore::new(MAX_SESSIONS)),
            setups: Arc::new(Semaphore::new(MAX_SETUPS)),
            per_identity: crate::api::authz::SessionLimiter::default(),
            relay: Arc::default(),
        }
    }
}

/// Which session currently speaks for each host.
#[derive(Default)]
struct Sessions {
    next_id: AtomicU64,
    live: Mutex<HashMap<String, Slot>>,
    /// Who leads, changing only when that does (see [`Sessions::leading`]).
    leading: std::sync::OnceLock<tokio::sync::watch::Receiver<Leadership>>,
}

/// Who leads, as far as sessions care: whether this controller does, and
/// the leader and term it knows of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leadership {
    pub leading: bool,
    pub leader_id: u64,
    pub term: u64,
}

impl Leadership {
    fn of(status: &crate::raft::node::RaftStatus) -> Leadership {
        Leadership {
            leading: status.role == RaftRole::Leader,
            leader_id: status.leader_id,
            term: status.term,
        }
    }
}

struct Slot {
    session: u64,
    replaced: oneshot::Sender<()>,
}

impl Sessions {
    /// Makes `session` the one for `host_id`, closing the previous one.
    fn claim(&self, host_id: &str, session: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let previous = self.live.lock().unwrap_or_else(|e| e.into_inner()).insert(
            host_id.to_owned(),
            Slot {
                session,
                replaced: tx,
            },
        );
        if let Some(old) = previous {
            info!(
                host_id,
                old_session = old.session,
                session,
                "replacing an older session"
            );
            let _ = old.replaced.send(());
        }
        rx
    }

    /// [`Leadership`] as a watch that changes only when the leader, the
    /// term or this controller's role does. Sessions wait on it rather than
    /// on the Raft status, which changes with every commit: with 10,000
    /// sessions each change would wake all of them (measured: 3-4 % of the
    /// leader's CPU).
    fn leading(&self, shared: &Shared) -> tokio::sync::watch::Receiver<Leadership> {
        self.leading
            .get_or_init(|| {
                let mut status = shared.node.raft().watch_status();
                let (tx, rx) = tokio::sync::watch::channel(Leadership::of(&status.borrow_and_update()));
                // Ends when the replica stops (its status sender is dropped).
                tokio::spawn(async move {
                    while status.changed().await.is_ok() {
                        let now = Leadership::of(&status.borrow_and_update());
                        tx.send_if_modified(|l| std::mem::replace(l, now) != now);
                    }
                });
                rx
            })
            .clone()
    }

    /// Forgets `session` unless a newer one has taken the host over.
    fn release(&self, host_id: &str, session: u64) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.get(host_id).is_some_and(|s| s.session == session) {
            live.remove(host_id);
        }
    }
}

/// A suspect or down host heard from again turns ready.
fn back_to_ready(record: &HostRecord, reason: &str, now_unix_ms: u64) -> Option<Command> {
    matches!(record.state, HostState::Suspect | HostState::Down).then(|| Command::SetHostState {
        host_id: record.host_id.clone(),
        state: HostState::Ready,
        reason: reason.to_owned(),
        at_unix_ms: now_unix_ms,
    })
}

/// Commands that bring a host's record in line with a Hello. Pure.
pub(crate) fn hello_commands(
    record: Option<&HostRecord>,
    host_id: &str,
    agent_version: &str,
    facts: &HostFacts,
    now_unix_ms: u64,
) -> Vec<Command> {
    let Some(record) = record else {
        return vec![Command::RegisterHost {
            host_id: host_id.to_owned(),
            agent_version: agent_version.to_owned(),
            facts: facts.clone(),
            at_unix_ms: now_unix_ms,
        }];
    };
    let mut out = Vec::new();
    if record.facts != *facts || record.agent_version != agent_version {
        out.push(Command::UpdateHost {
            host_id: host_id.to_owned(),
            agent_version: agent_version.to_owned(),
            facts: facts.clone(),
            at_unix_ms: now_unix_ms,
        });
    }
    out.extend(back_to_ready(record, "agent reconnected", now_unix_ms));
    out
}

/// Commands that follow from a valid heartbeat. Pure.
pub(crate) fn heartbeat_commands(
    record: Option<&HostRecord>,
    host_id: &str,
    facts: Option<&HostFacts>,
    now_unix_ms: u64,
) -> Vec<Command> {
    // The record exists once the Hello was reconciled; if it vanished there
    // is nothing to reconcile against.
    let Some(record) = record else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(facts) = facts
        && record.facts != *facts
    {
        out.push(Command::UpdateHost {
            host_id: host_id.to_owned(),
            agent_version: record.agent_version.clone(),
            facts: facts.clone(),
            at_unix_ms: now_unix_ms,
        });
    }
    out.extend(back_to_ready(record, "heartbeat resumed", now_unix_ms));
    out
}

/// Proposes what `compute` asks for on the current state. If another writer
/// got in between (a rejection), recomputes once from the fresh state.
///
/// Nearly every heartbeat asks for nothing: that case awaits nothing, and
/// the proposing part is boxed, so a session's task (10,000 per leader)
/// does not carry the proposal's state while it idles.
async fn reconcile(shared: &Shared, compute: impl Fn(&State) -> Vec<Command>) -> Result<(), Status> {
    let commands = shared.node.read(&compute);
    if commands.is_empty() {
        return Ok(());
    }
    Box::pin(propose_reconciled(shared, compute, commands)).await
}

async fn propose_reconciled(
    shared: &Shared,
    compute: impl Fn(&State) -> Vec<Command>,
    first: Vec<Command>,
) -> Result<(), Status> {
    let mut first = Some(first);
    for attempt in 0..2 {
        let commands = match first.take() {
            Some(commands) => commands,
            None => shared.node.read(&compute),
        };
        let mut raced = false;
        for command in commands {
            match shared.node.propose(command).await {
                Ok(_) => {}
                Err(ProposeError::Rejected(e)) if attempt == 0 => {
                    debug!(error = %e, "proposal raced with another writer; recomputing");
                    raced = true;
                    break;
                }
                Err(e) => return Err(propose_status(e, Refusal::Race)),
            }
        }
        if !raced {
            break;
        }
    }
    Ok(())
}

/// How a session ended without a status of our own to report.
#[derive(Debug)]
pub(crate) enum End {
    /// The agent closed its side of the stream.
    ClosedByAgent,
    /// The leader ended a session this follower relayed, without a status.
    ClosedByLeader,
    /// This leader handed the session to the follower with this id.
    Handed(u64),
    /// The agent stopped reading (its receiver is gone).
    AgentGone,
    /// The transport failed.
    Transport(Status),
    /// This controller does not lead: the agent was sent to the leader.
    Redirected(u64),
}

/// How a failed read of the agent's stream ends the session. Bytes that do
/// not decode as an `AgentMessage`, or a message over the size limit, are
/// the agent's fault: the stream ends with INVALID_ARGUMENT saying so (as
/// `agent.proto` promises); anything else is the transport failing.
pub(crate) fn inbound_error(status: Status) -> Result<End, Status> {
    let undecodable = status.code() == tonic::Code::Internal
        && status.message().contains("failed to decode Protobuf message");
    if undecodable || status.code() == tonic::Code::OutOfRange {
        return Err(Status::invalid_argument(format!(
            "agent_message: {} (accepted: one AgentMessage of at most {} bytes)",
            status.message(),
            crate::MAX_DECODING_MESSAGE_BYTES
        )));
    }
    Ok(End::Transport(status))
}

#[tonic::async_trait]
impl AgentService for AgentSvc {
    type SessionStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<ControllerMessage, Status>> + Send + 'static>,
    >;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        // The authorization layer admitted only agent certificates (relayed
        // sessions arrive through `RelayService`, api::relay).
        let cert_host = match crate::api::authz::caller(&request) {
            Some(rpool_proto::pki::Identity::Agent(host)) => host.clone(),
            _ => {
                return Err(Status::permission_denied(
                    "only agent certificates may open a session",
                ));
            }
        };
        let peer = request.remote_addr();
        let rx = self.start(cert_host, None, peer, Inbound::Direct(request.into_inner()))?;
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(
            ReceiverStream::new(rx),
            |m| *m,
        ))))
    }
}

/// Where a session's messages come from: the agent's own stream, or a
/// follower's relay stream ([`crate::api::relay`]), which feeds them in
/// order through a queue.
pub(crate) enum Inbound {
    Direct(Streaming<AgentMessage>),
    Relayed(mpsc::Receiver<Box<AgentMessage>>),
}

impl Inbound {
    /// The next message; `Ok(None)` once the agent's side ended.
    pub(crate) async fn message(&mut self) -> Result<Option<AgentMessage>, Status> {
        match self {
            Inbound::Direct(stream) => stream.message().await,
            Inbound::Relayed(queue) => Ok(queue.recv().await.map(|m| *m)),
        }
    }
}

impl AgentSvc {
    /// Admits a session for `cert_host` (the agent's certificate, or the
    /// agent a follower vouches for in `relayed`) and starts its task;
    /// returns what the session sends the agent, or the refusal.
    pub(crate) fn start(
        &self,
        cert_host: String,
        relayed: Option<crate::api::authz::Relayed>,
        peer: Option<SocketAddr>,
        inbound: Inbound,
    ) -> Result<mpsc::Receiver<Outbound>, Status> {
        const METHOD: &str = "/rpool.v1.AgentService/Session";
        let identity = rpool_proto::pki::Identity::Agent(cert_host.clone());
        let slot = self
            .per_identity
            .acquire(&identity)
            .map_err(|d| d.record(&identity.to_string(), METHOD))?;
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "this controller already serves {MAX_SESSIONS} agent sessions"
            ))
        })?;
        // Whether this controller is busy admitting sessions (a failover):
        // then a leader keeps direct sessions instead of handing them on.
        let calm = self.setups.available_permits() >= MAX_SETUPS / 2;
        let setup = self.setups.clone().try_acquire_owned().map_err(|_| busy())?;
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let session = self.sessions.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let span = info_span!(
            "session",
            session,
            peer = ?peer,
            relayed_by = relayed.map(|r| r.via),
            host_id = tracing::field::Empty
        );
        let opening = Opening {
            shared: self.shared.clone(),
            sessions: self.sessions.clone(),
            relay: self.relay.clone(),
            session,
            relayed,
            calm,
        };
        tokio::spawn(
            async move {
                run_session(opening, peer, &cert_host, inbound, tx, setup).await;
                drop(permit);
                drop(slot);
            }
            .instrument(span),
        );
        Ok(rx)
    }
}

/// The refusal of a session beyond [`MAX_SETUPS`], with its retry hint.
fn busy() -> Status {
    let hint = ADMISSION_RETRY_HINT.as_millis();
    let mut status = Status::unavailable(format!(
        "this controller is setting up {MAX_SETUPS} other agent sessions; retry within {hint} ms"
    ));
    status.metadata_mut().insert(
        rpool_proto::RETRY_AFTER_MS,
        tonic::metadata::MetadataValue::from(hint as u64),
    );
    crate::metrics::global().sessions_refused_busy.inc();
    status
}

/// What a new session knows before its Hello.
struct Opening {
    shared: Arc<Shared>,
    sessions: Arc<Sessions>,
    relay: Arc<crate::api::relay::RelayLink>,
    session: u64,
    /// The follower relaying it, if one does.
    relayed: Option<crate::api::authz::Relayed>,
    /// This controller is not busy admitting sessions.
    calm: bool,
}

async fn run_session(
    opening: Opening,
    peer: Option<SocketAddr>,
    cert_host: &str,
    inbound: Inbound,
    tx: mpsc::Sender<Outbound>,
    setup: tokio::sync::OwnedSemaphorePermit,
) {
    let mut claimed: Option<String> = None;
    let result = session_body(&opening, cert_host, inbound, &tx, &mut claimed, setup).await;
    let Opening {
        shared,
        sessions,
        session,
        ..
    } = opening;
    match result {
        Ok(End::ClosedByAgent) => info!("agent session ended: closed by the agent"),
        Ok(End::ClosedByLeader) => info!("relayed agent session ended: closed by the leader"),
        Ok(End::Handed(follower)) => debug!(follower, "agent session handed to a follower"),
        Ok(End::AgentGone) => info!("agent session ended: the agent stopped reading"),
        Ok(End::Redirected(leader)) => debug!(leader, "agent redirected to the leader"),
        Ok(End::Transport(status)) => info!(
            code = ?status.code(),
            error = status.message(),
            "agent session ended: transport error"
        ),
        Err(status) => {
            match status.code() {
                tonic::Code::InvalidArgument => {
                    warn!(
                        error = status.message(),
                        "rejected invalid agent message; closing session"
                    )
                }
                tonic::Code::Aborted | tonic::Code::Unavailable => {
                    info!(reason = status.message(), "closing agent session")
                }
                _ => warn!(code = ?status.code(), error = status.message(), "agent session failed"),
            }
            // Best effort: the agent may already be gone.
            let _ = tx.send(Box::new(Err(status))).await;
        }
    }
    if let Some(host_id) = claimed {
        shared.links.unregister(&host_id, session);
        sessions.release(&host_id, session);
        shared
            .liveness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .disconnect(&host_id, session);
    }
    debug!(?peer, "session task finished");
}

async fn session_body(
    opening: &Opening,
    cert_host: &str,
    mut inbound: Inbound,
    tx: &mpsc::Sender<Outbound>,
    claimed: &mut Option<String>,
    setup: tokio::sync::OwnedSemaphorePermit,
) -> Result<End, Status> {
    let shared = &*opening.shared;
    let session = opening.session;
    // The set-up's state (the Hello, its facts, proposals) lives on the
    // heap while it runs and is gone before the heartbeat loop: the task
    // of an idle session is only as large as the loop's state.
    let started = Box::pin(session_setup(
        opening,
        cert_host,
        &mut inbound,
        tx,
        claimed,
        setup,
    ))
    .await?;
    let Started {
        host_id,
        mut replaced,
        mut leading,
    } = match started {
        Ok(started) => started,
        Err(end) => return Ok(end),
    };
    heartbeat_loop(
        shared,
        session,
        &host_id,
        inbound,
        tx,
        &mut replaced,
        &mut leading,
    )
    .await
}

/// A session past its Welcome.
struct Started {
    host_id: String,
    /// Fires when a newer session claims the host.
    replaced: oneshot::Receiver<()>,
    /// Who leads.
    leading: tokio::sync::watch::Receiver<Leadership>,
}

/// Steps 1 to 4 of the protocol: Hello, claim, reconcile, Welcome. `Err`
/// inside `Ok`: the session ended (redirected, closed) without a status.
async fn session_setup(
    opening: &Opening,
    cert_host: &str,
    inbound: &mut Inbound,
    tx: &mpsc::Sender<Outbound>,
    claimed: &mut Option<String>,
    setup: tokio::sync::OwnedSemaphorePermit,
) -> Result<Result<Started, End>, Status> {
    let shared = &*opening.shared;
    let sessions = &*opening.sessions;
    let session = opening.session;
    let mut shutdown = shared.shutdown.clone();

    // 1. Hello, first and bounded in time.
    let first = tokio::select! {
        r = tokio::time::timeout(HELLO_TIMEOUT, inbound.message()) => r,
        _ = crate::stopped(&mut shutdown) => return Err(Status::unavailable("the controller is shutting down")),
    };
    let hello = match first {
        Err(_) => {
            return Err(Status::deadline_exceeded(format!(
                "no hello within {}s of opening the session",
                HELLO_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(status)) => return inbound_error(status).map(Err),
        Ok(Ok(None)) => return Ok(Err(End::ClosedByAgent)),
        Ok(Ok(Some(AgentMessage {
            msg: Some(Msg::Hello(h)),
        }))) => h,
        Ok(Ok(Some(AgentMessage {
            msg: Some(Msg::Heartbeat(_) | Msg::TaskResult(_)),
        }))) => {
            return Err(Invalid::new(
                "msg",
                "received before hello (accepted a Hello as the first message)",
            )
            .into());
        }
        Ok(Ok(Some(AgentMessage { msg: None }))) => {
            return Err(Invalid::new("msg", "empty message (accepted hello or heartbeat)").into());
        }
    };
    validate::hello(&hello)?;
    crate::api::authz::check_hello_host(cert_host, &hello.host_id).map_err(|d| {
        d.record(
            &rpool_proto::pki::Identity::Agent(cert_host.to_owned()).to_string(),
            "/rpool.v1.AgentService/Session",
        )
    })?;
    let host_id = hello.host_id.clone();
    tracing::Span::current().record("host_id", host_id.as_str());

    // Only the leader keeps sessions (it owns liveness). A follower relays
    // the agent's session there; a session relayed to a controller that no
    // longer leads goes back to its relay as a redirect.
    let mut leading = sessions.leading(shared);
    let relaying = shared.config.liveness.relay_sessions;
    if !shared.node.is_leader() {
        if opening.relayed.is_some() || !relaying {
            return redirect(shared, tx).await.map(Err);
        }
        match crate::api::relay::route(&mut leading).await {
            crate::api::relay::Route::Serve => {}
            crate::api::relay::Route::NoLeader => return redirect(shared, tx).await.map(Err),
            crate::api::relay::Route::Relay { leader_id, term } => {
                let agent_uri = rpool_proto::pki::Identity::Agent(cert_host.to_owned()).uri();
                return Box::pin(crate::api::relay::run(
                    shared,
                    &opening.relay,
                    crate::api::relay::Upstream {
                        leader_id,
                        term,
                        key: session,
                    },
                    &agent_uri,
                    hello,
                    inbound,
                    tx,
                    setup,
                    leading,
                ))
                .await
                .map(Err);
            }
        }
    }
    // A leader hands a direct session to a follower, which relays it: the
    // leader then holds a stream per agent, not a connection.
    if relaying
        && opening.relayed.is_none()
        && opening.calm
        && !hello.serve_here
        && let Some((follower, address)) = crate::api::relay::follower_for(shared, &host_id)
    {
        let message = ControllerMessage {
            msg: Some(v1::controller_message::Msg::Redirect(v1::Redirect {
                leader_id: shared.config.id,
                leader_address: address,
                relay: true,
            })),
        };
        crate::metrics::global().sessions_handed.inc();
        let _ = tx.send(Box::new(Ok(message))).await;
        return Ok(Err(End::Handed(follower)));
    }

    // 2. Claim the host; 3. record liveness and reconcile.
    let replaced = sessions.claim(&host_id, session);
    *claimed = Some(host_id.clone());
    {
        let mut live = shared.liveness.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // The first session of a term resets the table for the term, so
        // the ticker's reset (when it notices the leadership) cannot come
        // after this session and forget it.
        let term = shared.node.status().term;
        if live.term() != term {
            let hosts = shared.node.read(|sm| sm.hosts().len());
            live.new_term(now, hosts, term);
        }
        live.connect(&host_id, session, now);
        if let Some(hb) = &hello.first_heartbeat {
            live.record_heartbeat(&host_id, session, hb, now, unix_ms_now());
        }
    }
    let facts = hello.facts.as_ref().map(HostFacts::from).unwrap_or_default();
    let now_ms = unix_ms_now();
    reconcile(shared, |sm| {
        hello_commands(sm.host(&host_id), &host_id, &hello.agent_version, &facts, now_ms)
    })
    .await?;

    // 4. Welcome.
    let (heartbeat_interval_ms, suspect_after_ms, down_after_ms) = shared.config.liveness.wire_ms();
    let welcome = ControllerMessage {
        msg: Some(v1::controller_message::Msg::Welcome(v1::Welcome {
            controller_id: shared.config.id.to_string(),
            heartbeat_interval_ms,
            suspect_after_ms,
            down_after_ms,
            // Lowest id first (a BTreeMap): see `agent.proto`.
            members: crate::member_addresses(&shared.config, &shared.node)
                .into_iter()
                .map(|(id, address)| v1::WelcomeMember { id, address })
                .collect(),
        })),
    };
    if tx.send(Box::new(Ok(welcome))).await.is_err() {
        return Ok(Err(End::AgentGone));
    }
    // Set up: the next agent may come in.
    drop(setup);
    shared.links.register(&host_id, session, tx.clone());
    crate::leader::dispatch::deliver(shared);
    info!(
        hostname = facts.hostname.as_str(),
        zone = facts.zone.as_str(),
        agent_version = hello.agent_version.as_str(),
        "agent session started"
    );
    Ok(Ok(Started {
        host_id,
        replaced,
        leading,
    }))
}

/// Step 5 of the protocol: heartbeats (and task results) until the session
/// ends. What it holds across its wait is all an idle session costs.
async fn heartbeat_loop(
    shared: &Shared,
    session: u64,
    host_id: &str,
    mut inbound: Inbound,
    tx: &mpsc::Sender<Outbound>,
    replaced: &mut oneshot::Receiver<()>,
    leading: &mut tokio::sync::watch::Receiver<Leadership>,
) -> Result<End, Status> {
    let mut shutdown = shared.shutdown.clone();
    let mut last_seq = 0u64;
    loop {
        let message = tokio::select! {
            biased;
            _ = &mut *replaced => return Err(Status::aborted("replaced by a newer session")),
            _ = crate::stopped(&mut shutdown) => return Err(Status::unavailable("the controller is shutting down")),
            _ = tx.closed() => return Ok(End::AgentGone),
            _ = no_longer_leading(leading) => return Box::pin(redirect(shared, tx)).await,
            m = inbound.message() => m,
        };
        let message = match message {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(End::ClosedByAgent),
            Err(status) => return inbound_error(status),
        };
        let hb = match message.msg {
            Some(Msg::Heartbeat(hb)) => hb,
            Some(Msg::TaskResult(result)) => {
                Box::pin(crate::api::task_result::on_result(shared, host_id, result)).await?;
                continue;
            }
            Some(Msg::Hello(_)) => {
                return Err(Invalid::new(
                    "hello",
                    "sent twice (accepted exactly one Hello, as the first message)",
                )
                .into());
            }
            None => {
                return Err(Invalid::new("msg", "empty message (accepted hello or heartbeat)").into());
            }
        };
        let arrived = Instant::now();
        crate::metrics::record_heartbeat_lag(hb.sent_at_unix_ms, unix_ms_now());
        let stored_memory = shared
            .node
            .read(|sm| sm.host(host_id).map(|r| r.facts.inventory.memory_total_bytes));
        validate::heartbeat("heartbeat", &hb, Some(last_seq), stored_memory)?;
        last_seq = hb.seq;
        shared
            .liveness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record_heartbeat(host_id, session, &hb, Instant::now(), unix_ms_now());
        debug!(seq = hb.seq, "heartbeat");
        let new_facts = hb.facts.as_ref().map(HostFacts::from);
        let now_ms = unix_ms_now();
        reconcile(shared, |sm| {
            heartbeat_commands(sm.host(host_id), host_id, new_facts.as_ref(), now_ms)
        })
        .await?;
        crate::metrics::ack_heartbeat(tx, hb.seq, arrived);
    }
}

/// Resolves once `leading` turns false (or the replica stops). Holds no
/// watch guard across an await.
async fn no_longer_leading(leading: &mut tokio::sync::watch::Receiver<Leadership>) {
    let _ = leading.wait_for(|l| !l.leading).await;
}

/// Tells the agent where the leader is and ends the session.
async fn redirect(shared: &Shared, tx: &mpsc::Sender<Outbound>) -> Result<End, Status> {
    let leader_id = shared.node.status().leader_id;
    let leader_address = shared.address_of(leader_id).unwrap_or_default();
    let message = ControllerMessage {
        msg: Some(v1::controller_message::Msg::Redirect(v1::Redirect {
            leader_id,
            leader_address,
            relay: false,
        })),
    };
    let _ = tx.send(Box::new(Ok(message))).await;
    Ok(End::Redirected(leader_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::tests::facts;

    fn record(state: HostState) -> HostRecord {
        HostRecord {
            host_id: "h".to_owned(),
            state,
            state_reason: String::new(),
            state_since_unix_ms: 0,
            registered_at_unix_ms: 0,
            agent_version: "0.1.0".to_owned(),
            facts: facts("h", 8),
            admin_labels: Default::default(),
            pool: None,
            fenced: None,
        }
    }

    fn kinds(cmds: &[Command]) -> Vec<String> {
        cmds.iter()
            .map(|c| match c {
                Command::SetHostState { state, reason, .. } => format!("set {state} ({reason})"),
                other => other.kind().to_owned(),
            })
            .collect()
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn a_hello_is_reconciled_as_the_table_says() {
        let same = facts("h", 8);
        let other = facts("h", 16);
        let cases: Vec<(&str, Option<HostRecord>, &str, &HostFacts, Vec<&str>)> = vec![
            (
                "unknown host registers",
                None,
                "0.1.0",
                &same,
                vec!["register_host"],
            ),
            (
                "known, unchanged, ready: nothing",
                Some(record(HostState::Ready)),
                "0.1.0",
                &same,
                vec![],
            ),
            (
                "new facts update",
                Some(record(HostState::Ready)),
                "0.1.0",
                &other,
                vec!["update_host"],
            ),
            (
                "new version updates",
                Some(record(HostState::Ready)),
                "0.2.0",
                &same,
                vec!["update_host"],
            ),
            (
                "suspect comes back",
                Some(record(HostState::Suspect)),
                "0.1.0",
                &same,
                vec!["set ready (agent reconnected)"],
            ),
            (
                "down comes back with new facts",
                Some(record(HostState::Down)),
                "0.1.0",
                &other,
                vec!["update_host", "set ready (agent reconnected)"],
            ),
            (
                "cordoned stays cordoned",
                Some(record(HostState::Cordoned)),
                "0.1.0",
                &same,
                vec![],
            ),
        ];
        for (name, rec, version, f, want) in cases {
            let got = hello_commands(rec.as_ref(), "h", version, f, 7);
            assert_eq!(kinds(&got), want, "{name}");
        }
    }

    #[test]
    fn a_heartbeat_is_reconciled_as_the_table_says() {
        let same = facts("h", 8);
        let other = facts("h", 16);
        let cases: Vec<(&str, HostState, Option<&HostFacts>, Vec<&str>)> = vec![
            ("plain heartbeat: nothing", HostState::Ready, None, vec![]),
            ("same facts: nothing", HostState::Ready, Some(&same), vec![]),
            (
                "new facts update",
                HostState::Ready,
                Some(&other),
                vec!["update_host"],
            ),
            (
                "suspect resumes",
                HostState::Suspect,
                None,
                vec!["set ready (heartbeat resumed)"],
            ),
            (
                "down resumes",
                HostState::Down,
                None,
                vec!["set ready (heartbeat resumed)"],
            ),
            ("joining is left alone", HostState::Joining, None, vec![]),
        ];
        for (name, state, f, want) in cases {
            let got = heartbeat_commands(Some(&record(state)), "h", f, 7);
            assert_eq!(kinds(&got), want, "{name}");
        }
        assert!(heartbeat_commands(None, "h", Some(&other), 7).is_empty());
    }

    #[test]
    fn a_newer_session_closes_the_older_one() {
        let sessions = Sessions::default();
        let mut first = sessions.claim("h", 1);
        let mut second = sessions.claim("h", 2);
        assert!(first.try_recv().is_ok());
        // The old session's cleanup must not evict the new one.
        sessions.release("h", 1);
        assert!(second.try_recv().is_err());
        assert_eq!(sessions.live.lock().unwrap()["h"].session, 2);
        sessions.release("h", 2);
        assert!(sessions.live.lock().unwrap().is_empty());
    }
}
