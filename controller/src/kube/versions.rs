//! The Kubernetes versions rpool deploys.
//!
//! The configuration files rpool writes use kubeadm.k8s.io/v1beta4, which
//! kubeadm reads from v1.31 on; v1.33 is the newest minor tested. Any
//! patch release of a supported minor is accepted. Versions are written
//! `vX.Y.Z` exactly as kubeadm's `kubernetesVersion` takes them: no
//! pre-release or build suffix, no leading zeros.

use std::fmt;

use super::{KubeFieldError, echo};

/// The supported minors of Kubernetes 1.x, oldest first.
pub const SUPPORTED_MINORS: [u32; 3] = [31, 32, 33];

/// The version a pool gets when none is asked for.
pub const DEFAULT_VERSION: KubeVersion = KubeVersion {
    major: 1,
    minor: 32,
    patch: 0,
};

/// Largest accepted number in one version component.
const COMPONENT_MAX: u32 = 9_999;

/// A Kubernetes release, `vMAJOR.MINOR.PATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The accepted range, as errors state it.
pub fn supported_range() -> String {
    let first = SUPPORTED_MINORS[0];
    let last = SUPPORTED_MINORS[SUPPORTED_MINORS.len() - 1];
    format!("v1.{first}.0 to v1.{last}.x")
}

impl KubeVersion {
    /// Whether rpool can deploy this version.
    pub fn is_supported(&self) -> bool {
        self.major == 1 && SUPPORTED_MINORS.contains(&self.minor)
    }
}

/// Parses `vX.Y.Z` (syntax only; see [`parse_supported`]).
pub fn parse(field: &str, text: &str) -> Result<KubeVersion, KubeFieldError> {
    let bad = || {
        KubeFieldError::new(
            field,
            format!(
                "{} is not a version of the form vMAJOR.MINOR.PATCH (accepted {})",
                echo(text),
                supported_range()
            ),
        )
    };
    let rest = text.strip_prefix('v').ok_or_else(bad)?;
    let parts: Vec<&str> = rest.split('.').collect();
    if parts.len() != 3 {
        return Err(bad());
    }
    let mut numbers = [0u32; 3];
    for (slot, part) in numbers.iter_mut().zip(&parts) {
        let digits_only = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        let leading_zero = part.len() > 1 && part.starts_with('0');
        if !digits_only || leading_zero || part.len() > 4 {
            return Err(bad());
        }
        *slot = part.parse().map_err(|_| bad())?;
        if *slot > COMPONENT_MAX {
            return Err(bad());
        }
    }
    Ok(KubeVersion {
        major: numbers[0],
        minor: numbers[1],
        patch: numbers[2],
    })
}

/// Parses `vX.Y.Z` and checks it is within the supported range.
pub fn parse_supported(field: &str, text: &str) -> Result<KubeVersion, KubeFieldError> {
    let version = parse(field, text)?;
    if !version.is_supported() {
        return Err(KubeFieldError::new(
            field,
            format!("{version} is not supported (accepted {})", supported_range()),
        ));
    }
    Ok(version)
}

/// Why an upgrade from `from` to `to` is refused, following Kubernetes'
/// version-skew policy as kubeadm enforces it: one minor at a time (a
/// patch release of the same minor is fine), never down, only to a
/// supported version. The message names the next allowed version.
pub fn check_upgrade(from: KubeVersion, to: KubeVersion) -> Result<(), String> {
    let next = next_minor(from);
    if !to.is_supported() {
        return Err(format!(
            "{to} is not supported (accepted {}){}",
            supported_range(),
            next.map_or_else(String::new, |n| format!("; the next allowed version is {n}"))
        ));
    }
    if to == from {
        return Err(format!("the pool already runs {to}"));
    }
    if to < from {
        return Err(format!(
            "{to} is older than {from}: downgrades are not supported (kubeadm upgrades only forward)"
        ));
    }
    if to.major != from.major || to.minor > from.minor + 1 {
        return Err(format!(
            "{to} skips a minor release: Kubernetes upgrades one minor at a time; the next allowed version is {}",
            next.map_or_else(
                || format!("a newer patch of v{}.{}", from.major, from.minor),
                |n| n.to_string()
            )
        ));
    }
    Ok(())
}

/// The next minor after `from`, as `v1.N.x`, when rpool supports it.
fn next_minor(from: KubeVersion) -> Option<String> {
    let minor = from.minor + 1;
    (from.major == 1 && SUPPORTED_MINORS.contains(&minor)).then(|| format!("v1.{minor}.x"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_patch_of_the_supported_minors_is_accepted() {
        for text in ["v1.31.0", "v1.31.14", "v1.32.4", "v1.33.0", "v1.33.999"] {
            let v = parse_supported("kubernetes_version", text).unwrap();
            assert_eq!(v.to_string(), text);
        }
        assert!(DEFAULT_VERSION.is_supported());
    }

    #[test]
    fn versions_outside_the_range_name_the_range() {
        for text in ["v1.30.9", "v1.34.0", "v2.31.0", "v0.31.0"] {
            let err = parse_supported("kubernetes_version", text).unwrap_err();
            assert_eq!(err.field, "kubernetes_version");
            assert_eq!(
                err.message,
                format!("{text} is not supported (accepted v1.31.0 to v1.33.x)")
            );
        }
    }

    #[test]
    fn malformed_versions_are_rejected_with_the_expected_form() {
        for text in [
            "",
            "1.31.0",
            "v1.31",
            "v1.31.0.1",
            "v1.31.0-rc.1",
            "v1.031.0",
            "v1..0",
            "v1.31.x",
            "v+1.31.0",
            "v1.31.99999",
            " v1.31.0",
            "stable",
        ] {
            let err = parse("version", text).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!(
                    "version: {text:?} is not a version of the form vMAJOR.MINOR.PATCH"
                )),
                "{text:?}: {err}"
            );
            assert!(err.message.ends_with("(accepted v1.31.0 to v1.33.x)"), "{err}");
        }
    }

    #[test]
    fn versions_order_numerically() {
        let a = parse("v", "v1.31.9").unwrap();
        let b = parse("v", "v1.31.10").unwrap();
        let c = parse("v", "v1.32.0").unwrap();
        assert!(a < b && b < c);
    }

    #[test]
    fn upgrades_go_one_minor_at_a_time_and_never_down() {
        let v = |t: &str| parse("v", t).unwrap();
        assert_eq!(check_upgrade(v("v1.31.2"), v("v1.32.0")), Ok(()));
        assert_eq!(
            check_upgrade(v("v1.32.0"), v("v1.32.4")),
            Ok(()),
            "a patch release"
        );
        assert_eq!(
            check_upgrade(v("v1.31.2"), v("v1.33.0")).unwrap_err(),
            "v1.33.0 skips a minor release: Kubernetes upgrades one minor at a time; the next allowed version is v1.32.x"
        );
        assert_eq!(
            check_upgrade(v("v1.32.4"), v("v1.32.1")).unwrap_err(),
            "v1.32.1 is older than v1.32.4: downgrades are not supported (kubeadm upgrades only forward)"
        );
        assert_eq!(
            check_upgrade(v("v1.32.0"), v("v1.32.0")).unwrap_err(),
            "the pool already runs v1.32.0"
        );
        assert_eq!(
            check_upgrade(v("v1.33.0"), v("v1.34.0")).unwrap_err(),
            "v1.34.0 is not supported (accepted v1.31.0 to v1.33.x)"
        );
        assert_eq!(
            check_upgrade(v("v1.31.0"), v("v2.0.0")).unwrap_err(),
            "v2.0.0 is not supported (accepted v1.31.0 to v1.33.x); the next allowed version is v1.32.x"
        );
    }
}
