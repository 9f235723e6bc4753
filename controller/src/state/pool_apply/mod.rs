//! How pool commands change the state machine (the pool half of
//! [`State::plan`]). Pure like the rest of `plan`: the change is
//! computed from the current state and the command only.
//!
//! The rules that keep a host in at most one pool live here: a command that
//! would put a host that is not `ready`, or that already belongs to a pool,
//! into a pool is refused as a whole.
//!
//! - `lifecycle`: create, resize, destroy, phase, alerts.
//! - `tasks`: tasks issued and finished, fenced hosts' resets.
//! - `repair`: a dead member replaced, a control plane drained.
//! - `upgrade`: a Kubernetes upgrade started or resumed, and its steps.
//! - `backups`: etcd snapshots requested, taken, failed, deleted; the
//!   backup schedule.
//! - `certs`: certificate expiry reported, its alerts, and renewals.

mod backups;
pub mod certs;
mod lifecycle;
pub mod network;
mod repair;
mod tasks;
pub mod upgrade;

use crate::state::command::{Command, HostRecord, HostState};
use crate::state::pool::{Event, Member, MemberState, PoolPhase, PoolRecord, Role, Severity};
use crate::state::{ApplyError, ApplyOutcome, Change, More, State};

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
            audit: None,
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

    /// Admits `host_id` to `pool` as a joining member with `role`: it must
    /// be joinable; the host record now names the pool. Returns the host.
    fn admit(
        &self,
        pool: &mut PoolRecord,
        host_id: &str,
        role: Role,
        b: &mut Builder,
    ) -> Result<&HostRecord, ApplyError> {
        let name = pool.spec.name.clone();
        let host = self.joinable(host_id, &name)?;
        pool.members.insert(
            host_id.to_owned(),
            Member {
                host_id: host_id.to_owned(),
                role,
                node_name: node_name(host),
                state: MemberState::Joining,
                order: pool.next_order,
                last_error: String::new(),
                version: pool.join_version().to_owned(),
                certs: None,
            },
        );
        pool.next_order += 1;
        b.more.hosts.push(HostRecord {
            pool: Some(name),
            ..host.clone()
        });
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
            } => self.create_pool(
                index,
                spec,
                control_planes,
                workers,
                control_plane_endpoint,
                *at_unix_ms,
            ),
            Command::ResizePool {
                pool: name,
                cores,
                memory_bytes,
                add,
                release,
                lb_range,
                at_unix_ms,
            } => self.resize_pool(
                index,
                name,
                *cores,
                *memory_bytes,
                add,
                release,
                lb_range.as_deref(),
                *at_unix_ms,
            ),
            Command::DestroyPool {
                pool: name,
                at_unix_ms,
            } => self.destroy_pool(index, name, *at_unix_ms),
            Command::IssueTask { task } => self.issue_task(index, task),
            Command::FinishTask {
                task_id,
                attempt,
                ok,
                error,
                join,
                kubeconfig,
                at_unix_ms,
                images,
            } => self.finish_task(
                index,
                task_id,
                *attempt,
                *ok,
                error,
                join.as_ref(),
                kubeconfig.as_ref(),
                *at_unix_ms,
                images.as_ref(),
            ),
            Command::SetPoolPhase {
                pool: name,
                phase,
                reason,
                at_unix_ms,
            } => self.set_pool_phase(index, name, *phase, reason, *at_unix_ms),
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
            } => self.alert(
                index,
                name,
                host_id,
                kind,
                *severity,
                message,
                *degrade,
                *at_unix_ms,
            ),
            Command::UpgradePool {
                pool,
                version,
                max_unavailable,
                at_unix_ms,
            } => self.upgrade_pool(index, pool, version, *max_unavailable, *at_unix_ms),
            Command::ReportCerts {
                pool,
                reports,
                at_unix_ms,
            } => self.report_certs(index, pool, reports, *at_unix_ms),
            Command::RenewCerts { pool, at_unix_ms } => self.renew_certs(index, pool, *at_unix_ms),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::tests::facts;
    use crate::state::pool::{MAX_TASK_ATTEMPTS, PoolSpec};

    /// A state with hosts `ids` registered (ready, 8 cores each).
    fn fleet(ids: &[&str]) -> State {
        let mut sm = State::new();
        for id in ids {
            let register = Command::RegisterHost {
                host_id: (*id).to_owned(),
                agent_version: "0.1.0".to_owned(),
                facts: facts(id, 8),
                at_unix_ms: 1,
            };
            sm.apply(sm.applied_index() + 1, &register).unwrap();
        }
        sm
    }

    fn apply(sm: &mut State, command: &Command) -> Result<ApplyOutcome, ApplyError> {
        sm.apply(sm.applied_index() + 1, command)
    }

    fn create(name: &str, control_planes: &[&str], workers: &[&str]) -> Command {
        Command::CreatePool {
            spec: PoolSpec {
                name: name.to_owned(),
                cores: 8,
                memory_bytes: 1 << 30,
                control_planes: control_planes.len() as u32,
                kubernetes_version: "v1.32.0".to_owned(),
                pod_network_cidr: "10.244.0.0/16".to_owned(),
                service_cidr: "10.96.0.0/12".to_owned(),
                vip: String::new(),
                lb_range: String::new(),
                ..Default::default()
            },
            control_planes: control_planes.iter().map(|h| (*h).to_owned()).collect(),
            workers: workers.iter().map(|h| (*h).to_owned()).collect(),
            control_plane_endpoint: "10.0.0.1:6443".to_owned(),
            at_unix_ms: 10,
        }
    }

    fn refusal(result: Result<ApplyOutcome, ApplyError>) -> String {
        match result {
            Err(ApplyError::Refused(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// [`create`] with a VIP and an LB range.
    fn create_with(name: &str, hosts: &[&str], vip: &str, lb_range: &str) -> Command {
        let mut command = create(name, hosts, &[]);
        if let Command::CreatePool { spec, .. } = &mut command {
            spec.vip = vip.to_owned();
            spec.lb_range = lb_range.to_owned();
        }
        command
    }

    #[test]
    fn of_two_creates_with_the_same_vip_or_overlapping_lb_ranges_the_second_is_refused() {
        let mut sm = fleet(&["a", "b", "c", "d", "e"]);
        apply(
            &mut sm,
            &create_with("web", &["a"], "198.51.100.1", "198.51.100.16/28"),
        )
        .unwrap();
        assert_eq!(sm.pools()["web"].spec.vip, "198.51.100.1");
        let before = sm.applied_index();
        let message = refusal(apply(&mut sm, &create_with("db", &["b"], "198.51.100.1", "")));
        assert_eq!(
            message,
            "pool db: vip: 198.51.100.1 overlaps pool web's vip 198.51.100.1 (VIPs and LB ranges belong to one pool)"
        );
        let message = refusal(apply(
            &mut sm,
            &create_with("db", &["b"], "198.51.100.2", "198.51.100.20-198.51.100.40"),
        ));
        assert!(
            message
                .starts_with("pool db: lb_range: 198.51.100.20-198.51.100.40 overlaps pool web's lb_range"),
            "{message}"
        );
        let message = refusal(apply(&mut sm, &create_with("db", &["b"], "10.96.0.10", "")));
        assert!(
            message.starts_with("pool db: vip: 10.96.0.10 overlaps this pool's service_cidr"),
            "{message}"
        );
        // A host's address (the test facts give every host 10.0.0.1).
        let message = refusal(apply(&mut sm, &create_with("db", &["b"], "10.0.0.1", "")));
        assert!(message.contains("holds host"), "{message}");
        assert_eq!(sm.applied_index(), before, "nothing was applied");
        assert!(sm.host("b").unwrap().pool.is_none());
        apply(
            &mut sm,
            &create_with("db", &["b"], "198.51.100.2", "198.51.100.32/28"),
        )
        .unwrap();

        // A resize moving the LB range is checked the same way and makes
        // the addons task run again.
        let resize = |range: &str| Command::ResizePool {
            pool: "db".into(),
            cores: 8,
            memory_bytes: 1 << 30,
            add: vec![],
            release: vec![],
            lb_range: Some(range.into()),
            at_unix_ms: 20,
        };
        let message = refusal(apply(&mut sm, &resize("198.51.100.1-198.51.100.3")));
        assert!(message.starts_with("pool db: lb_range: "), "{message}");
        assert_eq!(sm.pools()["db"].spec.lb_range, "198.51.100.32/28");
        apply(&mut sm, &resize("198.51.100.64/28")).unwrap();
        assert_eq!(sm.pools()["db"].spec.lb_range, "198.51.100.64/28");
        assert!(!sm.pools()["db"].addons_installed);
    }

    #[test]
    fn a_create_puts_every_host_in_the_pool_or_none() {
        let mut sm = fleet(&["a", "b", "c"]);
        apply(&mut sm, &create("web", &["a"], &["b"])).unwrap();
        assert_eq!(sm.host("a").unwrap().pool.as_deref(), Some("web"));
        assert_eq!(sm.host("b").unwrap().pool.as_deref(), Some("web"));
        let pool = &sm.pools()["web"];
        assert_eq!(pool.phase, PoolPhase::Provisioning);
        assert_eq!(pool.members.len(), 2);

        // A second pool naming a taken host is refused whole: "c" stays free.
        let before = sm.applied_index();
        let message = refusal(apply(&mut sm, &create("db", &["c"], &["b"])));
        assert!(
            message.contains("host b already belongs to pool web"),
            "{message}"
        );
        assert!(sm.host("c").unwrap().pool.is_none());
        assert!(!sm.pools().contains_key("db"));
        assert_eq!(sm.applied_index(), before, "a refused command is not applied");

        let message = refusal(apply(&mut sm, &create("web", &["c"], &[])));
        assert!(message.contains("already exists"), "{message}");
        let message = refusal(apply(&mut sm, &create("db", &["c"], &["c"])));
        assert!(message.contains("listed twice"), "{message}");
        let message = refusal(apply(&mut sm, &create("db", &[], &["c"])));
        assert!(message.contains("at least one control plane"), "{message}");
    }

    #[test]
    fn a_host_that_is_not_ready_cannot_join() {
        let mut sm = fleet(&["a", "b"]);
        let down = Command::SetHostState {
            host_id: "b".to_owned(),
            state: HostState::Down,
            reason: "silent".to_owned(),
            at_unix_ms: 5,
        };
        apply(&mut sm, &down).unwrap();
        let message = refusal(apply(&mut sm, &create("web", &["a"], &["b"])));
        assert!(message.contains("host b is down, not ready"), "{message}");
        assert!(sm.host("a").unwrap().pool.is_none());
    }

    #[test]
    fn phase_changes_and_alerts_are_recorded_once() {
        let mut sm = fleet(&["a"]);
        apply(&mut sm, &create("web", &["a"], &[])).unwrap();
        let ready = Command::SetPoolPhase {
            pool: "web".to_owned(),
            phase: PoolPhase::Ready,
            reason: "all members joined".to_owned(),
            at_unix_ms: 20,
        };
        assert_eq!(apply(&mut sm, &ready).unwrap(), ApplyOutcome::Updated);
        assert_eq!(apply(&mut sm, &ready).unwrap(), ApplyOutcome::Unchanged);
        assert_eq!(sm.pools()["web"].phase, PoolPhase::Ready);

        let storm = Command::Alert {
            pool: String::new(),
            host_id: String::new(),
            kind: crate::state::pool::STORM.to_owned(),
            severity: Severity::Alert,
            message: "many hosts silent".to_owned(),
            degrade: false,
            at_unix_ms: 30,
        };
        assert_eq!(apply(&mut sm, &storm).unwrap(), ApplyOutcome::Updated);
        assert_eq!(
            apply(&mut sm, &storm).unwrap(),
            ApplyOutcome::Unchanged,
            "one event per edge"
        );
        assert!(crate::state::pool::storm_raised(&sm));

        let degrade = Command::Alert {
            pool: "web".to_owned(),
            host_id: "a".to_owned(),
            kind: "member_failed".to_owned(),
            severity: Severity::Alert,
            message: "join failed".to_owned(),
            degrade: true,
            at_unix_ms: 40,
        };
        apply(&mut sm, &degrade).unwrap();
        let pool = &sm.pools()["web"];
        assert_eq!(pool.phase, PoolPhase::Degraded);
        assert_eq!(pool.phase_reason, "join failed");
        assert_eq!(apply(&mut sm, &degrade).unwrap(), ApplyOutcome::Unchanged);
    }

    #[test]
    fn a_failed_images_step_is_its_own_event_naming_host_and_image_and_a_good_one_is_reported() {
        use crate::state::pool::{ImagesStep, TaskKind, TaskRecord, TaskState};
        let mut sm = fleet(&["a"]);
        apply(&mut sm, &create("web", &["a"], &[])).unwrap();
        let task = |attempt| TaskRecord {
            task_id: "web.init".to_owned(),
            host_id: "a".to_owned(),
            pool: "web".to_owned(),
            node_name: "web-a".to_owned(),
            kind: TaskKind::InitControlPlane,
            attempt,
            state: TaskState::Pending,
            issued_at_unix_ms: 20,
            deadline_unix_ms: 1_000_000,
            retry_at_unix_ms: 0,
            last_error: String::new(),
        };
        let finish = |attempt, ok, images: ImagesStep| Command::FinishTask {
            task_id: "web.init".to_owned(),
            attempt,
            ok,
            error: if ok {
                String::new()
            } else {
                "images step: exit code 1".to_owned()
            },
            join: None,
            kubeconfig: None,
            at_unix_ms: 30,
            images: Some(images),
        };
        let kinds = |sm: &State| sm.events().iter().map(|e| e.kind.clone()).collect::<Vec<_>>();
        for attempt in 1..=MAX_TASK_ATTEMPTS {
            apply(&mut sm, &Command::IssueTask { task: task(attempt) }).unwrap();
            let missing = ImagesStep {
                ok: false,
                failed_image: "m.example/k8s/etcd:3.5.16-0".to_owned(),
                ..ImagesStep::default()
            };
            apply(&mut sm, &finish(attempt, false, missing)).unwrap();
        }
        let failed: Vec<_> = sm
            .events()
            .iter()
            .filter(|e| e.kind == "images_pull_failed")
            .collect();
        assert_eq!(failed.len(), 3, "{:?}", kinds(&sm));
        assert!(
            failed[0].message.contains(
                "image m.example/k8s/etcd:3.5.16-0 could not be pulled on a, before init_control_plane"
            ),
            "{}",
            failed[0].message
        );
        assert!(
            !kinds(&sm).contains(&"task_failed".to_owned()),
            "not a failed init"
        );
        let pool = &sm.pools()["web"];
        assert_eq!(pool.phase, PoolPhase::Degraded);
        assert!(
            pool.phase_reason
                .starts_with("image m.example/k8s/etcd:3.5.16-0 missing on a (3 attempts)"),
            "{}",
            pool.phase_reason
        );

        // A later good run reports what it pulled and the addon images.
        apply(
            &mut sm,
            &Command::IssueTask {
                task: task(MAX_TASK_ATTEMPTS + 1),
            },
        )
        .unwrap();
        let good = ImagesStep {
            ok: true,
            pulled: vec!["m.example/k8s/etcd:3.5.16-0".to_owned()],
            failed_image: String::new(),
            addon_images: vec!["m.example/k8s/flannel-io/flannel:v0.26.7".to_owned()],
        };
        apply(&mut sm, &finish(MAX_TASK_ATTEMPTS + 1, true, good)).unwrap();
        let pulled = sm
            .events()
            .iter()
            .find(|e| e.kind == "images_pulled")
            .expect("images_pulled");
        assert_eq!(
            pulled.message,
            "pool web: 1 Kubernetes images present on a before init_control_plane: m.example/k8s/etcd:3.5.16-0; addon images (pulled by the runtime when their pods start): m.example/k8s/flannel-io/flannel:v0.26.7"
        );
    }

    #[test]
    fn a_destroyed_pool_refuses_further_changes() {
        let mut sm = fleet(&["a", "b", "c"]);
        apply(&mut sm, &create("web", &["a"], &["b"])).unwrap();
        let destroy = Command::DestroyPool {
            pool: "web".to_owned(),
            at_unix_ms: 50,
        };
        apply(&mut sm, &destroy).unwrap();
        assert_eq!(sm.pools()["web"].phase, PoolPhase::Deleting);
        let resize = Command::ResizePool {
            pool: "web".to_owned(),
            cores: 16,
            memory_bytes: 2 << 30,
            add: vec!["c".to_owned()],
            release: vec![],
            lb_range: None,
            at_unix_ms: 60,
        };
        assert!(apply(&mut sm, &resize).is_err());
        assert!(
            sm.host("c").unwrap().pool.is_none(),
            "nothing joins a pool being deleted"
        );
    }

    #[test]
    fn a_resize_that_keeps_the_size_says_so_instead_of_from_x_to_x() {
        let mut sm = fleet(&["a", "b", "c", "d"]);
        apply(&mut sm, &create("web", &["a"], &["b"])).unwrap();
        let swap = Command::ResizePool {
            pool: "web".to_owned(),
            cores: 8,
            memory_bytes: 1 << 30,
            add: vec!["c".to_owned()],
            release: vec!["b".to_owned()],
            lb_range: None,
            at_unix_ms: 60,
        };
        apply(&mut sm, &swap).unwrap();
        let said = &sm.events().back().unwrap().message;
        assert!(
            said.starts_with("pool web keeps 8 cores / 1GiB: +1 worker(s) ("),
            "{said}"
        );
        assert!(!said.contains("resized from"), "{said}");
        let grow = Command::ResizePool {
            pool: "web".to_owned(),
            cores: 16,
            memory_bytes: 2 << 30,
            add: vec!["d".to_owned()],
            release: vec![],
            lb_range: None,
            at_unix_ms: 70,
        };
        apply(&mut sm, &grow).unwrap();
        let said = &sm.events().back().unwrap().message;
        assert!(
            said.starts_with("pool web resized from 8 cores / 1GiB to 16 cores / 2GiB: +1 worker(s)"),
            "{said}"
        );
    }

    #[test]
    fn node_names_are_lower_case_dns_characters() {
        let mut host = fleet(&["a"]).host("a").unwrap().clone();
        host.facts.hostname = "Rack1_Node 7.example".to_owned();
        assert_eq!(node_name(&host), "rack1-node-7.example");
    }
}
