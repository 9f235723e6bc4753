//! The task executor: runs the `Task`s the leader sends on the session, one
//! at a time, and keeps their results.
//!
//! - [`Executor::submit`] takes a task from the session without blocking.
//!   A task whose `(task_id, attempt)` already finished is answered from its
//!   stored result without running again; one already queued or running is
//!   ignored (its result comes when it ends); otherwise it is queued
//!   ([`QUEUE`] deep; a full queue answers with a failure, which the
//!   controller retries).
//! - The worker runs each task (through [`kube_runner`] in the agent: the
//!   [`crate::kube`] driver), bounded by the task's `deadline_unix_ms` (a
//!   task past its deadline is not started; one that reaches it is stopped
//!   and its command killed), then **persists** the result in
//!   `{state_dir}/tasks/{task_id}.{attempt}.json` (mode 0600, written to a
//!   temp file, fsynced and renamed) and only then reports it.
//! - Results go out through [`Executor::next_result`] (the session forwards
//!   them while a stream is live). After every Welcome the session also
//!   re-sends [`Executor::recent_results`]: the last [`RESEND_MAX`] results
//!   finished within [`RESEND_WINDOW`]; the controller ignores duplicates.
//! - Result files beyond the newest [`KEEP_RESULTS`] are pruned.
//!
//! Stored results hold secrets (join secrets, kubeconfigs) like the host's
//! own `/etc/kubernetes`; they are never logged.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpool_proto::clock::unix_ms_now;
use rpool_proto::v1::task::Kind;
use rpool_proto::v1::{EtcdSnapshotResult, ImagesResult, JoinSecrets, PullImages, Task, TaskResult};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::kube::{self, Driver, InitRequest, JoinInfo};

/// Tasks waiting to run.
pub const QUEUE: usize = 64;
/// Most results re-sent after a Welcome.
pub const RESEND_MAX: usize = 200;
/// Only results finished this recently are re-sent after a Welcome.
pub const RESEND_WINDOW: Duration = Duration::from_secs(3600);
/// Result files kept in `{state_dir}/tasks`.
pub const KEEP_RESULTS: usize = 1000;
/// Longest task id accepted (the proto's limit).
pub const MAX_TASK_ID_CHARS: usize = 64;

/// What running one task produced.
#[derive(Default, Clone)]
pub struct Outcome {
    pub ok: bool,
    /// Failure text, already redacted; "" on success.
    pub error: String,
    pub join: Option<JoinSecrets>,
    pub kubeconfig: String,
    pub already_done: bool,
    /// How the images step ended, when it ran.
    pub images: Option<ImagesResult>,
    /// etcd_snapshot: the file written.
    pub etcd_snapshot: Option<EtcdSnapshotResult>,
}

impl Outcome {
    pub fn done(already_done: bool) -> Outcome {
        Outcome {
            ok: true,
            already_done,
            ..Outcome::default()
        }
    }

    pub fn failed(error: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            error: kube::redact(&error.into()),
            ..Outcome::default()
        }
    }
}

/// Runs one task to its outcome.
pub type Runner = Arc<dyn Fn(Task) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// The agent's runner: every task kind through the Kubernetes driver.
pub fn kube_runner(driver: Arc<Driver>) -> Runner {
    Arc::new(move |task| {
        let driver = driver.clone();
        Box::pin(async move { execute(&driver, task).await })
    })
}

fn join_to_proto(j: JoinInfo) -> JoinSecrets {
    JoinSecrets {
        control_plane_endpoint: j.endpoint,
        token: j.token,
        ca_cert_hash: j.ca_cert_hash,
        certificate_key: j.certificate_key.unwrap_or_default(),
        token_expires_unix_ms: j.token_expires_unix_ms,
        certificate_key_expires_unix_ms: j.certificate_key_expires_unix_ms,
    }
}

fn join_from_proto(j: &JoinSecrets) -> JoinInfo {
    JoinInfo {
        endpoint: j.control_plane_endpoint.clone(),
        token: j.token.clone(),
        ca_cert_hash: j.ca_cert_hash.clone(),
        certificate_key: (!j.certificate_key.is_empty()).then(|| j.certificate_key.clone()),
        token_expires_unix_ms: j.token_expires_unix_ms,
        certificate_key_expires_unix_ms: j.certificate_key_expires_unix_ms,
    }
}

fn kind_name(kind: &Option<Kind>) -> &'static str {
    match kind {
        None => "unknown",
        Some(Kind::InitControlPlane(_)) => "init_control_plane",
        Some(Kind::JoinControlPlane(_)) => "join_control_plane",
        Some(Kind::JoinWorker(_)) => "join_worker",
        Some(Kind::DrainNode(_)) => "drain_node",
        Some(Kind::DeleteNode(_)) => "delete_node",
        Some(Kind::RemoveEtcdMember(_)) => "remove_etcd_member",
        Some(Kind::Reset(_)) => "reset",
        Some(Kind::InstallAddons(_)) => "install_addons",
        Some(Kind::RefreshJoinToken(_)) => "refresh_join_token",
        Some(Kind::FetchKubeconfig(_)) => "fetch_kubeconfig",
        Some(Kind::UpgradeNode(_)) => "upgrade_node",
        Some(Kind::UncordonNode(_)) => "uncordon_node",
        Some(Kind::EtcdSnapshot(_)) => "etcd_snapshot",
        Some(Kind::DeleteEtcdSnapshot(_)) => "delete_etcd_snapshot",
        Some(Kind::RenewCerts(_)) => "renew_certs",
    }
}

/// Most image names reported back (the proto's limit).
const MAX_IMAGES: usize = 64;

/// The images step before init or a control-plane join: `None` when the
/// task carries none (an older controller) or the host already holds the
/// cluster (`skip`: init/join then only confirm it). A failure ends the
/// task: the outcome names the image.
async fn images_step(
    driver: &Driver,
    pull: Option<PullImages>,
    skip: bool,
) -> Result<Option<ImagesResult>, Outcome> {
    let Some(p) = pull.filter(|_| !skip) else {
        return Ok(None);
    };
    let req = kube::ImagePull {
        kubernetes_version: p.kubernetes_version,
        image_repository: p.image_repository,
        cri_socket: p.cri_socket,
    };
    match driver.pull_images(&req).await {
        Ok(pulled) => Ok(Some(ImagesResult {
            ok: true,
            pulled: pulled
                .into_iter()
                .filter(|i| i.len() <= 255)
                .take(MAX_IMAGES)
                .collect(),
            failed_image: String::new(),
        })),
        Err(f) => {
            let mut outcome = Outcome::failed(match &f.image {
                Some(image) => format!("images step: image {image} could not be pulled: {}", f.error),
                None => format!("images step: {}", f.error),
            });
            outcome.images = Some(ImagesResult {
                ok: false,
                pulled: Vec::new(),
                failed_image: f.image.unwrap_or_default(),
            });
            Err(outcome)
        }
    }
}

/// One task through the driver.
pub async fn execute(driver: &Driver, task: Task) -> Outcome {
    let done = |r: Result<bool, kube::KubeError>| match r {
        Ok(already) => Outcome::done(already),
        Err(e) => Outcome::failed(e.to_string()),
    };
    match task.kind {
        None => Outcome::failed("task kind unknown to this agent (a newer controller?); upgrade the agent"),
        Some(Kind::InitControlPlane(i)) => {
            let images = match images_step(driver, i.pull_images, driver.is_control_plane()).await {
                Ok(images) => images,
                Err(outcome) => return outcome,
            };
            let req = InitRequest {
                control_plane_endpoint: i.control_plane_endpoint,
                pod_network_cidr: i.pod_network_cidr,
                service_cidr: i.service_cidr,
                kubernetes_version: i.kubernetes_version,
                node_name: task.node_name,
                kubeadm_config: i.kubeadm_config,
                kube_vip_manifest: i.kube_vip_manifest,
                kube_vip_manifest_after_init: i.kube_vip_manifest_after_init,
            };
            let outcome = match driver.init(&req).await {
                Ok(init) => match pool_kubeconfig(&init.kubeconfig, &task.pool) {
                    Ok(kubeconfig) => Outcome {
                        ok: true,
                        join: Some(join_to_proto(init.join)),
                        kubeconfig,
                        already_done: init.already_done,
                        ..Outcome::default()
                    },
                    Err(e) => Outcome::failed(e),
                },
                Err(e) => Outcome::failed(e.to_string()),
            };
            Outcome { images, ..outcome }
        }
        Some(Kind::JoinControlPlane(j)) => match j.join {
            Some(s) => {
                let images = match images_step(driver, j.pull_images, driver.has_joined()).await {
                    Ok(images) => images,
                    Err(outcome) => return outcome,
                };
                let outcome = done(
                    driver
                        .join(
                            &join_from_proto(&s),
                            &task.node_name,
                            true,
                            Some(&j.kubeadm_config),
                            Some(&j.kube_vip_manifest),
                        )
                        .await,
                );
                Outcome { images, ..outcome }
            }
            None => Outcome::failed("join_control_plane.join: missing"),
        },
        Some(Kind::JoinWorker(j)) => match j.join {
            Some(s) => {
                let mut info = join_from_proto(&s);
                info.certificate_key = None;
                done(
                    driver
                        .join(&info, &task.node_name, false, Some(&j.kubeadm_config), None)
                        .await,
                )
            }
            None => Outcome::failed("join_worker.join: missing"),
        },
        Some(Kind::DrainNode(d)) => done(driver.drain(&d.target_node, d.timeout_s).await),
        Some(Kind::DeleteNode(d)) => done(driver.delete_node(&d.target_node).await),
        Some(Kind::RemoveEtcdMember(r)) => {
            done(driver.remove_etcd_member(&task.node_name, &r.target_node).await)
        }
        Some(Kind::Reset(_)) => done(driver.reset().await),
        Some(Kind::UpgradeNode(u)) => done(
            driver
                .upgrade_node(&task.node_name, &u.version, u.apply)
                .await
                .map(|()| false),
        ),
        Some(Kind::UncordonNode(u)) => done(driver.uncordon(&u.target_node).await),
        Some(Kind::EtcdSnapshot(_)) => {
            match driver
                .etcd_snapshot(&task.node_name, &task.pool, unix_ms_now())
                .await
            {
                Ok(file) => Outcome {
                    ok: true,
                    etcd_snapshot: Some(EtcdSnapshotResult {
                        path: file.path.display().to_string(),
                        size_bytes: file.size_bytes,
                        sha256: file.sha256,
                        revision: file.revision,
                        total_keys: file.total_keys,
                        taken_at_unix_ms: file.taken_at_unix_ms,
                    }),
                    ..Outcome::default()
                },
                Err(e) => Outcome::failed(e.to_string()),
            }
        }
        Some(Kind::DeleteEtcdSnapshot(d)) => done(driver.delete_etcd_snapshot(&d.path)),
        Some(Kind::RenewCerts(_)) => done(
            driver
                .renew_certs(&task.node_name, driver.static_pod_restart_wait())
                .await
                .map(|()| false),
        ),
        Some(Kind::InstallAddons(a)) => {
            for m in &a.manifests {
                if let Err(e) = driver.apply(&m.name, &m.content).await {
                    return Outcome::failed(format!("manifest {:?}: {e}", m.name));
                }
            }
            Outcome::done(false)
        }
        Some(Kind::RefreshJoinToken(r)) => match driver.refresh_join(r.certificate_key).await {
            Ok(join) => Outcome {
                ok: true,
                join: Some(join_to_proto(join)),
                ..Outcome::default()
            },
            Err(e) => Outcome::failed(e.to_string()),
        },
        Some(Kind::FetchKubeconfig(_)) => {
            match driver
                .admin_kubeconfig()
                .map_err(|e| e.to_string())
                .and_then(|k| pool_kubeconfig(&k, &task.pool))
            {
                Ok(kubeconfig) => Outcome {
                    ok: true,
                    kubeconfig,
                    ..Outcome::default()
                },
                Err(e) => Outcome::failed(e),
            }
        }
    }
}

/// The admin kubeconfig handed to the controller, its cluster, user and
/// context named `rpool-<pool>` so several pools' files merge cleanly.
fn pool_kubeconfig(admin: &str, pool: &str) -> Result<String, String> {
    rpool_proto::kube::kubeconfig::rename_kubeconfig(admin, &format!("rpool-{pool}"))
        .map_err(|e| format!("admin kubeconfig: {e}"))
}

/// `[A-Za-z0-9._-]{1,64}`, not starting with '.'.
pub fn check_task_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_TASK_ID_CHARS
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "task_id {:?} is invalid (accepted 1..={MAX_TASK_ID_CHARS} characters [A-Za-z0-9._-], not starting with '.')",
            id.chars().take(80).collect::<String>()
        ))
    }
}

/// The on-disk form of a finished task's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    task_id: String,
    attempt: u32,
    kind: String,
    ok: bool,
    error: String,
    duration_ms: u64,
    finished_unix_ms: u64,
    already_done: bool,
    join: Option<StoredJoin>,
    kubeconfig: String,
    /// The images step (absent in results stored by older agents).
    #[serde(default)]
    images: Option<StoredImages>,
    /// etcd_snapshot's file (absent in results stored by older agents).
    #[serde(default)]
    etcd_snapshot: Option<StoredSnapshot>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    path: String,
    size_bytes: u64,
    sha256: String,
    revision: u64,
    total_keys: u64,
    taken_at_unix_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredImages {
    ok: bool,
    pulled: Vec<String>,
    failed_image: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredJoin {
    control_plane_endpoint: String,
    token: String,
    ca_cert_hash: String,
    certificate_key: String,
    token_expires_unix_ms: u64,
    certificate_key_expires_unix_ms: u64,
}

impl Stored {
    fn to_result(&self) -> TaskResult {
        TaskResult {
            task_id: self.task_id.clone(),
            attempt: self.attempt,
            ok: self.ok,
            error: self.error.clone(),
            duration_ms: self.duration_ms,
            join: self.join.as_ref().map(|j| JoinSecrets {
                control_plane_endpoint: j.control_plane_endpoint.clone(),
                token: j.token.clone(),
                ca_cert_hash: j.ca_cert_hash.clone(),
                certificate_key: j.certificate_key.clone(),
                token_expires_unix_ms: j.token_expires_unix_ms,
                certificate_key_expires_unix_ms: j.certificate_key_expires_unix_ms,
            }),
            kubeconfig: self.kubeconfig.clone(),
            already_done: self.already_done,
            images: self.images.as_ref().map(|i| ImagesResult {
                ok: i.ok,
                pulled: i.pulled.clone(),
                failed_image: i.failed_image.clone(),
            }),
            etcd_snapshot: self.etcd_snapshot.as_ref().map(|f| EtcdSnapshotResult {
                path: f.path.clone(),
                size_bytes: f.size_bytes,
                sha256: f.sha256.clone(),
                revision: f.revision,
                total_keys: f.total_keys,
                taken_at_unix_ms: f.taken_at_unix_ms,
            }),
        }
    }
}

/// `{state_dir}/tasks`: one JSON file per finished (task_id, attempt).
#[derive(Debug, Clone)]
pub struct ResultStore {
    dir: PathBuf,
}

impl ResultStore {
    /// Opens (creating with mode 0700) `{state_dir}/tasks`.
    pub fn open(state_dir: &Path) -> std::io::Result<ResultStore> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = state_dir.join("tasks");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(ResultStore { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of a result (task ids are checked before they get here).
    pub fn path(&self, task_id: &str, attempt: u32) -> PathBuf {
        self.dir.join(format!("{task_id}.{attempt}.json"))
    }

    fn load(&self, task_id: &str, attempt: u32) -> Option<Stored> {
        let path = self.path(task_id, attempt);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read a stored task result");
                return None;
            }
        };
        match serde_json::from_str::<Stored>(&text) {
            Ok(s) if s.task_id == task_id && s.attempt == attempt => Some(s),
            Ok(_) | Err(_) => {
                warn!(path = %path.display(), "ignoring a corrupt stored task result");
                None
            }
        }
    }

    /// Writes a result atomically (temp file, fsync, rename, fsync dir),
    /// then prunes old ones.
    fn save(&self, stored: &Stored) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path(&stored.task_id, stored.attempt);
        let tmp = self.dir.join(format!(
            "{}.{}.json.tmp{}",
            stored.task_id,
            stored.attempt,
            std::process::id()
        ));
        let bytes = serde_json::to_vec(stored).map_err(std::io::Error::other)?;
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.prune(KEEP_RESULTS);
        Ok(())
    }

    /// Result files, oldest first (by modification time, then name).
    fn files(&self) -> Vec<(std::time::SystemTime, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<_> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| {
                let modified = e.metadata().ok()?.modified().ok()?;
                Some((modified, e.path()))
            })
            .collect();
        files.sort();
        files
    }

    /// Deletes all but the newest `keep` result files.
    pub fn prune(&self, keep: usize) {
        let files = self.files();
        let excess = files.len().saturating_sub(keep);
        for (_, path) in files.into_iter().take(excess) {
            if let Err(e) = std::fs::remove_file(&path) {
                warn!(path = %path.display(), error = %e, "cannot prune an old task result");
            }
        }
    }

    /// The newest `max` results finished at or after `since_unix_ms`,
    /// oldest first.
    pub fn recent(&self, since_unix_ms: u64, max: usize) -> Vec<TaskResult> {
        let mut stored: Vec<Stored> = self
            .files()
            .into_iter()
            .filter_map(|(_, path)| serde_json::from_slice::<Stored>(&std::fs::read(&path).ok()?).ok())
            .filter(|s| s.finished_unix_ms >= since_unix_ms)
            .collect();
        stored.sort_by_key(|s| s.finished_unix_ms);
        let skip = stored.len().saturating_sub(max);
        stored.iter().skip(skip).map(Stored::to_result).collect()
    }
}

/// Hands tasks to the worker and results back to the session. Cheap to
/// clone; the worker stops when every clone is gone.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    store: ResultStore,
    queue: mpsc::Sender<Task>,
    in_flight: Arc<Mutex<HashSet<(String, u32)>>>,
    results_tx: mpsc::UnboundedSender<TaskResult>,
    results_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<TaskResult>>,
}

impl Executor {
    /// Opens the result store in `state_dir` and starts the worker (needs
    /// a Tokio runtime).
    pub fn start(runner: Runner, state_dir: &Path) -> std::io::Result<Executor> {
        let store = ResultStore::open(state_dir)?;
        let (queue, queue_rx) = mpsc::channel(QUEUE);
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let in_flight = Arc::new(Mutex::new(HashSet::new()));
        tokio::spawn(worker(
            runner,
            store.clone(),
            queue_rx,
            in_flight.clone(),
            results_tx.clone(),
        ));
        Ok(Executor {
            inner: Arc::new(Inner {
                store,
                queue,
                in_flight,
                results_tx,
                results_rx: tokio::sync::Mutex::new(results_rx),
            }),
        })
    }

    pub fn store(&self) -> &ResultStore {
        &self.inner.store
    }

    fn reply(&self, result: TaskResult) {
        let _ = self.inner.results_tx.send(result);
    }

    /// Accepts a task from the session (never blocks; see the module docs).
    pub fn submit(&self, task: Task) {
        let kind = kind_name(&task.kind);
        if let Err(problem) = check_task_id(&task.task_id) {
            warn!(kind, "rejecting a task: {problem}");
            self.reply(failure(&task, problem));
            return;
        }
        let key = (task.task_id.clone(), task.attempt);
        {
            let mut in_flight = self.inner.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if in_flight.contains(&key) {
                debug!(task_id = %task.task_id, attempt = task.attempt, "task already queued or running; ignoring the re-delivery");
                return;
            }
            if let Some(stored) = self.inner.store.load(&task.task_id, task.attempt) {
                info!(task_id = %task.task_id, attempt = task.attempt, kind, ok = stored.ok, "task already finished; answering with the stored result");
                drop(in_flight);
                self.reply(stored.to_result());
                return;
            }
            in_flight.insert(key.clone());
        }
        let (task_id, attempt) = (task.task_id.clone(), task.attempt);
        match self.inner.queue.try_send(task) {
            Ok(()) => debug!(task_id = %task_id, attempt, kind, "task queued"),
            Err(e) => {
                self.inner
                    .in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                let task = e.into_inner();
                warn!(task_id = %task_id, attempt, kind, "task queue full ({QUEUE}); task refused");
                self.reply(failure(
                    &task,
                    format!("the agent's task queue is full ({QUEUE} tasks waiting); retry later"),
                ));
            }
        }
    }

    /// The next result to report (finished, answered from the store, or
    /// refused). Only one caller receives at a time.
    pub async fn next_result(&self) -> Option<TaskResult> {
        self.inner.results_rx.lock().await.recv().await
    }

    /// Results to re-send after a Welcome (see the module docs).
    pub fn recent_results(&self) -> Vec<TaskResult> {
        let since = unix_ms_now().saturating_sub(RESEND_WINDOW.as_millis() as u64);
        self.inner.store.recent(since, RESEND_MAX)
    }
}

fn failure(task: &Task, error: impl Into<String>) -> TaskResult {
    TaskResult {
        task_id: task.task_id.clone(),
        attempt: task.attempt,
        ok: false,
        error: kube::redact(&error.into()),
        ..TaskResult::default()
    }
}

async fn worker(
    runner: Runner,
    store: ResultStore,
    mut queue: mpsc::Receiver<Task>,
    in_flight: Arc<Mutex<HashSet<(String, u32)>>>,
    results: mpsc::UnboundedSender<TaskResult>,
) {
    while let Some(task) = queue.recv().await {
        let key = (task.task_id.clone(), task.attempt);
        let stored = run_one(&runner, task).await;
        let store2 = store.clone();
        let to_save = stored.clone();
        let saved = tokio::task::spawn_blocking(move || store2.save(&to_save))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = saved {
            error!(task_id = %stored.task_id, attempt = stored.attempt, path = %store.dir().display(), error = %e, "cannot persist the task result; reporting it anyway");
        }
        in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        let _ = results.send(stored.to_result());
    }
}

/// Runs one task within its deadline.
async fn run_one(runner: &Runner, task: Task) -> Stored {
    let kind = kind_name(&task.kind);
    let (task_id, attempt) = (task.task_id.clone(), task.attempt);
    let started = Instant::now();
    let now = unix_ms_now();
    let deadline = task.deadline_unix_ms;
    info!(task_id = %task_id, attempt, kind, pool = %task.pool, node = %task.node_name, "task started");
    let outcome = if deadline != 0 && now >= deadline {
        Outcome::failed(format!(
            "deadline passed {} ms before the task could start",
            now - deadline
        ))
    } else {
        let run = runner(task);
        if deadline == 0 {
            run.await
        } else {
            match tokio::time::timeout(Duration::from_millis(deadline - now), run).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::failed(format!(
                    "deadline reached after {} s; the running command was killed",
                    started.elapsed().as_secs()
                )),
            }
        }
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    crate::metrics::global().task_duration.observe(
        &[kind, if outcome.ok { "ok" } else { "failed" }],
        duration_ms as f64 / 1_000.0,
    );
    if outcome.ok {
        info!(task_id = %task_id, attempt, kind, duration_ms, already_done = outcome.already_done, "task done");
    } else {
        warn!(task_id = %task_id, attempt, kind, duration_ms, error = %outcome.error, "task failed");
    }
    Stored {
        task_id,
        attempt,
        kind: kind.to_owned(),
        ok: outcome.ok,
        error: outcome.error,
        duration_ms,
        finished_unix_ms: unix_ms_now(),
        already_done: outcome.already_done,
        join: outcome.join.map(|j| StoredJoin {
            control_plane_endpoint: j.control_plane_endpoint,
            token: j.token,
            ca_cert_hash: j.ca_cert_hash,
            certificate_key: j.certificate_key,
            token_expires_unix_ms: j.token_expires_unix_ms,
            certificate_key_expires_unix_ms: j.certificate_key_expires_unix_ms,
        }),
        kubeconfig: outcome.kubeconfig,
        images: outcome.images.map(|i| StoredImages {
            ok: i.ok,
            pulled: i.pulled,
            failed_image: i.failed_image,
        }),
        etcd_snapshot: outcome.etcd_snapshot.map(|f| StoredSnapshot {
            path: f.path,
            size_bytes: f.size_bytes,
            sha256: f.sha256,
            revision: f.revision,
            total_keys: f.total_keys,
            taken_at_unix_ms: f.taken_at_unix_ms,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpool_proto::v1::FetchKubeconfig;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const WAIT: Duration = Duration::from_secs(10);

    /// Counts runs; each run sleeps `delay` and returns a kubeconfig.
    fn counting(runs: Arc<AtomicUsize>, delay: Duration) -> Runner {
        Arc::new(move |task: Task| {
            let runs = runs.clone();
            Box::pin(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                Outcome {
                    ok: true,
                    kubeconfig: format!("kubeconfig for {}", task.task_id),
                    ..Outcome::default()
                }
            })
        })
    }

    fn task(id: &str, attempt: u32) -> Task {
        Task {
            task_id: id.to_owned(),
            attempt,
            deadline_unix_ms: unix_ms_now() + 60_000,
            pool: "web".into(),
            node_name: "n1".into(),
            kind: Some(Kind::FetchKubeconfig(FetchKubeconfig {})),
        }
    }

    async fn next(ex: &Executor) -> TaskResult {
        tokio::time::timeout(WAIT, ex.next_result())
            .await
            .expect("a result in time")
            .expect("executor alive")
    }

    #[tokio::test]
    async fn a_finished_task_is_persisted_and_a_redelivery_is_answered_without_running() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let ex = Executor::start(counting(runs.clone(), Duration::from_millis(50)), dir.path()).unwrap();
        ex.submit(task("t-1", 1));
        // Delivered again while running: ignored.
        ex.submit(task("t-1", 1));
        let r = next(&ex).await;
        assert!(r.ok && r.task_id == "t-1" && r.attempt == 1);
        assert_eq!(r.kubeconfig, "kubeconfig for t-1");
        let file = dir.path().join("tasks/t-1.1.json");
        assert!(file.exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );

        // Re-delivered after it finished (a leader change): the stored answer.
        ex.submit(task("t-1", 1));
        let again = next(&ex).await;
        assert_eq!(again, r);
        assert_eq!(runs.load(Ordering::SeqCst), 1, "never run twice");

        // A new executor on the same state dir (agent restart) also remembers.
        drop(ex);
        let ex = Executor::start(counting(runs.clone(), Duration::ZERO), dir.path()).unwrap();
        ex.submit(task("t-1", 1));
        assert_eq!(next(&ex).await, r);
        // A retry (next attempt) runs.
        ex.submit(task("t-1", 2));
        assert_eq!(next(&ex).await.attempt, 2);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(ex.recent_results().len(), 2);
    }

    #[tokio::test]
    async fn deadlines_stop_a_task_and_a_past_deadline_never_starts_it() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let ex = Executor::start(counting(runs.clone(), Duration::from_secs(30)), dir.path()).unwrap();
        let mut t = task("slow", 1);
        t.deadline_unix_ms = unix_ms_now() + 200;
        ex.submit(t);
        let r = next(&ex).await;
        assert!(!r.ok);
        assert!(r.error.contains("deadline reached"), "{}", r.error);

        let mut t = task("late", 1);
        t.deadline_unix_ms = unix_ms_now() - 5;
        ex.submit(t);
        let r = next(&ex).await;
        assert!(!r.ok && r.error.contains("deadline passed"), "{}", r.error);
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the late task did not start");
        // Failures are stored too: a re-delivery does not run again.
        ex.submit(task("late", 1));
        assert!(!next(&ex).await.ok);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn invalid_ids_and_unknown_kinds_fail_without_running() {
        let dir = tempfile::tempdir().unwrap();
        let driver = Arc::new(Driver::new(
            &crate::config::KubeConfig::default(),
            dir.path().join("tmp"),
        ));
        let ex = Executor::start(kube_runner(driver), dir.path()).unwrap();
        for bad in ["", "../x", ".hidden", &"a".repeat(65)] {
            ex.submit(task(bad, 1));
            let r = next(&ex).await;
            assert!(!r.ok && r.error.contains("task_id"), "{bad:?}: {}", r.error);
        }
        let mut t = task("k", 1);
        t.kind = None;
        ex.submit(t);
        let r = next(&ex).await;
        assert!(!r.ok && r.error.contains("upgrade the agent"), "{}", r.error);
        // fetch_kubeconfig on a host that is no control plane: a clear failure.
        let mut t = task("f", 1);
        t.kind = Some(Kind::FetchKubeconfig(FetchKubeconfig {}));
        ex.submit(t);
        let r = next(&ex).await;
        assert!(!r.ok && r.error.contains("not a control plane"), "{}", r.error);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_old_results_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let ex = Executor::start(counting(runs.clone(), Duration::from_millis(300)), dir.path()).unwrap();
        // One running + QUEUE waiting; the next is refused.
        for i in 0..QUEUE + 2 {
            ex.submit(task(&format!("q{i}"), 1));
        }
        let r = next(&ex).await;
        assert!(!r.ok && r.error.contains("queue is full"), "{}", r.error);

        let store = ResultStore::open(&dir.path().join("other")).unwrap();
        for i in 0..5u64 {
            let s = Stored {
                task_id: format!("p{i}"),
                attempt: 1,
                kind: "reset".into(),
                ok: true,
                error: String::new(),
                duration_ms: 1,
                finished_unix_ms: 1_000 + i,
                already_done: false,
                join: None,
                kubeconfig: String::new(),
                images: None,
                etcd_snapshot: None,
            };
            store.save(&s).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        store.prune(3);
        let left: Vec<String> = store.recent(0, 10).into_iter().map(|r| r.task_id).collect();
        assert_eq!(left, ["p2", "p3", "p4"]);
        assert_eq!(
            store.recent(1_004, 10).len(),
            1,
            "older than the window are not re-sent"
        );
        assert_eq!(store.recent(0, 2).len(), 2, "at most max");
    }
}
