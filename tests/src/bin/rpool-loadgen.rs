//! `rpool-loadgen`: simulates many agents against a controller group, each
//! with its own connection and `AgentService.Session` stream, and measures
//! what the leader does with them.
//!
//! `run`:
//! 1. Raise `RLIMIT_NOFILE`; with `--ca-cert/--ca-key`, mint one agent
//!    certificate per simulated host (identity `urn:rpool:agent:<host_id>`)
//!    in-process, so every stream is mutual TLS like a real agent's.
//! 2. Start the agents evenly over `--ramp`. Each connects first to the
//!    controller its host id hashes to, as the real agent does (`--first`:
//!    or the leader, or round robin), sends a real Hello (facts, inventory, utilization,
//!    health), follows `Redirect`s to the leader, then heartbeats every
//!    `--interval` with a random phase; the controller's `HeartbeatAck`
//!    gives the round trip. Where to go next and how long to wait after a
//!    redirect, a lost stream, a failure or a busy leader's retry hint is
//!    decided by the real agent's code (`rpool_agent::session::Targets`,
//!    `delay`, `busy_hint`, `rpool_agent::backoff::Backoff` with the agent's
//!    default 200 ms / 10 s), so a reconnect storm here is the fleet's.
//!    With `--timeline FILE`, every 100 ms: unix ms, agents in session, and
//!    in session per controller id (from their Welcome).
//! 3. After the warm-up (`--kill-after`, default the end of the ramp plus
//!    10 s), `--kill K` agents stop (their streams close). The admin API
//!    (`ListHosts state=down`, every 250 ms) gives the controller's
//!    `state_since` of each: detection time = that minus the kill time.
//! 4. From the end of the ramp, `ListHosts state=suspect|down` every second:
//!    any host that was not killed and shows up there is a false positive.
//! 5. At `--duration` every loop stops by itself; the summary goes to
//!    stderr (human) and stdout (one JSON line).
//!
//! `pki`: writes a CA, controller certificates (SAN 127.0.0.1) and an admin
//! certificate for a loopback benchmark (`tests/bench/heartbeats.sh`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rpool_agent::backoff::Backoff;
use rpool_agent::session::{self, Outcome, Targets};
use rpool_proto::pki::{self, Ca, Identity};
use rpool_proto::tls::TlsMaterial;
use rpool_proto::v1::admin_service_client::AdminServiceClient;
use rpool_proto::v1::agent_message::Msg as AgentMsg;
use rpool_proto::v1::agent_service_client::AgentServiceClient;
use rpool_proto::v1::controller_message::Msg as ControllerMsg;
use rpool_proto::v1::{self, AgentMessage};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// Outbound messages queued per simulated agent.
const OUTBOUND: usize = 16;
/// Time to connect, and to get a Welcome after the Hello.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Heartbeats awaiting an ack, per agent.
const MAX_PENDING_ACKS: usize = 64;
/// The agent's default `[reconnect]` (agent/src/config.rs).
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Controller ids counted separately in the timeline (1..=this).
const TIMELINE_IDS: usize = 7;
/// After `--duration`, how long the detection poller may still wait for
/// killed hosts to be declared down.
const DETECTION_TAIL: Duration = Duration::from_secs(15);

#[derive(Parser)]
#[command(about = "Simulated agents over real gRPC streams against rpool controllers")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Simulate agents and measure heartbeat RTT, detection and false positives.
    Run(RunArgs),
    /// Write a CA, controller and admin certificates for a loopback benchmark.
    Pki(PkiArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Controller addresses (host:port), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    controllers: Vec<String>,
    /// Simulated agents, 1..=50000.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Heartbeat interval (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = duration)]
    interval: Duration,
    /// Whole run, from the first connection.
    #[arg(long, default_value = "60s", value_parser = duration)]
    duration: Duration,
    /// Agents are started evenly over this time.
    #[arg(long, default_value = "20s", value_parser = duration)]
    ramp: Duration,
    /// Agents that stop after the warm-up (detection time).
    #[arg(long, default_value_t = 0)]
    kill: usize,
    /// When the killed agents stop, from the start (default: ramp + 10s).
    #[arg(long, value_parser = duration)]
    kill_after: Option<Duration>,
    /// Seed of the simulated host ids (the same seed gives the same hosts).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Cluster CA certificate (PEM): enables mutual TLS.
    #[arg(long, requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// Cluster CA key (PEM): agent certificates are minted with it.
    #[arg(long, requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// Admin certificate (PEM) for the admin API (with --ca-cert).
    #[arg(long, requires_all = ["admin_key", "ca_cert"])]
    admin_cert: Option<PathBuf>,
    /// Admin key (PEM).
    #[arg(long, requires = "admin_cert")]
    admin_key: Option<PathBuf>,
    /// Where each agent connects first: `agent` (the controller its host
    /// id hashes to, the real agent's rule), `leader` (the leader found at
    /// start), `round-robin`. Redirects are followed either way.
    #[arg(long, value_enum, default_value_t = First::Agent)]
    first: First,
    /// Also write the JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Every 100 ms, append "unix_ms in_session c1 .. c7" (agents in
    /// session per controller id) to this file.
    #[arg(long)]
    timeline: Option<PathBuf>,
}

#[derive(Args)]
struct PkiArgs {
    /// Output directory (created).
    #[arg(long)]
    dir: PathBuf,
    /// Controller certificates to issue (ids 1..=N).
    #[arg(long, default_value_t = 3)]
    controllers: u64,
    /// Also issue `agent-<HOST_ID>.crt/.key` for a real agent with this host id.
    #[arg(long)]
    agent: Vec<String>,
}

fn duration(s: &str) -> Result<Duration, String> {
    rpool_proto::units::parse_duration(s).map_err(|e| e.to_string())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Host id of simulated agent `i`: a lowercase UUID (v4 layout) from the seed.
fn host_id(seed: u64, i: usize) -> String {
    let x = splitmix(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let y = splitmix(x);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (x >> 32) as u32,
        (x >> 16) as u16,
        x & 0xfff,
        (y >> 48) & 0xfff,
        y & 0xffff_ffff_ffff
    )
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A plausible host: 4..64 cores, 8..256 GiB, zones a/b/c.
fn facts(i: usize, seed: u64) -> v1::HostFacts {
    let r = splitmix(seed.wrapping_add(i as u64));
    let cores = [4u32, 8, 16, 32, 64][(r % 5) as usize];
    let memory = u64::from(cores) * (4 << 30);
    v1::HostFacts {
        hostname: format!("sim-{i:05}"),
        addresses: vec![format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)],
        zone: ["a", "b", "c"][i % 3].to_owned(),
        labels: [("loadgen".to_owned(), "1".to_owned())].into(),
        inventory: Some(v1::Inventory {
            logical_cores: cores,
            physical_cores: cores / 2,
            memory_total_bytes: memory,
            memory_available_bytes: memory / 2,
            cpu_quota_millicores: 0,
            memory_capped_by_cgroup: false,
        }),
        simulated: true,
        ..Default::default()
    }
}

fn heartbeat(seq: u64, memory_total: u64, r: u64) -> v1::Heartbeat {
    let cpu = (r % 9_000) as f64 / 100.0;
    v1::Heartbeat {
        seq,
        sent_at_unix_ms: unix_ms(),
        utilization: Some(v1::Utilization {
            cpu_percent: cpu,
            memory_used_bytes: memory_total / 100 * (20 + r % 60),
            load_average_1m: cpu / 25.0,
            load_average_5m: cpu / 30.0,
            load_average_15m: cpu / 35.0,
        }),
        health: vec![
            v1::HealthCheck {
                name: "disk_free".to_owned(),
                status: v1::HealthStatus::Ok as i32,
                message: "120GiB free".to_owned(),
            },
            v1::HealthCheck {
                name: "kubelet".to_owned(),
                status: v1::HealthStatus::Ok as i32,
                message: "present".to_owned(),
            },
        ],
        ..Default::default()
    }
}

/// Counters shared by every simulated agent.
#[derive(Default)]
struct Totals {
    heartbeats: AtomicU64,
    acks: AtomicU64,
    acks_steady: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    redirects: AtomicU64,
    queue_full: AtomicU64,
    in_session: AtomicUsize,
    /// In session per controller id (index id - 1), from the Welcome.
    in_session_by: [AtomicUsize; TIMELINE_IDS],
    welcomed_once: AtomicUsize,
    /// Refusals with a retry hint (a busy leader).
    busy: AtomicU64,
}

/// Where a simulated agent connects first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum First {
    Agent,
    Leader,
    RoundRobin,
}

struct Ctx {
    args_interval: Duration,
    first: First,
    controllers: Vec<String>,
    /// Where every agent connects first (the leader found at start), if known.
    first_target: Option<String>,
    seed: u64,
    tls: bool,
    totals: Totals,
    start: Instant,
    steady_from: Instant,
    end: Instant,
}

struct TlsShared {
    ca: Ca,
    ca_pem: String,
}

/// What one simulated agent reports at the end.
#[derive(Default)]
struct AgentOut {
    /// Round trips in microseconds, measured after the ramp.
    rtt_us: Vec<u32>,
    /// Which 10 s window of the steady state each of `rtt_us` was sent in.
    rtt_window: Vec<u16>,
    /// Unix ms when it stopped, if it was killed.
    killed_at_unix_ms: Option<u64>,
}

fn endpoint(material: Option<&TlsMaterial>, addr: &str) -> Result<Endpoint> {
    let e = match material {
        Some(m) => m.endpoint(addr).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Endpoint::from_shared(format!("http://{addr}"))?,
    };
    Ok(e.connect_timeout(OPEN_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true))
}

/// How opening a session went; a welcomed one carries its two halves and
/// the welcoming controller's id.
enum Opened {
    Welcomed(
        Box<(
            mpsc::Sender<AgentMessage>,
            tonic::Streaming<v1::ControllerMessage>,
            usize,
            // The Welcome (the agent's next target if this breaks).
            v1::Welcome,
        )>,
    ),
    /// A redirect: the address, and whether a leader handed the session to
    /// a relaying follower.
    Redirect(String, bool),
    Busy(Duration),
    Failed,
}

/// Opens a session on `addr`: on `kept`'s connection if it goes there (the
/// agent's rule after a retry hint), else on a new one, kept in `kept`.
async fn open(
    material: Option<&TlsMaterial>,
    addr: &str,
    kept: &mut Option<(String, Channel)>,
    hello: v1::Hello,
) -> Opened {
    let attempt = async {
        let channel: Channel = match kept.as_ref() {
            Some((to, channel)) if to == addr => channel.clone(),
            _ => {
                let channel = endpoint(material, addr)?.connect().await?;
                *kept = Some((addr.to_owned(), channel.clone()));
                channel
            }
        };
        let mut client = AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(OUTBOUND);
        tx.try_send(AgentMessage {
            msg: Some(AgentMsg::Hello(hello)),
        })
        .map_err(|_| anyhow::anyhow!("queue"))?;
        let mut inbound = match client.session(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) => match session::busy_hint(&status) {
                Some(hint) => return Ok(Opened::Busy(hint)),
                None => return Err(status.into()),
            },
        };
        loop {
            match inbound.message().await? {
                Some(m) => match m.msg {
                    Some(ControllerMsg::Welcome(w)) => {
                        let id = w.controller_id.parse().unwrap_or(0);
                        return Ok(Opened::Welcomed(Box::new((tx, inbound, id, w))));
                    }
                    Some(ControllerMsg::Redirect(r)) => {
                        return Ok(Opened::Redirect(r.leader_address, r.relay));
                    }
                    _ => continue,
                },
                None => bail!("stream closed before the welcome"),
            }
        }
    };
    match tokio::time::timeout(OPEN_TIMEOUT, attempt).await {
        Ok(Ok(o)) => o,
        Ok(Err(_)) | Err(_) => Opened::Failed,
    }
}

/// One simulated agent, from its start time to the end of the run (or its kill).
async fn agent(
    ctx: Arc<Ctx>,
    i: usize,
    material: Option<TlsMaterial>,
    start_at: Instant,
    kill_at: Option<Instant>,
) -> AgentOut {
    let mut out = AgentOut::default();
    tokio::time::sleep_until(start_at.into()).await;
    let id = host_id(ctx.seed, i);
    let f = facts(i, ctx.seed);
    let memory_total = f.inventory.as_ref().map_or(1 << 30, |inv| inv.memory_total_bytes);
    let mut rng = splitmix(ctx.seed ^ (i as u64) << 20);
    // The agent's own rules: configured controllers from a different
    // one per agent (or the leader found at start), then Targets/Backoff.
    let mut list = ctx.controllers.clone();
    let n = list.len();
    list.rotate_left(i % n);
    let leader_at = ctx
        .first_target
        .as_ref()
        .and_then(|first| list.iter().position(|c| c == first));
    if let Some(p) = leader_at {
        list.rotate_left(p);
    }
    let mut targets = match ctx.first {
        First::Agent => Targets::for_host(ctx.controllers.clone(), &id),
        First::Leader | First::RoundRobin => Targets::new(list),
    };
    let mut backoff = Backoff::new(
        INITIAL_BACKOFF,
        MAX_BACKOFF,
        fastrand::Rng::with_seed(splitmix(rng)),
    );
    let mut first = true;
    let mut welcomed = false;
    // The connection the next attempt reuses (after a retry hint only).
    let mut kept: Option<(String, Channel)> = None;
    'sessions: while Instant::now() < ctx.end {
        if kill_at.is_some_and(|k| Instant::now() >= k) {
            // Killed while reconnecting: it stays silent from now on.
            out.killed_at_unix_ms = Some(unix_ms());
            break;
        }
        if !first {
            ctx.totals.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        rng = splitmix(rng);
        let hello = v1::Hello {
            host_id: id.clone(),
            agent_version: rpool_proto::VERSION.to_owned(),
            facts: Some(f.clone()),
            first_heartbeat: Some(heartbeat(1, memory_total, rng)),
            serve_here: targets.serve_here(),
        };
        let outcome = match open(material.as_ref(), targets.current(), &mut kept, hello).await {
            Opened::Welcomed(halves) => Ok(*halves),
            Opened::Redirect(leader, relay) => {
                ctx.totals.redirects.fetch_add(1, Ordering::Relaxed);
                first = true;
                Err(Outcome::Redirected {
                    leader_address: leader,
                    relay,
                })
            }
            Opened::Busy(retry_after) => {
                ctx.totals.busy.fetch_add(1, Ordering::Relaxed);
                Err(Outcome::Busy { retry_after })
            }
            Opened::Failed => {
                ctx.totals.errors.fetch_add(1, Ordering::Relaxed);
                Err(Outcome::Failed)
            }
        };
        let (tx, mut inbound, by) = match outcome {
            Ok((tx, inbound, by, welcome)) => {
                targets.welcomed(&welcome);
                (tx, inbound, by)
            }
            Err(outcome) => {
                if !outcome.keeps_connection() {
                    kept = None;
                }
                let wait = targets.after(&outcome);
                tokio::time::sleep(session::delay(wait, &mut backoff)).await;
                continue;
            }
        };
        backoff.reset();
        let by = by.checked_sub(1).filter(|b| *b < TIMELINE_IDS);
        ctx.totals.in_session.fetch_add(1, Ordering::Relaxed);
        if let Some(b) = by {
            ctx.totals.in_session_by[b].fetch_add(1, Ordering::Relaxed);
        }
        if !welcomed {
            welcomed = true;
            ctx.totals.welcomed_once.fetch_add(1, Ordering::Relaxed);
        }
        // Heartbeats with a random phase within the interval.
        rng = splitmix(rng);
        let phase = ctx.args_interval.mul_f64((rng % 1000) as f64 / 1000.0);
        let mut ticker = tokio::time::interval_at((Instant::now() + phase).into(), ctx.args_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 1u64;
        let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
        let end = tokio::time::Instant::from(ctx.end);
        let kill = kill_at.map(tokio::time::Instant::from);
        // `Some(outcome)`: the session was lost, and how.
        let lost = loop {
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(end) => break None,
                _ = async { match kill { Some(k) => tokio::time::sleep_until(k).await, None => std::future::pending().await } } => {
                    out.killed_at_unix_ms = Some(unix_ms());
                    break None;
                }
                m = inbound.message() => match m {
                    Ok(Some(v1::ControllerMessage { msg: Some(ControllerMsg::HeartbeatAck(ack)) })) => {
                        if let Some(pos) = pending.iter().position(|(s, _)| *s == ack.seq) {
                            let (_, sent) = pending[pos];
                            pending.drain(..=pos);
                            let now = Instant::now();
                            ctx.totals.acks.fetch_add(1, Ordering::Relaxed);
                            if sent >= ctx.steady_from {
                                ctx.totals.acks_steady.fetch_add(1, Ordering::Relaxed);
                                out.rtt_us.push(now.duration_since(sent).as_micros().min(u32::MAX as u128) as u32);
                                out.rtt_window.push((sent.duration_since(ctx.steady_from).as_secs() / 10).min(u16::MAX as u64) as u16);
                            }
                        }
                    }
                    Ok(Some(_)) => {}
                    // A relay whose leader went away: back to it (the agent's rule).
                    Err(status) if session::busy_hint(&status).is_some() => {
                        break Some(Outcome::Busy { retry_after: session::busy_hint(&status).unwrap_or_default() });
                    }
                    Ok(None) | Err(_) => break Some(Outcome::LostAfterWelcome),
                },
                _ = ticker.tick() => {
                    seq += 1;
                    rng = splitmix(rng);
                    let hb = AgentMessage { msg: Some(AgentMsg::Heartbeat(heartbeat(seq, memory_total, rng))) };
                    match tx.try_send(hb) {
                        Ok(()) => {
                            ctx.totals.heartbeats.fetch_add(1, Ordering::Relaxed);
                            if pending.len() >= MAX_PENDING_ACKS {
                                pending.pop_front();
                            }
                            pending.push_back((seq, Instant::now()));
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            ctx.totals.queue_full.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break Some(Outcome::LostAfterWelcome),
                    }
                }
            }
        };
        ctx.totals.in_session.fetch_sub(1, Ordering::Relaxed);
        if let Some(b) = by {
            ctx.totals.in_session_by[b].fetch_sub(1, Ordering::Relaxed);
        }
        drop(tx);
        let Some(lost) = lost else {
            break 'sessions;
        };
        ctx.totals.errors.fetch_add(1, Ordering::Relaxed);
        if !lost.keeps_connection() {
            kept = None;
        }
        let wait = targets.after(&lost);
        tokio::time::sleep(session::delay(wait, &mut backoff)).await;
    }
    out
}

/// The leader's address, asking each controller's `Status` in turn.
async fn find_leader(controllers: &[String], admin: Option<&TlsMaterial>) -> Option<String> {
    for _ in 0..50 {
        for addr in controllers {
            let Ok(mut c) = admin_client(addr, admin).await else {
                continue;
            };
            let Ok(status) = c.status(v1::StatusRequest {}).await else {
                continue;
            };
            let status = status.into_inner();
            if status.role == "leader" {
                return Some(addr.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

async fn admin_client(addr: &str, admin: Option<&TlsMaterial>) -> Result<AdminServiceClient<Channel>> {
    let e = match admin {
        Some(m) => m.endpoint(addr).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Endpoint::from_shared(format!("http://{addr}"))?,
    };
    let channel = e
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    Ok(AdminServiceClient::new(channel).max_decoding_message_size(64 << 20))
}

/// What the admin-API poller saw.
#[derive(Default)]
struct Observed {
    /// host id -> `state_since_unix_ms` of its first `down` seen.
    down_since: HashMap<String, u64>,
    /// Hosts not killed that were seen suspect or down, with the state.
    false_positives: BTreeSet<(String, String)>,
    poll_errors: u64,
    polls: u64,
}

/// Polls `ListHosts` by state until `end` (+ the detection tail while killed
/// hosts are not yet down).
async fn poll(
    controllers: Vec<String>,
    admin: Option<TlsMaterial>,
    killed: Arc<std::sync::Mutex<BTreeSet<String>>>,
    killed_expected: usize,
    steady_from: Instant,
    end: Instant,
) -> Observed {
    let mut seen = Observed::default();
    let mut client = None;
    let mut which = 0usize;
    let mut tick = 0u64;
    loop {
        let now = Instant::now();
        if now >= end + DETECTION_TAIL {
            break;
        }
        if now >= end && seen.down_since.len() >= killed_expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        if Instant::now() < steady_from {
            continue;
        }
        tick += 1;
        if client.is_none() {
            match admin_client(&controllers[which % controllers.len()], admin.as_ref()).await {
                Ok(c) => client = Some(c),
                Err(_) => {
                    which += 1;
                    seen.poll_errors += 1;
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        // Down every 250 ms (detection); suspect every second (false positives).
        let states: &[&str] = if tick.is_multiple_of(4) {
            &["down", "suspect"]
        } else {
            &["down"]
        };
        for state in states {
            seen.polls += 1;
            let hosts = match c
                .list_hosts(v1::ListHostsRequest {
                    state: (*state).to_owned(),
                    ..Default::default()
                })
                .await
            {
                Ok(r) => r.into_inner().hosts,
                Err(_) => {
                    seen.poll_errors += 1;
                    client = None;
                    which += 1;
                    break;
                }
            };
            let killed = killed.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let in_run = Instant::now() < end;
            for h in hosts {
                if killed.contains(&h.host_id) {
                    if *state == "down" {
                        seen.down_since.entry(h.host_id).or_insert(h.state_since_unix_ms);
                    }
                } else if in_run && h.facts.as_ref().is_some_and(|f| f.labels.contains_key("loadgen")) {
                    seen.false_positives.insert((h.host_id, (*state).to_owned()));
                }
            }
        }
    }
    seen
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1_000.0
}

fn raise_nofile() -> u64 {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        lim.rlim_cur
    }
}

async fn run(args: RunArgs) -> Result<()> {
    if !(1..=50_000).contains(&args.agents) {
        bail!("--agents: {} is out of range (accepted 1..=50000)", args.agents);
    }
    if args.kill > args.agents {
        bail!(
            "--kill: {} is out of range (accepted 0..={})",
            args.kill,
            args.agents
        );
    }
    if args.interval < Duration::from_millis(100) || args.duration.is_zero() {
        bail!("--interval: at least 100ms; --duration: more than 0");
    }
    let nofile = raise_nofile();
    if (nofile as usize) < args.agents + 64 {
        eprintln!("warning: RLIMIT_NOFILE is {nofile}, below --agents + 64; some connections will fail");
    }
    rpool_proto::tls::install_crypto_provider();
    let tls = match (&args.ca_cert, &args.ca_key) {
        (Some(cert), Some(key)) => {
            let ca_pem =
                std::fs::read_to_string(cert).with_context(|| format!("--ca-cert {}", cert.display()))?;
            let key_pem =
                std::fs::read_to_string(key).with_context(|| format!("--ca-key {}", key.display()))?;
            let ca =
                Ca::from_pem(&ca_pem, &key_pem).map_err(|e| anyhow::anyhow!("--ca-cert/--ca-key: {e}"))?;
            Some(Arc::new(TlsShared { ca, ca_pem }))
        }
        _ => None,
    };
    let admin = match (&args.admin_cert, &args.admin_key, &tls) {
        (Some(cert), Some(key), Some(t)) => {
            let cert_pem =
                std::fs::read_to_string(cert).with_context(|| format!("--admin-cert {}", cert.display()))?;
            let key_pem =
                std::fs::read_to_string(key).with_context(|| format!("--admin-key {}", key.display()))?;
            Some(
                TlsMaterial::from_pem(&t.ca_pem, &cert_pem, &key_pem)
                    .map_err(|e| anyhow::anyhow!("--admin-cert: {e}"))?,
            )
        }
        _ => None,
    };

    // Certificates first, on every core, so minting does not compete with
    // the run (a real fleet has its certificates before it connects).
    let materials: Vec<Option<TlsMaterial>> = match &tls {
        None => (0..args.agents).map(|_| None).collect(),
        Some(t) => {
            let minted = Instant::now();
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            let chunk = args.agents.div_ceil(threads);
            let mut jobs = Vec::new();
            for part in 0..threads {
                let t = t.clone();
                let (seed, lo, hi) = (args.seed, part * chunk, ((part + 1) * chunk).min(args.agents));
                jobs.push(tokio::task::spawn_blocking(move || {
                    (lo..hi)
                        .map(|i| {
                            let issued =
                                t.ca.issue(
                                    &Identity::Agent(host_id(seed, i)),
                                    &[],
                                    Duration::from_secs(86_400),
                                )
                                .map_err(|e| anyhow::anyhow!("minting agent {i}'s certificate: {e}"))?;
                            TlsMaterial::from_pem(&t.ca_pem, &issued.cert_pem, &issued.key_pem)
                                .map(Some)
                                .map_err(|e| anyhow::anyhow!("agent {i}'s certificate: {e}"))
                        })
                        .collect::<Result<Vec<_>>>()
                }));
            }
            let mut all = Vec::with_capacity(args.agents);
            for job in jobs {
                all.extend(job.await??);
            }
            eprintln!(
                "minted {} agent certificates in {:.1?}",
                all.len(),
                minted.elapsed()
            );
            all
        }
    };
    let first_target = match args.first {
        First::Leader => find_leader(&args.controllers, admin.as_ref()).await,
        First::Agent | First::RoundRobin => None,
    };
    let start = Instant::now() + Duration::from_millis(200);
    let steady_from = start + args.ramp;
    let end = start + args.duration;
    let kill_at = start + args.kill_after.unwrap_or(args.ramp + Duration::from_secs(10));
    if args.kill > 0 && kill_at >= end {
        bail!("--kill-after must fall before --duration (killed agents need time to be detected)");
    }
    let ctx = Arc::new(Ctx {
        args_interval: args.interval,
        first: args.first,
        controllers: args.controllers.clone(),
        seed: args.seed,
        tls: tls.is_some(),
        first_target: first_target.clone(),
        totals: Totals::default(),
        start,
        steady_from,
        end,
    });
    // Killed agents: evenly spread over the index range.
    let killed_idx: BTreeSet<usize> = (0..args.kill)
        .map(|k| k * args.agents / args.kill.max(1))
        .collect();
    let killed_ids: BTreeSet<String> = killed_idx.iter().map(|i| host_id(args.seed, *i)).collect();
    let killed_shared = Arc::new(std::sync::Mutex::new(killed_ids.clone()));
    eprintln!(
        "loadgen: {} agents over {:?} ramp, heartbeat every {:?}, run {:?}, kill {} at +{:?}, tls {}, first target {}, RLIMIT_NOFILE {}",
        args.agents,
        args.ramp,
        args.interval,
        args.duration,
        args.kill,
        kill_at - start,
        ctx.tls,
        first_target.as_deref().unwrap_or("round robin"),
        nofile
    );

    let poller = tokio::spawn(poll(
        args.controllers.clone(),
        admin,
        killed_shared,
        killed_ids.len(),
        steady_from,
        end,
    ));
    let mut tasks = Vec::with_capacity(args.agents);
    for (i, material) in materials.into_iter().enumerate() {
        let at = start + args.ramp.mul_f64(i as f64 / args.agents as f64);
        let kill = killed_idx.contains(&i).then_some(kill_at);
        tasks.push(tokio::spawn(agent(ctx.clone(), i, material, at, kill)));
    }
    // Progress every 5 s (bounded by the run).
    let progress = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut last = 0u64;
            while Instant::now() < ctx.end {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let acks = ctx.totals.acks.load(Ordering::Relaxed);
                eprintln!(
                    "  +{:>3}s in session {:>6}  acks/s {:>6}  errors {}  reconnects {}",
                    ctx.start.elapsed().as_secs(),
                    ctx.totals.in_session.load(Ordering::Relaxed),
                    (acks - last) / 5,
                    ctx.totals.errors.load(Ordering::Relaxed),
                    ctx.totals.reconnects.load(Ordering::Relaxed),
                );
                last = acks;
            }
        })
    };
    let timeline = args.timeline.clone().map(|path| {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            use std::io::Write as _;
            let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while Instant::now() < ctx.end {
                tick.tick().await;
                let by: Vec<String> = ctx
                    .totals
                    .in_session_by
                    .iter()
                    .map(|n| n.load(Ordering::Relaxed).to_string())
                    .collect();
                writeln!(
                    out,
                    "{} {} {}",
                    unix_ms(),
                    ctx.totals.in_session.load(Ordering::Relaxed),
                    by.join(" ")
                )?;
            }
            out.flush()
        })
    });
    let mut rtt: Vec<u32> = Vec::new();
    let mut by_window: BTreeMap<u16, Vec<u32>> = BTreeMap::new();
    let mut killed_at: BTreeMap<String, u64> = BTreeMap::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let out = t.await.unwrap_or_default();
        for (us, window) in out.rtt_us.iter().zip(&out.rtt_window) {
            by_window.entry(*window).or_default().push(*us);
        }
        rtt.extend(out.rtt_us);
        if let Some(at) = out.killed_at_unix_ms {
            killed_at.insert(host_id(args.seed, i), at);
        }
    }
    let _ = progress.await;
    if let Some(timeline) = timeline {
        timeline.await?.context("--timeline")?;
    }
    let observed = poller.await.unwrap_or_default();
    rtt.sort_unstable();

    let mut detection: Vec<i64> = killed_at
        .iter()
        .filter_map(|(id, at)| {
            observed
                .down_since
                .get(id)
                .map(|since| *since as i64 - *at as i64)
        })
        .collect();
    detection.sort_unstable();
    let undetected = killed_at.len() - detection.len();
    let t = &ctx.totals;
    let steady_s = (args.duration.saturating_sub(args.ramp)).as_secs_f64().max(1.0);
    let summary = json!({
        "agents": args.agents,
        "interval_ms": args.interval.as_millis() as u64,
        "duration_s": args.duration.as_secs_f64(),
        "ramp_s": args.ramp.as_secs_f64(),
        "tls": ctx.tls,
        "first_target": first_target,
        "welcomed": t.welcomed_once.load(Ordering::Relaxed),
        "heartbeats_sent": t.heartbeats.load(Ordering::Relaxed),
        "acks": t.acks.load(Ordering::Relaxed),
        "acks_per_s_steady": (t.acks_steady.load(Ordering::Relaxed) as f64 / steady_s).round(),
        "rtt_ms": {
            "samples": rtt.len(),
            "p50": percentile(&rtt, 50.0),
            "p90": percentile(&rtt, 90.0),
            "p99": percentile(&rtt, 99.0),
            "max": percentile(&rtt, 100.0),
            // p99 of each 10 s of the steady state, in order.
            "p99_by_10s": by_window
                .values_mut()
                .map(|w| {
                    w.sort_unstable();
                    percentile(w, 99.0)
                })
                .collect::<Vec<_>>(),
        },
        "errors": t.errors.load(Ordering::Relaxed),
        "reconnects": t.reconnects.load(Ordering::Relaxed),
        "redirects": t.redirects.load(Ordering::Relaxed),
        "busy_refusals": t.busy.load(Ordering::Relaxed),
        "queue_full": t.queue_full.load(Ordering::Relaxed),
        "killed": killed_at.len(),
        "detection_ms": {
            "detected": detection.len(),
            "undetected": undetected,
            "min": detection.first(),
            "median": detection.get(detection.len() / 2),
            "max": detection.last(),
        },
        "false_positives": observed.false_positives.len(),
        "false_positive_hosts": observed.false_positives.iter().take(20).map(|(h, s)| format!("{h}:{s}")).collect::<Vec<_>>(),
        "admin_polls": observed.polls,
        "admin_poll_errors": observed.poll_errors,
    });
    eprintln!(
        "\nheartbeat RTT (send → ack, after the ramp): p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} samples)\n\
         acks/s {}  welcomed {}/{}  errors {}  reconnects {}  redirects {}\n\
         killed {}: detected {} (min {:?} ms, median {:?} ms, max {:?} ms), undetected {}\n\
         false positives (not-killed hosts seen suspect/down after the ramp): {}",
        percentile(&rtt, 50.0),
        percentile(&rtt, 90.0),
        percentile(&rtt, 99.0),
        percentile(&rtt, 100.0),
        rtt.len(),
        summary["acks_per_s_steady"],
        summary["welcomed"],
        args.agents,
        summary["errors"],
        summary["reconnects"],
        summary["redirects"],
        killed_at.len(),
        detection.len(),
        detection.first(),
        detection.get(detection.len() / 2),
        detection.last(),
        undetected,
        observed.false_positives.len(),
    );
    let line = summary.to_string();
    println!("{line}");
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{line}\n")).with_context(|| format!("--json {}", path.display()))?;
    }
    Ok(())
}

fn write_pki(args: PkiArgs) -> Result<()> {
    let io = |e: pki::PkiError| anyhow::anyhow!("{e}");
    let ca = Ca::generate("rpool loadgen CA").map_err(io)?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("--dir {}", args.dir.display()))?;
    pki::write_public(&args.dir.join("ca.crt"), ca.cert_pem().as_bytes()).map_err(io)?;
    pki::write_private(&args.dir.join("ca.key"), ca.key_pem().as_bytes()).map_err(io)?;
    let sans = ["127.0.0.1".to_owned(), "localhost".to_owned()];
    let year = Duration::from_secs(365 * 86_400);
    for id in 1..=args.controllers {
        let issued = ca.issue(&Identity::Controller(id), &sans, year).map_err(io)?;
        pki::write_public(
            &args.dir.join(format!("controller-{id}.crt")),
            issued.cert_pem.as_bytes(),
        )
        .map_err(io)?;
        pki::write_private(
            &args.dir.join(format!("controller-{id}.key")),
            issued.key_pem.as_bytes(),
        )
        .map_err(io)?;
    }
    let admin = ca
        .issue(&Identity::admin("bench").map_err(io)?, &[], year)
        .map_err(io)?;
    pki::write_public(&args.dir.join("admin.crt"), admin.cert_pem.as_bytes()).map_err(io)?;
    pki::write_private(&args.dir.join("admin.key"), admin.key_pem.as_bytes()).map_err(io)?;
    for host in &args.agent {
        let issued = ca
            .issue(&Identity::agent(host).map_err(io)?, &[], year)
            .map_err(io)?;
        pki::write_public(
            &args.dir.join(format!("agent-{host}.crt")),
            issued.cert_pem.as_bytes(),
        )
        .map_err(io)?;
        pki::write_private(
            &args.dir.join(format!("agent-{host}.key")),
            issued.key_pem.as_bytes(),
        )
        .map_err(io)?;
    }
    eprintln!(
        "wrote ca, {} controller, {} agent and one admin certificate to {}",
        args.controllers,
        args.agent.len(),
        args.dir.display()
    );
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Pki(a) => write_pki(a),
        Cmd::Run(a) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(run(a))),
    };
    if let Err(e) = result {
        eprintln!("rpool-loadgen: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids_are_lowercase_uuids_distinct_and_reproducible() {
        let ids: BTreeSet<String> = (0..10_000).map(|i| host_id(7, i)).collect();
        assert_eq!(ids.len(), 10_000);
        assert_eq!(host_id(7, 3), host_id(7, 3));
        for id in ids.iter().take(100) {
            assert_eq!(id.len(), 36, "{id}");
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase() || c == '-'),
                "{id}"
            );
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u32> = (1..=100).map(|x| x * 1_000).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
