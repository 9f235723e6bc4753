//! Checks of the values the driver puts on a command line or reads back:
//! the shapes of join secrets (token, CA hash, certificate key) and the
//! request fields (endpoint, node name, CIDRs, version), refused with a
//! message naming the field and what is accepted. A value starting with
//! `-` never reaches a command line.

use super::KubeError;
use super::parse::JoinCommand;
use super::redact::redact;

/// `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn is_token(s: &str) -> bool {
    let ok =
        |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    match s.split_once('.') {
        Some((id, secret)) => ok(id, 6) && ok(secret, 16),
        None => false,
    }
}

/// 64 hex digits.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `sha256:<64 hex>`.
pub fn is_ca_hash(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(is_hex64)
}

pub(super) fn check_join_fields(cmd: &JoinCommand) -> Result<(), String> {
    if crate::config::check_host_port(&cmd.endpoint).is_err() {
        return Err(format!("join endpoint {:?} is not host:port", cmd.endpoint));
    }
    if !is_token(&cmd.token) {
        return Err(format!(
            "join token {:?} is not a bootstrap token",
            redact(&cmd.token)
        ));
    }
    if !is_ca_hash(&cmd.ca_cert_hash) {
        return Err(format!(
            "CA cert hash {:?} is not sha256:<64 hex>",
            cmd.ca_cert_hash
        ));
    }
    Ok(())
}

pub(super) fn check_endpoint(field: &str, endpoint: &str) -> Result<(), KubeError> {
    if endpoint.starts_with('-') {
        return Err(KubeError::Refused(format!(
            "{field}: {endpoint:?} starts with '-' (accepted host:port)"
        )));
    }
    crate::config::check_host_port(endpoint).map_err(|problem| {
        KubeError::Refused(format!("{field}: {endpoint:?} {problem} (accepted host:port)"))
    })
}

/// A DNS-1123 subdomain (what kubeadm accepts as a node name).
pub(super) fn check_node_name(name: &str) -> Result<(), KubeError> {
    let ok = rpool_proto::kube::kubeadm_check::is_dns_subdomain(name);
    if ok {
        Ok(())
    } else {
        Err(KubeError::Refused(format!(
            "node name {name:?} is invalid (accepted a lower-case DNS-1123 subdomain)"
        )))
    }
}

pub(super) fn check_cidr(field: &str, cidr: &str) -> Result<(), KubeError> {
    let ok = !cidr.is_empty()
        && !cidr.starts_with('-')
        && cidr.split(',').all(|c| match c.split_once('/') {
            Some((ip, bits)) => {
                ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 128)
            }
            None => false,
        });
    if ok {
        Ok(())
    } else {
        Err(KubeError::Refused(format!(
            "{field}: {cidr:?} is invalid (accepted a CIDR such as \"10.244.0.0/16\")"
        )))
    }
}

pub(super) fn check_version(version: &str) -> Result<(), KubeError> {
    let v = version.strip_prefix('v').unwrap_or(version);
    let ok = v.split('.').count() == 3
        && v.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(KubeError::Refused(format!(
            "kubernetes_version: {version:?} is invalid (accepted \"vX.Y.Z\")"
        )))
    }
}
