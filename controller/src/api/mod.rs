//! The gRPC services, behind mutual TLS and [`authz`].
//!
//! - [`admin`]: `AdminService`, split by noun (hosts and controllers in
//!   `admin`, then [`admin::pools`], [`admin::autoscale`],
//!   [`admin::tokens`]).
//! - [`agent`]: `AgentService.Session`, one stream per agent.
//! - [`enroll`]: `EnrollService`, agent certificates for a bootstrap token.
//! - [`forward`]: a follower's calls forwarded to the leader (deadline,
//!   abandoned on a leader change).
//! - [`authz`]: who may call which service.
//! - [`task_result`]: task results from agents, checked, into `FinishTask`.
//! - [`status`]: the one mapping from proposal failures to gRPC statuses.
//! - [`validate`]: limits and checks of what agents and admins send.

pub mod admin;
pub mod agent;
pub mod authz;
pub mod enroll;
pub mod forward;
pub mod relay;
pub mod status;
pub mod task_result;
pub mod validate;
