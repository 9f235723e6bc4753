//! etcd snapshots of this control plane's cluster (a pool's backups), and
//! their removal (retention).
//!
//! The command is the one admins run on a kubeadm control plane, with the
//! healthcheck client certificate kubeadm makes for exactly this kind of
//! access:
//!
//! ```text
//! etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt \
//!   --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt \
//!   --key=/etc/kubernetes/pki/etcd/healthcheck-client.key snapshot save TMP
//! etcdctl snapshot status TMP -w json
//! ```
//!
//! `TMP` is `.POOL-STAMP.db.part` in `{state_dir}/etcd-snapshots/POOL/`
//! (mode 0700); the finished file (mode 0600: it holds every Secret of the
//! cluster) is fsynced, renamed to `POOL-STAMP.db`
//! (`STAMP` = UTC `YYYYMMDDTHHMMSSZ`, `-2`, `-3`... appended when that
//! name is taken), and the directory fsynced, so a
//! snapshot is either whole under its final name or not there. Its SHA-256
//! is computed from the file as it lies on disk.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tracing::info;

use super::{Driver, KubeError, io_err};

/// The etcd client certificate and CA of a kubeadm control plane.
pub const ETCD_CA: &str = "/etc/kubernetes/pki/etcd/ca.crt";
pub const ETCD_CLIENT_CERT: &str = "/etc/kubernetes/pki/etcd/healthcheck-client.crt";
pub const ETCD_CLIENT_KEY: &str = "/etc/kubernetes/pki/etcd/healthcheck-client.key";
/// The local etcd member's client URL on a kubeadm control plane.
pub const ETCD_ENDPOINT: &str = "https://127.0.0.1:2379";

/// A snapshot written by [`Driver::etcd_snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub size_bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
    pub revision: u64,
    pub total_keys: u64,
    pub taken_at_unix_ms: u64,
}

/// `POOL-YYYYMMDDTHHMMSSZ.db` for `unix_ms` (UTC).
pub fn snapshot_file_name(pool: &str, unix_ms: u64) -> String {
    let (y, m, d, hh, mm, ss) = rpool_proto::clock::utc_parts(unix_ms / 1_000);
    format!("{pool}-{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z.db")
}

/// SHA-256 (lowercase hex) and length of the file at `path`.
pub fn file_sha256(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hash = rpool_proto::backup::Sha256::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hash.finish(), len))
}

/// `{"hash":..,"revision":..,"totalKey":..,"totalSize":..}` from
/// `etcdctl snapshot status -w json`: (revision, total keys).
pub fn parse_snapshot_status(text: &str) -> Option<(u64, u64)> {
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    Some((v.get("revision")?.as_u64()?, v.get("totalKey")?.as_u64()?))
}

fn check_pool(pool: &str) -> Result<(), KubeError> {
    let ok = !pool.is_empty()
        && pool.len() <= 63
        && pool
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(KubeError::Refused(format!(
            "etcd_snapshot: pool name {pool:?} is not a DNS-1123 label"
        )))
    }
}

impl Driver {
    /// Where this agent keeps the snapshots of `pool`.
    pub fn snapshot_dir(&self, pool: &str) -> PathBuf {
        self.snapshots_root.join(pool)
    }

    fn etcdctl_tls_args(&self) -> Vec<String> {
        vec![
            format!("--endpoints={ETCD_ENDPOINT}"),
            format!("--cacert={ETCD_CA}"),
            format!("--cert={ETCD_CLIENT_CERT}"),
            format!("--key={ETCD_CLIENT_KEY}"),
        ]
    }

    /// Takes an etcd snapshot of `pool`'s cluster from this control plane
    /// (see the module docs). `now_unix_ms` names the file.
    pub async fn etcd_snapshot(
        &self,
        host: &str,
        pool: &str,
        now_unix_ms: u64,
    ) -> Result<SnapshotFile, KubeError> {
        check_pool(pool)?;
        for file in [ETCD_CA, ETCD_CLIENT_CERT, ETCD_CLIENT_KEY] {
            if !self.host_path(Path::new(file)).is_file() {
                return Err(KubeError::Refused(format!(
                    "host {host}: {file} does not exist: this host is not a kubeadm control plane with a local etcd"
                )));
            }
        }
        let dir = self.snapshot_dir(pool);
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io_err(&dir))?;
        }
        // Two snapshots in the same second (a manual one right after a
        // scheduled one) get `-2`, `-3`, ... rather than replace a file.
        let base = snapshot_file_name(pool, now_unix_ms);
        let mut name = base.clone();
        let mut n = 1;
        while dir.join(&name).exists() {
            n += 1;
            name = format!("{}-{n}.db", base.trim_end_matches(".db"));
        }
        let final_path = dir.join(&name);
        let tmp = dir.join(format!(".{name}.part"));
        let _ = std::fs::remove_file(&tmp);
        let result = self.snapshot_into(&tmp, &final_path, &dir, now_unix_ms).await;
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        let file = result?;
        info!(host, pool, path = %file.path.display(), sha256 = %file.sha256, revision = file.revision, "etcd snapshot saved");
        Ok(file)
    }

    async fn snapshot_into(
        &self,
        tmp: &Path,
        final_path: &Path,
        dir: &Path,
        now_unix_ms: u64,
    ) -> Result<SnapshotFile, KubeError> {
        let tmp_text = tmp.display().to_string();
        let mut save = self.etcdctl_tls_args();
        save.extend(["snapshot".to_owned(), "save".to_owned(), tmp_text.clone()]);
        self.run(&self.etcdctl, &save, self.timeout).await?;
        let status_args: Vec<String> = ["snapshot", "status", &tmp_text, "-w", "json"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let status = self.run(&self.etcdctl, &status_args, self.timeout).await?;
        let (revision, total_keys) =
            parse_snapshot_status(&status.stdout).ok_or_else(|| KubeError::Output {
                cmd: format!("{} snapshot status {tmp_text} -w json", self.etcdctl.display()),
                what: "no revision/totalKey in its JSON".to_owned(),
            })?;
        // It holds every Secret of the cluster: owner only (etcdctl makes
        // it 0600 too; the directory is 0700).
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o600)).map_err(io_err(tmp))?;
        }
        let file = std::fs::File::open(tmp).map_err(io_err(tmp))?;
        file.sync_all().map_err(io_err(tmp))?;
        drop(file);
        std::fs::rename(tmp, final_path).map_err(io_err(final_path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        let (sha256, size_bytes) = file_sha256(final_path).map_err(io_err(final_path))?;
        Ok(SnapshotFile {
            path: final_path.to_path_buf(),
            size_bytes,
            sha256,
            revision,
            total_keys,
            taken_at_unix_ms: now_unix_ms,
        })
    }

    /// Removes a snapshot file this agent wrote. Returns `true` when it was
    /// already gone. Refuses any path outside the snapshots directory.
    pub fn delete_etcd_snapshot(&self, path: &str) -> Result<bool, KubeError> {
        let p = Path::new(path);
        let inside = p.is_absolute()
            && p.starts_with(&self.snapshots_root)
            && !p
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            && p.extension().is_some_and(|e| e == "db");
        if !inside {
            return Err(KubeError::Refused(format!(
                "delete_etcd_snapshot.path: {path:?} is not a snapshot file under {}",
                self.snapshots_root.display()
            )));
        }
        match std::fs::remove_file(p) {
            Ok(()) => {
                if let Some(dir) = p.parent() {
                    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
                }
                info!(path, "etcd snapshot deleted");
                Ok(false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(io_err(p)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_the_pool_and_the_utc_time() {
        assert_eq!(snapshot_file_name("web", 0), "web-19700101T000000Z.db");
        // 2026-12-06T23:12:45Z
        assert_eq!(
            snapshot_file_name("web", 1_796_598_765_123),
            "web-20261206T231245Z.db"
        );
        // A leap day.
        assert_eq!(snapshot_file_name("a", 951_782_400_000), "a-20000229T000000Z.db");
    }

    #[test]
    fn sha256_of_a_file_matches_the_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let (hash, len) = file_sha256(&p).unwrap();
        assert_eq!(len, 3);
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn snapshot_status_json_is_read_and_garbage_is_not() {
        assert_eq!(
            parse_snapshot_status(r#"{"hash":3837390101,"revision":42,"totalKey":17,"totalSize":24576}"#),
            Some((42, 17))
        );
        assert_eq!(parse_snapshot_status("hash revision"), None);
        assert_eq!(parse_snapshot_status(r#"{"hash":1}"#), None);
    }

    #[test]
    fn only_snapshot_files_under_the_snapshot_dir_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::KubeConfig::default();
        let d = Driver::new(&config, dir.path().join("tmp"));
        let pool_dir = d.snapshot_dir("web");
        std::fs::create_dir_all(&pool_dir).unwrap();
        let f = pool_dir.join("web-20260101T000000Z.db");
        std::fs::write(&f, b"x").unwrap();
        assert!(!d.delete_etcd_snapshot(f.to_str().unwrap()).unwrap());
        assert!(!f.exists());
        assert!(
            d.delete_etcd_snapshot(f.to_str().unwrap()).unwrap(),
            "already gone"
        );
        let outside = dir.path().join("agent.toml");
        std::fs::write(&outside, b"x").unwrap();
        for bad in [
            outside.to_str().unwrap().to_owned(),
            format!("{}/../agent.toml", pool_dir.display()),
            "relative/web.db".to_owned(),
        ] {
            assert!(d.delete_etcd_snapshot(&bad).is_err(), "{bad}");
        }
        assert!(outside.exists());
    }
}
