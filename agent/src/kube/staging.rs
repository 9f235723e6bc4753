//! Files the driver hands to the tools: the `JoinConfiguration` holding
//! the join secrets (mode 0600 in `{scratch_dir}/kubeadm`, mode 0700,
//! removed when the call ends however it ends; leftovers of a crashed
//! agent swept by the next join) and the manifests for `kubectl apply`.

use std::path::{Path, PathBuf};

use tracing::warn;

use super::{Driver, JoinInfo, KubeError, io_err};

impl Driver {
    /// `{scratch_dir}/kubeadm`: created (or fixed) with mode 0700, for
    /// kubeadm config files holding join secrets. Join configs left behind
    /// by an earlier agent process (crash) are removed.
    pub(super) fn kubeadm_dir(&self) -> Result<PathBuf, KubeError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let dir = self.scratch_dir.join("kubeadm");
        std::fs::create_dir_all(&self.scratch_dir).map_err(io_err(&self.scratch_dir))?;
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&dir)(e)),
        }
        let meta = std::fs::symlink_metadata(&dir).map_err(io_err(&dir))?;
        if !meta.is_dir() {
            return Err(KubeError::Refused(format!(
                "{} is not a directory; it holds kubeadm join secrets, remove it",
                dir.display()
            )));
        }
        if meta.permissions().mode() & 0o777 != 0o700 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
        }
        let own = format!("{JOIN_CONFIG_PREFIX}{}-", std::process::id());
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(JOIN_CONFIG_PREFIX) && !name.starts_with(&own) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(dir)
    }
}

/// File name prefix of the staged join configurations.
pub(super) const JOIN_CONFIG_PREFIX: &str = "join-";

/// `kubeadm join --config CONFIG_PATH` and the `JoinConfiguration`
/// (`kubeadm.k8s.io/v1beta4`, JSON, which kubeadm's YAML loader reads) to
/// write there: endpoint, token, CA hash, node name and, for a control
/// plane (`certificate_key`), the certificate key. The secrets are in the
/// file only; kubeadm rejects mixing `--config` with the flags that carry
/// them.
pub fn join_command(
    join: &JoinInfo,
    node_name: &str,
    certificate_key: Option<&str>,
    config_path: &Path,
) -> (Vec<String>, String) {
    let mut config = serde_json::json!({
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": join.endpoint,
                "token": join.token,
                "caCertHashes": [join.ca_cert_hash],
            },
        },
        "nodeRegistration": { "name": node_name },
    });
    if let Some(key) = certificate_key {
        config["controlPlane"] = serde_json::json!({ "certificateKey": key });
    }
    let args = vec![
        "join".to_owned(),
        "--config".to_owned(),
        config_path.display().to_string(),
    ];
    (args, format!("{config:#}\n"))
}

/// Removes a file when dropped.
pub(super) struct RemoveOnDrop(pub(super) PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(path = %self.0.display(), error = %e, "could not remove a file holding join secrets")
            }
        }
    }
}

/// Writes a new file with mode 0600.
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
