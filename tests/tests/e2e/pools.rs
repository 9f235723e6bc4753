//! Pools end to end: a controller trio, simulated hosts whose agents run
//! the real kubeadm/kubectl command lines against kubesim, and the admin
//! API. What kubesim ends up holding is compared with what rpool says.

use std::collections::BTreeSet;
use std::time::Duration;

use rpool_proto::v1::{
    CreatePoolRequest, DestroyPoolRequest, GetPoolRequest, Pool, PoolSpec, ResizePoolRequest,
};
use rpool_tests::{Kubesim, Profile, eventually};

use crate::world::World;

const GIB: u64 = 1 << 30;

impl World {
    /// Waits until kubesim reports every node of the pool Ready: the CNI
    /// manifest the controller applied passed kubesim's CNI check (its
    /// NotReady message says what is missing otherwise).
    async fn wait_nodes_ready(&self, pool: &Pool) -> anyhow::Result<()> {
        let cp = pool
            .members
            .iter()
            .find(|m| m.role == "control-plane")
            .expect("a control plane");
        let root = self.node_root(&cp.hostname);
        eventually(Duration::from_secs(30), "every node Ready", || async {
            let out = self.kubesim.kubectl(&root, &["get", "nodes", "-o", "json"]);
            let conditions: Vec<(String, String)> = rpool_tests::json_of(&out)
                .ok()
                .and_then(|v| v["items"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|n| {
                    let c = n["status"]["conditions"]
                        .as_array()?
                        .iter()
                        .find(|c| c["type"] == "Ready")?
                        .clone();
                    Some((
                        c["status"].as_str()?.to_owned(),
                        c["message"].as_str()?.to_owned(),
                    ))
                })
                .collect();
            let ready = conditions.len() == pool.members.len() && conditions.iter().all(|(s, _)| s == "True");
            (ready.then_some(()), conditions)
        })
        .await
    }
}

fn spec(name: &str, cores: u64, memory_gib: u64, control_planes: u32) -> PoolSpec {
    PoolSpec {
        name: name.to_string(),
        cores,
        memory_bytes: memory_gib * GIB,
        control_planes,
        ..PoolSpec::default()
    }
}

/// `spec` with zone policy pack: these tests count hosts and capacity the
/// zone-blind way (spread, the default, would take a worker in every zone
/// of this small fleet; `zones.rs` tests it).
fn packed(spec: PoolSpec) -> PoolSpec {
    PoolSpec {
        zone_policy: "pack".into(),
        ..spec
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

fn fleet() -> Vec<Profile> {
    vec![
        Profile::new("cp-a", "a", 4, "8GiB"),
        Profile::new("w-a1", "a", 8, "32GiB"),
        Profile::new("w-b1", "b", 8, "32GiB"),
        Profile::new("w-c1", "c", 16, "64GiB"),
        Profile::new("w-c2", "c", 8, "32GiB"),
    ]
}

#[tokio::test]
async fn a_pool_is_created_resized_and_destroyed_and_kubesim_agrees_at_each_step() -> anyhow::Result<()> {
    let world = World::start(fleet()).await?;
    let mut admin = world.admin().await?;

    // Dry run: a placement and nothing changed.
    let dry = admin
        .create_pool(CreatePoolRequest {
            spec: Some(packed(spec("web", 16, 64, 1))),
            dry_run: true,
        })
        .await?
        .into_inner()
        .pool
        .unwrap();
    assert!(
        dry.worker_cores >= 16 && dry.worker_memory_bytes >= 64 * GIB,
        "{dry:?}"
    );
    assert!(
        admin
            .get_pool(GetPoolRequest { name: "web".into() })
            .await
            .is_err()
    );

    // Create and wait for ready.
    admin
        .create_pool(CreatePoolRequest {
            spec: Some(packed(spec("web", 16, 64, 1))),
            dry_run: false,
        })
        .await?;
    let pool = world
        .wait_pool("web", "pool web ready", |p| p.phase == "ready")
        .await?;
    assert_eq!(
        pool.members.iter().filter(|m| m.role == "control-plane").count(),
        1
    );
    assert_eq!(
        pool.members
            .iter()
            .find(|m| m.role == "control-plane")
            .unwrap()
            .hostname,
        "cp-a",
        "smallest host leads"
    );
    assert_eq!(
        world.kubesim_nodes(&pool)?,
        expected_nodes(&pool),
        "kubesim holds exactly the chosen nodes"
    );
    // The flannel manifest the controller applied can start: every node
    // turns Ready (kubesim checks the DaemonSet, RBAC, config and mounts).
    world.wait_nodes_ready(&pool).await?;
    assert!(pool.recent_events.iter().any(|e| e.kind == "pool_created"));

    // Grow: one more worker joins.
    let grown = admin
        .resize_pool(ResizePoolRequest {
            name: "web".into(),
            cores: 24,
            memory_bytes: 96 * GIB,
            dry_run: false,
            lb_range: String::new(),
        })
        .await?
        .into_inner();
    assert!(
        !grown.adding.is_empty() && grown.releasing.is_empty(),
        "{grown:?}"
    );
    let pool = world
        .wait_pool("web", "pool web grown and ready", |p| {
            p.phase == "ready" && p.worker_cores >= 24
        })
        .await?;
    assert_eq!(world.kubesim_nodes(&pool)?, expected_nodes(&pool));

    // Shrink: workers are drained, deleted from the cluster and reset.
    let shrunk = admin
        .resize_pool(ResizePoolRequest {
            name: "web".into(),
            cores: 8,
            memory_bytes: 32 * GIB,
            dry_run: false,
            lb_range: String::new(),
        })
        .await?
        .into_inner();
    assert!(!shrunk.releasing.is_empty(), "{shrunk:?}");
    let pool = world
        .wait_pool("web", "pool web shrunk and ready", |p| {
            p.phase == "ready" && p.members.iter().all(|m| m.state == "joined") && p.worker_cores >= 8
        })
        .await?;
    assert!(
        pool.worker_cores >= 8 && pool.worker_memory_bytes >= 32 * GIB,
        "never below the request"
    );
    assert_eq!(
        world.kubesim_nodes(&pool)?,
        expected_nodes(&pool),
        "released nodes are gone from the cluster"
    );
    for released in &shrunk.releasing {
        let node_root = world.node_root(&released.hostname);
        assert!(
            !node_root.join("etc/kubernetes/kubelet.conf").exists(),
            "{} was not reset",
            released.hostname
        );
    }
    let hosts = world.cluster.hosts().await?;
    for released in &shrunk.releasing {
        let host = hosts.iter().find(|h| h.host_id == released.host_id).unwrap();
        assert_eq!(host.pool, "", "{} not back in the fleet", released.hostname);
    }

    // Destroy: every host reset and back in the fleet, the pool gone.
    admin
        .destroy_pool(DestroyPoolRequest { name: "web".into() })
        .await?;
    eventually(Duration::from_secs(60), "pool web gone", || async {
        let gone = match world.admin().await {
            Ok(mut a) => a
                .get_pool(GetPoolRequest { name: "web".into() })
                .await
                .is_err_and(|s| s.code() == tonic::Code::NotFound),
            Err(_) => false,
        };
        (gone.then_some(()), gone)
    })
    .await?;
    let hosts = world.cluster.hosts().await?;
    assert!(
        hosts.iter().all(|h| h.pool.is_empty()),
        "a host is still in a pool"
    );
    for agent in &world.agents {
        assert!(
            !agent.dir.join("node/etc/kubernetes/kubelet.conf").exists(),
            "{} not reset",
            agent.profile.hostname
        );
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_creates_never_share_a_host() -> anyhow::Result<()> {
    let world = World::start(fleet()).await?;
    let a = world.admin().await?;
    let b = world.admin().await?;
    let (ra, rb) = tokio::join!(
        {
            let mut a = a.clone();
            async move {
                a.create_pool(CreatePoolRequest {
                    spec: Some(packed(spec("one", 8, 16, 1))),
                    dry_run: false,
                })
                .await
            }
        },
        {
            let mut b = b.clone();
            async move {
                b.create_pool(CreatePoolRequest {
                    spec: Some(packed(spec("two", 8, 16, 1))),
                    dry_run: false,
                })
                .await
            }
        },
    );
    let created: Vec<Pool> = [ra, rb]
        .into_iter()
        .filter_map(|r| r.ok())
        .filter_map(|r| r.into_inner().pool)
        .collect();
    // Both succeed: a create that loses a host to the other is placed again.
    assert_eq!(created.len(), 2, "a create failed instead of placing again");
    let mut seen = BTreeSet::new();
    for pool in &created {
        for member in &pool.members {
            assert!(
                seen.insert(member.host_id.clone()),
                "host {} in two pools",
                member.hostname
            );
        }
    }
    // And the replicated state agrees.
    let hosts = world.cluster.hosts().await?;
    let in_pools = hosts.iter().filter(|h| !h.pool.is_empty()).count();
    assert_eq!(in_pools, seen.len());

    // Pools, their members and the hosts' membership survive a restart of
    // every controller (they come back from disk, not from a replay).
    let mut world = world;
    for c in &mut world.cluster.controllers {
        c.stop()?;
    }
    for c in &mut world.cluster.controllers {
        c.spawn()?;
    }
    for c in &mut world.cluster.controllers {
        c.wait_answering().await?;
    }
    for pool in &created {
        let name = pool.spec.as_ref().unwrap().name.clone();
        let after = world
            .wait_pool(&name, "pool back after a restart", |p| {
                p.members.len() == pool.members.len()
            })
            .await?;
        let ids = |p: &Pool| {
            p.members
                .iter()
                .map(|m| m.host_id.clone())
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(ids(&after), ids(pool), "pool {name} changed across a restart");
    }
    let hosts = world.cluster.hosts().await?;
    assert_eq!(hosts.iter().filter(|h| !h.pool.is_empty()).count(), seen.len());
    Ok(())
}

#[tokio::test]
async fn invalid_pool_requests_are_rejected_naming_the_field_and_change_nothing() -> anyhow::Result<()> {
    let world = World::start(vec![
        Profile::new("cp-a", "a", 4, "8GiB"),
        Profile::new("w-a1", "a", 8, "32GiB"),
    ])
    .await?;
    let mut admin = world.admin().await?;
    let cases = [
        (spec("Web_1", 8, 16, 1), "spec.name"),
        (spec("web", 0, 16, 1), "spec.cores"),
        (spec("web", 8, 0, 1), "spec.memory_bytes"),
        (spec("web", 8, 16, 2), "spec.control_planes"),
    ];
    for (bad, field) in cases {
        let err = admin
            .create_pool(CreatePoolRequest {
                spec: Some(bad),
                dry_run: false,
            })
            .await
            .expect_err(field);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    // More than the fleet has: the error says what is free.
    let err = admin
        .create_pool(CreatePoolRequest {
            spec: Some(spec("big", 64, 256, 1)),
            dry_run: false,
        })
        .await
        .expect_err("too big");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("free"), "{}", err.message());
    let hosts = world.cluster.hosts().await?;
    assert!(hosts.iter().all(|h| h.pool.is_empty()));
    Ok(())
}

#[tokio::test]
async fn a_leader_kill_during_a_create_still_ends_in_one_consistent_cluster() -> anyhow::Result<()> {
    let mut world = World::start(fleet()).await?;
    let mut admin = world.admin().await?;
    admin
        .create_pool(CreatePoolRequest {
            spec: Some(spec("web", 16, 64, 1)),
            dry_run: false,
        })
        .await?;
    let leader = world.cluster.leader().await?;
    world.cluster.get(leader).kill();
    let pool = world
        .wait_pool("web", "pool web ready after failover", |p| p.phase == "ready")
        .await?;
    assert_eq!(
        world.kubesim_nodes(&pool)?,
        expected_nodes(&pool),
        "one cluster with exactly the chosen nodes"
    );
    let hosts = world.cluster.hosts().await?;
    let members: BTreeSet<_> = pool.members.iter().map(|m| m.host_id.clone()).collect();
    for host in &hosts {
        assert_eq!(host.pool == "web", members.contains(&host.host_id), "{host:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_drain_blocked_by_a_disruption_budget_names_the_pod_in_the_pool_events() -> anyhow::Result<()> {
    let world = World::start(fleet()).await?;
    let mut admin = world.admin().await?;
    admin
        .create_pool(CreatePoolRequest {
            spec: Some(spec("web", 8, 32, 1)),
            dry_run: false,
        })
        .await?;
    let pool = world
        .wait_pool("web", "pool web ready", |p| p.phase == "ready")
        .await?;
    let worker = pool.members.iter().find(|m| m.role == "worker").unwrap().clone();
    let cp = pool
        .members
        .iter()
        .find(|m| m.role == "control-plane")
        .unwrap()
        .clone();
    // On the worker: the only replica of an app whose budget keeps one.
    let cp_root = world.node_root(&cp.hostname);
    world.kubesim.apply(
        &cp_root,
        &[
            Kubesim::pod_yaml("web-0", &worker.node_name, Some("web-7d9f"), "web"),
            Kubesim::pdb_yaml("web", "web", 1),
        ]
        .join("---\n"),
    )?;

    let home = world.agents[0].dir.clone();
    let out = rpool_tests::ctl(
        &home,
        &[
            "--controller",
            &world.cluster.addr_list(),
            "host",
            "drain",
            &worker.host_id[..8],
            "--yes",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pool = world
        .wait_pool("web", "a drain_node failure in the events", |p| {
            p.recent_events
                .iter()
                .any(|e| e.message.contains("drain_node") && e.message.contains("failed"))
        })
        .await?;
    let event = pool
        .recent_events
        .iter()
        .find(|e| e.message.contains("drain_node") && e.message.contains("failed"))
        .unwrap()
        .message
        .clone();
    assert!(
        event.contains(&format!(
            "node {} not drained, blocked by pods: default/web-0 (eviction refused by its PodDisruptionBudget until the drain timed out)",
            worker.node_name
        )),
        "{event}"
    );
    // The worker is still a member: it was not removed from under its pod.
    assert!(
        pool.members.iter().any(|m| m.host_id == worker.host_id),
        "{pool:?}"
    );
    let pods = world
        .kubesim
        .kubectl(&cp_root, &["get", "pods", "-n", "default", "-o", "name"]);
    assert_eq!(String::from_utf8_lossy(&pods.stdout), "pod/web-0\n");
    Ok(())
}

#[tokio::test]
async fn draining_a_worker_joins_a_replacement_first_and_cordoned_hosts_are_never_placed()
-> anyhow::Result<()> {
    let world = World::start(fleet()).await?;
    let mut admin = world.admin().await?;
    admin
        .create_pool(CreatePoolRequest {
            spec: Some(spec("web", 8, 32, 1)),
            dry_run: false,
        })
        .await?;
    let pool = world
        .wait_pool("web", "pool web ready", |p| p.phase == "ready")
        .await?;
    let worker = pool.members.iter().find(|m| m.role == "worker").unwrap().clone();

    // rpoolctl host drain: a replacement joins, the worker leaves and is cordoned.
    let home = world.agents[0].dir.clone();
    let out = rpool_tests::ctl(
        &home,
        &[
            "--controller",
            &world.cluster.addr_list(),
            "host",
            "drain",
            &worker.host_id[..8],
            "--yes",
            "--wait",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pool = world
        .wait_pool("web", "pool web ready without the drained worker", |p| {
            p.phase == "ready" && !p.members.iter().any(|m| m.host_id == worker.host_id)
        })
        .await?;
    assert!(
        pool.worker_cores >= 8 && pool.worker_memory_bytes >= 32 * GIB,
        "{pool:?}"
    );
    assert_eq!(world.kubesim_nodes(&pool)?, expected_nodes(&pool));
    let events: Vec<&str> = pool.recent_events.iter().map(|e| e.message.as_str()).collect();
    let joined = events
        .iter()
        .position(|e| e.contains("joined as worker") && !e.contains(&worker.hostname));
    let drained = events
        .iter()
        .position(|e| e.contains(&format!("node {} drained", worker.node_name)));
    assert!(
        joined.is_some() && drained.is_some() && joined < drained,
        "replacement did not join first: {events:#?}"
    );
    let hosts = world.cluster.hosts().await?;
    let drained_host = hosts.iter().find(|h| h.host_id == worker.host_id).unwrap();
    assert_eq!(drained_host.state, rpool_proto::v1::HostState::Cordoned as i32);
    assert_eq!(drained_host.pool, "");

    // A cordoned host is never placed: cordon every free host but one, so a
    // pool of two hosts fits only if cordoned ones count.
    let free: Vec<String> = hosts
        .iter()
        .filter(|h| h.pool.is_empty() && h.state == rpool_proto::v1::HostState::Ready as i32)
        .map(|h| h.host_id.clone())
        .collect();
    assert!(!free.is_empty());
    for id in &free[1..] {
        let out = rpool_tests::ctl(
            &home,
            &["--controller", &world.cluster.addr_list(), "host", "cordon", id],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let err = admin
        .create_pool(CreatePoolRequest {
            spec: Some(spec("two", 1, 1, 1)),
            dry_run: true,
        })
        .await
        .expect_err("cordoned hosts were placed");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    for id in &free[1..] {
        let out = rpool_tests::ctl(
            &home,
            &["--controller", &world.cluster.addr_list(), "host", "uncordon", id],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // Uncordon makes it placeable again.
    let out = rpool_tests::ctl(
        &home,
        &[
            "--controller",
            &world.cluster.addr_list(),
            "host",
            "uncordon",
            &worker.host_id[..8],
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hosts = world.cluster.hosts().await?;
    assert_eq!(
        hosts.iter().find(|h| h.host_id == worker.host_id).unwrap().state,
        rpool_proto::v1::HostState::Ready as i32
    );
    Ok(())
}

/// A LoadBalancer Service as a user applies it.
fn lb_service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  type: LoadBalancer\n  selector:\n    app: {name}\n  ports:\n  - port: 80\n    protocol: TCP\n"
    )
}

#[tokio::test]
async fn load_balancer_services_get_addresses_from_the_pools_lb_range_and_follow_a_resize()
-> anyhow::Result<()> {
    let world = World::start(fleet()).await?;
    let mut admin = world.admin().await?;
    admin
        .create_pool(CreatePoolRequest {
            spec: Some(PoolSpec {
                lb_range: "203.0.113.10-203.0.113.11".into(),
                ..spec("lb", 8, 32, 1)
            }),
            dry_run: false,
        })
        .await?;
    let pool = world
        .wait_pool("lb", "pool lb ready", |p| p.phase == "ready")
        .await?;
    let cp = pool
        .members
        .iter()
        .find(|m| m.role == "control-plane")
        .unwrap()
        .clone();
    let root = world.node_root(&cp.hostname);
    // What `kubectl get svc -o json` says each service's address is.
    let addresses = || -> anyhow::Result<Vec<(String, Option<String>)>> {
        let out = world.kubesim.kubectl(&root, &["get", "svc", "-o", "json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v = rpool_tests::json_of(&out)?;
        Ok(v["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| {
                (
                    s["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
                    s["status"]["loadBalancer"]["ingress"][0]["ip"]
                        .as_str()
                        .map(str::to_owned),
                )
            })
            .collect())
    };

    // Two services, two distinct addresses of the range; a third finds it
    // exhausted and stays pending, as with MetalLB.
    world.kubesim.apply(
        &root,
        &[lb_service("a"), lb_service("b"), lb_service("c")].join("---\n"),
    )?;
    let got = addresses()?;
    assert_eq!(
        got,
        [
            ("a".to_owned(), Some("203.0.113.10".to_owned())),
            ("b".to_owned(), Some("203.0.113.11".to_owned())),
            ("c".to_owned(), None),
        ]
    );

    // A resize moves the range: the IPAddressPool is applied again and
    // every service gets an address of the new range, none shared.
    admin
        .resize_pool(ResizePoolRequest {
            name: "lb".into(),
            cores: pool.spec.as_ref().map_or(8, |s| s.cores),
            memory_bytes: pool.spec.as_ref().map_or(32 * GIB, |s| s.memory_bytes),
            dry_run: false,
            lb_range: "203.0.113.32/30".into(),
        })
        .await?;
    let moved = eventually(Duration::from_secs(60), "services on the new range", || async {
        let got = addresses().unwrap_or_default();
        let all_new = got.len() == 3
            && got
                .iter()
                .all(|(_, ip)| ip.as_deref().is_some_and(|ip| ip.starts_with("203.0.113.3")));
        (all_new.then(|| got.clone()), got)
    })
    .await?;
    let ips: BTreeSet<String> = moved.iter().filter_map(|(_, ip)| ip.clone()).collect();
    assert_eq!(ips.len(), 3, "no address shared: {moved:?}");
    for ip in &ips {
        let last: u8 = ip.rsplit('.').next().unwrap().parse()?;
        assert!((32..=35).contains(&last), "{ip} in 203.0.113.32/30");
    }
    // The IPAddressPool kubesim holds is the new range.
    let pool_file = std::fs::read_dir(world.kubesim.state_dir.join("clusters"))?
        .next()
        .expect("a cluster")?
        .path()
        .join("applied")
        .join("ipaddresspool.metallb.io_metallb-system_rpool-lb-range.yaml");
    let text = std::fs::read_to_string(&pool_file)?;
    assert!(
        text.contains("203.0.113.32/30") && !text.contains("203.0.113.10"),
        "{text}"
    );
    Ok(())
}
