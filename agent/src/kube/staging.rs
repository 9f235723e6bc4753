//! Files the driver hands to the tools: the kubeadm `--config` files
//! holding the init or join secrets (mode 0600 in `{scratch_dir}/kubeadm`,
//! mode 0700, removed when the call ends however it ends; leftovers of a
//! crashed agent swept by the next init or join) and the manifests for
//! `kubectl apply`.

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
        let pid = std::process::id();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let stale = CONFIG_PREFIXES
                    .iter()
                    .any(|p| name.starts_with(p) && !name.starts_with(&format!("{p}{pid}-")));
                if stale {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(dir)
    }

    /// Writes `text` to a new 0600 file `{prefix}{pid}-{random}.yaml` in
    /// [`Driver::kubeadm_dir`]; the file is removed when the returned guard
    /// drops (error, timeout, or the caller's future being dropped by a
    /// task deadline or shutdown).
    pub(super) fn stage_kubeadm_config(&self, prefix: &str, text: &str) -> Result<RemoveOnDrop, KubeError> {
        let path = self.kubeadm_dir()?.join(format!(
            "{prefix}{}-{:08x}.yaml",
            std::process::id(),
            fastrand::u32(..)
        ));
        let staged = RemoveOnDrop(path.clone());
        write_private(&path, text.as_bytes()).map_err(io_err(&path))?;
        Ok(staged)
    }
}

/// File name prefix of the staged join configurations.
pub(super) const JOIN_CONFIG_PREFIX: &str = "join-";
/// File name prefix of the staged init configurations.
pub(super) const INIT_CONFIG_PREFIX: &str = "init-";
const CONFIG_PREFIXES: [&str; 2] = [JOIN_CONFIG_PREFIX, INIT_CONFIG_PREFIX];

/// A minimal `JoinConfiguration` (`kubeadm.k8s.io/v1beta4`, JSON, which
/// kubeadm's YAML loader reads) for when the task carries no file of the
/// controller's (an older controller): endpoint, token, CA hash, node name
/// and, for a control plane (`certificate_key`), the certificate key.
pub fn join_config(join: &JoinInfo, node_name: &str, certificate_key: Option<&str>) -> String {
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
    format!("{config:#}\n")
}

/// `kubeadm COMMAND --config CONFIG_PATH EXTRA...`. The secrets are in the
/// file only; kubeadm refuses `--config` mixed with other flags than a few
/// (`--upload-certs` for init, `--node-name`, `--ignore-preflight-errors`,
/// `--skip-phases`...), so `extra` holds only those.
pub fn config_args(command: &str, config_path: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        command.to_owned(),
        "--config".to_owned(),
        config_path.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
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
