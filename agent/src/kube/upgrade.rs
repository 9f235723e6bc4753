//! A Kubernetes upgrade step on this node, and the uncordon of another.
//!
//! rpool installs no packages: the host's kubeadm and kubelet packages of
//! the target version must be installed first (e.g. `apt-get install
//! kubeadm=1.33.1-1.1 kubelet=1.33.1-1.1` from pkgs.k8s.io). The step
//! checks that with `kubeadm version -o short` and fails, naming the host,
//! when it is not the target. Then, as kubeadm's upgrade guide does it:
//! on the first control plane `kubeadm upgrade plan VERSION` and
//! `kubeadm upgrade apply VERSION --yes`, elsewhere `kubeadm upgrade
//! node`; then `systemctl daemon-reload` and `systemctl restart kubelet`,
//! so the kubelet runs the new version. Every command is safe to run again
//! (kubeadm applies the same version again; a restart is a restart).

use tracing::info;

use super::checks::check_node_name;
use super::parse::is_not_found;
use super::{Driver, KubeError};

impl Driver {
    /// The upgrade step on this node: kubeadm checked, `kubeadm upgrade`,
    /// kubelet restarted.
    pub async fn upgrade_node(&self, host: &str, version: &str, apply: bool) -> Result<(), KubeError> {
        check_version(version)?;
        let out = self.kubeadm(&strings(&["version", "-o", "short"])).await?;
        let installed = out.stdout.trim();
        if installed != version {
            return Err(KubeError::Refused(format!(
                "host {host}: kubeadm is {installed}, not {version}: install the kubeadm and kubelet packages of {version} on this host first (rpool installs no packages), then resume the upgrade"
            )));
        }
        if apply {
            self.kubeadm(&strings(&["upgrade", "plan", version])).await?;
            self.kubeadm(&strings(&["upgrade", "apply", version, "--yes"]))
                .await?;
        } else {
            self.kubeadm(&strings(&["upgrade", "node"])).await?;
        }
        self.run(&self.systemctl, &strings(&["daemon-reload"]), self.timeout)
            .await?;
        self.run(&self.systemctl, &strings(&["restart", "kubelet"]), self.timeout)
            .await?;
        info!(host, version, apply, "node upgraded, kubelet restarted");
        Ok(())
    }

    /// `kubectl uncordon NODE`. Returns `true` when the node is gone.
    pub async fn uncordon(&self, node: &str) -> Result<bool, KubeError> {
        check_node_name(node)?;
        match self.kubectl(&self.kubectl_args(&["uncordon", node])).await {
            Ok(_) => Ok(false),
            Err(KubeError::Failed { tail, .. }) if is_not_found(&tail, node) => Ok(true),
            Err(e) => Err(e),
        }
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// `vX.Y.Z` with digits only (it becomes a command-line argument).
fn check_version(version: &str) -> Result<(), KubeError> {
    let ok = version
        .strip_prefix('v')
        .map(|rest| {
            let parts: Vec<&str> = rest.split('.').collect();
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(KubeError::Refused(format!(
            "upgrade_node.version: {version:?} is not of the form vMAJOR.MINOR.PATCH"
        )))
    }
}
