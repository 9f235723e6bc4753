//! A pool's life in the state machine: created (all hosts ready and in no
//! pool, or refused whole), resized, destroyed, its phase set, alerts.

use rpool_proto::units::format_size;

use super::{Builder, refused};
use crate::state::pool::{MemberState, PoolPhase, PoolRecord, PoolSpec, Role, Secret, Severity};
use crate::state::{ApplyError, ApplyOutcome, Change, More, State};

impl State {
    /// Creates a pool of hosts that are all ready and in no pool, or refuses it whole.
    pub(super) fn create_pool(
        &self,
        index: u64,
        spec: &PoolSpec,
        control_planes: &[String],
        workers: &[String],
        control_plane_endpoint: &str,
        at_unix_ms: u64,
    ) -> Result<Change, ApplyError> {
        if self.pools.contains_key(&spec.name) {
            return Err(refused(format!("pool {} already exists", spec.name)));
        }
        let mut b = Builder {
            index,
            at_unix_ms: at_unix_ms,
            more: More::default(),
        };
        let mut pool = PoolRecord {
            spec: spec.clone(),
            phase: PoolPhase::Provisioning,
            phase_reason: "placing and joining hosts".to_owned(),
            members: Default::default(),
            control_plane_endpoint: control_plane_endpoint.to_owned(),
            created_at_unix_ms: at_unix_ms,
            join: None,
            kubeconfig: Secret::default(),
            addons_installed: false,
            next_order: 0,
            autoscale: Default::default(),
            upgrade: None,
            backups: Default::default(),
            cert_alerted_days: 0,
            cert_renewal: None,
        };
        crate::state::backups::check_schedule(spec.backup_interval_ms, spec.backup_keep)
            .map_err(|(field, message)| refused(format!("{field}: {message}")))?;
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
            let host = self.admit(&mut pool, host_id, role, &mut b)?;
            if role == Role::Worker {
                cores += u64::from(host.facts.inventory.logical_cores);
                memory += host.facts.inventory.memory_total_bytes;
            }
        }
        if control_planes.is_empty() {
            return Err(refused("a pool needs at least one control plane"));
        }
        // Checked here, on the committed state: of two racing creates with
        // the same VIP or overlapping LB ranges, the second is refused.
        let size = u32::try_from(seen.len()).unwrap_or(u32::MAX);
        self.check_pool_addresses(spec, size)
            .map_err(|e| refused(format!("pool {}: {e}", spec.name)))?;
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

    /// Adds and releases workers of a pool; the new requested size is recorded.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn resize_pool(
        &self,
        index: u64,
        name: &str,
        cores: u64,
        memory_bytes: u64,
        add: &[String],
        release: &[String],
        lb_range: Option<&str>,
        at_unix_ms: u64,
    ) -> Result<Change, ApplyError> {
        let mut pool = self.pool_for_change(name)?;
        let mut b = Builder {
            index,
            at_unix_ms: at_unix_ms,
            more: More::default(),
        };
        let lb_changed = lb_range.is_some_and(|r| r != pool.spec.lb_range);
        if let Some(range) = lb_range.filter(|_| lb_changed) {
            pool.spec.lb_range = range.to_owned();
            let size = u32::try_from(pool.members.len() + add.len()).unwrap_or(u32::MAX);
            self.check_pool_addresses(&pool.spec, size)
                .map_err(|e| refused(format!("pool {name}: {e}")))?;
            // The addons task applies MetalLB's address pool again.
            pool.addons_installed = false;
            b.event(
                name,
                "",
                "pool_lb_range",
                format!("pool {name}: service load balancers now take addresses from {range}"),
            );
        }
        for host_id in add {
            self.admit(&mut pool, host_id, Role::Worker, &mut b)?;
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
        pool.spec.cores = cores;
        pool.spec.memory_bytes = memory_bytes;
        pool.phase = PoolPhase::Resizing;
        pool.phase_reason = format!("{} host(s) joining, {} leaving", add.len(), release.len());
        let names = |hosts: &[String]| {
            hosts
                .iter()
                .map(|h| self.hostname(h))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let moves = format!(
            "+{} worker(s) ({}), -{} worker(s) ({})",
            add.len(),
            names(add),
            release.len(),
            names(release)
        );
        let message = if before == (cores, memory_bytes) {
            // A drain or a rebalance: the members change, the size does not.
            format!(
                "pool {name} keeps {cores} cores / {}: {moves}",
                format_size(memory_bytes)
            )
        } else {
            format!(
                "pool {name} resized from {} cores / {} to {cores} cores / {}: {moves}",
                before.0,
                format_size(before.1),
                format_size(memory_bytes),
            )
        };
        b.event(name, "", "pool_resized", message);
        b.more.pools.push((name.to_owned(), Some(pool)));
        Ok(b.done(ApplyOutcome::Updated))
    }

    /// Starts deleting a pool: its members are reset, then released.
    pub(super) fn destroy_pool(&self, index: u64, name: &str, at_unix_ms: u64) -> Result<Change, ApplyError> {
        let mut pool = self
            .pools
            .get(name)
            .cloned()
            .ok_or_else(|| ApplyError::UnknownPool(name.to_owned()))?;
        if pool.phase == PoolPhase::Deleting {
            return Ok(Change::unchanged(index));
        }
        let mut b = Builder {
            index,
            at_unix_ms: at_unix_ms,
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
        b.more.pools.push((name.to_owned(), Some(pool)));
        Ok(b.done(ApplyOutcome::Updated))
    }

    /// Sets a pool's phase and the reason shown for it.
    pub(super) fn set_pool_phase(
        &self,
        index: u64,
        name: &str,
        phase: PoolPhase,
        reason: &str,
        at_unix_ms: u64,
    ) -> Result<Change, ApplyError> {
        let mut pool = self
            .pools
            .get(name)
            .cloned()
            .ok_or_else(|| ApplyError::UnknownPool(name.to_owned()))?;
        if pool.phase == phase && pool.phase_reason == *reason {
            return Ok(Change::unchanged(index));
        }
        let mut b = Builder {
            index,
            at_unix_ms: at_unix_ms,
            more: More::default(),
        };
        b.event(
            name,
            "",
            "pool_phase",
            format!("pool {name} is {}: {reason}", phase.as_str()),
        );
        pool.phase = phase;
        pool.phase_reason = reason.to_owned();
        b.more.pools.push((name.to_owned(), Some(pool)));
        Ok(b.done(ApplyOutcome::Updated))
    }

    /// Records an alert event; optionally marks the pool degraded. Edge kinds (storm, storm_over) once per edge.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn alert(
        &self,
        index: u64,
        name: &str,
        host_id: &str,
        kind: &str,
        severity: Severity,
        message: &str,
        degrade: bool,
        at_unix_ms: u64,
    ) -> Result<Change, ApplyError> {
        let mut b = Builder {
            index,
            at_unix_ms: at_unix_ms,
            more: More::default(),
        };
        if degrade {
            let mut pool = self
                .pools
                .get(name)
                .cloned()
                .ok_or_else(|| ApplyError::UnknownPool(name.to_owned()))?;
            if pool.phase == PoolPhase::Deleting
                || (pool.phase == PoolPhase::Degraded && pool.phase_reason == *message)
            {
                return Ok(Change::unchanged(index));
            }
            pool.phase = PoolPhase::Degraded;
            pool.phase_reason = message.to_owned();
            b.more.pools.push((name.to_owned(), Some(pool)));
        } else if crate::state::pool::is_edge_kind(kind)
            && crate::state::pool::last_edge(self).is_some_and(|last| last.kind == *kind)
        {
            // Edge-triggered (storm, storm_over): once per edge.
            return Ok(Change::unchanged(index));
        }
        b.event_with(name, host_id, kind, severity, message.to_owned());
        Ok(b.done(ApplyOutcome::Updated))
    }
}
