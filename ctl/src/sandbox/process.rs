//! Sandbox processes: finding binaries, starting them detached (a
//! controller or an agent with its config, log and kubesim environment),
//! checking a pid is still ours, stopping with bounded waits (by pid from
//! `sandbox.json`, or the children `sandbox up` itself started), and log
//! tails. Linux only (`/proc`).

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::layout::{self, Layout};

/// Binary names.
pub const CONTROLLER_BIN: &str = "rpool-controller";
pub const AGENT_BIN: &str = "rpool-agent";
/// The kubeadm/kubectl simulator the sandbox's agents run pool tasks with.
pub const KUBESIM_BIN: &str = "kubesim";

/// How often stop/wait loops poll.
const POLL: Duration = Duration::from_millis(50);

/// Finds `name` in `bin_dir` when given (only there), else next to the running
/// rpoolctl, else on `PATH`.
pub fn find_binary(name: &str, bin_dir: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(dir) = bin_dir {
        let path = dir.join(name);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!("{name} not found in --bin-dir {}", dir.display()))
        };
    }
    let own_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    if let Some(dir) = &own_dir {
        let path = dir.join(name);
        if is_executable(&path) {
            return Ok(path);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let path = dir.join(name);
            if is_executable(&path) {
                return Ok(path);
            }
        }
    }
    Err(format!(
        "{name} not found next to rpoolctl ({}) or on PATH; build it (`cargo build -p {name}`) or pass --bin-dir",
        own_dir.map_or("?".to_string(), |d| d.display().to_string())
    ))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts `binary args...` in its own session (setsid, so a Ctrl-C in the
/// terminal does not reach it), stdin from /dev/null, stdout and stderr
/// appended to `log`, working dir `cwd`, `NO_COLOR=1`.
pub fn spawn_detached<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    binary: &Path,
    args: &[&OsStr],
    envs: &[(K, V)],
    cwd: &Path,
    log: &Path,
) -> std::io::Result<Child> {
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        // Plain log files: ask tracing-subscriber for no ANSI colours.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Starts `binary --config CONFIG` detached (see [`spawn_detached`]) in
/// `dir`, appending to `dir/log`, with `envs` added to the environment.
pub fn start<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    binary: &Path,
    config: &Path,
    dir: &Path,
    envs: &[(K, V)],
) -> anyhow::Result<Child> {
    let args: [&OsStr; 2] = [OsStr::new("--config"), config.as_os_str()];
    spawn_detached(binary, &args, envs, dir, &layout::log_file(dir))
        .map_err(|e| anyhow::anyhow!("starting {}: {e}", binary.display()))
}

/// What kubesim (the agent's `kubeadm`/`kubectl`) needs to know which
/// simulated machine it runs on: the shared state, the host's node root
/// (also the agent's `[kube] host_root`) and its hostname.
pub fn kubesim_env(layout: &Layout, agent_dir: &Path, hostname: &str) -> [(&'static str, OsString); 3] {
    [
        ("KUBESIM_STATE_DIR", layout.kubesim_state().into_os_string()),
        (
            "KUBESIM_NODE_ROOT",
            layout::agent_node_root(agent_dir).into_os_string(),
        ),
        ("KUBESIM_HOSTNAME", OsString::from(hostname)),
    ]
}

/// Starts the agent in `agent_dir` (its `agent.toml`, log and kubesim
/// environment), as `sandbox up` and `sandbox revive-host` do.
pub fn start_agent(
    agent_bin: &Path,
    layout: &Layout,
    agent_dir: &Path,
    hostname: &str,
) -> anyhow::Result<Child> {
    start(
        agent_bin,
        &layout::agent_config(agent_dir),
        agent_dir,
        &kubesim_env(layout, agent_dir, hostname),
    )
}

/// Whether a `/proc/PID/cmdline` (NUL-separated) is `binary` run with an
/// argument mentioning `needle` (e.g. its config path).
pub fn cmdline_matches(cmdline: &[u8], binary: &str, needle: &str) -> bool {
    let mut args = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty());
    let Some(argv0) = args.next() else {
        return false;
    };
    let argv0 = String::from_utf8_lossy(argv0);
    let name_ok = Path::new(argv0.as_ref()).file_name().is_some_and(|n| n == binary);
    name_ok && args.any(|a| String::from_utf8_lossy(a).contains(needle))
}

/// Whether `/proc/PID/stat` says the process is a zombie (exited, not reaped).
pub fn stat_is_zombie(stat: &str) -> bool {
    // Format: "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|s| s == "Z" || s == "X")
}

/// A process the sandbox started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// `controller`, `agent-3`.
    pub name: String,
    pub pid: u32,
    pub binary: &'static str,
    /// A string its command line must contain (its config path).
    pub needle: String,
}

impl Proc {
    /// Still running and still the process we started (not a reused pid).
    pub fn is_alive(&self) -> bool {
        if self.pid == 0 || self.pid > i32::MAX as u32 {
            return false;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", self.pid)) else {
            return false;
        };
        if !cmdline_matches(&cmdline, self.binary, &self.needle) {
            return false;
        }
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).is_ok_and(|s| !stat_is_zombie(&s))
    }

    /// This process as it runs now: the recorded pid when that is still
    /// ours, else the pid of a process running the same binary with the
    /// same config (one restarted by hand, e.g. `rpool-controller --config
    /// .../controller-2/controller.toml`), else unchanged (not running).
    pub fn resolve(&self) -> Proc {
        if self.is_alive() {
            return self.clone();
        }
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return self.clone();
        };
        let found = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .map(|pid| Proc { pid, ..self.clone() })
            .find(Proc::is_alive);
        found.unwrap_or_else(|| self.clone())
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain syscall; the pid was just checked to be ours.
        unsafe {
            libc::kill(self.pid as libc::pid_t, sig);
        }
    }
}

/// What `stop` did to each process.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StopReport {
    /// Exited after SIGTERM.
    pub stopped: Vec<Proc>,
    /// Needed SIGKILL.
    pub killed: Vec<Proc>,
    /// Already gone (or the pid now belongs to something else): left alone.
    pub not_running: Vec<Proc>,
    /// Still alive even after SIGKILL (should not happen).
    pub survivors: Vec<Proc>,
}

/// SIGTERM to each process that is still ours, wait up to `grace` (polling),
/// SIGKILL the rest, wait up to one more second.
pub fn stop(procs: &[Proc], grace: Duration) -> StopReport {
    let mut report = StopReport::default();
    let mut pending = Vec::new();
    for p in procs {
        if p.is_alive() {
            p.signal(libc::SIGTERM);
            pending.push(p.clone());
        } else {
            report.not_running.push(p.clone());
        }
    }
    let pending = wait_gone(pending, grace);
    report.stopped = procs
        .iter()
        .filter(|p| !report.not_running.contains(p) && !pending.contains(p))
        .cloned()
        .collect();
    for p in &pending {
        if p.is_alive() {
            p.signal(libc::SIGKILL);
        }
    }
    let survivors = wait_gone(pending.clone(), Duration::from_secs(1));
    report.killed = pending.into_iter().filter(|p| !survivors.contains(p)).collect();
    report.survivors = survivors;
    report
}

/// Polls until every process is gone or `limit` passes; returns the ones left.
fn wait_gone(mut procs: Vec<Proc>, limit: Duration) -> Vec<Proc> {
    let deadline = Instant::now() + limit;
    loop {
        procs.retain(Proc::is_alive);
        if procs.is_empty() || Instant::now() >= deadline {
            return procs;
        }
        std::thread::sleep(POLL);
    }
}

/// A process this rpoolctl started and has not reaped yet.
pub struct Started {
    pub proc: Proc,
    pub child: Child,
    pub log: PathBuf,
}

impl Started {
    /// `child`, started in `dir` (log `dir/log`), as the process `proc`
    /// (its pid filled in).
    pub fn new(child: Child, proc: Proc, dir: &Path) -> Started {
        Started {
            proc: Proc {
                pid: child.id(),
                ..proc
            },
            child,
            log: layout::log_file(dir),
        }
    }
}

/// Stops processes this rpoolctl started. They are our unreaped children, so
/// their pids cannot have been reused: signal them directly. SIGTERM, poll up
/// to `grace`, then SIGKILL and reap.
pub async fn stop_started(started: &mut [Started], grace: Duration) {
    for s in started.iter_mut() {
        if let Ok(None) = s.child.try_wait() {
            // SAFETY: plain syscall on our own unreaped child.
            unsafe {
                libc::kill(s.child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && started.iter_mut().any(|s| matches!(s.child.try_wait(), Ok(None))) {
        // Async sleep: lets the runtime close our gRPC connection, which a
        // gracefully stopping controller waits for.
        tokio::time::sleep(POLL).await;
    }
    for s in started.iter_mut() {
        if let Ok(None) = s.child.try_wait() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}

/// Prints the last `lines` lines of `log` to stderr between markers.
pub fn print_tail(log: &Path, lines: usize) {
    eprintln!("--- last lines of {} ---", log.display());
    eprintln!("{}", tail(log, lines));
    eprintln!("---");
}

/// The last `lines` lines of a log file (empty if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cmdline_matches_only_our_binary_with_our_config() {
        let ours = b"/w/target/debug/rpool-agent\0--config\0/sb/agents/agent-1/agent.toml\0";
        assert!(cmdline_matches(ours, AGENT_BIN, "/sb/agents/agent-1"));
        assert!(!cmdline_matches(ours, AGENT_BIN, "/sb/agents/agent-2"));
        assert!(!cmdline_matches(ours, CONTROLLER_BIN, "/sb/agents/agent-1"));
        assert!(!cmdline_matches(
            b"bash\0-c\0/sb/agents/agent-1\0",
            AGENT_BIN,
            "/sb/agents/agent-1"
        ));
        assert!(!cmdline_matches(b"", AGENT_BIN, "x"));
    }

    #[test]
    fn zombies_are_recognised_from_proc_stat() {
        assert!(stat_is_zombie("123 (rpool-agent) Z 1 123 123 0"));
        assert!(!stat_is_zombie("123 (rpool agent) S 1 123 123 0"));
        assert!(!stat_is_zombie("123 (we) ird) R 1"));
    }

    #[test]
    fn a_process_restarted_by_hand_is_found_by_its_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let needle = dir.path().join("controller.toml");
        // `sh` stands in for the binary: its argv names the config. It waits
        // in the `read` builtin (no child process that could match too).
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("read line")
            .arg("sh")
            .arg(&needle)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let recorded = Proc {
            name: "controller-2".into(),
            pid: 0,
            binary: "sh",
            needle: needle.to_string_lossy().into_owned(),
        };
        // Until the child has exec'd, its /proc cmdline is still ours:
        // poll (bounded) until it shows.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut found = recorded.resolve();
        while found.pid == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            found = recorded.resolve();
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.pid, child.id(), "{found:?}");
        assert_eq!(recorded.resolve().pid, 0, "gone again: left as recorded");
    }

    #[test]
    fn stop_leaves_processes_that_are_not_ours_alone() {
        // Our own pid runs the test binary, not rpool-agent: never signalled.
        let me = Proc {
            name: "agent-1".into(),
            pid: std::process::id(),
            binary: AGENT_BIN,
            needle: "agent.toml".into(),
        };
        let report = stop(std::slice::from_ref(&me), Duration::from_millis(10));
        assert_eq!(report.not_running, vec![me]);
        assert!(report.stopped.is_empty() && report.killed.is_empty());
    }

    #[test]
    fn tail_returns_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "1\n2\n3\n4\n").unwrap();
        assert_eq!(tail(&path, 2), "3\n4");
        assert_eq!(tail(&dir.path().join("missing"), 2), "");
    }
}
