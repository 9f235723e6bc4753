//! Host liveness: heartbeats in memory, state transitions through the log.
//!
//! Heartbeats are *not* replicated: [`Liveness`] keeps, per host, the
//! monotonic time of the last heartbeat and the latest observations
//! (utilization, health, clock skew, whether a session is connected here).
//! Only the resulting state changes go through
//! [`NodeHandle::propose`](crate::replica::NodeHandle::propose).
//!
//! The decision is a pure function, [`Liveness::transitions`], of (state
//! machine, observations, now): silent longer than `suspect_after_ms`, a
//! ready host becomes suspect; silent longer than `down_after_ms`, a ready
//! or suspect host becomes down. Other states (cordoned, joining, leaving,
//! down) are left alone. A host known from the store but not heard from since
//! this controller started is measured from the controller's start, so a
//! restart gives every host a full grace period instead of marking live hosts
//! down. A new leader adds the time its fleet needs to reconnect
//! ([`ATTACH_RATE_PER_S`]): after a failover every agent reconnects at once
//! and admission control ([`crate::api::agent::MAX_SETUPS`]) queues them, so
//! a host still waiting its turn is not silent, and the handshakes load the
//! leader enough to delay the heartbeats of the agents already back. No
//! host's silence counts before that window ends (as Nomad's
//! `failover_heartbeat_ttl`); a host that dies inside it is found that much
//! later.
//!
//! [`run_ticker`] evaluates it every [`TICK`] and proposes the transitions
//! one by one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpool_proto::clock::unix_ms_now;
use rpool_proto::v1;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::LivenessConfig;
use crate::replica::{NodeHandle, ProposeError};
use crate::state::State;
use crate::state::command::{Command, HostState};

/// How often the ticker looks for silent hosts.
pub const TICK: Duration = Duration::from_millis(100);

/// Agents per second a new leader is assumed to admit when its whole fleet
/// reconnects (measured: 10,000 agents in under 15 s on two cores,
/// BENCHMARKS.md). Hosts not heard from since it took over get
/// `hosts / ATTACH_RATE_PER_S` seconds more before they turn suspect or
/// down: 10,000 hosts 20 s, 10 hosts 20 ms.
pub const ATTACH_RATE_PER_S: u64 = 500;

/// The reconnect window of a new leader also lasts while agents keep
/// coming back: until no new session came for this long (a loaded machine
/// admits fewer than [`ATTACH_RATE_PER_S`]; agents retry after a hint of up
/// to 2 s)...
pub const ATTACH_QUIET: Duration = Duration::from_secs(3);
/// ...but never longer than this many times the rate-based window.
pub const ATTACH_WINDOW_CAP: u32 = 3;

/// What this controller last observed from one host.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// When the last Hello or Heartbeat arrived (monotonic).
    pub last_heartbeat: Instant,
    /// Utilization from the last heartbeat that carried one.
    pub utilization: Option<v1::Utilization>,
    /// Health checks from the last heartbeat.
    pub health: Vec<v1::HealthCheck>,
    /// Agent clock minus controller clock at the last heartbeat (ms).
    pub clock_skew_ms: i64,
    /// Id of the session currently connected for this host, if any.
    pub session: Option<u64>,
    /// Pods pending in the host's cluster, from the last heartbeat (only
    /// control-plane agents report it).
    pub pending_pods: Option<u32>,
    /// The last certificate report (control planes send one when it
    /// changes; kept until the next).
    pub certs: Option<v1::CertReport>,
}

/// A state change the liveness rules call for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Host id.
    pub host_id: String,
    /// Current state.
    pub from: HostState,
    /// State to move to.
    pub to: HostState,
    /// Why, e.g. "no heartbeat for 5.0s".
    pub reason: String,
}

impl Transition {
    /// The command that makes the transition, stamped with the proposer's
    /// wall clock.
    pub fn into_command(self, at_unix_ms: u64) -> Command {
        Command::SetHostState {
            host_id: self.host_id,
            state: self.to,
            reason: self.reason,
            at_unix_ms,
        }
    }
}

/// In-memory liveness table. Shared as `Arc<Mutex<Liveness>>`; every method
/// is short and synchronous.
#[derive(Debug)]
pub struct Liveness {
    started: Instant,
    /// Extra silence allowed to hosts not heard from since `started`
    /// ([`ATTACH_RATE_PER_S`]).
    attach_grace: Duration,
    /// The last session admitted inside the reconnect window.
    last_attach: Option<Instant>,
    config: LivenessConfig,
    hosts: HashMap<String, Observation>,
    /// The applied index of the state at the last full scan of
    /// [`Liveness::transitions`] that found every ready or suspect host
    /// observed here; while the state stays at that index only observed
    /// hosts can fall due (observations are only added, until `new_term`).
    all_observed_at: std::cell::Cell<Option<u64>>,
    /// The Raft term of the last [`Liveness::new_term`] (0 before any).
    term: u64,
}

impl Liveness {
    /// An empty table; `started` is the controller's start (grace origin).
    pub fn new(config: LivenessConfig, started: Instant) -> Self {
        Liveness {
            started,
            attach_grace: Duration::ZERO,
            last_attach: None,
            config,
            hosts: HashMap::new(),
            all_observed_at: std::cell::Cell::new(None),
            term: 0,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &LivenessConfig {
        &self.config
    }

    /// When this controller started, or last became leader.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// This controller just became leader of a fleet of `hosts` in Raft
    /// term `term`: forget what an earlier term observed and give every
    /// host a full grace period from `now`, plus the time the fleet needs
    /// to reconnect ([`ATTACH_RATE_PER_S`]), so a failover never marks live
    /// hosts down while their agents move over.
    ///
    /// Once per term: the first session admitted in a term and the ticker
    /// that notices the leadership both call it, and the later call must
    /// not forget the sessions admitted since (a host then showed
    /// `connected: false` until its next heartbeat). Returns whether the
    /// table was reset.
    pub fn new_term(&mut self, now: Instant, hosts: usize, term: u64) -> bool {
        if term != 0 && term == self.term {
            return false;
        }
        self.term = term;
        self.started = now;
        self.attach_grace = Duration::from_millis(hosts as u64 * 1_000 / ATTACH_RATE_PER_S);
        self.last_attach = None;
        self.hosts.clear();
        self.all_observed_at.set(None);
        true
    }

    /// The Raft term of the last reset ([`Liveness::new_term`]).
    pub fn term(&self) -> u64 {
        self.term
    }

    /// A session for `host_id` was accepted (its Hello counts as a
    /// heartbeat). Replaces any previous session's claim.
    pub fn connect(&mut self, host_id: &str, session: u64, now: Instant) {
        if now < self.started + self.attach_grace * ATTACH_WINDOW_CAP {
            self.last_attach = Some(now);
        }
        let obs = self.entry(host_id, now);
        obs.last_heartbeat = now;
        obs.session = Some(session);
    }

    /// Records a heartbeat. `now_unix_ms` is the controller's wall clock,
    /// used only for the skew.
    pub fn record_heartbeat(
        &mut self,
        host_id: &str,
        session: u64,
        heartbeat: &v1::Heartbeat,
        now: Instant,
        now_unix_ms: u64,
    ) {
        let obs = self.entry(host_id, now);
        obs.last_heartbeat = now;
        obs.session = Some(session);
        if heartbeat.utilization.is_some() {
            obs.utilization = heartbeat.utilization;
        }
        obs.health = heartbeat.health.clone();
        obs.pending_pods = heartbeat.pending_pods;
        if heartbeat.certs.is_some() {
            obs.certs = heartbeat.certs.clone();
        }
        obs.clock_skew_ms = skew_ms(heartbeat.sent_at_unix_ms, now_unix_ms);
    }

    /// The session ended. Ignored if a newer session has taken over. The
    /// heartbeat clock keeps running.
    pub fn disconnect(&mut self, host_id: &str, session: u64) {
        if let Some(obs) = self.hosts.get_mut(host_id)
            && obs.session == Some(session)
        {
            obs.session = None;
        }
    }

    /// Latest observation of a host, if any since start.
    pub fn observation(&self, host_id: &str) -> Option<&Observation> {
        self.hosts.get(host_id)
    }

    /// Number of hosts with a connected session.
    pub fn connected_count(&self) -> usize {
        self.hosts.values().filter(|o| o.session.is_some()).count()
    }

    /// The transitions due at `now`. Pure: reads only `self`, `hosts` and
    /// `now`. Ordered by host id.
    ///
    /// Cost: a full scan of the state looks every host up here; the ticker
    /// runs it every [`TICK`] holding the liveness lock, which at 10,000
    /// hosts was 8 % of the leader's CPU and stalled heartbeats behind the
    /// lock. So while the state is unchanged since a full scan that found
    /// every ready/suspect host observed, only the observations are checked
    /// (no lookups) and the few silent ones looked up. Same result.
    pub fn transitions(&self, hosts: &State, now: Instant) -> Vec<Transition> {
        if self.all_observed_at.get() == Some(hosts.applied_index()) {
            let suspect_after = self.config.suspect_after();
            let mut silent: Vec<&String> = self
                .hosts
                .iter()
                .filter(|(_, o)| now.saturating_duration_since(o.last_heartbeat) > suspect_after)
                .map(|(id, _)| id)
                .collect();
            silent.sort_unstable();
            return silent
                .into_iter()
                .filter_map(|id| hosts.host(id).and_then(|record| self.judge(id, record, now)))
                .collect();
        }
        let mut out = Vec::new();
        let mut all_observed = true;
        for (host_id, record) in hosts.hosts() {
            if !matches!(record.state, HostState::Ready | HostState::Suspect) {
                continue;
            }
            all_observed &= self.hosts.contains_key(host_id);
            out.extend(self.judge(host_id, record, now));
        }
        self.all_observed_at
            .set(all_observed.then(|| hosts.applied_index()));
        out
    }

    /// Whether this table has judged every host for a full `down_after`:
    /// before that (a controller just started, or a new term), a host the
    /// replicated state still calls ready may have been silent for seconds,
    /// so the state's picture of who is silent (the storm check) is not
    /// complete and nothing is replaced on it.
    pub fn judging(&self, now: Instant) -> bool {
        now > self.window_end() + self.config.down_after()
    }

    /// When the reconnect window of this term ends: `hosts /
    /// ATTACH_RATE_PER_S` after it started, later while agents keep coming
    /// back ([`ATTACH_QUIET`]), at most [`ATTACH_WINDOW_CAP`] times that.
    fn window_end(&self) -> Instant {
        let by_rate = self.started + self.attach_grace;
        let by_arrivals = self.last_attach.map_or(by_rate, |t| t + ATTACH_QUIET);
        by_rate
            .max(by_arrivals)
            .min(self.started + self.attach_grace * ATTACH_WINDOW_CAP)
    }

    /// The transition due for one host at `now`, if any.
    fn judge(
        &self,
        host_id: &str,
        record: &crate::state::command::HostRecord,
        now: Instant,
    ) -> Option<Transition> {
        if !matches!(record.state, HostState::Ready | HostState::Suspect) {
            return None;
        }
        // Not heard from since this controller started leading: silent
        // since then.
        let last = self.hosts.get(host_id).map_or(self.started, |o| o.last_heartbeat);
        let silent = now.saturating_duration_since(last);
        // Nobody's silence counts before the fleet had time to reconnect,
        // whether its agent is back yet or not: a leader admitting thousands
        // of agents also delays the heartbeats of those already back (a
        // kill -9 of the leader at 10,000 agents: heartbeats up to 9.6 s
        // late, 454 hosts falsely suspect or down when only hosts not yet
        // back had the time).
        let counted = now.saturating_duration_since(last.max(self.window_end()));
        let to = if counted > self.config.down_after() {
            HostState::Down
        } else if counted > self.config.suspect_after() && record.state == HostState::Ready {
            HostState::Suspect
        } else {
            return None;
        };
        Some(Transition {
            host_id: host_id.to_owned(),
            from: record.state,
            to,
            reason: format!("no heartbeat for {}", seconds_tenths(silent)),
        })
    }

    fn entry(&mut self, host_id: &str, now: Instant) -> &mut Observation {
        self.hosts
            .entry(host_id.to_owned())
            .or_insert_with(|| Observation {
                last_heartbeat: now,
                utilization: None,
                health: Vec::new(),
                clock_skew_ms: 0,
                session: None,
                pending_pods: None,
                certs: None,
            })
    }
}

/// `3.0s`, `5.2s`, `3600.0s`: seconds with one decimal, truncated.
fn seconds_tenths(d: Duration) -> String {
    let ms = d.as_millis();
    format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
}

fn skew_ms(agent_unix_ms: u64, controller_unix_ms: u64) -> i64 {
    let diff = i128::from(agent_unix_ms) - i128::from(controller_unix_ms);
    diff.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Every [`TICK`], while this controller leads, proposes the transitions
/// due; on becoming leader it starts a new grace period
/// ([`Liveness::new_term`]). Stops when `stop` turns true or the node stops.
pub async fn run_ticker(node: NodeHandle, liveness: Arc<Mutex<Liveness>>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_leader = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::stopped(&mut stop) => return,
        }
        let leader = node.is_leader();
        if leader && !was_leader {
            let hosts = node.read(|sm| sm.hosts().len());
            let term = node.status().term;
            let mut live = liveness.lock().unwrap_or_else(|e| e.into_inner());
            // A session admitted since the election may have reset it first.
            live.new_term(Instant::now(), hosts, term);
            info!(
                term,
                hosts,
                down_after_ms = live.config().down_after_ms,
                attach_grace_ms = live.attach_grace.as_millis() as u64,
                "leading: every host gets a full grace period (plus the time its agents need to reconnect)"
            );
        }
        was_leader = leader;
        if !leader {
            continue;
        }
        let due = {
            let live = liveness.lock().unwrap_or_else(|e| e.into_inner());
            node.read(|sm| live.transitions(sm, Instant::now()))
        };
        for transition in due {
            let host_id = transition.host_id.clone();
            let to = transition.to;
            match node.propose(transition.into_command(unix_ms_now())).await {
                Ok(_) => {}
                Err(ProposeError::Stopped) => return,
                // Raced with a session (e.g. host came back): next tick re-evaluates.
                Err(ProposeError::Rejected(e)) => {
                    warn!(host_id, to = to.as_str(), error = %e, "liveness transition rejected")
                }
                // Leadership moved or no quorum: the next tick re-evaluates.
                Err(e @ ProposeError::Unavailable(_)) => {
                    warn!(host_id, to = to.as_str(), error = %e, "liveness transition not committed");
                    break;
                }
            }
        }
    }
}

/// Logs the grace period granted at start-up, once.
pub fn log_grace(liveness: &Liveness, known_hosts: usize) {
    if known_hosts > 0 {
        info!(
            known_hosts,
            down_after_ms = liveness.config.down_after_ms,
            "hosts from the store get a full grace period from controller start"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::tests::facts;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn machine(hosts: &[(&str, HostState)]) -> State {
        let mut sm = State::new();
        for (id, state) in hosts {
            let i = sm.applied_index() + 1;
            sm.apply(
                i,
                &Command::RegisterHost {
                    host_id: (*id).to_owned(),
                    agent_version: "0.1.0".to_owned(),
                    facts: facts(id, 8),
                    at_unix_ms: 0,
                },
            )
            .unwrap();
            let i = sm.applied_index() + 1;
            sm.apply(
                i,
                &Command::SetHostState {
                    host_id: (*id).to_owned(),
                    state: *state,
                    reason: String::new(),
                    at_unix_ms: 0,
                },
            )
            .unwrap();
        }
        sm
    }

    fn liveness(t0: Instant) -> Liveness {
        Liveness::new(LivenessConfig::default(), t0)
    }

    /// (name, state, last heartbeat offset from t0 or None, now offset,
    /// expected target state and reason).
    #[test]
    #[allow(clippy::type_complexity)]
    fn silence_turns_hosts_suspect_then_down() {
        use HostState::*;
        let cases: &[(&str, HostState, Option<u64>, u64, Option<(HostState, &str)>)] = &[
            ("ready, recent heartbeat", Ready, Some(0), 1_000, None),
            ("ready, exactly suspect_after", Ready, Some(0), 3_000, None),
            (
                "ready, past suspect_after",
                Ready,
                Some(0),
                3_050,
                Some((Suspect, "no heartbeat for 3.0s")),
            ),
            ("suspect, still under down_after", Suspect, Some(0), 4_900, None),
            (
                "suspect, past down_after",
                Suspect,
                Some(0),
                5_001,
                Some((Down, "no heartbeat for 5.0s")),
            ),
            (
                "ready, past down_after goes straight down",
                Ready,
                Some(0),
                6_000,
                Some((Down, "no heartbeat for 6.0s")),
            ),
            ("down stays down", Down, Some(0), 60_000, None),
            ("cordoned is left alone", Cordoned, Some(0), 60_000, None),
            ("joining is left alone", Joining, Some(0), 60_000, None),
            ("leaving is left alone", Leaving, Some(0), 60_000, None),
            (
                "never heard, inside grace",
                Ready,
                None,
                4_999,
                Some((Suspect, "no heartbeat for 4.9s")),
            ),
            (
                "never heard, grace over",
                Ready,
                None,
                5_001,
                Some((Down, "no heartbeat for 5.0s")),
            ),
            ("heartbeat later than start", Ready, Some(10_000), 12_000, None),
        ];
        let t0 = Instant::now();
        for (name, state, last, now, want) in cases {
            let sm = machine(&[("h1", *state)]);
            let mut live = liveness(t0);
            if let Some(last) = last {
                live.connect("h1", 1, t0 + ms(*last));
            }
            let got = live.transitions(&sm, t0 + ms(*now));
            let want: Vec<Transition> = want
                .iter()
                .map(|(to, reason)| Transition {
                    host_id: "h1".to_owned(),
                    from: *state,
                    to: *to,
                    reason: (*reason).to_owned(),
                })
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn the_quick_scan_finds_what_a_full_scan_finds_and_new_hosts_force_a_full_one() {
        let t0 = Instant::now();
        let mut sm = machine(&[
            ("h1", HostState::Ready),
            ("h2", HostState::Ready),
            ("h3", HostState::Cordoned),
        ]);
        let mut live = liveness(t0);
        live.connect("h1", 1, t0);
        live.connect("h2", 2, t0 + ms(2_000));
        // Full scan: every ready host observed, nothing due.
        assert!(live.transitions(&sm, t0 + ms(1_000)).is_empty());
        assert_eq!(live.all_observed_at.get(), Some(sm.applied_index()));
        // Quick scan (same state): h1 is silent, h2 is not; h3 is cordoned.
        let quick = live.transitions(&sm, t0 + ms(3_500));
        let hosts: Vec<(&str, HostState)> = quick.iter().map(|t| (t.host_id.as_str(), t.to)).collect();
        assert_eq!(hosts, [("h1", HostState::Suspect)]);
        // A host that was never heard from (uncordoned) changes the state:
        // the next scan is full and finds it once the grace period is over.
        let i = sm.applied_index() + 1;
        sm.apply(
            i,
            &Command::SetHostState {
                host_id: "h3".to_owned(),
                state: HostState::Ready,
                reason: String::new(),
                at_unix_ms: 0,
            },
        )
        .unwrap();
        let full = live.transitions(&sm, t0 + ms(5_500));
        let hosts: Vec<(&str, HostState)> = full.iter().map(|t| (t.host_id.as_str(), t.to)).collect();
        assert_eq!(
            hosts,
            [
                ("h1", HostState::Down),
                ("h2", HostState::Suspect),
                ("h3", HostState::Down)
            ]
        );
        assert_eq!(
            live.all_observed_at.get(),
            None,
            "h3 is not observed: no quick scans"
        );
        // A new term forgets every observation, so the next scan is full.
        live.connect("h3", 3, t0 + ms(5_500));
        assert!(
            live.transitions(&sm, t0 + ms(5_600))
                .iter()
                .all(|t| t.host_id != "h3")
        );
        live.new_term(t0 + ms(6_000), 3, 2);
        assert_eq!(live.all_observed_at.get(), None);
    }

    #[test]
    fn a_new_leader_counts_no_silence_before_the_fleet_had_time_to_reconnect() {
        let t0 = Instant::now();
        let sm = machine(&[("a", HostState::Ready), ("b", HostState::Ready)]);
        let states = |live: &Liveness, at: u64| -> Vec<(String, HostState)> {
            live.transitions(&sm, t0 + ms(at))
                .into_iter()
                .map(|t| (t.host_id, t.to))
                .collect()
        };
        let mut live = liveness(t0);
        // A fleet of 10,000: 20 s more at 500 agents/s.
        live.new_term(t0, 10_000, 2);
        live.connect("a", 1, t0 + ms(1_000));
        // `a` was heard and then fell silent inside the window (a leader
        // busy with the reconnecting fleet may be why); `b` still waits its
        // turn to reconnect: nothing for either until 20 s + 3 s.
        assert!(states(&live, 4_100).is_empty());
        assert!(states(&live, 22_999).is_empty());
        // After the window, the usual thresholds, counted from its end.
        let suspect = [
            ("a".to_owned(), HostState::Suspect),
            ("b".to_owned(), HostState::Suspect),
        ];
        assert_eq!(states(&live, 23_001), suspect);
        let down = [
            ("a".to_owned(), HostState::Down),
            ("b".to_owned(), HostState::Down),
        ];
        assert_eq!(states(&live, 25_001), down);

        // A host back after the window (and its cap, 60 s) is judged from
        // its own heartbeat.
        let mut live = liveness(t0);
        live.new_term(t0, 10_000, 2);
        live.connect("a", 1, t0 + ms(61_000));
        assert!(states(&live, 63_999).iter().all(|(id, _)| id != "a"));
        assert!(states(&live, 64_001).contains(&("a".to_owned(), HostState::Suspect)));

        // Agents still coming back keep the window open (a slow machine
        // admits fewer than 500 a second), up to three times its length.
        let mut live = liveness(t0);
        live.new_term(t0, 10_000, 2);
        live.connect("a", 1, t0 + ms(1_000));
        live.connect("c", 2, t0 + ms(30_000));
        // b not back, a silent since 1 s: the window now ends at 33 s.
        assert!(live.transitions(&sm, t0 + ms(35_999)).is_empty());
        let due: Vec<String> = live
            .transitions(&sm, t0 + ms(36_001))
            .into_iter()
            .map(|t| t.host_id)
            .collect();
        assert_eq!(due, ["a", "b"]);
        live.connect("c", 3, t0 + ms(59_000));
        live.connect("c", 4, t0 + ms(61_000)); // past the cap: does not extend
        let due: Vec<String> = live
            .transitions(&sm, t0 + ms(63_001))
            .into_iter()
            .map(|t| t.host_id)
            .collect();
        assert_eq!(due, ["a", "b"]);
        // A small fleet barely waits longer: 10 hosts, 20 ms.
        live.new_term(t0, 10, 3);
        assert_eq!(live.attach_grace, ms(20));
    }

    #[test]
    fn a_restarted_controller_gives_known_hosts_a_full_grace_period() {
        let t0 = Instant::now();
        let sm = machine(&[("a", HostState::Ready), ("b", HostState::Suspect)]);
        let live = liveness(t0);
        // Well within down_after of the start: nothing is marked down, even
        // though the hosts were last heard long before the restart.
        assert!(live.transitions(&sm, t0 + ms(2_999)).is_empty());
        let after = live.transitions(&sm, t0 + ms(5_001));
        assert_eq!(after.len(), 2);
        assert!(after.iter().all(|t| t.to == HostState::Down));
    }

    #[test]
    fn a_term_resets_the_table_once_and_keeps_the_sessions_admitted_in_it() {
        let t0 = Instant::now();
        let mut live = liveness(t0);
        live.connect("old", 1, t0);
        // The first session of term 5 resets the table before it connects...
        assert!(live.new_term(t0 + ms(100), 2, 5));
        live.connect("h1", 2, t0 + ms(110));
        // ...and the ticker noticing the leadership later forgets nothing.
        assert!(!live.new_term(t0 + ms(400), 2, 5));
        assert_eq!(live.term(), 5);
        assert_eq!(live.connected_count(), 1);
        assert_eq!(live.observation("h1").unwrap().session, Some(2));
        assert!(live.observation("old").is_none());
        assert_eq!(live.started(), t0 + ms(100));
        // A later term resets again.
        assert!(live.new_term(t0 + ms(900), 2, 6));
        assert_eq!(live.connected_count(), 0);
    }

    #[test]
    fn a_new_term_judges_nobody_fully_before_a_down_after_past_its_window() {
        let t0 = Instant::now();
        let mut live = liveness(t0);
        // 5 s down_after, a fleet of 10,000: a 20 s reconnect window.
        live.new_term(t0, 10_000, 4);
        assert!(!live.judging(t0 + ms(20_000)));
        assert!(!live.judging(t0 + ms(24_999)));
        assert!(live.judging(t0 + ms(25_001)));
        // A small fleet: the window is a few ms.
        live.new_term(t0 + ms(30_000), 6, 5);
        assert!(!live.judging(t0 + ms(34_000)));
        assert!(live.judging(t0 + ms(35_100)));
    }

    #[test]
    fn a_disconnected_host_keeps_its_clock_running() {
        let t0 = Instant::now();
        let sm = machine(&[("h1", HostState::Ready)]);
        let mut live = liveness(t0);
        live.connect("h1", 7, t0);
        live.disconnect("h1", 7);
        assert_eq!(live.connected_count(), 0);
        let got = live.transitions(&sm, t0 + ms(3_500));
        assert_eq!(got[0].to, HostState::Suspect);
    }

    #[test]
    fn an_old_session_ending_does_not_disconnect_its_replacement() {
        let t0 = Instant::now();
        let mut live = liveness(t0);
        live.connect("h1", 1, t0);
        live.connect("h1", 2, t0 + ms(10));
        live.disconnect("h1", 1);
        assert_eq!(live.connected_count(), 1);
        assert_eq!(live.observation("h1").unwrap().session, Some(2));
    }

    #[test]
    fn heartbeats_record_utilization_health_and_skew() {
        let t0 = Instant::now();
        let mut live = liveness(t0);
        let hb = v1::Heartbeat {
            seq: 1,
            sent_at_unix_ms: 1_000_250,
            utilization: Some(v1::Utilization {
                cpu_percent: 12.5,
                ..Default::default()
            }),
            health: vec![v1::HealthCheck {
                name: "disk_free".to_owned(),
                status: v1::HealthStatus::Ok as i32,
                message: String::new(),
            }],
            facts: None,
            pending_pods: Some(4),
            certs: None,
        };
        live.record_heartbeat("h1", 3, &hb, t0 + ms(5), 1_000_000);
        assert_eq!(live.observation("h1").unwrap().pending_pods, Some(4));
        let obs = live.observation("h1").unwrap();
        assert_eq!(obs.clock_skew_ms, 250);
        assert_eq!(obs.utilization.unwrap().cpu_percent, 12.5);
        assert_eq!(obs.health.len(), 1);
        assert_eq!(obs.last_heartbeat, t0 + ms(5));
        assert_eq!(skew_ms(0, u64::MAX), i64::MIN);
    }
}
