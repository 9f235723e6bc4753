//! kubeadm configuration files (kubeadm.k8s.io/v1beta4) for `kubeadm init
//! --config` and `kubeadm join --config`.
//!
//! Input structs in, YAML text out. The inputs are checked first
//! ([`ClusterInput::check`], [`NodeInput::check`], [`JoinInput::check`]),
//! each error naming the field; the text then passes
//! [`super::kubeadm_check::check_kubeadm_config`] (tests prove it).
//!
//! v1beta4 shapes used here: `kubeletExtraArgs` is a list of
//! `{name, value}` (not a map); the kubelet's `node-ip` is set from the
//! advertise address on every node, so a joined worker reports that address
//! too; `taints` is always written (an empty list means none, an absent
//! one means kubeadm's default).

use std::net::IpAddr;

use super::kubeadm_check::{
    IMAGE_REPOSITORY_MAX_CHARS, NAME_MAX_CHARS, is_bootstrap_token, is_ca_hash, is_cri_socket,
    is_dns_subdomain, is_host_port, is_image_repository, is_label_key,
};
use super::versions::KubeVersion;
use super::yaml::{Y, emit_documents};
use super::{KubeFieldError, echo};
use rpool_proto::ymap;

/// The API version written.
pub const API_VERSION: &str = "kubeadm.k8s.io/v1beta4";
/// The API server's port.
pub const API_SERVER_PORT: u16 = 6443;
/// The containerd socket, the usual CRI runtime.
pub const CONTAINERD_SOCKET: &str = "unix:///run/containerd/containerd.sock";
/// How long the init token stays valid.
pub const TOKEN_TTL: &str = "24h0m0s";

/// Cluster-wide settings (ClusterConfiguration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInput {
    /// `clusterName`: the pool's name.
    pub cluster_name: String,
    pub kubernetes_version: KubeVersion,
    /// `controlPlaneEndpoint`, `host:port` (see [`endpoint`]): the VIP, else
    /// the first control plane's address, or its name where hosts share
    /// addresses (simulated hardware).
    pub endpoint: String,
    /// Pod networks (one, or two with dual-stack), primary family first.
    pub pod_subnets: Vec<String>,
    /// Service networks, same shape.
    pub service_subnets: Vec<String>,
    /// A mirror for every image (air-gapped sites); `None`: registry.k8s.io.
    pub image_repository: Option<String>,
    /// Extra names and addresses in the API server certificate: the VIP and
    /// every control plane's address and name.
    pub cert_sans: Vec<String>,
}

/// A node's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInput {
    /// The Node object's name.
    pub name: String,
    /// `unix:///...`: from the agent's config, or detected.
    pub cri_socket: String,
    /// Taints to register with (empty: none).
    pub taints: Vec<Taint>,
    /// The address the node (and on a control plane, its API server)
    /// advertises; `None`: kubeadm and the kubelet pick one (the address of
    /// the default route's interface).
    pub advertise_address: Option<IpAddr>,
}

/// A taint's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: TaintEffect,
}

impl Taint {
    /// kubeadm's control-plane taint.
    pub fn control_plane() -> Taint {
        Taint {
            key: "node-role.kubernetes.io/control-plane".into(),
            value: None,
            effect: TaintEffect::NoSchedule,
        }
    }
}

/// How a node joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinInput {
    /// The cluster's endpoint, `host:port` (the VIP when there is one).
    pub endpoint: String,
    /// Bootstrap token `abcdef.0123456789abcdef`.
    pub token: String,
    /// `sha256:<64 hex>` of the cluster CA's public key.
    pub ca_cert_hashes: Vec<String>,
    /// Present when the node joins as a control plane.
    pub control_plane: Option<ControlPlaneJoin>,
}

/// A control-plane join's extra settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneJoin {
    /// Decrypts the certificates uploaded at init: 64 hex digits.
    pub certificate_key: String,
}

/// What `kubeadm init` needs besides the cluster and node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitSecrets {
    /// The bootstrap token later joins use.
    pub token: String,
    /// The key the control-plane certificates are uploaded with.
    pub certificate_key: String,
}

/// `host:port` of an endpoint address (IPv6 in brackets).
pub fn endpoint(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => format!("{v4}:{API_SERVER_PORT}"),
        IpAddr::V6(v6) => format!("[{v6}]:{API_SERVER_PORT}"),
    }
}

/// The API server certificate's extra names: the VIP (if any), then every
/// control plane's address and name, without repeats.
pub fn cert_sans(vip: Option<IpAddr>, control_planes: &[(&str, IpAddr)]) -> Vec<String> {
    let mut sans: Vec<String> = vip.iter().map(IpAddr::to_string).collect();
    for (name, address) in control_planes {
        for san in [address.to_string(), (*name).to_owned()] {
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
    }
    sans
}

impl ClusterInput {
    /// Checks the text fields.
    pub fn check(&self) -> Result<(), KubeFieldError> {
        check_name("cluster_name", &self.cluster_name)?;
        check_endpoint(&self.endpoint)?;
        if let Some(repo) = &self.image_repository {
            check_image_repository("image_repository", repo)?;
        }
        for san in &self.cert_sans {
            if san.parse::<IpAddr>().is_err() && !is_dns_subdomain(san) {
                return Err(KubeFieldError::new(
                    "cert_sans",
                    format!(
                        "{} is neither an IP address nor a DNS name (accepted lowercase RFC 1123 names)",
                        echo(san)
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl NodeInput {
    /// Checks the text fields.
    pub fn check(&self) -> Result<(), KubeFieldError> {
        check_name("node_name", &self.name)?;
        if !is_cri_socket(&self.cri_socket) {
            return Err(KubeFieldError::new(
                "cri_socket",
                format!(
                    "{} is not accepted (accepted unix:///absolute/path)",
                    echo(&self.cri_socket)
                ),
            ));
        }
        for taint in &self.taints {
            if !is_label_key(&taint.key) {
                return Err(KubeFieldError::new(
                    "taints",
                    format!("key {} is not a label key", echo(&taint.key)),
                ));
            }
        }
        Ok(())
    }
}

impl JoinInput {
    /// Checks the secrets' formats (never echoing them).
    pub fn check(&self) -> Result<(), KubeFieldError> {
        check_endpoint(&self.endpoint)?;
        check_token(&self.token)?;
        if self.ca_cert_hashes.is_empty() || !self.ca_cert_hashes.iter().all(|h| is_ca_hash(h)) {
            return Err(KubeFieldError::new(
                "ca_cert_hashes",
                "accepted one or more sha256:<64 hex digits>",
            ));
        }
        if let Some(cp) = &self.control_plane {
            check_certificate_key(&cp.certificate_key)?;
        }
        Ok(())
    }
}

/// The file for `kubeadm init --config` on the first control plane.
pub fn init_config(
    cluster: &ClusterInput,
    node: &NodeInput,
    secrets: &InitSecrets,
) -> Result<String, KubeFieldError> {
    cluster.check()?;
    node.check()?;
    check_token(&secrets.token)?;
    check_certificate_key(&secrets.certificate_key)?;
    let mut init = ymap! {
        "apiVersion" => API_VERSION,
        "kind" => "InitConfiguration",
        "bootstrapTokens" => Y::Seq(vec![ymap! {
            "token" => secrets.token.as_str(),
            "ttl" => TOKEN_TTL,
            "usages" => vec!["signing", "authentication"],
            "groups" => vec!["system:bootstrappers:kubeadm:default-node-token"],
        }]),
        "certificateKey" => secrets.certificate_key.as_str(),
        "nodeRegistration" => node_registration(node),
    };
    if let Some(address) = node.advertise_address {
        init.push("localAPIEndpoint", local_api_endpoint(address));
    }
    let mut networking = ymap! {
        "podSubnet" => cluster.pod_subnets.join(","),
        "serviceSubnet" => cluster.service_subnets.join(","),
    };
    networking.push("dnsDomain", "cluster.local");
    let mut config = ymap! {
        "apiVersion" => API_VERSION,
        "kind" => "ClusterConfiguration",
        "clusterName" => cluster.cluster_name.as_str(),
        "kubernetesVersion" => cluster.kubernetes_version.to_string(),
        "controlPlaneEndpoint" => cluster.endpoint.as_str(),
        "networking" => networking,
        "apiServer" => ymap! { "certSANs" => cluster.cert_sans.clone() },
    };
    if let Some(repo) = &cluster.image_repository {
        config.push("imageRepository", repo.as_str());
    }
    Ok(emit_documents(&[init, config]))
}

/// The file for `kubeadm join --config` (a worker, or a control plane when
/// `join.control_plane` is set).
pub fn join_config(join: &JoinInput, node: &NodeInput) -> Result<String, KubeFieldError> {
    join.check()?;
    node.check()?;
    let mut doc = ymap! {
        "apiVersion" => API_VERSION,
        "kind" => "JoinConfiguration",
        "nodeRegistration" => node_registration(node),
        "discovery" => ymap! {
            "bootstrapToken" => ymap! {
                "apiServerEndpoint" => join.endpoint.as_str(),
                "token" => join.token.as_str(),
                "caCertHashes" => join.ca_cert_hashes.clone(),
            },
        },
    };
    if let Some(cp) = &join.control_plane {
        let mut control_plane = ymap! { "certificateKey" => cp.certificate_key.as_str() };
        if let Some(address) = node.advertise_address {
            control_plane.push("localAPIEndpoint", local_api_endpoint(address));
        }
        doc.push("controlPlane", control_plane);
    }
    Ok(emit_documents(&[doc]))
}

fn node_registration(node: &NodeInput) -> Y {
    let taints: Vec<Y> = node
        .taints
        .iter()
        .map(|t| {
            let mut taint = ymap! { "key" => t.key.as_str() };
            if let Some(value) = &t.value {
                taint.push("value", value.as_str());
            }
            taint.push("effect", format!("{:?}", t.effect));
            taint
        })
        .collect();
    let mut registration = ymap! {
        "name" => node.name.as_str(),
        "criSocket" => node.cri_socket.as_str(),
        "taints" => Y::Seq(taints),
    };
    if let Some(address) = node.advertise_address {
        registration.push(
            "kubeletExtraArgs",
            Y::Seq(vec![
                ymap! { "name" => "node-ip", "value" => address.to_string() },
            ]),
        );
    }
    registration
}

fn local_api_endpoint(address: IpAddr) -> Y {
    ymap! { "advertiseAddress" => address.to_string(), "bindPort" => API_SERVER_PORT }
}

fn check_name(field: &str, name: &str) -> Result<(), KubeFieldError> {
    if is_dns_subdomain(name) {
        return Ok(());
    }
    Err(KubeFieldError::new(
        field,
        format!(
            "{} is not accepted (accepted 1..={NAME_MAX_CHARS} characters a-z, 0-9, '-' and '.', starting and ending alphanumeric)",
            echo(name)
        ),
    ))
}

fn check_image_repository(field: &str, repo: &str) -> Result<(), KubeFieldError> {
    if is_image_repository(repo) {
        return Ok(());
    }
    Err(KubeFieldError::new(
        field,
        format!(
            "{} is not accepted (accepted a registry host[:port] and optional path, e.g. registry.example:5000/k8s, at most {IMAGE_REPOSITORY_MAX_CHARS} characters)",
            echo(repo)
        ),
    ))
}

fn check_endpoint(endpoint: &str) -> Result<(), KubeFieldError> {
    if is_host_port(endpoint, true) {
        return Ok(());
    }
    Err(KubeFieldError::new(
        "control_plane_endpoint",
        format!(
            "{} is not accepted (accepted HOST:PORT, HOST an IP address ([IPv6]) or a lowercase DNS name)",
            echo(endpoint)
        ),
    ))
}

fn check_token(token: &str) -> Result<(), KubeFieldError> {
    if is_bootstrap_token(token) {
        return Ok(());
    }
    Err(KubeFieldError::new(
        "token",
        "accepted [a-z0-9]{6}.[a-z0-9]{16} (value not shown)",
    ))
}

fn check_certificate_key(key: &str) -> Result<(), KubeFieldError> {
    if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    Err(KubeFieldError::new(
        "certificate_key",
        "accepted 64 hex digits (value not shown)",
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kube::kubeadm_check::check_kubeadm_config;
    use crate::kube::versions;
    use crate::kube::yaml::{Node, parse};

    pub(crate) const TOKEN: &str = "abcdef.0123456789abcdef";
    pub(crate) const KEY: &str = "6f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

    pub(crate) fn cluster() -> ClusterInput {
        ClusterInput {
            cluster_name: "prod-a".into(),
            kubernetes_version: versions::parse_supported("v", "v1.32.4").unwrap(),
            endpoint: endpoint("192.0.2.100".parse().unwrap()),
            pod_subnets: vec!["10.244.0.0/16".into()],
            service_subnets: vec!["10.96.0.0/12".into()],
            image_repository: Some("registry.example:5000/k8s".into()),
            cert_sans: vec![
                "192.0.2.100".into(),
                "192.0.2.11".into(),
                "cp-1".into(),
                "cp-1.example".into(),
            ],
        }
    }

    pub(crate) fn node(name: &str, ip: &str) -> NodeInput {
        NodeInput {
            name: name.into(),
            cri_socket: CONTAINERD_SOCKET.into(),
            taints: vec![Taint::control_plane()],
            advertise_address: Some(ip.parse().unwrap()),
        }
    }

    fn secrets() -> InitSecrets {
        InitSecrets {
            token: TOKEN.into(),
            certificate_key: KEY.into(),
        }
    }

    pub(crate) fn join(control_plane: bool) -> JoinInput {
        JoinInput {
            endpoint: endpoint("192.0.2.100".parse().unwrap()),
            token: TOKEN.into(),
            ca_cert_hashes: vec![format!("sha256:{}", "ab".repeat(32))],
            control_plane: control_plane.then(|| ControlPlaneJoin {
                certificate_key: KEY.into(),
            }),
        }
    }

    #[test]
    fn init_config_carries_every_field_kubeadm_needs_and_passes_the_check() {
        let text = init_config(&cluster(), &node("cp-1", "192.0.2.11"), &secrets()).unwrap();
        check_kubeadm_config(&text).unwrap();
        let docs = parse(&text).unwrap();
        let (init, config) = (&docs[0], &docs[1]);
        let s = |n: &Node, p: &[&str]| n.at(p).and_then(|v| v.as_str()).map(str::to_owned);
        assert_eq!(s(config, &["controlPlaneEndpoint"]).unwrap(), "192.0.2.100:6443");
        assert_eq!(s(config, &["kubernetesVersion"]).unwrap(), "v1.32.4");
        assert_eq!(s(config, &["networking", "podSubnet"]).unwrap(), "10.244.0.0/16");
        assert_eq!(
            s(config, &["networking", "serviceSubnet"]).unwrap(),
            "10.96.0.0/12"
        );
        assert_eq!(
            s(config, &["imageRepository"]).unwrap(),
            "registry.example:5000/k8s"
        );
        assert_eq!(config.at(&["apiServer", "certSANs"]).unwrap().items().len(), 4);
        assert_eq!(s(init, &["nodeRegistration", "name"]).unwrap(), "cp-1");
        assert_eq!(
            s(init, &["nodeRegistration", "criSocket"]).unwrap(),
            CONTAINERD_SOCKET
        );
        assert_eq!(
            s(
                &init.at(&["nodeRegistration", "taints"]).unwrap().items()[0],
                &["key"]
            )
            .unwrap(),
            "node-role.kubernetes.io/control-plane"
        );
        let kubelet_arg = &init
            .at(&["nodeRegistration", "kubeletExtraArgs"])
            .unwrap()
            .items()[0];
        assert_eq!(
            (
                s(kubelet_arg, &["name"]).unwrap(),
                s(kubelet_arg, &["value"]).unwrap()
            ),
            ("node-ip".into(), "192.0.2.11".into())
        );
        assert_eq!(
            s(init, &["localAPIEndpoint", "advertiseAddress"]).unwrap(),
            "192.0.2.11"
        );
        assert_eq!(init.at(&["localAPIEndpoint", "bindPort"]), Some(&Node::Int(6443)));
        assert!(text.contains("kind: InitConfiguration\n") && text.contains("\n---\n"));
    }

    #[test]
    fn without_a_mirror_no_image_repository_is_written_and_ipv6_endpoints_are_bracketed() {
        let mut c = cluster();
        c.image_repository = None;
        c.endpoint = endpoint("fd00::100".parse().unwrap());
        c.pod_subnets = vec!["fd00:10:244::/56".into()];
        c.service_subnets = vec!["fd00:10:96::/112".into()];
        let mut n = node("cp-1", "fd00::11");
        n.taints.clear();
        let text = init_config(&c, &n, &secrets()).unwrap();
        check_kubeadm_config(&text).unwrap();
        assert!(!text.contains("imageRepository"));
        assert!(
            text.contains("controlPlaneEndpoint: \"[fd00::100]:6443\""),
            "{text}"
        );
        assert!(text.contains("taints: []\n"), "{text}");
    }

    #[test]
    fn worker_and_control_plane_joins_pass_the_check() {
        let mut worker = node("w-1", "192.0.2.21");
        worker.taints.clear();
        let text = join_config(&join(false), &worker).unwrap();
        check_kubeadm_config(&text).unwrap();
        assert!(!text.contains("controlPlane:"));
        assert!(text.contains("apiServerEndpoint: \"192.0.2.100:6443\""), "{text}");
        assert!(text.contains("value: \"192.0.2.21\""), "{text}");
        let text = join_config(&join(true), &node("cp-2", "192.0.2.12")).unwrap();
        check_kubeadm_config(&text).unwrap();
        let doc = &parse(&text).unwrap()[0];
        assert_eq!(
            doc.at(&["controlPlane", "localAPIEndpoint", "advertiseAddress"])
                .and_then(|n| n.as_str()),
            Some("192.0.2.12")
        );
        assert_eq!(
            doc.at(&["controlPlane", "certificateKey"])
                .and_then(|n| n.as_str()),
            Some(KEY)
        );
    }

    #[test]
    fn cert_sans_hold_the_vip_and_every_control_plane_once() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let sans = cert_sans(
            Some(ip("192.0.2.100")),
            &[
                ("cp-1", ip("192.0.2.11")),
                ("cp-2", ip("192.0.2.12")),
                ("cp-1", ip("192.0.2.11")),
            ],
        );
        assert_eq!(sans, ["192.0.2.100", "192.0.2.11", "cp-1", "192.0.2.12", "cp-2"]);
        assert_eq!(cert_sans(None, &[("cp-1", ip("fd00::11"))]), ["fd00::11", "cp-1"]);
    }

    /// Whatever the controller's network checks accept, kubeadm's accept
    /// too (random networks; the seed is printed, RPOOL_SEED replays one).
    #[test]
    fn networks_the_controller_accepts_pass_kubeadms_check() {
        let fresh = std::env::var("RPOOL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        println!("fresh seed {fresh} (replay with RPOOL_SEED={fresh})");
        for seed in [1, 42, fresh] {
            controller_networks_pass_kubeadm(seed);
        }
    }

    fn controller_networks_pass_kubeadm(seed: u64) {
        use crate::kube::network::{Fleet, PoolNetworkInput, check_pool_network};
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut accepted = 0;
        for _ in 0..2_000 {
            let v6 = rng.bool();
            let (bits, base) = if v6 {
                (128u32, "fd00:10::")
            } else {
                (32, "10.0.0.0")
            };
            let pod = format!("{base}/{}", rng.u32(bits.saturating_sub(90).max(4)..=bits));
            let service = format!(
                "{}/{}",
                if v6 { "fd00:20::" } else { "172.16.0.0" },
                rng.u32(bits.saturating_sub(30)..=bits)
            );
            let input = PoolNetworkInput {
                pod_cidr: &pod,
                service_cidr: &service,
                max_nodes: rng.u32(1..=300),
                ..Default::default()
            };
            let Ok(net) = check_pool_network(&input, Fleet::default()) else {
                continue;
            };
            accepted += 1;
            let mut c = cluster();
            c.pod_subnets = net.pod.iter().map(ToString::to_string).collect();
            c.service_subnets = net.service.iter().map(ToString::to_string).collect();
            let text = init_config(&c, &node("cp-1", "192.0.2.11"), &secrets()).unwrap();
            if let Err(e) = check_kubeadm_config(&text) {
                panic!("seed {seed}: {pod} / {service} accepted by the controller, refused by kubeadm: {e}");
            }
        }
        assert!(
            accepted > 50,
            "seed {seed}: only {accepted} accepted, the generator is off"
        );
    }

    #[test]
    fn bad_inputs_name_the_field_and_never_echo_secrets() {
        let mut n = node("CP_1", "192.0.2.11");
        let err = init_config(&cluster(), &n, &secrets()).unwrap_err();
        assert_eq!(err.field, "node_name");
        n.name = "cp-1".into();
        n.cri_socket = "/run/containerd/containerd.sock".into();
        assert_eq!(
            init_config(&cluster(), &n, &secrets()).unwrap_err().message,
            "\"/run/containerd/containerd.sock\" is not accepted (accepted unix:///absolute/path)"
        );
        let mut c = cluster();
        c.image_repository = Some("https://registry.example".into());
        assert_eq!(
            init_config(&c, &node("cp-1", "192.0.2.11"), &secrets())
                .unwrap_err()
                .field,
            "image_repository"
        );
        c.image_repository = None;
        c.cert_sans.push("Bad Name".into());
        assert_eq!(
            init_config(&c, &node("cp-1", "192.0.2.11"), &secrets())
                .unwrap_err()
                .field,
            "cert_sans"
        );
        let mut j = join(true);
        j.token = "SECRET.tooshort".into();
        let err = join_config(&j, &node("cp-2", "192.0.2.12")).unwrap_err();
        assert_eq!(err.field, "token");
        assert!(!err.to_string().contains("SECRET"));
        let mut j = join(true);
        j.control_plane = Some(ControlPlaneJoin {
            certificate_key: "xyz-secret".into(),
        });
        let err = join_config(&j, &node("cp-2", "192.0.2.12")).unwrap_err();
        assert_eq!(err.field, "certificate_key");
        assert!(!err.to_string().contains("xyz-secret"));
        let mut j = join(false);
        j.ca_cert_hashes = vec!["md5:abc".into()];
        assert_eq!(
            join_config(&j, &node("w-1", "192.0.2.21")).unwrap_err().field,
            "ca_cert_hashes"
        );
    }
}
