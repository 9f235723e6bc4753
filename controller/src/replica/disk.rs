//! The data dir's disk: free space before anything is written, and the
//! temporary files a write cut short by a full disk leaves behind.
//!
//! A controller whose disk filled up stops (exit 75, see `main.rs`); when
//! it is started again — by systemd or by hand — it first waits, writing
//! nothing, until the data dir's file system has [`MIN_FREE_BYTES`] free
//! again, then removes sled's half-written snapshot files and opens the
//! stores as usual. So a full disk never turns into a store that cannot be
//! opened, and the replica comes back by itself once space returns.

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

/// Removes sled's `snap.*.generating` files under `{data_dir}/state`: a
/// snapshot being written when the disk filled up, never completed (sled
/// renames the finished file), which sled would otherwise read as
/// corrupted data on every later start. Returns the files removed.
pub fn remove_unfinished_snapshots(data_dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let state = data_dir.join("state");
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(&state) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
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
        if let Some(sled::Error::Io(io)) = e.downcast_ref::<sled::Error>()
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
    fn only_unfinished_sled_snapshots_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        for name in [
            "snap.0000000000001234.generating",
            "snap.0000000000001000",
            "conf",
            "db",
        ] {
            std::fs::write(state.join(name), b"").unwrap();
        }
        let removed = remove_unfinished_snapshots(dir.path()).unwrap();
        assert_eq!(removed, vec![state.join("snap.0000000000001234.generating")]);
        let mut left: Vec<String> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["conf", "db", "snap.0000000000001000"]);
        assert!(
            remove_unfinished_snapshots(&dir.path().join("none"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_full_disk_is_recognised_through_wrappers() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let wrapped = anyhow::Error::new(full).context("writing the raft log");
        assert!(is_disk_full(wrapped.as_ref()));
        let sled_full = sled::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(is_disk_full(&sled_full));
        let custom = sled::Error::Io(std::io::Error::new(std::io::ErrorKind::StorageFull, "wrapped"));
        assert!(is_disk_full(&custom));
        let apply = crate::raft::node::NodeError::Apply {
            index: 8,
            reason: Box::new(sled::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC))),
        };
        assert!(is_disk_full(
            anyhow::Error::new(apply)
                .context("the raft replica failed")
                .as_ref()
        ));
        let other = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EACCES));
        assert!(!is_disk_full(other.as_ref()));
    }
}
