//! What kubeadm refuses in a `--config` file: `check_kubeadm_config`.
//!
//! Std, [`super::yaml`] and [`super::cidr`] only; the controller checks
//! the files it writes with it and kubesim checks what it is given.
//! Rules, per document:
//!
//! - `apiVersion` and `kind` are present; kubeadm kinds are
//!   `kubeadm.k8s.io/v1beta4` (InitConfiguration, ClusterConfiguration,
//!   JoinConfiguration); KubeletConfiguration (kubelet.config.k8s.io/
//!   v1beta1) and KubeProxyConfiguration (kubeproxy.config.k8s.io/
//!   v1alpha1) pass unread; any other kind, and a kind given twice, fail.
//! - Every field of the kubeadm kinds is known, at every level, and has
//!   the right type (a quoted `"6443"` is not a port). Real kubeadm only
//!   warns about unknown fields; rpool writes these files itself, so a typo
//!   is a bug worth failing on. Real kubeadm 1.31-1.33 still reads the
//!   deprecated v1beta3; rpool never writes it and it is refused here.
//! - Values kubeadm validates: networks (one, or two of different
//!   families), service network at most 20 host bits and at least 10
//!   addresses, pod network against the node mask (24/64 or the
//!   controller manager's `node-cidr-mask-size-ipv4/6`, at most 16 bits
//!   apart), addresses and ports, `controlPlaneEndpoint` as `host[:port]`, the
//!   CRI socket's `unix://` scheme, taint effects, bootstrap token and CA
//!   hash formats, the certificate key, image pull policy, names.
//! - JoinConfiguration: `discovery` holds exactly one of `bootstrapToken`
//!   (with `token`, `apiServerEndpoint` and `caCertHashes`, unless
//!   `unsafeSkipCAVerification`) and `file` (with `kubeConfigPath`).
//!
//! (Flags mixed with `--config` are kubesim's own check, in its kubeadm
//! command-line model.)
//!
//! Errors name the document kind and field path; secrets are never echoed.

use std::net::IpAddr;

use super::cidr::{Cidr, Family};
use super::kubeadm_schema::{CLUSTER, INIT, JOIN, Schema, T};
use super::yaml::{Node, parse};

/// The kubeadm configuration API this checks.
pub const KUBEADM_API_VERSION: &str = "kubeadm.k8s.io/v1beta4";
/// Longest node, cluster or DNS name (RFC 1123 subdomain).
pub const NAME_MAX_CHARS: usize = 253;
/// Longest image repository.
pub const IMAGE_REPOSITORY_MAX_CHARS: usize = 255;
/// kubeadm's `MaximumBitsForServiceSubnet`.
const SERVICE_HOST_BITS_MAX: u8 = 20;
/// kubeadm's `MinimumAddressesInServiceSubnet`.
const SERVICE_ADDRESSES_MIN: u128 = 10;
/// kubeadm's `PodSubnetNodeMaskMaxDiff`.
const POD_NODE_MASK_MAX_DIFF: u8 = 16;

/// Which kubeadm command a file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeadmCommand {
    Init,
    Join,
}

/// Checks a kubeadm configuration file (any mix of the supported kinds).
/// The error lists every problem found, separated by `; `.
pub fn check_kubeadm_config(yaml: &str) -> Result<(), String> {
    check_documents(yaml).map(|_| ())
}

/// Like [`check_kubeadm_config`], and the file holds what `command` reads:
/// `init` an InitConfiguration or ClusterConfiguration, `join` a
/// JoinConfiguration.
pub fn check_kubeadm_config_for(command: KubeadmCommand, yaml: &str) -> Result<(), String> {
    let kinds = check_documents(yaml)?;
    let has = |k: &str| kinds.iter().any(|kind| kind == k);
    match command {
        KubeadmCommand::Init if !has("InitConfiguration") && !has("ClusterConfiguration") => {
            Err("kubeadm init --config: the file holds no InitConfiguration or ClusterConfiguration".into())
        }
        KubeadmCommand::Join if !has("JoinConfiguration") => {
            Err("kubeadm join --config: the file holds no JoinConfiguration".into())
        }
        _ => Ok(()),
    }
}

/// Value checks of one kind.
type Checks = fn(&Node, &mut Vec<String>);

/// Checks every document; returns the kinds found.
fn check_documents(yaml: &str) -> Result<Vec<String>, String> {
    let docs = parse(yaml)?;
    if docs.is_empty() {
        return Err("the file holds no configuration document".into());
    }
    let mut errors = Vec::new();
    let mut kinds: Vec<String> = Vec::new();
    for doc in &docs {
        let api = doc.get("apiVersion").and_then(Node::as_str);
        let Some(kind) = doc.get("kind").and_then(Node::as_str) else {
            errors.push("a document has no kind".to_owned());
            continue;
        };
        if kinds.iter().any(|k| k == kind) {
            errors.push(format!("kind {kind:?} is specified twice"));
            continue;
        }
        kinds.push(kind.to_owned());
        let (expected_api, schema, checks): (&str, Option<Schema>, Checks) = match kind {
            "InitConfiguration" => (KUBEADM_API_VERSION, Some(INIT), check_init),
            "ClusterConfiguration" => (KUBEADM_API_VERSION, Some(CLUSTER), check_cluster),
            "JoinConfiguration" => (KUBEADM_API_VERSION, Some(JOIN), check_join),
            "KubeletConfiguration" => ("kubelet.config.k8s.io/v1beta1", None, |_, _| {}),
            "KubeProxyConfiguration" => ("kubeproxy.config.k8s.io/v1alpha1", None, |_, _| {}),
            other => {
                errors.push(format!(
                    "kind {other:?} is not accepted (accepted InitConfiguration, ClusterConfiguration, JoinConfiguration, KubeletConfiguration, KubeProxyConfiguration)"
                ));
                continue;
            }
        };
        if api != Some(expected_api) {
            errors.push(format!(
                "{kind}.apiVersion: {api:?} is not accepted (accepted {expected_api})"
            ));
            continue;
        }
        if let Some(fields) = schema {
            check_type(doc, &T::Obj(fields), kind, &mut errors);
            checks(doc, &mut errors);
        }
    }
    if errors.is_empty() {
        Ok(kinds)
    } else {
        Err(errors.join("; "))
    }
}

/// Unknown fields and wrong types, recursively.
fn check_type(node: &Node, ty: &T, path: &str, errors: &mut Vec<String>) {
    let expected = match (ty, node) {
        (T::Any, _) | (_, Node::Null) => return,
        (T::Str, Node::Str(_)) | (T::Int, Node::Int(_)) | (T::Bool, Node::Bool(_)) => return,
        (T::List(item), Node::Seq(items)) => {
            for (i, v) in items.iter().enumerate() {
                check_type(v, item, &format!("{path}[{i}]"), errors);
            }
            return;
        }
        (T::Map(value), Node::Map(pairs)) => {
            for (k, v) in pairs {
                check_type(v, value, &format!("{path}.{k}"), errors);
            }
            return;
        }
        (T::Obj(fields), Node::Map(pairs)) => {
            for (k, v) in pairs {
                match fields.iter().find(|(name, _)| name == k) {
                    Some((_, t)) => check_type(v, t, &format!("{path}.{k}"), errors),
                    None => errors.push(format!("{path}: unknown field {k:?}")),
                }
            }
            return;
        }
        (T::Str, _) => "a string",
        (T::Int, _) => "an integer",
        (T::Bool, _) => "a boolean",
        (T::List(_), _) => "a list",
        (T::Map(_) | T::Obj(_), _) => "a mapping",
    };
    errors.push(format!("{path}: expected {expected}, found {}", node.type_name()));
}

/// The string at `path`, if set.
fn text<'a>(doc: &'a Node, path: &[&str]) -> Option<&'a str> {
    doc.at(path).and_then(Node::as_str).filter(|s| !s.is_empty())
}

fn check_node_registration(doc: &Node, kind: &str, errors: &mut Vec<String>) {
    let at = |f: &str| format!("{kind}.nodeRegistration.{f}");
    if let Some(name) = text(doc, &["nodeRegistration", "name"])
        && !is_dns_subdomain(name)
    {
        errors.push(format!(
            "{}: {name:?} is not a lowercase RFC 1123 subdomain",
            at("name")
        ));
    }
    if let Some(socket) = text(doc, &["nodeRegistration", "criSocket"])
        && !is_cri_socket(socket)
    {
        errors.push(format!(
            "{}: {socket:?}: only URL scheme \"unix\" is supported",
            at("criSocket")
        ));
    }
    if let Some(policy) = text(doc, &["nodeRegistration", "imagePullPolicy"])
        && !["Always", "IfNotPresent", "Never"].contains(&policy)
    {
        errors.push(format!(
            "{}: {policy:?} is not accepted (accepted Always, IfNotPresent, Never)",
            at("imagePullPolicy")
        ));
    }
    let taints = doc
        .at(&["nodeRegistration", "taints"])
        .map(Node::items)
        .unwrap_or_default();
    for (i, taint) in taints.iter().enumerate() {
        if !text(taint, &["key"]).is_some_and(is_label_key) {
            errors.push(format!("{}[{i}].key: required, a label key", at("taints")));
        }
        let effect = text(taint, &["effect"]);
        if !effect.is_some_and(|e| ["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&e)) {
            errors.push(format!("{}[{i}].effect: {effect:?} is not accepted (accepted NoSchedule, PreferNoSchedule, NoExecute)", at("taints")));
        }
    }
    let args = doc
        .at(&["nodeRegistration", "kubeletExtraArgs"])
        .map(Node::items)
        .unwrap_or_default();
    check_args(args, &at("kubeletExtraArgs"), errors);
}

fn check_args(args: &[Node], path: &str, errors: &mut Vec<String>) {
    for (i, arg) in args.iter().enumerate() {
        if text(arg, &["name"]).is_none() {
            errors.push(format!("{path}[{i}]: argument has no name"));
        }
    }
}

fn check_api_endpoint(endpoint: Option<&Node>, path: &str, errors: &mut Vec<String>) {
    let Some(endpoint) = endpoint else { return };
    if let Some(address) = text(endpoint, &["advertiseAddress"])
        && address.parse::<IpAddr>().is_err()
    {
        errors.push(format!(
            "{path}.advertiseAddress: {address:?} is not an IP address"
        ));
    }
    if let Some(Node::Int(port)) = endpoint.get("bindPort")
        && !(1..=65535).contains(port)
    {
        errors.push(format!(
            "{path}.bindPort: {port} is out of range (accepted 1..=65535)"
        ));
    }
}

fn check_certificate_key(doc: &Node, path: &[&str], field: &str, errors: &mut Vec<String>) {
    if let Some(key) = text(doc, path)
        && !(key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        errors.push(format!(
            "{field}: the key must be an AES key of 32 bytes, hex encoded (value not shown)"
        ));
    }
}

fn check_init(doc: &Node, errors: &mut Vec<String>) {
    check_node_registration(doc, "InitConfiguration", errors);
    check_api_endpoint(
        doc.get("localAPIEndpoint"),
        "InitConfiguration.localAPIEndpoint",
        errors,
    );
    check_certificate_key(
        doc,
        &["certificateKey"],
        "InitConfiguration.certificateKey",
        errors,
    );
    let tokens = doc.get("bootstrapTokens").map(Node::items).unwrap_or_default();
    for (i, token) in tokens.iter().enumerate() {
        if !text(token, &["token"]).is_some_and(is_bootstrap_token) {
            errors.push(format!(
                "InitConfiguration.bootstrapTokens[{i}].token: required, of the form [a-z0-9]{{6}}.[a-z0-9]{{16}} (value not shown)"
            ));
        }
    }
}

fn check_cluster(doc: &Node, errors: &mut Vec<String>) {
    let at = |f: &str| format!("ClusterConfiguration.{f}");
    if let Some(endpoint) = text(doc, &["controlPlaneEndpoint"])
        && !is_host_port(endpoint, false)
    {
        errors.push(format!(
            "{}: {endpoint:?} is not an IP address or DNS name with an optional port",
            at("controlPlaneEndpoint")
        ));
    }
    if let Some(version) = doc.get("kubernetesVersion")
        && version.as_str().is_some_and(str::is_empty)
    {
        errors.push(format!("{}: empty", at("kubernetesVersion")));
    }
    for (i, san) in doc
        .at(&["apiServer", "certSANs"])
        .map(Node::items)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let ok = san.as_str().is_some_and(|s| {
            s.parse::<IpAddr>().is_ok() || is_dns_subdomain(s.strip_prefix("*.").unwrap_or(s))
        });
        if !ok {
            errors.push(format!(
                "{}[{i}]: not an IP address or DNS name",
                at("apiServer.certSANs")
            ));
        }
    }
    for key in ["imageRepository"] {
        if let Some(repo) = text(doc, &[key])
            && !is_image_repository(repo)
        {
            errors.push(format!("{}: {repo:?}: invalid image repository format", at(key)));
        }
    }
    if let Some(domain) = text(doc, &["networking", "dnsDomain"])
        && !is_dns_subdomain(domain)
    {
        errors.push(format!(
            "{}: {domain:?} is not a lowercase RFC 1123 subdomain",
            at("networking.dnsDomain")
        ));
    }
    if doc.at(&["etcd", "local"]).is_some() && doc.at(&["etcd", "external"]).is_some() {
        errors.push(format!(
            "{}: local and external are mutually exclusive",
            at("etcd")
        ));
    }
    if let Some(algorithm) = text(doc, &["encryptionAlgorithm"])
        && !["RSA-2048", "RSA-3072", "RSA-4096", "ECDSA-P256"].contains(&algorithm)
    {
        errors.push(format!(
            "{}: {algorithm:?} is not accepted (accepted RSA-2048, RSA-3072, RSA-4096, ECDSA-P256)",
            at("encryptionAlgorithm")
        ));
    }
    for component in ["apiServer", "controllerManager", "scheduler"] {
        let args = doc
            .at(&[component, "extraArgs"])
            .map(Node::items)
            .unwrap_or_default();
        check_args(args, &at(&format!("{component}.extraArgs")), errors);
    }
    if let Some(services) = text(doc, &["networking", "serviceSubnet"])
        && let Some(subnets) = subnets(services, &at("networking.serviceSubnet"), errors)
    {
        for s in subnets {
            let host_bits = s.host_bits();
            if host_bits > SERVICE_HOST_BITS_MAX {
                errors.push(format!(
                    "{}: {s}: specified service subnet is too large; for {}-bit addresses, the mask must be >= {}",
                    at("networking.serviceSubnet"),
                    s.family().bits(),
                    s.family().bits() - SERVICE_HOST_BITS_MAX
                ));
            } else if s.range().len() < SERVICE_ADDRESSES_MIN {
                errors.push(format!(
                    "{}: {s}: subnet with {} address(es) is too small, the minimum is {SERVICE_ADDRESSES_MIN}",
                    at("networking.serviceSubnet"),
                    s.range().len()
                ));
            }
        }
    }
    if let Some(pods) = text(doc, &["networking", "podSubnet"])
        && let Some(subnets) = subnets(pods, &at("networking.podSubnet"), errors)
    {
        let args = doc
            .at(&["controllerManager", "extraArgs"])
            .map(Node::items)
            .unwrap_or_default();
        for s in subnets {
            let (flag, default) = match s.family() {
                Family::V4 => ("node-cidr-mask-size-ipv4", 24),
                Family::V6 => ("node-cidr-mask-size-ipv6", 64),
            };
            let node_mask = args
                .iter()
                .rev()
                .find(|a| text(a, &["name"]) == Some(flag))
                .and_then(|a| text(a, &["value"]))
                .map_or(Some(default), |v| v.parse::<u8>().ok());
            let Some(node_mask) = node_mask else {
                errors.push(format!(
                    "ClusterConfiguration.controllerManager.extraArgs: {flag} is not an integer"
                ));
                continue;
            };
            if s.prefix() > node_mask {
                errors.push(format!(
                    "{}: {s}: the size of pod subnet with mask {} is smaller than the size of node subnet with mask {node_mask}",
                    at("networking.podSubnet"),
                    s.prefix()
                ));
            } else if node_mask - s.prefix() > POD_NODE_MASK_MAX_DIFF {
                errors.push(format!(
                    "{}: {s}: pod subnet mask ({}) and node-mask ({node_mask}) difference is greater than {POD_NODE_MASK_MAX_DIFF}",
                    at("networking.podSubnet"),
                    s.prefix()
                ));
            }
        }
    }
}

/// One network, or two of different families (dual-stack), Go-style
/// (host bits masked).
fn subnets(text: &str, path: &str, errors: &mut Vec<String>) -> Option<Vec<Cidr>> {
    let mut out = Vec::new();
    for part in text.split(',') {
        match Cidr::parse(part, false) {
            Ok(c) => out.push(c),
            Err(why) => {
                errors.push(format!("{path}: {part:?} {why}"));
                return None;
            }
        }
    }
    let ok = match out.as_slice() {
        [_] => true,
        [a, b] => a.family() != b.family(),
        _ => false,
    };
    if !ok {
        errors.push(format!(
            "{path}: expected one (IPv4 or IPv6) CIDR or two CIDRs from each family for dual-stack networking"
        ));
        return None;
    }
    Some(out)
}

fn check_join(doc: &Node, errors: &mut Vec<String>) {
    check_node_registration(doc, "JoinConfiguration", errors);
    check_api_endpoint(
        doc.at(&["controlPlane", "localAPIEndpoint"]),
        "JoinConfiguration.controlPlane.localAPIEndpoint",
        errors,
    );
    check_certificate_key(
        doc,
        &["controlPlane", "certificateKey"],
        "JoinConfiguration.controlPlane.certificateKey",
        errors,
    );
    if let Some(path) = text(doc, &["caCertPath"])
        && !path.starts_with('/')
    {
        errors.push(format!(
            "JoinConfiguration.caCertPath: {path:?} is not an absolute path"
        ));
    }
    let d = "JoinConfiguration.discovery";
    let Some(discovery) = doc.get("discovery") else {
        errors.push(format!("{d}: required (bootstrapToken or file)"));
        return;
    };
    match (discovery.get("bootstrapToken"), discovery.get("file")) {
        (None, None) => errors.push(format!("{d}: bootstrapToken or file must be set")),
        (Some(_), Some(_)) => errors.push(format!("{d}: bootstrapToken and file cannot both be set")),
        (None, Some(file)) => {
            if text(file, &["kubeConfigPath"]).is_none() {
                errors.push(format!("{d}.file.kubeConfigPath: required"));
            }
        }
        (Some(token), None) => {
            if !text(token, &["token"]).is_some_and(is_bootstrap_token) {
                errors.push(format!("{d}.bootstrapToken.token: required, of the form [a-z0-9]{{6}}.[a-z0-9]{{16}} (value not shown)"));
            }
            match text(token, &["apiServerEndpoint"]) {
                None => errors.push(format!("{d}.bootstrapToken.apiServerEndpoint: required")),
                Some(e) if !is_host_port(e, true) => errors.push(format!(
                    "{d}.bootstrapToken.apiServerEndpoint: {e:?} is not an address with a port"
                )),
                Some(_) => {}
            }
            let hashes = token.get("caCertHashes").map(Node::items).unwrap_or_default();
            let skip = token.get("unsafeSkipCAVerification") == Some(&Node::Bool(true));
            if hashes.is_empty() && !skip {
                errors.push(format!("{d}.bootstrapToken: using token-based discovery without caCertHashes can be unsafe (set unsafeSkipCAVerification to continue)"));
            }
            for (i, hash) in hashes.iter().enumerate() {
                if !hash.as_str().is_some_and(is_ca_hash) {
                    errors.push(format!(
                        "{d}.bootstrapToken.caCertHashes[{i}]: accepted sha256:<64 hex digits>"
                    ));
                }
            }
        }
    }
}

/// `host[:port]` (IPv6 in brackets when a port follows); the port
/// required when `port_required`.
/// `host[:port]` (`port_required`: `host:port`), host an IP address
/// (IPv6 in brackets with a port) or a DNS name.
pub fn is_host_port(s: &str, port_required: bool) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return !port_required;
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let port_ok = match port {
        Some(p) => p.parse::<u16>().is_ok_and(|p| p > 0),
        None => !port_required,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    port_ok && (host.parse::<IpAddr>().is_ok() || is_dns_subdomain(host))
}

/// A lowercase RFC 1123 subdomain (node, cluster and DNS names).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= NAME_MAX_CHARS
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A label or taint key: `[prefix/]name`, the name 1..=63 of
/// alphanumerics, '-', '_' and '.', starting and ending alphanumeric.
pub fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(is_dns_subdomain)
}

/// `unix://` and an absolute path (the only scheme kubeadm takes).
pub fn is_cri_socket(s: &str) -> bool {
    s.strip_prefix("unix://")
        .is_some_and(|path| path.starts_with('/') && path.len() > 1 && !path.contains(char::is_whitespace))
}

/// `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn is_bootstrap_token(s: &str) -> bool {
    let ok = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    s.split_once('.')
        .is_some_and(|(id, secret)| ok(id, 6) && ok(secret, 16))
}

/// `sha256:` and 64 hex digits.
pub fn is_ca_hash(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `host[:port][/path]`, lowercase path components, no scheme.
pub fn is_image_repository(s: &str) -> bool {
    let (host, path) = match s.split_once('/') {
        Some((host, path)) => (host, Some(path)),
        None => (s, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        && !host.starts_with(['-', '.', ':']);
    let path_ok = path.is_none_or(|path| {
        path.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        })
    });
    s.len() <= IMAGE_REPOSITORY_MAX_CHARS && host_ok && path_ok
}

#[cfg(test)]
#[path = "kubeadm_check_tests.rs"]
mod tests;
