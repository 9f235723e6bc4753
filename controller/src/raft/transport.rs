//! Raft peer traffic over gRPC (`RaftService.Send`).
//!
//! Outgoing: one task per peer owns a bounded queue and one client-streaming
//! call to that peer. [`Transport::send`] only enqueues (`try_send`): when a
//! peer's queue is full or it is disconnected, messages are dropped and the
//! peer is reported unreachable, which makes raft-rs probe it gently instead
//! of streaming appends. A dead or slow peer therefore never blocks the
//! leader. On a broken stream the task reconnects with backoff.
//!
//! Incoming: [`RaftPeerService`] decodes each batch and steps the messages
//! into the local node, in order, with backpressure.
//!
//! Incarnations (module [`super::incarnation`]): every batch carries the
//! sender's data incarnation; the receiver admits it before stepping any of
//! its messages. A refused batch ends the stream with FAILED_PRECONDITION
//! and the trailer [`REFUSED_KEY`]` = `[`REFUSED_WIPED`]; the sender's peer
//! task reports it ([`PeerEvent::Refused`]) and the node stops.
//!
//! Both directions are mutual TLS with the controllers' own certificates.
//! A batch is decoded only after the authorization layer admitted a
//! controller certificate and the batch's `from` matched it: raft-proto's
//! protobuf 2.28 (RUSTSEC-2024-0437) never sees bytes from anyone else.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use rpool_proto::pki::Identity;
use rpool_proto::tls::TlsMaterial;
use rpool_proto::v1::raft_service_client::RaftServiceClient;
use rpool_proto::v1::raft_service_server::RaftService;
use rpool_proto::v1::{PeerIncarnation, RaftAck, RaftBatch};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::incarnation::{self, AdmitError, Incarnations, Refusal};
use super::node::{RaftHandle, Transport};

/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE_LEN: usize = 4_096;
/// Messages per gRPC batch.
const MAX_BATCH: usize = 256;
/// Largest raft message accepted (a snapshot travels as one message).
pub const MAX_RAFT_MESSAGE_BYTES: usize = 256 << 20;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Metadata key of a refusal answer (with [`REFUSED_WIPED`]).
pub const REFUSED_KEY: &str = "rpool-refused";
/// A batch refused because its sender's data is not the one known under
/// its id.
pub const REFUSED_WIPED: &str = "wiped";

/// What the transport tells the local node about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// The peer refused this replica's messages: it knew this id with
    /// other data (the node must stop).
    Refused(Refusal),
    /// Messages to it could not be delivered.
    Unreachable(u64),
    /// The stream to it ended or could not be opened: its process may be
    /// gone (a killed process's sockets close at once).
    Lost(u64),
    /// A snapshot was handed to its stream (`true`) or could not be (`false`).
    SnapshotSent(u64, bool),
}

type Unreachable = Arc<OnceLock<Box<dyn Fn(PeerEvent) + Send + Sync>>>;
/// This replica's incarnations (its own and its peers'), set once the log
/// is open (before any send).
type Own = Arc<OnceLock<Arc<Incarnations>>>;

struct Peer {
    address: String,
    queue: mpsc::Sender<Message>,
    task: tokio::task::JoinHandle<()>,
}

/// Sends raft messages to the other controllers.
pub struct GrpcTransport {
    id: u64,
    tls: TlsMaterial,
    peers: Mutex<HashMap<u64, Peer>>,
    unreachable: Unreachable,
    incarnation: Own,
}

impl GrpcTransport {
    /// A transport for controller `id`, reaching the given peers (the entry
    /// for `id` itself, if present, is ignored).
    /// Connections use `tls` (this controller's certificate as the client
    /// certificate, peers verified against the CA and their address).
    pub fn new(id: u64, peers: &BTreeMap<u64, String>, tls: TlsMaterial) -> Arc<GrpcTransport> {
        let transport = Arc::new(GrpcTransport {
            id,
            tls,
            peers: Mutex::new(HashMap::new()),
            unreachable: Arc::new(OnceLock::new()),
            incarnation: Arc::new(OnceLock::new()),
        });
        for (peer, address) in peers {
            transport.set_peer(*peer, address);
        }
        transport
    }

    /// Where to report peer events (the local node, once started).
    pub fn on_event(&self, report: impl Fn(PeerEvent) + Send + Sync + 'static) {
        let _ = self.unreachable.set(Box::new(report));
    }

    /// Adds a peer, or moves it to a new address.
    pub fn set_peer(&self, peer: u64, address: &str) {
        if peer == self.id {
            return;
        }
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.get(&peer).is_some_and(|p| p.address == address) {
            return;
        }
        if let Some(old) = peers.remove(&peer) {
            old.task.abort();
        }
        let (queue, rx) = mpsc::channel(PEER_QUEUE_LEN);
        let task = tokio::spawn(run_peer(
            self.id,
            peer,
            address.to_string(),
            self.tls.clone(),
            rx,
            self.unreachable.clone(),
            self.incarnation.clone(),
        ));
        peers.insert(
            peer,
            Peer {
                address: address.to_string(),
                queue,
                task,
            },
        );
    }

    pub fn remove_peer(&self, peer: u64) {
        if let Some(old) = self.peers.lock().unwrap_or_else(|e| e.into_inner()).remove(&peer) {
            old.task.abort();
        }
    }

    fn report(&self, peer: u64) {
        if let Some(report) = self.unreachable.get() {
            report(PeerEvent::Unreachable(peer));
        }
    }
}

impl Drop for GrpcTransport {
    fn drop(&mut self) {
        for (_, peer) in self.peers.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            peer.task.abort();
        }
    }
}

impl Transport for GrpcTransport {
    fn set_incarnations(&self, incarnations: Arc<Incarnations>) {
        let _ = self.incarnation.set(incarnations);
    }

    fn send(&self, messages: Vec<Message>) {
        let mut unreachable = Vec::new();
        {
            let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            for message in messages {
                let to = message.to;
                match peers.get(&to) {
                    Some(peer) => {
                        if peer.queue.try_send(message).is_err() && !unreachable.contains(&to) {
                            unreachable.push(to);
                        }
                    }
                    None => tracing::debug!(to, "raft message for an unknown peer dropped"),
                }
            }
        }
        for peer in unreachable {
            self.report(peer);
        }
    }
}

async fn run_peer(
    from: u64,
    to: u64,
    address: String,
    tls: TlsMaterial,
    mut queue: mpsc::Receiver<Message>,
    unreachable: Unreachable,
    own: Own,
) {
    let report = |event| {
        if let Some(report) = unreachable.get() {
            report(event);
        }
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        let endpoint = match tls.controller_endpoint(&address, to) {
            Ok(endpoint) => endpoint
                .connect_timeout(Duration::from_secs(1))
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(3))
                .keep_alive_while_idle(true)
                .tcp_nodelay(true),
            Err(e) => {
                tracing::error!(peer = to, %address, "bad peer address: {e}");
                return;
            }
        };
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(e) => {
                tracing::debug!(peer = to, %address, "cannot reach peer: {e}");
                // Drop what piled up: raft resends what still matters.
                while let Ok(message) = queue.try_recv() {
                    if message.get_msg_type() == MessageType::MsgSnapshot {
                        report(PeerEvent::SnapshotSent(to, false));
                    }
                }
                report(PeerEvent::Unreachable(to));
                report(PeerEvent::Lost(to));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let mut client = RaftServiceClient::new(channel).max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
        let (batches, rx) = mpsc::channel::<RaftBatch>(64);
        let mut call = tokio::spawn(async move { client.send(ReceiverStream::new(rx)).await });
        tracing::debug!(peer = to, %address, "raft stream open");
        backoff = BACKOFF_MIN;
        // The stream ends when the peer answers (a refusal, a shutdown) or
        // when sending into it fails.
        let outcome = loop {
            let first = tokio::select! {
                first = queue.recv() => first,
                outcome = &mut call => break Some(outcome),
            };
            let Some(first) = first else { return };
            let mut snapshots = 0;
            let mut messages = Vec::with_capacity(16);
            let mut next = Some(first);
            while let Some(message) = next.take() {
                if message.get_msg_type() == MessageType::MsgSnapshot {
                    snapshots += 1;
                }
                messages.push(message.write_to_bytes().expect("encode raft message"));
                if messages.len() < MAX_BATCH {
                    next = queue.try_recv().ok();
                }
            }
            // Set by `Core::open` before the node sends anything.
            let (incarnation, known) = match own.get() {
                Some(own) => (
                    incarnation::to_wire(own.own()),
                    own.table()
                        .into_iter()
                        .map(|(id, inc)| PeerIncarnation {
                            id,
                            incarnation: incarnation::to_wire(inc),
                        })
                        .collect(),
                ),
                None => (Vec::new(), Vec::new()),
            };
            let batch = RaftBatch {
                from,
                messages,
                incarnation,
                known,
            };
            let sent = batches.send(batch).await.is_ok();
            for _ in 0..snapshots {
                report(PeerEvent::SnapshotSent(to, sent));
            }
            if !sent {
                break None;
            }
        };
        let outcome = match outcome {
            Some(outcome) => outcome,
            None => call.await,
        };
        if let Ok(Err(status)) = &outcome
            && let Some(refusal) = refusal_of(to, status)
        {
            tracing::error!(peer = to, %address, "{}", refusal.detail);
            report(PeerEvent::Refused(refusal));
        }
        tracing::debug!(peer = to, %address, ?outcome, "raft stream closed; reconnecting");
        report(PeerEvent::Unreachable(to));
        report(PeerEvent::Lost(to));
    }
}

/// The refusal a peer's answer carries, if it is one.
fn refusal_of(peer: u64, status: &Status) -> Option<Refusal> {
    let refused = status.code() == tonic::Code::FailedPrecondition
        && status
            .metadata()
            .get(REFUSED_KEY)
            .is_some_and(|v| v.as_bytes() == REFUSED_WIPED.as_bytes());
    refused.then(|| Refusal {
        peer,
        detail: status.message().to_owned(),
    })
}

/// The answer that ends a refused peer's stream.
fn refusal_status(refusal: &Refusal) -> Status {
    let mut status = Status::failed_precondition(refusal.detail.clone());
    status.metadata_mut().insert(
        REFUSED_KEY,
        tonic::metadata::MetadataValue::from_static(REFUSED_WIPED),
    );
    status
}

/// Receives raft messages from peers and steps them into the local node.
/// Open streams end when `shutdown` turns true, so a stopping controller
/// is not held up by its peers' long-lived streams.
pub struct RaftPeerService<O> {
    node: RaftHandle<O>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl<O> RaftPeerService<O> {
    pub fn new(node: RaftHandle<O>, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        RaftPeerService { node, shutdown }
    }
}

#[tonic::async_trait]
impl<O: Send + 'static> RaftService for RaftPeerService<O> {
    async fn send(&self, request: Request<Streaming<RaftBatch>>) -> Result<Response<RaftAck>, Status> {
        // The authorization layer admitted only a controller certificate.
        let sender = match crate::api::authz::caller(&request) {
            Some(Identity::Controller(id)) => *id,
            _ => {
                return Err(Status::permission_denied(
                    "only controllers may send raft messages",
                ));
            }
        };
        let mut stream = request.into_inner();
        let mut shutdown = self.shutdown.clone();
        loop {
            let batch = tokio::select! {
                batch = stream.message() => batch?,
                _ = crate::stopped(&mut shutdown) => return Err(Status::unavailable("the controller is shutting down")),
            };
            let Some(batch) = batch else { break };
            crate::api::authz::check_raft_sender(sender, batch.from).map_err(|d| {
                d.record(
                    &Identity::Controller(sender).to_string(),
                    "/rpool.v1.RaftService/Send",
                )
            })?;
            let incarnation = incarnation::from_wire(&batch.incarnation)
                .map_err(|e| Status::invalid_argument(format!("RaftBatch.incarnation: {e}")))?;
            let mut known = Vec::with_capacity(batch.known.len());
            for peer in &batch.known {
                let value = incarnation::from_wire(&peer.incarnation).map_err(|e| {
                    Status::invalid_argument(format!("RaftBatch.known[{}].incarnation: {e}", peer.id))
                })?;
                if let Some(value) = value {
                    known.push((peer.id, value));
                }
            }
            // Before any message reaches raft-rs: a member that lost its
            // data must not vote or acknowledge under its old id.
            match self.node.incarnations().admit(batch.from, incarnation, &known) {
                Ok(()) => {}
                Err(AdmitError::Refused(refusal)) => {
                    tracing::error!(peer = batch.from, "refusing raft messages: {}", refusal.detail);
                    return Err(refusal_status(&refusal));
                }
                Err(AdmitError::Io(e)) => return Err(Status::unavailable(e.to_string())),
            }
            for bytes in batch.messages {
                let message = Message::parse_from_bytes(&bytes)
                    .map_err(|e| Status::invalid_argument(format!("raft message does not decode: {e}")))?;
                if !sender_may_carry(&message, batch.from) {
                    return Err(Status::invalid_argument(format!(
                        "raft message from {} inside a batch from {}",
                        message.from, batch.from
                    )));
                }
                self.node
                    .step(message)
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
            }
        }
        Ok(Response::new(RaftAck {}))
    }
}

/// Whether a raft message may travel in a batch from `sender`. A member
/// speaks for itself only, except that raft-rs forwards proposals and
/// read-index requests on behalf of another member, keeping the original
/// requester in `from` (a follower that was leader a moment ago passes its
/// pending ones on to the new leader, which answers the requester
/// directly). The batch's sender is already authenticated as a member.
fn sender_may_carry(message: &Message, sender: u64) -> bool {
    message.from == sender
        || (message.from != 0
            && matches!(
                message.get_msg_type(),
                MessageType::MsgPropose | MessageType::MsgReadIndex
            ))
}

#[cfg(test)]
mod sender_tests {
    use super::*;

    fn message(kind: MessageType, from: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(kind);
        m.from = from;
        m
    }

    #[test]
    fn a_member_speaks_for_itself_and_forwards_only_requests() {
        assert!(sender_may_carry(&message(MessageType::MsgAppend, 2), 2));
        assert!(!sender_may_carry(&message(MessageType::MsgAppend, 3), 2));
        assert!(!sender_may_carry(&message(MessageType::MsgRequestVote, 3), 2));
        assert!(!sender_may_carry(
            &message(MessageType::MsgHeartbeatResponse, 1),
            2
        ));
        assert!(sender_may_carry(&message(MessageType::MsgReadIndex, 3), 2));
        assert!(sender_may_carry(&message(MessageType::MsgPropose, 3), 2));
        assert!(!sender_may_carry(&message(MessageType::MsgPropose, 0), 2));
    }
}
