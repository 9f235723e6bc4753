//! `rpool-bench`: committed-write benchmarks of an rpool controller trio and
//! of a three-member etcd 3.4, with the same client behaviour for both.
//!
//! Every subcommand prints one JSON line on stdout. The clusters are started
//! (and stopped) by `tests/bench/run.sh`; the failover subcommands kill the
//! leader through its pid file and restart it by running its start script.
//!
//! What one write is:
//! - rpool: `AdminService.SetHostLabels` on the one registered host, setting
//!   label `bench-K` (6 bytes, K = writer slot mod 4) to a 250-byte ASCII
//!   value: 256 bytes of key + value. The controller replicates a JSON
//!   command and rewrites the host record (with its admin labels).
//! - etcd: `KV.Put` of an 8-byte key (`%08d`, write number mod 100000) with a
//!   256-byte ASCII value.
//!
//! Seq and conc send to the leader (found with a status call first), as a
//! leader-aware client would; failover sends to every member in turn.
//!
//! rpool is mutual TLS only: the rpool subcommands need `--tls-dir DIR`
//! holding `ca.crt`, `admin.crt` and `admin.key`, which `tls-setup` writes
//! (with every controller's certificate and a pre-made agent identity).
//! etcd runs plaintext, as Debian's package does by default, or with
//! mutual TLS on clients and peers (as kubeadm runs it) when the etcd
//! subcommands get `--tls-dir` too (`tests/bench/run.sh`, system `etcd-tls`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rpool_proto::v1::admin_service_client::AdminServiceClient;
use rpool_proto::v1::{GetHostRequest, SetHostLabelsRequest, StatusRequest};
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

mod etcd {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("etcdserverpb");
}

#[derive(Parser)]
#[command(about = "Committed-write benchmarks: rpool controller trio vs etcd")]
struct Cli {
    /// Directory with ca.crt, admin.crt, admin.key: required by the rpool
    /// subcommands (rpool serves only mutual TLS), optional for etcd's
    /// (mutual TLS instead of plaintext); see `tls-setup`.
    #[arg(long, global = true, value_name = "DIR", env = "RPOOL_BENCH_TLS_DIR")]
    tls_dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Sequential SetHostLabels: one write in flight.
    RpoolSeq(Load),
    /// Concurrent SetHostLabels.
    RpoolConc(Load),
    /// Leader kill -9 → next acknowledged SetHostLabels.
    RpoolFailover(Failover),
    /// Sequential GetHost on the leader (a ReadIndex barrier + a lookup):
    /// what a write pays before it proposes.
    RpoolRead(Load),
    /// Sequential etcd Put: one write in flight.
    EtcdSeq(Load),
    /// Concurrent etcd Put.
    EtcdConc(Load),
    /// etcd leader kill -9 → next acknowledged Put.
    EtcdFailover(Failover),
    /// Latency of a bare 256 B file append + fdatasync in DIR: the disk's
    /// own floor under a Raft log sync.
    DiskSync {
        #[arg(long)]
        dir: std::path::PathBuf,
        #[arg(long, default_value_t = 1000)]
        n: u64,
    },
    /// Writes a PKI for a bench trio into DIR: ca.crt, ca.key,
    /// controller-ID.crt/.key (SANs: the address's host, localhost,
    /// 127.0.0.1), admin.crt/.key; and, with --agent-state, a fresh host id
    /// and the agent's tls/ files in that state dir.
    TlsSetup {
        #[arg(long)]
        dir: std::path::PathBuf,
        /// ID=HOST:PORT of every controller, comma-separated.
        #[arg(long, value_delimiter = ',')]
        peers: Vec<String>,
        #[arg(long)]
        agent_state: Option<std::path::PathBuf>,
    },
}

/// The admin TLS material (set from --tls-dir).
static TLS: std::sync::OnceLock<rpool_proto::tls::TlsMaterial> = std::sync::OnceLock::new();

fn tls_setup(
    dir: &std::path::Path,
    peers: &[String],
    agent_state: Option<&std::path::Path>,
) -> Result<serde_json::Value> {
    use rpool_proto::pki::{self, Ca, Identity};
    let ttl = Duration::from_secs(30 * 86_400);
    let ca = Ca::generate("rpool bench CA")?;
    pki::write_public(&dir.join("ca.crt"), ca.cert_pem().as_bytes())?;
    pki::write_private(&dir.join("ca.key"), ca.key_pem().as_bytes())?;
    let pair = |name: &str, issued: pki::Issued| -> Result<()> {
        pki::write_public(&dir.join(format!("{name}.crt")), issued.cert_pem.as_bytes())?;
        pki::write_private(&dir.join(format!("{name}.key")), issued.key_pem.as_bytes())?;
        Ok(())
    };
    for peer in peers {
        let (id, addr) = peer
            .split_once('=')
            .with_context(|| format!("--peers {peer:?}: expected ID=HOST:PORT"))?;
        let id: u64 = id.parse().with_context(|| format!("--peers {peer:?}: bad id"))?;
        let (_, host) = rpool_proto::tls::split_addr(addr)?;
        let sans = [host, "localhost".to_string(), "127.0.0.1".to_string()];
        pair(
            &format!("controller-{id}"),
            ca.issue(&Identity::Controller(id), &sans, ttl)?,
        )?;
    }
    pair("admin", ca.issue(&Identity::Admin("bench".into()), &[], ttl)?)?;
    let mut host_id = String::new();
    if let Some(state) = agent_state {
        // The agent's own format: one lowercase UUID in {state_dir}/host_id.
        host_id = uuid::Uuid::new_v4().hyphenated().to_string();
        std::fs::create_dir_all(state)?;
        std::fs::write(state.join("host_id"), format!("{host_id}\n"))?;
        let tls = state.join("tls");
        let issued = ca.issue(&Identity::Agent(host_id.clone()), &[], ttl)?;
        pki::write_public(&tls.join("ca.crt"), ca.cert_pem().as_bytes())?;
        pki::write_public(&tls.join("agent.crt"), issued.cert_pem.as_bytes())?;
        pki::write_private(&tls.join("agent.key"), issued.key_pem.as_bytes())?;
    }
    Ok(json!({"tls_setup": dir.display().to_string(), "pin": ca.pin(), "host_id": host_id}))
}

#[derive(Args, Clone)]
struct Load {
    /// Comma-separated host:port of every member.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Timed writes.
    #[arg(long, default_value_t = 5000)]
    n: u64,
    /// Writes in flight (1 for the seq subcommands).
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// HTTP/2 connections the writes are spread over.
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Untimed writes first.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// rpool: host id (or prefix) whose labels are written.
    #[arg(long, default_value = "")]
    host_id: String,
}

#[derive(Args, Clone)]
struct Failover {
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Pid file of each member, in endpoint order.
    #[arg(long, value_delimiter = ',')]
    pidfiles: Vec<String>,
    /// Script that starts each member again (in the background, writing
    /// its pid file), in endpoint order.
    #[arg(long, value_delimiter = ',')]
    start_scripts: Vec<String>,
    #[arg(long, default_value_t = 10)]
    trials: usize,
    /// A new write attempt is started every this many ms (round-robin over
    /// the members), until one is acknowledged.
    #[arg(long, default_value_t = 5)]
    retry_ms: u64,
    #[arg(long, default_value = "")]
    host_id: String,
}

#[derive(Clone, Copy, PartialEq)]
enum System {
    Rpool,
    Etcd,
}

/// One write target: a client on one HTTP/2 connection.
#[derive(Clone)]
enum Client {
    Rpool(AdminServiceClient<Channel>, Arc<String>),
    Etcd(etcd::kv_client::KvClient<Channel>),
}

fn value(len: usize, i: u64) -> String {
    let mut v = format!("{i:016}-");
    while v.len() < len {
        v.push('x');
    }
    v.truncate(len);
    v
}

impl Client {
    fn new(system: System, channel: Channel, host_id: &str) -> Client {
        match system {
            System::Rpool => Client::Rpool(AdminServiceClient::new(channel), Arc::new(host_id.to_string())),
            System::Etcd => Client::Etcd(etcd::kv_client::KvClient::new(channel)),
        }
    }

    async fn write(&mut self, i: u64, slot: u64) -> Result<(), tonic::Status> {
        match self {
            Client::Rpool(client, host_id) => {
                let request = SetHostLabelsRequest {
                    host_id: host_id.to_string(),
                    set: [(format!("bench-{}", slot % 4), value(250, i))].into(),
                    remove: vec![],
                };
                client.set_host_labels(request).await.map(|_| ())
            }
            Client::Etcd(client) => {
                let request = etcd::PutRequest {
                    key: format!("{:08}", i % 100_000).into_bytes(),
                    value: value(256, i).into_bytes(),
                    ..Default::default()
                };
                client.put(request).await.map(|_| ())
            }
        }
    }
}

/// How the results name a system: `etcd-tls` is etcd with mutual TLS.
fn system_name(system: System) -> &'static str {
    match (system, TLS.get().is_some()) {
        (System::Rpool, _) => "rpool",
        (System::Etcd, false) => "etcd",
        (System::Etcd, true) => "etcd-tls",
    }
}

/// Mutual TLS with the --tls-dir admin certificate when given (always for
/// rpool), plaintext otherwise.
fn endpoint(addr: &str, timeout: Duration) -> Result<Endpoint> {
    let endpoint = match TLS.get() {
        Some(tls) => tls.endpoint(addr)?,
        None => Endpoint::from_shared(format!("http://{addr}"))?,
    };
    Ok(endpoint
        .connect_timeout(Duration::from_millis(300))
        .timeout(timeout)
        .tcp_nodelay(true))
}

/// What one member says about itself.
#[derive(Debug, Clone, Default)]
struct MemberView {
    leader: bool,
    /// Leader as it names it ("" / 0 when unknown), stringified.
    leader_id: String,
    applied: u64,
    commit: u64,
}

async fn member_view(system: System, addr: &str) -> Result<MemberView> {
    let channel = endpoint(addr, Duration::from_secs(1))?.connect().await?;
    match system {
        System::Rpool => {
            let s = AdminServiceClient::new(channel)
                .status(StatusRequest {})
                .await?
                .into_inner();
            Ok(MemberView {
                leader: s.role == "leader",
                leader_id: s.leader_id,
                applied: s.applied_index,
                commit: s.commit_index,
            })
        }
        System::Etcd => {
            let s = etcd::maintenance_client::MaintenanceClient::new(channel)
                .status(etcd::StatusRequest {})
                .await?
                .into_inner();
            let me = s.header.map(|h| h.member_id).unwrap_or_default();
            Ok(MemberView {
                leader: s.leader != 0 && s.leader == me,
                leader_id: if s.leader == 0 {
                    String::new()
                } else {
                    s.leader.to_string()
                },
                applied: s.raft_applied_index,
                commit: s.raft_index,
            })
        }
    }
}

/// Index (in `endpoints`) of the member that leads; waits up to `limit`.
async fn find_leader(system: System, endpoints: &[String], limit: Duration) -> Result<usize> {
    let start = Instant::now();
    loop {
        for (i, addr) in endpoints.iter().enumerate() {
            if let Ok(view) = member_view(system, addr).await
                && view.leader
            {
                return Ok(i);
            }
        }
        if start.elapsed() > limit {
            bail!("no leader among {endpoints:?} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until every member answers, names the same leader, and
/// has applied the same index it knows committed, twice in a row.
async fn wait_converged(system: System, endpoints: &[String], limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    let mut stable = 0;
    loop {
        let mut views = Vec::new();
        for addr in endpoints {
            views.push(member_view(system, addr).await.ok());
        }
        let ok = views.iter().all(Option::is_some) && {
            let v: Vec<&MemberView> = views.iter().flatten().collect();
            !v[0].leader_id.is_empty()
                && v.iter()
                    .all(|m| m.leader_id == v[0].leader_id && m.applied == v[0].applied)
                && v.iter().filter(|m| m.leader).count() == 1
                && (system == System::Etcd || v.iter().all(|m| m.commit == m.applied))
        };
        stable = if ok { stable + 1 } else { 0 };
        if stable >= 2 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("members not converged within {limit:?}: {views:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn load(system: System, name: &str, args: Load, concurrency: usize) -> Result<serde_json::Value> {
    let leader = find_leader(system, &args.endpoints, Duration::from_secs(15)).await?;
    let addr = &args.endpoints[leader];
    let channels = args.channels.max(1).min(concurrency.max(1));
    let mut clients = Vec::new();
    for _ in 0..channels {
        let channel = endpoint(addr, Duration::from_secs(10))?
            .connect()
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        clients.push(Client::new(system, channel, &args.host_id));
    }
    // Warm-up (connections, allocator, caches); errors here are fatal.
    {
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..concurrency {
            let mut client = clients[w % channels].clone();
            let next = next.clone();
            let warmup = args.warmup;
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= warmup {
                        return Ok::<_, tonic::Status>(());
                    }
                    client.write(1_000_000_000 + i, w as u64).await?;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done?.context("warm-up write failed")?;
        }
    }
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for w in 0..concurrency {
        let mut client = clients[w % channels].clone();
        let (next, errors, first_error) = (next.clone(), errors.clone(), first_error.clone());
        let n = args.n;
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return latencies;
                }
                let t = Instant::now();
                match client.write(i, w as u64).await {
                    Ok(()) => latencies.push(t.elapsed().as_secs_f64() * 1000.0),
                    Err(status) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap()
                            .get_or_insert_with(|| format!("{status:?}"));
                    }
                }
            }
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let ok = latencies.len() as f64;
    Ok(json!({
        "system": system_name(system),
        "bench": name,
        "writes": args.n,
        "acknowledged": latencies.len(),
        "errors": errors.load(Ordering::Relaxed),
        "first_error": *first_error.lock().unwrap(),
        "concurrency": concurrency,
        "channels": channels,
        "leader": addr,
        "elapsed_s": round3(elapsed),
        "writes_per_s": (ok / elapsed).round(),
        "latency_ms": {
            "p50": round3(percentile(&latencies, 50.0)),
            "p90": round3(percentile(&latencies, 90.0)),
            "p99": round3(percentile(&latencies, 99.0)),
            "max": round3(latencies.last().copied().unwrap_or(f64::NAN)),
        },
    }))
}

/// Sequential reads (GetHost on the leader): the ReadIndex barrier cost.
async fn rpool_read(args: Load) -> Result<serde_json::Value> {
    let leader = find_leader(System::Rpool, &args.endpoints, Duration::from_secs(15)).await?;
    let addr = &args.endpoints[leader];
    let mut client = AdminServiceClient::new(endpoint(addr, Duration::from_secs(10))?.connect().await?);
    let request = || GetHostRequest {
        host_id: args.host_id.clone(),
    };
    for _ in 0..args.warmup {
        client.get_host(request()).await?;
    }
    let mut latencies = Vec::new();
    let started = Instant::now();
    for _ in 0..args.n {
        let t = Instant::now();
        client.get_host(request()).await?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok(json!({
        "system": "rpool", "bench": "read", "reads": args.n,
        "reads_per_s": (args.n as f64 / elapsed).round(),
        "latency_ms": {"p50": round3(percentile(&latencies, 50.0)), "p99": round3(percentile(&latencies, 99.0))},
    }))
}

fn read_pid(path: &str) -> Result<i32> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.trim().parse().with_context(|| format!("pid in {path}"))
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the pid exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

async fn failover(system: System, args: Failover) -> Result<serde_json::Value> {
    let n = args.endpoints.len();
    anyhow::ensure!(
        args.pidfiles.len() == n && args.start_scripts.len() == n,
        "--pidfiles and --start-scripts need one entry per endpoint"
    );
    let mut trials = Vec::new();
    let mut details = Vec::new();
    for trial in 0..args.trials {
        wait_converged(system, &args.endpoints, Duration::from_secs(30))
            .await
            .with_context(|| format!("before trial {trial}"))?;
        // The client: one lazily connected channel per member, warmed up.
        let mut clients = Vec::new();
        for addr in &args.endpoints {
            let channel = endpoint(addr, Duration::from_secs(2))?.connect_lazy();
            clients.push(Client::new(system, channel, &args.host_id));
        }
        let leader = find_leader(system, &args.endpoints, Duration::from_secs(15)).await?;
        clients[leader]
            .write(2_000_000_000 + trial as u64, 0)
            .await
            .context("write before the kill")?;
        for (i, client) in clients.iter_mut().enumerate() {
            if i != leader {
                // Opens the connection; the outcome does not matter.
                let _ = client.write(2_100_000_000 + trial as u64, 1).await;
            }
        }
        let pid = read_pid(&args.pidfiles[leader])?;
        anyhow::ensure!(process_alive(pid), "leader pid {pid} is not running");
        // SAFETY: kill(2) on the pid the start script recorded.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        let killed = Instant::now();
        // A new attempt every retry_ms, round-robin over all members
        // (the dead one included, as a client pointed at all members would);
        // the first acknowledged write ends the trial.
        let mut attempts = tokio::task::JoinSet::new();
        let mut ticker = tokio::time::interval(Duration::from_millis(args.retry_ms.max(1)));
        let mut k = leader + 1;
        let mut tried = 0u64;
        let acked = loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if killed.elapsed() > Duration::from_secs(30) {
                        bail!("trial {trial}: no write acknowledged within 30s of the kill");
                    }
                    let slot = k % n;
                    let mut client = clients[slot].clone();
                    let i = 3_000_000_000 + (trial as u64) * 100_000 + tried;
                    attempts.spawn(async move { (slot, client.write(i, 2).await) });
                    k += 1;
                    tried += 1;
                }
                Some(done) = attempts.join_next() => {
                    if let Ok((slot, Ok(()))) = done {
                        break (slot, killed.elapsed());
                    }
                }
            }
        };
        attempts.abort_all();
        let ms = acked.1.as_secs_f64() * 1000.0;
        trials.push(ms);
        // Reap: the killed process is gone before it starts again.
        let start = Instant::now();
        while process_alive(pid) && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let status = std::process::Command::new("bash")
            .arg(&args.start_scripts[leader])
            .status()
            .context("running the start script")?;
        anyhow::ensure!(
            status.success(),
            "start script {} failed",
            args.start_scripts[leader]
        );
        let converged = wait_converged(system, &args.endpoints, Duration::from_secs(30))
            .await
            .with_context(|| format!("after trial {trial}"))?;
        eprintln!(
            "trial {trial}: killed member {leader} ({}), write acknowledged by member {} after {ms:.1} ms ({tried} attempts); converged {:.1} s after restart",
            args.endpoints[leader],
            acked.0,
            converged.as_secs_f64()
        );
        details.push(json!({"killed": leader, "acked_by": acked.0, "ms": round3(ms), "attempts": tried}));
        // Let the restarted member settle (and agents reconnect) before the next kill.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut sorted = trials.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    };
    Ok(json!({
        "system": system_name(system),
        "bench": "failover",
        "trials": trials.len(),
        "retry_ms": args.retry_ms,
        "median_ms": round3(median),
        "worst_ms": round3(*sorted.last().unwrap_or(&f64::NAN)),
        "best_ms": round3(*sorted.first().unwrap_or(&f64::NAN)),
        "ms": trials.iter().map(|x| round3(*x)).collect::<Vec<_>>(),
        "details": details,
    }))
}

fn disk_sync(dir: std::path::PathBuf, n: u64) -> Result<serde_json::Value> {
    std::fs::create_dir_all(&dir)?;
    // Raw: append 256 B to a file + fdatasync.
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw.log"))?;
    let mut raw = Vec::new();
    for i in 0..n {
        file.write_all(value(256, i).as_bytes())?;
        let t = Instant::now();
        file.sync_data()?;
        raw.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    raw.sort_by(f64::total_cmp);
    let summary = |v: &[f64]| json!({"mean": round3(v.iter().sum::<f64>() / v.len() as f64), "p50": round3(percentile(v, 50.0)), "p99": round3(percentile(v, 99.0))});
    Ok(json!({
        "bench": "disk-sync", "n": n,
        "file_write_fdatasync_ms": summary(&raw),
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let rpool = matches!(
        cli.command,
        Cmd::RpoolSeq(_) | Cmd::RpoolConc(_) | Cmd::RpoolFailover(_) | Cmd::RpoolRead(_)
    );
    // rpool serves only mutual TLS; etcd is benchmarked plaintext (its
    // default) or, with --tls-dir, with mutual TLS as kubeadm runs it.
    if rpool && cli.tls_dir.is_none() {
        bail!("--tls-dir is required: rpool serves only mutual TLS (see tls-setup)");
    }
    let client = !matches!(cli.command, Cmd::DiskSync { .. } | Cmd::TlsSetup { .. });
    if let Some(dir) = cli.tls_dir.as_deref().filter(|_| client) {
        let material = rpool_proto::tls::TlsFiles::in_dir(dir, "admin").load()?;
        let _ = TLS.set(material);
    }
    let out = match cli.command {
        Cmd::RpoolSeq(a) => load(System::Rpool, "seq", a, 1).await?,
        Cmd::RpoolConc(a) => {
            let c = a.concurrency;
            load(System::Rpool, "conc", a, c).await?
        }
        Cmd::RpoolFailover(a) => failover(System::Rpool, a).await?,
        Cmd::RpoolRead(a) => rpool_read(a).await?,
        Cmd::EtcdSeq(a) => load(System::Etcd, "seq", a, 1).await?,
        Cmd::EtcdConc(a) => {
            let c = a.concurrency;
            load(System::Etcd, "conc", a, c).await?
        }
        Cmd::EtcdFailover(a) => failover(System::Etcd, a).await?,
        Cmd::DiskSync { dir, n } => disk_sync(dir, n)?,
        Cmd::TlsSetup {
            dir,
            peers,
            agent_state,
        } => tls_setup(&dir, &peers, agent_state.as_deref())?,
    };
    println!("{out}");
    Ok(())
}
