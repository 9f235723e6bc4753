//! etcd backups of pools in `AdminService` (not to be confused with
//! `backup.rs`, the controllers' own `SaveSnapshot`):
//!
//! - `BackupPool`: a healthy joined control plane (the one kubectl steps
//!   run on) is chosen and the `BackupPool` command proposed; it answers
//!   the record (`taking`). FAILED_PRECONDITION when none is healthy, the
//!   cluster is not up yet, or a snapshot is being taken.
//! - `ListPoolBackups`: the records, newest first, with the schedule.
//! - `SetPoolBackup`: the schedule and retention (ranges in
//!   [`crate::state::backups`]).

use rpool_proto::clock::unix_ms_now;
use rpool_proto::v1;
use tonic::Status;

use crate::Shared;
use crate::api::admin::pools::{pool_name, pool_view, refused};
use crate::api::validate::Invalid;
use crate::state::State;
use crate::state::audit::AuditRecord;
use crate::state::backups::{BackupRecord, check_schedule, effective_keep, next_due};
use crate::state::command::Command;
use crate::state::pool::{MemberState, PoolPhase, PoolRecord};

/// The wire form of a record of `pool`.
pub fn backup_view(state: &State, pool: &PoolRecord, r: &BackupRecord) -> v1::PoolBackup {
    let member = pool.members.get(&r.host_id);
    let host_gone = member.is_none_or(|m| matches!(m.state, MemberState::Replaced { .. }));
    let file = r.file.clone().unwrap_or_default();
    v1::PoolBackup {
        id: r.id.clone(),
        pool: pool.spec.name.clone(),
        host_id: r.host_id.clone(),
        hostname: state
            .host(&r.host_id)
            .map(|h| h.facts.hostname.clone())
            .unwrap_or_default(),
        node_name: r.node_name.clone(),
        state: r.state.as_str().to_owned(),
        kind: r.kind.as_str().to_owned(),
        path: file.path,
        size_bytes: file.size_bytes,
        sha256: file.sha256,
        revision: file.revision,
        total_keys: file.total_keys,
        requested_at_unix_ms: r.requested_at_unix_ms,
        taken_at_unix_ms: file.taken_at_unix_ms,
        host_gone,
        error: r.error.clone(),
    }
}

fn find_pool<'a>(sm: &'a State, name: &str) -> Result<&'a PoolRecord, Status> {
    sm.pools()
        .get(name)
        .ok_or_else(|| Status::not_found(format!("no pool named {name}")))
}

pub(crate) async fn backup(
    shared: &Shared,
    request: v1::BackupPoolRequest,
    audit: &AuditRecord,
) -> Result<v1::PoolBackup, Status> {
    pool_name("backup_pool.name", &request.name)?;
    let name = request.name;
    let host_id = shared.node.read(|sm| {
        let pool = find_pool(sm, &name)?;
        if pool.phase == PoolPhase::Deleting {
            return Err(Status::failed_precondition(format!(
                "pool {name} is being destroyed"
            )));
        }
        if pool.join.is_none() {
            return Err(Status::failed_precondition(format!(
                "pool {name} has no cluster yet ({}); an etcd snapshot needs a running control plane",
                pool.phase.as_str()
            )));
        }
        crate::policy::healing::healthy_runner(sm, pool)
            .map(|m| m.host_id.clone())
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "pool {name} has no healthy joined control plane to take an etcd snapshot on"
                ))
            })
    })?;
    let command = audit.clone().arg("pool", &name).wrap(Command::BackupPool {
        pool: name.clone(),
        host_id,
        scheduled: false,
        at_unix_ms: unix_ms_now(),
    });
    let index = shared.node.propose(command).await.map_err(refused)?;
    let id = format!("snap-{index}");
    shared
        .node
        .read(|sm| {
            let pool = sm.pools().get(&name)?;
            let record = pool.backups.records.iter().find(|r| r.id == id)?;
            Some(backup_view(sm, pool, record))
        })
        .ok_or_else(|| Status::unavailable(format!("etcd snapshot {id} of pool {name} was requested but is not visible yet; list it with `rpoolctl pool backups {name}`")))
}

pub(crate) fn list(
    shared: &Shared,
    request: &v1::ListPoolBackupsRequest,
) -> Result<v1::ListPoolBackupsResponse, Status> {
    pool_name("list_pool_backups.name", &request.name)?;
    shared.node.read(|sm| {
        let pool = find_pool(sm, &request.name)?;
        let mut records: Vec<&BackupRecord> = pool.backups.records.iter().collect();
        records.sort_by_key(|r| std::cmp::Reverse((r.requested_at_unix_ms, r.id.clone())));
        Ok(v1::ListPoolBackupsResponse {
            backups: records.into_iter().map(|r| backup_view(sm, pool, r)).collect(),
            interval_ms: pool.spec.backup_interval_ms,
            keep: if pool.spec.backup_interval_ms == 0 {
                pool.spec.backup_keep
            } else {
                effective_keep(pool.spec.backup_keep)
            },
            next_at_unix_ms: next_due(
                pool.spec.backup_interval_ms,
                pool.backups.anchor_unix_ms,
                pool.created_at_unix_ms,
            )
            .unwrap_or(0),
        })
    })
}

/// Shape checks of `SetPoolBackup`.
pub fn check_set(request: &v1::SetPoolBackupRequest) -> Result<(), Invalid> {
    pool_name("set_pool_backup.name", &request.name)?;
    check_schedule(request.interval_ms, request.keep).map_err(|(field, message)| {
        let field = match field {
            "backup_interval_ms" => "set_pool_backup.interval_ms",
            _ => "set_pool_backup.keep",
        };
        Invalid::new(field, message)
    })
}

pub(crate) async fn set(
    shared: &Shared,
    request: v1::SetPoolBackupRequest,
    audit: &AuditRecord,
) -> Result<v1::Pool, Status> {
    let name = request.name.clone();
    shared.node.read(|sm| find_pool(sm, &name).map(|_| ()))?;
    let command = audit
        .clone()
        .arg("pool", &name)
        .arg("interval_ms", request.interval_ms)
        .arg("keep", request.keep)
        .wrap(Command::SetPoolBackup {
            pool: name.clone(),
            interval_ms: request.interval_ms,
            keep: request.keep,
            at_unix_ms: unix_ms_now(),
        });
    shared.node.propose(command).await.map_err(refused)?;
    shared
        .node
        .read(|sm| sm.pools().get(&name).map(|p| pool_view(sm, p, false)))
        .ok_or_else(|| Status::not_found(format!("no pool named {name}")))
}
