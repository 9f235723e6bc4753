//! What a kube-vip static pod needs to hold a control-plane VIP:
//! `check_kube_vip_manifest`. kubesim answers at a pool's VIP only while a
//! control plane whose manifest passes this runs (and refuses `kubeadm
//! init` with one that does not); the controller's tests run it on what it
//! renders. Std and [`super::yaml`] only.
//!
//! Rules (the file at [`KUBE_VIP_MANIFEST`] on a control plane):
//!
//! 1. One `v1` Pod on the host network (the VIP goes on a host interface).
//! 2. A container running `manager` whose env `address` (or `vip_address`)
//!    is the VIP, with `cp_enable`, `vip_arp` and `vip_leaderelection`
//!    `"true"` (ARP mode; without leader election every control plane
//!    would claim the address) and `port` 6443 if set.
//! 3. The container adds the `NET_ADMIN` and `NET_RAW` capabilities (to add
//!    the address and send gratuitous ARP).
//! 4. A host kubeconfig, `/etc/kubernetes/admin.conf` or
//!    `/etc/kubernetes/super-admin.conf`, mounted as a `File` host path at
//!    `/etc/kubernetes/admin.conf` (where kube-vip reads it). Which one
//!    depends on the moment (the kubeadm >= 1.29 detail): during `kubeadm
//!    init` admin.conf has no rights yet, so super-admin.conf; a joined
//!    control plane has no super-admin.conf. [`KubeVipPod::kubeconfig`]
//!    says which, for the caller to judge.

use std::net::IpAddr;

use super::yaml::{Node, parse};

/// Where the kubelet reads the static pod.
pub const KUBE_VIP_MANIFEST: &str = "/etc/kubernetes/manifests/kube-vip.yaml";
/// The host kubeconfig kube-vip may use after `kubeadm init`.
pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
/// The host kubeconfig kube-vip must use during `kubeadm init`.
pub const SUPER_ADMIN_CONF: &str = "/etc/kubernetes/super-admin.conf";

/// What a passing manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeVipPod {
    /// The host kubeconfig it mounts ([`ADMIN_CONF`] or [`SUPER_ADMIN_CONF`]).
    pub kubeconfig: String,
}

/// Checks `yaml` for holding `vip`; the error lists every problem.
pub fn check_kube_vip_manifest(yaml: &str, vip: IpAddr) -> Result<KubeVipPod, Vec<String>> {
    let docs = parse(yaml).map_err(|e| vec![e])?;
    let [pod] = docs.as_slice() else {
        return Err(vec![format!(
            "{} documents: a static pod manifest holds exactly one Pod",
            docs.len()
        )]);
    };
    let mut problems = Vec::new();
    let text = |n: &Node, path: &[&str]| n.at(path).and_then(Node::as_str).unwrap_or_default().to_owned();
    if text(pod, &["apiVersion"]) != "v1" || text(pod, &["kind"]) != "Pod" {
        problems.push("not a v1 Pod".to_owned());
    }
    if pod.at(&["spec", "hostNetwork"]) != Some(&Node::Bool(true)) {
        problems.push("spec.hostNetwork is not true: the VIP must go on a host interface".to_owned());
    }
    let containers = pod
        .at(&["spec", "containers"])
        .map(Node::items)
        .unwrap_or_default();
    let Some(container) = containers.iter().find(|c| {
        c.get("args")
            .is_some_and(|a| a.items().iter().any(|x| x.as_str() == Some("manager")))
    }) else {
        problems.push("no container runs kube-vip `manager`".to_owned());
        return Err(problems);
    };
    let env = |name: &str| {
        container
            .get("env")
            .map(Node::items)
            .unwrap_or_default()
            .iter()
            .find(|e| e.get("name").and_then(Node::as_str) == Some(name))
            .and_then(|e| e.get("value"))
            .and_then(Node::as_str)
            .map(str::to_owned)
    };
    match env("address").or_else(|| env("vip_address")) {
        None => problems.push(format!("env address is not set (the VIP {vip})")),
        Some(a) if a.parse::<IpAddr>().ok() != Some(vip) => {
            problems.push(format!("env address is {a:?}, not the cluster's VIP {vip}"))
        }
        Some(_) => {}
    }
    for flag in ["cp_enable", "vip_arp", "vip_leaderelection"] {
        if env(flag).as_deref() != Some("true") {
            problems.push(format!("env {flag} is not \"true\""));
        }
    }
    if let Some(port) = env("port").filter(|p| p != "6443") {
        problems.push(format!("env port is {port:?}, not the API server's 6443"));
    }
    let added: Vec<&str> = container
        .at(&["securityContext", "capabilities", "add"])
        .map(Node::items)
        .unwrap_or_default()
        .iter()
        .filter_map(Node::as_str)
        .collect();
    for cap in ["NET_ADMIN", "NET_RAW"] {
        if !added.contains(&cap) {
            problems.push(format!("securityContext.capabilities.add lacks {cap}"));
        }
    }
    let volume = container
        .get("volumeMounts")
        .map(Node::items)
        .unwrap_or_default()
        .iter()
        .find(|m| m.get("mountPath").and_then(Node::as_str) == Some(ADMIN_CONF))
        .and_then(|m| m.get("name").and_then(Node::as_str))
        .and_then(|name| {
            pod.at(&["spec", "volumes"])
                .map(Node::items)
                .unwrap_or_default()
                .iter()
                .find(|v| v.get("name").and_then(Node::as_str) == Some(name))
        });
    let kubeconfig = match volume {
        None => {
            problems.push(format!("no host kubeconfig is mounted at {ADMIN_CONF}"));
            String::new()
        }
        Some(v) => {
            let path = text(v, &["hostPath", "path"]);
            if path != ADMIN_CONF && path != SUPER_ADMIN_CONF {
                problems.push(format!(
                    "the kubeconfig volume's hostPath is {path:?} (accepted {ADMIN_CONF} or {SUPER_ADMIN_CONF})"
                ));
            }
            path
        }
    };
    if problems.is_empty() {
        Ok(KubeVipPod { kubeconfig })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: kube-vip
  namespace: kube-system
spec:
  hostNetwork: true
  containers:
  - name: kube-vip
    image: ghcr.io/kube-vip/kube-vip:v0.8.9
    args:
    - manager
    env:
    - name: vip_arp
      value: \"true\"
    - name: port
      value: \"6443\"
    - name: cp_enable
      value: \"true\"
    - name: vip_leaderelection
      value: \"true\"
    - name: address
      value: 198.51.100.1
    securityContext:
      capabilities:
        add:
        - NET_ADMIN
        - NET_RAW
    volumeMounts:
    - name: kubeconfig
      mountPath: /etc/kubernetes/admin.conf
  volumes:
  - name: kubeconfig
    hostPath:
      path: /etc/kubernetes/super-admin.conf
      type: File
";

    fn vip() -> IpAddr {
        "198.51.100.1".parse().unwrap()
    }

    fn problems(yaml: &str) -> String {
        check_kube_vip_manifest(yaml, vip()).unwrap_err().join("; ")
    }

    #[test]
    fn a_complete_pod_passes_and_says_which_kubeconfig_it_uses() {
        let pod = check_kube_vip_manifest(POD, vip()).unwrap();
        assert_eq!(pod.kubeconfig, SUPER_ADMIN_CONF);
        let after = POD.replace("super-admin.conf", "admin.conf");
        assert_eq!(
            check_kube_vip_manifest(&after, vip()).unwrap().kubeconfig,
            ADMIN_CONF
        );
    }

    #[test]
    fn each_missing_piece_is_named() {
        assert_eq!(
            problems(&POD.replace("198.51.100.1", "198.51.100.2")),
            "env address is \"198.51.100.2\", not the cluster's VIP 198.51.100.1"
        );
        assert_eq!(
            problems(&POD.replace("        - NET_ADMIN\n", "")),
            "securityContext.capabilities.add lacks NET_ADMIN"
        );
        assert_eq!(
            problems(&POD.replace("/etc/kubernetes/super-admin.conf", "/root/.kube/config")),
            "the kubeconfig volume's hostPath is \"/root/.kube/config\" (accepted /etc/kubernetes/admin.conf or /etc/kubernetes/super-admin.conf)"
        );
        assert_eq!(
            problems(&POD.replace("mountPath: /etc/kubernetes/admin.conf", "mountPath: /kubeconfig")),
            "no host kubeconfig is mounted at /etc/kubernetes/admin.conf"
        );
        assert_eq!(
            problems(&POD.replace("hostNetwork: true", "hostNetwork: false")),
            "spec.hostNetwork is not true: the VIP must go on a host interface"
        );
        assert_eq!(
            problems(&POD.replace(
                "      value: \"true\"\n    - name: address",
                "      value: \"false\"\n    - name: address"
            )),
            "env vip_leaderelection is not \"true\""
        );
        assert_eq!(
            problems(&POD.replace("    - manager\n", "    - version\n")),
            "no container runs kube-vip `manager`"
        );
        assert!(problems("a: [").starts_with("invalid YAML"));
    }
}
