//! Writes rpoolctl's man pages (section 1) from its clap definition, one per
//! command and subcommand (`rpoolctl.1`, `rpoolctl-pool-create.1`, ...), into
//! the directory given as the only argument. `packaging/deb/build.sh` runs
//! it: `cargo run -p rpoolctl --example rpoolctl-mangen -- DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: rpoolctl-mangen DIR");
        return ExitCode::from(64);
    };
    let dir = PathBuf::from(dir);
    let result = std::fs::create_dir_all(&dir)
        .and_then(|()| clap_mangen::generate_to(rpoolctl::cli::Cli::command(), &dir));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing man pages to {}: {e}", dir.display());
            ExitCode::from(1)
        }
    }
}
