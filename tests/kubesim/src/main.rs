//! kubesim: answers as `kubeadm` and `kubectl` (chosen by the file name in
//! argv[0]; or `kubesim kubeadm ...` / `kubesim kubectl ...`) for the subset
//! rpool drives, keeping simulated clusters in a shared state directory.
//! Output follows the real v1.32 formats; errors follow the real wording and
//! exit codes (1).
//!
//! # Environment ("which machine am I on")
//! - `KUBESIM_STATE_DIR` (required): the shared cluster state, one per
//!   simulated data centre; every agent points at the same one.
//! - `KUBESIM_NODE_ROOT` (required by kubeadm): this host's filesystem root
//!   stand-in; kubeadm writes `etc/kubernetes/...`, `var/lib/kubelet/...`,
//!   `var/lib/etcd/...` under it. Absolute paths starting with
//!   `/etc/kubernetes`, `/var/lib/kubelet` or `/var/lib/etcd` given on the
//!   command line (e.g. `kubectl --kubeconfig /etc/kubernetes/admin.conf`)
//!   are mapped into it, so agents can use production paths unchanged.
//! - `KUBESIM_HOSTNAME`: this host's name (default: the real hostname);
//!   the node name unless `--node-name` is given.
//! - `KUBESIM_NODE_IP`: this host's InternalIP (default:
//!   `--apiserver-advertise-address`, else 127.0.0.1).
//! - `KUBESIM_NOW`: unix seconds to use as "now" (tests: token and
//!   certificate-key expiry).
//! - `KUBESIM_CONFIG_LOG` (tests): a file to which `kubeadm join --config
//!   FILE` appends `FILE MODE` (octal permission bits) when it reads the
//!   config, so tests can check how the agent stages it.
//!
//! `kubeadm join --config FILE` reads the `JoinConfiguration` in its JSON
//! form only (JSON is valid YAML; kubesim parses no YAML) and rejects flags
//! real kubeadm does not allow with `--config`.
//!
//! # State directory layout
//! ```text
//! $KUBESIM_STATE_DIR/
//!   lock                              flock(LOCK_EX) for every command
//!   clusters/<id>/cluster.json        one cluster (see state::Cluster):
//!       endpoint, version, CIDRs, ca_cert_hash, ca_pem, tokens (+expiry),
//!       certificate_key (+expiry), nodes (name, role, ip, created,
//!       unschedulable, node_root or null after reset), etcd_members
//!       (id, name, ip), applied (kind, apiVersion, namespace, name)
//!   clusters/<id>/applied/<resource>_<ns>_<name>.yaml   applied objects
//!   clusters/<id>/pending-pods        optional, written by tests: `3` or
//!       {"count":3,"cpu":"500m","memory":"512Mi"}: unschedulable pods
//! ```
//! Every write is atomic (temp file + rename) under the lock. A cluster is
//! found by its endpoint (`host:port`; `--control-plane-endpoint`, else
//! `<advertise address>:6443`); it "answers" while at least one of its
//! control-plane nodes is running. A node is running while its node root
//! still holds it (not reset) and `<node_root>/kubesim-down` does not exist
//! (touch that file to simulate a dead host: the node turns NotReady/Unknown
//! and its etcd member unhealthy).
//!
//! # Node root layout (what kubeadm leaves on a host)
//! `etc/kubernetes/{admin,super-admin,kubelet,controller-manager,scheduler}.conf`
//! (kubeconfigs; workers only get `kubelet.conf`), `etc/kubernetes/pki/...`,
//! `etc/kubernetes/manifests/{etcd,kube-apiserver,...}.yaml` (control
//! planes), `var/lib/kubelet/{config.yaml,kubeadm-flags.env,kubesim-node.json}`,
//! `var/lib/etcd/member/...` (control planes).
//!
//! # Supported subset
//! kubeadm:
//! - `init [--control-plane-endpoint H:P] [--upload-certs] [--pod-network-cidr C]
//!   [--service-cidr C] [--kubernetes-version vX.Y.Z] [--node-name N] [--token T]
//!   [--token-ttl D] [--certificate-key K] [--apiserver-advertise-address IP]
//!   [--apiserver-bind-port P] [--ignore-preflight-errors L] [--skip-token-print]
//!   [--skip-certificate-key-print]`: token `[a-z0-9]{6}.[a-z0-9]{16}` (24h),
//!   CA hash `sha256:<64 hex>`, certificate key (64 hex, 2h) with
//!   `--upload-certs`; prints the real success text and join commands.
//! - `init phase upload-certs --upload-certs [--certificate-key K]`
//! - `token create [TOKEN] [--ttl D] [--print-join-command] [--certificate-key K]`,
//!   `token list`, `token delete ID` (use `/etc/kubernetes/admin.conf` or `--kubeconfig`)
//! - `join H:P --token T --discovery-token-ca-cert-hash sha256:H
//!   [--discovery-token-unsafe-skip-ca-verification] [--control-plane
//!   --certificate-key K] [--node-name N] [--apiserver-advertise-address IP]`
//! - `reset [-f] [--cleanup-tmp-dir]` (without `-f` asks on stdin). Like the
//!   real one: the Node object stays (NotReady) until `kubectl delete node`;
//!   on a control plane the remove-etcd-member phase removes its own etcd
//!   member when the etcd cluster keeps quorum (otherwise a warning).
//! - `version [-o short|json]`
//! - `config images list|pull [--kubernetes-version V] [--image-repository R]
//!   [--cri-socket S]`: see `images.rs` for the registries (a mirror's
//!   contents in `$KUBESIM_STATE_DIR/registry-contents`) and each host's
//!   image store. `init` and `join --control-plane` pull what is missing
//!   in their preflight and fail with `[ERROR ImagePull]` like kubeadm.
//!
//! kubectl (cluster from `--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`):
//! - `get nodes [NAME...] [-o json|wide|name] [-l SEL] [--no-headers]`
//! - `get pods [-A|-n NS] [-l SEL] [--field-selector status.phase=Pending,...] [-o json|wide|name]`
//!   (control-plane static pods, kube-proxy and applied DaemonSets per node,
//!   CoreDNS (Pending until a pod network is applied), and the
//!   `pending-pods` count as Pending pods in `default`; labels like the
//!   real ones: `component=etcd`, `k8s-app=kube-proxy`, `k8s-app=kube-dns`)
//! - `drain NODE [--ignore-daemonsets] [--delete-emptydir-data] [--force] [--timeout D]`
//!   as kubectl's filters: DaemonSet pods need `--ignore-daemonsets`, pods
//!   with an emptyDir `--delete-emptydir-data`, bare pods (no
//!   ownerReferences) `--force`, else the drain fails before evicting, with
//!   kubectl's texts. Pods and `policy/v1` PodDisruptionBudgets are the ones
//!   applied with `kubectl apply` (tests place workloads with `spec.nodeName`);
//!   an eviction a budget forbids (minAvailable/maxUnavailable over the
//!   selected Running pods) is retried until `--timeout`, then the drain
//!   fails with `global timeout reached`. kubesim does not wait in real time
//!   for that: it answers at once what kubectl answers at the timeout.
//!   Evicted applied pods are removed.
//! - `get services|service|svc [NAME...] [-n NS|-A] -o json|name`: applied
//!   Services; type LoadBalancer ones get an address from MetalLB's
//!   IPAddressPool while its controller runs (see `lb.rs`)
//! - `cordon NODE`, `uncordon NODE`, `delete node NAME... [--ignore-not-found]`
//! - `apply -f FILE|DIR|- ...` (records objects; CRD-backed kinds need their
//!   CRD first; namespaced objects need their namespace)
//! - `-n kube-system exec etcd-<cp> -- etcdctl --endpoints https://127.0.0.1:2379
//!   --cacert /etc/kubernetes/pki/etcd/ca.crt --cert /etc/kubernetes/pki/etcd/server.crt
//!   --key /etc/kubernetes/pki/etcd/server.key member list [-w json|table] | member remove <hex id> |
//!   endpoint health [--cluster]` (the kubeadm HA docs' way; TLS flags required)
//! - `version [--client]`, `cluster-info`
//!
//! Nodes are NotReady until a pod network exists (any applied DaemonSet),
//! as with a real kubeadm cluster before the CNI is installed.
//!
//! Upgrades (see `upgrade.rs`): the kubeadm/kubelet "installed" on a host
//! is `<node_root>/kubesim-version` (default: kubesim's own version);
//! `kubeadm version` prints it; `kubeadm upgrade plan [V]`, `kubeadm upgrade
//! apply V [-y|--yes]` and `kubeadm upgrade node` move the cluster's and
//! the node's control-plane version with kubeadm's checks; `systemctl
//! daemon-reload` / `systemctl restart kubelet` (argv[0] `systemctl`)
//! makes the node's kubelet run the installed version, refused when that
//! is a newer minor than the API server.
//!
//! etcdctl on a control plane's host (argv[0] `etcdctl`, see `etcdctl.rs`):
//! `snapshot save FILE` with the local endpoint and the etcd client
//! certificate flags (checked against the node root), failing like
//! etcdctl when the local etcd member is down (host down, or its static
//! pod manifest `etc/kubernetes/manifests/etcd.yaml` moved away); the file
//! holds the cluster's state. `snapshot status FILE [-w json|table|simple]`
//! reads a file back (hash, revision, totalKey, totalSize).
//!
//! Certificates (see `certs.rs`): `kubeadm certs check-expiration [-o
//! json]` and `kubeadm certs renew all|NAME`; a control plane's
//! certificates live in `etc/kubernetes/pki/kubesim-certs.json`; the file
//! `<node_root>/kubesim-cert-age-days` (N) ages them by N days;
//! `kubesim served-cert ROOT` prints the certificate the node's
//! kube-apiserver serves (new only after its static pod was restarted by
//! moving its manifest out and back).
//!
//! Helper: `kubesim install DIR` creates `DIR/kubeadm`, `DIR/kubectl`,
//! `DIR/systemctl` and `DIR/etcdctl` symlinks to this binary.

mod certs;
mod etcdctl;
mod flags;
mod images;
mod kubeadm;
mod kubeadm_config;
mod kubectl;
mod lb;
mod state;
mod upgrade;

use std::path::Path;

fn main() {
    // Die quietly on a closed pipe (`kubectl get nodes | head`), like Go
    // programs do, instead of panicking in println!.
    // SAFETY: setting a signal disposition to the default at start-up.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let argv: Vec<String> = std::env::args().collect();
    let prog = argv
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .and_then(|s| s.to_str())
                .unwrap_or("kubesim")
                .to_string()
        })
        .unwrap_or_else(|| "kubesim".into());
    let code = dispatch(&prog, &argv[1.min(argv.len())..]);
    std::process::exit(code);
}

fn dispatch(prog: &str, args: &[String]) -> i32 {
    let result = if prog.starts_with("kubeadm") {
        kubeadm::run(args)
    } else if prog.starts_with("kubectl") {
        kubectl::run(args)
    } else if prog.starts_with("systemctl") {
        upgrade::systemctl(args)
    } else if prog.starts_with("etcdctl") {
        etcdctl::run(args)
    } else {
        match args.first().map(String::as_str) {
            Some("kubeadm") => kubeadm::run(&args[1..]),
            Some("kubectl") => kubectl::run(&args[1..]),
            Some("etcdctl") => etcdctl::run(&args[1..]),
            Some("install") if args.len() == 2 => install(&args[1]),
            Some("served-cert") if args.len() == 2 => certs::served_cmd(&args[1]),
            _ => Err(state::Fail::new(
                "usage: kubesim kubeadm ARGS... | kubesim kubectl ARGS... | kubesim install DIR\n(or call it through kubeadm/kubectl symlinks)",
            )),
        }
    };
    match result {
        Ok(()) => 0,
        Err(f) => {
            use std::io::Write;
            let _ = std::io::stdout().flush();
            eprintln!("{}", f.msg);
            f.code
        }
    }
}

fn install(dir: &str) -> state::Res {
    let me = std::env::current_exe().map_err(|e| state::Fail::new(format!("kubesim: {e}")))?;
    std::fs::create_dir_all(dir).map_err(|e| state::Fail::new(format!("kubesim: {dir}: {e}")))?;
    for name in ["kubeadm", "kubectl", "systemctl", "etcdctl"] {
        let link = Path::new(dir).join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&me, &link)
            .map_err(|e| state::Fail::new(format!("kubesim: {}: {e}", link.display())))?;
    }
    Ok(())
}
