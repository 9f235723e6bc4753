//! Tests of `check_kubeadm_config`: a good file, then one change at a time
//! that kubeadm refuses.

use super::*;

const INIT: &str = "\
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
- token: abcdef.0123456789abcdef
  ttl: 24h0m0s
nodeRegistration:
  name: cp-1
  criSocket: unix:///run/containerd/containerd.sock
  taints:
  - key: node-role.kubernetes.io/control-plane
    effect: NoSchedule
  kubeletExtraArgs:
  - name: node-ip
    value: 192.0.2.11
localAPIEndpoint:
  advertiseAddress: 192.0.2.11
  bindPort: 6443
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.32.4
controlPlaneEndpoint: 192.0.2.100:6443
networking:
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/12
apiServer:
  certSANs:
  - 192.0.2.100
  - cp-1
";

const JOIN: &str = "\
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
nodeRegistration:
  name: w-1
discovery:
  bootstrapToken:
    apiServerEndpoint: 192.0.2.100:6443
    token: abcdef.0123456789abcdef
    caCertHashes:
    - sha256:abababababababababababababababababababababababababababababababab
";

fn rejected(text: &str) -> String {
    check_kubeadm_config(text).expect_err("kubeadm refuses this")
}

#[test]
fn good_files_pass() {
    check_kubeadm_config(INIT).unwrap();
    check_kubeadm_config(JOIN).unwrap();
    check_kubeadm_config_for(KubeadmCommand::Init, INIT).unwrap();
    check_kubeadm_config_for(KubeadmCommand::Join, JOIN).unwrap();
    let with_kubelet = format!(
        "{JOIN}---\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\n"
    );
    check_kubeadm_config(&with_kubelet).unwrap();
}

#[test]
fn files_for_the_wrong_command_are_refused() {
    assert!(
        check_kubeadm_config_for(KubeadmCommand::Join, INIT)
            .unwrap_err()
            .contains("no JoinConfiguration")
    );
    assert!(
        check_kubeadm_config_for(KubeadmCommand::Init, JOIN)
            .unwrap_err()
            .contains("no InitConfiguration")
    );
    assert_eq!(rejected(""), "the file holds no configuration document");
}

#[test]
fn unknown_fields_are_refused_at_every_level() {
    for (from, to, path) in [
        (
            "kind: InitConfiguration\n",
            "kind: InitConfiguration\nnodeName: cp-1\n",
            "InitConfiguration: unknown field \"nodeName\"",
        ),
        (
            "  name: cp-1\n",
            "  name: cp-1\n  nodeIP: 1.2.3.4\n",
            "InitConfiguration.nodeRegistration: unknown field \"nodeIP\"",
        ),
        (
            "    effect: NoSchedule\n",
            "    effect: NoSchedule\n    operator: Exists\n",
            "InitConfiguration.nodeRegistration.taints[0]: unknown field \"operator\"",
        ),
        (
            "  bindPort: 6443\n",
            "  bindPort: 6443\n  port: 1\n",
            "InitConfiguration.localAPIEndpoint: unknown field \"port\"",
        ),
        (
            "  serviceSubnet: 10.96.0.0/12\n",
            "  serviceSubnet: 10.96.0.0/12\n  podCIDR: x\n",
            "ClusterConfiguration.networking: unknown field \"podCIDR\"",
        ),
        (
            "apiServer:\n",
            "apiServer:\n  timeoutForControlPlane: 4m0s\n",
            "ClusterConfiguration.apiServer: unknown field \"timeoutForControlPlane\"",
        ),
    ] {
        assert!(INIT.contains(from), "{from}");
        let err = rejected(&INIT.replacen(from, to, 1));
        assert!(err.contains(path), "{err}");
    }
    let err = rejected(&JOIN.replace("    token:", "    timeout: 5m0s\n    token:"));
    assert!(
        err.contains("JoinConfiguration.discovery.bootstrapToken: unknown field \"timeout\""),
        "{err}"
    );
}

#[test]
fn v1beta3_field_shapes_and_wrong_types_are_refused() {
    // extraArgs as a map is the v1beta3 shape.
    let err = rejected(&INIT.replace(
        "apiServer:\n",
        "apiServer:\n  extraArgs:\n    audit-log-path: /var/log/a\n",
    ));
    assert!(
        err.contains("ClusterConfiguration.apiServer.extraArgs: expected a list, found mapping"),
        "{err}"
    );
    let err = rejected(&INIT.replace("bindPort: 6443", "bindPort: \"6443\""));
    assert!(
        err.contains("InitConfiguration.localAPIEndpoint.bindPort: expected an integer, found string"),
        "{err}"
    );
    let err = rejected(&INIT.replace("  - 192.0.2.100\n", "  - 192.0.2.100\n  - {a: b}\n"));
    assert!(
        err.contains("certSANs[1]: expected a string, found mapping"),
        "{err}"
    );
}

#[test]
fn wrong_api_versions_and_kinds_are_refused() {
    let err = rejected(&INIT.replacen("kubeadm.k8s.io/v1beta4", "kubeadm.k8s.io/v1beta3", 1));
    assert_eq!(
        err,
        "InitConfiguration.apiVersion: Some(\"kubeadm.k8s.io/v1beta3\") is not accepted (accepted kubeadm.k8s.io/v1beta4)"
    );
    let err = rejected(&JOIN.replace("apiVersion: kubeadm.k8s.io/v1beta4\n", ""));
    assert!(err.starts_with("JoinConfiguration.apiVersion: None"), "{err}");
    assert_eq!(
        rejected(&JOIN.replace("kind: JoinConfiguration\n", "")),
        "a document has no kind"
    );
    assert!(
        rejected(&JOIN.replace("JoinConfiguration", "NodeConfiguration"))
            .starts_with("kind \"NodeConfiguration\" is not accepted")
    );
    assert_eq!(
        rejected(&format!("{JOIN}---\n{JOIN}")),
        "kind \"JoinConfiguration\" is specified twice"
    );
}

#[test]
fn values_kubeadm_validates_are_refused() {
    for (from, to, expected) in [
        (
            "unix:///run/containerd/containerd.sock",
            "/run/containerd/containerd.sock",
            "only URL scheme \"unix\" is supported",
        ),
        (
            "effect: NoSchedule",
            "effect: Never",
            "taints[0].effect: Some(\"Never\") is not accepted",
        ),
        (
            "advertiseAddress: 192.0.2.11",
            "advertiseAddress: cp-1",
            "advertiseAddress: \"cp-1\" is not an IP address",
        ),
        (
            "bindPort: 6443",
            "bindPort: 70000",
            "bindPort: 70000 is out of range",
        ),
        (
            "token: abcdef.0123456789abcdef",
            "token: ABCDEF.0123456789abcdef",
            "bootstrapTokens[0].token: required",
        ),
        (
            "  name: cp-1\n",
            "  name: CP_1\n",
            "nodeRegistration.name: \"CP_1\"",
        ),
        (
            "  - name: node-ip\n",
            "  - name: \"\"\n",
            "kubeletExtraArgs[0]: argument has no name",
        ),
        (
            "serviceSubnet: 10.96.0.0/12",
            "serviceSubnet: 10.0.0.0/8",
            "specified service subnet is too large; for 32-bit addresses, the mask must be >= 12",
        ),
        (
            "serviceSubnet: 10.96.0.0/12",
            "serviceSubnet: 10.96.0.0/29",
            "subnet with 8 address(es) is too small, the minimum is 10",
        ),
        (
            "serviceSubnet: 10.96.0.0/12",
            "serviceSubnet: fd00::/64",
            "for 128-bit addresses, the mask must be >= 108",
        ),
        (
            "podSubnet: 10.244.0.0/16",
            "podSubnet: 10.244.0.0/28",
            "the size of pod subnet with mask 28 is smaller than the size of node subnet with mask 24",
        ),
        (
            "podSubnet: 10.244.0.0/16",
            "podSubnet: 10.0.0.0/7",
            "difference is greater than 16",
        ),
        (
            "podSubnet: 10.244.0.0/16",
            "podSubnet: 10.244.0.0/16,10.245.0.0/16",
            "two CIDRs from each family",
        ),
        (
            "podSubnet: 10.244.0.0/16",
            "podSubnet: 10.244.0.0",
            "is not a network",
        ),
        (
            "controlPlaneEndpoint: 192.0.2.100:6443",
            "controlPlaneEndpoint: \"https://vip:6443\"",
            "controlPlaneEndpoint: \"https://vip:6443\" is not",
        ),
        (
            "kubernetesVersion: v1.32.4",
            "kubernetesVersion: \"\"",
            "kubernetesVersion: empty",
        ),
    ] {
        assert!(INIT.contains(from), "{from}");
        let err = rejected(&INIT.replacen(from, to, 1));
        assert!(err.contains(expected), "{to}: {err}");
    }
    // A node mask from the controller manager's flags moves the limit.
    let wide = INIT.replace("podSubnet: 10.244.0.0/16", "podSubnet: 10.244.0.0/26")
        + "controllerManager:\n  extraArgs:\n  - name: node-cidr-mask-size-ipv4\n    value: \"28\"\n";
    check_kubeadm_config(&wide).unwrap();
}

#[test]
fn join_discovery_rules() {
    assert!(
        rejected(&JOIN.replace("discovery:\n", "caCertPath: /etc/ca.crt\nfoo:\n"))
            .contains("discovery: required")
    );
    let both = JOIN.to_owned() + "  file:\n    kubeConfigPath: /etc/kubernetes/discovery.conf\n";
    assert!(rejected(&both).contains("bootstrapToken and file cannot both be set"));
    let no_hashes = JOIN.replace(
        "    caCertHashes:\n    - sha256:abababababababababababababababababababababababababababababababab\n",
        "",
    );
    assert!(rejected(&no_hashes).contains("without caCertHashes can be unsafe"));
    check_kubeadm_config(&(no_hashes.clone() + "    unsafeSkipCAVerification: true\n")).unwrap();
    assert!(rejected(&JOIN.replace("sha256:ab", "md5:ab")).contains("caCertHashes[0]: accepted sha256:"));
    let err = rejected(&JOIN.replace("abcdef.0123456789abcdef", "secret-token"));
    assert!(
        err.contains("bootstrapToken.token: required") && !err.contains("secret-token"),
        "{err}"
    );
    assert!(
        rejected(&JOIN.replace("192.0.2.100:6443", "192.0.2.100")).contains("is not an address with a port")
    );
    let file = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  file: {}\n";
    assert!(rejected(file).contains("file.kubeConfigPath: required"));
    let cp = JOIN.to_owned()
        + "controlPlane:\n  certificateKey: nothex\n  localAPIEndpoint:\n    advertiseAddress: 192.0.2.12\n";
    let err = rejected(&cp);
    assert!(
        err.contains("controlPlane.certificateKey") && !err.contains("nothex"),
        "{err}"
    );
}

#[test]
fn format_predicates() {
    assert!(is_image_repository("registry.k8s.io"));
    assert!(is_image_repository("10.0.0.5:5000/mirror/k8s"));
    assert!(!is_image_repository("registry.example/K8s"));
    assert!(!is_image_repository("registry.example/"));
    assert!(is_dns_subdomain("a.b-c.d") && !is_dns_subdomain("-a") && !is_dns_subdomain("a..b"));
    assert!(is_cri_socket("unix:///var/run/crio/crio.sock") && !is_cri_socket("unix://"));
    assert!(is_bootstrap_token("abcdef.0123456789abcdef") && !is_bootstrap_token("abcdef0123456789abcdef"));
    assert!(
        is_label_key("node-role.kubernetes.io/control-plane") && !is_label_key("a/-b") && !is_label_key("")
    );
    assert!(
        is_host_port("[fd00::1]:6443", true)
            && is_host_port("vip.example", false)
            && !is_host_port("vip.example", true)
    );
}
