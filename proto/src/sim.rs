//! What a simulated host's filesystem needs that a real one has from its
//! services (sandbox and tests): a container runtime's socket.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Where containerd's socket is under a host root: the one every simulated
/// host gets.
pub const CONTAINERD_SOCKET: &str = "run/containerd/containerd.sock";

/// Creates a Unix socket file at `path` (and its directories), as a running
/// runtime leaves one; nothing listens on it. Paths longer than a socket
/// address allows are bound through `/proc/self/fd/<dir>/<name>`.
pub fn create_socket_file(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        return Ok(());
    }
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let dir_file = std::fs::File::open(dir)?;
    let short = Path::new("/proc/self/fd")
        .join(dir_file.as_raw_fd().to_string())
        .join(name);
    // Binding creates the file; it stays after the listener is dropped.
    std::os::unix::net::UnixListener::bind(&short).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_file_is_created_even_under_a_long_path() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("d".repeat(120)).join(CONTAINERD_SOCKET);
        create_socket_file(&deep).unwrap();
        assert!(std::fs::metadata(&deep).unwrap().file_type().is_socket());
        create_socket_file(&deep).unwrap();
    }
}
