//! The addon images rpool deploys and where they are pulled from.
//!
//! Without an image repository each image comes from its upstream
//! registry. With one (air-gapped sites: the same repository kubeadm's
//! `imageRepository` names), the upstream path is kept under it:
//! `ghcr.io/flannel-io/flannel:v0.26.7` becomes
//! `registry.example:5000/k8s/flannel-io/flannel:v0.26.7`, so mirroring an
//! image is `<upstream> -> <repository>/<path>:<tag>`.

/// An image: upstream registry, path and tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    pub registry: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
}

/// flanneld (v0.26.x).
pub const FLANNEL: Image = Image {
    registry: "ghcr.io",
    path: "flannel-io/flannel",
    tag: "v0.26.7",
};
/// The flannel CNI plugin binary that flannel v0.26.7 ships with.
pub const FLANNEL_CNI_PLUGIN: Image = Image {
    registry: "ghcr.io",
    path: "flannel-io/flannel-cni-plugin",
    tag: "v1.6.2-flannel1",
};
/// kube-vip (control-plane VIP).
pub const KUBE_VIP: Image = Image {
    registry: "ghcr.io",
    path: "kube-vip/kube-vip",
    tag: "v0.8.9",
};
/// MetalLB's controller (v0.14.x).
pub const METALLB_CONTROLLER: Image = Image {
    registry: "quay.io",
    path: "metallb/controller",
    tag: "v0.14.9",
};
/// MetalLB's speaker (v0.14.x).
pub const METALLB_SPEAKER: Image = Image {
    registry: "quay.io",
    path: "metallb/speaker",
    tag: "v0.14.9",
};

/// Every addon image, for a mirror's pull list.
pub const ALL: [Image; 5] = [
    FLANNEL,
    FLANNEL_CNI_PLUGIN,
    KUBE_VIP,
    METALLB_CONTROLLER,
    METALLB_SPEAKER,
];

impl Image {
    /// The reference to pull, through `repository` when set.
    pub fn reference(&self, repository: Option<&str>) -> String {
        let base = repository.map_or(self.registry, |r| r.trim_end_matches('/'));
        format!("{base}/{}:{}", self.path, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_come_from_upstream_or_keep_their_path_under_a_mirror() {
        assert_eq!(FLANNEL.reference(None), "ghcr.io/flannel-io/flannel:v0.26.7");
        assert_eq!(
            FLANNEL.reference(Some("registry.example:5000/k8s")),
            "registry.example:5000/k8s/flannel-io/flannel:v0.26.7"
        );
        assert_eq!(
            METALLB_SPEAKER.reference(Some("mirror.example/")),
            "mirror.example/metallb/speaker:v0.14.9"
        );
        assert_eq!(ALL.iter().filter(|i| i.tag.is_empty()).count(), 0);
    }
}
