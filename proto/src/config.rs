//! Configuration pieces every binary shares: the error a bad value gives
//! ([`FieldError`]), the `[metrics]` section ([`MetricsConfig`]) and the
//! mutual-TLS file paths a config file may name ([`TlsPaths`]).
//!
//! A [`FieldError`] names the dotted field and says what is accepted, so a
//! binary can print `{file}: {field}: {problem}` to an operator as is:
//!
//! ```text
//! /etc/rpool/agent.toml: metrics.listen: "x" is not a socket address (accepted ip:port such as "127.0.0.1:9465", or "" for off)
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tls::TlsFiles;

/// A field of a configuration that breaks a rule. Displays as
/// `{field}: {problem}`; the binaries add the file (or flag) in front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `liveness.down_after_ms` or
    /// `controllers[2]`.
    pub field: String,
    /// What is wrong and what is accepted.
    pub problem: String,
}

impl FieldError {
    /// `field` with a free-form `problem` (which should say what is accepted).
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// `{value} is out of range (accepted {accepted})`.
    pub fn out_of_range(field: impl Into<String>, value: impl fmt::Display, accepted: &str) -> Self {
        FieldError::new(field, format!("{value} is out of range (accepted {accepted})"))
    }

    /// `{problem} (accepted {accepted})`.
    pub fn invalid(field: impl Into<String>, problem: impl fmt::Display, accepted: &str) -> Self {
        FieldError::new(field, format!("{problem} (accepted {accepted})"))
    }

    /// The first of `paths` that is empty, as `empty path (accepted {accepted})`.
    pub fn first_empty_path<'a>(
        paths: impl IntoIterator<Item = (&'a str, &'a Path)>,
        accepted: &str,
    ) -> Result<(), FieldError> {
        match paths.into_iter().find(|(_, p)| p.as_os_str().is_empty()) {
            Some((field, _)) => Err(FieldError::invalid(field, "empty path", accepted)),
            None => Ok(()),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for FieldError {}

/// `[metrics]`: the Prometheus endpoint (see [`crate::metrics::serve`]).
/// `EXAMPLE_PORT` is only the port the error message suggests (the
/// controller's is 9464, the agent's 9465).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig<const EXAMPLE_PORT: u16> {
    /// Socket address (`ip:port`) serving `GET /metrics`; empty (the
    /// default) turns the endpoint off.
    pub listen: String,
}

/// The `[metrics]` keys as serde sees them (serde's derive does not take
/// const generics).
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MetricsSection {
    listen: String,
}

impl<'de, const P: u16> Deserialize<'de> for MetricsConfig<P> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let MetricsSection { listen } = MetricsSection::deserialize(d)?;
        Ok(MetricsConfig { listen })
    }
}

impl<const P: u16> Serialize for MetricsConfig<P> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let section = MetricsSection {
            listen: self.listen.clone(),
        };
        section.serialize(s)
    }
}

impl<const EXAMPLE_PORT: u16> MetricsConfig<EXAMPLE_PORT> {
    /// The address to serve on, `None` when off.
    pub fn address(&self) -> Result<Option<SocketAddr>, FieldError> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| {
            FieldError::new(
                "metrics.listen",
                format!(
                    "{:?} is not a socket address (accepted ip:port such as \"127.0.0.1:{EXAMPLE_PORT}\", or \"\" for off)",
                    self.listen
                ),
            )
        })
    }

    /// Checks the section.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.address().map(|_| ())
    }
}

/// `[tls]` paths as a config file gives them, each optional: the CA
/// certificate, the own certificate chain and its private key. Relative
/// paths are taken relative to a base directory (the config file's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// CA certificate (PEM) peers must chain to.
    pub ca: Option<PathBuf>,
    /// Own certificate chain (PEM, leaf first).
    pub cert: Option<PathBuf>,
    /// Own private key (PEM, mode 0600).
    pub key: Option<PathBuf>,
}

impl TlsPaths {
    /// Each path given, relative ones joined to `base`; a missing one is
    /// `default`'s.
    pub fn resolve(&self, base: &Path, default: &TlsFiles) -> TlsFiles {
        let pick = |given: &Option<PathBuf>, default: &Path| match given {
            Some(path) if path.is_relative() => base.join(path),
            Some(path) => path.clone(),
            None => default.to_path_buf(),
        };
        TlsFiles {
            ca: pick(&self.ca, &default.ca),
            cert: pick(&self.cert, &default.cert),
            key: pick(&self.key, &default.key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_display_the_field_and_what_is_accepted() {
        let e = FieldError::out_of_range("raft.tick_ms", 5, "10..=1000");
        assert_eq!(
            e.to_string(),
            "raft.tick_ms: 5 is out of range (accepted 10..=1000)"
        );
        let e = FieldError::invalid("zone", "\"A\" is upper case", "a DNS-1123 label");
        assert_eq!(
            e.to_string(),
            "zone: \"A\" is upper case (accepted a DNS-1123 label)"
        );
        let paths = [("a", Path::new("/x")), ("b", Path::new("")), ("c", Path::new(""))];
        let e = FieldError::first_empty_path(paths, "a file path").unwrap_err();
        assert_eq!(e.to_string(), "b: empty path (accepted a file path)");
        assert!(FieldError::first_empty_path([("a", Path::new("/x"))], "a file path").is_ok());
    }

    #[test]
    fn the_metrics_address_is_off_when_empty_and_the_error_suggests_the_port() {
        assert_eq!(MetricsConfig::<9464>::default().address(), Ok(None));
        let on = MetricsConfig::<9464> {
            listen: "127.0.0.1:9000".into(),
        };
        assert_eq!(on.address().unwrap().unwrap().port(), 9000);
        let bad = MetricsConfig::<9465> {
            listen: "localhost".into(),
        };
        let err = bad.validate().unwrap_err();
        assert_eq!(err.field, "metrics.listen");
        assert!(err.problem.contains("\"127.0.0.1:9465\""), "{err}");
        let parsed: MetricsConfig<1> = toml::from_str("listen = \"0.0.0.0:1\"").unwrap();
        assert_eq!(parsed.listen, "0.0.0.0:1");
        assert!(toml::from_str::<MetricsConfig<1>>("port = 1").is_err());
    }

    #[test]
    fn tls_paths_resolve_relative_to_the_base_and_fall_back_to_the_defaults() {
        let default = TlsFiles::in_dir(Path::new("/d/pki"), "admin");
        let given = TlsPaths {
            ca: Some("/abs/ca.crt".into()),
            cert: Some("rel/admin.crt".into()),
            key: None,
        };
        let files = given.resolve(Path::new("/etc/rpool"), &default);
        assert_eq!(files.ca, PathBuf::from("/abs/ca.crt"));
        assert_eq!(files.cert, PathBuf::from("/etc/rpool/rel/admin.crt"));
        assert_eq!(files.key, PathBuf::from("/d/pki/admin.key"));
    }
}
