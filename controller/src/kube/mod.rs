//! Pure building blocks for real Kubernetes clusters (issue 11): what the
//! controller decides and writes before a host runs `kubeadm`, and checks
//! that kubesim can share. Nothing here does I/O (tests aside).
//!
//! # Files
//!
//! - [`versions`]: the Kubernetes versions rpool can deploy (`vX.Y.Z`,
//!   v1.31.0 to v1.33.x).
//! - [`cidr`], [`yaml`], [`kubeadm_check`], [`kubeadm_schema`],
//!   [`cni_check`]: re-exported from `rpool_proto::kube` (shared with
//!   kubesim): network arithmetic, the YAML value/reader, and the kubeadm
//!   file and CNI manifest checks.
//! - [`network`]: a pool's pod and service networks, VIP and LB range checked
//!   like kubeadm does and against the other pools and the hosts; VIP
//!   allocation from a fleet range.
//! - [`kubeadm`]: `InitConfiguration` + `ClusterConfiguration` and
//!   `JoinConfiguration` (kubeadm.k8s.io/v1beta4) from a plain input struct.
//! - [`objects`]: builders for the object pieces manifests repeat (headers,
//!   RBAC, volumes, mounts, env).
//! - [`images`]: where each addon image is pulled from (upstream, or the
//!   pool's image repository for air-gapped sites).
//! - [`flannel`]: a complete flannel deployment (checked by [`cni_check`]).
//! - [`render`]: the kubeadm init/join files a task carries, from the
//!   pool and the host (fresh init secrets drawn here).
//! - [`kube_vip`]: the kube-vip static pod for a control-plane VIP.
//! - [`metallb`]: MetalLB (native mode) and a pool's address range.
//!
//! Every input error is a [`KubeFieldError`] naming the field and what is
//! accepted. Tests run the real `kubectl` client offline on every manifest
//! (module `kubectl`, test-only; skipped with a printed reason when kubectl
//! is not on PATH).

pub mod flannel;
pub mod images;
pub mod kube_vip;
pub mod kubeadm;
pub mod metallb;
pub mod network;
pub mod objects;
pub mod render;
pub mod versions;

pub use rpool_proto::kube::{cidr, cni_check, kube_vip_check, kubeadm_check, kubeadm_schema, yaml};

#[cfg(test)]
mod cni_check_tests;

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
