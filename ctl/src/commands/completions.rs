//! `rpoolctl completions bash|zsh|fish`.

use clap::{Args, ValueEnum};
use clap_complete::Shell;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShellName {
    Bash,
    Zsh,
    Fish,
}

/// Print a completion script for SHELL to stdout.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl completions bash > /etc/bash_completion.d/rpoolctl
  rpoolctl completions zsh > \"${fpath[1]}/_rpoolctl\"
  rpoolctl completions fish > ~/.config/fish/completions/rpoolctl.fish")]
pub struct CompletionsArgs {
    /// Shell to generate the script for
    #[arg(value_enum)]
    pub shell: ShellName,
}

pub fn exec(args: CompletionsArgs) -> anyhow::Result<()> {
    let shell = match args.shell {
        ShellName::Bash => Shell::Bash,
        ShellName::Zsh => Shell::Zsh,
        ShellName::Fish => Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut crate::cli::command(), "rpoolctl", &mut script);
    crate::output::print(&String::from_utf8_lossy(&script))
}
