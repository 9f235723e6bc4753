//! Pending pods, counted on control planes for the controller's autoscaler.
//!
//! [`run`] checks every [`PENDING_PODS_EVERY`] whether this host is a
//! control plane (its admin kubeconfig exists, see `kube.admin_kubeconfig`)
//! and, if so, counts the cluster's unschedulable pods with
//! [`Driver::pending_pods`] (the real `kubectl` command line; `kube.rs` is
//! the only module that spawns processes). The latest count is published
//! on a watch channel that the session reads for every heartbeat
//! (`Heartbeat.pending_pods`); `None` on other hosts, and when the count
//! failed (the controller then has no pending-pods signal from this host
//! rather than a stale one).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::kube::Driver;

/// How often a control plane counts pending pods.
pub const PENDING_PODS_EVERY: Duration = Duration::from_secs(3);

/// Counts pending pods until `stop` turns true, publishing on `tx`.
pub async fn run(driver: Arc<Driver>, tx: watch::Sender<Option<u32>>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(PENDING_PODS_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let count = if driver.is_control_plane() {
            match driver.pending_pods().await {
                Ok(n) => {
                    failing = false;
                    debug!(pending_pods = n, "counted pending pods");
                    Some(n)
                }
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "counting pending pods failed; reporting none until it works");
                    }
                    failing = true;
                    None
                }
            }
        } else {
            None
        };
        tx.send_replace(count);
    }
}
