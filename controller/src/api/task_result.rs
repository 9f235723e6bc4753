//! A `TaskResult` from an agent: checked (it must be for a pending task of
//! that very host, within size limits) and turned into a `FinishTask`
//! command. A result for a task that is no longer pending is ignored (the
//! agent deduplicates and may resend after a leader change).

use rpool_proto::clock::unix_ms_now;
use rpool_proto::v1::TaskResult;
use tonic::Status;
use tracing::{debug, info, warn};

use crate::Shared;
use crate::api::status::{Refusal, propose_status};
use crate::api::validate::Invalid;
use crate::replica::ProposeError;
use crate::state::command::Command;
use crate::state::pool::{ImagesStep, JoinSecrets, Secret, TaskState};

/// Longest error text kept from an agent.
const ERROR_MAX_CHARS: usize = 4_096;
/// Most image names in `task_result.images.pulled`.
const IMAGES_MAX: usize = 64;
/// Longest image name accepted.
const IMAGE_MAX_CHARS: usize = 255;
/// Largest kubeconfig accepted from an agent.
const KUBECONFIG_MAX_BYTES: usize = 1 << 20;

/// Handles a `TaskResult` from the session of `host_id`.
pub(crate) async fn on_result(shared: &Shared, host_id: &str, result: TaskResult) -> Result<(), Status> {
    if result.task_id.is_empty() || result.task_id.len() > 256 {
        return Err(Invalid::new("task_result.task_id", "must be 1..=256 characters").into());
    }
    if result.kubeconfig.len() > KUBECONFIG_MAX_BYTES {
        return Err(Invalid::new(
            "task_result.kubeconfig",
            format!(
                "{} bytes is out of range (accepted at most {KUBECONFIG_MAX_BYTES})",
                result.kubeconfig.len()
            ),
        )
        .into());
    }
    if let Some(images) = &result.images {
        if images.pulled.len() > IMAGES_MAX {
            return Err(Invalid::new(
                "task_result.images.pulled",
                format!(
                    "{} images is out of range (accepted at most {IMAGES_MAX})",
                    images.pulled.len()
                ),
            )
            .into());
        }
        if let Some(long) = images
            .pulled
            .iter()
            .chain([&images.failed_image])
            .find(|i| i.chars().count() > IMAGE_MAX_CHARS)
        {
            return Err(Invalid::new(
                "task_result.images",
                format!(
                    "an image name of {} characters is out of range (accepted at most {IMAGE_MAX_CHARS})",
                    long.chars().count()
                ),
            )
            .into());
        }
    }
    let owner = shared
        .node
        .read(|sm| sm.tasks().get(&result.task_id).map(|t| t.host_id.clone()));
    match owner {
        None => {
            debug!(task_id = %result.task_id, "result for a task that is not pending; ignored");
            return Ok(());
        }
        Some(owner) if owner != host_id => {
            warn!(task_id = %result.task_id, host_id, owner = %owner, "agent reported a task of another host");
            return Err(Status::permission_denied(format!(
                "task {} belongs to another host",
                result.task_id
            )));
        }
        Some(_) => {}
    }
    let pending_since = shared.node.read(|sm| {
        sm.tasks()
            .get(&result.task_id)
            .filter(|t| t.attempt == result.attempt && t.state == TaskState::Pending)
            .map(|t| (t.kind.as_str(), t.issued_at_unix_ms))
    });
    if let Some((kind, issued_at_unix_ms)) = pending_since {
        crate::metrics::record_task(kind, result.ok, issued_at_unix_ms, unix_ms_now());
    }
    let error: String = result.error.chars().take(ERROR_MAX_CHARS).collect();
    info!(task_id = %result.task_id, attempt = result.attempt, ok = result.ok, already_done = result.already_done, duration_ms = result.duration_ms, "task finished");
    let images = result.images.map(|i| ImagesStep {
        ok: i.ok,
        pulled: i.pulled,
        failed_image: i.failed_image,
        addon_images: addon_images(shared, &result.task_id),
    });
    if result.ok
        && let Some(file) = &result.etcd_snapshot
    {
        check_snapshot(file)?;
        let command = Command::EtcdSnapshotTaken {
            task_id: result.task_id,
            attempt: result.attempt,
            snapshot: crate::state::backups::SnapshotTaken {
                path: file.path.clone(),
                size_bytes: file.size_bytes,
                sha256: file.sha256.clone(),
                revision: file.revision,
                total_keys: file.total_keys,
                taken_at_unix_ms: file.taken_at_unix_ms,
            },
            at_unix_ms: unix_ms_now(),
        };
        return match shared.node.propose(command).await {
            Ok(_) | Err(ProposeError::Rejected(_)) => Ok(()),
            Err(e) => Err(propose_status(e, Refusal::Race)),
        };
    }
    let command = Command::FinishTask {
        task_id: result.task_id,
        attempt: result.attempt,
        ok: result.ok,
        error,
        join: result.join.as_ref().map(JoinSecrets::from_proto),
        kubeconfig: (!result.kubeconfig.is_empty()).then(|| Secret::new(result.kubeconfig)),
        at_unix_ms: unix_ms_now(),
        images,
    };
    match shared.node.propose(command).await {
        Ok(_) | Err(ProposeError::Rejected(_)) => Ok(()),
        Err(e) => Err(propose_status(e, Refusal::Race)),
    }
}

/// The addon images the host of `task_id` runs in its pool, through the
/// pool's image repository (else the fleet's): flannel everywhere, kube-vip on the control
/// planes of a pool with a VIP, MetalLB in a pool with an LB range.
fn addon_images(shared: &Shared, task_id: &str) -> Vec<String> {
    use crate::kube::images::{FLANNEL, FLANNEL_CNI_PLUGIN, KUBE_VIP, METALLB_CONTROLLER, METALLB_SPEAKER};
    let (vip, lb, pool_repo) = shared.node.read(|sm| {
        sm.tasks()
            .get(task_id)
            .and_then(|t| sm.pools().get(&t.pool))
            .map(|p| {
                (
                    !p.spec.vip.is_empty(),
                    !p.spec.lb_range.is_empty(),
                    p.spec.image_repository.clone(),
                )
            })
            .unwrap_or_default()
    });
    let repo =
        Some(pool_repo.as_str())
            .filter(|r| !r.is_empty())
            .or(shared.config.kube.image_repository.as_deref());
    let mut images = vec![FLANNEL, FLANNEL_CNI_PLUGIN];
    if vip {
        images.push(KUBE_VIP);
    }
    if lb {
        images.extend([METALLB_CONTROLLER, METALLB_SPEAKER]);
    }
    images.iter().map(|i| i.reference(repo)).collect()
}

/// Longest snapshot path accepted from an agent.
const SNAPSHOT_PATH_MAX_CHARS: usize = 4_096;

/// An `etcd_snapshot` result: an absolute path of bounded length and a
/// SHA-256 of 64 lowercase hex digits.
fn check_snapshot(file: &rpool_proto::v1::EtcdSnapshotResult) -> Result<(), Status> {
    if !file.path.starts_with('/') || file.path.chars().count() > SNAPSHOT_PATH_MAX_CHARS {
        return Err(Invalid::new(
            "task_result.etcd_snapshot.path",
            format!("must be an absolute path of at most {SNAPSHOT_PATH_MAX_CHARS} characters"),
        )
        .into());
    }
    let hex = file.sha256.len() == 64
        && file
            .sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex {
        return Err(Invalid::new(
            "task_result.etcd_snapshot.sha256",
            "must be 64 lowercase hex digits",
        )
        .into());
    }
    Ok(())
}
