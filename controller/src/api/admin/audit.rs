//! The audit record an admin change is proposed with (see
//! [`crate::state::audit`]): the caller as [`crate::api::authz`] proved it
//! (for a forwarded call, the original admin and the forwarding
//! controller), the operation, and the proposer's clock. Each handler adds
//! its arguments — names, sizes and ids, never secrets.

use rpool_proto::clock::unix_ms_now;
use tonic::Request;

use crate::api::authz::{caller, principal_of};
use crate::state::audit::AuditRecord;

/// A record of `operation` by the caller of `request`.
pub(crate) fn record<T>(request: &Request<T>, operation: &str) -> AuditRecord {
    let (actor, via) = match (principal_of(request), caller(request)) {
        (Some(p), _) => (p.identity.uri(), p.via),
        (None, Some(identity)) => (identity.uri(), None),
        // Unreachable behind AuthzLayer (every admin call has an identity).
        (None, None) => ("urn:rpool:unknown".to_owned(), None),
    };
    AuditRecord::new(actor, via, operation, unix_ms_now())
}
