//! End-to-end scenarios against the real binaries (see `rpool_tests` for the
//! harness). One test binary, one module per area.

mod autoscale;
mod config;
mod ctl;
mod enroll;
mod healing;
mod hosts;
mod liveness;
mod monitoring;
mod observability;
mod pools;
mod raft;
mod sandbox;
mod secrets;
mod tls;
mod validation;
