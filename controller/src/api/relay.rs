//! Relayed agent sessions: followers hold the agents' connections, the
//! leader holds their sessions.
//!
//! An agent session costs its controller a TLS connection and an HTTP/2
//! connection with fixed buffers (about 45 KiB each, measured at 10,000
//! agents), and a TLS handshake each time the agent reconnects. The leader
//! needs the session (it owns liveness and dispatch), not the connection:
//!
//! - A **follower** that receives a Hello does not redirect the agent to the
//!   leader. It opens the session on the leader through its one
//!   `RelayService.Sessions` stream to that leader (made for the leader and
//!   term it knows, shared by every agent it relays): an `open` entry with
//!   the agent's identity (the follower checked the agent's certificate
//!   against the Hello; the leader checks again that the Hello is that
//!   agent's) and the Hello, then the agent's messages, keyed by session.
//!   The leader runs the session as it runs a direct one, fed from a queue
//!   instead of a stream ([`crate::api::agent::Inbound`]): validation,
//!   liveness and tasks stay the leader's. Both directions are batched:
//!   whatever is queued when the writer runs goes in one message, so a
//!   relayed heartbeat costs the leader a share of one HTTP/2 frame and no
//!   stream, connection or TLS record of its own. A relayed session costs
//!   the leader its task, two queues and a forwarding task (~9 KiB), not
//!   the ~45 KiB of a connection.
//! - A **leader** with a reachable follower answers a direct Hello with a
//!   `Redirect { relay: true }` naming a follower (chosen by the host id, so
//!   the fleet spreads evenly and an agent keeps going to the same one) —
//!   except while it is busy admitting sessions (a failover): then it keeps
//!   them, rather than sending the fleet through a second handshake.
//! - When the relaying follower learns of a new leader or term, or loses
//!   the upstream stream, it ends the agent's stream with `UNAVAILABLE` and
//!   a retry hint ([`RELAY_RETRY_HINT`]): the agent comes back to the same
//!   follower after a random delay up to it and is relayed to the new
//!   leader (or served, if that follower now leads). A leader's verdict on
//!   the session (invalid message, permission, replaced by a newer one) is
//!   passed on unchanged.
//! - A relaying follower that knows no leader for an election timeout
//!   after its own ran out (it is cut off from the group: after a
//!   leader's death an election ends well within it) ends its agents' streams with `UNAVAILABLE` and
//!   no hint: each agent goes to another controller, one that can reach
//!   the leader. The leader would otherwise hear nothing from them and
//!   take them for down.
//! - A leader that does not serve `RelayService` (0.1.0, during a rolling
//!   upgrade) gets the follower's agents by `Redirect`.
//! - A follower that knows no leader within [`LEADER_WAIT`] answers with a
//!   `Redirect` naming none (the agent backs off and tries another
//!   controller), as before relays existed.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpool_proto::v1::agent_message::Msg;
use rpool_proto::v1::relay_service_client::RelayServiceClient;
use rpool_proto::v1::relay_service_server::RelayService;
use rpool_proto::v1::{
    self, AgentMessage, ControllerMessage, Hello, RelayClose, RelayDown, RelayDownEntry, RelayEnd, RelayOpen,
    RelayUp, RelayUpEntry, relay_down_entry, relay_up_entry,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::agent::{AgentSvc, End, Inbound, Leadership, inbound_error};
use crate::Shared;
use crate::leader::dispatch::Outbound;

/// How long a follower waits for a leader to be known before it sends the
/// agent elsewhere (an election after a leader's death takes tens of ms).
pub const LEADER_WAIT: Duration = Duration::from_secs(2);
/// Retry hint when a relayed session ends because its leader went away.
pub const RELAY_RETRY_HINT: Duration = Duration::from_millis(1_000);
/// Entries queued toward the leader on one relay stream (all sessions).
const UP_CAPACITY: usize = 16_384;
/// Entries queued toward the followers' agents on one relay stream.
const DOWN_CAPACITY: usize = 16_384;
/// Entries in one batch, either way.
const MAX_BATCH: usize = 1_024;
/// Batches between two sweeps of the leader's queues of ended sessions.
const PRUNE_EVERY: u64 = 256;
/// Bytes after which a batch is sent: one more entry (at most one agent
/// message's limit) still fits in [`MAX_RELAY_MESSAGE_BYTES`].
const MAX_BATCH_BYTES: usize = 1 << 20;
/// The largest relay batch either end decodes.
pub const MAX_RELAY_MESSAGE_BYTES: usize = MAX_BATCH_BYTES + 2 * crate::MAX_DECODING_MESSAGE_BYTES;
/// Messages queued for one relayed session, either side. A session whose
/// queue is full is ended (its agent reconnects): one slow session never
/// holds up the others on the stream.
const SESSION_CAPACITY: usize = 32;
/// HTTP/2 connection window of the relay connection (both ends): every
/// relayed session shares it.
pub const RELAY_CONNECTION_WINDOW: u32 = 8 << 20;

/// Which relay stream a relayed session uses, and its key there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upstream {
    pub leader_id: u64,
    pub term: u64,
    /// The session's key on the stream (this controller's session id).
    pub key: u64,
}

/// What the leader sends one relayed session.
type Down = relay_down_entry::What;

// Queue slots are boxes: tokio allocates a queue's slots 32 at a time,
// and these messages are hundreds of bytes inline (a Hello's facts), so
// 10,000 sessions' queues of unboxed messages held ~30 KiB each.

/// A follower's relay stream to the leader it knows, made lazily, shared by
/// every session it relays while the same leader leads in the same term.
#[derive(Default)]
pub(crate) struct RelayLink(Mutex<Option<Arc<Stream>>>);

/// One `RelayService.Sessions` stream, follower side.
struct Stream {
    leader_id: u64,
    term: u64,
    up: mpsc::Sender<Box<RelayUpEntry>>,
    /// The leader does not serve `RelayService` (a 0.1.0 leader during a
    /// rolling upgrade): agents are redirected to it instead.
    unsupported: std::sync::atomic::AtomicBool,
    /// Ends the stream: a stream for another leader or term replaced it.
    stop: tokio::sync::Notify,
    /// The sessions on it, by key; emptied (every session told) when the
    /// stream ends.
    sessions: Mutex<Option<HashMap<u64, mpsc::Sender<Box<Down>>>>>,
}

impl Stream {
    /// Routes one entry from the leader to its session. A session whose
    /// queue is full is dropped from the stream: its task sees its queue
    /// close and ends the agent's stream with a retry hint.
    fn route(&self, entry: RelayDownEntry) {
        let Some(what) = entry.what else { return };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sessions) = sessions.as_mut() else { return };
        let closing = matches!(what, Down::Close(_));
        let full = match sessions.get(&entry.key) {
            Some(queue) => queue.try_send(Box::new(what)).is_err(),
            None => return,
        };
        if closing || full {
            if full {
                warn!(key = entry.key, "a relayed session's queue is full; ending it");
            }
            sessions.remove(&entry.key);
        }
    }

    /// Ends the stream for every session on it.
    fn close(&self) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Takes `key` off the stream and tells the leader the agent's side
    /// ended (unless the leader ended it first).
    fn leave(&self, key: u64) {
        let was_on = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .is_some_and(|s| s.remove(&key).is_some());
        if !was_on {
            return;
        }
        let end = Box::new(RelayUpEntry {
            key,
            what: Some(relay_up_entry::What::End(RelayEnd {})),
        });
        if let Err(mpsc::error::TrySendError::Full(end)) = self.up.try_send(end) {
            let up = self.up.clone();
            tokio::spawn(async move {
                let _ = up.send(end).await;
            });
        }
    }
}

impl RelayLink {
    /// Puts session `key` on the stream to `to.leader_id` in `to.term`
    /// (making it if need be); returns the stream and the session's queue.
    fn join(
        &self,
        shared: &Shared,
        to: Upstream,
    ) -> Result<(Arc<Stream>, mpsc::Receiver<Box<Down>>), Status> {
        let (queue, rx) = mpsc::channel(SESSION_CAPACITY);
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stream) = &*cached
            && stream.leader_id == to.leader_id
            && stream.term == to.term
            && let Some(sessions) = stream.sessions.lock().unwrap_or_else(|e| e.into_inner()).as_mut()
        {
            sessions.insert(to.key, queue);
            return Ok((stream.clone(), rx));
        }
        let address = shared
            .address_of(to.leader_id)
            .ok_or_else(|| relay_retry(&format!("the address of leader {} is unknown", to.leader_id)))?;
        let channel = shared
            .tls
            .controller_endpoint(&address, to.leader_id)
            .map_err(|e| Status::internal(format!("leader address {address:?}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .initial_connection_window_size(RELAY_CONNECTION_WINDOW)
            .initial_stream_window_size(RELAY_CONNECTION_WINDOW)
            .connect_lazy();
        let (up, up_rx) = mpsc::channel(UP_CAPACITY);
        let stream = Arc::new(Stream {
            leader_id: to.leader_id,
            term: to.term,
            up,
            unsupported: std::sync::atomic::AtomicBool::new(false),
            stop: tokio::sync::Notify::new(),
            sessions: Mutex::new(Some(HashMap::from([(to.key, queue)]))),
        });
        // The stream to an earlier leader or term ends with its sessions
        // (they are ending anyway: the leadership moved).
        if let Some(old) = cached.replace(stream.clone()) {
            old.stop.notify_one();
        }
        tokio::spawn(drive(stream.clone(), channel, up_rx, shared.shutdown.clone()));
        info!(
            leader_id = to.leader_id,
            term = to.term,
            "relay stream to the leader opened"
        );
        Ok((stream, rx))
    }
}

/// Runs one relay stream (follower side) until it fails or the controller
/// stops; then every session on it ends.
async fn drive(
    stream: Arc<Stream>,
    channel: tonic::transport::Channel,
    up_rx: mpsc::Receiver<Box<RelayUpEntry>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (batches, batches_rx) = mpsc::channel(4);
    let batcher = tokio::spawn(batch(up_rx, batches, |entries| RelayUp { entries }));
    let request = Request::new(ReceiverStream::new(batches_rx));
    let mut client = RelayServiceClient::new(channel)
        .max_decoding_message_size(MAX_RELAY_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_RELAY_MESSAGE_BYTES);
    let leader_id = stream.leader_id;
    let run = async {
        let mut down = client.sessions(request).await?.into_inner();
        while let Some(batch) = down.message().await? {
            for entry in batch.entries {
                stream.route(entry);
            }
        }
        Ok::<_, Status>(())
    };
    tokio::select! {
        r = run => match r {
            Ok(()) => info!(leader_id, "the leader ended the relay stream"),
            Err(status) => {
                info!(leader_id, code = ?status.code(), error = status.message(), "relay stream to the leader failed");
                if status.code() == tonic::Code::Unimplemented {
                    stream.unsupported.store(true, Ordering::Relaxed);
                }
            }
        },
        _ = crate::stopped(&mut shutdown) => {}
        () = stream.stop.notified() => debug!(leader_id, "relay stream replaced by one for a newer leader or term"),
    }
    stream.close();
    batcher.abort();
}

/// Sends what `rx` holds as batches of at most [`MAX_BATCH`] entries and
/// about [`MAX_BATCH_BYTES`]: whatever is queued when the previous batch
/// has gone, so batches grow with the load and an idle stream adds no
/// delay.
async fn batch<E: prost::Message, B>(
    mut rx: mpsc::Receiver<Box<E>>,
    out: mpsc::Sender<B>,
    wrap: impl Fn(Vec<E>) -> B,
) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.encoded_len();
        let mut entries = vec![*first];
        while entries.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(entry) => {
                    bytes += entry.encoded_len();
                    entries.push(*entry);
                }
                Err(_) => break,
            }
        }
        if out.send(wrap(entries)).await.is_err() {
            return;
        }
    }
}

/// What a follower does with a Hello.
pub(crate) enum Route {
    /// This controller leads now: serve the session here.
    Serve,
    /// Relay to this leader, known in this term.
    Relay { leader_id: u64, term: u64 },
    /// No leader known within [`LEADER_WAIT`].
    NoLeader,
}

/// Waits (at most [`LEADER_WAIT`]) until a leader is known.
pub(crate) async fn route(leadership: &mut watch::Receiver<Leadership>) -> Route {
    let known = tokio::time::timeout(LEADER_WAIT, async {
        leadership
            .wait_for(|l| l.leading || l.leader_id != 0)
            .await
            .map(|l| *l)
    })
    .await;
    match known {
        Ok(Ok(l)) if l.leading => Route::Serve,
        Ok(Ok(l)) => Route::Relay {
            leader_id: l.leader_id,
            term: l.term,
        },
        _ => Route::NoLeader,
    }
}

/// UNAVAILABLE with [`RELAY_RETRY_HINT`]: come back here, it is relayed
/// to whoever leads by then.
pub(crate) fn relay_retry(why: &str) -> Status {
    let hint = RELAY_RETRY_HINT.as_millis() as u64;
    let mut status = Status::unavailable(format!("{why}; reconnect to this controller within {hint} ms"));
    status.metadata_mut().insert(
        rpool_proto::RETRY_AFTER_MS,
        tonic::metadata::MetadataValue::from(hint),
    );
    status
}

/// How an upstream failure reaches the agent: the leader's verdicts on the
/// session as they are; a lost or refused upstream as [`relay_retry`]
/// (keeping a busy leader's own hint).
fn from_upstream(status: Status, leader_id: u64) -> Status {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::FailedPrecondition
        | Code::DeadlineExceeded => status,
        Code::Unavailable if status.metadata().contains_key(rpool_proto::RETRY_AFTER_MS) => {
            let mut passed = Status::unavailable(status.message());
            if let Some(hint) = status.metadata().get(rpool_proto::RETRY_AFTER_MS) {
                passed
                    .metadata_mut()
                    .insert(rpool_proto::RETRY_AFTER_MS, hint.clone());
            }
            passed
        }
        _ => relay_retry(&format!(
            "the session's leader {leader_id} went away ({})",
            status.message()
        )),
    }
}

/// The leader's `close` as a status: `None` for a session it ended without
/// one.
fn close_status(close: &RelayClose) -> Option<Status> {
    if close.code == 0 {
        return None;
    }
    let mut status = Status::new(tonic::Code::from_i32(close.code), close.message.clone());
    if close.retry_after_ms > 0 {
        status.metadata_mut().insert(
            rpool_proto::RETRY_AFTER_MS,
            tonic::metadata::MetadataValue::from(close.retry_after_ms),
        );
    }
    Some(status)
}

/// A status as the leader's `close` (see [`close_status`]).
fn close_of(status: Option<&Status>) -> RelayClose {
    match status {
        None => RelayClose::default(),
        Some(status) => RelayClose {
            code: status.code() as i32,
            message: status.message().to_owned(),
            retry_after_ms: status
                .metadata()
                .get(rpool_proto::RETRY_AFTER_MS)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        },
    }
}

/// Counts a relayed session while it is open.
struct OpenGauge;

impl OpenGauge {
    fn new() -> OpenGauge {
        crate::metrics::global()
            .sessions_relayed
            .fetch_add(1, Ordering::Relaxed);
        OpenGauge
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        crate::metrics::global()
            .sessions_relayed
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes a relayed session off its stream however it ends.
struct OnStream(Arc<Stream>, u64);

impl Drop for OnStream {
    fn drop(&mut self) {
        self.0.leave(self.1);
    }
}

/// Relays one agent session to `to.leader_id` (known in `to.term`) until
/// either side ends it or the leadership moves. `setup` is released once
/// the leader's Welcome has gone to the agent.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    shared: &Shared,
    link: &RelayLink,
    to: Upstream,
    agent_uri: &str,
    hello: Hello,
    inbound: &mut Inbound,
    tx: &mpsc::Sender<Outbound>,
    setup: tokio::sync::OwnedSemaphorePermit,
    mut leadership: watch::Receiver<Leadership>,
) -> Result<End, Status> {
    let Upstream { leader_id, term, key } = to;
    let (stream, mut down) = link.join(shared, to)?;
    let _on_stream = OnStream(stream.clone(), key);
    let open = Box::new(RelayUpEntry {
        key,
        what: Some(relay_up_entry::What::Open(RelayOpen {
            agent: agent_uri.to_owned(),
            hello: Some(hello),
        })),
    });
    if stream.up.send(open).await.is_err() {
        return Err(relay_retry(&format!("the stream to leader {leader_id} closed")));
    }
    let grace = lost_leader_grace(shared);

    // The leader's first answer: a Welcome (passed on), or a refusal.
    let first = tokio::select! {
        r = tokio::time::timeout(super::agent::HELLO_TIMEOUT, down.recv()) => match r {
            Ok(first) => first,
            Err(_) => return Err(relay_retry(&format!("leader {leader_id} did not answer the hello"))),
        },
        u = upheaval(&mut leadership, leader_id, term, grace) => return Err(u.status("the leadership moved while the session opened", leader_id, grace)),
    };
    match first.map(|d| *d) {
        Some(Down::Message(ControllerMessage {
            msg: Some(v1::controller_message::Msg::Welcome(welcome)),
        })) => {
            let welcome = ControllerMessage {
                msg: Some(v1::controller_message::Msg::Welcome(welcome)),
            };
            if tx.send(Box::new(Ok(welcome))).await.is_err() {
                return Ok(End::AgentGone);
            }
        }
        // It stopped leading between our look and its answer.
        Some(Down::Message(ControllerMessage {
            msg: Some(v1::controller_message::Msg::Redirect(_)),
        })) => return Err(relay_retry(&format!("controller {leader_id} no longer leads"))),
        Some(Down::Message(_)) => {
            return Err(relay_retry(&format!(
                "leader {leader_id} answered the hello out of protocol"
            )));
        }
        Some(Down::Close(close)) => {
            return match close_status(&close) {
                Some(status) => Err(from_upstream(status, leader_id)),
                None => Err(relay_retry(&format!("leader {leader_id} closed the session"))),
            };
        }
        None => return stream_closed(shared, &stream, tx).await,
    }
    drop(setup);
    let _open = OpenGauge::new();
    debug!(leader_id, "relaying the agent session to the leader");

    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            biased;
            _ = crate::stopped(&mut shutdown) => return Err(Status::unavailable("the controller is shutting down")),
            u = upheaval(&mut leadership, leader_id, term, grace) => return Err(u.status("the leadership moved", leader_id, grace)),
            _ = tx.closed() => return Ok(End::AgentGone),
            d = down.recv() => match d.map(|d| *d) {
                Some(Down::Message(message)) => {
                    if tx.send(Box::new(Ok(message))).await.is_err() {
                        return Ok(End::AgentGone);
                    }
                }
                Some(Down::Close(close)) => return match close_status(&close) {
                    Some(status) => Err(from_upstream(status, leader_id)),
                    None => Ok(End::ClosedByLeader),
                },
                None => return stream_closed(shared, &stream, tx).await,
            },
            up = inbound.message() => match up {
                Ok(Some(message)) => {
                    let entry = Box::new(RelayUpEntry { key, what: Some(relay_up_entry::What::Message(message)) });
                    if stream.up.send(entry).await.is_err() {
                        return Err(relay_retry(&format!("the stream to leader {leader_id} closed")));
                    }
                }
                Ok(None) => return Ok(End::ClosedByAgent),
                Err(status) => {
                    info!(leader_id, "relayed agent stream failed");
                    return inbound_error(status);
                }
            },
        }
    }
}

/// A session's relay stream ended under it: the agent comes back here
/// (retry hint) and is relayed again — or, if the leader does not serve
/// relay streams at all (an older version), goes to the leader itself.
async fn stream_closed(shared: &Shared, stream: &Stream, tx: &mpsc::Sender<Outbound>) -> Result<End, Status> {
    let leader_id = stream.leader_id;
    if !stream.unsupported.load(Ordering::Relaxed) {
        return Err(relay_retry(&format!("the stream to leader {leader_id} closed")));
    }
    let message = ControllerMessage {
        msg: Some(v1::controller_message::Msg::Redirect(v1::Redirect {
            leader_id,
            leader_address: shared.address_of(leader_id).unwrap_or_default(),
            relay: false,
        })),
    };
    let _ = tx.send(Box::new(Ok(message))).await;
    Ok(End::Redirected(leader_id))
}

/// What became of the leadership a relayed session counts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upheaval {
    /// Another leader or term, this controller leads, or the replica
    /// stopped: the agent comes back here (retry hint).
    Moved,
    /// No leader known for a whole grace period: this controller is cut
    /// off from the group (a leader's death is followed by an election
    /// well within it). The agent goes to another controller.
    Lost,
}

impl Upheaval {
    /// How the agent's stream ends: come back here (a retry hint saying
    /// `moved`), or go to another controller ([`cut_off`]).
    fn status(self, moved: &str, leader_id: u64, grace: Duration) -> Status {
        match self {
            Upheaval::Moved => relay_retry(moved),
            Upheaval::Lost => cut_off(leader_id, grace),
        }
    }
}

/// Resolves once the leadership the session relays to (`leader_id` in
/// `term`) has moved, or has been unknown for `grace`.
async fn upheaval(
    leadership: &mut watch::Receiver<Leadership>,
    leader_id: u64,
    term: u64,
    grace: Duration,
) -> Upheaval {
    let moved =
        |l: &Leadership| l.leading || l.term != term || (l.leader_id != 0 && l.leader_id != leader_id);
    loop {
        let now = *leadership.borrow_and_update();
        if moved(&now) {
            return Upheaval::Moved;
        }
        if now.leader_id == 0 {
            // No watch guard is held across an await.
            let back = tokio::time::timeout(grace, async {
                leadership
                    .wait_for(|l| l.leader_id != 0 || moved(l))
                    .await
                    .is_ok()
            })
            .await;
            match back {
                Err(_) => return Upheaval::Lost,
                Ok(false) => return Upheaval::Moved,
                Ok(true) => continue,
            }
        }
        if leadership.changed().await.is_err() {
            return Upheaval::Moved;
        }
    }
}

/// How long a relaying follower that knows no leader waits for one before
/// it sends its agents elsewhere: the shortest election timeout, 0.4 s by
/// default. A follower forgets the leader when its own election timeout
/// runs out; if the leader died, that follower's pre-vote (or the other
/// one's, already under way) elects a new leader within a round trip or
/// two. Longer would eat into the budget of its agents, whose last
/// heartbeat the leader heard up to one interval before the cut and which
/// it takes for suspect 3 s after that.
fn lost_leader_grace(shared: &Shared) -> Duration {
    let raft = &shared.config.raft;
    Duration::from_millis(raft.election_ticks * raft.tick_ms)
}

/// The agent's session ends: this controller lost the leader. Without a
/// retry hint the agent goes to another controller of the group, which
/// can reach the leader.
fn cut_off(leader_id: u64, grace: Duration) -> Status {
    crate::metrics::global().relays_cut_off.inc();
    Status::unavailable(format!(
        "this controller has known no leader for {} ms past its election timeout (leader {leader_id} is out of its reach); connect to another controller",
        grace.as_millis()
    ))
}

/// `RelayService`, the leader's end of the followers' relay streams.
pub struct RelaySvc {
    agents: AgentSvc,
    shutdown: watch::Receiver<bool>,
}

impl RelaySvc {
    pub(crate) fn new(agents: AgentSvc, shutdown: watch::Receiver<bool>) -> RelaySvc {
        RelaySvc { agents, shutdown }
    }
}

#[tonic::async_trait]
impl RelayService for RelaySvc {
    type SessionsStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<RelayDown, Status>> + Send + 'static>>;

    async fn sessions(
        &self,
        request: Request<Streaming<RelayUp>>,
    ) -> Result<Response<Self::SessionsStream>, Status> {
        // The authorization layer admits controller certificates only.
        let via = match crate::api::authz::caller(&request) {
            Some(rpool_proto::pki::Identity::Controller(id)) => *id,
            _ => {
                return Err(Status::permission_denied(
                    "only controllers may relay agent sessions",
                ));
            }
        };
        let up = request.into_inner();
        let (down, down_rx) = mpsc::channel::<Box<RelayDownEntry>>(DOWN_CAPACITY);
        let (batches, batches_rx) = mpsc::channel(4);
        tokio::spawn(batch(down_rx, batches, |entries| Ok(RelayDown { entries })));
        tokio::spawn(serve_stream(
            self.agents.clone(),
            via,
            up,
            down,
            self.shutdown.clone(),
        ));
        info!(follower = via, "relay stream from a follower opened");
        Ok(Response::new(Box::pin(ReceiverStream::new(batches_rx))))
    }
}

/// Serves one follower's relay stream (leader side) until it ends; then
/// every session on it ends as if its agent had closed it.
async fn serve_stream(
    agents: AgentSvc,
    via: u64,
    mut up: Streaming<RelayUp>,
    down: mpsc::Sender<Box<RelayDownEntry>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sessions: HashMap<u64, mpsc::Sender<Box<AgentMessage>>> = HashMap::new();
    let mut batches = 0u64;
    loop {
        // The follower sends no `end` for a session the leader ended
        // first: such queues are dropped here now and then.
        batches += 1;
        if batches % PRUNE_EVERY == 0 {
            sessions.retain(|_, queue| !queue.is_closed());
        }
        let batch = tokio::select! {
            b = up.message() => b,
            _ = crate::stopped(&mut shutdown) => break,
        };
        let batch = match batch {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(status) => {
                info!(follower = via, code = ?status.code(), error = status.message(), "relay stream from a follower failed");
                break;
            }
        };
        for entry in batch.entries {
            let key = entry.key;
            match entry.what {
                Some(relay_up_entry::What::Open(open)) => {
                    if let Some(queue) = open_relayed(&agents, via, key, open, &down) {
                        sessions.insert(key, queue);
                    }
                }
                Some(relay_up_entry::What::Message(message)) => {
                    let sent = sessions.get(&key).map(|q| q.try_send(Box::new(message)));
                    match sent {
                        None | Some(Ok(())) => {}
                        Some(Err(mpsc::error::TrySendError::Full(_))) => {
                            warn!(
                                follower = via,
                                key, "a relayed session's queue is full; ending it"
                            );
                            sessions.remove(&key);
                        }
                        // The session already ended (the leader's `close` is on its way).
                        Some(Err(mpsc::error::TrySendError::Closed(_))) => {
                            sessions.remove(&key);
                        }
                    }
                }
                Some(relay_up_entry::What::End(_)) => {
                    sessions.remove(&key);
                }
                None => {}
            }
        }
    }
    info!(
        follower = via,
        sessions = sessions.len(),
        "relay stream from a follower ended"
    );
}

/// Starts the session a follower opened under `key`; returns its queue, or
/// `None` after sending the leader's refusal.
fn open_relayed(
    agents: &AgentSvc,
    via: u64,
    key: u64,
    open: RelayOpen,
    down: &mpsc::Sender<Box<RelayDownEntry>>,
) -> Option<mpsc::Sender<Box<AgentMessage>>> {
    let refuse = |status: Status| {
        let close = Box::new(RelayDownEntry {
            key,
            what: Some(relay_down_entry::What::Close(close_of(Some(&status)))),
        });
        if down.try_send(close).is_err() {
            warn!(follower = via, key, "relay stream full; a refusal was not sent");
        }
        None
    };
    let controller = rpool_proto::pki::Identity::Controller(via);
    let host = match crate::api::authz::relayed_agent(&controller, Some(&open.agent)) {
        Ok((rpool_proto::pki::Identity::Agent(host), _)) => host,
        Ok(_) => return refuse(Status::permission_denied("a relayed session must name an agent")),
        Err(denial) => {
            return refuse(denial.record(&controller.to_string(), "/rpool.v1.RelayService/Sessions"));
        }
    };
    let Some(hello) = open.hello else {
        return refuse(Status::invalid_argument(
            "open.hello: missing (accepted: the agent's Hello)",
        ));
    };
    let (queue, queued) = mpsc::channel(SESSION_CAPACITY);
    // Room for one: cannot fail.
    let _ = queue.try_send(Box::new(AgentMessage {
        msg: Some(Msg::Hello(hello)),
    }));
    let relayed = Some(crate::api::authz::Relayed { via });
    match agents.start(host, relayed, None, Inbound::Relayed(queued)) {
        Ok(out) => {
            tokio::spawn(forward(key, out, down.clone()));
            Some(queue)
        }
        Err(status) => refuse(status),
    }
}

/// Copies what a relayed session sends its agent onto the relay stream,
/// then its `close`.
async fn forward(key: u64, mut out: mpsc::Receiver<Outbound>, down: mpsc::Sender<Box<RelayDownEntry>>) {
    let mut ended = None;
    while let Some(message) = out.recv().await {
        match *message {
            Ok(message) => {
                let entry = Box::new(RelayDownEntry {
                    key,
                    what: Some(relay_down_entry::What::Message(message)),
                });
                if down.send(entry).await.is_err() {
                    return;
                }
            }
            Err(status) => {
                ended = Some(status);
                break;
            }
        }
    }
    let close = Box::new(RelayDownEntry {
        key,
        what: Some(relay_down_entry::What::Close(close_of(ended.as_ref()))),
    });
    let _ = down.send(close).await;
}

/// The follower a leader hands `host_id`'s session to: among the other
/// members it heard from within the last election timeout, the one the
/// host id hashes to (stable, and even over a fleet); `None` when there is
/// none.
pub(crate) fn follower_for(shared: &Shared, host_id: &str) -> Option<(u64, String)> {
    let status = shared.node.status();
    let mut candidates: Vec<u64> = status
        .recent_active
        .iter()
        .copied()
        .filter(|id| *id != shared.config.id && (status.voters.contains(id) || status.learners.contains(id)))
        .collect();
    candidates.sort_unstable();
    candidates.dedup();
    if candidates.is_empty() {
        return None;
    }
    let pick = candidates[rpool_proto::spread(host_id, candidates.len())];
    shared.address_of(pick).map(|address| (pick, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaders_close_carries_its_status_and_hint_to_the_follower() {
        assert!(
            close_status(&close_of(None)).is_none(),
            "no status: ended normally"
        );
        let mut busy = Status::unavailable("setting up 128 other agent sessions");
        busy.metadata_mut()
            .insert(rpool_proto::RETRY_AFTER_MS, 2000u64.into());
        for status in [busy, Status::invalid_argument("heartbeat.seq: 3 (accepted: > 7)")] {
            let back = close_status(&close_of(Some(&status))).expect("a status");
            assert_eq!((back.code(), back.message()), (status.code(), status.message()));
            assert_eq!(
                back.metadata()
                    .get(rpool_proto::RETRY_AFTER_MS)
                    .map(|v| v.to_str().unwrap().to_owned()),
                status
                    .metadata()
                    .get(rpool_proto::RETRY_AFTER_MS)
                    .map(|v| v.to_str().unwrap().to_owned()),
            );
        }
    }

    fn heartbeat_entry(key: u64, facts_bytes: usize) -> RelayUpEntry {
        let heartbeat = v1::Heartbeat {
            seq: key,
            facts: Some(v1::HostFacts {
                hostname: "h".repeat(facts_bytes),
                ..Default::default()
            }),
            ..Default::default()
        };
        RelayUpEntry {
            key,
            what: Some(relay_up_entry::What::Message(AgentMessage {
                msg: Some(Msg::Heartbeat(heartbeat)),
            })),
        }
    }

    #[tokio::test]
    async fn batches_take_what_is_queued_in_order_up_to_their_bounds() {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let (out, mut batches) = mpsc::channel(16);
        // More entries than one batch holds, queued before the batcher runs.
        for key in 0..(MAX_BATCH as u64 + 10) {
            tx.try_send(Box::new(heartbeat_entry(key, 8))).unwrap();
        }
        // Then entries of 300 KiB: four of them pass MAX_BATCH_BYTES.
        for key in 0..6 {
            tx.try_send(Box::new(heartbeat_entry(10_000 + key, 300 << 10)))
                .unwrap();
        }
        drop(tx);
        tokio::spawn(batch(rx, out, |entries| RelayUp { entries }));
        let mut sizes = Vec::new();
        let mut keys = Vec::new();
        while let Some(b) = batches.recv().await {
            assert!(
                prost::Message::encoded_len(&b) <= MAX_RELAY_MESSAGE_BYTES,
                "a batch over the decoding limit"
            );
            sizes.push(b.entries.len());
            keys.extend(b.entries.iter().map(|e| e.key));
        }
        assert_eq!(sizes, vec![MAX_BATCH, 10 + 4, 2], "batches: {sizes:?}");
        let want: Vec<u64> = (0..MAX_BATCH as u64 + 10).chain(10_000..10_006).collect();
        assert_eq!(keys, want, "entries out of order");
    }

    fn leadership(leading: bool, leader_id: u64, term: u64) -> Leadership {
        Leadership {
            leading,
            leader_id,
            term,
        }
    }

    /// Runs [`upheaval`] for a session relayed to leader 2 in term 5 while
    /// `steps` are sent; its answer and how long after the last step.
    async fn upheaval_after(steps: &[Leadership], grace: Duration) -> (Upheaval, Duration) {
        let (tx, mut rx) = watch::channel(leadership(false, 2, 5));
        let watching = tokio::spawn(async move { upheaval(&mut rx, 2, 5, grace).await });
        for step in steps {
            tx.send(*step).unwrap();
            tokio::task::yield_now().await;
        }
        let sent = std::time::Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(10), watching)
            .await
            .expect("upheaval answers within 10 s")
            .unwrap();
        (answer, sent.elapsed())
    }

    #[tokio::test]
    async fn a_relay_lets_its_sessions_go_when_the_leadership_moves_or_stays_unknown_past_the_grace() {
        let grace = Duration::from_millis(300);
        // An election ends (the pre-vote that forgot the leader, then a
        // new term): back to this relay.
        let (u, _) = upheaval_after(&[leadership(false, 0, 5), leadership(false, 3, 6)], grace).await;
        assert_eq!(u, Upheaval::Moved);
        // This controller won it.
        let (u, _) = upheaval_after(&[leadership(false, 0, 5), leadership(true, 1, 6)], grace).await;
        assert_eq!(u, Upheaval::Moved);
        // A blip (the same leader heard again) ends nothing; the move after
        // it does.
        let (u, _) = upheaval_after(
            &[
                leadership(false, 0, 5),
                leadership(false, 2, 5),
                leadership(false, 2, 7),
            ],
            grace,
        )
        .await;
        assert_eq!(u, Upheaval::Moved);
        // No leader for a whole grace period: cut off.
        let (u, after) = upheaval_after(&[leadership(false, 0, 5)], grace).await;
        assert_eq!(u, Upheaval::Lost);
        assert!(after >= grace - Duration::from_millis(20), "lost after {after:?}");
        // A blip, then the leader gone for good: the grace counts from the
        // second loss.
        let (u, after) = upheaval_after(
            &[
                leadership(false, 0, 5),
                leadership(false, 2, 5),
                leadership(false, 0, 5),
            ],
            grace,
        )
        .await;
        assert_eq!(u, Upheaval::Lost);
        assert!(after >= grace - Duration::from_millis(20), "lost after {after:?}");
        // The agent is told to go elsewhere: no retry hint.
        let status = cut_off(2, grace);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.metadata().get(rpool_proto::RETRY_AFTER_MS).is_none());
        assert!(
            status.message().contains("connect to another controller"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn the_leaders_verdicts_pass_and_lost_upstreams_bring_the_agent_back() {
        for code in [
            tonic::Code::InvalidArgument,
            tonic::Code::PermissionDenied,
            tonic::Code::Aborted,
            tonic::Code::ResourceExhausted,
        ] {
            let s = from_upstream(Status::new(code, "verdict"), 1);
            assert_eq!((s.code(), s.message()), (code, "verdict"));
            assert!(!s.metadata().contains_key(rpool_proto::RETRY_AFTER_MS));
        }
        for lost in [
            Status::unavailable("transport error"),
            Status::unknown("h2 protocol error: stream reset"),
            Status::internal("connection reset"),
            Status::cancelled("cancelled"),
        ] {
            let s = from_upstream(lost, 1);
            assert_eq!(s.code(), tonic::Code::Unavailable);
            assert_eq!(
                s.metadata()
                    .get(rpool_proto::RETRY_AFTER_MS)
                    .unwrap()
                    .to_str()
                    .unwrap(),
                RELAY_RETRY_HINT.as_millis().to_string()
            );
        }
        let mut busy = Status::unavailable("busy");
        busy.metadata_mut()
            .insert(rpool_proto::RETRY_AFTER_MS, 2000u64.into());
        let s = from_upstream(busy, 1);
        assert_eq!(
            s.metadata()
                .get(rpool_proto::RETRY_AFTER_MS)
                .unwrap()
                .to_str()
                .unwrap(),
            "2000"
        );
    }
}
