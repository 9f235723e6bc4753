//! Repairs in the state machine: a dead member replaced by healing, and a
//! live control plane drained in favour of a new one.

use super::tasks::{fenced, target_node};
use super::{Builder, refused};
use crate::state::command::HostState;
use crate::state::pool::{MemberState, PoolPhase, Role};
use crate::state::{ApplyError, ApplyOutcome, Change, More, State};

impl State {
    /// `DrainControlPlane`: `replacement` joins as a control plane and the
    /// live control plane `host_id` turns `leaving` (drain, etcd member
    /// removal, node deletion, reset: the planner orders them). Refused
    /// unless `host_id` is a joined control plane of a pool with more than
    /// one, so a repeat (after a leader change) changes nothing.
    pub(super) fn drain_control_plane(
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
        self.admit(&mut pool, replacement, Role::ControlPlane, &mut b)?;
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
    pub(super) fn replace_member(
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
            self.admit(&mut pool, id, member.role, &mut b)?;
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
}
