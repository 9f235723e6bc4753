//! `rpoolctl host ...`: the host noun.

use clap::Subcommand;

use super::{host_list, host_show};
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List hosts as a table (or JSON), optionally filtered by state and zone
    List(host_list::ListArgs),
    /// Show everything known about one host
    Show(host_show::ShowArgs),
}

pub async fn exec(cmd: HostCommand, settings: &Settings) -> anyhow::Result<()> {
    match cmd {
        HostCommand::List(args) => host_list::exec(args, settings).await,
        HostCommand::Show(args) => host_show::exec(args, settings).await,
    }
}
