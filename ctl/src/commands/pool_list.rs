//! `rpoolctl pool list`.

use anyhow::Context;
use clap::Args;
use rpool_proto::units::format_size;
use rpool_proto::v1::ListPoolsRequest;

use crate::client;
use crate::clock;
use crate::output::{self, Format, OutputArgs};
use crate::settings::Settings;
use crate::table::Table;
use crate::view::PoolView;

/// List pools, ordered by name.
///
/// CONTROL PLANES and WORKERS are joined/total members (and how many are
/// leaving); CORES and MEMORY are what the workers have / what was asked.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  rpoolctl pool list
  rpoolctl pool list -o json | jq -r '.[] | select(.phase != \"ready\") | .name'")]
pub struct ListArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn exec(args: ListArgs, settings: &Settings) -> anyhow::Result<()> {
    let ctl = client::connect(&settings.controllers, settings.timeout()).await?;
    let response = crate::rpc!(ctl, list_pools, ListPoolsRequest {}).context("listing pools")?;
    let pools: Vec<PoolView> = response.pools.iter().map(PoolView::from).collect();
    match args.output.output {
        Format::Json => output::print_json(&pools),
        Format::Table => output::print(&render(&pools, rpool_proto::clock::unix_ms_now())),
    }
}

/// The `pool list` table, or `No pools.`; `now_ms` makes AGE deterministic.
pub fn render(pools: &[PoolView], now_ms: u64) -> String {
    if pools.is_empty() {
        return "No pools. Create one with: rpoolctl pool create NAME --cores N --memory SIZE\n".to_string();
    }
    let mut table = Table::new([
        "NAME",
        "PHASE",
        "CONTROL PLANES",
        "WORKERS",
        "CORES",
        "MEMORY",
        "AGE",
    ]);
    for p in pools {
        let c = p.counts();
        let mut workers = format!("{}/{}", c.workers_joined, c.workers);
        if c.leaving > 0 {
            workers.push_str(&format!(" ({} leaving)", c.leaving));
        }
        table.row([
            p.name.clone(),
            p.phase.clone(),
            format!("{}/{}", c.control_planes_joined, c.control_planes),
            workers,
            format!("{}/{}", p.worker_cores, p.cores),
            format!(
                "{}/{}",
                format_size(p.worker_memory_bytes),
                format_size(p.memory_bytes)
            ),
            clock::age(now_ms, p.created_at_unix_ms),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::pool_wait::tests::pool;

    #[test]
    fn the_table_shows_have_over_want_and_member_counts() {
        let web = PoolView::from(&pool("ready", &["joined", "joined", "joined"], None));
        let mut ci = pool("resizing", &["joined", "joining", "joined", "leaving"], None);
        ci.spec.as_mut().unwrap().name = "ci".into();
        ci.created_at_unix_ms = 1_700_000_000_000 - 7_200_000;
        let ci = PoolView::from(&ci);
        assert_eq!(
            render(&[ci, web], 1_700_000_310_000),
            "NAME  PHASE     CONTROL PLANES  WORKERS          CORES  MEMORY         AGE\n\
             ci    resizing  1/1             1/2 (1 leaving)  32/30  128GiB/120GiB  2h5m\n\
             web   ready     1/1             2/2              32/30  128GiB/120GiB  5m10s\n"
        );
    }

    #[test]
    fn no_pools_says_how_to_make_one_and_json_is_an_empty_array() {
        assert!(render(&[], 0).starts_with("No pools."));
        assert_eq!(serde_json::to_string(&Vec::<PoolView>::new()).unwrap(), "[]");
    }
}
