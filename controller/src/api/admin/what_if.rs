//! `WhatIf`: what would happen if hosts, a zone or controllers went down
//! now. The leader copies its state (after the ReadIndex round the caller
//! ran), and [`crate::policy::what_if::simulate`] runs the planner on the
//! copy; the controller group's answer comes from asking the voters that
//! would be left, like `RemoveController`'s quorum probe. Nothing is
//! proposed and nothing changes.

use rpool_proto::v1::{self, WhatIfRequest, WhatIfResponse};
use tonic::Status;

use super::AdminSvc;
use super::controllers::PEER_STATUS_TIMEOUT;
use crate::api::validate::{self, Invalid, show};
use crate::policy::what_if::{Answer, simulate};
use crate::state::State;

/// Most hosts one question may name.
pub const MAX_HOSTS: usize = 1_000;
/// Most controllers one question may name (a group has at most 7 voters).
pub const MAX_CONTROLLERS: usize = 7;

/// Shape checks, before anything is read: exactly one of the three
/// questions, each id well formed.
pub(super) fn check(r: &WhatIfRequest) -> Result<(), Invalid> {
    let asked = usize::from(!r.host_ids.is_empty())
        + usize::from(!r.zone.is_empty())
        + usize::from(!r.controller_ids.is_empty());
    if asked != 1 {
        return Err(Invalid::new(
            "what_if",
            format!("{asked} questions asked (accepted exactly one of host_ids, zone, controller_ids)"),
        ));
    }
    if r.host_ids.len() > MAX_HOSTS {
        return Err(Invalid::new(
            "what_if.host_ids",
            format!("{} ids (accepted 1..={MAX_HOSTS})", r.host_ids.len()),
        ));
    }
    for (i, id) in r.host_ids.iter().enumerate() {
        validate::host_id_prefix(&format!("what_if.host_ids[{i}]"), id)?;
    }
    if !r.zone.is_empty() {
        validate::dns_label("what_if.zone", &r.zone)?;
    }
    if r.controller_ids.len() > MAX_CONTROLLERS {
        return Err(Invalid::new(
            "what_if.controller_ids",
            format!("{} ids (accepted 1..={MAX_CONTROLLERS})", r.controller_ids.len()),
        ));
    }
    for (i, id) in r.controller_ids.iter().enumerate() {
        validate::controller_id(&format!("what_if.controller_ids[{i}]"), *id)?;
    }
    Ok(())
}

/// The host ids the question names, each resolved on `sm`: NOT_FOUND for
/// an unknown id or an empty zone, INVALID_ARGUMENT for an ambiguous
/// prefix.
fn resolve_hosts(sm: &State, r: &WhatIfRequest) -> Result<Vec<String>, Status> {
    if !r.zone.is_empty() {
        let ids: Vec<String> = sm
            .hosts()
            .values()
            .filter(|h| h.facts.zone == r.zone)
            .map(|h| h.host_id.clone())
            .collect();
        if ids.is_empty() {
            let mut zones: Vec<&str> = sm.hosts().values().map(|h| h.facts.zone.as_str()).collect();
            zones.sort_unstable();
            zones.dedup();
            return Err(Status::not_found(format!(
                "what_if.zone: no host in zone {} (zones with hosts: {})",
                show(&r.zone),
                if zones.is_empty() {
                    "none".to_owned()
                } else {
                    zones.join(", ")
                }
            )));
        }
        return Ok(ids);
    }
    let mut ids = Vec::with_capacity(r.host_ids.len());
    for (i, prefix) in r.host_ids.iter().enumerate() {
        let matches: Vec<&str> = sm
            .hosts_with_prefix(prefix)
            .map(|h| h.host_id.as_str())
            .take(3)
            .collect();
        match matches.as_slice() {
            [] => {
                return Err(Status::not_found(format!(
                    "what_if.host_ids[{i}]: no host with id {prefix} (rpoolctl host list shows them)"
                )));
            }
            [one] => ids.push((*one).to_owned()),
            many if many.contains(&prefix.as_str()) => ids.push(prefix.clone()),
            many => {
                return Err(Status::invalid_argument(format!(
                    "what_if.host_ids[{i}]: prefix {} matches several hosts ({}, ...); accepted a full id or a \
                     unique prefix",
                    show(prefix),
                    many.join(", ")
                )));
            }
        }
    }
    Ok(ids)
}

impl AdminSvc {
    /// The answer, on the leader after its ReadIndex round.
    pub(super) async fn answer_what_if(&self, r: &WhatIfRequest) -> Result<WhatIfResponse, Status> {
        let status = self.shared.node.status();
        for (i, id) in r.controller_ids.iter().enumerate() {
            if !status.voters.contains(id) {
                let mut voters = status.voters.clone();
                voters.sort_unstable();
                return Err(Status::not_found(format!(
                    "what_if.controller_ids[{i}]: controller {id} is not a voting member (voters: {})",
                    voters.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let (copy, down) = self
            .shared
            .node
            .read(|sm| resolve_hosts(sm, r).map(|down| (sm.clone(), down)))?;
        let healing = self.shared.config.healing;
        let now = rpool_proto::clock::unix_ms_now();
        let answer = tokio::task::spawn_blocking(move || {
            let names = names(&copy);
            (simulate(copy, &healing, now, &down), names)
        })
        .await
        .map_err(|e| Status::internal(format!("what-if planning stopped: {e}")))?;
        let controllers = self.controllers_after(&r.controller_ids).await;
        let (_, _, down_after_ms) = self.shared.config.liveness.wire_ms();
        Ok(response(
            &answer.0,
            &answer.1,
            controllers,
            u64::from(down_after_ms) + self.shared.config.healing.settle_ms,
        ))
    }

    /// The group with `down` gone: the voters left are asked now.
    async fn controllers_after(&self, down: &[u64]) -> v1::WhatIfControllers {
        let status = self.shared.node.status();
        let left: Vec<u64> = status
            .voters
            .iter()
            .copied()
            .filter(|v| !down.contains(v))
            .collect();
        let reachable = self.probe_quorum(&left, status.term).await;
        let voters = status.voters.len();
        let quorum = voters / 2 + 1;
        let keeps = reachable >= quorum;
        let leader_down = down.contains(&status.id);
        let mut message = format!(
            "{reachable} of {voters} voters would answer (a quorum needs {quorum}, asked within {} ms): ",
            PEER_STATUS_TIMEOUT.as_millis()
        );
        if keeps {
            message.push_str("the group keeps its quorum");
            if leader_down {
                message.push_str(&format!(
                    "; the leader ({}) is among those down: a new one is elected and agents reconnect to it",
                    status.id
                ));
            }
        } else {
            message.push_str(
                "the group loses its quorum: no writes, no healing and no admin reads until enough controllers \
                 are back",
            );
        }
        let mut down = down.to_vec();
        down.sort_unstable();
        down.dedup();
        v1::WhatIfControllers {
            voters: narrow(voters),
            down,
            reachable_after: narrow(reachable),
            quorum: narrow(quorum),
            keeps_quorum: keeps,
            leader_down,
            message,
        }
    }
}

fn narrow(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What the answer needs to name hosts: id → (hostname, zone, pool, role).
type Names = std::collections::BTreeMap<String, (String, String, String, String)>;

fn names(sm: &State) -> Names {
    sm.hosts()
        .values()
        .map(|h| {
            let pool = h.pool.clone().unwrap_or_default();
            let role = sm
                .pools()
                .get(&pool)
                .and_then(|p| p.members.get(&h.host_id))
                .map_or("", |m| m.role.as_str());
            (
                h.host_id.clone(),
                (
                    h.facts.hostname.clone(),
                    h.facts.zone.clone(),
                    pool,
                    role.to_owned(),
                ),
            )
        })
        .collect()
}

fn hostname(names: &Names, id: &str) -> String {
    names.get(id).map_or_else(|| id.to_owned(), |n| n.0.clone())
}

/// The wire answer.
fn response(
    answer: &Answer,
    names: &Names,
    controllers: v1::WhatIfControllers,
    acts_after_ms: u64,
) -> WhatIfResponse {
    let mut hosts_down: Vec<v1::WhatIfHost> = answer
        .hosts_down
        .iter()
        .map(|id| {
            let (hostname, zone, pool, role) = names.get(id).cloned().unwrap_or_default();
            v1::WhatIfHost {
                host_id: id.clone(),
                hostname,
                zone,
                pool,
                role,
            }
        })
        .collect();
    hosts_down.sort_by(|a, b| (&a.zone, &a.hostname, &a.host_id).cmp(&(&b.zone, &b.hostname, &b.host_id)));
    let by_hostname = |ids: &[String]| {
        let mut ids = ids.to_vec();
        ids.sort_by_key(|id| (hostname(names, id), id.clone()));
        ids
    };
    let mut response = WhatIfResponse {
        hosts_down,
        storm: answer.storm.clone().unwrap_or_default(),
        pools: answer
            .pools
            .iter()
            .map(|p| v1::WhatIfPool {
                name: p.pool.clone(),
                members_down: by_hostname(&p.members_down),
                control_planes: narrow(p.control_planes),
                control_planes_down: narrow(p.control_planes_down),
                etcd_quorum_lost: p.etcd_quorum_lost,
                cores_requested: p.cores_requested,
                memory_requested_bytes: p.memory_requested,
                worker_cores_left: p.worker_cores_left,
                worker_memory_left_bytes: p.worker_memory_left,
                below_request: p.below_request,
                worker_cores_after: p.worker_cores_after,
                worker_memory_after_bytes: p.worker_memory_after,
                below_request_after: p.below_request_after,
                phase_after: p.phase_after.clone(),
                phase_reason_after: p.phase_reason_after.clone(),
            })
            .collect(),
        replacements: answer
            .replacements
            .iter()
            .map(|r| v1::WhatIfReplacement {
                pool: r.pool.clone(),
                host_id: r.host_id.clone(),
                hostname: hostname(names, &r.host_id),
                role: r.role.as_str().to_owned(),
                replacement_ids: r.replacements.clone(),
                replacement_hostnames: r.replacements.iter().map(|id| hostname(names, id)).collect(),
                why: r.why.clone(),
            })
            .collect(),
        held_back: answer
            .held_back
            .iter()
            .map(|h| v1::WhatIfHeldBack {
                pool: h.pool.clone(),
                host_id: h.host_id.clone(),
                hostname: hostname(names, &h.host_id),
                role: h.role.as_str().to_owned(),
                reason: h.reason.to_owned(),
                message: h.message.clone(),
            })
            .collect(),
        controllers: Some(controllers),
        acts_after_ms,
    };
    response
        .held_back
        .sort_by(|a, b| (&a.pool, &a.hostname, &a.host_id).cmp(&(&b.pool, &b.hostname, &b.host_id)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(hosts: &[&str], zone: &str, controllers: &[u64]) -> WhatIfRequest {
        WhatIfRequest {
            host_ids: hosts.iter().map(|s| s.to_string()).collect(),
            zone: zone.to_owned(),
            controller_ids: controllers.to_vec(),
        }
    }

    #[test]
    fn exactly_one_well_formed_question_is_accepted_and_errors_name_the_field() {
        assert!(check(&req(&["3f2a"], "", &[])).is_ok());
        assert!(check(&req(&[], "zone-b", &[])).is_ok());
        assert!(check(&req(&[], "", &[1, 2])).is_ok());
        let cases = [
            (
                req(&[], "", &[]),
                "what_if: 0 questions asked (accepted exactly one of",
            ),
            (req(&["3f2a"], "b", &[]), "what_if: 2 questions asked"),
            (req(&["3f2a", "zz"], "", &[]), "what_if.host_ids[1]: "),
            (
                req(&[], "Zone_B", &[]),
                "what_if.zone: \"Zone_B\" is not a DNS label",
            ),
            (req(&[], "", &[1, 0]), "what_if.controller_ids[1]: "),
            (
                req(&[], "", &[1, 2, 3, 4, 5, 6, 7, 8]),
                "what_if.controller_ids: 8 ids (accepted 1..=7)",
            ),
        ];
        for (r, want) in cases {
            let got = Status::from(check(&r).unwrap_err());
            assert_eq!(got.code(), tonic::Code::InvalidArgument, "{want}");
            assert!(
                got.message().starts_with(want),
                "{} (wanted {want})",
                got.message()
            );
        }
    }
}
