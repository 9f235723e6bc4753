//! `rpoolctl completions bash|zsh|fish`.

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShellName {
    Bash,
    Zsh,
    Fish,
}

impl ShellName {
    fn as_str(self) -> &'static str {
        match self {
            Self::Bash => "bash",
            Self::Zsh => "zsh",
            Self::Fish => "fish",
        }
    }
}

/// Print a completion script for SHELL to stdout. The script calls back
/// into `rpoolctl` (found on PATH) at each TAB: subcommands, flags and fixed
/// values come from rpoolctl itself, pool names, host ids and hostnames,
/// and controller ids from the controllers (those of --controller typed on
/// the line, else RPOOL_CONTROLLER, else ctl.toml). With no controller
/// answering within 1.5 s nothing is offered and nothing is printed.
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
Then: rpoolctl pool show <TAB>, rpoolctl host show <TAB>, rpoolctl controller transfer-leader <TAB>

rpoolctl must be on PATH. Regenerate the script after upgrading rpoolctl.")]
pub struct CompletionsArgs {
    /// Shell to generate the script for
    #[arg(value_enum)]
    pub shell: ShellName,
}

pub fn exec(args: CompletionsArgs) -> anyhow::Result<()> {
    let script = crate::complete::registration(args.shell.as_str())?;
    crate::output::print(&String::from_utf8_lossy(&script))
}
