//! What a node needs from a CNI manifest before its network can start:
//! `check_cni_manifest`. kubesim makes a node Ready only when this passes
//! for a manifest applied to its pool; rpool checks an admin's own CNI
//! manifest (Calico, Cilium...) with it too. Std and [`super::yaml`] only.
//!
//! Each rule, for the CNI DaemonSet (the one that mounts `/etc/cni/net.d`,
//! else the first):
//!
//! 1. It runs on the host network (no pod network exists before it).
//! 2. It tolerates the NoSchedule taints of control planes and of NotReady
//!    nodes (every node needs a network, and a node stays NotReady until
//!    its CNI runs; the DaemonSet controller adds no toleration for
//!    `node.kubernetes.io/not-ready:NoSchedule`).
//! 3. It runs as a ServiceAccount defined in the manifest, bound by a
//!    ClusterRoleBinding to a ClusterRole of the manifest that grants get,
//!    list and watch on nodes.
//! 4. Its config is mounted: a ConfigMap of the manifest, in its namespace,
//!    mounted by one of its containers (or read through env).
//! 5. Its agent learns which node it is on from the downward API
//!    (`spec.nodeName` or `metadata.name`); flanneld needs exactly
//!    `POD_NAME` and `POD_NAMESPACE`.
//! 6. `/etc/cni/net.d` and `/opt/cni/bin` are host-path volumes mounted by
//!    one of its containers (init containers count), so the plugin and
//!    config land where the kubelet looks.

use super::yaml::{Node, parse};

/// The host directory the kubelet reads CNI configs from.
pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// The host directory of CNI plugin binaries.
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";

/// Checks `yaml`; the error lists every missing piece.
pub fn check_cni_manifest(yaml: &str) -> Result<(), Vec<String>> {
    let docs = parse(yaml).map_err(|e| vec![e])?;
    check_documents(&docs)
}

/// [`check_cni_manifest`] on parsed documents.
pub fn check_documents(docs: &[Node]) -> Result<(), Vec<String>> {
    let kind_of = |d: &Node| {
        d.get("kind")
            .and_then(Node::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let daemon_sets: Vec<&Node> = docs.iter().filter(|d| kind_of(d) == "DaemonSet").collect();
    let Some(ds) = daemon_sets
        .iter()
        .find(|d| mounted_host_paths(d).iter().any(|p| p == CNI_CONF_DIR))
        .or(daemon_sets.first())
    else {
        return Err(vec![
            "no DaemonSet: a CNI runs one agent pod on every node".to_owned(),
        ]);
    };
    let name = str_at(ds, &["metadata", "name"]);
    let namespace = ds
        .at(&["metadata", "namespace"])
        .and_then(Node::as_str)
        .unwrap_or("default");
    let prefix = format!("DaemonSet {namespace}/{name}");
    let spec = ds
        .at(&["spec", "template", "spec"])
        .cloned()
        .unwrap_or(Node::Null);
    let mut missing = Vec::new();

    if spec.get("hostNetwork") != Some(&Node::Bool(true)) {
        missing.push(format!(
            "{prefix}: hostNetwork is not true (no pod network exists before the CNI runs)"
        ));
    }
    for taint in NODE_TAINTS {
        if !tolerates(&spec, taint) {
            missing.push(format!("{prefix}: the taint {taint}:NoSchedule is not tolerated"));
        }
    }
    check_rbac(docs, &spec, namespace, &prefix, &mut missing);
    check_config(docs, &spec, namespace, &prefix, &mut missing);
    check_env(&spec, &prefix, &mut missing);
    let mounted = mounted_host_paths(ds);
    for dir in [CNI_CONF_DIR, CNI_BIN_DIR] {
        if !mounted.iter().any(|p| p.trim_end_matches('/') == dir) {
            missing.push(format!(
                "{prefix}: host directory {dir} is not mounted by any container"
            ));
        }
    }
    if missing.is_empty() { Ok(()) } else { Err(missing) }
}

/// The string at `path` ("" when absent or not a string).
pub fn str_at<'a>(node: &'a Node, path: &[&str]) -> &'a str {
    node.at(path).and_then(Node::as_str).unwrap_or_default()
}

/// Every container of the pod spec, init containers first.
fn containers(spec: &Node) -> impl Iterator<Item = &Node> {
    let items = |key| spec.get(key).map(Node::items).unwrap_or_default();
    items("initContainers").iter().chain(items("containers"))
}

/// The volume named `name` of the pod spec.
fn volume<'a>(spec: &'a Node, name: &str) -> Option<&'a Node> {
    let volumes = spec.get("volumes").map(Node::items).unwrap_or_default();
    volumes.iter().find(|v| str_at(v, &["name"]) == name)
}

/// Names of the volumes some container mounts.
fn mounted_volumes(spec: &Node) -> Vec<&str> {
    containers(spec)
        .flat_map(|c| c.get("volumeMounts").map(Node::items).unwrap_or_default())
        .map(|m| str_at(m, &["name"]))
        .collect()
}

/// Host paths mounted into some container of a DaemonSet.
fn mounted_host_paths(ds: &Node) -> Vec<String> {
    let Some(spec) = ds.at(&["spec", "template", "spec"]) else {
        return Vec::new();
    };
    mounted_volumes(spec)
        .into_iter()
        .filter_map(|name| volume(spec, name))
        .filter_map(|v| v.at(&["hostPath", "path"]).and_then(Node::as_str))
        .map(str::to_owned)
        .collect()
}

/// NoSchedule taints (without value) a CNI pod must tolerate.
const NODE_TAINTS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node.kubernetes.io/not-ready",
];

/// Whether a toleration of the pod matches the NoSchedule taint `key`
/// (no value).
fn tolerates(spec: &Node, key: &str) -> bool {
    let tolerations = spec.get("tolerations").map(Node::items).unwrap_or_default();
    tolerations.iter().any(|t| {
        let t_key = str_at(t, &["key"]);
        let effect = str_at(t, &["effect"]);
        let operator = t.get("operator").and_then(Node::as_str).unwrap_or("Equal");
        let key_ok = match operator {
            "Exists" => t_key.is_empty() || t_key == key,
            "Equal" => t_key == key && str_at(t, &["value"]).is_empty(),
            _ => false,
        };
        key_ok && (effect.is_empty() || effect == "NoSchedule")
    })
}

fn check_rbac(docs: &[Node], spec: &Node, namespace: &str, prefix: &str, missing: &mut Vec<String>) {
    let account = spec
        .get("serviceAccountName")
        .or(spec.get("serviceAccount"))
        .and_then(Node::as_str)
        .unwrap_or_default();
    if account.is_empty() || account == "default" {
        missing.push(format!(
            "{prefix}: no serviceAccountName (the agent needs API access to nodes)"
        ));
        return;
    }
    let of_kind = |kind: &'static str| docs.iter().filter(move |d| str_at(d, &["kind"]) == kind);
    let defined = of_kind("ServiceAccount").any(|d| {
        str_at(d, &["metadata", "name"]) == account && str_at(d, &["metadata", "namespace"]) == namespace
    });
    if !defined {
        missing.push(format!(
            "{prefix}: ServiceAccount {namespace}/{account} is not in the manifest"
        ));
    }
    let grants_nodes = |role_name: &str| {
        of_kind("ClusterRole")
            .filter(|r| str_at(r, &["metadata", "name"]) == role_name)
            .any(|r| {
                let rules = r.get("rules").map(Node::items).unwrap_or_default();
                let verbs: Vec<&str> = rules
                    .iter()
                    .filter(|rule| {
                        has(rule, "apiGroups", "")
                            && (has(rule, "resources", "nodes") || has(rule, "resources", "*"))
                    })
                    .flat_map(|rule| rule.get("verbs").map(Node::items).unwrap_or_default())
                    .filter_map(Node::as_str)
                    .collect();
                ["get", "list", "watch"]
                    .iter()
                    .all(|v| verbs.contains(v) || verbs.contains(&"*"))
            })
    };
    let bound = of_kind("ClusterRoleBinding").any(|b| {
        let subjects = b.get("subjects").map(Node::items).unwrap_or_default();
        let binds_account = subjects.iter().any(|s| {
            str_at(s, &["kind"]) == "ServiceAccount"
                && str_at(s, &["name"]) == account
                && str_at(s, &["namespace"]) == namespace
        });
        binds_account
            && str_at(b, &["roleRef", "kind"]) == "ClusterRole"
            && grants_nodes(str_at(b, &["roleRef", "name"]))
    });
    if !bound {
        missing.push(format!(
            "{prefix}: no ClusterRoleBinding gives ServiceAccount {namespace}/{account} a ClusterRole with get, list and watch on nodes"
        ));
    }
}

/// Whether the list at `key` holds `value`.
pub fn has(node: &Node, key: &str, value: &str) -> bool {
    node.get(key)
        .map(Node::items)
        .unwrap_or_default()
        .iter()
        .any(|v| v.as_str() == Some(value))
}

fn check_config(docs: &[Node], spec: &Node, namespace: &str, prefix: &str, missing: &mut Vec<String>) {
    let config_maps: Vec<&str> = docs
        .iter()
        .filter(|d| str_at(d, &["kind"]) == "ConfigMap" && str_at(d, &["metadata", "namespace"]) == namespace)
        .map(|d| str_at(d, &["metadata", "name"]))
        .collect();
    let by_volume = mounted_volumes(spec)
        .into_iter()
        .filter_map(|name| volume(spec, name))
        .filter_map(|v| v.at(&["configMap", "name"]).and_then(Node::as_str))
        .any(|cm| config_maps.contains(&cm));
    let by_env = containers(spec).any(|c| {
        let env = c.get("env").map(Node::items).unwrap_or_default();
        let env_from = c.get("envFrom").map(Node::items).unwrap_or_default();
        env.iter()
            .filter_map(|e| {
                e.at(&["valueFrom", "configMapKeyRef", "name"])
                    .and_then(Node::as_str)
            })
            .chain(
                env_from
                    .iter()
                    .filter_map(|e| e.at(&["configMapRef", "name"]).and_then(Node::as_str)),
            )
            .any(|cm| config_maps.contains(&cm))
    });
    if !by_volume && !by_env {
        missing.push(format!(
            "{prefix}: no ConfigMap of the manifest (namespace {namespace}) is mounted into a container or read through env"
        ));
    }
}

fn check_env(spec: &Node, prefix: &str, missing: &mut Vec<String>) {
    let main = spec.get("containers").map(Node::items).unwrap_or_default();
    let field_env = |c: &Node| -> Vec<(String, String)> {
        let env = c.get("env").map(Node::items).unwrap_or_default();
        env.iter()
            .filter_map(|e| {
                let path = e
                    .at(&["valueFrom", "fieldRef", "fieldPath"])
                    .and_then(Node::as_str)?;
                Some((str_at(e, &["name"]).to_owned(), path.to_owned()))
            })
            .collect()
    };
    let identity = main.iter().any(|c| {
        field_env(c)
            .iter()
            .any(|(_, p)| p == "spec.nodeName" || p == "metadata.name")
    });
    if !identity {
        missing.push(format!(
            "{prefix}: no container gets its node or pod name from the downward API (env fieldRef spec.nodeName or metadata.name)"
        ));
    }
    let is_flanneld = |c: &&Node| {
        let command = c.get("command").map(Node::items).unwrap_or_default();
        command
            .iter()
            .filter_map(Node::as_str)
            .any(|a| a.ends_with("flanneld"))
    };
    for c in main.iter().filter(is_flanneld) {
        let env = field_env(c);
        for (name, path) in [
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace"),
        ] {
            if !env.iter().any(|(n, p)| n == name && p == path) {
                missing.push(format!(
                    "{prefix}: container {} (flanneld) lacks env {name} from fieldRef {path}",
                    str_at(c, &["name"])
                ));
            }
        }
    }
}
