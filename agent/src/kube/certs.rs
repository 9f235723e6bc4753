//! Certificate expiry and renewal on a control plane.
//!
//! - [`Driver::cert_expiry`]: `kubeadm certs check-expiration -o json`
//!   (kubeadm's `output.kubeadm.k8s.io/v1alpha3`
//!   `CertificateExpirationInfo`), read into name + notAfter.
//! - [`Driver::renew_certs`]: `kubeadm certs renew all`, then the static
//!   pods restarted the way kubeadm's certificate-management guide says
//!   (kube-apiserver, kube-controller-manager, kube-scheduler and etcd do
//!   not all reload certificates): each manifest is moved out of
//!   `/etc/kubernetes/manifests` into `/etc/kubernetes/rpool-restart`, the
//!   agent waits `kube.static_pod_restart_wait_s` (the kubelet's
//!   fileCheckFrequency is 20 s) and moves them back; then it waits for the
//!   API server to answer (`kubectl --kubeconfig A get nodes NODE -o name`).
//!   Safe to run again: manifests left in the holding directory by an
//!   interrupted run are moved back first.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use rpool_proto::v1::CertExpiry;
use tracing::info;

use super::checks::check_node_name;
use super::{Driver, KubeError};

const MANIFESTS: &str = "/etc/kubernetes/manifests";
const HOLDING: &str = "/etc/kubernetes/rpool-restart";
/// The static pods whose certificates `renew all` replaces.
const STATIC_PODS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];
/// Most certificates reported (the proto's limit).
const MAX_CERTS: usize = 64;

impl Driver {
    /// The expiry of every certificate kubeadm manages on this control plane.
    pub async fn cert_expiry(&self) -> Result<Vec<CertExpiry>, KubeError> {
        let args: Vec<String> = ["certs", "check-expiration", "-o", "json"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let out = self.kubeadm(&args).await?;
        parse_expiration(&out.stdout).map_err(|what| KubeError::Output {
            cmd: "kubeadm certs check-expiration -o json".into(),
            what,
        })
    }

    /// Counts renewals (the certificate checker reads again after one).
    pub fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }

    /// `kubeadm certs renew all`, static pods restarted, API server waited for.
    pub async fn renew_certs(&self, node: &str, restart_wait: Duration) -> Result<(), KubeError> {
        check_node_name(node)?;
        if !self.is_control_plane() {
            return Err(KubeError::Refused(format!(
                "{} does not exist: this host is not a control plane, it has no certificates to renew",
                self.admin_kubeconfig.display()
            )));
        }
        // An interrupted earlier run: its manifests go back first.
        self.move_manifests(HOLDING, MANIFESTS)?;
        let args: Vec<String> = ["certs", "renew", "all"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        self.kubeadm(&args).await?;
        self.renewals.fetch_add(1, Ordering::Relaxed);
        let moved = self.move_manifests(MANIFESTS, HOLDING)?;
        tokio::time::sleep(restart_wait).await;
        self.move_manifests(HOLDING, MANIFESTS)?;
        info!(node, moved, "certificates renewed, static pods restarted");
        // The API server back (bounded by the command timeout).
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let args = self.kubectl_args(&["get", "nodes", node, "-o", "name"]);
            match self.kubectl(&args).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(KubeError::Refused(format!(
                        "certificates renewed and static pods restarted, but the API server did not answer within {}s: {e}",
                        self.timeout.as_secs()
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        self.renewals.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Moves the static-pod manifests from `from` to `to` (host paths);
    /// returns how many moved.
    fn move_manifests(&self, from: &str, to: &str) -> Result<usize, KubeError> {
        let from = self.host_path(Path::new(from));
        let to = self.host_path(Path::new(to));
        let mut moved = 0;
        for pod in STATIC_PODS {
            let src: PathBuf = from.join(format!("{pod}.yaml"));
            if !src.exists() {
                continue;
            }
            std::fs::create_dir_all(&to).map_err(super::io_err(&to))?;
            let dst = to.join(format!("{pod}.yaml"));
            std::fs::rename(&src, &dst).map_err(super::io_err(&src))?;
            moved += 1;
        }
        Ok(moved)
    }
}

/// Reads kubeadm's `CertificateExpirationInfo` (JSON; anything printed
/// before the document is skipped).
pub fn parse_expiration(stdout: &str) -> Result<Vec<CertExpiry>, String> {
    let start = stdout.find('{').ok_or("no JSON document")?;
    let doc: serde_json::Value =
        serde_json::from_str(&stdout[start..]).map_err(|e| format!("not JSON: {e}"))?;
    if doc["kind"] != "CertificateExpirationInfo" {
        return Err(format!("kind {} is not CertificateExpirationInfo", doc["kind"]));
    }
    let mut out = Vec::new();
    for (key, authority) in [("certificates", false), ("certificateAuthorities", true)] {
        let Some(list) = doc[key].as_array() else {
            continue;
        };
        for c in list {
            let name = c["name"].as_str().ok_or("a certificate without a name")?;
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            {
                return Err(format!("certificate name {name:?} is not [a-z0-9.-]{{1,64}}"));
            }
            let date = c["expirationDate"]
                .as_str()
                .ok_or_else(|| format!("{name}: no expirationDate"))?;
            let secs = parse_rfc3339(date).ok_or_else(|| format!("{name}: bad expirationDate {date:?}"))?;
            out.push(CertExpiry {
                name: name.to_owned(),
                expires_unix_ms: secs * 1_000,
                authority,
            });
        }
    }
    if out.is_empty() {
        return Err("no certificates listed".into());
    }
    out.truncate(MAX_CERTS);
    Ok(out)
}

/// "2027-12-06T23:12:45Z" (fractions and a "+00:00" zone accepted) to
/// Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let zone = s[19..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    if zone != "Z" && zone != "+00:00" {
        return None;
    }
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days = rpool_proto::clock::days_from_civil(y, m as u32, d as u32);
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeadm_json_is_read_with_names_and_dates() {
        let text = r#"{
    "kind": "CertificateExpirationInfo",
    "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
    "certificates": [
        {"name": "admin.conf", "expirationDate": "2027-12-06T23:12:45Z", "residualTime": 1, "caName": "ca", "externallyManaged": false}
    ],
    "certificateAuthorities": [
        {"name": "ca", "expirationDate": "2036-12-04T23:12:45Z", "residualTime": 1, "externallyManaged": false}
    ]
}"#;
        let certs = parse_expiration(text).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].name, "admin.conf");
        assert_eq!(certs[0].expires_unix_ms, 1_828_134_765_000);
        assert!(!certs[0].authority && certs[1].authority);
        assert!(parse_expiration("{\"kind\": \"Pod\"}").is_err());
        assert!(
            parse_expiration(r#"{"kind":"CertificateExpirationInfo","certificates":[{"name":"Bad Name","expirationDate":"2027-12-06T23:12:45Z"}]}"#)
                .is_err()
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-27T04:56:39Z"), Some(1_795_755_399));
        assert_eq!(
            parse_rfc3339("2026-11-27T04:56:39.123+00:00"),
            Some(1_795_755_399)
        );
        assert_eq!(parse_rfc3339("2026-13-27T04:56:39Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
