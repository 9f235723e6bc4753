//! Container images: the registries kubesim's hosts pull from, each host's
//! image store, and `kubeadm config images list|pull`.
//!
//! # Registries
//! Without `$KUBESIM_STATE_DIR/registry-contents` every registry holds every
//! image. With it (one `registry/path:tag` a line, `#` comments; a test or
//! the sandbox writes it, it is read on every pull so lines can be added
//! later), the upstream registries ([`UPSTREAM`]) still hold everything and
//! any other registry (a mirror) holds exactly the listed images: a pull of
//! another one fails with containerd's "not found" as the real runtime
//! reports it through kubeadm.
//!
//! # Host image store
//! `<node root>/var/lib/containerd/kubesim-images`, one reference a line.
//! `kubeadm reset` leaves it, as the real one leaves the runtime's images.
//!
//! # kubeadm's images
//! [`control_plane_images`]: what `kubeadm config images list` prints for a
//! version and repository (the tags of kubeadm v1.31 to v1.33; CoreDNS sits
//! under `coredns/` only in the default repository, like kubeadm's).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::flags::{self, Spec, val, val_s};
use crate::state::{Env, Fail, Res};

/// kubeadm's default image repository.
pub const DEFAULT_REPOSITORY: &str = "registry.k8s.io";
/// Registries that hold every image (the internet).
pub const UPSTREAM: [&str; 4] = ["registry.k8s.io", "ghcr.io", "quay.io", "docker.io"];
/// The mirror's contents, under the state directory.
pub const REGISTRY_FILE: &str = "registry-contents";
/// The host's image store, under its node root.
pub const STORE_FILE: &str = "var/lib/containerd/kubesim-images";

const STACK_HINT: &str = "To see the stack trace of this error execute with --v=5 or higher";

/// `(etcd, coredns, pause)` tags kubeadm uses for a minor version.
fn tags(minor: u32) -> (&'static str, &'static str, &'static str) {
    match minor {
        31 => ("3.5.15-0", "v1.11.3", "3.10"),
        32 => ("3.5.16-0", "v1.11.3", "3.10"),
        _ => ("3.5.21-0", "v1.12.0", "3.10"),
    }
}

/// The images `kubeadm config images list` prints for `version` (`vX.Y.Z`)
/// from `repository` (`None`: registry.k8s.io).
pub fn control_plane_images(version: &str, repository: Option<&str>) -> Vec<String> {
    let repo = repository
        .filter(|r| !r.is_empty())
        .unwrap_or(DEFAULT_REPOSITORY)
        .trim_end_matches('/');
    let minor = version
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(32);
    let (etcd, coredns, pause) = tags(minor);
    let dns = if repo == DEFAULT_REPOSITORY {
        format!("{repo}/coredns/coredns:{coredns}")
    } else {
        format!("{repo}/coredns:{coredns}")
    };
    let mut out: Vec<String> = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
    ]
    .iter()
    .map(|c| format!("{repo}/{c}:{version}"))
    .collect();
    out.push(dns);
    out.push(format!("{repo}/pause:{pause}"));
    out.push(format!("{repo}/etcd:{etcd}"));
    out
}

fn registry_of(image: &str) -> &str {
    image.split('/').next().unwrap_or_default()
}

/// Whether a registry holds `image` (see the module docs).
pub fn available(state_dir: &Path, image: &str) -> bool {
    if UPSTREAM.contains(&registry_of(image)) {
        return true;
    }
    match fs::read_to_string(state_dir.join(REGISTRY_FILE)) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .any(|l| !l.starts_with('#') && l == image),
        Err(_) => true,
    }
}

fn store_path(root: &Path) -> PathBuf {
    root.join(STORE_FILE)
}

/// The images present on the host.
pub fn present(root: &Path) -> Vec<String> {
    fs::read_to_string(store_path(root))
        .map(|t| t.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
        .unwrap_or_default()
}

/// The runtime's answer when a registry lacks `image` (containerd through
/// the CRI, as kubeadm quotes it).
pub fn not_found(image: &str) -> String {
    format!(
        "rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not found"
    )
}

/// Pulls `image` into the host's store (already there: nothing to do).
/// Errors: the runtime's text.
pub fn pull(env: &Env, root: &Path, image: &str) -> Result<(), String> {
    if present(root).iter().any(|i| i == image) {
        return Ok(());
    }
    if !available(&env.state_dir, image) {
        return Err(not_found(image));
    }
    let path = store_path(root);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "{image}").map_err(|e| format!("{}: {e}", path.display()))
}

/// kubeadm's `ImagePull` preflight (init, control-plane join): every image
/// not on the host is pulled; the ones that cannot be are preflight errors.
pub fn preflight_pull(
    env: &Env,
    root: &Path,
    version: &str,
    repository: Option<&str>,
) -> Vec<(String, String)> {
    control_plane_images(version, repository)
        .into_iter()
        .filter_map(|image| {
            pull(env, root, &image).err().map(|why| {
                (
                    "ImagePull".to_owned(),
                    format!("failed to pull image {image}: {why}"),
                )
            })
        })
        .collect()
}

const FLAGS: [Spec; 7] = [
    val_s("v", 'v'),
    val("rootfs"),
    val("config"),
    val("kubernetes-version"),
    val("image-repository"),
    val("cri-socket"),
    val_s("output", 'o'),
];

fn fail(msg: impl AsRef<str>) -> Fail {
    Fail::new(format!("{}\n{STACK_HINT}", msg.as_ref()))
}

/// `kubeadm config images list|pull [--kubernetes-version V]
/// [--image-repository R] [--cri-socket S]`.
pub fn config(argv: &[String]) -> Res {
    let p = flags::parse(argv, &FLAGS).map_err(fail)?;
    let (sub, rest) = match p.args.split_first() {
        Some((w, rest)) if w == "images" => match rest.split_first() {
            Some((s, rest)) => (s.as_str(), rest),
            None => return Err(fail("kubesim: kubeadm config images needs list or pull")),
        },
        Some((w, _)) => {
            return Err(fail(format!(
                "unknown command \"{w}\" for \"kubeadm config\" (kubesim supports only images list|pull)"
            )));
        }
        None => {
            return Err(fail(
                "kubesim: kubeadm config needs a subcommand (images list|pull)",
            ));
        }
    };
    if let Some(a) = rest.first() {
        return Err(fail(format!(
            "unknown command \"{a}\" for \"kubeadm config images {sub}\""
        )));
    }
    if p.has("config") {
        return Err(fail(
            "kubesim: kubeadm config images --config is not simulated; pass --kubernetes-version/--image-repository/--cri-socket",
        ));
    }
    let version = p
        .get("kubernetes-version")
        .unwrap_or(crate::kubeadm::VERSION)
        .to_owned();
    let version = if version.starts_with('v') {
        version
    } else {
        format!("v{version}")
    };
    if crate::kubeadm::parse_version(&version).is_none() {
        return Err(fail(format!(
            "unable to parse version \"{version}\": could not parse \"{version}\" as version"
        )));
    }
    let repo = p.get("image-repository").filter(|r| !r.is_empty());
    if let Some(r) = repo
        && !rpool_proto::kube::kubeadm_check::is_image_repository(r)
    {
        return Err(fail(format!(
            "imageRepository: Invalid value: \"{r}\": invalid image repository"
        )));
    }
    let images = control_plane_images(&version, repo);
    match sub {
        "list" => {
            if let Some(o) = p.get("output").filter(|o| !o.is_empty() && *o != "text") {
                return Err(fail(format!(
                    "kubesim: output format {o:?} is not simulated (text only)"
                )));
            }
            for i in images {
                println!("{i}");
            }
            Ok(())
        }
        "pull" => {
            if p.has("output") {
                return Err(fail("unknown shorthand flag: 'o' in -o"));
            }
            let env = Env::from_process()?;
            let root = env.root()?.to_path_buf();
            if let Some((_, why)) = crate::kubeadm::cri_check(&root, p.get("cri-socket")) {
                return Err(fail(why));
            }
            for image in images {
                pull(&env, &root, &image)
                    .map_err(|why| fail(format!("failed to pull image \"{image}\": {why}")))?;
                println!("[config/images] Pulled {image}");
            }
            Ok(())
        }
        other => Err(fail(format!(
            "unknown command \"{other}\" for \"kubeadm config images\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_kubeadms_images_and_keeps_coredns_flat_under_a_mirror() {
        let up = control_plane_images("v1.32.0", None);
        assert_eq!(up[0], "registry.k8s.io/kube-apiserver:v1.32.0");
        assert!(up.contains(&"registry.k8s.io/coredns/coredns:v1.11.3".to_owned()));
        assert!(up.contains(&"registry.k8s.io/pause:3.10".to_owned()));
        let m = control_plane_images("v1.33.1", Some("mirror.example:5000/k8s"));
        assert!(m.contains(&"mirror.example:5000/k8s/coredns:v1.12.0".to_owned()));
        assert!(m.contains(&"mirror.example:5000/k8s/etcd:3.5.21-0".to_owned()));
        assert_eq!(m.len(), 7);
    }
}
