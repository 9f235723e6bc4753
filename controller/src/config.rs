//! `controller.toml`: the controller's configuration file, its defaults and
//! its validation.
//!
//! Every key is optional; a missing file at the default path means "all
//! defaults". [`Config::validate`] checks every rule and names the offending
//! field by its dotted path together with the accepted range, so the message
//! can be shown to an operator as is:
//!
//! ```text
//! /etc/rpool/controller.toml: liveness.down_after_ms: 100 is out of range (accepted 3001..=3600000)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the controller looks for its configuration when `--config` is not
/// given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/rpool/controller.toml";

/// Largest accepted controller id (ids are Raft node ids later; 0 is reserved
/// by raft-rs for "no node").
pub const MAX_ID: u64 = 1 << 63;

/// The whole `controller.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Controller id, `1..=2^63`. Becomes the Raft node id.
    pub id: u64,
    /// Socket address the gRPC server listens on.
    pub listen: SocketAddr,
    /// Address (`host:port`) other controllers, agents and rpoolctl use to
    /// reach this one; defaults to `listen` (which must then not be a
    /// wildcard address when there are peers).
    pub advertise: Option<String>,
    /// Directory for persistent state: the Raft log (entries and the
    /// snapshot file the applied state is rebuilt from) in `{data_dir}/raft`.
    pub data_dir: PathBuf,
    /// The initial controller group, this controller included. Empty: a
    /// group of one. A controller whose `id` is not listed starts as a new
    /// member that waits to be added (`rpoolctl controller add`).
    pub peers: Vec<PeerConfig>,
    /// Raft timing and log compaction.
    pub raft: RaftSettings,
    /// Heartbeat and failure-detection timings.
    pub liveness: LivenessConfig,
    /// Replacing down pool members, and when not to (storms).
    pub healing: HealingConfig,
    /// The Prometheus `/metrics` endpoint (off unless `listen` is set).
    pub metrics: crate::metrics::MetricsConfig,
    /// Where events are POSTed (off unless `url` is set).
    pub webhook: crate::leader::webhook::WebhookConfig,
    /// Mutual TLS: the CA, this controller's certificate and key, and the
    /// CA key used to sign agent certificates at enrollment.
    pub tls: TlsConfig,
    /// Fleet-wide Kubernetes settings (control-plane VIPs).
    pub kube: KubeSettings,
}

/// `[kube]`: fleet-wide settings of the clusters the controller builds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeSettings {
    /// Addresses the controller gives control-plane VIPs from, `FIRST-LAST`
    /// or `ADDRESS/PREFIX` (e.g. `192.0.2.240/28`): a pool with 3 or 5
    /// control planes created without `--vip` gets the lowest address no
    /// pool and no host uses. Unset: such a pool needs `--vip`.
    pub vip_range: Option<String>,
    /// Where every pool's images come from (air-gapped sites: a mirror),
    /// e.g. `registry.example:5000/k8s`: kubeadm's `imageRepository` (the
    /// images step pulls the control-plane images from it) and the addon
    /// images rpool writes (flannel, kube-vip, MetalLB), each under its
    /// upstream path. Unset: the upstream registries.
    pub image_repository: Option<String>,
}

impl KubeSettings {
    /// `vip_range` parsed (`None` when unset; only meaningful after
    /// [`KubeSettings::validate`]).
    pub fn vip_range(&self) -> Option<rpool_proto::kube::cidr::IpRange> {
        self.vip_range
            .as_deref()
            .and_then(|r| rpool_proto::kube::cidr::IpRange::parse(r.trim()).ok())
    }

    /// `vip_range` parses.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(repo) = &self.image_repository
            && !rpool_proto::kube::kubeadm_check::is_image_repository(repo)
        {
            return Err(FieldError::invalid(
                "kube.image_repository",
                format!("{repo:?} is not an image repository"),
                "a registry host[:port] with an optional lowercase path, no scheme, e.g. registry.example:5000/k8s",
            ));
        }
        if let Some(range) = &self.vip_range {
            rpool_proto::kube::cidr::IpRange::parse(range.trim()).map_err(|why| {
                FieldError::invalid(
                    "kube.vip_range",
                    format!("{range:?} {why}"),
                    "FIRST-LAST or ADDRESS/PREFIX, e.g. 192.0.2.240/28",
                )
            })?;
        }
        Ok(())
    }
}

/// `[healing]`: whether down pool members are replaced, and the storm
/// thresholds above which nothing is replaced and an alert goes out
/// instead (many hosts silent at once is a network problem, not failing
/// hosts). See [`crate::policy::healing`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealingConfig {
    /// Replace down members at all.
    pub enabled: bool,
    /// Storm when more than this share of all hosts is suspect or down,
    /// `0.0 < x <= 1.0`.
    pub storm_fleet_share: f64,
    /// Storm when at least this share of one pool's members is suspect or
    /// down, `0.0 < x <= 1.0`.
    pub storm_pool_share: f64,
    /// A down member is replaced only once its host has been down this
    /// long, `0..=600000` ms. Hosts cut off together go silent a heartbeat
    /// or two apart; waiting lets the later ones turn suspect too, so they
    /// are counted as one storm instead of the first being replaced. At
    /// least `liveness.suspect_after_ms` counts silences that began up to
    /// `down_after_ms` apart as one.
    pub settle_ms: u64,
}

impl Default for HealingConfig {
    fn default() -> Self {
        HealingConfig {
            enabled: true,
            storm_fleet_share: 0.34,
            storm_pool_share: 0.5,
            settle_ms: 3_000,
        }
    }
}

/// Shares are validated finite, so equality is reflexive.
impl Eq for HealingConfig {}

/// `[tls]`: the files of this controller's mutual TLS. The controller
/// serves only TLS; every file is read and checked at start (a missing or
/// unreadable one stops it with exit 64, naming the path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// CA certificate (PEM) every peer must chain to.
    pub ca: PathBuf,
    /// This controller's certificate chain (PEM); its identity must be
    /// `urn:rpool:controller:<id>` and its SANs every address it is reached at.
    pub cert: PathBuf,
    /// This controller's private key (PEM, mode 0600).
    pub key: PathBuf,
    /// CA private key (PEM, mode 0600), used only to sign agent
    /// certificates at enrollment; may be absent when enrollment is not
    /// served here.
    pub ca_key: PathBuf,
    /// Lifetime of the agent certificates this controller signs
    /// (enrollment and renewal), a duration such as `30d` or `12h`:
    /// `5s..=365d`. Agents renew at two thirds of it. Seconds are accepted
    /// for tests and demos of renewal; production wants days.
    pub agent_cert_ttl: String,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca: PathBuf::from("/etc/rpool/pki/ca.crt"),
            cert: PathBuf::from("/etc/rpool/pki/controller.crt"),
            key: PathBuf::from("/etc/rpool/pki/controller.key"),
            ca_key: PathBuf::from("/etc/rpool/pki/ca.key"),
            agent_cert_ttl: "30d".to_owned(),
        }
    }
}

impl TlsConfig {
    /// Shortest accepted `agent_cert_ttl`.
    pub const AGENT_CERT_TTL_MIN: std::time::Duration = std::time::Duration::from_secs(5);
    /// Longest accepted `agent_cert_ttl`.
    pub const AGENT_CERT_TTL_MAX: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

    /// `agent_cert_ttl` parsed (30 days if it does not parse: only after
    /// [`TlsConfig::validate`] is it meaningful).
    pub fn agent_cert_ttl(&self) -> std::time::Duration {
        rpool_proto::units::parse_duration(&self.agent_cert_ttl)
            .unwrap_or(std::time::Duration::from_secs(30 * 86_400))
    }

    /// Checks `agent_cert_ttl`: a duration in `5s..=365d`.
    fn validate_agent_cert_ttl(&self) -> Result<(), FieldError> {
        let field = "tls.agent_cert_ttl";
        let ttl = rpool_proto::units::parse_duration(&self.agent_cert_ttl)
            .map_err(|e| FieldError::invalid(field, e, "5s..=365d"))?;
        if !(Self::AGENT_CERT_TTL_MIN..=Self::AGENT_CERT_TTL_MAX).contains(&ttl) {
            return Err(FieldError::out_of_range(
                field,
                format!("{:?}", self.agent_cert_ttl),
                "5s..=365d",
            ));
        }
        Ok(())
    }

    /// The three files the server and its clients use.
    pub fn files(&self) -> rpool_proto::tls::TlsFiles {
        rpool_proto::tls::TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }

    /// Paths are not empty (the files themselves: [`TlsConfig::load`]).
    pub fn validate(&self) -> Result<(), FieldError> {
        FieldError::first_empty_path(
            [
                ("tls.ca", self.ca.as_path()),
                ("tls.cert", self.cert.as_path()),
                ("tls.key", self.key.as_path()),
                ("tls.ca_key", self.ca_key.as_path()),
            ],
            "a PEM file path",
        )?;
        self.validate_agent_cert_ttl()?;
        Ok(())
    }

    /// Reads and checks the CA, certificate and key: they parse, the
    /// certificate is signed by the CA, valid now, and is controller `id`'s.
    /// The error names the file.
    pub fn load(&self, id: u64) -> Result<rpool_proto::tls::TlsMaterial, String> {
        let material = self.files().load().map_err(|e| e.to_string())?;
        let want = rpool_proto::pki::Identity::Controller(id);
        if material.identity != want {
            return Err(format!(
                "{}: certificate is for {}, expected {want} (the controller's id)",
                self.cert.display(),
                material.identity
            ));
        }
        Ok(material)
    }
}

/// `[[peers]]`: one member of the initial controller group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its controller id.
    pub id: u64,
    /// Its address, `host:port`.
    pub address: String,
}

/// `[raft]`: consensus timing. An election starts after
/// `election_ticks..2*election_ticks` ticks without a leader (randomized);
/// the leader heartbeats every `heartbeat_ticks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSettings {
    /// Length of one Raft tick, `10..=1000` ms.
    pub tick_ms: u64,
    /// Leader heartbeat interval in ticks, `1..=100`.
    pub heartbeat_ticks: u64,
    /// Election timeout in ticks, `heartbeat_ticks+1..=1000`.
    pub election_ticks: u64,
    /// Applied entries between log compactions (snapshots),
    /// `100..=10000000`.
    pub snapshot_every: u64,
    /// MiB the live Raft log segment is preallocated by at a time,
    /// `0..=1024` (0: none). A sync of a write inside the file's size
    /// writes no metadata (no new size); the space is taken ahead, so a
    /// full disk stops the replica up to this much later.
    pub preallocate_mib: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            tick_ms: 50,
            heartbeat_ticks: 2,
            election_ticks: 8,
            snapshot_every: 10_000,
            preallocate_mib: 16,
        }
    }
}

/// `[liveness]`: how often agents heartbeat and when silence turns a host
/// suspect, then down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LivenessConfig {
    /// Interval agents are told to heartbeat at, `100..=60000` ms.
    pub heartbeat_interval_ms: u64,
    /// Silence after which a ready host becomes suspect,
    /// `2*heartbeat_interval_ms..=600000` ms.
    pub suspect_after_ms: u64,
    /// Silence after which a ready or suspect host becomes down,
    /// `suspect_after_ms+1..=3600000` ms.
    pub down_after_ms: u64,
    /// Followers keep the agents' connections and relay their sessions to
    /// the leader over one `RelayService.Sessions` stream each, and the
    /// leader hands direct sessions to them ([`crate::api::relay`]); off:
    /// followers redirect agents to the leader, which holds every
    /// connection. On by default. Set it the same on every controller of a
    /// group.
    pub relay_sessions: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: 1,
            listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            advertise: None,
            data_dir: PathBuf::from("/var/lib/rpool/controller"),
            peers: Vec::new(),
            raft: RaftSettings::default(),
            liveness: LivenessConfig::default(),
            healing: HealingConfig::default(),
            metrics: crate::metrics::MetricsConfig::default(),
            webhook: crate::leader::webhook::WebhookConfig::default(),
            tls: TlsConfig::default(),
            kube: KubeSettings::default(),
        }
    }
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            heartbeat_interval_ms: 1_000,
            suspect_after_ms: 3_000,
            down_after_ms: 5_000,
            relay_sessions: true,
        }
    }
}

impl LivenessConfig {
    /// Heartbeat interval as a [`Duration`].
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// Suspect threshold as a [`Duration`].
    pub fn suspect_after(&self) -> Duration {
        Duration::from_millis(self.suspect_after_ms)
    }

    /// Down threshold as a [`Duration`].
    pub fn down_after(&self) -> Duration {
        Duration::from_millis(self.down_after_ms)
    }

    /// The three settings as the `u32` the wire contract carries. Validation
    /// bounds them far below `u32::MAX`; saturation only guards unvalidated
    /// values.
    pub fn wire_ms(&self) -> (u32, u32, u32) {
        let narrow = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        (
            narrow(self.heartbeat_interval_ms),
            narrow(self.suspect_after_ms),
            narrow(self.down_after_ms),
        )
    }
}

/// A field of the configuration that breaks a rule (shared by every
/// binary); [`ConfigError::Invalid`] adds the file name.
pub use rpool_proto::config::FieldError;

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (including "not found").
    #[error("{file}: cannot read the file")]
    Read {
        /// Path as given.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("{file}: {message}")]
    Parse {
        /// Path as given.
        file: String,
        /// The TOML error, with line and column.
        message: String,
    },
    /// The file parsed but a value breaks a rule.
    #[error("{file}: {error}")]
    Invalid {
        /// Path as given.
        file: String,
        /// The field and the rule.
        error: FieldError,
    },
}

impl ConfigError {
    /// True when the file simply does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

impl Config {
    /// Parses TOML text. `file` names the source in error messages. Does not
    /// validate: call [`Config::validate`] after applying flag overrides.
    pub fn from_toml(file: &str, text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            // toml's Display spans several lines (snippet and caret); keep it
            // but drop the trailing newline so `{file}: {error}` reads well.
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Reads and parses `path` (not validated).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::from_toml(&file, &text)
    }

    /// Checks every rule; the error names the first field that breaks one.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !(1..=MAX_ID).contains(&self.id) {
            return Err(FieldError::out_of_range("id", self.id, &format!("1..={MAX_ID}")));
        }
        FieldError::first_empty_path([("data_dir", self.data_dir.as_path())], "a directory path")?;
        if let Some(advertise) = &self.advertise {
            check_address("advertise", advertise)?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for peer in &self.peers {
            if !(1..=MAX_ID).contains(&peer.id) {
                return Err(FieldError::out_of_range(
                    "peers.id",
                    peer.id,
                    &format!("1..={MAX_ID}"),
                ));
            }
            if !seen.insert(peer.id) {
                return Err(FieldError {
                    field: "peers.id".into(),
                    problem: format!("{} is listed twice (accepted unique ids)", peer.id),
                });
            }
            check_address("peers.address", &peer.address)?;
        }
        if self.peers.len() > 7 {
            return Err(FieldError::out_of_range(
                "peers",
                self.peers.len(),
                "0..=7 controllers",
            ));
        }
        if let Some(me) = self.peers.iter().find(|p| p.id == self.id) {
            if self.advertise.as_deref().is_some_and(|a| a != me.address) {
                return Err(FieldError {
                    field: "advertise".into(),
                    problem: format!(
                        "{:?} differs from this controller's peers entry {:?} (accepted the same address)",
                        self.advertise.as_deref().unwrap_or_default(),
                        me.address
                    ),
                });
            }
        } else if self.advertise.is_none() && !self.peers.is_empty() && self.listen.ip().is_unspecified() {
            return Err(FieldError {
                field: "advertise".into(),
                problem: format!(
                    "missing while listen is the wildcard {} (accepted the host:port peers reach this controller at)",
                    self.listen
                ),
            });
        }
        let r = &self.raft;
        if !(10..=1_000).contains(&r.tick_ms) {
            return Err(FieldError::out_of_range("raft.tick_ms", r.tick_ms, "10..=1000"));
        }
        if !(1..=100).contains(&r.heartbeat_ticks) {
            return Err(FieldError::out_of_range(
                "raft.heartbeat_ticks",
                r.heartbeat_ticks,
                "1..=100",
            ));
        }
        if !(r.heartbeat_ticks + 1..=1_000).contains(&r.election_ticks) {
            return Err(FieldError::out_of_range(
                "raft.election_ticks",
                r.election_ticks,
                &format!("{}..=1000, more than heartbeat_ticks", r.heartbeat_ticks + 1),
            ));
        }
        if !(100..=10_000_000).contains(&r.snapshot_every) {
            return Err(FieldError::out_of_range(
                "raft.snapshot_every",
                r.snapshot_every,
                "100..=10000000",
            ));
        }
        if r.preallocate_mib > 1_024 {
            return Err(FieldError::out_of_range(
                "raft.preallocate_mib",
                r.preallocate_mib,
                "0..=1024",
            ));
        }
        let l = &self.liveness;
        if !(100..=60_000).contains(&l.heartbeat_interval_ms) {
            return Err(FieldError::out_of_range(
                "liveness.heartbeat_interval_ms",
                l.heartbeat_interval_ms,
                "100..=60000",
            ));
        }
        let min_suspect = 2 * l.heartbeat_interval_ms;
        if !(min_suspect..=600_000).contains(&l.suspect_after_ms) {
            return Err(FieldError::out_of_range(
                "liveness.suspect_after_ms",
                l.suspect_after_ms,
                &format!("{min_suspect}..=600000, at least 2*heartbeat_interval_ms"),
            ));
        }
        let min_down = l.suspect_after_ms + 1;
        if !(min_down..=3_600_000).contains(&l.down_after_ms) {
            return Err(FieldError::out_of_range(
                "liveness.down_after_ms",
                l.down_after_ms,
                &format!("{min_down}..=3600000, more than suspect_after_ms"),
            ));
        }
        let h = &self.healing;
        for (field, share) in [
            ("healing.storm_fleet_share", h.storm_fleet_share),
            ("healing.storm_pool_share", h.storm_pool_share),
        ] {
            if !(share > 0.0 && share <= 1.0) {
                return Err(FieldError::out_of_range(field, share, "0.0 < x <= 1.0"));
            }
        }
        if h.settle_ms > 600_000 {
            return Err(FieldError::out_of_range(
                "healing.settle_ms",
                h.settle_ms,
                "0..=600000",
            ));
        }
        self.metrics.validate()?;
        self.webhook.validate()?;
        self.tls.validate()?;
        self.kube.validate()?;
        Ok(())
    }

    /// The address others reach this controller at: `advertise`, else this
    /// controller's `peers` entry, else `listen`.
    pub fn advertised(&self) -> String {
        if let Some(address) = &self.advertise {
            return address.clone();
        }
        match self.peers.iter().find(|p| p.id == self.id) {
            Some(me) => me.address.clone(),
            None => self.listen.to_string(),
        }
    }

    /// The initial group (id -> address): `peers`, or this controller alone.
    pub fn initial_members(&self) -> std::collections::BTreeMap<u64, String> {
        if self.peers.is_empty() {
            return [(self.id, self.advertised())].into();
        }
        self.peers.iter().map(|p| (p.id, p.address.clone())).collect()
    }

    /// True when this controller is not in `peers`: it joins an existing
    /// group instead of founding one.
    pub fn joins_existing_group(&self) -> bool {
        !self.peers.is_empty() && !self.peers.iter().any(|p| p.id == self.id)
    }

    /// [`Config::validate`] with the file name attached, as reported to users.
    pub fn validate_in(&self, file: &str) -> Result<(), ConfigError> {
        self.validate().map_err(|error| ConfigError::Invalid {
            file: file.to_owned(),
            error,
        })
    }
}

/// `host:port` with a non-empty host and a port 1..=65535.
fn check_address(field: &'static str, address: &str) -> Result<(), FieldError> {
    let bad = || FieldError {
        field: field.into(),
        problem: format!("{address:?} is not host:port (accepted e.g. 10.0.0.11:7443 or ctl-1.example:7443)"),
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let config = Config::from_toml("c.toml", "").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.id, 1);
        assert_eq!(config.listen.to_string(), "0.0.0.0:7443");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/rpool/controller"));
        assert_eq!(config.liveness.heartbeat_interval_ms, 1_000);
        assert_eq!(config.liveness.suspect_after_ms, 3_000);
        assert_eq!(config.liveness.down_after_ms, 5_000);
        config.validate().unwrap();
    }

    #[test]
    fn the_packaged_example_config_describes_a_trio_with_default_timings() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/etc/rpool/controller.toml");
        let config = Config::load(&path).unwrap();
        config.validate().unwrap();
        assert_eq!(config.initial_members().len(), 3);
        assert_eq!(config.advertised(), "10.0.0.11:7443");
        assert!(!config.joins_existing_group());
        assert_eq!(config.raft, RaftSettings::default());
        assert_eq!(config.liveness, LivenessConfig::default());
        assert_eq!(config.data_dir, Config::default().data_dir);
        assert_eq!(config.healing, HealingConfig::default());
    }

    #[test]
    fn a_full_file_parses_every_key() {
        let text = r#"
            id = 7
            listen = "127.0.0.1:9000"
            data_dir = "/tmp/x"
            [liveness]
            heartbeat_interval_ms = 500
            suspect_after_ms = 1000
            down_after_ms = 2000
        "#;
        let config = Config::from_toml("c.toml", text).unwrap();
        assert_eq!(config.id, 7);
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.liveness.wire_ms(), (500, 1000, 2000));
        config.validate().unwrap();
    }

    #[test]
    fn an_unknown_key_is_a_parse_error_naming_the_file_and_key() {
        let err = Config::from_toml("c.toml", "[liveness]\nheartbeat_ms = 5\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("c.toml: "), "{text}");
        assert!(text.contains("heartbeat_ms"), "{text}");
    }

    #[test]
    fn a_mistyped_value_is_a_parse_error() {
        let err = Config::from_toml("c.toml", "listen = \"nowhere\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }

    #[test]
    fn a_missing_file_is_reported_as_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(&dir.path().join("absent.toml")).unwrap_err();
        assert!(err.is_not_found());
        assert!(err.to_string().contains("absent.toml"));
    }

    /// One case per rule: (toml, expected message after the file name).
    #[test]
    fn every_rule_names_the_field_and_the_accepted_range() {
        let cases: &[(&str, &str)] = &[
            (
                "id = 0",
                "id: 0 is out of range (accepted 1..=9223372036854775808)",
            ),
            (
                "data_dir = \"\"",
                "data_dir: empty path (accepted a directory path)",
            ),
            (
                "[liveness]\nheartbeat_interval_ms = 99",
                "liveness.heartbeat_interval_ms: 99 is out of range (accepted 100..=60000)",
            ),
            (
                "[liveness]\nheartbeat_interval_ms = 60001\nsuspect_after_ms = 200000\ndown_after_ms = 300000",
                "liveness.heartbeat_interval_ms: 60001 is out of range (accepted 100..=60000)",
            ),
            (
                "[liveness]\nsuspect_after_ms = 1999",
                "liveness.suspect_after_ms: 1999 is out of range (accepted 2000..=600000, at least 2*heartbeat_interval_ms)",
            ),
            (
                "[liveness]\nsuspect_after_ms = 600001\ndown_after_ms = 700000",
                "liveness.suspect_after_ms: 600001 is out of range (accepted 2000..=600000, at least 2*heartbeat_interval_ms)",
            ),
            (
                "[liveness]\ndown_after_ms = 3000",
                "liveness.down_after_ms: 3000 is out of range (accepted 3001..=3600000, more than suspect_after_ms)",
            ),
            (
                "[liveness]\ndown_after_ms = 3600001",
                "liveness.down_after_ms: 3600001 is out of range (accepted 3001..=3600000, more than suspect_after_ms)",
            ),
        ];
        for (text, want) in cases {
            let config = Config::from_toml("c.toml", text).unwrap();
            let err = config.validate_in("c.toml").unwrap_err();
            assert_eq!(err.to_string(), format!("c.toml: {want}"), "case {text:?}");
        }
    }

    #[test]
    fn peers_and_raft_rules_name_the_field() {
        let base = "listen = \"127.0.0.1:7443\"\n";
        let cases: &[(&str, &str)] = &[
            (
                "[[peers]]\nid = 1\naddress = \"a:1\"\n[[peers]]\nid = 1\naddress = \"b:1\"\n",
                "peers.id",
            ),
            ("[[peers]]\nid = 1\naddress = \"no-port\"\n", "peers.address"),
            ("[[peers]]\nid = 0\naddress = \"a:1\"\n", "peers.id"),
            ("advertise = \"x\"\n", "advertise"),
            ("[raft]\ntick_ms = 5\n", "raft.tick_ms"),
            ("[raft]\nheartbeat_ticks = 0\n", "raft.heartbeat_ticks"),
            (
                "[raft]\nheartbeat_ticks = 5\nelection_ticks = 5\n",
                "raft.election_ticks",
            ),
            ("[raft]\nsnapshot_every = 10\n", "raft.snapshot_every"),
            ("[raft]\npreallocate_mib = 2048\n", "raft.preallocate_mib"),
        ];
        for (extra, field) in cases {
            let text = format!("{base}{extra}");
            let config = Config::from_toml("c.toml", &text).unwrap();
            let err = config.validate().expect_err(extra);
            assert_eq!(err.field, *field, "{extra}: {err}");
            assert!(err.problem.contains("accepted"), "{err}");
        }
        // A wildcard listen address needs an advertised one when there are peers.
        let config = Config::from_toml(
            "c.toml",
            "id = 4\nlisten = \"0.0.0.0:7443\"\n[[peers]]\nid = 1\naddress = \"a:1\"\n",
        )
        .unwrap();
        assert_eq!(config.validate().unwrap_err().field, "advertise");
        assert!(config.joins_existing_group());
    }

    #[test]
    fn healing_shares_are_checked_with_field_and_range() {
        let config = Config::from_toml("c.toml", "").unwrap();
        assert_eq!(config.healing, HealingConfig::default());
        assert!(config.healing.enabled);
        let ok = "[healing]\nenabled = false\nstorm_fleet_share = 1.0\nstorm_pool_share = 0.01\n";
        let config = Config::from_toml("c.toml", ok).unwrap();
        config.validate().unwrap();
        assert!(!config.healing.enabled);
        let cases: &[(&str, &str)] = &[
            (
                "[healing]\nstorm_fleet_share = 0.0",
                "healing.storm_fleet_share: 0 is out of range (accepted 0.0 < x <= 1.0)",
            ),
            (
                "[healing]\nstorm_pool_share = 1.5",
                "healing.storm_pool_share: 1.5 is out of range (accepted 0.0 < x <= 1.0)",
            ),
            (
                "[healing]\nstorm_pool_share = nan",
                "healing.storm_pool_share: NaN is out of range (accepted 0.0 < x <= 1.0)",
            ),
            (
                "[healing]\nsettle_ms = 600001",
                "healing.settle_ms: 600001 is out of range (accepted 0..=600000)",
            ),
        ];
        for (text, want) in cases {
            let config = Config::from_toml("c.toml", text).unwrap();
            let err = config.validate_in("c.toml").unwrap_err();
            assert_eq!(err.to_string(), format!("c.toml: {want}"), "case {text:?}");
        }
        let err = Config::from_toml("c.toml", "[healing]\nstorm_share = 0.5\n").unwrap_err();
        assert!(err.to_string().contains("storm_share"), "{err}");
    }

    #[test]
    fn the_agent_certificate_lifetime_is_a_duration_in_range() {
        let config = Config::from_toml("c.toml", "").unwrap();
        assert_eq!(
            config.tls.agent_cert_ttl(),
            std::time::Duration::from_secs(30 * 86_400)
        );
        for (ttl, secs) in [("5s", 5), ("6s", 6), ("12h", 43_200), ("365d", 365 * 86_400)] {
            let config =
                Config::from_toml("c.toml", &format!("[tls]\nagent_cert_ttl = \"{ttl}\"\n")).unwrap();
            config.validate().unwrap();
            assert_eq!(config.tls.agent_cert_ttl(), std::time::Duration::from_secs(secs));
        }
        for (ttl, want) in [
            (
                "4s",
                "tls.agent_cert_ttl: \"4s\" is out of range (accepted 5s..=365d)",
            ),
            (
                "366d",
                "tls.agent_cert_ttl: \"366d\" is out of range (accepted 5s..=365d)",
            ),
            ("soon", "tls.agent_cert_ttl: invalid duration \"soon\""),
        ] {
            let config =
                Config::from_toml("c.toml", &format!("[tls]\nagent_cert_ttl = \"{ttl}\"\n")).unwrap();
            let err = config.validate_in("c.toml").unwrap_err().to_string();
            assert!(err.starts_with(&format!("c.toml: {want}")), "{err}");
        }
    }

    #[test]
    fn boundary_values_are_accepted() {
        let text = "id = 9223372036854775807\n[liveness]\nheartbeat_interval_ms = 100\nsuspect_after_ms = 200\ndown_after_ms = 201";
        Config::from_toml("c.toml", text).unwrap().validate().unwrap();
        let text =
            "[liveness]\nheartbeat_interval_ms = 60000\nsuspect_after_ms = 600000\ndown_after_ms = 3600000";
        Config::from_toml("c.toml", text).unwrap().validate().unwrap();
    }

    #[test]
    fn the_vip_range_is_a_range_or_a_network_and_a_bad_one_names_the_key() {
        let config = Config::from_toml("c.toml", "[kube]\nvip_range = \"198.51.100.0/28\"").unwrap();
        config.validate().unwrap();
        assert_eq!(config.kube.vip_range().unwrap().to_string(), "198.51.100.0/28");
        let config =
            Config::from_toml("c.toml", "[kube]\nvip_range = \"198.51.100.5-198.51.100.9\"").unwrap();
        config.validate().unwrap();
        assert!(Config::default().kube.vip_range().is_none());
        for bad in ["198.51.100.9-198.51.100.1", "198.51.100.0", "vip.example/28"] {
            let config = Config::from_toml("c.toml", &format!("[kube]\nvip_range = {bad:?}")).unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.starts_with("kube.vip_range: "), "{err}");
            assert!(
                err.ends_with("(accepted FIRST-LAST or ADDRESS/PREFIX, e.g. 192.0.2.240/28)"),
                "{err}"
            );
        }
    }
}
