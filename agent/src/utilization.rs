//! How busy the host is: CPU share since the previous sample, memory in
//! use, load averages.
//!
//! One `sysinfo::System` is kept for the agent's lifetime and refreshed for
//! CPU usage and RAM only (never processes, disks or swap), which keeps the
//! agent's own footprint small.

use rpool_proto::v1::Utilization;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// The agent's one `System`, refreshed only for what is reported.
pub struct Sampler {
    sys: System,
}

impl Sampler {
    /// Loads the CPU list and RAM; the first CPU percentage is measured from
    /// here.
    pub fn new() -> Result<Self, sysinfo::Error> {
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        )?;
        Ok(Sampler { sys })
    }

    /// Refreshes CPU usage and RAM. Call once per report, before reading.
    pub fn refresh(&mut self) {
        self.sys.refresh_cpu_usage();
        self.sys
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
    }

    pub fn system(&self) -> &System {
        &self.sys
    }

    /// Utilization from the last refresh. `memory_total_bytes` is the
    /// (possibly cgroup-capped) total reported in the inventory; memory used
    /// never exceeds it.
    pub fn utilization(&self, memory_total_bytes: u64) -> Utilization {
        let used = self
            .sys
            .total_memory()
            .saturating_sub(self.sys.available_memory());
        let load = System::load_average().ok();
        Utilization {
            cpu_percent: clamp_finite(self.sys.global_cpu_usage() as f64, 100.0),
            memory_used_bytes: used.min(memory_total_bytes),
            load_average_1m: clamp_finite(load.as_ref().map_or(0.0, |l| l.one), 1e6),
            load_average_5m: clamp_finite(load.as_ref().map_or(0.0, |l| l.five), 1e6),
            load_average_15m: clamp_finite(load.as_ref().map_or(0.0, |l| l.fifteen), 1e6),
        }
    }
}

/// Utilization as given by a simulated-hardware file.
pub fn simulated(host: &crate::simulate::SimulatedHost) -> Utilization {
    Utilization {
        cpu_percent: host.cpu_percent,
        memory_used_bytes: host.memory_used_bytes,
        load_average_1m: host.load_average,
        load_average_5m: host.load_average,
        load_average_15m: host.load_average,
    }
}

/// Keeps a measurement inside what the controller accepts: finite, `0..=max`.
pub fn clamp_finite(value: f64, max: f64) -> f64 {
    if value.is_finite() {
        value.clamp(0.0, max)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_are_clamped_to_what_the_controller_accepts() {
        assert_eq!(clamp_finite(f64::NAN, 100.0), 0.0);
        assert_eq!(clamp_finite(f64::INFINITY, 100.0), 0.0);
        assert_eq!(clamp_finite(-1.0, 100.0), 0.0);
        assert_eq!(clamp_finite(100.5, 100.0), 100.0);
        assert_eq!(clamp_finite(42.0, 100.0), 42.0);
    }

    #[test]
    fn a_real_sample_is_within_range() {
        let mut sampler = Sampler::new().unwrap();
        sampler.refresh();
        let total = sampler.system().total_memory();
        let u = sampler.utilization(total);
        assert!((0.0..=100.0).contains(&u.cpu_percent));
        assert!(u.memory_used_bytes <= total);
        assert!(u.load_average_1m >= 0.0);
    }
}
