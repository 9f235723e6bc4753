//! Pure Kubernetes checks shared by the controller (which writes kubeadm
//! files and CNI manifests) and kubesim (which must refuse what the real
//! tools refuse). Std and `saphyr-parser` only; no I/O.
//!
//! - [`cidr`]: IP networks and ranges (`10.0.0.0/24`, `A-B`), family and
//!   overlap arithmetic.
//! - [`yaml`]: a small YAML value with an emitter ([`crate::ymap!`]) and a
//!   strict reader (duplicate keys rejected) on top of `saphyr-parser`.
//! - [`kubeadm_check`]: `check_kubeadm_config(yaml)` and
//!   `check_kubeadm_config_for(command, yaml)`, what kubeadm rejects in a
//!   kubeadm.k8s.io/v1beta4 file ([`kubeadm_schema`]: the fields it knows).
//! - [`kubeconfig`]: an admin kubeconfig's cluster, user and context
//!   renamed `rpool-<pool>` so pools' files merge cleanly.
//! - [`cni_check`]: `check_cni_manifest(yaml)`, what a node needs from a CNI
//!   manifest before its network can start.
//! - [`kube_vip_check`]: `check_kube_vip_manifest(yaml, vip)`, what a
//!   kube-vip static pod needs to hold a control-plane VIP.

pub mod cidr;
pub mod cni_check;
pub mod kube_vip_check;
pub mod kubeadm_check;
pub mod kubeadm_schema;
pub mod kubeconfig;
pub mod yaml;
