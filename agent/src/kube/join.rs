//! Joining a cluster: `kubeadm join --config F` as a worker or a control
//! plane ([`Driver::join`]), after checking that the request is well
//! formed and that the host is not already a node (of this cluster in this
//! role: nothing to do; of another one or in another role: refused). The
//! secrets travel in the staged file `F` (see `staging`), never in argv.

use std::path::Path;

use tracing::info;

use super::checks::{check_endpoint, check_node_name, is_ca_hash, is_hex64, is_token};
use super::parse::same_endpoint;
use super::staging::{JOIN_CONFIG_PREFIX, config_args, join_config};
use super::{APISERVER_MANIFEST, Driver, JoinInfo, KUBELET_CONF, KubeError};

impl Driver {
    /// `kubeadm join --config F` as a worker or (with the certificate key)
    /// as a control plane, `F` holding `config` (the controller's
    /// JoinConfiguration; `None` or empty: a minimal one from `join`).
    /// Returns `true` when this host had already joined that cluster in that
    /// role (nothing run). `kube_vip` (control planes of a pool with a VIP):
    /// the kube-vip static pod, written before the join.
    pub async fn join(
        &self,
        join: &JoinInfo,
        node_name: &str,
        control_plane: bool,
        config: Option<&str>,
        kube_vip: Option<&str>,
    ) -> Result<bool, KubeError> {
        check_endpoint("join.control_plane_endpoint", &join.endpoint)?;
        check_node_name(node_name)?;
        if !is_token(&join.token) {
            return Err(KubeError::Refused(
                "join.token: not a bootstrap token (accepted \"[a-z0-9]{6}.[a-z0-9]{16}\")".to_owned(),
            ));
        }
        if !is_ca_hash(&join.ca_cert_hash) {
            return Err(KubeError::Refused(format!(
                "join.ca_cert_hash: {:?} is invalid (accepted \"sha256:<64 hex>\")",
                join.ca_cert_hash
            )));
        }
        let key = if control_plane {
            match join.certificate_key.as_deref() {
                Some(k) if is_hex64(k) => Some(k),
                Some(_) => {
                    return Err(KubeError::Refused(
                        "join.certificate_key: invalid (accepted 64 hex characters)".to_owned(),
                    ));
                }
                None => {
                    return Err(KubeError::Refused(
                        "join.certificate_key: missing; a control-plane join needs the certificate key"
                            .to_owned(),
                    ));
                }
            }
        } else {
            None
        };
        if let Some(server) = self.kubeconfig_server(Path::new(KUBELET_CONF))? {
            if !same_endpoint(&server, &join.endpoint) {
                return Err(KubeError::Refused(format!(
                    "this host is already a node of the cluster at {server}, not {}; reset it first",
                    join.endpoint
                )));
            }
            let is_cp = self.host_path(Path::new(APISERVER_MANIFEST)).exists();
            if is_cp != control_plane {
                let (is, asked) = if is_cp {
                    ("a control plane", "a worker")
                } else {
                    ("a worker", "a control plane")
                };
                return Err(KubeError::Refused(format!(
                    "this host already joined the cluster at {server} as {is}, not as {asked}; reset it first"
                )));
            }
            info!(endpoint = %join.endpoint, control_plane, "already joined; nothing to do");
            return Ok(true);
        }
        if let Some(manifest) = kube_vip.filter(|m| control_plane && !m.is_empty()) {
            self.write_kube_vip(manifest)?;
        }
        // The controller's file, else (an older controller) a minimal one
        // from `join`.
        let fallback;
        let text = match config {
            Some(text) if !text.is_empty() => text,
            _ => {
                fallback = join_config(join, node_name, key);
                fallback.as_str()
            }
        };
        let staged = self.stage_kubeadm_config(JOIN_CONFIG_PREFIX, text)?;
        let args = config_args("join", &staged.0, &[]);
        let result = self.kubeadm(&args).await;
        drop(staged);
        result?;
        info!(endpoint = %join.endpoint, node = node_name, control_plane, "kubeadm join done");
        Ok(false)
    }
}
