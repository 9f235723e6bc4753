//! `kubeadm` personality: init, init phase upload-certs, join, reset,
//! token create/list/delete, version.

use std::fs;
use std::io::BufRead;
use std::path::Path;

use rpool_proto::kube::kubeadm_check::KubeadmCommand;

use crate::flags::{self, Parsed, Spec, flag, flag_s, val, val_s};
use crate::kubeadm_config::config_flags;
use crate::state::{self, CertKey, Cluster, Env, EtcdMember, Fail, LocalNode, Node, Res, Role, Store, Token};

pub const VERSION: &str = "v1.32.4";
const MIN_MINOR: u32 = 31;
const TOKEN_TTL: u64 = 24 * 3600;
const CERT_KEY_TTL: u64 = 2 * 3600;
const STACK_HINT: &str = "To see the stack trace of this error execute with --v=5 or higher";

/// kubeadm's error shape: the message, then the stack-trace hint.
pub(crate) fn fail(msg: impl AsRef<str>) -> Fail {
    Fail::new(format!("{}\n{STACK_HINT}", msg.as_ref()))
}

pub(crate) fn phase_fail(phase: &str, msg: impl AsRef<str>) -> Fail {
    fail(format!("error execution phase {phase}: {}", msg.as_ref()))
}

const GLOBAL: [Spec; 3] = [val_s("v", 'v'), val("rootfs"), flag_s("help", 'h')];

fn specs(extra: &[Spec]) -> Vec<Spec> {
    let mut s = GLOBAL.to_vec();
    s.extend_from_slice(extra);
    s
}

pub(crate) fn parse(argv: &[String], extra: &[Spec]) -> Res<Parsed> {
    flags::parse(argv, &specs(extra)).map_err(fail)
}

pub fn run(argv: &[String]) -> Res {
    let Some((i, cmd)) = flags::first_word(argv, &GLOBAL) else {
        if let Err(e) = flags::parse(argv, &GLOBAL) {
            return Err(fail(e));
        }
        println!("{USAGE}");
        return Ok(());
    };
    let mut rest: Vec<String> = argv[..i].to_vec();
    rest.extend_from_slice(&argv[i + 1..]);
    match cmd.as_str() {
        "init" => {
            let sub = flags::first_word(&rest, &specs(&INIT_FLAGS));
            match sub {
                Some((j, w)) if w == "phase" => {
                    let mut r2: Vec<String> = rest[..j].to_vec();
                    r2.extend_from_slice(&rest[j + 1..]);
                    match flags::first_word(&r2, &specs(&UPLOAD_FLAGS)) {
                        Some((k, p)) if p == "upload-certs" => {
                            let mut r3: Vec<String> = r2[..k].to_vec();
                            r3.extend_from_slice(&r2[k + 1..]);
                            upload_certs(&r3)
                        }
                        Some((_, p)) => Err(fail(format!(
                            "unknown command \"{p}\" for \"kubeadm init phase\" (kubesim supports only upload-certs)"
                        ))),
                        None => Err(fail("kubesim: kubeadm init phase needs a phase (upload-certs)")),
                    }
                }
                _ => init(&rest),
            }
        }
        "join" => join(&rest),
        "config" => crate::images::config(&rest),
        "reset" => reset(&rest),
        "token" => token(&rest),
        "version" => version(&rest),
        "upgrade" => crate::upgrade::kubeadm_upgrade(&rest),
        "certs" => crate::certs::kubeadm_certs(&rest),
        other => Err(fail(format!("unknown command \"{other}\" for \"kubeadm\""))),
    }
}

const USAGE: &str = "kubeadm (kubesim): easily bootstrap a secure Kubernetes cluster

Usage:
  kubeadm [command]

Available Commands (kubesim subset):
  init        Run this command in order to set up the Kubernetes control plane
  config      Manage configuration for a kubeadm cluster (kubesim: images list|pull)
  join        Run this on any machine you wish to join an existing cluster
  reset       Performs a best effort revert of changes made to this host by 'kubeadm init' or 'kubeadm join'
  token       Manage bootstrap tokens
  certs       Commands related to handling kubernetes certificates
  upgrade     Upgrade your cluster smoothly to a newer version with this command
  version     Print the version of kubeadm";

fn version(argv: &[String]) -> Res {
    let p = parse(argv, &[val_s("output", 'o')])?;
    // The host's installed kubeadm (see `state::installed_version`).
    let root = std::env::var_os("KUBESIM_NODE_ROOT").map(std::path::PathBuf::from);
    let v = state::installed_version(root.as_deref());
    let minor = parse_version(&v).map_or(32, |(_, m, _)| m);
    match p.get("output") {
        Some("short") => println!("{v}"),
        Some("json") => println!(
            "{{\n  \"clientVersion\": {{\n    \"major\": \"1\",\n    \"minor\": \"{minor}\",\n    \"gitVersion\": \"{v}\",\n    \"platform\": \"linux/amd64\"\n  }}\n}}"
        ),
        Some("") | None => println!(
            "kubeadm version: &version.Info{{Major:\"1\", Minor:\"{minor}\", GitVersion:\"{v}\", GitTreeState:\"clean\", Compiler:\"gc\", Platform:\"linux/amd64\"}}"
        ),
        Some(o) => return Err(fail(format!("invalid output format: {o}"))),
    }
    Ok(())
}

// ------------------------------------------------------------------ init

const INIT_FLAGS: [Spec; 19] = [
    val("config"),
    val("control-plane-endpoint"),
    flag("upload-certs"),
    val("pod-network-cidr"),
    val("service-cidr"),
    val("service-dns-domain"),
    val("kubernetes-version"),
    val("node-name"),
    val("token"),
    val("token-ttl"),
    val("certificate-key"),
    val("apiserver-advertise-address"),
    val("apiserver-bind-port"),
    val("apiserver-cert-extra-sans"),
    val("ignore-preflight-errors"),
    val("cri-socket"),
    flag("skip-token-print"),
    flag("skip-certificate-key-print"),
    val("image-repository"),
];

fn ignored(p: &Parsed) -> Vec<String> {
    p.all("ignore-preflight-errors")
        .iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Runs preflight checks: fatal ones fail, ignored ones become warnings.
fn preflight(errors: Vec<(String, String)>, ignore: &[String]) -> Res {
    let all = ignore.iter().any(|s| s == "all");
    let mut fatal = Vec::new();
    for (name, msg) in errors {
        if all || ignore.contains(&name.to_lowercase()) {
            println!("\t[WARNING {name}]: {msg}");
        } else {
            fatal.push(format!("\t[ERROR {name}]: {msg}"));
        }
    }
    if fatal.is_empty() {
        return Ok(());
    }
    Err(phase_fail(
        "preflight",
        format!(
            "[preflight] Some fatal errors occurred:\n{}\n[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`",
            fatal.join("\n")
        ),
    ))
}

/// What `kubeadm init` / a control-plane join would collide with on this host.
/// kubeadm's `CRI` preflight check for a given criSocket: the runtime must
/// answer at it, i.e. (here) a socket must exist at that path under the
/// node root. Without one, kubeadm looks for a known runtime itself; kubesim
/// then does not check.
pub(crate) fn cri_check(root: &Path, socket: Option<&str>) -> Option<(String, String)> {
    use std::os::unix::fs::FileTypeExt;
    let socket = socket.filter(|s| !s.is_empty())?;
    let path = socket.strip_prefix("unix://").unwrap_or(socket);
    let on_host = root.join(path.trim_start_matches('/'));
    let why = match std::fs::metadata(&on_host) {
        Ok(m) if m.file_type().is_socket() => return None,
        Ok(_) => "connect: connection refused",
        Err(_) => "connect: no such file or directory",
    };
    Some((
        "CRI".into(),
        format!(
            "container runtime is not running: output: validate service connection: validate CRI v1 runtime API for endpoint \"{socket}\": rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial unix {path}: {why}\""
        ),
    ))
}

fn local_checks(root: &Path, control_plane: bool) -> Vec<(String, String)> {
    let mut e = Vec::new();
    let m = root.join("etc/kubernetes/manifests");
    if control_plane {
        if m.join("kube-apiserver.yaml").exists() {
            e.push(("Port-6443".into(), "Port 6443 is in use".into()));
        }
        if m.join("kube-scheduler.yaml").exists() {
            e.push(("Port-10259".into(), "Port 10259 is in use".into()));
        }
        if m.join("kube-controller-manager.yaml").exists() {
            e.push(("Port-10257".into(), "Port 10257 is in use".into()));
        }
        for f in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "etcd",
        ] {
            if m.join(format!("{f}.yaml")).exists() {
                e.push((
                    format!("FileAvailable--etc-kubernetes-manifests-{f}.yaml"),
                    format!("/etc/kubernetes/manifests/{f}.yaml already exists"),
                ));
            }
        }
    }
    if root.join("etc/kubernetes/kubelet.conf").exists() {
        e.push((
            "FileAvailable--etc-kubernetes-kubelet.conf".into(),
            "/etc/kubernetes/kubelet.conf already exists".into(),
        ));
        e.push(("Port-10250".into(), "Port 10250 is in use".into()));
    }
    if root.join("etc/kubernetes/pki/ca.crt").exists() && !control_plane {
        e.push((
            "FileAvailable--etc-kubernetes-pki-ca.crt".into(),
            "/etc/kubernetes/pki/ca.crt already exists".into(),
        ));
    }
    if control_plane {
        let etcd = root.join("var/lib/etcd");
        if fs::read_dir(&etcd).is_ok_and(|mut d| d.next().is_some()) {
            e.push(("Port-2379".into(), "Port 2379 is in use".into()));
            e.push(("Port-2380".into(), "Port 2380 is in use".into()));
            e.push((
                "DirAvailable--var-lib-etcd".into(),
                "/var/lib/etcd is not empty".into(),
            ));
        }
    }
    e
}

fn valid_cidr(s: &str) -> bool {
    s.split(',').all(|one| {
        let Some((ip, len)) = one.trim().split_once('/') else {
            return false;
        };
        match (ip.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
            (Ok(std::net::IpAddr::V4(_)), Ok(l)) => l <= 32,
            (Ok(std::net::IpAddr::V6(_)), Ok(l)) => l <= 128,
            _ => false,
        }
    })
}

fn valid_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn node_name(env: &Env, p: &Parsed) -> Res<String> {
    let name = p
        .get("node-name")
        .map(str::to_string)
        .unwrap_or_else(|| env.hostname.clone());
    if !valid_node_name(&name) {
        return Err(fail(format!(
            "nodeRegistration.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )));
    }
    Ok(name)
}

pub(crate) fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let v = v.strip_prefix('v')?;
    let mut it = v.split('.');
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    let c = it.next()?.split(['-', '+']).next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((a, b, c))
}

fn with_port(ep: &str, port: &str) -> String {
    if ep.starts_with('[') {
        if ep.contains("]:") {
            ep.to_string()
        } else {
            format!("{ep}:{port}")
        }
    } else if ep.contains(':') {
        ep.to_string()
    } else {
        format!("{ep}:{port}")
    }
}

fn init(argv: &[String]) -> Res {
    let p = parse(argv, &INIT_FLAGS)?;
    if let Some(a) = p.args.first() {
        return Err(fail(format!("unknown command \"{a}\" for \"kubeadm init\"")));
    }
    let p = if p.has("config") {
        config_flags(&p, KubeadmCommand::Init)?
    } else {
        p
    };
    let env = Env::from_process()?;
    let root = env.root()?.to_path_buf();
    let name = node_name(&env, &p)?;

    // Validation (kubeadm validates the config before running any phase).
    let mut problems = Vec::new();
    for (flag, field) in [
        ("pod-network-cidr", "networking.podSubnet"),
        ("service-cidr", "networking.serviceSubnet"),
    ] {
        if let Some(c) = p.get(flag)
            && !valid_cidr(c)
        {
            problems.push(format!("{field}: Invalid value: \"{c}\": couldn't parse subnet"));
        }
    }
    if let Some(t) = p.get("token")
        && !state::is_token(t)
    {
        problems.push(format!(
                "bootstrapTokens[0].token: Invalid value: \"{t}\": the bootstrap token \"{t}\" was not of the form \"^([a-z0-9]{{6}})\\.([a-z0-9]{{16}})$\""
            ));
    }
    if let Some(k) = p.get("certificate-key")
        && !state::is_hex64(k)
    {
        problems.push(format!(
            "certificateKey: Invalid value: \"{k}\": certificate key must be a hex-encoded 32-byte string"
        ));
    }
    if let Some(ip) = p.get("apiserver-advertise-address")
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        problems.push(format!(
                "localAPIEndpoint.advertiseAddress: Invalid value: \"{ip}\": couldn't use \"{ip}\" as \"apiserver-advertise-address\", must be ipv4 or ipv6 address"
            ));
    }
    if !problems.is_empty() {
        return Err(fail(problems.join("\n")));
    }
    let version = p.get("kubernetes-version").unwrap_or(VERSION).to_string();
    let version = if version.starts_with('v') {
        version
    } else {
        format!("v{version}")
    };
    match parse_version(&version) {
        None => {
            return Err(fail(format!(
                "unable to parse version \"{version}\": could not parse \"{version}\" as version"
            )));
        }
        Some((1, minor, _)) if minor >= MIN_MINOR => {}
        Some(_) => {
            return Err(fail(format!(
                "this version of kubeadm only supports deploying clusters with the control plane version >= 1.{MIN_MINOR}.0. Current version: {version}"
            )));
        }
    }
    let ttl = match p.get("token-ttl") {
        Some(t) => flags::go_duration(t)
            .map_err(|e| fail(format!("invalid argument \"{t}\" for \"--token-ttl\" flag: {e}")))?,
        None => TOKEN_TTL,
    };
    let port = p.get("apiserver-bind-port").unwrap_or("6443").to_string();
    let ip = p
        .get("apiserver-advertise-address")
        .map(str::to_string)
        .or_else(|| env.node_ip.clone())
        .unwrap_or_else(|| "127.0.0.1".to_string());
    let (endpoint, stable) = match p.get("control-plane-endpoint") {
        Some(ep) if !ep.is_empty() => (with_port(ep, &port), true),
        _ => (with_port(&ip, &port), false),
    };

    println!("[init] Using Kubernetes version: {version}");
    println!("[preflight] Running pre-flight checks");
    let ignore = ignored(&p);
    let store = Store::open(&env)?;
    let mut checks = local_checks(&root, true);
    checks.extend(cri_check(&root, p.get("cri-socket")));
    if let Some(i) = store.by_endpoint(&endpoint) {
        checks.push((
            "ControlPlaneEndpoint".into(),
            format!(
                "kubesim: endpoint {endpoint} already serves running cluster {} (reset its control-plane nodes first)",
                store.clusters[i].id
            ),
        ));
    }
    preflight(checks, &ignore)?;
    if store.by_endpoint(&endpoint).is_some() {
        return Err(phase_fail(
            "preflight",
            format!("kubesim: endpoint {endpoint} already serves a running cluster"),
        ));
    }

    // kubeadm's ImagePull preflight: whatever is not on the host is pulled
    // now; an image the registry lacks stops init before anything is made.
    let image_repository = p
        .get("image-repository")
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    println!("[preflight] Pulling images required for setting up a Kubernetes cluster");
    preflight(
        crate::images::preflight_pull(&env, &root, &version, image_repository.as_deref()),
        &ignore,
    )?;

    let vip = init_vip(&root, &endpoint, &ip)?;

    let id = format!("c-{}", state::hex(&state::random_bytes(6)));
    let ca_body = state::b64(format!("kubesim CA {id} {}", state::hex(&state::random_bytes(24))).as_bytes());
    let ca_pem = format!("-----BEGIN CERTIFICATE-----\n{ca_body}\n-----END CERTIFICATE-----\n");
    let token = p
        .get("token")
        .map(str::to_string)
        .unwrap_or_else(state::new_token);
    let cert_key = if p.on("upload-certs") {
        Some(CertKey {
            key: p
                .get("certificate-key")
                .map(str::to_string)
                .unwrap_or_else(|| state::hex(&state::random_bytes(32))),
            expires: env.now + CERT_KEY_TTL,
        })
    } else {
        None
    };
    let member = EtcdMember {
        id: state::random_u64(),
        name: name.clone(),
        ip: ip.clone(),
    };
    let cluster = Cluster {
        id: id.clone(),
        endpoint: endpoint.clone(),
        stable_endpoint: stable,
        kubernetes_version: version.clone(),
        pod_network_cidr: p.get("pod-network-cidr").map(str::to_string),
        service_cidr: p.get("service-cidr").unwrap_or("10.96.0.0/12").to_string(),
        ca_cert_hash: format!("sha256:{}", state::hex(&state::random_bytes(32))),
        ca_pem,
        etcd_cluster_id: state::random_u64(),
        etcd_revision: 1,
        created: env.now,
        tokens: vec![Token {
            token: token.clone(),
            expires: (ttl > 0).then_some(env.now + ttl),
            description: "The default bootstrap token generated by 'kubeadm init'.".into(),
        }],
        certificate_key: cert_key.clone(),
        nodes: vec![Node {
            name: name.clone(),
            role: Role::ControlPlane,
            internal_ip: ip.clone(),
            created: env.now,
            unschedulable: false,
            node_root: Some(root.display().to_string()),
            kubelet_version: Some(state::installed_version(Some(&root))),
            control_plane_version: Some(version.clone()),
        }],
        etcd_members: vec![member],
        applied: Vec::new(),
        cni_missing: None,
        vip,
        image_repository,
        lb_ips: Default::default(),
    };
    crate::certs::create(&root, env.now, cluster.created + crate::certs::CA_TTL, true)?;
    write_node_files(&root, &cluster, &name, Role::ControlPlane, true)?;
    store.save(&cluster)?;
    drop(store);

    let svc_ip = first_service_ip(&cluster.service_cidr);
    print!(
        "[preflight] This might take a minute or two, depending on the speed of your internet connection
[preflight] You can also perform this action beforehand using 'kubeadm config images pull'
[certs] Using certificateDir folder \"/etc/kubernetes/pki\"
[certs] Generating \"ca\" certificate and key
[certs] Generating \"apiserver\" certificate and key
[certs] apiserver serving cert is signed for DNS names [{name} kubernetes kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local] and IPs [{svc_ip} {ip}]
[certs] Generating \"apiserver-kubelet-client\" certificate and key
[certs] Generating \"front-proxy-ca\" certificate and key
[certs] Generating \"front-proxy-client\" certificate and key
[certs] Generating \"etcd/ca\" certificate and key
[certs] Generating \"etcd/server\" certificate and key
[certs] etcd/server serving cert is signed for DNS names [{name} localhost] and IPs [{ip} 127.0.0.1 ::1]
[certs] Generating \"etcd/peer\" certificate and key
[certs] etcd/peer serving cert is signed for DNS names [{name} localhost] and IPs [{ip} 127.0.0.1 ::1]
[certs] Generating \"etcd/healthcheck-client\" certificate and key
[certs] Generating \"apiserver-etcd-client\" certificate and key
[certs] Generating \"sa\" key and public key
[kubeconfig] Using kubeconfig folder \"/etc/kubernetes\"
[kubeconfig] Writing \"admin.conf\" kubeconfig file
[kubeconfig] Writing \"super-admin.conf\" kubeconfig file
[kubeconfig] Writing \"kubelet.conf\" kubeconfig file
[kubeconfig] Writing \"controller-manager.conf\" kubeconfig file
[kubeconfig] Writing \"scheduler.conf\" kubeconfig file
[etcd] Creating static Pod manifest for local etcd in \"/etc/kubernetes/manifests\"
[control-plane] Using manifest folder \"/etc/kubernetes/manifests\"
[control-plane] Creating static Pod manifest for \"kube-apiserver\"
[control-plane] Creating static Pod manifest for \"kube-controller-manager\"
[control-plane] Creating static Pod manifest for \"kube-scheduler\"
[kubelet-start] Writing kubelet environment file with flags to file \"/var/lib/kubelet/kubeadm-flags.env\"
[kubelet-start] Writing kubelet configuration to file \"/var/lib/kubelet/config.yaml\"
[kubelet-start] Starting the kubelet
[wait-control-plane] Waiting for the kubelet to boot up the control plane as static Pods from directory \"/etc/kubernetes/manifests\"
[kubelet-check] Waiting for a healthy kubelet at http://127.0.0.1:10248/healthz. This can take up to 4m0s
[kubelet-check] The kubelet is healthy after 501.37ms
[api-check] Waiting for a healthy API server. This can take up to 4m0s
[api-check] The API server is healthy after 4.00213s
[upload-config] Storing the configuration used in ConfigMap \"kubeadm-config\" in the \"kube-system\" Namespace
[kubelet] Creating a ConfigMap \"kubelet-config\" in namespace kube-system with the configuration for the kubelets in the cluster
"
    );
    match &cert_key {
        Some(k) => {
            println!(
                "[upload-certs] Storing the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace"
            );
            if !p.on("skip-certificate-key-print") {
                println!("[upload-certs] Using certificate key:\n{}", k.key);
            }
        }
        None => println!("[upload-certs] Skipping phase. Please see --upload-certs"),
    }
    let shown_token = if p.on("skip-token-print") {
        "<value withheld>".to_string()
    } else {
        token.clone()
    };
    print!(
        "[mark-control-plane] Marking the node {name} as control-plane by adding the labels: [node-role.kubernetes.io/control-plane node.kubernetes.io/exclude-from-external-load-balancers]
[mark-control-plane] Marking the node {name} as control-plane by adding the taints [node-role.kubernetes.io/control-plane:NoSchedule]
[bootstrap-token] Using token: {shown_token}
[bootstrap-token] Configuring bootstrap tokens, cluster-info ConfigMap, RBAC Roles
[bootstrap-token] Configured RBAC rules to allow Node Bootstrap tokens to get nodes
[bootstrap-token] Configured RBAC rules to allow Node Bootstrap tokens to post CSRs in order for nodes to get long term certificate credentials
[bootstrap-token] Configured RBAC rules to allow the csrapprover controller automatically approve CSRs from a Node Bootstrap Token
[bootstrap-token] Configured RBAC rules to allow certificate rotation for all node client certificates in the cluster
[bootstrap-token] Creating the \"cluster-info\" ConfigMap in the \"kube-public\" namespace
[kubelet-finalize] Updating \"/etc/kubernetes/kubelet.conf\" to point to a rotatable kubelet client certificate and key
[addons] Applied essential addon: CoreDNS
[addons] Applied essential addon: kube-proxy

Your Kubernetes control-plane has initialized successfully!

To start using your cluster, you need to run the following as a regular user:

  mkdir -p $HOME/.kube
  sudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config
  sudo chown $(id -u):$(id -g) $HOME/.kube/config

Alternatively, if you are the root user, you can run:

  export KUBECONFIG=/etc/kubernetes/admin.conf

You should now deploy a pod network to the cluster.
Run \"kubectl apply -f [podnetwork].yaml\" with one of the options listed at:
  https://kubernetes.io/docs/concepts/cluster-administration/addons/

"
    );
    let hash = &cluster.ca_cert_hash;
    if stable {
        match &cert_key {
            Some(k) => {
                let key = if p.on("skip-certificate-key-print") {
                    "<value withheld>"
                } else {
                    &k.key
                };
                print!(
                    "You can now join any number of control-plane nodes running the following command on each as root:

  kubeadm join {endpoint} --token {shown_token} \\
\t--discovery-token-ca-cert-hash {hash} \\
\t--control-plane --certificate-key {key}

Please note that the certificate-key gives access to cluster sensitive data, keep it secret!
As a safeguard, uploaded-certs will be deleted in two hours; If necessary, you can use
\"kubeadm init phase upload-certs --upload-certs\" to reload certs afterward.

"
                );
            }
            None => print!(
                "You can now join any number of control-plane nodes by copying certificate authorities
and service account keys on each node and then running the following as root:

  kubeadm join {endpoint} --token {shown_token} \\
\t--discovery-token-ca-cert-hash {hash} \\
\t--control-plane 

"
            ),
        }
    }
    print!(
        "Then you can join any number of worker nodes by running the following on each as root:

kubeadm join {endpoint} --token {shown_token} \\
\t--discovery-token-ca-cert-hash {hash} 
"
    );
    Ok(())
}

/// The VIP of a cluster whose first control plane runs a kube-vip static
/// pod (`None` without one: the endpoint is a name, this node's address
/// or an external load balancer's). kubeadm init reaches the API server
/// through the endpoint, so with kube-vip it only finishes when the pod
/// holds the endpoint's address using super-admin.conf: admin.conf gets its
/// rights only at the end of init (kubeadm >= 1.29), so kube-vip could not
/// take its lease with it.
fn init_vip(root: &Path, endpoint: &str, node_ip: &str) -> Res<Option<String>> {
    use rpool_proto::kube::kube_vip_check::{KUBE_VIP_MANIFEST, SUPER_ADMIN_CONF, check_kube_vip_manifest};
    let Ok(text) = std::fs::read_to_string(root.join(&KUBE_VIP_MANIFEST[1..])) else {
        return Ok(None);
    };
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Some(vip) = host
        .parse::<std::net::IpAddr>()
        .ok()
        .filter(|vip| node_ip.parse::<std::net::IpAddr>().ok() != Some(*vip))
    else {
        return Err(phase_fail(
            "preflight",
            format!(
                "kubesim: a kube-vip static pod is at {KUBE_VIP_MANIFEST} but the control-plane endpoint {endpoint} is not a virtual IP (accepted an address no node has)"
            ),
        ));
    };
    let unreachable = |why: String| {
        phase_fail(
            "upload-config/kubeadm",
            format!(
                "could not upload the kubeadm configuration: Get \"https://{endpoint}/api/v1/namespaces/kube-system/configmaps/kubeadm-config?timeout=10s\": dial tcp {endpoint}: connect: no route to host\n{why}"
            ),
        )
    };
    match check_kube_vip_manifest(&text, vip) {
        Err(problems) => Err(unreachable(format!(
            "kubesim: the kube-vip static pod {KUBE_VIP_MANIFEST} cannot hold {vip}: {}",
            problems.join("; ")
        ))),
        Ok(pod) if pod.kubeconfig != SUPER_ADMIN_CONF => Err(unreachable(format!(
            "kubesim: the kube-vip static pod uses {}, which has no rights until kubeadm init finishes (kubeadm >= 1.29): it cannot take its lease, so nobody holds {vip}; use {SUPER_ADMIN_CONF} during init",
            pod.kubeconfig
        ))),
        Ok(_) => Ok(Some(vip.to_string())),
    }
}

/// [`state::kube_vip_problem`] before a control-plane join, when the host
/// has no kubeconfig yet: only the pod itself and that it mounts
/// admin.conf (kubeadm join writes no super-admin.conf) are checked.
fn kube_vip_join_problem(root: &Path, vip: std::net::IpAddr) -> Option<Option<String>> {
    use rpool_proto::kube::kube_vip_check::{ADMIN_CONF, KUBE_VIP_MANIFEST, check_kube_vip_manifest};
    let text = std::fs::read_to_string(root.join(&KUBE_VIP_MANIFEST[1..])).ok()?;
    Some(match check_kube_vip_manifest(&text, vip) {
        Err(problems) => Some(format!(
            "kubesim: the kube-vip static pod {KUBE_VIP_MANIFEST} cannot hold the VIP {vip}: {}",
            problems.join("; ")
        )),
        Ok(pod) if pod.kubeconfig != ADMIN_CONF => Some(format!(
            "kubesim: the kube-vip static pod {KUBE_VIP_MANIFEST} mounts {}, which kubeadm join does not write (accepted {ADMIN_CONF})",
            pod.kubeconfig
        )),
        Ok(_) => None,
    })
}

fn first_service_ip(cidr: &str) -> String {
    let first = cidr.split(',').next().unwrap_or("");
    match first
        .split_once('/')
        .map(|(ip, _)| ip.parse::<std::net::Ipv4Addr>())
    {
        Some(Ok(ip)) => std::net::Ipv4Addr::from(u32::from(ip) + 1).to_string(),
        _ => "10.96.0.1".into(),
    }
}

/// Writes what init/join leave on a host (under the node root).
fn write_node_files(root: &Path, c: &Cluster, name: &str, role: Role, first: bool) -> Res {
    let w = |rel: &str, data: &str| state::write_atomic(&root.join(rel), data.as_bytes());
    let cp = role == Role::ControlPlane;
    w("etc/kubernetes/pki/ca.crt", &c.ca_pem)?;
    w(
        "etc/kubernetes/kubelet.conf",
        &state::kubeconfig(c, &format!("system:node:{name}")),
    )?;
    if cp {
        for f in [
            "ca.key",
            "sa.key",
            "sa.pub",
            "front-proxy-ca.crt",
            "front-proxy-ca.key",
            "etcd/ca.crt",
            "etcd/ca.key",
            "etcd/server.crt",
            "etcd/server.key",
            "etcd/peer.crt",
            "etcd/peer.key",
            "etcd/healthcheck-client.crt",
            "etcd/healthcheck-client.key",
            "apiserver.crt",
            "apiserver.key",
        ] {
            w(
                &format!("etc/kubernetes/pki/{f}"),
                &format!("kubesim {f} for cluster {}\n", c.id),
            )?;
        }
        w(
            "etc/kubernetes/admin.conf",
            &state::kubeconfig(c, "kubernetes-admin"),
        )?;
        if first {
            w(
                "etc/kubernetes/super-admin.conf",
                &state::kubeconfig(c, "kubernetes-super-admin"),
            )?;
        }
        w(
            "etc/kubernetes/controller-manager.conf",
            &state::kubeconfig(c, "system:kube-controller-manager"),
        )?;
        w(
            "etc/kubernetes/scheduler.conf",
            &state::kubeconfig(c, "system:kube-scheduler"),
        )?;
        for m in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            w(
                &format!("etc/kubernetes/manifests/{m}.yaml"),
                &format!(
                    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {m}\n  namespace: kube-system\nspec:\n  containers:\n  - name: {m}\n    image: registry.k8s.io/{m}:{}\n",
                    c.kubernetes_version
                ),
            )?;
        }
        w("var/lib/etcd/member/kubesim", &format!("{}\n", c.id))?;
    }
    w(
        "var/lib/kubelet/config.yaml",
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\nclusterDNS:\n- 10.96.0.10\nclusterDomain: cluster.local\n",
    )?;
    w(
        "var/lib/kubelet/kubeadm-flags.env",
        "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock\"\n",
    )?;
    let local = LocalNode {
        cluster_id: c.id.clone(),
        node_name: name.to_string(),
        role,
    };
    w(
        state::LOCAL_MARKER,
        &serde_json::to_string_pretty(&local).expect("serializes"),
    )
}

// ------------------------------------------------------------------ upload-certs

const UPLOAD_FLAGS: [Spec; 5] = [
    flag("upload-certs"),
    val("certificate-key"),
    val("kubeconfig"),
    flag("skip-certificate-key-print"),
    val("config"),
];

/// Finds the cluster an admin kubeconfig points at.
pub enum Target {
    Found(usize),
    NoFile(String),
    Refused(String),
    UnknownAuthority(String),
}

pub fn target(store: &Store, env: &Env, path: &str) -> Target {
    let Ok(text) = fs::read_to_string(env.host_path(path)) else {
        return Target::NoFile(path.to_string());
    };
    let Some((server, ca)) = state::parse_kubeconfig(&text) else {
        return Target::Refused("localhost:8080".into());
    };
    match store.by_endpoint(&server) {
        None => Target::Refused(server),
        Some(i) => {
            let c = &store.clusters[i];
            if ca.as_deref().is_some_and(|ca| ca != c.ca_pem) {
                Target::UnknownAuthority(server)
            } else {
                Target::Found(i)
            }
        }
    }
}

fn admin_cluster(store: &Store, env: &Env, p: &Parsed, what: &str) -> Res<usize> {
    let path = p.get("kubeconfig").unwrap_or("/etc/kubernetes/admin.conf");
    match target(store, env, path) {
        Target::Found(i) => Ok(i),
        Target::NoFile(f) => Err(fail(format!(
            "failed to load admin kubeconfig: open {f}: no such file or directory"
        ))),
        Target::Refused(s) => Err(fail(format!(
            "{what}: Get \"https://{s}/api?timeout=10s\": dial tcp {s}: connect: connection refused"
        ))),
        Target::UnknownAuthority(s) => Err(fail(format!(
            "{what}: Get \"https://{s}/api?timeout=10s\": tls: failed to verify certificate: x509: certificate signed by unknown authority"
        ))),
    }
}

fn upload_certs(argv: &[String]) -> Res {
    let p = parse(argv, &UPLOAD_FLAGS)?;
    if !p.on("upload-certs") {
        println!("[upload-certs] Skipping phase. Please see --upload-certs");
        return Ok(());
    }
    if let Some(k) = p.get("certificate-key")
        && !state::is_hex64(k)
    {
        return Err(phase_fail(
            "upload-certs",
            "error uploading certs: error decoding certificate key: the certificate key must be a hex-encoded 32-byte string",
        ));
    }
    let env = Env::from_process()?;
    let mut store = Store::open(&env)?;
    let i = admin_cluster(
        &store,
        &env,
        &p,
        "error execution phase upload-certs: error uploading certs",
    )?;
    let key = p
        .get("certificate-key")
        .map(str::to_string)
        .unwrap_or_else(|| state::hex(&state::random_bytes(32)));
    let c = &mut store.clusters[i];
    c.certificate_key = Some(CertKey {
        key: key.clone(),
        expires: env.now + CERT_KEY_TTL,
    });
    let c = c.clone();
    store.save(&c)?;
    println!(
        "[upload-certs] Storing the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace"
    );
    if !p.on("skip-certificate-key-print") {
        println!("[upload-certs] Using certificate key:\n{key}");
    }
    Ok(())
}

// ------------------------------------------------------------------ token

const TOKEN_FLAGS: [Spec; 8] = [
    val("ttl"),
    flag("print-join-command"),
    val("certificate-key"),
    val("description"),
    val("usages"),
    val("groups"),
    val("kubeconfig"),
    val_s("output", 'o'),
];

fn token(argv: &[String]) -> Res {
    let p = parse(argv, &[&TOKEN_FLAGS[..], &[flag("dry-run")]].concat())?;
    let Some(sub) = p.args.first().cloned() else {
        return Err(fail(
            "missing subcommand; \"token\" is not meant to be run on its own",
        ));
    };
    let env = Env::from_process()?;
    match sub.as_str() {
        "create" => {
            if p.args.len() > 2 {
                return Err(fail("kubeadm token create [token]: too many arguments"));
            }
            let ttl = match p.get("ttl") {
                Some(t) => flags::go_duration(t)
                    .map_err(|e| fail(format!("invalid argument \"{t}\" for \"--ttl\" flag: {e}")))?,
                None => TOKEN_TTL,
            };
            let tok = match p.args.get(1) {
                Some(t) if !state::is_token(t) => {
                    return Err(fail(format!(
                        "the bootstrap token \"{t}\" was not of the form \"^([a-z0-9]{{6}})\\.([a-z0-9]{{16}})$\""
                    )));
                }
                Some(t) => t.clone(),
                None => state::new_token(),
            };
            if let Some(k) = p.get("certificate-key")
                && !state::is_hex64(k)
            {
                return Err(fail("certificate key must be a hex-encoded 32-byte string"));
            }
            let mut store = Store::open(&env)?;
            let i = admin_cluster(&store, &env, &p, "failed to create or update bootstrap token")?;
            let c = &mut store.clusters[i];
            let id = tok.split('.').next().unwrap_or("").to_string();
            if c.tokens.iter().any(|t| t.token.starts_with(&format!("{id}."))) {
                c.tokens.retain(|t| !t.token.starts_with(&format!("{id}.")));
            }
            c.tokens.push(Token {
                token: tok.clone(),
                expires: (ttl > 0).then_some(env.now + ttl),
                description: p.get("description").unwrap_or("").to_string(),
            });
            let c = c.clone();
            store.save(&c)?;
            if p.on("print-join-command") {
                let mut line = format!(
                    "kubeadm join {} --token {tok} --discovery-token-ca-cert-hash {} ",
                    c.endpoint, c.ca_cert_hash
                );
                if let Some(k) = p.get("certificate-key") {
                    line.push_str(&format!("--control-plane --certificate-key {k}"));
                }
                println!("{line}");
            } else {
                println!("{tok}");
            }
            Ok(())
        }
        "list" => {
            let store = Store::open(&env)?;
            let i = admin_cluster(&store, &env, &p, "failed to list bootstrap tokens")?;
            let c = &store.clusters[i];
            let mut rows = vec![
                ["TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA GROUPS"]
                    .map(String::from)
                    .to_vec(),
            ];
            for t in c.tokens.iter().filter(|t| t.expires.is_none_or(|e| e > env.now)) {
                let (ttl, exp) = match t.expires {
                    Some(e) => (state::human_duration(e - env.now), state::rfc3339(e)),
                    None => ("<forever>".into(), "<never>".into()),
                };
                rows.push(vec![
                    t.token.clone(),
                    ttl,
                    exp,
                    "authentication,signing".into(),
                    if t.description.is_empty() {
                        "<none>".into()
                    } else {
                        t.description.clone()
                    },
                    "system:bootstrappers:kubeadm:default-node-token".into(),
                ]);
            }
            print!("{}", state::table(&rows));
            Ok(())
        }
        "delete" => {
            if p.args.len() < 2 {
                return Err(fail(
                    "missing argument; 'token delete' is missing token of form \"[a-z0-9]{6}.[a-z0-9]{16}\" or \"[a-z0-9]{6}\"",
                ));
            }
            let mut store = Store::open(&env)?;
            let i = admin_cluster(&store, &env, &p, "failed to delete bootstrap token")?;
            let c = &mut store.clusters[i];
            for t in &p.args[1..] {
                let id = t.split('.').next().unwrap_or("").to_string();
                let before = c.tokens.len();
                c.tokens
                    .retain(|x| x.token.split('.').next() != Some(id.as_str()));
                if before == c.tokens.len() {
                    return Err(fail(format!(
                        "failed to delete bootstrap token with ID \"{id}\": secrets \"bootstrap-token-{id}\" not found"
                    )));
                }
                println!("bootstrap token \"{id}\" deleted");
            }
            let c = c.clone();
            store.save(&c)
        }
        other => Err(fail(format!("unknown command \"{other}\" for \"kubeadm token\""))),
    }
}

// ------------------------------------------------------------------ join

const JOIN_FLAGS: [Spec; 14] = [
    val("config"),
    val("token"),
    val("discovery-token"),
    val("tls-bootstrap-token"),
    val("discovery-token-ca-cert-hash"),
    flag("discovery-token-unsafe-skip-ca-verification"),
    flag("control-plane"),
    val("certificate-key"),
    val("node-name"),
    val("apiserver-advertise-address"),
    val("apiserver-bind-port"),
    val("ignore-preflight-errors"),
    val("cri-socket"),
    val("skip-phases"),
];

fn join(argv: &[String]) -> Res {
    let p = parse(argv, &JOIN_FLAGS)?;
    let p = if p.has("config") {
        config_flags(&p, KubeadmCommand::Join)?
    } else {
        p
    };
    let env = Env::from_process()?;
    let root = env.root()?.to_path_buf();
    let cp = p.on("control-plane");

    // Argument and config validation.
    if p.args.len() > 1 {
        return Err(fail(format!(
            "[discovery.bootstrapToken.apiServerEndpoint: Invalid value: \"{}\": only one API server endpoint may be given]",
            p.args.join(" ")
        )));
    }
    let token = p
        .get("discovery-token")
        .or(p.get("token"))
        .unwrap_or("")
        .to_string();
    let tls_token = p.get("tls-bootstrap-token").or(p.get("token")).unwrap_or("");
    let hashes = p.all("discovery-token-ca-cert-hash");
    let unsafe_skip = p.on("discovery-token-unsafe-skip-ca-verification");
    let mut problems = Vec::new();
    let endpoint = p.args.first().cloned().unwrap_or_default();
    if token.is_empty() {
        problems.push("discovery: Invalid value: \"\": bootstrapToken or file must be set".to_string());
    } else if !state::is_token(&token) {
        problems.push(format!(
            "discovery.bootstrapToken.token: Invalid value: \"{token}\": the bootstrap token \"{token}\" was not of the form \"^([a-z0-9]{{6}})\\.([a-z0-9]{{16}})$\""
        ));
    } else if endpoint.is_empty() {
        problems.push(
            "discovery.bootstrapToken.apiServerEndpoint: Invalid value: \"\": the API server endpoint must be set".to_string(),
        );
    }
    if !tls_token.is_empty() && !state::is_token(tls_token) && tls_token != token {
        problems.push(format!(
            "discovery.tlsBootstrapToken: Invalid value: \"{tls_token}\": the bootstrap token \"{tls_token}\" was not of the form \"^([a-z0-9]{{6}})\\.([a-z0-9]{{16}})$\""
        ));
    }
    if hashes.is_empty() && !unsafe_skip && !token.is_empty() {
        problems.push("discovery.bootstrapToken: Invalid value: \"\": using token-based discovery without caCertHashes can be unsafe. Set unsafeSkipCAVerification as true in your kubeadm config file or pass --discovery-token-unsafe-skip-ca-verification flag to continue".to_string());
    }
    for h in &hashes {
        match h.split_once(':') {
            Some(("sha256", hx)) if state::is_hex64(hx) => {}
            Some(("sha256", hx)) => problems.push(format!(
                "discovery.bootstrapToken.caCertHashes: Invalid value: \"{h}\": invalid hash \"sha256:{hx}\", expected a 32 byte SHA-256 hash, found {} bytes",
                hx.len() / 2
            )),
            Some((f, _)) => problems.push(format!(
                "discovery.bootstrapToken.caCertHashes: Invalid value: \"{h}\": unknown hash format \"{f}\". Known format(s) are: sha256"
            )),
            None => problems.push(format!(
                "discovery.bootstrapToken.caCertHashes: Invalid value: \"{h}\": invalid public key hash, expected \"format:value\""
            )),
        }
    }
    if let Some(k) = p.get("certificate-key")
        && !state::is_hex64(k)
    {
        problems.push(format!(
                "controlPlane.certificateKey: Invalid value: \"{k}\": certificate key must be a hex-encoded 32-byte string"
            ));
    }
    if let Some(ip) = p.get("apiserver-advertise-address")
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        problems.push(format!(
                "controlPlane.localAPIEndpoint.advertiseAddress: Invalid value: \"{ip}\": couldn't use \"{ip}\" as \"apiserver-advertise-address\", must be ipv4 or ipv6 address"
            ));
    }
    if !problems.is_empty() {
        return Err(fail(format!("[{}]", problems.join(", "))));
    }
    let name = node_name(&env, &p)?;
    let ip = p
        .get("apiserver-advertise-address")
        .map(str::to_string)
        .or_else(|| env.node_ip.clone())
        .unwrap_or_else(|| "127.0.0.1".to_string());
    let ignore = ignored(&p);

    println!("[preflight] Running pre-flight checks");
    let mut checks = local_checks(&root, false);
    checks.extend(cri_check(&root, p.get("cri-socket")));
    preflight(checks, &ignore)?;

    let mut store = Store::open(&env)?;
    // Discovery: the cluster-info ConfigMap from the endpoint.
    let Some(i) = store.by_endpoint(&endpoint) else {
        return Err(phase_fail(
            "preflight",
            format!(
                "couldn't validate the identity of the API Server: failed to request the cluster-info ConfigMap: Get \"https://{endpoint}/api/v1/namespaces/kube-public/configmaps/cluster-info?timeout=10s\": dial tcp {endpoint}: connect: connection refused"
            ),
        ));
    };
    let c = &store.clusters[i];
    let token_id = token.split('.').next().unwrap_or("");
    if !c.token_id_known(token_id, env.now) {
        return Err(phase_fail(
            "preflight",
            format!(
                "couldn't validate the identity of the API Server: could not find a JWS signature in the cluster-info ConfigMap for token ID \"{token_id}\""
            ),
        ));
    }
    if !c.valid_token(&token, env.now) {
        return Err(phase_fail(
            "preflight",
            "couldn't validate the identity of the API Server: failed to verify JWS signature of received cluster info object, can't trust this API server",
        ));
    }
    if !unsafe_skip && !hashes.iter().any(|h| h.to_lowercase() == c.ca_cert_hash) {
        return Err(phase_fail(
            "preflight",
            format!(
                "couldn't validate the identity of the API Server: cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"{}\" are pinned",
                c.ca_cert_hash
            ),
        ));
    }
    if tls_token != token && !tls_token.is_empty() && !c.valid_token(tls_token, env.now) {
        return Err(phase_fail(
            "kubelet-start",
            "error uploading crisocket: Unauthorized",
        ));
    }
    println!(
        "[preflight] Reading configuration from the \"kubeadm-config\" ConfigMap in namespace \"kube-system\"...\n[preflight] Use 'kubeadm init phase upload-config --config your-config.yaml' to re-upload it."
    );
    // KubeletVersion: the kubelet installed here must not be a newer minor
    // than the control plane.
    {
        let kubelet = state::installed_version(Some(&root));
        if let (Some((_, km, _)), Some((_, cm, _))) =
            (parse_version(&kubelet), parse_version(&c.kubernetes_version))
            && km > cm
        {
            preflight(
                vec![(
                    "KubeletVersion".into(),
                    format!(
                        "the kubelet version is higher than the control plane version. This is not a supported version skew and may lead to a malfunctional cluster. Kubelet version: \"{}\" Control plane version: \"{}\"",
                        kubelet.trim_start_matches('v'),
                        c.kubernetes_version.trim_start_matches('v')
                    ),
                )],
                &ignore,
            )?;
        }
    }

    if cp {
        if !c.stable_endpoint {
            return Err(phase_fail(
                "preflight",
                "\nOne or more conditions for hosting a new control plane instance is not satisfied.\n\nunable to add a new control plane instance to a cluster that doesn't have a stable controlPlaneEndpoint address\n\nPlease ensure that:\n* The cluster has a stable controlPlaneEndpoint address.\n* The certificates that must be shared among control plane instances are provided.\n\n",
            ));
        }
        println!("[preflight] Running pre-flight checks before initializing the new control plane instance");
        preflight(local_checks(&root, true), &ignore)?;
        // A kube-vip static pod that could not hold the VIP would leave this
        // control plane unable to take over the endpoint: refused.
        if let Some(vip) = c.vip.as_deref().and_then(|v| v.parse().ok())
            && let Some(Some(why)) = kube_vip_join_problem(&root, vip)
        {
            return Err(phase_fail("preflight", why));
        }
        println!("[preflight] Pulling images required for setting up a Kubernetes cluster");
        preflight(
            crate::images::preflight_pull(&env, &root, &c.kubernetes_version, c.image_repository.as_deref()),
            &ignore,
        )?;
        println!(
            "[preflight] This might take a minute or two, depending on the speed of your internet connection"
        );
        println!(
            "[preflight] You can also perform this action beforehand using 'kubeadm config images pull'"
        );
        match p.get("certificate-key") {
            None => {
                return Err(phase_fail(
                    "control-plane-prepare/certs",
                    "error creating PKI assets: failure loading certificate for CA: couldn't load the certificate file /etc/kubernetes/pki/ca.crt: open /etc/kubernetes/pki/ca.crt: no such file or directory",
                ));
            }
            Some(k) => {
                println!(
                    "[download-certs] Downloading the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace"
                );
                match &c.certificate_key {
                    Some(ck) if ck.expires > env.now => {
                        if !ck.key.eq_ignore_ascii_case(k) {
                            return Err(phase_fail(
                                "control-plane-prepare/download-certs",
                                "error downloading certs: error decoding secret data with provided key: cipher: message authentication failed",
                            ));
                        }
                    }
                    _ => {
                        return Err(phase_fail(
                            "control-plane-prepare/download-certs",
                            "error downloading certs: error downloading the secret: Secret \"kubeadm-certs\" was not found in the \"kube-system\" Namespace. This Secret might have expired. Please, run `kubeadm init phase upload-certs --upload-certs` on a control plane to generate a new one",
                        ));
                    }
                }
            }
        }
        println!("[certs] Using certificateDir folder \"/etc/kubernetes/pki\"");
        println!("[certs] Generating \"apiserver\" certificate and key");
        println!("[certs] Generating \"etcd/server\" certificate and key");
        println!("[certs] Generating \"etcd/peer\" certificate and key");
        println!("[certs] Valid certificates and keys now exist in \"/etc/kubernetes/pki\"");
        println!("[certs] Using the existing \"sa\" key");
        println!("[kubeconfig] Generating kubeconfig files");
        println!("[kubeconfig] Using kubeconfig folder \"/etc/kubernetes\"");
        println!("[kubeconfig] Writing \"admin.conf\" kubeconfig file");
        println!("[kubeconfig] Writing \"controller-manager.conf\" kubeconfig file");
        println!("[kubeconfig] Writing \"scheduler.conf\" kubeconfig file");
        println!("[control-plane] Using manifest folder \"/etc/kubernetes/manifests\"");
        println!("[control-plane] Creating static Pod manifest for \"kube-apiserver\"");
        println!("[control-plane] Creating static Pod manifest for \"kube-controller-manager\"");
        println!("[control-plane] Creating static Pod manifest for \"kube-scheduler\"");
        println!("[check-etcd] Checking that the etcd cluster is healthy");
        if let Some(m) = c.etcd_members.iter().find(|m| !c.member_healthy(m)) {
            return Err(phase_fail(
                "check-etcd",
                format!(
                    "etcd cluster is not healthy: failed to dial endpoint https://{}:2379 with maintenance client: context deadline exceeded",
                    m.ip
                ),
            ));
        }
    }

    // kubelet-start: the Node object.
    if let Some(n) = c.node(&name)
        && c.kubelet_up(n)
    {
        let status = if c.node_ready(n) { "Ready" } else { "NotReady" };
        if status == "Ready" {
            return Err(phase_fail(
                "kubelet-start",
                format!(
                    "a Node with name \"{name}\" and status \"{status}\" already exists in the cluster. You must delete the existing Node or change the name of this new joining Node"
                ),
            ));
        }
    }
    println!("[kubelet-start] Writing kubelet configuration to file \"/var/lib/kubelet/config.yaml\"");
    println!(
        "[kubelet-start] Writing kubelet environment file with flags to file \"/var/lib/kubelet/kubeadm-flags.env\""
    );
    println!("[kubelet-start] Starting the kubelet");
    println!(
        "[kubelet-check] Waiting for a healthy kubelet at http://127.0.0.1:10248/healthz. This can take up to 4m0s"
    );
    println!("[kubelet-check] The kubelet is healthy after 1.001234ms");
    println!("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap");

    let role = if cp { Role::ControlPlane } else { Role::Worker };
    let c = &mut store.clusters[i];
    let root_s = root.display().to_string();
    let installed = state::installed_version(Some(&root));
    let cluster_version = c.kubernetes_version.clone();
    match c.node_mut(&name) {
        Some(n) => {
            // A node that was reset but not deleted re-registers.
            n.node_root = Some(root_s);
            n.kubelet_version = Some(installed.clone());
            n.control_plane_version = cp.then(|| cluster_version.clone());
            n.internal_ip = ip.clone();
            n.role = role.clone();
        }
        None => c.nodes.push(Node {
            name: name.clone(),
            role: role.clone(),
            internal_ip: ip.clone(),
            created: env.now,
            unschedulable: false,
            node_root: Some(root_s),
            kubelet_version: Some(installed.clone()),
            control_plane_version: cp.then(|| cluster_version.clone()),
        }),
    }
    if cp && !c.etcd_members.iter().any(|m| m.name == name) {
        c.etcd_members.push(EtcdMember {
            id: state::random_u64(),
            name: name.clone(),
            ip: ip.clone(),
        });
    }
    let c = c.clone();
    if cp {
        crate::certs::create(&root, env.now, c.created + crate::certs::CA_TTL, false)?;
    }
    write_node_files(&root, &c, &name, role, false)?;
    store.save(&c)?;
    drop(store);

    if cp {
        print!(
            "[etcd] Announced new etcd member joining to the existing etcd cluster
[etcd] Creating static Pod manifest for \"etcd\"
[etcd] Waiting for the new etcd member to join the cluster. This can take up to 40s
[mark-control-plane] Marking the node {name} as control-plane by adding the labels: [node-role.kubernetes.io/control-plane node.kubernetes.io/exclude-from-external-load-balancers]
[mark-control-plane] Marking the node {name} as control-plane by adding the taints [node-role.kubernetes.io/control-plane:NoSchedule]

This node has joined the cluster and a new control plane instance was created:

* Certificate signing request was sent to apiserver and approval was received.
* The Kubelet was informed of the new secure connection details.
* Control plane label and taint were applied to the new node.
* The Kubernetes control plane instances scaled up.
* A new etcd member was added to the local/stacked etcd cluster.

To start administering your cluster from this node, you need to run the following as a regular user:

\tmkdir -p $HOME/.kube
\tsudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config
\tsudo chown $(id -u):$(id -g) $HOME/.kube/config

Run 'kubectl get nodes' to see this node join the cluster.

"
        );
    } else {
        print!(
            "
This node has joined the cluster:
* Certificate signing request was sent to apiserver and a response was received.
* The Kubelet was informed of the new secure connection details.

Run 'kubectl get nodes' on the control-plane to see this node join the cluster.

"
        );
    }
    Ok(())
}

// ------------------------------------------------------------------ reset

const RESET_FLAGS: [Spec; 7] = [
    flag_s("force", 'f'),
    flag("cleanup-tmp-dir"),
    val("ignore-preflight-errors"),
    val("cri-socket"),
    val("kubeconfig"),
    val("skip-phases"),
    flag("dry-run"),
];

fn reset(argv: &[String]) -> Res {
    let p = parse(argv, &RESET_FLAGS)?;
    if let Some(a) = p.args.first() {
        return Err(fail(format!("unknown command \"{a}\" for \"kubeadm reset\"")));
    }
    let env = Env::from_process()?;
    let root = env.root()?.to_path_buf();
    let local = state::read_local(&root);
    println!("[preflight] Running pre-flight checks");
    if !p.on("force") {
        eprintln!(
            "W{} reset.go:123] [reset] WARNING: Changes made to this host by 'kubeadm init' or 'kubeadm join' will be reverted.",
            klog_time(env.now)
        );
        print!("[reset] Are you sure you want to proceed? [y/N]: ");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        if !matches!(line.trim(), "y" | "Y") {
            return Err(phase_fail("preflight", "aborted reset operation"));
        }
    }
    if p.on("dry-run") {
        println!("[dryrun] Would remove the local state of this node");
        return Ok(());
    }
    let mut warnings = Vec::new();
    if let Some(local) = &local {
        let mut store = Store::open(&env)?;
        if let Some(i) = store.by_id(&local.cluster_id) {
            let alive = store.clusters[i].alive();
            let c = &mut store.clusters[i];
            if local.role == Role::ControlPlane
                && let Some(pos) = c.etcd_members.iter().position(|m| m.name == local.node_name)
            {
                // remove-etcd-member phase: needs a working etcd.
                let total = c.etcd_members.len();
                let healthy = c.etcd_members.iter().filter(|m| c.member_healthy(m)).count();
                let keeps_quorum = alive && healthy > total / 2 && healthy - 1 > (total - 1) / 2;
                if total == 1 || keeps_quorum {
                    c.etcd_members.remove(pos);
                } else {
                    warnings.push(
                            "[reset] Failed to remove etcd member: etcdserver: re-configuration failed due to not enough started members\n.Please manually remove this etcd member using etcdctl".to_string(),
                        );
                }
            }
            let root_s = root.display().to_string();
            if let Some(n) = c.node_mut(&local.node_name)
                && n.node_root.as_deref() == Some(root_s.as_str())
            {
                n.node_root = None;
            }
            let c = c.clone();
            store.save(&c)?;
        }
    } else {
        eprintln!(
            "W{} removeetcdmember.go:106] [reset] No kubeadm config, using etcd pod spec to get data directory",
            klog_time(env.now)
        );
    }
    for w in &warnings {
        eprintln!("W{} removeetcdmember.go:61] {w}", klog_time(env.now));
    }
    let is_cp = root.join("etc/kubernetes/manifests/etcd.yaml").exists();
    let files = [
        "admin.conf",
        "super-admin.conf",
        "kubelet.conf",
        "bootstrap-kubelet.conf",
        "controller-manager.conf",
        "scheduler.conf",
    ];
    let mut dirs = vec![
        "/etc/kubernetes/manifests",
        "/var/lib/kubelet",
        "/etc/kubernetes/pki",
    ];
    // All removals first, then the report (a closed stdout cannot leave a
    // half-reset host).
    clear_dir(&root.join("var/lib/etcd"));
    clear_dir(&root.join("etc/kubernetes/manifests"));
    clear_dir(&root.join("var/lib/kubelet"));
    let _ = fs::remove_dir_all(root.join("etc/kubernetes/pki"));
    if p.on("cleanup-tmp-dir") {
        let _ = fs::remove_dir_all(root.join("etc/kubernetes/tmp"));
        dirs.push("/etc/kubernetes/tmp");
    }
    for f in files {
        let _ = fs::remove_file(root.join("etc/kubernetes").join(f));
    }
    if is_cp {
        println!("[reset] Deleted contents of the etcd data directory: /var/lib/etcd");
    }
    println!("[reset] Stopping the kubelet service");
    println!("[reset] Unmounting mounted directories in \"/var/lib/kubelet\"");
    println!("[reset] Deleting contents of directories: [{}]", dirs.join(" "));
    println!(
        "[reset] Deleting files: [{}]",
        files
            .iter()
            .map(|f| format!("/etc/kubernetes/{f}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    print!(
        "
The reset process does not clean CNI configuration. To do so, you must remove /etc/cni/net.d

The reset process does not reset or clean up iptables rules or IPVS tables.
If you wish to reset iptables, you must do so manually by using the \"iptables\" command.

If your cluster was setup to utilize IPVS, run ipvsadm --clear (or similar)
to reset your system's IPVS tables.

The reset process does not clean your kubeconfig files and you must remove them manually.
Please, check the contents of the $HOME/.kube/config file.
"
    );
    Ok(())
}

fn clear_dir(d: &Path) {
    if let Ok(entries) = fs::read_dir(d) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                let _ = fs::remove_dir_all(&p);
            } else {
                let _ = fs::remove_file(&p);
            }
        }
    }
}

/// klog's `MMDD hh:mm:ss.uuuuuu   PID` prefix.
pub fn klog_time(now: u64) -> String {
    let t = state::rfc3339(now);
    format!(
        "{}{} {}.000000 {:>7}",
        &t[5..7],
        &t[8..10],
        &t[11..19],
        std::process::id()
    )
}
