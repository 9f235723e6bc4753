//! `AdminService.RenewCerts` (the `RenewCerts` command proposed; see
//! [`crate::policy::certs`]) and the certificate fields of a pool's view.

use rpool_proto::clock::unix_ms_now;
use rpool_proto::v1;
use tonic::Status;

use crate::Shared;
use crate::api::admin::pools::{pool_name, pool_view, refused};
use crate::api::validate::Invalid;
use crate::state::State;
use crate::state::audit::AuditRecord;
use crate::state::command::Command;
use crate::state::pool::{MemberState, PoolPhase, PoolRecord, Role};
use crate::state::pool_apply::certs::{days_left, renewal_progress};

/// What runs on each control plane.
pub const ACTIONS: &str = "kubeadm certs renew all; move the etcd, kube-apiserver, kube-controller-manager and kube-scheduler manifests out of /etc/kubernetes/manifests and back (static pods restarted); wait for the API server; read the expiry again";

/// Shape checks, before anything is read or forwarded.
pub fn check(request: &v1::RenewCertsRequest) -> Result<(), Invalid> {
    pool_name("renew_certs.name", &request.name)
}

fn precheck(pool: &PoolRecord) -> Result<(), Status> {
    let name = &pool.spec.name;
    if let Some(r) = &pool.upgrade {
        return Err(Status::failed_precondition(format!(
            "pool {name} is being upgraded from {} to {}; renew its certificates after the upgrade (kubeadm upgrade renews them too)",
            r.from, r.to
        )));
    }
    if pool.cert_renewal.is_none() && pool.phase != PoolPhase::Ready {
        return Err(Status::failed_precondition(format!(
            "pool {name} is {} ({}); a certificate renewal starts only from ready",
            pool.phase.as_str(),
            pool.phase_reason
        )));
    }
    Ok(())
}

pub(crate) async fn renew(
    shared: &Shared,
    request: v1::RenewCertsRequest,
    audit: &AuditRecord,
) -> Result<v1::RenewCertsResponse, Status> {
    let name = request.name.clone();
    let (hosts, before) = shared.node.read(|sm| {
        let pool = sm
            .pools()
            .get(&name)
            .ok_or_else(|| Status::not_found(format!("no pool named {name}")))?;
        precheck(pool)?;
        let mut cps: Vec<_> = pool
            .members
            .values()
            .filter(|m| m.role == Role::ControlPlane && m.state == MemberState::Joined)
            .filter(|m| {
                pool.cert_renewal
                    .as_ref()
                    .is_none_or(|r| !r.done.contains(&m.host_id))
            })
            .collect();
        cps.sort_by_key(|m| m.order);
        let hosts = cps
            .iter()
            .map(|m| {
                sm.host(&m.host_id)
                    .map_or_else(|| m.host_id.clone(), |h| h.facts.hostname.clone())
            })
            .collect::<Vec<_>>();
        Ok::<_, Status>((hosts, pool_view(sm, pool, false)))
    })?;
    if request.dry_run {
        return Ok(v1::RenewCertsResponse {
            hosts,
            actions: ACTIONS.to_owned(),
            pool: Some(before),
        });
    }
    let command = audit.clone().arg("pool", &name).wrap(Command::RenewCerts {
        pool: name.clone(),
        at_unix_ms: unix_ms_now(),
    });
    shared.node.propose(command).await.map_err(refused)?;
    let pool = shared
        .node
        .read(|sm| sm.pools().get(&name).map(|p| pool_view(sm, p, true)));
    Ok(v1::RenewCertsResponse {
        hosts,
        actions: ACTIONS.to_owned(),
        pool,
    })
}

/// The certificate fields of `view` (members' nearest, the pool's).
pub fn fill(state: &State, pool: &PoolRecord, view: &mut v1::Pool, now_unix_ms: u64) {
    for m in &mut view.members {
        if let Some(c) = pool.members.get(&m.host_id).and_then(|x| x.certs.as_ref()) {
            m.nearest_cert = Some(v1::CertExpiry {
                name: c.name.clone(),
                expires_unix_ms: c.expires_unix_ms,
                authority: matches!(c.name.as_str(), "ca" | "etcd-ca" | "front-proxy-ca"),
            });
        }
    }
    let renewal = pool.cert_renewal.as_ref().map(|r| {
        let (done, total) = renewal_progress(pool);
        v1::CertRenewalStatus {
            control_planes_done: done as u32,
            control_planes_total: total as u32,
            started_at_unix_ms: r.started_at_unix_ms,
        }
    });
    let nearest = pool.nearest_cert();
    if nearest.is_none() && renewal.is_none() {
        return;
    }
    let mut status = v1::CertStatus {
        alerted_days: pool.cert_alerted_days,
        renewal,
        ..Default::default()
    };
    if let Some((host_id, c)) = nearest {
        status.name = c.name.clone();
        status.host_id = host_id.to_owned();
        status.hostname = state
            .host(host_id)
            .map_or_else(|| host_id.to_owned(), |h| h.facts.hostname.clone());
        status.expires_unix_ms = c.expires_unix_ms;
        status.days_left = days_left(c.expires_unix_ms, now_unix_ms);
    }
    view.certificates = Some(status);
}
