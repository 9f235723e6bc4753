//! Who may call what: every gRPC request passes [`AuthzLayer`] before any
//! service sees it (and before any request body is decoded).
//!
//! The TLS handshake already proved that a presented certificate chains to
//! the rpool CA; client certificates are optional at the handshake so that
//! enrollment works without one. Here, per service (from the request path):
//!
//! | service | allowed |
//! |---|---|
//! | `AdminService` | `Identity::Admin`; `Identity::Controller(id)` only with `x-rpool-forwarded-by: id` (a follower forwarding, or a leader asking a peer's status) |
//! | `AgentService` | `Identity::Agent` (the Hello's host id is checked in the session against the certificate) |
//! | `RaftService` | `Identity::Controller` (the batch's `from` is checked against it before a raft message is decoded) |
//! | `RelayService` | `Identity::Controller` (a follower's relay stream; each session on it names its agent, checked by [`relayed_agent`], and its Hello is checked against that agent) |
//! | `EnrollService` | anyone (it authenticates by bootstrap token or certificate itself) |
//! | anything else | any rpool identity |
//!
//! Every `AdminService` method is held to the same rule, reads included:
//! `WhatIf` (an admin read that changes nothing) answers from the leader's
//! whole state, so it is admin-only like `ListHosts` and `GetPool`.
//!
//! No certificate → `UNAUTHENTICATED`; a certificate without an rpool
//! identity or of the wrong role → `PERMISSION_DENIED`. The identity is put
//! in the request's extensions for the handlers. Every denial is logged at
//! warn (identity and method, never secrets) and counted by reason
//! ([`denied_total`], [`denied_by_reason`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rpool_proto::pki::{self, Identity};
use rustls::pki_types::CertificateDer;
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tracing::warn;

use crate::api::forward::FORWARDED;

/// Metadata carrying the identity a follower forwarded an admin call for.
/// Authorization uses the certificate; the audit trail records this
/// identity as the caller, and it is trusted ONLY from a peer controller's
/// certificate (see [`principal`]): an admin sending it is refused.
pub const FORWARDED_FOR: &str = "x-rpool-forwarded-for";

/// Who an admin call is for, as the audit trail records it: the
/// certificate's identity, or, for a call a peer controller forwarded, the
/// original caller it names (and the forwarding controller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The caller.
    pub identity: Identity,
    /// The controller that forwarded the call, if one did.
    pub via: Option<u64>,
}

/// The pure decision on `x-rpool-forwarded-for`: taken only from a
/// controller certificate (a follower forwarding), where it must name an
/// admin; an admin or agent certificate sending it is refused, so nobody
/// can have a change recorded under someone else's name.
pub fn principal(identity: &Identity, forwarded_for: Option<&str>) -> Result<Principal, Denial> {
    let spoof = |what: String| Denial::new(Reason::ForwardMismatch, Status::permission_denied(what));
    match (identity, forwarded_for) {
        (_, None) => Ok(Principal {
            identity: identity.clone(),
            via: None,
        }),
        (Identity::Controller(id), Some(uri)) => match Identity::from_uri(uri) {
            Some(Ok(original @ Identity::Admin(_))) => Ok(Principal {
                identity: original,
                via: Some(*id),
            }),
            _ => Err(spoof(format!(
                "controller {id} forwarded a call for {uri:?}, which is not an admin identity"
            ))),
        },
        (other, Some(_)) => Err(spoof(format!(
            "{other} may not send {FORWARDED_FOR} (only a peer controller forwarding a call does)"
        ))),
    }
}

/// Concurrent `AgentService.Session` streams one agent identity may hold
/// (a reconnecting agent briefly overlaps with its old stream).
pub const MAX_SESSIONS_PER_IDENTITY: usize = 2;

/// Why a request was refused (one counter each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No client certificate (→ UNAUTHENTICATED).
    NoCertificate,
    /// A CA-signed certificate without a valid `urn:rpool:` identity.
    NoIdentity,
    /// The identity's role may not call this service.
    WrongRole,
    /// A controller called the admin API without (or with someone else's)
    /// forwarding mark.
    ForwardMismatch,
    /// An agent's Hello names another host than its certificate.
    HostMismatch,
    /// A raft batch claims another sender than the certificate.
    RaftSenderMismatch,
    /// Too many concurrent sessions for one identity.
    SessionLimit,
}

impl Reason {
    /// Every reason, in a stable order (for metrics).
    pub const ALL: [Reason; 7] = [
        Reason::NoCertificate,
        Reason::NoIdentity,
        Reason::WrongRole,
        Reason::ForwardMismatch,
        Reason::HostMismatch,
        Reason::RaftSenderMismatch,
        Reason::SessionLimit,
    ];

    /// Label value: `no_certificate`, `wrong_role`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoCertificate => "no_certificate",
            Reason::NoIdentity => "no_identity",
            Reason::WrongRole => "wrong_role",
            Reason::ForwardMismatch => "forward_mismatch",
            Reason::HostMismatch => "host_mismatch",
            Reason::RaftSenderMismatch => "raft_sender_mismatch",
            Reason::SessionLimit => "session_limit",
        }
    }

    fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

static DENIED: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];

/// Requests refused since start, all reasons together.
pub fn denied_total() -> u64 {
    DENIED.iter().map(|c| c.load(Ordering::Relaxed)).sum()
}

/// Requests refused since start for one reason.
pub fn denied(reason: Reason) -> u64 {
    DENIED[reason.index()].load(Ordering::Relaxed)
}

/// `(reason label, count)` for every reason.
pub fn denied_by_reason() -> Vec<(&'static str, u64)> {
    Reason::ALL.iter().map(|r| (r.as_str(), denied(*r))).collect()
}

/// A refusal: its reason (counted) and the status the caller gets.
#[derive(Debug, Clone)]
pub struct Denial {
    /// Why.
    pub reason: Reason,
    /// What the caller is told.
    pub status: Status,
}

impl Denial {
    fn new(reason: Reason, status: Status) -> Denial {
        Denial { reason, status }
    }

    /// Counts and logs the denial, and returns the status for the caller.
    pub fn record(self, who: &str, method: &str) -> Status {
        DENIED[self.reason.index()].fetch_add(1, Ordering::Relaxed);
        warn!(
            identity = who,
            method,
            reason = self.reason.as_str(),
            error = self.status.message(),
            "request denied"
        );
        self.status
    }
}

/// What the peer presented, as far as authorization cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// No client certificate.
    NoCertificate,
    /// A certificate (chaining to our CA) without a usable rpool identity.
    Unrecognized,
    /// A certificate with this identity.
    Known(Identity),
}

impl Peer {
    /// For logs.
    pub fn describe(&self) -> String {
        match self {
            Peer::NoCertificate => "anonymous".to_owned(),
            Peer::Unrecognized => "unrecognized certificate".to_owned(),
            Peer::Known(id) => id.to_string(),
        }
    }
}

/// The service a gRPC path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    Admin,
    Agent,
    Raft,
    Relay,
    Enroll,
    Other,
}

/// `/rpool.v1.AdminService/Status` → `Admin`, ...
pub fn service_of(path: &str) -> ServiceKind {
    let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    match service {
        "rpool.v1.AdminService" => ServiceKind::Admin,
        "rpool.v1.AgentService" => ServiceKind::Agent,
        "rpool.v1.RaftService" => ServiceKind::Raft,
        "rpool.v1.RelayService" => ServiceKind::Relay,
        "rpool.v1.EnrollService" => ServiceKind::Enroll,
        _ => ServiceKind::Other,
    }
}

/// The pure decision: may `peer` call `service`? `forwarded_by` is the
/// `x-rpool-forwarded-by` metadata, if any. `Ok(Some(identity))` for an
/// authenticated caller, `Ok(None)` for an open service called anonymously.
pub fn decide(
    service: ServiceKind,
    peer: &Peer,
    forwarded_by: Option<&str>,
) -> Result<Option<Identity>, Denial> {
    if service == ServiceKind::Enroll {
        return Ok(match peer {
            Peer::Known(id) => Some(id.clone()),
            _ => None,
        });
    }
    let identity = match peer {
        Peer::NoCertificate => {
            return Err(Denial::new(
                Reason::NoCertificate,
                Status::unauthenticated("a client certificate issued by the rpool CA is required"),
            ));
        }
        Peer::Unrecognized => {
            return Err(Denial::new(
                Reason::NoIdentity,
                Status::permission_denied(
                    "the client certificate carries no rpool identity (urn:rpool: URI SAN)",
                ),
            ));
        }
        Peer::Known(id) => id,
    };
    let wrong_role = |wanted: &str| {
        Denial::new(
            Reason::WrongRole,
            Status::permission_denied(format!(
                "{identity} may not call the {wanted} (certificate role {})",
                identity.role()
            )),
        )
    };
    match (service, identity) {
        (ServiceKind::Admin, Identity::Admin(_)) => {}
        (ServiceKind::Admin, Identity::Controller(id)) => match forwarded_by {
            Some(by) if by == id.to_string() => {}
            Some(by) => {
                return Err(Denial::new(
                    Reason::ForwardMismatch,
                    Status::permission_denied(format!(
                        "controller {id} forwarded a call marked as from controller {by}"
                    )),
                ));
            }
            None => {
                return Err(Denial::new(
                    Reason::ForwardMismatch,
                    Status::permission_denied(format!(
                        "controller {id} may call the admin API only to forward a request ({FORWARDED} missing)"
                    )),
                ));
            }
        },
        (ServiceKind::Admin, _) => return Err(wrong_role("admin API")),
        (ServiceKind::Agent, Identity::Agent(_)) => {}
        (ServiceKind::Agent, _) => return Err(wrong_role("agent API")),
        (ServiceKind::Raft, Identity::Controller(_)) => {}
        (ServiceKind::Raft, _) => return Err(wrong_role("raft peer API")),
        (ServiceKind::Relay, Identity::Controller(_)) => {}
        (ServiceKind::Relay, _) => return Err(wrong_role("relay API")),
        (ServiceKind::Enroll | ServiceKind::Other, _) => {}
    }
    Ok(Some(identity.clone()))
}

/// Marks an agent session a follower relays (in the request's extensions,
/// next to the agent's [`Identity`]): the controller that relays it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    pub via: u64,
}

/// The pure decision on a relayed agent session: a controller certificate
/// (already checked by [`decide`]) speaks for the agent that the relay
/// stream's `open` names (`forwarded_for`), which must be an agent
/// identity; the session then holds to that agent's rules (its Hello must
/// be for that host, its per-identity session limit). Anything else is
/// refused.
pub fn relayed_agent(
    identity: &Identity,
    forwarded_for: Option<&str>,
) -> Result<(Identity, Relayed), Denial> {
    let refuse = |what: String| Denial::new(Reason::ForwardMismatch, Status::permission_denied(what));
    match (identity, forwarded_for) {
        (Identity::Controller(id), Some(uri)) => match Identity::from_uri(uri) {
            Some(Ok(agent @ Identity::Agent(_))) => Ok((agent, Relayed { via: *id })),
            _ => Err(refuse(format!(
                "controller {id} relayed an agent session for {uri:?}, which is not an agent identity"
            ))),
        },
        (Identity::Controller(id), None) => Err(refuse(format!(
            "controller {id} relayed an agent session without naming the agent"
        ))),
        (other, _) => Err(refuse(format!(
            "{other} may not relay an agent session (only a peer controller does)"
        ))),
    }
}

/// The session's Hello must be for the host the certificate was issued to.
pub fn check_hello_host(cert_host: &str, hello_host: &str) -> Result<(), Denial> {
    if cert_host == hello_host {
        return Ok(());
    }
    Err(Denial::new(
        Reason::HostMismatch,
        Status::permission_denied(format!(
            "agent certificate is for host {cert_host}, hello says {hello_host}"
        )),
    ))
}

/// A raft batch's `from` must be the controller the certificate names.
pub fn check_raft_sender(cert_id: u64, from: u64) -> Result<(), Denial> {
    if cert_id == from {
        return Ok(());
    }
    Err(Denial::new(
        Reason::RaftSenderMismatch,
        Status::permission_denied(format!(
            "raft batch claims to be from controller {from}, certificate is controller {cert_id}"
        )),
    ))
}

fn peer_of<B>(request: &http::Request<B>) -> Peer {
    let certs = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs());
    match certs {
        None => Peer::NoCertificate,
        Some(certs) => PEERS.peer_of(certs),
    }
}

/// The peer a certificate chain names (its first certificate's identity).
fn read_peer(certs: &[CertificateDer<'static>]) -> Peer {
    match certs.first() {
        None => Peer::NoCertificate,
        Some(cert) => match pki::identity_of_der(cert.as_ref()) {
            Ok(id) => Peer::Known(id),
            Err(_) => Peer::Unrecognized,
        },
    }
}

/// Connections' peers most recently read ([`PeerCache`]).
const PEER_CACHE_LEN: usize = 1024;

static PEERS: PeerCache = PeerCache {
    by_chain: Mutex::new(None),
};

/// The peer of each recent connection, so that its certificate is parsed
/// once per connection instead of once per request.
///
/// tonic gives every request of a connection the same
/// `Arc<Vec<CertificateDer>>`; parsing the certificate on every request
/// was 3 % of the controllers' CPU under concurrent admin writes
/// (BENCHMARKS.md). Entries are keyed by the Arc's address and hold a clone
/// of the Arc: while an entry exists, no other chain can be allocated at
/// that address, so a hit is always the same connection's chain. Bounded:
/// cleared when [`PEER_CACHE_LEN`] connections were seen (a reconnect
/// storm of agents only costs one parse each, as before).
struct PeerCache {
    #[allow(clippy::type_complexity)]
    by_chain: Mutex<Option<HashMap<usize, (Arc<Vec<CertificateDer<'static>>>, Peer)>>>,
}

impl PeerCache {
    fn peer_of(&self, certs: Arc<Vec<CertificateDer<'static>>>) -> Peer {
        let key = Arc::as_ptr(&certs) as usize;
        {
            let cache = self.by_chain.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, peer)) = cache.as_ref().and_then(|c| c.get(&key)) {
                return peer.clone();
            }
        }
        // Parsed outside the lock.
        let peer = read_peer(&certs);
        let mut cache = self.by_chain.lock().unwrap_or_else(|e| e.into_inner());
        let cache = cache.get_or_insert_with(HashMap::new);
        if cache.len() >= PEER_CACHE_LEN {
            cache.clear();
        }
        cache.insert(key, (certs, peer.clone()));
        peer
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let cache = self.by_chain.lock().unwrap_or_else(|e| e.into_inner());
        cache.as_ref().map_or(0, HashMap::len)
    }
}

/// Authorizes one HTTP/2 request: inserts the caller's [`Identity`] into
/// the extensions, or returns the status to answer with.
fn authorize<B>(request: &mut http::Request<B>) -> Result<(), Status> {
    let path = request.uri().path().to_owned();
    let peer = peer_of(request);
    let forwarded_by = request.headers().get(FORWARDED).and_then(|v| v.to_str().ok());
    let service = service_of(&path);
    match decide(service, &peer, forwarded_by) {
        Ok(Some(identity)) => {
            if service == ServiceKind::Admin {
                let forwarded_for = match request.headers().get(FORWARDED_FOR) {
                    None => None,
                    Some(v) => Some(v.to_str().unwrap_or("(not text)")),
                };
                let principal =
                    principal(&identity, forwarded_for).map_err(|d| d.record(&peer.describe(), &path))?;
                request.extensions_mut().insert(principal);
            }
            request.extensions_mut().insert(identity);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(denial) => Err(denial.record(&peer.describe(), &path)),
    }
}

/// The identity [`AuthzLayer`] put into a request, if any.
pub fn caller<T>(request: &tonic::Request<T>) -> Option<&Identity> {
    request.extensions().get::<Identity>()
}

/// The [`Principal`] of an admin call (inserted by [`AuthzLayer`]).
pub fn principal_of<T>(request: &tonic::Request<T>) -> Option<&Principal> {
    request.extensions().get::<Principal>()
}

/// Tower layer applying [`decide`] to every request of the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthzLayer;

impl<S> tower::Layer<S> for AuthzLayer {
    type Service = Authz<S>;
    fn layer(&self, inner: S) -> Authz<S> {
        Authz { inner }
    }
}

/// The service [`AuthzLayer`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct Authz<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for Authz<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match authorize(&mut request) {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

/// Bounds concurrent sessions per identity ([`MAX_SESSIONS_PER_IDENTITY`]).
#[derive(Debug, Default, Clone)]
pub struct SessionLimiter {
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// Holds one of an identity's session slots until dropped.
#[derive(Debug)]
pub struct SessionSlot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
}

impl SessionLimiter {
    /// Takes a slot for `identity`, or refuses with RESOURCE_EXHAUSTED.
    pub fn acquire(&self, identity: &Identity) -> Result<SessionSlot, Denial> {
        let key = identity.uri();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= MAX_SESSIONS_PER_IDENTITY {
            return Err(Denial::new(
                Reason::SessionLimit,
                Status::resource_exhausted(format!(
                    "{identity} already has {MAX_SESSIONS_PER_IDENTITY} open sessions (the limit per agent)"
                )),
            ));
        }
        *count += 1;
        Ok(SessionSlot {
            open: self.open.clone(),
            key,
        })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connections_certificate_is_read_once_and_never_taken_for_another() {
        let ca = pki::Ca::generate("test CA").unwrap();
        let chain = |identity: &Identity| {
            let issued = ca
                .issue(identity, &[], std::time::Duration::from_secs(3600))
                .unwrap();
            let der = pki::certs_from_pem(&issued.cert_pem).unwrap().remove(0);
            Arc::new(vec![CertificateDer::from(der)])
        };
        let cache = PeerCache {
            by_chain: Mutex::new(None),
        };
        let admin = Identity::admin("alice").unwrap();
        let agent = Identity::agent("host-1").unwrap();
        let a = chain(&admin);
        assert_eq!(cache.peer_of(a.clone()), Peer::Known(admin.clone()));
        assert_eq!(cache.peer_of(a.clone()), Peer::Known(admin.clone()));
        assert_eq!(cache.len(), 1, "the same connection's chain is read once");
        // Another connection, even with an equal chain, is its own entry.
        let b = chain(&agent);
        assert_eq!(cache.peer_of(b), Peer::Known(agent));
        let garbage = Arc::new(vec![CertificateDer::from(vec![0x30, 0x03, 0x01, 0x02, 0x03])]);
        assert_eq!(cache.peer_of(garbage.clone()), Peer::Unrecognized);
        assert_eq!(cache.peer_of(garbage), Peer::Unrecognized);
        assert_eq!(cache.peer_of(Arc::new(Vec::new())), Peer::NoCertificate);
        assert_eq!(cache.len(), 4);
        // Bounded: full, it starts over, and answers stay right.
        for _ in 0..PEER_CACHE_LEN {
            cache.peer_of(Arc::new(Vec::new()));
        }
        assert!(cache.len() <= PEER_CACHE_LEN);
        assert_eq!(cache.peer_of(a), Peer::Known(admin));
    }

    fn known(id: Identity) -> Peer {
        Peer::Known(id)
    }

    fn code(r: Result<Option<Identity>, Denial>) -> Option<(tonic::Code, Reason)> {
        r.err().map(|d| (d.status.code(), d.reason))
    }

    #[test]
    fn each_service_admits_only_its_roles() {
        use ServiceKind::*;
        use tonic::Code::*;
        let admin = known(Identity::Admin("alice".into()));
        let agent = known(Identity::Agent("h1".into()));
        let ctl = known(Identity::Controller(2));
        type Case<'a> = (
            ServiceKind,
            &'a Peer,
            Option<&'a str>,
            Option<(tonic::Code, Reason)>,
        );
        let cases: Vec<Case> = vec![
            (Admin, &admin, None, None),
            (Admin, &agent, None, Some((PermissionDenied, Reason::WrongRole))),
            (
                Admin,
                &ctl,
                None,
                Some((PermissionDenied, Reason::ForwardMismatch)),
            ),
            (Admin, &ctl, Some("2"), None),
            (
                Admin,
                &ctl,
                Some("3"),
                Some((PermissionDenied, Reason::ForwardMismatch)),
            ),
            (
                Admin,
                &Peer::NoCertificate,
                None,
                Some((Unauthenticated, Reason::NoCertificate)),
            ),
            (
                Admin,
                &Peer::Unrecognized,
                None,
                Some((PermissionDenied, Reason::NoIdentity)),
            ),
            (Agent, &agent, None, None),
            (Agent, &admin, None, Some((PermissionDenied, Reason::WrongRole))),
            // A controller relays agent sessions on RelayService, never
            // as an AgentService caller, marked or not.
            (
                Agent,
                &ctl,
                Some("2"),
                Some((PermissionDenied, Reason::WrongRole)),
            ),
            (Agent, &ctl, None, Some((PermissionDenied, Reason::WrongRole))),
            (Relay, &ctl, None, None),
            (Relay, &agent, None, Some((PermissionDenied, Reason::WrongRole))),
            (Relay, &admin, None, Some((PermissionDenied, Reason::WrongRole))),
            (
                Agent,
                &Peer::NoCertificate,
                None,
                Some((Unauthenticated, Reason::NoCertificate)),
            ),
            (Raft, &ctl, None, None),
            (Raft, &admin, None, Some((PermissionDenied, Reason::WrongRole))),
            (Raft, &agent, None, Some((PermissionDenied, Reason::WrongRole))),
            (
                Raft,
                &Peer::NoCertificate,
                None,
                Some((Unauthenticated, Reason::NoCertificate)),
            ),
            (Enroll, &Peer::NoCertificate, None, None),
            (Enroll, &agent, None, None),
            (
                Other,
                &Peer::NoCertificate,
                None,
                Some((Unauthenticated, Reason::NoCertificate)),
            ),
            (Other, &agent, None, None),
        ];
        for (service, peer, fwd, want) in cases {
            assert_eq!(
                code(decide(service, peer, fwd)),
                want,
                "{service:?} {peer:?} {fwd:?}"
            );
        }
        assert_eq!(
            decide(Admin, &admin, None).unwrap(),
            Some(Identity::Admin("alice".into()))
        );
        assert_eq!(decide(Enroll, &Peer::NoCertificate, None).unwrap(), None);
    }

    #[test]
    fn only_a_peer_controller_may_name_the_original_caller() {
        let alice = Identity::Admin("alice".into());
        let mallory = Identity::Admin("mallory".into());
        let agent = Identity::Agent("h1".into());
        let ctl = Identity::Controller(2);
        // No metadata: the certificate is the caller.
        assert_eq!(
            principal(&alice, None).unwrap(),
            Principal {
                identity: alice.clone(),
                via: None
            }
        );
        assert_eq!(principal(&ctl, None).unwrap().identity, ctl);
        // A follower forwarding names the admin it forwards for.
        assert_eq!(
            principal(&ctl, Some("urn:rpool:admin:alice")).unwrap(),
            Principal {
                identity: alice.clone(),
                via: Some(2)
            }
        );
        // An admin (or agent) cannot claim to be someone else.
        for who in [&mallory, &agent] {
            let d = principal(who, Some("urn:rpool:admin:alice")).unwrap_err();
            assert_eq!(d.status.code(), tonic::Code::PermissionDenied);
            assert_eq!(d.reason, Reason::ForwardMismatch);
            assert!(
                d.status.message().contains(FORWARDED_FOR),
                "{}",
                d.status.message()
            );
        }
        // A controller forwards only for admins, with a parseable identity.
        for bad in ["urn:rpool:controller:3", "urn:rpool:agent:h1", "alice", ""] {
            assert!(principal(&ctl, Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn what_if_is_an_admin_read() {
        let path = "/rpool.v1.AdminService/WhatIf";
        assert_eq!(service_of(path), ServiceKind::Admin);
        let admin = known(Identity::Admin("alice".into()));
        assert!(decide(service_of(path), &admin, None).is_ok());
        let forwarding = known(Identity::Controller(2));
        assert!(decide(service_of(path), &forwarding, Some("2")).is_ok());
        for denied in [
            known(Identity::Agent("h1".into())),
            known(Identity::Controller(2)),
        ] {
            let d = decide(service_of(path), &denied, None).unwrap_err();
            assert_eq!(d.status.code(), tonic::Code::PermissionDenied);
        }
        let d = decide(service_of(path), &Peer::NoCertificate, None).unwrap_err();
        assert_eq!(d.status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn only_controllers_open_relay_streams() {
        let path = "/rpool.v1.RelayService/Sessions";
        assert_eq!(service_of(path), ServiceKind::Relay);
        let id = decide(service_of(path), &known(Identity::Controller(2)), None).unwrap();
        assert_eq!(id, Some(Identity::Controller(2)));
        for who in [Identity::Agent("h1".into()), Identity::Admin("alice".into())] {
            let d = decide(service_of(path), &known(who.clone()), Some("2")).unwrap_err();
            assert_eq!(d.status.code(), tonic::Code::PermissionDenied, "{who}");
        }
        let d = decide(service_of(path), &Peer::NoCertificate, None).unwrap_err();
        assert_eq!(d.status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn a_controller_relays_agent_sessions_only_for_an_agent_and_never_opens_one() {
        // Relayed sessions travel on RelayService; AgentService is agents'.
        let path = "/rpool.v1.AgentService/Session";
        let ctl = known(Identity::Controller(2));
        for by in [None, Some("2"), Some("3")] {
            let d = decide(service_of(path), &ctl, by).unwrap_err();
            assert_eq!(d.status.code(), tonic::Code::PermissionDenied);
        }
        let agent = Identity::Agent("h1".into());
        let (as_agent, relayed) = relayed_agent(&Identity::Controller(2), Some(&agent.uri())).unwrap();
        assert_eq!(as_agent, agent);
        assert_eq!(relayed, Relayed { via: 2 });
        // Only an agent may be relayed, only by a controller, and only named.
        let admin = Identity::Admin("alice".into());
        let c3 = Identity::Controller(3);
        for (who, for_whom) in [
            (Identity::Controller(2), Some(admin.uri())),
            (Identity::Controller(2), Some(c3.uri())),
            (Identity::Controller(2), Some("urn:rpool:nonsense".to_owned())),
            (Identity::Controller(2), None),
            (agent.clone(), Some(Identity::Agent("h2".into()).uri())),
        ] {
            let d = relayed_agent(&who, for_whom.as_deref()).unwrap_err();
            assert_eq!(
                d.status.code(),
                tonic::Code::PermissionDenied,
                "{who} for {for_whom:?}"
            );
        }
    }

    #[test]
    fn paths_map_to_services() {
        assert_eq!(service_of("/rpool.v1.AdminService/Status"), ServiceKind::Admin);
        // Pool upgrades are admin-only like every AdminService method.
        assert_eq!(
            service_of("/rpool.v1.AdminService/UpgradePool"),
            ServiceKind::Admin
        );
        assert_eq!(service_of("/rpool.v1.AgentService/Session"), ServiceKind::Agent);
        assert_eq!(service_of("/rpool.v1.RaftService/Send"), ServiceKind::Raft);
        assert_eq!(service_of("/rpool.v1.EnrollService/Enroll"), ServiceKind::Enroll);
        assert_eq!(service_of("/grpc.health.v1.Health/Check"), ServiceKind::Other);
        assert_eq!(service_of(""), ServiceKind::Other);
    }

    #[test]
    fn hello_and_raft_sender_must_match_the_certificate() {
        assert!(check_hello_host("h1", "h1").is_ok());
        let d = check_hello_host("h1", "h2").unwrap_err();
        assert_eq!(d.status.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            d.status.message(),
            "agent certificate is for host h1, hello says h2"
        );
        assert!(check_raft_sender(2, 2).is_ok());
        assert_eq!(
            check_raft_sender(2, 3).unwrap_err().reason,
            Reason::RaftSenderMismatch
        );
    }

    #[test]
    fn sessions_per_identity_are_bounded_and_released() {
        let limiter = SessionLimiter::default();
        let a = Identity::Agent("h1".into());
        let b = Identity::Agent("h2".into());
        let first = limiter.acquire(&a).unwrap();
        let _second = limiter.acquire(&a).unwrap();
        let third = limiter.acquire(&a).unwrap_err();
        assert_eq!(third.status.code(), tonic::Code::ResourceExhausted);
        assert!(
            third.status.message().contains("2 open sessions"),
            "{}",
            third.status.message()
        );
        let _other = limiter.acquire(&b).unwrap();
        drop(first);
        let _again = limiter.acquire(&a).unwrap();
    }

    #[test]
    fn denials_are_counted_by_reason() {
        let before = (denied_total(), denied(Reason::SessionLimit));
        let d = Denial::new(Reason::SessionLimit, Status::resource_exhausted("x"));
        let status = d.record("agent h1", "/rpool.v1.AgentService/Session");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(denied_total() > before.0);
        assert!(denied(Reason::SessionLimit) > before.1);
        assert_eq!(denied_by_reason().len(), Reason::ALL.len());
    }
}
