//! `kubeadm certs check-expiration` and `kubeadm certs renew`, and the
//! certificates kubeadm leaves on a control plane.
//!
//! `init` and `join --control-plane` write
//! `<node_root>/etc/kubernetes/pki/kubesim-certs.json`: the leaf
//! certificates kubeadm makes (and the kubeconfigs' client certificates)
//! valid for one year from kubesim's clock (`KUBESIM_NOW`), the three CAs
//! ten years from the cluster's creation, like kubeadm's defaults.
//!
//! Test knob: a file `<node_root>/kubesim-cert-age-days` holding a number
//! N ages this node's certificates: the next `kubeadm certs` command moves
//! every certificate's (and CA's) expiry N days earlier and removes the
//! file (so a renewal afterwards gives fresh dates).
//!
//! The running kube-apiserver serves the certificate it read when its
//! static pod last started. kubesim has no kubelet: a static pod counts
//! as restarted when `etc/kubernetes/manifests/kube-apiserver.yaml` was
//! moved (or rewritten) after the certificate was renewed, as kubeadm's
//! documentation says to do it ("temporarily remove the manifest file from
//! /etc/kubernetes/manifests/ ... then move the file back"); its inode
//! change time is compared with the renewal. `kubesim served-cert ROOT`
//! prints the served apiserver certificate's expiry (RFC 3339), or fails
//! when the manifest is missing (the apiserver is not running).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::flags::{flag, val, val_s};
use crate::kubeadm::{fail, parse};
use crate::state::{self, Env, Fail, Res, Store};

pub const LEAF_TTL: u64 = 365 * 86_400;
pub const CA_TTL: u64 = 3_650 * 86_400;
pub const AGE_KNOB: &str = "kubesim-cert-age-days";

/// What check-expiration lists, in its order, with the CA that signed each.
const LEAVES: [(&str, &str); 11] = [
    ("admin.conf", "ca"),
    ("apiserver", "ca"),
    ("apiserver-etcd-client", "etcd-ca"),
    ("apiserver-kubelet-client", "ca"),
    ("controller-manager.conf", "ca"),
    ("etcd-healthcheck-client", "etcd-ca"),
    ("etcd-peer", "etcd-ca"),
    ("etcd-server", "etcd-ca"),
    ("front-proxy-client", "front-proxy-ca"),
    ("scheduler.conf", "ca"),
    ("super-admin.conf", "ca"),
];
const AUTHORITIES: [&str; 3] = ["ca", "etcd-ca", "front-proxy-ca"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cert {
    pub name: String,
    /// Unix seconds.
    pub not_after: u64,
    /// The signing CA ("" for a CA).
    pub ca: String,
    /// Inode change time (ns) of the certificate file when it was last
    /// (re)written: a static pod started later serves it.
    pub written_ns: i128,
    /// The expiry before the last renewal (served until a restart).
    pub previous_not_after: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pki {
    pub certs: Vec<Cert>,
    pub authorities: Vec<Cert>,
}

fn pki_path(root: &Path) -> PathBuf {
    root.join("etc/kubernetes/pki/kubesim-certs.json")
}

fn apiserver_manifest(root: &Path) -> PathBuf {
    root.join("etc/kubernetes/manifests/kube-apiserver.yaml")
}

fn ctime_ns(path: &Path) -> Option<i128> {
    let m = std::fs::metadata(path).ok()?;
    Some(i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()))
}

pub fn load(root: &Path) -> Option<Pki> {
    let text = std::fs::read_to_string(pki_path(root)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes `pki`; every certificate whose `written_ns` is 0 gets the
/// file's change time.
fn save(root: &Path, pki: &mut Pki) -> Res {
    let path = pki_path(root);
    let write = |pki: &Pki| {
        let text = serde_json::to_string_pretty(pki).map_err(|e| Fail::new(format!("kubesim: {e}")))?;
        state::write_atomic(&path, text.as_bytes())
    };
    write(pki)?;
    let stamp = ctime_ns(&path).unwrap_or(0);
    let mut changed = false;
    for c in pki.certs.iter_mut().chain(pki.authorities.iter_mut()) {
        if c.written_ns == 0 {
            c.written_ns = stamp;
            changed = true;
        }
    }
    if changed {
        write(pki)?;
    }
    Ok(())
}

/// The certificates of a new control plane (`first`: the one that ran
/// init, which also gets super-admin.conf). CAs expire `ca_not_after`.
pub fn create(root: &Path, now: u64, ca_not_after: u64, first: bool) -> Res {
    let leaf = |name: &str, ca: &str| Cert {
        name: name.to_owned(),
        not_after: now + LEAF_TTL,
        ca: ca.to_owned(),
        written_ns: 0,
        previous_not_after: now + LEAF_TTL,
    };
    let mut pki = Pki {
        certs: LEAVES
            .iter()
            .filter(|(n, _)| first || *n != "super-admin.conf")
            .map(|(n, ca)| leaf(n, ca))
            .collect(),
        authorities: AUTHORITIES
            .iter()
            .map(|n| Cert {
                name: (*n).to_owned(),
                not_after: ca_not_after,
                ca: String::new(),
                written_ns: 0,
                previous_not_after: ca_not_after,
            })
            .collect(),
    };
    save(root, &mut pki)
}

/// The PKI of this node with the age knob applied (and consumed).
fn open(root: &Path) -> Res<Pki> {
    let mut pki = load(root).ok_or_else(|| {
        fail("[check-expiration] Error reading configuration from the Cluster. Falling back to default configuration\nerror: open /etc/kubernetes/pki/ca.crt: no such file or directory (kubesim: this host is not a control plane)")
    })?;
    let knob = root.join(AGE_KNOB);
    if let Ok(text) = std::fs::read_to_string(&knob) {
        let days: u64 = text.trim().parse().map_err(|_| {
            Fail::new(format!(
                "kubesim: {}: not a number of days: {text:?}",
                knob.display()
            ))
        })?;
        let shift = days * 86_400;
        for c in pki.certs.iter_mut().chain(pki.authorities.iter_mut()) {
            c.not_after = c.not_after.saturating_sub(shift);
            c.previous_not_after = c.previous_not_after.saturating_sub(shift);
        }
        // Keeps the recorded write times (an aged certificate is served
        // as it was).
        let path = pki_path(root);
        let text = serde_json::to_string_pretty(&pki).map_err(|e| Fail::new(format!("kubesim: {e}")))?;
        state::write_atomic(&path, text.as_bytes())?;
        let _ = std::fs::remove_file(&knob);
    }
    Ok(pki)
}

/// The served apiserver certificate's expiry, or `None` when the
/// kube-apiserver static pod is not running (no manifest or no PKI).
pub fn served(root: &Path) -> Option<u64> {
    let started = ctime_ns(&apiserver_manifest(root))?;
    let pki = load(root)?;
    let c = pki.certs.iter().find(|c| c.name == "apiserver")?;
    Some(if started > c.written_ns {
        c.not_after
    } else {
        c.previous_not_after
    })
}

/// `kubesim served-cert ROOT`.
pub fn served_cmd(root: &str) -> Res {
    match served(Path::new(root)) {
        Some(t) => {
            println!("{}", state::rfc3339(t));
            Ok(())
        }
        None => Err(Fail::new(format!(
            "kubesim: no kube-apiserver runs on {root} (no manifest or no certificates)"
        ))),
    }
}

const CERTS_FLAGS: [crate::flags::Spec; 7] = [
    val("cert-dir"),
    val("config"),
    val("kubeconfig"),
    val_s("output", 'o'),
    flag("show-managed-fields"),
    flag("allow-missing-template-keys"),
    val("experimental-output"),
];

pub fn kubeadm_certs(argv: &[String]) -> Res {
    let p = parse(argv, &CERTS_FLAGS)?;
    let Some(sub) = p.args.first().cloned() else {
        println!(
            "Commands related to handling kubernetes certificates\n\nAvailable Commands (kubesim subset):\n  check-expiration Check certificates expiration for a Kubernetes cluster\n  renew            Renew certificates for a Kubernetes cluster"
        );
        return Ok(());
    };
    let rest = &p.args[1..];
    let env = Env::from_process()?;
    let root = env.root()?.to_path_buf();
    if let Some(dir) = p.get("cert-dir")
        && dir != "/etc/kubernetes/pki"
    {
        return Err(fail(format!(
            "kubesim: --cert-dir {dir}: only /etc/kubernetes/pki is simulated"
        )));
    }
    // The lock: certificates change under it like cluster state.
    let _store = Store::open(&env)?;
    match sub.as_str() {
        "check-expiration" => {
            if let Some(a) = rest.first() {
                return Err(fail(format!(
                    "unknown command \"{a}\" for \"kubeadm certs check-expiration\""
                )));
            }
            let output = p.get("output").or(p.get("experimental-output")).unwrap_or("text");
            let pki = open(&root)?;
            match output {
                "text" | "" => print!("{}", table(&pki, env.now)),
                "json" => println!("{}", json(&pki, env.now)),
                other => {
                    return Err(fail(format!(
                        "unable to match a printer suitable for the output format \"{other}\", allowed formats are: json,text (kubesim subset)"
                    )));
                }
            }
            Ok(())
        }
        "renew" => {
            if p.has("output") {
                return Err(fail("unknown shorthand flag: 'o' in -o"));
            }
            let Some(what) = rest.first() else {
                return Err(fail(
                    "missing subcommand; \"renew\" is not meant to be run on its own\nTo see the stack trace of this error execute with --v=5 or higher",
                ));
            };
            if rest.len() > 1 {
                return Err(fail(format!(
                    "unknown command \"{}\" for \"kubeadm certs renew {what}\"",
                    rest[1]
                )));
            }
            let mut pki = open(&root)?;
            let names: Vec<String> = if what == "all" {
                pki.certs.iter().map(|c| c.name.clone()).collect()
            } else if pki.certs.iter().any(|c| c.name == *what) {
                vec![what.clone()]
            } else if LEAVES.iter().any(|(n, _)| n == what) {
                return Err(fail(format!(
                    "[renew] Certificate {what} not found: open /etc/kubernetes/{what}: no such file or directory"
                )));
            } else {
                return Err(fail(format!(
                    "unknown command \"{what}\" for \"kubeadm certs renew\""
                )));
            };
            println!(
                "[renew] Reading configuration from the cluster...\n[renew] FYI: You can look at this config file with 'kubectl -n kube-system get cm kubeadm-config -o yaml'\n"
            );
            for c in pki.certs.iter_mut().filter(|c| names.contains(&c.name)) {
                let ca = c.ca.clone();
                c.previous_not_after = c.not_after;
                c.not_after = env.now + LEAF_TTL;
                c.written_ns = 0;
                if c.name.ends_with(".conf") {
                    println!(
                        "certificate embedded in the kubeconfig file for the {} renewed",
                        describe(&c.name)
                    );
                } else {
                    println!("certificate for {} renewed", describe_leaf(&c.name, &ca));
                }
            }
            save(&root, &mut pki)?;
            if what == "all" {
                println!(
                    "\nDone renewing certificates. You must restart the kube-apiserver, kube-controller-manager, kube-scheduler and etcd, so that they can use the new certificates."
                );
            }
            Ok(())
        }
        other => Err(fail(format!("unknown command \"{other}\" for \"kubeadm certs\""))),
    }
}

fn describe(conf: &str) -> &'static str {
    match conf {
        "admin.conf" => "admin to use and for kubeadm itself",
        "super-admin.conf" => "super-admin",
        "controller-manager.conf" => "controller manager to use",
        _ => "scheduler manager to use",
    }
}

fn describe_leaf(name: &str, _ca: &str) -> &'static str {
    match name {
        "apiserver" => "serving the Kubernetes API",
        "apiserver-etcd-client" => "the API server to access etcd",
        "apiserver-kubelet-client" => "the API server to connect to kubelet",
        "etcd-healthcheck-client" => "liveness probes to healthcheck etcd",
        "etcd-peer" => "etcd nodes to communicate with each other",
        "etcd-server" => "serving etcd",
        _ => "the front proxy client",
    }
}

/// "Dec 30, 2020 23:36 UTC".
fn short_date(secs: u64) -> String {
    let iso = state::rfc3339(secs);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month: usize = iso[5..7].parse().unwrap_or(1);
    format!(
        "{} {}, {} {} UTC",
        MONTHS[month - 1],
        &iso[8..10],
        &iso[0..4],
        &iso[11..16]
    )
}

/// kubeadm's residual time: `364d`, `9y`, `<invalid>` once expired.
fn residual(not_after: u64, now: u64) -> String {
    if not_after <= now {
        return "<invalid>".into();
    }
    let s = not_after - now;
    let days = s / 86_400;
    if days >= 365 * 2 {
        format!("{}y", days / 365)
    } else if days > 0 {
        format!("{days}d")
    } else {
        format!("{}h", s / 3600)
    }
}

pub fn table(pki: &Pki, now: u64) -> String {
    let mut out = String::from(
        "[check-expiration] Reading configuration from the cluster...\n[check-expiration] FYI: You can look at this config file with 'kubectl -n kube-system get cm kubeadm-config -o yaml'\n\n",
    );
    let mut rows = vec![vec![
        "CERTIFICATE".to_string(),
        "EXPIRES".into(),
        "RESIDUAL TIME".into(),
        "CERTIFICATE AUTHORITY".into(),
        "EXTERNALLY MANAGED".into(),
    ]];
    for c in &pki.certs {
        rows.push(vec![
            c.name.clone(),
            short_date(c.not_after),
            residual(c.not_after, now),
            c.ca.clone(),
            "no".into(),
        ]);
    }
    out.push_str(&state::table(&rows));
    out.push('\n');
    let mut rows = vec![vec![
        "CERTIFICATE AUTHORITY".to_string(),
        "EXPIRES".into(),
        "RESIDUAL TIME".into(),
        "EXTERNALLY MANAGED".into(),
    ]];
    for c in &pki.authorities {
        rows.push(vec![
            c.name.clone(),
            short_date(c.not_after),
            residual(c.not_after, now),
            "no".into(),
        ]);
    }
    out.push_str(&state::table(&rows));
    out
}

/// `output.kubeadm.k8s.io/v1alpha3` `CertificateExpirationInfo`.
pub fn json(pki: &Pki, now: u64) -> String {
    let entry = |c: &Cert| {
        let mut v = serde_json::json!({
            "name": c.name,
            "expirationDate": state::rfc3339(c.not_after),
            // kubeadm's ResidualTimeSeconds: whole seconds.
            "residualTime": c.not_after.saturating_sub(now) as i64,
            "externallyManaged": false,
            "missing": false,
        });
        if !c.ca.is_empty() {
            v["caName"] = serde_json::Value::String(c.ca.clone());
        }
        v
    };
    let doc = serde_json::json!({
        "kind": "CertificateExpirationInfo",
        "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
        "certificates": pki.certs.iter().map(entry).collect::<Vec<_>>(),
        "certificateAuthorities": pki.authorities.iter().map(entry).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_control_planes_get_one_year_leaves_and_ten_year_cas() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000;
        create(dir.path(), now, now + CA_TTL, true).unwrap();
        let pki = load(dir.path()).unwrap();
        assert_eq!(pki.certs.len(), 11);
        assert!(pki.certs.iter().all(|c| c.not_after == now + LEAF_TTL));
        assert!(pki.authorities.iter().all(|c| c.not_after == now + CA_TTL));
        let t = table(&pki, now);
        assert!(t.contains("apiserver-etcd-client      "), "{t}");
        assert!(t.contains("365d"), "{t}");
        assert!(t.contains("   10y   "), "{t}");
        let j: serde_json::Value = serde_json::from_str(&json(&pki, now)).unwrap();
        assert_eq!(j["kind"], "CertificateExpirationInfo");
        assert_eq!(j["certificates"][1]["name"], "apiserver");
        assert_eq!(j["certificates"][1]["caName"], "ca");
        assert_eq!(
            j["certificates"][1]["residualTime"].as_i64().unwrap(),
            LEAF_TTL as i64
        );
        assert_eq!(j["certificates"][1]["missing"], false);
        assert!(j["certificateAuthorities"][0].get("caName").is_none());
        let second = tempfile::tempdir().unwrap();
        create(second.path(), now, now + CA_TTL, false).unwrap();
        assert_eq!(
            load(second.path()).unwrap().certs.len(),
            10,
            "no super-admin.conf"
        );
    }

    #[test]
    fn the_age_knob_moves_dates_once_and_the_served_cert_follows_a_manifest_move() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let now = 1_800_000_000;
        create(root, now, now + CA_TTL, true).unwrap();
        let manifest = apiserver_manifest(root);
        std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&manifest, "kind: Pod\n").unwrap();
        assert_eq!(served(root), Some(now + LEAF_TTL));
        std::fs::write(root.join(AGE_KNOB), "340\n").unwrap();
        let pki = open(root).unwrap();
        assert_eq!(pki.certs[1].not_after, now + LEAF_TTL - 340 * 86_400);
        assert!(!root.join(AGE_KNOB).exists());
        assert_eq!(
            open(root).unwrap().certs[1].not_after,
            now + LEAF_TTL - 340 * 86_400
        );
        assert_eq!(served(root), Some(now + LEAF_TTL - 340 * 86_400));
    }
}
