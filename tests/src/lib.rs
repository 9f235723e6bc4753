//! Test harness: starts the real rpool binaries on loopback and talks to them
//! the way an admin and an agent would.
//!
//! - [`binaries`] builds `rpool-controller`, `rpool-agent` and `rpoolctl`
//!   once per test process (a no-op when they are current) and returns their
//!   directory, so `cargo nextest run` alone always tests fresh binaries.
//! - [`Controller`] and [`Agent`] are child processes with their own config
//!   files and state directories under a per-test temporary directory; they
//!   are killed when dropped, so a failing test leaks no process.
//! - [`ctl`] runs `rpoolctl` with an isolated `HOME`.
//! - [`eventually`] polls a condition with a bound instead of sleeping.
//! - Mutual TLS everywhere: one CA per test process ([`test_ca`]; nextest
//!   runs each test in its own process, so one per test), a certificate per
//!   controller (SANs 127.0.0.1 and localhost), an admin certificate for
//!   [`admin_client`] and [`ctl`]; agents enroll themselves with a bootstrap
//!   token and the CA pin, for a host id written into their state dir
//!   before they start ([`issue_agent_tls`]).
//! - [`linearizable`] checks client histories (the Docker fault suite).

pub mod linearizable;

use std::fmt::Debug;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rpool_proto::pki::{Ca, Identity};
use rpool_proto::tls::{TlsFiles, TlsMaterial};
use rpool_proto::v1::admin_service_client::AdminServiceClient;
use rpool_proto::v1::{Host, ListHostsRequest, StatusRequest, StatusResponse};
use tonic::transport::Channel;

/// Directory holding the freshly built binaries (`target/<profile>`).
pub fn binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // The test executable lives in target/<profile>/deps/.
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary is under target/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(other) => other.to_string(),
            None => "dev".to_string(),
        };
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let status = Command::new(env!("CARGO"))
            .current_dir(workspace)
            // The same units `cargo nextest run --workspace` builds (the
            // whole workspace, tests included, so dependencies' features
            // unify the same way): a no-op after it, where a narrower
            // `-p ... --bins` would rebuild the binaries with other
            // features and make the next nextest build rebuild them back.
            .args([
                "build",
                "--quiet",
                "--workspace",
                "--bins",
                "--tests",
                "--profile",
                &profile,
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .status()
            .expect("running cargo build for the rpool binaries");
        assert!(status.success(), "cargo build of the rpool binaries failed");
        profile_dir
    })
}

/// Path of one built binary.
pub fn bin(name: &str) -> PathBuf {
    binaries().join(name)
}

/// A loopback port that was free a moment ago, chosen at random below the
/// kernel's ephemeral range so that no outgoing connection takes it before
/// the child binds it (see [`free_port_range`]).
pub fn free_port() -> u16 {
    free_port_range(1)
}

/// `n` consecutive loopback ports that were free a moment ago, below the
/// kernel's ephemeral range (32768 and up), so outgoing connections of
/// other tests do not take them in between. Tries random bases, bounded.
pub fn free_port_range(n: u16) -> u16 {
    let mut seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    for _ in 0..200 {
        // xorshift: no dependency, different bases per process and attempt.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let base = 20_000 + (seed % 12_000) as u16;
        let all_free = (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {n} consecutive free loopback ports found in 20000..32000");
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `limit`
/// with the last observation, so a timeout says what was seen.
pub async fn eventually<T, O, F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (Option<T>, O)>,
    O: Debug,
{
    let start = Instant::now();
    loop {
        let (found, observed) = check().await;
        if let Some(value) = found {
            return Ok(value);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}; last seen: {observed:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `[kube] vip_range` of every test controller (TEST-NET-2, RFC 5737:
/// no real host has these addresses; kubesim answers there).
pub const TEST_VIP_RANGE: &str = "198.51.100.0/28";

/// Liveness settings written into controller.toml.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub heartbeat_interval_ms: u32,
    pub suspect_after_ms: u32,
    pub down_after_ms: u32,
}

impl Liveness {
    /// Short intervals so failure tests finish quickly.
    pub const FAST: Liveness = Liveness {
        heartbeat_interval_ms: 200,
        suspect_after_ms: 1_000,
        down_after_ms: 2_000,
    };
}

fn spawn_logged(mut command: Command, log: &Path) -> Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env(
            "RPOOL_LOG",
            "info,rpool_controller=debug,rpool_agent=debug,raft=debug",
        )
        .spawn()
        .with_context(|| format!("spawning {:?}", command.get_program()))
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: plain kill(2) on a pid we own.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

/// Sends SIGTERM and waits (bounded) for the exit status.
fn terminate(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus> {
    signal(child, libc::SIGTERM);
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let status = child.wait()?;
            bail!(
                "process {} ignored SIGTERM for {limit:?} (killed: {status})",
                child.id()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Validity of every certificate the harness issues.
pub const TEST_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The CA of this test process.
pub fn test_ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        rpool_proto::tls::install_crypto_provider();
        Ca::generate("rpool test CA").expect("generating the test CA")
    })
}

/// A certificate and key for `identity` from [`test_ca`], in memory.
pub fn tls_material(identity: &Identity) -> TlsMaterial {
    material_from(test_ca(), identity)
}

/// A certificate for `identity` from `ca` (another CA, for tests that
/// present a foreign certificate).
pub fn material_from(ca: &Ca, identity: &Identity) -> TlsMaterial {
    let issued = ca
        .issue(identity, &["127.0.0.1".into(), "localhost".into()], TEST_CERT_TTL)
        .expect("issuing a test certificate");
    TlsMaterial::from_pem(ca.cert_pem(), &issued.cert_pem, &issued.key_pem).expect("test certificate parses")
}

/// The admin identity the harness (and [`ctl`]) uses.
pub fn admin_tls() -> &'static TlsMaterial {
    static ADMIN: OnceLock<TlsMaterial> = OnceLock::new();
    ADMIN.get_or_init(|| tls_material(&Identity::Admin("test-admin".into())))
}

/// Writes `{dir}/ca.crt`, `{dir}/{name}.crt`, `{dir}/{name}.key` for
/// `identity` (extra SANs `sans`) and returns their paths.
pub fn write_tls(dir: &Path, name: &str, identity: &Identity, sans: &[String]) -> Result<TlsFiles> {
    let ca = test_ca();
    let issued = ca.issue(identity, sans, TEST_CERT_TTL)?;
    let files = TlsFiles::in_dir(dir, name);
    rpool_proto::pki::write_public(&files.ca, ca.cert_pem().as_bytes())?;
    rpool_proto::pki::write_public(&files.cert, issued.cert_pem.as_bytes())?;
    rpool_proto::pki::write_private(&files.key, issued.key_pem.as_bytes())?;
    Ok(files)
}

/// A controller's `[tls]` section, writing its files (and the CA key, for
/// enrollment) under `dir/pki`.
pub fn controller_tls(dir: &Path, id: u64) -> Result<String> {
    let pki = dir.join("pki");
    let sans = ["127.0.0.1".to_string(), "localhost".to_string()];
    let files = write_tls(&pki, "controller", &Identity::Controller(id), &sans)?;
    let ca_key = pki.join("ca.key");
    rpool_proto::pki::write_private(&ca_key, test_ca().key_pem().as_bytes())?;
    Ok(format!(
        "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nca_key = \"{}\"\n",
        files.ca.display(),
        files.cert.display(),
        files.key.display(),
        ca_key.display()
    ))
}

/// Makes an agent's identity before it starts, the way a real agent gets
/// it: writes a fresh host id into `{state_dir}/host_id` (the agent's own
/// file format: one lowercase UUID) unless one is there, creates a
/// bootstrap token through the admin API of `controllers` and returns the
/// host id and an `[enroll]` section (the token and the test CA's pin) for
/// agent.toml: the agent enrolls itself and writes
/// `{state_dir}/tls/{ca.crt,agent.crt,agent.key}`.
///
/// When no controller creates a token within [`ENROLL_TOKEN_WAIT`] (a test
/// that starts agents before their controllers), the certificate files are
/// issued directly from the CA instead and the section is empty.
pub fn issue_agent_tls(
    state_dir: &Path,
    host_id: Option<&str>,
    controllers: &[String],
) -> Result<(String, String)> {
    std::fs::create_dir_all(state_dir)?;
    let id_file = state_dir.join("host_id");
    let host_id = match (host_id, std::fs::read_to_string(&id_file)) {
        (Some(id), _) => {
            std::fs::write(&id_file, format!("{id}\n"))?;
            id.to_string()
        }
        (None, Ok(existing)) => existing.trim().to_string(),
        (None, Err(_)) => {
            let id = uuid::Uuid::new_v4().hyphenated().to_string();
            std::fs::write(&id_file, format!("{id}\n"))?;
            id
        }
    };
    if let Some(token) = enroll_token(controllers) {
        let section = format!(
            "\n[enroll]\ntoken = \"{token}\"\nca_pin = \"{pin}\"\n",
            pin = test_ca().pin()
        );
        return Ok((host_id, section));
    }
    write_tls(
        &state_dir.join("tls"),
        "agent",
        &Identity::Agent(host_id.clone()),
        &[],
    )?;
    Ok((host_id, String::new()))
}

/// How long [`issue_agent_tls`] tries to get a bootstrap token.
pub const ENROLL_TOKEN_WAIT: Duration = Duration::from_secs(5);

/// A bootstrap token (unlimited uses, one hour) from the first of
/// `controllers` that creates one within [`ENROLL_TOKEN_WAIT`]. Runs on its
/// own thread and runtime: callers are synchronous.
fn enroll_token(controllers: &[String]) -> Option<String> {
    let controllers = controllers.to_vec();
    let ask = move || -> Option<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let deadline = Instant::now() + ENROLL_TOKEN_WAIT;
            while Instant::now() < deadline {
                for addr in &controllers {
                    let Ok(mut admin) = admin_client(addr).await else {
                        continue;
                    };
                    let request = rpool_proto::v1::CreateTokenRequest {
                        ttl_seconds: 3_600,
                        uses: 0,
                        description: "rpool-tests agent".to_string(),
                        token: String::new(),
                    };
                    if let Ok(created) = admin.create_token(request).await {
                        return Some(created.into_inner().token);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        })
    };
    std::thread::spawn(ask).join().ok().flatten()
}

/// Writes the admin certificate where `rpoolctl` looks by default when
/// `HOME` is `home`: `~/.config/rpool/pki/{ca.crt,admin.crt,admin.key}`
/// (next to `ctl.toml`), unless already there.
pub fn write_ctl_tls(home: &Path) -> Result<TlsFiles> {
    let files = TlsFiles::in_dir(&home.join(".config/rpool/pki"), "admin");
    if !files.key.exists() {
        let admin = admin_tls();
        rpool_proto::pki::write_public(&files.ca, admin.ca_pem.as_bytes())?;
        let issued = test_ca().issue(&admin.identity, &[], TEST_CERT_TTL)?;
        rpool_proto::pki::write_public(&files.cert, issued.cert_pem.as_bytes())?;
        rpool_proto::pki::write_private(&files.key, issued.key_pem.as_bytes())?;
    }
    Ok(files)
}

/// One `rpool-controller` process with its own data directory.
pub struct Controller {
    pub dir: PathBuf,
    pub id: u64,
    pub port: u16,
    pub config: PathBuf,
    child: Option<Child>,
}

impl Controller {
    /// Writes `dir/controller.toml` and starts the controller; returns once
    /// it answers `Status`.
    /// Writes `dir/controller.toml` for a group of one and starts the
    /// controller; returns once it answers `Status`.
    pub async fn start(dir: &Path, liveness: Liveness) -> Result<Controller> {
        let mut controller = Controller::configure(dir, 1, free_port(), &[], liveness, "")?;
        controller.restart().await?;
        Ok(controller)
    }

    /// Writes `dir/controller.toml` for controller `id` listening on
    /// `port`, member of the initial group `peers` (id, port) — empty for a
    /// group of one — with `extra` TOML appended (e.g. a `[raft]` table).
    /// Does not start it.
    pub fn configure(
        dir: &Path,
        id: u64,
        port: u16,
        peers: &[(u64, u16)],
        liveness: Liveness,
        extra: &str,
    ) -> Result<Controller> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("controller.toml");
        let mut text = format!(
            "id = {id}\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{data}\"\n",
            data = dir.join("data").display(),
        );
        let tls = controller_tls(dir, id)?;
        for (peer, peer_port) in peers {
            text.push_str(&format!(
                "\n[[peers]]\nid = {peer}\naddress = \"127.0.0.1:{peer_port}\"\n"
            ));
        }
        text.push_str(&format!("\n{tls}"));
        if !extra.contains("[kube]") {
            // Pools of 3 or 5 control planes get their VIP from here.
            text.push_str(&format!("\n[kube]\nvip_range = \"{TEST_VIP_RANGE}\"\n"));
        }
        text.push_str(&format!(
            "\n[liveness]\nheartbeat_interval_ms = {hb}\nsuspect_after_ms = {sa}\ndown_after_ms = {da}\n{extra}\n",
            hb = liveness.heartbeat_interval_ms,
            sa = liveness.suspect_after_ms,
            da = liveness.down_after_ms,
        ));
        std::fs::write(&config, text)?;
        Ok(Controller {
            dir: dir.to_path_buf(),
            id,
            port,
            config,
            child: None,
        })
    }

    /// Starts the process without waiting for it to answer.
    pub fn spawn(&mut self) -> Result<()> {
        assert!(self.child.is_none(), "controller already running");
        let mut command = Command::new(bin("rpool-controller"));
        command.arg("--config").arg(&self.config);
        self.child = Some(spawn_logged(command, &self.dir.join("log"))?);
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Waits (bounded by `limit`) for the process to exit by itself;
    /// `None` if it still runs. An exited process is forgotten, so
    /// [`Controller::restart`] can start it again.
    pub async fn exited_within(&mut self, limit: Duration) -> Result<Option<std::process::ExitStatus>> {
        let started = Instant::now();
        loop {
            let Some(child) = self.child.as_mut() else {
                return Ok(None);
            };
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(Some(status));
            }
            if started.elapsed() >= limit {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGSTOP: the process keeps its sockets but does nothing (a hung or
    /// partitioned controller); [`Controller::resume`] undoes it.
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            signal(child, libc::SIGSTOP);
        }
    }

    pub fn resume(&self) {
        if let Some(child) = &self.child {
            signal(child, libc::SIGCONT);
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// (Re)starts the process on the same port and data dir and waits
    /// (bounded) until it answers `Status`.
    pub async fn restart(&mut self) -> Result<()> {
        self.spawn()?;
        self.wait_answering().await
    }

    /// Waits (bounded) until the running process answers `Status`.
    pub async fn wait_answering(&mut self) -> Result<()> {
        let addr = self.addr();
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("controller exited early with {status}; log:\n{}", self.log());
            }
            if let Ok(mut client) = admin_client(&addr).await
                && client.status(StatusRequest {}).await.is_ok()
            {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!(
                    "controller on {addr} not answering after 20s; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and the exit status.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("controller not running")?;
        terminate(&mut child, Duration::from_secs(10))
    }

    pub async fn admin(&self) -> Result<AdminServiceClient<Channel>> {
        admin_client(&self.addr()).await
    }

    pub async fn status(&self) -> Result<StatusResponse> {
        Ok(self.admin().await?.status(StatusRequest {}).await?.into_inner())
    }

    /// `Status` once this controller knows a leader and has applied at
    /// least the entry a new leader commits first (bounded): what a test
    /// compares later states against, free of start-up writes.
    pub async fn settled_status(&self) -> Result<StatusResponse> {
        eventually(
            Duration::from_secs(20),
            "a leader and its first entry applied",
            || async {
                let status = self.status().await.ok();
                let settled = status
                    .as_ref()
                    .filter(|s| !s.leader_id.is_empty() && s.leader_id != "0" && s.applied_index > 0)
                    .cloned();
                (settled, status)
            },
        )
        .await
    }

    pub async fn hosts(&self) -> Result<Vec<Host>> {
        let request = ListHostsRequest {
            state: String::new(),
            zone: String::new(),
        };
        Ok(self.admin().await?.list_hosts(request).await?.into_inner().hosts)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// Raft timing written into every controller.toml of a [`Cluster`].
pub const TEST_RAFT: &str = "[raft]\ntick_ms = 50\nheartbeat_ticks = 2\nelection_ticks = 8\n";

/// A group of controller processes on loopback.
pub struct Cluster {
    pub controllers: Vec<Controller>,
}

impl Cluster {
    /// Starts `n` controllers (ids 1..=n) under `root/controller-ID`, each
    /// with `extra` TOML appended to its config, and waits (bounded) until
    /// one leads and every one answers.
    pub async fn start(root: &Path, n: u64, liveness: Liveness, extra: &str) -> Result<Cluster> {
        let peers: Vec<(u64, u16)> = (1..=n).map(|id| (id, free_port())).collect();
        let mut controllers = Vec::new();
        for &(id, port) in &peers {
            let dir = root.join(format!("controller-{id}"));
            controllers.push(Controller::configure(&dir, id, port, &peers, liveness, extra)?);
        }
        for controller in &mut controllers {
            controller.spawn()?;
        }
        for controller in &mut controllers {
            controller.wait_answering().await?;
        }
        let cluster = Cluster { controllers };
        cluster.leader().await?;
        Ok(cluster)
    }

    /// Every controller's address, in id order.
    pub fn addrs(&self) -> Vec<String> {
        self.controllers.iter().map(Controller::addr).collect()
    }

    /// `--controller` value naming every controller.
    pub fn addr_list(&self) -> String {
        self.addrs().join(",")
    }

    pub fn get(&mut self, id: u64) -> &mut Controller {
        self.controllers
            .iter_mut()
            .find(|c| c.id == id)
            .expect("no such controller")
    }

    /// Id of the controller that leads, as a running controller that
    /// considers itself leader reports; waits (bounded: 10 s) for one.
    pub async fn leader(&self) -> Result<u64> {
        eventually(Duration::from_secs(10), "a leader", || async {
            let mut seen = Vec::new();
            for c in self.controllers.iter().filter(|c| c.is_running()) {
                let status = tokio::time::timeout(Duration::from_secs(1), c.status()).await;
                match status {
                    Ok(Ok(s)) => {
                        if s.role == "leader" {
                            return (Some(c.id), seen);
                        }
                        seen.push(format!("{}: {} term {}", c.id, s.role, s.term));
                    }
                    _ => seen.push(format!("{}: no answer", c.id)),
                }
            }
            (None, seen)
        })
        .await
    }

    /// Hosts as the group reports them (any controller; followers forward).
    pub async fn hosts(&self) -> Result<Vec<Host>> {
        for c in self.controllers.iter().filter(|c| c.is_running()) {
            if let Ok(Ok(hosts)) = tokio::time::timeout(Duration::from_secs(2), c.hosts()).await {
                return Ok(hosts);
            }
        }
        bail!("no controller answered ListHosts")
    }
}

/// An admin client (mutual TLS with the harness' admin certificate).
pub async fn admin_client(addr: &str) -> Result<AdminServiceClient<Channel>> {
    let channel = admin_tls()
        .endpoint(addr)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(AdminServiceClient::new(channel))
}

/// A simulated machine: what the agent's hardware file says.
#[derive(Debug, Clone)]
pub struct Profile {
    pub hostname: String,
    pub zone: String,
    pub logical_cores: u32,
    pub physical_cores: u32,
    pub memory: String,
    pub cpu_percent: f64,
    pub memory_used: String,
}

impl Profile {
    pub fn new(hostname: &str, zone: &str, logical_cores: u32, memory: &str) -> Profile {
        Profile {
            hostname: hostname.to_string(),
            zone: zone.to_string(),
            logical_cores,
            physical_cores: logical_cores.div_ceil(2),
            memory: memory.to_string(),
            cpu_percent: 10.0,
            memory_used: "1GiB".to_string(),
        }
    }

    fn to_toml(&self) -> String {
        format!(
            "hostname = \"{}\"\nzone = \"{}\"\nlogical_cores = {}\nphysical_cores = {}\n\
             memory = \"{}\"\ncpu_percent = {:.1}\nmemory_used = \"{}\"\nload_average = 0.5\n",
            self.hostname,
            self.zone,
            self.logical_cores,
            self.physical_cores,
            self.memory,
            self.cpu_percent,
            self.memory_used
        )
    }
}

/// A kubesim "data centre": the shared cluster state and a directory with
/// `kubeadm` and `kubectl` symlinks to the kubesim binary.
pub struct Kubesim {
    pub state_dir: PathBuf,
    pub bin_dir: PathBuf,
}

impl Kubesim {
    /// Creates `root/kubesim/{state,bin}` (idempotent).
    pub fn new(root: &Path) -> Result<Kubesim> {
        let state_dir = root.join("kubesim").join("state");
        let bin_dir = root.join("kubesim").join("bin");
        std::fs::create_dir_all(&state_dir)?;
        std::fs::create_dir_all(&bin_dir)?;
        for tool in ["kubeadm", "kubectl", "systemctl"] {
            let link = bin_dir.join(tool);
            if !link.exists() {
                std::os::unix::fs::symlink(bin("kubesim"), &link)?;
            }
        }
        Ok(Kubesim { state_dir, bin_dir })
    }

    /// Runs `kubectl ARGS` as seen from the host whose node root is
    /// `node_root` (its admin.conf, if it is a control plane).
    pub fn kubectl(&self, node_root: &Path, args: &[&str]) -> Output {
        Command::new(self.bin_dir.join("kubectl"))
            .arg("--kubeconfig")
            .arg("/etc/kubernetes/admin.conf")
            .args(args)
            .env("KUBESIM_STATE_DIR", &self.state_dir)
            .env("KUBESIM_NODE_ROOT", node_root)
            .output()
            .expect("running kubesim kubectl")
    }

    /// `kubectl apply` of `yaml` through the control plane with `node_root`
    /// (tests place workloads this way).
    pub fn apply(&self, node_root: &Path, yaml: &str) -> Result<()> {
        let file = node_root.join("kubesim-test-apply.yaml");
        std::fs::write(&file, yaml)?;
        let out = self.kubectl(node_root, &["apply", "-f", &file.display().to_string()]);
        std::fs::remove_file(&file)?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// A pod on node `node` in namespace `default`: bare, or owned by
    /// ReplicaSet `replica_set`, labelled `app=<app>`.
    pub fn pod_yaml(name: &str, node: &str, replica_set: Option<&str>, app: &str) -> String {
        let owner = replica_set.map_or(String::new(), |rs| {
            format!(
                "  ownerReferences:\n  - apiVersion: apps/v1\n    kind: ReplicaSet\n    name: {rs}\n    uid: 0b5e8a3c-1f2d-4c6b-9a7e-3d2c1b0a9f8e\n    controller: true\n"
            )
        });
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n    app: {app}\n{owner}spec:\n  nodeName: {node}\n  containers:\n  - name: main\n    image: registry.k8s.io/pause:3.10\n"
        )
    }

    /// A PodDisruptionBudget keeping at least `min_available` pods with
    /// `app=<app>` in namespace `default`.
    pub fn pdb_yaml(name: &str, app: &str, min_available: u32) -> String {
        format!(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  minAvailable: {min_available}\n  selector:\n    matchLabels:\n      app: {app}\n"
        )
    }

    /// Node names and their roles ("control-plane" or "worker") in the
    /// cluster a control plane with `node_root` belongs to.
    pub fn nodes(&self, node_root: &Path) -> Result<Vec<(String, String)>> {
        let out = self.kubectl(node_root, &["get", "nodes", "-o", "json"]);
        let list = json_of(&out)?;
        let mut nodes: Vec<(String, String)> = list["items"]
            .as_array()
            .context("items")?
            .iter()
            .map(|n| {
                let name = n["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let labels = &n["metadata"]["labels"];
                let role = if labels.get("node-role.kubernetes.io/control-plane").is_some() {
                    "control-plane"
                } else {
                    "worker"
                };
                (name, role.to_string())
            })
            .collect();
        nodes.sort();
        Ok(nodes)
    }
}

/// One `rpool-agent` process in simulated-hardware mode.
pub struct Agent {
    pub dir: PathBuf,
    pub profile: Profile,
    /// Environment given to the process (kubesim's).
    env: Vec<(String, PathBuf)>,
    child: Option<Child>,
}

impl Agent {
    /// Writes `dir/agent.toml` and `dir/hardware.toml` and starts the agent
    /// against `controllers`. Does not wait for registration.
    pub fn start(dir: &Path, controllers: &[String], profile: Profile) -> Result<Agent> {
        Agent::start_with(dir, controllers, profile, None)
    }

    /// Like [`Agent::start`], with `kubeadm`/`kubectl` from `kubesim` and a
    /// node root of its own (`dir/node`), so pool tasks run against it.
    pub fn start_with(
        dir: &Path,
        controllers: &[String],
        profile: Profile,
        kubesim: Option<&Kubesim>,
    ) -> Result<Agent> {
        std::fs::create_dir_all(dir)?;
        let (_, enroll) = issue_agent_tls(&dir.join("state"), None, controllers)?;
        let mut env = Vec::new();
        let mut kube = String::new();
        if let Some(sim) = kubesim {
            let node_root = dir.join("node");
            std::fs::create_dir_all(&node_root)?;
            rpool_proto::sim::create_socket_file(&node_root.join(rpool_proto::sim::CONTAINERD_SOCKET))?;
            // kubesim (the agent's children) takes the node root from its
            // environment; the agent's driver from `[kube] host_root`.
            kube = format!(
                "\n[kube]\nkubeadm_path = \"{}\"\nkubectl_path = \"{}\"\nsystemctl_path = \"{}\"\ncommand_timeout_s = 60\nhost_root = \"{}\"\n",
                sim.bin_dir.join("kubeadm").display(),
                sim.bin_dir.join("kubectl").display(),
                sim.bin_dir.join("systemctl").display(),
                node_root.display()
            );
            env = vec![
                ("KUBESIM_STATE_DIR".to_string(), sim.state_dir.clone()),
                ("KUBESIM_NODE_ROOT".to_string(), node_root),
                ("KUBESIM_HOSTNAME".to_string(), PathBuf::from(&profile.hostname)),
            ];
        }
        let list = controllers
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            dir.join("agent.toml"),
            format!(
                "controllers = [{list}]\nstate_dir = \"{state}\"\n\n[labels]\nrack = \"r1\"\n\n\
                 [reconnect]\ninitial_backoff_ms = 50\nmax_backoff_ms = 500\n\n\
                 [simulate]\nfile = \"{hw}\"\n",
                state = dir.join("state").display(),
                hw = dir.join("hardware.toml").display(),
            ) + &kube
                + &enroll,
        )?;
        let mut agent = Agent {
            dir: dir.to_path_buf(),
            profile,
            env,
            child: None,
        };
        agent.write_hardware()?;
        agent.restart()?;
        Ok(agent)
    }

    pub fn write_hardware(&self) -> Result<()> {
        // Write then rename, so the agent never reads a half-written file.
        let tmp = self.dir.join("hardware.toml.tmp");
        std::fs::write(&tmp, self.profile.to_toml())?;
        std::fs::rename(&tmp, self.dir.join("hardware.toml"))?;
        Ok(())
    }

    pub fn restart(&mut self) -> Result<()> {
        assert!(self.child.is_none(), "agent already running");
        let mut command = Command::new(bin("rpool-agent"));
        command.arg("--config").arg(self.dir.join("agent.toml"));
        for (key, value) in &self.env {
            command.env(key, value);
        }
        self.child = Some(spawn_logged(command, &self.dir.join("log"))?);
        Ok(())
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("agent not running")?;
        terminate(&mut child, Duration::from_secs(10))
    }

    /// Stops the process without ending it (SIGSTOP): its TCP connection
    /// stays open but it sends nothing, like a hung host.
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            signal(child, libc::SIGSTOP);
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The host id the agent persisted in its state dir.
    pub fn host_id(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("state").join("host_id"))
            .ok()
            .map(|s| s.trim().to_string())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            signal(child, libc::SIGCONT);
        }
        self.kill();
    }
}

/// Runs `rpoolctl ARGS` with `HOME` (and so `~/.config/rpool/ctl.toml`)
/// under `home`.
pub fn ctl(home: &Path, args: &[&str]) -> Output {
    ctl_env(home, args, &[])
}

pub fn ctl_env(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    write_ctl_tls(home).expect("writing rpoolctl's admin certificate");
    let mut command = Command::new(bin("rpoolctl"));
    command
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("RPOOL_CONTROLLER")
        .env_remove("RPOOL_CTL_CONFIG")
        .env_remove("RPOOL_SANDBOX_DIR")
        .env_remove("RPOOL_TLS_CA")
        .env_remove("RPOOL_TLS_CERT")
        .env_remove("RPOOL_TLS_KEY")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("running rpoolctl")
}

/// Parses stdout of a successful command as JSON, or fails with its output.
pub fn json_of(output: &Output) -> Result<serde_json::Value> {
    if !output.status.success() {
        bail!(
            "command failed with {}:\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("stdout is not JSON: {}", String::from_utf8_lossy(&output.stdout)))
}

/// The host whose hostname is `hostname`, if listed.
pub fn by_hostname<'a>(hosts: &'a [Host], hostname: &str) -> Option<&'a Host> {
    hosts
        .iter()
        .find(|h| h.facts.as_ref().is_some_and(|f| f.hostname == hostname))
}

/// Starts `profiles.len()` agents under `root/agents/` against `controller`
/// and waits (bounded) until all are ready.
pub async fn start_agents(
    root: &Path,
    controller: &Controller,
    profiles: Vec<Profile>,
) -> Result<Vec<Agent>> {
    let mut agents = Vec::new();
    for profile in profiles {
        let dir = root.join("agents").join(&profile.hostname);
        agents.push(Agent::start(&dir, &[controller.addr()], profile)?);
    }
    wait_ready(&agents, || controller.hosts()).await?;
    Ok(agents)
}

impl Cluster {
    /// Starts agents pointed at every controller, running pool tasks against
    /// kubesim under `root/kubesim`, and waits (bounded) until all are ready.
    pub async fn start_agents(&self, root: &Path, profiles: Vec<Profile>) -> Result<Vec<Agent>> {
        let kubesim = Kubesim::new(root)?;
        let mut agents = Vec::new();
        for profile in profiles {
            let dir = root.join("agents").join(&profile.hostname);
            agents.push(Agent::start_with(&dir, &self.addrs(), profile, Some(&kubesim))?);
        }
        wait_ready(&agents, || self.hosts()).await?;
        Ok(agents)
    }
}

async fn wait_ready<F, Fut>(agents: &[Agent], hosts: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Vec<Host>>>,
{
    let want: Vec<String> = agents.iter().map(|a| a.profile.hostname.clone()).collect();
    eventually(Duration::from_secs(20), "all agents ready", || async {
        let hosts = hosts().await.unwrap_or_default();
        let ready = want.iter().all(|name| {
            by_hostname(&hosts, name).is_some_and(|h| h.state == rpool_proto::v1::HostState::Ready as i32)
        });
        let seen: Vec<(String, i32)> = hosts
            .iter()
            .map(|h| {
                (
                    h.facts.as_ref().map(|f| f.hostname.clone()).unwrap_or_default(),
                    h.state,
                )
            })
            .collect();
        (ready.then_some(()), seen)
    })
    .await
}
