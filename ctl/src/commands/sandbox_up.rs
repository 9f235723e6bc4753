//! `rpoolctl sandbox up`.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use rpool_proto::units::format_duration;
use rpool_proto::v1::{HostState, ListHostsRequest};

use super::sandbox::{DirArgs, processes};
use crate::client;
use crate::exit::{self, Failure};
use crate::output;
use crate::sandbox::layout::{self, AgentRecord, Layout, Record};
use crate::sandbox::process::{self, AGENT_BIN, CONTROLLER_BIN, Proc};
use crate::sandbox::profile::{self, AgentPlan};
use crate::sandbox::{is_managed_config, managed_config};
use crate::settings::{Env, Settings, Source};

/// How long `up` waits for the agents when `--timeout` is not given.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// How often `up` polls the controller while waiting.
const POLL: Duration = Duration::from_millis(200);
/// Log lines shown when startup fails.
const TAIL_LINES: usize = 20;

/// Start a local controller and N simulated agents (detached, logs in DIR).
///
/// Old sandbox state in DIR is wiped first. Agents simulate hosts from a
/// cycle of profiles (8c/32GiB in zone a, 16c/64GiB in b, 32c/128GiB in c,
/// ...), named sim-{zone}-{n}. `up` waits until every agent is ready (bounded
/// by --timeout, default 30s), then points rpoolctl at the sandbox by writing
/// ctl.toml (only if absent or written by a previous sandbox).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl sandbox up
  rpoolctl sandbox up --agents 12 --port 7450 --timeout 60s
  rpoolctl sandbox up --dir /tmp/rpool-sandbox --bin-dir target/debug")]
pub struct UpArgs {
    /// Number of simulated agents (1..=64)
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub agents: u32,
    #[command(flatten)]
    pub dir: DirArgs,
    /// Controller port on 127.0.0.1
    #[arg(long, default_value_t = 7440, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Where rpool-controller and rpool-agent are [default: next to rpoolctl, else PATH]
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
}

/// A process started by this `up`, with its handle so it can be reaped.
struct Started {
    proc: Proc,
    child: Child,
    log: PathBuf,
}

pub async fn exec(args: UpArgs, settings: &Settings, env: &Env) -> anyhow::Result<()> {
    let layout = args.dir.layout(env)?;
    let wait = settings.timeout_flag.unwrap_or(DEFAULT_WAIT);
    // A wrong --bin-dir is a usage error; binaries missing from the default places are not.
    let missing_code = if args.bin_dir.is_some() {
        exit::USAGE
    } else {
        exit::UNEXPECTED
    };
    let find =
        |name| process::find_binary(name, args.bin_dir.as_deref()).map_err(|m| Failure::new(missing_code, m));
    let controller_bin = find(CONTROLLER_BIN)?;
    let agent_bin = find(AGENT_BIN)?;

    refuse_if_running(&layout, &args.dir)?;
    check_port_free(args.port)?;
    let plans = profile::plan(args.agents);
    prepare(&layout, args.port, &plans)?;

    let mut started: Vec<Started> = Vec::new();
    // Ctrl-C while starting: stop what was started instead of leaving it behind.
    let result = tokio::select! {
        result = start_and_wait(
        &layout,
        &args,
        &plans,
        &controller_bin,
        &agent_bin,
        wait,
        &mut started,
    ) => result,
        _ = tokio::signal::ctrl_c() => Err(Failure::new(exit::UNEXPECTED, "interrupted").into()),
    };
    if let Err(err) = result {
        stop_children(&mut started, Duration::from_secs(5)).await;
        let _ = std::fs::remove_file(layout.record());
        let code = exit::code_of(&err);
        return Err(Failure::new(
            code,
            format!("{err:#}; stopped the sandbox processes that were started"),
        )
        .into());
    }
    let record = Record::load(&layout.record())?.ok_or_else(|| anyhow::anyhow!("sandbox.json vanished"))?;
    let config_written = match &settings.config_path {
        Some(path) => write_ctl_config(path, args.port)?,
        None => false,
    };
    output::print(&summary(&layout, &args, &record, settings, config_written))
}

/// Exit 1 with a hint when a sandbox in this dir still has live processes.
fn refuse_if_running(layout: &Layout, dir: &DirArgs) -> anyhow::Result<()> {
    let Some(record) = Record::load(&layout.record())? else {
        return Ok(());
    };
    let alive: Vec<String> = processes(layout, &record)
        .into_iter()
        .filter(Proc::is_alive)
        .map(|p| format!("{} (pid {})", p.name, p.pid))
        .collect();
    if alive.is_empty() {
        return Ok(());
    }
    Err(Failure::new(
        exit::UNEXPECTED,
        format!(
            "a sandbox is already running in {} ({}); run `rpoolctl sandbox down{}` first",
            layout.dir.display(),
            alive.join(", "),
            dir.hint(layout)
        ),
    )
    .into())
}

fn check_port_free(port: u16) -> Result<(), Failure> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .map_err(|e| {
            Failure::new(
                exit::UNEXPECTED,
                format!("cannot use port {port} on 127.0.0.1 ({e}); pick another with --port"),
            )
        })
}

/// Wipes old state and writes every config file.
fn prepare(layout: &Layout, port: u16, plans: &[AgentPlan]) -> anyhow::Result<()> {
    let io = |what: &Path, e: std::io::Error| anyhow::anyhow!("{}: {e}", what.display());
    for old in [layout.controller_dir(), layout.agents_dir()] {
        match std::fs::remove_dir_all(&old) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&old, e)),
            _ => {}
        }
    }
    let _ = std::fs::remove_file(layout.record());
    std::fs::create_dir_all(layout.controller_dir()).map_err(|e| io(&layout.controller_dir(), e))?;
    write(
        &layout.controller_config(),
        &profile::controller_toml(port, &layout.controller_data()),
    )?;
    for plan in plans {
        let dir = layout.agent_dir(&plan.name);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let hardware = layout::agent_hardware(&dir);
        write(&hardware, &profile::hardware_toml(plan))?;
        write(
            &layout::agent_config(&dir),
            &profile::agent_toml(port, plan, &layout::agent_state(&dir), &hardware),
        )?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn spawn(binary: &Path, config: &Path, dir: &Path, proc: Proc) -> anyhow::Result<Started> {
    let log = layout::log_file(dir);
    let args: [&OsStr; 2] = [OsStr::new("--config"), config.as_os_str()];
    let child = process::spawn_detached(binary, &args, dir, &log)
        .map_err(|e| anyhow::anyhow!("starting {}: {e}", binary.display()))?;
    Ok(Started {
        proc: Proc {
            pid: child.id(),
            ..proc
        },
        child,
        log,
    })
}

/// Stops processes this `up` started. They are our unreaped children, so
/// their pids cannot have been reused: signal them directly. SIGTERM, poll up
/// to `grace`, then SIGKILL and reap.
async fn stop_children(started: &mut [Started], grace: Duration) {
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in started.iter_mut() {
        if let Ok(None) = s.child.try_wait() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}

/// Fails with the tail of the log of the first started process that exited.
fn check_exited(started: &mut [Started]) -> anyhow::Result<()> {
    for s in started.iter_mut() {
        if let Ok(Some(status)) = s.child.try_wait() {
            let tail = process::tail(&s.log, TAIL_LINES);
            end_progress_line();
            eprintln!("--- last lines of {} ---", s.log.display());
            eprintln!("{tail}");
            eprintln!("---");
            anyhow::bail!(
                "{} (pid {}) exited during startup ({status}); see {}",
                s.proc.name,
                s.proc.pid,
                s.log.display()
            );
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn start_and_wait(
    layout: &Layout,
    args: &UpArgs,
    plans: &[AgentPlan],
    controller_bin: &Path,
    agent_bin: &Path,
    wait: Duration,
    started: &mut Vec<Started>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    let address = format!("127.0.0.1:{}", args.port);
    let mut record = Record {
        port: args.port,
        controller_pid: 0,
        agents: Vec::new(),
        started_at_unix_ms: now_unix_ms(),
    };

    // 1. The controller, then wait until it accepts connections.
    eprintln!(
        "starting rpool-controller on {address} (log: {})",
        layout.controller_log().display()
    );
    let controller = spawn(
        controller_bin,
        &layout.controller_config(),
        &layout.controller_dir(),
        Proc {
            name: "controller".into(),
            pid: 0,
            binary: CONTROLLER_BIN,
            needle: layout.controller_config().to_string_lossy().into_owned(),
        },
    )?;
    record.controller_pid = controller.proc.pid;
    started.push(controller);
    record.save(&layout.record())?;
    let channel = loop {
        check_exited(started)?;
        if let Ok(channel) = client::connect_one(&address, Duration::from_millis(500)).await {
            break channel;
        }
        if Instant::now() >= deadline {
            return Err(timed_out(wait, &started[0].log, "the controller to listen"));
        }
        tokio::time::sleep(POLL).await;
    };

    // 2. The agents.
    eprintln!(
        "starting {} agents (logs: {}/agent-N/log)",
        plans.len(),
        layout.agents_dir().display()
    );
    for plan in plans {
        let dir = layout.agent_dir(&plan.name);
        let agent = spawn(
            agent_bin,
            &layout::agent_config(&dir),
            &dir,
            Proc {
                name: plan.name.clone(),
                pid: 0,
                binary: AGENT_BIN,
                needle: dir.to_string_lossy().into_owned(),
            },
        )?;
        record.agents.push(AgentRecord {
            name: plan.name.clone(),
            pid: agent.proc.pid,
            dir,
        });
        started.push(agent);
    }
    record.save(&layout.record())?;

    // 3. Wait until every simulated host is registered and ready.
    let mut admin = rpool_proto::v1::admin_service_client::AdminServiceClient::new(channel);
    let expected: BTreeSet<String> = plans.iter().map(|p| p.hostname.clone()).collect();
    let mut progress = Progress::new(expected.len());
    loop {
        check_exited(started)?;
        let request = tonic::Request::new(ListHostsRequest::default());
        let answer = tokio::time::timeout(Duration::from_secs(2), admin.list_hosts(request)).await;
        let ready: BTreeSet<String> = match answer {
            Ok(Ok(response)) => response
                .into_inner()
                .hosts
                .into_iter()
                .filter(|h| h.state == HostState::Ready as i32)
                .filter_map(|h| h.facts.map(|f| f.hostname))
                .filter(|name| expected.contains(name))
                .collect(),
            _ => BTreeSet::new(),
        };
        progress.show(ready.len());
        if ready.len() == expected.len() {
            progress.finish();
            return Ok(());
        }
        if Instant::now() >= deadline {
            let missing = plans.iter().find(|p| !ready.contains(&p.hostname));
            let log = missing.map_or(layout.controller_log(), |p| {
                layout::log_file(&layout.agent_dir(&p.name))
            });
            let what = format!(
                "{} agents to be ready ({} of {} ready)",
                expected.len(),
                ready.len(),
                expected.len()
            );
            return Err(timed_out(wait, &log, &what));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn timed_out(wait: Duration, log: &Path, what: &str) -> anyhow::Error {
    end_progress_line();
    eprintln!("--- last lines of {} ---", log.display());
    eprintln!("{}", process::tail(log, TAIL_LINES));
    eprintln!("---");
    Failure::new(
        exit::TIMED_OUT,
        format!(
            "timed out after {} waiting for {what}; see {} (raise --timeout if the machine is slow)",
            format_duration(wait),
            log.display()
        ),
    )
    .into()
}

/// "waiting for N agents... k/N ready" on stderr: rewritten in place on a
/// terminal, one line per change otherwise.
struct Progress {
    total: usize,
    last: Option<usize>,
    tty: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            total,
            last: None,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn line(&self, ready: usize) -> String {
        progress_line(self.total, ready)
    }

    fn show(&mut self, ready: usize) {
        if self.last == Some(ready) {
            return;
        }
        self.last = Some(ready);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{}", self.line(ready));
        } else {
            let _ = writeln!(err, "{}", self.line(ready));
        }
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.tty && self.last.is_some() {
            eprintln!();
        }
    }
}

/// Ends an in-place progress line on a terminal before other output.
fn end_progress_line() {
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}

/// The progress text.
pub fn progress_line(total: usize, ready: usize) -> String {
    format!("waiting for {total} agents... {ready}/{total} ready")
}

/// Writes the managed ctl.toml unless the user has their own; returns
/// whether it was written.
fn write_ctl_config(path: &Path, port: u16) -> anyhow::Result<bool> {
    match std::fs::read_to_string(path) {
        Ok(text) if !is_managed_config(&text) => return Ok(false),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(anyhow::anyhow!("reading {}: {e}", path.display()));
        }
        _ => {}
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| anyhow::anyhow!("creating {}: {e}", parent.display()))?;
    }
    write(path, &managed_config(port))?;
    Ok(true)
}

fn summary(
    layout: &Layout,
    args: &UpArgs,
    record: &Record,
    settings: &Settings,
    config_written: bool,
) -> String {
    let address = format!("127.0.0.1:{}", record.port);
    let mut text = format!(
        "Sandbox ready: rpool-controller on {address} (pid {}), {} agents. Logs and state in {}.\n",
        record.controller_pid,
        record.agents.len(),
        layout.dir.display()
    );
    let overridden = match settings.controllers_source {
        Source::Flag => Some("--controller"),
        Source::Env => Some("RPOOL_CONTROLLER"),
        _ => None,
    }
    .filter(|_| settings.controllers != [address.clone()]);
    if config_written {
        text.push_str(&format!(
            "Wrote {} so rpoolctl talks to the sandbox.\n",
            settings
                .config_path
                .as_deref()
                .unwrap_or(Path::new("ctl.toml"))
                .display()
        ));
    } else if let Some(path) = &settings.config_path {
        text.push_str(&format!(
            "{} is your own config; left it alone. Point rpoolctl at the sandbox with:\n  export RPOOL_CONTROLLER={address}\n",
            path.display()
        ));
    } else {
        text.push_str(&format!(
            "No ctl.toml location (HOME is not set). Point rpoolctl at the sandbox with:\n  export RPOOL_CONTROLLER={address}\n"
        ));
    }
    if let Some(what) = overridden.filter(|_| config_written) {
        text.push_str(&format!(
            "Note: {what} is set and takes precedence over ctl.toml; use:\n  export RPOOL_CONTROLLER={address}\n"
        ));
    }
    let dir = args.dir.hint(layout);
    text.push_str(&format!(
        "\nTry:\n  rpoolctl host list\n  rpoolctl host show ID        # ID from the list (a 4+ character prefix is enough)\n  \
         rpoolctl status\n  rpoolctl sandbox status{dir}\n  rpoolctl sandbox down{dir}\n"
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_wipes_old_state_and_writes_every_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_path_buf());
        let stale = layout.agent_dir("agent-9");
        std::fs::create_dir_all(&stale).unwrap();
        prepare(&layout, 7440, &profile::plan(2)).unwrap();
        assert!(!stale.exists());
        let controller: toml::Table =
            toml::from_str(&std::fs::read_to_string(layout.controller_config()).unwrap()).unwrap();
        assert_eq!(controller["listen"].as_str(), Some("127.0.0.1:7440"));
        for name in ["agent-1", "agent-2"] {
            let agent_dir = layout.agent_dir(name);
            let agent: toml::Table =
                toml::from_str(&std::fs::read_to_string(layout::agent_config(&agent_dir)).unwrap()).unwrap();
            let hardware = agent["simulate"]["file"].as_str().unwrap();
            assert_eq!(Path::new(hardware), layout::agent_hardware(&agent_dir));
            assert!(Path::new(hardware).exists());
        }
    }

    #[test]
    fn progress_reads_like_the_spec() {
        assert_eq!(progress_line(6, 3), "waiting for 6 agents... 3/6 ready");
    }

    #[test]
    fn the_ctl_config_is_written_when_absent_or_managed_but_never_over_the_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rpool/ctl.toml");
        assert!(write_ctl_config(&path, 7440).unwrap());
        assert!(std::fs::read_to_string(&path).unwrap().contains("127.0.0.1:7440"));
        assert!(write_ctl_config(&path, 7450).unwrap());
        assert!(std::fs::read_to_string(&path).unwrap().contains("127.0.0.1:7450"));
        std::fs::write(&path, "controllers = [\"10.0.0.1:7443\"]\n").unwrap();
        assert!(!write_ctl_config(&path, 7440).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "controllers = [\"10.0.0.1:7443\"]\n"
        );
    }

    #[test]
    fn agents_out_of_range_are_rejected_by_clap() {
        use clap::Parser;
        for bad in ["0", "65"] {
            let err =
                crate::cli::Cli::try_parse_from(["rpoolctl", "sandbox", "up", "--agents", bad]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        }
    }
}
