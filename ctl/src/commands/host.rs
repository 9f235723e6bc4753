//! `rpoolctl host ...`: the host noun.

use clap::Subcommand;

use super::{host_label, host_list, host_maintenance, host_show};
use crate::settings::Settings;

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
