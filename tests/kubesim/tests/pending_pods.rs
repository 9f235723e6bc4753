//! The pending-pods count a control-plane agent reports for autoscaling:
//! the real `kubectl get pods -A --field-selector=status.phase=Pending -o
//! json` command line through the driver, answered by kubesim.

use std::path::PathBuf;

use rpool_agent::config::KubeConfig;
use rpool_agent::kube::{Driver, InitRequest};

fn driver(dir: &std::path::Path, host: &str) -> (Driver, PathBuf) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["kubeadm", "kubectl"] {
        let link = bin.join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kubesim"), link).unwrap();
        }
    }
    let state = dir.join("kubesim-state");
    std::fs::create_dir_all(&state).unwrap();
    let root = dir.join("hosts").join(host);
    std::fs::create_dir_all(&root).unwrap();
    rpool_proto::sim::create_socket_file(&root.join(rpool_proto::sim::CONTAINERD_SOCKET)).unwrap();
    let config = KubeConfig {
        kubeadm_path: bin.join("kubeadm"),
        kubectl_path: bin.join("kubectl"),
        host_root: root.clone(),
        ..KubeConfig::default()
    };
    let driver = Driver::new(&config, dir.join("tmp").join(host))
        .with_env("KUBESIM_STATE_DIR", &state)
        .with_env("KUBESIM_NODE_ROOT", &root)
        .with_env("KUBESIM_HOSTNAME", format!("web-{host}"));
    (driver, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_counts_unschedulable_pods_through_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let (cp, state) = driver(dir.path(), "a");
    let (worker, _) = driver(dir.path(), "b");
    assert!(!cp.is_control_plane());
    cp.init(&InitRequest {
        control_plane_endpoint: "cp.web.test:6443".to_owned(),
        pod_network_cidr: "10.244.0.0/16".to_owned(),
        service_cidr: "10.96.0.0/12".to_owned(),
        kubernetes_version: "v1.32.0".to_owned(),
        node_name: "web-a".to_owned(),
        kubeadm_config: String::new(),
        kube_vip_manifest: String::new(),
        kube_vip_manifest_after_init: String::new(),
    })
    .await
    .unwrap();
    assert!(cp.is_control_plane());
    assert!(!worker.is_control_plane(), "no admin kubeconfig on b");

    // Before a pod network, CoreDNS's two replicas cannot be scheduled.
    assert_eq!(cp.pending_pods().await.unwrap(), 2);

    // With a pod network they run: nothing pending.
    cp.apply(
        "cni",
        &rpool_controller::kube::render::cni_manifest("10.244.0.0/16").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(cp.pending_pods().await.unwrap(), 0);

    // Workloads the cluster has no room for (kubesim's pending-pods file).
    let cluster = std::fs::read_dir(state.join("clusters"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(cluster.join("pending-pods"), "3").unwrap();
    assert_eq!(cp.pending_pods().await.unwrap(), 3);
    std::fs::write(cluster.join("pending-pods"), "0").unwrap();
    assert_eq!(cp.pending_pods().await.unwrap(), 0);

    // A host that is no control plane cannot ask.
    assert!(worker.pending_pods().await.is_err());
}

#[test]
fn only_unschedulable_pending_pods_count() {
    let json = r#"{"items": [
        {"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}},
        {"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}},
        {"status": {"phase": "Pending"}}
    ]}"#;
    assert_eq!(rpool_agent::kube::count_unschedulable(json), Ok(1));
    assert_eq!(rpool_agent::kube::count_unschedulable(r#"{"items": []}"#), Ok(0));
    assert!(rpool_agent::kube::count_unschedulable("error").is_err());
    assert!(rpool_agent::kube::count_unschedulable("{}").is_err());
}
