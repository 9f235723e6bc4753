//! `AdminService.UpgradePool`: the request checked (shape here, the
//! version-skew rules against the pool on the leader), the plan answered,
//! and the `UpgradePool` command proposed (see [`crate::policy::upgrade`]).

use rpool_proto::clock::unix_ms_now;
use rpool_proto::v1;
use tonic::Status;

use crate::Shared;
use crate::api::admin::pools::{pool_name, pool_view, range, refused};
use crate::api::validate::Invalid;
use crate::kube::versions;
use crate::policy::upgrade::preview;
use crate::state::audit::AuditRecord;
use crate::state::command::Command;
use crate::state::pool::{PoolPhase, PoolRecord};
use crate::state::pool_apply::upgrade::{MAX_UNAVAILABLE_MAX, progress};

/// Shape checks, before anything is read or forwarded.
pub fn check(request: &v1::UpgradePoolRequest) -> Result<(), Invalid> {
    pool_name("upgrade_pool.name", &request.name)?;
    if request.max_unavailable > MAX_UNAVAILABLE_MAX {
        return Err(range(
            "upgrade_pool.max_unavailable",
            request.max_unavailable,
            "0 (1) or 1..=100",
        ));
    }
    if request.version.is_empty() {
        if !request.resume {
            return Err(Invalid::new(
                "upgrade_pool.version",
                format!(
                    "missing (accepted vMAJOR.MINOR.PATCH, {})",
                    versions::supported_range()
                ),
            ));
        }
        return Ok(());
    }
    // Syntax only: whether the version is allowed depends on the pool's
    // (the skew check names the next allowed version).
    versions::parse("upgrade_pool.version", &request.version)
        .map_err(|e| Invalid::new(e.field, e.message))?;
    Ok(())
}

/// The version and workers-at-once the call means for `pool`, or why not.
fn target(pool: &PoolRecord, request: &v1::UpgradePoolRequest) -> Result<(String, u32), Status> {
    let name = &pool.spec.name;
    let max_unavailable = request.max_unavailable.max(1);
    if let Some(rollout) = &pool.upgrade {
        if !request.version.is_empty() && request.version != rollout.to {
            return Err(Status::failed_precondition(format!(
                "pool {name} is being upgraded from {} to {}; finish or resume that upgrade first (rpoolctl pool upgrade {name} --resume)",
                rollout.from, rollout.to
            )));
        }
        return Ok((rollout.to.clone(), max_unavailable));
    }
    if request.resume {
        return Err(Status::failed_precondition(format!(
            "pool {name} has no upgrade to resume (it runs {})",
            pool.spec.kubernetes_version
        )));
    }
    let from = versions::parse("kubernetes_version", &pool.spec.kubernetes_version)
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    let to = versions::parse("upgrade_pool.version", &request.version)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    versions::check_upgrade(from, to)
        .map_err(|e| Status::failed_precondition(format!("pool {name}: upgrade_pool.version: {e}")))?;
    if pool.cert_renewal.is_some() {
        return Err(Status::failed_precondition(format!(
            "pool {name} is renewing its certificates; upgrade it once the renewal is done (rpoolctl pool show {name})"
        )));
    }
    if pool.phase != PoolPhase::Ready {
        return Err(Status::failed_precondition(format!(
            "pool {name} is {} ({}); an upgrade starts only from ready",
            pool.phase.as_str(),
            pool.phase_reason
        )));
    }
    Ok((to.to_string(), max_unavailable))
}

pub(crate) async fn upgrade(
    shared: &Shared,
    request: v1::UpgradePoolRequest,
    audit: &AuditRecord,
) -> Result<v1::UpgradePoolResponse, Status> {
    let name = request.name.clone();
    let (version, max_unavailable, steps, before) = shared.node.read(|sm| {
        let pool = sm
            .pools()
            .get(&name)
            .ok_or_else(|| Status::not_found(format!("no pool named {name}")))?;
        let (version, max_unavailable) = target(pool, &request)?;
        let steps = preview(pool, &version, max_unavailable)
            .into_iter()
            .map(|s| v1::UpgradePlanStep {
                wave: s.wave,
                host_id: s.host_id,
                node_name: s.node_name,
                role: s.role.as_str().to_owned(),
                from_version: s.from,
                to_version: s.to,
                actions: s.actions,
            })
            .collect::<Vec<_>>();
        Ok::<_, Status>((version, max_unavailable, steps, pool_view(sm, pool, false)))
    })?;
    if request.dry_run {
        return Ok(v1::UpgradePoolResponse {
            steps,
            pool: Some(before),
        });
    }
    let command = audit
        .clone()
        .arg("pool", &name)
        .arg("version", &version)
        .arg("max_unavailable", max_unavailable)
        .wrap(Command::UpgradePool {
            pool: name.clone(),
            version,
            max_unavailable,
            at_unix_ms: unix_ms_now(),
        });
    shared.node.propose(command).await.map_err(refused)?;
    let pool = shared
        .node
        .read(|sm| sm.pools().get(&name).map(|p| pool_view(sm, p, true)));
    Ok(v1::UpgradePoolResponse { steps, pool })
}

/// The upgrade fields of a pool's view (members' empty versions filled in
/// by [`fill_versions`]).
pub fn pool_fields(pool: &PoolRecord) -> v1::Pool {
    v1::Pool {
        upgrade: pool.upgrade.as_ref().map(|r| {
            let (done, total) = progress(pool);
            v1::UpgradeStatus {
                from_version: r.from.clone(),
                to_version: r.to.clone(),
                max_unavailable: r.max_unavailable,
                members_done: done as u32,
                members_total: total as u32,
                started_at_unix_ms: r.started_at_unix_ms,
            }
        }),
        ..Default::default()
    }
}

/// Members' versions ("" in old records: the pool's) and upgrade steps.
pub fn fill_versions(pool: &PoolRecord, view: &mut v1::Pool) {
    for m in &mut view.members {
        if let Some(member) = pool.members.get(&m.host_id) {
            m.kubernetes_version = pool.member_version(member).to_owned();
            m.upgrade_step = pool
                .upgrade
                .as_ref()
                .and_then(|r| r.steps.get(&m.host_id))
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
        }
    }
}
