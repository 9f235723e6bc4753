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
use crate::state::pool::{JoinSecrets, Secret, TaskState};

/// Longest error text kept from an agent.
const ERROR_MAX_CHARS: usize = 4_096;
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
    let command = Command::FinishTask {
        task_id: result.task_id,
        attempt: result.attempt,
        ok: result.ok,
        error,
        join: result.join.as_ref().map(JoinSecrets::from_proto),
        kubeconfig: (!result.kubeconfig.is_empty()).then(|| Secret::new(result.kubeconfig)),
        at_unix_ms: unix_ms_now(),
    };
    match shared.node.propose(command).await {
        Ok(_) | Err(ProposeError::Rejected(_)) => Ok(()),
        Err(e) => Err(propose_status(e, Refusal::Race)),
    }
}
