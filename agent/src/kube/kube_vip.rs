//! The kube-vip static pod that holds a pool's control-plane VIP: the
//! controller renders it, the agent writes it where the kubelet reads
//! static pods ([`KUBE_VIP_MANIFEST`] under `kube.host_root`) before
//! `kubeadm init` and before a control-plane `kubeadm join`, and after a
//! successful init replaces the init version (which uses
//! `/etc/kubernetes/super-admin.conf`, the only kubeconfig with rights
//! while init runs on kubeadm >= 1.29) by the one using `admin.conf`.

use std::path::Path;

use tracing::info;

use super::staging::write_private;
use super::{Driver, KubeError, io_err};

/// Where the kubelet reads the static pod.
pub const KUBE_VIP_MANIFEST: &str = rpool_proto::kube::kube_vip_check::KUBE_VIP_MANIFEST;

impl Driver {
    /// Writes `manifest` as the kube-vip static pod (mode 0600, replaced
    /// atomically; the manifests directory is created if missing). Writing
    /// the same text again changes nothing.
    pub(super) fn write_kube_vip(&self, manifest: &str) -> Result<(), KubeError> {
        let path = self.host_path(Path::new(KUBE_VIP_MANIFEST));
        if std::fs::read_to_string(&path).is_ok_and(|old| old == manifest) {
            return Ok(());
        }
        let dir = path.parent().expect("the manifest path has a directory");
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let tmp = dir.join(format!(".kube-vip.yaml.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        write_private(&tmp, manifest.as_bytes()).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        info!(path = %KUBE_VIP_MANIFEST, "kube-vip static pod written");
        Ok(())
    }
}
