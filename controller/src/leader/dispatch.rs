//! The leader's side of tasks: the planner loop and delivery to agents.
//!
//! 1. Every [`PLAN_EVERY`], while this controller leads, after a ReadIndex
//!    barrier (so it plans on everything committed, including what an
//!    earlier leader proposed), run [`crate::policy::planner::plan`] and propose its
//!    commands one by one.
//! 2. Deliver every pending task whose host has a session here and that
//!    this session has not been sent yet (a new session, e.g. after a
//!    leader change, gets its pending tasks again: the agent deduplicates).
//!
//! Results coming back are the API's part: [`crate::api::task_result`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rpool_proto::v1::{self, ControllerMessage, controller_message};
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{debug, warn};

use crate::Shared;
use crate::kube::kube_vip::Kubeconfig;
use crate::kube::render::{self, HostFacts, JoinFacts, PoolFacts};
use crate::replica::ProposeError;
use crate::state::pool::{JoinSecrets, TaskKind, TaskRecord, TaskState};
use rpool_proto::clock::unix_ms_now;

/// How often the planner runs on the leader.
pub const PLAN_EVERY: Duration = Duration::from_millis(200);

/// One message on an agent session's outbound queue. Boxed: a tokio mpsc
/// channel allocates its first block of 32 slots when it is created, and a
/// `Status` or a `Task` is hundreds of bytes, so unboxed every idle session
/// held about 10 KiB of empty slots (the leader keeps 10,000 sessions).
pub(crate) type Outbound = Box<Result<ControllerMessage, Status>>;

/// The outbound half of one agent session, and what it has been sent.
pub(crate) struct Link {
    pub session: u64,
    pub tx: mpsc::Sender<Outbound>,
    pub delivered: HashSet<(String, u32)>,
}

/// Sessions by host id (leader only).
#[derive(Default)]
pub(crate) struct Links(pub std::sync::Mutex<HashMap<String, Link>>);

impl Links {
    pub fn register(&self, host_id: &str, session: u64, tx: mpsc::Sender<Outbound>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(
            host_id.to_owned(),
            Link {
                session,
                tx,
                delivered: HashSet::new(),
            },
        );
    }

    pub fn unregister(&self, host_id: &str, session: u64) {
        let mut links = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if links.get(host_id).is_some_and(|l| l.session == session) {
            links.remove(host_id);
        }
    }
}

/// The wire form of a task, with the pool's current secrets and the files
/// it carries. `None`: not sendable yet, or (`unrenderable` set, logged
/// once here) a file could not be rendered from the pool's spec.
fn to_wire(shared: &Shared, task: &TaskRecord, unrenderable: &std::cell::Cell<bool>) -> Option<v1::Task> {
    use v1::task::Kind;
    if task.kind == TaskKind::Reset {
        // Needs nothing from the pool, which may be gone (a fenced host).
        return Some(v1::Task {
            task_id: task.task_id.clone(),
            attempt: task.attempt,
            deadline_unix_ms: task.deadline_unix_ms,
            pool: task.pool.clone(),
            node_name: task.node_name.clone(),
            kind: Some(Kind::Reset(v1::Reset {})),
        });
    }
    let (
        pool_join,
        endpoint,
        version,
        pod_cidr,
        service_cidr,
        address,
        cri_socket,
        control_plane,
        vip,
        control_planes,
        lb_range,
        pool_repo,
    ) = shared.node.read(|sm| {
        let pool = sm.pools().get(&task.pool)?;
        let control_plane = pool
            .members
            .get(&task.host_id)
            .is_some_and(|m| m.role == crate::state::pool::Role::ControlPlane);
        // Every control plane by node name and address, for the API
        // server certificate.
        let control_planes: Vec<(String, Option<std::net::IpAddr>)> = pool
            .members
            .values()
            .filter(|m| m.role == crate::state::pool::Role::ControlPlane)
            .map(|m| {
                (
                    m.node_name.clone(),
                    sm.host(&m.host_id).and_then(advertise_address),
                )
            })
            .collect();
        Some((
            pool.join.clone(),
            pool.control_plane_endpoint.clone(),
            pool.spec.kubernetes_version.clone(),
            pool.spec.pod_network_cidr.clone(),
            pool.spec.service_cidr.clone(),
            sm.host(&task.host_id).and_then(advertise_address),
            sm.host(&task.host_id)
                .map(|h| h.facts.cri_socket.clone())
                .filter(|s| !s.is_empty()),
            control_plane,
            pool.spec.vip.parse::<std::net::IpAddr>().ok(),
            control_planes,
            pool.spec.lb_range.clone(),
            pool.spec.image_repository.clone(),
        ))
    })?;
    let control_planes: Vec<(&str, Option<std::net::IpAddr>)> =
        control_planes.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    // The pool's image repository, else the fleet's (air-gapped sites: a
    // mirror), for kubeadm and every addon image rpool writes.
    let repo =
        Some(pool_repo.as_str())
            .filter(|r| !r.is_empty())
            .or(shared.config.kube.image_repository.as_deref());
    // The images step before init and control-plane joins (workers get
    // none: kubeadm join pulls nothing on a worker).
    let pull_images = || {
        Some(v1::PullImages {
            kubernetes_version: version.clone(),
            image_repository: repo.unwrap_or_default().to_owned(),
            cri_socket: cri_socket.clone().unwrap_or_default(),
        })
    };

    let host = HostFacts {
        node_name: &task.node_name,
        address,
        cri_socket: cri_socket.as_deref(),
        control_plane,
    };
    let rendered = |file: Result<String, crate::kube::KubeFieldError>| match file {
        Ok(text) => Some(text),
        Err(e) => {
            // The task stays pending (and times out) rather than run with
            // a file kubeadm would refuse.
            unrenderable.set(true);
            warn!(task_id = %task.task_id, pool = %task.pool, error = %e, "cannot render the file this task carries; task not sent");
            None
        }
    };
    let join_file = |secrets: &v1::JoinSecrets| {
        let facts = JoinFacts {
            endpoint: &secrets.control_plane_endpoint,
            token: &secrets.token,
            ca_cert_hash: &secrets.ca_cert_hash,
            certificate_key: Some(secrets.certificate_key.as_str()).filter(|k| !k.is_empty()),
        };
        rendered(render::join_file(&facts, &host))
    };
    let join = || pool_join.as_ref().map(JoinSecrets::to_proto);
    // The kube-vip static pod with `kubeconfig` ("" without a VIP).
    let kube_vip = |kubeconfig: Kubeconfig| match vip {
        Some(vip) => rendered(render::kube_vip_manifest_via(vip, kubeconfig, repo)),
        None => Some(String::new()),
    };
    let kind = match &task.kind {
        TaskKind::InitControlPlane => {
            let pool = PoolFacts {
                name: &task.pool,
                kubernetes_version: &version,
                pod_cidr: &pod_cidr,
                service_cidr: &service_cidr,
                endpoint: &endpoint,
                control_planes: &control_planes,
                image_repository: repo,
            };
            let kubeadm_config = rendered(render::init_file(&pool, &host))?;
            let pull_images = pull_images();
            Kind::InitControlPlane(v1::InitControlPlane {
                control_plane_endpoint: endpoint,
                pod_network_cidr: pod_cidr,
                service_cidr,
                kubernetes_version: version,
                kubeadm_config,
                kube_vip_manifest: kube_vip(Kubeconfig::SuperAdmin)?,
                kube_vip_manifest_after_init: kube_vip(Kubeconfig::Admin)?,
                pull_images,
            })
        }
        TaskKind::JoinControlPlane => {
            let secrets = join()?;
            let kubeadm_config = join_file(&secrets)?;
            Kind::JoinControlPlane(v1::JoinControlPlane {
                join: Some(secrets),
                kubeadm_config,
                kube_vip_manifest: kube_vip(Kubeconfig::Admin)?,
                pull_images: pull_images(),
            })
        }
        TaskKind::JoinWorker => {
            let mut secrets = join()?;
            // A worker never needs the certificate key.
            secrets.certificate_key.clear();
            let kubeadm_config = join_file(&secrets)?;
            Kind::JoinWorker(v1::JoinWorker {
                join: Some(secrets),
                kubeadm_config,
            })
        }
        TaskKind::DrainNode { target_node } => Kind::DrainNode(v1::DrainNode {
            target_node: target_node.clone(),
            timeout_s: crate::state::pool::DRAIN_TIMEOUT_S as u32,
        }),
        TaskKind::DeleteNode { target_node } => Kind::DeleteNode(v1::DeleteNode {
            target_node: target_node.clone(),
        }),
        TaskKind::RemoveEtcdMember { target_node } => Kind::RemoveEtcdMember(v1::RemoveEtcdMember {
            target_node: target_node.clone(),
        }),
        TaskKind::Reset => Kind::Reset(v1::Reset {}),
        TaskKind::InstallAddons => {
            let mut manifests = vec![v1::Manifest {
                name: "cni".to_owned(),
                content: rendered(render::cni_manifest_via(&pod_cidr, repo))?,
            }];
            // A pool with an LB range: MetalLB, then the range's pool (a
            // resize that moves the range runs this task again).
            if !lb_range.is_empty() {
                // An unrenderable range is warned about (and the task not sent) like a file.
                let parts = render::metallb_manifests_via(&lb_range, repo)
                    .map_err(|e| rendered(Err(e)))
                    .ok()?;
                for (name, content) in parts {
                    manifests.push(v1::Manifest {
                        name: name.to_owned(),
                        content,
                    });
                }
            }
            Kind::InstallAddons(v1::InstallAddons { manifests })
        }
        TaskKind::RefreshJoinToken => Kind::RefreshJoinToken(v1::RefreshJoinToken {
            certificate_key: true,
        }),
        TaskKind::FetchKubeconfig => Kind::FetchKubeconfig(v1::FetchKubeconfig {}),
        TaskKind::UpgradeNode { version, apply } => Kind::UpgradeNode(v1::UpgradeNode {
            version: version.clone(),
            apply: *apply,
        }),
        TaskKind::UncordonNode { target_node } => Kind::UncordonNode(v1::UncordonNode {
            target_node: target_node.clone(),
        }),
        TaskKind::EtcdSnapshot { backup_id } => Kind::EtcdSnapshot(v1::EtcdSnapshot {
            backup_id: backup_id.clone(),
        }),
        TaskKind::DeleteEtcdSnapshot { backup_id, path } => {
            Kind::DeleteEtcdSnapshot(v1::DeleteEtcdSnapshot {
                backup_id: backup_id.clone(),
                path: path.clone(),
            })
        }
        TaskKind::RenewCerts => Kind::RenewCerts(v1::RenewCerts {}),
    };
    Some(v1::Task {
        task_id: task.task_id.clone(),
        attempt: task.attempt,
        deadline_unix_ms: task.deadline_unix_ms,
        pool: task.pool.clone(),
        node_name: task.node_name.clone(),
        kind: Some(kind),
    })
}

/// The address a host's node advertises: the one its agent reports (its
/// `advertise_address`, else its connection's local address, never a
/// bridge/CNI/veth/loopback one); none when it reported none (kubeadm then
/// picks) and on simulated hardware (every host there shares the
/// machine's addresses).
fn advertise_address(host: &crate::state::command::HostRecord) -> Option<std::net::IpAddr> {
    if host.facts.simulated {
        return None;
    }
    host.facts.advertise_address.parse().ok()
}

/// Sends every pending task to its host's session, once per session.
pub(crate) fn deliver(shared: &Shared) {
    let pending: Vec<TaskRecord> = shared.node.read(|sm| {
        sm.tasks()
            .values()
            .filter(|t| t.state == TaskState::Pending)
            .cloned()
            .collect()
    });
    let mut links = shared.links.0.lock().unwrap_or_else(|e| e.into_inner());
    for task in pending {
        let Some(link) = links.get_mut(&task.host_id) else {
            continue;
        };
        let key = (task.task_id.clone(), task.attempt);
        if link.delivered.contains(&key) {
            continue;
        }
        let unrenderable = std::cell::Cell::new(false);
        let Some(wire) = to_wire(shared, &task, &unrenderable) else {
            if unrenderable.get() {
                // Warned once for this session and attempt, not every round.
                link.delivered.insert(key);
            }
            continue;
        };
        let message = ControllerMessage {
            msg: Some(controller_message::Msg::Task(wire)),
        };
        match link.tx.try_send(Box::new(Ok(message))) {
            Ok(()) => {
                debug!(task_id = %task.task_id, attempt = task.attempt, host_id = %task.host_id, kind = task.kind.as_str(), "task sent");
                link.delivered.insert(key);
            }
            Err(_) => debug!(host_id = %task.host_id, "session queue full; task sent on a later round"),
        }
    }
}

/// The planner and delivery loop; runs for the controller's lifetime and
/// acts only while this controller leads.
pub(crate) async fn run(shared: std::sync::Arc<Shared>) {
    let mut ticker = tokio::time::interval(PLAN_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::stopped(&mut stop) => return,
        }
        if !shared.node.is_leader() {
            continue;
        }
        if shared.node.read_barrier().await.is_err() {
            continue;
        }
        // A leader that has not yet judged every host for a full down_after
        // (just started, or a new term) does not know who else is silent:
        // a host the old leader marked down is not replaced on that
        // picture (hosts cut off together would be replaced one by one
        // instead of making a storm). Healing resumes a down_after later.
        let judging = {
            let live = shared.liveness.lock().unwrap_or_else(|e| e.into_inner());
            live.judging(std::time::Instant::now())
        };
        let commands = shared.node.read(|sm| {
            crate::policy::planner::plan_replacing(sm, unix_ms_now(), &shared.config.healing, judging)
        });
        for command in commands {
            match shared.node.propose(command).await {
                Ok(_) => {}
                Err(ProposeError::Rejected(e)) => debug!(error = %e, "planned command refused; replanning"),
                Err(e) => {
                    debug!(error = %e, "planned command not committed");
                    break;
                }
            }
        }
        crate::leader::autoscaler::tick(&shared).await;
        crate::leader::certs::tick(&shared).await;
        deliver(&shared);
    }
}
