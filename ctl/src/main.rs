//! `rpoolctl` binary: parse flags, snapshot the environment, run, map the
//! outcome to an exit code. Everything else lives in the library.

use std::process::ExitCode;

use rpoolctl::exit;
use rpoolctl::settings::Env;

fn main() -> ExitCode {
    // A shell asking for completions (RPOOL_COMPLETE set) is answered here.
    rpoolctl::complete::complete_if_asked();
    let cli = match rpoolctl::cli::try_parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(rpoolctl::clap_exit_code(err.kind()));
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::from(exit::UNEXPECTED);
        }
    };
    match runtime.block_on(rpoolctl::run(cli, Env::from_process())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit::code_of(&err))
        }
    }
}
