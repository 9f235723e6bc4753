//! Assembles what the agent tells the controller: [`HostFacts`] (slow to
//! change) and each heartbeat's utilization and health, from the real
//! machine or from the simulated-hardware file.
//!
//! Hostname, addresses, physical core count and cgroup limits are re-read every
//! [`SLOW_REFRESH`]; memory, CPU usage, health and the simulated file are
//! read for every report.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rpool_proto::clock::unix_ms_now;
use rpool_proto::v1::{AdvertiseSource, HealthCheck, HealthStatus, HostFacts, Inventory, Utilization};

use crate::config::Config;
use crate::health::{self, HealthChecker};
use crate::inventory::{self, CgroupLimits};
use crate::simulate::{SimulateError, SimulatedSource};
use crate::utilization::{self, Sampler};

/// How often hostname, addresses and cgroup limits are re-read.
pub const SLOW_REFRESH: Duration = Duration::from_secs(30);

/// Why the agent cannot start reporting.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Simulate(#[from] SimulateError),
    #[error("reading system information: {0}")]
    Sysinfo(#[from] sysinfo::Error),
}

/// One sample: the facts as they are now, plus the heartbeat payload.
#[derive(Debug, Clone)]
pub struct Report {
    pub facts: HostFacts,
    pub utilization: Utilization,
    pub health: Vec<HealthCheck>,
    pub sent_at_unix_ms: u64,
    /// Unschedulable pods of this control plane's cluster (see
    /// [`crate::pending`]); `None` on other hosts.
    pub pending_pods: Option<u32>,
    /// This control plane's certificate expiry (see [`crate::certs`]).
    pub certs: Option<rpool_proto::v1::CertReport>,
}

struct Slow {
    hostname: String,
    addresses: Vec<String>,
    interfaces: Vec<(String, Vec<std::net::IpAddr>)>,
    limits: CgroupLimits,
    physical_cores: Option<u32>,
    read_at: Instant,
}

impl Slow {
    fn read(networks: &sysinfo::Networks) -> Slow {
        Slow {
            hostname: crate::identity::hostname(),
            addresses: crate::identity::addresses(networks),
            interfaces: crate::address::interfaces(networks),
            limits: read_limits(),
            physical_cores: inventory::physical_core_count(),
            read_at: Instant::now(),
        }
    }
}

/// Owns every source of facts and measurements.
pub struct Reporter {
    zone: String,
    labels: HashMap<String, String>,
    /// Real-machine sampler; absent in simulated mode (keeps RSS down when
    /// a sandbox runs many agents on one box).
    sampler: Option<Sampler>,
    sim: Option<SimulatedSource>,
    networks: sysinfo::Networks,
    health: HealthChecker,
    slow: Slow,
    /// Latest pending-pods count, when a counter runs.
    pending: Option<tokio::sync::watch::Receiver<Option<u32>>>,
    /// Latest certificate expiry, when a checker runs.
    certs: Option<tokio::sync::watch::Receiver<Option<rpool_proto::v1::CertReport>>>,
    /// `advertise_address` from agent.toml.
    advertise: Option<std::net::IpAddr>,
    /// The local address of the current connection to a controller.
    connection: Option<std::net::IpAddr>,
    cri_socket: Option<String>,
    host_root: std::path::PathBuf,
}

impl Reporter {
    pub fn new(config: &Config) -> Result<Self, ReportError> {
        let sim = match &config.simulate {
            Some(s) => Some(SimulatedSource::load(&s.file)?),
            None => None,
        };
        let sampler = match sim {
            Some(_) => None,
            None => Some(Sampler::new()?),
        };
        let networks = sysinfo::Networks::new_with_refreshed_list()?;
        let slow = Slow::read(&networks);
        Ok(Reporter {
            zone: config.zone.clone(),
            labels: config.labels.clone().into_iter().collect(),
            sampler,
            sim,
            networks,
            health: HealthChecker::new(&config.state_dir, &config.health, &config.kube),
            slow,
            pending: None,
            certs: None,
            advertise: config
                .advertise_address
                .as_deref()
                .and_then(|a| crate::address::check_advertise(a).ok()),
            connection: None,
            cri_socket: config.kube.cri_socket.clone(),
            host_root: config.kube.host_root.clone(),
        })
    }

    /// Reports the pending-pods counts published on `rx` (see
    /// [`crate::pending::run`]).
    pub fn set_pending_pods(&mut self, rx: tokio::sync::watch::Receiver<Option<u32>>) {
        self.pending = Some(rx);
    }

    /// Reports the certificate expiry published on `rx` (see
    /// [`crate::certs::run`]).
    pub fn set_certs(&mut self, rx: tokio::sync::watch::Receiver<Option<rpool_proto::v1::CertReport>>) {
        self.certs = Some(rx);
    }

    /// The local address of the connection to the controllers, from which
    /// the advertise address is derived (see [`crate::address`]).
    pub fn set_connection_address(&mut self, local: Option<std::net::IpAddr>) {
        self.connection = local;
    }

    /// Advertise address, its source, and the CRI socket, as reported.
    fn node_facts(&self) -> (String, i32, String) {
        let (address, source) = match crate::address::choose(
            self.advertise,
            self.connection,
            &self.slow.interfaces,
            std::path::Path::new("/sys/class/net"),
        ) {
            Some((ip, source)) => (ip.to_string(), source as i32),
            None => (String::new(), AdvertiseSource::Unspecified as i32),
        };
        let cri = crate::cri::detect(self.cri_socket.as_deref(), &self.host_root);
        (address, source, cri.socket.unwrap_or_default())
    }

    /// Takes a fresh sample of everything.
    pub fn sample(&mut self) -> Report {
        if self.slow.read_at.elapsed() >= SLOW_REFRESH {
            self.networks.refresh(true);
            self.slow = Slow::read(&self.networks);
        }
        let sent_at_unix_ms = unix_ms_now();
        let (advertise_address, advertise_source, cri_socket) = self.node_facts();
        let mut health = self.health.run(sent_at_unix_ms);
        let (facts, utilization) = if let Some(sim) = &mut self.sim {
            sim.poll();
            health.push(match sim.last_error() {
                None => health::check(
                    "simulation",
                    HealthStatus::Ok,
                    format!("simulated hardware from {}", sim.path().display()),
                ),
                Some(e) => health::check(
                    "simulation",
                    HealthStatus::Warn,
                    truncate(&format!("{e}; keeping the last good values"), 1024),
                ),
            });
            let host = sim.current();
            let inventory = Inventory {
                logical_cores: host.logical_cores,
                physical_cores: host.physical_cores,
                memory_total_bytes: host.memory_bytes,
                memory_available_bytes: host.memory_bytes - host.memory_used_bytes,
                cpu_quota_millicores: 0,
                memory_capped_by_cgroup: false,
            };
            let facts = HostFacts {
                hostname: host
                    .hostname
                    .clone()
                    .unwrap_or_else(|| self.slow.hostname.clone()),
                addresses: self.slow.addresses.clone(),
                zone: host.zone.clone().unwrap_or_else(|| self.zone.clone()),
                labels: self.labels.clone(),
                inventory: Some(inventory),
                simulated: true,
                advertise_address,
                advertise_source,
                cri_socket,
            };
            (facts, utilization::simulated(host))
        } else {
            let sampler = self.sampler.as_mut().expect("real mode has a sampler");
            sampler.refresh();
            let inventory = inventory::apply_limits(
                inventory::host_totals(sampler.system(), self.slow.physical_cores),
                self.slow.limits,
            );
            let utilization = sampler.utilization(inventory.memory_total_bytes);
            let facts = HostFacts {
                hostname: self.slow.hostname.clone(),
                addresses: self.slow.addresses.clone(),
                zone: self.zone.clone(),
                labels: self.labels.clone(),
                inventory: Some(inventory),
                simulated: false,
                advertise_address,
                advertise_source,
                cri_socket,
            };
            (facts, utilization)
        };
        Report {
            facts,
            utilization,
            health,
            sent_at_unix_ms,
            pending_pods: self.pending.as_ref().and_then(|rx| *rx.borrow()),
            certs: self.certs.as_ref().and_then(|rx| rx.borrow().clone()),
        }
    }
}

fn read_limits() -> CgroupLimits {
    inventory::read_cgroup_limits("/proc".as_ref(), "/sys/fs/cgroup".as_ref())
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// Whether `new` must be sent to the controller after `sent` was.
///
/// Available memory moves all the time; sending the facts (which the
/// controller persists) for every wiggle would turn each heartbeat into a
/// write. So it counts only when it moved by at least a tenth of the total;
/// the exact figure travels in every heartbeat's `utilization`.
pub fn facts_changed(sent: &HostFacts, new: &HostFacts) -> bool {
    let strip = |f: &HostFacts| {
        let mut f = f.clone();
        if let Some(inv) = &mut f.inventory {
            inv.memory_available_bytes = 0;
        }
        f
    };
    if strip(sent) != strip(new) {
        return true;
    }
    match (&sent.inventory, &new.inventory) {
        (Some(a), Some(b)) => {
            let delta = a.memory_available_bytes.abs_diff(b.memory_available_bytes);
            delta >= b.memory_total_bytes / 10 && delta > 0
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HostFacts {
        HostFacts {
            hostname: "h1".into(),
            addresses: vec!["10.0.0.1".into()],
            zone: "a".into(),
            labels: HashMap::new(),
            inventory: Some(Inventory {
                logical_cores: 8,
                physical_cores: 4,
                memory_total_bytes: 10_000,
                memory_available_bytes: 5_000,
                cpu_quota_millicores: 0,
                memory_capped_by_cgroup: false,
            }),
            simulated: false,
            ..HostFacts::default()
        }
    }

    #[test]
    fn identical_facts_are_not_resent() {
        assert!(!facts_changed(&facts(), &facts()));
    }

    #[test]
    fn any_descriptive_change_is_resent() {
        let mut f = facts();
        f.zone = "b".into();
        assert!(facts_changed(&facts(), &f));
        let mut f = facts();
        f.inventory.as_mut().unwrap().logical_cores = 16;
        assert!(facts_changed(&facts(), &f));
        let mut f = facts();
        f.addresses.push("10.0.0.2".into());
        assert!(facts_changed(&facts(), &f));
    }

    #[test]
    fn available_memory_counts_only_when_it_moves_by_a_tenth() {
        let mut f = facts();
        f.inventory.as_mut().unwrap().memory_available_bytes = 5_999;
        assert!(!facts_changed(&facts(), &f));
        f.inventory.as_mut().unwrap().memory_available_bytes = 6_000;
        assert!(facts_changed(&facts(), &f));
    }

    #[test]
    fn simulated_reports_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let hw = dir.path().join("hw.toml");
        std::fs::write(
            &hw,
            "logical_cores = 16\nphysical_cores = 8\nmemory = \"64GiB\"\nzone = \"b\"\nhostname = \"sim-b-2\"\ncpu_percent = 20.0\nmemory_used = \"8GiB\"\nload_average = 1.5\n",
        )
        .unwrap();
        let config = Config {
            controllers: vec!["127.0.0.1:1".into()],
            state_dir: dir.path().to_owned(),
            simulate: Some(crate::config::SimulateConfig { file: hw }),
            ..Config::default()
        };
        let mut reporter = Reporter::new(&config).unwrap();
        let r = reporter.sample();
        assert!(r.facts.simulated);
        assert_eq!(r.facts.hostname, "sim-b-2");
        assert_eq!(r.facts.zone, "b");
        let inv = r.facts.inventory.unwrap();
        assert_eq!((inv.logical_cores, inv.physical_cores), (16, 8));
        assert_eq!(inv.memory_total_bytes, 64 << 30);
        assert_eq!(inv.memory_available_bytes, 56 << 30);
        assert_eq!(r.utilization.cpu_percent, 20.0);
        assert_eq!(r.utilization.load_average_15m, 1.5);
        let sim = r.health.iter().find(|c| c.name == "simulation").unwrap();
        assert_eq!(sim.status, HealthStatus::Ok as i32);
    }

    #[test]
    fn real_reports_satisfy_the_controller_invariants() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            controllers: vec!["127.0.0.1:1".into()],
            state_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let mut reporter = Reporter::new(&config).unwrap();
        let r = reporter.sample();
        assert!(!r.facts.simulated);
        let inv = r.facts.inventory.unwrap();
        assert!(inv.logical_cores >= 1 && inv.physical_cores <= inv.logical_cores);
        assert!(inv.memory_available_bytes <= inv.memory_total_bytes);
        assert!(inv.cpu_quota_millicores <= inv.logical_cores * 1000);
        assert!(r.utilization.memory_used_bytes <= inv.memory_total_bytes);
        assert!(r.facts.addresses.len() <= 32);
    }
}
