//! The Kubernetes driver: the only module of the agent that spawns
//! processes. It runs the real `kubeadm` and `kubectl` command lines (paths
//! from `[kube]` in `agent.toml`), each bounded by a timeout (the whole
//! process group is killed when it expires), with stdout and stderr
//! captured, and parses what the tools print.
//!
//! # Command lines
//! | call | command line |
//! |---|---|
//! | [`Driver::pull_images`] | `kubeadm config images pull --kubernetes-version V [--image-repository R] [--cri-socket S]`, before init and control-plane joins (a step of its own: a missing image is reported as that) |
//! | [`Driver::init`] | `kubeadm init --config F --upload-certs`, `F` the controller's InitConfiguration + ClusterConfiguration (an older controller's task without one: `kubeadm init --control-plane-endpoint E --upload-certs --pod-network-cidr C --service-cidr S --kubernetes-version V --node-name N`) |
//! | [`Driver::refresh_join`] | `kubeadm token create --print-join-command --kubeconfig A`, then (certificate key wanted) `kubeadm init phase upload-certs --upload-certs --kubeconfig A` |
//! | [`Driver::join`] | `kubeadm join --config F`, `F` the controller's `JoinConfiguration` (or, without one, [`join_config`]) |
//! | [`Driver::reset`] | `kubeadm reset -f --cleanup-tmp-dir`, then the contents of `/etc/cni/net.d` are removed |
//! | [`Driver::drain`] | `kubectl --kubeconfig A drain N --ignore-daemonsets --delete-emptydir-data --timeout=Ss` |
//! | [`Driver::delete_node`] | `kubectl --kubeconfig A delete node N` |
//! | [`Driver::remove_etcd_member`] | `kubectl --kubeconfig A -n kube-system exec etcd-SELF -- etcdctl --endpoints https://127.0.0.1:2379 --cacert … --cert … --key … -w simple member list`, then `… member remove ID` |
//! | [`Driver::apply`] | `kubectl --kubeconfig A apply -f FILE` (manifest written to a 0600 temp file) |
//! | [`Driver::admin_kubeconfig`] | reads A |
//! | [`Driver::upgrade_node`] | `kubeadm version -o short` (must print the target), then `kubeadm upgrade plan V` and `kubeadm upgrade apply V --yes` (the first control plane) or `kubeadm upgrade node`, then `systemctl daemon-reload` and `systemctl restart kubelet` |
//! | [`Driver::uncordon`] | `kubectl --kubeconfig A uncordon N` |
//! | [`Driver::etcd_snapshot`] | `etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=…/healthcheck-client.crt --key=…/healthcheck-client.key snapshot save TMP`, then `etcdctl snapshot status TMP -w json`; fsync, rename into `{state_dir}/etcd-snapshots/POOL/POOL-STAMP.db`, SHA-256 (see `etcd_snapshot`) |
//! | [`Driver::delete_etcd_snapshot`] | removes a snapshot file under `{state_dir}/etcd-snapshots` (retention) |
//! | [`Driver::cert_expiry`] | `kubeadm certs check-expiration -o json` |
//! | [`Driver::renew_certs`] | `kubeadm certs renew all`, then the etcd, kube-apiserver, kube-controller-manager and kube-scheduler manifests moved out of `/etc/kubernetes/manifests` and back after `kube.static_pod_restart_wait_s`, then `kubectl --kubeconfig A get nodes N -o name` until the API server answers |
//! | [`Driver::pending_pods`] | `kubectl --kubeconfig A get pods -A --field-selector=status.phase=Pending -o json` (counts pods whose `PodScheduled` condition is `False`/`Unschedulable`) |
//!
//! `A` is `kube.admin_kubeconfig` (default `/etc/kubernetes/admin.conf`).
//! Before `drain`/`delete`, `kubectl --kubeconfig A get nodes N -o name
//! --ignore-not-found` tells whether the node still exists.
//!
//! # Idempotency
//! Every call first checks whether its effect already holds and then
//! reports success with `already_done` without running the tool:
//! - init: `A` exists and points at the same endpoint (fresh secrets are then
//!   read with `token create` + `upload-certs`); another cluster's files on
//!   the host are an error ("reset it first").
//! - join: `/etc/kubernetes/kubelet.conf` exists and points at the same
//!   endpoint, with the same role (a control plane has
//!   `/etc/kubernetes/manifests/kube-apiserver.yaml`).
//! - reset: no kubeadm state on the host (no kubeconfigs, static pod
//!   manifests, kubelet config or etcd data).
//! - drain / delete: the node is not in the cluster any more.
//! - remove_etcd_member: no member of that name.
//!
//! # Secrets
//! Join tokens, certificate keys and kubeconfigs never reach a log or an
//! error text: command lines are logged with secret flag values replaced,
//! tool output is only ever shown through [`redact`] (which hides anything
//! shaped like a bootstrap token, a certificate key, kubeconfig credentials
//! or a PEM private key), and [`JoinInfo`]'s `Debug` hides its secrets.
//!
//! No secret is ever on a command line (any local user can read those in
//! `ps`/`/proc/*/cmdline`): `kubeadm init` and `kubeadm join` read the
//! token, CA hash and certificate key from a `--config` file created with
//! mode 0600 in `{scratch_dir}/kubeadm` (mode 0700) and removed when the
//! call ends, also on failure, timeout or cancellation (files left by a
//! crashed agent are removed by the next init or join). `token create` and
//! `upload-certs` take no secret: kubeadm generates them and prints them on
//! the captured stdout.
//!
//! # Files and the host root
//! The driver reads host files at their production paths (`/etc/kubernetes`,
//! `/var/lib/kubelet`, `/var/lib/etcd`, `/etc/cni`) under `kube.host_root`
//! (empty, the default: `/`). The sandbox and the tests, which run the
//! tools as kubesim, set it to the simulated host's directory (the one
//! they give kubesim as its node root); the driver knows nothing of
//! kubesim. The agent's own environment is passed to every child;
//! [`Driver::with_env`] adds to it.
//!
//! # Layout
//! - `process`: the process runner (spawn, timeout, process-group kill,
//!   output capture).
//! - `images`: the images step before init and control-plane joins;
//!   `init`, `join`, `reset`: the kubeadm operations on this host;
//!   `nodes`: drain, delete, etcd member removal of other nodes;
//!   `workloads`: `kubectl apply` and the pending-pods count.
//! - `staging`: the join-configuration and manifest files; `kube_vip`: the
//!   kube-vip static pod of a pool with a VIP (written before init and
//!   control-plane joins, switched to admin.conf after init).
//! - `parse`: parsers of the tools' output; `checks`: value checks;
//!   `redact`: secrets out of logs and errors.

pub mod certs;
mod checks;
mod etcd_snapshot;
mod images;
mod init;
mod join;
mod kube_vip;
mod nodes;
mod parse;
mod process;
mod redact;
mod reset;
mod staging;
#[cfg(test)]
mod tests;
mod upgrade;
mod workloads;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::KubeConfig;

pub use checks::{is_ca_hash, is_hex64, is_token};
pub use etcd_snapshot::{SnapshotFile, file_sha256, parse_snapshot_status, snapshot_file_name};
pub use images::{ImagePull, PullFailure, failed_image, parse_pulled};
pub use parse::{
    InitSecrets, JoinCommand, count_unschedulable, kubeconfig_server, parse_init_output, parse_join_commands,
    parse_member_list, parse_upload_certs,
};
pub use redact::{display_command, redact};
pub use staging::{config_args, join_config};
pub use workloads::PENDING_PODS_TIMEOUT;

use redact::REDACTED;

/// kubeadm's default bootstrap token TTL.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long kubeadm keeps uploaded certificates (the certificate key's TTL).
pub const CERTIFICATE_KEY_TTL: Duration = Duration::from_secs(2 * 3600);
/// Lines of a failed tool's output kept in the error text.
pub const ERROR_TAIL_LINES: usize = 8;
/// Host paths the driver reads (or cleans), found under `kube.host_root`.
const NODE_PREFIXES: [&str; 4] = ["/etc/kubernetes", "/var/lib/kubelet", "/var/lib/etcd", "/etc/cni"];
const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";
const APISERVER_MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";
const CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// What `kubeadm reset` would remove; none of it present: nothing to reset.
const KUBEADM_STATE: [&str; 5] = [
    "/etc/kubernetes/kubelet.conf",
    "/etc/kubernetes/admin.conf",
    "/etc/kubernetes/manifests",
    "/var/lib/kubelet/config.yaml",
    "/var/lib/etcd/member",
];

/// Why a driver call failed. Every text is already redacted.

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("{cmd}: could not start: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd}: killed after {secs}s (timeout)")]
    Timeout { cmd: String, secs: u64 },
    /// Non-zero exit; `code` is -1 when a signal ended it.
    #[error("{cmd}: exit code {code}: {tail}")]
    Failed { cmd: String, code: i32, tail: String },
    /// `kubectl drain` failed because of these pods (`ns/name (why)`, ...).
    #[error("node {node} not drained, blocked by pods: {pods} ({cmd})")]
    DrainBlocked { cmd: String, node: String, pods: String },
    /// The tool succeeded but its output could not be understood.
    #[error("{cmd}: unexpected output: {what}")]
    Output { cmd: String, what: String },
    /// The request is invalid, or the host is in a state the call must not
    /// change (e.g. it belongs to another cluster).
    #[error("{0}")]
    Refused(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KubeError + '_ {
    move |source| KubeError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What a node needs to join a cluster. `Debug` hides the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinInfo {
    /// host:port of the API server.
    pub endpoint: String,
    pub token: String,
    /// `sha256:<64 hex>`.
    pub ca_cert_hash: String,
    /// 64 hex; `None` when no certificates were uploaded.
    pub certificate_key: Option<String>,
    pub token_expires_unix_ms: u64,
    /// 0 when there is no certificate key.
    pub certificate_key_expires_unix_ms: u64,
}

impl fmt::Debug for JoinInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinInfo")
            .field("endpoint", &self.endpoint)
            .field("token", &redact(&self.token))
            .field("ca_cert_hash", &self.ca_cert_hash)
            .field(
                "certificate_key",
                &self.certificate_key.as_ref().map(|_| REDACTED),
            )
            .field("token_expires_unix_ms", &self.token_expires_unix_ms)
            .field(
                "certificate_key_expires_unix_ms",
                &self.certificate_key_expires_unix_ms,
            )
            .finish()
    }
}

/// A cluster's first control plane, as `kubeadm init` (or, when it already
/// ran, the existing cluster) gives it.
pub struct InitOutcome {
    pub join: JoinInfo,
    /// The admin kubeconfig (secret).
    pub kubeconfig: String,
    pub already_done: bool,
}

impl fmt::Debug for InitOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitOutcome")
            .field("join", &self.join)
            .field("kubeconfig", &REDACTED)
            .field("already_done", &self.already_done)
            .finish()
    }
}

/// What `kubeadm init` is asked to build. `Debug` hides the config file.
#[derive(Clone)]
pub struct InitRequest {
    pub control_plane_endpoint: String,
    pub pod_network_cidr: String,
    pub service_cidr: String,
    pub kubernetes_version: String,
    pub node_name: String,
    /// The controller's `kubeadm init --config` file (secret: it holds the
    /// bootstrap token and certificate key); empty: the fields above are
    /// passed as flags.
    pub kubeadm_config: String,
    /// Pools with a VIP: the kube-vip static pod written before init
    /// (super-admin.conf) and the one that replaces it after (admin.conf);
    /// both empty without a VIP.
    pub kube_vip_manifest: String,
    pub kube_vip_manifest_after_init: String,
}

impl fmt::Debug for InitRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitRequest")
            .field("control_plane_endpoint", &self.control_plane_endpoint)
            .field("pod_network_cidr", &self.pod_network_cidr)
            .field("service_cidr", &self.service_cidr)
            .field("kubernetes_version", &self.kubernetes_version)
            .field("node_name", &self.node_name)
            .field(
                "kubeadm_config",
                &if self.kubeadm_config.is_empty() {
                    ""
                } else {
                    REDACTED
                },
            )
            .finish()
    }
}

/// Runs `kubeadm`/`kubectl` for the task executor.
#[derive(Debug, Clone)]
pub struct Driver {
    kubeadm: PathBuf,
    kubectl: PathBuf,
    /// `systemctl`, for the kubelet restart of an upgrade.
    systemctl: PathBuf,
    /// `etcdctl`, for etcd snapshots.
    etcdctl: PathBuf,
    /// `{state_dir}/etcd-snapshots`: where snapshots are kept.
    snapshots_root: PathBuf,
    admin_kubeconfig: PathBuf,
    timeout: Duration,
    /// Added to (or replacing in) the agent's environment for every child.
    env: Vec<(OsString, OsString)>,
    /// Where manifests are written before `kubectl apply`.
    scratch_dir: PathBuf,
    /// Where the host's filesystem is (`kube.host_root`); `None` for `/`.
    host_root: Option<PathBuf>,
    /// `kube.static_pod_restart_wait_s`.
    restart_wait: Duration,
    /// Certificate renewals run (shared by clones; see `certs.rs`).
    renewals: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Driver {
    /// A driver with the `[kube]` settings; manifests are staged in
    /// `scratch_dir` (`{state_dir}/tmp`, created on demand, mode 0700);
    /// etcd snapshots go to its sibling `{state_dir}/etcd-snapshots`.
    pub fn new(config: &KubeConfig, scratch_dir: PathBuf) -> Driver {
        let snapshots_root = scratch_dir
            .parent()
            .map(|state| state.join("etcd-snapshots"))
            .unwrap_or_else(|| scratch_dir.join("etcd-snapshots"));
        Driver {
            kubeadm: config.kubeadm_path.clone(),
            kubectl: config.kubectl_path.clone(),
            systemctl: config.systemctl_path.clone(),
            etcdctl: config.etcdctl_path.clone(),
            snapshots_root,
            admin_kubeconfig: config.admin_kubeconfig.clone(),
            timeout: Duration::from_secs(config.command_timeout_s),
            env: Vec::new(),
            scratch_dir,
            host_root: Some(config.host_root.clone())
                .filter(|root| !root.as_os_str().is_empty() && root != Path::new("/")),
            restart_wait: Duration::from_secs(config.static_pod_restart_wait_s),
            renewals: Default::default(),
        }
    }

    /// Sets an environment variable for the children (on top of the
    /// agent's own environment), e.g. the simulator's settings in tests
    /// that simulate several hosts in one process.
    pub fn with_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Driver {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// Overrides the per-call timeout (tests).
    pub fn with_timeout(mut self, timeout: Duration) -> Driver {
        self.timeout = timeout;
        self
    }

    /// Where a host path really is: the [`NODE_PREFIXES`] paths under
    /// `kube.host_root` (see the module docs), any other path unchanged.
    pub fn host_path(&self, path: &Path) -> PathBuf {
        if let Some(root) = &self.host_root {
            let text = path.to_string_lossy();
            for prefix in NODE_PREFIXES {
                if text == prefix || text.starts_with(&format!("{prefix}/")) {
                    return root.join(&text[1..]);
                }
            }
        }
        path.to_path_buf()
    }

    fn read_host_file(&self, path: &Path) -> Result<Option<String>, KubeError> {
        let real = self.host_path(path);
        match std::fs::read_to_string(&real) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// The API server (host:port) a kubeconfig on this host points at, when
    /// the file exists.
    fn kubeconfig_server(&self, path: &Path) -> Result<Option<String>, KubeError> {
        Ok(self
            .read_host_file(path)?
            .map(|text| kubeconfig_server(&text).unwrap_or_else(|| "(no server in the file)".to_owned())))
    }

    fn admin(&self) -> String {
        self.admin_kubeconfig.display().to_string()
    }

    /// The admin kubeconfig of this control plane.
    pub fn admin_kubeconfig(&self) -> Result<String, KubeError> {
        match self.read_host_file(&self.admin_kubeconfig)? {
            Some(text) if !text.trim().is_empty() => Ok(text),
            Some(_) => Err(KubeError::Refused(format!("{} is empty", self.admin()))),
            None => Err(KubeError::Refused(format!(
                "{} does not exist: this host is not a control plane (kubeadm init/join --control-plane has not run here)",
                self.admin()
            ))),
        }
    }

    /// How long static-pod manifests stay out for a restart.
    pub fn static_pod_restart_wait(&self) -> Duration {
        self.restart_wait
    }

    /// Whether this host is a control plane: its admin kubeconfig exists.
    pub fn is_control_plane(&self) -> bool {
        self.host_path(&self.admin_kubeconfig).is_file()
    }

    /// Whether this host is a node of some cluster: its kubelet.conf exists.
    pub fn has_joined(&self) -> bool {
        self.host_path(Path::new(KUBELET_CONF)).is_file()
    }
}
