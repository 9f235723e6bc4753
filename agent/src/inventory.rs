//! What the host offers: logical and physical cores and memory, from
//! sysinfo, capped by cgroup v2 limits when the agent runs inside one.
//!
//! sysinfo reads host totals from `/proc`, which a container does not
//! virtualize. The agent therefore reads `/proc/self/cgroup` (`0::/path`),
//! then `cpu.max` and `memory.max` of that cgroup and of each ancestor up to
//! the root, and keeps the tightest limit: logical cores are capped at
//! `ceil(quota / period)`, memory at `memory.max`. The parsing is pure and
//! unit-tested on strings; only [`read_cgroup_limits`] touches files.

use std::path::{Path, PathBuf};

use rpool_proto::v1::Inventory;

/// A `cpu.max` quota: `quota` µs of CPU time per `period` µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

impl CpuQuota {
    /// Whole cores the quota allows, rounded up (at least 1).
    pub fn cores(&self) -> u64 {
        self.quota_us.div_ceil(self.period_us).max(1)
    }

    /// The quota in millicores (1000 = one core).
    pub fn millicores(&self) -> u64 {
        ((self.quota_us as u128 * 1000) / self.period_us as u128).min(u64::MAX as u128) as u64
    }

    fn tighter(self, other: CpuQuota) -> CpuQuota {
        if self.millicores() <= other.millicores() {
            self
        } else {
            other
        }
    }
}

/// Effective cgroup v2 limits of this process; `None` where unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CgroupLimits {
    pub cpu: Option<CpuQuota>,
    pub memory_max_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CgroupParseError(String);

/// The cgroup v2 path from `/proc/self/cgroup` (the `0::/path` line), if
/// the process is in the unified hierarchy.
pub fn parse_proc_self_cgroup(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::trim)
        .filter(|p| p.starts_with('/'))
}

/// `cpu.max`: `max PERIOD` (no quota) or `QUOTA PERIOD`, in microseconds.
pub fn parse_cpu_max(text: &str) -> Result<Option<CpuQuota>, CgroupParseError> {
    let bad = || CgroupParseError(format!("cpu.max: unexpected content {:?}", text.trim()));
    let mut parts = text.split_whitespace();
    let quota = parts.next().ok_or_else(bad)?;
    let period = match parts.next() {
        Some(p) => p.parse::<u64>().map_err(|_| bad())?,
        None => 100_000,
    };
    if parts.next().is_some() || period == 0 {
        return Err(bad());
    }
    if quota == "max" {
        return Ok(None);
    }
    let quota_us = quota.parse::<u64>().map_err(|_| bad())?;
    Ok(Some(CpuQuota {
        quota_us,
        period_us: period,
    }))
}

/// `memory.max`: `max` or a byte count.
pub fn parse_memory_max(text: &str) -> Result<Option<u64>, CgroupParseError> {
    match text.trim() {
        "max" => Ok(None),
        n => n
            .parse::<u64>()
            .map(Some)
            .map_err(|_| CgroupParseError(format!("memory.max: unexpected content {n:?}"))),
    }
}

/// Reads the limits of this process's cgroup and its ancestors. `proc_root`
/// is normally `/proc`, `cgroup_root` `/sys/fs/cgroup`. Missing or
/// unreadable files mean "no limit" (cgroup v1, no controller enabled).
pub fn read_cgroup_limits(proc_root: &Path, cgroup_root: &Path) -> CgroupLimits {
    let mut limits = CgroupLimits::default();
    let Ok(text) = std::fs::read_to_string(proc_root.join("self/cgroup")) else {
        return limits;
    };
    let Some(path) = parse_proc_self_cgroup(&text) else {
        return limits;
    };
    let mut dir: PathBuf = cgroup_root.join(path.trim_start_matches('/'));
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("cpu.max")) {
            match parse_cpu_max(&text) {
                Ok(Some(q)) => limits.cpu = Some(limits.cpu.map_or(q, |c| c.tighter(q))),
                Ok(None) => {}
                Err(e) => tracing::debug!(dir = %dir.display(), "{e}"),
            }
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("memory.max")) {
            match parse_memory_max(&text) {
                Ok(Some(m)) => {
                    limits.memory_max_bytes = Some(limits.memory_max_bytes.map_or(m, |c| c.min(m)))
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(dir = %dir.display(), "{e}"),
            }
        }
        if dir.as_path() == cgroup_root || !dir.pop() || !dir.starts_with(cgroup_root) {
            break;
        }
    }
    limits
}

/// What the machine itself reports, before cgroup limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTotals {
    pub logical_cores: u32,
    pub physical_cores: u32,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
}

/// Physical cores of the machine (parses `/proc/cpuinfo`: call rarely).
pub fn physical_core_count() -> Option<u32> {
    sysinfo::System::physical_core_count().ok().map(|n| n as u32)
}

/// Reads the host totals from an already refreshed `System` (CPU list and
/// RAM only); `physical_cores` from [`physical_core_count`], cached.
pub fn host_totals(sys: &sysinfo::System, physical_cores: Option<u32>) -> HostTotals {
    let logical = (sys.cpus().len() as u32).max(1);
    let physical = physical_cores.unwrap_or(logical);
    HostTotals {
        logical_cores: logical,
        physical_cores: physical,
        memory_total_bytes: sys.total_memory(),
        memory_available_bytes: sys.available_memory(),
    }
}

/// Applies cgroup limits to the host totals, keeping every invariant the
/// controller checks: `1 <= physical <= logical`, `available <= total`,
/// `cpu_quota_millicores <= logical * 1000`.
pub fn apply_limits(host: HostTotals, limits: CgroupLimits) -> Inventory {
    let mut logical = host.logical_cores.max(1);
    let mut quota_millicores = 0u64;
    if let Some(q) = limits.cpu {
        logical = logical.min(q.cores().min(u32::MAX as u64) as u32);
        quota_millicores = q.millicores().min(logical as u64 * 1000);
    }
    let physical = host.physical_cores.clamp(1, logical);
    let mut total = host.memory_total_bytes;
    let mut capped = false;
    if let Some(max) = limits.memory_max_bytes
        && max < total
    {
        total = max;
        capped = true;
    }
    Inventory {
        logical_cores: logical,
        physical_cores: physical,
        memory_total_bytes: total,
        memory_available_bytes: host.memory_available_bytes.min(total),
        cpu_quota_millicores: quota_millicores as u32,
        memory_capped_by_cgroup: capped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: HostTotals = HostTotals {
        logical_cores: 16,
        physical_cores: 8,
        memory_total_bytes: 64 << 30,
        memory_available_bytes: 60 << 30,
    };

    #[test]
    fn the_unified_cgroup_path_is_found_among_v1_lines() {
        assert_eq!(
            parse_proc_self_cgroup("0::/system.slice/rpool.service\n"),
            Some("/system.slice/rpool.service")
        );
        assert_eq!(parse_proc_self_cgroup("12:memory:/x\n0::/\n"), Some("/"));
        assert_eq!(parse_proc_self_cgroup("12:memory:/x\n"), None);
        assert_eq!(parse_proc_self_cgroup(""), None);
    }

    #[test]
    fn cpu_max_parses_max_and_quota_forms() {
        assert_eq!(parse_cpu_max("max 100000\n").unwrap(), None);
        assert_eq!(
            parse_cpu_max("150000 100000\n").unwrap(),
            Some(CpuQuota {
                quota_us: 150_000,
                period_us: 100_000
            })
        );
        assert_eq!(parse_cpu_max("max").unwrap(), None);
        for bad in ["", "abc 100000", "100 0", "100 100 100", "100 x"] {
            assert!(parse_cpu_max(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpu_quota_rounds_cores_up_and_reports_millicores() {
        let q = CpuQuota {
            quota_us: 150_000,
            period_us: 100_000,
        };
        assert_eq!(q.cores(), 2);
        assert_eq!(q.millicores(), 1500);
        let tiny = CpuQuota {
            quota_us: 1_000,
            period_us: 100_000,
        };
        assert_eq!(tiny.cores(), 1);
        assert_eq!(tiny.millicores(), 10);
    }

    #[test]
    fn memory_max_parses_max_and_bytes() {
        assert_eq!(parse_memory_max("max\n").unwrap(), None);
        assert_eq!(parse_memory_max("1073741824\n").unwrap(), Some(1 << 30));
        assert!(parse_memory_max("1G").is_err());
        assert!(parse_memory_max("").is_err());
    }

    #[test]
    fn no_limits_leave_the_host_totals() {
        let inv = apply_limits(HOST, CgroupLimits::default());
        assert_eq!(inv.logical_cores, 16);
        assert_eq!(inv.physical_cores, 8);
        assert_eq!(inv.memory_total_bytes, 64 << 30);
        assert_eq!(inv.memory_available_bytes, 60 << 30);
        assert_eq!(inv.cpu_quota_millicores, 0);
        assert!(!inv.memory_capped_by_cgroup);
    }

    #[test]
    fn a_cpu_quota_caps_logical_and_physical_cores() {
        let limits = CgroupLimits {
            cpu: Some(CpuQuota {
                quota_us: 250_000,
                period_us: 100_000,
            }),
            memory_max_bytes: None,
        };
        let inv = apply_limits(HOST, limits);
        assert_eq!(inv.logical_cores, 3);
        assert_eq!(inv.physical_cores, 3);
        assert_eq!(inv.cpu_quota_millicores, 2500);
    }

    #[test]
    fn a_quota_larger_than_the_host_reports_at_most_the_host() {
        let limits = CgroupLimits {
            cpu: Some(CpuQuota {
                quota_us: 6_400_000,
                period_us: 100_000,
            }),
            memory_max_bytes: Some(u64::MAX),
        };
        let inv = apply_limits(HOST, limits);
        assert_eq!(inv.logical_cores, 16);
        assert_eq!(inv.cpu_quota_millicores, 16_000);
        assert!(!inv.memory_capped_by_cgroup);
    }

    #[test]
    fn memory_max_caps_total_and_available() {
        let limits = CgroupLimits {
            cpu: None,
            memory_max_bytes: Some(4 << 30),
        };
        let inv = apply_limits(HOST, limits);
        assert_eq!(inv.memory_total_bytes, 4 << 30);
        assert_eq!(inv.memory_available_bytes, 4 << 30);
        assert!(inv.memory_capped_by_cgroup);
    }

    #[test]
    fn limits_are_read_from_the_cgroup_and_its_ancestors() {
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        let cg = dir.path().join("cgroup");
        std::fs::create_dir_all(proc_root.join("self")).unwrap();
        std::fs::create_dir_all(cg.join("kubepods/pod1")).unwrap();
        std::fs::write(proc_root.join("self/cgroup"), "0::/kubepods/pod1\n").unwrap();
        std::fs::write(cg.join("kubepods/pod1/cpu.max"), "max 100000\n").unwrap();
        std::fs::write(cg.join("kubepods/pod1/memory.max"), "8589934592\n").unwrap();
        std::fs::write(cg.join("kubepods/cpu.max"), "200000 100000\n").unwrap();
        std::fs::write(cg.join("kubepods/memory.max"), "max\n").unwrap();
        let limits = read_cgroup_limits(&proc_root, &cg);
        assert_eq!(
            limits,
            CgroupLimits {
                cpu: Some(CpuQuota {
                    quota_us: 200_000,
                    period_us: 100_000
                }),
                memory_max_bytes: Some(8 << 30),
            }
        );
    }

    #[test]
    fn no_cgroup_files_mean_no_limits() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_cgroup_limits(dir.path(), dir.path()),
            CgroupLimits::default()
        );
    }
}
