//! `rpoolctl host ...`: the host noun.

use clap::Subcommand;
use rpool_proto::v1::ListHostsRequest;

use super::{host_label, host_list, host_maintenance, host_show};
use crate::client::Controller;
use crate::exit::{self, Failure};
use crate::settings::Settings;

/// Shortest host-id prefix the controllers accept.
pub const ID_PREFIX_MIN_CHARS: usize = 4;
/// A host id: a lowercase UUID, 36 characters.
pub const ID_CHARS: usize = 36;

/// Whether `text` can be a host id or a prefix of one (4..=36 of `[0-9a-f-]`).
pub fn is_id_prefix(text: &str) -> bool {
    (ID_PREFIX_MIN_CHARS..=ID_CHARS).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '-')
}

/// The host id (or id prefix) to send for what the user typed: an id or
/// prefix as is, else the id of the host with that exact hostname. Anything
/// else is not found (exit 3), said without the controller's field paths.
pub async fn resolve_id(ctl: &Controller, wanted: &str) -> anyhow::Result<String> {
    if is_id_prefix(wanted) {
        return Ok(wanted.to_string());
    }
    let hosts = crate::rpc!(ctl, list_hosts, ListHostsRequest::default())?.hosts;
    let named: Vec<(String, &str)> = hosts
        .iter()
        .map(|h| {
            (
                h.facts.as_ref().map(|f| f.hostname.clone()).unwrap_or_default(),
                h.host_id.as_str(),
            )
        })
        .collect();
    match_hostname(named.iter().map(|(name, id)| (name.as_str(), *id)), wanted).map_err(Into::into)
}

/// The id of the one host named `wanted`, from (hostname, id) pairs.
fn match_hostname<'a>(
    hosts: impl Iterator<Item = (&'a str, &'a str)>,
    wanted: &str,
) -> Result<String, Failure> {
    let ids: Vec<&str> = hosts
        .filter(|(name, _)| *name == wanted)
        .map(|(_, id)| id)
        .collect();
    match ids.as_slice() {
        [one] => Ok((*one).to_string()),
        [] => Err(Failure::new(
            exit::NOT_FOUND,
            format!(
                "no host {wanted:?}: give a hostname, a host id, or a unique id prefix of at least \
                 {ID_PREFIX_MIN_CHARS} characters of 0-9a-f (`rpoolctl host list` shows both)"
            ),
        )),
        many => Err(Failure::usage(format!(
            "{} hosts are named {wanted:?} ({}); give the host id",
            many.len(),
            many.join(", ")
        ))),
    }
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List hosts as a table (or JSON), optionally filtered by state and zone
    List(host_list::ListArgs),
    /// Show everything known about one host
    Show(host_show::ShowArgs),
    /// Set (KEY=VALUE) or remove (KEY-) admin labels on a host
    Label(host_label::LabelArgs),
    /// Cordon a host: never placed in a pool again until uncordoned
    Cordon(host_maintenance::CordonArgs),
    /// Make a cordoned host ready for placement again
    Uncordon(host_maintenance::CordonArgs),
    /// Cordon a host and move it out of its pool (replacement joins first)
    Drain(host_maintenance::DrainArgs),
}

pub async fn exec(cmd: HostCommand, settings: &Settings) -> anyhow::Result<()> {
    match cmd {
        HostCommand::List(args) => host_list::exec(args, settings).await,
        HostCommand::Show(args) => host_show::exec(args, settings).await,
        HostCommand::Label(args) => host_label::exec(args, settings).await,
        HostCommand::Cordon(args) => host_maintenance::cordon(args, settings, true).await,
        HostCommand::Uncordon(args) => host_maintenance::cordon(args, settings, false).await,
        HostCommand::Drain(args) => host_maintenance::drain(args, settings).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_prefixes_are_told_from_hostnames() {
        assert!(is_id_prefix("3f2a"));
        assert!(is_id_prefix("3f2a9c1e-0b4e-4c2a-9d7e-1a2b3c4d5e6f"));
        assert!(!is_id_prefix("3f2"));
        assert!(!is_id_prefix("zzzz"));
        assert!(!is_id_prefix("sim-a-1"));
        assert!(!is_id_prefix("3F2A"));
    }

    #[test]
    fn a_hostname_finds_its_id_and_an_unknown_one_is_not_found_without_field_paths() {
        let hosts = [
            ("sim-a-1", "aaaa-1"),
            ("sim-b-1", "bbbb-1"),
            ("twin", "c1"),
            ("twin", "c2"),
        ];
        assert_eq!(match_hostname(hosts.into_iter(), "sim-b-1").unwrap(), "bbbb-1");
        let none = match_hostname(hosts.into_iter(), "zzzz").unwrap_err();
        assert_eq!(none.code, exit::NOT_FOUND);
        assert!(none.message.starts_with("no host \"zzzz\": "), "{}", none.message);
        assert!(!none.message.contains("get_host"), "{}", none.message);
        let two = match_hostname(hosts.into_iter(), "twin").unwrap_err();
        assert_eq!(two.code, exit::USAGE);
        assert!(two.message.contains("c1, c2"), "{}", two.message);
    }
}
