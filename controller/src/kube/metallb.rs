//! MetalLB (v0.14.x, native mode, L2) written by rpool, and a pool's
//! address range for it.
//!
//! Two manifests, applied in order: [`install_manifest`] (namespace, the
//! CRDs the controller and speaker watch, RBAC, the memberlist and L2
//! exclusion config, the controller Deployment and the speaker DaemonSet),
//! then, once the CRDs are established, [`address_pool_manifest`] (an
//! IPAddressPool for the pool's `lb_range` and an L2Advertisement of it).
//!
//! Differences from upstream's manifest, on purpose: the validating
//! webhook is off (`--webhook-mode=disabled`: no webhook Service, Secret,
//! certificate rotation or ValidatingWebhookConfiguration to keep alive;
//! rpool validates the range itself, [`super::network`]); the CRD schemas
//! are written by us, typed for the two kinds rpool creates and open
//! (`x-kubernetes-preserve-unknown-fields`) for the others; images come
//! through the image repository ([`super::images`]).

use super::cidr::IpRange;
use super::images::{METALLB_CONTROLLER, METALLB_SPEAKER};
use super::objects::{
    binding, capabilities, config_map_volume, env, env_field, object, privileged_namespace, role, rule,
    service_account, with,
};
use super::yaml::{Y, emit_documents};
use rpool_proto::ymap;

/// MetalLB's namespace.
pub const NAMESPACE: &str = "metallb-system";
/// The CRD group.
pub const GROUP: &str = "metallb.io";
/// The name of the pool's IPAddressPool and L2Advertisement.
pub const POOL_NAME: &str = "rpool-lb-range";
/// The memberlist secret the controller creates and the speakers read.
const MEMBERLIST_SECRET: &str = "memberlist";
/// The metrics port of both components.
const MONITORING_PORT: i64 = 7472;
/// The speakers' memberlist port (TCP and UDP).
const MEMBERLIST_PORT: i64 = 7946;
/// Interfaces speakers never announce on (bridges, tunnels, CNI devices).
const EXCLUDED_INTERFACES: [&str; 14] = [
    "^docker.*",
    "^cbr.*",
    "^dummy.*",
    "^virbr.*",
    "^lxcbr.*",
    "^veth.*",
    "^lo$",
    "^cali.*",
    "^tunl.*",
    "^flannel.*",
    "^kube-ipvs.*",
    "^cni.*",
    "^nodelocaldns.*",
    "^lxc.*",
];

/// A schema open to any field.
fn open_object() -> Y {
    ymap! { "type" => "object", "x-kubernetes-preserve-unknown-fields" => true }
}

fn typed(kind: &str) -> Y {
    ymap! { "type" => kind }
}

fn string_list() -> Y {
    ymap! { "type" => "array", "items" => typed("string") }
}

/// A CustomResourceDefinition of `kind` in [`GROUP`], namespaced, with
/// `spec` (and `status`, when `status`) described by `spec_schema`.
/// `versions`: (name, storage), every one served.
fn crd(plural: &str, kind: &str, versions: &[(&str, bool)], spec_schema: Y, status: bool) -> Y {
    let mut properties = ymap! {
        "apiVersion" => typed("string"),
        "kind" => typed("string"),
        "metadata" => typed("object"),
        "spec" => spec_schema,
    };
    if status {
        properties.push("status", open_object());
    }
    let versions: Vec<Y> = versions
        .iter()
        .map(|(name, storage)| {
            let mut v = ymap! {
                "name" => *name,
                "served" => true,
                "storage" => *storage,
                "schema" => ymap! { "openAPIV3Schema" => ymap! { "type" => "object", "properties" => properties.clone() } },
            };
            if status {
                v.push("subresources", ymap! { "status" => ymap! {} });
            }
            v
        })
        .collect();
    let singular = kind.to_ascii_lowercase();
    with(
        object(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            &format!("{plural}.{GROUP}"),
            None,
            &[],
        ),
        vec![(
            "spec",
            ymap! {
                "group" => GROUP,
                "names" => ymap! { "kind" => kind, "listKind" => format!("{kind}List"), "plural" => plural, "singular" => singular },
                "scope" => "Namespaced",
                "versions" => Y::Seq(versions),
            },
        )],
    )
}

fn crds() -> Vec<Y> {
    let pool_spec = ymap! {
        "type" => "object",
        "required" => vec!["addresses"],
        "properties" => ymap! {
            "addresses" => string_list(),
            "autoAssign" => typed("boolean"),
            "avoidBuggyIPs" => typed("boolean"),
            "serviceAllocation" => open_object(),
        },
    };
    let l2_spec = ymap! {
        "type" => "object",
        "properties" => ymap! {
            "ipAddressPools" => string_list(),
            "ipAddressPoolSelectors" => ymap! { "type" => "array", "items" => open_object() },
            "nodeSelectors" => ymap! { "type" => "array", "items" => open_object() },
            "interfaces" => string_list(),
        },
    };
    let beta1 = [("v1beta1", true)];
    vec![
        crd("ipaddresspools", "IPAddressPool", &beta1, pool_spec, true),
        crd("l2advertisements", "L2Advertisement", &beta1, l2_spec, false),
        crd(
            "bgpadvertisements",
            "BGPAdvertisement",
            &beta1,
            open_object(),
            false,
        ),
        crd(
            "bgppeers",
            "BGPPeer",
            &[("v1beta1", false), ("v1beta2", true)],
            open_object(),
            true,
        ),
        crd("bfdprofiles", "BFDProfile", &beta1, open_object(), false),
        crd("communities", "Community", &beta1, open_object(), false),
        crd(
            "servicel2statuses",
            "ServiceL2Status",
            &beta1,
            open_object(),
            true,
        ),
        // Newer speakers report BGP status too; an unused CRD is harmless,
        // a missing watched one stops the speaker.
        crd(
            "servicebgpstatuses",
            "ServiceBGPStatus",
            &beta1,
            open_object(),
            true,
        ),
    ]
}

/// The custom resources both components read.
const CONFIG_RESOURCES: [&str; 6] = [
    "ipaddresspools",
    "l2advertisements",
    "bgpadvertisements",
    "bgppeers",
    "bfdprofiles",
    "communities",
];

fn rbac() -> Vec<Y> {
    let read = ["get", "list", "watch"];
    let all = ["create", "delete", "get", "list", "patch", "update", "watch"];
    let controller_cluster = "metallb-system:controller";
    let speaker_cluster = "metallb-system:speaker";
    vec![
        role(
            controller_cluster,
            None,
            vec![
                rule(&[""], &["services", "namespaces"], &read),
                rule(&[""], &["nodes"], &["list"]),
                rule(&[""], &["services/status"], &["update"]),
                rule(&[""], &["events"], &["create", "patch"]),
                rule(&["apiextensions.k8s.io"], &["customresourcedefinitions"], &read),
            ],
        ),
        role(
            speaker_cluster,
            None,
            vec![
                rule(&[""], &["services", "endpoints", "nodes", "namespaces"], &read),
                rule(&["discovery.k8s.io"], &["endpointslices"], &read),
                rule(&[""], &["events"], &["create", "patch"]),
                rule(
                    &[GROUP],
                    &[
                        "servicel2statuses",
                        "servicel2statuses/status",
                        "servicebgpstatuses",
                        "servicebgpstatuses/status",
                    ],
                    &all,
                ),
            ],
        ),
        role(
            "controller",
            Some(NAMESPACE),
            vec![
                rule(&[""], &["secrets"], &all),
                rule(&["apps"], &["deployments"], &["get"]),
                rule(&[GROUP], &CONFIG_RESOURCES, &read),
                rule(&[GROUP], &["ipaddresspools/status"], &["update"]),
            ],
        ),
        role(
            "pod-lister",
            Some(NAMESPACE),
            vec![
                rule(&[""], &["pods"], &["get", "list"]),
                rule(&[""], &["secrets", "configmaps"], &read),
                rule(&[GROUP], &CONFIG_RESOURCES, &read),
            ],
        ),
        binding(controller_cluster, None, "controller", NAMESPACE),
        binding(speaker_cluster, None, "speaker", NAMESPACE),
        binding("controller", Some(NAMESPACE), "controller", NAMESPACE),
        binding("pod-lister", Some(NAMESPACE), "speaker", NAMESPACE),
    ]
}

fn port(name: &str, number: i64, protocol: &str) -> Y {
    ymap! { "name" => name, "containerPort" => number, "protocol" => protocol }
}

fn metrics_probe() -> Y {
    ymap! { "httpGet" => ymap! { "path" => "/metrics", "port" => "monitoring" }, "periodSeconds" => 10i64 }
}

fn component_labels(component: &str) -> Y {
    ymap! { "app" => "metallb", "component" => component }
}

/// A workload (`Deployment` or `DaemonSet`) of one component.
fn workload(kind: &str, component: &str, extra_spec: Vec<(&str, Y)>, pod_spec: Y) -> Y {
    let mut spec = ymap! { "selector" => ymap! { "matchLabels" => component_labels(component) } };
    for (k, v) in extra_spec {
        spec.push(k, v);
    }
    spec.push(
        "template",
        ymap! { "metadata" => ymap! { "labels" => component_labels(component) }, "spec" => pod_spec },
    );
    with(
        object(
            "apps/v1",
            kind,
            component,
            Some(NAMESPACE),
            &[("app", "metallb"), ("component", component)],
        ),
        vec![("spec", spec)],
    )
}

fn locked_down(add: &[&str]) -> Y {
    let mut sc = capabilities(add, false);
    sc.push("allowPrivilegeEscalation", false);
    sc.push("readOnlyRootFilesystem", true);
    sc
}

fn controller(repository: Option<&str>) -> Y {
    let container = ymap! {
        "name" => "controller",
        "image" => METALLB_CONTROLLER.reference(repository),
        "args" => vec![format!("--port={MONITORING_PORT}"), "--log-level=info".into(), "--webhook-mode=disabled".into()],
        "env" => Y::Seq(vec![env("METALLB_ML_SECRET_NAME", MEMBERLIST_SECRET), env("METALLB_DEPLOYMENT", "controller")]),
        "ports" => Y::Seq(vec![port("monitoring", MONITORING_PORT, "TCP")]),
        "livenessProbe" => metrics_probe(),
        "readinessProbe" => metrics_probe(),
        "securityContext" => locked_down(&[]),
    };
    let pod = ymap! {
        "serviceAccountName" => "controller",
        "nodeSelector" => ymap! { "kubernetes.io/os" => "linux" },
        "securityContext" => ymap! { "runAsNonRoot" => true, "runAsUser" => 65534i64, "fsGroup" => 65534i64 },
        "terminationGracePeriodSeconds" => 0i64,
        "containers" => Y::Seq(vec![container]),
    };
    workload("Deployment", "controller", vec![("replicas", Y::Int(1))], pod)
}

fn speaker(repository: Option<&str>) -> Y {
    let container = ymap! {
        "name" => "speaker",
        "image" => METALLB_SPEAKER.reference(repository),
        "args" => vec![format!("--port={MONITORING_PORT}"), "--log-level=info".into()],
        "env" => Y::Seq(vec![
            env_field("METALLB_NODE_NAME", "spec.nodeName"),
            env_field("METALLB_POD_NAME", "metadata.name"),
            env_field("METALLB_HOST", "status.hostIP"),
            env_field("METALLB_ML_BIND_ADDR", "status.podIP"),
            env("METALLB_ML_LABELS", "app=metallb,component=speaker"),
            env("METALLB_ML_SECRET_KEY_PATH", "/etc/ml_secret_key"),
        ]),
        "ports" => Y::Seq(vec![
            port("monitoring", MONITORING_PORT, "TCP"),
            port("memberlist-tcp", MEMBERLIST_PORT, "TCP"),
            port("memberlist-udp", MEMBERLIST_PORT, "UDP"),
        ]),
        "livenessProbe" => metrics_probe(),
        "readinessProbe" => metrics_probe(),
        "securityContext" => locked_down(&["NET_RAW"]),
        "volumeMounts" => Y::Seq(vec![
            ymap! { "name" => "memberlist", "mountPath" => "/etc/ml_secret_key", "readOnly" => true },
            ymap! { "name" => "metallb-excludel2", "mountPath" => "/etc/metallb", "readOnly" => true },
        ]),
    };
    let pod = ymap! {
        "serviceAccountName" => "speaker",
        "hostNetwork" => true,
        "nodeSelector" => ymap! { "kubernetes.io/os" => "linux" },
        "terminationGracePeriodSeconds" => 2i64,
        "tolerations" => Y::Seq(vec![
            ymap! { "key" => "node-role.kubernetes.io/control-plane", "operator" => "Exists", "effect" => "NoSchedule" },
        ]),
        "containers" => Y::Seq(vec![container]),
        "volumes" => Y::Seq(vec![
            ymap! { "name" => "memberlist", "secret" => ymap! { "secretName" => MEMBERLIST_SECRET, "defaultMode" => 420i64 } },
            config_map_volume("metallb-excludel2", "metallb-excludel2"),
        ]),
    };
    workload("DaemonSet", "speaker", vec![], pod)
}

/// Every object MetalLB needs, in apply order (CRDs first).
pub fn install_documents(repository: Option<&str>) -> Vec<Y> {
    let excluded: String = EXCLUDED_INTERFACES.iter().map(|p| format!("- {p}\n")).collect();
    let exclude_config = with(
        object("v1", "ConfigMap", "metallb-excludel2", Some(NAMESPACE), &[]),
        vec![(
            "data",
            ymap! { "excludel2.yaml" => format!("announcedInterfacesToExclude:\n{excluded}") },
        )],
    );
    let mut docs = vec![privileged_namespace(NAMESPACE)];
    docs.extend(crds());
    docs.push(service_account("controller", NAMESPACE));
    docs.push(service_account("speaker", NAMESPACE));
    docs.extend(rbac());
    docs.push(exclude_config);
    docs.push(controller(repository));
    docs.push(speaker(repository));
    docs
}

/// The install manifest (`kubectl apply -f`).
pub fn install_manifest(repository: Option<&str>) -> String {
    emit_documents(&install_documents(repository))
}

/// An IPAddressPool of `range` and its L2Advertisement.
pub fn address_pool_documents(range: &IpRange) -> Vec<Y> {
    let pool = with(
        object(
            &format!("{GROUP}/v1beta1"),
            "IPAddressPool",
            POOL_NAME,
            Some(NAMESPACE),
            &[],
        ),
        vec![(
            "spec",
            ymap! { "addresses" => vec![range.to_string()], "autoAssign" => true },
        )],
    );
    let advertisement = with(
        object(
            &format!("{GROUP}/v1beta1"),
            "L2Advertisement",
            POOL_NAME,
            Some(NAMESPACE),
            &[],
        ),
        vec![("spec", ymap! { "ipAddressPools" => vec![POOL_NAME] })],
    );
    vec![pool, advertisement]
}

/// The pool's range manifest (apply after the CRDs are established).
pub fn address_pool_manifest(range: &IpRange) -> String {
    emit_documents(&address_pool_documents(range))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::yaml::{Node, parse};

    fn kinds(docs: &[Node]) -> Vec<String> {
        docs.iter()
            .map(|d| d.get("kind").and_then(Node::as_str).unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_install_manifest_has_every_part_and_kubectl_reads_it() {
        let text = install_manifest(Some("registry.example:5000/k8s"));
        let docs = parse(&text).unwrap();
        let kinds = kinds(&docs);
        assert_eq!(kinds[0], "Namespace");
        assert_eq!(
            kinds.iter().filter(|k| *k == "CustomResourceDefinition").count(),
            8
        );
        for kind in [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "Deployment",
            "DaemonSet",
        ] {
            assert!(kinds.iter().any(|k| k == kind), "{kind} missing");
        }
        assert!(text.contains("image: registry.example:5000/k8s/metallb/controller:v0.14.9\n"));
        assert!(text.contains("image: registry.example:5000/k8s/metallb/speaker:v0.14.9\n"));
        assert!(text.contains("- --webhook-mode=disabled\n"));
        let crd_names: Vec<&str> = docs
            .iter()
            .filter(|d| d.get("kind").and_then(Node::as_str) == Some("CustomResourceDefinition"))
            .map(|d| d.at(&["metadata", "name"]).unwrap().as_str().unwrap())
            .collect();
        assert!(
            crd_names.contains(&"ipaddresspools.metallb.io")
                && crd_names.contains(&"l2advertisements.metallb.io")
        );
        // Every resource a Role or ClusterRole names is one that exists.
        assert!(!text.contains("podsecuritypolicies"));
        if let Some(result) = crate::kube::kubectl::check(&text) {
            result.unwrap();
        }
        assert!(install_manifest(None).contains("image: quay.io/metallb/speaker:v0.14.9\n"));
    }

    #[test]
    fn the_address_pool_names_the_range_and_is_advertised_over_l2() {
        for (range, written) in [
            ("192.0.2.200-192.0.2.220", "192.0.2.200-192.0.2.220"),
            ("192.0.2.0/28", "192.0.2.0/28"),
        ] {
            let text = address_pool_manifest(&IpRange::parse(range).unwrap());
            let docs = parse(&text).unwrap();
            assert_eq!(kinds(&docs), ["IPAddressPool", "L2Advertisement"]);
            assert_eq!(
                docs[0].at(&["spec", "addresses"]).unwrap().items()[0].as_str(),
                Some(written)
            );
            assert_eq!(
                docs[1].at(&["spec", "ipAddressPools"]).unwrap().items()[0].as_str(),
                Some(POOL_NAME)
            );
            assert_eq!(
                docs[0].at(&["apiVersion"]).unwrap().as_str(),
                Some("metallb.io/v1beta1")
            );
            if let Some(result) = crate::kube::kubectl::check(&text) {
                result.unwrap();
            }
        }
    }

    #[test]
    fn the_typed_crd_schemas_require_what_metallb_requires() {
        let docs = parse(&install_manifest(None)).unwrap();
        let pools = docs
            .iter()
            .find(|d| d.at(&["metadata", "name"]).and_then(Node::as_str) == Some("ipaddresspools.metallb.io"))
            .unwrap();
        let version = &pools.at(&["spec", "versions"]).unwrap().items()[0];
        let spec = version
            .at(&["schema", "openAPIV3Schema", "properties", "spec"])
            .unwrap();
        assert_eq!(
            spec.get("required").unwrap().items()[0].as_str(),
            Some("addresses")
        );
        assert!(version.at(&["subresources", "status"]).is_some());
    }
}
