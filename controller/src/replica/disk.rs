//! The data dir's disk: free space before anything is written.
//!
//! A controller whose disk filled up stops (exit 75, see `main.rs`); when
//! it is started again — by systemd or by hand — it first waits, writing
//! nothing, until the data dir's file system has [`MIN_FREE_BYTES`] free
//! again, then opens the log as usual (a write the full disk cut short is
//! a torn tail, which the log cuts off: [`crate::raft::wal`]). So the
//! replica comes back by itself once space returns.

use std::path::Path;
use std::time::Duration;

/// Free space the data dir's file system needs before a start goes on.
pub const MIN_FREE_BYTES: u64 = 64 << 20;

/// How often a start waiting for space looks again.
pub const SPACE_POLL: Duration = Duration::from_secs(2);

/// Bytes available to this process on the file system holding `dir`
/// (the nearest existing ancestor when `dir` does not exist yet).
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let mut probe = dir;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    let path = std::ffi::CString::new(probe.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: `path` is a valid C string and `stats` a properly sized,
    // writable statvfs that the call fills in.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u64::from(stats.f_bavail).saturating_mul(u64::from(stats.f_frsize)))
}

fn full(io: &std::io::Error) -> bool {
    matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || matches!(
            io.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
}

/// True when `error`'s chain holds an I/O error for a full disk (ENOSPC,
/// or EDQUOT for a quota).
pub fn is_disk_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && full(io)
        {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_for_a_dir_that_does_not_exist_yet() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(&dir.path().join("not/yet")).unwrap();
        assert!(free > 0, "a temp dir with no free byte: {free}");
    }

    #[test]
    fn a_full_disk_is_recognised_through_wrappers() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let wrapped = anyhow::Error::new(full).context("writing the raft log");
        assert!(is_disk_full(wrapped.as_ref()));
        let custom = std::io::Error::new(std::io::ErrorKind::StorageFull, "wrapped");
        assert!(is_disk_full(&custom));
        let log = crate::raft::node::NodeError::Log(crate::raft::log_store::LogError::Io {
            path: "/var/lib/rpool/raft/0001.wal".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        });
        assert!(is_disk_full(
            anyhow::Error::new(log)
                .context("the raft replica failed")
                .as_ref()
        ));
        let other = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EACCES));
        assert!(!is_disk_full(other.as_ref()));
    }
}
