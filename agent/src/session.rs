//! The agent's side of `AgentService.Session`: connect, say Hello, wait for
//! the Welcome, heartbeat at the welcomed interval, and reconnect (rotating
//! through the configured controllers, with [`Backoff`]) when anything goes
//! wrong, until shutdown.
//!
//! Which controller the next attempt goes to, and whether it waits first, is
//! decided by [`Targets`]:
//! - The first attempt goes to the configured controller the host id
//!   hashes to ([`Targets::for_host`]): a fleet spreads over the group
//!   from the start, and most of it lands on followers, which relay it
//!   without a second handshake.
//! - A follower answers the Hello with a `Redirect` naming the leader: the
//!   next attempt goes to that address after a short random pause (at most
//!   [`REDIRECT_SPREAD`]: a fleet redirected at once does not arrive at
//!   once), even when it is not in the configured list. After
//!   [`MAX_REDIRECTS`] consecutive redirects without a Welcome (leadership
//!   moving during an election), or when the follower knows no leader, the
//!   agent backs off and rotates.
//! - A leader hands the session to a follower that relays it
//!   (`Redirect { relay: true }`): followed like any redirect. If that
//!   follower cannot be reached (or redirects the agent instead of
//!   relaying), the agent goes back to the leader and asks to be served
//!   there (`Hello.serve_here`): a follower never keeps an agent from the
//!   leader it can reach.
//! - A welcomed session that breaks is retried after a random delay up to
//!   the initial backoff (full jitter: when a leader dies, its whole fleet
//!   loses its sessions in the same instant) on the first other controller
//!   of the group by id (`Welcome.members`: the survivors of a dead leader
//!   campaign lowest id first, so it most likely leads already) that is
//!   neither the welcoming leader nor the controller the session ran
//!   through, or on the same controller when no member list came; a
//!   failure there rotates.
//! - A welcomed session that hears nothing back (no acknowledgement) for
//!   [`silence_limit`] (one heartbeat interval short of the Welcome's
//!   `suspect_after`, at least two intervals) is dropped as broken: a
//!   frozen or cut-off controller keeps its connection looking open, and
//!   the new leader would take this host for suspect, then down, while it
//!   waited. It goes on as any broken session (below).
//! - A relaying follower whose leader went away ends the session with
//!   `UNAVAILABLE` and a retry hint: the agent comes back to it (as to a
//!   busy controller, below), to be relayed to the new leader. One cut off
//!   from the group ends it without a hint: the session broke, and the
//!   agent goes to the member that is neither that follower nor the
//!   welcoming leader (above).
//! - After such a hint (the controller answered: its connection is sound)
//!   the next attempt opens its stream on the same connection, without a
//!   new TLS handshake; after anything else it connects afresh.
//! - A leader busy admitting other sessions answers `UNAVAILABLE` with a
//!   retry hint ([`rpool_proto::RETRY_AFTER_MS`]): the same controller is
//!   retried after a random delay up to the hint (capped at the maximum
//!   backoff).
//! - Any other failure: backoff, then the next configured controller.
//!
//! Every connection is mutual TLS: the CA, certificate and key are read
//! from the agent's TLS directory ([`Config::tls_files`]) before each
//! attempt, so a renewed certificate is used from the next reconnect on.
//! Missing or unusable files (or a certificate for another host id) fail the
//! attempt with a clear error, and the agent keeps retrying with backoff.
//! A controller that refuses the certificate (`UNAUTHENTICATED`,
//! `PERMISSION_DENIED`) is treated like a rejection: maximum backoff.
//!
//! Tasks: a `ControllerMessage.task` goes to the [`Executor`] (never
//! blocking the session). After each Welcome a forwarder sends the results
//! of recently finished tasks (the executor's store), then every result as
//! it comes, as `AgentMessage.task_result`, waiting for room in the stream
//! (a result that cannot be sent stays stored and is re-sent after the next
//! Welcome).

use std::time::Duration;

use rpool_proto::tls::{TlsFiles, TlsMaterial};
use rpool_proto::v1::agent_message::Msg as AgentMsg;
use rpool_proto::v1::agent_service_client::AgentServiceClient;
use rpool_proto::v1::controller_message::Msg as ControllerMsg;
use rpool_proto::v1::{AgentMessage, Heartbeat, Hello, Redirect, TaskResult, Welcome};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::report::{Reporter, facts_changed};
use crate::tasks::Executor;

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
/// Consecutive redirects (without a Welcome) followed at once; the next one
/// falls back to backoff and rotation, so two controllers that each name the
/// other as leader during an election cannot make the agent spin.
pub const MAX_REDIRECTS: u32 = 3;
/// Largest random pause before following a redirect (never more than the
/// initial backoff).
pub const REDIRECT_SPREAD: Duration = Duration::from_millis(100);

/// Why a session attempt ended.
#[derive(Debug)]
enum Ended {
    Shutdown,
    Lost { welcomed: bool, reason: Reason },
}

#[derive(Debug)]
enum Reason {
    /// The TLS files are missing, unreadable or not for this host.
    Tls(String),
    /// Enrolling with the bootstrap token did not produce a certificate.
    Enroll(crate::enroll::EnrollError),
    /// The certificate was renewed: reconnect with it.
    Renewed,
    Connect(tonic::transport::Error),
    Status(tonic::Status),
    NoWelcome,
    ClosedByController,
    /// A follower named the leader (or said none is known) instead of a Welcome.
    Redirected(Redirect),
    /// Nothing came back (no acknowledgement) for this long while
    /// heartbeats went out: the controller is frozen or cut off behind a
    /// connection that still looks open.
    Silent(Duration),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Tls(e) => write!(f, "cannot use the TLS files: {e}"),
            Reason::Enroll(e) => write!(f, "enrollment failed: {e}"),
            Reason::Renewed => f.write_str("certificate renewed; reconnecting with it"),
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
            Reason::Redirected(r) if r.leader_address.is_empty() => {
                f.write_str("redirected by a follower that knows no leader yet")
            }
            Reason::Redirected(r) => {
                write!(f, "redirected to leader {} at {}", r.leader_id, r.leader_address)
            }
            Reason::Silent(limit) => write!(
                f,
                "no answer from the controller for {} ms while heartbeating",
                limit.as_millis()
            ),
        }
    }
}

/// Resolves when shutdown was requested (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// How a session attempt ended, as far as choosing the next target goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A welcomed session broke (or the controller closed it).
    LostAfterWelcome,
    /// No Welcome: connect failed, stream broke or timed out.
    Failed,
    /// The controller rejected what this agent sends (INVALID_ARGUMENT).
    Rejected,
    /// A follower redirected the agent; `leader_address` is "" when it knows
    /// no leader. `relay`: a leader handed the session to the follower at
    /// `leader_address`.
    Redirected { leader_address: String, relay: bool },
    /// The controller admits no more sessions for now: retry it after a
    /// random delay up to `retry_after`.
    Busy { retry_after: Duration },
}

impl Outcome {
    /// Whether the next attempt may open its stream on this attempt's
    /// connection: only after a retry hint (the controller answered, so
    /// the connection is sound); anything else connects afresh.
    pub fn keeps_connection(&self) -> bool {
        matches!(self, Outcome::Busy { .. })
    }
}

/// How long the next attempt waits (see [`delay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Following a redirect: a short random pause (up to [`REDIRECT_SPREAD`]).
    None,
    /// Wait `Backoff::next_delay()` first.
    Backoff,
    /// A lost session: a random delay up to the initial backoff.
    Spread,
    /// A busy controller's hint: a random delay up to it.
    Hint(Duration),
}

/// The delay before the next attempt for `wait`.
pub fn delay(wait: Wait, backoff: &mut Backoff) -> Duration {
    match wait {
        Wait::None => backoff.spread(REDIRECT_SPREAD.min(backoff.initial())),
        Wait::Backoff => backoff.next_delay(),
        Wait::Spread => backoff.spread(backoff.initial()),
        Wait::Hint(hint) => backoff.spread(hint.min(backoff.max())),
    }
}

/// The retry hint of a controller that admits no more sessions for now:
/// `UNAVAILABLE` with [`rpool_proto::RETRY_AFTER_MS`] metadata (1 ms to 10
/// minutes; anything else is no hint).
pub fn busy_hint(status: &tonic::Status) -> Option<Duration> {
    if status.code() != tonic::Code::Unavailable {
        return None;
    }
    let ms: u64 = status
        .metadata()
        .get(rpool_proto::RETRY_AFTER_MS)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    (1..=600_000).contains(&ms).then(|| Duration::from_millis(ms))
}

/// The controller the next attempt goes to (see the module docs for the rules).
#[derive(Debug, Clone)]
pub struct Targets {
    controllers: Vec<String>,
    /// Configured controller that rotation continues from.
    index: usize,
    /// Address of the next attempt (a configured one or a redirect's leader).
    current: String,
    /// Consecutive redirects followed without a Welcome.
    redirects: u32,
    /// The group's controllers (id, address), lowest id first, and the id
    /// of the controller that sent them: from the last Welcome.
    members: Vec<(u64, String)>,
    welcomed_by: u64,
    /// The leader that handed this agent to the follower at `current`
    /// (`Redirect.relay`), until a Welcome.
    handed_by: Option<String>,
    /// The next Hello asks the leader to serve it itself: the follower it
    /// handed the agent to could not be reached, or sent it back.
    serve_here: bool,
}

impl Targets {
    /// Starts at the first configured controller. `controllers` must not be
    /// empty (config validation guarantees it).
    pub fn new(controllers: Vec<String>) -> Self {
        Self::starting_at(controllers, 0)
    }

    /// Starts at the configured controller `host_id` hashes to
    /// ([`rpool_proto::spread`]): a fleet spreads over the controllers
    /// from its first connection, so two in three agents of a trio land on
    /// a follower, which relays them at once, instead of all of them
    /// landing on the first controller and most being handed on (a second
    /// TLS handshake each).
    pub fn for_host(controllers: Vec<String>, host_id: &str) -> Self {
        let first = rpool_proto::spread(host_id, controllers.len().max(1));
        Self::starting_at(controllers, first)
    }

    fn starting_at(controllers: Vec<String>, index: usize) -> Self {
        assert!(!controllers.is_empty(), "at least one controller is configured");
        let current = controllers[index].clone();
        Targets {
            controllers,
            index,
            current,
            redirects: 0,
            members: Vec::new(),
            welcomed_by: 0,
            handed_by: None,
            serve_here: false,
        }
    }

    /// Records a Welcome: who sent it (`controller_id`) and the group's
    /// controllers (lowest id first; addresses that are not `host:port`
    /// are left out, an empty list keeps the last one).
    pub fn welcomed(&mut self, welcome: &Welcome) {
        self.welcomed_by = welcome.controller_id.parse().unwrap_or(0);
        self.handed_by = None;
        self.serve_here = false;
        let usable: Vec<(u64, String)> = welcome
            .members
            .iter()
            .filter(|m| crate::config::check_host_port(&m.address).is_ok())
            .map(|m| (m.id, m.address.clone()))
            .collect();
        if !usable.is_empty() {
            self.members = usable;
        }
    }

    /// Address for the next attempt.
    pub fn current(&self) -> &str {
        &self.current
    }

    /// Whether the next Hello asks to be served by the controller it goes
    /// to (`Hello.serve_here`).
    pub fn serve_here(&self) -> bool {
        self.serve_here
    }

    /// Records how the attempt on [`Self::current`] ended and picks the next
    /// target; returns whether to back off before it.
    pub fn after(&mut self, outcome: &Outcome) -> Wait {
        match outcome {
            Outcome::LostAfterWelcome => {
                // The first other member of the group: when a leader dies,
                // its survivors campaign lowest id first, so that one most
                // likely leads by now (if the old leader only blipped, it
                // redirects back). Without a member list, the same
                // controller once more. A failure there rotates.
                self.redirects = 0;
                let welcomed_by = self.welcomed_by;
                let through = self.current.clone();
                if let Some((_, next)) = self
                    .members
                    .iter()
                    .find(|(id, address)| *id != welcomed_by && *address != through)
                    .cloned()
                {
                    if let Some(i) = self.controllers.iter().position(|c| *c == next) {
                        self.index = i;
                    }
                    self.current = next;
                }
                Wait::Spread
            }
            Outcome::Busy { retry_after } => {
                // The controller answered: it leads, it is only busy.
                self.redirects = 0;
                Wait::Hint(*retry_after)
            }
            Outcome::Failed if self.handed_by.is_some() => {
                // The follower a leader handed us to is out of reach: back
                // to that leader, asking it to serve the session itself.
                self.redirects = 0;
                self.current = self.handed_by.take().unwrap_or_default();
                self.serve_here = true;
                Wait::Spread
            }
            Outcome::Redirected {
                leader_address,
                relay,
            } if !leader_address.is_empty() && self.redirects + 1 < MAX_REDIRECTS => {
                self.redirects += 1;
                // Handed to a follower that does not relay (it sends us
                // back): the leader is to serve us itself.
                self.serve_here = !relay && self.handed_by.is_some();
                self.handed_by = relay.then(|| self.current.clone());
                if let Some(i) = self.controllers.iter().position(|c| c == leader_address) {
                    self.index = i;
                }
                self.current = leader_address.clone();
                Wait::None
            }
            Outcome::Redirected { .. } | Outcome::Failed | Outcome::Rejected => {
                self.redirects = 0;
                self.handed_by = None;
                self.serve_here = false;
                self.rotate();
                Wait::Backoff
            }
        }
    }

    fn rotate(&mut self) {
        self.index = (self.index + 1) % self.controllers.len();
        self.current = self.controllers[self.index].clone();
    }
}

/// Runs sessions until `shutdown` turns true.
pub async fn run_sessions(
    config: &Config,
    host_id: &str,
    reporter: &mut Reporter,
    executor: &Executor,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(
        Duration::from_millis(config.reconnect.initial_backoff_ms),
        Duration::from_millis(config.reconnect.max_backoff_ms),
        fastrand::Rng::new(),
    );
    let mut targets = Targets::for_host(config.controllers.clone(), host_id);
    // The last connection, reused by the next attempt on the same address
    // after a retry hint (see the module docs).
    let mut kept: Option<(String, Channel)> = None;
    // Renews the certificate at two thirds of its life; a renewal ends the
    // current session so the next one uses it.
    tokio::spawn(crate::enroll::run_renewer(
        config.tls_dir(),
        host_id.to_owned(),
        config.controllers.clone(),
        shutdown.clone(),
    ));
    loop {
        let addr = targets.current().to_owned();
        let tls = config.tls_files();
        let tls_dir = config.tls_dir();
        // No valid certificate and an [enroll] section: get one first.
        let enrolled = match &config.enroll {
            None => Ok(false),
            Some(enroll) => tokio::select! {
                biased;
                _ = stopped(&mut shutdown) => return,
                r = crate::enroll::ensure_certificate(&tls_dir, Some(enroll), host_id, &addr) => r,
            },
        };
        let serve_here = targets.serve_here();
        let ended = match enrolled {
            Ok(_) => {
                session(
                    &addr,
                    &mut kept,
                    serve_here,
                    host_id,
                    &tls,
                    reporter,
                    executor,
                    &mut shutdown,
                    &mut targets,
                )
                .await
            }
            Err(e) => Ended::Lost {
                welcomed: false,
                reason: Reason::Enroll(e),
            },
        };
        let (welcomed, reason) = match ended {
            Ended::Shutdown => return,
            Ended::Lost { welcomed, reason } => (welcomed, reason),
        };
        crate::metrics::global().connected(false);
        crate::metrics::global().reconnects.inc();
        let outcome = match &reason {
            // A relay whose leader went away: back to the same follower.
            Reason::Status(s) if welcomed && busy_hint(s).is_some() => Outcome::Busy {
                retry_after: busy_hint(s).unwrap_or_default(),
            },
            _ if welcomed => Outcome::LostAfterWelcome,
            // A bad token or pin does not get better by retrying at once.
            Reason::Enroll(e) if e.is_refusal() => Outcome::Rejected,
            Reason::Status(s)
                if matches!(
                    s.code(),
                    tonic::Code::InvalidArgument
                        | tonic::Code::PermissionDenied
                        | tonic::Code::Unauthenticated
                ) =>
            {
                Outcome::Rejected
            }
            Reason::Status(s) if busy_hint(s).is_some() => Outcome::Busy {
                retry_after: busy_hint(s).unwrap_or_default(),
            },
            Reason::Redirected(r) => {
                if r.relay {
                    info!(
                        controller = %addr,
                        follower = %r.leader_address,
                        "the leader hands this session to a follower that relays it"
                    );
                } else {
                    info!(
                        controller = %addr,
                        leader_id = r.leader_id,
                        leader = %r.leader_address,
                        "redirected to leader"
                    );
                }
                let usable = r.leader_address.is_empty()
                    || match crate::config::check_host_port(&r.leader_address) {
                        Ok(()) => true,
                        Err(problem) => {
                            warn!(
                                controller = %addr,
                                leader = %r.leader_address,
                                "ignoring the redirect: leader_address {problem}"
                            );
                            false
                        }
                    };
                Outcome::Redirected {
                    leader_address: if usable {
                        r.leader_address.clone()
                    } else {
                        String::new()
                    },
                    relay: r.relay,
                }
            }
            _ => Outcome::Failed,
        };
        if !outcome.keeps_connection() {
            kept = None;
        }
        if welcomed {
            backoff.reset();
        }
        if outcome == Outcome::Rejected {
            backoff.jump_to_max();
        }
        let wait = targets.after(&outcome);
        let delay = delay(wait, &mut backoff);
        let retry_in_ms = delay.as_millis() as u64;
        let next = targets.current();
        match (&reason, &outcome) {
            (Reason::Enroll(e), _) => {
                error!(controller = %addr, next = %next, retry_in_ms, "enrollment failed: {e}")
            }
            (Reason::Tls(e), _) => {
                error!(controller = %addr, retry_in_ms, "cannot connect: {e} (the agent needs its certificate there; enroll it or copy the files)")
            }
            (Reason::Status(s), Outcome::Rejected) => {
                error!(controller = %addr, next = %next, retry_in_ms, "controller rejected this agent's report: {}", s.message())
            }
            (_, Outcome::Busy { .. }) => {
                info!(controller = %addr, retry_in_ms, "the controller is busy admitting other agents; retrying it")
            }
            (_, Outcome::LostAfterWelcome) => {
                info!(controller = %addr, next = %next, retry_in_ms, reason = %reason, "disconnected")
            }
            (_, Outcome::Redirected { .. }) if wait == Wait::None => {
                debug!(controller = %addr, next = %next, "following the redirect")
            }
            (_, Outcome::Redirected { .. }) => {
                info!(controller = %addr, next = %next, retry_in_ms, reason = %reason, "not following the redirect now (no leader known yet, or too many redirects in a row); backing off")
            }
            _ => warn!(controller = %addr, next = %next, retry_in_ms, reason = %reason, "session failed"),
        }
        if delay.is_zero() {
            if *shutdown.borrow() {
                return;
            }
            continue;
        }
        tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Loads the TLS files and checks the certificate is this host's.
fn load_tls(files: &TlsFiles, host_id: &str) -> Result<TlsMaterial, String> {
    let material = files.load().map_err(|e| e.to_string())?;
    let want = rpool_proto::pki::Identity::Agent(host_id.to_owned());
    if material.identity != want {
        return Err(format!(
            "{}: certificate is for {}, this host is {want}",
            files.cert.display(),
            material.identity
        ));
    }
    crate::metrics::global().certificate(&material.cert_pem);
    Ok(material)
}

fn endpoint(tls: &TlsMaterial, addr: &str) -> Result<Endpoint, String> {
    Ok(tls
        .endpoint(addr)
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

/// One session on `addr`, from connect (or the kept connection) to loss or
/// shutdown; the Welcome's member list lands in `targets`.
#[allow(clippy::too_many_arguments)]
async fn session(
    addr: &str,
    kept: &mut Option<(String, Channel)>,
    serve_here: bool,
    host_id: &str,
    tls: &TlsFiles,
    reporter: &mut Reporter,
    executor: &Executor,
    shutdown: &mut watch::Receiver<bool>,
    targets: &mut Targets,
) -> Ended {
    let lost = |reason| Ended::Lost {
        welcomed: false,
        reason,
    };
    // Renewals from now on end this session (the files are read just below).
    let mut renewed = crate::enroll::renewals();
    let channel: Channel = match kept.as_ref() {
        Some((to, channel)) if to == addr => {
            debug!(controller = %addr, "opening the session on the kept connection");
            channel.clone()
        }
        _ => {
            let endpoint = match load_tls(tls, host_id).and_then(|tls| endpoint(&tls, addr)) {
                Ok(e) => e,
                Err(e) => return lost(Reason::Tls(e)),
            };
            let connector = crate::connector::RecordingConnector::default();
            let channel: Channel = tokio::select! {
                biased;
                _ = stopped(shutdown) => return Ended::Shutdown,
                r = endpoint.connect_with_connector(connector.clone()) => match r {
                    Ok(c) => c,
                    Err(e) => return lost(Reason::Connect(e)),
                },
            };
            info!(controller = %addr, local = ?connector.local_address(), "connected");
            reporter.set_connection_address(connector.local_address());
            *kept = Some((addr.to_owned(), channel.clone()));
            channel
        }
    };
    let mut client = AgentServiceClient::new(channel).max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES);

    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    let first = reporter.sample();
    let mut sent_facts = first.facts.clone();
    let mut sent_certs = first.certs.clone();
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
            pending_pods: first.pending_pods,
            certs: first.certs.clone(),
        }),
        serve_here,
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
                    // The follower ends the stream right after; do not wait for it.
                    Some(ControllerMsg::Redirect(r)) => return Err(Reason::Redirected(r)),
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
    targets.welcomed(&welcome);
    let period = Duration::from_millis(interval_ms as u64);
    let silence = silence_limit(period, Duration::from_millis(welcome.suspect_after_ms as u64));
    let mut heard = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    crate::metrics::global().connected(true);
    let forwarder = Forwarder(Some(tokio::spawn(forward_results(executor.clone(), tx.clone()))));
    let lost = |reason| Ended::Lost {
        welcomed: true,
        reason,
    };
    loop {
        tokio::select! {
            biased;
            _ = stopped(shutdown) => {
                // End our half of the stream (the forwarder holds a sender
                // too), then give the controller a moment to see it before
                // the connection is dropped.
                forwarder.stop().await;
                drop(tx);
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    while let Ok(Some(_)) = inbound.message().await {}
                })
                .await;
                info!(controller = %addr, "session closed for shutdown");
                return Ended::Shutdown;
            }
            m = inbound.message() => match m {
                Ok(Some(m)) => {
                    heard = tokio::time::Instant::now();
                    match m.msg {
                        Some(ControllerMsg::Task(task)) => executor.submit(task),
                        Some(ControllerMsg::HeartbeatAck(ack)) => crate::metrics::global().heartbeat_acked(ack.seq),
                        other => debug!(?other, "ignoring an unexpected controller message"),
                    }
                }
                Ok(None) => return lost(Reason::ClosedByController),
                Err(status) => return lost(Reason::Status(status)),
            },
            Ok(()) = renewed.changed() => return lost(Reason::Renewed),
            () = tokio::time::sleep_until(heard + silence) => return lost(Reason::Silent(silence)),
            _ = ticker.tick() => {
                seq += 1;
                let report = reporter.sample();
                let changed = facts_changed(&sent_facts, &report.facts);
                let facts = changed.then(|| report.facts.clone());
                let certs = report.certs.clone().filter(|c| sent_certs.as_ref() != Some(c));
                let beat = AgentMessage {
                    msg: Some(AgentMsg::Heartbeat(Heartbeat {
                        seq,
                        sent_at_unix_ms: report.sent_at_unix_ms,
                        utilization: Some(report.utilization),
                        health: report.health,
                        facts,
                        pending_pods: report.pending_pods,
                        certs: certs.clone(),
                    })),
                };
                match tx.try_send(beat) {
                    Ok(()) => {
                        crate::metrics::global().heartbeat_sent(seq);
                        debug!(seq, with_facts = changed, "heartbeat sent");
                        if changed {
                            sent_facts = report.facts;
                        }
                        if certs.is_some() {
                            sent_certs = certs;
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

/// How long a welcomed session may go without a word from the controller
/// while it heartbeats: one heartbeat interval short of `suspect_after`
/// (so the agent is on another controller before a new leader, which
/// counts silence from its own start, takes it for suspect), and never
/// under two intervals (an acknowledgement may be late under load).
pub fn silence_limit(interval: Duration, suspect_after: Duration) -> Duration {
    suspect_after.saturating_sub(interval).max(interval * 2)
}

/// The session's result forwarder; aborted when the session ends.
struct Forwarder(Option<tokio::task::JoinHandle<()>>);

impl Forwarder {
    /// Aborts it and waits until it (and its stream sender) is gone.
    async fn stop(mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
            let _ = handle.await;
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

fn result_message(result: TaskResult) -> AgentMessage {
    AgentMessage {
        msg: Some(AgentMsg::TaskResult(result)),
    }
}

/// Sends recently finished results, then each new one, until the stream
/// closes.
async fn forward_results(executor: Executor, tx: mpsc::Sender<AgentMessage>) {
    let ex = executor.clone();
    let recent = tokio::task::spawn_blocking(move || ex.recent_results())
        .await
        .unwrap_or_default();
    if !recent.is_empty() {
        info!(count = recent.len(), "re-sending recent task results");
    }
    for result in recent {
        if tx.send(result_message(result)).await.is_err() {
            return;
        }
    }
    while let Some(result) = executor.next_result().await {
        let (task_id, attempt, ok) = (result.task_id.clone(), result.attempt, result.ok);
        if tx.send(result_message(result)).await.is_err() {
            debug!(task_id = %task_id, attempt, "stream closed; the result is re-sent after the next Welcome");
            return;
        }
        debug!(task_id = %task_id, attempt, ok, "task result sent");
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
        /// Acknowledges every heartbeat, with this `suspect_after_ms` in
        /// its Welcome; `None`: never acknowledges, Welcome says 3000.
        acks: Option<u32>,
    }

    type Out = Pin<Box<dyn Stream<Item = Result<ControllerMessage, tonic::Status>> + Send>>;

    /// The first message of a session, which must be the Hello.
    async fn read_hello(inbound: &mut tonic::Streaming<AgentMessage>) -> Result<Hello, tonic::Status> {
        match inbound.message().await? {
            Some(AgentMessage {
                msg: Some(AgentMsg::Hello(h)),
            }) => Ok(h),
            other => Err(tonic::Status::invalid_argument(format!(
                "expected hello, got {other:?}"
            ))),
        }
    }

    #[tonic::async_trait]
    impl AgentService for FakeController {
        type SessionStream = Out;

        async fn session(
            &self,
            request: tonic::Request<tonic::Streaming<AgentMessage>>,
        ) -> Result<tonic::Response<Out>, tonic::Status> {
            let mut inbound = request.into_inner();
            // Like a real controller: read the Hello before answering.
            let hello = read_hello(&mut inbound).await?;
            self.events.send(Event::Hello(hello)).unwrap();
            let (out_tx, out_rx) = mpsc::channel(4);
            out_tx
                .send(Ok(ControllerMessage {
                    msg: Some(ControllerMsg::Welcome(Welcome {
                        controller_id: "7".into(),
                        heartbeat_interval_ms: INTERVAL_MS,
                        suspect_after_ms: self.acks.unwrap_or(3000),
                        down_after_ms: 5000,
                        members: vec![],
                    })),
                }))
                .await
                .unwrap();
            let acks = self.acks.is_some();
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
                                if acks {
                                    let ack = ControllerMsg::HeartbeatAck(rpool_proto::v1::HeartbeatAck { seq: hb.seq });
                                    let _ = out_tx.send(Ok(ControllerMessage { msg: Some(ack) })).await;
                                }
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
            Self::start_acking(listener, events, None).await
        }

        /// A controller that acknowledges heartbeats (`Some(suspect_after_ms)`)
        /// or stays silent after its Welcome (`None`).
        async fn start_acking(
            listener: TcpListener,
            events: mpsc::UnboundedSender<Event>,
            acks: Option<u32>,
        ) -> Server {
            let (kill, kill_rx) = watch::channel(false);
            let svc = AgentServiceServer::new(FakeController {
                events,
                kill: kill_rx,
                acks,
            });
            let handle = serve(listener, svc);
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

    /// One CA for the tests of this process.
    fn test_ca() -> &'static rpool_proto::pki::Ca {
        static CA: std::sync::OnceLock<rpool_proto::pki::Ca> = std::sync::OnceLock::new();
        CA.get_or_init(|| rpool_proto::pki::Ca::generate("agent test CA").unwrap())
    }

    /// TLS for a fake controller on 127.0.0.1.
    /// Serves `svc` on `listener` over TLS ([`server_tls`]) until dropped.
    fn serve<S: AgentService>(
        listener: TcpListener,
        svc: AgentServiceServer<S>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .tls_config(server_tls())
                .unwrap()
                .add_service(svc)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        })
    }

    fn server_tls() -> tonic::transport::ServerTlsConfig {
        let ca = test_ca();
        let issued = ca
            .issue(
                &rpool_proto::pki::Identity::Controller(7),
                &["127.0.0.1".into()],
                Duration::from_secs(3600),
            )
            .unwrap();
        TlsMaterial::from_pem(ca.cert_pem(), &issued.cert_pem, &issued.key_pem)
            .unwrap()
            .server_tls()
    }

    /// Pre-creates the host id in `state_dir` and writes an agent
    /// certificate for it into the default TLS directory.
    fn write_agent_tls(config: &Config) -> String {
        let host_id = crate::identity::load_or_create_host_id(&config.state_dir).unwrap();
        let ca = test_ca();
        let issued = ca
            .issue(
                &rpool_proto::pki::Identity::Agent(host_id.clone()),
                &[],
                Duration::from_secs(3600),
            )
            .unwrap();
        let files = config.tls_files();
        rpool_proto::pki::write_public(&files.ca, ca.cert_pem().as_bytes()).unwrap();
        rpool_proto::pki::write_public(&files.cert, issued.cert_pem.as_bytes()).unwrap();
        rpool_proto::pki::write_private(&files.key, issued.key_pem.as_bytes()).unwrap();
        host_id
    }

    /// `crate::run(config)` on its own task, until [`RunningAgent::stop`].
    struct RunningAgent {
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    impl RunningAgent {
        fn start(config: Config) -> RunningAgent {
            let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(crate::run(config, async {
                let _ = stop_rx.await;
            }));
            RunningAgent { stop, task }
        }

        /// Shutdown ends the agent's half of the stream and `run` returns
        /// `Ok` within [`WAIT`].
        async fn stop(self) {
            self.stop.send(()).expect("the agent is still running");
            timeout(WAIT, self.task)
                .await
                .expect("agent stops promptly")
                .unwrap()
                .unwrap();
        }
    }

    fn config(dir: &std::path::Path, addr: SocketAddr) -> Config {
        let config = config_without_tls(dir, addr);
        write_agent_tls(&config);
        config
    }

    fn config_without_tls(dir: &std::path::Path, addr: SocketAddr) -> Config {
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

    #[test]
    fn the_silence_limit_is_an_interval_short_of_suspect_and_at_least_two_intervals() {
        let s = Duration::from_secs;
        assert_eq!(silence_limit(s(1), s(3)), s(2));
        assert_eq!(silence_limit(s(1), s(10)), s(9));
        assert_eq!(silence_limit(s(1), s(2)), s(2));
        assert_eq!(
            silence_limit(s(1), Duration::ZERO),
            s(2),
            "an old controller's Welcome without it"
        );
    }

    #[tokio::test]
    async fn a_controller_that_stops_answering_is_left_before_it_could_be_taken_for_suspect() {
        const SUSPECT_MS: u32 = 600;
        let limit = silence_limit(
            Duration::from_millis(INTERVAL_MS as u64),
            Duration::from_millis(SUSPECT_MS as u64),
        );
        // A controller that acknowledges: the session stays, well past the
        // limit.
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let server = Server::start_acking(listener, events_tx, Some(SUSPECT_MS)).await;
        let agent = RunningAgent::start(config(dir.path(), addr));
        next_hello(&mut events).await;
        let until = Instant::now() + limit * 3;
        while Instant::now() < until {
            next_heartbeat(&mut events).await;
        }
        agent.stop().await;
        server.handle.abort();

        // One that goes silent after its Welcome: the agent drops the
        // session after the limit and says Hello again.
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let server = Server::start_acking(listener, events_tx, None).await;
        let mut config = config(dir.path(), addr);
        config.reconnect.initial_backoff_ms = 10;
        let agent = RunningAgent::start(config);
        next_hello(&mut events).await;
        let welcomed = Instant::now();
        let again = loop {
            match next(&mut events).await {
                Event::Hello(_) => break Instant::now(),
                Event::Heartbeat(..) | Event::Ended(_) => {}
            }
        };
        let silent_limit = silence_limit(Duration::from_millis(INTERVAL_MS as u64), Duration::from_secs(3));
        assert!(
            again - welcomed >= silent_limit,
            "left after {:?}, before the limit {silent_limit:?}",
            again - welcomed
        );
        agent.stop().await;
        server.handle.abort();
    }

    #[tokio::test]
    async fn an_agent_without_tls_files_keeps_retrying_and_connects_once_they_appear() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let server = Server::start(listener, events_tx).await;
        let config = config_without_tls(dir.path(), addr);
        let files = config.tls_files();
        let for_agent = config.clone();
        let agent = RunningAgent::start(for_agent);
        // The agent creates its host id, then fails on the missing files
        // (and keeps retrying) without ever reaching the controller.
        let host_id_file = dir.path().join("state/host_id");
        let deadline = Instant::now() + WAIT;
        while !host_id_file.exists() {
            assert!(Instant::now() < deadline, "the agent never created its host id");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(events.try_recv().is_err(), "no session without a certificate");
        // Files appear: the next attempt reads them and says Hello.
        let host_id = write_agent_tls(&config);
        assert!(files.cert.exists());
        let hello = next_hello(&mut events).await;
        assert_eq!(hello.host_id, host_id);
        agent.stop().await;
        server.handle.abort();
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
        let agent = RunningAgent::start(config);

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
        agent.stop().await;
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

    /// A follower: reads the Hello, answers a Redirect, ends the stream.
    struct Follower {
        leader_id: u64,
        leader_address: String,
        hellos: mpsc::UnboundedSender<Instant>,
    }

    #[tonic::async_trait]
    impl AgentService for Follower {
        type SessionStream = Out;
        async fn session(
            &self,
            request: tonic::Request<tonic::Streaming<AgentMessage>>,
        ) -> Result<tonic::Response<Out>, tonic::Status> {
            let mut inbound = request.into_inner();
            read_hello(&mut inbound).await?;
            let _ = self.hellos.send(Instant::now());
            let redirect = ControllerMessage {
                msg: Some(ControllerMsg::Redirect(Redirect {
                    leader_id: self.leader_id,
                    leader_address: self.leader_address.clone(),
                    relay: false,
                })),
            };
            Ok(tonic::Response::new(
                Box::pin(tokio_stream::iter([Ok(redirect)])) as Out
            ))
        }
    }

    async fn start_follower(
        listener: TcpListener,
        leader_id: u64,
        leader_address: String,
    ) -> mpsc::UnboundedReceiver<Instant> {
        let (hellos, rx) = mpsc::unbounded_channel();
        let svc = AgentServiceServer::new(Follower {
            leader_id,
            leader_address,
            hellos,
        });
        serve(listener, svc);
        rx
    }

    /// A relaying follower whose leader goes away once: its first session
    /// is welcomed, then ended with UNAVAILABLE and a retry hint after the
    /// first heartbeat; the next is welcomed and kept. Reports each Hello
    /// with the connection (client address) it came on.
    struct Relay {
        hellos: mpsc::UnboundedSender<(Instant, Option<SocketAddr>)>,
        sessions: std::sync::atomic::AtomicUsize,
    }

    #[tonic::async_trait]
    impl AgentService for Relay {
        type SessionStream = Out;
        async fn session(
            &self,
            request: tonic::Request<tonic::Streaming<AgentMessage>>,
        ) -> Result<tonic::Response<Out>, tonic::Status> {
            let peer = request.remote_addr();
            let mut inbound = request.into_inner();
            read_hello(&mut inbound).await?;
            let _ = self.hellos.send((Instant::now(), peer));
            let first = self.sessions.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            let (out_tx, out_rx) = mpsc::channel(4);
            let welcome = Welcome {
                controller_id: "1".into(),
                heartbeat_interval_ms: INTERVAL_MS,
                suspect_after_ms: 3000,
                down_after_ms: 5000,
                members: vec![],
            };
            out_tx
                .send(Ok(ControllerMessage {
                    msg: Some(ControllerMsg::Welcome(welcome)),
                }))
                .await
                .unwrap();
            tokio::spawn(async move {
                while let Ok(Some(_)) = inbound.message().await {
                    if first {
                        let mut status = tonic::Status::unavailable("the session's leader went away");
                        status
                            .metadata_mut()
                            .insert(rpool_proto::RETRY_AFTER_MS, 50u64.into());
                        let _ = out_tx.send(Err(status)).await;
                        return;
                    }
                }
            });
            Ok(tonic::Response::new(
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(out_rx)) as Out,
            ))
        }
    }

    #[tokio::test]
    async fn a_relay_that_lost_its_leader_gets_the_agent_back_on_the_same_connection() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hellos, mut hello_rx) = mpsc::unbounded_channel();
        let svc = AgentServiceServer::new(Relay {
            hellos,
            sessions: Default::default(),
        });
        serve(listener, svc);
        // A second configured controller that does not answer: the agent
        // must not rotate to it, and a long backoff shows in the timing.
        let mut config = config(dir.path(), addr);
        config.controllers.push("127.0.0.1:9".to_owned());
        config.reconnect = ReconnectConfig {
            initial_backoff_ms: 5_000,
            max_backoff_ms: 10_000,
        };
        let agent = RunningAgent::start(config);
        let (first_at, first_peer) = timeout(WAIT, hello_rx.recv()).await.unwrap().unwrap();
        let (second_at, second_peer) = timeout(WAIT, hello_rx.recv()).await.unwrap().unwrap();
        assert!(first_peer.is_some());
        assert_eq!(
            first_peer, second_peer,
            "the second session came on the same connection (no new handshake)"
        );
        // One heartbeat interval, then the hint: not the 5 s backoff.
        let back_after = second_at - first_at;
        assert!(
            back_after < Duration::from_secs(3),
            "back within the hint, not after the backoff: {back_after:?}"
        );
        agent.stop().await;
    }

    #[tokio::test]
    async fn a_follower_redirect_leads_to_the_leader_even_when_it_is_not_configured() {
        let dir = tempfile::tempdir().unwrap();
        let leader_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let leader_addr = leader_listener.local_addr().unwrap();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let _leader = Server::start(leader_listener, events_tx).await;
        let follower_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let follower_addr = follower_listener.local_addr().unwrap();
        let mut follower_hellos = start_follower(follower_listener, 2, leader_addr.to_string()).await;

        // Only the follower is configured; the backoff is long, so a
        // redirect followed without backoff is visible in the timing.
        let mut config = config(dir.path(), follower_addr);
        config.reconnect = ReconnectConfig {
            initial_backoff_ms: 5_000,
            max_backoff_ms: 10_000,
        };
        let agent = RunningAgent::start(config);

        let redirected_at = timeout(WAIT, follower_hellos.recv()).await.unwrap().unwrap();
        let hello = next_hello(&mut events).await;
        let welcomed_after = Instant::now() - redirected_at;
        assert!(
            welcomed_after < Duration::from_millis(2_500),
            "the redirect is followed at once, not after the 5s backoff: {welcomed_after:?}"
        );
        assert_eq!(hello.first_heartbeat.unwrap().seq, 1);
        for seq in 2..=3 {
            let (hb, _) = next_heartbeat(&mut events).await;
            assert_eq!(hb.seq, seq, "heartbeating on the leader");
        }
        assert!(
            follower_hellos.try_recv().is_err(),
            "the agent stays on the leader"
        );

        agent.stop().await;
    }

    #[tokio::test]
    async fn followers_naming_each_other_are_followed_at_most_three_times_before_backing_off() {
        // a redirects to b, b redirects to a: an election in progress.
        let dir = tempfile::tempdir().unwrap();
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let mut a_hellos = start_follower(a, 2, b_addr.to_string()).await;
        let mut b_hellos = start_follower(b, 1, a_addr.to_string()).await;
        let mut config = config(dir.path(), a_addr);
        config.reconnect = ReconnectConfig {
            initial_backoff_ms: 400,
            max_backoff_ms: 400,
        };
        let agent = RunningAgent::start(config);
        // a, b, a at once; then a backoff (400ms with jitter: >= 200ms).
        let t1 = timeout(WAIT, a_hellos.recv()).await.unwrap().unwrap();
        let t2 = timeout(WAIT, b_hellos.recv()).await.unwrap().unwrap();
        let t3 = timeout(WAIT, a_hellos.recv()).await.unwrap().unwrap();
        let t4 = timeout(WAIT, a_hellos.recv()).await.unwrap().unwrap();
        assert!(t2 - t1 < Duration::from_millis(190), "{:?}", t2 - t1);
        assert!(t3 - t2 < Duration::from_millis(190), "{:?}", t3 - t2);
        assert!(t4 - t3 >= Duration::from_millis(190), "{:?}", t4 - t3);
        agent.stop().await;
    }

    fn targets(list: &[&str]) -> Targets {
        Targets::new(list.iter().map(|s| s.to_string()).collect())
    }

    fn redirect(to: &str) -> Outcome {
        Outcome::Redirected {
            leader_address: to.to_owned(),
            relay: false,
        }
    }

    #[test]
    fn a_handed_session_goes_to_the_follower_and_back_to_the_leader_if_it_is_out_of_reach() {
        let mut t = targets(&["a:1", "b:1", "c:1"]);
        let handed = Outcome::Redirected {
            leader_address: "c:1".to_owned(),
            relay: true,
        };
        assert_eq!(t.after(&handed), Wait::None);
        assert_eq!(t.current(), "c:1");
        assert!(!t.serve_here());
        // The follower cannot be reached: back to the leader, served there.
        assert_eq!(t.after(&Outcome::Failed), Wait::Spread);
        assert_eq!(t.current(), "a:1");
        assert!(t.serve_here());
        // Welcomed: the next session asks nothing special.
        t.welcomed(&Welcome::default());
        assert!(!t.serve_here());
        // Handed, welcomed through the follower (the Welcome names the
        // leader, 1), then lost: the next is a member that is neither.
        let mut t = targets(&["a:1", "b:1", "c:1"]);
        t.after(&handed);
        t.welcomed(&Welcome {
            controller_id: "1".into(),
            members: [(1, "a:1"), (2, "b:1"), (3, "c:1")]
                .iter()
                .map(|(id, address)| rpool_proto::v1::WelcomeMember {
                    id: *id,
                    address: address.to_string(),
                })
                .collect(),
            ..Default::default()
        });
        assert_eq!(t.after(&Outcome::LostAfterWelcome), Wait::Spread);
        assert_eq!(t.current(), "b:1");
        // A failure after that rotates, as for any failure.
        assert_eq!(t.after(&Outcome::Failed), Wait::Backoff);
        assert!(!t.serve_here());
        // A follower that redirects back instead of relaying: the leader
        // serves the next session.
        let mut t = targets(&["a:1", "b:1", "c:1"]);
        t.after(&handed);
        assert_eq!(t.after(&redirect("a:1")), Wait::None);
        assert_eq!(t.current(), "a:1");
        assert!(t.serve_here());
    }

    #[test]
    fn failures_rotate_through_the_configured_controllers_with_backoff() {
        let mut t = targets(&["a:1", "b:1", "c:1"]);
        assert_eq!(t.current(), "a:1");
        assert_eq!(t.after(&Outcome::Failed), Wait::Backoff);
        assert_eq!(t.current(), "b:1");
        assert_eq!(t.after(&Outcome::Rejected), Wait::Backoff);
        assert_eq!(t.current(), "c:1");
        t.after(&Outcome::Failed);
        assert_eq!(t.current(), "a:1");
    }

    #[test]
    fn a_fleet_starts_spread_over_the_controllers_and_each_host_always_at_the_same_one() {
        let list: Vec<String> = ["a:1", "b:1", "c:1"].iter().map(|s| s.to_string()).collect();
        let mut counts = std::collections::BTreeMap::new();
        for i in 0..3_000 {
            let host = format!("00000000-0000-4000-8000-{i:012x}");
            let first = Targets::for_host(list.clone(), &host).current().to_owned();
            assert_eq!(Targets::for_host(list.clone(), &host).current(), first);
            *counts.entry(first).or_insert(0usize) += 1;
        }
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(counts.values().all(|c| (800..=1_200).contains(c)), "{counts:?}");
        // Rotation goes on from the first one, through every controller.
        let mut t = Targets::for_host(list.clone(), "h1");
        let mut seen = vec![t.current().to_owned()];
        for _ in 0..2 {
            t.after(&Outcome::Failed);
            seen.push(t.current().to_owned());
        }
        seen.sort();
        assert_eq!(seen, list);
        assert_eq!(Targets::for_host(vec!["only:1".into()], "h1").current(), "only:1");
    }

    #[test]
    fn a_broken_welcomed_session_retries_the_same_controller_once_then_rotates() {
        let mut t = targets(&["a:1", "b:1"]);
        assert_eq!(t.after(&Outcome::LostAfterWelcome), Wait::Spread);
        assert_eq!(t.current(), "a:1");
        assert_eq!(t.after(&Outcome::Failed), Wait::Backoff);
        assert_eq!(t.current(), "b:1");
    }

    #[test]
    fn a_broken_welcomed_session_goes_to_the_first_other_member_by_id() {
        let welcome = |by: &str, members: &[(u64, &str)]| Welcome {
            controller_id: by.to_owned(),
            members: members
                .iter()
                .map(|(id, address)| rpool_proto::v1::WelcomeMember {
                    id: *id,
                    address: address.to_string(),
                })
                .collect(),
            ..Default::default()
        };
        let group = [(1, "a:1"), (2, "b:1"), (3, "c:1")];
        let mut t = targets(&["c:1", "b:1", "a:1"]);
        // Welcomed by 3 (the configured first); the group, lowest id first.
        t.welcomed(&welcome("3", &group));
        assert_eq!(t.after(&Outcome::LostAfterWelcome), Wait::Spread);
        assert_eq!(t.current(), "a:1");
        // Welcomed by 1, lost again: the first other by id is 2.
        t.welcomed(&welcome("1", &[]));
        assert_eq!(t.after(&Outcome::LostAfterWelcome), Wait::Spread);
        assert_eq!(t.current(), "b:1");
        // A failure there rotates on from b's place in the configured list.
        assert_eq!(t.after(&Outcome::Failed), Wait::Backoff);
        assert_eq!(t.current(), "a:1");
        // Unusable addresses are left out: no list, the same controller.
        let mut t = targets(&["a:1", "b:1"]);
        t.welcomed(&welcome("1", &[(2, "not an address"), (3, "")]));
        t.after(&Outcome::LostAfterWelcome);
        assert_eq!(t.current(), "a:1");
        // A group of one: the same controller.
        let mut t = targets(&["a:1"]);
        t.welcomed(&welcome("1", &[(1, "a:1")]));
        t.after(&Outcome::LostAfterWelcome);
        assert_eq!(t.current(), "a:1");
    }

    #[test]
    fn a_redirect_goes_to_the_leader_at_once_even_if_unconfigured() {
        let mut t = targets(&["a:1", "b:1", "c:1"]);
        assert_eq!(t.after(&redirect("10.9.9.9:7440")), Wait::None);
        assert_eq!(t.current(), "10.9.9.9:7440");
        // Welcomed there, then lost: the leader is retried first, once.
        t.after(&Outcome::LostAfterWelcome);
        assert_eq!(t.current(), "10.9.9.9:7440");
        // Then rotation resumes after the controller that redirected.
        t.after(&Outcome::Failed);
        assert_eq!(t.current(), "b:1");
    }

    #[test]
    fn a_redirect_to_a_configured_controller_continues_rotation_from_it() {
        let mut t = targets(&["a:1", "b:1", "c:1"]);
        assert_eq!(t.after(&redirect("c:1")), Wait::None);
        assert_eq!(t.current(), "c:1");
        t.after(&Outcome::Failed);
        assert_eq!(t.current(), "a:1");
    }

    #[test]
    fn an_empty_leader_address_backs_off_and_rotates() {
        let mut t = targets(&["a:1", "b:1"]);
        assert_eq!(t.after(&redirect("")), Wait::Backoff);
        assert_eq!(t.current(), "b:1");
    }

    #[test]
    fn the_third_redirect_in_a_row_backs_off_and_the_count_restarts() {
        let mut t = targets(&["a:1", "b:1", "c:1"]);
        assert_eq!(t.after(&redirect("b:1")), Wait::None);
        assert_eq!(t.after(&redirect("a:1")), Wait::None);
        assert_eq!(t.after(&redirect("b:1")), Wait::Backoff);
        assert_eq!(t.current(), "b:1", "rotated from a:1, the last followed");
        assert_eq!(t.after(&redirect("c:1")), Wait::None);
        // A welcome in between resets the count.
        let mut t = targets(&["a:1", "b:1"]);
        t.after(&redirect("b:1"));
        t.after(&redirect("a:1"));
        t.after(&Outcome::LostAfterWelcome);
        assert_eq!(t.after(&redirect("b:1")), Wait::None);
        assert_eq!(t.after(&redirect("a:1")), Wait::None);
    }

    #[test]
    fn a_busy_controller_is_retried_itself_after_a_random_delay_up_to_its_hint() {
        let mut t = targets(&["a:1", "b:1"]);
        t.after(&redirect("b:1"));
        let busy = Outcome::Busy {
            retry_after: Duration::from_millis(800),
        };
        assert_eq!(t.after(&busy), Wait::Hint(Duration::from_millis(800)));
        assert_eq!(t.current(), "b:1", "no rotation away from a busy leader");
        let mut backoff = Backoff::new(
            Duration::from_millis(200),
            Duration::from_millis(500),
            fastrand::Rng::with_seed(11),
        );
        let hinted: Vec<Duration> = (0..200)
            .map(|_| delay(Wait::Hint(Duration::from_millis(800)), &mut backoff))
            .collect();
        assert!(
            hinted.iter().all(|d| *d <= Duration::from_millis(500)),
            "capped at max backoff"
        );
        assert!(hinted.iter().any(|d| *d < Duration::from_millis(50)));
        let redirects: Vec<Duration> = (0..200).map(|_| delay(Wait::None, &mut backoff)).collect();
        assert!(redirects.iter().all(|d| *d <= REDIRECT_SPREAD));
        assert!(
            redirects.iter().collect::<std::collections::BTreeSet<_>>().len() > 100,
            "spread"
        );
        let lost: Vec<Duration> = (0..200).map(|_| delay(Wait::Spread, &mut backoff)).collect();
        assert!(lost.iter().all(|d| *d <= Duration::from_millis(200)));
    }

    #[test]
    fn only_unavailable_with_a_sane_hint_is_busy() {
        let with = |code: tonic::Code, value: &str| {
            let mut status = tonic::Status::new(code, "busy");
            status
                .metadata_mut()
                .insert(rpool_proto::RETRY_AFTER_MS, value.parse().unwrap());
            status
        };
        assert_eq!(
            busy_hint(&with(tonic::Code::Unavailable, "750")),
            Some(Duration::from_millis(750))
        );
        assert_eq!(busy_hint(&with(tonic::Code::ResourceExhausted, "750")), None);
        assert_eq!(busy_hint(&with(tonic::Code::Unavailable, "0")), None);
        assert_eq!(busy_hint(&with(tonic::Code::Unavailable, "soon")), None);
        assert_eq!(busy_hint(&with(tonic::Code::Unavailable, "600001")), None);
        assert_eq!(busy_hint(&tonic::Status::unavailable("no hint")), None);
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
        serve(listener, AgentServiceServer::new(Rejecting(tx)));
        let mut config = config(dir.path(), addr);
        config.reconnect = ReconnectConfig {
            initial_backoff_ms: 10,
            max_backoff_ms: 400,
        };
        let agent = RunningAgent::start(config);
        let first = timeout(WAIT, attempts.recv()).await.unwrap().unwrap();
        let second = timeout(WAIT, attempts.recv()).await.unwrap().unwrap();
        // max 400ms with jitter 0.5x..1.5x: at least 200ms, not initial's 10ms.
        assert!(
            second - first >= Duration::from_millis(190),
            "{:?}",
            second - first
        );
        agent.stop().await;
    }

    /// Sends one task after the Welcome and reports every task result.
    struct TaskingController {
        results: mpsc::UnboundedSender<rpool_proto::v1::TaskResult>,
        sessions: std::sync::atomic::AtomicUsize,
    }

    #[tonic::async_trait]
    impl AgentService for TaskingController {
        type SessionStream = Out;
        async fn session(
            &self,
            request: tonic::Request<tonic::Streaming<AgentMessage>>,
        ) -> Result<tonic::Response<Out>, tonic::Status> {
            let mut inbound = request.into_inner();
            inbound.message().await?;
            let welcome = ControllerMessage {
                msg: Some(ControllerMsg::Welcome(Welcome {
                    controller_id: "1".into(),
                    heartbeat_interval_ms: INTERVAL_MS,
                    suspect_after_ms: 3000,
                    down_after_ms: 5000,
                    members: vec![],
                })),
            };
            let task = ControllerMessage {
                msg: Some(ControllerMsg::Task(rpool_proto::v1::Task {
                    task_id: "fetch-1".into(),
                    attempt: 1,
                    deadline_unix_ms: rpool_proto::clock::unix_ms_now() + 60_000,
                    pool: "web".into(),
                    node_name: "n1".into(),
                    kind: Some(rpool_proto::v1::task::Kind::FetchKubeconfig(
                        rpool_proto::v1::FetchKubeconfig {},
                    )),
                })),
            };
            let results = self.results.clone();
            let first_session = self.sessions.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            let (out_tx, out_rx) = mpsc::channel(4);
            out_tx.send(Ok(welcome)).await.unwrap();
            out_tx.send(Ok(task)).await.unwrap();
            tokio::spawn(async move {
                while let Ok(Some(m)) = inbound.message().await {
                    if let Some(AgentMsg::TaskResult(r)) = m.msg {
                        let _ = results.send(r);
                        if first_session {
                            // End the first session after its result.
                            let _ = out_tx.send(Err(tonic::Status::unavailable("going away"))).await;
                            return;
                        }
                    }
                }
                drop(out_tx);
            });
            Ok(tonic::Response::new(
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(out_rx)) as Out,
            ))
        }
    }

    #[tokio::test]
    async fn a_task_result_is_reported_and_sent_again_after_the_next_welcome() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (results_tx, mut results) = mpsc::unbounded_channel();
        let svc = AgentServiceServer::new(TaskingController {
            results: results_tx,
            sessions: Default::default(),
        });
        serve(listener, svc);
        let config = config(dir.path(), addr);
        let agent = RunningAgent::start(config);
        // fetch_kubeconfig on a host that is no control plane: a failure,
        // persisted, then reported.
        let first = timeout(WAIT, results.recv()).await.unwrap().unwrap();
        assert_eq!(
            (first.task_id.as_str(), first.attempt, first.ok),
            ("fetch-1", 1, false)
        );
        assert!(first.error.contains("not a control plane"), "{}", first.error);
        assert!(dir.path().join("state/tasks/fetch-1.1.json").exists());
        // The controller ends that session; the agent reconnects, re-sends
        // the stored result after the Welcome and answers the re-delivered
        // task from the store: the same result, twice.
        for _ in 0..2 {
            let again = timeout(WAIT, results.recv()).await.unwrap().unwrap();
            assert_eq!(again, first);
        }
        agent.stop().await;
    }
}
