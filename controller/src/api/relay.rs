//! Relayed agent sessions: followers hold the agents' connections, the
//! leader holds their sessions.
//!
//! An agent session costs its controller a TLS connection and an HTTP/2
//! connection with fixed buffers (about 45 KiB each, measured at 10,000
//! agents), and a TLS handshake each time the agent reconnects. The leader
//! needs the session (it owns liveness and dispatch), not the connection:
//!
//! - A **follower** that receives a Hello does not redirect the agent to the
//!   leader. It opens the same `AgentService.Session` on the leader, over
//!   one HTTP/2 connection it shares for all the agents it relays, marked
//!   with its own id ([`FORWARDED`]) and the agent's identity
//!   ([`crate::api::authz::FORWARDED_FOR`]; the follower checked the
//!   agent's certificate against the Hello, and the leader checks again
//!   that the Hello is that agent's). Then it copies messages both ways
//!   without reading them: validation, liveness and tasks stay the
//!   leader's, and a relayed session is one HTTP/2 stream on the leader.
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
//! - A follower that knows no leader within [`LEADER_WAIT`] answers with a
//!   `Redirect` naming none (the agent backs off and tries another
//!   controller), as before relays existed.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rpool_proto::v1::agent_message::Msg;
use rpool_proto::v1::agent_service_client::AgentServiceClient;
use rpool_proto::v1::{self, AgentMessage, ControllerMessage, Hello};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};
use tracing::{debug, info};

use super::agent::{End, Leadership, inbound_error};
use crate::Shared;
use crate::api::forward::FORWARDED;
use crate::leader::dispatch::Outbound;

/// How long a follower waits for a leader to be known before it sends the
/// agent elsewhere (an election after a leader's death takes tens of ms).
pub const LEADER_WAIT: Duration = Duration::from_secs(2);
/// Retry hint when a relayed session ends because its leader went away.
pub const RELAY_RETRY_HINT: Duration = Duration::from_millis(1_000);
/// Messages queued toward the leader for one relayed session.
const UPSTREAM_CAPACITY: usize = 16;
/// Streams one relay connection may carry: every session a controller
/// serves. The leader's listener admits as many on one connection.
pub const MAX_RELAYED_STREAMS: u32 = super::agent::MAX_SESSIONS as u32 + 1_024;
/// HTTP/2 connection window of the relay connection (both ends): thousands
/// of sessions share it.
pub const RELAY_CONNECTION_WINDOW: u32 = 8 << 20;

/// A follower's channel to the leader for relayed sessions: one HTTP/2
/// connection, made lazily, kept while the same leader leads in the same
/// term. Unlike [`crate::api::forward::LeaderLink`] it has no per-call
/// deadline: a session lasts as long as the agent stays.
#[derive(Default)]
pub(crate) struct RelayLink(Mutex<Option<(u64, u64, Channel)>>);

impl RelayLink {
    fn channel(&self, shared: &Shared, leader_id: u64, term: u64) -> Result<Channel, Status> {
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((id, t, channel)) = &*cached
            && *id == leader_id
            && *t == term
        {
            return Ok(channel.clone());
        }
        let address = shared
            .address_of(leader_id)
            .ok_or_else(|| relay_retry(&format!("the address of leader {leader_id} is unknown")))?;
        let channel = shared
            .tls
            .controller_endpoint(&address, leader_id)
            .map_err(|e| Status::internal(format!("leader address {address:?}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .initial_connection_window_size(RELAY_CONNECTION_WINDOW)
            .connect_lazy();
        *cached = Some((leader_id, term, channel.clone()));
        Ok(channel)
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

/// Relays one agent session to `leader_id` (known in `term`) until either
/// side ends it or the leadership moves. `setup` is released once the
/// leader's Welcome has gone to the agent.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    shared: &Shared,
    link: &RelayLink,
    leader_id: u64,
    term: u64,
    agent_uri: &str,
    hello: Hello,
    inbound: &mut Streaming<AgentMessage>,
    tx: &mpsc::Sender<Outbound>,
    setup: tokio::sync::OwnedSemaphorePermit,
    mut leadership: watch::Receiver<Leadership>,
) -> Result<End, Status> {
    let channel = link.channel(shared, leader_id, term)?;
    let (up_tx, up_rx) = mpsc::channel::<AgentMessage>(UPSTREAM_CAPACITY);
    up_tx
        .try_send(AgentMessage {
            msg: Some(Msg::Hello(hello)),
        })
        .map_err(|_| Status::internal("relay queue"))?;
    let mut request = Request::new(ReceiverStream::new(up_rx));
    request.metadata_mut().insert(FORWARDED, shared.config.id.into());
    let for_agent = agent_uri
        .parse()
        .map_err(|_| Status::internal("agent identity is not valid metadata"))?;
    request
        .metadata_mut()
        .insert(crate::api::authz::FORWARDED_FOR, for_agent);
    let moved =
        |l: &Leadership| l.leading || l.term != term || (l.leader_id != 0 && l.leader_id != leader_id);

    // The leader's first answer: a Welcome (passed on), or a refusal.
    let mut client =
        AgentServiceClient::new(channel).max_decoding_message_size(crate::MAX_DECODING_MESSAGE_BYTES);
    let opening = async {
        let mut upstream = client.session(request).await?.into_inner();
        let first = upstream.message().await?;
        Ok::<_, Status>((upstream, first))
    };
    let (mut upstream, first) = tokio::select! {
        r = tokio::time::timeout(super::agent::HELLO_TIMEOUT, opening) => match r {
            Ok(Ok(opened)) => opened,
            Ok(Err(status)) => return Err(from_upstream(status, leader_id)),
            Err(_) => return Err(relay_retry(&format!("leader {leader_id} did not answer the hello"))),
        },
        _ = moved_on(&mut leadership, moved) => return Err(relay_retry("the leadership moved while the session opened")),
    };
    match first {
        Some(ControllerMessage {
            msg: Some(v1::controller_message::Msg::Welcome(welcome)),
        }) => {
            let welcome = ControllerMessage {
                msg: Some(v1::controller_message::Msg::Welcome(welcome)),
            };
            if tx.send(Box::new(Ok(welcome))).await.is_err() {
                return Ok(End::AgentGone);
            }
        }
        // It stopped leading between our look and its answer.
        Some(ControllerMessage {
            msg: Some(v1::controller_message::Msg::Redirect(_)),
        }) => return Err(relay_retry(&format!("controller {leader_id} no longer leads"))),
        Some(_) => {
            return Err(relay_retry(&format!(
                "leader {leader_id} answered the hello out of protocol"
            )));
        }
        None => return Err(relay_retry(&format!("leader {leader_id} closed the session"))),
    }
    drop(setup);
    let _open = OpenGauge::new();
    debug!(leader_id, "relaying the agent session to the leader");

    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            biased;
            _ = crate::stopped(&mut shutdown) => return Err(Status::unavailable("the controller is shutting down")),
            _ = moved_on(&mut leadership, moved) => return Err(relay_retry("the leadership moved")),
            _ = tx.closed() => return Ok(End::AgentGone),
            down = upstream.message() => match down {
                Ok(Some(message)) => {
                    if tx.send(Box::new(Ok(message))).await.is_err() {
                        return Ok(End::AgentGone);
                    }
                }
                // The leader ended the session without a status.
                Ok(None) => return Ok(End::ClosedByLeader),
                Err(status) => return Err(from_upstream(status, leader_id)),
            },
            up = inbound.message() => match up {
                Ok(Some(message)) => {
                    if up_tx.send(message).await.is_err() {
                        // The upstream request ended: its status follows.
                        let status = match tokio::time::timeout(Duration::from_secs(1), upstream.message()).await {
                            Ok(Err(status)) => from_upstream(status, leader_id),
                            _ => relay_retry(&format!("the stream to leader {leader_id} closed")),
                        };
                        return Err(status);
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

/// Resolves once `moved` holds for the leadership (or the replica stops).
/// Holds no watch guard across an await.
async fn moved_on(leadership: &mut watch::Receiver<Leadership>, moved: impl Fn(&Leadership) -> bool) {
    let _ = leadership.wait_for(moved).await;
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
    let pick = candidates[(fnv1a(host_id.as_bytes()) % candidates.len() as u64) as usize];
    shared.address_of(pick).map(|address| (pick, address))
}

/// FNV-1a: a stable hash (the standard library's is seeded per process).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids_spread_evenly_and_stably_over_followers() {
        let mut counts = [0usize; 2];
        for i in 0..10_000 {
            let id = format!("00000000-0000-4000-8000-{i:012x}");
            counts[(fnv1a(id.as_bytes()) % 2) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (4_700..=5_300).contains(c)), "{counts:?}");
        assert_eq!(fnv1a(b"h1"), fnv1a(b"h1"));
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
