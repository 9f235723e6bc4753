//! Certificates of pools, decided: which expiry changes and alerts to
//! record, and which control plane renews next. Pure (time and the
//! agents' reports are arguments).
//!
//! - [`report_commands`]: the leader compares each joined control plane's
//!   reported nearest certificate (agents send `kubeadm certs
//!   check-expiration` results in heartbeats) with the pool record, and
//!   proposes `ReportCerts` only when one differs or the pool's nearest
//!   expiry crossed an alert threshold (30, 7 days) not yet recorded, so
//!   nothing is proposed while nothing changes.
//! - [`plan`]: a renewal (`rpoolctl pool renew-certs`) goes through the
//!   joined control planes one at a time in join order: `renew_certs` on
//!   the next one once the previous finished; nothing while members join
//!   or leave, nothing once a step failed for good (the pool is
//!   `degraded` until an admin runs the command again).

use rpool_proto::v1;

use crate::state::State;
use crate::state::command::{CertReportEntry, Command};
use crate::state::pool::{
    MAX_TASK_ATTEMPTS, MemberState, PoolPhase, PoolRecord, Role, TaskKind, TaskRecord, TaskState,
};
use crate::state::pool_apply::certs::alert_due;

/// The nearest certificate of one report.
pub fn nearest(report: &v1::CertReport) -> Option<&v1::CertExpiry> {
    report.certs.iter().min_by_key(|c| c.expires_unix_ms)
}

/// `ReportCerts` for each pool where a control plane's reported nearest
/// certificate differs from the record, or an alert is due at `now`.
pub fn report_commands<'a>(
    state: &State,
    reported: impl Fn(&str) -> Option<&'a v1::CertReport>,
    now_unix_ms: u64,
) -> Vec<Command> {
    let mut out = Vec::new();
    for (name, pool) in state.pools() {
        if pool.phase == PoolPhase::Deleting {
            continue;
        }
        let mut reports = Vec::new();
        for m in pool.members.values() {
            if m.role != Role::ControlPlane || m.state != MemberState::Joined {
                continue;
            }
            let Some(c) = reported(&m.host_id).and_then(nearest) else {
                continue;
            };
            let same = m
                .certs
                .as_ref()
                .is_some_and(|r| r.name == c.name && r.expires_unix_ms == c.expires_unix_ms);
            if !same {
                reports.push(CertReportEntry {
                    host_id: m.host_id.clone(),
                    name: c.name.clone(),
                    expires_unix_ms: c.expires_unix_ms,
                });
            }
        }
        if !reports.is_empty() || alert_due(pool, now_unix_ms) {
            out.push(Command::ReportCerts {
                pool: name.clone(),
                reports,
                at_unix_ms: now_unix_ms,
            });
        }
    }
    out
}

/// The renewal's next task for `pool` through `issue(host_id, kind)`.
pub fn plan(pool: &PoolRecord, tasks: &[&TaskRecord], issue: &mut dyn FnMut(&str, TaskKind)) {
    let Some(renewal) = &pool.cert_renewal else {
        return;
    };
    if matches!(pool.phase, PoolPhase::Degraded | PoolPhase::Deleting) {
        return;
    }
    let renewing = tasks.iter().any(|t| t.kind == TaskKind::RenewCerts);
    let stopped = tasks.iter().any(|t| {
        t.kind == TaskKind::RenewCerts && t.state == TaskState::Failed && t.attempt >= MAX_TASK_ATTEMPTS
    });
    let moving = pool.members.values().any(|m| m.state != MemberState::Joined);
    if renewing || stopped || moving {
        return;
    }
    if let Some(next) = pool
        .members
        .values()
        .filter(|m| m.role == Role::ControlPlane && m.state == MemberState::Joined)
        .filter(|m| !renewal.done.contains(&m.host_id))
        .min_by_key(|m| m.order)
    {
        issue(&next.host_id, TaskKind::RenewCerts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{GIB, POOL, World};

    const DAY: u64 = 86_400_000;

    fn pool_of(cps: &[&str], workers: &[&str]) -> World {
        let hosts: Vec<(&str, &str, u32)> = cps.iter().chain(workers).map(|h| (*h, "a", 8)).collect();
        let mut w = World::new(&hosts);
        w.create(cps, workers, 8, GIB);
        w.settle_idle();
        assert_eq!(w.pool().phase, PoolPhase::Ready);
        w
    }

    fn report(expires: &[(&str, u64)]) -> std::collections::BTreeMap<String, v1::CertReport> {
        expires
            .iter()
            .map(|(h, e)| {
                (
                    (*h).to_owned(),
                    v1::CertReport {
                        certs: vec![
                            v1::CertExpiry {
                                name: "ca".into(),
                                expires_unix_ms: e + 3000 * DAY,
                                authority: true,
                            },
                            v1::CertExpiry {
                                name: "apiserver".into(),
                                expires_unix_ms: *e,
                                authority: false,
                            },
                        ],
                        checked_at_unix_ms: 0,
                    },
                )
            })
            .collect()
    }

    /// Proposes what the leader would at `now` and applies it; returns how
    /// many commands were proposed.
    fn tick(w: &mut World, reports: &std::collections::BTreeMap<String, v1::CertReport>, now: u64) -> usize {
        let commands = report_commands(&w.sm, |h| reports.get(h), now);
        let n = commands.len();
        for c in commands {
            w.apply(c);
        }
        n
    }

    fn alerts(w: &World) -> Vec<String> {
        w.sm.events()
            .iter()
            .filter(|e| e.kind == "cert_expiry")
            .map(|e| e.message.clone())
            .collect()
    }

    #[test]
    fn alerts_fire_once_at_30_and_7_days_and_reset_after_a_renewal() {
        let mut w = pool_of(&["h1", "h2"], &["w1"]);
        let now = 10_000 * DAY;
        let year = now + 365 * DAY;
        let r = report(&[("h1", year), ("h2", year + DAY)]);
        assert_eq!(tick(&mut w, &r, now), 1);
        let (host, nearest) = w.pool().nearest_cert().unwrap();
        assert_eq!((host, nearest.name.as_str()), ("h1", "apiserver"));
        assert_eq!(
            tick(&mut w, &r, now + 1000),
            0,
            "nothing changed: nothing proposed"
        );
        assert!(alerts(&w).is_empty());
        // Time passes: 29 days left.
        let t30 = year - 29 * DAY;
        assert_eq!(tick(&mut w, &r, t30), 1);
        assert_eq!(alerts(&w).len(), 1);
        assert!(
            alerts(&w)[0].contains("certificate apiserver on h1 expires"),
            "{:?}",
            alerts(&w)
        );
        assert!(
            alerts(&w)[0].contains("29 days left, under 30"),
            "{:?}",
            alerts(&w)
        );
        for later in [t30 + 1, t30 + DAY, t30 + 10 * DAY] {
            assert_eq!(tick(&mut w, &r, later), 0, "once per threshold");
        }
        // The same command again (a new leader re-proposing) changes nothing.
        let before = w.sm.events().len();
        let again = Command::ReportCerts {
            pool: POOL.into(),
            reports: vec![],
            at_unix_ms: t30 + 2 * DAY,
        };
        w.apply(again);
        assert_eq!(w.sm.events().len(), before);
        let t7 = year - 6 * DAY;
        assert_eq!(tick(&mut w, &r, t7), 1);
        assert_eq!(alerts(&w).len(), 2);
        assert!(alerts(&w)[1].contains("under 7"), "{:?}", alerts(&w));
        assert_eq!(tick(&mut w, &r, t7 + DAY), 0);
        let alert =
            w.sm.events()
                .iter()
                .rev()
                .find(|e| e.kind == "cert_expiry")
                .unwrap();
        assert_eq!(alert.severity.as_str(), "alert");
        // Renewed on both: info events, thresholds reset, no alert.
        let renewed = report(&[("h1", t7 + 365 * DAY), ("h2", t7 + 365 * DAY)]);
        assert_eq!(tick(&mut w, &renewed, t7 + DAY), 1);
        assert_eq!(w.pool().cert_alerted_days, 0);
        let renewals = w.sm.events().iter().filter(|e| e.kind == "cert_renewed").count();
        assert_eq!(renewals, 2);
        assert_eq!(alerts(&w).len(), 2);
    }

    #[test]
    fn renewal_goes_one_control_plane_at_a_time_and_an_upgrade_waits() {
        let mut w = pool_of(&["h1", "h2", "h3"], &["w1"]);
        w.apply(Command::RenewCerts {
            pool: POOL.into(),
            at_unix_ms: 5_000,
        });
        let refused =
            w.sm.apply(
                w.sm.applied_index() + 1,
                &Command::UpgradePool {
                    pool: POOL.into(),
                    version: "v1.33.0".into(),
                    max_unavailable: 1,
                    at_unix_ms: 6_000,
                },
            )
            .unwrap_err();
        assert!(
            refused.to_string().contains("is renewing its certificates"),
            "{refused}"
        );
        let mut order = Vec::new();
        for _ in 0..10 {
            w.plan();
            let pending: Vec<String> =
                w.sm.tasks()
                    .values()
                    .filter(|t| t.state == TaskState::Pending)
                    .map(|t| format!("{}@{}", t.kind.as_str(), t.host_id))
                    .collect();
            if pending.is_empty() {
                break;
            }
            assert_eq!(pending.len(), 1, "one at a time: {pending:?}");
            order.extend(pending);
            w.run_tasks();
        }
        assert_eq!(order, vec!["renew_certs@h1", "renew_certs@h2", "renew_certs@h3"]);
        assert!(w.pool().cert_renewal.is_none());
        let kinds: Vec<&str> = w.sm.events().iter().map(|e| e.kind.as_str()).collect();
        assert!(kinds.contains(&"cert_renewal_started") && kinds.contains(&"cert_renewal_done"));
    }
}
