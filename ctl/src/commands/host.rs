//! `rpoolctl host ...`: the host noun.

use clap::Subcommand;

use super::{host_label, host_list, host_show};
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List hosts as a table (or JSON), optionally filtered by state and zone
    List(host_list::ListArgs),
    /// Show everything known about one host
    Show(host_show::ShowArgs),
    /// Set (KEY=VALUE) or remove (KEY-) admin labels on a host
    Label(host_label::LabelArgs),
}

pub async fn exec(cmd: HostCommand, settings: &Settings) -> anyhow::Result<()> {
    match cmd {
        HostCommand::List(args) => host_list::exec(args, settings).await,
        HostCommand::Show(args) => host_show::exec(args, settings).await,
        HostCommand::Label(args) => host_label::exec(args, settings).await,
    }
}
