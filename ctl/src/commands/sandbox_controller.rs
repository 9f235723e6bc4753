//! `rpoolctl sandbox start-controller N`: bring a killed sandbox controller
//! back, with the config, data dir and log `sandbox up` gave it.

use std::path::PathBuf;

use clap::Args;

use super::sandbox::DirArgs;
use crate::exit::{self, Failure};
use crate::output;
use crate::sandbox::layout::{self, Record};
use crate::sandbox::process::{self, CONTROLLER_BIN, Proc};
use crate::settings::Env;

/// Start a sandbox controller again (after `kill -9`, a crash or `kill`):
/// same id, address, config and data dir, so it rejoins the Raft group and
/// catches up from the leader. Its pid is written back to `sandbox.json`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  kill -9 $(rpoolctl sandbox status -o json | jq '.processes[] | select(.name == \"controller-1\") | .pid')
  rpoolctl sandbox start-controller 1
  rpoolctl controller list               # 1 is back, as a follower")]
pub struct StartControllerArgs {
    /// Controller id (1, 2, 3; as in `rpoolctl controller list`)
    #[arg(value_name = "ID")]
    pub id: u64,
    /// Directory holding rpool-controller [default: next to rpoolctl, else PATH]
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    #[command(flatten)]
    pub dir: DirArgs,
}

pub fn exec_start_controller(args: StartControllerArgs, env: &Env) -> anyhow::Result<()> {
    let (layout, mut record) = args.dir.load(env)?;
    let index = find(&record, args.id)?;
    let member = record.controllers[index].clone();
    let config = layout::controller_config(&member.dir);
    let proc = Proc {
        name: member.name.clone(),
        pid: member.pid,
        binary: CONTROLLER_BIN,
        needle: config.to_string_lossy().into_owned(),
    }
    .resolve();
    if proc.is_alive() {
        return Err(Failure::usage(format!(
            "{} is running (pid {}); stop it first (kill {}) to restart it",
            member.name, proc.pid, proc.pid
        ))
        .into());
    }
    let controller_bin =
        process::find_binary(CONTROLLER_BIN, args.bin_dir.as_deref()).map_err(Failure::usage)?;
    let no_env: [(&str, &str); 0] = [];
    let pid = process::start(&controller_bin, &config, &member.dir, &no_env)?.id();
    record.controllers[index].pid = pid;
    record.save(&layout.record())?;
    output::print(&format!(
        "Started {} (pid {pid}) on {}: it rejoins the group and catches up from the leader \
         (log: {}).\nCheck with `rpoolctl controller list`.\n",
        member.name,
        member.address,
        layout::log_file(&member.dir).display()
    ))
}

/// The index in the record of controller `id`, or a not-found error that
/// lists the ids there are.
fn find(record: &Record, id: u64) -> Result<usize, Failure> {
    record.controllers.iter().position(|c| c.id == id).ok_or_else(|| {
        let ids: Vec<String> = record.controllers.iter().map(|c| c.id.to_string()).collect();
        Failure::new(
            exit::NOT_FOUND,
            if ids.is_empty() {
                format!("no sandbox controller {id}: this sandbox has none recorded")
            } else {
                format!("no sandbox controller {id} (controllers: {})", ids.join(", "))
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::layout::{Layout, three_controllers};

    #[test]
    fn a_controller_is_found_by_id_and_an_unknown_id_lists_the_ids() {
        let layout = Layout::new("/sb".into());
        let record = Record {
            port: 7443,
            controllers: three_controllers(&layout),
            controller_pid: None,
            agents: vec![],
            started_at_unix_ms: 1,
        };
        assert_eq!(find(&record, 2).unwrap(), 1);
        let err = find(&record, 7).unwrap_err();
        assert_eq!(err.code, exit::NOT_FOUND);
        assert_eq!(err.message, "no sandbox controller 7 (controllers: 1, 2, 3)");
    }
}
