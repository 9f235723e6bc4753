//! kubesim as `etcdctl` on a control plane's host: `snapshot save` as
//! strict as etcdctl (local endpoint, the etcd client certificate flags,
//! a live local member), `snapshot status` reading the file back.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

struct Sim {
    dir: tempfile::TempDir,
}

struct Run {
    code: i32,
    out: String,
    err: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.out, self.err
        );
        self
    }

    fn fails(self, needle: &str) -> Run {
        assert_ne!(self.code, 0, "expected a failure\nstdout:\n{}", self.out);
        assert!(
            self.err.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.err
        );
        self
    }
}

impl Sim {
    fn new() -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["kubeadm", "kubectl", "etcdctl"] {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kubesim"), bin.join(name)).unwrap();
        }
        Sim { dir }
    }

    fn root(&self, host: &str) -> PathBuf {
        let root = self.dir.path().join("hosts").join(host);
        rpool_proto::sim::create_socket_file(&root.join(rpool_proto::sim::CONTAINERD_SOCKET)).unwrap();
        root
    }

    fn run(&self, host: &str, tool: &str, args: &[&str]) -> Run {
        let o = Command::new(self.dir.path().join("bin").join(tool))
            .args(args)
            .env("KUBESIM_STATE_DIR", self.dir.path().join("state"))
            .env("KUBESIM_NODE_ROOT", self.root(host))
            .env("KUBESIM_HOSTNAME", host)
            .env_remove("KUBECONFIG")
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Run {
            code: o.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn snapshot_dir(&self) -> PathBuf {
        let d = self.dir.path().join("agent-state/etcd-snapshots/web");
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

const TLS: [&str; 4] = [
    "--endpoints=https://127.0.0.1:2379",
    "--cacert=/etc/kubernetes/pki/etcd/ca.crt",
    "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt",
    "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key",
];

fn save(sim: &Sim, host: &str, file: &Path, tls: &[&str]) -> Run {
    let mut args: Vec<&str> = tls.to_vec();
    let f = file.to_str().unwrap();
    args.extend(["snapshot", "save", f]);
    sim.run(host, "etcdctl", &args)
}

fn status(sim: &Sim, host: &str, file: &Path) -> Value {
    let r = sim
        .run(
            host,
            "etcdctl",
            &["snapshot", "status", file.to_str().unwrap(), "-w", "json"],
        )
        .ok();
    assert!(
        r.err
            .contains("Deprecated: Use `etcdutl snapshot status` instead."),
        "{}",
        r.err
    );
    serde_json::from_str(r.out.trim()).unwrap()
}

/// `kubeadm init` on cp1, a worker w1 joined.
fn cluster(sim: &Sim) {
    let r = sim
        .run(
            "cp1",
            "kubeadm",
            &[
                "init",
                "--control-plane-endpoint",
                "cp1:6443",
                "--upload-certs",
                "--kubernetes-version",
                "v1.32.4",
            ],
        )
        .ok();
    let word_after = |marker: &str| {
        let i = r.out.find(marker).unwrap();
        r.out[i + marker.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let (token, hash) = (
        word_after("--token "),
        word_after("--discovery-token-ca-cert-hash "),
    );
    sim.run(
        "w1",
        "kubeadm",
        &[
            "join",
            "cp1:6443",
            "--token",
            &token,
            "--discovery-token-ca-cert-hash",
            &hash,
        ],
    )
    .ok();
}

#[test]
fn a_snapshot_of_a_live_member_holds_the_cluster_and_reads_back_with_status() {
    let sim = Sim::new();
    cluster(&sim);
    let file = sim.snapshot_dir().join("web-1.db");
    let r = save(&sim, "cp1", &file, &TLS).ok();
    assert!(
        r.out.contains(&format!("Snapshot saved at {}", file.display())),
        "{}",
        r.out
    );
    assert!(!PathBuf::from(format!("{}.part", file.display())).exists());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("kubesim-etcd-snapshot v1\n"));
    // The cluster's state is in it: both nodes.
    assert!(text.contains("\"cp1\"") && text.contains("\"w1\""), "{text}");
    let first = status(&sim, "cp1", &file);
    assert_eq!(first["totalSize"], text.len() as u64);
    assert!(first["revision"].as_u64().unwrap() > 0);
    assert!(first["totalKey"].as_u64().unwrap() > 0);
    assert!(first["hash"].as_u64().is_some());
    // A write to the cluster moves the revision on.
    sim.run(
        "cp1",
        "kubectl",
        &["--kubeconfig", "/etc/kubernetes/admin.conf", "cordon", "w1"],
    )
    .ok();
    let later = sim.snapshot_dir().join("web-2.db");
    save(&sim, "cp1", &later, &TLS).ok();
    let second = status(&sim, "cp1", &later);
    assert!(
        second["revision"].as_u64() > first["revision"].as_u64(),
        "{first} then {second}"
    );
    // Other formats, and a file that is not a snapshot.
    let simple = sim
        .run("cp1", "etcdctl", &["snapshot", "status", later.to_str().unwrap()])
        .ok();
    assert!(
        simple.out.contains(&format!(", {}, ", second["revision"])),
        "{}",
        simple.out
    );
    let junk = sim.snapshot_dir().join("junk.db");
    std::fs::write(&junk, "hello").unwrap();
    sim.run(
        "cp1",
        "etcdctl",
        &["snapshot", "status", junk.to_str().unwrap(), "-w", "json"],
    )
    .fails("Error: invalid database");
}

#[test]
fn a_snapshot_needs_the_tls_flags_the_local_endpoint_and_a_live_member() {
    let sim = Sim::new();
    cluster(&sim);
    let file = sim.snapshot_dir().join("web.db");
    // No client certificate: the server ends the handshake.
    save(&sim, "cp1", &file, &TLS[..1]).fails("Error: context deadline exceeded");
    // A certificate path that does not exist on the host.
    let mut wrong = TLS.to_vec();
    wrong[2] = "--cert=/etc/kubernetes/pki/etcd/client.crt";
    save(&sim, "cp1", &file, &wrong).fails("open /etc/kubernetes/pki/etcd/client.crt: no such file");
    // Plain http, and another member's address.
    let mut http = TLS.to_vec();
    http[0] = "--endpoints=http://127.0.0.1:2379";
    save(&sim, "cp1", &file, &http).fails("context deadline exceeded");
    let mut far = TLS.to_vec();
    far[0] = "--endpoints=https://10.9.9.9:2379";
    save(&sim, "cp1", &file, &far).fails("no route to host");
    // A worker has no etcd (nor its certificates).
    save(&sim, "w1", &file, &TLS).fails("no such file or directory");
    // etcd's static pod moved away: connection refused, as etcdctl says it.
    let manifests = sim.root("cp1").join("etc/kubernetes/manifests");
    std::fs::rename(manifests.join("etcd.yaml"), sim.dir.path().join("etcd.yaml")).unwrap();
    let r = save(&sim, "cp1", &file, &TLS).fails("Error: context deadline exceeded");
    assert!(r.err.contains("connect: connection refused"), "{}", r.err);
    assert!(!file.exists(), "no file from a failed snapshot");
    std::fs::rename(sim.dir.path().join("etcd.yaml"), manifests.join("etcd.yaml")).unwrap();
    save(&sim, "cp1", &file, &TLS).ok();
    // The host down: the same.
    std::fs::write(sim.root("cp1").join("kubesim-down"), "").unwrap();
    save(&sim, "cp1", &sim.snapshot_dir().join("b.db"), &TLS).fails("connection refused");
    // Unknown subcommands and a missing argument.
    sim.run("cp1", "etcdctl", &["snapshot", "restore", "x"])
        .fails("unknown command");
    sim.run("cp1", "etcdctl", &["snapshot", "save"])
        .fails("expects one argument");
}
