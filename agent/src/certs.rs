//! Certificate expiry, read on control planes for the controller.
//!
//! [`run`] looks every [`POLL`] whether this host is a control plane (its
//! admin kubeconfig exists) and reads the expiry with
//! [`Driver::cert_expiry`] (`kubeadm certs check-expiration -o json`) when
//! it just became one (init/join), after a renewal, and every
//! `kube.cert_check_interval_s`; a failed read is tried again at the next
//! poll. Each read is published on a watch channel; the session sends it
//! in the next heartbeat (and in its first), so once per read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rpool_proto::clock::unix_ms_now;
use rpool_proto::v1::CertReport;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::kube::Driver;

/// How often the (cheap) control-plane and renewal checks run.
pub const POLL: Duration = Duration::from_secs(1);

/// Reads certificate expiry until `stop` turns true, publishing on `tx`.
pub async fn run(
    driver: Arc<Driver>,
    interval: Duration,
    tx: watch::Sender<Option<CertReport>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_read: Option<Instant> = None;
    let mut seen_renewals = driver.renewals();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if !driver.is_control_plane() {
            if tx.borrow().is_some() {
                tx.send_replace(None);
            }
            last_read = None;
            continue;
        }
        let renewals = driver.renewals();
        let due = last_read.is_none_or(|t| t.elapsed() >= interval) || renewals != seen_renewals;
        if !due {
            continue;
        }
        match driver.cert_expiry().await {
            Ok(certs) => {
                failing = false;
                last_read = Some(Instant::now());
                seen_renewals = renewals;
                debug!(certs = certs.len(), "read certificate expiry");
                // Every read is published (its time differs), so the session
                // sends one per interval: a new leader, which starts with no
                // observations, hears it within an interval.
                tx.send_replace(Some(CertReport {
                    certs,
                    checked_at_unix_ms: unix_ms_now(),
                }));
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "reading certificate expiry failed; trying again");
                }
                failing = true;
            }
        }
    }
}
