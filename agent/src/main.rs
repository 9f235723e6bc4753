//! `rpool-agent`: parses flags, installs logging, loads the config and runs
//! [`rpool_agent::run`] until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use rpool_agent::config::{Config, DEFAULT_CONFIG_PATH, Overrides};

const EX_OK: u8 = 0;
const EX_ERROR: u8 = 1;
const EX_USAGE: u8 = 64;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// rpool host agent: reports this host's identity, inventory, health and
/// utilization to the rpool controllers.
#[derive(Debug, Parser)]
#[command(
    name = "rpool-agent",
    version = rpool_proto::VERSION,
    after_help = "Examples:\n  \
        rpool-agent --config /etc/rpool/agent.toml\n  \
        rpool-agent --controller 10.0.0.1:7443 --controller 10.0.0.2:7443 --zone b\n  \
        rpool-agent --controller 127.0.0.1:7443 --state-dir /tmp/agent --simulate hw.toml\n\n\
        Logging: RPOOL_LOG=debug (default info)."
)]
struct Cli {
    /// Config file (TOML). A missing default file means defaults apply.
    #[arg(long, value_name = "PATH", env = "RPOOL_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Controller address host:port; repeat (or separate with commas) for several.
    #[arg(long = "controller", value_name = "ADDR", value_delimiter = ',')]
    controllers: Vec<String>,
    /// Directory holding the host id (created 0700).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Simulated-hardware file: report its cores, memory and load instead of the machine's.
    #[arg(long, value_name = "FILE")]
    simulate: Option<PathBuf>,
    /// Failure domain of this host (DNS-1123 label).
    #[arg(long, value_name = "Z")]
    zone: Option<String>,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Validate the config (and the simulated-hardware file, if any, and the
    /// TLS files once the certificate exists: key matches certificate, chain
    /// to the CA, validity, key not readable by all), print "config ok" and
    /// exit: 0 if valid, 64 if not. Touches nothing.
    #[arg(long)]
    check_config: bool,
}

fn install_tracing(format: LogFormat) {
    rpool_proto::logging::install(matches!(format, LogFormat::Json));
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EX_USAGE } else { EX_OK });
        }
    };
    install_tracing(cli.log_format);

    let (path, explicit) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let overrides = Overrides {
        controllers: cli.controllers.clone(),
        state_dir: cli.state_dir.clone(),
        zone: cli.zone.clone(),
        simulate: cli.simulate.clone(),
    };
    let config = match Config::load(&path, explicit, &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };

    if cli.check_config {
        if let Some(simulate) = &config.simulate
            && let Err(e) = rpool_agent::simulate::SimulatedSource::load(&simulate.file)
        {
            eprintln!("error: {e}");
            return ExitCode::from(EX_USAGE);
        }
        // The TLS files once the certificate is there (before enrollment or
        // provisioning there is none, and the agent waits for it).
        let files = config.tls_files();
        if files.cert.exists()
            && let Err(e) = files.check()
        {
            eprintln!("error: {}: [tls]: {e}", path.display());
            return ExitCode::from(EX_USAGE);
        }
        println!("config ok: {}", path.display());
        return ExitCode::from(EX_OK);
    }

    let result = async {
        let shutdown = shutdown_signal()?;
        rpool_agent::run(config, shutdown).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::from(EX_OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            // An invalid simulated-hardware file at start is a config error.
            let usage = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<rpool_agent::report::ReportError>(),
                    Some(rpool_agent::report::ReportError::Simulate(_))
                )
            });
            ExitCode::from(if usage { EX_USAGE } else { EX_ERROR })
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use anyhow::Context;
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
