//! The test world of the policy modules: a replicated state driven purely
//! by the planner's commands, with each issued task "run" by finishing it
//! as an agent would. No sockets, no processes, no clock.

use crate::config::HealingConfig;
use crate::policy::planner::plan_with;
use crate::state::State;
use crate::state::command::{Command, HostState, tests::facts};
use crate::state::pool::{
    JoinSecrets, PoolRecord, PoolSpec, Secret, TaskKind, TaskRecord, TaskState, ZonePolicy,
};

pub const GIB: u64 = 1 << 30;

/// Name of the pool [`World::create`] makes.
pub const POOL: &str = "web";

pub struct World {
    pub sm: State,
    pub now: u64,
    pub config: HealingConfig,
    /// When true, tasks of hosts that are not ready get no answer (their
    /// agents are gone); otherwise every pending task is finished.
    pub only_ready_hosts_answer: bool,
    /// The VIP [`World::create`] gives the pool ("" = none: the endpoint is
    /// the first control plane).
    pub vip: String,
    /// The zone policy [`World::create`] gives the pool (default: any).
    pub zones: ZonePolicy,
}

impl World {
    /// Registered hosts: (id, zone, cores).
    pub fn new(hosts: &[(&str, &str, u32)]) -> World {
        let mut w = World {
            sm: State::new(),
            now: 1_000,
            // Replacement as soon as a host is down: the clock stands
            // still in these tables; the settle wait has its own tests
            // (`policy::healing`).
            config: HealingConfig {
                settle_ms: 0,
                ..HealingConfig::default()
            },
            only_ready_hosts_answer: false,
            vip: String::new(),
            zones: ZonePolicy::default(),
        };
        for (id, zone, cores) in hosts {
            let mut f = facts(id, *cores);
            f.zone = zone.to_string();
            w.apply(Command::RegisterHost {
                host_id: id.to_string(),
                agent_version: "0.1.0".into(),
                facts: f,
                at_unix_ms: 1,
            });
        }
        w
    }

    /// Applies `command` at the next index; panics if it is refused.
    pub fn apply(&mut self, command: Command) {
        let index = self.sm.applied_index() + 1;
        self.sm
            .apply(index, &command)
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    }

    /// Creates pool [`POOL`] on these hosts, its endpoint on the first
    /// control plane (or `VIP:6443` with [`World::vip`] set).
    pub fn create(&mut self, control_planes: &[&str], workers: &[&str], cores: u64, memory_bytes: u64) {
        self.apply(Command::CreatePool {
            spec: PoolSpec {
                name: POOL.into(),
                cores,
                memory_bytes,
                control_planes: control_planes.len() as u32,
                kubernetes_version: "v1.32.0".into(),
                pod_network_cidr: "10.244.0.0/16".into(),
                service_cidr: "10.96.0.0/12".into(),
                vip: self.vip.clone(),
                lb_range: String::new(),
                zones: self.zones.clone(),
                ..Default::default()
            },
            control_planes: control_planes.iter().map(|s| s.to_string()).collect(),
            workers: workers.iter().map(|s| s.to_string()).collect(),
            control_plane_endpoint: if self.vip.is_empty() {
                format!("{}:6443", control_planes.first().copied().unwrap_or_default())
            } else {
                format!("{}:6443", self.vip)
            },
            at_unix_ms: self.now,
        });
    }

    /// Plans once and applies; returns "kind@host" of issued tasks,
    /// "replace HOST by A+B" and "alert KIND" for the other commands that
    /// matter.
    pub fn plan(&mut self) -> Vec<String> {
        let mut seen = Vec::new();
        for command in plan_with(&self.sm, self.now, &self.config) {
            match &command {
                Command::IssueTask { task } => seen.push(format!("{}@{}", task.kind.as_str(), task.host_id)),
                Command::ReplaceMember {
                    host_id,
                    replacements,
                    ..
                } => seen.push(format!("replace {host_id} by {}", replacements.join("+"))),
                Command::Alert { kind, .. } => seen.push(format!("alert {kind}")),
                _ => {}
            }
            self.apply(command);
        }
        seen
    }

    /// Like [`World::plan`], only the issued tasks.
    pub fn plan_tasks(&mut self) -> Vec<String> {
        self.plan().into_iter().filter(|s| s.contains('@')).collect()
    }

    /// Finishes pending tasks successfully, as agents would.
    pub fn run_tasks(&mut self) {
        let pending: Vec<TaskRecord> = self
            .sm
            .tasks()
            .values()
            .filter(|t| t.state == TaskState::Pending)
            .filter(|t| {
                !self.only_ready_hosts_answer
                    || self
                        .sm
                        .host(&t.host_id)
                        .is_some_and(|h| h.state == HostState::Ready)
            })
            .cloned()
            .collect();
        for task in pending {
            let endpoint = self
                .sm
                .pools()
                .get(&task.pool)
                .map(|p| p.control_plane_endpoint.clone())
                .unwrap_or_default();
            let join =
                matches!(task.kind, TaskKind::InitControlPlane | TaskKind::RefreshJoinToken).then(|| {
                    JoinSecrets {
                        control_plane_endpoint: endpoint,
                        token: Secret::new("abcdef.0123456789abcdef"),
                        ca_cert_hash: format!("sha256:{}", "0".repeat(64)),
                        certificate_key: Secret::new("1".repeat(64)),
                        token_expires_unix_ms: self.now + 24 * 3_600_000,
                        certificate_key_expires_unix_ms: self.now + 2 * 3_600_000,
                    }
                });
            self.apply(Command::FinishTask {
                task_id: task.task_id.clone(),
                attempt: task.attempt,
                ok: true,
                error: String::new(),
                join,
                kubeconfig: Some(Secret::new("apiVersion: v1")),
                images: None,
                at_unix_ms: self.now,
            });
        }
    }

    /// Plans and runs until a round sees nothing (bounded); returns
    /// everything seen.
    pub fn settle(&mut self) -> Vec<String> {
        let mut all = Vec::new();
        for _ in 0..30 {
            let seen = self.plan();
            self.run_tasks();
            if seen.is_empty() {
                return all;
            }
            all.extend(seen);
        }
        panic!("never settled: {all:?}");
    }

    /// Plans and runs until no task is issued and none is left, then plans
    /// once more (bounded).
    pub fn settle_idle(&mut self) {
        for _ in 0..20 {
            let issued = self.plan_tasks();
            self.run_tasks();
            if issued.is_empty() && self.sm.tasks().is_empty() {
                self.plan_tasks();
                return;
            }
        }
        panic!("the pool never settled: {:?}", self.sm.tasks());
    }

    /// Sets a host's state (as liveness would).
    pub fn set(&mut self, host: &str, state: HostState) {
        self.apply(Command::SetHostState {
            host_id: host.into(),
            state,
            reason: "no heartbeat for 5.0s".into(),
            at_unix_ms: self.now,
        });
    }

    /// Pool [`POOL`].
    pub fn pool(&self) -> &PoolRecord {
        self.sm.pools().get(POOL).expect("pool web")
    }
}
