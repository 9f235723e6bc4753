//! The e2e world shared by the pool tests: a controller trio with fast
//! liveness, agents on the given profiles, and kubesim, with helpers to
//! reach the leader, wait on pools and events, kill and revive hosts the
//! way `rpoolctl sandbox kill-host` does, and read what kubesim holds.
//! A test module adds what only it needs as its own `impl World` block.

use std::collections::BTreeMap;
use std::time::Duration;

use rpool_proto::v1::admin_service_client::AdminServiceClient;
use rpool_proto::v1::{CreatePoolRequest, Event, GetPoolRequest, ListEventsRequest, Pool, PoolSpec};
use rpool_tests::{Agent, Cluster, Kubesim, Liveness, Profile, TEST_RAFT, by_hostname, eventually};
use tonic::transport::Channel;

/// One kubesim cluster: node name → node root (`None` once reset), and
/// its etcd member names.
pub(crate) type SimCluster = (BTreeMap<String, Option<String>>, Vec<String>);

pub(crate) struct World {
    pub(crate) root: tempfile::TempDir,
    pub(crate) cluster: Cluster,
    pub(crate) agents: Vec<Agent>,
    pub(crate) kubesim: Kubesim,
}

impl World {
    pub(crate) async fn start(profiles: Vec<Profile>) -> anyhow::Result<World> {
        let root = tempfile::tempdir()?;
        let cluster = Cluster::start(root.path(), 3, Liveness::FAST, TEST_RAFT).await?;
        let agents = cluster.start_agents(root.path(), profiles).await?;
        let kubesim = Kubesim::new(root.path())?;
        Ok(World {
            root,
            cluster,
            agents,
            kubesim,
        })
    }

    pub(crate) async fn admin(&self) -> anyhow::Result<AdminServiceClient<Channel>> {
        let leader = self.cluster.leader().await?;
        self.cluster
            .controllers
            .iter()
            .find(|c| c.id == leader)
            .expect("leader is one of ours")
            .admin()
            .await
    }

    pub(crate) fn agent(&mut self, hostname: &str) -> &mut Agent {
        self.agents
            .iter_mut()
            .find(|a| a.profile.hostname == hostname)
            .expect("agent")
    }

    pub(crate) fn node_root(&self, hostname: &str) -> std::path::PathBuf {
        self.agents
            .iter()
            .find(|a| a.profile.hostname == hostname)
            .expect("agent")
            .dir
            .join("node")
    }

    /// What `rpoolctl sandbox kill-host` does: the agent dies, kubesim
    /// marks its node dead.
    pub(crate) fn kill_host(&mut self, hostname: &str) -> anyhow::Result<()> {
        std::fs::write(self.node_root(hostname).join("kubesim-down"), b"")?;
        self.agent(hostname).kill();
        Ok(())
    }

    /// What `rpoolctl sandbox revive-host` does.
    pub(crate) fn revive_host(&mut self, hostname: &str) -> anyhow::Result<()> {
        std::fs::remove_file(self.node_root(hostname).join("kubesim-down"))?;
        self.agent(hostname).restart()
    }

    pub(crate) async fn pool(&self, name: &str) -> Option<Pool> {
        let mut admin = self.admin().await.ok()?;
        admin
            .get_pool(GetPoolRequest { name: name.into() })
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    pub(crate) async fn wait_pool(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&Pool) -> bool,
    ) -> anyhow::Result<Pool> {
        self.wait_pool_within(name, what, Duration::from_secs(60), done)
            .await
    }

    /// The pool once `done` holds for it, waiting at most `within`.
    pub(crate) async fn wait_pool_within(
        &self,
        name: &str,
        what: &str,
        within: Duration,
        done: impl Fn(&Pool) -> bool,
    ) -> anyhow::Result<Pool> {
        eventually(within, what, || async {
            let pool = self.pool(name).await;
            let seen = pool.as_ref().map(|p| {
                (
                    p.phase.clone(),
                    p.phase_reason.clone(),
                    p.members
                        .iter()
                        .map(|m| format!("{}:{}:{}", m.hostname, m.role, m.state))
                        .collect::<Vec<_>>(),
                )
            });
            (pool.filter(|p| done(p)), seen)
        })
        .await
    }

    pub(crate) async fn create(&self, spec: PoolSpec) -> anyhow::Result<Pool> {
        let name = spec.name.clone();
        self.admin()
            .await?
            .create_pool(CreatePoolRequest {
                spec: Some(spec),
                dry_run: false,
            })
            .await?;
        self.wait_pool(&name, "pool ready", |p| p.phase == "ready").await
    }

    pub(crate) async fn events(&self) -> Vec<Event> {
        match self.admin().await {
            Ok(mut admin) => admin
                .list_events(ListEventsRequest {
                    pool: String::new(),
                    after_index: 0,
                    limit: 1000,
                    kind: String::new(),
                })
                .await
                .map(|r| r.into_inner().events)
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    pub(crate) async fn wait_event(&self, kind: &str, about: &str) -> anyhow::Result<Event> {
        eventually(
            Duration::from_secs(60),
            &format!("a {kind} event about {about}"),
            || async {
                let events = self.events().await;
                let found = events
                    .iter()
                    .find(|e| e.kind == kind && e.message.contains(about))
                    .cloned();
                let kinds: Vec<String> = events.iter().rev().take(8).map(|e| e.message.clone()).collect();
                (found, kinds)
            },
        )
        .await
    }

    pub(crate) async fn host_state(&self, hostname: &str) -> Option<(i32, String)> {
        let hosts = self.cluster.hosts().await.ok()?;
        by_hostname(&hosts, hostname).map(|h| (h.state, h.pool.clone()))
    }

    /// Kubesim's clusters: for each, node name → node root (None once
    /// reset), and etcd member names.
    pub(crate) fn kubesim_clusters(&self) -> anyhow::Result<Vec<SimCluster>> {
        let mut out = Vec::new();
        let dir = self.kubesim.state_dir.join("clusters");
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path().join("cluster.json");
            let cluster: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
            let nodes = cluster["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| {
                    (
                        n["name"].as_str().unwrap_or_default().to_string(),
                        n["node_root"].as_str().map(str::to_string),
                    )
                })
                .collect();
            let etcd = cluster["etcd_members"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| m["name"].as_str().unwrap_or_default().to_string())
                .collect();
            out.push((nodes, etcd));
        }
        Ok(out)
    }

    /// No host's node root is a live node of two clusters (or twice of one).
    pub(crate) fn assert_no_host_in_two_clusters(&self) -> anyhow::Result<()> {
        let mut seen = BTreeMap::new();
        for (i, (nodes, _)) in self.kubesim_clusters()?.iter().enumerate() {
            for (name, root) in nodes {
                if let Some(root) = root
                    && let Some(other) = seen.insert(root.clone(), (i, name.clone()))
                {
                    anyhow::bail!("{root} is node {name} of cluster {i} and {other:?}");
                }
            }
        }
        Ok(())
    }

    /// Node names kubesim holds for the cluster of `pool`.
    pub(crate) fn kubesim_nodes(&self, pool: &Pool) -> anyhow::Result<Vec<(String, String)>> {
        let cp = pool
            .members
            .iter()
            .find(|m| m.role == "control-plane" && m.state == "joined")
            .expect("a joined control plane");
        self.kubesim.nodes(&self.node_root(&cp.hostname))
    }

    /// `rpoolctl --controller ALL ARGS` (every controller of the trio).
    pub(crate) fn ctl(&self, args: &[&str]) -> std::process::Output {
        let list = self.cluster.addr_list();
        let mut all = vec!["--controller", list.as_str()];
        all.extend_from_slice(args);
        rpool_tests::ctl(self.root.path(), &all)
    }
}
