//! The clap tree: global flags here, subcommands in [`crate::commands`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use crate::commands::Command;

const EXAMPLES: &str = "\
Examples:
  rpoolctl sandbox up                    # a local controller + 6 simulated hosts
  rpoolctl host list                     # every host, as a table
  rpoolctl host list --state down -o json
  rpoolctl host show 3f2a                # one host, by id or unique prefix
  rpoolctl host label 3f2a rack=r12 gpu- # set rack, remove gpu
  rpoolctl pool create web --cores 32 --memory 128GiB --dry-run
  rpoolctl pool create web --cores 32 --memory 128GiB --wait
  rpoolctl pool resize web --cores 64 --yes --wait
  rpoolctl pool kubeconfig web > web.kubeconfig
  rpoolctl events --pool web --follow
  rpoolctl demo                          # create, resize, destroy a pool on the sandbox
  rpoolctl controller list               # the Raft group and its progress
  rpoolctl what-if zone-down b           # what healing would do if zone b went down
  rpoolctl token create --uses 1         # a bootstrap token + [enroll] snippet for an agent
  rpoolctl status --controller 10.0.0.1:7443,10.0.0.2:7443

Environment:
  RPOOL_CONTROLLER   controller addresses (like --controller)
  RPOOL_CTL_CONFIG   path of ctl.toml (like --config)

Exit codes:
  0 ok, 1 unexpected error, 3 not found, 64 usage or config error,
  65 rejected by the controller (invalid or refused), 69 controller unavailable, 75 timed out,
  77 permission denied";

/// rpoolctl: the rpool admin CLI.
#[derive(Debug, Parser)]
#[command(
    name = "rpoolctl",
    version = rpool_proto::VERSION,
    about = "The rpool admin CLI: pools of Kubernetes sized in cores and memory, hosts, controllers, a local sandbox",
    after_help = EXAMPLES,
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted by every subcommand.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Controller address(es) to try in order [env: RPOOL_CONTROLLER] [default: from ctl.toml, else 127.0.0.1:7443]
    #[arg(long, global = true, value_name = "ADDR[,ADDR...]")]
    pub controller: Option<String>,

    /// Path of ctl.toml [env: RPOOL_CTL_CONFIG] [default: $XDG_CONFIG_HOME/rpool/ctl.toml, else ~/.config/rpool/ctl.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Timeout per controller request, e.g. 500ms, 10s, 1m [default: 10s; with --wait and for `demo`: the whole wait, 10m; for `sandbox up`: wait for agents, 30s]
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub timeout: Option<Duration>,

    /// CA certificate the controllers' certificates must chain to [env: RPOOL_TLS_CA] [default: ctl.toml [tls] ca, else pki/ca.crt next to ctl.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,

    /// Admin certificate presented to the controllers [env: RPOOL_TLS_CERT] [default: ctl.toml [tls] cert, else pki/admin.crt next to ctl.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// Private key of the admin certificate [env: RPOOL_TLS_KEY] [default: ctl.toml [tls] key, else pki/admin.key next to ctl.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
}

/// The clap command of [`Cli`] as rpoolctl parses it: every option that
/// takes a value accepts a negative number as that value, so `--cores -5`
/// reaches the option's own range check ("-5 is not in 1..=4096") instead
/// of clap's "unexpected argument '-5'; use `-- -5`".
pub fn command() -> clap::Command {
    negative_numbers_are_values(<Cli as clap::CommandFactory>::command())
}

fn negative_numbers_are_values(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| {
        if arg.get_action().takes_values() {
            arg.allow_negative_numbers(true)
        } else {
            arg
        }
    })
    .mut_subcommands(negative_numbers_are_values)
}

/// Parses argv with [`command`].
pub fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::FromArgMatches;
    let mut cmd = command();
    let matches = cmd.try_get_matches_from_mut(args)?;
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
}

/// clap value parser for an integer option in `min..=max`: anything else,
/// a negative number included, is `"-5" is out of range (accepted an
/// integer 1..=1000000)`.
pub fn whole_number<T>(
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<u64>,
{
    move |text: &str| {
        text.trim()
            .parse::<i128>()
            .ok()
            .filter(|n| (i128::from(min)..=i128::from(max)).contains(n))
            .and_then(|n| T::try_from(n as u64).ok())
            .ok_or_else(|| format!("{text:?} is out of range (accepted an integer {min}..={max})"))
    }
}

/// clap value parser for durations (`10s`, `500ms`, `2m`).
pub fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    let d = rpool_proto::units::parse_duration(text).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than 0".to_string());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_clap_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_are_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "rpoolctl",
            "host",
            "list",
            "--controller",
            "a:1",
            "--timeout",
            "2s",
        ])
        .unwrap();
        assert_eq!(cli.global.controller.as_deref(), Some("a:1"));
        assert_eq!(cli.global.timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    fn a_negative_number_gets_the_options_range_error() {
        let err = try_parse_from([
            "rpoolctl", "pool", "create", "web", "--cores", "-5", "--memory", "8GiB",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        let text = err.to_string();
        assert!(
            text.contains("\"-5\" is out of range (accepted an integer 1..="),
            "{text}"
        );
        assert!(!text.contains("-- -5"), "{text}");
        command().debug_assert();
    }

    #[test]
    fn a_bad_timeout_is_a_parse_error() {
        let err = Cli::try_parse_from(["rpoolctl", "status", "--timeout", "10"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }
}
