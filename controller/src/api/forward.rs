//! Forwarding to the leader: a follower answers an admin or enrollment call
//! by making the same call on the leader, over mutual TLS with its own
//! controller certificate.
//!
//! - Calls are marked with [`FORWARDED`] (our id) and, for admin calls, the
//!   original caller ([`crate::api::authz::FORWARDED_FOR`]); a call that was
//!   already forwarded once is never forwarded again (leadership is moving:
//!   the caller gets UNAVAILABLE and retries).
//! - The channel to the leader (`LeaderLink`) is made lazily and reused
//!   while the same controller leads in the same term.
//! - A forwarded call (`relay`) has a deadline ([`FORWARD_DEADLINE`])
//!   shorter than rpoolctl's, and is abandoned as soon as this controller
//!   learns of a newer term or another leader: the link is dropped and the
//!   caller gets UNAVAILABLE at once, so it retries where the new leader is
//!   instead of waiting on a partitioned or stopped old one.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use rpool_proto::v1::admin_service_client::AdminServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::Shared;
use crate::raft::node::{RaftRole, RaftStatus};

/// Metadata marking a call one controller makes to another: the caller's
/// controller id.
pub const FORWARDED: &str = "x-rpool-forwarded-by";

/// Longest wait for a forwarded call's answer: below rpoolctl's own 10 s
/// deadline, so the client hears UNAVAILABLE and retries another controller
/// before it gives up.
pub const FORWARD_DEADLINE: Duration = Duration::from_secs(4);

/// An admin client used by one controller to call another: mutual TLS
/// with the controller's own certificate, every call marked with
/// `x-rpool-forwarded-by: <own id>` (the only way a controller identity is
/// admitted to the admin API, see [`crate::api::authz`]) and, when it
/// carries a forwarded request, `x-rpool-forwarded-for: <original caller>`.
pub(crate) type PeerAdminClient = AdminServiceClient<InterceptedService<Channel, ForwardMark>>;

/// Marks calls to another controller (see [`PeerAdminClient`]).
#[derive(Clone)]
pub(crate) struct ForwardMark {
    by: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    on_behalf_of: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl ForwardMark {
    pub(crate) fn new(own_id: u64, on_behalf_of: Option<&rpool_proto::pki::Identity>) -> ForwardMark {
        ForwardMark {
            by: own_id.into(),
            // Identities are restricted to URI-safe ASCII, so this only
            // fails for a value that could not have passed authorization.
            on_behalf_of: on_behalf_of.and_then(|id| id.uri().parse().ok()),
        }
    }
}

impl tonic::service::Interceptor for ForwardMark {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        metadata.insert(FORWARDED, self.by.clone());
        if let Some(caller) = &self.on_behalf_of {
            metadata.insert(crate::api::authz::FORWARDED_FOR, caller.clone());
        }
        Ok(request)
    }
}

/// `message` as a call forwarded by controller `own_id`.
pub(crate) fn forwarded_request<T>(own_id: u64, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(FORWARDED, own_id.into());
    request
}

/// True when `request` came from another controller forwarding it.
pub(crate) fn was_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED)
}

/// Where a forwarded call goes: the leader this controller knows of, in
/// the term it knows of.
#[derive(Clone)]
pub(crate) struct Route {
    pub channel: Channel,
    leader_id: u64,
    term: u64,
}

/// A follower's channel to the current leader, for forwarding calls.
#[derive(Default)]
pub(crate) struct LeaderLink(Mutex<Option<Route>>);

impl LeaderLink {
    /// `None` when this controller leads; otherwise the route to the leader
    /// (mutual TLS with this controller's certificate, expecting the
    /// leader's id), reused while the same leader leads in the same term.
    pub(crate) fn route(&self, shared: &Shared, already_forwarded: bool) -> Result<Option<Route>, Status> {
        let status = shared.node.status();
        if status.role == RaftRole::Leader {
            return Ok(None);
        }
        if already_forwarded {
            return Err(Status::unavailable(
                "leadership is changing (this controller was forwarded a request but does not lead); retry",
            ));
        }
        if status.leader_id == 0 {
            return Err(Status::unavailable(
                "no controller leads yet (election in progress); retry",
            ));
        }
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(route) = &*cached
            && route.leader_id == status.leader_id
            && route.term == status.term
        {
            return Ok(Some(route.clone()));
        }
        let address = shared.address_of(status.leader_id).ok_or_else(|| {
            Status::unavailable(format!(
                "the address of leader {} is unknown; retry",
                status.leader_id
            ))
        })?;
        let channel = shared
            .tls
            .controller_endpoint(&address, status.leader_id)
            .map_err(|e| Status::internal(format!("leader address {address:?}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(FORWARD_DEADLINE)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .connect_lazy();
        let route = Route {
            channel,
            leader_id: status.leader_id,
            term: status.term,
        };
        *cached = Some(route.clone());
        Ok(Some(route))
    }

    /// Drops the cached channel if it still goes to `route`'s leader.
    fn forget(&self, route: &Route) {
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cached
            .as_ref()
            .is_some_and(|c| c.leader_id == route.leader_id && c.term == route.term)
        {
            *cached = None;
        }
    }
}

/// True when `status` names another leader than `leader_id` or a newer
/// term than `term`.
fn moved_on(status: &RaftStatus, leader_id: u64, term: u64) -> bool {
    status.term > term || (status.leader_id != 0 && status.leader_id != leader_id)
}

/// Runs `call` (made on `route`'s channel) to completion, unless it takes
/// longer than [`FORWARD_DEADLINE`] or this controller learns of a new
/// leader or term first: then the link is dropped and the caller gets
/// UNAVAILABLE to retry (the outcome of a write in flight is unknown, so it
/// is not replayed here).
pub(crate) async fn relay<R>(
    shared: &Shared,
    link: &LeaderLink,
    route: &Route,
    call: impl Future<Output = Result<R, Status>>,
) -> Result<R, Status> {
    let mut status = shared.node.raft().watch_status();
    let leader_changed = crate::raft::node::until(&mut status, |s| moved_on(s, route.leader_id, route.term));
    let outcome = tokio::select! {
        answer = tokio::time::timeout(FORWARD_DEADLINE, call) => match answer {
            Ok(Ok(response)) => return Ok(response),
            // The channel's own timeout ends a call as CANCELLED.
            Ok(Err(e))
                if !matches!(
                    e.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                ) =>
            {
                return Err(e);
            }
            Ok(Err(e)) => Status::unavailable(format!(
                "leader {} did not answer ({}); retry",
                route.leader_id,
                e.message()
            )),
            Err(_) => Status::unavailable(format!(
                "leader {} did not answer within {} s; retry",
                route.leader_id,
                FORWARD_DEADLINE.as_secs()
            )),
        },
        () = leader_changed => {
            let now = shared.node.status();
            Status::unavailable(format!(
                "leadership moved from controller {} (term {}) to controller {} (term {}) while the call was \
                 forwarded; retry",
                route.leader_id, route.term, now.leader_id, now.term
            ))
        }
    };
    link.forget(route);
    Err(outcome)
}

/// A client for the admin API of the controller at `address` (mutual TLS,
/// marked as a controller's own call).
pub(crate) async fn admin_client(shared: &Shared, id: u64, address: &str) -> anyhow::Result<PeerAdminClient> {
    let channel = shared
        .tls
        .controller_endpoint(address, id)?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(AdminServiceClient::with_interceptor(
        channel,
        ForwardMark::new(shared.config.id, None),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(leader_id: u64, term: u64) -> RaftStatus {
        RaftStatus {
            leader_id,
            term,
            ..RaftStatus::default()
        }
    }

    #[test]
    fn a_route_is_abandoned_on_a_new_term_or_another_leader_only() {
        assert!(!moved_on(&status(2, 5), 2, 5));
        // A follower that lost the leader (election running) keeps waiting.
        assert!(!moved_on(&status(0, 5), 2, 5));
        assert!(moved_on(&status(0, 6), 2, 5));
        assert!(moved_on(&status(3, 5), 2, 5));
        assert!(moved_on(&status(2, 6), 2, 5));
    }

    #[test]
    fn forwarded_requests_carry_the_own_id() {
        let request = forwarded_request(7, ());
        assert!(was_forwarded(&request));
        assert_eq!(request.metadata().get(FORWARDED).unwrap(), "7");
        assert!(!was_forwarded(&Request::new(())));
    }
}
