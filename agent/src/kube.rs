//! The Kubernetes driver: the only module of the agent that spawns
//! processes. It runs the real `kubeadm` and `kubectl` command lines (paths
//! from `[kube]` in `agent.toml`), each bounded by a timeout (the whole
//! process group is killed when it expires), with stdout and stderr
//! captured, and parses what the tools print.
//!
//! # Command lines
//! | call | command line |
//! |---|---|
//! | [`Driver::init`] | `kubeadm init --control-plane-endpoint E --upload-certs --pod-network-cidr C --service-cidr S --kubernetes-version V --node-name N` |
//! | [`Driver::refresh_join`] | `kubeadm token create --print-join-command --kubeconfig A`, then (certificate key wanted) `kubeadm init phase upload-certs --upload-certs --kubeconfig A` |
//! | [`Driver::join`] | `kubeadm join --config F`, `F` a `JoinConfiguration` (see [`join_command`]) |
//! | [`Driver::reset`] | `kubeadm reset -f --cleanup-tmp-dir`, then the contents of `/etc/cni/net.d` are removed |
//! | [`Driver::drain`] | `kubectl --kubeconfig A drain N --ignore-daemonsets --delete-emptydir-data --timeout=Ss` |
//! | [`Driver::delete_node`] | `kubectl --kubeconfig A delete node N` |
//! | [`Driver::remove_etcd_member`] | `kubectl --kubeconfig A -n kube-system exec etcd-SELF -- etcdctl --endpoints https://127.0.0.1:2379 --cacert … --cert … --key … -w simple member list`, then `… member remove ID` |
//! | [`Driver::apply`] | `kubectl --kubeconfig A apply -f FILE` (manifest written to a 0600 temp file) |
//! | [`Driver::admin_kubeconfig`] | reads A |
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
//! `ps`/`/proc/*/cmdline`): `kubeadm join` reads the token, CA hash and
//! certificate key from a `JoinConfiguration` file created with mode 0600
//! in `{scratch_dir}/kubeadm` (mode 0700) and removed when the call ends,
//! also on failure, timeout or cancellation (files left by a crashed agent
//! are removed by the next join). `init`, `token create` and
//! `upload-certs` take no secret: kubeadm generates them and prints them on
//! the captured stdout.
//!
//! # Files and kubesim
//! The driver reads host files at their production paths (`/etc/kubernetes`,
//! `/var/lib/kubelet`, `/var/lib/etcd`, `/etc/cni`). When the children's
//! environment sets `KUBESIM_NODE_ROOT` (the sandbox and tests run the
//! tools as kubesim), those paths are looked up under that root instead,
//! the same mapping kubesim applies to them. The agent's own environment
//! is passed to every child; [`Driver::with_env`] adds to it.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::config::KubeConfig;

/// kubeadm's default bootstrap token TTL.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long kubeadm keeps uploaded certificates (the certificate key's TTL).
pub const CERTIFICATE_KEY_TTL: Duration = Duration::from_secs(2 * 3600);
/// Lines of a failed tool's output kept in the error text.
pub const ERROR_TAIL_LINES: usize = 8;
/// Host paths the driver reads (or cleans), mapped under
/// `KUBESIM_NODE_ROOT` when it is set.
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
const REDACTED: &str = "<redacted>";

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

/// What `kubeadm init` is asked to build.
#[derive(Debug, Clone)]
pub struct InitRequest {
    pub control_plane_endpoint: String,
    pub pod_network_cidr: String,
    pub service_cidr: String,
    pub kubernetes_version: String,
    pub node_name: String,
}

/// Captured result of one finished process.
#[derive(Debug)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `kubeadm`/`kubectl` for the task executor.
#[derive(Debug, Clone)]
pub struct Driver {
    kubeadm: PathBuf,
    kubectl: PathBuf,
    admin_kubeconfig: PathBuf,
    timeout: Duration,
    /// Added to (or replacing in) the agent's environment for every child.
    env: Vec<(OsString, OsString)>,
    /// Where manifests are written before `kubectl apply`.
    scratch_dir: PathBuf,
}

impl Driver {
    /// A driver with the `[kube]` settings; manifests are staged in
    /// `scratch_dir` (created on demand, mode 0700).
    pub fn new(config: &KubeConfig, scratch_dir: PathBuf) -> Driver {
        Driver {
            kubeadm: config.kubeadm_path.clone(),
            kubectl: config.kubectl_path.clone(),
            admin_kubeconfig: config.admin_kubeconfig.clone(),
            timeout: Duration::from_secs(config.command_timeout_s),
            env: Vec::new(),
            scratch_dir,
        }
    }

    /// Sets an environment variable for the children (on top of the
    /// agent's own environment), e.g. `KUBESIM_NODE_ROOT` in tests that
    /// simulate several hosts in one process.
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

    /// The simulated node root, when the children run as kubesim.
    fn node_root(&self) -> Option<PathBuf> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == "KUBESIM_NODE_ROOT")
            .map(|(_, v)| PathBuf::from(v))
            .or_else(|| std::env::var_os("KUBESIM_NODE_ROOT").map(PathBuf::from))
            .filter(|p| !p.as_os_str().is_empty())
    }

    /// Where a host path really is (see the module docs).
    pub fn host_path(&self, path: &Path) -> PathBuf {
        if let Some(root) = self.node_root() {
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

    /// Runs one command line; `Ok` only for exit code 0.
    async fn run(&self, program: &Path, args: &[String], timeout: Duration) -> Result<Output, KubeError> {
        let cmd = display_command(program, args);
        let started = Instant::now();
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let child = command.spawn().map_err(|source| KubeError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
        // Kills the whole group if this future is dropped (timeout, task
        // deadline, shutdown) before the process is reaped.
        let mut group = GroupKill(child.id());
        debug!(cmd = %cmd, "running");
        let waited = tokio::time::timeout(timeout, child.wait_with_output()).await;
        let output = match waited {
            Err(_) => {
                drop(group);
                warn!(cmd = %cmd, timeout_s = timeout.as_secs(), "killed after the timeout");
                return Err(KubeError::Timeout {
                    cmd,
                    secs: timeout.as_secs(),
                });
            }
            Ok(Err(source)) => return Err(KubeError::Spawn { cmd, source }),
            Ok(Ok(output)) => {
                group.0 = None;
                output
            }
        };
        let out = Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if out.code == 0 {
            debug!(cmd = %cmd, elapsed_ms, "done");
            return Ok(out);
        }
        let tail = error_tail(&out);
        warn!(cmd = %cmd, code = out.code, elapsed_ms, error = %tail, "failed");
        Err(KubeError::Failed {
            cmd,
            code: out.code,
            tail,
        })
    }

    async fn kubeadm(&self, args: &[String]) -> Result<Output, KubeError> {
        self.run(&self.kubeadm, args, self.timeout).await
    }

    async fn kubectl(&self, args: &[String]) -> Result<Output, KubeError> {
        self.run(&self.kubectl, args, self.timeout).await
    }

    /// `kubectl --kubeconfig A ARGS...`.
    fn kubectl_args(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec!["--kubeconfig".to_owned(), self.admin()];
        v.extend(args.iter().map(|s| s.to_string()));
        v
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

    /// `kubeadm init` for a new cluster (see the module docs), returning the
    /// join secrets and the admin kubeconfig.
    pub async fn init(&self, req: &InitRequest) -> Result<InitOutcome, KubeError> {
        check_endpoint("control_plane_endpoint", &req.control_plane_endpoint)?;
        check_node_name(&req.node_name)?;
        check_cidr("pod_network_cidr", &req.pod_network_cidr)?;
        check_cidr("service_cidr", &req.service_cidr)?;
        check_version(&req.kubernetes_version)?;
        let endpoint = &req.control_plane_endpoint;

        if let Some(server) = self.kubeconfig_server(&self.admin_kubeconfig)? {
            if same_endpoint(&server, endpoint) {
                info!(endpoint = %endpoint, "kubeadm init already done here; reading fresh join secrets");
                let join = self.refresh_join(true).await?;
                return Ok(InitOutcome {
                    join,
                    kubeconfig: self.admin_kubeconfig()?,
                    already_done: true,
                });
            }
            return Err(KubeError::Refused(format!(
                "this host is already a control plane of the cluster at {server} ({} exists), not {endpoint}; reset it first",
                self.admin()
            )));
        }
        if let Some(server) = self.kubeconfig_server(Path::new(KUBELET_CONF))? {
            return Err(KubeError::Refused(format!(
                "this host is already a node of the cluster at {server} ({KUBELET_CONF} exists); reset it first"
            )));
        }
        let had_state = self.has_kubeadm_state();
        let args: Vec<String> = [
            "init",
            "--control-plane-endpoint",
            endpoint,
            "--upload-certs",
            "--pod-network-cidr",
            &req.pod_network_cidr,
            "--service-cidr",
            &req.service_cidr,
            "--kubernetes-version",
            &req.kubernetes_version,
            "--node-name",
            &req.node_name,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let now = unix_ms_now();
        let out = match self.kubeadm(&args).await {
            Ok(out) => out,
            Err(e) => {
                // A failed init leaves half a control plane behind, and the
                // retry would fail its preflight on it: clean up, unless the
                // leftovers were there before (then they are not ours).
                if !had_state && self.has_kubeadm_state() {
                    match self
                        .kubeadm(&strings(&["reset", "-f", "--cleanup-tmp-dir"]))
                        .await
                    {
                        Ok(_) => info!("cleaned up after the failed kubeadm init (kubeadm reset -f)"),
                        Err(reset) => warn!(error = %reset, "cleanup after the failed kubeadm init failed"),
                    }
                }
                return Err(e);
            }
        };
        let cmd = display_command(&self.kubeadm, &args);
        let parsed = parse_init_output(&out.stdout).map_err(|what| KubeError::Output { cmd, what })?;
        let certificate_key_expires_unix_ms = if parsed.certificate_key.is_some() {
            now + CERTIFICATE_KEY_TTL.as_millis() as u64
        } else {
            0
        };
        info!(endpoint = %parsed.endpoint, node = %req.node_name, "kubeadm init done");
        Ok(InitOutcome {
            join: JoinInfo {
                endpoint: parsed.endpoint,
                token: parsed.token,
                ca_cert_hash: parsed.ca_cert_hash,
                certificate_key: parsed.certificate_key,
                token_expires_unix_ms: now + TOKEN_TTL.as_millis() as u64,
                certificate_key_expires_unix_ms,
            },
            kubeconfig: self.admin_kubeconfig()?,
            already_done: false,
        })
    }

    /// Fresh join secrets from this control plane: a new bootstrap token
    /// and, when `certificate_key`, freshly uploaded certificates.
    pub async fn refresh_join(&self, certificate_key: bool) -> Result<JoinInfo, KubeError> {
        let args = strings(&[
            "token",
            "create",
            "--print-join-command",
            "--kubeconfig",
            &self.admin(),
        ]);
        let now = unix_ms_now();
        let out = self.kubeadm(&args).await?;
        let cmd = display_command(&self.kubeadm, &args);
        let join = parse_join_commands(&out.stdout)
            .into_iter()
            .next()
            .ok_or_else(|| KubeError::Output {
                cmd: cmd.clone(),
                what: "no `kubeadm join` command line".to_owned(),
            })?;
        check_join_fields(&join).map_err(|what| KubeError::Output { cmd, what })?;
        let mut info = JoinInfo {
            endpoint: join.endpoint,
            token: join.token,
            ca_cert_hash: join.ca_cert_hash,
            certificate_key: None,
            token_expires_unix_ms: now + TOKEN_TTL.as_millis() as u64,
            certificate_key_expires_unix_ms: 0,
        };
        if certificate_key {
            let args = strings(&[
                "init",
                "phase",
                "upload-certs",
                "--upload-certs",
                "--kubeconfig",
                &self.admin(),
            ]);
            let now = unix_ms_now();
            let out = self.kubeadm(&args).await?;
            let key = parse_upload_certs(&out.stdout).ok_or_else(|| KubeError::Output {
                cmd: display_command(&self.kubeadm, &args),
                what: "no certificate key after \"[upload-certs] Using certificate key:\"".to_owned(),
            })?;
            info.certificate_key = Some(key);
            info.certificate_key_expires_unix_ms = now + CERTIFICATE_KEY_TTL.as_millis() as u64;
        }
        Ok(info)
    }

    /// `kubeadm join` as a worker or (with the certificate key) as a control
    /// plane. Returns `true` when this host had already joined that cluster
    /// in that role (nothing run).
    pub async fn join(
        &self,
        join: &JoinInfo,
        node_name: &str,
        control_plane: bool,
    ) -> Result<bool, KubeError> {
        check_endpoint("join.control_plane_endpoint", &join.endpoint)?;
        check_node_name(node_name)?;
        if !is_token(&join.token) {
            return Err(KubeError::Refused(
                "join.token: not a bootstrap token (accepted \"[a-z0-9]{6}.[a-z0-9]{16}\")".to_owned(),
            ));
        }
        if !is_ca_hash(&join.ca_cert_hash) {
            return Err(KubeError::Refused(format!(
                "join.ca_cert_hash: {:?} is invalid (accepted \"sha256:<64 hex>\")",
                join.ca_cert_hash
            )));
        }
        let key = if control_plane {
            match join.certificate_key.as_deref() {
                Some(k) if is_hex64(k) => Some(k),
                Some(_) => {
                    return Err(KubeError::Refused(
                        "join.certificate_key: invalid (accepted 64 hex characters)".to_owned(),
                    ));
                }
                None => {
                    return Err(KubeError::Refused(
                        "join.certificate_key: missing; a control-plane join needs the certificate key"
                            .to_owned(),
                    ));
                }
            }
        } else {
            None
        };
        if let Some(server) = self.kubeconfig_server(Path::new(KUBELET_CONF))? {
            if !same_endpoint(&server, &join.endpoint) {
                return Err(KubeError::Refused(format!(
                    "this host is already a node of the cluster at {server}, not {}; reset it first",
                    join.endpoint
                )));
            }
            let is_cp = self.host_path(Path::new(APISERVER_MANIFEST)).exists();
            if is_cp != control_plane {
                let (is, asked) = if is_cp {
                    ("a control plane", "a worker")
                } else {
                    ("a worker", "a control plane")
                };
                return Err(KubeError::Refused(format!(
                    "this host already joined the cluster at {server} as {is}, not as {asked}; reset it first"
                )));
            }
            info!(endpoint = %join.endpoint, control_plane, "already joined; nothing to do");
            return Ok(true);
        }
        let dir = self.kubeadm_dir()?;
        let path = dir.join(format!(
            "{JOIN_CONFIG_PREFIX}{}-{:08x}.json",
            std::process::id(),
            fastrand::u32(..)
        ));
        let (args, config) = join_command(join, node_name, key, &path);
        // Removes the file however this call ends (error, timeout, or this
        // future being dropped by a task deadline or shutdown).
        let staged = RemoveOnDrop(path.clone());
        write_private(&path, config.as_bytes()).map_err(io_err(&path))?;
        let result = self.kubeadm(&args).await;
        drop(staged);
        result?;
        info!(endpoint = %join.endpoint, node = node_name, control_plane, "kubeadm join done");
        Ok(false)
    }

    /// `{scratch_dir}/kubeadm`: created (or fixed) with mode 0700, for
    /// kubeadm config files holding join secrets. Join configs left behind
    /// by an earlier agent process (crash) are removed.
    fn kubeadm_dir(&self) -> Result<PathBuf, KubeError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let dir = self.scratch_dir.join("kubeadm");
        std::fs::create_dir_all(&self.scratch_dir).map_err(io_err(&self.scratch_dir))?;
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&dir)(e)),
        }
        let meta = std::fs::symlink_metadata(&dir).map_err(io_err(&dir))?;
        if !meta.is_dir() {
            return Err(KubeError::Refused(format!(
                "{} is not a directory; it holds kubeadm join secrets, remove it",
                dir.display()
            )));
        }
        if meta.permissions().mode() & 0o777 != 0o700 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
        }
        let own = format!("{JOIN_CONFIG_PREFIX}{}-", std::process::id());
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(JOIN_CONFIG_PREFIX) && !name.starts_with(&own) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(dir)
    }

    fn has_kubeadm_state(&self) -> bool {
        KUBEADM_STATE.iter().any(|p| {
            let real = self.host_path(Path::new(p));
            match std::fs::read_dir(&real) {
                Ok(mut entries) => entries.next().is_some(),
                Err(_) => real.exists() && real.is_file(),
            }
        })
    }

    /// `kubeadm reset -f` and cleanup (CNI configuration). Returns `true`
    /// when there was nothing to reset (nothing run).
    pub async fn reset(&self) -> Result<bool, KubeError> {
        if !self.has_kubeadm_state() {
            info!("no kubeadm state on this host; nothing to reset");
            return Ok(true);
        }
        self.kubeadm(&strings(&["reset", "-f", "--cleanup-tmp-dir"]))
            .await?;
        // kubeadm reset leaves the CNI configuration behind (it says so).
        let cni = self.host_path(Path::new(CNI_CONF_DIR));
        if let Ok(entries) = std::fs::read_dir(&cni) {
            for entry in entries.flatten() {
                let path = entry.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                if let Err(e) = removed {
                    warn!(path = %path.display(), error = %e, "could not remove CNI configuration");
                }
            }
        }
        if self.host_path(Path::new(KUBELET_CONF)).exists() {
            return Err(KubeError::Refused(format!(
                "kubeadm reset -f succeeded but {KUBELET_CONF} is still there"
            )));
        }
        info!("kubeadm reset done");
        Ok(false)
    }

    /// Whether the cluster (seen through the admin kubeconfig) has `node`.
    async fn node_exists(&self, node: &str) -> Result<bool, KubeError> {
        let out = self
            .kubectl(&self.kubectl_args(&["get", "nodes", node, "-o", "name", "--ignore-not-found"]))
            .await?;
        Ok(!out.stdout.trim().is_empty())
    }

    /// `kubectl drain`; `timeout_s` 0 means the per-call timeout. Returns
    /// `true` when the node is already gone.
    pub async fn drain(&self, node: &str, timeout_s: u32) -> Result<bool, KubeError> {
        check_node_name(node)?;
        if !self.node_exists(node).await? {
            info!(node, "node not in the cluster; nothing to drain");
            return Ok(true);
        }
        let drain_s = if timeout_s == 0 {
            self.timeout.as_secs().saturating_sub(10).max(1)
        } else {
            timeout_s as u64
        };
        let args = self.kubectl_args(&[
            "drain",
            node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            &format!("--timeout={drain_s}s"),
        ]);
        // kubectl gives up at its own --timeout; leave it room to say so.
        let limit = self.timeout.max(Duration::from_secs(drain_s + 30));
        match self.run(&self.kubectl, &args, limit).await {
            Ok(_) => Ok(false),
            Err(KubeError::Failed { tail, .. }) if is_not_found(&tail, node) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// `kubectl delete node`. Returns `true` when the node was already gone.
    pub async fn delete_node(&self, node: &str) -> Result<bool, KubeError> {
        check_node_name(node)?;
        if !self.node_exists(node).await? {
            info!(node, "node not in the cluster; nothing to delete");
            return Ok(true);
        }
        match self.kubectl(&self.kubectl_args(&["delete", "node", node])).await {
            Ok(_) => Ok(false),
            Err(KubeError::Failed { tail, .. }) if is_not_found(&tail, node) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Removes `target`'s etcd member through this control plane's etcd
    /// pod (`etcd-<self_node>`). Returns `true` when there is no such member.
    pub async fn remove_etcd_member(&self, self_node: &str, target: &str) -> Result<bool, KubeError> {
        check_node_name(self_node)?;
        check_node_name(target)?;
        let pod = format!("etcd-{self_node}");
        let etcdctl = |words: &[&str]| {
            let mut v = vec![
                "-n",
                "kube-system",
                "exec",
                pod.as_str(),
                "--",
                "etcdctl",
                "--endpoints",
                "https://127.0.0.1:2379",
                "--cacert",
                "/etc/kubernetes/pki/etcd/ca.crt",
                "--cert",
                "/etc/kubernetes/pki/etcd/server.crt",
                "--key",
                "/etc/kubernetes/pki/etcd/server.key",
                "-w",
                "simple",
            ];
            v.extend_from_slice(words);
            self.kubectl_args(&v)
        };
        let out = self.kubectl(&etcdctl(&["member", "list"])).await?;
        let Some(id) = parse_member_list(&out.stdout)
            .into_iter()
            .find(|(_, name)| name == target)
            .map(|(id, _)| id)
        else {
            info!(target, "no etcd member of that name; nothing to remove");
            return Ok(true);
        };
        self.kubectl(&etcdctl(&["member", "remove", &id])).await?;
        info!(target, member = %id, "etcd member removed");
        Ok(false)
    }

    /// Whether this host is a control plane: its admin kubeconfig exists.
    pub fn is_control_plane(&self) -> bool {
        self.host_path(&self.admin_kubeconfig).is_file()
    }

    /// Pods of this control plane's cluster that the scheduler could not
    /// place (Pending with `PodScheduled` False/Unschedulable; pods that
    /// are Pending while their images are pulled do not count). Bounded by
    /// [`PENDING_PODS_TIMEOUT`] or the per-call timeout, the shorter.
    pub async fn pending_pods(&self) -> Result<u32, KubeError> {
        let args = self.kubectl_args(&[
            "get",
            "pods",
            "-A",
            "--field-selector=status.phase=Pending",
            "-o",
            "json",
        ]);
        let out = self
            .run(&self.kubectl, &args, self.timeout.min(PENDING_PODS_TIMEOUT))
            .await?;
        count_unschedulable(&out.stdout).map_err(|what| KubeError::Output {
            cmd: display_command(&self.kubectl, &args),
            what,
        })
    }

    /// `kubectl apply -f` of one manifest (`name` only names the temp file
    /// and the logs).
    pub async fn apply(&self, name: &str, content: &str) -> Result<(), KubeError> {
        std::fs::create_dir_all(&self.scratch_dir).map_err(io_err(&self.scratch_dir))?;
        let safe: String = name
            .chars()
            .take(40)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.scratch_dir.join(format!(
            "manifest-{safe}-{}-{:08x}.yaml",
            std::process::id(),
            fastrand::u32(..)
        ));
        write_private(&path, content.as_bytes()).map_err(io_err(&path))?;
        let result = self
            .kubectl(&self.kubectl_args(&["apply", "-f", &path.display().to_string()]))
            .await;
        let _ = std::fs::remove_file(&path);
        result?;
        info!(manifest = name, "applied");
        Ok(())
    }
}

/// Longest a pending-pods count may take.
pub const PENDING_PODS_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts the unschedulable pods in a `kubectl get pods -o json` list: a
/// `PodScheduled` condition with status `False` and reason `Unschedulable`.
pub fn count_unschedulable(json: &str) -> Result<u32, String> {
    let list: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not a JSON pod list: {e}"))?;
    let items = list
        .get("items")
        .and_then(|i| i.as_array())
        .ok_or_else(|| "no \"items\" array in the pod list".to_owned())?;
    let unschedulable = items
        .iter()
        .filter(|pod| {
            pod.pointer("/status/conditions")
                .and_then(|c| c.as_array())
                .is_some_and(|conditions| {
                    conditions.iter().any(|c| {
                        c.get("type").and_then(|v| v.as_str()) == Some("PodScheduled")
                            && c.get("status").and_then(|v| v.as_str()) == Some("False")
                            && c.get("reason").and_then(|v| v.as_str()) == Some("Unschedulable")
                    })
                })
        })
        .count();
    u32::try_from(unschedulable).map_err(|_| format!("{unschedulable} pods is more than a u32"))
}

/// Kills a process group when dropped (unless disarmed with `None`).
struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take()
            && let Ok(pid) = i32::try_from(pid)
            && pid > 0
        {
            // SAFETY: kill(2) has no memory-safety preconditions; the group
            // is the child's own (process_group(0)).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

/// File name prefix of the staged join configurations.
const JOIN_CONFIG_PREFIX: &str = "join-";

/// `kubeadm join --config CONFIG_PATH` and the `JoinConfiguration`
/// (`kubeadm.k8s.io/v1beta4`, JSON, which kubeadm's YAML loader reads) to
/// write there: endpoint, token, CA hash, node name and, for a control
/// plane (`certificate_key`), the certificate key. The secrets are in the
/// file only; kubeadm rejects mixing `--config` with the flags that carry
/// them.
pub fn join_command(
    join: &JoinInfo,
    node_name: &str,
    certificate_key: Option<&str>,
    config_path: &Path,
) -> (Vec<String>, String) {
    let mut config = serde_json::json!({
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": join.endpoint,
                "token": join.token,
                "caCertHashes": [join.ca_cert_hash],
            },
        },
        "nodeRegistration": { "name": node_name },
    });
    if let Some(key) = certificate_key {
        config["controlPlane"] = serde_json::json!({ "certificateKey": key });
    }
    let args = vec![
        "join".to_owned(),
        "--config".to_owned(),
        config_path.display().to_string(),
    ];
    (args, format!("{config:#}\n"))
}

/// Removes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(path = %self.0.display(), error = %e, "could not remove a file holding join secrets")
            }
        }
    }
}

/// Writes a new file with mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `Error from server (NotFound): nodes "N" not found`.
fn is_not_found(text: &str, node: &str) -> bool {
    text.contains(&format!("nodes \"{node}\" not found"))
}

/// The last lines of a failed tool's output (stderr, else stdout), redacted.
fn error_tail(out: &Output) -> String {
    let text = if out.stderr.trim().is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(ERROR_TAIL_LINES)..];
    if tail.is_empty() {
        return "(no output)".to_owned();
    }
    redact(&tail.join("\n"))
}

/// Flags whose value is a secret.
const SECRET_FLAGS: [&str; 5] = [
    "--token",
    "--certificate-key",
    "--discovery-token",
    "--tls-bootstrap-token",
    "--password",
];

/// The command line for logs and errors, secret flag values replaced.
pub fn display_command(program: &Path, args: &[String]) -> String {
    let mut out = program.display().to_string();
    let mut hide_next = false;
    for arg in args {
        out.push(' ');
        if hide_next {
            out.push_str(REDACTED);
            hide_next = false;
            continue;
        }
        if SECRET_FLAGS.contains(&arg.as_str()) {
            hide_next = true;
            out.push_str(arg);
            continue;
        }
        if let Some((flag, _)) = arg.split_once('=')
            && SECRET_FLAGS.contains(&flag)
        {
            out.push_str(flag);
            out.push('=');
            out.push_str(REDACTED);
            continue;
        }
        out.push_str(&redact(arg));
    }
    out
}

/// Hides secrets in any text: bootstrap tokens (`abcdef.<redacted>`: the
/// id part is public), certificate keys (64 hex digits, but not the
/// `sha256:` CA hash, which is public), kubeconfig credentials
/// (`client-key-data:`, `client-certificate-data:`, `token:`, `password:`
/// values) and PEM private-key blocks.
pub fn redact(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut in_private_key = false;
    for line in text.split('\n') {
        if line.contains("-----BEGIN") && line.contains("PRIVATE KEY-----") {
            in_private_key = !line.contains("-----END");
            out.push(REDACTED.to_owned());
            continue;
        }
        if in_private_key {
            if line.contains("-----END") {
                in_private_key = false;
            }
            continue;
        }
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let trimmed_key = trimmed.trim_start_matches("- ");
        if let Some((key, _)) = trimmed_key.split_once(':')
            && matches!(
                key.trim(),
                "client-key-data" | "client-certificate-data" | "token" | "password"
            )
        {
            let prefix = &trimmed[..trimmed.len() - trimmed_key.len()];
            out.push(format!("{indent}{prefix}{}: {REDACTED}", key.trim()));
            continue;
        }
        out.push(redact_words(line));
    }
    out.join("\n")
}

/// Token- and key-shaped words of one line.
fn redact_words(line: &str) -> String {
    let bytes = line.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'.';
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < bytes.len() {
        if !is_word(bytes[i]) {
            // Safe: non-word bytes include every UTF-8 lead/continuation
            // byte, pushed back one char at a time below.
            let ch = line[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        let start = i;
        while i < bytes.len() && is_word(bytes[i]) {
            i += 1;
        }
        let word = &line[start..i];
        let after_sha = line[..start].ends_with("sha256:");
        out.push_str(&redact_word(word, after_sha));
    }
    out
}

fn redact_word(word: &str, after_sha256: bool) -> String {
    // A sentence may end right after a secret: "key <64 hex>."
    let core = word.trim_end_matches('.');
    let tail = &word[core.len()..];
    if is_token(core) {
        return format!("{}.{REDACTED}{tail}", &core[..6]);
    }
    if is_hex64(core) && !after_sha256 {
        return format!("{REDACTED}{tail}");
    }
    word.to_owned()
}

/// `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn is_token(s: &str) -> bool {
    let ok =
        |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    match s.split_once('.') {
        Some((id, secret)) => ok(id, 6) && ok(secret, 16),
        None => false,
    }
}

/// 64 hex digits.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `sha256:<64 hex>`.
pub fn is_ca_hash(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(is_hex64)
}

/// One `kubeadm join` command line from a tool's output.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinCommand {
    pub endpoint: String,
    pub token: String,
    pub ca_cert_hash: String,
    pub control_plane: bool,
    pub certificate_key: Option<String>,
}

impl fmt::Debug for JoinCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinCommand")
            .field("endpoint", &self.endpoint)
            .field("token", &redact(&self.token))
            .field("ca_cert_hash", &self.ca_cert_hash)
            .field("control_plane", &self.control_plane)
            .field(
                "certificate_key",
                &self.certificate_key.as_ref().map(|_| REDACTED),
            )
            .finish()
    }
}

/// Every `kubeadm join ...` command in `text`, with backslash continuation
/// lines joined (as `kubeadm init` prints them).
pub fn parse_join_commands(text: &str) -> Vec<JoinCommand> {
    // Logical lines: a trailing backslash continues on the next line.
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim_end();
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        logical.push(current);
    }
    let mut commands = Vec::new();
    for line in logical {
        let Some(pos) = line.find("kubeadm join ") else {
            continue;
        };
        let words: Vec<&str> = line[pos + "kubeadm join ".len()..].split_whitespace().collect();
        let mut cmd = JoinCommand {
            endpoint: String::new(),
            token: String::new(),
            ca_cert_hash: String::new(),
            control_plane: false,
            certificate_key: None,
        };
        let mut i = 0;
        while i < words.len() {
            let w = words[i];
            let (flag, inline) = match w.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v)),
                _ => (w, None),
            };
            let mut value = || {
                inline.map(str::to_owned).or_else(|| {
                    i += 1;
                    words.get(i).map(|s| s.to_string())
                })
            };
            match flag {
                "--token" | "--discovery-token" => cmd.token = value().unwrap_or_default(),
                "--discovery-token-ca-cert-hash" => {
                    let v = value().unwrap_or_default();
                    if cmd.ca_cert_hash.is_empty() {
                        cmd.ca_cert_hash = v;
                    }
                }
                "--certificate-key" => cmd.certificate_key = value(),
                "--control-plane" => cmd.control_plane = true,
                f if f.starts_with('-') => {}
                endpoint if cmd.endpoint.is_empty() => cmd.endpoint = endpoint.to_owned(),
                _ => {}
            }
            i += 1;
        }
        if !cmd.endpoint.is_empty() {
            commands.push(cmd);
        }
    }
    commands
}

fn check_join_fields(cmd: &JoinCommand) -> Result<(), String> {
    if crate::config::check_host_port(&cmd.endpoint).is_err() {
        return Err(format!("join endpoint {:?} is not host:port", cmd.endpoint));
    }
    if !is_token(&cmd.token) {
        return Err(format!(
            "join token {:?} is not a bootstrap token",
            redact(&cmd.token)
        ));
    }
    if !is_ca_hash(&cmd.ca_cert_hash) {
        return Err(format!(
            "CA cert hash {:?} is not sha256:<64 hex>",
            cmd.ca_cert_hash
        ));
    }
    Ok(())
}

/// What `kubeadm init --upload-certs` printed.
#[derive(Clone, PartialEq, Eq)]
pub struct InitSecrets {
    pub endpoint: String,
    pub token: String,
    pub ca_cert_hash: String,
    pub certificate_key: Option<String>,
}

impl fmt::Debug for InitSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitSecrets")
            .field("endpoint", &self.endpoint)
            .field("ca_cert_hash", &self.ca_cert_hash)
            .finish_non_exhaustive()
    }
}

/// Join command, token, CA cert hash and certificate key from `kubeadm
/// init` output. The error text is safe to show.
pub fn parse_init_output(text: &str) -> Result<InitSecrets, String> {
    let commands = parse_join_commands(text);
    let Some(first) = commands.iter().find(|c| !c.control_plane).or(commands.first()) else {
        return Err("no `kubeadm join` command line in the kubeadm init output".to_owned());
    };
    if first.token == "<value withheld>" || text.contains("<value withheld>") {
        return Err("kubeadm withheld the token or certificate key (--skip-token-print)".to_owned());
    }
    check_join_fields(first)?;
    if commands.iter().any(|c| {
        c.token != first.token || c.ca_cert_hash != first.ca_cert_hash || c.endpoint != first.endpoint
    }) {
        return Err("the join commands in the kubeadm init output disagree".to_owned());
    }
    let certificate_key = commands
        .iter()
        .find_map(|c| c.certificate_key.clone())
        .or_else(|| parse_upload_certs(text));
    if let Some(k) = &certificate_key
        && !is_hex64(k)
    {
        return Err("the certificate key is not 64 hex digits".to_owned());
    }
    Ok(InitSecrets {
        endpoint: first.endpoint.clone(),
        token: first.token.clone(),
        ca_cert_hash: first.ca_cert_hash.clone(),
        certificate_key,
    })
}

/// The key after `[upload-certs] Using certificate key:` (same or next line).
pub fn parse_upload_certs(text: &str) -> Option<String> {
    const MARK: &str = "[upload-certs] Using certificate key:";
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(pos) = line.find(MARK) {
            let rest = line[pos + MARK.len()..].trim();
            let key = if rest.is_empty() {
                lines.by_ref().map(str::trim).find(|l| !l.is_empty())?
            } else {
                rest
            };
            return is_hex64(key).then(|| key.to_owned());
        }
    }
    None
}

/// The `server:` of a kubeconfig as host:port.
pub fn kubeconfig_server(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix("server:")?;
        let value = value.trim().trim_matches('"').trim_matches('\'');
        let value = value
            .strip_prefix("https://")
            .or_else(|| value.strip_prefix("http://"))
            .unwrap_or(value);
        Some(value.trim_end_matches('/').to_owned())
    })
}

/// host:port equality, ignoring case and a default `:443`-less form.
fn same_endpoint(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// `etcdctl member list -w simple`: `(hex id, name)` per member.
pub fn parse_member_list(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(',').map(str::trim);
            let id = fields.next()?;
            let _status = fields.next()?;
            let name = fields.next()?;
            (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| (id.to_owned(), name.to_owned()))
        })
        .collect()
}

fn check_endpoint(field: &str, endpoint: &str) -> Result<(), KubeError> {
    if endpoint.starts_with('-') {
        return Err(KubeError::Refused(format!(
            "{field}: {endpoint:?} starts with '-' (accepted host:port)"
        )));
    }
    crate::config::check_host_port(endpoint).map_err(|problem| {
        KubeError::Refused(format!("{field}: {endpoint:?} {problem} (accepted host:port)"))
    })
}

/// A DNS-1123 subdomain (what kubeadm accepts as a node name).
fn check_node_name(name: &str) -> Result<(), KubeError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(KubeError::Refused(format!(
            "node name {name:?} is invalid (accepted a lower-case DNS-1123 subdomain)"
        )))
    }
}

fn check_cidr(field: &str, cidr: &str) -> Result<(), KubeError> {
    let ok = !cidr.is_empty()
        && !cidr.starts_with('-')
        && cidr.split(',').all(|c| match c.split_once('/') {
            Some((ip, bits)) => {
                ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 128)
            }
            None => false,
        });
    if ok {
        Ok(())
    } else {
        Err(KubeError::Refused(format!(
            "{field}: {cidr:?} is invalid (accepted a CIDR such as \"10.244.0.0/16\")"
        )))
    }
}

fn check_version(version: &str) -> Result<(), KubeError> {
    let v = version.strip_prefix('v').unwrap_or(version);
    let ok = v.split('.').count() == 3
        && v.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(KubeError::Refused(format!(
            "kubernetes_version: {version:?} is invalid (accepted \"vX.Y.Z\")"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "9vr73a.a8uxyaju799qwdjv";
    const HASH: &str = "sha256:7c2e69131a36ae2a042a339b33381c6d0d43887e2de83720eff5359e26aec866";
    const KEY: &str = "f8902e114ef118304e561c3ecd4d0b543adc226b7a07f675f56564185ffe0c07";

    /// The tail of `kubeadm init --upload-certs` output as shown in the
    /// kubeadm HA documentation (one line per join command).
    const DOCS_INIT: &str = "...
[upload-certs] Storing the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace
[upload-certs] Using certificate key:
f8902e114ef118304e561c3ecd4d0b543adc226b7a07f675f56564185ffe0c07
[mark-control-plane] Marking the node cp-1 as control-plane
[bootstrap-token] Using token: 9vr73a.a8uxyaju799qwdjv

Your Kubernetes control-plane has initialized successfully!

You can now join any number of the control-plane node running the following command on each as root:

  kubeadm join 192.168.0.200:6443 --token 9vr73a.a8uxyaju799qwdjv --discovery-token-ca-cert-hash sha256:7c2e69131a36ae2a042a339b33381c6d0d43887e2de83720eff5359e26aec866 --control-plane --certificate-key f8902e114ef118304e561c3ecd4d0b543adc226b7a07f675f56564185ffe0c07

Please note that the certificate-key gives access to cluster sensitive data, keep it secret!
As a safeguard, uploaded-certs will be deleted in two hours; If necessary, you can use kubeadm init phase upload-certs to reload certs afterward.

Then you can join any number of worker nodes by running the following on each as root:

  kubeadm join 192.168.0.200:6443 --token 9vr73a.a8uxyaju799qwdjv --discovery-token-ca-cert-hash sha256:7c2e69131a36ae2a042a339b33381c6d0d43887e2de83720eff5359e26aec866
";

    /// The v1.32 format (kubeadm and kubesim): backslash continuations,
    /// tab indents, a trailing space on the last line.
    const V132_INIT: &str =
        "[upload-certs] Storing the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace
[upload-certs] Using certificate key:
f8902e114ef118304e561c3ecd4d0b543adc226b7a07f675f56564185ffe0c07
[bootstrap-token] Using token: 9vr73a.a8uxyaju799qwdjv

Your Kubernetes control-plane has initialized successfully!

You can now join any number of control-plane nodes running the following command on each as root:

  kubeadm join cp.example:6443 --token 9vr73a.a8uxyaju799qwdjv \\
\t--discovery-token-ca-cert-hash sha256:7c2e69131a36ae2a042a339b33381c6d0d43887e2de83720eff5359e26aec866 \\
\t--control-plane --certificate-key f8902e114ef118304e561c3ecd4d0b543adc226b7a07f675f56564185ffe0c07

Please note that the certificate-key gives access to cluster sensitive data, keep it secret!

Then you can join any number of worker nodes by running the following on each as root:

kubeadm join cp.example:6443 --token 9vr73a.a8uxyaju799qwdjv \\
\t--discovery-token-ca-cert-hash sha256:7c2e69131a36ae2a042a339b33381c6d0d43887e2de83720eff5359e26aec866 
";

    #[test]
    fn init_output_from_the_docs_gives_endpoint_token_hash_and_key() {
        let s = parse_init_output(DOCS_INIT).unwrap();
        assert_eq!(s.endpoint, "192.168.0.200:6443");
        assert_eq!(s.token, TOKEN);
        assert_eq!(s.ca_cert_hash, HASH);
        assert_eq!(s.certificate_key.as_deref(), Some(KEY));
    }

    #[test]
    fn init_output_with_continuation_lines_parses_the_same() {
        let s = parse_init_output(V132_INIT).unwrap();
        assert_eq!(s.endpoint, "cp.example:6443");
        assert_eq!((s.token.as_str(), s.ca_cert_hash.as_str()), (TOKEN, HASH));
        assert_eq!(s.certificate_key.as_deref(), Some(KEY));
        let cmds = parse_join_commands(V132_INIT);
        assert_eq!(cmds.len(), 2);
        assert!(cmds[0].control_plane && !cmds[1].control_plane);
        assert_eq!(cmds[1].certificate_key, None);
    }

    #[test]
    fn init_without_upload_certs_has_no_certificate_key() {
        let text = "kubeadm join 10.0.0.1:6443 --token 9vr73a.a8uxyaju799qwdjv \\\n\t--discovery-token-ca-cert-hash sha256:7c2e69131a36ae2a042a339b33381c6d0d43887e2de83720eff5359e26aec866 \n";
        let s = parse_init_output(text).unwrap();
        assert_eq!(s.certificate_key, None);
        assert_eq!(s.endpoint, "10.0.0.1:6443");
    }

    #[test]
    fn withheld_or_missing_secrets_are_errors_without_secrets() {
        let withheld = V132_INIT.replace(TOKEN, "<value withheld>");
        assert!(parse_init_output(&withheld).unwrap_err().contains("withheld"));
        let err = parse_init_output("[init] Using Kubernetes version: v1.32.0\n").unwrap_err();
        assert!(err.contains("no `kubeadm join`"), "{err}");
        let bad = DOCS_INIT.replace("sha256:7c2e", "sha256:zz2e");
        let err = parse_init_output(&bad).unwrap_err();
        assert!(err.contains("CA cert hash"), "{err}");
        let bad = DOCS_INIT.replace("a8uxyaju799qwdjv", "a8uxyaju799qwdj");
        let err = parse_init_output(&bad).unwrap_err();
        assert!(err.contains("not a bootstrap token"), "{err}");
    }

    #[test]
    fn token_create_print_join_command_parses() {
        // `kubeadm token create --print-join-command`: one line, trailing space.
        let text = format!(
            "kubeadm join 192.168.0.200:6443 --token {TOKEN} --discovery-token-ca-cert-hash {HASH} \n"
        );
        let cmds = parse_join_commands(&text);
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0].endpoint, "192.168.0.200:6443");
        assert_eq!(cmds[0].token, TOKEN);
        assert_eq!(cmds[0].ca_cert_hash, HASH);
        check_join_fields(&cmds[0]).unwrap();
        // The --flag=value form too.
        let text =
            format!("kubeadm join [fd00::1]:6443 --token={TOKEN} --discovery-token-ca-cert-hash={HASH}");
        let cmds = parse_join_commands(&text);
        assert_eq!(cmds[0].endpoint, "[fd00::1]:6443");
        assert_eq!(cmds[0].token, TOKEN);
    }

    #[test]
    fn upload_certs_key_is_read_from_the_next_line() {
        let text = format!(
            "[upload-certs] Storing the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace\n[upload-certs] Using certificate key:\n{KEY}\n"
        );
        assert_eq!(parse_upload_certs(&text).as_deref(), Some(KEY));
        assert_eq!(
            parse_upload_certs("[upload-certs] Skipping phase. Please see --upload-certs\n"),
            None
        );
        assert_eq!(
            parse_upload_certs("[upload-certs] Using certificate key:\nnot-a-key\n"),
            None
        );
    }

    #[test]
    fn kubeconfig_server_is_host_and_port() {
        let text = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: QUJD\n    server: https://cp.example:6443\n  name: kubernetes\n";
        assert_eq!(kubeconfig_server(text).as_deref(), Some("cp.example:6443"));
        assert_eq!(kubeconfig_server("kind: Config\n"), None);
    }

    #[test]
    fn member_list_simple_output_parses() {
        let text = "8e9e05c52164694d, started, cp-1, https://10.0.0.1:2380, https://10.0.0.1:2379, false\n\
                    91bc3c398fb3c146, started, cp-2, https://10.0.0.2:2380, https://10.0.0.2:2379, false\n";
        assert_eq!(
            parse_member_list(text),
            vec![
                ("8e9e05c52164694d".to_owned(), "cp-1".to_owned()),
                ("91bc3c398fb3c146".to_owned(), "cp-2".to_owned())
            ]
        );
    }

    #[test]
    fn redaction_hides_tokens_keys_and_kubeconfig_credentials_but_not_the_ca_hash() {
        let r = redact(DOCS_INIT);
        assert!(!r.contains("a8uxyaju799qwdjv"), "{r}");
        assert!(!r.contains(KEY), "{r}");
        assert!(r.contains("9vr73a.<redacted>"), "token id kept: {r}");
        assert!(r.contains(HASH), "the CA hash is public: {r}");

        let kubeconfig = "users:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n    token: abc\n";
        let r = redact(kubeconfig);
        for secret in ["Q0VSVA==", "S0VZ", "abc"] {
            assert!(!r.contains(secret), "{r}");
        }
        assert!(r.contains("    client-key-data: <redacted>"), "{r}");

        let pem = "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEsecret\n-----END RSA PRIVATE KEY-----\nb";
        assert_eq!(redact(pem), "a\n<redacted>\nb");

        // Inside quotes and at the end of sentences.
        let r = redact(&format!("bootstrap token \"{TOKEN}\" expired. key {KEY}."));
        assert!(!r.contains("a8uxyaju799qwdjv") && !r.contains(KEY), "{r}");
        // Non-ASCII text survives.
        assert_eq!(redact("héllo wörld"), "héllo wörld");
    }

    #[test]
    fn command_lines_hide_secret_flag_values() {
        let args = strings(&[
            "join",
            "cp:6443",
            "--token",
            TOKEN,
            "--discovery-token-ca-cert-hash",
            HASH,
            "--control-plane",
            "--certificate-key",
            KEY,
        ]);
        let line = display_command(Path::new("/usr/bin/kubeadm"), &args);
        assert_eq!(
            line,
            format!(
                "/usr/bin/kubeadm join cp:6443 --token <redacted> --discovery-token-ca-cert-hash {HASH} --control-plane --certificate-key <redacted>"
            )
        );
        let line = display_command(Path::new("kubeadm"), &strings(&["--token=notatoken"]));
        assert_eq!(line, "kubeadm --token=<redacted>");
    }

    #[test]
    fn debug_output_of_secrets_is_redacted() {
        let info = JoinInfo {
            endpoint: "cp:6443".into(),
            token: TOKEN.into(),
            ca_cert_hash: HASH.into(),
            certificate_key: Some(KEY.into()),
            token_expires_unix_ms: 1,
            certificate_key_expires_unix_ms: 2,
        };
        let text = format!("{info:?}");
        assert!(
            !text.contains("a8uxyaju799qwdjv") && !text.contains(KEY),
            "{text}"
        );
        let text = format!("{:?}", parse_join_commands(DOCS_INIT));
        assert!(
            !text.contains("a8uxyaju799qwdjv") && !text.contains(KEY),
            "{text}"
        );
    }

    #[test]
    fn join_secrets_go_to_the_config_file_never_to_argv() {
        let info = JoinInfo {
            endpoint: "cp.example:6443".into(),
            token: TOKEN.into(),
            ca_cert_hash: HASH.into(),
            certificate_key: Some(KEY.into()),
            token_expires_unix_ms: 1,
            certificate_key_expires_unix_ms: 2,
        };
        let path = Path::new("/var/lib/rpool/agent/tmp/kubeadm/join-1-0.json");
        for key in [None, Some(KEY)] {
            let (args, config) = join_command(&info, "web-1", key, path);
            assert_eq!(
                args,
                [
                    "join",
                    "--config",
                    "/var/lib/rpool/agent/tmp/kubeadm/join-1-0.json"
                ]
            );
            let argv = args.join(" ");
            for secret in [TOKEN, "a8uxyaju799qwdjv", KEY] {
                assert!(!argv.contains(secret), "{argv}");
            }
            let v: serde_json::Value = serde_json::from_str(&config).unwrap();
            assert_eq!(v["apiVersion"], "kubeadm.k8s.io/v1beta4");
            assert_eq!(v["kind"], "JoinConfiguration");
            let bt = &v["discovery"]["bootstrapToken"];
            assert_eq!(bt["apiServerEndpoint"], "cp.example:6443");
            assert_eq!(bt["token"], TOKEN);
            assert_eq!(bt["caCertHashes"], serde_json::json!([HASH]));
            assert_eq!(v["nodeRegistration"]["name"], "web-1");
            match key {
                // A worker join has no controlPlane section (its presence
                // makes kubeadm join as a control plane).
                None => assert!(v.get("controlPlane").is_none(), "{config}"),
                Some(k) => assert_eq!(v["controlPlane"]["certificateKey"], k),
            }
        }
    }

    #[test]
    fn requests_with_flag_like_or_invalid_values_are_refused() {
        assert!(check_node_name("--all").is_err());
        assert!(check_node_name("Node1").is_err());
        check_node_name("web-1.rack-a").unwrap();
        assert!(check_cidr("c", "--x").is_err());
        check_cidr("c", "10.244.0.0/16,fd00::/48").unwrap();
        assert!(check_version("latest").is_err());
        check_version("v1.32.0").unwrap();
        assert!(check_endpoint("e", "-x:1").is_err());
        check_endpoint("e", "cp.example:6443").unwrap();
    }

    #[test]
    fn node_paths_map_under_the_kubesim_root_only_when_set() {
        let config = KubeConfig::default();
        let d = Driver::new(&config, PathBuf::from("/tmp/x")).with_env("KUBESIM_NODE_ROOT", "/sim/h1");
        assert_eq!(
            d.host_path(Path::new("/etc/kubernetes/admin.conf")),
            PathBuf::from("/sim/h1/etc/kubernetes/admin.conf")
        );
        assert_eq!(
            d.host_path(Path::new("/etc/cni/net.d")),
            PathBuf::from("/sim/h1/etc/cni/net.d")
        );
        assert_eq!(
            d.host_path(Path::new("/etc/passwd")),
            PathBuf::from("/etc/passwd")
        );
    }

    #[tokio::test]
    async fn the_join_config_is_removed_after_a_timeout_or_a_cancelled_call() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        let script = dir.path().join("kubeadm");
        // Records "ARGS MODE CONTENT-HAS-TOKEN" of the config, then hangs.
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$* $(stat -c %a \"$3\") $(grep -c {TOKEN} \"$3\")\" >> {}\nsleep 30\n",
                seen.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = KubeConfig {
            kubeadm_path: script.clone(),
            ..KubeConfig::default()
        };
        let info = JoinInfo {
            endpoint: "cp.example:6443".into(),
            token: TOKEN.into(),
            ca_cert_hash: HASH.into(),
            certificate_key: Some(KEY.into()),
            token_expires_unix_ms: 1,
            certificate_key_expires_unix_ms: 2,
        };
        let staged = dir.path().join("tmp").join("kubeadm");
        // A file left by a crashed agent (another pid) is swept.
        std::fs::create_dir_all(&staged).unwrap();
        std::fs::write(staged.join("join-1-deadbeef.json"), "{}").unwrap();
        let d = Driver::new(&config, dir.path().join("tmp")).with_timeout(Duration::from_millis(500));
        let err = d.join(&info, "web-1", true).await.unwrap_err();
        assert!(matches!(err, KubeError::Timeout { .. }), "{err}");
        assert!(!err.to_string().contains(KEY), "{err}");
        assert_eq!(std::fs::read_dir(&staged).unwrap().count(), 0);
        assert_eq!(
            std::fs::metadata(&staged).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // The caller gives up first (task deadline): the future is dropped.
        let d = d.with_timeout(Duration::from_secs(60));
        let cancelled = tokio::time::timeout(Duration::from_millis(500), d.join(&info, "web-1", false)).await;
        assert!(cancelled.is_err());
        assert_eq!(std::fs::read_dir(&staged).unwrap().count(), 0);
        let seen = std::fs::read_to_string(&seen).unwrap();
        let lines: Vec<&str> = seen.lines().collect();
        assert_eq!(lines.len(), 2, "{seen}");
        for line in lines {
            let words: Vec<&str> = line.split(' ').collect();
            assert_eq!(words[..2], ["join", "--config"], "{line}");
            assert!(words[2].starts_with(&staged.display().to_string()), "{line}");
            assert_eq!(words[3..], ["600", "1"], "{line}");
        }
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed_and_failures_carry_the_redacted_tail() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("kubeadm");
        std::fs::write(
            &script,
            format!("#!/bin/sh\nif [ \"$1\" = sleep ]; then sleep 30; fi\necho \"token {TOKEN} bad\" >&2\nexit 3\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = KubeConfig {
            kubeadm_path: script.clone(),
            ..KubeConfig::default()
        };
        let d = Driver::new(&config, dir.path().join("tmp")).with_timeout(Duration::from_millis(300));
        let started = Instant::now();
        let err = d.kubeadm(&strings(&["sleep"])).await.unwrap_err();
        assert!(matches!(err, KubeError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = d.kubeadm(&strings(&["x", "--token", TOKEN])).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("exit code 3"), "{text}");
        assert!(!text.contains("a8uxyaju799qwdjv"), "{text}");
        assert!(text.contains("--token <redacted>"), "{text}");
    }
}
