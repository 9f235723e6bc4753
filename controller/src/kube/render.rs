//! The kubeadm files a task carries, from what the controller knows of a
//! pool and a host: `kubeadm init --config` for the first control plane
//! ([`init_file`], with freshly generated bootstrap token and certificate
//! key) and `kubeadm join --config` for the others ([`join_file`], with the
//! pool's current join secrets), and the CNI manifest the pool's addons
//! task applies ([`cni_manifest`]). Pure apart from the random secrets.
//!
//! The files hold secrets: callers put them only in the task sent to the
//! host, never in a log, an event or the replicated state.

use std::net::IpAddr;

use ring::rand::{SecureRandom, SystemRandom};

use super::KubeFieldError;
use super::cidr::Cidr;
use super::flannel::{Backend, FlannelInput, manifest};
use super::kube_vip::{KubeVipInput, Kubeconfig, static_pod};
use super::kubeadm::{
    CONTAINERD_SOCKET, ClusterInput, ControlPlaneJoin, InitSecrets, JoinInput, NodeInput, Taint, init_config,
    join_config,
};
use super::versions::parse_supported;

/// What the pool's spec and record say.
#[derive(Debug, Clone, Copy)]
pub struct PoolFacts<'a> {
    /// The pool's name (`clusterName`).
    pub name: &'a str,
    /// `vX.Y.Z`, one of [`super::versions::SUPPORTED_MINORS`].
    pub kubernetes_version: &'a str,
    /// Pod network(s), comma-separated for dual-stack.
    pub pod_cidr: &'a str,
    /// Service network(s), same shape.
    pub service_cidr: &'a str,
    /// `host:port` of the API server (`VIP:6443` with a VIP).
    pub endpoint: &'a str,
    /// The pool's control planes (node name, address where known): every
    /// one is in the API server certificate, so it serves under each name.
    pub control_planes: &'a [(&'a str, Option<IpAddr>)],
    /// kubeadm's `imageRepository` (the fleet's `[kube] image_repository`);
    /// `None`: registry.k8s.io.
    pub image_repository: Option<&'a str>,
}

/// The host a task runs on.
#[derive(Debug, Clone, Copy)]
pub struct HostFacts<'a> {
    /// Its Kubernetes node name.
    pub node_name: &'a str,
    /// The address it advertises; `None` where hosts share addresses
    /// (simulated hardware): kubeadm then picks one.
    pub address: Option<IpAddr>,
    /// The CRI endpoint its agent reports; `None`: containerd's (kubeadm's
    /// default).
    pub cri_socket: Option<&'a str>,
    /// Whether it is (or becomes) a control plane: registered with the
    /// control-plane taint.
    pub control_plane: bool,
}

/// The join secrets a join file carries.
#[derive(Clone, Copy)]
pub struct JoinFacts<'a> {
    pub endpoint: &'a str,
    pub token: &'a str,
    pub ca_cert_hash: &'a str,
    /// Control-plane joins only.
    pub certificate_key: Option<&'a str>,
}

fn node(host: &HostFacts) -> NodeInput {
    NodeInput {
        name: host.node_name.to_owned(),
        cri_socket: host.cri_socket.unwrap_or(CONTAINERD_SOCKET).to_owned(),
        taints: if host.control_plane {
            vec![Taint::control_plane()]
        } else {
            Vec::new()
        },
        advertise_address: host.address,
    }
}

fn split(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `kubeadm init --config` for `host`, the pool's first control plane. The
/// API server certificate names the endpoint's host (the VIP, if any), and
/// this node's and every other control plane's name and address (kubeadm
/// adds the endpoint and this node itself too; listing them keeps the file
/// self-explaining).
pub fn init_file(pool: &PoolFacts, host: &HostFacts) -> Result<String, KubeFieldError> {
    let version = parse_supported("kubernetes_version", pool.kubernetes_version)?;
    let endpoint_host = endpoint_host(pool.endpoint);
    let mut cert_sans = vec![endpoint_host.to_owned()];
    let this = [(host.node_name, host.address)];
    for (name, address) in this.iter().chain(pool.control_planes) {
        for san in address
            .map(|a| a.to_string())
            .into_iter()
            .chain([(*name).to_owned()])
        {
            if !cert_sans.contains(&san) {
                cert_sans.push(san);
            }
        }
    }
    let cluster = ClusterInput {
        cluster_name: pool.name.to_owned(),
        kubernetes_version: version,
        endpoint: pool.endpoint.to_owned(),
        pod_subnets: split(pool.pod_cidr),
        service_subnets: split(pool.service_cidr),
        image_repository: pool.image_repository.map(str::to_owned),
        cert_sans,
    };
    let secrets = InitSecrets {
        token: random_token(),
        certificate_key: random_hex(32),
    };
    init_config(&cluster, &node(host), &secrets)
}

/// `kubeadm join --config` for `host`.
pub fn join_file(join: &JoinFacts, host: &HostFacts) -> Result<String, KubeFieldError> {
    let input = JoinInput {
        endpoint: join.endpoint.to_owned(),
        token: join.token.to_owned(),
        ca_cert_hashes: vec![join.ca_cert_hash.to_owned()],
        control_plane: join.certificate_key.map(|key| ControlPlaneJoin {
            certificate_key: key.to_owned(),
        }),
    };
    join_config(&input, &node(host))
}

/// The kube-vip static pod holding `vip`, using the host's `kubeconfig`
/// (super-admin.conf during init, admin.conf otherwise: see
/// [`super::kube_vip`]). kube-vip takes the default route's interface.
pub fn kube_vip_manifest(vip: IpAddr, kubeconfig: Kubeconfig) -> Result<String, KubeFieldError> {
    kube_vip_manifest_via(vip, kubeconfig, None)
}

/// [`kube_vip_manifest`] with its image through `image_repository`.
pub fn kube_vip_manifest_via(
    vip: IpAddr,
    kubeconfig: Kubeconfig,
    image_repository: Option<&str>,
) -> Result<String, KubeFieldError> {
    static_pod(&KubeVipInput {
        vip,
        interface: None,
        kubeconfig,
        image_repository,
    })
}

/// MetalLB for a pool with an LB range (`FIRST-LAST` or a network):
/// `("metallb", its native install)`, then `("metallb-pool", the
/// IPAddressPool + L2Advertisement of the range)`, applied in that order
/// (the pool needs MetalLB's CRDs).
pub fn metallb_manifests(lb_range: &str) -> Result<Vec<(&'static str, String)>, KubeFieldError> {
    metallb_manifests_via(lb_range, None)
}

/// [`metallb_manifests`] with the images through `image_repository`.
pub fn metallb_manifests_via(
    lb_range: &str,
    image_repository: Option<&str>,
) -> Result<Vec<(&'static str, String)>, KubeFieldError> {
    let range = super::cidr::IpRange::parse(lb_range.trim()).map_err(|why| {
        KubeFieldError::new(
            "lb_range",
            format!(
                "{} {why} (accepted FIRST-LAST or ADDRESS/PREFIX)",
                super::echo(lb_range)
            ),
        )
    })?;
    Ok(vec![
        ("metallb", super::metallb::install_manifest(image_repository)),
        ("metallb-pool", super::metallb::address_pool_manifest(&range)),
    ])
}

/// The CNI every pool gets: our flannel deployment (VXLAN), on the
/// pool's pod network(s) (`pod_cidr`, comma-separated for dual-stack).
pub fn cni_manifest(pod_cidr: &str) -> Result<String, KubeFieldError> {
    cni_manifest_via(pod_cidr, None)
}

/// [`cni_manifest`] with the images through `image_repository`.
pub fn cni_manifest_via(pod_cidr: &str, image_repository: Option<&str>) -> Result<String, KubeFieldError> {
    let pod_cidrs = split(pod_cidr)
        .iter()
        .map(|c| Cidr::parse(c, false).map_err(|e| KubeFieldError::new("pod_network_cidr", e)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(manifest(&FlannelInput {
        pod_cidrs: &pod_cidrs,
        backend: Backend::Vxlan,
        image_repository,
    }))
}

/// The host part of `host:port` (`[v6]:port` unbracketed).
fn endpoint_host(endpoint: &str) -> &str {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}` from the system's CSPRNG.
fn random_token() -> String {
    let mut out = String::with_capacity(23);
    let rng = SystemRandom::new();
    while out.len() < 23 {
        if out.len() == 6 {
            out.push('.');
            continue;
        }
        let mut byte = [0u8];
        rng.fill(&mut byte).expect("system random source");
        // Rejection sampling keeps every character equally likely.
        if usize::from(byte[0]) < 252 {
            out.push(char::from(
                TOKEN_ALPHABET[usize::from(byte[0]) % TOKEN_ALPHABET.len()],
            ));
        }
    }
    out
}

/// `bytes` random bytes in lowercase hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf).expect("system random source");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::kubeadm_check::{KubeadmCommand, check_kubeadm_config_for, is_bootstrap_token};
    use crate::kube::yaml::parse;

    fn pool() -> PoolFacts<'static> {
        PoolFacts {
            name: "web",
            kubernetes_version: "v1.32.0",
            pod_cidr: "10.244.0.0/16",
            service_cidr: "10.96.0.0/12",
            endpoint: "h1:6443",
            control_planes: &[],
            image_repository: None,
        }
    }

    fn text_at(doc: &crate::kube::yaml::Node, path: &[&str]) -> String {
        doc.at(path)
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn init_files_pass_kubeadms_check_with_fresh_secrets_and_the_pools_networks() {
        let host = HostFacts {
            node_name: "web-h1",
            address: None,
            cri_socket: None,
            control_plane: true,
        };
        let a = init_file(&pool(), &host).unwrap();
        let b = init_file(&pool(), &host).unwrap();
        check_kubeadm_config_for(KubeadmCommand::Init, &a).unwrap();
        let docs = parse(&a).unwrap();
        let token = docs[0].get("bootstrapTokens").unwrap().items()[0]
            .get("token")
            .unwrap();
        assert!(is_bootstrap_token(token.as_str().unwrap()));
        assert_eq!(text_at(&docs[0], &["certificateKey"]).len(), 64);
        assert_ne!(a, b, "every render draws new secrets");
        assert!(
            docs[0].get("localAPIEndpoint").is_none(),
            "no address: kubeadm picks"
        );
        assert_eq!(text_at(&docs[1], &["controlPlaneEndpoint"]), "h1:6443");
        assert_eq!(text_at(&docs[1], &["networking", "podSubnet"]), "10.244.0.0/16");
        assert_eq!(text_at(&docs[1], &["clusterName"]), "web");
        let with_ip = HostFacts {
            address: Some("192.0.2.11".parse().unwrap()),
            ..host
        };
        let text = init_file(&pool(), &with_ip).unwrap();
        check_kubeadm_config_for(KubeadmCommand::Init, &text).unwrap();
        let docs = parse(&text).unwrap();
        assert_eq!(
            text_at(&docs[0], &["localAPIEndpoint", "advertiseAddress"]),
            "192.0.2.11"
        );
        assert_eq!(
            text_at(&docs[0], &["nodeRegistration", "criSocket"]),
            "unix:///run/containerd/containerd.sock",
            "none reported: containerd's"
        );
        let crio = HostFacts {
            cri_socket: Some("unix:///var/run/crio/crio.sock"),
            ..with_ip
        };
        let docs = parse(&init_file(&pool(), &crio).unwrap()).unwrap();
        assert_eq!(
            text_at(&docs[0], &["nodeRegistration", "criSocket"]),
            "unix:///var/run/crio/crio.sock"
        );
    }

    #[test]
    fn with_a_vip_the_certificate_names_the_vip_and_every_control_plane() {
        let cps = [("web-h2", Some("192.0.2.12".parse().unwrap())), ("web-h3", None)];
        let facts = PoolFacts {
            endpoint: "198.51.100.1:6443",
            control_planes: &cps,
            image_repository: None,
            ..pool()
        };
        let host = HostFacts {
            node_name: "web-h1",
            address: Some("192.0.2.11".parse().unwrap()),
            cri_socket: None,
            control_plane: true,
        };
        let text = init_file(&facts, &host).unwrap();
        check_kubeadm_config_for(KubeadmCommand::Init, &text).unwrap();
        let docs = parse(&text).unwrap();
        assert_eq!(text_at(&docs[1], &["controlPlaneEndpoint"]), "198.51.100.1:6443");
        let sans: Vec<String> = docs[1]
            .at(&["apiServer", "certSANs"])
            .unwrap()
            .items()
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            sans,
            [
                "198.51.100.1",
                "192.0.2.11",
                "web-h1",
                "192.0.2.12",
                "web-h2",
                "web-h3"
            ]
        );
    }

    #[test]
    fn the_kube_vip_manifests_hold_the_vip_and_pass_kubectl() {
        let vip = "198.51.100.1".parse().unwrap();
        let init = kube_vip_manifest(vip, Kubeconfig::SuperAdmin).unwrap();
        let after = kube_vip_manifest(vip, Kubeconfig::Admin).unwrap();
        assert!(init.contains("path: /etc/kubernetes/super-admin.conf"), "{init}");
        assert!(after.contains("path: /etc/kubernetes/admin.conf") && !after.contains("super-admin"));
        use crate::kube::kube_vip_check::{ADMIN_CONF, SUPER_ADMIN_CONF, check_kube_vip_manifest};
        assert_eq!(
            check_kube_vip_manifest(&init, vip).unwrap().kubeconfig,
            SUPER_ADMIN_CONF
        );
        assert_eq!(
            check_kube_vip_manifest(&after, vip).unwrap().kubeconfig,
            ADMIN_CONF
        );
        if let Some(result) = crate::kube::kubectl::check(&after) {
            result.unwrap();
        }
    }

    #[test]
    fn unsupported_versions_and_bad_endpoints_name_the_field() {
        let host = HostFacts {
            node_name: "web-h1",
            address: None,
            cri_socket: None,
            control_plane: true,
        };
        let old = PoolFacts {
            kubernetes_version: "v1.29.3",
            ..pool()
        };
        assert_eq!(init_file(&old, &host).unwrap_err().field, "kubernetes_version");
        let bad = PoolFacts {
            endpoint: "h1",
            ..pool()
        };
        assert_eq!(
            init_file(&bad, &host).unwrap_err().field,
            "control_plane_endpoint"
        );
    }

    #[test]
    fn join_files_carry_the_secrets_and_the_role() {
        let key = "ab".repeat(32);
        let hash = format!("sha256:{}", "cd".repeat(32));
        let facts = JoinFacts {
            endpoint: "h1:6443",
            token: "abcdef.0123456789abcdef",
            ca_cert_hash: &hash,
            certificate_key: Some(&key),
        };
        let cp = HostFacts {
            node_name: "web-h2",
            address: None,
            cri_socket: None,
            control_plane: true,
        };
        let text = join_file(&facts, &cp).unwrap();
        check_kubeadm_config_for(KubeadmCommand::Join, &text).unwrap();
        let doc = &parse(&text).unwrap()[0];
        assert_eq!(text_at(doc, &["controlPlane", "certificateKey"]), key);
        assert_eq!(
            text_at(doc, &["discovery", "bootstrapToken", "apiServerEndpoint"]),
            "h1:6443"
        );
        let worker = JoinFacts {
            certificate_key: None,
            ..facts
        };
        let text = join_file(
            &worker,
            &HostFacts {
                control_plane: false,
                ..cp
            },
        )
        .unwrap();
        check_kubeadm_config_for(KubeadmCommand::Join, &text).unwrap();
        assert!(!text.contains("controlPlane") && !text.contains(&key));
        assert!(text.contains("taints: []"), "{text}");
    }

    #[test]
    fn the_pools_cni_is_our_flannel_on_its_pod_network_and_passes_the_cni_check() {
        let text = cni_manifest("10.250.0.0/16").unwrap();
        crate::kube::cni_check::check_cni_manifest(&text).unwrap();
        assert!(text.contains("10.250.0.0/16"), "{text}");
        assert_eq!(
            cni_manifest("10.250.0.0/99").unwrap_err().field,
            "pod_network_cidr"
        );
    }

    #[test]
    fn a_pools_lb_range_becomes_metallb_and_its_address_pool() {
        let manifests = metallb_manifests("198.51.100.32-198.51.100.47").unwrap();
        let names: Vec<&str> = manifests.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["metallb", "metallb-pool"]);
        assert!(
            manifests[1].1.contains("198.51.100.32-198.51.100.47"),
            "{}",
            manifests[1].1
        );
        assert!(
            manifests[1].1.contains("kind: L2Advertisement"),
            "{}",
            manifests[1].1
        );
        assert_eq!(metallb_manifests("nope").unwrap_err().field, "lb_range");
    }

    #[test]
    fn random_tokens_use_the_whole_alphabet() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let t = random_token();
            assert!(is_bootstrap_token(&t), "{t}");
            seen.extend(t.bytes().filter(|b| *b != b'.'));
        }
        assert_eq!(seen.len(), TOKEN_ALPHABET.len());
    }
}
