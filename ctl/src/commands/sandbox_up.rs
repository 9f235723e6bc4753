//! `rpoolctl sandbox up`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use rpool_proto::clock::unix_ms_now;
use rpool_proto::units::format_duration;
use rpool_proto::v1::HostState;

use super::sandbox::{DirArgs, processes};
use crate::client;
use crate::exit::{self, Failure};
use crate::output;
use crate::sandbox::layout::{self, AgentRecord, ControllerRecord, Layout, Record};
use crate::sandbox::pki;
use crate::sandbox::poller::Poller;
use crate::sandbox::process::{self, AGENT_BIN, CONTROLLER_BIN, KUBESIM_BIN, Proc, Started};
use crate::sandbox::profile::{self, AgentPlan};
use crate::sandbox::progress::{Progress, end_progress_line};
use crate::sandbox::{is_managed_config, managed_config};
use crate::settings::{Env, Settings, Source};

/// How long `up` waits for the agents when `--timeout` is not given.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// How often `up` polls the controllers while waiting.
const POLL: Duration = Duration::from_millis(200);
/// Accepted `--controllers` values: Raft groups of odd size.
pub const GROUP_SIZES: [u16; 3] = [1, 3, 5];
/// Log lines shown when startup fails.
const TAIL_LINES: usize = 20;

/// Start a local group of controllers and N simulated agents (detached, logs
/// in DIR).
///
/// Old sandbox state in DIR is wiped first. Controller i (1-based) gets id i
/// and listens on 127.0.0.1:(PORT+i-1); every agent and ctl.toml list all of
/// them. Agents simulate hosts from a cycle of profiles (8c/32GiB in zone a,
/// 16c/64GiB in b, 32c/128GiB in c, ...), named sim-{zone}-{n}. `up` waits
/// until a controller reports a leader and every agent is ready (bounded by
/// --timeout, default 30s), then points rpoolctl at the sandbox by writing
/// ctl.toml (only if absent or written by a previous sandbox).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl sandbox up
  rpoolctl sandbox up --agents 12 --port 7450 --timeout 60s
  rpoolctl sandbox up --controllers 1   # a single controller, no Raft peers
  rpoolctl sandbox up --dir /tmp/rpool-sandbox --bin-dir target/debug")]
pub struct UpArgs {
    /// Number of simulated agents (1..=64)
    #[arg(long, default_value_t = 6, value_parser = crate::cli::whole_number::<u32>(1, 64))]
    pub agents: u32,
    /// Number of controllers in the Raft group (1, 3 or 5)
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = parse_group_size)]
    pub controllers: u16,
    #[command(flatten)]
    pub dir: DirArgs,
    /// Port of the first controller on 127.0.0.1 (7443, rpoolctl's default --controller); controller i uses PORT+i-1
    #[arg(long, default_value_t = 7443, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Where rpool-controller and rpool-agent are [default: next to rpoolctl, else PATH]
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
}

/// clap value parser for `--controllers`.
pub fn parse_group_size(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(n) if GROUP_SIZES.contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?} is not a group size (accepted 1, 3 or 5: an odd number keeps a majority)"
        )),
    }
}

/// The controllers' addresses, or a usage error when the last port would
/// not fit (PORT+N-1 > 65535).
pub fn group_addresses(port: u16, controllers: u16) -> Result<Vec<String>, Failure> {
    let last = u32::from(port) + u32::from(controllers) - 1;
    if last > u32::from(u16::MAX) {
        return Err(Failure::usage(format!(
            "--port {port}: {controllers} controllers need ports {port}..={last}, beyond 65535; pick a lower --port"
        )));
    }
    Ok(profile::controller_addresses(port, controllers))
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
    // kubesim ships with the agent: next to it first.
    let kubesim_bin = agent_bin
        .parent()
        .map(|dir| dir.join(KUBESIM_BIN))
        .filter(|p| p.is_file())
        .map_or_else(|| find(KUBESIM_BIN), Ok)?;

    let addresses = group_addresses(args.port, args.controllers)?;
    refuse_if_running(&layout, &args.dir)?;
    check_ports_free(args.port, args.controllers)?;
    let plans = profile::plan(args.agents);
    prepare(&layout, &addresses, &plans, &kubesim_bin)?;
    // Talk to the sandbox with its own admin certificate.
    client::use_tls(Some(pki::admin_files(&layout.dir)));

    let mut started: Vec<Started> = Vec::new();
    // Ctrl-C while starting: stop what was started instead of leaving it behind.
    let result = tokio::select! {
        result = start_and_wait(
        &layout,
        &args,
        &addresses,
        &plans,
        &controller_bin,
        &agent_bin,
        wait,
        &mut started,
    ) => result,
        _ = tokio::signal::ctrl_c() => Err(Failure::new(exit::UNEXPECTED, "interrupted").into()),
    };
    if let Err(err) = result {
        process::stop_started(&mut started, Duration::from_secs(5)).await;
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
        Some(path) => write_ctl_config(path, &addresses, &layout.dir)?,
        None => false,
    };
    output::print(&summary(&layout, &args, &record, settings, config_written))
}

/// Exit 1 with a hint when a sandbox in this dir still has live processes.
fn refuse_if_running(layout: &Layout, dir: &DirArgs) -> anyhow::Result<()> {
    let Some(record) = Record::load(&layout.record())? else {
        return Ok(());
    };
    let (alive, dead): (Vec<Proc>, Vec<Proc>) =
        processes(layout, &record).into_iter().partition(Proc::is_alive);
    if alive.is_empty() {
        return Ok(());
    }
    Err(Failure::new(exit::UNEXPECTED, already_running(layout, dir, &alive, &dead)).into())
}

/// Why `up` refuses, and how to bring back the members that are not
/// running (a killed controller or host) without starting over.
fn already_running(layout: &Layout, dir: &DirArgs, alive: &[Proc], dead: &[Proc]) -> String {
    let list = |procs: &[Proc]| {
        procs
            .iter()
            .map(|p| format!("{} (pid {})", p.name, p.pid))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!(
        "a sandbox is already running in {} ({}); run `rpoolctl sandbox down{}` first",
        layout.dir.display(),
        list(alive),
        dir.hint(layout)
    );
    let again: Vec<String> = dead
        .iter()
        .map(|p| match p.name.strip_prefix("controller-") {
            Some(id) => format!("`rpoolctl sandbox start-controller {id}{}`", dir.hint(layout)),
            None => format!("`rpoolctl sandbox revive-host {}{}`", p.name, dir.hint(layout)),
        })
        .collect();
    if !again.is_empty() {
        text.push_str(&format!(
            "; or bring back what is not running: {}",
            again.join(", ")
        ));
    }
    text
}

/// Every controller port must be free; the error names each busy one.
fn check_ports_free(port: u16, controllers: u16) -> Result<(), Failure> {
    let busy: Vec<String> = (0..controllers)
        .map(|i| port + i)
        .filter_map(|p| {
            std::net::TcpListener::bind(("127.0.0.1", p))
                .err()
                .map(|e| format!("{p} ({e})"))
        })
        .collect();
    if busy.is_empty() {
        return Ok(());
    }
    let range = if controllers == 1 {
        format!("port {port}")
    } else {
        format!("ports {port}..={}", port + controllers - 1)
    };
    Err(Failure::new(
        exit::UNEXPECTED,
        format!(
            "cannot use {range} on 127.0.0.1: {} in use or not allowed; pick another --port",
            busy.join(", ")
        ),
    ))
}

/// Wipes old state and writes every config file.
fn prepare(layout: &Layout, addresses: &[String], plans: &[AgentPlan], kubesim: &Path) -> anyhow::Result<()> {
    let io = |what: &Path, e: std::io::Error| anyhow::anyhow!("{}: {e}", what.display());
    for old in [
        layout.legacy_controller_dir(),
        layout.controllers_dir(),
        layout.agents_dir(),
    ] {
        match std::fs::remove_dir_all(&old) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&old, e)),
            _ => {}
        }
    }
    let _ = std::fs::remove_file(layout.record());
    pki::create(&layout.dir, addresses)?;
    for id in 1..=addresses.len() as u64 {
        let dir = layout.controller_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        write(
            &layout::controller_config(&dir),
            &(profile::controller_toml(id, addresses, &layout::controller_data(&dir))
                + &pki::controller_tls_toml(&layout.dir, id)),
        )?;
    }
    // kubesim: the shared "data centre" and kubeadm/kubectl symlinks.
    let kube_bin = layout.kubesim_bin();
    for dir in [layout.kubesim_state(), kube_bin.clone()] {
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    }
    for tool in ["kubeadm", "kubectl", "systemctl", "etcdctl"] {
        let link = kube_bin.join(tool);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(kubesim, &link).map_err(|e| io(&link, e))?;
    }
    for plan in plans {
        let dir = layout.agent_dir(&plan.name);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let node_root = layout::agent_node_root(&dir);
        std::fs::create_dir_all(&node_root).map_err(|e| io(&node_root, e))?;
        // The runtime socket a real host has: the agent's CRI detection
        // and kubesim's preflight find it there.
        let socket = node_root.join(rpool_proto::sim::CONTAINERD_SOCKET);
        rpool_proto::sim::create_socket_file(&socket).map_err(|e| io(&socket, e))?;
        let hardware = layout::agent_hardware(&dir);
        write(&hardware, &profile::hardware_toml(plan))?;
        write(
            &layout::agent_config(&dir),
            &profile::agent_toml(
                addresses,
                plan,
                &layout::agent_state(&dir),
                &hardware,
                &kube_bin,
                &node_root,
            ),
        )?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// Fails with the tail of the log of the first started process that exited.
fn check_exited(started: &mut [Started]) -> anyhow::Result<()> {
    for s in started.iter_mut() {
        if let Ok(Some(status)) = s.child.try_wait() {
            end_progress_line();
            process::print_tail(&s.log, TAIL_LINES);
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
    addresses: &[String],
    plans: &[AgentPlan],
    controller_bin: &Path,
    agent_bin: &Path,
    wait: Duration,
    started: &mut Vec<Started>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    let mut record = Record {
        port: args.port,
        controllers: Vec::new(),
        controller_pid: None,
        agents: Vec::new(),
        started_at_unix_ms: unix_ms_now(),
    };

    // 1. The controllers, then wait until one of them reports a leader.
    let logs = if addresses.len() == 1 {
        layout::log_file(&layout.controller_dir(1)).display().to_string()
    } else {
        format!("{}/controller-N/log", layout.controllers_dir().display())
    };
    eprintln!(
        "starting {} on {} (log{}: {logs})",
        controllers_noun(addresses.len()),
        addresses.join(", "),
        if addresses.len() == 1 { "" } else { "s" },
    );
    for (i, address) in addresses.iter().enumerate() {
        let id = i as u64 + 1;
        let dir = layout.controller_dir(id);
        let config = layout::controller_config(&dir);
        let name = Layout::controller_name(id);
        let no_env: [(&str, &str); 0] = [];
        let controller = Started::new(
            process::start(controller_bin, &config, &dir, &no_env)?,
            Proc {
                name: name.clone(),
                pid: 0,
                binary: CONTROLLER_BIN,
                needle: config.to_string_lossy().into_owned(),
            },
            &dir,
        );
        record.controllers.push(ControllerRecord {
            name,
            id,
            pid: controller.proc.pid,
            address: address.clone(),
            dir,
        });
        started.push(controller);
        // Saved after each start so `down` finds whatever did start.
        record.save(&layout.record())?;
    }
    eprintln!("waiting for a leader...");
    let mut poller = Poller::new(addresses.to_vec());
    let leader = loop {
        check_exited(started)?;
        if let Some(leader) = poller.leader().await {
            break leader;
        }
        if Instant::now() >= deadline {
            let log = layout::log_file(&layout.controller_dir(1));
            return Err(timed_out(wait, &log, "a controller to report a leader"));
        }
        tokio::time::sleep(POLL).await;
    };
    eprintln!("{}", leader_line(&leader.0, &leader.1));

    // 1b. A bootstrap token: the agents enroll themselves with it (and the
    //     CA pin), as real hosts do.
    let enroll = loop {
        check_exited(started)?;
        if let Some(section) = poller.enroll_section(plans.len()).await {
            break section;
        }
        if Instant::now() >= deadline {
            let log = layout::log_file(&layout.controller_dir(1));
            return Err(timed_out(wait, &log, "a controller to create a bootstrap token"));
        }
        tokio::time::sleep(POLL).await;
    };
    for plan in plans {
        let config = layout::agent_config(&layout.agent_dir(&plan.name));
        let text =
            std::fs::read_to_string(&config).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
        write(&config, &(text + &enroll))?;
    }

    // 2. The agents.
    eprintln!(
        "starting {} agents (logs: {}/agent-N/log)",
        plans.len(),
        layout.agents_dir().display()
    );
    for plan in plans {
        let dir = layout.agent_dir(&plan.name);
        let agent = Started::new(
            process::start_agent(agent_bin, layout, &dir, &plan.hostname)?,
            Proc {
                name: plan.name.clone(),
                pid: 0,
                binary: AGENT_BIN,
                needle: dir.to_string_lossy().into_owned(),
            },
            &dir,
        );
        record.agents.push(AgentRecord {
            name: plan.name.clone(),
            pid: agent.proc.pid,
            dir,
        });
        started.push(agent);
    }
    record.save(&layout.record())?;

    // 3. Wait until every simulated host is registered and ready (any
    //    controller answers: followers forward to the leader).
    let expected: BTreeSet<String> = plans.iter().map(|p| p.hostname.clone()).collect();
    let mut progress = Progress::new(expected.len());
    loop {
        check_exited(started)?;
        let ready: BTreeSet<String> = match poller.list_hosts().await {
            Some(response) => response
                .hosts
                .into_iter()
                .filter(|h| h.state == HostState::Ready as i32)
                .filter_map(|h| h.facts.map(|f| f.hostname))
                .filter(|name| expected.contains(name))
                .collect(),
            None => BTreeSet::new(),
        };
        progress.show(ready.len());
        if ready.len() == expected.len() {
            progress.finish();
            return Ok(());
        }
        if Instant::now() >= deadline {
            let missing = plans.iter().find(|p| !ready.contains(&p.hostname));
            let log = missing.map_or(layout::log_file(&layout.controller_dir(1)), |p| {
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

/// `rpool-controller` or `3 rpool-controllers`.
fn controllers_noun(n: usize) -> String {
    if n == 1 {
        "rpool-controller".to_string()
    } else {
        format!("{n} rpool-controllers")
    }
}

/// `leader: controller 2 (127.0.0.1:7441)`.
pub fn leader_line(leader_id: &str, leader_address: &str) -> String {
    format!(
        "leader: controller {}",
        super::status::leader_text(leader_id, leader_address)
    )
}

fn timed_out(wait: Duration, log: &Path, what: &str) -> anyhow::Error {
    end_progress_line();
    process::print_tail(log, TAIL_LINES);
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

/// Writes the managed ctl.toml unless the user has their own; returns
/// whether it was written.
fn write_ctl_config(path: &Path, addresses: &[String], sandbox_dir: &Path) -> anyhow::Result<bool> {
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
    write(
        path,
        &(managed_config(addresses) + &pki::ctl_tls_toml(sandbox_dir)),
    )?;
    Ok(true)
}

/// The `export RPOOL_TLS_*=...` lines for the sandbox's admin certificate.
fn tls_exports(sandbox_dir: &Path) -> String {
    let files = pki::admin_files(sandbox_dir);
    format!(
        "  export RPOOL_TLS_CA={} RPOOL_TLS_CERT={} RPOOL_TLS_KEY={}\n",
        files.ca.display(),
        files.cert.display(),
        files.key.display()
    )
}

fn summary(
    layout: &Layout,
    args: &UpArgs,
    record: &Record,
    settings: &Settings,
    config_written: bool,
) -> String {
    let addresses: Vec<String> = record.controllers.iter().map(|c| c.address.clone()).collect();
    let pids: Vec<String> = record.controllers.iter().map(|c| c.pid.to_string()).collect();
    let address = addresses.join(",");
    let mut text = format!(
        "Sandbox ready: {} on {} (pid{} {}), {} agents. Logs and state in {}.\n",
        controllers_noun(addresses.len()),
        addresses.join(", "),
        if pids.len() == 1 { "" } else { "s" },
        pids.join(", "),
        record.agents.len(),
        layout.dir.display()
    );
    let overridden = match settings.controllers_source {
        Source::Flag => Some("--controller"),
        Source::Env => Some("RPOOL_CONTROLLER"),
        _ => None,
    }
    .filter(|_| settings.controllers != addresses);
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
            "{} is your own config; left it alone. Point rpoolctl at the sandbox with:\n  export RPOOL_CONTROLLER={address}\n{}",
            path.display(),
            tls_exports(&layout.dir)
        ));
    } else {
        text.push_str(&format!(
            "No ctl.toml location (HOME is not set). Point rpoolctl at the sandbox with:\n  export RPOOL_CONTROLLER={address}\n{}",
            tls_exports(&layout.dir)
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
         rpoolctl status\n  rpoolctl controller list\n  rpoolctl sandbox status{dir}\n  rpoolctl sandbox down{dir}\n"
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::poller::has_leader;
    use crate::sandbox::progress::progress_line;

    #[test]
    fn prepare_wipes_old_state_and_writes_every_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_path_buf());
        let stale = layout.agent_dir("agent-9");
        std::fs::create_dir_all(&stale).unwrap();
        let legacy = layout.legacy_controller_dir();
        std::fs::create_dir_all(&legacy).unwrap();
        let addresses = group_addresses(7440, 3).unwrap();
        prepare(
            &layout,
            &addresses,
            &profile::plan(2),
            Path::new("/usr/local/bin/kubesim"),
        )
        .unwrap();
        assert!(!stale.exists());
        for tool in ["kubeadm", "kubectl", "systemctl", "etcdctl"] {
            let link = layout.kubesim_bin().join(tool);
            assert_eq!(
                std::fs::read_link(&link).unwrap(),
                Path::new("/usr/local/bin/kubesim")
            );
        }
        assert!(!legacy.exists(), "an older sandbox's controller dir is wiped too");
        for id in 1..=3u64 {
            let dir = layout.controller_dir(id);
            let controller: toml::Table =
                toml::from_str(&std::fs::read_to_string(layout::controller_config(&dir)).unwrap()).unwrap();
            assert_eq!(controller["id"].as_integer(), Some(id as i64));
            assert_eq!(
                controller["listen"].as_str(),
                Some(format!("127.0.0.1:{}", 7439 + id).as_str())
            );
            assert_eq!(
                Path::new(controller["data_dir"].as_str().unwrap()),
                layout::controller_data(&dir)
            );
            assert_eq!(controller["peers"].as_array().unwrap().len(), 3);
        }
        for name in ["agent-1", "agent-2"] {
            let agent_dir = layout.agent_dir(name);
            let agent: toml::Table =
                toml::from_str(&std::fs::read_to_string(layout::agent_config(&agent_dir)).unwrap()).unwrap();
            assert_eq!(agent["controllers"].as_array().unwrap().len(), 3);
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
        assert!(write_ctl_config(&path, &group_addresses(7440, 3).unwrap(), Path::new("/sb")).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(r#"controllers = ["127.0.0.1:7440", "127.0.0.1:7441", "127.0.0.1:7442"]"#),
            "{text}"
        );
        assert!(write_ctl_config(&path, &group_addresses(7450, 1).unwrap(), Path::new("/sb")).unwrap());
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("[\"127.0.0.1:7450\"]")
        );
        std::fs::write(&path, "controllers = [\"10.0.0.1:7443\"]\n").unwrap();
        assert!(!write_ctl_config(&path, &group_addresses(7440, 3).unwrap(), Path::new("/sb")).unwrap());
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

    fn up_args(args: &[&str]) -> Result<UpArgs, clap::Error> {
        use clap::Parser;
        let mut argv = vec!["rpoolctl", "sandbox", "up"];
        argv.extend_from_slice(args);
        match crate::cli::Cli::try_parse_from(argv)?.command {
            crate::commands::Command::Sandbox(super::super::sandbox::SandboxCommand::Up(a)) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn controllers_default_to_3_and_accept_only_1_3_or_5() {
        assert_eq!(up_args(&[]).unwrap().controllers, 3);
        for ok in [1, 3, 5] {
            assert_eq!(
                up_args(&["--controllers", &ok.to_string()]).unwrap().controllers,
                ok
            );
        }
        for bad in ["0", "2", "4", "7", "x"] {
            let err = up_args(&["--controllers", bad]).unwrap_err();
            assert_eq!(crate::clap_exit_code(err.kind()), exit::USAGE, "{bad}");
            assert!(err.to_string().contains("--controllers"), "{bad}: {err}");
            assert!(err.to_string().contains("accepted 1, 3 or 5"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_group_takes_consecutive_ports_that_must_fit() {
        assert_eq!(
            group_addresses(7440, 3).unwrap(),
            ["127.0.0.1:7440", "127.0.0.1:7441", "127.0.0.1:7442"]
        );
        assert_eq!(group_addresses(65535, 1).unwrap(), ["127.0.0.1:65535"]);
        let err = group_addresses(65533, 5).unwrap_err();
        assert_eq!(err.code, exit::USAGE);
        assert!(err.message.starts_with("--port 65533: "), "{}", err.message);
        assert!(err.message.contains("65533..=65537"), "{}", err.message);
    }

    #[test]
    fn a_busy_port_anywhere_in_the_group_is_named() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap().port();
        let Some(first) = busy.checked_sub(1) else {
            return;
        };
        // The first port may happen to be busy too; the named one must be.
        let err = check_ports_free(first, 3).unwrap_err();
        assert!(err.message.contains(&format!("{busy} (")), "{}", err.message);
        assert!(err.message.contains("pick another --port"), "{}", err.message);
    }

    #[test]
    fn a_leader_is_any_id_but_empty_or_0() {
        assert!(has_leader("2"));
        assert!(!has_leader(""));
        assert!(!has_leader("0"));
        assert_eq!(
            leader_line("2", "127.0.0.1:7441"),
            "leader: controller 2 (127.0.0.1:7441)"
        );
    }

    #[test]
    fn the_summary_names_every_controller_and_what_to_try() {
        let layout = Layout::new("/sb".into());
        let record = Record {
            port: 7440,
            controllers: layout::three_controllers(&layout),
            controller_pid: None,
            agents: vec![],
            started_at_unix_ms: 0,
        };
        let settings = Settings {
            controllers: vec!["127.0.0.1:7443".into()],
            controllers_source: Source::Default,
            timeout_flag: None,
            config_path: None,
            tls: None,
        };
        let args = up_args(&[]).unwrap();
        let text = summary(&layout, &args, &record, &settings, false);
        assert!(
            text.starts_with(
                "Sandbox ready: 3 rpool-controllers on 127.0.0.1:7440, 127.0.0.1:7441, 127.0.0.1:7442 \
                 (pids 101, 102, 103), 0 agents. Logs and state in /sb.\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("export RPOOL_CONTROLLER=127.0.0.1:7440,127.0.0.1:7441,127.0.0.1:7442\n"),
            "{text}"
        );
        assert!(text.contains("rpoolctl controller list"), "{text}");
    }
}
