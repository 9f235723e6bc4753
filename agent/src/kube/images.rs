//! The images step before `kubeadm init` and `kubeadm join --control-plane`:
//! `kubeadm config images pull --kubernetes-version V [--image-repository R]
//! [--cri-socket S]` ([`Driver::pull_images`]), so an image the registry
//! (or an air-gapped site's mirror) lacks is reported as that, naming the
//! image, before init or join start. Idempotent: images already on the
//! host are not fetched again (kubeadm asks the runtime, which has them).
//!
//! Flags, not `--config`: the join's file is a `JoinConfiguration`, which
//! `kubeadm config images pull` does not read (it takes an
//! `InitConfiguration`/`ClusterConfiguration`), so both steps use the same
//! three flags for the same effect.

use tracing::info;

use super::checks::check_version;
use super::process::strings;
use super::{Driver, KubeError};

/// What the images step needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePull {
    /// `vX.Y.Z`.
    pub kubernetes_version: String,
    /// "" = kubeadm's default (registry.k8s.io).
    pub image_repository: String,
    /// "" = kubeadm finds the runtime.
    pub cri_socket: String,
}

/// How the step failed: the image that could not be pulled, when the
/// tool named one, and the error.
#[derive(Debug)]
pub struct PullFailure {
    pub image: Option<String>,
    pub error: KubeError,
}

impl Driver {
    /// Runs the images step; returns the images kubeadm reports pulled.
    pub async fn pull_images(&self, req: &ImagePull) -> Result<Vec<String>, PullFailure> {
        let fail = |error: KubeError| PullFailure {
            image: failed_image(&error.to_string()),
            error,
        };
        check_version(&req.kubernetes_version).map_err(fail)?;
        let mut args = strings(&[
            "config",
            "images",
            "pull",
            "--kubernetes-version",
            &req.kubernetes_version,
        ]);
        if !req.image_repository.is_empty() {
            args.extend(strings(&["--image-repository", &req.image_repository]));
        }
        if !req.cri_socket.is_empty() {
            args.extend(strings(&["--cri-socket", &req.cri_socket]));
        }
        let out = self.kubeadm(&args).await.map_err(fail)?;
        let pulled = parse_pulled(&out.stdout);
        info!(images = pulled.len(), version = %req.kubernetes_version, repository = %req.image_repository, "kubeadm images pulled");
        Ok(pulled)
    }
}

/// The `[config/images] Pulled IMAGE` lines of `kubeadm config images pull`.
pub fn parse_pulled(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("[config/images] Pulled "))
        .map(|i| i.trim().to_owned())
        .filter(|i| !i.is_empty())
        .collect()
}

/// The image in kubeadm's `failed to pull image "IMAGE": ...` (quoted by
/// `config images pull`, bare in init's `[ERROR ImagePull]`).
pub fn failed_image(text: &str) -> Option<String> {
    let rest = &text[text.find("failed to pull image ")? + "failed to pull image ".len()..];
    let image = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        // Bare: the image ends at ": " (its own ':' are not followed by a space).
        None => rest.split(": ").next()?,
    };
    let image = image.trim();
    (!image.is_empty() && image.len() <= 255 && !image.contains(char::is_whitespace))
        .then(|| image.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulled_lines_and_the_failed_image_are_read_from_kubeadms_output() {
        let out = "[config/images] Pulled registry.k8s.io/kube-apiserver:v1.32.0\nnoise\n[config/images] Pulled registry.k8s.io/pause:3.10\n";
        assert_eq!(
            parse_pulled(out),
            [
                "registry.k8s.io/kube-apiserver:v1.32.0",
                "registry.k8s.io/pause:3.10"
            ]
        );
        let quoted = "kubeadm config images pull: exit code 1: failed to pull image \"m.example:5000/k8s/etcd:3.5.16-0\": rpc error: code = NotFound desc = ...";
        assert_eq!(
            failed_image(quoted).as_deref(),
            Some("m.example:5000/k8s/etcd:3.5.16-0")
        );
        let bare =
            "\t[ERROR ImagePull]: failed to pull image m.example/k8s/pause:3.10: rpc error: code = NotFound";
        assert_eq!(failed_image(bare).as_deref(), Some("m.example/k8s/pause:3.10"));
        assert_eq!(failed_image("exit code 1: connection refused"), None);
    }
}
