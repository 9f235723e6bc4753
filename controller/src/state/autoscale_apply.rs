//! How the autoscaling commands change the state machine (part of
//! [`State::plan`], pure like the rest of it).
//!
//! - `SetAutoscale` stores or removes a pool's policy (an `autoscale_set`
//!   event says which); the time of the last autoscaler change is kept.
//! - `AutoscalePool` is applied exactly as the equivalent `ResizePool`
//!   (same checks: hosts ready and in no pool, released hosts workers of
//!   the pool), then records the cooldown origin and an `autoscale` event
//!   with the decision's sentence. It is refused when the pool has no
//!   policy any more or is not `ready` (an admin resize, healing or a
//!   deletion got there first), so a stale decision changes nothing.

use crate::state::command::Command;
use crate::state::pool::{AutoscalePolicy, Event, PoolPhase};
use crate::state::{ApplyError, ApplyOutcome, Change, More, State};

/// `16..=64 worker cores, cpu target 70%, memory target 80%, up-window 1m,
/// down-window 10m, cooldown 5m`.
pub fn describe(policy: &AutoscalePolicy) -> String {
    use rpool_proto::units::format_span as span;
    format!(
        "{}..={} worker cores, cpu target {}%, memory target {}%, up-window {}, down-window {}, cooldown {}",
        policy.min_cores,
        policy.max_cores,
        policy.cpu_target_percent,
        policy.memory_target_percent,
        span(policy.up_window_ms),
        span(policy.down_window_ms),
        span(policy.cooldown_ms)
    )
}

impl State {
    pub(crate) fn plan_autoscale(&self, index: u64, command: &Command) -> Result<Change, ApplyError> {
        match command {
            Command::SetAutoscale {
                pool: name,
                policy,
                at_unix_ms,
            } => {
                let mut pool = self
                    .pools
                    .get(name)
                    .cloned()
                    .ok_or_else(|| ApplyError::UnknownPool(name.clone()))?;
                if pool.phase == PoolPhase::Deleting {
                    return Err(ApplyError::Refused(format!("pool {name} is being destroyed")));
                }
                if pool.autoscale.policy == *policy {
                    return Ok(Change::unchanged(index));
                }
                pool.autoscale.policy = *policy;
                let message = match policy {
                    Some(p) => format!("pool {name}: autoscaling on: {}", describe(p)),
                    None => format!("pool {name}: autoscaling off"),
                };
                Ok(Change {
                    index,
                    record: None,
                    more: More {
                        pools: vec![(name.clone(), Some(pool))],
                        events: vec![event(index, *at_unix_ms, name, "autoscale_set", message)],
                        ..More::default()
                    },
                    outcome: ApplyOutcome::Updated,
                })
            }
            Command::AutoscalePool {
                pool: name,
                cores,
                memory_bytes,
                add,
                release,
                why,
                at_unix_ms,
            } => {
                let pool = self
                    .pools
                    .get(name)
                    .ok_or_else(|| ApplyError::UnknownPool(name.clone()))?;
                if pool.autoscale.policy.is_none() {
                    return Err(ApplyError::Refused(format!(
                        "pool {name} has no autoscaling policy"
                    )));
                }
                if pool.phase != PoolPhase::Ready {
                    return Err(ApplyError::Refused(format!(
                        "pool {name} is {}; the autoscaler acts only on ready pools",
                        pool.phase.as_str()
                    )));
                }
                let resize = Command::ResizePool {
                    pool: name.clone(),
                    cores: *cores,
                    memory_bytes: *memory_bytes,
                    add: add.clone(),
                    release: release.clone(),
                    lb_range: None,
                    at_unix_ms: *at_unix_ms,
                };
                let mut change = self.plan_pool(index, &resize)?;
                for (n, record) in &mut change.more.pools {
                    if n == name
                        && let Some(record) = record
                    {
                        record.autoscale.last_scaled_at_unix_ms = *at_unix_ms;
                    }
                }
                let host_id = add.first().or(release.first()).cloned().unwrap_or_default();
                let mut e = event(index, *at_unix_ms, name, "autoscale", why.clone());
                e.host_id = host_id;
                change.more.events.insert(0, e);
                Ok(change)
            }
            _ => unreachable!("plan_autoscale is only called with autoscaling commands"),
        }
    }
}

fn event(index: u64, at_unix_ms: u64, pool: &str, kind: &str, message: String) -> Event {
    Event {
        index,
        at_unix_ms,
        pool: pool.to_owned(),
        host_id: String::new(),
        kind: kind.to_owned(),
        message,
        severity: Default::default(),
        audit: None,
    }
}
