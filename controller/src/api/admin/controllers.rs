//! The controller group as the admin API shows it: each member's own view
//! (asked of every peer at once, bounded), and the quorum probe that
//! `RemoveController` decides on.

use std::time::Duration;

use rpool_proto::v1::{self, ListControllersResponse, StatusRequest};

use super::AdminSvc;
use crate::Shared;
use crate::raft::node::RaftRole;

/// How long the leader waits for a peer's own status in ListControllers.
pub(super) const PEER_STATUS_TIMEOUT: Duration = Duration::from_secs(1);

impl AdminSvc {
    /// How many of `voters` answer a status call within
    /// `PEER_STATUS_TIMEOUT` in `term` (this controller counts itself
    /// without asking); all are asked at once.
    pub(super) async fn probe_quorum(&self, voters: &[u64], term: u64) -> usize {
        let asks: Vec<_> = voters
            .iter()
            .filter(|&&v| v != self.shared.config.id)
            .map(|&v| {
                let shared = self.shared.clone();
                let address = shared.address_of(v).unwrap_or_default();
                tokio::spawn(async move { peer_status(&shared, v, &address).await })
            })
            .collect();
        let mut answered = usize::from(voters.contains(&self.shared.config.id));
        for ask in asks {
            if let Ok(Some((_, peer_term, _, _))) = ask.await
                && peer_term == term
            {
                answered += 1;
            }
        }
        answered
    }

    /// The group as this leader sees it, with each member's own view.
    pub(super) async fn controllers(&self) -> ListControllersResponse {
        let status = self.shared.node.status();
        let mut members: Vec<u64> = status.voters.iter().chain(&status.learners).copied().collect();
        members.sort_unstable();
        let asks = members.iter().map(|&id| {
            let address = self.shared.address_of(id).unwrap_or_default();
            let learner = status.learners.contains(&id);
            let me = id == self.shared.config.id;
            let status = status.clone();
            let shared = self.shared.clone();
            async move {
                let own = if me {
                    Some((
                        status.role,
                        status.term,
                        status.commit_index,
                        status.applied_index,
                    ))
                } else {
                    peer_status(&shared, id, &address).await
                };
                let match_index = status.progress.get(&id).copied().unwrap_or_default();
                let (role, term, commit_index, applied_index) = match own {
                    Some((role, term, commit, applied)) => (
                        if learner {
                            "learner".to_owned()
                        } else {
                            role_name(role).to_owned()
                        },
                        term,
                        commit,
                        applied,
                    ),
                    None => ("unreachable".to_owned(), 0, 0, 0),
                };
                v1::Controller {
                    id,
                    address,
                    role,
                    term,
                    commit_index,
                    applied_index,
                    match_index,
                    lag: status.commit_index.saturating_sub(match_index),
                }
            }
        });
        // Ask every peer at once; each ask is bounded by PEER_STATUS_TIMEOUT.
        let tasks: Vec<_> = asks.map(tokio::spawn).collect();
        let mut controllers = Vec::with_capacity(tasks.len());
        for task in tasks {
            if let Ok(controller) = task.await {
                controllers.push(controller);
            }
        }
        ListControllersResponse {
            controllers,
            leader_id: status.leader_id,
        }
    }
}

/// A peer's own role, term, commit and applied index, if it answers.
async fn peer_status(shared: &Shared, id: u64, address: &str) -> Option<(RaftRole, u64, u64, u64)> {
    let ask = async {
        let mut client = crate::api::forward::admin_client(shared, id, address)
            .await
            .ok()?;
        let status = client.status(StatusRequest {}).await.ok()?.into_inner();
        Some((
            parse_role(&status.role),
            status.term,
            status.commit_index,
            status.applied_index,
        ))
    };
    tokio::time::timeout(PEER_STATUS_TIMEOUT, ask)
        .await
        .ok()
        .flatten()
}

/// The wire name of a Raft role.
pub fn role_name(role: RaftRole) -> &'static str {
    match role {
        RaftRole::Leader => "leader",
        RaftRole::Follower => "follower",
        RaftRole::Candidate => "candidate",
        RaftRole::PreCandidate => "pre-candidate",
    }
}

fn parse_role(name: &str) -> RaftRole {
    match name {
        "leader" => RaftRole::Leader,
        "candidate" => RaftRole::Candidate,
        "pre-candidate" => RaftRole::PreCandidate,
        _ => RaftRole::Follower,
    }
}
