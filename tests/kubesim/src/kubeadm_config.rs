//! `kubeadm init --config FILE` and `kubeadm join --config FILE`: the file
//! is read as YAML (JSON being YAML too), checked with rpool_proto's
//! `check_kubeadm_config_for` (unknown fields, wrong apiVersion or kind,
//! bad values: refused, stricter than kubeadm, which only warns about
//! unknown fields), and turned into the flag values the flag path
//! validates, so both paths share every later check. Flags other than the
//! few kubeadm allows with `--config` are refused first
//! (`ValidateMixedArguments`).
//!
//! Test hook: when `KUBESIM_CONFIG_LOG` is set, one line `PATH MODE`
//! (octal permission bits of the file) is appended to it per read.

use std::fs;

use rpool_proto::kube::kubeadm_check::{KubeadmCommand, check_kubeadm_config_for};
use rpool_proto::kube::yaml::{Node, parse};

use crate::flags::Parsed;
use crate::state::{Fail, Res};

/// Flags real kubeadm accepts together with `--config`
/// (`validation.isAllowedFlag`); `skip-*` flags are allowed too.
const CONFIG_ALLOWED: [&str; 11] = [
    "config",
    "ignore-preflight-errors",
    "dry-run",
    "kubeconfig",
    "node-name",
    "kubeconfig-dir",
    "upload-certs",
    "print-join-command",
    "rootfs",
    "v",
    "log-file",
];

/// Where each flag's value is in the file: (flag, kind, path). A path
/// element `0` is the first item of a list.
const INIT_FIELDS: [(&str, &str, &[&str]); 13] = [
    (
        "control-plane-endpoint",
        "ClusterConfiguration",
        &["controlPlaneEndpoint"],
    ),
    (
        "pod-network-cidr",
        "ClusterConfiguration",
        &["networking", "podSubnet"],
    ),
    (
        "service-cidr",
        "ClusterConfiguration",
        &["networking", "serviceSubnet"],
    ),
    (
        "service-dns-domain",
        "ClusterConfiguration",
        &["networking", "dnsDomain"],
    ),
    (
        "kubernetes-version",
        "ClusterConfiguration",
        &["kubernetesVersion"],
    ),
    ("image-repository", "ClusterConfiguration", &["imageRepository"]),
    ("node-name", "InitConfiguration", &["nodeRegistration", "name"]),
    (
        "cri-socket",
        "InitConfiguration",
        &["nodeRegistration", "criSocket"],
    ),
    ("token", "InitConfiguration", &["bootstrapTokens", "0", "token"]),
    ("token-ttl", "InitConfiguration", &["bootstrapTokens", "0", "ttl"]),
    ("certificate-key", "InitConfiguration", &["certificateKey"]),
    (
        "apiserver-advertise-address",
        "InitConfiguration",
        &["localAPIEndpoint", "advertiseAddress"],
    ),
    (
        "apiserver-bind-port",
        "InitConfiguration",
        &["localAPIEndpoint", "bindPort"],
    ),
];

const JOIN_FIELDS: [(&str, &str, &[&str]); 6] = [
    (
        "discovery-token",
        "JoinConfiguration",
        &["discovery", "bootstrapToken", "token"],
    ),
    (
        "tls-bootstrap-token",
        "JoinConfiguration",
        &["discovery", "tlsBootstrapToken"],
    ),
    ("node-name", "JoinConfiguration", &["nodeRegistration", "name"]),
    (
        "cri-socket",
        "JoinConfiguration",
        &["nodeRegistration", "criSocket"],
    ),
    (
        "certificate-key",
        "JoinConfiguration",
        &["controlPlane", "certificateKey"],
    ),
    (
        "apiserver-advertise-address",
        "JoinConfiguration",
        &["controlPlane", "localAPIEndpoint", "advertiseAddress"],
    ),
];

/// Lists copied whole: (flag, kind, path).
const LISTS: [(&str, &str, &[&str]); 4] = [
    (
        "apiserver-cert-extra-sans",
        "ClusterConfiguration",
        &["apiServer", "certSANs"],
    ),
    (
        "ignore-preflight-errors",
        "InitConfiguration",
        &["nodeRegistration", "ignorePreflightErrors"],
    ),
    (
        "ignore-preflight-errors",
        "JoinConfiguration",
        &["nodeRegistration", "ignorePreflightErrors"],
    ),
    (
        "discovery-token-ca-cert-hash",
        "JoinConfiguration",
        &["discovery", "bootstrapToken", "caCertHashes"],
    ),
];

/// kubeadm's error shape.
fn fail(msg: impl AsRef<str>) -> Fail {
    Fail::new(format!(
        "{}\nTo see the stack trace of this error execute with --v=5 or higher",
        msg.as_ref()
    ))
}

/// kubeadm's `ValidateMixedArguments`: with `--config`, every other flag
/// set must be an allowed one. pflag visits flags in lexicographic order,
/// as the `BTreeMap` of parsed values does.
pub fn check_mixed(p: &Parsed) -> Res {
    if !p.has("config") {
        return Ok(());
    }
    let mixed: Vec<&str> = p
        .values
        .keys()
        .map(String::as_str)
        .filter(|f| !CONFIG_ALLOWED.contains(f) && !f.starts_with("skip-"))
        .collect();
    if mixed.is_empty() {
        return Ok(());
    }
    Err(fail(format!(
        "can not mix '--config' with arguments [{}]",
        mixed.join(" ")
    )))
}

fn at<'a>(node: &'a Node, path: &[&str]) -> Option<&'a Node> {
    path.iter().try_fold(node, |n, key| match key.parse::<usize>() {
        Ok(i) => n.items().get(i),
        Err(_) => n.get(key),
    })
}

fn scalar(node: &Node) -> Option<String> {
    match node {
        Node::Str(s) => Some(s.clone()),
        Node::Int(i) => Some(i.to_string()),
        Node::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Reads and checks `--config` for `command` and returns the flag values it
/// stands for, with the allowed flags given on the command line on top
/// (`--node-name` replaces the file's). For join, the file's
/// `apiServerEndpoint` is the positional argument (a positional one given
/// is ignored, as in kubeadm).
pub fn config_flags(p: &Parsed, command: KubeadmCommand) -> Res<Parsed> {
    check_mixed(p)?;
    let path = p.get("config").unwrap_or("");
    let text = fs::read_to_string(path).map_err(|e| {
        fail(format!(
            "unable to read config from \"{path}\" : open {path}: {}",
            go_io_error(&e)
        ))
    })?;
    log_read(path)?;
    check_kubeadm_config_for(command, &text)
        .map_err(|e| fail(format!("unable to decode config from \"{path}\": {e}")))?;
    let docs = parse(&text).map_err(|e| fail(format!("unable to decode config from \"{path}\": {e}")))?;
    let doc = |kind: &str| {
        docs.iter()
            .find(|d| d.get("kind").and_then(Node::as_str) == Some(kind))
    };
    let mut out = Parsed::default();
    let fields: &[(&str, &str, &[&str])] = match command {
        KubeadmCommand::Init => &INIT_FIELDS,
        KubeadmCommand::Join => &JOIN_FIELDS,
    };
    for (flag, kind, path) in fields {
        if let Some(value) = doc(kind).and_then(|d| at(d, path)).and_then(scalar) {
            out.values.entry((*flag).to_owned()).or_default().push(value);
        }
    }
    for (flag, kind, path) in LISTS {
        for item in doc(kind)
            .and_then(|d| at(d, path))
            .map(Node::items)
            .unwrap_or_default()
        {
            if let Some(value) = scalar(item) {
                out.values.entry(flag.to_owned()).or_default().push(value);
            }
        }
    }
    if let Some(join) = doc("JoinConfiguration") {
        if join.get("controlPlane").is_some_and(|c| *c != Node::Null) {
            out.values.insert("control-plane".into(), vec!["true".into()]);
        }
        if join.at(&["discovery", "bootstrapToken", "unsafeSkipCAVerification"]) == Some(&Node::Bool(true)) {
            out.values.insert(
                "discovery-token-unsafe-skip-ca-verification".into(),
                vec!["true".into()],
            );
        }
        if let Some(ep) = join
            .at(&["discovery", "bootstrapToken", "apiServerEndpoint"])
            .and_then(scalar)
        {
            out.args.push(ep);
        }
    }
    for flag in [
        "node-name",
        "ignore-preflight-errors",
        "skip-phases",
        "v",
        "rootfs",
        "upload-certs",
    ] {
        let given = p.all(flag);
        if flag == "node-name" && !given.is_empty() {
            out.values.remove(flag);
        }
        for value in given {
            out.values.entry(flag.to_owned()).or_default().push(value);
        }
    }
    Ok(out)
}

fn log_read(path: &str) -> Res {
    let Some(log) = std::env::var_os("KUBESIM_CONFIG_LOG") else {
        return Ok(());
    };
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0);
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| Fail::new(format!("kubesim: KUBESIM_CONFIG_LOG: {e}")))?;
    writeln!(f, "{path} {mode:o}").map_err(|e| Fail::new(format!("kubesim: KUBESIM_CONFIG_LOG: {e}")))
}

/// Go's wording for the common open errors.
pub fn go_io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}
