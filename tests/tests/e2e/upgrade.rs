//! Kubernetes upgrades of a pool (`rpoolctl pool upgrade`) against the
//! trio and kubesim: the whole kubeadm sequence node by node, a leader
//! kill in the middle, a refused skip of a minor, a host whose kubeadm is
//! not the target stopping the upgrade (pool degraded), and a resume.

use std::time::Duration;

use rpool_proto::v1::{CreatePoolRequest, Pool, PoolSpec};
use rpool_tests::{Profile, eventually};

use crate::world::World;

const GIB: u64 = 1 << 30;

impl World {
    /// The trio and these hosts, each with the kubeadm/kubelet of
    /// `installed` "installed".
    async fn start_installed(profiles: Vec<Profile>, installed: &str) -> anyhow::Result<World> {
        let world = World::start(profiles).await?;
        for a in &world.agents {
            world.install(&a.profile.hostname, installed)?;
        }
        Ok(world)
    }

    /// What `apt-get install kubeadm=V kubelet=V` does to a real host.
    fn install(&self, hostname: &str, version: &str) -> anyhow::Result<()> {
        let root = self.node_root(hostname);
        std::fs::create_dir_all(&root)?;
        std::fs::write(root.join("kubesim-version"), version)?;
        Ok(())
    }

    /// The pool once `done` holds for it (90 s: a whole upgrade), showing
    /// each member's version and upgrade step meanwhile.
    async fn wait_upgrade(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&Pool) -> bool,
    ) -> anyhow::Result<Pool> {
        eventually(Duration::from_secs(90), what, || async {
            let pool = self.pool(name).await;
            let seen = pool.as_ref().map(|p| {
                (
                    p.phase.clone(),
                    p.phase_reason.clone(),
                    p.members
                        .iter()
                        .map(|m| {
                            format!(
                                "{}:{}:{}:{}",
                                m.hostname, m.state, m.kubernetes_version, m.upgrade_step
                            )
                        })
                        .collect::<Vec<_>>(),
                )
            });
            (pool.filter(|p| done(p)), seen)
        })
        .await
    }

    async fn create_at_version(
        &self,
        name: &str,
        cores: u64,
        memory_gib: u64,
        control_planes: u32,
        version: &str,
    ) -> anyhow::Result<Pool> {
        self.admin()
            .await?
            .create_pool(CreatePoolRequest {
                spec: Some(PoolSpec {
                    name: name.into(),
                    cores,
                    memory_bytes: memory_gib * GIB,
                    control_planes,
                    kubernetes_version: version.into(),
                    ..PoolSpec::default()
                }),
                dry_run: false,
            })
            .await?;
        self.wait_upgrade(name, "pool ready", |p| p.phase == "ready")
            .await
    }

    /// `kubectl get nodes` from a control plane: name -> kubelet version.
    fn kubelet_versions(&self, cp_hostname: &str) -> anyhow::Result<Vec<(String, String)>> {
        let out = self
            .kubesim
            .kubectl(&self.node_root(cp_hostname), &["get", "nodes", "-o", "json"]);
        anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let mut nodes: Vec<(String, String)> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                (
                    n["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                    n["status"]["nodeInfo"]["kubeletVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        nodes.sort();
        Ok(nodes)
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn a_three_control_plane_pool_upgrades_one_minor_node_by_node_through_a_leader_kill()
-> anyhow::Result<()> {
    let mut world = World::start_installed(
        vec![
            Profile::new("cp-a", "a", 4, "8GiB"),
            Profile::new("cp-b", "b", 4, "8GiB"),
            Profile::new("cp-c", "c", 4, "8GiB"),
            Profile::new("w-a1", "a", 8, "32GiB"),
            Profile::new("w-b1", "b", 8, "32GiB"),
        ],
        "v1.32.4",
    )
    .await?;
    let pool = world.create_at_version("web", 16, 64, 3, "v1.32.0").await?;
    assert_eq!(pool.members.len(), 5, "{pool:?}");
    assert!(
        pool.members.iter().all(|m| m.kubernetes_version == "v1.32.0"),
        "{pool:?}"
    );
    let first_cp = pool
        .members
        .iter()
        .find(|m| m.role == "control-plane")
        .expect("a control plane")
        .hostname
        .clone();

    // Every host gets the new packages (what an admin does first).
    for host in ["cp-a", "cp-b", "cp-c", "w-a1", "w-b1"] {
        world.install(host, "v1.33.1")?;
    }
    // The plan: control planes one by one (the first with plan + apply),
    // then the workers; nothing changes.
    let out = world.ctl(&["pool", "upgrade", "web", "--version", "v1.33.1", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        plan.contains("from v1.32.0 to v1.33.1: 5 member(s) to go"),
        "{plan}"
    );
    assert!(
        plan.contains("kubeadm upgrade plan v1.33.1; kubeadm upgrade apply v1.33.1 --yes"),
        "{plan}"
    );
    let first_row = plan
        .lines()
        .find(|l| l.contains("kubeadm upgrade apply"))
        .unwrap_or_default();
    assert!(
        first_row.contains(&first_cp) && first_row.trim_start().starts_with('1'),
        "{plan}"
    );
    assert_eq!(
        world.pool("web").await.expect("pool").phase,
        "ready",
        "a dry run changes nothing"
    );
    // Without a terminal and without --yes: refused, exit 64.
    let out = world.ctl(&["pool", "upgrade", "web", "--version", "v1.33.1"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));

    let out = world.ctl(&["pool", "upgrade", "web", "--version", "v1.33.1", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    // Mid-rollout (the first control plane is done), the leader dies.
    world
        .wait_event("upgrade_step", &format!("{first_cp} uncordoned"))
        .await?;
    let leader = world.cluster.leader().await?;
    world.cluster.get(leader).kill();

    let done = world
        .wait_upgrade("web", "every member on v1.33.1 and the pool ready", |p| {
            p.phase == "ready" && p.upgrade.is_none()
        })
        .await?;
    assert_eq!(done.spec.as_ref().unwrap().kubernetes_version, "v1.33.1");
    assert!(
        done.members
            .iter()
            .all(|m| m.kubernetes_version == "v1.33.1" && m.state == "joined"),
        "{done:?}"
    );
    let nodes = world.kubelet_versions(&first_cp)?;
    assert_eq!(nodes.len(), 5, "{nodes:?}");
    assert!(nodes.iter().all(|(_, v)| v == "v1.33.1"), "{nodes:?}");
    // Each member went through once, in order: control planes first.
    let events = world.events().await;
    let uncordoned: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "upgrade_step" && e.message.contains("uncordoned"))
        .map(|e| e.host_id.as_str())
        .collect();
    assert_eq!(uncordoned.len(), 5, "{uncordoned:?}");
    let roles: Vec<String> = uncordoned
        .iter()
        .map(|h| {
            done.members
                .iter()
                .find(|m| m.host_id == *h)
                .unwrap()
                .role
                .clone()
        })
        .collect();
    assert_eq!(&roles[..3], ["control-plane"; 3], "{roles:?}");
    assert_eq!(events.iter().filter(|e| e.kind == "upgrade_done").count(), 1);
    let applies = events
        .iter()
        .filter(|e| e.kind == "task_done" && e.message.contains("kubeadm upgrade apply"))
        .count();
    assert_eq!(
        applies, 1,
        "kubeadm upgrade apply ran on the first control plane only"
    );
    Ok(())
}

#[tokio::test]
async fn a_skip_is_refused_and_a_host_without_the_new_kubeadm_degrades_the_pool_until_resumed()
-> anyhow::Result<()> {
    let world = World::start_installed(
        vec![
            Profile::new("cp-a", "a", 4, "8GiB"),
            Profile::new("w-a1", "a", 8, "32GiB"),
            Profile::new("w-b1", "b", 8, "32GiB"),
        ],
        "v1.31.2",
    )
    .await?;
    world.create_at_version("db", 16, 64, 1, "v1.31.2").await?;

    // A skip of a minor: refused, with the next allowed version; nothing changes.
    let out = world.ctl(&["pool", "upgrade", "db", "--version", "v1.33.0", "--yes"]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("skips a minor release"), "{said}");
    assert!(said.contains("the next allowed version is v1.32.x"), "{said}");
    let out = world.ctl(&["pool", "upgrade", "db", "--version", "v1.30.9", "--yes"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not supported"),
        "{}",
        text(&out)
    );
    assert_eq!(world.pool("db").await.expect("pool").phase, "ready");

    // The control plane and w-a1 get the new packages; w-b1 is forgotten.
    world.install("cp-a", "v1.32.4")?;
    world.install("w-a1", "v1.32.4")?;
    let out = world.ctl(&[
        "pool",
        "upgrade",
        "db",
        "--version",
        "v1.32.4",
        "--yes",
        "--max-unavailable",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stopped = world
        .wait_upgrade("db", "the upgrade stopped on w-b1, the pool degraded", |p| {
            p.phase == "degraded"
        })
        .await?;
    assert!(
        stopped.phase_reason.contains("upgrade to v1.32.4 stopped")
            && stopped
                .phase_reason
                .contains("host w-b1: kubeadm is v1.31.2, not v1.32.4"),
        "{}",
        stopped.phase_reason
    );
    assert!(
        stopped.phase_reason.contains("--resume"),
        "{}",
        stopped.phase_reason
    );
    let wb1 = stopped.members.iter().find(|m| m.hostname == "w-b1").unwrap();
    assert_eq!(wb1.kubernetes_version, "v1.31.2");
    assert_eq!(wb1.upgrade_step, "upgrading", "drained, not upgraded: {wb1:?}");
    let show = world.ctl(&["pool", "show", "db"]);
    let show_text = String::from_utf8_lossy(&show.stdout);
    assert!(
        show_text.contains("Upgrade:") && show_text.contains("v1.31.2 -> v1.32.4"),
        "{show_text}"
    );

    // No resize in the middle of a rollout (the members are being drained
    // and restarted one by one): refused, nothing changes.
    let out = world.ctl(&["pool", "resize", "db", "--cores", "8", "--yes"]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("db is being upgraded from v1.31.2 to v1.32.4"),
        "{}",
        text(&out)
    );
    let still = world.pool("db").await.expect("pool");
    assert_eq!(still.spec.as_ref().unwrap().cores, 16);
    assert_eq!(still.members.len(), stopped.members.len());

    // Fixed; resumed; waited for.
    world.install("w-b1", "v1.32.4")?;
    let out = world.ctl(&["pool", "upgrade", "db", "--resume", "--yes", "--wait"]);
    assert!(out.status.success(), "{}", text(&out));
    let done = world.pool("db").await.expect("pool");
    assert_eq!(done.phase, "ready", "{done:?}");
    assert_eq!(done.spec.as_ref().unwrap().kubernetes_version, "v1.32.4");
    let nodes = world.kubelet_versions("cp-a")?;
    assert!(nodes.iter().all(|(_, v)| v == "v1.32.4"), "{nodes:?}");
    assert_eq!(
        world
            .events()
            .await
            .iter()
            .filter(|e| e.kind == "upgrade_resumed")
            .count(),
        1
    );
    Ok(())
}
