//! A pool's certificates in the state machine: the control planes'
//! nearest expiry (`ReportCerts`), the expiry alerts, and renewals
//! (`RenewCerts`, advanced as its tasks finish; the order is
//! [`crate::policy::certs`]').
//!
//! Alerts: when the pool's nearest expiry is 30 days away or less an
//! alert event (`cert_expiry`) is raised, and again at 7 days; the most
//! severe one raised is in `PoolRecord::cert_alerted_days`, so each is
//! raised once, whoever leads. Once the nearest expiry is more than 30
//! days away again (renewed), it is reset.

use rpool_proto::clock::format_utc as format_unix_ms;

use super::{Builder, refused};
use crate::state::command::CertReportEntry;
use crate::state::pool::{
    CertRenewal, MAX_TASK_ATTEMPTS, MemberCerts, MemberState, PoolPhase, PoolRecord, Role, Severity,
    TaskKind, TaskRecord, TaskState,
};
use crate::state::{ApplyError, ApplyOutcome, Change, More, State};

const DAY_MS: u64 = 86_400_000;
/// Alert thresholds, in days, least severe first.
pub const ALERT_DAYS: [u32; 2] = [30, 7];

/// The most severe threshold `expires_unix_ms` is within at `now`: 30, 7
/// or 0.
pub fn alert_level(expires_unix_ms: u64, now_unix_ms: u64) -> u32 {
    let left = expires_unix_ms.saturating_sub(now_unix_ms);
    ALERT_DAYS
        .iter()
        .rev()
        .copied()
        .find(|d| left <= u64::from(*d) * DAY_MS)
        .unwrap_or(0)
}

/// Whole days from `now` to `expires` (negative once expired).
pub fn days_left(expires_unix_ms: u64, now_unix_ms: u64) -> i64 {
    (expires_unix_ms as i64 - now_unix_ms as i64).div_euclid(DAY_MS as i64)
}

/// Whether `pool.cert_alerted_days` should change at `now`.
pub fn alert_due(pool: &PoolRecord, now_unix_ms: u64) -> bool {
    let level = pool
        .nearest_cert()
        .map_or(0, |(_, c)| alert_level(c.expires_unix_ms, now_unix_ms));
    next_alert(pool.cert_alerted_days, level).is_some()
}

/// The new `cert_alerted_days` for `level`, when it changes.
fn next_alert(alerted: u32, level: u32) -> Option<u32> {
    match level {
        0 if alerted != 0 => Some(0),
        0 => None,
        l if alerted == 0 || l < alerted => Some(l),
        _ => None,
    }
}

/// Whether `task` is a renewal step of `pool`.
pub fn is_renewal_task(pool: &PoolRecord, task: &TaskRecord) -> bool {
    pool.cert_renewal.is_some() && task.kind == TaskKind::RenewCerts
}

/// Joined control planes renewed, and joined control planes.
pub fn renewal_progress(pool: &PoolRecord) -> (usize, usize) {
    let Some(r) = &pool.cert_renewal else {
        return (0, 0);
    };
    let cps: Vec<&str> = pool
        .members
        .values()
        .filter(|m| m.role == Role::ControlPlane && m.state == MemberState::Joined)
        .map(|m| m.host_id.as_str())
        .collect();
    let done = cps.iter().filter(|h| r.done.contains(**h)).count();
    (done, cps.len())
}

impl State {
    pub(super) fn report_certs(
        &self,
        index: u64,
        name: &str,
        reports: &[CertReportEntry],
        at_unix_ms: u64,
    ) -> Result<Change, ApplyError> {
        let Some(mut pool) = self.pools.get(name).cloned() else {
            return Err(ApplyError::UnknownPool(name.to_owned()));
        };
        let mut b = Builder {
            index,
            at_unix_ms,
            more: More::default(),
        };
        let mut changed = false;
        for r in reports {
            let Some(member) = pool
                .members
                .get_mut(&r.host_id)
                .filter(|m| m.role == Role::ControlPlane)
            else {
                continue;
            };
            let new = MemberCerts {
                name: r.name.clone(),
                expires_unix_ms: r.expires_unix_ms,
            };
            if member.certs.as_ref() == Some(&new) {
                continue;
            }
            let renewed = member
                .certs
                .as_ref()
                .is_some_and(|old| new.expires_unix_ms > old.expires_unix_ms + DAY_MS);
            member.certs = Some(new);
            changed = true;
            if renewed {
                let host = self.hostname(&r.host_id);
                b.event(
                    name,
                    &r.host_id,
                    "cert_renewed",
                    format!(
                        "pool {name}: certificates of {host} renewed; the first to expire is now {} on {} ({} days)",
                        r.name,
                        format_unix_ms(r.expires_unix_ms),
                        days_left(r.expires_unix_ms, at_unix_ms)
                    ),
                );
            }
        }
        let nearest = pool.nearest_cert().map(|(h, c)| (h.to_owned(), c.clone()));
        let level = nearest
            .as_ref()
            .map_or(0, |(_, c)| alert_level(c.expires_unix_ms, at_unix_ms));
        if let Some(next) = next_alert(pool.cert_alerted_days, level) {
            pool.cert_alerted_days = next;
            changed = true;
            if let (Some((host_id, c)), true) = (&nearest, next != 0) {
                let host = self.hostname(host_id);
                b.event_with(
                    name,
                    host_id,
                    "cert_expiry",
                    Severity::Alert,
                    format!(
                        "pool {name}: certificate {} on {host} expires on {} ({} days left, under {next}); renew with `rpoolctl pool renew-certs {name}`",
                        c.name,
                        format_unix_ms(c.expires_unix_ms),
                        days_left(c.expires_unix_ms, at_unix_ms)
                    ),
                );
            }
        }
        if !changed {
            return Ok(Change::unchanged(index));
        }
        b.more.pools.push((name.to_owned(), Some(pool)));
        Ok(b.done(ApplyOutcome::Updated))
    }

    pub(super) fn renew_certs(&self, index: u64, name: &str, at_unix_ms: u64) -> Result<Change, ApplyError> {
        let mut pool = self.pool_for_change(name)?;
        if let Some(r) = &pool.upgrade {
            return Err(refused(format!(
                "pool {name} is being upgraded from {} to {}; renew its certificates after the upgrade (kubeadm upgrade renews them too)",
                r.from, r.to
            )));
        }
        let mut b = Builder {
            index,
            at_unix_ms,
            more: More::default(),
        };
        if pool.cert_renewal.is_some() {
            // Resume: failed steps issued afresh.
            let failed: Vec<&TaskRecord> = self
                .tasks
                .values()
                .filter(|t| t.pool == name && t.state == TaskState::Failed && t.attempt >= MAX_TASK_ATTEMPTS)
                .filter(|t| is_renewal_task(&pool, t))
                .collect();
            if failed.is_empty() {
                return Ok(Change::unchanged(index));
            }
            for task in &failed {
                b.more.tasks.push((task.task_id.clone(), None));
                if let Some(member) = pool.members.get_mut(&task.host_id) {
                    member.last_error.clear();
                }
            }
            let others_failed = self.tasks.values().any(|t| {
                t.pool == name
                    && t.state == TaskState::Failed
                    && t.attempt >= MAX_TASK_ATTEMPTS
                    && !is_renewal_task(&pool, t)
            });
            if pool.phase == PoolPhase::Degraded && !others_failed {
                pool.phase = PoolPhase::Ready;
                pool.phase_reason = "renewing certificates (resumed)".to_owned();
            }
            b.event(
                name,
                "",
                "cert_renewal_resumed",
                format!(
                    "pool {name}: certificate renewal resumed ({} failed step(s) issued again)",
                    failed.len()
                ),
            );
            b.more.pools.push((name.to_owned(), Some(pool)));
            return Ok(b.done(ApplyOutcome::Updated));
        }
        if pool.phase != PoolPhase::Ready {
            return Err(refused(format!(
                "pool {name} is {} ({}); a certificate renewal starts only from ready",
                pool.phase.as_str(),
                pool.phase_reason
            )));
        }
        let cps = pool
            .members
            .values()
            .filter(|m| m.role == Role::ControlPlane && m.state == MemberState::Joined)
            .count();
        if cps == 0 {
            return Err(refused(format!("pool {name} has no joined control plane")));
        }
        pool.cert_renewal = Some(CertRenewal {
            started_at_unix_ms: at_unix_ms,
            done: Default::default(),
        });
        b.event(
            name,
            "",
            "cert_renewal_started",
            format!(
                "pool {name}: certificate renewal started ({cps} control plane(s), one at a time: kubeadm certs renew all, static pods restarted)"
            ),
        );
        b.more.pools.push((name.to_owned(), Some(pool)));
        Ok(b.done(ApplyOutcome::Updated))
    }

    /// A `renew_certs` task finished well: its control plane is done; the
    /// renewal ends with the last one.
    pub(super) fn renewal_on_done(&self, pool: &mut PoolRecord, task: &TaskRecord, b: &mut Builder) {
        if task.kind != TaskKind::RenewCerts {
            return;
        }
        let name = pool.spec.name.clone();
        let Some(r) = pool.cert_renewal.as_mut() else {
            return;
        };
        r.done.insert(task.host_id.clone());
        let (done, total) = renewal_progress(pool);
        let host = self.hostname(&task.host_id);
        b.event(
            &name,
            &task.host_id,
            "cert_renewal_step",
            format!(
                "pool {name}: certificates renewed on {host}, static pods restarted ({done}/{total} control planes)"
            ),
        );
        if done >= total {
            let started = pool.cert_renewal.take().map_or(0, |r| r.started_at_unix_ms);
            b.event(
                &name,
                "",
                "cert_renewal_done",
                format!(
                    "pool {name}: certificates renewed on all {total} control plane(s) in {}s",
                    b.at_unix_ms.saturating_sub(started) / 1000
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_their_changes() {
        let now = 1_000 * DAY_MS;
        assert_eq!(alert_level(now + 31 * DAY_MS, now), 0);
        assert_eq!(alert_level(now + 30 * DAY_MS, now), 30);
        assert_eq!(alert_level(now + 8 * DAY_MS, now), 30);
        assert_eq!(alert_level(now + 7 * DAY_MS, now), 7);
        assert_eq!(alert_level(now - DAY_MS, now), 7);
        assert_eq!(next_alert(0, 30), Some(30));
        assert_eq!(next_alert(30, 30), None);
        assert_eq!(next_alert(30, 7), Some(7));
        assert_eq!(next_alert(7, 30), None, "no step back while still close");
        assert_eq!(next_alert(0, 7), Some(7), "straight to 7: one alert");
        assert_eq!(next_alert(7, 0), Some(0));
        assert_eq!(days_left(now + 20 * DAY_MS + 5, now), 20);
        assert_eq!(days_left(now - 5, now), -1);
    }
}
