//! Simulated hardware: a TOML file that stands in for the machine's cores,
//! memory and load (sandbox and tests run many agents on one box).
//!
//! The file is re-read whenever its modification time or size changes
//! ([`SimulatedSource::poll`], called before every heartbeat). A file that is
//! invalid at start is a configuration error; one that becomes invalid later
//! keeps the last good values and is reported through the `simulation` health
//! check until it is fixed.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use crate::config::check_dns_label;

const MIN_MEMORY: u64 = 64 << 20;
const MAX_MEMORY: u64 = 64 << 40;

/// Why a simulated-hardware file was rejected: `{file}: {message}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct SimulateError {
    pub file: String,
    /// A TOML error, a read error, or `{field}: {value} is out of range (accepted {range})`.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    logical_cores: i64,
    physical_cores: Option<i64>,
    memory: String,
    zone: Option<String>,
    hostname: Option<String>,
    cpu_percent: Option<f64>,
    memory_used: Option<String>,
    load_average: Option<f64>,
}

/// A validated simulated-hardware file.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedHost {
    pub logical_cores: u32,
    pub physical_cores: u32,
    pub memory_bytes: u64,
    pub zone: Option<String>,
    pub hostname: Option<String>,
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub load_average: f64,
}

/// Parses and validates the file's text; `file` only names it in errors.
pub fn parse(text: &str, file: &str) -> Result<SimulatedHost, SimulateError> {
    let err = |message: String| SimulateError {
        file: file.to_owned(),
        message,
    };
    let range = |field: &str, value: &dyn std::fmt::Display, accepted: &str| {
        err(format!("{field}: {value} is out of range (accepted {accepted})"))
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_owned()))?;

    if !(1..=4096).contains(&raw.logical_cores) {
        return Err(range("logical_cores", &raw.logical_cores, "1..=4096"));
    }
    let logical_cores = raw.logical_cores as u32;
    let physical_cores = match raw.physical_cores {
        None => logical_cores,
        Some(p) if (1..=raw.logical_cores).contains(&p) => p as u32,
        Some(p) => {
            return Err(range(
                "physical_cores",
                &p,
                &format!("1..=logical_cores, here 1..={logical_cores}"),
            ));
        }
    };
    let size = |field: &str, text: &str| {
        rpool_proto::units::parse_size(text)
            .map_err(|e| err(format!("{field}: {e} (accepted a size such as \"64GiB\")")))
    };
    let memory_bytes = size("memory", &raw.memory)?;
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&memory_bytes) {
        return Err(range("memory", &raw.memory, "64MiB..=64TiB"));
    }
    if let Some(zone) = &raw.zone
        && let Err(problem) = check_dns_label(zone)
    {
        return Err(err(format!(
            "zone: {zone:?} {problem} (accepted a DNS-1123 label: 1..=63 of [a-z0-9-])"
        )));
    }
    if let Some(name) = &raw.hostname {
        let ok = (1..=253).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !ok {
            return Err(err(format!(
                "hostname: {name:?} is not a host name (accepted 1..=253 characters [A-Za-z0-9.-])"
            )));
        }
    }
    let cpu_percent = raw.cpu_percent.unwrap_or(0.0);
    if !(cpu_percent.is_finite() && (0.0..=100.0).contains(&cpu_percent)) {
        return Err(range("cpu_percent", &cpu_percent, "0..=100"));
    }
    let memory_used_bytes = match &raw.memory_used {
        None => 0,
        Some(text) => size("memory_used", text)?,
    };
    if memory_used_bytes > memory_bytes {
        return Err(range(
            "memory_used",
            &raw.memory_used.as_deref().unwrap_or_default(),
            &format!("0..=memory, here 0..={}", raw.memory),
        ));
    }
    let load_average = raw.load_average.unwrap_or(0.0);
    if !(load_average.is_finite() && (0.0..=1e6).contains(&load_average)) {
        return Err(range("load_average", &load_average, "0..=1000000"));
    }
    Ok(SimulatedHost {
        logical_cores,
        physical_cores,
        memory_bytes,
        zone: raw.zone,
        hostname: raw.hostname,
        cpu_percent,
        memory_used_bytes,
        load_average,
    })
}

/// What identifies one version of the file on disk.
type Stamp = (Option<SystemTime>, u64);

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified().ok(), meta.len()))
}

/// The simulated-hardware file, re-read when it changes.
#[derive(Debug)]
pub struct SimulatedSource {
    path: PathBuf,
    stamp: Option<Stamp>,
    current: SimulatedHost,
    /// Why the latest version on disk was rejected, while it stays rejected.
    last_error: Option<SimulateError>,
}

impl SimulatedSource {
    /// Reads the file once; any problem is returned (a start-up config error).
    pub fn load(path: &Path) -> Result<Self, SimulateError> {
        let (stamp, current) = read(path)?;
        Ok(SimulatedSource {
            path: path.to_owned(),
            stamp: Some(stamp),
            current,
            last_error: None,
        })
    }

    /// Re-reads the file if it changed. Returns true when new values were
    /// taken. A bad new version keeps the old values and is logged once.
    pub fn poll(&mut self) -> bool {
        let now = stamp(&self.path).ok();
        if now.is_some() && now == self.stamp {
            return false;
        }
        if now.is_none() && self.last_error.is_some() {
            return false;
        }
        self.stamp = now;
        match read(&self.path) {
            Ok((stamp, host)) => {
                self.stamp = Some(stamp);
                if self.last_error.take().is_some() {
                    tracing::info!(file = %self.path.display(), "simulated-hardware file is valid again");
                }
                let changed = host != self.current;
                if changed {
                    tracing::info!(file = %self.path.display(), "simulated hardware reloaded");
                }
                self.current = host;
                changed
            }
            Err(e) => {
                tracing::warn!("{e}; keeping the last good simulated hardware");
                self.last_error = Some(e);
                false
            }
        }
    }

    pub fn current(&self) -> &SimulatedHost {
        &self.current
    }

    pub fn last_error(&self) -> Option<&SimulateError> {
        self.last_error.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read(path: &Path) -> Result<(Stamp, SimulatedHost), SimulateError> {
    let file = path.display().to_string();
    let io_err = |e: std::io::Error| SimulateError {
        file: file.clone(),
        message: e.to_string(),
    };
    let before = stamp(path).map_err(io_err)?;
    let text = std::fs::read_to_string(path).map_err(io_err)?;
    Ok((before, parse(&text, &file)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> String {
        parse(text, "hw.toml").unwrap_err().to_string()
    }

    #[test]
    fn the_documented_example_parses() {
        let host = parse(
            r#"
logical_cores = 16
physical_cores = 8
memory = "64GiB"
zone = "b"
hostname = "sim-b-2"
cpu_percent = 20.0
memory_used = "8GiB"
load_average = 1.5
"#,
            "hw.toml",
        )
        .unwrap();
        assert_eq!(
            host,
            SimulatedHost {
                logical_cores: 16,
                physical_cores: 8,
                memory_bytes: 64 << 30,
                zone: Some("b".into()),
                hostname: Some("sim-b-2".into()),
                cpu_percent: 20.0,
                memory_used_bytes: 8 << 30,
                load_average: 1.5,
            }
        );
    }

    #[test]
    fn optional_fields_take_their_defaults() {
        let host = parse("logical_cores = 4\nmemory = \"1GiB\"\n", "hw.toml").unwrap();
        assert_eq!(host.physical_cores, 4);
        assert_eq!(host.cpu_percent, 0.0);
        assert_eq!(host.memory_used_bytes, 0);
        assert_eq!(host.load_average, 0.0);
        assert_eq!(host.zone, None);
    }

    #[test]
    fn required_and_unknown_fields_are_reported() {
        assert!(message("memory = \"1GiB\"\n").contains("logical_cores"));
        assert!(message("logical_cores = 1\n").contains("memory"));
        assert!(message("logical_cores = 1\nmemory = \"1GiB\"\ncores = 2\n").contains("cores"));
    }

    #[test]
    fn every_range_rule_names_its_field() {
        let cases = [
            (
                "logical_cores = 0\nmemory = \"1GiB\"",
                "hw.toml: logical_cores: 0 is out of range (accepted 1..=4096)",
            ),
            (
                "logical_cores = 5000\nmemory = \"1GiB\"",
                "hw.toml: logical_cores: 5000 is out of range (accepted 1..=4096)",
            ),
            (
                "logical_cores = 4\nphysical_cores = 5\nmemory = \"1GiB\"",
                "hw.toml: physical_cores: 5 is out of range (accepted 1..=logical_cores, here 1..=4)",
            ),
            (
                "logical_cores = 4\nmemory = \"1MiB\"",
                "hw.toml: memory: 1MiB is out of range (accepted 64MiB..=64TiB)",
            ),
            (
                "logical_cores = 4\nmemory = \"65TiB\"",
                "hw.toml: memory: 65TiB is out of range (accepted 64MiB..=64TiB)",
            ),
            (
                "logical_cores = 4\nmemory = \"1GiB\"\ncpu_percent = 101.0",
                "hw.toml: cpu_percent: 101 is out of range (accepted 0..=100)",
            ),
            (
                "logical_cores = 4\nmemory = \"1GiB\"\ncpu_percent = nan",
                "hw.toml: cpu_percent: NaN is out of range (accepted 0..=100)",
            ),
            (
                "logical_cores = 4\nmemory = \"1GiB\"\nmemory_used = \"2GiB\"",
                "hw.toml: memory_used: 2GiB is out of range (accepted 0..=memory, here 0..=1GiB)",
            ),
            (
                "logical_cores = 4\nmemory = \"1GiB\"\nload_average = -1.0",
                "hw.toml: load_average: -1 is out of range (accepted 0..=1000000)",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(message(text), expected);
        }
        assert!(message("logical_cores = 4\nmemory = \"1G\"").starts_with("hw.toml: memory: invalid size"));
        assert!(
            message("logical_cores = 4\nmemory = \"1GiB\"\nzone = \"B\"").starts_with("hw.toml: zone: \"B\"")
        );
        assert!(
            message("logical_cores = 4\nmemory = \"1GiB\"\nhostname = \"a_b\"")
                .starts_with("hw.toml: hostname: \"a_b\"")
        );
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_bad_change_keeps_the_last_good_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hw.toml");
        std::fs::write(&path, "logical_cores = 4\nmemory = \"1GiB\"\n").unwrap();
        let mut source = SimulatedSource::load(&path).unwrap();
        assert!(!source.poll(), "unchanged file is not reloaded");

        // A different size guarantees a new stamp even on coarse-mtime filesystems.
        std::fs::write(&path, "logical_cores = 16\nmemory = \"1GiB\"\n").unwrap();
        assert!(source.poll());
        assert_eq!(source.current().logical_cores, 16);
        assert!(source.last_error().is_none());

        std::fs::write(&path, "logical_cores = 99999\nmemory = \"1GiB\"\n").unwrap();
        assert!(!source.poll());
        assert_eq!(source.current().logical_cores, 16);
        let err = source.last_error().expect("error kept for the health check");
        assert!(err.message.starts_with("logical_cores: 99999"), "{err}");

        std::fs::write(&path, "logical_cores = 8\nmemory = \"1GiB\"\n").unwrap();
        assert!(source.poll());
        assert_eq!(source.current().logical_cores, 8);
        assert!(source.last_error().is_none());
    }

    #[test]
    fn a_removed_file_keeps_the_last_good_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hw.toml");
        std::fs::write(&path, "logical_cores = 4\nmemory = \"1GiB\"\n").unwrap();
        let mut source = SimulatedSource::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(!source.poll());
        assert_eq!(source.current().logical_cores, 4);
        assert!(source.last_error().is_some());
    }

    #[test]
    fn an_invalid_file_at_start_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hw.toml");
        std::fs::write(&path, "logical_cores = 0\nmemory = \"1GiB\"\n").unwrap();
        let err = SimulatedSource::load(&path).unwrap_err();
        assert_eq!(err.file, path.display().to_string());
        assert!(err.to_string().contains("logical_cores: 0 is out of range"));
    }
}
