//! End-to-end scenarios against the real binaries (see `rpool_tests` for the
//! harness). One test binary, one module per area.

mod audit;
mod autoscale;
mod backup;
mod certs;
mod config;
mod ctl;
mod damage;
mod dashboard;
mod enroll;
mod healing;
mod hosts;
mod images;
mod liveness;
mod monitoring;
mod observability;
mod pool_backup;
mod pools;
mod raft;
mod readme_tour;
mod relay;
mod sandbox;
mod secrets;
mod tls;
mod upgrade;
mod validation;
mod what_if;
mod world;
mod zones;
