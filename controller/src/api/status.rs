//! The one mapping from proposal failures to gRPC statuses.
//!
//! A proposal fails in three ways ([`ProposeError`]): the state machine
//! refused it (nothing changed), it was not committed (no leader, leader
//! change, no quorum in time: retry is safe, commands are idempotent), or
//! the replica stopped. Whether a refusal is a failed precondition (an admin
//! asked for something the state does not allow) or a lost race that the
//! caller retries (an agent's report) depends on the caller: `Refusal`.

use tonic::Status;

use crate::replica::ProposeError;

/// How a refusal by the state machine reads to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The request does not fit the state (admin calls):
    /// FAILED_PRECONDITION with the state machine's reason.
    Precondition,
    /// Another writer changed the state first (agent reports): ABORTED,
    /// the caller retries.
    Race,
}

/// The status for a failed proposal.
pub(crate) fn propose_status(e: ProposeError, refusal: Refusal) -> Status {
    match e {
        ProposeError::Rejected(e) => match refusal {
            Refusal::Precondition => Status::failed_precondition(e.to_string()),
            Refusal::Race => Status::aborted(format!("state changed concurrently: {e}")),
        },
        ProposeError::Stopped => Status::unavailable("the controller is shutting down"),
        ProposeError::Unavailable(e) => Status::unavailable(format!("not committed, retry: {e}")),
    }
}

/// The status for a failed membership change (raft-level proposal):
/// refusals are preconditions, everything else is retried.
pub(crate) fn membership_status(e: crate::raft::node::SubmitError) -> Status {
    match e {
        crate::raft::node::SubmitError::Rejected(message) => Status::failed_precondition(message),
        other => Status::unavailable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ApplyError;

    #[test]
    fn refusals_map_by_caller_and_the_rest_is_unavailable() {
        let refused = || ProposeError::Rejected(ApplyError::Refused("no such pool".into()));
        let s = propose_status(refused(), Refusal::Precondition);
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert!(s.message().contains("no such pool"), "{}", s.message());
        assert_eq!(
            propose_status(refused(), Refusal::Race).code(),
            tonic::Code::Aborted
        );
        assert_eq!(
            propose_status(ProposeError::Stopped, Refusal::Race).code(),
            tonic::Code::Unavailable
        );
        let s = propose_status(
            ProposeError::Unavailable("no leader".into()),
            Refusal::Precondition,
        );
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.message().contains("retry"), "{}", s.message());
        let s = membership_status(crate::raft::node::SubmitError::Rejected("2 voters".into()));
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            membership_status(crate::raft::node::SubmitError::NoLeader).code(),
            tonic::Code::Unavailable
        );
    }
}
