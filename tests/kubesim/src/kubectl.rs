//! `kubectl` personality: get nodes/pods, drain, cordon, uncordon, delete
//! node, apply -f, exec etcd-<cp> -- etcdctl, version, cluster-info.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;

use serde_json::{Value, json};

use crate::flags::{self, Parsed, Spec, flag, flag_s, val, val_s};
use crate::kubeadm::{self, Target};
use crate::state::{self, Applied, Cluster, Env, Fail, Node, Res, Role, Store};

const GLOBAL: [Spec; 12] = [
    val("kubeconfig"),
    val_s("namespace", 'n'),
    val("context"),
    val("cluster"),
    val("user"),
    val_s("server", 's'),
    val("request-timeout"),
    val_s("v", 'v'),
    flag("insecure-skip-tls-verify"),
    val("token"),
    val("as"),
    flag_s("help", 'h'),
];

/// A cobra usage error (`Error: ...` + `See 'kubectl CMD --help' for usage.`).
fn usage_err(cmd: &str, msg: impl AsRef<str>) -> Fail {
    Fail::new(format!(
        "Error: {}\nSee 'kubectl {cmd} --help' for usage.",
        msg.as_ref()
    ))
}

/// kubectl's own errors (`error: ...`).
fn err(msg: impl AsRef<str>) -> Fail {
    Fail::new(format!("error: {}", msg.as_ref()))
}

fn not_found(kind: &str, name: &str) -> String {
    format!("Error from server (NotFound): {kind} \"{name}\" not found")
}

fn parse(cmd: &str, argv: &[String], extra: &[Spec]) -> Res<Parsed> {
    let mut specs = GLOBAL.to_vec();
    specs.extend_from_slice(extra);
    flags::parse(argv, &specs).map_err(|e| usage_err(cmd, e))
}

pub fn run(argv: &[String]) -> Res {
    let Some((i, cmd)) = flags::first_word(argv, &GLOBAL) else {
        flags::parse(argv, &GLOBAL).map_err(|e| usage_err("", e).with_root())?;
        println!(
            "kubectl controls the Kubernetes cluster manager (kubesim subset: get, drain, cordon, uncordon, delete, apply, exec, version, cluster-info)."
        );
        return Ok(());
    };
    let mut rest: Vec<String> = argv[..i].to_vec();
    rest.extend_from_slice(&argv[i + 1..]);
    match cmd.as_str() {
        "get" => get(&rest),
        "drain" => drain(&rest),
        "cordon" => cordon(&rest, true),
        "uncordon" => cordon(&rest, false),
        "delete" => delete(&rest),
        "apply" => apply(&rest),
        "exec" => exec(&rest),
        "version" => version(&rest),
        "cluster-info" => cluster_info(&rest),
        other => Err(Fail::new(format!(
            "Error: unknown command \"{other}\" for \"kubectl\""
        ))),
    }
}

trait RootUsage {
    fn with_root(self) -> Fail;
}

impl RootUsage for Fail {
    fn with_root(self) -> Fail {
        Fail::new(self.msg.replace("'kubectl  --help'", "'kubectl --help'"))
    }
}

/// The cluster the kubeconfig points at, with kubectl's connection errors.
fn connect(store: &Store, env: &Env, p: &Parsed) -> Res<usize> {
    let explicit = p.get("kubeconfig").map(str::to_string);
    let path = explicit.clone().or_else(|| {
        std::env::var("KUBECONFIG")
            .ok()
            .and_then(|k| k.split(':').find(|s| !s.is_empty()).map(str::to_string))
            .or_else(|| std::env::var("HOME").ok().map(|h| format!("{h}/.kube/config")))
    });
    let refused = |server: &str| {
        Fail::new(format!(
            "The connection to the server {server} was refused - did you specify the right host or port?"
        ))
    };
    let Some(path) = path else {
        return Err(refused("localhost:8080"));
    };
    match kubeadm::target(store, env, &path) {
        Target::Found(i) => Ok(i),
        Target::NoFile(f) if explicit.is_some() => Err(err(format!("stat {f}: no such file or directory"))),
        Target::NoFile(_) => Err(refused("localhost:8080")),
        Target::Refused(s) => Err(refused(&s)),
        Target::UnknownAuthority(_) => Err(Fail::new(
            "Unable to connect to the server: tls: failed to verify certificate: x509: certificate signed by unknown authority",
        )),
    }
}

fn open(p: &Parsed) -> Res<(Env, Store, usize)> {
    let env = Env::from_process()?;
    let store = Store::open(&env)?;
    let i = connect(&store, &env, p)?;
    Ok((env, store, i))
}

// ------------------------------------------------------------------ objects

fn node_labels(n: &Node) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    for (k, v) in [
        ("beta.kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/os", "linux"),
    ] {
        l.insert(k.to_string(), v.to_string());
    }
    l.insert("kubernetes.io/hostname".into(), n.name.clone());
    if n.role == Role::ControlPlane {
        l.insert("node-role.kubernetes.io/control-plane".into(), String::new());
        l.insert(
            "node.kubernetes.io/exclude-from-external-load-balancers".into(),
            String::new(),
        );
    }
    l
}

/// `NotReady` reason: (status, reason, message). Without a running pod
/// network the message is the kubelet's, followed by what kubesim found
/// missing in the applied CNI manifest.
fn ready_condition(c: &Cluster, n: &Node) -> (&'static str, &'static str, String) {
    if !c.kubelet_up(n) {
        (
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.".to_owned(),
        )
    } else if !c.network_ready() {
        let why = match &c.cni_missing {
            None => "no CNI DaemonSet applied".to_owned(),
            Some(missing) => format!("the CNI DaemonSet cannot start: {}", missing.join("; ")),
        };
        (
            "False",
            "KubeletNotReady",
            format!(
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized (kubesim: {why})"
            ),
        )
    } else {
        (
            "True",
            "KubeletReady",
            "kubelet is posting ready status".to_owned(),
        )
    }
}

/// `check_cni_manifest` over every object applied to the cluster (the
/// files in `applied/`); `None` when no DaemonSet is applied.
fn cni_missing(c: &Cluster, dir: &std::path::Path) -> Option<Vec<String>> {
    if !c.applied.iter().any(|a| a.kind == "DaemonSet") {
        return None;
    }
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    let docs: Vec<String> = names
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    Some(
        rpool_proto::kube::cni_check::check_cni_manifest(&docs.join("\n---\n"))
            .err()
            .unwrap_or_default(),
    )
}

fn node_json(c: &Cluster, n: &Node, idx: usize, now: u64) -> Value {
    let mut taints = Vec::new();
    if n.role == Role::ControlPlane {
        taints.push(json!({"effect":"NoSchedule","key":"node-role.kubernetes.io/control-plane"}));
    }
    let (status, reason, message) = ready_condition(c, n);
    match status {
        "False" => taints.push(json!({"effect":"NoSchedule","key":"node.kubernetes.io/not-ready"})),
        "Unknown" => {
            taints.push(json!({"effect":"NoSchedule","key":"node.kubernetes.io/unreachable"}));
            taints.push(json!({"effect":"NoExecute","key":"node.kubernetes.io/unreachable","timeAdded":state::rfc3339(now)}));
        }
        _ => {}
    }
    if n.unschedulable {
        taints.push(json!({"effect":"NoSchedule","key":"node.kubernetes.io/unschedulable","timeAdded":state::rfc3339(now)}));
    }
    let mut spec = json!({ "taints": taints });
    if let Some(cidr) = pod_cidr(c, idx) {
        spec["podCIDR"] = json!(cidr);
        spec["podCIDRs"] = json!([cidr]);
    }
    if n.unschedulable {
        spec["unschedulable"] = json!(true);
    }
    if taints_empty(&spec) {
        spec.as_object_mut().expect("object").remove("taints");
    }
    let ts = state::rfc3339(n.created);
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "annotations": {
                "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock",
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true"
            },
            "creationTimestamp": ts,
            "labels": node_labels(n),
            "name": n.name,
            "resourceVersion": format!("{}", n.created % 100000),
            "uid": uid(&format!("{}/{}/{}", c.id, n.name, n.created)),
        },
        "spec": spec,
        "status": {
            "addresses": [
                {"address": n.internal_ip, "type": "InternalIP"},
                {"address": n.name, "type": "Hostname"}
            ],
            "conditions": [
                {"lastHeartbeatTime": state::rfc3339(now), "lastTransitionTime": ts, "message": "kubelet has sufficient memory available", "reason": "KubeletHasSufficientMemory", "status": "False", "type": "MemoryPressure"},
                {"lastHeartbeatTime": state::rfc3339(now), "lastTransitionTime": ts, "message": "kubelet has no disk pressure", "reason": "KubeletHasNoDiskPressure", "status": "False", "type": "DiskPressure"},
                {"lastHeartbeatTime": state::rfc3339(now), "lastTransitionTime": ts, "message": "kubelet has sufficient PID available", "reason": "KubeletHasSufficientPID", "status": "False", "type": "PIDPressure"},
                {"lastHeartbeatTime": state::rfc3339(now), "lastTransitionTime": ts, "message": message, "reason": reason, "status": status, "type": "Ready"}
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "containerRuntimeVersion": "containerd://1.7.24",
                "kernelVersion": "6.8.0-kubesim",
                "kubeProxyVersion": c.kubernetes_version,
                "kubeletVersion": c.kubelet_version(n),
                "operatingSystem": "linux",
                "osImage": "Ubuntu 24.04.1 LTS"
            }
        }
    })
}

fn taints_empty(spec: &Value) -> bool {
    spec["taints"].as_array().is_some_and(Vec::is_empty)
}

fn uid(seed: &str) -> String {
    let a = state::digest(seed.as_bytes());
    let b = state::digest(format!("{seed}#").as_bytes());
    let h = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn pod_cidr(c: &Cluster, idx: usize) -> Option<String> {
    let cidr = c.pod_network_cidr.as_deref()?.split(',').next()?;
    let (ip, len) = cidr.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    if len > 24 {
        return None;
    }
    let base = u32::from(ip) & (!0u32).checked_shl(32 - len).unwrap_or(0);
    let addr = base.wrapping_add((idx as u32) << 8);
    Some(format!("{}/24", std::net::Ipv4Addr::from(addr)))
}

#[derive(Clone, Debug)]
struct Pod {
    ns: String,
    name: String,
    node: Option<String>,
    phase: &'static str,
    created: u64,
    owner: Option<(&'static str, String)>,
    mirror: bool,
    requests: Option<(String, String)>,
    reason: Option<String>,
    /// `metadata.labels` of an applied Pod.
    labels: BTreeMap<String, String>,
    /// An applied Pod with an emptyDir volume (local storage for drain).
    empty_dir: bool,
}

fn pods(c: &Cluster, env: &Env) -> Vec<Pod> {
    let mut out = Vec::new();
    let daemonsets: Vec<(String, String)> =
        std::iter::once(("kube-system".to_string(), "kube-proxy".to_string()))
            .chain(c.applied.iter().filter(|a| a.kind == "DaemonSet").map(|a| {
                (
                    a.namespace.clone().unwrap_or_else(|| "default".into()),
                    a.name.clone(),
                )
            }))
            .collect();
    for n in &c.nodes {
        if n.role == Role::ControlPlane {
            for comp in [
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
            ] {
                out.push(Pod {
                    ns: "kube-system".into(),
                    name: format!("{comp}-{}", n.name),
                    node: Some(n.name.clone()),
                    phase: "Running",
                    created: n.created,
                    owner: Some(("Node", n.name.clone())),
                    mirror: true,
                    requests: None,
                    reason: None,
                    labels: BTreeMap::new(),
                    empty_dir: false,
                });
            }
        }
        for (ns, ds) in &daemonsets {
            out.push(Pod {
                ns: ns.clone(),
                name: format!("{ds}-{}", state::pod_suffix(&format!("{ds}/{}", n.name))),
                node: Some(n.name.clone()),
                phase: "Running",
                created: n.created,
                owner: Some(("DaemonSet", ds.clone())),
                mirror: false,
                requests: None,
                reason: None,
                labels: BTreeMap::new(),
                empty_dir: false,
            });
        }
    }
    // CoreDNS: two replicas, Pending until a pod network exists; placed on
    // the oldest schedulable, running node.
    let host = c
        .nodes
        .iter()
        .find(|n| !n.unschedulable && c.kubelet_up(n))
        .map(|n| n.name.clone());
    let rs = state::pod_suffix(&format!("{}/coredns-rs", c.id));
    let rs = format!(
        "{}{}",
        &rs[..4],
        state::pod_suffix(&format!("{}/coredns-rs2", c.id))
    );
    for i in 0..2 {
        let running = c.network_ready() && host.is_some();
        out.push(Pod {
            ns: "kube-system".into(),
            name: format!("coredns-{rs}-{}", state::pod_suffix(&format!("{}/coredns/{i}", c.id))),
            node: if running { host.clone() } else { None },
            phase: if running { "Running" } else { "Pending" },
            created: c.created,
            owner: Some(("ReplicaSet", format!("coredns-{rs}"))),
            mirror: false,
            requests: Some(("100m".into(), "70Mi".into())),
            reason: (!running).then(|| {
                "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.".to_string()
            }),
            labels: BTreeMap::new(),
            empty_dir: false,
        });
    }
    let pending = c.pending_pods(env);
    let n_nodes = c.nodes.len();
    for i in 0..pending.count {
        out.push(Pod {
            ns: "default".into(),
            name: format!("workload-{}", state::pod_suffix(&format!("{}/pending/{i}", c.id))),
            node: None,
            phase: "Pending",
            created: pending.since,
            owner: Some(("ReplicaSet", "workload".into())),
            mirror: false,
            requests: Some((pending.cpu.clone(), pending.memory.clone())),
            reason: Some(format!(
                "0/{n_nodes} nodes are available: {n_nodes} Insufficient cpu. preemption: 0/{n_nodes} nodes are available: {n_nodes} No preemption victims found for incoming pod."
            )),
            labels: BTreeMap::new(),
            empty_dir: false,
        });
    }
    out.extend(applied_pods(c, env));
    out
}

/// The file `kubectl apply` recorded an object in.
fn applied_file(c: &Cluster, env: &Env, a: &Applied) -> std::path::PathBuf {
    let group = a.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let resource = if group.is_empty() {
        a.kind.to_lowercase()
    } else {
        format!("{}.{group}", a.kind.to_lowercase())
    };
    let file = format!(
        "{resource}_{}_{}.yaml",
        a.namespace.clone().unwrap_or_else(|| "_cluster".into()),
        a.name
    )
    .replace('/', "_");
    c.dir(env).join("applied").join(file)
}

/// The first document of an applied object's file.
pub(crate) fn applied_doc(c: &Cluster, env: &Env, a: &Applied) -> Option<rpool_proto::kube::yaml::Node> {
    // JSON is YAML too: one parser reads both forms.
    let text = fs::read_to_string(applied_file(c, env, a)).ok()?;
    rpool_proto::kube::yaml::parse(&text).ok()?.into_iter().next()
}

fn string_map(node: Option<&rpool_proto::kube::yaml::Node>) -> BTreeMap<String, String> {
    match node {
        Some(rpool_proto::kube::yaml::Node::Map(pairs)) => pairs
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Pods applied with `kubectl apply` (tests put workloads on nodes this
/// way): on `spec.nodeName`, owned by `metadata.ownerReferences[0]` (none:
/// a bare pod), with their labels and whether they use an emptyDir.
fn applied_pods(c: &Cluster, env: &Env) -> Vec<Pod> {
    c.applied
        .iter()
        .filter(|a| a.kind == "Pod" && a.api_version == "v1")
        .filter_map(|a| {
            let doc = applied_doc(c, env, a)?;
            let node = doc
                .at(&["spec", "nodeName"])
                .and_then(|n| n.as_str())
                .map(str::to_string);
            let running = node
                .as_deref()
                .and_then(|n| c.nodes.iter().find(|x| x.name == n))
                .is_some_and(|n| c.kubelet_up(n));
            let owner = doc
                .at(&["metadata", "ownerReferences"])
                .and_then(|o| o.items().first())
                .and_then(|o| {
                    let kind = match o.get("kind")?.as_str()? {
                        "ReplicaSet" => "ReplicaSet",
                        "StatefulSet" => "StatefulSet",
                        "Job" => "Job",
                        "DaemonSet" => "DaemonSet",
                        _ => "ReplicationController",
                    };
                    Some((kind, o.get("name")?.as_str()?.to_string()))
                });
            let empty_dir = doc
                .at(&["spec", "volumes"])
                .is_some_and(|v| v.items().iter().any(|v| v.get("emptyDir").is_some()));
            Some(Pod {
                ns: a.namespace.clone().unwrap_or_else(|| "default".into()),
                name: a.name.clone(),
                node,
                phase: if running { "Running" } else { "Pending" },
                created: a.applied,
                owner,
                mirror: false,
                requests: None,
                reason: None,
                labels: string_map(doc.at(&["metadata", "labels"])),
                empty_dir,
            })
        })
        .collect()
}

/// A PodDisruptionBudget (policy/v1) applied to the cluster.
struct Pdb {
    ns: String,
    selector: BTreeMap<String, String>,
    min_available: Option<i64>,
    max_unavailable: Option<i64>,
}

fn pdbs(c: &Cluster, env: &Env) -> Vec<Pdb> {
    c.applied
        .iter()
        .filter(|a| a.kind == "PodDisruptionBudget" && a.api_version == "policy/v1")
        .filter_map(|a| {
            let doc = applied_doc(c, env, a)?;
            let int = |k: &str| match doc.at(&["spec", k]) {
                Some(rpool_proto::kube::yaml::Node::Int(n)) => Some(*n),
                _ => None,
            };
            Some(Pdb {
                ns: a.namespace.clone().unwrap_or_else(|| "default".into()),
                selector: string_map(doc.at(&["spec", "selector", "matchLabels"])),
                min_available: int("minAvailable"),
                max_unavailable: int("maxUnavailable"),
            })
        })
        .collect()
}

impl Pdb {
    fn selects(&self, p: &Pod) -> bool {
        p.ns == self.ns
            && !self.selector.is_empty()
            && self.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
    }

    /// `status.disruptionsAllowed`: healthy selected pods above
    /// minAvailable, or maxUnavailable less the unhealthy ones.
    fn disruptions_allowed(&self, all: &[Pod]) -> i64 {
        let selected: Vec<&Pod> = all.iter().filter(|p| self.selects(p)).collect();
        let healthy = selected.iter().filter(|p| p.phase == "Running").count() as i64;
        match (self.min_available, self.max_unavailable) {
            (Some(min), _) => (healthy - min).max(0),
            (None, Some(max)) => (max - (selected.len() as i64 - healthy)).max(0),
            (None, None) => 0,
        }
    }
}

/// A Go `time.Duration` string of whole seconds (`300` -> `5m0s`).
fn go_duration_string(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

fn pod_labels(p: &Pod) -> BTreeMap<String, String> {
    let mut l = p.labels.clone();
    let mut put = |k: &str, v: &str| {
        l.insert(k.to_string(), v.to_string());
    };
    match &p.owner {
        Some(("Node", node)) => {
            let comp = p.name.strip_suffix(&format!("-{node}")).unwrap_or(&p.name);
            put("component", comp);
            put("tier", "control-plane");
        }
        Some(("DaemonSet", ds)) if ds == "kube-proxy" => put("k8s-app", "kube-proxy"),
        Some(("DaemonSet", ds)) => put("app", ds),
        Some((_, rs)) if rs.starts_with("coredns") => put("k8s-app", "kube-dns"),
        // Applied pods keep their own labels.
        _ if !p.labels.is_empty() => {}
        _ => put("app", "workload"),
    }
    l
}

fn pod_json(c: &Cluster, p: &Pod) -> Value {
    let mut meta = json!({
        "creationTimestamp": state::rfc3339(p.created),
        "labels": pod_labels(p),
        "name": p.name,
        "namespace": p.ns,
        "uid": uid(&format!("{}/{}/{}", c.id, p.ns, p.name)),
    });
    if let Some((kind, name)) = &p.owner {
        let api = match *kind {
            "Node" => "v1",
            _ => "apps/v1",
        };
        meta["ownerReferences"] =
            json!([{"apiVersion": api, "controller": true, "kind": kind, "name": name, "uid": uid(name)}]);
    }
    if p.mirror {
        meta["annotations"] =
            json!({"kubernetes.io/config.mirror": uid(&p.name), "kubernetes.io/config.source": "file"});
    }
    let mut container = json!({"name": p.name.split('-').next().unwrap_or("app"), "image": "registry.k8s.io/pause:3.10", "resources": {}});
    if let Some((cpu, mem)) = &p.requests {
        container["resources"] = json!({"requests": {"cpu": cpu, "memory": mem}});
    }
    let mut spec = json!({"containers": [container], "schedulerName": "default-scheduler"});
    if let Some(n) = &p.node {
        spec["nodeName"] = json!(n);
    }
    let status = if p.phase == "Pending" {
        json!({
            "conditions": [{"lastProbeTime": null, "lastTransitionTime": state::rfc3339(p.created), "message": p.reason.clone().unwrap_or_default(), "reason": "Unschedulable", "status": "False", "type": "PodScheduled"}],
            "phase": "Pending",
            "qosClass": "Burstable"
        })
    } else {
        json!({
            "conditions": [
                {"lastProbeTime": null, "lastTransitionTime": state::rfc3339(p.created), "status": "True", "type": "Ready"},
                {"lastProbeTime": null, "lastTransitionTime": state::rfc3339(p.created), "status": "True", "type": "PodScheduled"}
            ],
            "phase": p.phase,
            "startTime": state::rfc3339(p.created)
        })
    };
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status})
}

fn list_json(items: Vec<Value>) -> String {
    serde_json::to_string_pretty(&json!({
        "apiVersion": "v1",
        "items": items,
        "kind": "List",
        "metadata": {"resourceVersion": ""}
    }))
    .expect("json")
}

// ------------------------------------------------------------------ selectors

/// Label selector (`k`, `!k`, `k=v`, `k==v`, `k!=v`, comma = AND).
fn label_match(sel: &str, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    for req in sel.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ok = if let Some(k) = req.strip_prefix('!') {
            !labels.contains_key(k)
        } else if let Some((k, v)) = req.split_once("!=") {
            labels.get(k.trim()).map(String::as_str) != Some(v.trim())
        } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            labels.get(k.trim()).map(String::as_str) == Some(v.trim())
        } else if req.contains(' ') || req.contains('(') {
            return Err(format!("unable to parse requirement: {req}"));
        } else {
            labels.contains_key(req)
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn field_match(sel: &str, p: &Pod) -> Result<bool, String> {
    for req in sel.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v, neg) = if let Some((k, v)) = req.split_once("!=") {
            (k, v, true)
        } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            (k, v, false)
        } else {
            return Err(format!("invalid selector: '{req}'; can't understand '{req}'"));
        };
        let actual = match k.trim() {
            "status.phase" => p.phase.to_string(),
            "spec.nodeName" => p.node.clone().unwrap_or_default(),
            "metadata.name" => p.name.clone(),
            "metadata.namespace" => p.ns.clone(),
            other => {
                return Err(format!(
                    "Error from server (BadRequest): Unable to find \"/v1, Resource=pods\" that match label selector \"\", field selector \"{sel}\": \"{other}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                ));
            }
        };
        if (actual == v.trim()) == neg {
            return Ok(false);
        }
    }
    Ok(true)
}

// ------------------------------------------------------------------ get

const GET_FLAGS: [Spec; 8] = [
    val_s("output", 'o'),
    flag_s("all-namespaces", 'A'),
    val_s("selector", 'l'),
    val("field-selector"),
    flag("no-headers"),
    flag("show-labels"),
    flag("ignore-not-found"),
    val("chunk-size"),
];

const PRINTERS: &str = "custom-columns,custom-columns-file,go-template,go-template-file,json,jsonpath,jsonpath-as-json,jsonpath-file,name,template,templatefile,wide,yaml";

fn get(argv: &[String]) -> Res {
    let p = parse("get", argv, &GET_FLAGS)?;
    let Some(kind) = p.args.first().cloned() else {
        return Err(Fail::new(
            "You must specify the type of resource to get. Use \"kubectl api-resources\" for a complete list of supported resources.\n\nerror: Required resource not specified.\nUse \"kubectl explain <resource>\" for a detailed description of that resource (e.g. kubectl explain pods).\nSee 'kubectl get -h' for help and examples",
        ));
    };
    let (kind, mut names) = match kind.split_once('/') {
        Some((k, n)) => (k.to_string(), vec![n.to_string()]),
        None => (kind, Vec::new()),
    };
    names.extend(p.args[1..].iter().cloned());
    let output = p.get("output").unwrap_or("").to_string();
    if !matches!(output.as_str(), "" | "json" | "wide" | "name") {
        return Err(err(format!(
            "unable to match a printer suitable for the output format \"{output}\", allowed formats are: {PRINTERS} (kubesim: json, wide, name)"
        )));
    }
    let (env, store, i) = open(&p)?;
    let c = &store.clusters[i];
    match kind.as_str() {
        "nodes" | "node" | "no" => get_nodes(c, &env, &p, &names, &output),
        "pods" | "pod" | "po" => get_pods(c, &env, &p, &names, &output),
        "services" | "service" | "svc" => get_services(c, &env, &p, &names, &output),
        other => Err(err(format!(
            "the server doesn't have a resource type \"{other}\""
        ))),
    }
}

fn get_nodes(c: &Cluster, env: &Env, p: &Parsed, names: &[String], output: &str) -> Res {
    let mut selected: Vec<(usize, &Node)> = Vec::new();
    let mut missing = Vec::new();
    if names.is_empty() {
        let mut sorted: Vec<(usize, &Node)> = c.nodes.iter().enumerate().collect();
        sorted.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        for (idx, n) in sorted {
            if let Some(sel) = p.get("selector")
                && !label_match(sel, &node_labels(n)).map_err(err)?
            {
                continue;
            }
            selected.push((idx, n));
        }
    } else {
        for name in names {
            match c.nodes.iter().position(|n| &n.name == name) {
                Some(idx) => selected.push((idx, &c.nodes[idx])),
                None if p.on("ignore-not-found") => {}
                None => missing.push(not_found("nodes", name)),
            }
        }
    }
    let single = names.len() == 1 && selected.len() == 1;
    match output {
        "json" => {
            let items: Vec<Value> = selected
                .iter()
                .map(|(idx, n)| node_json(c, n, *idx, env.now))
                .collect();
            if single {
                println!("{}", serde_json::to_string_pretty(&items[0]).expect("json"));
            } else if !items.is_empty() || missing.is_empty() {
                println!("{}", list_json(items));
            }
        }
        "name" => {
            for (_, n) in &selected {
                println!("node/{}", n.name);
            }
        }
        _ => {
            let wide = output == "wide";
            let mut rows = Vec::new();
            if !p.on("no-headers") {
                let mut h = vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"];
                if wide {
                    h.extend([
                        "INTERNAL-IP",
                        "EXTERNAL-IP",
                        "OS-IMAGE",
                        "KERNEL-VERSION",
                        "CONTAINER-RUNTIME",
                    ]);
                }
                if p.on("show-labels") {
                    h.push("LABELS");
                }
                rows.push(h.into_iter().map(String::from).collect::<Vec<_>>());
            }
            for (_, n) in &selected {
                let mut status = if c.node_ready(n) { "Ready" } else { "NotReady" }.to_string();
                if n.unschedulable {
                    status.push_str(",SchedulingDisabled");
                }
                let roles = if n.role == Role::ControlPlane {
                    "control-plane"
                } else {
                    "<none>"
                };
                let mut r = vec![
                    n.name.clone(),
                    status,
                    roles.into(),
                    state::human_duration(env.now.saturating_sub(n.created)),
                    c.kubelet_version(n).to_string(),
                ];
                if wide {
                    r.extend([
                        n.internal_ip.clone(),
                        "<none>".into(),
                        "Ubuntu 24.04.1 LTS".into(),
                        "6.8.0-kubesim".into(),
                        "containerd://1.7.24".into(),
                    ]);
                }
                if p.on("show-labels") {
                    r.push(
                        node_labels(n)
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    );
                }
                rows.push(r);
            }
            if selected.is_empty() && missing.is_empty() {
                eprintln!("No resources found");
            } else if !selected.is_empty() {
                print!("{}", state::table(&rows));
            }
        }
    }
    if !missing.is_empty() {
        return Err(Fail::new(missing.join("\n")));
    }
    Ok(())
}

fn get_services(c: &Cluster, env: &Env, p: &Parsed, names: &[String], output: &str) -> Res {
    let all_ns = p.on("all-namespaces");
    let ns = p.get("namespace").unwrap_or("default").to_string();
    let mut all = crate::lb::services(c, env);
    all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut selected = Vec::new();
    let mut missing = Vec::new();
    if names.is_empty() {
        selected.extend(all.iter().filter(|(n, _, _)| all_ns || *n == ns));
    } else {
        for name in names {
            match all.iter().find(|(n, s, _)| *n == ns && s == name) {
                Some(found) => selected.push(found),
                None => missing.push(format!(
                    "Error from server (NotFound): services \"{name}\" not found"
                )),
            }
        }
    }
    match output {
        "json" => {
            let items: Vec<Value> = selected
                .iter()
                .map(|(n, s, d)| crate::lb::service_json(c, n, s, d))
                .collect();
            if names.len() == 1 && items.len() == 1 {
                println!("{}", serde_json::to_string_pretty(&items[0]).expect("json"));
            } else if missing.is_empty() || !items.is_empty() {
                println!("{}", list_json(items));
            }
        }
        "name" => {
            for (_, s, _) in &selected {
                println!("service/{s}");
            }
        }
        other => {
            return Err(err(format!(
                "kubesim: get services supports -o json|name only, not {:?}",
                other
            )));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Fail::new(missing.join("\n")))
    }
}

fn get_pods(c: &Cluster, env: &Env, p: &Parsed, names: &[String], output: &str) -> Res {
    let all_ns = p.on("all-namespaces");
    let ns = p.get("namespace").unwrap_or("default").to_string();
    let mut selected = Vec::new();
    let mut missing = Vec::new();
    let mut all = pods(c, env);
    all.sort_by(|a, b| (&a.ns, &a.name).cmp(&(&b.ns, &b.name)));
    if names.is_empty() {
        for pod in all {
            if !all_ns && pod.ns != ns {
                continue;
            }
            if let Some(sel) = p.get("field-selector")
                && !field_match(sel, &pod).map_err(|e| {
                    if e.starts_with("Error from server") {
                        Fail::new(e)
                    } else {
                        err(e)
                    }
                })?
            {
                continue;
            }
            if let Some(sel) = p.get("selector")
                && !label_match(sel, &pod_labels(&pod)).map_err(err)?
            {
                continue;
            }
            selected.push(pod);
        }
    } else {
        for name in names {
            match all.iter().find(|x| &x.name == name && x.ns == ns) {
                Some(x) => selected.push(x.clone()),
                None if p.on("ignore-not-found") => {}
                None => missing.push(not_found("pods", name)),
            }
        }
    }
    match output {
        "json" => {
            let items: Vec<Value> = selected.iter().map(|x| pod_json(c, x)).collect();
            if names.len() == 1 && items.len() == 1 {
                println!("{}", serde_json::to_string_pretty(&items[0]).expect("json"));
            } else if !items.is_empty() || missing.is_empty() {
                println!("{}", list_json(items));
            }
        }
        "name" => {
            for x in &selected {
                println!("pod/{}", x.name);
            }
        }
        _ => {
            let wide = output == "wide";
            let mut rows = Vec::new();
            if !p.on("no-headers") {
                let mut h = Vec::new();
                if all_ns {
                    h.push("NAMESPACE");
                }
                h.extend(["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
                if wide {
                    h.extend(["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]);
                }
                rows.push(h.into_iter().map(String::from).collect::<Vec<_>>());
            }
            for x in &selected {
                let mut r = Vec::new();
                if all_ns {
                    r.push(x.ns.clone());
                }
                let ready = if x.phase == "Running" { "1/1" } else { "0/1" };
                r.extend([
                    x.name.clone(),
                    ready.into(),
                    x.phase.into(),
                    "0".into(),
                    state::human_duration(env.now.saturating_sub(x.created)),
                ]);
                if wide {
                    let ip = match &x.node {
                        Some(n) if x.mirror || x.owner.as_ref().is_some_and(|o| o.0 == "DaemonSet") => c
                            .node(n)
                            .map(|n| n.internal_ip.clone())
                            .unwrap_or_else(|| "<none>".into()),
                        Some(_) => "10.244.0.2".into(),
                        None => "<none>".into(),
                    };
                    r.extend([
                        ip,
                        x.node.clone().unwrap_or_else(|| "<none>".into()),
                        "<none>".into(),
                        "<none>".into(),
                    ]);
                }
                rows.push(r);
            }
            if selected.is_empty() && missing.is_empty() {
                if all_ns {
                    eprintln!("No resources found");
                } else {
                    eprintln!("No resources found in {ns} namespace.");
                }
            } else if !selected.is_empty() {
                print!("{}", state::table(&rows));
            }
        }
    }
    if !missing.is_empty() {
        return Err(Fail::new(missing.join("\n")));
    }
    Ok(())
}

// ------------------------------------------------------------------ cordon / drain

fn cordon(argv: &[String], on: bool) -> Res {
    let cmd = if on { "cordon" } else { "uncordon" };
    let p = parse(cmd, argv, &[val("dry-run"), val_s("selector", 'l')])?;
    if p.args.is_empty() && p.get("selector").is_none() {
        return Err(Fail::new(format!(
            "error: USAGE: {cmd} NODE [flags]\nSee 'kubectl {cmd} -h' for help and examples"
        )));
    }
    let (_env, mut store, i) = open(&p)?;
    let c = &mut store.clusters[i];
    let mut names = p.args.clone();
    if let Some(sel) = p.get("selector") {
        for n in &c.nodes {
            if label_match(sel, &node_labels(n)).map_err(err)? {
                names.push(n.name.clone());
            }
        }
    }
    let mut errors = Vec::new();
    for name in &names {
        match c.node_mut(name) {
            None => errors.push(not_found("nodes", name)),
            Some(n) => {
                if n.unschedulable == on {
                    println!("node/{name} already {cmd}ed");
                } else {
                    n.unschedulable = on;
                    println!("node/{name} {cmd}ed");
                }
            }
        }
    }
    let c = c.clone();
    store.save(&c)?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Fail::new(errors.join("\n")))
    }
}

const DRAIN_FLAGS: [Spec; 12] = [
    flag("ignore-daemonsets"),
    flag("delete-emptydir-data"),
    flag("delete-local-data"),
    flag("force"),
    val("timeout"),
    val("grace-period"),
    flag("disable-eviction"),
    val("skip-wait-for-delete-timeout"),
    val("pod-selector"),
    val_s("selector", 'l'),
    val("dry-run"),
    val("chunk-size"),
];

fn drain(argv: &[String]) -> Res {
    let p = parse("drain", argv, &DRAIN_FLAGS)?;
    if let Some(t) = p.get("timeout") {
        flags::go_duration(t).map_err(|e| {
            usage_err(
                "drain",
                format!("invalid argument \"{t}\" for \"--timeout\" flag: {e}"),
            )
        })?;
    }
    if let Some(g) = p.get("grace-period") {
        g.parse::<i64>().map_err(|_| {
            usage_err(
                "drain",
                format!("invalid argument \"{g}\" for \"--grace-period\" flag: strconv.ParseInt: parsing \"{g}\": invalid syntax"),
            )
        })?;
    }
    if p.args.len() != 1 {
        return Err(Fail::new(
            "error: USAGE: drain NODE [flags]\nSee 'kubectl drain -h' for help and examples",
        ));
    }
    let name = p.args[0].clone();
    let (env, mut store, i) = open(&p)?;
    let c = &mut store.clusters[i];
    let Some(n) = c.node_mut(&name) else {
        return Err(Fail::new(not_found("nodes", &name)));
    };
    if n.unschedulable {
        println!("node/{name} already cordoned");
    } else {
        n.unschedulable = true;
        println!("node/{name} cordoned");
    }
    let c = c.clone();
    store.save(&c)?;
    // Pods on the node before the cordon (CoreDNS may sit here).
    let mut before = c.clone();
    if let Some(n) = before.node_mut(&name) {
        n.unschedulable = false;
    }
    let on_node: Vec<Pod> = pods(&before, &env)
        .into_iter()
        .filter(|x| x.node.as_deref() == Some(name.as_str()))
        .collect();
    // kubectl's filters, in its order: DaemonSet-managed, mirror (skipped),
    // local storage (emptyDir), unmanaged (no controller). A refused pod
    // fails the drain before any eviction.
    let list = |f: &dyn Fn(&Pod) -> bool| -> Vec<String> {
        on_node
            .iter()
            .filter(|x| !x.mirror && f(x))
            .map(|x| format!("{}/{}", x.ns, x.name))
            .collect()
    };
    let is_ds = |x: &Pod| x.owner.as_ref().is_some_and(|o| o.0 == "DaemonSet");
    let ds = list(&is_ds);
    let local = list(&|x: &Pod| !is_ds(x) && x.empty_dir);
    let bare = list(&|x: &Pod| x.owner.is_none());
    let mut fatal = Vec::new();
    let mut warnings = Vec::new();
    for (pods, ok, fatal_msg, warning) in [
        (
            &ds,
            p.on("ignore-daemonsets"),
            "DaemonSet-managed Pods (use --ignore-daemonsets to ignore)",
            "ignoring DaemonSet-managed Pods",
        ),
        (
            &local,
            p.on("delete-emptydir-data") || p.on("delete-local-data"),
            "Pods with local storage (use --delete-emptydir-data to override)",
            "deleting Pods with local storage",
        ),
        (
            &bare,
            p.on("force"),
            "Pods declare no controller (use --force to override)",
            "deleting Pods that declare no controller",
        ),
    ] {
        if pods.is_empty() {
            continue;
        }
        if ok {
            warnings.push(format!("{warning}: {}", pods.join(", ")));
        } else {
            fatal.push(format!("cannot delete {fatal_msg}: {}", pods.join(", ")));
        }
    }
    if !fatal.is_empty() {
        let why = aggregate(&fatal);
        return Err(Fail::new(format!(
            "error: unable to drain node \"{name}\" due to error: {why}, continuing command...\nThere are pending nodes to be drained:\n {name}\n{why}"
        )));
    }
    if !warnings.is_empty() {
        eprintln!("Warning: {}", warnings.join("; "));
    }
    let all = pods(&before, &env);
    let budgets = pdbs(&c, &env);
    let mut allowed: Vec<i64> = budgets.iter().map(|b| b.disruptions_allowed(&all)).collect();
    let evict: Vec<&Pod> = on_node.iter().filter(|x| !x.mirror && !is_ds(x)).collect();
    for x in &evict {
        println!("evicting pod {}/{}", x.ns, x.name);
    }
    // The Eviction API refuses a pod while a budget selecting it allows no
    // disruption; kubectl retries every 5s until its --timeout.
    let mut blocked = Vec::new();
    let mut evicted = Vec::new();
    for x in &evict {
        let budget: Vec<usize> = (0..budgets.len()).filter(|&b| budgets[b].selects(x)).collect();
        if budget.iter().any(|&b| allowed[b] <= 0) {
            eprintln!(
                "error when evicting pods/\"{}\" -n \"{}\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget.",
                x.name, x.ns
            );
            blocked.push(*x);
        } else {
            for b in budget {
                allowed[b] -= 1;
            }
            evicted.push(*x);
        }
    }
    // Evicted pods that were applied are gone from the node.
    let gone: Vec<(String, String)> = evicted
        .iter()
        .filter(|x| all_applied(&c, x))
        .map(|x| (x.ns.clone(), x.name.clone()))
        .collect();
    if !gone.is_empty() {
        let mut c = c.clone();
        for (ns, pod) in &gone {
            if let Some(a) = c
                .applied
                .iter()
                .find(|a| a.kind == "Pod" && a.namespace.as_deref() == Some(ns) && &a.name == pod)
            {
                let _ = fs::remove_file(applied_file(&c, &env, a));
            }
            c.applied
                .retain(|a| !(a.kind == "Pod" && a.namespace.as_deref() == Some(ns) && &a.name == pod));
        }
        store.save(&c)?;
    }
    for x in &evicted {
        println!("pod/{} evicted", x.name);
    }
    if !blocked.is_empty() {
        // kubesim does not wait in real time: it answers what kubectl
        // answers once its --timeout has run out.
        let Some(timeout) = p
            .get("timeout")
            .map(flags::go_duration)
            .transpose()
            .ok()
            .flatten()
            .filter(|t| *t > 0)
        else {
            return Err(Fail::new(format!(
                "kubesim: drain of node \"{name}\" is blocked by a PodDisruptionBudget and has no --timeout: kubectl would retry forever"
            )));
        };
        let errors: Vec<String> = blocked
            .iter()
            .map(|x| {
                format!(
                    "error when evicting pods/\"{}\" -n \"{}\": global timeout reached: {}",
                    x.name,
                    x.ns,
                    go_duration_string(timeout)
                )
            })
            .collect();
        let why = aggregate(&errors);
        return Err(Fail::new(format!(
            "error: unable to drain node \"{name}\" due to error: {why}, continuing command...\nThere are pending nodes to be drained:\n {name}\n{why}"
        )));
    }
    println!("node/{name} drained");
    Ok(())
}

/// Go's `utilerrors.NewAggregate(errs).Error()`: one error as is, several
/// as `[a, b]`.
fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// Whether `x` is a pod recorded by `kubectl apply`.
fn all_applied(c: &Cluster, x: &Pod) -> bool {
    c.applied
        .iter()
        .any(|a| a.kind == "Pod" && a.namespace.as_deref() == Some(x.ns.as_str()) && a.name == x.name)
}

// ------------------------------------------------------------------ delete

fn delete(argv: &[String]) -> Res {
    let p = parse(
        "delete",
        argv,
        &[
            flag("ignore-not-found"),
            val("wait"),
            val("timeout"),
            val("grace-period"),
            flag("force"),
            flag("now"),
            val("cascade"),
            val_s("filename", 'f'),
            val_s("selector", 'l'),
        ],
    )?;
    if p.has("filename") {
        return Err(err("kubesim supports only `kubectl delete node NAME...`"));
    }
    let Some(kind) = p.args.first().cloned() else {
        return Err(Fail::new(
            "error: You must provide one or more resources by argument or filename.\nExample resource specifications include:\n   '-f rsrc.yaml'\n   '--filename=rsrc.json'\n   '<resource> <name>'\n   '<resource>'",
        ));
    };
    let (kind, mut names) = match kind.split_once('/') {
        Some((k, n)) => (k.to_string(), vec![n.to_string()]),
        None => (kind, Vec::new()),
    };
    names.extend(p.args[1..].iter().cloned());
    if !matches!(kind.as_str(), "node" | "nodes" | "no") {
        return Err(err(format!(
            "the server doesn't have a resource type \"{kind}\" (kubesim deletes nodes only)"
        )));
    }
    if names.is_empty() {
        return Err(err("resource(s) were provided, but no name was specified"));
    }
    let (_env, mut store, i) = open(&p)?;
    let c = &mut store.clusters[i];
    let mut errors = Vec::new();
    for name in &names {
        match c.nodes.iter().position(|n| &n.name == name) {
            Some(pos) => {
                c.nodes.remove(pos);
                println!("node \"{name}\" deleted");
            }
            None if p.on("ignore-not-found") => {}
            None => errors.push(not_found("nodes", name)),
        }
    }
    let c = c.clone();
    store.save(&c)?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Fail::new(errors.join("\n")))
    }
}

// ------------------------------------------------------------------ apply

const BUILTIN_GROUPS: [&str; 18] = [
    "",
    "apps",
    "batch",
    "policy",
    "autoscaling",
    "rbac.authorization.k8s.io",
    "apiextensions.k8s.io",
    "networking.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "admissionregistration.k8s.io",
    "apiregistration.k8s.io",
    "coordination.k8s.io",
    "certificates.k8s.io",
    "discovery.k8s.io",
    "node.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
];

const CLUSTER_SCOPED: [&str; 15] = [
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
    "CSIDriver",
    "RuntimeClass",
    "ValidatingAdmissionPolicy",
];

struct Obj {
    api_version: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    text: String,
}

/// The fields apply needs from one YAML document (top-level `apiVersion`,
/// `kind`, and `metadata.name/namespace`), without a YAML library.
fn yaml_fields(doc: &str) -> (Option<String>, Option<String>, Option<String>, Option<String>) {
    let unq = |s: &str| s.trim().trim_matches('"').trim_matches('\'').to_string();
    let (mut api, mut kind, mut name, mut ns) = (None, None, None, None);
    let mut in_meta = false;
    let mut meta_indent: Option<usize> = None;
    for line in doc.lines() {
        let t = line.trim_end();
        if t.trim_start().starts_with('#') || t.trim().is_empty() {
            continue;
        }
        let indent = t.len() - t.trim_start().len();
        if indent == 0 {
            in_meta = false;
            if let Some(v) = t.strip_prefix("apiVersion:") {
                api = Some(unq(v));
            } else if let Some(v) = t.strip_prefix("kind:") {
                kind = Some(unq(v));
            } else if t.starts_with("metadata:") {
                in_meta = true;
                meta_indent = None;
            }
            continue;
        }
        if in_meta {
            let mi = *meta_indent.get_or_insert(indent);
            if indent != mi {
                continue;
            }
            let body = t.trim_start();
            if let Some(v) = body.strip_prefix("name:") {
                name = Some(unq(v));
            } else if let Some(v) = body.strip_prefix("namespace:") {
                ns = Some(unq(v));
            }
        }
    }
    (api, kind, name, ns)
}

fn split_docs(text: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line == "---" || line.starts_with("--- ") {
            docs.push(std::mem::take(&mut cur));
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs.push(cur);
    docs.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

fn objects(source: &str, text: &str) -> Result<Vec<Obj>, String> {
    let mut out = Vec::new();
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("error parsing {source}: {e}"))?;
        let items = if v["kind"] == "List" {
            v["items"].as_array().cloned().unwrap_or_default()
        } else {
            vec![v]
        };
        for it in items {
            let s = |p: &str| it.pointer(p).and_then(Value::as_str).map(str::to_string);
            out.push(check_obj(
                source,
                s("/apiVersion"),
                s("/kind"),
                s("/metadata/name"),
                s("/metadata/namespace"),
                it.to_string(),
            )?);
        }
        return Ok(out);
    }
    for doc in split_docs(text) {
        let (api, kind, name, ns) = yaml_fields(&doc);
        out.push(check_obj(source, api, kind, name, ns, doc)?);
    }
    Ok(out)
}

fn check_obj(
    source: &str,
    api: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    ns: Option<String>,
    text: String,
) -> Result<Obj, String> {
    let mut missing = Vec::new();
    if api.as_deref().is_none_or(str::is_empty) {
        missing.push("apiVersion not set");
    }
    if kind.as_deref().is_none_or(str::is_empty) {
        missing.push("kind not set");
    }
    if !missing.is_empty() {
        return Err(format!(
            "error: error validating \"{source}\": error validating data: [{}]; if you choose to ignore these errors, turn validation off with --validate=false",
            missing.join(", ")
        ));
    }
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Err(format!(
            "error: error when retrieving current configuration of:\nResource: \"{}\", Name: \"\"\nfrom server for: \"{source}\": resource name may not be empty",
            kind.unwrap_or_default()
        ));
    };
    Ok(Obj {
        api_version: api.unwrap_or_default(),
        kind: kind.unwrap_or_default(),
        name,
        namespace: ns,
        text,
    })
}

fn apply(argv: &[String]) -> Res {
    let p = parse(
        "apply",
        argv,
        &[
            val_s("filename", 'f'),
            flag_s("recursive", 'R'),
            flag("server-side"),
            flag("force-conflicts"),
            val("validate"),
            val("dry-run"),
            val("field-manager"),
            val_s("output", 'o'),
            flag("wait"),
            val_s("kustomize", 'k'),
        ],
    )?;
    let files = p.all("filename");
    if files.is_empty() {
        return Err(err("must specify one of -f and -k"));
    }
    // Read every source first (kubectl fails on a missing path up front).
    let mut sources: Vec<(String, String)> = Vec::new();
    for f in &files {
        if f == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| err(format!("reading stdin: {e}")))?;
            sources.push(("STDIN".into(), s));
        } else if f.starts_with("http://") || f.starts_with("https://") {
            return Err(err(format!(
                "unable to read URL \"{f}\", server reported dial tcp: lookup: no such host (kubesim has no network; apply a local file)"
            )));
        } else {
            let path = std::path::Path::new(f);
            if path.is_dir() {
                let mut entries: Vec<_> = fs::read_dir(path)
                    .map_err(|e| err(format!("{f}: {e}")))?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
                    })
                    .collect();
                entries.sort();
                for e in entries {
                    let text = fs::read_to_string(&e).map_err(|x| err(format!("{}: {x}", e.display())))?;
                    sources.push((e.display().to_string(), text));
                }
            } else {
                let text =
                    fs::read_to_string(path).map_err(|_| err(format!("the path \"{f}\" does not exist")))?;
                sources.push((f.clone(), text));
            }
        }
    }
    let mut objs = Vec::new();
    for (src, text) in &sources {
        objs.extend(
            objects(src, text)
                .map_err(Fail::new)?
                .into_iter()
                .map(|o| (src.clone(), o)),
        );
    }
    if objs.is_empty() {
        return Err(err("no objects passed to apply"));
    }
    let dry = p.get("dry-run").is_some_and(|d| d != "none");
    let (env, mut store, i) = open(&p)?;
    let c = &mut store.clusters[i];
    let dir = c.dir(&env).join("applied");
    let mut errors = Vec::new();
    for (src, o) in objs {
        let group = o
            .api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
            .to_string();
        let resource = if group.is_empty() {
            o.kind.to_lowercase()
        } else {
            format!("{}.{group}", o.kind.to_lowercase())
        };
        let crd_known = c
            .applied
            .iter()
            .any(|a| a.kind == "CustomResourceDefinition" && a.name.ends_with(&format!(".{group}")));
        if !BUILTIN_GROUPS.contains(&group.as_str()) && !crd_known {
            errors.push(format!(
                "error: resource mapping not found for name: \"{}\" namespace: \"{}\" from \"{src}\": no matches for kind \"{}\" in version \"{}\"\nensure CRDs are installed first",
                o.name,
                o.namespace.clone().unwrap_or_default(),
                o.kind,
                o.api_version
            ));
            continue;
        }
        let ns = if CLUSTER_SCOPED.contains(&o.kind.as_str()) {
            None
        } else {
            Some(
                o.namespace
                    .clone()
                    .or_else(|| p.get("namespace").map(str::to_string))
                    .unwrap_or_else(|| "default".into()),
            )
        };
        if let Some(ns) = &ns {
            let exists = ["default", "kube-system", "kube-public", "kube-node-lease"].contains(&ns.as_str())
                || c.applied.iter().any(|a| a.kind == "Namespace" && &a.name == ns);
            if !exists {
                errors.push(format!(
                    "Error from server (NotFound): error when creating \"{src}\": namespaces \"{ns}\" not found"
                ));
                continue;
            }
        }
        let digest = state::digest(o.text.as_bytes());
        let existing = c.applied.iter_mut().find(|a| {
            a.kind == o.kind
                && a.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("") == group
                && a.namespace == ns
                && a.name == o.name
        });
        let verb = match existing {
            Some(a) if a.digest == digest => "unchanged",
            Some(a) => {
                if !dry {
                    a.digest = digest;
                    a.applied = env.now;
                    a.source = src.clone();
                    a.api_version = o.api_version.clone();
                }
                "configured"
            }
            None => {
                if !dry {
                    c.applied.push(Applied {
                        api_version: o.api_version.clone(),
                        kind: o.kind.clone(),
                        namespace: ns.clone(),
                        name: o.name.clone(),
                        source: src.clone(),
                        digest,
                        applied: env.now,
                    });
                }
                "created"
            }
        };
        if !dry {
            let file = format!(
                "{}_{}_{}.yaml",
                resource,
                ns.clone().unwrap_or_else(|| "_cluster".into()),
                o.name
            )
            .replace('/', "_");
            state::write_atomic(&dir.join(file), o.text.as_bytes())?;
        }
        let suffix = if dry { " (dry run)" } else { "" };
        println!("{resource}/{} {verb}{suffix}", o.name);
    }
    if !dry {
        c.cni_missing = cni_missing(c, &dir);
        crate::lb::assign(c, &env);
    }
    let c = c.clone();
    store.save(&c)?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Fail::new(errors.join("\n")))
    }
}

// ------------------------------------------------------------------ exec etcdctl

fn exec(argv: &[String]) -> Res {
    let p = parse(
        "exec",
        argv,
        &[
            val_s("container", 'c'),
            flag_s("stdin", 'i'),
            flag_s("tty", 't'),
            flag_s("quiet", 'q'),
            val("pod-running-timeout"),
        ],
    )?;
    if p.args.is_empty() {
        return Err(err("pod, type/name or --filename must be specified"));
    }
    if p.args.len() > 1 {
        return Err(err(
            "exec [POD] [COMMAND] is not supported anymore. Use exec [POD] -- [COMMAND] instead\nSee 'kubectl exec -h' for help and examples",
        ));
    }
    if p.rest.is_empty() {
        return Err(err("you must specify at least one command for the container"));
    }
    let pod = p.args[0]
        .trim_start_matches("pod/")
        .trim_start_matches("pods/")
        .to_string();
    let ns = p.get("namespace").unwrap_or("default").to_string();
    let (env, mut store, i) = open(&p)?;
    let c = &mut store.clusters[i];
    let host = c
        .nodes
        .iter()
        .find(|n| n.role == Role::ControlPlane && format!("etcd-{}", n.name) == pod)
        .cloned();
    let Some(host) = host.filter(|_| ns == "kube-system") else {
        return Err(Fail::new(not_found("pods", &pod)));
    };
    if !c.kubelet_up(&host) {
        return Err(Fail::new(format!(
            "Error from server: error dialing backend: dial tcp {}:10250: connect: connection refused",
            host.internal_ip
        )));
    }
    if p.rest[0] != "etcdctl" {
        return Err(Fail::new(format!(
            "error: Internal error occurred: error executing command in container: failed to exec in container: failed to start exec: OCI runtime exec failed: exec failed: unable to start container process: exec: \"{}\": executable file not found in $PATH: unknown",
            p.rest[0]
        )));
    }
    let (code, out, errtext, changed) = etcdctl(c, &host, &p.rest[1..], env.now);
    print!("{out}");
    eprint!("{errtext}");
    if changed {
        let c = c.clone();
        store.save(&c)?;
    }
    if code != 0 {
        return Err(Fail {
            msg: format!("command terminated with exit code {code}"),
            code,
        });
    }
    Ok(())
}

/// `etcdctl` inside `etcd-<host>`: returns (exit code, stdout, stderr, state changed).
fn etcdctl(c: &mut Cluster, host: &Node, argv: &[String], now: u64) -> (i32, String, String, bool) {
    let specs = [
        val("endpoints"),
        val("cacert"),
        val("cert"),
        val("key"),
        val_s("write-out", 'w'),
        flag("hex"),
        val("command-timeout"),
        val("dial-timeout"),
        flag("cluster"),
        flag("insecure-skip-tls-verify"),
        flag("debug"),
    ];
    let p = match flags::parse(argv, &specs) {
        Ok(p) => p,
        Err(e) => return (1, String::new(), format!("Error: {e}\n"), false),
    };
    let words: Vec<&str> = p.args.iter().map(String::as_str).collect();
    let deadline = |what: &str| {
        (
            1,
            String::new(),
            format!(
                "{{\"level\":\"warn\",\"ts\":\"{}\",\"logger\":\"etcd-client\",\"caller\":\"v3@v3.5.16/retry_interceptor.go:63\",\"msg\":\"retrying of unary invoker failed\",\"target\":\"etcd-endpoints://0xc0000f0000/127.0.0.1:2379\",\"attempt\":0,\"error\":\"rpc error: code = DeadlineExceeded desc = {what}\"}}\nError: context deadline exceeded\n",
                state::rfc3339(now)
            ),
            false,
        )
    };
    if !(p.has("cacert") && p.has("cert") && p.has("key")) {
        return deadline(
            "latest balancer error: last connection error: connection error: desc = \"error reading server preface: EOF\"",
        );
    }
    let total = c.etcd_members.len();
    let healthy = c.etcd_members.iter().filter(|m| c.member_healthy(m)).count();
    let local_member = c.etcd_members.iter().find(|m| m.name == host.name).map(|m| m.id);
    let quorum = healthy > total / 2 && local_member.is_some();
    let url = |ip: &str, port: u16| format!("https://{ip}:{port}");
    match words.as_slice() {
        ["member", "list"] => {
            if !quorum {
                return deadline("context deadline exceeded");
            }
            let out = match p.get("write-out").unwrap_or("simple") {
                "json" => {
                    let members: Vec<Value> = c
                        .etcd_members
                        .iter()
                        .map(|m| json!({"ID": m.id, "name": m.name, "peerURLs": [url(&m.ip, 2380)], "clientURLs": [url(&m.ip, 2379)]}))
                        .collect();
                    format!(
                        "{}\n",
                        json!({"header": {"cluster_id": c.etcd_cluster_id, "member_id": local_member.unwrap_or(0), "raft_term": 2 + total as u64}, "members": members})
                    )
                }
                "table" => {
                    let mut rows = vec![vec![
                        "ID".to_string(),
                        "STATUS".into(),
                        "NAME".into(),
                        "PEER ADDRS".into(),
                        "CLIENT ADDRS".into(),
                        "IS LEARNER".into(),
                    ]];
                    for m in &c.etcd_members {
                        rows.push(vec![
                            format!("{:x}", m.id),
                            "started".into(),
                            m.name.clone(),
                            url(&m.ip, 2380),
                            url(&m.ip, 2379),
                            "false".into(),
                        ]);
                    }
                    ascii_table(&rows)
                }
                "simple" => c
                    .etcd_members
                    .iter()
                    .map(|m| {
                        format!(
                            "{:x}, started, {}, {}, {}, false\n",
                            m.id,
                            m.name,
                            url(&m.ip, 2380),
                            url(&m.ip, 2379)
                        )
                    })
                    .collect(),
                other => {
                    return (
                        1,
                        String::new(),
                        format!("Error: unknown printer type \"{other}\"\n"),
                        false,
                    );
                }
            };
            (0, out, String::new(), false)
        }
        ["member", "remove", id] => {
            let Ok(id) = u64::from_str_radix(id, 16) else {
                return (
                    1,
                    String::new(),
                    format!(
                        "Error: bad member ID arg (strconv.ParseUint: parsing \"{id}\": invalid syntax), expecting ID in Hex\n"
                    ),
                    false,
                );
            };
            if !quorum {
                return deadline("context deadline exceeded");
            }
            let Some(pos) = c.etcd_members.iter().position(|m| m.id == id) else {
                return (
                    1,
                    String::new(),
                    "Error: etcdserver: member not found\n".into(),
                    false,
                );
            };
            let removed_healthy = c.member_healthy(&c.etcd_members[pos]);
            let after_healthy = healthy - usize::from(removed_healthy);
            if after_healthy < (total - 1) / 2 + 1 {
                return (
                    1,
                    String::new(),
                    "Error: etcdserver: re-configuration failed due to not enough started members\n".into(),
                    false,
                );
            }
            c.etcd_members.remove(pos);
            (
                0,
                format!("Member {id:x} removed from cluster {:x}\n", c.etcd_cluster_id),
                String::new(),
                true,
            )
        }
        ["member", "remove"] => (
            1,
            String::new(),
            "Error: member ID is not provided\n".into(),
            false,
        ),
        ["endpoint", "health"] => {
            let targets: Vec<(String, bool)> = if p.on("cluster") {
                c.etcd_members
                    .iter()
                    .map(|m| (url(&m.ip, 2379), c.member_healthy(m) && healthy > total / 2))
                    .collect()
            } else {
                let ep = p.get("endpoints").unwrap_or("127.0.0.1:2379");
                ep.split(',').map(|e| (e.to_string(), quorum)).collect()
            };
            let mut out = String::new();
            let mut errs = String::new();
            for (ep, ok) in &targets {
                if *ok {
                    out.push_str(&format!(
                        "{ep} is healthy: successfully committed proposal: took = 9.823514ms\n"
                    ));
                } else {
                    errs.push_str(&format!(
                        "{ep} is unhealthy: failed to commit proposal: context deadline exceeded\n"
                    ));
                }
            }
            if targets.iter().all(|t| t.1) {
                (0, out, String::new(), false)
            } else {
                errs.push_str("Error: unhealthy cluster\n");
                (1, out, errs, false)
            }
        }
        _ => (
            1,
            String::new(),
            format!(
                "Error: unknown command {:?} for \"etcdctl\" (kubesim: member list, member remove ID, endpoint health)\n",
                words.join(" ")
            ),
            false,
        ),
    }
}

fn ascii_table(rows: &[Vec<String>]) -> String {
    let cols = rows[0].len();
    let mut w = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let sep: String = format!(
        "+{}+\n",
        w.iter().map(|n| "-".repeat(n + 2)).collect::<Vec<_>>().join("+")
    );
    let mut out = sep.clone();
    for (ri, r) in rows.iter().enumerate() {
        out.push('|');
        for (i, c) in r.iter().enumerate() {
            if ri == 0 {
                let total = w[i] - c.len();
                let left = total / 2;
                out.push_str(&format!(
                    " {}{}{} |",
                    " ".repeat(left),
                    c,
                    " ".repeat(total - left)
                ));
            } else {
                out.push_str(&format!(" {c:>width$} |", width = w[i]));
            }
        }
        out.push('\n');
        if ri == 0 {
            out.push_str(&sep);
        }
    }
    out.push_str(&sep);
    out
}

// ------------------------------------------------------------------ version / cluster-info

fn version(argv: &[String]) -> Res {
    let p = parse("version", argv, &[flag("client"), val_s("output", 'o')])?;
    let client = kubeadm::VERSION;
    if p.get("output") == Some("json") && p.on("client") {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"clientVersion": {"major": "1", "minor": "32", "gitVersion": client, "platform": "linux/amd64"}, "kustomizeVersion": "v5.5.0"})).expect("json")
        );
        return Ok(());
    }
    println!("Client Version: {client}\nKustomize Version: v5.5.0");
    if p.on("client") {
        return Ok(());
    }
    let (_env, store, i) = open(&p)?;
    println!("Server Version: {}", store.clusters[i].kubernetes_version);
    Ok(())
}

fn cluster_info(argv: &[String]) -> Res {
    let p = parse("cluster-info", argv, &[])?;
    let (_env, store, i) = open(&p)?;
    let ep = &store.clusters[i].endpoint;
    println!(
        "Kubernetes control plane is running at https://{ep}\nCoreDNS is running at https://{ep}/api/v1/namespaces/kube-system/services/kube-dns:dns/proxy\n\nTo further debug and diagnose cluster problems, use 'kubectl cluster-info dump'."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_fields_reads_top_level_and_metadata() {
        let doc = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: kube-flannel-ds\n  namespace: kube-flannel\n  labels:\n    name: nope\nspec:\n  template:\n    metadata:\n      name: inner\n";
        let (a, k, n, ns) = yaml_fields(doc);
        assert_eq!(a.as_deref(), Some("apps/v1"));
        assert_eq!(k.as_deref(), Some("DaemonSet"));
        assert_eq!(n.as_deref(), Some("kube-flannel-ds"));
        assert_eq!(ns.as_deref(), Some("kube-flannel"));
        assert_eq!(split_docs("---\na: 1\n---\n# c\n---\nb: 2\n").len(), 2);
    }

    #[test]
    fn selectors() {
        let mut l = BTreeMap::new();
        l.insert("node-role.kubernetes.io/control-plane".to_string(), String::new());
        l.insert("kubernetes.io/hostname".to_string(), "cp1".to_string());
        assert!(label_match("node-role.kubernetes.io/control-plane", &l).unwrap());
        assert!(!label_match("!node-role.kubernetes.io/control-plane", &l).unwrap());
        assert!(label_match("kubernetes.io/hostname=cp1", &l).unwrap());
        assert!(!label_match("kubernetes.io/hostname!=cp1", &l).unwrap());
    }
}
