//! The autoscaling half of `AdminService`: `SetAutoscale` (validation and
//! the `SetAutoscale` command) and the leader's latest judgement merged
//! into `GetPool` answers.
//!
//! Accepted policies: `min_cores` and `max_cores` in 1..=1000000 with
//! min <= max; targets 1..=100 (%); windows and cooldown 1s..=24h. The
//! current worker capacity may be outside [min, max]: the autoscaler then
//! moves the pool into the range one host at a time (after the cooldown).

use rpool_proto::v1::{self, SetAutoscaleRequest};
use tonic::Status;

use crate::Shared;
use crate::api::validate::Invalid;
use crate::state::command::Command;
use crate::state::pool::AutoscalePolicy;
use rpool_proto::clock::unix_ms_now;

/// Worker cores a policy may name.
pub const CORES_MAX: u64 = 1_000_000;
/// Shortest and longest window or cooldown (ms): 1s..=24h.
pub const SPAN_MIN_MS: u64 = 1_000;
pub const SPAN_MAX_MS: u64 = 86_400_000;

fn range(field: String, value: impl std::fmt::Display, accepted: &str) -> Invalid {
    Invalid::new(field, format!("{value} is out of range (accepted {accepted})"))
}

/// Checks a policy from the wire; `None` (absent) turns autoscaling off.
pub fn policy(field: &str, policy: Option<&v1::AutoscalePolicy>) -> Result<Option<AutoscalePolicy>, Invalid> {
    let Some(p) = policy else {
        return Ok(None);
    };
    for (name, value) in [("min_cores", p.min_cores), ("max_cores", p.max_cores)] {
        if !(1..=CORES_MAX).contains(&value) {
            return Err(range(format!("{field}.{name}"), value, "1..=1000000"));
        }
    }
    if p.min_cores > p.max_cores {
        return Err(Invalid::new(
            format!("{field}.min_cores"),
            format!(
                "{} is above max_cores {} (accepted min_cores <= max_cores)",
                p.min_cores, p.max_cores
            ),
        ));
    }
    for (name, value) in [
        ("cpu_target_percent", p.cpu_target_percent),
        ("memory_target_percent", p.memory_target_percent),
    ] {
        if !(1..=100).contains(&value) {
            return Err(range(format!("{field}.{name}"), value, "1..=100"));
        }
    }
    for (name, value) in [
        ("up_window_ms", p.up_window_ms),
        ("down_window_ms", p.down_window_ms),
        ("cooldown_ms", p.cooldown_ms),
    ] {
        if !(SPAN_MIN_MS..=SPAN_MAX_MS).contains(&value) {
            return Err(range(
                format!("{field}.{name}"),
                value,
                "1000..=86400000, i.e. 1s..=24h",
            ));
        }
    }
    Ok(Some(AutoscalePolicy {
        min_cores: p.min_cores,
        max_cores: p.max_cores,
        cpu_target_percent: p.cpu_target_percent,
        memory_target_percent: p.memory_target_percent,
        up_window_ms: p.up_window_ms,
        down_window_ms: p.down_window_ms,
        cooldown_ms: p.cooldown_ms,
    }))
}

/// Validates what a follower can check before forwarding.
pub fn check(request: &SetAutoscaleRequest) -> Result<Option<AutoscalePolicy>, Invalid> {
    crate::api::admin::pools::pool_name("set_autoscale.name", &request.name)?;
    policy("set_autoscale.policy", request.policy.as_ref())
}

/// `SetAutoscale` on the leader.
pub(crate) async fn set(
    shared: &Shared,
    request: SetAutoscaleRequest,
    audit: &crate::state::audit::AuditRecord,
) -> Result<v1::Pool, Status> {
    let policy = check(&request)?;
    let name = request.name;
    if !shared.node.read(|sm| sm.pools().contains_key(&name)) {
        return Err(Status::not_found(format!("no pool named {name}")));
    }
    let mut audit = audit.clone().arg("pool", &name);
    match &policy {
        Some(p) => {
            audit.operation = "pool autoscale set".to_owned();
            audit = audit
                .arg("min_cores", p.min_cores)
                .arg("max_cores", p.max_cores)
                .arg("cpu_target_percent", p.cpu_target_percent)
                .arg("memory_target_percent", p.memory_target_percent)
                .arg("up_window_ms", p.up_window_ms)
                .arg("down_window_ms", p.down_window_ms)
                .arg("cooldown_ms", p.cooldown_ms);
        }
        None => audit.operation = "pool autoscale clear".to_owned(),
    }
    let command = audit.wrap(Command::SetAutoscale {
        pool: name.clone(),
        policy,
        at_unix_ms: unix_ms_now(),
    });
    match shared.node.propose(command).await {
        Ok(_) => {}
        Err(e) => {
            return Err(crate::api::status::propose_status(
                e,
                crate::api::status::Refusal::Precondition,
            ));
        }
    }
    shared
        .node
        .read(|sm| {
            sm.pools()
                .get(&name)
                .map(|p| crate::api::admin::pools::pool_view(sm, p, false))
        })
        .map(|p| with_status(shared, p))
        .ok_or_else(|| Status::not_found(format!("pool {name} is gone")))
}

/// `pool` with this leader's latest autoscaling judgement of it.
pub(crate) fn with_status(shared: &Shared, mut pool: v1::Pool) -> v1::Pool {
    if pool.autoscale.is_some() {
        let name = pool.spec.as_ref().map(|s| s.name.as_str()).unwrap_or_default();
        pool.autoscale_status = shared
            .autoscale
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .status(name)
            .map(|s| s.to_proto());
    }
    pool
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> v1::AutoscalePolicy {
        v1::AutoscalePolicy {
            min_cores: 16,
            max_cores: 64,
            cpu_target_percent: 70,
            memory_target_percent: 80,
            up_window_ms: 60_000,
            down_window_ms: 600_000,
            cooldown_ms: 300_000,
            last_scaled_at_unix_ms: 0,
        }
    }

    #[test]
    fn a_good_policy_passes_and_absent_means_off() {
        let p = policy("p", Some(&good())).unwrap().unwrap();
        assert_eq!((p.min_cores, p.max_cores, p.cooldown_ms), (16, 64, 300_000));
        assert_eq!(policy("p", None).unwrap(), None);
        let short = v1::AutoscalePolicy {
            up_window_ms: 1_000,
            down_window_ms: 1_000,
            cooldown_ms: 1_000,
            min_cores: 8,
            max_cores: 8,
            ..good()
        };
        assert!(policy("p", Some(&short)).is_ok());
    }

    #[test]
    fn bad_policies_name_the_field_and_the_accepted_range() {
        type Mutate = fn(&mut v1::AutoscalePolicy);
        let cases: [(Mutate, &str); 8] = [
            (
                |p| p.min_cores = 0,
                "set_autoscale.policy.min_cores: 0 is out of range (accepted 1..=1000000)",
            ),
            (
                |p| p.max_cores = 1_000_001,
                "set_autoscale.policy.max_cores: 1000001 is out of range (accepted 1..=1000000)",
            ),
            (
                |p| p.min_cores = 65,
                "set_autoscale.policy.min_cores: 65 is above max_cores 64 (accepted min_cores <= max_cores)",
            ),
            (
                |p| p.cpu_target_percent = 0,
                "set_autoscale.policy.cpu_target_percent: 0 is out of range (accepted 1..=100)",
            ),
            (
                |p| p.memory_target_percent = 101,
                "set_autoscale.policy.memory_target_percent: 101 is out of range (accepted 1..=100)",
            ),
            (
                |p| p.up_window_ms = 999,
                "set_autoscale.policy.up_window_ms: 999 is out of range (accepted 1000..=86400000, i.e. 1s..=24h)",
            ),
            (
                |p| p.down_window_ms = 86_400_001,
                "set_autoscale.policy.down_window_ms: 86400001 is out of range (accepted 1000..=86400000, i.e. 1s..=24h)",
            ),
            (
                |p| p.cooldown_ms = 0,
                "set_autoscale.policy.cooldown_ms: 0 is out of range (accepted 1000..=86400000, i.e. 1s..=24h)",
            ),
        ];
        for (mutate, want) in cases {
            let mut p = good();
            mutate(&mut p);
            let request = SetAutoscaleRequest {
                name: "web".to_owned(),
                policy: Some(p),
            };
            assert_eq!(check(&request).unwrap_err().to_string(), want);
        }
        let err = check(&SetAutoscaleRequest {
            name: "Web".to_owned(),
            policy: None,
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("set_autoscale.name: "), "{err}");
    }
}
