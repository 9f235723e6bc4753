//! The fault suite on the Docker testbed (packaging/testbed/testbed.sh):
//! three controllers and six agent hosts as containers on a private
//! network, faults injected from this machine (iptables and tc inside a
//! container's network namespace via `nsenter`, `docker pause`, `docker
//! kill -s KILL`, `docker restart`), clients on this machine talking
//! gRPC + mTLS to every controller.
//!
//! Runs only when asked (`RPOOL_FAULTS=1`) and Docker answers; otherwise
//! the one test prints why it skipped. `.ci/packaging.sh` runs it. Knobs:
//! `RPOOL_PREV_IMAGE` (the previous release's image,
//! `packaging/prev-image.sh`: the testbed starts on it and the first
//! scenario, rolling-upgrade, moves it to the suite's image; unset, that
//! scenario is skipped, and fails when named in `RPOOL_FAULTS_ONLY`),
//! `RPOOL_FAULTS_NAME` / `RPOOL_FAULTS_SUBNET` (the testbed's name and /24,
//! default `rpoolfaults`, 172.31.251.0/24, so it never collides with the
//! default testbed), `RPOOL_IMAGE` (default: built here from the test
//! profile's binaries), `RPOOL_FAULTS_TABLE` (a file to write the figures
//! table to, Markdown), `RPOOL_FAULTS_ONLY` (comma-separated scenario
//! names), `RPOOL_FAULTS_KEEP=1` (leave the testbed up),
//! `RPOOL_FAULTS_CONTROLLER_TOML` (settings appended to every controller's
//! config, e.g. `[liveness]` with `relay_sessions = true`).
//!
//! During every scenario a writer sets one host label (a register: one
//! key per scenario, unique values) through the controllers in turn and
//! one reader per controller reads it back with `GetHost`; every call is
//! recorded with its invocation and completion time and its outcome (ok,
//! failed: surely not applied, unknown: maybe applied). After each fault
//! is healed the suite checks, and asserts: a write succeeds within 30 s;
//! every controller applies the leader's commit index (so every
//! acknowledged write is on every replica, Raft logs being applied in
//! order); the history is linearizable
//! ([`rpool_tests::linearizable`]); no host is in two pools; a dead pool
//! member is replaced exactly once. Timings are printed, not asserted.

mod clients;
mod testbed;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rpool_proto::v1::{Event, GetPoolRequest, HostState, ListEventsRequest, ListPoolsRequest, Pool};
use rpool_tests::eventually;

use clients::{Clients, Figures};
use testbed::Testbed;

/// How long a fault stays before it is healed.
const HOLD: Duration = Duration::from_secs(8);
/// A write must succeed this soon after healing.
const RECOVERY_BOUND: Duration = Duration::from_secs(30);
/// The testbed's liveness: `down_after_ms` in its controller config.
const DOWN_AFTER: Duration = Duration::from_secs(5);
/// Extra controller TOML: zone a (2 of 6 hosts) silent is a storm; the
/// metrics endpoint, where the suite reads how many agents each follower
/// relays.
const CONTROLLER_TOML: &str =
    "[healing]\nstorm_fleet_share = 0.3\nstorm_pool_share = 0.5\n\n[metrics]\nlisten = \"0.0.0.0:9464\"\n";
/// Scenarios whose faults touch only the controllers: every agent can
/// still reach at least two of them, so no host may leave `ready` (the
/// agents of a controller that is cut off, paused or killed must get to
/// another in time; by default the followers relay the agents' sessions,
/// so this is also the relay's partition test).
const CONTROLLER_ONLY: &[&str] = &[
    "leader-isolated",
    "minority-partition",
    "asymmetric-leader",
    "pause-leader",
    "kill9-leader",
    "rolling-restart",
];
/// What a relaying follower logs when it lets an agent's session go
/// because it knows no leader (`api/relay.rs`, `cut_off`).
const CUT_OFF_LOG: &str = "has known no leader for";
/// Every scenario, in the order they run. rolling-upgrade goes first: the
/// testbed starts on the previous release for it.
const SCENARIOS: &[&str] = &[
    "rolling-upgrade",
    "leader-isolated",
    "minority-partition",
    "asymmetric-leader",
    "loss-latency",
    "pause-leader",
    "kill9-leader",
    "rolling-restart",
    "zone-cutoff",
    "member-cutoff",
];

fn skip_reason() -> Option<String> {
    if std::env::var("RPOOL_FAULTS").as_deref() != Ok("1") {
        return Some("RPOOL_FAULTS=1 not set (the Docker fault suite runs from .ci/packaging.sh)".into());
    }
    let docker = std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match docker {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "docker does not answer: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("no docker CLI: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_suite_on_the_docker_testbed() -> Result<()> {
    if let Some(reason) = skip_reason() {
        eprintln!("faults: skipped: {reason}");
        return Ok(());
    }
    rpool_proto::tls::install_crypto_provider();
    let only: Option<HashSet<String>> = std::env::var("RPOOL_FAULTS_ONLY")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(str::to_string).collect());
    if let Some(only) = &only {
        for name in only {
            ensure!(
                SCENARIOS.contains(&name.as_str()),
                "RPOOL_FAULTS_ONLY: unknown scenario {name} (accepted: {})",
                SCENARIOS.join(",")
            );
        }
    }
    let prev_image = std::env::var("RPOOL_PREV_IMAGE").ok().filter(|s| !s.is_empty());
    let wants_upgrade = only.as_ref().is_none_or(|o| o.contains("rolling-upgrade"));
    let mut skip = HashSet::new();
    if wants_upgrade && prev_image.is_none() {
        ensure!(
            only.is_none(),
            "RPOOL_FAULTS_ONLY names rolling-upgrade but RPOOL_PREV_IMAGE is not set (packaging/prev-image.sh builds the previous release's image)"
        );
        eprintln!(
            "faults: rolling-upgrade skipped: RPOOL_PREV_IMAGE not set (packaging/prev-image.sh builds the previous release's image)"
        );
        skip.insert("rolling-upgrade".to_string());
    }
    let start_image = prev_image.as_deref().filter(|_| wants_upgrade);
    let started = Instant::now();
    // RPOOL_FAULTS_CONTROLLER_TOML: more controller settings for a run of
    // the suite (e.g. "[liveness]\nrelay_sessions = true").
    let extra = std::env::var("RPOOL_FAULTS_CONTROLLER_TOML").unwrap_or_default();
    if !extra.is_empty() {
        eprintln!("faults: controller settings added: {extra:?}");
    }
    let tb = Testbed::up(&format!("{CONTROLLER_TOML}{extra}\n"), start_image)?;
    let result = run_all(&tb, only.as_ref(), &skip).await;
    if std::env::var("RPOOL_FAULTS_KEEP").as_deref() == Ok("1") {
        eprintln!("faults: testbed {} kept (RPOOL_FAULTS_KEEP=1)", tb.name);
    } else {
        tb.down();
    }
    eprintln!("faults: suite took {:.0?}", started.elapsed());
    // The last lines CI shows: what failed, its whole cause chain.
    if let Err(e) = &result {
        eprintln!("faults: FAILED: {e:#}");
    }
    result
}

async fn run_all(tb: &Testbed, only: Option<&HashSet<String>>, skip: &HashSet<String>) -> Result<()> {
    let register_host = tb.host_id("host-2").await?;
    // A pool, so that controller faults also carry pool state and the
    // host faults have members to lose. Zones ignored (`any`, not the
    // zoned fleet's default spread): the least-overshoot cover (48 cores
    // exactly, 32 + 16), in which every worker is needed, so
    // member-cutoff's lost worker is replaced by one host and the pool
    // keeps its size. Spread would take a worker per zone (32 + 16 + 16
    // cores), and losing a 16-core one leaves the request covered: its
    // node is removed, not replaced, and the pool shrinks.
    tb.ctl(&[
        "pool",
        "create",
        "faults",
        "--cores",
        "48",
        "--memory",
        "96GiB",
        "--zone-policy",
        "any",
        "--wait",
        "--timeout",
        "120s",
    ])?;
    let pool = tb.pool("faults").await?;
    ensure!(
        pool.members.len() >= 3,
        "pool faults has {} members: {pool:?}",
        pool.members.len()
    );

    let mut table = Vec::new();
    for &name in SCENARIOS {
        if only.is_some_and(|o| !o.contains(name)) || skip.contains(name) {
            continue;
        }
        let figures = scenario(tb, name, &register_host)
            .await
            .with_context(|| format!("scenario {name}"))?;
        eprintln!("faults: {}", figures.line());
        table.push(figures);
    }
    let markdown = Figures::table(&table);
    eprintln!("{markdown}");
    if let Ok(path) = std::env::var("RPOOL_FAULTS_TABLE") {
        std::fs::write(&path, &markdown).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

/// Runs one scenario: clients start, the fault goes in, holds, is healed;
/// then the checks.
async fn scenario(tb: &Testbed, name: &str, register_host: &str) -> Result<Figures> {
    // Faults from an earlier scenario are gone: every controller answers,
    // every host is ready.
    tb.settled().await?;
    tb.wait_all_hosts_ready(Duration::from_secs(90)).await?;
    let events_before = tb.last_event_index().await?;
    let pool_before = tb.pool("faults").await?;
    let wall_before = rpool_proto::clock::unix_ms_now();
    let clients = Clients::start(tb, register_host, &format!("faults.rpool/{name}"))?;
    // Clients in steady state before the fault: the writer has had a
    // write acknowledged (figures compare to it).
    eventually(RECOVERY_BOUND, "a successful write before the fault", || async {
        (clients.first_ok_write_after(0), clients.summary())
    })
    .await?;
    // Set once the fault is in place (after the leader lookup).
    let mut fault_at = clients.now();
    let mut note = String::new();
    let heal_at = match name {
        "leader-isolated" => {
            let leader = tb.leader().await?;
            for f in tb.others(leader) {
                tb.cut(&tb.ctl_name(leader), &tb.ctl_ip(f))?;
            }
            fault_at = clients.now();
            tokio::time::sleep(HOLD).await;
            let at = clients.now();
            tb.heal_all()?;
            at
        }
        "minority-partition" => {
            // The follower that relays the most agents is cut off from the
            // other two: its agents must get to them in time (no host
            // leaves ready: checked below for every controller-only fault).
            let leader = tb.leader().await?;
            let mut relaying = Vec::new();
            for f in tb.others(leader) {
                relaying.push((tb.metric(f, "rpool_agent_sessions_relayed")?, f));
            }
            relaying.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (relayed, follower) = relaying[relaying.len() - 1];
            ensure!(
                relayed >= 1.0,
                "no follower relays an agent session (relaying is on by default): {relaying:?}"
            );
            let cut_off = |logs: String| logs.matches(CUT_OFF_LOG).count();
            let before = cut_off(tb.logs(&tb.ctl_name(follower))?);
            for o in tb.others(follower) {
                tb.cut(&tb.ctl_name(follower), &tb.ctl_ip(o))?;
            }
            fault_at = clients.now();
            tokio::time::sleep(HOLD).await;
            let at = clients.now();
            tb.heal_all()?;
            let after = cut_off(tb.logs(&tb.ctl_name(follower))?);
            note = format!(
                "controller {follower} relayed {relayed} agent sessions and was cut off: {} sent elsewhere",
                after - before
            );
            ensure!(
                after > before,
                "controller {follower} relayed {relayed} agent sessions, cut off it let none go"
            );
            at
        }
        "asymmetric-leader" => {
            let leader = tb.leader().await?;
            for f in tb.others(leader) {
                tb.drop_input(&tb.ctl_name(leader), &tb.ctl_ip(f))?;
            }
            fault_at = clients.now();
            tokio::time::sleep(HOLD).await;
            let at = clients.now();
            tb.heal_all()?;
            at
        }
        "loss-latency" => {
            note = tb.degrade_controllers()?;
            fault_at = clients.now();
            tokio::time::sleep(HOLD).await;
            let at = clients.now();
            tb.heal_all()?;
            at
        }
        "pause-leader" => {
            let leader = tb.leader().await?;
            tb.docker(&["pause", &tb.ctl_name(leader)])?;
            fault_at = clients.now();
            tokio::time::sleep(HOLD).await;
            let at = clients.now();
            tb.docker(&["unpause", &tb.ctl_name(leader)])?;
            at
        }
        "kill9-leader" => {
            let leader = tb.leader().await?;
            tb.docker(&["kill", "-s", "KILL", &tb.ctl_name(leader)])?;
            fault_at = clients.now();
            tokio::time::sleep(HOLD).await;
            let at = clients.now();
            tb.docker(&["start", &tb.ctl_name(leader)])?;
            at
        }
        "rolling-upgrade" => {
            rolling_upgrade(
                tb,
                &clients,
                events_before,
                &pool_before,
                &mut note,
                &mut fault_at,
            )
            .await?
        }
        "rolling-restart" => {
            fault_at = clients.now();
            for n in 1..=3 {
                tb.docker(&["restart", "-t", "10", &tb.ctl_name(n)])?;
                tb.settled().await?;
            }
            clients.now()
        }
        "zone-cutoff" => {
            zone_cutoff(
                tb,
                &clients,
                events_before,
                &pool_before,
                &mut note,
                &mut fault_at,
            )
            .await?
        }
        "member-cutoff" => {
            member_cutoff(
                tb,
                &clients,
                events_before,
                &pool_before,
                &mut note,
                &mut fault_at,
            )
            .await?
        }
        other => bail!("no scenario {other}"),
    };
    // A write invoked after the heal succeeds, bounded.
    let recovered = eventually(RECOVERY_BOUND, "a successful write after healing", || async {
        (clients.first_ok_write_after(heal_at), clients.summary())
    })
    .await?;
    // Every controller applies what the leader committed (every
    // acknowledged write is in that prefix of the log).
    tb.settled().await?;
    let history = clients.stop().await;
    let hosts_ready = tb.wait_all_hosts_ready(Duration::from_secs(90)).await?;
    let since_heal = Duration::from_nanos(clients_elapsed(&history).saturating_sub(heal_at));
    if CONTROLLER_ONLY.contains(&name) {
        hosts_stayed_ready(tb, wall_before).await?;
    }
    let mut figures = Figures::of(name, &history, fault_at, heal_at, recovered);
    figures.hosts_ready_s = (since_heal + hosts_ready).as_secs_f64();
    figures.note = note;
    rpool_tests::linearizable::check_register(&history.calls(), None)
        .map_err(|e| anyhow::anyhow!("{name}: history of {} calls: {e}", history.len()))?;
    tb.assert_no_host_in_two_pools().await?;
    Ok(figures)
}

/// No host changed state since `wall_before` (Unix ms, the controllers'
/// clock is this machine's): a host that went suspect or down and came
/// back carries the time it came back. On failure the controllers' "host
/// state changed" log lines say what happened.
async fn hosts_stayed_ready(tb: &Testbed, wall_before: u64) -> Result<()> {
    let moved: Vec<String> = tb
        .hosts()
        .await?
        .iter()
        .filter(|h| h.state_since_unix_ms >= wall_before)
        .map(|h| {
            let name = h
                .facts
                .as_ref()
                .map_or(h.host_id.as_str(), |f| f.hostname.as_str());
            format!(
                "{name} ({:?} since {}: {})",
                h.state(),
                h.state_since_unix_ms,
                h.state_reason
            )
        })
        .collect();
    if moved.is_empty() {
        return Ok(());
    }
    let mut changes = Vec::new();
    for n in 1..=3 {
        for line in tb.logs(&tb.ctl_name(n))?.lines() {
            if line.contains("host state changed") {
                changes.push(format!("ctl-{n}: {line}"));
            }
        }
    }
    let recent = changes.len().saturating_sub(12);
    bail!(
        "hosts left ready during a controller-only fault (since {wall_before}): {}; the controllers logged:\n{}",
        moved.join(", "),
        changes[recent..].join("\n")
    )
}

/// The testbed runs the previous release (controllers and agents). Each
/// controller in turn, followers first and the leader last, is stopped and
/// started from the suite's image on the same data volume and config; it
/// must load its old data dir (its "state loaded" log line shows the old
/// applied index and hosts), answer with the new version, and catch up
/// before the next one goes. `rpoolctl` of this version is run against the
/// mixed trio after each of the first two. Then the six agents, one at a
/// time. Nothing may be replaced, fenced or reset, and the pool keeps its
/// members. The note gives each step's times (to rejoin, to the first
/// None of `events` is of the `kinds` (no member replaced, fenced or reset
/// during `during`), and pool "faults" has the members it had before.
async fn nothing_replaced(
    tb: &Testbed,
    events: &[Event],
    kinds: &[&str],
    during: &str,
    pool_before: &Pool,
) -> Result<()> {
    let bad: Vec<&Event> = events
        .iter()
        .filter(|e| kinds.contains(&e.kind.as_str()))
        .collect();
    ensure!(
        bad.is_empty(),
        "nothing replaced, fenced or reset in {during}: {bad:?}"
    );
    let pool_after = tb.pool("faults").await?;
    ensure!(
        members(&pool_after) == members(pool_before),
        "pool members changed: {:?} -> {:?}",
        members(pool_before),
        members(&pool_after)
    );
    Ok(())
}

/// acknowledged write invoked after the step began).
async fn rolling_upgrade(
    tb: &Testbed,
    clients: &Clients,
    events_before: u64,
    pool_before: &Pool,
    note: &mut String,
    fault_at: &mut u64,
) -> Result<u64> {
    let new = rpool_proto::VERSION;
    let mut old = String::new();
    for n in 1..=3 {
        let status = tb.status(n).await?;
        ensure!(
            status.version != new,
            "controller {n} already runs {new} before the upgrade: RPOOL_PREV_IMAGE is not a previous release"
        );
        ensure!(
            old.is_empty() || old == status.version,
            "controllers run different versions before the upgrade: {old} and {}",
            status.version
        );
        old = status.version;
    }
    let hosts_before = tb.hosts().await?;
    ensure!(
        hosts_before.iter().all(|h| h.agent_version == old),
        "every agent runs {old} before the upgrade: {:?}",
        hosts_before.iter().map(|h| &h.agent_version).collect::<Vec<_>>()
    );
    let leader = tb.leader().await?;
    let mut order = tb.others(leader);
    order.push(leader);
    *fault_at = clients.now();
    let mut steps = Vec::new();
    for (i, &n) in order.iter().enumerate() {
        let before = tb.status(n).await?;
        let step_at = clients.now();
        let started = Instant::now();
        tb.upgrade("ctl", n)?;
        let name = tb.ctl_name(n);
        let rejoined = eventually(
            Duration::from_secs(60),
            &format!("controller {n} back on {new}"),
            || async {
                match tb.status(n).await {
                    Ok(s) if s.version == new => (Some(s), String::new()),
                    Ok(s) => (None, format!("answers as {}", s.version)),
                    Err(e) => (
                        None,
                        format!("{e}; log: {}", tail(&tb.logs(&name).unwrap_or_default())),
                    ),
                }
            },
        )
        .await?;
        ensure!(
            rejoined.term >= before.term,
            "controller {n} came back at term {} < {} before the upgrade (its Raft state was not read)",
            rejoined.term,
            before.term
        );
        tb.settled().await?;
        let rejoin = started.elapsed();
        // It read the old release's data dir (its Raft log, which rebuilds
        // the state; the old sled state is no longer read):
        // the state it loaded from disk before talking to anyone.
        let logs = tb.logs(&name)?;
        let (applied, hosts) = state_loaded(&logs)
            .with_context(|| format!("no \"state loaded\" line in {name}'s log: {}", tail(&logs)))?;
        ensure!(
            applied > 0 && hosts == hosts_before.len(),
            "controller {n} ({new}) loaded applied index {applied} and {hosts} hosts from the {old} data dir; before the upgrade it had applied {} and knew {} hosts",
            before.applied_index,
            hosts_before.len()
        );
        let first = eventually(
            RECOVERY_BOUND,
            &format!("a write after upgrading controller {n}"),
            || async { (clients.first_ok_write_after(step_at), clients.summary()) },
        )
        .await?;
        let mixed = if i < 2 {
            mixed_trio_ctl(tb, pool_before, i + 1).await?;
            format!(", rpoolctl ok on {} new + {} old", i + 1, 2 - i)
        } else {
            String::new()
        };
        let step = format!(
            "ctl-{n}{}: old dir loaded (applied {applied} of {} before the stop, {hosts} hosts), rejoined+caught up {:.1} s, first write {} ms{mixed}",
            if n == leader { " (leader)" } else { "" },
            before.applied_index,
            rejoin.as_secs_f64(),
            first.saturating_sub(step_at) / 1_000_000
        );
        eprintln!("faults: rolling-upgrade: {step}");
        steps.push(step);
    }
    // The agents, one at a time: each comes back ready with the new version.
    let mut slowest_agent = Duration::ZERO;
    for h in &hosts_before {
        let hostname = h.facts.as_ref().map(|f| f.hostname.clone()).unwrap_or_default();
        let n: u64 = hostname
            .strip_prefix("host-")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("testbed host name {hostname:?}"))?;
        let started = Instant::now();
        tb.upgrade("host", n)?;
        eventually(
            Duration::from_secs(60),
            &format!("{hostname} ready on agent {new}"),
            || async {
                let host = tb.get_host(&h.host_id).await.ok();
                let done = host
                    .as_ref()
                    .is_some_and(|x| x.state == HostState::Ready as i32 && x.agent_version == new);
                (done.then_some(()), host.map(|x| (x.state, x.agent_version)))
            },
        )
        .await?;
        let took = started.elapsed();
        eprintln!(
            "faults: rolling-upgrade: {hostname} ready on {new} {:.1} s after its restart",
            took.as_secs_f64()
        );
        slowest_agent = slowest_agent.max(took);
    }
    let at = clients.now();
    for n in 1..=3 {
        let version = tb.status(n).await?.version;
        ensure!(version == new, "controller {n} runs {version} after the upgrade");
    }
    let events = tb.events_after(events_before).await?;
    nothing_replaced(
        tb,
        &events,
        &["host_replacing", "host_fenced", "host_unfenced", "storm"],
        "an upgrade",
        pool_before,
    )
    .await?;
    *note = format!(
        "{old} -> {new}; {}; 6 agents one at a time, each ready again within {:.1} s; 0 replaced",
        steps.join("; "),
        slowest_agent.as_secs_f64()
    );
    Ok(at)
}

/// `rpoolctl` of this version against a trio of `upgraded` new and
/// 3 - `upgraded` old controllers: status, host list, pool show, controller
/// list (read commands, JSON parsed) and a label set and removed (a write).
async fn mixed_trio_ctl(tb: &Testbed, pool_before: &Pool, upgraded: usize) -> Result<()> {
    let json = |args: &[&str]| -> Result<serde_json::Value> {
        let out = tb.ctl(args)?;
        serde_json::from_str(&out).with_context(|| format!("rpoolctl {args:?} -o json printed {out}"))
    };
    let ctx = || {
        format!(
            "rpoolctl against {upgraded} new + {} old controllers",
            3 - upgraded
        )
    };
    json(&["status", "-o", "json"]).with_context(ctx)?;
    let hosts = json(&["host", "list", "-o", "json"]).with_context(ctx)?;
    let count = hosts.as_array().map(Vec::len).unwrap_or(0);
    ensure!(count == 6, "{}: host list shows {count} hosts: {hosts}", ctx());
    let pool = json(&["pool", "show", "faults", "-o", "json"]).with_context(ctx)?;
    ensure!(
        pool.to_string().contains(&pool_before.members[0].hostname),
        "{}: pool show faults lacks {}: {pool}",
        ctx(),
        pool_before.members[0].hostname
    );
    let controllers = json(&["controller", "list", "-o", "json"]).with_context(ctx)?;
    ensure!(
        controllers.as_array().map(Vec::len) == Some(3),
        "{}: controller list: {controllers}",
        ctx()
    );
    tb.ctl(&["host", "label", "host-5", "upgrade.rpool/step=mixed"])
        .with_context(ctx)?;
    tb.ctl(&["host", "label", "host-5", "upgrade.rpool/step-"])
        .with_context(ctx)?;
    Ok(())
}

/// `applied_index` and `hosts` of the last "state loaded" line of a
/// controller's log (text format: `... state loaded id=1 ...
/// applied_index=12 hosts=6`).
fn state_loaded(logs: &str) -> Option<(u64, usize)> {
    let line = logs.lines().rev().find(|l| l.contains("state loaded"))?;
    let field = |key: &str| -> Option<u64> {
        let rest = &line[line.find(&format!("{key}="))? + key.len() + 1..];
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    Some((field("applied_index")?, field("hosts")? as usize))
}

/// The last lines of a log, for error messages.
fn tail(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Zone a (host-1, host-4) loses the controllers: a storm. Nothing is
/// replaced, one storm alert goes out; after healing the pool is as it was
/// and no host was fenced or reset.
async fn zone_cutoff(
    tb: &Testbed,
    clients: &Clients,
    events_before: u64,
    pool_before: &Pool,
    note: &mut String,
    fault_at: &mut u64,
) -> Result<u64> {
    let zone = ["host-1", "host-4"];
    // A zone's uplink fails for all its hosts at once: cut together, not
    // one docker call after another (seconds apart on a loaded machine,
    // which is two separate failures, not a storm).
    let hosts: Vec<String> = zone.iter().map(|h| tb.host_name(h)).collect();
    let ctls: Vec<String> = (1..=3).map(|c| tb.ctl_ip(c)).collect();
    tb.cut_together(&hosts, &ctls)?;
    *fault_at = clients.now();
    let ids = [tb.host_id(zone[0]).await?, tb.host_id(zone[1]).await?];
    let down_at = tb
        .wait_hosts_state(&ids, HostState::Down, DOWN_AFTER + Duration::from_secs(30))
        .await?;
    // A few planner rounds with the hosts down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at = clients.now();
    tb.heal_all()?;
    tb.wait_hosts_state(&ids, HostState::Ready, Duration::from_secs(60))
        .await?;
    let events = tb.events_after(events_before).await?;
    let storms: Vec<&Event> = events.iter().filter(|e| e.kind == "storm").collect();
    ensure!(storms.len() == 1, "one storm alert, got {storms:?}");
    nothing_replaced(
        tb,
        &events,
        &["host_replacing", "host_fenced", "host_unfenced"],
        "a storm",
        pool_before,
    )
    .await?;
    *note = format!(
        "both down after {:.1}s; 1 storm alert; 0 replaced",
        down_at.as_secs_f64()
    );
    Ok(at)
}

/// A worker's host loses the controllers for longer than down_after: it
/// is replaced exactly once, fenced, and reset into the fleet on return.
async fn member_cutoff(
    tb: &Testbed,
    clients: &Clients,
    events_before: u64,
    pool_before: &Pool,
    note: &mut String,
    fault_at: &mut u64,
) -> Result<u64> {
    let dead = pool_before
        .members
        .iter()
        .find(|m| m.role == "worker")
        .context("a worker in pool faults")?
        .clone();
    let cut_at = Instant::now();
    for c in 1..=3 {
        tb.cut(&tb.host_name(&dead.hostname), &tb.ctl_ip(c))?;
    }
    *fault_at = clients.now();
    let size = pool_before.members.len();
    let healed = eventually(
        Duration::from_secs(90),
        "a replacement for the cut-off worker",
        || async {
            let pool = tb.pool("faults").await.ok();
            let done = pool.as_ref().is_some_and(|p| {
                p.phase == "ready"
                    && !p.members.iter().any(|m| m.host_id == dead.host_id)
                    && p.members.len() == size
                    && p.members.iter().all(|m| m.state == "joined")
            });
            (done.then_some(()), pool.map(|p| (members(&p), p.phase)))
        },
    )
    .await;
    let replaced_after = cut_at.elapsed();
    let at = clients.now();
    tb.heal_all()?;
    healed?;
    // Back: fenced, reset, in the fleet.
    let unfenced = eventually(
        Duration::from_secs(60),
        "the returning host reset and ready",
        || async {
            let events = tb.events_after(events_before).await.unwrap_or_default();
            let unfenced = events
                .iter()
                .any(|e| e.kind == "host_unfenced" && e.host_id == dead.host_id);
            let host = tb.get_host(&dead.host_id).await.ok();
            let ready = host
                .as_ref()
                .is_some_and(|h| h.state == HostState::Ready as i32 && h.pool.is_empty());
            (
                (unfenced && ready).then_some(()),
                host.map(|h| (h.state, h.pool, h.state_reason)),
            )
        },
    )
    .await;
    unfenced?;
    let events = tb.events_after(events_before).await?;
    let replacing: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == "host_replacing" && e.host_id == dead.host_id)
        .collect();
    ensure!(replacing.len() == 1, "replaced exactly once: {replacing:?}");
    ensure!(
        events
            .iter()
            .any(|e| e.kind == "host_fenced" && e.host_id == dead.host_id),
        "the cut-off host was fenced: {events:?}"
    );
    let others: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == "host_replacing" && e.host_id != dead.host_id)
        .collect();
    ensure!(others.is_empty(), "no other host replaced: {others:?}");
    *note = format!(
        "{} replaced {:.1}s after the cut, fenced, reset on return",
        dead.hostname,
        replaced_after.as_secs_f64()
    );
    Ok(at)
}

/// The last completion time in `history` (ns since the clients started).
fn clients_elapsed(history: &clients::History) -> u64 {
    history.0.iter().map(|r| r.completed).max().unwrap_or(0)
}

fn members(pool: &Pool) -> BTreeMap<String, String> {
    pool.members
        .iter()
        .map(|m| (m.hostname.clone(), m.role.clone()))
        .collect()
}

impl Testbed {
    async fn pool(&self, name: &str) -> Result<Pool> {
        let mut client = self.admin_any().await?;
        Ok(client
            .get_pool(GetPoolRequest { name: name.into() })
            .await?
            .into_inner())
    }

    async fn assert_no_host_in_two_pools(&self) -> Result<()> {
        let mut client = self.admin_any().await?;
        let pools = client
            .list_pools(ListPoolsRequest::default())
            .await?
            .into_inner()
            .pools;
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for pool in &pools {
            let name = pool.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
            for m in &pool.members {
                if m.state == "replaced" {
                    continue;
                }
                if let Some(other) = seen.insert(m.host_id.clone(), name.clone()) {
                    bail!("host {} in pools {other} and {name}", m.hostname);
                }
            }
        }
        Ok(())
    }

    async fn last_event_index(&self) -> Result<u64> {
        let events = self.events_after(0).await?;
        Ok(events.last().map(|e| e.index).unwrap_or(0))
    }

    async fn events_after(&self, after: u64) -> Result<Vec<Event>> {
        let mut client = self.admin_any().await?;
        let mut out = Vec::new();
        let mut after = after;
        loop {
            let request = ListEventsRequest {
                pool: String::new(),
                after_index: after,
                limit: 1000,
                ..ListEventsRequest::default()
            };
            let batch = client.list_events(request).await?.into_inner().events;
            let Some(last) = batch.last() else { break };
            after = last.index;
            let full = batch.len() == 1000;
            out.extend(batch);
            if !full {
                break;
            }
        }
        Ok(out)
    }
}
