//! Self-healing end to end: a controller trio with fast liveness, agents
//! running the real kubeadm/kubectl command lines against kubesim. A host
//! "dies" by its agent being killed and its kubesim node marked down
//! (`<node_root>/kubesim-down`), as `rpoolctl sandbox kill-host` does.
//! What kubesim holds afterwards (nodes, etcd members, which cluster each
//! host's node root is in) is compared with what rpool says.

use std::time::{Duration, Instant};

use rpool_proto::v1::{Event, HostState, Pool, PoolSpec};
use rpool_tests::{Kubesim, Liveness, Profile, by_hostname, eventually};

use crate::world::World;

const GIB: u64 = 1 << 30;
/// How long after `down_after_ms` a replacement may take to join.
const HEAL_BOUND: Duration = Duration::from_secs(30);

/// Zones ignored (`any`, not the zoned fleet's default spread): these
/// tests count hosts, and need a lost worker to be replaced, which takes a
/// pool whose workers are all needed (the least-overshoot cover) and free
/// hosts left over. Replacement in the dead worker's zone is zones.rs's.
fn spec(name: &str, cores: u64, memory_gib: u64, control_planes: u32) -> PoolSpec {
    PoolSpec {
        name: name.to_string(),
        cores,
        memory_bytes: memory_gib * GIB,
        control_planes,
        zone_policy: "any".into(),
        ..PoolSpec::default()
    }
}

fn expected_nodes(pool: &Pool) -> Vec<(String, String)> {
    let mut nodes: Vec<(String, String)> = pool
        .members
        .iter()
        .map(|m| (m.node_name.clone(), m.role.clone()))
        .collect();
    nodes.sort();
    nodes
}

/// Puts a `sleep` in front of kubesim's `kubeadm` (the agents run it by
/// this path), keeping argv[0] so kubesim still answers as kubeadm.
fn slow_kubeadm(kubesim: &Kubesim, delay: Duration) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = kubesim.bin_dir.join("kubeadm");
    let tmp = kubesim.bin_dir.join("kubeadm.tmp");
    std::fs::write(
        &tmp,
        format!(
            "#!/bin/bash\nsleep {}\nexec -a kubeadm {} \"$@\"\n",
            delay.as_secs_f64(),
            rpool_tests::bin("kubesim").display()
        ),
    )?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

fn hostnames(pool: &Pool) -> Vec<String> {
    let mut names: Vec<String> = pool.members.iter().map(|m| m.hostname.clone()).collect();
    names.sort();
    names
}

/// One control plane, workers of 8 cores / 32 GiB, one spare.
fn worker_fleet() -> Vec<Profile> {
    vec![
        Profile::new("cp-a", "a", 4, "8GiB"),
        Profile::new("w-a1", "a", 8, "32GiB"),
        Profile::new("w-b1", "b", 8, "32GiB"),
        Profile::new("w-c1", "c", 8, "32GiB"),
        Profile::new("w-c2", "c", 8, "32GiB"),
    ]
}

#[tokio::test]
async fn a_dead_worker_is_replaced_and_when_it_returns_it_is_reset_into_the_fleet() -> anyhow::Result<()> {
    let mut world = World::start(worker_fleet()).await?;
    let pool = world.create(spec("web", 16, 64, 1)).await?;
    let before = hostnames(&pool);
    let dead = pool
        .members
        .iter()
        .find(|m| m.role == "worker")
        .expect("a worker")
        .clone();

    let killed = Instant::now();
    world.kill_host(&dead.hostname)?;
    let healed = world
        .wait_pool("web", "a replacement worker joined and the dead one gone", |p| {
            p.phase == "ready"
                && !p.members.iter().any(|m| m.host_id == dead.host_id)
                && p.members
                    .iter()
                    .filter(|m| m.role == "worker" && m.state == "joined")
                    .count()
                    == 2
        })
        .await?;
    let took = killed.elapsed();
    eprintln!(
        "worker {} replaced and its node deleted {took:?} after the kill",
        dead.hostname
    );
    let down_after = Duration::from_millis(u64::from(Liveness::FAST.down_after_ms));
    assert!(took < down_after + HEAL_BOUND, "healing took {took:?}");
    let replacing = world.wait_event("host_replacing", &dead.hostname).await?;
    assert!(
        replacing
            .message
            .contains(&format!("host {} down (no heartbeat for", dead.hostname))
            && replacing.message.contains("replacing with "),
        "{}",
        replacing.message
    );
    assert!(healed.worker_cores >= 16, "{healed:?}");
    assert_eq!(
        world.kubesim_nodes(&healed)?,
        expected_nodes(&healed),
        "kubesim: the dead node is deleted, the replacement joined"
    );
    let after = hostnames(&healed);
    assert_eq!(after.len(), before.len());
    assert!(!after.contains(&dead.hostname));
    world.assert_no_host_in_two_clusters()?;

    let hosts = world.cluster.hosts().await?;
    let gone = by_hostname(&hosts, &dead.hostname).expect("the dead host is still listed");
    assert_eq!(
        (gone.state, gone.pool.as_str()),
        (HostState::Down as i32, ""),
        "out of its pool"
    );
    assert!(gone.state_reason.contains("fenced"), "{}", gone.state_reason);

    // The dead host returns: it is reset and back in the fleet, in no cluster.
    world.revive_host(&dead.hostname)?;
    world.wait_event("host_unfenced", &dead.hostname).await?;
    eventually(
        Duration::from_secs(20),
        "the revived host ready in the fleet",
        || async {
            let state = world.host_state(&dead.hostname).await;
            (
                state
                    .as_ref()
                    .filter(|(s, pool)| *s == HostState::Ready as i32 && pool.is_empty())
                    .map(|_| ()),
                state,
            )
        },
    )
    .await?;
    let root = world.node_root(&dead.hostname).display().to_string();
    for (nodes, _) in world.kubesim_clusters()? {
        assert!(
            !nodes.values().any(|r| r.as_deref() == Some(root.as_str())),
            "the revived host is still a node somewhere: {nodes:?}"
        );
    }
    assert!(
        !world
            .node_root(&dead.hostname)
            .join("etc/kubernetes/kubelet.conf")
            .exists(),
        "kubeadm reset ran on the revived host"
    );
    world.assert_no_host_in_two_clusters()?;
    // The pool did not change because of the return.
    let pool = world.pool("web").await.expect("pool web");
    assert_eq!(hostnames(&pool), after);
    Ok(())
}

#[tokio::test]
async fn a_dead_control_plane_of_three_leaves_etcd_and_is_replaced() -> anyhow::Result<()> {
    let mut world = World::start(vec![
        Profile::new("cp-a", "a", 4, "8GiB"),
        Profile::new("cp-b", "b", 4, "8GiB"),
        Profile::new("cp-c", "c", 4, "8GiB"),
        Profile::new("w-a1", "a", 8, "32GiB"),
        Profile::new("spare-b", "b", 4, "16GiB"),
        Profile::new("spare-c", "c", 8, "64GiB"),
    ])
    .await?;
    let pool = world.create(spec("db", 8, 32, 3)).await?;
    let cps: Vec<String> = pool
        .members
        .iter()
        .filter(|m| m.role == "control-plane")
        .map(|m| m.hostname.clone())
        .collect();
    assert_eq!(cps.len(), 3, "{pool:?}");
    let dead = pool
        .members
        .iter()
        .find(|m| m.hostname == "cp-b")
        .expect("cp-b is a control plane (zone b's smallest)")
        .clone();
    let etcd_before: Vec<String> = world
        .kubesim_clusters()?
        .into_iter()
        .find(|(nodes, _)| nodes.contains_key(&dead.node_name))
        .map(|(_, etcd)| etcd)
        .unwrap_or_default();
    assert!(etcd_before.contains(&dead.node_name), "{etcd_before:?}");

    let killed = Instant::now();
    world.kill_host("cp-b")?;
    let healed = world
        .wait_pool("db", "a replacement control plane joined", |p| {
            p.phase == "ready"
                && !p.members.iter().any(|m| m.host_id == dead.host_id)
                && p.members
                    .iter()
                    .filter(|m| m.role == "control-plane" && m.state == "joined")
                    .count()
                    == 3
        })
        .await?;
    let down_after = Duration::from_millis(u64::from(Liveness::FAST.down_after_ms));
    eprintln!(
        "control plane cp-b replaced {:?} after the kill",
        killed.elapsed()
    );
    assert!(
        killed.elapsed() < down_after + HEAL_BOUND,
        "took {:?}",
        killed.elapsed()
    );
    let replacement = healed
        .members
        .iter()
        .find(|m| m.role == "control-plane" && !cps.contains(&m.hostname))
        .expect("a new control plane");
    assert_eq!(
        replacement.hostname, "spare-b",
        "zone b gets its control plane back"
    );
    assert_eq!(world.kubesim_nodes(&healed)?, expected_nodes(&healed));
    let (_, etcd) = world
        .kubesim_clusters()?
        .into_iter()
        .find(|(nodes, _)| nodes.contains_key(&replacement.node_name))
        .expect("the pool's cluster");
    let mut etcd = etcd;
    etcd.sort();
    let mut want: Vec<String> = healed
        .members
        .iter()
        .filter(|m| m.role == "control-plane")
        .map(|m| m.node_name.clone())
        .collect();
    want.sort();
    assert_eq!(etcd, want, "the dead etcd member is removed, the new one added");
    let events = world.events().await;
    assert!(
        events.iter().any(|e| e.kind == "task_done"
            && e.message
                .contains(&format!("etcd member {} removed", dead.node_name))),
        "{:?}",
        events.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    world.assert_no_host_in_two_clusters()?;
    Ok(())
}

/// The kube-vip static pod on `hostname`'s node root, if any.
fn kube_vip_pod(world: &World, hostname: &str) -> Option<String> {
    std::fs::read_to_string(
        world
            .node_root(hostname)
            .join("etc/kubernetes/manifests/kube-vip.yaml"),
    )
    .ok()
}

#[tokio::test]
async fn killing_the_first_control_plane_of_a_pool_with_a_vip_heals_it_and_the_vip_keeps_answering()
-> anyhow::Result<()> {
    let mut world = World::start(vec![
        Profile::new("cp-a", "a", 4, "8GiB"),
        Profile::new("cp-b", "b", 4, "8GiB"),
        Profile::new("cp-c", "c", 4, "8GiB"),
        Profile::new("w-a1", "a", 8, "32GiB"),
        Profile::new("spare-a", "a", 4, "16GiB"),
    ])
    .await?;
    let pool = world.create(spec("db", 8, 32, 3)).await?;
    let vip = pool.spec.as_ref().map(|s| s.vip.clone()).unwrap_or_default();
    assert_eq!(vip, "198.51.100.1", "the lowest address of the fleet's vip_range");
    let endpoint = format!("{vip}:6443");
    assert_eq!(pool.control_plane_endpoint, endpoint);
    let cps: Vec<rpool_proto::v1::PoolMember> = pool
        .members
        .iter()
        .filter(|m| m.role == "control-plane")
        .cloned()
        .collect();
    assert_eq!(cps.len(), 3, "{pool:?}");
    // Every control plane runs kube-vip with admin.conf (the first one
    // switched from super-admin.conf after init).
    for cp in &cps {
        let pod =
            kube_vip_pod(&world, &cp.hostname).unwrap_or_else(|| panic!("no kube-vip on {}", cp.hostname));
        let held = rpool_proto::kube::kube_vip_check::check_kube_vip_manifest(&pod, vip.parse()?)
            .map_err(|p| anyhow::anyhow!("{}: {p:?}", cp.hostname))?;
        assert_eq!(held.kubeconfig, "/etc/kubernetes/admin.conf", "{}", cp.hostname);
    }
    assert!(kube_vip_pod(&world, "w-a1").is_none(), "workers run no kube-vip");

    // The pool's kubeconfig points at the VIP and answers there.
    let kubeconfig = world
        .admin()
        .await?
        .get_kubeconfig(rpool_proto::v1::GetKubeconfigRequest { name: "db".into() })
        .await?
        .into_inner()
        .content;
    assert!(
        kubeconfig.contains(&format!("server: https://{endpoint}")),
        "no VIP server in the kubeconfig"
    );
    let file = world.node_root("w-a1").join("../db.kubeconfig");
    std::fs::write(&file, &kubeconfig)?;
    let kubectl = |world: &World| {
        std::process::Command::new(world.kubesim.bin_dir.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&file)
            .args(["get", "nodes", "-o", "name"])
            .env("KUBESIM_STATE_DIR", &world.kubesim.state_dir)
            .output()
            .expect("kubectl")
    };
    let out = kubectl(&world);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The first control plane (it ran kubeadm init) dies.
    let first = cps[0].clone();
    world.kill_host(&first.hostname)?;
    let out = kubectl(&world);
    assert!(
        out.status.success(),
        "another control plane holds the VIP at once: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let healed = world
        .wait_pool("db", "a replacement for the first control plane joined", |p| {
            p.phase == "ready"
                && !p.members.iter().any(|m| m.host_id == first.host_id)
                && p.members
                    .iter()
                    .filter(|m| m.role == "control-plane" && m.state == "joined")
                    .count()
                    == 3
        })
        .await?;
    assert_eq!(
        healed.control_plane_endpoint, endpoint,
        "the endpoint stays the VIP"
    );
    let replacement = healed
        .members
        .iter()
        .find(|m| m.role == "control-plane" && !cps.iter().any(|c| c.host_id == m.host_id))
        .expect("a new control plane")
        .clone();
    assert_eq!(
        replacement.hostname, "spare-a",
        "zone a gets its control plane back"
    );
    let pod = kube_vip_pod(&world, &replacement.hostname).expect("the replacement runs kube-vip");
    assert!(pod.contains("path: /etc/kubernetes/admin.conf"), "{pod}");
    assert_eq!(world.kubesim_nodes(&healed)?, expected_nodes(&healed));
    let out = kubectl(&world);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        names.contains(&format!("node/{}", replacement.node_name)),
        "{names}"
    );
    world.assert_no_host_in_two_clusters()?;
    Ok(())
}

#[tokio::test]
async fn draining_a_live_control_plane_joins_its_replacement_first_and_leaves_etcd() -> anyhow::Result<()> {
    let world = World::start(vec![
        Profile::new("cp-a", "a", 4, "8GiB"),
        Profile::new("cp-b", "b", 4, "8GiB"),
        Profile::new("cp-c", "c", 4, "8GiB"),
        Profile::new("w-a1", "a", 8, "32GiB"),
        Profile::new("spare-b", "b", 4, "16GiB"),
        Profile::new("spare-c", "c", 8, "64GiB"),
    ])
    .await?;
    let pool = world.create(spec("db", 8, 32, 3)).await?;
    let cps: Vec<String> = pool
        .members
        .iter()
        .filter(|m| m.role == "control-plane")
        .map(|m| m.hostname.clone())
        .collect();
    assert_eq!(cps.len(), 3, "{pool:?}");
    // A 3-control-plane pool gets a VIP from the test controllers'
    // [kube] vip_range: the endpoint moves, so even the first control
    // plane (which ran kubeadm init) may be drained.
    assert_eq!(pool.spec.as_ref().map(|s| s.vip.as_str()), Some("198.51.100.1"));
    assert_eq!(pool.control_plane_endpoint, "198.51.100.1:6443");
    let leaving = pool
        .members
        .iter()
        .find(|m| m.role == "control-plane")
        .expect("the first control plane (members are sorted by role, then order)")
        .clone();

    // rpoolctl host drain on the first control plane.
    let home = world.agents[0].dir.clone();
    let out = rpool_tests::ctl(
        &home,
        &[
            "--controller",
            &world.cluster.addr_list(),
            "host",
            "drain",
            &leaving.host_id[..8],
            "--yes",
            "--wait",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pool = world
        .wait_pool("db", "pool db ready with a new control plane", |p| {
            p.phase == "ready"
                && !p.members.iter().any(|m| m.host_id == leaving.host_id)
                && p.members
                    .iter()
                    .filter(|m| m.role == "control-plane" && m.state == "joined")
                    .count()
                    == 3
        })
        .await?;
    let replacement = pool
        .members
        .iter()
        .find(|m| m.role == "control-plane" && !cps.contains(&m.hostname))
        .expect("a new control plane")
        .clone();
    assert_eq!(world.kubesim_nodes(&pool)?, expected_nodes(&pool));
    let (nodes, mut etcd) = world
        .kubesim_clusters()?
        .into_iter()
        .find(|(nodes, _)| nodes.contains_key(&replacement.node_name))
        .expect("the pool's cluster");
    assert!(
        !nodes.contains_key(&leaving.node_name),
        "the old node is gone: {nodes:?}"
    );
    etcd.sort();
    let mut want: Vec<String> = pool
        .members
        .iter()
        .filter(|m| m.role == "control-plane")
        .map(|m| m.node_name.clone())
        .collect();
    want.sort();
    assert_eq!(etcd, want, "etcd holds exactly the pool's control planes");

    // Order: the replacement joined before the old node was drained, and
    // its etcd member went (on another control plane) before its node.
    let events: Vec<String> = world.events().await.into_iter().map(|e| e.message).collect();
    let at = |what: &str| events.iter().position(|e| e.contains(what));
    let joined = at(&format!("{} joined as control-plane", replacement.hostname));
    let drained = at(&format!("node {} drained", leaving.node_name));
    let removed = at(&format!("etcd member {} removed", leaving.node_name));
    let deleted = at(&format!("node {} deleted", leaving.node_name));
    let reset = at(&format!("{} reset and back in the fleet", leaving.hostname));
    assert!(
        joined.is_some() && joined < drained && drained < removed && removed < deleted && deleted < reset,
        "{joined:?} {drained:?} {removed:?} {deleted:?} {reset:?}: {events:#?}"
    );
    let removed_by = &events[removed.expect("removed")];
    assert!(
        !removed_by.contains(&format!("via {})", leaving.hostname)),
        "{removed_by}"
    );
    let (state, in_pool) = world.host_state(&leaving.hostname).await.expect("host");
    assert_eq!((state, in_pool.as_str()), (HostState::Cordoned as i32, ""));
    world.assert_no_host_in_two_clusters()?;
    Ok(())
}

#[tokio::test]
async fn half_the_hosts_silenced_at_once_replace_nothing_and_raise_one_alert() -> anyhow::Result<()> {
    let mut world = World::start(vec![
        Profile::new("cp-a", "a", 4, "8GiB"),
        Profile::new("w-a1", "a", 8, "32GiB"),
        Profile::new("w-b1", "b", 8, "32GiB"),
        Profile::new("w-c1", "c", 8, "32GiB"),
        Profile::new("w-c2", "c", 8, "32GiB"),
        Profile::new("w-c3", "c", 8, "32GiB"),
    ])
    .await?;
    let pool = world.create(spec("web", 16, 64, 1)).await?;
    let workers: Vec<String> = pool
        .members
        .iter()
        .filter(|m| m.role == "worker")
        .map(|m| m.hostname.clone())
        .collect();
    let spare: Vec<String> = ["w-a1", "w-b1", "w-c1", "w-c2", "w-c3"]
        .iter()
        .map(|s| s.to_string())
        .filter(|h| !workers.contains(h))
        .collect();
    // Both workers and one spare: 3 of 6 hosts silent at once.
    let silenced = [workers[0].clone(), workers[1].clone(), spare[0].clone()];
    for h in &silenced {
        world.kill_host(h)?;
    }
    let alert = world.wait_event("storm", "storm: ").await?;
    assert!(
        alert.message.contains("hosts silent at once") || alert.message.contains("members of pool web"),
        "{}",
        alert.message
    );
    // Wait until all three are declared down, then a few planner rounds.
    eventually(Duration::from_secs(20), "the silenced hosts down", || async {
        let mut states = Vec::new();
        for h in &silenced {
            states.push(world.host_state(h).await.map(|s| s.0));
        }
        let all = states.iter().all(|s| *s == Some(HostState::Down as i32));
        (all.then_some(()), states)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // absence: planner rounds every 200 ms
    let events = world.events().await;
    assert_eq!(
        events.iter().filter(|e| e.kind == "storm").count(),
        1,
        "one alert"
    );
    assert!(
        !events.iter().any(|e| e.kind == "host_replacing"),
        "nothing replaced during a storm"
    );
    let pool = world.pool("web").await.expect("pool web");
    assert_eq!(hostnames(&pool).len(), 3);
    // They come back: the storm is over, nothing was replaced.
    for h in &silenced {
        world.revive_host(h)?;
    }
    world.wait_event("storm_over", "storm over").await?;
    let pool = world
        .wait_pool("web", "pool web ready", |p| p.phase == "ready")
        .await?;
    assert!(workers.iter().all(|w| hostnames(&pool).contains(w)));
    world.assert_no_host_in_two_clusters()?;
    Ok(())
}

#[tokio::test]
async fn a_leader_kill_in_the_middle_of_a_healing_completes_the_replacement_exactly_once()
-> anyhow::Result<()> {
    let mut world = World::start(worker_fleet()).await?;
    let pool = world.create(spec("web", 16, 64, 1)).await?;
    let dead = pool
        .members
        .iter()
        .find(|m| m.role == "worker")
        .expect("a worker")
        .clone();
    // Joins from now on take 2 s more (kubeadm runs behind a sleep), so
    // the leader surely dies while the replacement is joining.
    slow_kubeadm(&world.kubesim, Duration::from_secs(2))?;
    world.kill_host(&dead.hostname)?;
    world.wait_event("host_replacing", &dead.hostname).await?;
    let mid = world.pool("web").await.expect("pool web");
    assert_eq!(mid.phase, "healing", "{mid:?}");
    assert!(
        mid.members.iter().any(|m| m.state == "joining") && mid.members.iter().any(|m| m.state == "replaced"),
        "{mid:?}"
    );
    // Mid-healing: the leader dies.
    let leader = world.cluster.leader().await?;
    world.cluster.get(leader).kill();
    let healed = world
        .wait_pool("web", "the replacement done under the new leader", |p| {
            p.phase == "ready"
                && !p.members.iter().any(|m| m.host_id == dead.host_id)
                && p.members.iter().filter(|m| m.state == "joined").count() == 3
        })
        .await?;
    assert_eq!(healed.members.len(), 3, "one replacement, not two: {healed:?}");
    let events = world.events().await;
    let replacing: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == "host_replacing" && e.host_id == dead.host_id)
        .collect();
    assert_eq!(replacing.len(), 1, "{replacing:?}");
    assert_eq!(
        world.kubesim_nodes(&healed)?,
        expected_nodes(&healed),
        "one new node"
    );
    world.assert_no_host_in_two_clusters()?;
    Ok(())
}

#[tokio::test]
async fn sandbox_kill_host_and_revive_host_take_a_host_down_and_bring_it_back() -> anyhow::Result<()> {
    use rpool_tests::{binaries, ctl, free_port_range, json_of};
    let home = tempfile::tempdir()?;
    let dir = home.path().join("sandbox");
    let dir_s = dir.to_str().expect("utf-8 temp dir");
    let port = free_port_range(3).to_string();
    let bin_dir = binaries().to_str().expect("utf-8 path").to_string();
    struct Down<'a>(&'a std::path::Path, &'a str);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = ctl(self.0, &["sandbox", "down", "--dir", self.1]);
        }
    }
    let _down = Down(home.path(), dir_s);
    let up = ctl(
        home.path(),
        &[
            "sandbox",
            "up",
            "--agents",
            "3",
            "--dir",
            dir_s,
            "--port",
            &port,
            "--bin-dir",
            &bin_dir,
        ],
    );
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sandbox.json"))?)?;
    let agent = &record["agents"][1];
    let name = agent["name"].as_str().expect("agent name").to_string();
    let pid = agent["pid"].as_u64().expect("pid");
    let agent_dir = std::path::PathBuf::from(agent["dir"].as_str().expect("dir"));
    let host_id = std::fs::read_to_string(agent_dir.join("state/host_id"))?
        .trim()
        .to_string();
    let state_of = |home: &std::path::Path| -> Option<String> {
        let hosts = json_of(&ctl(home, &["host", "list", "-o", "json"])).ok()?;
        hosts
            .as_array()?
            .iter()
            .find(|h| h["host_id"] == host_id.as_str())
            .and_then(|h| h["state"].as_str().map(str::to_string))
    };

    // Unknown hosts and reviving a live one are refused with distinct codes.
    let unknown = ctl(home.path(), &["sandbox", "kill-host", "nope", "--dir", dir_s]);
    assert_eq!(
        unknown.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let live = ctl(
        home.path(),
        &[
            "sandbox",
            "revive-host",
            &name,
            "--dir",
            dir_s,
            "--bin-dir",
            &bin_dir,
        ],
    );
    assert_eq!(
        live.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&live.stderr)
    );

    let kill = ctl(
        home.path(),
        &["sandbox", "kill-host", &host_id[..8], "--dir", dir_s],
    );
    assert!(kill.status.success(), "{}", String::from_utf8_lossy(&kill.stderr));
    // The agent is gone (a zombie counts as gone).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z')),
        "agent still running: {stat}"
    );
    assert!(
        agent_dir.join("node/kubesim-down").exists(),
        "kubesim marker written"
    );
    eventually(Duration::from_secs(30), "the killed host down", || async {
        let state = state_of(home.path());
        (state.as_deref().filter(|s| *s == "down").map(|_| ()), state)
    })
    .await?;

    let revive = ctl(
        home.path(),
        &[
            "sandbox",
            "revive-host",
            &name,
            "--dir",
            dir_s,
            "--bin-dir",
            &bin_dir,
        ],
    );
    assert!(
        revive.status.success(),
        "{}",
        String::from_utf8_lossy(&revive.stderr)
    );
    assert!(
        !agent_dir.join("node/kubesim-down").exists(),
        "kubesim marker removed"
    );
    eventually(Duration::from_secs(30), "the revived host ready", || async {
        let state = state_of(home.path());
        (state.as_deref().filter(|s| *s == "ready").map(|_| ()), state)
    })
    .await?;
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sandbox.json"))?)?;
    assert_ne!(
        record["agents"][1]["pid"].as_u64(),
        Some(pid),
        "the new pid is recorded"
    );
    Ok(())
}
