//! The kube-vip static pod that holds a pool's control-plane VIP.
//!
//! ARP mode with leader election: the control plane holding the lease
//! (`plndr-cp-lock` in kube-system) answers ARP for the VIP on the given
//! interface; when it dies another takes the lease and the address. Service
//! load balancing is left to MetalLB (`svc_enable=false`).
//!
//! The agent writes the manifest to [`MANIFEST_PATH`] before `kubeadm init`
//! and before each control-plane `kubeadm join` (kubeadm's preflight only
//! refuses its own manifests there, not other files).
//!
//! The kubeadm >= 1.29 detail: `admin.conf` is no longer bound to
//! `system:masters`, and its RBAC binding is created by `kubeadm init`
//! *after* the API server answers, which needs the VIP, which needs kube-vip
//! talking to the API. So at init kube-vip must use
//! `/etc/kubernetes/super-admin.conf` ([`Kubeconfig::SuperAdmin`]); on joins
//! (and once init has finished: rewrite the manifest) `admin.conf`
//! ([`Kubeconfig::Admin`]). Inside the container it is always at
//! `/etc/kubernetes/admin.conf`, where kube-vip reads it.

use std::net::IpAddr;

use super::images::KUBE_VIP;
use super::kubeadm::API_SERVER_PORT;
use super::objects::{capabilities, env, env_field, host_path_volume, mount, object, with};
use super::yaml::{Y, emit};
use super::{KubeFieldError, echo};
use rpool_proto::ymap;

/// Where the kubelet reads static pods.
pub const MANIFEST_PATH: &str = "/etc/kubernetes/manifests/kube-vip.yaml";
/// The leader-election lease.
pub const LEASE_NAME: &str = "plndr-cp-lock";
/// Longest Linux interface name (IFNAMSIZ - 1).
const INTERFACE_MAX_CHARS: usize = 15;

/// Which host kubeconfig kube-vip uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kubeconfig {
    /// `/etc/kubernetes/super-admin.conf`: during `kubeadm init` only.
    SuperAdmin,
    /// `/etc/kubernetes/admin.conf`: on joins and after init.
    Admin,
}

impl Kubeconfig {
    /// The host file.
    pub fn host_path(self) -> &'static str {
        match self {
            Kubeconfig::SuperAdmin => "/etc/kubernetes/super-admin.conf",
            Kubeconfig::Admin => "/etc/kubernetes/admin.conf",
        }
    }
}

/// What the static pod is templated on.
#[derive(Debug, Clone, Copy)]
pub struct KubeVipInput<'a> {
    pub vip: IpAddr,
    /// The host interface that carries the VIP (the advertise address's);
    /// `None`: kube-vip takes the interface of the default route.
    pub interface: Option<&'a str>,
    pub kubeconfig: Kubeconfig,
    /// A mirror for the image (see [`super::images`]).
    pub image_repository: Option<&'a str>,
}

/// Checks a Linux interface name.
pub fn check_interface(name: &str) -> Result<(), KubeFieldError> {
    let ok = !name.is_empty()
        && name.len() <= INTERFACE_MAX_CHARS
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
    if ok {
        return Ok(());
    }
    Err(KubeFieldError::new(
        "vip_interface",
        format!(
            "{} is not an interface name (accepted 1..={INTERFACE_MAX_CHARS} printable characters without '/', ':' or spaces)",
            echo(name)
        ),
    ))
}

/// The static pod manifest.
pub fn static_pod(input: &KubeVipInput<'_>) -> Result<String, KubeFieldError> {
    if let Some(interface) = input.interface {
        check_interface(interface)?;
    }
    let prefix_len = if input.vip.is_ipv4() { "32" } else { "128" };
    let port = API_SERVER_PORT.to_string();
    let vip = input.vip.to_string();
    // The VIP's prefix: `vip_subnet` in current kube-vip, `vip_cidr` in
    // older releases (which default it to 32, wrong for IPv6): both set.
    let mut settings: Vec<(&str, &str)> = vec![("vip_arp", "true"), ("port", &port)];
    settings.extend(input.interface.map(|i| ("vip_interface", i)));
    settings.extend([
        ("vip_subnet", prefix_len),
        ("vip_cidr", prefix_len),
        ("dns_mode", "first"),
        ("cp_enable", "true"),
        ("cp_namespace", "kube-system"),
        ("svc_enable", "false"),
        ("vip_leaderelection", "true"),
        ("vip_leasename", LEASE_NAME),
        ("vip_leaseduration", "5"),
        ("vip_renewdeadline", "3"),
        ("vip_retryperiod", "1"),
        ("address", &vip),
    ]);
    let mut envs = vec![env_field("vip_nodename", "spec.nodeName")];
    envs.extend(settings.iter().map(|(k, v)| env(k, v)));
    let container = ymap! {
        "name" => "kube-vip",
        "image" => KUBE_VIP.reference(input.image_repository),
        "imagePullPolicy" => "IfNotPresent",
        "args" => vec!["manager"],
        "env" => Y::Seq(envs),
        "securityContext" => capabilities(&["NET_ADMIN", "NET_RAW"], false),
        "volumeMounts" => Y::Seq(vec![mount("kubeconfig", Kubeconfig::Admin.host_path(), true)]),
    };
    let pod = with(
        object("v1", "Pod", "kube-vip", Some("kube-system"), &[]),
        vec![(
            "spec",
            ymap! {
                "containers" => Y::Seq(vec![container]),
                "hostAliases" => Y::Seq(vec![ymap! { "ip" => "127.0.0.1", "hostnames" => vec!["kubernetes"] }]),
                "hostNetwork" => true,
                "priorityClassName" => "system-node-critical",
                "volumes" => Y::Seq(vec![host_path_volume("kubeconfig", input.kubeconfig.host_path(), Some("File"))]),
            },
        )],
    );
    Ok(emit(&pod))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::yaml::{Node, parse};

    fn input(kubeconfig: Kubeconfig) -> KubeVipInput<'static> {
        KubeVipInput {
            vip: "192.0.2.100".parse().unwrap(),
            interface: Some("eth0"),
            kubeconfig,
            image_repository: None,
        }
    }

    fn env_value<'a>(pod: &'a Node, name: &str) -> Option<&'a str> {
        let env = pod.at(&["spec", "containers"]).unwrap().items()[0]
            .get("env")
            .unwrap()
            .items();
        env.iter()
            .find(|e| e.get("name").and_then(Node::as_str) == Some(name))?
            .get("value")?
            .as_str()
    }

    #[test]
    fn init_uses_super_admin_conf_and_joins_use_admin_conf() {
        let init = parse(&static_pod(&input(Kubeconfig::SuperAdmin)).unwrap()).unwrap();
        let join = parse(&static_pod(&input(Kubeconfig::Admin)).unwrap()).unwrap();
        let host = |docs: &[Node]| {
            docs[0].at(&["spec", "volumes"]).unwrap().items()[0]
                .at(&["hostPath", "path"])
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(host(&init), "/etc/kubernetes/super-admin.conf");
        assert_eq!(host(&join), "/etc/kubernetes/admin.conf");
        let mounted = |docs: &[Node]| {
            let c = &docs[0].at(&["spec", "containers"]).unwrap().items()[0];
            c.get("volumeMounts").unwrap().items()[0]
                .get("mountPath")
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(mounted(&init), "/etc/kubernetes/admin.conf");
        assert_eq!(mounted(&join), "/etc/kubernetes/admin.conf");
    }

    #[test]
    fn the_pod_holds_the_vip_in_arp_mode_with_leader_election() {
        let text = static_pod(&KubeVipInput {
            image_repository: Some("registry.example:5000/k8s"),
            ..input(Kubeconfig::SuperAdmin)
        })
        .unwrap();
        let pod = &parse(&text).unwrap()[0];
        for (name, value) in [
            ("address", "192.0.2.100"),
            ("vip_interface", "eth0"),
            ("vip_arp", "true"),
            ("vip_leaderelection", "true"),
            ("vip_leasename", LEASE_NAME),
            ("cp_enable", "true"),
            ("svc_enable", "false"),
            ("port", "6443"),
            ("vip_cidr", "32"),
            ("vip_subnet", "32"),
        ] {
            assert_eq!(env_value(pod, name), Some(value), "{name}");
        }
        assert_eq!(pod.at(&["spec", "hostNetwork"]), Some(&Node::Bool(true)));
        assert!(
            text.contains("image: registry.example:5000/k8s/kube-vip/kube-vip:v0.8.9\n"),
            "{text}"
        );
        if let Some(result) = crate::kube::kubectl::check(&text) {
            result.unwrap();
        }
        let v6 = static_pod(&KubeVipInput {
            vip: "fd00::100".parse().unwrap(),
            ..input(Kubeconfig::Admin)
        })
        .unwrap();
        let v6 = &parse(&v6).unwrap()[0];
        assert_eq!(
            (env_value(v6, "vip_cidr"), env_value(v6, "vip_subnet")),
            (Some("128"), Some("128"))
        );
    }

    #[test]
    fn without_an_interface_kube_vip_takes_the_default_routes() {
        let text = static_pod(&KubeVipInput {
            interface: None,
            ..input(Kubeconfig::Admin)
        })
        .unwrap();
        let pod = &parse(&text).unwrap()[0];
        assert_eq!(env_value(pod, "vip_interface"), None);
        assert_eq!(env_value(pod, "address"), Some("192.0.2.100"));
    }

    #[test]
    fn bad_interface_names_are_refused() {
        for bad in ["", "eth0:1", "a/b", "has space", "averyveryverylongname"] {
            let err = static_pod(&KubeVipInput {
                interface: Some(bad),
                ..input(Kubeconfig::Admin)
            })
            .unwrap_err();
            assert_eq!(err.field, "vip_interface", "{bad}");
            assert!(
                err.message.contains("(accepted 1..=15 printable characters"),
                "{err}"
            );
        }
    }
}
