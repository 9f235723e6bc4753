//! kubesim end to end: the built binary behind `kubeadm` / `kubectl`
//! symlinks, one node root per simulated host, one shared state dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

struct Sim {
    dir: tempfile::TempDir,
    now: Option<u64>,
}

struct Run {
    code: i32,
    out: String,
    err: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.out, self.err
        );
        self
    }

    fn fails(self, needle: &str) -> Run {
        assert_eq!(
            self.code, 1,
            "expected exit 1\nstdout:\n{}\nstderr:\n{}",
            self.out, self.err
        );
        assert!(
            self.err.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.err
        );
        self
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Sim {
    fn new() -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["kubeadm", "kubectl"] {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kubesim"), bin.join(name)).unwrap();
        }
        Sim { dir, now: None }
    }

    /// The host's root, with the containerd socket a running runtime leaves.
    fn root(&self, host: &str) -> PathBuf {
        let root = self.dir.path().join("hosts").join(host);
        rpool_proto::sim::create_socket_file(&root.join(rpool_proto::sim::CONTAINERD_SOCKET)).unwrap();
        root
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn cmd(&self, host: &str, tool: &str, args: &[&str]) -> Command {
        let mut c = Command::new(self.dir.path().join("bin").join(tool));
        c.args(args)
            .env("KUBESIM_STATE_DIR", self.state())
            .env("KUBESIM_NODE_ROOT", self.root(host))
            .env("KUBESIM_HOSTNAME", host)
            .env("KUBESIM_NODE_IP", ip(host))
            .env_remove("KUBECONFIG")
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        if let Some(now) = self.now {
            c.env("KUBESIM_NOW", now.to_string());
        }
        c
    }

    fn run(&self, host: &str, tool: &str, args: &[&str]) -> Run {
        self.cmd(host, tool, args).output().unwrap().into()
    }

    fn kubeadm(&self, host: &str, args: &[&str]) -> Run {
        self.run(host, "kubeadm", args)
    }

    /// kubectl on `host` with its admin kubeconfig (production path, mapped
    /// into the node root).
    fn kubectl(&self, host: &str, args: &[&str]) -> Run {
        let mut a = vec!["--kubeconfig", "/etc/kubernetes/admin.conf"];
        a.extend_from_slice(args);
        self.run(host, "kubectl", &a)
    }

    /// (name, role) of every node, from `get nodes -o json`.
    fn nodes(&self, host: &str) -> Vec<(String, String, String)> {
        let r = self.kubectl(host, &["get", "nodes", "-o", "json"]).ok();
        let v: Value = serde_json::from_str(&r.out).unwrap();
        assert_eq!(v["kind"], "List");
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let labels = n["metadata"]["labels"].as_object().unwrap();
                let role = if labels.contains_key("node-role.kubernetes.io/control-plane") {
                    "control-plane"
                } else {
                    "worker"
                };
                let ready = n["status"]["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["type"] == "Ready")
                    .unwrap()["status"]
                    .as_str()
                    .unwrap()
                    .to_string();
                (
                    n["metadata"]["name"].as_str().unwrap().to_string(),
                    role.to_string(),
                    ready,
                )
            })
            .collect()
    }
}

fn ip(host: &str) -> String {
    let n: u32 = host
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("10.0.{}.{}", (n >> 8) % 250 + 1, n % 250 + 1)
}

struct Join {
    token: String,
    hash: String,
    key: String,
}

/// Token, CA hash and certificate key from `kubeadm init` output.
fn parse_init(out: &str) -> Join {
    let word_after = |marker: &str| {
        let i = out
            .find(marker)
            .unwrap_or_else(|| panic!("no {marker:?} in\n{out}"));
        out[i + marker.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    Join {
        token: word_after("--token "),
        hash: word_after("--discovery-token-ca-cert-hash "),
        key: word_after("--certificate-key "),
    }
}

fn is_lower_alnum(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn init(sim: &Sim, host: &str, endpoint: &str) -> Join {
    let r = sim
        .kubeadm(
            host,
            &[
                "init",
                "--control-plane-endpoint",
                endpoint,
                "--upload-certs",
                "--pod-network-cidr",
                "10.244.0.0/16",
                "--kubernetes-version",
                "v1.32.4",
            ],
        )
        .ok();
    assert!(
        r.out
            .contains("Your Kubernetes control-plane has initialized successfully!")
    );
    assert!(r.out.contains("[upload-certs] Using certificate key:\n"));
    assert!(r.out.contains(&format!("kubeadm join {endpoint} --token ")));
    assert!(r.out.contains("\t--control-plane --certificate-key "));
    assert!(r.out.contains("Then you can join any number of worker nodes"));
    let j = parse_init(&r.out);
    let (id, secret) = j.token.split_once('.').unwrap();
    assert!(id.len() == 6 && secret.len() == 16 && is_lower_alnum(id) && is_lower_alnum(secret));
    let h = j.hash.strip_prefix("sha256:").unwrap();
    assert!(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(j.key.len() == 64 && j.key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(sim.root(host).join("etc/kubernetes/admin.conf").exists());
    j
}

fn join_worker(sim: &Sim, host: &str, ep: &str, j: &Join) -> Run {
    sim.kubeadm(
        host,
        &[
            "join",
            ep,
            "--token",
            &j.token,
            "--discovery-token-ca-cert-hash",
            &j.hash,
        ],
    )
}

fn join_cp(sim: &Sim, host: &str, ep: &str, j: &Join, key: Option<&str>) -> Run {
    let mut a = vec![
        "join",
        ep,
        "--token",
        &j.token,
        "--discovery-token-ca-cert-hash",
        &j.hash,
        "--control-plane",
    ];
    if let Some(k) = key {
        a.extend(["--certificate-key", k]);
    }
    sim.kubeadm(host, &a)
}

fn names(nodes: &[(String, String, String)]) -> Vec<(String, String)> {
    nodes.iter().map(|(n, r, _)| (n.clone(), r.clone())).collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

const EP: &str = "10.0.0.100:6443";

#[test]
fn lifecycle_init_join_drain_delete_reset() {
    let sim = Sim::new();
    let j = init(&sim, "cp1", EP);

    // Worker joins.
    let r = join_worker(&sim, "w1", EP, &j).ok();
    assert!(r.out.contains("This node has joined the cluster:"));
    join_worker(&sim, "w2", EP, &j).ok();

    // Joining twice: the host already runs a kubelet.
    join_worker(&sim, "w1", EP, &j).fails(
        "[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: /etc/kubernetes/kubelet.conf already exists",
    );
    // Wrong credentials.
    let bad_hash = format!("sha256:{}", "ab".repeat(32));
    sim.kubeadm(
        "w3",
        &[
            "join",
            EP,
            "--token",
            &j.token,
            "--discovery-token-ca-cert-hash",
            &bad_hash,
        ],
    )
    .fails(&format!(
        "error execution phase preflight: couldn't validate the identity of the API Server: cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"{}\" are pinned",
        j.hash
    ));
    let unknown_id = Join {
        token: "zzzzzz.0123456789abcdef".into(),
        hash: j.hash.clone(),
        key: String::new(),
    };
    join_worker(&sim, "w3", EP, &unknown_id)
        .fails("could not find a JWS signature in the cluster-info ConfigMap for token ID \"zzzzzz\"");
    let wrong_secret = Join {
        token: format!("{}.0000000000000000", &j.token[..6]),
        hash: j.hash.clone(),
        key: String::new(),
    };
    join_worker(&sim, "w3", EP, &wrong_secret).fails("failed to verify JWS signature");
    let malformed = Join {
        token: "abc".into(),
        hash: j.hash.clone(),
        key: String::new(),
    };
    join_worker(&sim, "w3", EP, &malformed).fails("the bootstrap token \"abc\" was not of the form");
    join_worker(&sim, "w3", "10.9.9.9:6443", &j).fails("connect: connection refused");
    assert!(!sim.root("w3").join("etc/kubernetes/kubelet.conf").exists());

    // Control-plane joins.
    join_cp(&sim, "cp2", EP, &j, None).fails(
        "error execution phase control-plane-prepare/certs: error creating PKI assets: failure loading certificate for CA",
    );
    join_cp(&sim, "cp2", EP, &j, Some(&"0".repeat(64))).fails("cipher: message authentication failed");
    let r = join_cp(&sim, "cp2", EP, &j, Some(&j.key)).ok();
    assert!(
        r.out
            .contains("This node has joined the cluster and a new control plane instance was created:")
    );
    join_cp(&sim, "cp3", EP, &j, Some(&j.key)).ok();
    assert!(sim.root("cp2").join("etc/kubernetes/admin.conf").exists());
    assert!(!sim.root("w1").join("etc/kubernetes/admin.conf").exists());

    assert_eq!(
        names(&sim.nodes("cp1")),
        pairs(&[
            ("cp1", "control-plane"),
            ("cp2", "control-plane"),
            ("cp3", "control-plane"),
            ("w1", "worker"),
            ("w2", "worker"),
        ])
    );
    // NotReady until a pod network is applied.
    assert!(sim.nodes("cp1").iter().all(|n| n.2 == "False"));
    let cni = sim.dir.path().join("cni.yaml");
    std::fs::write(&cni, flannel()).unwrap();
    let r = sim.kubectl("cp1", &["apply", "-f", cni.to_str().unwrap()]).ok();
    assert!(r.out.starts_with("namespace/kube-flannel created\n"), "{}", r.out);
    assert!(
        r.out.contains("daemonset.apps/kube-flannel-ds created\n"),
        "{}",
        r.out
    );
    let r = sim.kubectl("cp1", &["apply", "-f", cni.to_str().unwrap()]).ok();
    assert!(r.out.contains("daemonset.apps/kube-flannel-ds unchanged"));
    assert!(sim.nodes("cp1").iter().all(|n| n.2 == "True"));
    // ...and even with preflight errors ignored, the Node exists.
    sim.kubeadm(
        "w1",
        &[
            "join",
            EP,
            "--token",
            &j.token,
            "--discovery-token-ca-cert-hash",
            &j.hash,
            "--ignore-preflight-errors=all",
        ],
    )
    .fails("a Node with name \"w1\" and status \"Ready\" already exists in the cluster");

    let table = sim.kubectl("cp1", &["get", "nodes"]).ok().out;
    assert!(
        table.starts_with("NAME   STATUS   ROLES           AGE   VERSION\n"),
        "{table}"
    );
    assert!(table.contains("\nw1     Ready    <none>          "), "{table}");

    // Drain: DaemonSet pods need --ignore-daemonsets.
    let r = sim.kubectl("cp1", &["drain", "w2", "--delete-emptydir-data", "--timeout=60s"]);
    let r = r.fails(
        "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): kube-system/kube-proxy-",
    );
    assert_eq!(r.out, "node/w2 cordoned\n");
    let r = sim
        .kubectl(
            "cp1",
            &[
                "drain",
                "w2",
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=60s",
            ],
        )
        .ok();
    assert_eq!(r.out, "node/w2 already cordoned\nnode/w2 drained\n");
    assert!(r.err.starts_with("Warning: ignoring DaemonSet-managed Pods: "));
    let table = sim.kubectl("cp1", &["get", "nodes"]).ok().out;
    assert!(table.contains("w2     Ready,SchedulingDisabled"), "{table}");
    let r = sim.kubectl(
        "cp1",
        &[
            "drain",
            "ghost",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=60s",
        ],
    );
    assert_eq!(r.err, "Error from server (NotFound): nodes \"ghost\" not found\n");
    assert_eq!(r.code, 1);

    // Delete + reset.
    let r = sim.kubectl("cp1", &["delete", "node", "w2"]).ok();
    assert_eq!(r.out, "node \"w2\" deleted\n");
    sim.kubectl("cp1", &["delete", "node", "w2"])
        .fails("Error from server (NotFound): nodes \"w2\" not found");
    let r = sim.kubeadm("w2", &["reset", "-f", "--cleanup-tmp-dir"]).ok();
    assert!(
        r.out
            .contains("[reset] Deleting files: [/etc/kubernetes/admin.conf")
    );
    assert!(!sim.root("w2").join("etc/kubernetes/kubelet.conf").exists());
    assert!(!sim.root("w2").join("var/lib/kubelet/config.yaml").exists());
    // Reset is idempotent.
    sim.kubeadm("w2", &["reset", "-f"]).ok();
    // w2 can join again after reset.
    join_worker(&sim, "w2", EP, &j).ok();
    sim.kubectl("cp1", &["delete", "node", "w2"]).ok();
    sim.kubeadm("w2", &["reset", "-f"]).ok();

    // Reset without delete: the Node stays, NotReady (Unknown).
    sim.kubeadm("w1", &["reset", "-f"]).ok();
    let nodes = sim.nodes("cp1");
    assert_eq!(
        names(&nodes),
        pairs(&[
            ("cp1", "control-plane"),
            ("cp2", "control-plane"),
            ("cp3", "control-plane"),
            ("w1", "worker"),
        ])
    );
    assert_eq!(nodes[3].2, "Unknown");
    sim.kubectl("cp1", &["delete", "node", "w1"]).ok();

    // etcd membership through the etcd static pod.
    let etcdctl = |host: &str, extra: &[&str]| {
        let mut a = vec![
            "-n",
            "kube-system",
            "exec",
            "etcd-cp1",
            "--",
            "etcdctl",
            "--endpoints",
            "https://127.0.0.1:2379",
            "--cacert",
            "/etc/kubernetes/pki/etcd/ca.crt",
            "--cert",
            "/etc/kubernetes/pki/etcd/server.crt",
            "--key",
            "/etc/kubernetes/pki/etcd/server.key",
        ];
        a.extend_from_slice(extra);
        sim.kubectl(host, &a)
    };
    let list = etcdctl("cp1", &["member", "list"]).ok().out;
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(list.lines().all(|l| l.contains(", started, cp")), "{list}");
    // cp3 dies: its member stays until removed.
    std::fs::write(sim.root("cp3").join("kubesim-down"), "").unwrap();
    let cp3_id = list
        .lines()
        .find(|l| l.contains(", cp3,"))
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    // A replacement control plane cannot join while etcd is unhealthy.
    join_cp(&sim, "cp4", EP, &j, Some(&j.key)).fails("etcd cluster is not healthy");
    let r = etcdctl("cp1", &["member", "remove", &cp3_id]).ok();
    assert!(
        r.out
            .starts_with(&format!("Member {cp3_id} removed from cluster ")),
        "{}",
        r.out
    );
    etcdctl("cp1", &["member", "remove", &cp3_id]).fails("Error: etcdserver: member not found");
    sim.kubectl("cp1", &["delete", "node", "cp3"]).ok();
    join_cp(&sim, "cp4", EP, &j, Some(&j.key)).ok();
    assert_eq!(etcdctl("cp1", &["member", "list"]).ok().out.lines().count(), 3);

    // Resetting a control plane removes its own etcd member.
    sim.kubeadm("cp4", &["reset", "-f"]).ok();
    let list = etcdctl("cp1", &["member", "list"]).ok().out;
    assert_eq!(list.lines().count(), 2, "{list}");
    sim.kubectl("cp1", &["delete", "node", "cp4"]).ok();
    assert_eq!(
        names(&sim.nodes("cp2")),
        pairs(&[("cp1", "control-plane"), ("cp2", "control-plane")])
    );
}

#[test]
fn token_and_certificate_key_expiry() {
    let mut sim = Sim::new();
    let t0 = 1_800_000_000;
    sim.now = Some(t0);
    let j = init(&sim, "cp1", EP);

    // Certificate key: 2h.
    sim.now = Some(t0 + 3 * 3600);
    join_cp(&sim, "cp2", EP, &j, Some(&j.key))
        .fails("Secret \"kubeadm-certs\" was not found in the \"kube-system\" Namespace. This Secret might have expired.");
    let r = sim
        .kubeadm("cp1", &["init", "phase", "upload-certs", "--upload-certs"])
        .ok();
    let key = r.out.lines().last().unwrap().to_string();
    assert_eq!(key.len(), 64);
    join_cp(&sim, "cp2", EP, &j, Some(&key)).ok();

    // Token: 24h.
    sim.now = Some(t0 + 25 * 3600);
    join_worker(&sim, "w1", EP, &j).fails(&format!(
        "could not find a JWS signature in the cluster-info ConfigMap for token ID \"{}\"",
        &j.token[..6]
    ));
    let r = sim
        .kubeadm("cp1", &["token", "create", "--ttl", "1h", "--print-join-command"])
        .ok();
    let line = r.out.trim_end();
    assert!(line.starts_with(&format!("kubeadm join {EP} --token ")), "{line}");
    assert!(line.ends_with(&format!("--discovery-token-ca-cert-hash {}", j.hash)));
    let words: Vec<&str> = line.split_whitespace().collect();
    let fresh = Join {
        token: words[4].to_string(),
        hash: words[6].to_string(),
        key: String::new(),
    };
    join_worker(&sim, "w1", EP, &fresh).ok();
    sim.now = Some(t0 + 27 * 3600);
    join_worker(&sim, "w2", EP, &fresh).fails("could not find a JWS signature");

    // token create needs the admin kubeconfig (a worker has none).
    sim.kubeadm("w1", &["token", "create"])
        .fails("failed to load admin kubeconfig: open /etc/kubernetes/admin.conf: no such file or directory");
}

#[test]
fn unknown_flags_and_commands() {
    let sim = Sim::new();
    let r = sim.run("h", "kubectl", &["get", "nodes", "--foo"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        "Error: unknown flag: --foo\nSee 'kubectl get --help' for usage.\n"
    );
    let r = sim.run("h", "kubectl", &["drain", "x", "--timeout=abc"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        "Error: invalid argument \"abc\" for \"--timeout\" flag: time: invalid duration \"abc\"\nSee 'kubectl drain --help' for usage.\n"
    );
    let r = sim.run("h", "kubectl", &["frob"]);
    assert_eq!(
        (r.code, r.err.as_str()),
        (1, "Error: unknown command \"frob\" for \"kubectl\"\n")
    );
    let r = sim.run("h", "kubectl", &["drain"]);
    assert_eq!(r.code, 1);
    assert!(r.err.starts_with("error: USAGE: drain NODE [flags]"));
    let r = sim.kubeadm("h", &["join", "1.2.3.4:6443", "--foo"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.err,
        "unknown flag: --foo\nTo see the stack trace of this error execute with --v=5 or higher\n"
    );
    let r = sim.kubeadm("h", &["frob"]);
    assert_eq!(r.code, 1);
    assert!(r.err.starts_with("unknown command \"frob\" for \"kubeadm\""));
    // No kubeconfig at all: like kubectl without a cluster.
    let r = sim.run("h", "kubectl", &["get", "nodes"]);
    assert_eq!(r.code, 1);
    assert!(
        r.err
            .contains("The connection to the server localhost:8080 was refused")
    );
    // Through the kubesim entry point too.
    let o = Command::new(env!("CARGO_BIN_EXE_kubesim"))
        .args(["kubeadm", "version", "-o", "short"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "v1.32.4\n");
}

#[test]
fn pending_pods_and_concurrent_joins() {
    let sim = Sim::new();
    let j = init(&sim, "cp1", EP);
    let hosts: Vec<String> = (0..6).map(|i| format!("w{i}")).collect();
    let children: Vec<_> = hosts
        .iter()
        .map(|h| {
            sim.cmd(
                h,
                "kubeadm",
                &[
                    "join",
                    EP,
                    "--token",
                    &j.token,
                    "--discovery-token-ca-cert-hash",
                    &j.hash,
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(sim.nodes("cp1").len(), 7);

    // Before a CNI, CoreDNS is Pending; the pending-pods file adds more.
    let pending = |sim: &Sim| -> Vec<String> {
        let r = sim
            .kubectl(
                "cp1",
                &[
                    "get",
                    "pods",
                    "-A",
                    "--field-selector=status.phase=Pending",
                    "-o",
                    "json",
                ],
            )
            .ok();
        let v: Value = serde_json::from_str(&r.out).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert_eq!(p["status"]["phase"], "Pending");
                format!(
                    "{}/{}",
                    p["metadata"]["namespace"].as_str().unwrap(),
                    p["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    let p = pending(&sim);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p.iter().all(|n| n.starts_with("kube-system/coredns-")));
    let cluster_dir = std::fs::read_dir(sim.state().join("clusters"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(cluster_dir.join("pending-pods"), "3\n").unwrap();
    let p = pending(&sim);
    assert_eq!(p.iter().filter(|n| n.starts_with("default/")).count(), 3, "{p:?}");
    std::fs::write(
        cluster_dir.join("pending-pods"),
        r#"{"count":1,"cpu":"2","memory":"4Gi"}"#,
    )
    .unwrap();
    assert_eq!(
        pending(&sim).iter().filter(|n| n.starts_with("default/")).count(),
        1
    );
    // The etcd static pods, found the way runbooks do.
    let r = sim
        .kubectl(
            "cp1",
            &[
                "get",
                "pods",
                "-n",
                "kube-system",
                "-l",
                "component=etcd",
                "-o",
                "name",
            ],
        )
        .ok();
    assert_eq!(r.out, "pod/etcd-cp1\n");
    // A second init on the same endpoint is refused while the first lives.
    let r = sim.kubeadm(
        "other",
        &["init", "--control-plane-endpoint", EP, "--upload-certs"],
    );
    assert_eq!(r.code, 1, "{}", r.out);
    assert!(
        Path::new(&sim.root("cp1"))
            .join("etc/kubernetes/admin.conf")
            .exists()
    );
}

/// A `JoinConfiguration` (v1beta4, JSON form) written to a file; returns
/// its path.
fn join_config(
    sim: &Sim,
    file: &str,
    token: &str,
    hash: &str,
    name: &str,
    cp: Option<Option<&str>>,
) -> String {
    let mut v = serde_json::json!({
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "JoinConfiguration",
        "discovery": {"bootstrapToken": {"apiServerEndpoint": EP, "token": token, "caCertHashes": [hash]}},
        "nodeRegistration": {"name": name},
    });
    match cp {
        None => {}
        Some(None) => v["controlPlane"] = serde_json::json!({}),
        Some(Some(key)) => v["controlPlane"] = serde_json::json!({"certificateKey": key}),
    }
    let path = sim.dir.path().join(file);
    std::fs::write(&path, v.to_string()).unwrap();
    path.display().to_string()
}

#[test]
fn join_with_a_config_file_validates_like_the_flags_and_rejects_mixing() {
    let sim = Sim::new();
    let j = init(&sim, "cp1", EP);

    // Worker: endpoint, secrets and node name all come from the file (the
    // host name is "w1", the node "cfg-w1").
    let f = join_config(&sim, "w1.json", &j.token, &j.hash, "cfg-w1", None);
    let r = sim.kubeadm("w1", &["join", "--config", &f]).ok();
    assert!(r.out.contains("This node has joined the cluster:"));
    // Joining twice.
    sim.kubeadm("w1", &["join", "--config", &f]).fails(
        "[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: /etc/kubernetes/kubelet.conf already exists",
    );

    // Wrong credentials, as on the flag path; nothing is written.
    let wrong_secret = format!("{}.0000000000000000", &j.token[..6]);
    let f = join_config(&sim, "w2.json", &wrong_secret, &j.hash, "cfg-w2", None);
    sim.kubeadm("w2", &["join", "--config", &f])
        .fails("failed to verify JWS signature");
    let bad_hash = format!("sha256:{}", "ab".repeat(32));
    let f = join_config(&sim, "w2.json", &j.token, &bad_hash, "cfg-w2", None);
    sim.kubeadm("w2", &["join", "--config", &f]).fails(&format!(
        "cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"{}\" are pinned",
        j.hash
    ));
    let f = join_config(&sim, "w2.json", "abc", &j.hash, "cfg-w2", None);
    sim.kubeadm("w2", &["join", "--config", &f])
        .fails("JoinConfiguration.discovery.bootstrapToken.token: required, of the form [a-z0-9]{6}.[a-z0-9]{16} (value not shown)");
    assert!(!sim.root("w2").join("etc/kubernetes/kubelet.conf").exists());

    // Mixing --config with flags kubeadm rejects (listed sorted, without
    // dashes, as pflag visits them); nothing is run.
    let f = join_config(&sim, "w2.json", &j.token, &j.hash, "cfg-w2", None);
    sim.kubeadm(
        "w2",
        &[
            "join",
            EP,
            "--config",
            &f,
            "--token",
            &j.token,
            "--discovery-token-ca-cert-hash",
            &j.hash,
        ],
    )
    .fails("can not mix '--config' with arguments [discovery-token-ca-cert-hash token]");
    sim.kubeadm(
        "w2",
        &[
            "join",
            "--config",
            &f,
            "--control-plane",
            "--certificate-key",
            &j.key,
            "--cri-socket",
            "x",
        ],
    )
    .fails("can not mix '--config' with arguments [certificate-key control-plane cri-socket]");
    assert!(!sim.root("w2").join("etc/kubernetes/kubelet.conf").exists());
    // Flags kubeadm allows with --config.
    sim.kubeadm(
        "w2",
        &[
            "join",
            "--config",
            &f,
            "--ignore-preflight-errors=all",
            "--v=5",
            "--skip-phases",
            "addon",
        ],
    )
    .ok();

    // YAML is read like JSON, and checked as strictly: a file without
    // discovery, an unknown field, an older apiVersion; a missing file.
    let yaml = sim.dir.path().join("w3.yaml");
    let yaml_path = yaml.display().to_string();
    std::fs::write(
        &yaml,
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n",
    )
    .unwrap();
    sim.kubeadm("w3", &["join", "--config", &yaml_path])
        .fails("JoinConfiguration.discovery: required");
    let good = format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    apiServerEndpoint: {EP}\n    token: {}\n    caCertHashes:\n    - {}\nnodeRegistration:\n  name: cfg-w3\n",
        j.token, j.hash
    );
    std::fs::write(
        &yaml,
        good.replace("  name: cfg-w3\n", "  name: cfg-w3\n  nodeIP: 10.0.0.3\n"),
    )
    .unwrap();
    sim.kubeadm("w3", &["join", "--config", &yaml_path])
        .fails("JoinConfiguration.nodeRegistration: unknown field \"nodeIP\"");
    std::fs::write(&yaml, good.replace("v1beta4", "v1beta3")).unwrap();
    sim.kubeadm("w3", &["join", "--config", &yaml_path])
        .fails("kubeadm.k8s.io/v1beta3");
    assert!(!sim.root("w3").join("etc/kubernetes/kubelet.conf").exists());
    sim.kubeadm("w3", &["join", "--config", "/nonexistent/join.json"])
        .fails("unable to read config from \"/nonexistent/join.json\"");
    let f = join_config(&sim, "w3.json", &j.token, &j.hash, "cfg-w3", None);
    let mut wrong_kind: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    wrong_kind["kind"] = "InitConfiguration".into();
    std::fs::write(&f, wrong_kind.to_string()).unwrap();
    sim.kubeadm("w3", &["join", "--config", &f])
        .fails("InitConfiguration: unknown field \"discovery\"");
    std::fs::write(&yaml, &good).unwrap();
    sim.kubeadm("w3", &["join", "--config", &yaml_path]).ok();

    // Control plane: a controlPlane section without the certificate key
    // fails as the flag path does; with it, the host becomes one.
    let f = join_config(&sim, "cp2.json", &j.token, &j.hash, "cfg-cp2", Some(None));
    sim.kubeadm("cp2", &["join", "--config", &f]).fails(
        "error execution phase control-plane-prepare/certs: error creating PKI assets: failure loading certificate for CA",
    );
    let zeros = "0".repeat(64);
    let f = join_config(&sim, "cp2.json", &j.token, &j.hash, "cfg-cp2", Some(Some(&zeros)));
    sim.kubeadm("cp2", &["join", "--config", &f])
        .fails("cipher: message authentication failed");
    let f = join_config(&sim, "cp2.json", &j.token, &j.hash, "cfg-cp2", Some(Some(&j.key)));
    let r = sim.kubeadm("cp2", &["join", "--config", &f]).ok();
    assert!(
        r.out
            .contains("This node has joined the cluster and a new control plane instance was created:")
    );
    assert!(sim.root("cp2").join("etc/kubernetes/admin.conf").exists());

    let mut nodes = names(&sim.nodes("cp1"));
    nodes.sort();
    assert_eq!(
        nodes,
        pairs(&[
            ("cfg-cp2", "control-plane"),
            ("cfg-w1", "worker"),
            ("cfg-w2", "worker"),
            ("cfg-w3", "worker"),
            ("cp1", "control-plane"),
        ])
    );
}

/// An InitConfiguration + ClusterConfiguration as rpool's controller
/// writes them (kubeadm.k8s.io/v1beta4).
fn init_file(endpoint: &str, token: &str, key: &str, extra_cluster_line: &str) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- token: {token}\n  ttl: 24h0m0s\n  usages:\n  - signing\n  - authentication\n  groups:\n  - system:bootstrappers:kubeadm:default-node-token\ncertificateKey: {key}\nnodeRegistration:\n  name: cfg-cp1\n  criSocket: unix:///run/containerd/containerd.sock\n  taints: []\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: web\nkubernetesVersion: v1.32.4\ncontrolPlaneEndpoint: \"{endpoint}\"\nnetworking:\n  podSubnet: 10.244.0.0/16\n  serviceSubnet: 10.96.0.0/12\n{extra_cluster_line}"
    )
}

#[test]
fn init_with_a_config_file_uses_its_secrets_and_refuses_what_kubeadm_refuses() {
    let sim = Sim::new();
    let token = "abcdef.0123456789abcdef";
    let key = "5e".repeat(32);
    let path = sim.dir.path().join("init.yaml");
    let f = path.display().to_string();

    // Flags that carry settings cannot be mixed with --config.
    std::fs::write(&path, init_file(EP, token, &key, "")).unwrap();
    sim.kubeadm(
        "cp1",
        &[
            "init",
            "--config",
            &f,
            "--upload-certs",
            "--pod-network-cidr",
            "10.1.0.0/16",
        ],
    )
    .fails("can not mix '--config' with arguments [pod-network-cidr]");
    // Unknown fields, a wrong apiVersion, a version kubeadm cannot deploy.
    std::fs::write(&path, init_file(EP, token, &key, "podCIDR: 10.1.0.0/16\n")).unwrap();
    sim.kubeadm("cp1", &["init", "--config", &f, "--upload-certs"])
        .fails("ClusterConfiguration: unknown field \"podCIDR\"");
    std::fs::write(
        &path,
        init_file(EP, token, &key, "").replace("v1beta4", "v1beta3"),
    )
    .unwrap();
    sim.kubeadm("cp1", &["init", "--config", &f, "--upload-certs"])
        .fails("kubeadm.k8s.io/v1beta3");
    std::fs::write(
        &path,
        init_file(EP, token, &key, "").replace("v1.32.4", "v1.29.0"),
    )
    .unwrap();
    sim.kubeadm("cp1", &["init", "--config", &f, "--upload-certs"])
        .fails("v1.29.0");
    // The criSocket must be a runtime's socket on this host.
    std::fs::write(
        &path,
        init_file(EP, token, &key, "").replace("/run/containerd/containerd.sock", "/run/crio/crio.sock"),
    )
    .unwrap();
    sim.kubeadm("cp1", &["init", "--config", &f, "--upload-certs"])
        .fails("[ERROR CRI]: container runtime is not running: output: validate service connection: validate CRI v1 runtime API for endpoint \"unix:///run/crio/crio.sock\": rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial unix /run/crio/crio.sock: connect: no such file or directory\"");
    assert!(!sim.root("cp1").join("etc/kubernetes/admin.conf").exists());

    // The file's token, certificate key, endpoint and node name are used.
    std::fs::write(&path, init_file(EP, token, &key, "")).unwrap();
    let r = sim
        .kubeadm("cp1", &["init", "--config", &f, "--upload-certs"])
        .ok();
    let j = parse_init(&r.out);
    assert_eq!(j.token, token);
    assert_eq!(j.key, key);
    assert!(
        r.out.contains(&format!("kubeadm join {EP} --token ")),
        "{}",
        r.out
    );
    assert_eq!(names(&sim.nodes("cp1")), pairs(&[("cfg-cp1", "control-plane")]));
    // A node joins with those secrets.
    join_worker(&sim, "w1", EP, &j).ok();
}

/// The flannel deployment the controller applies to every pool.
fn flannel() -> String {
    rpool_controller::kube::render::cni_manifest("10.244.0.0/16").unwrap()
}

/// The Ready condition's (status, message) of every node.
fn ready_messages(sim: &Sim, host: &str) -> Vec<(String, String)> {
    let r = sim.kubectl(host, &["get", "nodes", "-o", "json"]).ok();
    let v: Value = serde_json::from_str(&r.out).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let c = n["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .unwrap();
            (
                c["status"].as_str().unwrap().to_owned(),
                c["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn nodes_turn_ready_only_with_a_cni_that_can_start_and_say_what_is_missing() {
    let sim = Sim::new();
    let j = init(&sim, "cp1", EP);
    join_worker(&sim, "w1", EP, &j).ok();
    for (status, message) in ready_messages(&sim, "cp1") {
        assert_eq!(status, "False");
        assert!(
            message.ends_with("(kubesim: no CNI DaemonSet applied)"),
            "{message}"
        );
    }
    // Our manifest without the ClusterRoleBinding: the DaemonSet exists
    // but flanneld could not read its node; nodes stay NotReady and say so.
    let full = flannel();
    let without_binding: Vec<&str> = full
        .split("\n---\n")
        .filter(|doc| !doc.contains("kind: ClusterRoleBinding"))
        .collect();
    assert!(without_binding.len() < full.split("\n---\n").count());
    let path = sim.dir.path().join("cni.yaml");
    std::fs::write(&path, without_binding.join("\n---\n")).unwrap();
    let r = sim.kubectl("cp1", &["apply", "-f", path.to_str().unwrap()]).ok();
    assert!(
        r.out.contains("daemonset.apps/kube-flannel-ds created"),
        "{}",
        r.out
    );
    for (status, message) in ready_messages(&sim, "cp1") {
        assert_eq!(status, "False");
        assert!(message.contains("the CNI DaemonSet cannot start: "), "{message}");
        assert!(message.contains("ClusterRoleBinding"), "{message}");
    }
    // The missing piece applied: Ready.
    std::fs::write(&path, &full).unwrap();
    let r = sim.kubectl("cp1", &["apply", "-f", path.to_str().unwrap()]).ok();
    assert!(
        r.out
            .contains("clusterrolebinding.rbac.authorization.k8s.io/flannel created"),
        "{}",
        r.out
    );
    for (status, message) in ready_messages(&sim, "cp1") {
        assert_eq!(
            (status.as_str(), message.as_str()),
            ("True", "kubelet is posting ready status")
        );
    }
}

/// A pod on `node`, owned by `owner` (kind/name) or bare, with `labels`
/// (`k: v` lines) and optionally an emptyDir volume.
fn pod_yaml(name: &str, node: &str, owner: Option<(&str, &str)>, labels: &str, empty_dir: bool) -> String {
    let mut y = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n");
    if !labels.is_empty() {
        y.push_str(&format!("  labels:\n    {labels}\n"));
    }
    if let Some((kind, owner)) = owner {
        y.push_str(&format!(
            "  ownerReferences:\n  - apiVersion: apps/v1\n    kind: {kind}\n    name: {owner}\n    uid: 0b5e8a3c-1f2d-4c6b-9a7e-3d2c1b0a9f8e\n    controller: true\n"
        ));
    }
    y.push_str(&format!(
        "spec:\n  nodeName: {node}\n  containers:\n  - name: main\n    image: registry.k8s.io/pause:3.10\n"
    ));
    if empty_dir {
        y.push_str("  volumes:\n  - name: scratch\n    emptyDir: {}\n");
    }
    y
}

#[test]
fn drain_refuses_bare_and_local_storage_pods_and_waits_on_disruption_budgets() {
    let sim = Sim::new();
    let j = init(&sim, "cp1", EP);
    join_worker(&sim, "w1", EP, &j).ok();
    let file = sim.dir.path().join("workloads.yaml");
    let apply = |text: &str| {
        std::fs::write(&file, text).unwrap();
        sim.kubectl("cp1", &["apply", "-f", &file.display().to_string()])
            .ok();
    };
    apply(&[
        pod_yaml("bare-1", "w1", None, "", false),
        pod_yaml("web-0", "w1", Some(("ReplicaSet", "web-7d9f")), "app: web", false),
        pod_yaml("cache-0", "w1", Some(("ReplicaSet", "cache-5c4b")), "app: cache", true),
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\n  namespace: default\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels:\n      app: web\n".into(),
    ]
    .join("---\n"));

    // Without --force and --delete-emptydir-data: refused before any eviction.
    let r = sim
        .kubectl("cp1", &["drain", "w1", "--ignore-daemonsets", "--timeout=30s"])
        .fails("error: unable to drain node \"w1\" due to error: [cannot delete Pods with local storage (use --delete-emptydir-data to override): default/cache-0, cannot delete Pods declare no controller (use --force to override): default/bare-1], continuing command...");
    assert!(!r.out.contains("evicting"), "{}", r.out);

    // With them: the bare and emptyDir pods go; the budget holds web-0
    // until the timeout.
    let r = sim
        .kubectl(
            "cp1",
            &["drain", "w1", "--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout=30s"],
        )
        .fails("error when evicting pods/\"web-0\" -n \"default\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.");
    assert!(
        r.err.contains("error: unable to drain node \"w1\" due to error: error when evicting pods/\"web-0\" -n \"default\": global timeout reached: 30s, continuing command..."),
        "{}",
        r.err
    );
    assert!(
        r.err.contains("Warning: ignoring DaemonSet-managed Pods: "),
        "{}",
        r.err
    );
    assert!(r.err.contains("deleting Pods with local storage: default/cache-0; deleting Pods that declare no controller: default/bare-1"), "{}", r.err);
    assert!(
        r.out.contains("pod/bare-1 evicted\n") && r.out.contains("pod/cache-0 evicted\n"),
        "{}",
        r.out
    );
    assert!(!r.out.contains("node/w1 drained"), "{}", r.out);
    let left = sim
        .kubectl("cp1", &["get", "pods", "-n", "default", "-o", "name"])
        .ok()
        .out;
    assert_eq!(left, "pod/web-0\n");
    let selected = sim
        .kubectl("cp1", &["get", "pods", "-A", "-l", "app=web", "-o", "name"])
        .ok()
        .out;
    assert_eq!(selected, "pod/web-0\n", "applied labels are selectable");

    // No --timeout: kubectl would retry forever; kubesim says so.
    sim.kubectl("cp1", &["drain", "w1", "--ignore-daemonsets"])
        .fails("blocked by a PodDisruptionBudget and has no --timeout");

    // A second healthy replica elsewhere: the budget allows one eviction.
    apply(&pod_yaml(
        "web-1",
        "cp1",
        Some(("ReplicaSet", "web-7d9f")),
        "app: web",
        false,
    ));
    let r = sim
        .kubectl("cp1", &["drain", "w1", "--ignore-daemonsets", "--timeout=5m"])
        .ok();
    assert!(
        r.out.ends_with("pod/web-0 evicted\nnode/w1 drained\n"),
        "{}",
        r.out
    );
}

/// Writes `manifest` as `host`'s kube-vip static pod.
fn kube_vip(sim: &Sim, host: &str, manifest: &str) {
    let dir = sim.root(host).join("etc/kubernetes/manifests");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kube-vip.yaml"), manifest).unwrap();
}

#[test]
fn a_vip_answers_only_while_a_control_plane_whose_kube_vip_pod_holds_it_runs() {
    use rpool_controller::kube::kube_vip::Kubeconfig;
    use rpool_controller::kube::render::kube_vip_manifest;
    const VIP_EP: &str = "198.51.100.7:6443";
    let vip = "198.51.100.7".parse().unwrap();
    let at_init = kube_vip_manifest(vip, Kubeconfig::SuperAdmin).unwrap();
    let after = kube_vip_manifest(vip, Kubeconfig::Admin).unwrap();
    let sim = Sim::new();
    let init_args = [
        "init",
        "--control-plane-endpoint",
        VIP_EP,
        "--upload-certs",
        "--pod-network-cidr",
        "10.244.0.0/16",
        "--kubernetes-version",
        "v1.32.4",
    ];

    // kube-vip with admin.conf during init never gets its lease.
    kube_vip(&sim, "cp1", &after);
    sim.kubeadm("cp1", &init_args)
        .fails("uses /etc/kubernetes/admin.conf, which has no rights until kubeadm init finishes");
    // Another address, or no NET_ADMIN: it cannot hold the VIP.
    kube_vip(&sim, "cp1", &at_init.replace("198.51.100.7", "198.51.100.8"));
    sim.kubeadm("cp1", &init_args)
        .fails("env address is \"198.51.100.8\", not the cluster's VIP 198.51.100.7");
    kube_vip(&sim, "cp1", &at_init.replace("- NET_ADMIN\n", ""));
    sim.kubeadm("cp1", &init_args)
        .fails("securityContext.capabilities.add lacks NET_ADMIN");
    kube_vip(&sim, "cp1", &at_init);
    let j = init(&sim, "cp1", VIP_EP);
    sim.kubectl("cp1", &["get", "nodes"]).ok();
    // After init the agent switches kube-vip to admin.conf.
    kube_vip(&sim, "cp1", &after);
    sim.kubectl("cp1", &["get", "nodes"]).ok();

    // A control plane joining with a pod that mounts super-admin.conf
    // (kubeadm join writes none) is refused; with admin.conf it joins.
    kube_vip(&sim, "cp2", &at_init);
    join_cp(&sim, "cp2", VIP_EP, &j, Some(&j.key)).fails("which kubeadm join does not write");
    kube_vip(&sim, "cp2", &after);
    join_cp(&sim, "cp2", VIP_EP, &j, Some(&j.key)).ok();
    // cp3 joins without kube-vip: it serves the API but cannot hold the VIP.
    join_cp(&sim, "cp3", VIP_EP, &j, Some(&j.key)).ok();

    // The first control plane dies: cp2 takes the VIP.
    std::fs::write(sim.root("cp1").join("kubesim-down"), "").unwrap();
    assert_eq!(sim.nodes("cp3").len(), 3);
    // cp2 dies too: cp3 runs, but nobody holds the VIP.
    std::fs::write(sim.root("cp2").join("kubesim-down"), "").unwrap();
    sim.kubectl("cp3", &["get", "nodes"])
        .fails("The connection to the server 198.51.100.7:6443 was refused");
    // cp2 back: the VIP answers again.
    std::fs::remove_file(sim.root("cp2").join("kubesim-down")).unwrap();
    sim.kubectl("cp3", &["get", "nodes"]).ok();
}

/// The mirror of the images tests: every v1.32.4 control-plane image but
/// `missing`.
fn mirror_without(sim: &Sim, missing: &str) -> Vec<String> {
    let images: Vec<String> = [
        "kube-apiserver:v1.32.4",
        "kube-controller-manager:v1.32.4",
        "kube-scheduler:v1.32.4",
        "kube-proxy:v1.32.4",
        "coredns:v1.11.3",
        "pause:3.10",
        "etcd:3.5.16-0",
    ]
    .iter()
    .map(|i| format!("mirror.test:5000/k8s/{i}"))
    .collect();
    std::fs::create_dir_all(sim.state()).unwrap();
    let held: Vec<&String> = images.iter().filter(|i| !i.ends_with(missing)).collect();
    std::fs::write(
        sim.state().join("registry-contents"),
        held.iter().map(|i| format!("{i}\n")).collect::<String>(),
    )
    .unwrap();
    images
}

#[test]
fn images_come_from_the_registries_a_mirror_lacking_one_fails_pull_and_init_preflight() {
    let sim = Sim::new();
    let images = mirror_without(&sim, "etcd:3.5.16-0");
    let repo = [
        "--kubernetes-version",
        "v1.32.4",
        "--image-repository",
        "mirror.test:5000/k8s",
    ];
    // `list` prints kubeadm's images (CoreDNS flat under a mirror).
    let mut list = vec!["config", "images", "list"];
    list.extend(repo);
    let r = sim.kubeadm("cp1", &list).ok();
    assert_eq!(r.out.lines().collect::<Vec<_>>(), images);
    // `pull` stops at the image the mirror lacks, with the runtime's text.
    let mut pull = vec![
        "config",
        "images",
        "pull",
        "--cri-socket",
        "unix:///run/containerd/containerd.sock",
    ];
    pull.extend(repo);
    let r = sim.kubeadm("cp1", &pull).fails(
        "failed to pull image \"mirror.test:5000/k8s/etcd:3.5.16-0\": rpc error: code = NotFound desc = failed to pull and unpack image \"mirror.test:5000/k8s/etcd:3.5.16-0\": failed to resolve reference \"mirror.test:5000/k8s/etcd:3.5.16-0\": mirror.test:5000/k8s/etcd:3.5.16-0: not found",
    );
    assert!(
        r.out
            .contains("[config/images] Pulled mirror.test:5000/k8s/kube-apiserver:v1.32.4"),
        "{}",
        r.out
    );
    // init on the same mirror fails its preflight the same way, and makes
    // no cluster.
    let cfg = sim.dir.path().join("init.yaml");
    std::fs::write(
        &cfg,
        init_file(
            EP,
            "abcdef.0123456789abcdef",
            &"5e".repeat(32),
            "imageRepository: mirror.test:5000/k8s\n",
        ),
    )
    .unwrap();
    let f = cfg.display().to_string();
    sim.kubeadm("cp1", &["init", "--config", &f, "--upload-certs"])
        .fails("\t[ERROR ImagePull]: failed to pull image mirror.test:5000/k8s/etcd:3.5.16-0: rpc error: code = NotFound");
    assert!(!sim.root("cp1").join("etc/kubernetes/admin.conf").exists());
    // Mirrored: the pull succeeds, and again (nothing left to fetch).
    mirror_without(&sim, "none");
    let r = sim.kubeadm("cp1", &pull).ok();
    assert_eq!(r.out.lines().count(), 7, "{}", r.out);
    sim.kubeadm("cp1", &pull).ok();
    let store = std::fs::read_to_string(sim.root("cp1").join("var/lib/containerd/kubesim-images")).unwrap();
    assert_eq!(store.lines().count(), 7, "each image once: {store}");
    sim.kubeadm("cp1", &["init", "--config", &f, "--upload-certs"])
        .ok();
    // The upstream registries hold everything.
    let r = sim
        .kubeadm(
            "cp2",
            &["config", "images", "pull", "--kubernetes-version", "v1.31.2"],
        )
        .ok();
    assert!(
        r.out
            .contains("[config/images] Pulled registry.k8s.io/etcd:3.5.15-0"),
        "{}",
        r.out
    );
    sim.kubeadm("cp2", &["config", "images", "pull", "--config", &f])
        .fails("--config is not simulated");
}

#[test]
fn load_balancer_services_get_metallb_addresses_only_while_metallb_runs() {
    let sim = Sim::new();
    init(&sim, "cp1", EP);
    let svc = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  type: LoadBalancer\n  ports:\n  - port: 80\n    protocol: TCP\n"
        )
    };
    let apply = |yaml: &str| {
        let path = sim.dir.path().join("apply.yaml");
        std::fs::write(&path, yaml).unwrap();
        sim.kubectl("cp1", &["apply", "-f", &path.display().to_string()])
            .ok();
    };
    let ips = || -> Vec<(String, Option<String>)> {
        let r = sim.kubectl("cp1", &["get", "svc", "-o", "json"]).ok();
        let v: Value = serde_json::from_str(&r.out).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["metadata"]["name"].as_str().unwrap().to_owned(),
                    s["status"]["loadBalancer"]["ingress"][0]["ip"]
                        .as_str()
                        .map(str::to_owned),
                )
            })
            .collect()
    };
    // Without MetalLB a LoadBalancer service stays pending.
    apply(&svc("a"));
    assert_eq!(ips(), [("a".to_owned(), None)]);
    // MetalLB and a two-address range: a and b get one each, c waits.
    let parts = rpool_controller::kube::render::metallb_manifests("192.0.2.200-192.0.2.201").unwrap();
    for (_, yaml) in &parts {
        apply(yaml);
    }
    apply(&format!("{}---\n{}", svc("b"), svc("c")));
    assert_eq!(
        ips(),
        [
            ("a".to_owned(), Some("192.0.2.200".to_owned())),
            ("b".to_owned(), Some("192.0.2.201".to_owned())),
            ("c".to_owned(), None),
        ]
    );
    // One service by name; an unknown one is NotFound.
    let r = sim.kubectl("cp1", &["get", "svc", "b", "-o", "json"]).ok();
    let v: Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(v["status"]["loadBalancer"]["ingress"][0]["ip"], "192.0.2.201");
    sim.kubectl("cp1", &["get", "svc", "zz", "-o", "json"])
        .fails("services \"zz\" not found");
    // A moved range (what a resize applies) moves every address into it.
    let moved = rpool_controller::kube::render::metallb_manifests("192.0.2.208/29").unwrap();
    apply(&moved[1].1);
    let now = ips();
    let got: Vec<&str> = now.iter().filter_map(|(_, ip)| ip.as_deref()).collect();
    assert_eq!(got, ["192.0.2.208", "192.0.2.209", "192.0.2.210"], "{now:?}");
}
