//! `rpoolctl pool destroy NAME`.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Args;
use rpool_proto::v1::{DestroyPoolRequest, Pool};

use super::pool::{self, parse_pool_name, plural};
use super::pool_show;
use super::pool_wait::{self, Until};
use crate::client::{self, Controller};
use crate::confirm::{self, Confirmation};
use crate::output;
use crate::settings::Settings;
use crate::view::PoolView;

/// Destroy a pool: every host is reset (`kubeadm reset`) and returned to the
/// fleet, then the pool record goes.
///
/// Asks to type the pool name when stdin is a terminal; otherwise --yes is
/// required (exit 64). `--wait` shows progress on stderr until the pool is
/// gone (bounded by --timeout, default 10m).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl pool destroy web
  rpoolctl pool destroy web --yes --wait")]
pub struct DestroyArgs {
    /// Pool name
    #[arg(value_name = "NAME", value_parser = parse_pool_name, add = crate::complete::pools())]
    pub name: String,
    /// Do not ask for confirmation (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Wait until the pool is gone, showing progress on stderr
    #[arg(long)]
    pub wait: bool,
}

pub async fn exec(args: DestroyArgs, settings: &Settings) -> anyhow::Result<()> {
    // Refuse before touching the network: the answer does not depend on it.
    let confirmation = confirm::confirmation(
        args.yes,
        std::io::stdin().is_terminal(),
        &format!("destroy pool {}", args.name),
    )?;
    let ctl = client::connect(&settings.controllers, pool::request_timeout(settings, args.wait)).await?;
    if confirmation == Confirmation::Ask {
        let current = PoolView::from(&pool_show::get(&ctl, &args.name).await?);
        eprint!("{}", render_warning(&current));
        let yes = confirm::ask_typed(
            "Type the pool name to confirm:",
            &args.name,
            &mut std::io::stdin().lock(),
            &mut std::io::stderr(),
        )
        .context("reading the answer")?;
        if !yes {
            return Err(confirm::declined(&format!(
                "the name typed is not {}; pool {} was not destroyed",
                args.name, args.name
            ))
            .into());
        }
    }
    let pool = PoolView::from(&destroy(&ctl, &args.name).await?);
    output::print(&render_started(&pool))?;
    if args.wait {
        pool_wait::wait_on_stderr(&ctl, &args.name, Until::Gone, settings).await?;
        output::print(&format!(
            "Pool {} is gone; its {} back in the fleet.\n",
            args.name,
            plural(pool.members.len(), "host is", "hosts are")
        ))?;
    }
    Ok(())
}

/// `DestroyPool`.
pub async fn destroy(ctl: &Controller, name: &str) -> anyhow::Result<Pool> {
    crate::rpc!(
        ctl,
        destroy_pool,
        DestroyPoolRequest {
            name: name.to_string()
        }
    )
    .with_context(|| format!("destroying pool {name}"))
}

/// What destroying the pool does, shown before the question.
pub fn render_warning(p: &PoolView) -> String {
    let c = p.counts();
    format!(
        "Destroying pool {} resets its {} ({} control plane(s), {} worker(s)) with kubeadm reset and \
         returns them to the fleet; workloads on it are lost.\n",
        p.name,
        plural(p.members.len(), "host", "hosts"),
        c.control_planes,
        c.workers + c.leaving
    )
}

/// After `DestroyPool`.
pub fn render_started(p: &PoolView) -> String {
    format!(
        "Pool {} is {}: resetting {}.\n",
        p.name,
        p.phase,
        plural(p.members.len(), "host", "hosts")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::commands::Command;
    use crate::commands::pool::PoolCommand;
    use crate::commands::pool_wait::tests::pool;
    use crate::testing::{Fake, Seen};
    use clap::Parser;

    #[test]
    fn destroy_takes_a_name_yes_and_wait() {
        let cli = Cli::try_parse_from(["rpoolctl", "pool", "destroy", "web", "--yes", "--wait"]).unwrap();
        let Command::Pool(PoolCommand::Destroy(a)) = cli.command else {
            panic!("not pool destroy")
        };
        assert!(a.yes && a.wait && a.name == "web");
        assert!(Cli::try_parse_from(["rpoolctl", "pool", "destroy"]).is_err());
        assert!(Cli::try_parse_from(["rpoolctl", "pool", "destroy", "web", "-o", "json"]).is_err());
    }

    #[test]
    fn the_warning_and_the_start_say_how_many_hosts_are_reset() {
        let p = PoolView::from(&pool("ready", &["joined", "joined", "joined"], None));
        assert_eq!(
            render_warning(&p),
            "Destroying pool web resets its 3 hosts (1 control plane(s), 2 worker(s)) with kubeadm reset and \
             returns them to the fleet; workloads on it are lost.\n"
        );
        let mut p = p;
        p.phase = "deleting".into();
        assert_eq!(render_started(&p), "Pool web is deleting: resetting 3 hosts.\n");
    }

    #[tokio::test]
    async fn destroy_sends_the_name() {
        let fake = Fake {
            pool: pool("ready", &["joined"], None),
            ..Fake::default()
        };
        let ctl = fake.clone().serve().await;
        let got = destroy(&ctl, "web").await.unwrap();
        assert_eq!(got.phase, "deleting");
        assert_eq!(fake.seen(), [Seen::DestroyPool("web".into())]);
    }
}
