//! `agent.toml`: what the agent reads at start, how flags override it, and
//! the checks every value must pass before the agent starts.
//!
//! Errors name where the bad value came from (the file, or the flag that
//! overrode it), the dotted field path, and what would have been accepted:
//! `/etc/rpool/agent.toml: reconnect.max_backoff_ms: 5 is out of range (accepted 200..=300000)`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where `main` looks when `--config` and `RPOOL_AGENT_CONFIG` are unset.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/rpool/agent.toml";

/// Most controllers an agent is configured with (a 7-node control plane).
pub const MAX_CONTROLLERS: usize = 7;
/// Most admin labels a host may carry (the controller's limit).
pub const MAX_LABELS: usize = 64;
/// Accepted range of `reconnect.initial_backoff_ms`.
pub const INITIAL_BACKOFF_MS_RANGE: (u64, u64) = (10, 60_000);
/// Upper bound of `reconnect.max_backoff_ms`.
pub const MAX_BACKOFF_MS_LIMIT: u64 = 300_000;
/// Accepted range of `kube.cert_check_interval_s` (default 3600).
pub const CERT_CHECK_INTERVAL_S_RANGE: (u64, u64) = (1, 86_400);
/// Accepted range of `kube.static_pod_restart_wait_s` (default 20).
pub const STATIC_POD_RESTART_WAIT_S_RANGE: (u64, u64) = (1, 600);
/// Accepted range of `kube.command_timeout_s`.
pub const COMMAND_TIMEOUT_S_RANGE: (u64, u64) = (10, 86_400);

/// Why a configuration could not be loaded. The text is meant for the admin
/// as is; `main` exits 64 on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{origin}: {field}: {message}")]
    Invalid {
        /// The config file, or the flag the value came from.
        origin: String,
        /// Dotted path, e.g. `reconnect.max_backoff_ms` or `controllers[2]`.
        field: String,
        /// `{value} is out of range (accepted {range})` or `{problem} (accepted {what})`.
        message: String,
    },
}

/// A bad value found by [`Config::validate`]: which field and what is wrong
/// (shared by every binary).
pub use rpool_proto::config::FieldError;

/// The whole agent configuration (`agent.toml`). Every key is optional in
/// the file except `controllers`, which may instead come from `--controller`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Controller addresses (`host:port`), tried in order, rotating on failure.
    pub controllers: Vec<String>,
    /// Holds the `host_id` file; created with mode 0700.
    pub state_dir: PathBuf,
    /// Failure domain reported to the controller (DNS-1123 label).
    pub zone: String,
    /// Admin labels reported with the host's facts.
    pub labels: BTreeMap<String, String>,
    /// The address this host's Kubernetes node advertises (an IP, not
    /// loopback, unspecified or multicast). Unset: the local address of the
    /// connection to the controllers, unless that is on a bridge, CNI, veth
    /// or loopback interface (see [`crate::address`]).
    pub advertise_address: Option<String>,
    pub health: HealthConfig,
    pub reconnect: ReconnectConfig,
    pub kube: KubeConfig,
    /// Present: simulated-hardware mode (inventory and utilization from a file).
    pub simulate: Option<SimulateConfig>,
    /// Present: how to get a first certificate with a bootstrap token
    /// (see [`crate::enroll`]).
    pub enroll: Option<crate::enroll::EnrollConfig>,
    /// The Prometheus `/metrics` endpoint (off unless `listen` is set).
    pub metrics: crate::metrics::MetricsConfig,
    /// Where the mutual-TLS files are (`ca.crt`, `agent.crt`, `agent.key`).
    pub tls: TlsConfig,
}

/// `[tls]`: the directory holding this agent's mutual-TLS files: `ca.crt`
/// (the rpool CA), `agent.crt` (certificate chain for this host's id) and
/// `agent.key` (mode 0600). Read again before every connection attempt, so
/// a renewed certificate is used from the next reconnect on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Directory of the files; default `{state_dir}/tls`.
    pub dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            controllers: Vec::new(),
            state_dir: PathBuf::from("/var/lib/rpool/agent"),
            zone: "default".to_owned(),
            labels: BTreeMap::new(),
            advertise_address: None,
            health: HealthConfig::default(),
            reconnect: ReconnectConfig::default(),
            kube: KubeConfig::default(),
            simulate: None,
            enroll: None,
            metrics: crate::metrics::MetricsConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

impl Config {
    /// The TLS directory: `[tls] dir`, else `{state_dir}/tls`.
    pub fn tls_dir(&self) -> PathBuf {
        self.tls.dir.clone().unwrap_or_else(|| self.state_dir.join("tls"))
    }

    /// `{tls_dir}/ca.crt`, `agent.crt`, `agent.key`.
    pub fn tls_files(&self) -> rpool_proto::tls::TlsFiles {
        rpool_proto::tls::TlsFiles::in_dir(&self.tls_dir(), "agent")
    }
}

/// `[health]`: thresholds and paths of the local health checks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Size string (`1GiB`); `disk_free` fails below it on the state_dir filesystem.
    pub min_free_disk: String,
    /// Moved to `[kube] kubeadm_path` (the check looks where the tasks run
    /// kubeadm); refused here with a message saying so.
    pub kubeadm_path: Option<PathBuf>,
    /// Moved to `[kube] kubelet_path`; refused here likewise.
    pub kubelet_path: Option<PathBuf>,
    /// Moved to `[kube] cri_socket` (the socket kubeadm registers the node
    /// with is the one the check looks at); refused here likewise.
    pub container_runtime_socket: Option<PathBuf>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            min_free_disk: "1GiB".to_owned(),
            kubeadm_path: None,
            kubelet_path: None,
            container_runtime_socket: None,
        }
    }
}

impl HealthConfig {
    /// `min_free_disk` in bytes. Only meaningful after [`Config::validate`].
    pub fn min_free_disk_bytes(&self) -> u64 {
        rpool_proto::units::parse_size(&self.min_free_disk).unwrap_or(0)
    }
}

/// `[reconnect]`: backoff between connection attempts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            initial_backoff_ms: 200,
            max_backoff_ms: 10_000,
        }
    }
}

/// `[kube]`: how the agent runs `kubeadm` and `kubectl` for pool tasks
/// (see [`crate::kube`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeConfig {
    pub kubeadm_path: PathBuf,
    pub kubectl_path: PathBuf,
    /// The kubelet kubeadm starts; only the health check looks at it.
    pub kubelet_path: PathBuf,
    /// The admin kubeconfig `kubeadm init` writes on a control plane; used
    /// by every `kubectl` call and returned by `fetch_kubeconfig`.
    pub admin_kubeconfig: PathBuf,
    /// Longest a single `kubeadm`/`kubectl` call may run before it is killed.
    pub command_timeout_s: u64,
    /// Where this host's filesystem is for the files the driver reads and
    /// cleans itself (`/etc/kubernetes`, `/var/lib/kubelet`, `/var/lib/etcd`,
    /// `/etc/cni`): empty (the default) means `/`. The sandbox and the
    /// tests set a simulated host's directory.
    pub host_root: PathBuf,
    /// The CRI endpoint kubeadm registers the node with
    /// (`unix:///run/containerd/containerd.sock`). Unset: the first known
    /// runtime socket found under `host_root` (see [`crate::cri`]).
    pub cri_socket: Option<String>,
    /// `systemctl`: an upgrade restarts the kubelet with it.
    pub systemctl_path: PathBuf,
    /// `etcdctl` (v3.5 or newer), for a pool's etcd snapshots on a control
    /// plane (Debian: package `etcd-client`).
    pub etcdctl_path: PathBuf,
    /// How often a control plane reads its certificates' expiry
    /// (`kubeadm certs check-expiration`); also read when the host
    /// becomes a control plane and after a renewal.
    pub cert_check_interval_s: u64,
    /// After `kubeadm certs renew all`, how long the static-pod manifests
    /// stay out of `/etc/kubernetes/manifests` so the kubelet stops the
    /// pods (its fileCheckFrequency is 20 s).
    pub static_pod_restart_wait_s: u64,
}

impl Default for KubeConfig {
    fn default() -> Self {
        KubeConfig {
            kubeadm_path: PathBuf::from("/usr/bin/kubeadm"),
            kubectl_path: PathBuf::from("/usr/bin/kubectl"),
            kubelet_path: PathBuf::from("/usr/bin/kubelet"),
            admin_kubeconfig: PathBuf::from("/etc/kubernetes/admin.conf"),
            command_timeout_s: 600,
            host_root: PathBuf::new(),
            cri_socket: None,
            systemctl_path: PathBuf::from("/usr/bin/systemctl"),
            etcdctl_path: PathBuf::from("/usr/bin/etcdctl"),
            cert_check_interval_s: 3_600,
            static_pod_restart_wait_s: 20,
        }
    }
}

/// `[simulate]`: where the simulated-hardware file is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulateConfig {
    pub file: PathBuf,
}

impl Default for SimulateConfig {
    fn default() -> Self {
        SimulateConfig {
            file: PathBuf::from("/etc/rpool/simulated-host.toml"),
        }
    }
}

/// Values given on the command line; each replaces the config file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub controllers: Vec<String>,
    pub state_dir: Option<PathBuf>,
    pub zone: Option<String>,
    pub simulate: Option<PathBuf>,
}

impl Overrides {
    fn apply(&self, config: &mut Config) {
        if !self.controllers.is_empty() {
            config.controllers = self.controllers.clone();
        }
        if let Some(dir) = &self.state_dir {
            config.state_dir = dir.clone();
        }
        if let Some(zone) = &self.zone {
            config.zone = zone.clone();
        }
        if let Some(file) = &self.simulate {
            config.simulate = Some(SimulateConfig { file: file.clone() });
        }
    }

    /// The flag a field's value came from, when a flag set it.
    fn origin_of(&self, field: &str) -> Option<&'static str> {
        let top = field.split(['.', '[']).next().unwrap_or(field);
        match top {
            "controllers" if !self.controllers.is_empty() => Some("--controller"),
            "state_dir" if self.state_dir.is_some() => Some("--state-dir"),
            "zone" if self.zone.is_some() => Some("--zone"),
            "simulate" if self.simulate.is_some() => Some("--simulate"),
            _ => None,
        }
    }
}

impl Config {
    /// Parses `agent.toml` text. `file` is only used in error messages.
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Reads the config file (a missing file is fine unless `explicit`),
    /// applies the flag overrides, and validates the result.
    pub fn load(path: &Path, explicit: bool, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let mut config = match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml(&text, &file)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Config::default(),
            Err(source) => return Err(ConfigError::Read { file, source }),
        };
        overrides.apply(&mut config);
        config.validate().map_err(|e| ConfigError::Invalid {
            origin: overrides
                .origin_of(&e.field)
                .map(str::to_owned)
                .unwrap_or_else(|| file.clone()),
            field: e.field,
            message: e.problem,
        })?;
        Ok(config)
    }

    /// Checks every value; the first bad one is returned.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.controllers.is_empty() {
            return Err(FieldError::invalid(
                "controllers",
                "missing",
                "1..=7 \"host:port\" entries, in the config file or with --controller",
            ));
        }
        if self.controllers.len() > MAX_CONTROLLERS {
            return Err(FieldError::out_of_range(
                "controllers",
                format!("{} entries", self.controllers.len()),
                "1..=7 entries",
            ));
        }
        for (i, addr) in self.controllers.iter().enumerate() {
            if let Err(problem) = check_host_port(addr) {
                return Err(FieldError::invalid(
                    format!("controllers[{i}]"),
                    format!("{addr:?} {problem}"),
                    "\"host:port\", e.g. \"10.0.0.1:7443\" or \"[::1]:7443\"",
                ));
            }
        }
        if self.state_dir.as_os_str().is_empty() {
            return Err(FieldError::invalid("state_dir", "empty path", "a directory path"));
        }
        if let Err(problem) = check_dns_label(&self.zone) {
            return Err(FieldError::invalid(
                "zone",
                format!("{:?} {problem}", self.zone),
                "a DNS-1123 label: 1..=63 of [a-z0-9-], starting and ending with [a-z0-9]",
            ));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(FieldError::out_of_range(
                "labels",
                format!("{} labels", self.labels.len()),
                "at most 64 labels",
            ));
        }
        for (key, value) in &self.labels {
            let key_ok = (1..=63).contains(&key.len())
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'));
            if !key_ok {
                return Err(FieldError::invalid(
                    format!("labels.{key:?}"),
                    "invalid label key",
                    "keys of 1..=63 characters [A-Za-z0-9._/-]",
                ));
            }
            if value.chars().count() > 253 {
                return Err(FieldError::out_of_range(
                    format!("labels.{key}"),
                    format!("a value of {} characters", value.chars().count()),
                    "values of at most 253 characters",
                ));
            }
        }
        if let Err(e) = rpool_proto::units::parse_size(&self.health.min_free_disk) {
            return Err(FieldError::invalid(
                "health.min_free_disk",
                e,
                "a size such as \"1GiB\" or \"512MiB\"",
            ));
        }
        for (field, moved, set) in [
            (
                "health.kubeadm_path",
                "kube.kubeadm_path",
                self.health.kubeadm_path.is_some(),
            ),
            (
                "health.kubelet_path",
                "kube.kubelet_path",
                self.health.kubelet_path.is_some(),
            ),
            (
                "health.container_runtime_socket",
                "kube.cri_socket",
                self.health.container_runtime_socket.is_some(),
            ),
        ] {
            if set {
                return Err(FieldError::invalid(
                    field,
                    format!(
                        "moved to [kube] as {moved}: the health check looks where the tasks run the tools"
                    ),
                    "the path under [kube] instead",
                ));
            }
        }
        if let Some(socket) = &self.kube.cri_socket
            && !rpool_proto::kube::kubeadm_check::is_cri_socket(socket)
        {
            return Err(FieldError::invalid(
                "kube.cri_socket",
                format!("{socket:?} is not accepted"),
                "unix:///absolute/path, e.g. unix:///run/containerd/containerd.sock",
            ));
        }
        if let Some(address) = &self.advertise_address
            && let Err(problem) = crate::address::check_advertise(address)
        {
            return Err(FieldError::invalid(
                "advertise_address",
                format!("{address:?} {problem}"),
                "an IPv4 or IPv6 address of this host, not loopback, unspecified or multicast",
            ));
        }
        for (field, path) in [
            ("kube.kubeadm_path", &self.kube.kubeadm_path),
            ("kube.kubectl_path", &self.kube.kubectl_path),
            ("kube.systemctl_path", &self.kube.systemctl_path),
            ("kube.etcdctl_path", &self.kube.etcdctl_path),
            ("kube.kubelet_path", &self.kube.kubelet_path),
            ("kube.admin_kubeconfig", &self.kube.admin_kubeconfig),
        ] {
            if path.as_os_str().is_empty() {
                return Err(FieldError::invalid(field, "empty path", "a file path"));
            }
            if !path.is_absolute() {
                return Err(FieldError::invalid(
                    field,
                    format!("{:?} is relative", path.display().to_string()),
                    "an absolute file path",
                ));
            }
        }
        if !self.kube.host_root.as_os_str().is_empty() && !self.kube.host_root.is_absolute() {
            return Err(FieldError::invalid(
                "kube.host_root",
                format!("{:?} is relative", self.kube.host_root.display().to_string()),
                "empty (the root) or an absolute directory path",
            ));
        }
        let (lo, hi) = COMMAND_TIMEOUT_S_RANGE;
        if !(lo..=hi).contains(&self.kube.command_timeout_s) {
            return Err(FieldError::out_of_range(
                "kube.command_timeout_s",
                self.kube.command_timeout_s,
                &format!("{lo}..={hi}"),
            ));
        }
        for (field, value, (lo, hi)) in [
            (
                "kube.cert_check_interval_s",
                self.kube.cert_check_interval_s,
                CERT_CHECK_INTERVAL_S_RANGE,
            ),
            (
                "kube.static_pod_restart_wait_s",
                self.kube.static_pod_restart_wait_s,
                STATIC_POD_RESTART_WAIT_S_RANGE,
            ),
        ] {
            if !(lo..=hi).contains(&value) {
                return Err(FieldError::out_of_range(field, value, &format!("{lo}..={hi}")));
            }
        }
        let r = &self.reconnect;
        let (lo, hi) = INITIAL_BACKOFF_MS_RANGE;
        if !(lo..=hi).contains(&r.initial_backoff_ms) {
            return Err(FieldError::out_of_range(
                "reconnect.initial_backoff_ms",
                r.initial_backoff_ms,
                &format!("{lo}..={hi}"),
            ));
        }
        if !(r.initial_backoff_ms..=MAX_BACKOFF_MS_LIMIT).contains(&r.max_backoff_ms) {
            return Err(FieldError::out_of_range(
                "reconnect.max_backoff_ms",
                r.max_backoff_ms,
                &format!(
                    "{}..={MAX_BACKOFF_MS_LIMIT}, at least reconnect.initial_backoff_ms",
                    r.initial_backoff_ms
                ),
            ));
        }
        if let Some(sim) = &self.simulate
            && sim.file.as_os_str().is_empty()
        {
            return Err(FieldError::invalid("simulate.file", "empty path", "a file path"));
        }
        if let Some(enroll) = &self.enroll {
            enroll
                .validate()
                .map_err(|e| FieldError::new(e.field, e.message))?;
        }
        self.metrics.address()?;
        if self.tls.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(FieldError::invalid("tls.dir", "empty path", "a directory path"));
        }
        Ok(())
    }
}

/// `host:port` with a non-empty host (IPv6 in brackets) and a port 1..=65535.
pub(crate) fn check_host_port(addr: &str) -> Result<(), &'static str> {
    let (host, port) = addr.rsplit_once(':').ok_or("has no port")?;
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err("has an invalid port"),
        Ok(_) => {}
    }
    if host.is_empty() {
        return Err("has no host");
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("has an unclosed '['")?;
        inner
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| "has an invalid IPv6 address")?;
        return Ok(());
    }
    if host.contains(':') {
        return Err("needs brackets around an IPv6 address");
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err("has an invalid host name");
    }
    Ok(())
}

/// A DNS-1123 label: 1..=63 of `[a-z0-9-]`, alphanumeric at both ends.
pub(crate) fn check_dns_label(text: &str) -> Result<(), &'static str> {
    if text.is_empty() || text.len() > 63 {
        return Err("must be 1..=63 characters");
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("has characters other than [a-z0-9-]");
    }
    if text.starts_with('-') || text.ends_with('-') {
        return Err("starts or ends with '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        Config {
            controllers: vec!["127.0.0.1:7443".to_owned()],
            ..Config::default()
        }
    }

    fn field_error(config: &Config) -> FieldError {
        config.validate().expect_err("config should be rejected")
    }

    #[test]
    fn the_documented_example_parses_to_the_defaults() {
        let text = r#"
controllers = ["127.0.0.1:7443"]
state_dir = "/var/lib/rpool/agent"
zone = "default"
[labels]
[health]
min_free_disk = "1GiB"
[reconnect]
initial_backoff_ms = 200
max_backoff_ms = 10000
[kube]
kubeadm_path = "/usr/bin/kubeadm"
kubectl_path = "/usr/bin/kubectl"
kubelet_path = "/usr/bin/kubelet"
admin_kubeconfig = "/etc/kubernetes/admin.conf"
command_timeout_s = 600
"#;
        let config = Config::from_toml(text, "agent.toml").unwrap();
        assert_eq!(config, valid());
        config.validate().unwrap();
        assert_eq!(config.health.min_free_disk_bytes(), 1 << 30);
    }

    #[test]
    fn advertise_address_and_cri_socket_are_checked_and_name_their_field() {
        let mut config = valid();
        for (bad, problem) in [
            ("node-1", "is not an IP address"),
            ("127.0.0.1", "is a loopback address"),
            ("::", "is the unspecified address"),
            ("239.1.1.1", "is a multicast address"),
        ] {
            config.advertise_address = Some(bad.into());
            let err = field_error(&config);
            assert_eq!(err.field, "advertise_address");
            assert!(err.to_string().contains(problem), "{err}");
        }
        config.advertise_address = Some("10.0.0.21".into());
        config.validate().unwrap();
        for bad in ["/run/containerd/containerd.sock", "unix://", "tcp://10.0.0.1:1"] {
            config.kube.cri_socket = Some(bad.into());
            assert_eq!(field_error(&config).field, "kube.cri_socket", "{bad}");
        }
        let text = "controllers = [\"127.0.0.1:1\"]\nadvertise_address = \"2001:db8::7\"\n[kube]\ncri_socket = \"unix:///run/crio/crio.sock\"\n";
        let config = Config::from_toml(text, "agent.toml").unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.kube.cri_socket.as_deref(),
            Some("unix:///run/crio/crio.sock")
        );
        // The old health key is refused and points to the new one.
        let text = "controllers = [\"127.0.0.1:1\"]\n[health]\ncontainer_runtime_socket = \"/run/x.sock\"\n";
        let err = Config::from_toml(text, "agent.toml")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(err.field, "health.container_runtime_socket");
        assert!(err.to_string().contains("kube.cri_socket"), "{err}");
    }

    #[test]
    fn tool_paths_in_health_are_refused_and_point_to_kube() {
        let text = "controllers = [\"127.0.0.1:7443\"]\n[health]\nkubeadm_path = \"/opt/kubeadm\"\n";
        let err = Config::from_toml(text, "agent.toml")
            .unwrap()
            .validate()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("health.kubeadm_path") && text.contains("kube.kubeadm_path"),
            "{text}"
        );
        let text = "controllers = [\"127.0.0.1:7443\"]\n[kube]\nkubelet_path = \"/opt/k/kubelet\"\n";
        let config = Config::from_toml(text, "agent.toml").unwrap();
        config.validate().unwrap();
        assert_eq!(config.kube.kubelet_path, PathBuf::from("/opt/k/kubelet"));
    }

    #[test]
    fn a_simulate_table_without_file_uses_the_default_path() {
        let config = Config::from_toml("[simulate]\n", "a.toml").unwrap();
        assert_eq!(
            config.simulate.unwrap().file,
            PathBuf::from("/etc/rpool/simulated-host.toml")
        );
    }

    #[test]
    fn unknown_fields_are_rejected_with_the_file_name() {
        let err = Config::from_toml("zome = \"a\"\n", "/x/agent.toml").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/x/agent.toml: "), "{text}");
        assert!(text.contains("zome"), "{text}");
    }

    #[test]
    fn missing_controllers_are_rejected_and_the_flag_is_suggested() {
        let err = field_error(&Config::default());
        assert_eq!(err.field, "controllers");
        assert!(err.problem.contains("--controller"), "{}", err.problem);
    }

    #[test]
    fn more_than_seven_controllers_are_rejected() {
        let mut config = valid();
        config.controllers = (0..8).map(|i| format!("10.0.0.{i}:7443")).collect();
        let err = field_error(&config);
        assert_eq!(err.field, "controllers");
        assert_eq!(err.problem, "8 entries is out of range (accepted 1..=7 entries)");
    }

    #[test]
    fn controller_addresses_must_be_host_and_port() {
        for bad in [
            "localhost",
            "host:0",
            "host:99999",
            ":7443",
            "::1:7443",
            "[::1:7443",
            "a b:1",
        ] {
            let mut config = valid();
            config.controllers = vec!["10.0.0.1:7443".to_owned(), bad.to_owned()];
            let err = field_error(&config);
            assert_eq!(err.field, "controllers[1]", "{bad}");
            assert!(err.problem.contains("accepted \"host:port\""), "{}", err.problem);
        }
        let mut config = valid();
        config.controllers = vec!["[::1]:7443".into(), "ctl-1.example:7443".into()];
        config.validate().unwrap();
    }

    #[test]
    fn zone_must_be_a_dns_label() {
        for bad in ["", "Zone", "-a", "a-", "a_b", &"a".repeat(64)] {
            let mut config = valid();
            config.zone = bad.to_owned();
            assert_eq!(field_error(&config).field, "zone", "{bad:?}");
        }
        let mut config = valid();
        config.zone = "rack-12".into();
        config.validate().unwrap();
    }

    #[test]
    fn labels_are_limited_in_number_key_and_value() {
        let mut config = valid();
        config.labels = (0..65).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_eq!(field_error(&config).field, "labels");

        let mut config = valid();
        config.labels.insert("bad key".into(), "v".into());
        assert_eq!(field_error(&config).field, "labels.\"bad key\"");

        let mut config = valid();
        config.labels.insert("rack".into(), "x".repeat(254));
        let err = field_error(&config);
        assert_eq!(err.field, "labels.rack");
        assert!(err.problem.contains("at most 253"), "{}", err.problem);
    }

    #[test]
    fn min_free_disk_must_be_a_size() {
        let mut config = valid();
        config.health.min_free_disk = "1G".into();
        let err = field_error(&config);
        assert_eq!(err.field, "health.min_free_disk");
        assert!(err.problem.contains("(accepted a size"), "{}", err.problem);
    }

    #[test]
    fn initial_backoff_must_be_within_10_to_60000_ms() {
        for bad in [0, 9, 60_001] {
            let mut config = valid();
            config.reconnect.initial_backoff_ms = bad;
            config.reconnect.max_backoff_ms = 300_000;
            let err = field_error(&config);
            assert_eq!(err.field, "reconnect.initial_backoff_ms");
            assert_eq!(
                err.problem,
                format!("{bad} is out of range (accepted 10..=60000)")
            );
        }
    }

    #[test]
    fn max_backoff_must_be_at_least_initial_and_at_most_300000_ms() {
        for bad in [199, 300_001] {
            let mut config = valid();
            config.reconnect.max_backoff_ms = bad;
            let err = field_error(&config);
            assert_eq!(err.field, "reconnect.max_backoff_ms");
            assert!(
                err.problem
                    .starts_with(&format!("{bad} is out of range (accepted 200..=300000"))
            );
        }
    }

    #[test]
    fn the_kube_host_root_is_empty_or_absolute() {
        let mut config = valid();
        assert_eq!(
            config.kube.host_root,
            PathBuf::new(),
            "the default is the real root"
        );
        config.kube.host_root = PathBuf::from("sim/node");
        let err = field_error(&config);
        assert_eq!(err.field, "kube.host_root");
        assert!(
            err.problem.contains("\"sim/node\" is relative"),
            "{}",
            err.problem
        );
        for ok in ["", "/", "/var/lib/sandbox/node"] {
            config.kube.host_root = PathBuf::from(ok);
            config.validate().unwrap();
        }
        let config = Config::from_toml(
            "controllers = [\"127.0.0.1:1\"]\n[kube]\nhost_root = \"/sb/node\"\n",
            "a.toml",
        )
        .unwrap();
        assert_eq!(config.kube.host_root, PathBuf::from("/sb/node"));
    }

    #[test]
    fn cert_check_interval_and_restart_wait_are_in_range() {
        for (bad_interval, bad_wait) in [(0, 20), (86_401, 20), (3600, 0), (3600, 601)] {
            let mut config = valid();
            config.kube.cert_check_interval_s = bad_interval;
            config.kube.static_pod_restart_wait_s = bad_wait;
            let err = field_error(&config);
            if bad_wait == 20 {
                assert_eq!(err.field, "kube.cert_check_interval_s");
                assert!(err.problem.contains("accepted 1..=86400"), "{}", err.problem);
            } else {
                assert_eq!(err.field, "kube.static_pod_restart_wait_s");
                assert!(err.problem.contains("accepted 1..=600"), "{}", err.problem);
            }
        }
    }

    #[test]
    fn kube_paths_must_be_absolute_and_the_timeout_in_range() {
        let mut config = valid();
        config.kube.kubectl_path = PathBuf::from("kubectl");
        let err = field_error(&config);
        assert_eq!(err.field, "kube.kubectl_path");
        assert!(err.problem.contains("absolute"), "{}", err.problem);

        let mut config = valid();
        config.kube.admin_kubeconfig = PathBuf::new();
        assert_eq!(field_error(&config).field, "kube.admin_kubeconfig");

        for bad in [0, 9, 86_401] {
            let mut config = valid();
            config.kube.command_timeout_s = bad;
            let err = field_error(&config);
            assert_eq!(err.field, "kube.command_timeout_s");
            assert_eq!(
                err.problem,
                format!("{bad} is out of range (accepted 10..=86400)")
            );
        }
        let config = Config::from_toml(
            "controllers = [\"127.0.0.1:1\"]\n[kube]\nkubeadm_path = \"/opt/k/kubeadm\"\n",
            "a.toml",
        )
        .unwrap();
        assert_eq!(config.kube.kubeadm_path, PathBuf::from("/opt/k/kubeadm"));
        assert_eq!(config.kube.command_timeout_s, 600);
        config.validate().unwrap();
    }

    #[test]
    fn a_missing_default_config_file_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let overrides = Overrides {
            controllers: vec!["127.0.0.1:1".into()],
            ..Overrides::default()
        };
        let config = Config::load(&dir.path().join("none.toml"), false, &overrides).unwrap();
        assert_eq!(config.zone, "default");
    }

    #[test]
    fn a_missing_explicit_config_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.toml");
        let err = Config::load(&path, true, &Overrides::default()).unwrap_err();
        assert!(err.to_string().starts_with(&path.display().to_string()));
    }

    #[test]
    fn flags_override_the_file_and_are_named_when_bad() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "controllers = [\"10.0.0.1:7443\"]\nzone = \"a\"\n").unwrap();
        let overrides = Overrides {
            zone: Some("b".into()),
            simulate: Some("/tmp/hw.toml".into()),
            ..Overrides::default()
        };
        let config = Config::load(&path, true, &overrides).unwrap();
        assert_eq!(config.zone, "b");
        assert_eq!(config.simulate.unwrap().file, PathBuf::from("/tmp/hw.toml"));

        let overrides = Overrides {
            zone: Some("B!".into()),
            ..Overrides::default()
        };
        let err = Config::load(&path, true, &overrides).unwrap_err();
        assert!(err.to_string().starts_with("--zone: zone: \"B!\""), "{err}");

        std::fs::write(
            &path,
            "controllers = [\"10.0.0.1:7443\"]\n[reconnect]\ninitial_backoff_ms = 1\n",
        )
        .unwrap();
        let err = Config::load(&path, true, &Overrides::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: reconnect.initial_backoff_ms: 1 is out of range (accepted 10..=60000)",
                path.display()
            )
        );
    }
}
