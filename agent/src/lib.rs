//! rpool host agent: tells the controllers who this host is, what it has,
//! how healthy and how busy it is, and runs the pool tasks the leader gives
//! it (kubeadm/kubectl).
//!
//! One agent runs on every server. It holds no cluster-wide state; only
//! [`kube`] spawns processes.
//!
//! Modules:
//! - [`config`]: `agent.toml`, flag overrides, validation.
//! - [`identity`]: the persistent host id, hostname, addresses.
//! - [`address`]: the node's advertise address (config, connection, or a
//!   physical interface; never a bridge, CNI, veth or loopback one).
//! - [`cri`]: the CRI socket (config, or detected under `host_root`).
//! - [`inventory`]: cores and memory from sysinfo, capped by cgroup v2 limits.
//! - [`utilization`]: CPU share, memory used, load averages.
//! - [`health`]: local checks (disk, kubeadm, kubelet, runtime socket, clock).
//! - [`simulate`]: the simulated-hardware file, reloaded when it changes.
//! - [`report`]: assembles facts and heartbeats from the above.
//! - [`backoff`]: jittered exponential reconnect delays.
//! - [`session`]: the gRPC session with a controller.
//! - [`enroll`]: a first certificate from a bootstrap token (CA pinned),
//!   and its renewal at two thirds of its life.
//! - [`tasks`]: the task executor: one task at a time, deadlines, results
//!   persisted in `state_dir/tasks` and re-sent after a reconnect.
//! - [`kube`]: the Kubernetes driver (kubeadm/kubectl command lines,
//!   timeouts, output parsing, secret redaction).
//! - [`metrics`]: the optional Prometheus `/metrics` endpoint.
//! - [`pending`]: on control planes, counts unschedulable pods every few
//!   seconds for the heartbeat (the autoscaler's pending-pods signal).
//!
//! Main loop ([`run`]):
//! 1. Load (or create once) the host id in `state_dir`.
//! 2. Open the sources: sysinfo (CPU + RAM only) or the simulated file,
//!    network interfaces, cgroup limits, health checks.
//! 3. Connect to the next controller in `controllers`; send `Hello` with the
//!    facts and a first heartbeat; wait up to 10s for `Welcome`.
//! 4. Every `Welcome.heartbeat_interval_ms`: sample, send a `Heartbeat`
//!    (facts only when they changed). Tasks received go to the executor;
//!    task results are sent as they finish, and after each Welcome the
//!    results of recently finished tasks are sent again.
//!    A follower answers with a `Redirect` instead: go to 3 on the leader it
//!    names at once (at most 3 redirects in a row, then as in 5).
//! 5. On any error or end of stream: wait a jittered, growing backoff, rotate
//!    to the next controller, go to 3. A welcomed session that breaks is
//!    retried once on the same controller (initial backoff) before rotating.
//! 6. On shutdown: close the stream's sending half and return.

pub mod address;
pub mod backoff;
pub mod certs;
pub mod config;
pub mod connector;
pub mod cri;
pub mod enroll;
pub mod health;
pub mod identity;
pub mod inventory;
pub mod kube;
pub mod metrics;
pub mod pending;
pub mod report;
pub mod session;
pub mod simulate;
pub mod tasks;
pub mod utilization;

use std::future::Future;

pub use config::Config;

/// Runs the agent until `shutdown` resolves; then closes the session and
/// returns `Ok(())`. Errors are start-up problems only (state dir, host id,
/// task result store, simulated-hardware file, system information); after start-up every
/// failure is retried.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // The reporter first: a bad simulated-hardware file is a config error
    // and must be reported before anything is written to the state dir.
    let mut reporter = report::Reporter::new(&config)?;
    let host_id = identity::load_or_create_host_id(&config.state_dir)?;
    tracing::info!(
        host_id = %host_id,
        version = rpool_proto::VERSION,
        simulated = config.simulate.is_some(),
        controllers = ?config.controllers,
        "agent starting"
    );

    let driver = std::sync::Arc::new(kube::Driver::new(&config.kube, config.state_dir.join("tmp")));
    let executor = tasks::Executor::start(tasks::kube_runner(driver.clone()), &config.state_dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.state_dir.join("tasks").display()))?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(address) = config
        .metrics
        .address()
        .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.problem))?
    {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("binding metrics.listen {address}: {e}"))?;
        tracing::info!(%address, "serving /metrics");
        tokio::spawn(metrics::serve(listener, stop_rx.clone()));
    }
    let (pending_tx, pending_rx) = tokio::sync::watch::channel(None);
    reporter.set_pending_pods(pending_rx);
    tokio::spawn(pending::run(driver.clone(), pending_tx, stop_rx.clone()));
    let (certs_tx, certs_rx) = tokio::sync::watch::channel(None);
    reporter.set_certs(certs_rx);
    tokio::spawn(certs::run(
        driver,
        std::time::Duration::from_secs(config.kube.cert_check_interval_s),
        certs_tx,
        stop_rx.clone(),
    ));
    let sessions = session::run_sessions(&config, &host_id, &mut reporter, &executor, stop_rx);
    tokio::pin!(sessions);
    let shutdown = shutdown;
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut sessions => {}
        () = &mut shutdown => {
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
            sessions.await;
        }
    }
    Ok(())
}
