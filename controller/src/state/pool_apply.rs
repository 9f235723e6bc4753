//! How pool commands change the state machine (the pool half of
//! [`State::plan`]). Pure like the rest of `plan`: the change is
//! computed from the current state and the command only.
//!
//! The rules that keep a host in at most one pool live here: a command that
//! would put a host that is not `ready`, or that already belongs to a pool,
//! into a pool is refused as a whole.

use crate::state::command::{Command, HostRecord, HostState};
use crate::state::pool::{
    Event, Fence, MAX_TASK_ATTEMPTS, Member, MemberState, PoolPhase, PoolRecord, Role, Secret, Severity,
    TaskKind, TaskRecord, TaskState,
};
use crate::state::{ApplyError, ApplyOutcome, Change, More, State};
use rpool_proto::units::format_size;

/// Kubernetes node name for a host: its hostname, lower case, characters
/// outside `[a-z0-9.-]` replaced by `-`.
pub fn node_name(host: &HostRecord) -> String {
    host.facts
        .hostname
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Backoff before retrying a failed task: 2 s, 4 s, 8 s, ...
fn retry_delay_ms(attempt: u32) -> u64 {
    1_000u64 << attempt.min(8)
}

fn refused(message: impl Into<String>) -> ApplyError {
    ApplyError::Refused(message.into())
}

struct Builder {
    index: u64,
    at_unix_ms: u64,
    more: More,
}

impl Builder {
    fn event(&mut self, pool: &str, host_id: &str, kind: &str, message: String) {
        self.event_with(pool, host_id, kind, Severity::Info, message);
    }

    fn event_with(&mut self, pool: &str, host_id: &str, kind: &str, severity: Severity, message: String) {
        self.more.events.push(Event {
            index: self.index,
            at_unix_ms: self.at_unix_ms,
            pool: pool.to_owned(),
            host_id: host_id.to_owned(),
            kind: kind.to_owned(),
            message,
            severity,
        });
    }

    fn done(self, outcome: ApplyOutcome) -> Change {
        Change {
            index: self.index,
            record: None,
            more: self.more,
            outcome,
        }
    }
}

impl State {
    /// A host that may join `pool`: known, ready, in no pool.
    fn joinable(&self, host_id: &str, pool: &str) -> Result<&HostRecord, ApplyError> {
        let host = self
            .host(host_id)
            .ok_or_else(|| refused(format!("no host with id {host_id}")))?;
        if let Some(other) = &host.pool {
            return Err(refused(format!("host {host_id} already belongs to pool {other}")));
        }
        if let Some(fence) = &host.fenced {
            return Err(refused(format!(
                "host {host_id} was replaced in pool {} while down and is not reset yet; it cannot join pool {pool}",
                fence.pool
            )));
        }
        if host.state != HostState::Ready {
            return Err(refused(format!(
                "host {host_id} is {}, not ready; it cannot join pool {pool}",
                host.state.as_str()
            )));
        }
        Ok(host)
    }

    fn hostname(&self, host_id: &str) -> String {
        self.host(host_id)
            .map_or_else(|| host_id.to_owned(), |h| h.facts.hostname.clone())
    }

    pub(crate) fn plan_pool(&self, index: u64, command: &Command) -> Result<Change, ApplyError> {
        match command {
            Command::CreatePool {
                spec,
                control_planes,
                workers,
                control_plane_endpoint,
                at_unix_ms,
            } => {
                if self.pools.contains_key(&spec.name) {
                    return Err(refused(format!("pool {} already exists", spec.name)));
                }
                let mut b = Builder {
                    index,
                    at_unix_ms: *at_unix_ms,
                    more: More::default(),
                };
                let mut pool = PoolRecord {
                    spec: spec.clone(),
                    phase: PoolPhase::Provisioning,
                    phase_reason: "placing and joining hosts".to_owned(),
                    members: Default::default(),
                    control_plane_endpoint: control_plane_endpoint.clone(),
                    created_at_unix_ms: *at_unix_ms,
                    join: None,
                    kubeconfig: Secret::default(),
                    addons_installed: false,
                    next_order: 0,
                    autoscale: Default::default(),
                };
                let mut seen = std::collections::BTreeSet::new();
                let roles = control_planes
                    .iter()
                    .map(|h| (h, Role::ControlPlane))
                    .chain(workers.iter().map(|h| (h, Role::Worker)));
                let (mut cores, mut memory) = (0u64, 0u64);
                for (host_id, role) in roles {
                    if !seen.insert(host_id.clone()) {
                        return Err(refused(format!("host {host_id} is listed twice")));
                    }
                    let host = self.joinable(host_id, &spec.name)?;
                    if role == Role::Worker {
                        cores += u64::from(host.facts.inventory.logical_cores);
                        memory += host.facts.inventory.memory_total_bytes;
                    }
                    pool.members.insert(
                        host_id.clone(),
                        Member {
                            host_id: host_id.clone(),
                            role,
                            node_name: node_name(host),
                            state: MemberState::Joining,
                            order: pool.next_order,
                            last_error: String::new(),
                        },
                    );
                    pool.next_order += 1;
                    b.more.hosts.push(HostRecord {
                        pool: Some(spec.name.clone()),
                        ..host.clone()
                    });
                }
                if control_planes.is_empty() {
                    return Err(refused("a pool needs at least one control plane"));
                }
                b.event(
                    &spec.name,
                    "",
                    "pool_created",
                    format!(
                        "pool {} created: {} control plane(s) ({}), {} worker(s) with {cores} cores / {} \
                         for {} cores / {} requested",
                        spec.name,
                        control_planes.len(),
                        control_planes
                            .iter()
                            .map(|h| self.hostname(h))
                            .collect::<Vec<_>>()
                            .join(", "),
                        workers.len(),
                        format_size(memory),
                        spec.cores,
                        format_size(spec.memory_bytes),
                    ),
                );
                b.more.pools.push((spec.name.clone(), Some(pool)));
                Ok(b.done(ApplyOutcome::Updated))
            }
            Command::ResizePool {
                pool: name,
                cores,
                memory_bytes,
                add,
                release,
                at_unix_ms,
            } => {
                let mut pool = self.pool_for_change(name)?;
                let mut b = Builder {
                    index,
                    at_unix_ms: *at_unix_ms,
                    more: More::default(),
                };
                for host_id in add {
                    let host = self.joinable(host_id, name)?;
                    pool.members.insert(
                        host_id.clone(),
                        Member {
                            host_id: host_id.clone(),
                            role: Role::Worker,
                            node_name: node_name(host),
                            state: MemberState::Joining,
                            order: pool.next_order,
                            last_error: String::new(),
                        },
                    );
                    pool.next_order += 1;
                    b.more.hosts.push(HostRecord {
                        pool: Some(name.clone()),
                        ..host.clone()
                    });
                }
                for host_id in release {
                    let member = pool
                        .members
                        .get_mut(host_id)
                        .filter(|m| m.role == Role::Worker)
                        .ok_or_else(|| refused(format!("host {host_id} is not a worker of pool {name}")))?;
                    // Leaving already, or replaced (healing cleans it up).
                    if !matches!(
                        member.state,
                        MemberState::Leaving { .. } | MemberState::Replaced { .. }
                    ) {
                        // A node that never joined has nothing to drain.
                        let joined = member.state == MemberState::Joined;
                        member.state = MemberState::Leaving {
                            drained: !joined,
                            deleted: !joined,
                            etcd_removed: true,
                        };
                    }
                }
                let before = (pool.spec.cores, pool.spec.memory_bytes);
                pool.spec.cores = *cores;
                pool.spec.memory_bytes = *memory_bytes;
                pool.phase = PoolPhase::Resizing;
                pool.phase_reason = format!("{} host(s) joining, {} leaving", add.len(), release.len());
                b.event(
                    name,
                    "",
                    "pool_resized",
                    format!(
                        "pool {name} resized from {} cores / {} to {cores} cores / {}: +{} worker(s) ({}), \
                         -{} worker(s) ({})",
                        before.0,
                        format_size(before.1),
                        format_size(*memory_bytes),
                        add.len(),
                        add.iter()
                            .map(|h| self.hostname(h))
                            .collect::<Vec<_>>()
                            .join(", "),
                        release.len(),
                        release
                            .iter()
                            .map(|h| self.hostname(h))
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                );
                b.more.pools.push((name.clone(), Some(pool)));
                Ok(b.done(ApplyOutcome::Updated))
            }
            Command::DestroyPool {
                pool: name,
                at_unix_ms,
            } => {
                let mut pool = self
                    .pools
                    .get(name)
                    .cloned()
                    .ok_or_else(|| ApplyError::UnknownPool(name.clone()))?;
                if pool.phase == PoolPhase::Deleting {
                    return Ok(Change::unchanged(index));
                }
                let mut b = Builder {
                    index,
                    at_unix_ms: *at_unix_ms,
                    more: More::default(),
                };
                for member in pool.members.values_mut() {
                    // The cluster goes as a whole: no drain, no node deletion.
                    member.state = MemberState::Leaving {
                        drained: true,
                        deleted: true,
                        etcd_removed: true,
                    };
                }
                pool.phase = PoolPhase::Deleting;
                pool.phase_reason = "resetting every host".to_owned();
                // Steps still pending for this pool are moot.
                for task in self.tasks.values().filter(|t| t.pool == *name) {
                    b.more.tasks.push((task.task_id.clone(), None));
                }
                b.event(
                    name,
                    "",
                    "pool_deleting",
                    format!(
                        "pool {name} is being destroyed: resetting {} host(s)",
                        pool.members.len()
                    ),
                );
                b.more.pools.push((name.clone(), Some(pool)));
                Ok(b.done(ApplyOutcome::Updated))
            }
            Command::IssueTask { task } => {
                let fence_reset = task.kind == TaskKind::Reset
                    && self.host(&task.host_id).is_some_and(|h| {
                        h.pool.is_none() && h.fenced.as_ref().is_some_and(|f| f.pool == task.pool)
                    });
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
                Ok(b.done(ApplyOutcome::Updated))
            }
            Command::FinishTask {
                task_id,
                attempt,
                ok,
                error,
                join,
                kubeconfig,
                at_unix_ms,
            } => self.finish_task(
                index,
                task_id,
                *attempt,
                *ok,
                error,
                join.as_ref(),
                kubeconfig.as_ref(),
                *at_unix_ms,
            ),
            Command::SetPoolPhase {
                pool: name,
                phase,
                reason,
                at_unix_ms,
            } => {
                let mut pool = self
                    .pools
                    .get(name)
                    .cloned()
                    .ok_or_else(|| ApplyError::UnknownPool(name.clone()))?;
                if pool.phase == *phase && pool.phase_reason == *reason {
                    return Ok(Change::unchanged(index));
                }
                let mut b = Builder {
                    index,
                    at_unix_ms: *at_unix_ms,
                    more: More::default(),
                };
                b.event(
                    name,
                    "",
                    "pool_phase",
                    format!("pool {name} is {}: {reason}", phase.as_str()),
                );
                pool.phase = *phase;
                pool.phase_reason = reason.clone();
                b.more.pools.push((name.clone(), Some(pool)));
                Ok(b.done(ApplyOutcome::Updated))
            }
            Command::ReplaceMember {
                pool,
                host_id,
                replacements,
                why,
                at_unix_ms,
            } => self.replace_member(index, pool, host_id, replacements, why, *at_unix_ms),
            Command::DrainControlPlane {
                pool,
                host_id,
                replacement,
                at_unix_ms,
            } => self.drain_control_plane(index, pool, host_id, replacement, *at_unix_ms),
            Command::Alert {
                pool: name,
                host_id,
                kind,
                severity,
                message,
                degrade,
                at_unix_ms,
            } => {
                let mut b = Builder {
                    index,
                    at_unix_ms: *at_unix_ms,
                    more: More::default(),
                };
                if *degrade {
                    let mut pool = self
                        .pools
                        .get(name)
                        .cloned()
                        .ok_or_else(|| ApplyError::UnknownPool(name.clone()))?;
                    if pool.phase == PoolPhase::Deleting
                        || (pool.phase == PoolPhase::Degraded && pool.phase_reason == *message)
                    {
                        return Ok(Change::unchanged(index));
                    }
                    pool.phase = PoolPhase::Degraded;
                    pool.phase_reason = message.clone();
                    b.more.pools.push((name.clone(), Some(pool)));
                } else if crate::state::pool::is_edge_kind(kind)
                    && crate::state::pool::last_edge(self).is_some_and(|last| last.kind == *kind)
                {
                    // Edge-triggered (storm, storm_over): once per edge.
                    return Ok(Change::unchanged(index));
                }
                b.event_with(name, host_id, kind, *severity, message.clone());
                Ok(b.done(ApplyOutcome::Updated))
            }
            _ => unreachable!("plan_pool is only called with pool commands"),
        }
    }

    /// The pool `name`, cloned for a change; refused while it is deleting.
    fn pool_for_change(&self, name: &str) -> Result<PoolRecord, ApplyError> {
        let pool = self
            .pools
            .get(name)
            .cloned()
            .ok_or_else(|| ApplyError::UnknownPool(name.to_owned()))?;
        if pool.phase == PoolPhase::Deleting {
            return Err(refused(format!("pool {name} is being destroyed")));
        }
        Ok(pool)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_task(
        &self,
        index: u64,
        task_id: &str,
        attempt: u32,
        ok: bool,
        error: &str,
        join: Option<&crate::state::pool::JoinSecrets>,
        kubeconfig: Option<&Secret>,
        at_unix_ms: u64,
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
            b.event(
                &task.pool,
                &task.host_id,
                "task_failed",
                format!(
                    "pool {}: {} on {host} failed (attempt {attempt} of {MAX_TASK_ATTEMPTS}): {error}",
                    task.pool,
                    task.kind.as_str()
                ),
            );
            if last && pool.phase != PoolPhase::Deleting {
                pool.phase = PoolPhase::Degraded;
                pool.phase_reason =
                    format!("{} on {host} failed {attempt} times: {error}", task.kind.as_str());
            }
            b.more.tasks.push((
                task_id.to_owned(),
                Some(TaskRecord {
                    state: TaskState::Failed,
                    last_error: error.to_owned(),
                    retry_at_unix_ms: if last {
                        u64::MAX
                    } else {
                        at_unix_ms + retry_delay_ms(attempt)
                    },
                    ..task.clone()
                }),
            ));
            b.more.pools.push((task.pool.clone(), Some(pool)));
            return Ok(b.done(ApplyOutcome::Updated));
        }
        b.more.tasks.push((task_id.to_owned(), None));
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
            (_, None) => {}
        }
        b.event(&task.pool, &task.host_id, "task_done", done);
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
}

/// The host record of `host` removed from `pool` while down, fenced.
fn fenced(host: &HostRecord, pool: &str, node_name: &str, at_unix_ms: u64) -> HostRecord {
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
fn target_node(kind: &TaskKind) -> Option<&str> {
    match kind {
        TaskKind::DrainNode { target_node }
        | TaskKind::DeleteNode { target_node }
        | TaskKind::RemoveEtcdMember { target_node } => Some(target_node),
        _ => None,
    }
}

impl State {
    /// `DrainControlPlane`: `replacement` joins as a control plane and the
    /// live control plane `host_id` turns `leaving` (drain, etcd member
    /// removal, node deletion, reset: the planner orders them). Refused
    /// unless `host_id` is a joined control plane of a pool with more than
    /// one, so a repeat (after a leader change) changes nothing.
    fn drain_control_plane(
        &self,
        index: u64,
        name: &str,
        host_id: &str,
        replacement: &str,
        at_unix_ms: u64,
    ) -> Result<Change, ApplyError> {
        let mut pool = self.pool_for_change(name)?;
        let control_planes = pool
            .members
            .values()
            .filter(|m| m.role == Role::ControlPlane)
            .count();
        if control_planes < 2 {
            return Err(refused(format!(
                "pool {name} has a single control plane: it cannot be drained"
            )));
        }
        let member = pool
            .members
            .get_mut(host_id)
            .filter(|m| m.role == Role::ControlPlane && m.state == MemberState::Joined)
            .ok_or_else(|| {
                refused(format!(
                    "host {host_id} is not a joined control plane of pool {name}"
                ))
            })?;
        member.state = MemberState::Leaving {
            drained: false,
            deleted: false,
            etcd_removed: false,
        };
        let leaving_node = member.node_name.clone();
        let mut b = Builder {
            index,
            at_unix_ms,
            more: More::default(),
        };
        let host = self.joinable(replacement, name)?;
        pool.members.insert(
            replacement.to_owned(),
            Member {
                host_id: replacement.to_owned(),
                role: Role::ControlPlane,
                node_name: node_name(host),
                state: MemberState::Joining,
                order: pool.next_order,
                last_error: String::new(),
            },
        );
        pool.next_order += 1;
        b.more.hosts.push(HostRecord {
            pool: Some(name.to_owned()),
            ..host.clone()
        });
        pool.phase = PoolPhase::Resizing;
        pool.phase_reason = format!(
            "control plane {} joining to replace {} (drained by an admin)",
            self.hostname(replacement),
            self.hostname(host_id)
        );
        b.event(
            name,
            host_id,
            "control_plane_draining",
            format!(
                "pool {name}: draining control plane {} (node {leaving_node}); {} joins as a control plane \
                 first, then the old one is drained, its etcd member removed and its node deleted",
                self.hostname(host_id),
                self.hostname(replacement)
            ),
        );
        b.more.pools.push((name.to_owned(), Some(pool)));
        Ok(b.done(ApplyOutcome::Updated))
    }

    /// `ReplaceMember`: the dead member turns `replaced` (or, in a pool
    /// being destroyed, leaves at once), its replacements join, and the
    /// tasks addressed to it or about its node are dropped (the planner
    /// issues what is still needed on a healthy host).
    fn replace_member(
        &self,
        index: u64,
        name: &str,
        host_id: &str,
        replacements: &[String],
        why: &str,
        at_unix_ms: u64,
    ) -> Result<Change, ApplyError> {
        let mut pool = self
            .pools
            .get(name)
            .cloned()
            .ok_or_else(|| ApplyError::UnknownPool(name.to_owned()))?;
        let host = self
            .host(host_id)
            .ok_or_else(|| refused(format!("no host with id {host_id}")))?;
        if host.state != HostState::Down {
            return Err(refused(format!(
                "host {host_id} is {}, not down; it is not replaced",
                host.state.as_str()
            )));
        }
        let member = pool
            .members
            .get(host_id)
            .cloned()
            .ok_or_else(|| refused(format!("host {host_id} is not a member of pool {name}")))?;
        if matches!(member.state, MemberState::Replaced { .. }) {
            return Err(refused(format!(
                "host {host_id} is already being replaced in pool {name}"
            )));
        }
        let mut b = Builder {
            index,
            at_unix_ms,
            more: More::default(),
        };
        for task in self.tasks.values().filter(|t| {
            t.pool == name
                && (t.host_id == host_id || target_node(&t.kind) == Some(member.node_name.as_str()))
        }) {
            b.more.tasks.push((task.task_id.clone(), None));
        }
        if pool.phase == PoolPhase::Deleting {
            // The cluster goes as a whole: nothing to clean, fenced at once.
            pool.members.remove(host_id);
            b.more
                .hosts
                .push(fenced(host, name, &member.node_name, at_unix_ms));
            b.event(name, host_id, "host_fenced", why.to_owned());
            if pool.members.is_empty() {
                b.event(name, "", "pool_destroyed", format!("pool {name} destroyed"));
                b.more.pools.push((name.to_owned(), None));
            } else {
                b.more.pools.push((name.to_owned(), Some(pool)));
            }
            return Ok(b.done(ApplyOutcome::Updated));
        }
        let mut seen = std::collections::BTreeSet::new();
        for id in replacements {
            if !seen.insert(id.as_str()) {
                return Err(refused(format!("host {id} is listed twice")));
            }
            let joining = self.joinable(id, name)?;
            pool.members.insert(
                id.clone(),
                Member {
                    host_id: id.clone(),
                    role: member.role,
                    node_name: node_name(joining),
                    state: MemberState::Joining,
                    order: pool.next_order,
                    last_error: String::new(),
                },
            );
            pool.next_order += 1;
            b.more.hosts.push(HostRecord {
                pool: Some(name.to_owned()),
                ..joining.clone()
            });
        }
        if let Some(dead) = pool.members.get_mut(host_id) {
            // A control plane drained by an admin may have left etcd already.
            let etcd_gone = matches!(
                dead.state,
                MemberState::Leaving {
                    etcd_removed: true,
                    ..
                }
            );
            dead.state = MemberState::Replaced {
                etcd_removed: dead.role == Role::Worker || etcd_gone,
                deleted: false,
            };
        }
        pool.phase = PoolPhase::Healing;
        pool.phase_reason = format!(
            "replacing {} (down) with {} host(s)",
            self.hostname(host_id),
            replacements.len()
        );
        b.event(name, host_id, "host_replacing", why.to_owned());
        b.more.pools.push((name.to_owned(), Some(pool)));
        Ok(b.done(ApplyOutcome::Updated))
    }

    /// Members whose etcd member and node are gone leave `pool`; their
    /// hosts are fenced and their remaining tasks dropped.
    fn fence_cleaned_members(&self, pool: &mut PoolRecord, finished: &str, at_unix_ms: u64, b: &mut Builder) {
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
    fn finish_fence_reset(
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
            let last = task.attempt >= MAX_TASK_ATTEMPTS;
            b.event(
                &task.pool,
                &task.host_id,
                "task_failed",
                format!(
                    "reset of fenced host {host} failed (attempt {} of {MAX_TASK_ATTEMPTS}): {error}",
                    task.attempt
                ),
            );
            b.more.tasks.push((
                task.task_id.clone(),
                Some(TaskRecord {
                    state: TaskState::Failed,
                    last_error: error.to_owned(),
                    retry_at_unix_ms: if last {
                        u64::MAX
                    } else {
                        at_unix_ms + retry_delay_ms(task.attempt)
                    },
                    ..task.clone()
                }),
            ));
        }
        b.done(ApplyOutcome::Updated)
    }
}
