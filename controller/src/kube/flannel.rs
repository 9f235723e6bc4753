//! A complete flannel deployment (v0.26.x), written by rpool.
//!
//! What flanneld needs on each node, and where this manifest gives it:
//!
//! - API access (`--kube-subnet-mgr` reads its node's pod CIDR and writes
//!   its annotations): ServiceAccount `flannel`, ClusterRole/Binding with
//!   get on pods, get/list/watch on nodes, patch on nodes/status.
//! - Its network config at `/etc/kube-flannel/net-conf.json`: ConfigMap
//!   `kube-flannel-cfg` mounted there.
//! - `POD_NAME` / `POD_NAMESPACE` from the downward API (it looks its own
//!   pod up to find its node).
//! - The CNI plugin binary in `/opt/cni/bin/flannel` and the conflist in
//!   `/etc/cni/net.d/10-flannel.conflist`, copied by two init containers,
//!   so the kubelet finds a network; `/run/flannel` (subnet.env, read by
//!   the plugin) and the xtables lock shared with the host.
//! - Host network, and tolerating every NoSchedule taint (control planes
//!   and NotReady nodes too: the node is not ready until flannel runs).

use serde_json::json;

use super::cidr::{Cidr, Family};
use super::images::{FLANNEL, FLANNEL_CNI_PLUGIN};
use super::objects::{
    binding, config_map_volume, env, env_field, host_path_volume, mount, object, privileged_namespace, role,
    rule, service_account, with,
};
use super::yaml::{Y, emit_documents};
use super::{KubeFieldError, echo};
use rpool_proto::ymap;

/// The namespace flannel runs in.
pub const NAMESPACE: &str = "kube-flannel";
/// Its service account (and ClusterRole/Binding) name.
pub const ACCOUNT: &str = "flannel";
/// The ConfigMap with `net-conf.json` and `cni-conf.json`.
pub const CONFIG_MAP: &str = "kube-flannel-cfg";

/// flannel's data-plane backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// VXLAN overlay (works on any L3 network).
    #[default]
    Vxlan,
    /// Direct routes (nodes on one L2 segment).
    HostGw,
    /// Encrypted tunnels.
    Wireguard,
}

impl Backend {
    /// Parses a backend name as flannel writes it.
    pub fn parse(text: &str) -> Result<Backend, KubeFieldError> {
        match text {
            "vxlan" => Ok(Backend::Vxlan),
            "host-gw" => Ok(Backend::HostGw),
            "wireguard" => Ok(Backend::Wireguard),
            _ => Err(KubeFieldError::new(
                "cni_backend",
                format!(
                    "{} is not accepted (accepted vxlan, host-gw, wireguard)",
                    echo(text)
                ),
            )),
        }
    }

    /// The name in net-conf.json.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
            Backend::Wireguard => "wireguard",
        }
    }
}

/// What the deployment is templated on.
#[derive(Debug, Clone, Copy)]
pub struct FlannelInput<'a> {
    /// The pool's pod networks (one, or one per family), checked by
    /// [`super::network`].
    pub pod_cidrs: &'a [Cidr],
    pub backend: Backend,
    /// A mirror for the images (see [`super::images`]).
    pub image_repository: Option<&'a str>,
}

/// flannel's own config (`net-conf.json`).
pub fn net_conf(input: &FlannelInput<'_>) -> String {
    let v4 = input.pod_cidrs.iter().find(|c| c.family() == Family::V4);
    let v6 = input.pod_cidrs.iter().find(|c| c.family() == Family::V6);
    let mut conf = json!({
        "EnableNFTables": false,
        "Backend": { "Type": input.backend.name() },
    });
    match v4 {
        Some(c) => conf["Network"] = json!(c.to_string()),
        None => conf["EnableIPv4"] = json!(false),
    }
    if let Some(c) = v6 {
        conf["EnableIPv6"] = json!(true);
        conf["IPv6Network"] = json!(c.to_string());
    }
    serde_json::to_string_pretty(&conf).unwrap_or_default() + "\n"
}

/// The CNI conflist the kubelet reads.
fn cni_conf() -> String {
    let conf = json!({
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "plugins": [
            { "type": "flannel", "delegate": { "hairpinMode": true, "isDefaultGateway": true } },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    });
    serde_json::to_string_pretty(&conf).unwrap_or_default() + "\n"
}

/// Every object of the deployment, in apply order.
pub fn documents(input: &FlannelInput<'_>) -> Vec<Y> {
    let labels = [("app", "flannel"), ("tier", "node")];
    let config = with(
        object("v1", "ConfigMap", CONFIG_MAP, Some(NAMESPACE), &labels),
        vec![(
            "data",
            ymap! { "cni-conf.json" => cni_conf(), "net-conf.json" => net_conf(input) },
        )],
    );
    let cluster_role = role(
        ACCOUNT,
        None,
        vec![
            rule(&[""], &["pods"], &["get"]),
            rule(&[""], &["nodes"], &["get", "list", "watch"]),
            rule(&[""], &["nodes/status"], &["patch"]),
        ],
    );
    vec![
        privileged_namespace(NAMESPACE),
        service_account(ACCOUNT, NAMESPACE),
        cluster_role,
        binding(ACCOUNT, None, ACCOUNT, NAMESPACE),
        config,
        daemon_set(input, &labels),
    ]
}

/// The manifest text (`kubectl apply -f`).
pub fn manifest(input: &FlannelInput<'_>) -> String {
    emit_documents(&documents(input))
}

fn daemon_set(input: &FlannelInput<'_>, labels: &[(&str, &str)]) -> Y {
    let repo = input.image_repository;
    let flannel_image = FLANNEL.reference(repo);
    let copy = |name: &str, image: &str, from: &str, to: &str, mounts: Vec<Y>| {
        ymap! {
            "name" => name,
            "image" => image,
            "command" => vec!["cp"],
            "args" => vec!["-f", from, to],
            "volumeMounts" => Y::Seq(mounts),
        }
    };
    let init_containers = vec![
        copy(
            "install-cni-plugin",
            &FLANNEL_CNI_PLUGIN.reference(repo),
            "/flannel",
            "/opt/cni/bin/flannel",
            vec![mount("cni-plugin", "/opt/cni/bin", false)],
        ),
        copy(
            "install-cni",
            &flannel_image,
            "/etc/kube-flannel/cni-conf.json",
            "/etc/cni/net.d/10-flannel.conflist",
            vec![
                mount("cni", "/etc/cni/net.d", false),
                mount("flannel-cfg", "/etc/kube-flannel/", false),
            ],
        ),
    ];
    let flanneld = ymap! {
        "name" => "kube-flannel",
        "image" => flannel_image.as_str(),
        "command" => vec!["/opt/bin/flanneld"],
        "args" => vec!["--ip-masq", "--kube-subnet-mgr"],
        "resources" => ymap! { "requests" => ymap! { "cpu" => "100m", "memory" => "50Mi" } },
        "securityContext" => ymap! {
            "privileged" => false,
            "capabilities" => ymap! { "add" => vec!["NET_ADMIN", "NET_RAW"] },
        },
        "env" => Y::Seq(vec![
            env_field("POD_NAME", "metadata.name"),
            env_field("POD_NAMESPACE", "metadata.namespace"),
            env("EVENT_QUEUE_DEPTH", "5000"),
        ]),
        "volumeMounts" => Y::Seq(vec![
            mount("run", "/run/flannel", false),
            mount("flannel-cfg", "/etc/kube-flannel/", false),
            mount("xtables-lock", "/run/xtables.lock", false),
        ]),
    };
    let selector = Y::Map(labels.iter().map(|(k, v)| (k.to_string(), Y::from(*v))).collect());
    let linux_only = ymap! {
        "nodeAffinity" => ymap! {
            "requiredDuringSchedulingIgnoredDuringExecution" => ymap! {
                "nodeSelectorTerms" => Y::Seq(vec![ymap! {
                    "matchExpressions" => Y::Seq(vec![ymap! {
                        "key" => "kubernetes.io/os", "operator" => "In", "values" => vec!["linux"],
                    }]),
                }]),
            },
        },
    };
    let pod_spec = ymap! {
        "affinity" => linux_only,
        "hostNetwork" => true,
        "priorityClassName" => "system-node-critical",
        "tolerations" => Y::Seq(vec![ymap! { "operator" => "Exists", "effect" => "NoSchedule" }]),
        "serviceAccountName" => ACCOUNT,
        "initContainers" => Y::Seq(init_containers),
        "containers" => Y::Seq(vec![flanneld]),
        "volumes" => Y::Seq(vec![
            host_path_volume("run", "/run/flannel", None),
            host_path_volume("cni-plugin", "/opt/cni/bin", None),
            host_path_volume("cni", "/etc/cni/net.d", None),
            config_map_volume("flannel-cfg", CONFIG_MAP),
            host_path_volume("xtables-lock", "/run/xtables.lock", Some("FileOrCreate")),
        ]),
    };
    with(
        object("apps/v1", "DaemonSet", "kube-flannel-ds", Some(NAMESPACE), labels),
        vec![(
            "spec",
            ymap! {
                "selector" => ymap! { "matchLabels" => selector.clone() },
                "template" => ymap! {
                    "metadata" => ymap! { "labels" => selector },
                    "spec" => pod_spec,
                },
            },
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::yaml::parse;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c, true).unwrap()).collect()
    }

    #[test]
    fn the_manifest_is_templated_on_network_backend_and_images() {
        let pod = cidrs(&["10.244.0.0/16"]);
        let input = FlannelInput {
            pod_cidrs: &pod,
            backend: Backend::Vxlan,
            image_repository: Some("registry.example:5000/k8s"),
        };
        let text = manifest(&input);
        let docs = parse(&text).unwrap();
        let kinds: Vec<&str> = docs
            .iter()
            .map(|d| d.get("kind").unwrap().as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "DaemonSet"
            ]
        );
        let net: serde_json::Value =
            serde_json::from_str(docs[4].at(&["data", "net-conf.json"]).unwrap().as_str().unwrap()).unwrap();
        assert_eq!(net["Network"], "10.244.0.0/16");
        assert_eq!(net["Backend"]["Type"], "vxlan");
        assert!(
            text.contains("image: registry.example:5000/k8s/flannel-io/flannel:v0.26.7\n"),
            "{text}"
        );
        assert!(
            text.contains("image: registry.example:5000/k8s/flannel-io/flannel-cni-plugin:v1.6.2-flannel1\n")
        );
        let upstream = manifest(&FlannelInput {
            image_repository: None,
            backend: Backend::HostGw,
            ..input
        });
        assert!(upstream.contains("image: ghcr.io/flannel-io/flannel:v0.26.7\n"));
        assert!(
            upstream.contains("\\\"Type\\\": \\\"host-gw\\\"") || upstream.contains("\"Type\": \"host-gw\"")
        );
        if let Some(result) = crate::kube::kubectl::check(&text) {
            result.unwrap();
        }
    }

    #[test]
    fn ipv6_and_dual_stack_networks_are_written_for_flannel() {
        let dual = cidrs(&["10.244.0.0/16", "fd00:10:244::/56"]);
        let conf: serde_json::Value = serde_json::from_str(&net_conf(&FlannelInput {
            pod_cidrs: &dual,
            backend: Backend::Vxlan,
            image_repository: None,
        }))
        .unwrap();
        assert_eq!(
            (conf["Network"].as_str(), conf["IPv6Network"].as_str()),
            (Some("10.244.0.0/16"), Some("fd00:10:244::/56"))
        );
        assert_eq!(conf["EnableIPv6"], true);
        let v6 = cidrs(&["fd00:10:244::/56"]);
        let conf: serde_json::Value = serde_json::from_str(&net_conf(&FlannelInput {
            pod_cidrs: &v6,
            backend: Backend::Vxlan,
            image_repository: None,
        }))
        .unwrap();
        assert_eq!(
            (conf["EnableIPv4"].as_bool(), conf.get("Network")),
            (Some(false), None)
        );
    }

    #[test]
    fn backends_parse_by_flannel_name() {
        for b in [Backend::Vxlan, Backend::HostGw, Backend::Wireguard] {
            assert_eq!(Backend::parse(b.name()).unwrap(), b);
        }
        assert_eq!(
            Backend::parse("udp").unwrap_err().to_string(),
            "cni_backend: \"udp\" is not accepted (accepted vxlan, host-gw, wireguard)"
        );
    }
}
