//! Air-gapped images end to end (issue 11): a fleet whose `[kube]
//! image_repository` is a mirror, kubesim's registries (the mirror holds
//! exactly `registry-contents`), and the images step the agent runs before
//! `kubeadm init`: a missing image is reported as that, naming the host and
//! the image, nothing else happens, and the pool comes up once the image is
//! mirrored (the task's own retry).

use std::time::Duration;

use rpool_proto::v1::admin_service_client::AdminServiceClient;
use rpool_proto::v1::{CreatePoolRequest, Event, GetPoolRequest, ListEventsRequest, Pool, PoolSpec};
use rpool_tests::{
    Agent, Cluster, Kubesim, Liveness, Profile, TEST_RAFT, TEST_VIP_RANGE, ctl, eventually, json_of,
};
use tonic::transport::Channel;

const GIB: u64 = 1 << 30;
const MIRROR: &str = "mirror.test:5000/k8s";

/// What `kubeadm config images list --kubernetes-version v1.32.0
/// --image-repository MIRROR` prints (CoreDNS sits flat under a mirror).
fn kubeadm_images() -> Vec<String> {
    kubeadm_images_in(MIRROR)
}

fn kubeadm_images_in(mirror: &str) -> Vec<String> {
    [
        "kube-apiserver:v1.32.0",
        "kube-controller-manager:v1.32.0",
        "kube-scheduler:v1.32.0",
        "kube-proxy:v1.32.0",
        "coredns:v1.11.3",
        "pause:3.10",
        "etcd:3.5.16-0",
    ]
    .iter()
    .map(|i| format!("{mirror}/{i}"))
    .collect()
}

async fn admin(cluster: &Cluster) -> anyhow::Result<AdminServiceClient<Channel>> {
    let leader = cluster.leader().await?;
    cluster
        .controllers
        .iter()
        .find(|c| c.id == leader)
        .unwrap()
        .admin()
        .await
}

async fn events(cluster: &Cluster, pool: &str) -> Vec<Event> {
    match admin(cluster).await {
        Ok(mut a) => a
            .list_events(ListEventsRequest {
                pool: pool.to_owned(),
                limit: 1000,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().events)
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

async fn pool(cluster: &Cluster, name: &str) -> Option<Pool> {
    admin(cluster)
        .await
        .ok()?
        .get_pool(GetPoolRequest {
            name: name.to_owned(),
        })
        .await
        .ok()
        .map(|r| r.into_inner())
}

fn node_root(agents: &[Agent], hostname: &str) -> std::path::PathBuf {
    agents
        .iter()
        .find(|a| a.profile.hostname == hostname)
        .expect("agent")
        .dir
        .join("node")
}

#[tokio::test]
async fn a_mirror_missing_an_image_fails_the_images_step_naming_host_and_image_then_the_pool_comes_up()
-> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let kube = format!("[kube]\nvip_range = \"{TEST_VIP_RANGE}\"\nimage_repository = \"{MIRROR}\"\n");
    let cluster = Cluster::start(root.path(), 3, Liveness::FAST, &format!("{TEST_RAFT}{kube}")).await?;
    let agents = cluster
        .start_agents(
            root.path(),
            vec![
                Profile::new("cp-a", "a", 4, "8GiB"),
                Profile::new("w-a1", "a", 8, "32GiB"),
                Profile::new("w-b1", "b", 8, "32GiB"),
            ],
        )
        .await?;
    let sim = Kubesim::new(root.path())?;
    // The mirror holds every kubeadm image but etcd.
    let registry = sim.state_dir.join("registry-contents");
    let etcd = format!("{MIRROR}/etcd:3.5.16-0");
    let without_etcd: Vec<String> = kubeadm_images().into_iter().filter(|i| *i != etcd).collect();
    std::fs::write(&registry, format!("# mirror.test\n{}\n", without_etcd.join("\n")))?;

    admin(&cluster)
        .await?
        .create_pool(CreatePoolRequest {
            spec: Some(PoolSpec {
                name: "air".into(),
                cores: 8,
                memory_bytes: 32 * GIB,
                control_planes: 1,
                kubernetes_version: "v1.32.0".into(),
                ..PoolSpec::default()
            }),
            dry_run: false,
        })
        .await?;

    // The images step fails on the control plane, naming it and the image.
    let failed = eventually(Duration::from_secs(60), "an images_pull_failed event", || async {
        let all = events(&cluster, "air").await;
        let hit = all.iter().find(|e| e.kind == "images_pull_failed").cloned();
        (hit, all.iter().map(|e| e.message.clone()).collect::<Vec<_>>())
    })
    .await?;
    // Nothing else happened: no cluster in kubesim, no kubeadm state on the
    // host, and no init reported as failed.
    let clusters = std::fs::read_dir(sim.state_dir.join("clusters"))
        .map(|d| d.count())
        .unwrap_or(0);
    let members = pool(&cluster, "air").await.expect("pool air").members;
    let cp = members
        .iter()
        .find(|m| m.role == "control-plane")
        .expect("a control plane")
        .hostname
        .clone();
    let cp_root = node_root(&agents, &cp);
    let admin_conf = cp_root.join("etc/kubernetes/admin.conf").exists();
    let so_far = events(&cluster, "air").await;
    // Mirror the image (the task's retry, 2 s after the failure, finds it).
    std::fs::write(&registry, format!("{}\n{etcd}\n", without_etcd.join("\n")))?;

    assert!(
        failed.message.contains(&format!(" on {cp}, "))
            && failed
                .message
                .contains(&format!("image {etcd} could not be pulled")),
        "{}",
        failed.message
    );
    assert!(
        failed.message.contains("init_control_plane"),
        "{}",
        failed.message
    );
    assert_eq!(clusters, 0, "no cluster was made");
    assert!(!admin_conf, "kubeadm init did not run");
    assert!(
        !so_far.iter().any(|e| e.kind == "task_failed"),
        "reported as a missing image, not a failed init: {so_far:?}"
    );
    // The images that were there are on the host now (kubeadm pulls in
    // order and stops at the first failure: etcd is last).
    let store =
        std::fs::read_to_string(cp_root.join("var/lib/containerd/kubesim-images")).unwrap_or_default();
    assert!(
        store.contains(&format!("{MIRROR}/kube-apiserver:v1.32.0")),
        "{store}"
    );
    assert!(!store.contains(&etcd), "{store}");

    // The retry pulls etcd, init runs and the pool comes up.
    let ready = eventually(Duration::from_secs(60), "pool air ready", || async {
        let p = pool(&cluster, "air").await;
        let seen = p.as_ref().map(|p| (p.phase.clone(), p.phase_reason.clone()));
        (p.filter(|p| p.phase == "ready"), seen)
    })
    .await?;
    let all = events(&cluster, "air").await;
    let pulled = all
        .iter()
        .find(|e| e.kind == "images_pulled")
        .unwrap_or_else(|| panic!("an images_pulled event: {all:?}"));
    assert!(
        pulled.message.contains(&format!(" on {cp} ")),
        "{}",
        pulled.message
    );
    for image in kubeadm_images() {
        assert!(pulled.message.contains(&image), "{image} in {}", pulled.message);
    }
    // The addon images to mirror are named, through the mirror.
    assert!(
        pulled
            .message
            .contains(&format!("{MIRROR}/flannel-io/flannel:v0.26.7")),
        "{}",
        pulled.message
    );
    let store = std::fs::read_to_string(cp_root.join("var/lib/containerd/kubesim-images"))?;
    assert!(store.contains(&etcd), "{store}");
    // kubeadm's own config named the mirror: the cluster kubesim made has it.
    let cluster_json = std::fs::read_dir(sim.state_dir.join("clusters"))?
        .next()
        .expect("one cluster")?
        .path()
        .join("cluster.json");
    let cluster_json = std::fs::read_to_string(cluster_json)?;
    assert!(
        cluster_json.contains(&format!("\"image_repository\": \"{MIRROR}\""))
            || cluster_json.contains(&format!("\"image_repository\":\"{MIRROR}\"")),
        "{cluster_json}"
    );
    // Workers ran no images step (kubeadm join on a worker pulls nothing).
    let worker = ready
        .members
        .iter()
        .find(|m| m.role == "worker")
        .expect("a worker");
    assert!(
        !node_root(&agents, &worker.hostname)
            .join("var/lib/containerd/kubesim-images")
            .exists()
    );
    assert!(
        !all.iter()
            .any(|e| e.kind == "images_pulled" && e.message.contains(&worker.hostname)),
        "{all:?}"
    );
    Ok(())
}

/// A pool created with `rpoolctl pool create --image-repository` takes its
/// images from that repository, not the fleet's `[kube] image_repository`:
/// the fleet's mirror holds nothing here, so any pull through it would fail.
#[tokio::test]
async fn a_pools_own_image_repository_overrides_the_fleets_for_kubeadm_the_images_step_and_addons()
-> anyhow::Result<()> {
    const POOL_MIRROR: &str = "pool-mirror.test:5000/edge/k8s";
    let root = tempfile::tempdir()?;
    let home = root.path().join("home");
    let kube = format!("[kube]\nvip_range = \"{TEST_VIP_RANGE}\"\nimage_repository = \"{MIRROR}\"\n");
    let cluster = Cluster::start(root.path(), 3, Liveness::FAST, &format!("{TEST_RAFT}{kube}")).await?;
    let all = cluster.addr_list();
    let agents = cluster
        .start_agents(
            root.path(),
            vec![
                Profile::new("cp-a", "a", 4, "8GiB"),
                Profile::new("w-a1", "a", 8, "32GiB"),
            ],
        )
        .await?;
    let sim = Kubesim::new(root.path())?;
    // Only the pool's mirror holds the images.
    std::fs::write(
        sim.state_dir.join("registry-contents"),
        format!("{}\n", kubeadm_images_in(POOL_MIRROR).join("\n")),
    )?;
    let create = |extra: &[&str]| {
        let mut args = vec![
            "--controller",
            all.as_str(),
            "pool",
            "create",
            "edge",
            "--cores",
            "8",
            "--memory",
            "32GiB",
            "--kubernetes-version",
            "v1.32.0",
        ];
        args.extend_from_slice(extra);
        ctl(&home, &args)
    };

    // A bad repository is refused by the CLI (usage, exit 64), naming the form.
    let bad = create(&["--image-repository", "https://pool-mirror.test/k8s"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("--image-repository"), "{stderr}");
    assert!(stderr.contains("HOST[:PORT][/PATH]"), "{stderr}");
    // The dry run shows it, changing nothing.
    let dry = json_of(&create(&[
        "--image-repository",
        POOL_MIRROR,
        "--dry-run",
        "-o",
        "json",
    ]))?;
    assert_eq!(dry["image_repository"], POOL_MIRROR, "{dry}");
    assert!(
        pool(&cluster, "edge").await.is_none(),
        "a dry run created nothing"
    );
    let created = json_of(&create(&["--image-repository", POOL_MIRROR, "-o", "json"]))?;
    assert_eq!(created["image_repository"], POOL_MIRROR, "{created}");

    eventually(Duration::from_secs(90), "pool edge ready", || async {
        let p = pool(&cluster, "edge").await;
        let seen = p.as_ref().map(|p| (p.phase.clone(), p.phase_reason.clone()));
        (p.filter(|p| p.phase == "ready"), seen)
    })
    .await?;
    let events = events(&cluster, "edge").await;
    assert!(
        !events.iter().any(|e| e.kind == "images_pull_failed"),
        "{events:?}"
    );
    let pulled = events
        .iter()
        .find(|e| e.kind == "images_pulled")
        .unwrap_or_else(|| panic!("an images_pulled event: {events:?}"));
    for image in kubeadm_images_in(POOL_MIRROR) {
        assert!(pulled.message.contains(&image), "{image} in {}", pulled.message);
    }
    // Addon images are named through the pool's repository, never the fleet's.
    assert!(
        pulled
            .message
            .contains(&format!("{POOL_MIRROR}/flannel-io/flannel:v0.26.7")),
        "{}",
        pulled.message
    );
    assert!(
        !pulled.message.contains(&format!("{MIRROR}/")),
        "{}",
        pulled.message
    );
    // kubeadm's imageRepository was the pool's (kubesim records it), and the
    // control plane's image store holds the pool mirror's images.
    let cluster_json = std::fs::read_dir(sim.state_dir.join("clusters"))?
        .next()
        .expect("one cluster")?
        .path()
        .join("cluster.json");
    let cluster_json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(cluster_json)?)?;
    assert_eq!(cluster_json["image_repository"], POOL_MIRROR);
    let cp = pool(&cluster, "edge")
        .await
        .expect("pool edge")
        .members
        .into_iter()
        .find(|m| m.role == "control-plane")
        .expect("a control plane")
        .hostname;
    let store = std::fs::read_to_string(node_root(&agents, &cp).join("var/lib/containerd/kubesim-images"))?;
    assert!(store.contains(&format!("{POOL_MIRROR}/etcd:3.5.16-0")), "{store}");
    assert!(!store.contains(&format!("{MIRROR}/")), "{store}");

    // `pool show` has it, in JSON and in the table.
    let shown = json_of(&ctl(
        &home,
        &["--controller", &all, "pool", "show", "edge", "-o", "json"],
    ))?;
    assert_eq!(shown["image_repository"], POOL_MIRROR, "{shown}");
    let table = ctl(&home, &["--controller", &all, "pool", "show", "edge"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains(&format!("from {POOL_MIRROR}")), "{table}");
    Ok(())
}
