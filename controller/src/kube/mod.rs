//! Pure building blocks for real Kubernetes clusters (issue 11): what the
//! controller decides and writes before a host runs `kubeadm`, and checks
//! that kubesim can share. Nothing here does I/O (tests aside).
//!
//! # Files
//!
//! - [`versions`]: the Kubernetes versions rpool can deploy (`vX.Y.Z`,
//!   v1.31.0 to v1.33.x).
//! - [`cidr`]: IP networks and ranges (`10.0.0.0/24`, `A-B`), family and
//!   overlap arithmetic; std only.
//! - [`network`]: a pool's pod and service networks, VIP and LB range checked
//!   like kubeadm does and against the other pools and the hosts; VIP
//!   allocation from a fleet range.
//! - [`yaml`]: a small YAML value with an emitter (every manifest is built
//!   as a value, never by pasting text) and a strict reader (duplicate keys
//!   rejected) on top of `saphyr-parser`.
//! - [`kubeadm`]: `InitConfiguration` + `ClusterConfiguration` and
//!   `JoinConfiguration` (kubeadm.k8s.io/v1beta4) from a plain input struct.
//! - [`kubeadm_check`]: `check_kubeadm_config(yaml)`, what kubeadm rejects
//!   in such a file; free of controller types so kubesim can call it
//!   ([`kubeadm_schema`]: the v1beta4 fields it knows).
//! - [`objects`]: builders for the object pieces manifests repeat (headers,
//!   RBAC, volumes, mounts, env).
//! - [`images`]: where each addon image is pulled from (upstream, or the
//!   pool's image repository for air-gapped sites).
//! - [`flannel`]: a complete flannel deployment; [`cni_check`]: what a node
//!   needs from a CNI manifest (`check_cni_manifest`).
//! - [`kube_vip`]: the kube-vip static pod for a control-plane VIP.
//! - [`metallb`]: MetalLB (native mode) and a pool's address range.
//!
//! Every input error is a [`KubeFieldError`] naming the field and what is
//! accepted. Tests run the real `kubectl` client offline on every manifest
//! (module `kubectl`, test-only; skipped with a printed reason when kubectl
//! is not on PATH).

pub mod cidr;
pub mod cni_check;
pub mod flannel;
pub mod images;
pub mod kube_vip;
pub mod kubeadm;
pub mod kubeadm_check;
pub mod kubeadm_schema;
pub mod metallb;
pub mod network;
pub mod objects;
pub mod versions;
pub mod yaml;

#[cfg(test)]
pub(crate) mod kubectl;

use std::fmt;

/// An input field that breaks a rule: `{field}: {message}`, where the
/// message says what was given and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeFieldError {
    /// The field, as an admin names it (e.g. `pod_cidr`, `lb_range`).
    pub field: String,
    /// What is wrong and the accepted range.
    pub message: String,
}

impl KubeFieldError {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        KubeFieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for KubeFieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for KubeFieldError {}

/// Longest input echoed back in an error.
const ECHO_MAX_CHARS: usize = 64;

/// `value` quoted for an error message, shortened to [`ECHO_MAX_CHARS`].
pub(crate) fn echo(value: &str) -> String {
    if value.chars().count() <= ECHO_MAX_CHARS {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(ECHO_MAX_CHARS).collect();
        format!("{head:?}...")
    }
}
