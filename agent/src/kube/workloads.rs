//! What runs on the cluster: `kubectl apply -f` of a manifest (staged in
//! a 0600 temp file) and the count of pods the scheduler cannot place,
//! which a control-plane agent reports for autoscaling.

use std::time::Duration;

use tracing::info;

use super::parse::count_unschedulable;
use super::redact::display_command;
use super::staging::write_private;
use super::{Driver, KubeError, io_err};

impl Driver {
    /// Pods of this control plane's cluster that the scheduler could not
    /// place (Pending with `PodScheduled` False/Unschedulable; pods that
    /// are Pending while their images are pulled do not count). Bounded by
    /// [`PENDING_PODS_TIMEOUT`] or the per-call timeout, the shorter.
    pub async fn pending_pods(&self) -> Result<u32, KubeError> {
        let args = self.kubectl_args(&[
            "get",
            "pods",
            "-A",
            "--field-selector=status.phase=Pending",
            "-o",
            "json",
        ]);
        let out = self
            .run(&self.kubectl, &args, self.timeout.min(PENDING_PODS_TIMEOUT))
            .await?;
        count_unschedulable(&out.stdout).map_err(|what| KubeError::Output {
            cmd: display_command(&self.kubectl, &args),
            what,
        })
    }

    /// `kubectl apply -f` of one manifest (`name` only names the temp file
    /// and the logs).
    pub async fn apply(&self, name: &str, content: &str) -> Result<(), KubeError> {
        std::fs::create_dir_all(&self.scratch_dir).map_err(io_err(&self.scratch_dir))?;
        let safe: String = name
            .chars()
            .take(40)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.scratch_dir.join(format!(
            "manifest-{safe}-{}-{:08x}.yaml",
            std::process::id(),
            fastrand::u32(..)
        ));
        write_private(&path, content.as_bytes()).map_err(io_err(&path))?;
        let result = self
            .kubectl(&self.kubectl_args(&["apply", "-f", &path.display().to_string()]))
            .await;
        let _ = std::fs::remove_file(&path);
        result?;
        info!(manifest = name, "applied");
        Ok(())
    }
}

/// Longest a pending-pods count may take.
pub const PENDING_PODS_TIMEOUT: Duration = Duration::from_secs(10);
