//! Self-healing decisions: which down pool members are replaced, by whom,
//! and when rpool holds back and alerts instead. Pure like the planner
//! that calls it: a function of (state, now, `[healing]` config) → commands.
//!
//! Every round, on the leader:
//! 1. **Storm check** ([`storm`]): when more than `storm_fleet_share` of all
//!    hosts, or at least `storm_pool_share` of one pool's members, are
//!    suspect or down (at least two hosts either way), nothing is replaced.
//!    A fleet host (in no pool) silent for longer than
//!    [`STALE_FLEET_SILENCE_MS`] is a dead or retired spare, not part of a
//!    network event: it counts neither as silent nor in the fleet, so a few
//!    long-dead spares cannot hold healing off for ever.
//!    One `storm` alert goes out when that starts and one `storm_over` when
//!    it ends (edge-triggered on the latest such event, so a new leader does
//!    not repeat it).
//! 2. **Replacement** ([`plan_pool`]), per pool with a running cluster, for
//!    one member per round whose host is `down` (never `suspect`) and has
//!    been for `settle_ms`: hosts cut off together go silent a heartbeat
//!    or two apart, and the wait lets the later ones turn suspect and
//!    count toward the storm check first. A host down through a storm
//!    waits `settle_ms` from the storm's end: hosts come back apart too,
//!    and the first one back ends the storm:
//!    - worker: fleet hosts chosen like a grow, so the workers left cover
//!      the request again (none when they still do); they join first, then
//!      a healthy control plane deletes the dead node;
//!    - control plane: only while a majority of the pool's control planes
//!      is joined and ready (etcd keeps quorum) and no other control plane
//!      is being replaced; a healthy control plane removes the dead etcd
//!      member and deletes its node, then the replacement (least-used zone,
//!      smallest host) joins. Quorum lost: the pool turns `degraded` with an
//!      alert, and nothing is done.
//!    - nothing fits: `degraded` with an alert saying what is missing; the
//!      placement is tried again every round, and a new alert goes out only
//!      when the message (what the fleet offers) changes.
//!
//!    The decision is one `ReplaceMember` command: the dead member turns
//!    `replaced` and the replacements are reserved atomically, and the
//!    command is refused for a member already replaced, so a replacement
//!    happens exactly once even across leader changes.
//! 3. **Fencing** ([`plan_fences`]): a replaced host is out of its pool and
//!    marked fenced; when it is `ready` again it is told `kubeadm reset`,
//!    and placed again only after that succeeded.
//! 4. **Deadlines** ([`plan_expired`]): a task with no result well past its
//!    deadline is failed by the controller (then retried with backoff,
//!    finally the pool turns degraded), so nothing waits forever.

use rpool_proto::units::format_size;

use crate::config::HealingConfig;
use crate::policy::fleet::{candidates, endpoint};
use crate::policy::placement::{self, Candidate, Request};
use crate::state::State;
use crate::state::command::{Command, HostRecord, HostState};
use crate::state::pool::{
    MAX_TASK_ATTEMPTS, Member, MemberState, PoolPhase, PoolRecord, Role, STORM, STORM_OVER, Severity,
    TaskKind, TaskRecord, TaskState, last_edge, storm_raised,
};

/// Fewest silent hosts that make a storm: one host failing never does.
pub const STORM_MIN_HOSTS: usize = 2;
/// A fleet host silent longer than this no longer counts for storms.
pub const STALE_FLEET_SILENCE_MS: u64 = 10 * 60 * 1000;
/// A pending task with no result this long after its deadline is failed
/// by the controller.
pub const EXPIRY_GRACE_MS: u64 = 30_000;

/// A host that stopped heartbeating and is not handled yet (fenced hosts
/// were dealt with already).
fn silent(host: &HostRecord) -> bool {
    matches!(host.state, HostState::Suspect | HostState::Down) && host.fenced.is_none()
}

/// A spare that has been silent so long it is no longer news (see
/// [`STALE_FLEET_SILENCE_MS`]).
fn stale_spare(host: &HostRecord, now: u64) -> bool {
    host.pool.is_none()
        && matches!(host.state, HostState::Suspect | HostState::Down)
        && now.saturating_sub(host.state_since_unix_ms) > STALE_FLEET_SILENCE_MS
}

/// (silent hosts, hosts) counted for the fleet-wide storm rule.
fn fleet_silence(state: &State, now: u64) -> (usize, usize) {
    let counted = state.hosts().values().filter(|h| !stale_spare(h, now));
    counted.fold((0, 0), |(quiet, total), h| {
        (quiet + usize::from(silent(h)), total + 1)
    })
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// Why the current silence is a storm, or `None`.
pub fn storm(state: &State, config: &HealingConfig, now: u64) -> Option<String> {
    let (quiet, total) = fleet_silence(state, now);
    if quiet >= STORM_MIN_HOSTS && quiet as f64 > config.storm_fleet_share * total as f64 {
        return Some(format!(
            "storm: {quiet} of {total} hosts silent at once (> {} of the fleet); not replacing; check the network",
            percent(config.storm_fleet_share)
        ));
    }
    for pool in state.pools().values() {
        let members: Vec<&Member> = pool
            .members
            .values()
            .filter(|m| !matches!(m.state, MemberState::Replaced { .. }))
            .collect();
        let quiet = members
            .iter()
            .filter(|m| state.host(&m.host_id).is_some_and(silent))
            .count();
        if quiet >= STORM_MIN_HOSTS && quiet as f64 >= config.storm_pool_share * members.len() as f64 {
            return Some(format!(
                "storm: {quiet} of {} members of pool {} silent at once (>= {} of the pool); not replacing; \
                 check the network",
                members.len(),
                pool.spec.name,
                percent(config.storm_pool_share)
            ));
        }
    }
    None
}

/// The storm edge due now, if any: `storm` when one starts, `storm_over`
/// when it ends.
pub fn plan_storm_edges(state: &State, storm: Option<&str>, now: u64, out: &mut Vec<Command>) {
    let raised = storm_raised(state);
    let (kind, severity, message) = match (storm, raised) {
        (Some(why), false) => (STORM, Severity::Alert, why.to_owned()),
        (None, true) => {
            let (quiet, total) = fleet_silence(state, now);
            (
                STORM_OVER,
                Severity::Info,
                format!("storm over: {quiet} of {total} hosts silent; down members are replaced again"),
            )
        }
        _ => return,
    };
    out.push(Command::Alert {
        pool: String::new(),
        host_id: String::new(),
        kind: kind.to_owned(),
        severity,
        message,
        degrade: false,
        at_unix_ms: now,
    });
}

/// A joined control plane on a ready host (lowest order) to run kubectl
/// and etcdctl on; never a suspect or down one.
pub fn healthy_runner<'a>(state: &State, pool: &'a PoolRecord) -> Option<&'a Member> {
    pool.members
        .values()
        .filter(|m| m.role == Role::ControlPlane && m.state == MemberState::Joined)
        .filter(|m| {
            state
                .host(&m.host_id)
                .is_some_and(|h| h.state == HostState::Ready)
        })
        .min_by_key(|m| m.order)
}

/// True when a member's host is down (replaced members excluded).
pub fn member_down(state: &State, member: &Member) -> bool {
    !matches!(member.state, MemberState::Replaced { .. })
        && state
            .host(&member.host_id)
            .is_some_and(|h| h.state == HostState::Down)
}

/// True once `host_id` has been down for `settle_ms`: hosts cut off
/// together went silent a heartbeat or two apart, and by then the later
/// ones are suspect too and count toward a storm. A host down through a
/// storm counts from the storm's end ([`storm_ended`]): when a zone's
/// network returns, its hosts are heard from again a heartbeat or more
/// apart too, and the first one back ends the storm while the others are
/// still down.
fn settled(state: &State, host_id: &str, now: u64, settle_ms: u64) -> bool {
    let since = storm_ended(state, now);
    state
        .host(host_id)
        .is_some_and(|h| now.saturating_sub(h.state_since_unix_ms.max(since)) >= settle_ms)
}

/// When the latest storm ended (its `storm_over`): `now` while its
/// `storm` alert is still the latest edge (the storm may be ending in this
/// very round), 0 when none is on record.
fn storm_ended(state: &State, now: u64) -> u64 {
    match last_edge(state) {
        Some(edge) if edge.kind == STORM => now,
        Some(edge) => edge.at_unix_ms,
        None => 0,
    }
}

/// "h12 (zone b, 16c/64GiB)".
fn describe(state: &State, host_id: &str) -> String {
    match state.host(host_id) {
        Some(h) => format!(
            "{} (zone {}, {}c/{})",
            h.facts.hostname,
            h.facts.zone,
            h.facts.inventory.logical_cores,
            format_size(h.facts.inventory.memory_total_bytes)
        ),
        None => host_id.to_owned(),
    }
}

fn hostname(state: &State, host_id: &str) -> String {
    state
        .host(host_id)
        .map_or_else(|| host_id.to_owned(), |h| h.facts.hostname.clone())
}

/// The replacement decision for `pool` this round (one dead member at a
/// time), or an alert when none is possible.
pub fn plan_pool(state: &State, pool: &PoolRecord, now: u64, settle_ms: u64, out: &mut Vec<Command>) {
    if pool.join.is_none() && pool.phase != PoolPhase::Deleting {
        return; // no cluster yet: nothing to heal (init is retried instead)
    }
    let Some(dead) = pool.members.values().find(|m| {
        member_down(state, m)
            && settled(state, &m.host_id, now, settle_ms)
            && !crate::policy::upgrade::in_flight(pool, &m.host_id)
    }) else {
        return;
    };
    let name = &pool.spec.name;
    let reason = state
        .host(&dead.host_id)
        .map_or_else(String::new, |h| h.state_reason.clone());
    let who = format!(
        "pool {name}: host {} down ({reason})",
        hostname(state, &dead.host_id)
    );
    let replace = |replacements: Vec<String>, why: String| Command::ReplaceMember {
        pool: name.clone(),
        host_id: dead.host_id.clone(),
        replacements,
        why,
        at_unix_ms: now,
    };
    if pool.phase == PoolPhase::Deleting {
        out.push(replace(
            Vec::new(),
            format!("{who} while the pool is destroyed: fenced, reset when it comes back"),
        ));
        return;
    }
    let alert = |kind: &str, message: String| -> Option<Command> {
        // Repeats change nothing: only a new message is a new alert.
        (pool.phase != PoolPhase::Degraded || pool.phase_reason != message).then(|| Command::Alert {
            pool: name.clone(),
            host_id: dead.host_id.clone(),
            kind: kind.to_owned(),
            severity: Severity::Alert,
            message,
            degrade: true,
            at_unix_ms: now,
        })
    };
    let fleet = candidates(state);
    match dead.role {
        Role::Worker => {
            if matches!(dead.state, MemberState::Leaving { .. }) {
                out.push(replace(
                    Vec::new(),
                    format!("{who} while leaving the pool: removing its node"),
                ));
                return;
            }
            let others: Vec<Candidate> = crate::policy::fleet::workers(state, pool)
                .into_iter()
                .filter(|w| w.host_id != dead.host_id)
                .collect();
            let left = others.iter().fold((0u64, 0u64), |(c, m), w| {
                (c + u64::from(w.cores), m + w.memory_bytes)
            });
            let want = Request {
                cores: pool.spec.cores,
                memory_bytes: pool.spec.memory_bytes,
                control_planes: 0,
            };
            if left.0 >= want.cores && left.1 >= want.memory_bytes {
                out.push(replace(
                    Vec::new(),
                    format!(
                        "{who}; the other workers ({} cores / {}) still cover the request: removing its node",
                        left.0,
                        format_size(left.1)
                    ),
                ));
                return;
            }
            match placement::grow(&fleet, &others, &want, &pool.spec.zones) {
                Ok(add) => {
                    let with = add
                        .iter()
                        .map(|h| describe(state, h))
                        .collect::<Vec<_>>()
                        .join(", ");
                    out.push(replace(add, format!("{who}, replacing with {with}")));
                }
                Err(e) => out.extend(alert(
                    "no_replacement",
                    format!("{who}; no replacement worker fits: {e}"),
                )),
            }
        }
        Role::ControlPlane => {
            if matches!(dead.state, MemberState::Leaving { .. }) {
                // Drained by an admin: its replacement is placed already.
                out.push(replace(
                    Vec::new(),
                    format!("{who} while leaving the pool: removing its etcd member and node"),
                ));
                return;
            }
            let cps: Vec<&Member> = pool
                .members
                .values()
                .filter(|m| m.role == Role::ControlPlane)
                .collect();
            if cps
                .iter()
                .any(|m| matches!(m.state, MemberState::Replaced { .. }))
            {
                return; // one control plane at a time
            }
            let total = cps.len();
            let host_state = |m: &Member| state.host(&m.host_id).map(|h| h.state);
            let ready = cps
                .iter()
                .filter(|m| m.state == MemberState::Joined && host_state(m) == Some(HostState::Ready))
                .count();
            let down: Vec<&&Member> = cps
                .iter()
                .filter(|m| host_state(m) == Some(HostState::Down))
                .collect();
            if ready * 2 <= total {
                if (total - down.len()) * 2 > total {
                    return; // suspects decide it: wait, never act on suspect
                }
                let names = down
                    .iter()
                    .map(|m| hostname(state, &m.host_id))
                    .collect::<Vec<_>>()
                    .join(", ");
                out.extend(alert(
                    "quorum_lost",
                    format!(
                        "pool {name}: {} of {total} control planes down ({names}); etcd quorum lost: not replacing; \
                         bring one back",
                        down.len()
                    ),
                ));
                return;
            }
            match choose_control_plane(state, pool, &fleet) {
                Some(id) => {
                    let with = describe(state, &id);
                    out.push(replace(
                        vec![id],
                        format!(
                            "{who}, replacing with {with}; etcd keeps quorum ({ready} of {total} control planes ready)"
                        ),
                    ));
                }
                None => out.extend(alert(
                    "no_replacement",
                    format!("{who}; no replacement control plane: no ready host is free in the fleet"),
                )),
            }
        }
    }
}

/// A fleet host for a new control plane: in the zone with the fewest of
/// the pool's other control planes, the smallest host there (big ones stay
/// for workers), ties by id.
pub fn choose_control_plane(state: &State, pool: &PoolRecord, fleet: &[Candidate]) -> Option<String> {
    let zones: Vec<String> = pool
        .members
        .values()
        .filter(|m| m.role == Role::ControlPlane && !member_down(state, m))
        .filter(|m| !matches!(m.state, MemberState::Replaced { .. }))
        .filter_map(|m| state.host(&m.host_id).map(|h| h.facts.zone.clone()))
        .collect();
    fleet
        .iter()
        .filter(|c| pool.spec.zones.allows(&c.zone))
        .min_by_key(|c| {
            (
                zones.iter().filter(|z| **z == c.zone).count(),
                c.cores,
                c.memory_bytes,
                c.host_id.clone(),
            )
        })
        .map(|c| c.host_id.clone())
}

/// The host that replaces the live control plane `host` of `pool` when
/// it is drained (placed like healing's replacements: the zone with the
/// fewest other control planes), or why the drain is refused (a failed
/// precondition, as text): a single control plane, `host` serving the pool's API endpoint (without a VIP), another control
/// plane not joined and ready, or no free host.
pub fn control_plane_replacement(sm: &State, pool: &PoolRecord, host: &HostRecord) -> Result<String, String> {
    let name = &pool.spec.name;
    let host_id = &host.host_id;
    let others: Vec<&Member> = pool
        .members
        .values()
        .filter(|m| m.role == Role::ControlPlane && m.host_id != *host_id)
        .collect();
    if others.is_empty() {
        return Err(format!(
            "host {host_id} is the only control plane of pool {name}: a 1-control-plane pool cannot lose its \
             only control plane; create the pool with 3 control planes"
        ));
    }
    // With a VIP the endpoint moves to another control plane (kube-vip's
    // leader election); without one it is this host's address.
    if pool.spec.vip.is_empty() && pool.control_plane_endpoint == endpoint(host) {
        return Err(format!(
            "host {host_id} serves the API endpoint {} of pool {name}: it cannot be drained (the pool has \
             no virtual IP to move the endpoint to; pools created with --vip, or with 3 or 5 control planes, \
             have one); drain another control plane",
            pool.control_plane_endpoint
        ));
    }
    for m in &others {
        let state = sm.host(&m.host_id).map(|h| h.state);
        if m.state != MemberState::Joined || state != Some(HostState::Ready) {
            return Err(format!(
                "control plane {} of pool {name} is {} (host {}): drain {host_id} once every other control \
                 plane is joined and ready",
                m.host_id,
                m.state.as_str(),
                state.map_or("unknown", |s| s.as_str())
            ));
        }
    }
    let mut rest = pool.clone();
    rest.members.remove(host_id);
    let fleet = candidates(sm);
    choose_control_plane(sm, &rest, &fleet).ok_or_else(|| {
        format!(
            "no replacement control plane for host {host_id}: no ready, uncordoned host is free in the fleet \
             ({} free)",
            fleet.len()
        )
    })
}

/// Resets for fenced hosts that are back (`ready`), and their retries.
pub fn plan_fences(state: &State, now: u64, out: &mut Vec<Command>) {
    for host in state.hosts().values() {
        let Some(fence) = &host.fenced else {
            continue;
        };
        if host.pool.is_some() || host.state != HostState::Ready {
            continue;
        }
        let resets: Vec<&TaskRecord> = state
            .tasks()
            .values()
            .filter(|t| t.host_id == host.host_id && t.kind == TaskKind::Reset)
            .collect();
        if resets.is_empty() {
            out.push(Command::IssueTask {
                task: TaskRecord {
                    task_id: format!(
                        "{}.reset.{}.fenced.{}",
                        fence.pool,
                        fence.node_name,
                        state.applied_index()
                    ),
                    host_id: host.host_id.clone(),
                    pool: fence.pool.clone(),
                    node_name: fence.node_name.clone(),
                    kind: TaskKind::Reset,
                    attempt: 1,
                    state: TaskState::Pending,
                    issued_at_unix_ms: now,
                    deadline_unix_ms: now + TaskKind::Reset.timeout_ms(),
                    retry_at_unix_ms: 0,
                    last_error: String::new(),
                },
            });
            continue;
        }
        for task in resets {
            if task.state == TaskState::Failed
                && task.attempt < MAX_TASK_ATTEMPTS
                && now >= task.retry_at_unix_ms
            {
                out.push(Command::IssueTask {
                    task: TaskRecord {
                        attempt: task.attempt + 1,
                        state: TaskState::Pending,
                        issued_at_unix_ms: now,
                        deadline_unix_ms: now + task.kind.timeout_ms(),
                        ..task.clone()
                    },
                });
            }
        }
    }
}

/// Pending tasks with no result [`EXPIRY_GRACE_MS`] after their deadline
/// fail (the agent enforces the deadline itself, so a live agent has
/// reported by then).
pub fn plan_expired(state: &State, now: u64, out: &mut Vec<Command>) {
    for task in state.tasks().values() {
        if task.state != TaskState::Pending || now <= task.deadline_unix_ms.saturating_add(EXPIRY_GRACE_MS) {
            continue;
        }
        let fenced = state.host(&task.host_id).is_some_and(|h| h.fenced.is_some());
        if !fenced && !state.pools().contains_key(&task.pool) {
            continue; // nothing would take the result
        }
        let host = state.host(&task.host_id).map_or("unknown", |h| h.state.as_str());
        out.push(Command::FinishTask {
            task_id: task.task_id.clone(),
            attempt: task.attempt,
            ok: false,
            error: format!(
                "no result {}s after the deadline (host {host}); given up by the controller",
                EXPIRY_GRACE_MS / 1_000
            ),
            join: None,
            kubeconfig: None,
            images: None,
            at_unix_ms: now,
        });
    }
}

#[cfg(test)]
mod tests {
    //! Healing decisions, driven purely like the planner's tests: a pool is
    //! built by running the planner and "agents", then hosts go down.
    use super::*;
    use crate::policy::testing::{GIB, World};
    use crate::state::command::tests::facts;

    /// A world whose hosts answer tasks only while they are ready.
    fn world(hosts: &[(&str, &str, u32)]) -> World {
        let mut w = World::new(hosts);
        w.only_ready_hosts_answer = true;
        w
    }

    impl World {
        fn members(&self) -> Vec<String> {
            self.pool().members.keys().cloned().collect()
        }

        fn alerts(&self) -> Vec<&crate::state::pool::Event> {
            self.sm
                .events()
                .iter()
                .filter(|e| e.severity == Severity::Alert)
                .collect()
        }
    }

    fn create(w: &mut World, control_planes: &[&str], workers: &[&str], cores: u64) {
        w.create(control_planes, workers, cores, GIB);
        w.settle();
        assert_eq!(w.pool().phase, PoolPhase::Ready, "{}", w.pool().phase_reason);
    }

    /// Three control planes in zones a/b/c, two workers, and a fleet.
    fn three_cp_world() -> World {
        let mut w = world(&[
            ("c1", "a", 4),
            ("c2", "b", 4),
            ("c3", "c", 4),
            ("w1", "a", 8),
            ("w2", "b", 8),
            ("w3", "c", 8),
            ("f1", "a", 4),
            ("f2", "c", 8),
            ("f3", "c", 16),
        ]);
        create(&mut w, &["c1", "c2", "c3"], &["w1", "w2", "w3"], 24);
        w
    }

    #[test]
    fn a_down_worker_is_replaced_joined_first_then_its_node_deleted_then_fenced() {
        let mut w = three_cp_world();
        w.set("w2", HostState::Down);
        // 16 cores left of 24 wanted: one 8-core host is missing; f2
        // covers it exactly (f3 would overshoot, f1 is too small).
        assert_eq!(w.plan(), vec!["replace w2 by f2"]);
        assert_eq!(w.pool().phase, PoolPhase::Healing);
        let event = w.sm.events().back().unwrap();
        assert_eq!(event.kind, "host_replacing");
        assert_eq!(
            event.message,
            "pool web: host w2 down (no heartbeat for 5.0s), replacing with f2 (zone c, 8c/64GiB)"
        );
        // The replacement joins first; the dead node is deleted only after.
        assert_eq!(w.plan(), vec!["join_worker@f2"]);
        assert!(w.plan().is_empty(), "no delete while the replacement joins");
        w.run_tasks();
        assert_eq!(w.plan(), vec!["delete_node@c1"]);
        w.run_tasks();
        assert!(!w.members().contains(&"w2".to_string()), "{:?}", w.members());
        let dead = w.sm.host("w2").unwrap();
        assert_eq!(dead.pool, None);
        assert_eq!(dead.fenced.as_ref().map(|f| f.pool.as_str()), Some("web"));
        w.plan();
        assert_eq!(w.pool().phase, PoolPhase::Ready, "{}", w.pool().phase_reason);
        // Replanning (e.g. a new leader) replaces nothing again.
        assert!(w.settle().is_empty());
        assert!(w.alerts().is_empty());
    }

    #[test]
    fn a_down_worker_whose_pool_is_still_covered_is_only_removed() {
        let mut w = world(&[("c1", "a", 4), ("w1", "a", 8), ("w2", "b", 8), ("f1", "a", 8)]);
        create(&mut w, &["c1"], &["w1", "w2"], 8);
        w.set("w2", HostState::Down);
        assert_eq!(w.plan(), vec!["replace w2 by "]);
        assert_eq!(w.plan(), vec!["delete_node@c1"]);
        w.run_tasks();
        assert_eq!(w.members(), vec!["c1", "w1"]);
    }

    #[test]
    fn a_down_control_plane_is_removed_from_etcd_and_deleted_before_its_replacement_joins() {
        let mut w = three_cp_world();
        // The first control plane (the usual kubectl runner) dies.
        w.set("c1", HostState::Down);
        // Zone a lost its control plane: the smallest free host of zone a.
        assert_eq!(w.plan(), vec!["replace c1 by f1"]);
        assert!(
            w.sm.events()
                .back()
                .unwrap()
                .message
                .contains("etcd keeps quorum (2 of 3"),
            "{}",
            w.sm.events().back().unwrap().message
        );
        // Runs on a healthy control plane, not on the dead one.
        assert_eq!(w.plan(), vec!["remove_etcd_member@c2"]);
        w.run_tasks();
        assert_eq!(w.plan(), vec!["delete_node@c2"]);
        w.run_tasks();
        assert!(!w.members().contains(&"c1".to_string()));
        assert_eq!(w.plan(), vec!["join_control_plane@f1"]);
        w.run_tasks();
        w.plan();
        assert_eq!(w.pool().phase, PoolPhase::Ready, "{}", w.pool().phase_reason);
        let m = &w.pool().members["f1"];
        assert_eq!((m.role, m.state), (Role::ControlPlane, MemberState::Joined));
    }

    #[test]
    fn lost_control_plane_quorum_degrades_the_pool_with_one_alert_and_no_task() {
        let mut w = three_cp_world();
        w.set("c1", HostState::Down);
        w.set("c2", HostState::Down);
        // Two of nine hosts is under a third, and 2 of 6 members under half.
        assert_eq!(w.plan(), vec!["alert quorum_lost"]);
        assert_eq!(w.pool().phase, PoolPhase::Degraded);
        assert!(
            w.pool()
                .phase_reason
                .contains("2 of 3 control planes down (c1, c2); etcd quorum lost"),
            "{}",
            w.pool().phase_reason
        );
        for _ in 0..3 {
            assert!(
                w.plan().is_empty(),
                "the alert is not repeated, nothing is issued"
            );
        }
        assert!(w.sm.tasks().is_empty());
        assert_eq!(w.alerts().len(), 1);
        // One comes back: quorum again, the other is replaced.
        w.set("c2", HostState::Ready);
        assert_eq!(w.plan(), vec!["replace c1 by f1"]);
    }

    #[test]
    fn a_suspect_control_plane_is_never_acted_on() {
        let mut w = three_cp_world();
        w.set("c1", HostState::Down);
        w.set("c2", HostState::Suspect);
        assert!(w.plan().is_empty(), "waits for the suspect to be judged");
        w.set("w1", HostState::Suspect);
        assert!(w.sm.tasks().is_empty());
    }

    #[test]
    fn a_storm_replaces_nothing_and_alerts_once_then_says_when_it_is_over() {
        let mut w = three_cp_world();
        for h in ["w1", "w2", "f1"] {
            w.set(h, HostState::Suspect);
        }
        w.set("w3", HostState::Down);
        // 4 of 9 hosts silent: more than a third.
        assert_eq!(w.plan(), vec!["alert storm"]);
        let alert = w.alerts()[0].clone();
        assert_eq!(
            alert.message,
            "storm: 4 of 9 hosts silent at once (> 34% of the fleet); not replacing; check the network"
        );
        for h in ["w1", "w2"] {
            w.set(h, HostState::Down);
        }
        for _ in 0..3 {
            assert!(w.plan().is_empty(), "one alert per storm, no replacement");
        }
        for h in ["w1", "w2", "w3", "f1"] {
            w.set(h, HostState::Ready);
        }
        assert_eq!(w.plan(), vec!["alert storm_over"]);
        assert!(w.plan().is_empty());
        assert_eq!(w.alerts().len(), 1);
        assert!(w.sm.tasks().is_empty());
    }

    #[test]
    fn long_dead_spares_do_not_make_a_storm_but_fresh_silence_does() {
        let mut w = three_cp_world();
        // Two spares died long ago...
        for h in ["f1", "f2"] {
            w.set(h, HostState::Down);
        }
        w.now += STALE_FLEET_SILENCE_MS + 1;
        // ...so one worker dying now is a failure to heal, not a storm.
        w.set("w1", HostState::Down);
        let seen = w.plan();
        assert!(
            !seen.iter().any(|s| s.contains("storm")),
            "stale spares raised a storm: {seen:?}"
        );
        assert!(seen.iter().any(|s| s.starts_with("replace")), "{seen:?}");
        // The same spares going silent together with it are a storm.
        let mut w = three_cp_world();
        for h in ["f1", "f2"] {
            w.set(h, HostState::Down);
        }
        w.set("w1", HostState::Down);
        w.set("w2", HostState::Down);
        assert_eq!(w.plan(), vec!["alert storm"]);
    }

    /// Six hosts in three zones and a pool on three of them; two of six
    /// silent is a storm (the fault suite's testbed), and a down member
    /// waits `settle_ms` before it is replaced.
    fn zoned_world() -> World {
        let mut w = world(&[
            ("c1", "b", 4),
            ("w1", "a", 8),
            ("w2", "c", 8),
            ("f1", "a", 8),
            ("f2", "b", 8),
            ("f3", "c", 8),
        ]);
        w.config = HealingConfig {
            storm_fleet_share: 0.3,
            ..HealingConfig::default()
        };
        create(&mut w, &["c1"], &["w1", "w2"], 16);
        w
    }

    #[test]
    fn a_down_member_is_replaced_only_once_it_has_been_down_for_settle_ms() {
        let mut w = zoned_world();
        assert_eq!(w.config.settle_ms, 3_000);
        w.set("w1", HostState::Down);
        assert!(w.plan().is_empty(), "just down: waits");
        w.now += 2_999;
        assert!(w.plan().is_empty(), "1 ms short of settle_ms: waits");
        w.now += 1;
        assert_eq!(w.plan(), vec!["replace w1 by f1"]);
    }

    #[test]
    fn a_leader_not_yet_judging_holds_replacements_back_and_plans_the_rest() {
        let mut w = zoned_world();
        w.set("w1", HostState::Down);
        w.now += 3_000;
        let held = crate::policy::planner::plan_replacing(&w.sm, w.now, &w.config, false);
        assert!(
            !held.iter().any(|c| matches!(c, Command::ReplaceMember { .. })),
            "{held:?}"
        );
        // The rest of the pool is planned as without healing (no storm here).
        let unhealed = HealingConfig {
            enabled: false,
            ..w.config
        };
        assert_eq!(held, crate::policy::planner::plan_with(&w.sm, w.now, &unhealed));
        assert_eq!(w.plan(), vec!["replace w1 by f1"], "judging again: replaced");
    }

    #[test]
    fn hosts_cut_off_together_but_silent_a_heartbeat_apart_are_one_storm() {
        // Zone a (w1, f1) is cut off at once; f1 had just sent a heartbeat,
        // so w1 turns down while f1 is still ready. Without the wait w1
        // would be replaced before f1's silence counted.
        let mut w = zoned_world();
        w.set("w1", HostState::Down);
        assert!(w.plan().is_empty());
        w.now += 1_500;
        w.set("f1", HostState::Suspect);
        assert_eq!(w.plan(), vec!["alert storm"]);
        w.now += 2_000;
        w.set("f1", HostState::Down);
        for _ in 0..3 {
            w.now += 5_000;
            assert!(w.plan().is_empty(), "nothing replaced in the storm");
        }
        for h in ["w1", "f1"] {
            w.set(h, HostState::Ready);
        }
        assert_eq!(w.plan(), vec!["alert storm_over"]);
        assert!(w.plan().is_empty());
        assert_eq!(w.members(), ["c1", "w1", "w2"]);
    }

    #[test]
    fn hosts_back_from_a_storm_a_heartbeat_apart_are_not_replaced() {
        // Zone a (w1, f1) comes back, f1 first: the storm is over while
        // w1, down for long, has not been heard from yet. It is not
        // replaced in the settle_ms after the storm's end...
        let mut w = zoned_world();
        w.set("w1", HostState::Down);
        w.set("f1", HostState::Down);
        assert_eq!(w.plan(), vec!["alert storm"]);
        w.now += 10_000;
        assert!(w.plan().is_empty(), "nothing replaced in the storm");
        w.set("f1", HostState::Ready);
        assert_eq!(
            w.plan(),
            vec!["alert storm_over"],
            "not replaced as the storm ends"
        );
        w.now += 2_999;
        assert!(
            w.plan().is_empty(),
            "1 ms short of settle_ms after the storm: waits"
        );
        w.set("w1", HostState::Ready);
        w.now += 10_000;
        assert!(w.plan().is_empty());
        assert_eq!(w.members(), ["c1", "w1", "w2"]);
        // ...and replaced once it has been, if it stays down.
        let mut w = zoned_world();
        w.set("w1", HostState::Down);
        w.set("f1", HostState::Down);
        assert_eq!(w.plan(), vec!["alert storm"]);
        w.now += 10_000;
        w.set("f1", HostState::Ready);
        assert_eq!(w.plan(), vec!["alert storm_over"]);
        w.now += 2_999;
        assert!(w.plan().is_empty());
        w.now += 1;
        assert_eq!(w.plan(), vec!["replace w1 by f1"]);
    }

    #[test]
    fn half_of_a_pool_silent_is_a_storm_even_in_a_big_fleet() {
        let mut w = world(&[
            ("c1", "a", 4),
            ("w1", "a", 8),
            ("w2", "b", 8),
            ("f1", "a", 8),
            ("f2", "a", 8),
            ("f3", "a", 8),
            ("f4", "a", 8),
            ("f5", "a", 8),
        ]);
        create(&mut w, &["c1"], &["w1", "w2"], 16);
        w.set("w1", HostState::Down);
        w.set("w2", HostState::Down);
        let seen = w.plan();
        assert_eq!(seen, vec!["alert storm"]);
        assert!(
            w.alerts()[0].message.contains("2 of 3 members of pool web"),
            "{:?}",
            w.alerts()
        );
    }

    #[test]
    fn no_fit_degrades_with_what_is_missing_and_is_retried_when_the_fleet_changes() {
        let mut w = world(&[("c1", "a", 4), ("w1", "a", 8), ("w2", "b", 8), ("w3", "b", 8)]);
        create(&mut w, &["c1"], &["w1", "w2", "w3"], 24);
        w.set("w3", HostState::Down);
        assert_eq!(w.plan(), vec!["alert no_replacement"]);
        assert_eq!(w.pool().phase, PoolPhase::Degraded);
        assert!(
            w.pool()
                .phase_reason
                .contains("no replacement worker fits: requested 8 cores"),
            "{}",
            w.pool().phase_reason
        );
        assert!(w.plan().is_empty(), "deduplicated");
        // A new host arrives: the next round places it.
        let mut f = facts("f9", 8);
        f.zone = "c".into();
        w.apply(Command::RegisterHost {
            host_id: "f9".into(),
            agent_version: "0.1.0".into(),
            facts: f,
            at_unix_ms: 2,
        });
        assert_eq!(w.plan(), vec!["replace w3 by f9"]);
        w.settle();
        assert_eq!(w.pool().phase, PoolPhase::Ready, "{}", w.pool().phase_reason);
    }

    #[test]
    fn a_fenced_host_is_reset_when_it_returns_and_never_placed_before() {
        let mut w = three_cp_world();
        w.set("w2", HostState::Down);
        w.settle();
        assert!(w.sm.host("w2").unwrap().fenced.is_some());
        // While fenced it is not a candidate, even once ready.
        w.set("w2", HostState::Ready);
        assert!(candidates(&w.sm).iter().all(|c| c.host_id != "w2"));
        let index = w.sm.applied_index() + 1;
        let err =
            w.sm.apply(
                index,
                &Command::ResizePool {
                    pool: "web".into(),
                    cores: 32,
                    memory_bytes: GIB,
                    add: vec!["w2".into()],
                    release: vec![],
                    lb_range: None,
                    at_unix_ms: w.now,
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("not reset yet"), "{err}");
        // It is told to reset; once done it is back in the fleet.
        assert_eq!(w.plan(), vec!["reset@w2"]);
        assert!(w.plan().is_empty(), "one reset at a time");
        w.run_tasks();
        let host = w.sm.host("w2").unwrap();
        assert_eq!((host.pool.as_deref(), host.fenced.is_none()), (None, true));
        assert!(candidates(&w.sm).iter().any(|c| c.host_id == "w2"));
        assert!(w.sm.events().iter().any(|e| e.kind == "host_unfenced"));
    }

    #[test]
    fn tasks_of_a_replaced_host_are_dropped_and_reissued_on_a_healthy_one() {
        let mut w = three_cp_world();
        // c1 runs kubectl for a shrink; it dies before the drain is done.
        w.apply(Command::ResizePool {
            pool: "web".into(),
            cores: 16,
            memory_bytes: GIB,
            add: vec![],
            release: vec!["w3".into()],
            lb_range: None,
            at_unix_ms: w.now,
        });
        assert_eq!(w.plan(), vec!["drain_node@c1"]);
        w.set("c1", HostState::Down);
        assert_eq!(w.plan(), vec!["replace c1 by f1"]);
        assert!(
            w.sm.tasks().values().all(|t| t.host_id != "c1"),
            "{:?}",
            w.sm.tasks()
        );
        // The control plane is replaced first (its join holds the drain
        // back: replacements first), then the drain runs on c2.
        let all = w.settle();
        assert!(all.contains(&"drain_node@c2".to_string()), "{all:?}");
        assert!(!w.members().contains(&"w3".to_string()));
        assert_eq!(w.pool().phase, PoolPhase::Ready, "{}", w.pool().phase_reason);
    }

    #[test]
    fn a_task_with_no_result_long_after_its_deadline_fails() {
        let mut w = world(&[("c1", "a", 4), ("w1", "a", 8), ("w2", "a", 8)]);
        create(&mut w, &["c1"], &["w1"], 8);
        w.apply(Command::ResizePool {
            pool: "web".into(),
            cores: 16,
            memory_bytes: GIB,
            add: vec!["w2".into()],
            release: vec![],
            lb_range: None,
            at_unix_ms: w.now,
        });
        assert_eq!(w.plan(), vec!["join_worker@w2"]);
        w.now += TaskKind::JoinWorker.timeout_ms() + EXPIRY_GRACE_MS + 1;
        w.plan();
        let task = w.sm.tasks().values().next().unwrap();
        assert_eq!(task.state, TaskState::Failed);
        assert!(
            task.last_error.contains("given up by the controller"),
            "{}",
            task.last_error
        );
    }

    #[test]
    fn disabled_healing_decides_nothing() {
        let mut w = three_cp_world();
        w.config.enabled = false;
        w.set("w2", HostState::Down);
        assert!(w.plan().is_empty());
        assert_eq!(w.pool().phase, PoolPhase::Ready);
    }

    #[test]
    fn a_down_member_of_a_pool_being_destroyed_is_fenced_so_the_pool_can_go() {
        let mut w = world(&[("c1", "a", 4), ("w1", "a", 8), ("w2", "a", 8), ("w3", "a", 8)]);
        create(&mut w, &["c1"], &["w1", "w2", "w3"], 24);
        w.set("w1", HostState::Down);
        w.apply(Command::DestroyPool {
            pool: "web".into(),
            at_unix_ms: w.now,
        });
        w.settle();
        assert!(w.sm.pools().is_empty(), "{:?}", w.sm.pools());
        assert!(w.sm.host("w1").unwrap().fenced.is_some());
    }
}
