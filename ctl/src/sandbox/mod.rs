//! The local sandbox: a group of 1, 3 or 5 controllers and N simulated
//! agents on loopback, run as detached processes under one directory.
//!
//! - [`profile`]: the simulated hosts and the config files written for them
//!   (pure: unit-tested without touching disk).
//! - [`layout`]: where everything lives under the sandbox dir, and
//!   `sandbox.json`, the record of what was started.
//! - [`pki`]: the sandbox's own CA and the certificates of its controllers,
//!   agents and admin.
//! - [`process`]: finding the binaries, spawning detached processes, checking
//!   a pid is still ours, and stopping with bounded waits.
//! - [`poller`], [`progress`]: how `sandbox up` waits for its controllers
//!   and agents, and shows it.
//!
//! Layout of `{dir}`:
//! ```text
//! sandbox.json                       ports, pids, start time
//! pki/ca.crt, ca.key, controller-N.crt/.key, admin.crt/.key
//! controllers/controller-N/controller.toml, log, data/
//! agents/agent-N/agent.toml, hardware.toml, log, state/ (host_id, tls/)
//! ```

pub mod layout;
pub mod pki;
pub mod poller;
pub mod process;
pub mod profile;
pub mod progress;

/// First line of a `ctl.toml` that `sandbox up` wrote and `sandbox down` may remove.
pub const MANAGED_HEADER: &str = "# managed by rpoolctl sandbox";

/// Whether the file at `path` was written by `sandbox up`.
pub fn is_managed_config(text: &str) -> bool {
    text.lines().next() == Some(MANAGED_HEADER)
}

/// The `ctl.toml` written by `sandbox up`, listing every controller.
pub fn managed_config(addresses: &[String]) -> String {
    let list = addresses
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{MANAGED_HEADER}\n\
         # Written by `rpoolctl sandbox up`, removed by `rpoolctl sandbox down`.\n\
         # Delete the first line to keep this file as your own.\n\
         controllers = [{list}]\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_managed_config_is_recognised_by_its_first_line_and_parses() {
        let text = managed_config(&["127.0.0.1:7440".to_string(), "127.0.0.1:7441".to_string()]);
        assert!(is_managed_config(&text));
        assert!(!is_managed_config(
            "controllers = []\n# managed by rpoolctl sandbox\n"
        ));
        let cfg = crate::settings::CtlConfig::parse(std::path::Path::new("ctl.toml"), &text).unwrap();
        assert_eq!(cfg.controllers.unwrap(), ["127.0.0.1:7440", "127.0.0.1:7441"]);
    }
}
