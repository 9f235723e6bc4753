//! Tasks in the state machine: issued for a member (or a fenced host's
//! reset), finished with a result that moves the member and the pool on,
//! retried with backoff, and the clean-up of members replaced while down.

use super::{Builder, refused, retry_delay_ms};
use crate::state::command::HostRecord;
use crate::state::pool::{
    Fence, ImagesStep, MAX_TASK_ATTEMPTS, Member, MemberState, PoolPhase, PoolRecord, Secret, TaskKind,
    TaskRecord, TaskState,
};
use crate::state::{ApplyError, ApplyOutcome, Change, More, State};

impl State {
    /// Records a task for a member (or a fenced host's reset); repeats are no-ops.
    pub(super) fn issue_task(&self, index: u64, task: &TaskRecord) -> Result<Change, ApplyError> {
        let fence_reset = task.kind == TaskKind::Reset
            && self
                .host(&task.host_id)
                .is_some_and(|h| h.pool.is_none() && h.fenced.as_ref().is_some_and(|f| f.pool == task.pool));
        let member = self
            .pools
            .get(&task.pool)
            .is_some_and(|p| p.members.contains_key(&task.host_id));
        if !fence_reset && !self.pools.contains_key(&task.pool) {
            return Err(ApplyError::UnknownPool(task.pool.clone()));
        }
        if !fence_reset && !member {
            return Err(refused(format!(
                "host {} is not a member of pool {}",
                task.host_id, task.pool
            )));
        }
        if let Some(existing) = self.tasks.get(&task.task_id)
            && !(existing.state == TaskState::Failed && task.attempt > existing.attempt)
        {
            // Issued already: a planner on a new leader may repeat it.
            return Ok(Change::unchanged(index));
        }
        let mut b = Builder {
            index,
            at_unix_ms: task.issued_at_unix_ms,
            more: More::default(),
        };
        b.event(
            &task.pool,
            &task.host_id,
            "task_issued",
            format!(
                "pool {}: {} on {} (attempt {})",
                task.pool,
                task.kind.as_str(),
                self.hostname(&task.host_id),
                task.attempt
            ),
        );
        b.more.tasks.push((
            task.task_id.clone(),
            Some(TaskRecord {
                state: TaskState::Pending,
                ..task.clone()
            }),
        ));
        if let Some(mut pool) = self.pools.get(&task.pool).cloned()
            && self.rollout_on_issue(&mut pool, task)
        {
            b.more.pools.push((task.pool.clone(), Some(pool)));
        }
        Ok(b.done(ApplyOutcome::Updated))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_task(
        &self,
        index: u64,
        task_id: &str,
        attempt: u32,
        ok: bool,
        error: &str,
        join: Option<&crate::state::pool::JoinSecrets>,
        kubeconfig: Option<&Secret>,
        at_unix_ms: u64,
        images: Option<&ImagesStep>,
    ) -> Result<Change, ApplyError> {
        let unchanged = Change::unchanged(index);
        // A result for a task no longer pending (reported twice, or after a
        // retry was issued) changes nothing.
        let Some(task) = self.tasks.get(task_id) else {
            return Ok(unchanged);
        };
        if task.attempt != attempt || task.state != TaskState::Pending {
            return Ok(unchanged);
        }
        if task.kind == TaskKind::Reset
            && let Some(record) = self.host(&task.host_id)
            && record.pool.is_none()
            && record.fenced.is_some()
        {
            return Ok(self.finish_fence_reset(index, task, record, ok, error, at_unix_ms));
        }
        let Some(mut pool) = self.pools.get(&task.pool).cloned() else {
            return Ok(unchanged);
        };
        if matches!(
            task.kind,
            TaskKind::EtcdSnapshot { .. } | TaskKind::DeleteEtcdSnapshot { .. }
        ) {
            return Ok(self.finish_backup_task(index, task, pool, ok, error, at_unix_ms));
        }
        let mut b = Builder {
            index,
            at_unix_ms,
            more: More::default(),
        };
        let host = self.hostname(&task.host_id);
        if !ok {
            let last = attempt >= MAX_TASK_ATTEMPTS;
            if let Some(member) = pool.members.get_mut(&task.host_id) {
                member.last_error = error.to_owned();
            }
            // The images step failed: reported as that (which image, which
            // host), not as a failed init or join, which never started.
            let missing = images.filter(|i| !i.ok).map(|i| {
                if i.failed_image.is_empty() {
                    "the Kubernetes images".to_owned()
                } else {
                    format!("image {}", i.failed_image)
                }
            });
            match &missing {
                Some(what) => b.event(
                    &task.pool,
                    &task.host_id,
                    "images_pull_failed",
                    format!(
                        "pool {}: {what} could not be pulled on {host}, before {} (attempt {attempt} of {MAX_TASK_ATTEMPTS}; mirror it to the image repository): {error}",
                        task.pool,
                        task.kind.as_str()
                    ),
                ),
                None => b.event(
                    &task.pool,
                    &task.host_id,
                    "task_failed",
                    format!(
                        "pool {}: {} on {host} failed (attempt {attempt} of {MAX_TASK_ATTEMPTS}): {error}",
                        task.pool,
                        task.kind.as_str()
                    ),
                ),
            }
            if last && pool.phase != PoolPhase::Deleting {
                pool.phase = PoolPhase::Degraded;
                pool.phase_reason = match &missing {
                    Some(what) => format!("{what} missing on {host} ({attempt} attempts): {error}"),
                    None => format!("{} on {host} failed {attempt} times: {error}", task.kind.as_str()),
                };
                if super::certs::is_renewal_task(&pool, task) {
                    pool.phase_reason = format!(
                        "certificate renewal stopped: {}; fix it, then resume with `rpoolctl pool renew-certs {}`",
                        pool.phase_reason, task.pool
                    );
                }
                if let Some(rollout) = &pool.upgrade
                    && super::upgrade::is_rollout_task(&pool, task)
                {
                    pool.phase_reason = format!(
                        "upgrade to {} stopped: {}; fix it, then resume with `rpoolctl pool upgrade {} --resume`",
                        rollout.to, pool.phase_reason, task.pool
                    );
                }
            }
            b.more
                .tasks
                .push((task_id.to_owned(), Some(failed(task, error, at_unix_ms))));
            b.more.pools.push((task.pool.clone(), Some(pool)));
            return Ok(b.done(ApplyOutcome::Updated));
        }
        b.more.tasks.push((task_id.to_owned(), None));
        if let Some(step) = images.filter(|i| i.ok) {
            let addons = if step.addon_images.is_empty() {
                String::new()
            } else {
                format!(
                    "; addon images (pulled by the runtime when their pods start): {}",
                    step.addon_images.join(", ")
                )
            };
            b.event(
                &task.pool,
                &task.host_id,
                "images_pulled",
                format!(
                    "pool {}: {} Kubernetes images present on {host} before {}: {}{addons}",
                    task.pool,
                    step.pulled.len(),
                    task.kind.as_str(),
                    step.pulled.join(", ")
                ),
            );
        }
        let mut done = format!("pool {}: {} on {host} done", task.pool, task.kind.as_str());
        let member = pool.members.get_mut(&task.host_id);
        match (&task.kind, member) {
            (TaskKind::InitControlPlane, Some(member)) => {
                member.state = MemberState::Joined;
                member.last_error.clear();
                pool.join = join.cloned();
                if let Some(kubeconfig) = kubeconfig {
                    pool.kubeconfig = kubeconfig.clone();
                }
                done = format!("pool {}: kubeadm init done on {host}, cluster is up", task.pool);
            }
            (TaskKind::JoinControlPlane | TaskKind::JoinWorker, Some(member)) => {
                member.state = MemberState::Joined;
                member.last_error.clear();
                done = format!("pool {}: {host} joined as {}", task.pool, member.role.as_str());
            }
            (TaskKind::RefreshJoinToken, _) => {
                if let Some(join) = join {
                    pool.join = Some(join.clone());
                }
                done = format!("pool {}: join token refreshed on {host}", task.pool);
            }
            (TaskKind::FetchKubeconfig, _) => {
                if let Some(kubeconfig) = kubeconfig {
                    pool.kubeconfig = kubeconfig.clone();
                }
            }
            (TaskKind::InstallAddons, _) => {
                pool.addons_installed = true;
                done = format!("pool {}: addons installed from {host}", task.pool);
            }
            (TaskKind::DrainNode { target_node } | TaskKind::DeleteNode { target_node }, _) => {
                let drain = matches!(task.kind, TaskKind::DrainNode { .. });
                if let Some(target) = pool.members.values_mut().find(|m| m.node_name == *target_node) {
                    match &mut target.state {
                        MemberState::Leaving { drained, deleted, .. } => {
                            if drain {
                                *drained = true;
                            } else {
                                *deleted = true;
                            }
                        }
                        MemberState::Replaced { deleted, .. } if !drain => *deleted = true,
                        _ => {}
                    }
                }
                done = format!(
                    "pool {}: node {target_node} {} (via {host})",
                    task.pool,
                    if drain { "drained" } else { "deleted" }
                );
            }
            (TaskKind::RemoveEtcdMember { target_node }, _) => {
                if let Some(target) = pool.members.values_mut().find(|m| m.node_name == *target_node)
                    && let MemberState::Replaced { etcd_removed, .. }
                    | MemberState::Leaving { etcd_removed, .. } = &mut target.state
                {
                    *etcd_removed = true;
                }
                done = format!(
                    "pool {}: etcd member {target_node} removed (via {host})",
                    task.pool
                );
            }
            (TaskKind::Reset, Some(_)) => {
                pool.members.remove(&task.host_id);
                if let Some(record) = self.host(&task.host_id) {
                    b.more.hosts.push(HostRecord {
                        pool: None,
                        ..record.clone()
                    });
                }
                for other in self
                    .tasks
                    .values()
                    .filter(|t| t.host_id == task.host_id && t.task_id != task_id)
                {
                    b.more.tasks.push((other.task_id.clone(), None));
                }
                done = format!("pool {}: {host} reset and back in the fleet", task.pool);
            }
            (TaskKind::UpgradeNode { version, apply }, _) => {
                done = format!(
                    "pool {}: {} {version} done on {host}",
                    task.pool,
                    if *apply {
                        "kubeadm upgrade apply"
                    } else {
                        "kubeadm upgrade node"
                    }
                );
            }
            (TaskKind::UncordonNode { target_node }, _) => {
                done = format!("pool {}: node {target_node} uncordoned (via {host})", task.pool);
            }
            // Handled before (see `backups`).
            (TaskKind::EtcdSnapshot { .. } | TaskKind::DeleteEtcdSnapshot { .. }, _) => {}
            (TaskKind::RenewCerts, _) => {
                done = format!(
                    "pool {}: kubeadm certs renew all done on {host}, static pods restarted",
                    task.pool
                );
            }
            (_, None) => {}
        }
        b.event(&task.pool, &task.host_id, "task_done", done);
        self.rollout_on_done(&mut pool, task, &mut b);
        self.renewal_on_done(&mut pool, task, &mut b);
        self.fence_cleaned_members(&mut pool, task_id, at_unix_ms, &mut b);
        if pool.phase == PoolPhase::Deleting && pool.members.is_empty() {
            b.event(
                &task.pool,
                "",
                "pool_destroyed",
                format!("pool {} destroyed", task.pool),
            );
            b.more.pools.push((task.pool.clone(), None));
        } else {
            b.more.pools.push((task.pool.clone(), Some(pool)));
        }
        Ok(b.done(ApplyOutcome::Updated))
    }

    /// Members whose etcd member and node are gone leave `pool`; their
    /// hosts are fenced and their remaining tasks dropped.
    pub(super) fn fence_cleaned_members(
        &self,
        pool: &mut PoolRecord,
        finished: &str,
        at_unix_ms: u64,
        b: &mut Builder,
    ) {
        let gone: Vec<Member> = pool
            .members
            .values()
            .filter(|m| {
                m.state
                    == MemberState::Replaced {
                        etcd_removed: true,
                        deleted: true,
                    }
            })
            .cloned()
            .collect();
        for member in gone {
            pool.members.remove(&member.host_id);
            if let Some(record) = self.host(&member.host_id) {
                b.more
                    .hosts
                    .push(fenced(record, &pool.spec.name, &member.node_name, at_unix_ms));
            }
            for task in self
                .tasks
                .values()
                .filter(|t| t.host_id == member.host_id && t.task_id != finished)
            {
                b.more.tasks.push((task.task_id.clone(), None));
            }
            b.event(
                &pool.spec.name,
                &member.host_id,
                "host_fenced",
                format!(
                    "pool {}: {} left the pool (node {} removed); fenced: it is reset when it comes back",
                    pool.spec.name,
                    self.hostname(&member.host_id),
                    member.node_name
                ),
            );
        }
    }

    /// How a `reset` of a fenced host ended: done, the host is back in the
    /// fleet; failed, it is retried with backoff (still fenced).
    pub(super) fn finish_fence_reset(
        &self,
        index: u64,
        task: &TaskRecord,
        record: &HostRecord,
        ok: bool,
        error: &str,
        at_unix_ms: u64,
    ) -> Change {
        let mut b = Builder {
            index,
            at_unix_ms,
            more: More::default(),
        };
        let host = self.hostname(&task.host_id);
        if ok {
            b.more.tasks.push((task.task_id.clone(), None));
            b.more.hosts.push(HostRecord {
                fenced: None,
                ..record.clone()
            });
            b.event(
                &task.pool,
                &task.host_id,
                "host_unfenced",
                format!(
                    "{host} came back after it was replaced in pool {}: reset, back in the fleet",
                    task.pool
                ),
            );
        } else {
            b.event(
                &task.pool,
                &task.host_id,
                "task_failed",
                format!(
                    "reset of fenced host {host} failed (attempt {} of {MAX_TASK_ATTEMPTS}): {error}",
                    task.attempt
                ),
            );
            b.more
                .tasks
                .push((task.task_id.clone(), Some(failed(task, error, at_unix_ms))));
        }
        b.done(ApplyOutcome::Updated)
    }
}

/// `task` after a failed attempt: retried with backoff, or never again
/// after its last attempt.
fn failed(task: &TaskRecord, error: &str, at_unix_ms: u64) -> TaskRecord {
    TaskRecord {
        state: TaskState::Failed,
        last_error: error.to_owned(),
        retry_at_unix_ms: if task.attempt >= MAX_TASK_ATTEMPTS {
            u64::MAX
        } else {
            at_unix_ms + retry_delay_ms(task.attempt)
        },
        ..task.clone()
    }
}

/// The host record of `host` removed from `pool` while down, fenced.
pub(super) fn fenced(host: &HostRecord, pool: &str, node_name: &str, at_unix_ms: u64) -> HostRecord {
    HostRecord {
        pool: None,
        fenced: Some(Fence {
            pool: pool.to_owned(),
            node_name: node_name.to_owned(),
            since_unix_ms: at_unix_ms,
        }),
        ..host.clone()
    }
}

/// The node a task acts on from another host (drain, delete, etcd removal).
pub(super) fn target_node(kind: &TaskKind) -> Option<&str> {
    match kind {
        TaskKind::DrainNode { target_node }
        | TaskKind::DeleteNode { target_node }
        | TaskKind::RemoveEtcdMember { target_node } => Some(target_node),
        _ => None,
    }
}
