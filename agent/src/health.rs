//! Local health checks, run before every heartbeat. Each is cheap (a
//! `statvfs` or a `stat`) and yields a `HealthCheck { name, status, message }`:
//!
//! - `disk_free`: free space on the state_dir filesystem; FAIL below
//!   `health.min_free_disk`.
//! - `kubeadm`, `kubelet`: an executable at `[kube] kubeadm_path` and
//!   `kubelet_path` (where the tasks run them), else WARN.
//! - `container_runtime`: the CRI socket (`[kube] cri_socket`, else the
//!   one detected under `[kube] host_root`, see [`crate::cri`]) exists, and
//!   only one runtime was found when none is configured, else WARN.
//! - `clock`: the wall clock is after 2025-01-01 and did not step back by
//!   more than 1s since the previous check, else FAIL.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rpool_proto::v1::{HealthCheck, HealthStatus};

use crate::config::{HealthConfig, KubeConfig};

/// 2025-01-01T00:00:00Z in Unix ms: a clock before this is certainly wrong.
pub const CLOCK_FLOOR_UNIX_MS: u64 = 1_735_689_600_000;
/// How far the clock may step back between two checks.
pub const CLOCK_BACKWARD_TOLERANCE_MS: u64 = 1_000;

const GIB: f64 = (1u64 << 30) as f64;

pub fn check(name: &str, status: HealthStatus, message: impl Into<String>) -> HealthCheck {
    HealthCheck {
        name: name.to_owned(),
        status: status as i32,
        message: message.into(),
    }
}

/// Runs the configured checks; keeps what the clock check needs between runs.
pub struct HealthChecker {
    state_dir: PathBuf,
    min_free_disk_bytes: u64,
    kubeadm_path: PathBuf,
    kubelet_path: PathBuf,
    cri_socket: Option<String>,
    host_root: PathBuf,
    clock: ClockCheck,
}

impl HealthChecker {
    /// The tools are looked for at `kube`'s paths, the ones the tasks run.
    pub fn new(state_dir: &Path, config: &HealthConfig, kube: &KubeConfig) -> Self {
        HealthChecker {
            state_dir: state_dir.to_owned(),
            min_free_disk_bytes: config.min_free_disk_bytes(),
            kubeadm_path: kube.kubeadm_path.clone(),
            kubelet_path: kube.kubelet_path.clone(),
            cri_socket: kube.cri_socket.clone(),
            host_root: kube.host_root.clone(),
            clock: ClockCheck::default(),
        }
    }

    /// Every check, in a fixed order. `now_unix_ms` is the wall clock.
    pub fn run(&mut self, now_unix_ms: u64) -> Vec<HealthCheck> {
        vec![
            match free_bytes(&self.state_dir) {
                Ok(free) => disk_free(free, self.min_free_disk_bytes),
                Err(e) => check(
                    "disk_free",
                    HealthStatus::Fail,
                    format!("cannot stat {}: {e}", self.state_dir.display()),
                ),
            },
            executable("kubeadm", &self.kubeadm_path),
            executable("kubelet", &self.kubelet_path),
            crate::cri::detect(self.cri_socket.as_deref(), &self.host_root).health(&self.host_root),
            self.clock.check(now_unix_ms),
        ]
    }
}

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and stat a valid
    // out-pointer for the duration of the call.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// `disk_free` from a measured free byte count.
pub fn disk_free(free_bytes: u64, min_free_bytes: u64) -> HealthCheck {
    let message = format!(
        "{:.1} GiB free, threshold {:.1} GiB",
        free_bytes as f64 / GIB,
        min_free_bytes as f64 / GIB
    );
    let status = if free_bytes < min_free_bytes {
        HealthStatus::Fail
    } else {
        HealthStatus::Ok
    };
    check("disk_free", status, message)
}

/// OK when an executable file is at `path`, else WARN.
pub fn executable(name: &str, path: &Path) -> HealthCheck {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
            check(name, HealthStatus::Ok, format!("found at {}", path.display()))
        }
        Ok(_) => check(
            name,
            HealthStatus::Warn,
            format!("not executable at {}", path.display()),
        ),
        Err(_) => check(
            name,
            HealthStatus::Warn,
            format!("not found at {}", path.display()),
        ),
    }
}

/// The `clock` check: remembers the previous sample.
#[derive(Debug, Default)]
pub struct ClockCheck {
    previous_unix_ms: Option<u64>,
}

impl ClockCheck {
    pub fn check(&mut self, now_unix_ms: u64) -> HealthCheck {
        let previous = self.previous_unix_ms.replace(now_unix_ms);
        if now_unix_ms < CLOCK_FLOOR_UNIX_MS {
            return check(
                "clock",
                HealthStatus::Fail,
                format!("wall clock {now_unix_ms} ms is before 2025-01-01; is the time set?"),
            );
        }
        if let Some(prev) = previous
            && now_unix_ms + CLOCK_BACKWARD_TOLERANCE_MS < prev
        {
            return check(
                "clock",
                HealthStatus::Fail,
                format!(
                    "wall clock stepped back {} ms since the previous check",
                    prev - now_unix_ms
                ),
            );
        }
        check("clock", HealthStatus::Ok, "wall clock plausible")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(c: &HealthCheck) -> HealthStatus {
        HealthStatus::try_from(c.status).unwrap()
    }

    #[test]
    fn disk_free_fails_below_the_threshold_and_reports_gib() {
        let ok = disk_free(5 << 30, 1 << 30);
        assert_eq!(status(&ok), HealthStatus::Ok);
        assert_eq!(ok.message, "5.0 GiB free, threshold 1.0 GiB");
        let low = disk_free(512 << 20, 1 << 30);
        assert_eq!(status(&low), HealthStatus::Fail);
        assert_eq!(low.message, "0.5 GiB free, threshold 1.0 GiB");
    }

    #[test]
    fn free_bytes_of_a_real_directory_is_measured() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).is_ok());
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn executables_are_ok_only_when_present_and_executable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeadm");
        let missing = executable("kubeadm", &path);
        assert_eq!(status(&missing), HealthStatus::Warn);
        assert_eq!(missing.message, format!("not found at {}", path.display()));
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        assert_eq!(status(&executable("kubeadm", &path)), HealthStatus::Warn);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(status(&executable("kubeadm", &path)), HealthStatus::Ok);
    }

    #[test]
    fn the_clock_fails_before_2025_and_when_stepping_back_over_a_second() {
        let mut clock = ClockCheck::default();
        assert_eq!(status(&clock.check(1_000)), HealthStatus::Fail);
        let t = CLOCK_FLOOR_UNIX_MS + 10_000;
        assert_eq!(status(&clock.check(t)), HealthStatus::Ok);
        assert_eq!(
            status(&clock.check(t - 1_000)),
            HealthStatus::Ok,
            "1s back is tolerated"
        );
        assert_eq!(status(&clock.check(t - 1_000 - 1_001)), HealthStatus::Fail);
        assert_eq!(status(&clock.check(t)), HealthStatus::Ok);
    }

    #[test]
    fn all_checks_have_valid_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut checker = HealthChecker::new(dir.path(), &HealthConfig::default(), &KubeConfig::default());
        let checks = checker.run(CLOCK_FLOOR_UNIX_MS + 1);
        let names: Vec<_> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["disk_free", "kubeadm", "kubelet", "container_runtime", "clock"]
        );
        assert!(
            checks
                .iter()
                .all(|c| c.status != HealthStatus::Unspecified as i32)
        );
    }

    #[test]
    fn the_tool_checks_look_at_the_kube_paths_the_tasks_run() {
        let dir = tempfile::tempdir().unwrap();
        let kubeadm = dir.path().join("kubeadm");
        std::fs::write(&kubeadm, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&kubeadm, std::fs::Permissions::from_mode(0o755)).unwrap();
        let kube = KubeConfig {
            kubeadm_path: kubeadm.clone(),
            kubelet_path: dir.path().join("kubelet"),
            ..KubeConfig::default()
        };
        let mut checker = HealthChecker::new(dir.path(), &HealthConfig::default(), &kube);
        let checks = checker.run(CLOCK_FLOOR_UNIX_MS + 1);
        assert_eq!(status(&checks[1]), HealthStatus::Ok, "{:?}", checks[1]);
        assert!(checks[1].message.contains(&kubeadm.display().to_string()));
        assert_eq!(status(&checks[2]), HealthStatus::Warn, "{:?}", checks[2]);
    }
}
