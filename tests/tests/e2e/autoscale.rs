//! Autoscaling end to end: a controller trio, simulated hosts whose load is
//! set through their simulated-hardware files, agents running the real
//! kubeadm/kubectl command lines against kubesim, and a control-plane agent
//! counting pending pods with kubectl. The policy is set with rpoolctl.

use std::collections::BTreeSet;
use std::time::Duration;

use rpool_proto::v1::{CreatePoolRequest, ListEventsRequest, Pool, PoolSpec};
use rpool_tests::{Profile, ctl, eventually};

use crate::world::World;

const GIB: u64 = 1 << 30;
/// Bound on each autoscaling step (window + cooldown + join or drain).
const STEP: Duration = Duration::from_secs(60);

impl World {
    /// Sets every worker-profile host's simulated CPU (the control plane
    /// keeps its own).
    fn set_cpu(&mut self, percent: f64) -> anyhow::Result<()> {
        for agent in self.agents.iter_mut().filter(|a| a.profile.hostname != "cp-a") {
            agent.profile.cpu_percent = percent;
            agent.write_hardware()?;
        }
        Ok(())
    }

    async fn autoscale_events(&self) -> anyhow::Result<Vec<String>> {
        let mut admin = self.admin().await?;
        Ok(admin
            .list_events(ListEventsRequest {
                pool: "web".into(),
                after_index: 0,
                limit: 1000,
                kind: String::new(),
            })
            .await?
            .into_inner()
            .events
            .into_iter()
            .filter(|e| e.kind == "autoscale")
            .map(|e| e.message)
            .collect())
    }
}

/// Joined workers and their cores; the largest worker count seen is
/// tracked by the caller.
fn workers(pool: &Pool) -> (usize, u64) {
    let w: Vec<_> = pool
        .members
        .iter()
        .filter(|m| m.role == "worker" && m.state != "leaving")
        .collect();
    (w.len(), w.iter().map(|m| u64::from(m.cores)).sum())
}

fn settled(pool: &Pool) -> bool {
    pool.phase == "ready" && pool.members.iter().all(|m| m.state == "joined")
}

fn explanation(pool: &Pool) -> String {
    pool.autoscale_status
        .as_ref()
        .map(|s| s.explanation.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_pool_grows_with_load_up_to_max_shrinks_after_the_window_to_min_and_grows_for_pending_pods()
-> anyhow::Result<()> {
    let mut world = World::start(vec![
        Profile::new("cp-a", "a", 4, "8GiB"),
        Profile::new("w-a1", "a", 8, "32GiB"),
        Profile::new("w-b1", "b", 8, "32GiB"),
        Profile::new("w-c1", "c", 8, "32GiB"),
        Profile::new("w-c2", "c", 8, "32GiB"),
    ])
    .await?;

    // A pool of one 8-core worker (cp-a, the smallest, is its control
    // plane). Zones ignored (`any`): spread, the zoned fleet's default,
    // would start with a worker in each of a, b and c (24 cores), and the
    // autoscaler's choice of zones is tested in policy::zones.
    world
        .admin()
        .await?
        .create_pool(CreatePoolRequest {
            spec: Some(PoolSpec {
                name: "web".into(),
                cores: 8,
                memory_bytes: 32 * GIB,
                control_planes: 1,
                zone_policy: "any".into(),
                ..PoolSpec::default()
            }),
            dry_run: false,
        })
        .await?;
    eventually(STEP, "pool web ready", || async {
        let pool = world.pool("web").await;
        let seen = pool.as_ref().map(|p| p.phase.clone());
        (pool.filter(settled), seen)
    })
    .await?;

    // Policy through the CLI: 8..=24 worker cores, short windows.
    let home = world.root.path().join("home");
    std::fs::create_dir_all(&home)?;
    let addrs = world.cluster.addr_list();
    let out = ctl(
        &home,
        &[
            "--controller",
            &addrs,
            "pool",
            "autoscale",
            "web",
            "--min-cores",
            "8",
            "--max-cores",
            "24",
            "--up-window",
            "1s",
            "--down-window",
            "2s",
            "--cooldown",
            "1s",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("Pool web: autoscaling on: 8..=24 worker cores, cpu target 70%, memory target 80%, up-window 1s, down-window 2s, cooldown 1s"),
        "{said}"
    );
    // Bad input changes nothing and names the field.
    let bad = ctl(
        &home,
        &[
            "--controller",
            &addrs,
            "pool",
            "autoscale",
            "web",
            "--min-cores",
            "32",
            "--max-cores",
            "24",
        ],
    );
    assert_eq!(
        bad.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--min-cores 32 is above --max-cores 24"));

    // Idle at 10% CPU: the down-window passes, but the pool is at min.
    eventually(STEP, "holding at min-cores", || async {
        let pool = world.pool("web").await;
        let why = pool.as_ref().map(explanation);
        (
            why.clone()
                .filter(|w| w.starts_with("holding: at min-cores 8 (cpu 10% < 35%")),
            why,
        )
    })
    .await?;
    let show = ctl(&home, &["--controller", &addrs, "pool", "show", "web"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("\nAutoscale:  "), "{text}");
    assert!(
        text.contains("\nAutoscaler: ") && text.contains("holding: at min-cores 8"),
        "{text}"
    );

    // Load: every worker-profile host at 95% (hosts that join report it too).
    world.set_cpu(95.0)?;
    let most = std::cell::Cell::new(0usize);
    let grown = eventually(STEP * 2, "grown to max-cores 24 and holding there", || {
        let (world, most) = (&world, &most);
        async move {
            let pool = world.pool("web").await;
            if let Some(p) = &pool {
                most.set(most.get().max(workers(p).0));
            }
            let seen = pool
                .as_ref()
                .map(|p| (workers(p), p.phase.clone(), explanation(p)));
            let done = pool.filter(|p| {
                settled(p)
                    && workers(p).1 == 24
                    && explanation(p).starts_with("holding: at max-cores 24 (cpu 95% > 70%")
            });
            (done, seen)
        }
    })
    .await?;
    assert!(
        most.get() <= 3,
        "never above max-cores: saw {} workers",
        most.get()
    );
    assert_eq!(workers(&grown), (3, 24));
    let ups: Vec<String> = world
        .autoscale_events()
        .await?
        .into_iter()
        .filter(|m| m.contains(": +1 host "))
        .collect();
    assert_eq!(ups.len(), 2, "{ups:?}");
    for up in &ups {
        assert!(
            up.starts_with("pool web: cpu 95% > 70% for 1s: +1 host w-") && up.ends_with(" (8c/32GiB)"),
            "{up}"
        );
    }
    // kubesim holds the same nodes rpool says.
    let nodes: BTreeSet<String> = world
        .kubesim
        .nodes(&world.node_root("cp-a"))?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let members: BTreeSet<String> = grown.members.iter().map(|m| m.node_name.clone()).collect();
    assert_eq!(nodes, members);

    // Idle again: after the down-window, one host at a time back to min.
    world.set_cpu(5.0)?;
    let fewest = std::cell::Cell::new(usize::MAX);
    let shrunk = eventually(STEP * 2, "shrunk to min-cores 8", || {
        let (world, fewest) = (&world, &fewest);
        async move {
            let pool = world.pool("web").await;
            if let Some(p) = &pool {
                fewest.set(fewest.get().min(workers(p).0));
            }
            let seen = pool
                .as_ref()
                .map(|p| (workers(p), p.phase.clone(), explanation(p)));
            let done = pool.filter(|p| {
                settled(p) && workers(p).1 == 8 && explanation(p).starts_with("holding: at min-cores 8")
            });
            (done, seen)
        }
    })
    .await?;
    assert!(fewest.get() >= 1, "never below min-cores");
    let downs: Vec<String> = world
        .autoscale_events()
        .await?
        .into_iter()
        .filter(|m| m.contains(": -1 host "))
        .collect();
    assert_eq!(downs.len(), 2, "{downs:?}");
    for down in &downs {
        assert!(
            down.starts_with("pool web: cpu 5% < 35%, memory 3% < 40% for 2s: -1 host w-"),
            "{down}"
        );
    }
    let nodes: Vec<(String, String)> = world.kubesim.nodes(&world.node_root("cp-a"))?;
    let mut members: Vec<(String, String)> = shrunk
        .members
        .iter()
        .map(|m| (m.node_name.clone(), m.role.clone()))
        .collect();
    members.sort();
    assert_eq!(nodes, members, "released nodes are deleted from the cluster");

    // Pods pending (CPU still low): the control plane's agent counts them
    // with kubectl and the pool grows by one host.
    set_pending_pods(&world, 3)?;
    let grown = eventually(STEP, "grown for pending pods", || async {
        let pool = world.pool("web").await;
        let seen = pool.as_ref().map(|p| (workers(p), explanation(p)));
        (pool.filter(|p| workers(p).0 == 2), seen)
    })
    .await?;
    assert_eq!(workers(&grown).1, 16);
    let pending: Vec<String> = world
        .autoscale_events()
        .await?
        .into_iter()
        .filter(|m| m.contains("pod(s) pending"))
        .collect();
    // Pods stay pending, so it may go on growing (within max-cores).
    assert!(!pending.is_empty());
    for p in &pending {
        assert!(
            p.starts_with("pool web: 3 pod(s) pending for 1s: +1 host w-"),
            "{p}"
        );
    }
    set_pending_pods(&world, 0)?;

    // Off: the policy is gone from the pool.
    let out = ctl(
        &home,
        &["--controller", &addrs, "pool", "autoscale", "web", "--off"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pool = world.pool("web").await.expect("pool");
    assert!(pool.autoscale.is_none() && pool.autoscale_status.is_none());
    Ok(())
}

/// Writes kubesim's pending-pods count for the pool's cluster (what
/// `rpoolctl sandbox load HOST --pending-pods N` does in a sandbox).
fn set_pending_pods(world: &World, n: u32) -> anyhow::Result<()> {
    let clusters = world.kubesim.state_dir.join("clusters");
    let mut written = 0;
    for entry in std::fs::read_dir(&clusters)? {
        let dir = entry?.path();
        if dir.join("cluster.json").exists() {
            std::fs::write(dir.join("pending-pods"), format!("{n}\n"))?;
            written += 1;
        }
    }
    anyhow::ensure!(written == 1, "expected one kubesim cluster, found {written}");
    Ok(())
}
