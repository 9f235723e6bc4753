//! The leader's loops: what runs only while this controller leads.
//!
//! - [`liveness`]: heartbeats in memory and the ticker that proposes
//!   suspect/down transitions.
//! - [`dispatch`]: the planner loop (ReadIndex, plan, propose) and task
//!   delivery to agent sessions, task results in.
//! - [`autoscaler`]: utilization windows and autoscale decisions each
//!   planner tick.
//! - [`certs`]: control planes' certificate expiry compared with the
//!   pools each planner tick; changes and due alerts proposed.
//! - [`webhook`]: new events POSTed to the configured URL.
//!
//! The loops take decisions from [`crate::policy`] and change state only by
//! proposing commands through [`crate::replica`].

pub mod autoscaler;
pub mod certs;
pub mod dispatch;
pub mod liveness;
pub mod webhook;
