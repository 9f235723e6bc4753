//! Taking a host out of its cluster: `kubeadm reset -f --cleanup-tmp-dir`
//! and the CNI configuration kubeadm leaves behind ([`Driver::reset`]);
//! nothing is run when the host holds no kubeadm state.

use std::path::Path;

use tracing::{info, warn};

use super::process::strings;
use super::{CNI_CONF_DIR, Driver, KUBEADM_STATE, KUBELET_CONF, KubeError};

impl Driver {
    pub(super) fn has_kubeadm_state(&self) -> bool {
        KUBEADM_STATE.iter().any(|p| {
            let real = self.host_path(Path::new(p));
            match std::fs::read_dir(&real) {
                Ok(mut entries) => entries.next().is_some(),
                Err(_) => real.exists() && real.is_file(),
            }
        })
    }

    /// `kubeadm reset -f` and cleanup (CNI configuration). Returns `true`
    /// when there was nothing to reset (nothing run).
    pub async fn reset(&self) -> Result<bool, KubeError> {
        if !self.has_kubeadm_state() {
            info!("no kubeadm state on this host; nothing to reset");
            return Ok(true);
        }
        self.kubeadm(&strings(&["reset", "-f", "--cleanup-tmp-dir"]))
            .await?;
        // kubeadm reset leaves the CNI configuration behind (it says so).
        let cni = self.host_path(Path::new(CNI_CONF_DIR));
        if let Ok(entries) = std::fs::read_dir(&cni) {
            for entry in entries.flatten() {
                let path = entry.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                if let Err(e) = removed {
                    warn!(path = %path.display(), error = %e, "could not remove CNI configuration");
                }
            }
        }
        if self.host_path(Path::new(KUBELET_CONF)).exists() {
            return Err(KubeError::Refused(format!(
                "kubeadm reset -f succeeded but {KUBELET_CONF} is still there"
            )));
        }
        info!("kubeadm reset done");
        Ok(false)
    }
}
