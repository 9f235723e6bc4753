//! Policy: what should happen, decided as pure functions of the replicated
//! state and the time (an argument, never read from a clock here).
//!
//! - [`fleet`]: the hosts that may be placed, pool endpoints.
//! - [`placement`]: which hosts make up a pool (control planes spread over
//!   zones, workers covering the request with the least overshoot).
//! - [`planner`]: state + now → the commands that move every pool towards
//!   its spec (tasks to run, timeouts, refreshes).
//! - [`healing`]: which down members are replaced and by whom, storms,
//!   fences and expiries.
//! - [`zones`]: zone policies of workers (spread, pack, allowed zones).
//! - [`autoscale`]: autoscaling judgements from utilization windows.
//! - [`backups`]: scheduled etcd snapshots of pools and their retention.
//! - [`certs`]: certificate expiry reports and alerts, renewals one
//!   control plane at a time.
//! - [`what_if`]: the planner run on a copy of the state with hosts assumed
//!   down (`rpoolctl what-if`).
//!
//! Nothing here imports the API or the leader's loops (checked by
//! `tests::layers` in the crate root).

pub mod autoscale;
pub mod backups;
pub mod certs;
pub mod fleet;
pub mod healing;
pub mod placement;
pub mod planner;
#[cfg(test)]
pub(crate) mod testing;
pub mod upgrade;
pub mod what_if;
pub mod zones;
