//! End-to-end scenarios against the real binaries (see `rpool_tests` for the
//! harness). One test binary, one module per area.

mod config;
mod ctl;
mod hosts;
mod liveness;
mod pools;
mod raft;
mod sandbox;
mod validation;
