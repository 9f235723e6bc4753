//! `rpoolctl completions bash|zsh|fish`.

use clap::{Args, ValueEnum};
use clap_complete::Shell;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShellName {
    Bash,
    Zsh,
    Fish,
}

/// Print a completion script for SHELL to stdout: subcommands, flags and
/// their fixed values (states, output formats, shells).
#[derive(Debug, Args)]
#[command(after_help = "\
Install (then open a new shell):
  bash, for you:      mkdir -p ~/.local/share/bash-completion/completions
                      rpoolctl completions bash > ~/.local/share/bash-completion/completions/rpoolctl
  bash, for everyone: rpoolctl completions bash | sudo tee /usr/share/bash-completion/completions/rpoolctl >/dev/null
                      (needs the bash-completion package)
  zsh:                mkdir -p ~/.zfunc && rpoolctl completions zsh > ~/.zfunc/_rpoolctl
                      and in ~/.zshrc, before `compinit`: fpath=(~/.zfunc $fpath)
  fish:               rpoolctl completions fish > ~/.config/fish/completions/rpoolctl.fish

Try it without installing: source <(rpoolctl completions bash)

Pool names, host ids and controller ids are not completed yet (the script is static).")]
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
