//! The agent's Prometheus metrics (`[metrics] listen`, off by default):
//! heartbeats sent, heartbeat round trips (send → the controller's
//! `HeartbeatAck`), reconnects, whether a session is up, task durations by
//! kind and outcome, and the process's RSS and CPU time.

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use rpool_proto::metrics::{
    Counter, Exposition, Gauge, Histogram, HistogramVec, LATENCY_BUCKETS_S, TASK_BUCKETS_S, histogram,
    observe_duration,
};

/// `[metrics]`: the Prometheus endpoint of the agent (off unless `listen`
/// is set); its error message suggests port 9465.
pub type MetricsConfig = rpool_proto::config::MetricsConfig<9465>;

/// Heartbeats whose send time is remembered to match acknowledgements.
const IN_FLIGHT: usize = 16;

/// What the agent counts.
#[derive(Debug)]
pub struct Metrics {
    /// Heartbeats queued to the controller.
    pub heartbeats_sent: Counter,
    /// Send → `HeartbeatAck` round trips, seconds.
    pub heartbeat_rtt: Histogram,
    /// Sessions that ended and were retried.
    pub reconnects: Counter,
    /// 1 while a welcomed session is up.
    pub session_connected: Gauge,
    /// Task run times reported to the controller, by kind and outcome.
    pub task_duration: HistogramVec,
    /// When the certificate of the last session expires (Unix seconds, 0
    /// before the first session).
    pub cert_expiry: Gauge,
    /// `(seq, sent)` of recent heartbeats.
    in_flight: Mutex<VecDeque<(u64, Instant)>>,
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    heartbeats_sent: Counter::default(),
    heartbeat_rtt: histogram(LATENCY_BUCKETS_S),
    reconnects: Counter::default(),
    session_connected: Gauge::default(),
    task_duration: HistogramVec::new(TASK_BUCKETS_S, &["kind", "outcome"]),
    cert_expiry: Gauge::default(),
    in_flight: Mutex::new(VecDeque::new()),
});

/// This process's metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

impl Metrics {
    /// Heartbeat `seq` was queued now.
    pub fn heartbeat_sent(&self, seq: u64) {
        self.heartbeats_sent.inc();
        let mut q = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= IN_FLIGHT {
            q.pop_front();
        }
        q.push_back((seq, Instant::now()));
    }

    /// A session starts with the certificate `cert_pem`: records when it
    /// expires (an unparsable one leaves the last value).
    pub fn certificate(&self, cert_pem: &str) {
        if let Ok(at) = rpool_proto::pki::not_after(cert_pem) {
            let secs = at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            self.cert_expiry.set(i64::try_from(secs).unwrap_or(i64::MAX));
        }
    }

    /// The controller acknowledged `seq`: records the round trip if the
    /// send is still remembered.
    pub fn heartbeat_acked(&self, seq: u64) {
        let mut q = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = q.iter().position(|(s, _)| *s == seq) {
            let (_, sent) = q[i];
            q.drain(..=i);
            observe_duration(&self.heartbeat_rtt, sent.elapsed());
        }
    }

    /// A session was welcomed (`true`) or lost (`false`).
    pub fn connected(&self, up: bool) {
        self.session_connected.set(i64::from(up));
        if !up {
            self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }
}

/// The exposition of `m` plus process RSS and CPU.
pub fn encode(m: &Metrics) -> String {
    let mut e = Exposition::new();
    e.counter(
        "rpool_agent_heartbeats_sent_total",
        "Heartbeats sent to the controller.",
        m.heartbeats_sent.get(),
    );
    e.histogram(
        "rpool_agent_heartbeat_rtt_seconds",
        "Heartbeat send to HeartbeatAck.",
        &m.heartbeat_rtt,
    );
    e.counter(
        "rpool_agent_reconnects_total",
        "Sessions that ended and were retried.",
        m.reconnects.get(),
    );
    e.gauge(
        "rpool_agent_session_connected",
        "1 while a session with the leader is up.",
        m.session_connected.get(),
    );
    e.histogram_vec(
        "rpool_agent_task_duration_seconds",
        "Task run times, by kind and outcome.",
        &m.task_duration,
    );
    e.gauge(
        "rpool_agent_cert_expiry_timestamp_seconds",
        "When this agent's certificate expires (Unix seconds; 0 before the first session).",
        m.cert_expiry.get(),
    );
    e.process();
    e.finish()
}

/// Serves `/metrics` on `listener` until `shutdown` turns true.
pub async fn serve(listener: tokio::net::TcpListener, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(|| encode(global()));
    rpool_proto::metrics::serve(listener, render, async move {
        let _ = shutdown.wait_for(|s| *s).await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_match_sends_and_the_exposition_lists_every_family() {
        let m = global();
        m.heartbeat_sent(1);
        m.heartbeat_sent(2);
        m.heartbeat_acked(2);
        m.heartbeat_acked(1); // already drained with 2: not counted twice
        m.connected(true);
        m.task_duration.observe(&["join_worker", "ok"], 3.0);
        rpool_proto::tls::install_crypto_provider();
        let ca = rpool_proto::pki::Ca::generate("metrics test CA").unwrap();
        let identity = rpool_proto::pki::Identity::Agent("5f0c1a8e-0000-4000-8000-000000000001".into());
        let issued = ca
            .issue(&identity, &[], std::time::Duration::from_secs(3600))
            .unwrap();
        m.certificate(&issued.cert_pem);
        let expiry = rpool_proto::pki::not_after(&issued.cert_pem).unwrap();
        let expiry = expiry.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let text = encode(m);
        let line = format!("rpool_agent_cert_expiry_timestamp_seconds {expiry}");
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        for line in [
            "rpool_agent_heartbeats_sent_total 2",
            "rpool_agent_heartbeat_rtt_seconds_count 1",
            "rpool_agent_session_connected 1",
            "rpool_agent_task_duration_seconds_count{kind=\"join_worker\",outcome=\"ok\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        let bad = MetricsConfig {
            listen: "nope".into(),
        };
        assert_eq!(bad.address().unwrap_err().field, "metrics.listen");
    }
}
