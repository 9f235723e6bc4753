//! Dynamic shell completion: the scripts `rpoolctl completions SHELL`
//! prints call back into rpoolctl (`RPOOL_COMPLETE=SHELL rpoolctl -- WORDS…`,
//! clap_complete's `CompleteEnv`), which completes subcommands and flags
//! from the clap tree and pool names, host ids and hostnames, and
//! controller ids from the controllers.
//!
//! The controllers are asked with the settings a command would use
//! (`--controller`/`--config`/`--tls-*` typed earlier on the line, else the
//! environment, else `ctl.toml`), within [`BUDGET_MS`]. Completion never
//! fails loudly: no answer, a bad config or a missing certificate give no
//! candidates and print nothing on stderr.

use std::ffi::{OsStr, OsString};
use std::time::Duration;

use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};
use rpool_proto::v1::{ListControllersRequest, ListHostsRequest, ListPoolsRequest};

use crate::cli::GlobalArgs;
use crate::settings::{Env, Settings};

/// Environment variable that switches rpoolctl into completion mode.
pub const VAR: &str = "RPOOL_COMPLETE";

/// Longest time one completion may spend asking the controllers, in ms:
/// a shell that waits longer than this feels stuck.
pub const BUDGET_MS: u64 = 1500;

/// Answers the shell and exits when [`VAR`] is set; returns otherwise.
pub fn complete_if_asked() {
    clap_complete::CompleteEnv::with_factory(crate::cli::command)
        .var(VAR)
        .bin("rpoolctl")
        .completer("rpoolctl")
        .complete();
}

/// The registration script for `shell` (what `rpoolctl completions SHELL` prints).
pub fn registration(shell: &str) -> std::io::Result<Vec<u8>> {
    let shells = clap_complete::env::Shells::builtins();
    let completer = shells
        .completer(shell)
        .ok_or_else(|| std::io::Error::other(format!("no completion support for {shell}")))?;
    let mut script = Vec::new();
    completer.write_registration(VAR, "rpoolctl", "rpoolctl", "rpoolctl", &mut script)?;
    Ok(script)
}

/// Completes pool names.
pub fn pools() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| candidates(Kind::Pools, current))
}

/// Completes host ids (with the hostname as help) and hostnames.
pub fn hosts() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| candidates(Kind::Hosts, current))
}

/// Completes controller ids (with the address and role as help).
pub fn controllers() -> ArgValueCompleter {
    ArgValueCompleter::new(|current: &OsStr| candidates(Kind::Controllers, current))
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Pools,
    Hosts,
    Controllers,
}

fn candidates(kind: Kind, current: &OsStr) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy().into_owned();
    let Ok(settings) = Settings::resolve(&global_args_typed(std::env::args_os()), &Env::from_process())
    else {
        return Vec::new();
    };
    crate::client::use_tls(settings.tls.clone());
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return Vec::new();
    };
    let budget = Duration::from_millis(BUDGET_MS);
    let found = runtime.block_on(async {
        tokio::time::timeout(budget, ask(kind, &settings.controllers, budget))
            .await
            .ok()
            .flatten()
    });
    found
        .unwrap_or_default()
        .into_iter()
        .filter(|(value, _)| value.starts_with(&prefix))
        .map(|(value, help)| CompletionCandidate::new(value).help(help.map(Into::into)))
        .collect()
}

/// (value, help) pairs, or `None` when no controller answered.
async fn ask(kind: Kind, controllers: &[String], budget: Duration) -> Option<Vec<(String, Option<String>)>> {
    let ctl = crate::client::connect(controllers, budget).await.ok()?;
    let found = match kind {
        Kind::Pools => crate::rpc!(ctl, list_pools, ListPoolsRequest {})
            .ok()?
            .pools
            .into_iter()
            .map(|p| (p.spec.map(|s| s.name).unwrap_or_default(), None))
            .collect(),
        Kind::Hosts => {
            let hosts = crate::rpc!(ctl, list_hosts, ListHostsRequest::default())
                .ok()?
                .hosts;
            let mut found = Vec::new();
            for h in hosts {
                let name = h.facts.map(|f| f.hostname).unwrap_or_default();
                if !name.is_empty() {
                    found.push((name.clone(), Some(h.host_id.clone())));
                }
                found.push((h.host_id, (!name.is_empty()).then_some(name)));
            }
            found
        }
        Kind::Controllers => crate::rpc!(ctl, list_controllers, ListControllersRequest {})
            .ok()?
            .controllers
            .into_iter()
            .map(|c| (c.id.to_string(), Some(format!("{} {}", c.address, c.role))))
            .collect(),
    };
    Some(found)
}

/// The global connection flags already typed on the line being completed
/// (the shell passes it as `rpoolctl -- rpoolctl WORDS…`), so
/// `rpoolctl --controller 10.0.0.1:7443 pool show <TAB>` asks that controller.
fn global_args_typed(args: impl IntoIterator<Item = OsString>) -> GlobalArgs {
    let words: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut global = GlobalArgs::default();
    let mut i = 0;
    while i < words.len() {
        let (flag, inline) = match words[i].split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (words[i].as_str(), None),
        };
        let takes_next = inline.is_none();
        let value = inline.or_else(|| words.get(i + 1).cloned());
        let used = match (flag, value) {
            ("--controller", Some(v)) => {
                global.controller = Some(v);
                true
            }
            ("--config", Some(v)) => {
                global.config = Some(v.into());
                true
            }
            ("--tls-ca", Some(v)) => {
                global.tls_ca = Some(v.into());
                true
            }
            ("--tls-cert", Some(v)) => {
                global.tls_cert = Some(v.into());
                true
            }
            ("--tls-key", Some(v)) => {
                global.tls_key = Some(v.into());
                true
            }
            _ => false,
        };
        i += if used && takes_next { 2 } else { 1 };
    }
    global
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn connection_flags_typed_on_the_line_are_used() {
        let g = global_args_typed(words(
            "rpoolctl -- rpoolctl --controller 10.0.0.1:7443 pool show --config=/x/ctl.toml w",
        ));
        assert_eq!(g.controller.as_deref(), Some("10.0.0.1:7443"));
        assert_eq!(g.config.as_deref(), Some(std::path::Path::new("/x/ctl.toml")));
        assert!(g.tls_ca.is_none());
        // A flag still being typed (no value yet) sets nothing.
        let g = global_args_typed(words("rpoolctl -- rpoolctl pool show --controller"));
        assert!(g.controller.is_none());
    }

    #[test]
    fn every_supported_shell_has_a_registration_that_calls_back_into_rpoolctl() {
        for shell in ["bash", "zsh", "fish"] {
            let script = String::from_utf8(registration(shell).unwrap()).unwrap();
            assert!(script.contains(VAR), "{shell}: {script}");
            assert!(script.contains("rpoolctl"), "{shell}: {script}");
        }
        assert!(registration("tcsh").is_err());
    }
}
