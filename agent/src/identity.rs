//! Who this host is: its persistent host id, its name and its addresses.
//!
//! The host id is a lowercase UUID v4 kept in `{state_dir}/host_id`. It is
//! generated once (written to a temporary file, synced, renamed into place,
//! directory synced) and reused forever. A file that exists but does not hold
//! a valid id is an error naming the path: regenerating it silently would make
//! this host look like a new one to the controllers.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Most addresses reported (the controller's limit).
pub const MAX_ADDRESSES: usize = 32;
/// Longest host name the controller accepts.
const MAX_HOSTNAME_LEN: usize = 253;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("creating state dir {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: does not hold a host id ({problem}); it must be one lowercase UUID. \
         Restore the original file, or delete it to register this machine as a new host"
    )]
    Corrupt { path: PathBuf, problem: String },
}

/// Returns the host id stored in `state_dir`, creating the directory (0700)
/// and the id on first start.
pub fn load_or_create_host_id(state_dir: &Path) -> Result<String, IdentityError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|source| IdentityError::CreateDir {
            path: state_dir.to_owned(),
            source,
        })?;
    let path = state_dir.join("host_id");
    match std::fs::read(&path) {
        Ok(bytes) => parse_host_id(&bytes).map_err(|problem| IdentityError::Corrupt {
            path: path.clone(),
            problem,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().hyphenated().to_string();
            write_atomically(&path, format!("{id}\n").as_bytes())?;
            tracing::info!(host_id = %id, path = %path.display(), "generated a new host id");
            Ok(id)
        }
        Err(source) => Err(IdentityError::Read { path, source }),
    }
}

/// A stored host id: one lowercase hyphenated UUID, optional trailing newline.
pub fn parse_host_id(bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Err("empty".to_owned());
    }
    let uuid = uuid::Uuid::try_parse(text).map_err(|e| format!("{e}"))?;
    let canonical = uuid.hyphenated().to_string();
    if canonical != text {
        return Err(format!("{text:?} is not in lowercase hyphenated form"));
    }
    Ok(canonical)
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), IdentityError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write_err = |source| IdentityError::Write {
        path: path.to_owned(),
        source,
    };
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(write_err)
}

/// The machine's host name, made acceptable to the controller
/// (1..=253 of `[A-Za-z0-9.-]`; anything else becomes `-`).
pub fn hostname() -> String {
    sanitize_hostname(&sysinfo::System::host_name().unwrap_or_default())
}

pub fn sanitize_hostname(raw: &str) -> String {
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_HOSTNAME_LEN)
        .collect();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

/// The addresses of every interface, in report order.
pub fn addresses(networks: &sysinfo::Networks) -> Vec<String> {
    order_addresses(
        networks
            .values()
            .flat_map(|data| data.ip_networks().iter().map(|n| n.addr)),
    )
}

/// Drops link-local, unspecified and multicast addresses and duplicates;
/// puts loopback last; keeps at most [`MAX_ADDRESSES`]. Otherwise sorted, so
/// the list is stable between refreshes (interface order is a hash map's).
pub fn order_addresses(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<String> {
    let mut kept: Vec<IpAddr> = addrs
        .into_iter()
        .filter(|a| !a.is_unspecified() && !a.is_multicast() && !is_link_local(a))
        .collect();
    kept.sort_by_key(|a| (a.is_loopback(), a.is_ipv6(), *a));
    kept.dedup();
    kept.truncate(MAX_ADDRESSES);
    kept.iter().map(IpAddr::to_string).collect()
}

fn is_link_local(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_host_id_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let id = load_or_create_host_id(&state).unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(id, id.to_lowercase());
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
        assert_eq!(load_or_create_host_id(&state).unwrap(), id);
        let stored = std::fs::read_to_string(state.join("host_id")).unwrap();
        assert_eq!(stored, format!("{id}\n"));
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let leftovers: Vec<_> = std::fs::read_dir(&state).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_corrupt_host_id_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host_id");
        for bad in ["", "not-a-uuid\n", "6F9619FF-8B86-D011-B42D-00C04FC964FF\n"] {
            std::fs::write(&path, bad).unwrap();
            let err = load_or_create_host_id(dir.path()).unwrap_err();
            assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
            assert!(err.to_string().starts_with(&path.display().to_string()), "{err}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), bad, "left untouched");
        }
    }

    #[test]
    fn a_stored_id_is_accepted_with_or_without_newline() {
        let id = "6f9619ff-8b86-4011-b42d-00c04fc964ff";
        assert_eq!(parse_host_id(id.as_bytes()).unwrap(), id);
        assert_eq!(parse_host_id(format!("{id}\n").as_bytes()).unwrap(), id);
        assert!(parse_host_id(format!("{id}\n\n").as_bytes()).is_err());
    }

    #[test]
    fn hostnames_are_sanitized_for_the_controller() {
        assert_eq!(sanitize_hostname("node_1.lab"), "node-1.lab");
        assert_eq!(sanitize_hostname(""), "localhost");
        assert_eq!(sanitize_hostname(&"a".repeat(300)).len(), 253);
    }

    #[test]
    fn addresses_drop_link_local_and_put_loopback_last() {
        let input: Vec<IpAddr> = [
            "127.0.0.1",
            "fe80::1",
            "10.0.0.5",
            "169.254.1.1",
            "::1",
            "2001:db8::1",
            "10.0.0.5",
            "0.0.0.0",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(
            order_addresses(input),
            vec!["10.0.0.5", "2001:db8::1", "127.0.0.1", "::1"]
        );
    }

    #[test]
    fn at_most_32_addresses_are_reported() {
        let many = (0..40u8).map(|i| IpAddr::from([10, 0, 0, i]));
        assert_eq!(order_addresses(many).len(), MAX_ADDRESSES);
    }
}
