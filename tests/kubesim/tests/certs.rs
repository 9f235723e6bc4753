//! kubesim's `kubeadm certs` through the built binary: check-expiration
//! (table and `-o json`), renew all / one name, strict flags, the age
//! knob, and the served apiserver certificate that stays old until the
//! static pod is restarted (its manifest moved out and back).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

struct Sim {
    dir: tempfile::TempDir,
}

impl Sim {
    fn new() -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kubesim"), bin.join("kubeadm")).unwrap();
        Sim { dir }
    }

    fn root(&self) -> PathBuf {
        let root = self.dir.path().join("host");
        rpool_proto::sim::create_socket_file(&root.join(rpool_proto::sim::CONTAINERD_SOCKET)).unwrap();
        root
    }

    fn kubeadm(&self, now: u64, args: &[&str]) -> Output {
        Command::new(self.dir.path().join("bin").join("kubeadm"))
            .args(args)
            .env("KUBESIM_STATE_DIR", self.dir.path().join("state"))
            .env("KUBESIM_NODE_ROOT", self.root())
            .env("KUBESIM_HOSTNAME", "cp1")
            .env("KUBESIM_NODE_IP", "10.0.0.11")
            .env("KUBESIM_NOW", now.to_string())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, now: u64, args: &[&str]) -> String {
        let o = self.kubeadm(now, args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn fails(&self, now: u64, args: &[&str], needle: &str) {
        let o = self.kubeadm(now, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }

    /// apiserver expiry from `-o json` (via the agent's parser).
    fn apiserver(&self, now: u64) -> u64 {
        let out = self.ok(now, &["certs", "check-expiration", "-o", "json"]);
        rpool_agent::kube::certs::parse_expiration(&out)
            .unwrap()
            .into_iter()
            .find(|c| c.name == "apiserver")
            .unwrap()
            .expires_unix_ms
            / 1000
    }

    fn served(&self) -> Option<String> {
        let o = Command::new(env!("CARGO_BIN_EXE_kubesim"))
            .args(["served-cert", &self.root().display().to_string()])
            .output()
            .unwrap();
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    }
}

fn bounce(root: &Path) {
    let manifests = root.join("etc/kubernetes/manifests");
    let holding = root.join("etc/kubernetes/held");
    std::fs::create_dir_all(&holding).unwrap();
    std::fs::rename(
        manifests.join("kube-apiserver.yaml"),
        holding.join("kube-apiserver.yaml"),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(30));
    std::fs::rename(
        holding.join("kube-apiserver.yaml"),
        manifests.join("kube-apiserver.yaml"),
    )
    .unwrap();
}

#[test]
fn certificates_are_checked_renewed_and_served_only_after_a_static_pod_restart() {
    let sim = Sim::new();
    sim.fails(NOW, &["certs", "check-expiration"], "not a control plane");
    sim.ok(
        NOW,
        &[
            "init",
            "--control-plane-endpoint",
            "10.0.0.11:6443",
            "--upload-certs",
        ],
    );
    let table = sim.ok(NOW, &["certs", "check-expiration"]);
    assert!(table.contains("CERTIFICATE                EXPIRES"), "{table}");
    assert!(table.contains("CERTIFICATE AUTHORITY   EXPIRES"), "{table}");
    assert!(table.contains("365d"), "{table}");
    assert_eq!(sim.apiserver(NOW), NOW + 365 * DAY);
    let served_at_start = sim.served().expect("the apiserver runs");
    // Strict like kubeadm.
    sim.fails(
        NOW,
        &["certs", "check-expiration", "--bogus"],
        "unknown flag: --bogus",
    );
    sim.fails(NOW, &["certs", "renew"], "missing subcommand");
    sim.fails(
        NOW,
        &["certs", "renew", "everything"],
        "unknown command \"everything\"",
    );
    sim.fails(
        NOW,
        &["certs", "check-expiration", "-o", "xml"],
        "allowed formats",
    );

    // Aged 340 days: 25 days left, once.
    std::fs::write(sim.root().join("kubesim-cert-age-days"), "340").unwrap();
    assert_eq!(sim.apiserver(NOW), NOW + 25 * DAY);
    assert_eq!(sim.apiserver(NOW), NOW + 25 * DAY, "the knob is consumed");
    assert!(table_has(&sim.ok(NOW, &["certs", "check-expiration"]), "25d"));

    // One name, then all, 10 days later.
    let later = NOW + 10 * DAY;
    let out = sim.ok(later, &["certs", "renew", "admin.conf"]);
    assert!(
        out.contains(
            "certificate embedded in the kubeconfig file for the admin to use and for kubeadm itself renewed"
        ),
        "{out}"
    );
    assert_eq!(sim.apiserver(later), NOW + 25 * DAY, "only admin.conf renewed");
    let out = sim.ok(later, &["certs", "renew", "all"]);
    assert!(
        out.contains("certificate for serving the Kubernetes API renewed"),
        "{out}"
    );
    assert!(
        out.contains("You must restart the kube-apiserver, kube-controller-manager, kube-scheduler and etcd"),
        "{out}"
    );
    assert_eq!(sim.apiserver(later), later + 365 * DAY);
    // Not restarted: the running apiserver still serves the aged one.
    let stale = sim.served().unwrap();
    assert_ne!(stale, served_at_start, "aged");
    assert!(stale.starts_with("2027-"), "{stale}");
    bounce(&sim.root());
    let fresh = sim.served().unwrap();
    assert_ne!(fresh, stale, "restarted: the renewed certificate is served");
    assert!(fresh.starts_with("2028-"), "{fresh}");
    // A missing manifest: no apiserver.
    std::fs::remove_file(sim.root().join("etc/kubernetes/manifests/kube-apiserver.yaml")).unwrap();
    assert_eq!(sim.served(), None);
}

fn table_has(table: &str, needle: &str) -> bool {
    table
        .lines()
        .any(|l| l.starts_with("apiserver ") && l.contains(needle))
}
