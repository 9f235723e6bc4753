//! `rpool-controller`: parses flags, installs tracing, loads and validates
//! the config, binds the listener and calls [`rpool_controller::run`] until
//! SIGTERM or SIGINT.
//!
//! Exit codes: 0 ok, 1 unexpected error, 64 usage or configuration error,
//! 65 damaged or lost data (the member must be replaced; not restarted),
//! or with `--restore`, a damaged backup file,
//! 75 the data dir's disk is full (a restart waits for free space).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use rpool_controller::Config;
use rpool_controller::config::{DEFAULT_CONFIG_PATH, MAX_ID};
use tracing::info;

const EXIT_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 64;
/// The data dir failed a check: restarting cannot help.
const EXIT_DAMAGED: u8 = 65;
/// The data dir's disk filled up: a restart waits until there is room.
const EXIT_DISK_FULL: u8 = 75;

const EXAMPLES: &str = "\
Examples:
  rpool-controller
      Use /etc/rpool/controller.toml if it exists, else the defaults.
  rpool-controller --config ./controller.toml --listen 127.0.0.1:7443
  rpool-controller --data-dir /tmp/rpool --id 2 --log-format json
  RPOOL_LOG=rpool_controller=debug rpool-controller
  rpool-controller --restore /root/rpool.snap && chown -R rpool:rpool /var/lib/rpool/controller
      After losing every data dir: refill this one from a backup (run it on
      each member of [[peers]], same file), then start the service.

Flags override values from the config file.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// rpool controller: host registry, liveness and the agent and admin gRPC APIs.
#[derive(Debug, Parser)]
#[command(version = rpool_proto::VERSION, after_help = EXAMPLES)]
struct Cli {
    /// Config file (TOML). A missing default file means "all defaults"; a
    /// missing file given here is an error.
    #[arg(long, value_name = "PATH", env = "RPOOL_CONTROLLER_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides `listen`), e.g. 127.0.0.1:7443.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Data directory (overrides `data_dir`); the Raft log lives in DIR/raft.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Controller id, 1..=2^63 (overrides `id`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_ID))]
    id: Option<u64>,
    /// Log format on stderr. The filter comes from RPOOL_LOG (default "info").
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Validate the config and the TLS files (key matches certificate, chain
    /// to the CA, validity, keys not readable by all), print "config ok" and
    /// exit: 0 if valid, 64 if not. Touches nothing (no data dir, no port).
    #[arg(long)]
    check_config: bool,
    /// Fill the empty data dir from a backup (`rpoolctl snapshot save`) and
    /// exit: the state, and a Raft log starting after it whose voters are
    /// `[[peers]]`. Run it with the same FILE on every member listed there
    /// (at least a majority; the others may start empty), then start them.
    /// Exits 64 if the data dir is not empty, 65 if FILE is damaged.
    #[arg(long, value_name = "FILE", conflicts_with = "check_config")]
    restore: Option<PathBuf>,
}

/// An error and the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

fn usage(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_USAGE,
        error: error.into(),
    }
}

fn unexpected(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_ERROR,
        error: error.into(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(cli.log_format);
    rpool_proto::tls::install_crypto_provider();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}

/// The allocator: jemalloc, as in TiKV. Measured against glibc malloc on
/// the same build and machine (BENCHMARKS.md, sixth session): 15-25 % less
/// CPU per concurrent write and a leader at 10,000 agent sessions within
/// 3 % of glibc's resident memory, the followers below it.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once when it starts (before `main`); the
/// environment variable `_RJEM_MALLOC_CONF` overrides them. Freed pages go
/// back to the kernel about a second after the last use (jemalloc's default
/// keeps them ten seconds, then again as "muzzy" pages), from one
/// background thread rather than on the threads that serve agents and
/// Raft: after a reconnect storm the resident size follows the sessions
/// that remain.
#[cfg(target_os = "linux")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf = MallocConf(JEMALLOC_OPTIONS.as_ptr());

/// See [`MALLOC_CONF`]; a misspelt option makes jemalloc print
/// `<jemalloc>: Invalid conf pair` on stderr at start (an e2e test checks).
const JEMALLOC_OPTIONS: &std::ffi::CStr =
    c"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0";

/// A C string pointer jemalloc reads as `const char *malloc_conf`.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a `'static` immutable C string literal.
unsafe impl Sync for MallocConf {}

fn init_tracing(format: LogFormat) {
    rpool_proto::logging::install(matches!(format, LogFormat::Json));
}

/// Loads the file (if any), applies flag overrides, validates.
fn load_config(cli: &Cli) -> Result<Config, Failure> {
    let (path, explicit) = match &cli.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let file = path.display().to_string();
    let mut config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) if e.is_not_found() && !explicit => Config::default(),
        Err(e) => return Err(usage(e)),
    };
    if let Some(id) = cli.id {
        config.id = id;
    }
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    config.validate_in(&file).map_err(usage)?;
    if cli.restore.is_some() {
        // A restore writes the data dir only; the packaged config's key
        // paths exist only while the service runs (systemd credentials).
        return Ok(config);
    }
    // The TLS files must exist and parse (also for --check-config).
    config
        .tls
        .load(config.id)
        .map_err(|e| usage(anyhow::anyhow!("{file}: [tls]: {e}")))?;
    Ok(config)
}

/// What `--check-config` adds to start-up's checks: the key files (own and,
/// when present, the CA's) are not readable by every user.
fn check_tls_files(config: &Config, file: &str) -> Result<(), Failure> {
    let tls_error = |e: rpool_proto::tls::TlsError| usage(anyhow::anyhow!("{file}: [tls]: {e}"));
    config.tls.files().check().map_err(tls_error)?;
    if config.tls.ca_key.exists() {
        rpool_proto::tls::check_key_mode(&config.tls.ca_key).map_err(tls_error)?;
    }
    Ok(())
}

fn real_main(cli: Cli) -> Result<(), Failure> {
    let config = load_config(&cli)?;
    if cli.check_config {
        let path = cli
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        check_tls_files(&config, &path.display().to_string())?;
        println!("config ok: {}", path.display());
        return Ok(());
    }
    if let Some(file) = &cli.restore {
        return restore(&config, cli.config.as_deref(), file);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(unexpected)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))
            .map_err(unexpected)?;
        let local = listener
            .local_addr()
            .context("reading the bound address")
            .map_err(unexpected)?;
        let shutdown = shutdown_signal().map_err(unexpected)?;
        info!("listening on {local}");
        rpool_controller::run(config, listener, shutdown)
            .await
            .map_err(run_failure)
    })
}

/// `--restore FILE`: refills the empty data dir from a backup and says
/// what to do next.
fn restore(
    config: &Config,
    config_file: Option<&std::path::Path>,
    file: &std::path::Path,
) -> Result<(), Failure> {
    use rpool_controller::replica::restore::{self, RestoreError};
    let config_file = config_file.unwrap_or(std::path::Path::new(DEFAULT_CONFIG_PATH));
    if config.joins_existing_group() {
        return Err(usage(anyhow::anyhow!(
            "--restore: controller {} is not in [[peers]] of {}: restore the members listed there (each from \
             the same file); a controller outside them starts empty and is added with `rpoolctl controller add`",
            config.id,
            config_file.display()
        )));
    }
    let members = config.initial_members();
    let restored = restore::restore(&config.data_dir, config.id, &members, file).map_err(|e| {
        let code = match &e {
            RestoreError::NotEmpty(_) => EXIT_USAGE,
            RestoreError::Backup(rpool_proto::backup::BackupError::Io { .. }) => EXIT_USAGE,
            e if e.is_damaged_backup() => EXIT_DAMAGED,
            _ => EXIT_ERROR,
        };
        Failure {
            code,
            error: e.into(),
        }
    })?;
    let (h, c) = (&restored.header, &restored.counts);
    let voters: Vec<String> = restored.voters.iter().map(u64::to_string).collect();
    println!(
        "restored {file} into {dir}\n  applied index {index}, term {term}, taken by controller {by}\n  \
         {hosts} hosts, {pools} pools, {tasks} tasks, {events} events, {tokens} tokens\n  \
         group: controllers {voters} (from [[peers]] of {config})\n\
         Next: restore the same file on the other members listed there (at least a majority of them; the \
         rest may start with an empty data dir and catch up), then start them all \
         (`systemctl start rpool-controller`). Agents reconnect by themselves.",
        file = file.display(),
        dir = config.data_dir.display(),
        index = h.applied_index,
        term = h.term,
        by = h.controller_id,
        hosts = c.hosts,
        pools = c.pools,
        tasks = c.tasks,
        events = c.events,
        tokens = c.tokens,
        voters = voters.join(", "),
        config = config_file.display(),
    );
    Ok(())
}

/// The exit code for an error `run` returned: damaged data and a full disk
/// have their own (the unit restarts only the second), the rest is 1.
fn run_failure(error: anyhow::Error) -> Failure {
    use rpool_controller::replica::disk;
    if rpool_controller::is_damaged_data(&error) {
        return Failure {
            code: EXIT_DAMAGED,
            error,
        };
    }
    if disk::is_disk_full(error.as_ref()) {
        return Failure {
            code: EXIT_DISK_FULL,
            error: error.context(format!(
                "the disk of the data dir is full: this controller stopped and wrote nothing more; free space \
                 there and start it again (systemd does so every few seconds): it waits for {} MiB free, then \
                 catches up from the others",
                disk::MIN_FREE_BYTES >> 20
            )),
        };
    }
    unexpected(error)
}

/// Resolves on the first SIGTERM or SIGINT. Handlers are installed before
/// returning, so a signal right after start-up is not lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "signal received"),
            _ = int.recv() => info!(signal = "SIGINT", "signal received"),
        }
    })
}
