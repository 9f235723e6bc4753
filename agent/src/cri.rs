//! The CRI socket kubeadm registers this host's node with: `[kube]
//! cri_socket` in agent.toml, else the first known runtime socket found
//! under `[kube] host_root` (kubeadm's own list: containerd, CRI-O,
//! cri-dockerd). When several runtimes are found and none is configured,
//! kubeadm itself refuses to guess; the agent uses the first and its
//! `container_runtime` health check warns, naming them.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use rpool_proto::v1::{HealthCheck, HealthStatus};

use crate::health::check;

/// The runtimes kubeadm knows, in its order, with the socket paths each is
/// found at (`/var/run` is `/run` on current distributions; both are
/// looked at so a host root without the symlink is found too).
pub const KNOWN: [(&str, &[&str]); 3] = [
    (
        "containerd",
        &[
            "/run/containerd/containerd.sock",
            "/var/run/containerd/containerd.sock",
        ],
    ),
    ("cri-o", &["/run/crio/crio.sock", "/var/run/crio/crio.sock"]),
    (
        "cri-dockerd",
        &["/run/cri-dockerd.sock", "/var/run/cri-dockerd.sock"],
    ),
];

/// What was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cri {
    /// `unix:///path`, or `None` when nothing was configured or found.
    pub socket: Option<String>,
    /// The agent.toml value was used.
    pub configured: bool,
    /// Every runtime found, `(name, unix:///path)`, in [`KNOWN`]'s order.
    pub found: Vec<(&'static str, String)>,
}

fn is_socket(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// `path` (absolute) under `host_root` (empty: `/`).
fn under(host_root: &Path, path: &str) -> std::path::PathBuf {
    if host_root.as_os_str().is_empty() {
        Path::new(path).to_owned()
    } else {
        host_root.join(path.trim_start_matches('/'))
    }
}

/// Looks for the known sockets under `host_root`; `configured` (already
/// validated, `unix:///path`) wins.
pub fn detect(configured: Option<&str>, host_root: &Path) -> Cri {
    let found: Vec<(&'static str, String)> = KNOWN
        .iter()
        .filter_map(|(name, paths)| {
            paths
                .iter()
                .find(|p| is_socket(&under(host_root, p)))
                .map(|p| (*name, format!("unix://{p}")))
        })
        .collect();
    match configured {
        Some(socket) => Cri {
            socket: Some(socket.to_owned()),
            configured: true,
            found,
        },
        None => Cri {
            socket: found.first().map(|(_, s)| s.clone()),
            configured: false,
            found,
        },
    }
}

impl Cri {
    /// The `container_runtime` health check.
    pub fn health(&self, host_root: &Path) -> HealthCheck {
        let name = "container_runtime";
        let list = |found: &[(&str, String)]| {
            found
                .iter()
                .map(|(n, s)| format!("{n} at {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.socket {
            Some(socket) if self.configured => {
                let path = socket.trim_start_matches("unix://");
                if is_socket(&under(host_root, path)) {
                    check(name, HealthStatus::Ok, format!("{socket} ([kube] cri_socket)"))
                } else {
                    check(
                        name,
                        HealthStatus::Warn,
                        format!("no socket at {socket} ([kube] cri_socket); is the runtime running?"),
                    )
                }
            }
            Some(_) if self.found.len() > 1 => check(
                name,
                HealthStatus::Warn,
                format!(
                    "several container runtimes found: {}; using {}, set [kube] cri_socket to choose",
                    list(&self.found),
                    self.found[0].0
                ),
            ),
            Some(_) => check(name, HealthStatus::Ok, list(&self.found)),
            None => check(
                name,
                HealthStatus::Warn,
                format!(
                    "no container runtime socket found (looked for {}); install containerd, CRI-O or cri-dockerd, or set [kube] cri_socket",
                    KNOWN.map(|(n, _)| n).join(", ")
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpool_proto::sim::create_socket_file as create_socket;

    #[test]
    fn nothing_found_means_no_socket_and_a_warning() {
        let root = tempfile::tempdir().unwrap();
        // A plain file is not a runtime socket.
        std::fs::create_dir_all(root.path().join("run/containerd")).unwrap();
        std::fs::write(root.path().join("run/containerd/containerd.sock"), "").unwrap();
        let cri = detect(None, root.path());
        assert_eq!(cri.socket, None);
        let health = cri.health(root.path());
        assert_eq!(health.status, HealthStatus::Warn as i32);
        assert!(
            health.message.contains("containerd, cri-o, cri-dockerd"),
            "{}",
            health.message
        );
    }

    #[test]
    fn one_runtime_is_used_several_warn_and_name_them() {
        let root = tempfile::tempdir().unwrap();
        create_socket(&root.path().join("var/run/crio/crio.sock")).unwrap();
        let cri = detect(None, root.path());
        assert_eq!(cri.socket.as_deref(), Some("unix:///var/run/crio/crio.sock"));
        assert_eq!(cri.health(root.path()).status, HealthStatus::Ok as i32);

        create_socket(&root.path().join("run/containerd/containerd.sock")).unwrap();
        let cri = detect(None, root.path());
        assert_eq!(
            cri.socket.as_deref(),
            Some("unix:///run/containerd/containerd.sock")
        );
        let health = cri.health(root.path());
        assert_eq!(health.status, HealthStatus::Warn as i32);
        assert!(
            health
                .message
                .contains("containerd at unix:///run/containerd/containerd.sock, cri-o at unix:///var/run/crio/crio.sock"),
            "{}",
            health.message
        );
    }

    #[test]
    fn the_configured_socket_wins_and_is_checked() {
        let root = tempfile::tempdir().unwrap();
        create_socket(&root.path().join("run/containerd/containerd.sock")).unwrap();
        let cri = detect(Some("unix:///run/crio/crio.sock"), root.path());
        assert_eq!(cri.socket.as_deref(), Some("unix:///run/crio/crio.sock"));
        assert_eq!(cri.health(root.path()).status, HealthStatus::Warn as i32);
        create_socket(&root.path().join("run/crio/crio.sock")).unwrap();
        let health = detect(Some("unix:///run/crio/crio.sock"), root.path()).health(root.path());
        assert_eq!(health.status, HealthStatus::Ok as i32, "{}", health.message);
    }
}
