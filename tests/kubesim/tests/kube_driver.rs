//! The agent's task executor and Kubernetes driver against kubesim: the
//! real command path (process spawn, flags, output parsing, idempotency
//! checks, result persistence) on three simulated hosts sharing one
//! kubesim state directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rpool_agent::config::KubeConfig;
use rpool_agent::kube::Driver;
use rpool_agent::tasks::{Executor, kube_runner};
use rpool_proto::v1::task::Kind;
use rpool_proto::v1::{
    DeleteNode, DrainNode, FetchKubeconfig, InitControlPlane, InstallAddons, JoinControlPlane, JoinSecrets,
    JoinWorker, Manifest, RefreshJoinToken, RemoveEtcdMember, Reset, Task, TaskResult,
};
use serde_json::Value;

const ENDPOINT: &str = "cp.web.test:6443";
const WAIT: Duration = Duration::from_secs(60);

struct Lab {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["kubeadm", "kubectl"] {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kubesim"), bin.join(name)).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("kubesim-state")).unwrap();
        Lab { dir, bin }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("kubesim-state")
    }

    fn root(&self, host: &str) -> PathBuf {
        self.dir.path().join("hosts").join(host)
    }

    /// An agent's executor on simulated host `host`.
    fn host(&self, host: &str) -> Host {
        let root = self.root(host);
        std::fs::create_dir_all(&root).unwrap();
        rpool_proto::sim::create_socket_file(&root.join(rpool_proto::sim::CONTAINERD_SOCKET)).unwrap();
        let agent_state = self.dir.path().join("agents").join(host);
        std::fs::create_dir_all(&agent_state).unwrap();
        let config = KubeConfig {
            kubeadm_path: self.bin.join("kubeadm"),
            kubectl_path: self.bin.join("kubectl"),
            host_root: root.clone(),
            ..KubeConfig::default()
        };
        let driver = Driver::new(&config, agent_state.join("tmp"))
            .with_env("KUBESIM_STATE_DIR", self.state_dir())
            .with_env("KUBESIM_NODE_ROOT", &root)
            .with_env("KUBESIM_HOSTNAME", format!("web-{host}"))
            .with_env(
                "KUBESIM_CONFIG_LOG",
                self.dir.path().join(format!("config-log-{host}")),
            );
        let executor = Executor::start(kube_runner(Arc::new(driver)), &agent_state).unwrap();
        Host {
            name: format!("web-{host}"),
            config_log: self.dir.path().join(format!("config-log-{host}")),
            root,
            agent_state,
            executor,
        }
    }

    /// `kubectl get nodes -o json` through host `via`'s admin kubeconfig.
    fn nodes(&self, via: &Host) -> Vec<(String, &'static str, bool)> {
        let out = std::process::Command::new(self.bin.join("kubectl"))
            .args([
                "--kubeconfig",
                "/etc/kubernetes/admin.conf",
                "get",
                "nodes",
                "-o",
                "json",
            ])
            .env("KUBESIM_STATE_DIR", self.state_dir())
            .env("KUBESIM_NODE_ROOT", &via.root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl get nodes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut nodes: Vec<_> = json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let name = n["metadata"]["name"].as_str().unwrap().to_owned();
                let cp = n["metadata"]["labels"]
                    .as_object()
                    .is_some_and(|l| l.contains_key("node-role.kubernetes.io/control-plane"));
                let unschedulable = n["spec"]["unschedulable"].as_bool().unwrap_or(false);
                (name, if cp { "control-plane" } else { "worker" }, unschedulable)
            })
            .collect();
        nodes.sort();
        nodes
    }

    fn cluster_json(&self) -> Value {
        let clusters = self.state_dir().join("clusters");
        let entry = std::fs::read_dir(&clusters).unwrap().next().unwrap().unwrap();
        serde_json::from_str(&std::fs::read_to_string(entry.path().join("cluster.json")).unwrap()).unwrap()
    }
}

struct Host {
    name: String,
    root: PathBuf,
    agent_state: PathBuf,
    executor: Executor,
    /// kubesim's record of the `--config` files kubeadm read (path, mode).
    config_log: PathBuf,
}

impl Host {
    async fn run(&self, task: Task) -> TaskResult {
        self.executor.submit(task);
        tokio::time::timeout(WAIT, self.executor.next_result())
            .await
            .expect("a result in time")
            .expect("executor alive")
    }

    fn task(&self, id: &str, attempt: u32, kind: Kind) -> Task {
        Task {
            task_id: id.to_owned(),
            attempt,
            deadline_unix_ms: now_ms() + 120_000,
            pool: "web".to_owned(),
            node_name: self.name.clone(),
            kind: Some(kind),
        }
    }

    fn has(&self, path: &str) -> bool {
        self.root.join(path).exists()
    }

    /// The `kubeadm join --config` files kubesim read on this host: each
    /// was 0600 in the agent's private kubeadm directory (0700) and is
    /// gone now. Returns how many there were.
    fn check_join_configs(&self) -> usize {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.agent_state.join("tmp").join("kubeadm");
        let log = std::fs::read_to_string(&self.config_log).unwrap_or_default();
        for line in log.lines() {
            let (path, mode) = line.rsplit_once(' ').unwrap();
            assert_eq!(mode, "600", "{line}");
            assert_eq!(Path::new(path).parent(), Some(dir.as_path()), "{line}");
            assert!(!Path::new(path).exists(), "{path} left behind");
        }
        if !log.is_empty() {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
            assert_eq!(
                std::fs::read_dir(&dir).unwrap().count(),
                0,
                "files left in {}",
                dir.display()
            );
        }
        log.lines().count()
    }

    fn stored(&self, id: &str, attempt: u32) -> PathBuf {
        self.agent_state
            .join("tasks")
            .join(format!("{id}.{attempt}.json"))
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn ok(r: &TaskResult) {
    assert!(r.ok, "task {} failed: {}", r.task_id, r.error);
}

fn init_kind() -> Kind {
    Kind::InitControlPlane(InitControlPlane {
        control_plane_endpoint: ENDPOINT.to_owned(),
        pod_network_cidr: "10.244.0.0/16".to_owned(),
        service_cidr: "10.96.0.0/12".to_owned(),
        kubernetes_version: "v1.32.0".to_owned(),
        kubeadm_config: String::new(),
        ..Default::default()
    })
}

/// "name/role" of every node.
fn names(nodes: &[(String, &'static str, bool)]) -> Vec<String> {
    nodes
        .iter()
        .map(|(n, r, _)| format!("{n}/{r}"))
        .collect::<Vec<_>>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_join_duplicate_drain_delete_reset_through_kubesim() {
    let lab = Lab::new();
    let a = lab.host("a");
    let b = lab.host("b");
    let c = lab.host("c");

    // 1. init on A: join secrets with kubeadm's default expiries, and the
    //    admin kubeconfig.
    let before = now_ms();
    let init = a.run(a.task("init-1", 1, init_kind())).await;
    ok(&init);
    assert!(!init.already_done);
    let join = init.join.clone().expect("init returns join secrets");
    assert_eq!(join.control_plane_endpoint, ENDPOINT);
    assert!(rpool_agent::kube::is_token(&join.token));
    assert!(rpool_agent::kube::is_ca_hash(&join.ca_cert_hash));
    assert!(rpool_agent::kube::is_hex64(&join.certificate_key));
    let day = 24 * 3600 * 1000;
    assert!(join.token_expires_unix_ms >= before + day && join.token_expires_unix_ms <= now_ms() + day);
    let two_h = 2 * 3600 * 1000;
    assert!(join.certificate_key_expires_unix_ms >= before + two_h);
    assert!(init.kubeconfig.contains(&format!("server: https://{ENDPOINT}")));
    // Named after the pool, so several pools' kubeconfigs merge cleanly.
    assert!(
        init.kubeconfig.contains("\ncurrent-context: rpool-web\n"),
        "{}",
        init.kubeconfig
    );
    assert!(
        !init.kubeconfig.contains("kubernetes-admin"),
        "{}",
        init.kubeconfig
    );
    assert!(a.stored("init-1", 1).exists(), "result persisted");
    assert_eq!(names(&lab.nodes(&a)), ["web-a/control-plane"]);
    let cluster = lab.cluster_json();
    assert_eq!(cluster["ca_cert_hash"], join.ca_cert_hash.as_str());

    // 2. The same delivery again (a leader change): the stored answer,
    //    nothing run (kubesim still has only init's token).
    let tokens = lab.cluster_json()["tokens"].as_array().unwrap().len();
    let again = a.run(a.task("init-1", 1, init_kind())).await;
    assert_eq!(again, init);
    assert_eq!(lab.cluster_json()["tokens"].as_array().unwrap().len(), tokens);

    // 3. A retry of init (new attempt) on the initialized host: already
    //    done; fresh token and certificate key, same CA.
    let retry = a.run(a.task("init-1", 2, init_kind())).await;
    ok(&retry);
    assert!(retry.already_done);
    let fresh = retry.join.clone().unwrap();
    assert_ne!(fresh.token, join.token);
    assert_eq!(fresh.ca_cert_hash, join.ca_cert_hash);
    assert!(rpool_agent::kube::is_hex64(&fresh.certificate_key));
    assert!(!retry.kubeconfig.is_empty());

    // 4. Join B as a worker (no certificate key).
    let worker_secrets = JoinSecrets {
        certificate_key: String::new(),
        ..fresh.clone()
    };
    let join_b = |attempt| {
        b.task(
            "join-b",
            attempt,
            Kind::JoinWorker(JoinWorker {
                join: Some(worker_secrets.clone()),
                kubeadm_config: String::new(),
            }),
        )
    };
    let r = b.run(join_b(1)).await;
    ok(&r);
    assert!(!r.already_done);
    assert!(b.has("etc/kubernetes/kubelet.conf"));
    assert_eq!(names(&lab.nodes(&a)), ["web-a/control-plane", "web-b/worker"]);
    assert_eq!(b.check_join_configs(), 1, "one join through --config");

    // 5. Join C as a control plane.
    let r = c
        .run(c.task(
            "join-c",
            1,
            Kind::JoinControlPlane(JoinControlPlane {
                join: Some(fresh.clone()),
                kubeadm_config: String::new(),
                ..Default::default()
            }),
        ))
        .await;
    ok(&r);
    assert_eq!(
        names(&lab.nodes(&a)),
        ["web-a/control-plane", "web-b/worker", "web-c/control-plane"]
    );
    assert_eq!(c.check_join_configs(), 1, "one join through --config");

    // 6. Duplicate delivery of B's join: the stored result; a new attempt
    //    (its first result lost) finds the effect in place: already done.
    //    kubesim would reject a second real join, so nothing ran.
    let dup = b.run(join_b(1)).await;
    assert!(dup.ok && !dup.already_done);
    let retry = b.run(join_b(2)).await;
    ok(&retry);
    assert!(retry.already_done, "joined already: not run again");
    assert_eq!(lab.nodes(&a).len(), 3);
    assert_eq!(b.check_join_configs(), 1, "no second kubeadm join");

    // A control-plane join with a bad CA hash fails with a redacted error.
    let d = lab.host("d");
    let bad = JoinSecrets {
        ca_cert_hash: format!("sha256:{}", "0".repeat(64)),
        ..fresh.clone()
    };
    let r = d
        .run(d.task(
            "join-d",
            1,
            Kind::JoinControlPlane(JoinControlPlane {
                join: Some(bad),
                kubeadm_config: String::new(),
                ..Default::default()
            }),
        ))
        .await;
    assert!(!r.ok);
    assert!(r.error.contains("exit code 1"), "{}", r.error);
    let secret_part = fresh.token.split_once('.').unwrap().1;
    assert!(!r.error.contains(secret_part), "token leaked: {}", r.error);
    assert!(
        !r.error.contains(&fresh.certificate_key),
        "key leaked: {}",
        r.error
    );
    // The failed join read its config too, and removed it.
    assert_eq!(d.check_join_configs(), 1);
    assert!(!r.error.contains("--token"), "{}", r.error);

    // 7. Addons from A; fresh secrets from C; C's kubeconfig.
    let r = a
        .run(a.task(
            "addons",
            1,
            Kind::InstallAddons(InstallAddons {
                manifests: vec![Manifest {
                    name: "cni".into(),
                    content: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rpool-cni\n  namespace: kube-system\ndata:\n  net-conf.json: '{}'\n".into(),
                }],
            }),
        ))
        .await;
    ok(&r);
    let r = c
        .run(c.task(
            "refresh",
            1,
            Kind::RefreshJoinToken(RefreshJoinToken {
                certificate_key: true,
            }),
        ))
        .await;
    ok(&r);
    let refreshed = r.join.unwrap();
    assert_eq!(refreshed.control_plane_endpoint, ENDPOINT);
    assert!(rpool_agent::kube::is_hex64(&refreshed.certificate_key));
    let r = c
        .run(c.task("kubeconfig-c", 1, Kind::FetchKubeconfig(FetchKubeconfig {})))
        .await;
    ok(&r);
    assert!(r.kubeconfig.contains(ENDPOINT));

    // 8. Shrink: drain, delete and reset B.
    let r = a
        .run(a.task(
            "drain-b",
            1,
            Kind::DrainNode(DrainNode {
                target_node: "web-b".into(),
                timeout_s: 60,
            }),
        ))
        .await;
    ok(&r);
    assert!(!r.already_done);
    let nodes = lab.nodes(&a);
    assert!(
        nodes.iter().any(|(n, _, u)| n == "web-b" && *u),
        "B cordoned: {nodes:?}"
    );
    let delete_b = |id: &str| {
        a.task(
            id,
            1,
            Kind::DeleteNode(DeleteNode {
                target_node: "web-b".into(),
            }),
        )
    };
    let r = a.run(delete_b("delete-b")).await;
    ok(&r);
    assert!(!r.already_done);
    assert_eq!(
        names(&lab.nodes(&a)),
        ["web-a/control-plane", "web-c/control-plane"]
    );
    let r = a.run(delete_b("delete-b-again")).await;
    ok(&r);
    assert!(r.already_done, "node already gone");
    let r = a
        .run(a.task(
            "drain-b-again",
            1,
            Kind::DrainNode(DrainNode {
                target_node: "web-b".into(),
                timeout_s: 60,
            }),
        ))
        .await;
    assert!(r.ok && r.already_done, "{}", r.error);

    let r = b.run(b.task("reset-b", 1, Kind::Reset(Reset {}))).await;
    ok(&r);
    assert!(!r.already_done);
    assert!(!b.has("etc/kubernetes/kubelet.conf"));
    let r = b.run(b.task("reset-b-again", 1, Kind::Reset(Reset {}))).await;
    ok(&r);
    assert!(r.already_done, "nothing left to reset");
    assert_eq!(lab.nodes(&a).len(), 2);

    // 9. etcd member removal is idempotent too.
    let remove = |id: &str, target: &str| {
        a.task(
            id,
            1,
            Kind::RemoveEtcdMember(RemoveEtcdMember {
                target_node: target.into(),
            }),
        )
    };
    let members = |lab: &Lab| lab.cluster_json()["etcd_members"].as_array().unwrap().len();
    assert_eq!(members(&lab), 2);
    let r = a.run(remove("etcd-c", "web-c")).await;
    ok(&r);
    assert!(!r.already_done);
    assert_eq!(members(&lab), 1);
    let r = a.run(remove("etcd-c-again", "web-c")).await;
    assert!(r.ok && r.already_done, "{}", r.error);

    // 10. Everything finished is stored and offered for re-sending.
    let recent = a.executor.recent_results();
    assert!(recent.iter().any(|r| r.task_id == "init-1" && r.attempt == 1));
    assert!(recent.iter().any(|r| r.task_id == "delete-b"));
    assert!(Path::new(&a.stored("delete-b", 1)).exists());
}
