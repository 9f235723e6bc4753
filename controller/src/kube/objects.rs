//! Builders for the Kubernetes object pieces every addon manifest repeats:
//! object headers, RBAC, host-path volumes and mounts, downward-API env.

use super::yaml::Y;
use rpool_proto::ymap;

/// `apiVersion`, `kind` and `metadata` (name, optional namespace, labels).
pub fn object(
    api_version: &str,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    labels: &[(&str, &str)],
) -> Y {
    let mut metadata = ymap! { "name" => name };
    if let Some(ns) = namespace {
        metadata.push("namespace", ns);
    }
    if !labels.is_empty() {
        metadata.push(
            "labels",
            Y::Map(labels.iter().map(|(k, v)| (k.to_string(), Y::from(*v))).collect()),
        );
    }
    ymap! { "apiVersion" => api_version, "kind" => kind, "metadata" => metadata }
}

/// An object with more top-level fields.
pub fn with(mut base: Y, fields: Vec<(&str, Y)>) -> Y {
    for (k, v) in fields {
        base.push(k, v);
    }
    base
}

/// A namespace, privileged for Pod Security (host network and paths).
pub fn privileged_namespace(name: &str) -> Y {
    object(
        "v1",
        "Namespace",
        name,
        None,
        &[("pod-security.kubernetes.io/enforce", "privileged")],
    )
}

/// A ServiceAccount.
pub fn service_account(name: &str, namespace: &str) -> Y {
    object("v1", "ServiceAccount", name, Some(namespace), &[])
}

/// One RBAC rule.
pub fn rule(api_groups: &[&str], resources: &[&str], verbs: &[&str]) -> Y {
    ymap! {
        "apiGroups" => api_groups.to_vec(),
        "resources" => resources.to_vec(),
        "verbs" => verbs.to_vec(),
    }
}

/// A ClusterRole (no namespace) or a Role (in `namespace`).
pub fn role(name: &str, namespace: Option<&str>, rules: Vec<Y>) -> Y {
    let kind = if namespace.is_some() {
        "Role"
    } else {
        "ClusterRole"
    };
    with(
        object("rbac.authorization.k8s.io/v1", kind, name, namespace, &[]),
        vec![("rules", Y::Seq(rules))],
    )
}

/// Binds a role (ClusterRole when `namespace` is `None`) of the same name
/// to a ServiceAccount.
pub fn binding(name: &str, namespace: Option<&str>, account: &str, account_namespace: &str) -> Y {
    let (kind, role_kind) = match namespace {
        Some(_) => ("RoleBinding", "Role"),
        None => ("ClusterRoleBinding", "ClusterRole"),
    };
    with(
        object("rbac.authorization.k8s.io/v1", kind, name, namespace, &[]),
        vec![
            (
                "roleRef",
                ymap! { "apiGroup" => "rbac.authorization.k8s.io", "kind" => role_kind, "name" => name },
            ),
            (
                "subjects",
                Y::Seq(vec![
                    ymap! { "kind" => "ServiceAccount", "name" => account, "namespace" => account_namespace },
                ]),
            ),
        ],
    )
}

/// A host-path volume; `kind` is the hostPath `type` (e.g. `DirectoryOrCreate`).
pub fn host_path_volume(name: &str, path: &str, kind: Option<&str>) -> Y {
    let mut host_path = ymap! { "path" => path };
    if let Some(kind) = kind {
        host_path.push("type", kind);
    }
    ymap! { "name" => name, "hostPath" => host_path }
}

/// A ConfigMap volume.
pub fn config_map_volume(name: &str, config_map: &str) -> Y {
    ymap! { "name" => name, "configMap" => ymap! { "name" => config_map } }
}

/// A volume mount.
pub fn mount(name: &str, path: &str, read_only: bool) -> Y {
    let mut m = ymap! { "name" => name, "mountPath" => path };
    if read_only {
        m.push("readOnly", true);
    }
    m
}

/// An env var from the downward API (`metadata.name`, `spec.nodeName`...).
pub fn env_field(name: &str, field_path: &str) -> Y {
    ymap! { "name" => name, "valueFrom" => ymap! { "fieldRef" => ymap! { "fieldPath" => field_path } } }
}

/// An env var with a literal value.
pub fn env(name: &str, value: &str) -> Y {
    ymap! { "name" => name, "value" => value }
}

/// Linux capabilities added (all others dropped unless `keep_others`).
pub fn capabilities(add: &[&str], keep_others: bool) -> Y {
    let mut caps = ymap! { "add" => add.to_vec() };
    if !keep_others {
        caps.push("drop", vec!["ALL"]);
    }
    ymap! { "capabilities" => caps }
}
