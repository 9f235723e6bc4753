//! The controller's Prometheus metrics: what it counts ([`Metrics`], one per
//! process, [`global`]), what it reads from the state on each scrape
//! ([`render`]), the `[metrics]` config section and the `/metrics` server
//! ([`start`]).
//!
//! Counted (process lifetime): heartbeats and their processing time and
//! lag, task durations from issue to result (leader only), webhook
//! deliveries. Read at scrape time: hosts by state, pools by phase, Raft
//! term / commit / applied index, leadership, connected agent sessions.

use std::sync::{Arc, LazyLock};

use anyhow::Context;
use rpool_proto::metrics::{
    Counter, Exposition, Histogram, HistogramVec, LATENCY_BUCKETS_S, TASK_BUCKETS_S, histogram,
    observe_duration,
};
use tokio::net::TcpListener;
use tracing::info;

use crate::Shared;
use crate::raft::node::RaftRole;
use crate::state::pool::PoolPhase;

/// `[metrics]`: the Prometheus endpoint (off unless `listen` is set); its
/// error message suggests port 9464.
pub type MetricsConfig = rpool_proto::config::MetricsConfig<9464>;

/// What the controller counts. See [`global`].
#[derive(Debug)]
pub struct Metrics {
    /// Heartbeats processed (leader).
    pub heartbeats: Counter,
    /// Time from a heartbeat's arrival to its acknowledgement (validation,
    /// liveness, reconciliation), seconds.
    pub heartbeat_processing: Histogram,
    /// Controller clock at arrival minus the agent's `sent_at_unix_ms`,
    /// seconds (network + queueing + clock skew; negative skew counts as 0).
    pub heartbeat_lag: Histogram,
    /// Acknowledgements not sent because the session's queue was full.
    pub heartbeat_acks_dropped: Counter,
    /// Agent sessions refused with a retry hint: too many being set up.
    pub sessions_refused_busy: Counter,
    /// Direct agent sessions this leader handed to a follower to relay.
    pub sessions_handed: Counter,
    /// Agent sessions this follower relays to the leader now.
    pub sessions_relayed: std::sync::atomic::AtomicI64,
    /// Relayed agent sessions this follower ended because it knew no
    /// leader for a whole grace period (cut off from the group).
    pub relays_cut_off: Counter,
    /// Task durations from issue to result, by `kind` and `outcome`.
    pub task_duration: HistogramVec,
    /// Events this controller saw committed since it started.
    pub events: Counter,
    /// Webhook POSTs answered 2xx.
    pub webhook_deliveries: Counter,
    /// Webhook attempts that failed (each retry counts).
    pub webhook_failures: Counter,
    /// Events dropped: the queue was full, or every attempt failed.
    pub webhook_dropped: Counter,
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    /// Every metric at zero.
    fn new() -> Metrics {
        Metrics {
            heartbeats: Counter::default(),
            heartbeat_processing: histogram(LATENCY_BUCKETS_S),
            heartbeat_lag: histogram(LATENCY_BUCKETS_S),
            heartbeat_acks_dropped: Counter::default(),
            sessions_refused_busy: Counter::default(),
            sessions_handed: Counter::default(),
            sessions_relayed: std::sync::atomic::AtomicI64::new(0),
            relays_cut_off: Counter::default(),
            task_duration: HistogramVec::new(TASK_BUCKETS_S, &["kind", "outcome"]),
            events: Counter::default(),
            webhook_deliveries: Counter::default(),
            webhook_failures: Counter::default(),
            webhook_dropped: Counter::default(),
        }
    }
}

/// This process's metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

/// Records the lag of a heartbeat sent at `sent_at_unix_ms` (agent clock)
/// arriving at `now_unix_ms` (controller clock); a negative lag (agent
/// clock ahead) counts as 0.
pub fn record_heartbeat_lag(sent_at_unix_ms: u64, now_unix_ms: u64) {
    let lag_ms = now_unix_ms.saturating_sub(sent_at_unix_ms);
    global().heartbeat_lag.observe(lag_ms as f64 / 1_000.0);
}

/// Acknowledges heartbeat `seq` on the session's queue (never waits: a full
/// queue drops the ack and counts it) and records its processing time.
pub(crate) fn ack_heartbeat(
    tx: &tokio::sync::mpsc::Sender<crate::leader::dispatch::Outbound>,
    seq: u64,
    arrived: std::time::Instant,
) {
    let m = global();
    m.heartbeats.inc();
    observe_duration(&m.heartbeat_processing, arrived.elapsed());
    let ack = rpool_proto::v1::ControllerMessage {
        msg: Some(rpool_proto::v1::controller_message::Msg::HeartbeatAck(
            rpool_proto::v1::HeartbeatAck { seq },
        )),
    };
    if tx.try_send(Box::new(Ok(ack))).is_err() {
        m.heartbeat_acks_dropped.inc();
    }
}

/// Records a task that took from `issued_at_unix_ms` to `now_unix_ms`.
pub fn record_task(kind: &str, ok: bool, issued_at_unix_ms: u64, now_unix_ms: u64) {
    let seconds = now_unix_ms.saturating_sub(issued_at_unix_ms) as f64 / 1_000.0;
    let outcome = if ok { "ok" } else { "failed" };
    global().task_duration.observe(&[kind, outcome], seconds);
}

/// Every pool phase, for zero-filled output.
const PHASES: [PoolPhase; 6] = [
    PoolPhase::Provisioning,
    PoolPhase::Ready,
    PoolPhase::Resizing,
    PoolPhase::Healing,
    PoolPhase::Degraded,
    PoolPhase::Deleting,
];

/// The values read from the state and Raft at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// `(state, hosts)`, every state.
    pub hosts_by_state: Vec<(&'static str, u64)>,
    /// `(phase, pools)`, every phase.
    pub pools_by_phase: Vec<(&'static str, u64)>,
    /// Raft term, commit index, applied index.
    pub term: u64,
    /// Highest log index known committed.
    pub commit_index: u64,
    /// Highest log index applied here.
    pub applied_index: u64,
    /// Whether this controller leads.
    pub is_leader: bool,
    /// Leader id, 0 when unknown.
    pub leader_id: u64,
    /// Agent sessions connected here.
    pub agents_connected: u64,
    /// Events retained in the replicated log.
    pub events_retained: u64,
    /// Requests refused by authorization (`None`: not exported).
    pub authz_denied: Option<u64>,
    /// Enrollments refused (bad, expired, revoked or used-up token; a
    /// connected host).
    pub enroll_denied: u64,
    /// `(cert, Unix seconds)` when this controller's certificate and the
    /// CA's expire.
    pub cert_expiry: Vec<(&'static str, u64)>,
    /// `(pool, Unix seconds)`: when the first of each pool's control-plane
    /// certificates expires (pools whose control planes reported).
    pub pool_cert_expiry: Vec<(String, u64)>,
}

fn snapshot(shared: &Shared) -> Snapshot {
    let status = shared.node.status();
    let (hosts_by_state, pools_by_phase, events_retained, pool_cert_expiry) = shared.node.read(|sm| {
        let hosts = sm
            .count_by_state()
            .into_iter()
            .map(|(s, n)| (s.as_str(), u64::from(n)))
            .collect();
        let pools = PHASES
            .iter()
            .map(|phase| {
                let n = sm.pools().values().filter(|p| p.phase == *phase).count() as u64;
                (phase.as_str(), n)
            })
            .collect();
        let certs = sm
            .pools()
            .iter()
            .filter_map(|(name, p)| {
                p.nearest_cert()
                    .map(|(_, c)| (name.clone(), c.expires_unix_ms / 1000))
            })
            .collect();
        (hosts, pools, sm.events().len() as u64, certs)
    });
    let agents_connected = shared
        .liveness
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .connected_count() as u64;
    Snapshot {
        hosts_by_state,
        pools_by_phase,
        term: status.term,
        commit_index: status.commit_index,
        applied_index: status.applied_index,
        is_leader: status.role == RaftRole::Leader,
        leader_id: status.leader_id,
        agents_connected,
        events_retained,
        authz_denied: Some(crate::api::authz::denied_total()),
        enroll_denied: crate::api::enroll::denials(),
        cert_expiry: [("controller", &shared.tls.cert_pem), ("ca", &shared.tls.ca_pem)]
            .into_iter()
            .filter_map(|(name, pem)| {
                let at = rpool_proto::pki::not_after(pem).ok()?;
                Some((name, at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs()))
            })
            .collect(),
        pool_cert_expiry,
    }
}

/// The exposition of `snap` and the counters in `m`. Pure apart from the
/// process RSS/CPU lines.
pub fn encode(snap: &Snapshot, m: &Metrics) -> String {
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut e = Exposition::new();
    e.gauge_by("rpool_hosts", "Hosts by state.", "state", &snap.hosts_by_state);
    e.gauge_by("rpool_pools", "Pools by phase.", "phase", &snap.pools_by_phase);
    e.gauge("rpool_raft_term", "Current Raft term.", gauge(snap.term));
    e.gauge(
        "rpool_raft_commit_index",
        "Highest Raft log index known to be committed.",
        gauge(snap.commit_index),
    );
    e.gauge(
        "rpool_raft_applied_index",
        "Highest Raft log index applied to the state here.",
        gauge(snap.applied_index),
    );
    e.gauge(
        "rpool_raft_is_leader",
        "1 when this controller leads.",
        i64::from(snap.is_leader),
    );
    e.gauge(
        "rpool_raft_leader_id",
        "Id of the current leader, 0 when unknown.",
        gauge(snap.leader_id),
    );
    e.gauge(
        "rpool_agent_sessions",
        "Agent sessions connected to this controller.",
        gauge(snap.agents_connected),
    );
    e.counter(
        "rpool_heartbeats_total",
        "Agent heartbeats processed by this controller.",
        m.heartbeats.get(),
    );
    e.histogram(
        "rpool_heartbeat_processing_seconds",
        "Time from a heartbeat's arrival to its acknowledgement.",
        &m.heartbeat_processing,
    );
    e.histogram(
        "rpool_heartbeat_lag_seconds",
        "Controller clock at arrival minus the agent's sent_at (network, queueing and clock skew).",
        &m.heartbeat_lag,
    );
    e.counter(
        "rpool_heartbeat_acks_dropped_total",
        "Heartbeat acknowledgements not sent because the session queue was full.",
        m.heartbeat_acks_dropped.get(),
    );
    e.counter(
        "rpool_agent_sessions_refused_busy_total",
        "Agent sessions refused with a retry hint because too many were being set up at once.",
        m.sessions_refused_busy.get(),
    );
    e.counter(
        "rpool_agent_sessions_handed_total",
        "Direct agent sessions this leader handed to a follower to relay.",
        m.sessions_handed.get(),
    );
    e.gauge(
        "rpool_agent_sessions_relayed",
        "Agent sessions this controller relays to the leader (it holds their connections).",
        m.sessions_relayed.load(std::sync::atomic::Ordering::Relaxed),
    );
    e.counter(
        "rpool_agent_sessions_cut_off_total",
        "Relayed agent sessions this follower ended because it knew no leader (cut off from the group): their agents went to another controller.",
        m.relays_cut_off.get(),
    );
    e.histogram_vec(
        "rpool_task_duration_seconds",
        "Task durations from issue to result, by kind and outcome (leader).",
        &m.task_duration,
    );
    e.counter(
        "rpool_events_total",
        "Events committed since this controller started.",
        m.events.get(),
    );
    e.gauge(
        "rpool_events_retained",
        "Events kept in the replicated event log.",
        gauge(snap.events_retained),
    );
    if let Some(denied) = snap.authz_denied {
        e.counter(
            "rpool_authz_denied_total",
            "Requests refused by authorization.",
            denied,
        );
    }
    e.counter(
        "rpool_enroll_denied_total",
        "Agent enrollments refused (bad, expired, revoked or used-up token, or a connected host).",
        snap.enroll_denied,
    );
    e.counter(
        "rpool_webhook_deliveries_total",
        "Events delivered to the webhook (2xx answer).",
        m.webhook_deliveries.get(),
    );
    e.counter(
        "rpool_webhook_failures_total",
        "Webhook attempts that failed (every retry counts).",
        m.webhook_failures.get(),
    );
    e.counter(
        "rpool_webhook_dropped_total",
        "Events not delivered: queue full or every attempt failed.",
        m.webhook_dropped.get(),
    );
    e.gauge_by(
        "rpool_cert_expiry_timestamp_seconds",
        "When this controller's certificate (cert=\"controller\") and the CA's (cert=\"ca\") expire, Unix seconds.",
        "cert",
        &snap.cert_expiry,
    );
    let pools: Vec<(&str, u64)> = snap
        .pool_cert_expiry
        .iter()
        .map(|(p, t)| (p.as_str(), *t))
        .collect();
    e.gauge_by(
        "rpool_pool_cert_expiry_timestamp_seconds",
        "When the first of a pool's control-plane certificates (kubeadm's) expires, Unix seconds.",
        "pool",
        &pools,
    );
    e.process();
    e.finish()
}

/// Binds `[metrics] listen`, if set (done before anything else starts, so
/// a taken port fails start-up cleanly).
pub(crate) async fn bind(config: &crate::Config) -> anyhow::Result<Option<TcpListener>> {
    let Some(address) = config.metrics.address()? else {
        return Ok(None);
    };
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding metrics.listen {address}"))?;
    Ok(Some(listener))
}

/// Serves `/metrics` on `listener` (if any) until the controller shuts down.
pub(crate) fn start(
    listener: Option<TcpListener>,
    shared: Arc<Shared>,
) -> Option<tokio::task::JoinHandle<()>> {
    let listener = listener?;
    if let Ok(address) = listener.local_addr() {
        info!(%address, "serving /metrics");
    }
    let mut stop = shared.shutdown.clone();
    let render_shared = shared.clone();
    let render: Arc<dyn Fn() -> String + Send + Sync> =
        Arc::new(move || encode(&snapshot(&render_shared), global()));
    Some(tokio::spawn(async move {
        rpool_proto::metrics::serve(listener, render, async move { crate::stopped(&mut stop).await }).await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_key_is_validated_and_named() {
        let off = MetricsConfig::default();
        assert_eq!(off.address(), Ok(None));
        let on = MetricsConfig {
            listen: "127.0.0.1:9464".into(),
        };
        assert_eq!(on.address().unwrap().unwrap().port(), 9464);
        let bad = MetricsConfig {
            listen: "localhost".into(),
        };
        let err = bad.validate().unwrap_err();
        assert_eq!(err.field, "metrics.listen");
        assert!(err.problem.contains("accepted ip:port"), "{err}");
    }

    #[test]
    fn the_exposition_names_every_state_phase_and_raft_value() {
        let m = Metrics::new();
        m.heartbeats.inc_by(3);
        m.task_duration.observe(&["join_worker", "ok"], 12.0);
        let snap = Snapshot {
            hosts_by_state: vec![("ready", 2), ("down", 1)],
            pools_by_phase: vec![("ready", 1), ("degraded", 0)],
            term: 7,
            commit_index: 42,
            applied_index: 41,
            is_leader: true,
            leader_id: 2,
            agents_connected: 2,
            events_retained: 5,
            authz_denied: Some(4),
            enroll_denied: 3,
            cert_expiry: vec![("controller", 1_900_000_000), ("ca", 2_000_000_000)],
            pool_cert_expiry: vec![("web".into(), 1_850_000_000)],
        };
        let text = encode(&snap, &m);
        for line in [
            "rpool_hosts{state=\"ready\"} 2",
            "rpool_hosts{state=\"down\"} 1",
            "rpool_pools{phase=\"degraded\"} 0",
            "rpool_raft_term 7",
            "rpool_raft_commit_index 42",
            "rpool_raft_applied_index 41",
            "rpool_raft_is_leader 1",
            "rpool_raft_leader_id 2",
            "rpool_agent_sessions 2",
            "rpool_heartbeats_total 3",
            "rpool_task_duration_seconds_bucket{kind=\"join_worker\",outcome=\"ok\",le=\"10\"} 0",
            "rpool_task_duration_seconds_bucket{kind=\"join_worker\",outcome=\"ok\",le=\"30\"} 1",
            "rpool_task_duration_seconds_count{kind=\"join_worker\",outcome=\"ok\"} 1",
            "rpool_authz_denied_total 4",
            "rpool_enroll_denied_total 3",
            "rpool_cert_expiry_timestamp_seconds{cert=\"controller\"} 1900000000",
            "rpool_cert_expiry_timestamp_seconds{cert=\"ca\"} 2000000000",
            "rpool_pool_cert_expiry_timestamp_seconds{pool=\"web\"} 1850000000",
            "# TYPE rpool_heartbeat_processing_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Every sample line is `name[{labels}] value` with a parseable value.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().unwrap();
            assert!(
                value.parse::<f64>().is_ok() || value == "+Inf",
                "unparseable line {l:?}"
            );
        }
    }
}
