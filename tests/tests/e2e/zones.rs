//! Zone-aware workers end to end: a controller trio and agents in three
//! zones running the real kubeadm/kubectl command lines against kubesim.
//! A spread pool's workers are balanced over the zones, a dead worker is
//! replaced in its own zone, allowed zones keep control planes and workers
//! in them, an unknown zone is refused naming the fleet's zones, and
//! `rpoolctl pool create --dry-run` prints the per-zone totals.

use std::collections::BTreeMap;
use std::time::Duration;

use rpool_proto::v1::{CreatePoolRequest, ListPoolsRequest, Pool, PoolSpec};
use rpool_tests::{Profile, ctl};

use crate::world::World;

const GIB: u64 = 1 << 30;

impl World {
    /// The pool once `done` holds for it (90 s: joins on a loaded machine).
    async fn wait_zoned(&self, name: &str, what: &str, done: impl Fn(&Pool) -> bool) -> anyhow::Result<Pool> {
        self.wait_pool_within(name, what, Duration::from_secs(90), done)
            .await
    }

    /// Node names kubesim holds for the pool, through `hostname`'s root.
    fn kubesim_node_names(&self, hostname: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .kubesim
            .nodes(&self.node_root(hostname))?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    fn rpoolctl(&self, args: &[&str]) -> std::process::Output {
        let addr = self.cluster.controllers[0].addr();
        let mut all = vec!["--controller", addr.as_str()];
        all.extend_from_slice(args);
        ctl(&self.root.path().join("home"), &all)
    }
}

/// Worker cores per zone of the joined or joining workers.
fn worker_zones(pool: &Pool) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for m in pool.members.iter().filter(|m| m.role == "worker") {
        *out.entry(m.zone.clone()).or_default() += u64::from(m.cores);
    }
    out
}

/// The pool's own per-zone totals, as (zone, cores).
fn totals(pool: &Pool) -> BTreeMap<String, u64> {
    pool.zone_totals
        .iter()
        .map(|t| (t.zone.clone(), t.cores))
        .collect()
}

/// Two 8-core hosts in each of zones a, b, c, and a small 4-core host in
/// a and b (the control planes' favourites).
fn fleet() -> Vec<Profile> {
    let mut out = vec![
        Profile::new("cp-a", "a", 4, "8GiB"),
        Profile::new("cp-b", "b", 4, "8GiB"),
    ];
    for z in ["a", "b", "c"] {
        for i in 1..=2 {
            out.push(Profile::new(&format!("w-{z}{i}"), z, 8, "32GiB"));
        }
    }
    out
}

#[tokio::test]
async fn workers_spread_over_zones_are_replaced_in_their_zone_and_allowed_zones_hold() -> anyhow::Result<()> {
    let mut world = World::start(fleet()).await?;
    let mut admin = world.admin().await?;
    eprintln!("zones: trio and 8 agents up");

    // An unknown zone is bad input, named with the zones the fleet has;
    // nothing is created.
    let refused = admin
        .create_pool(CreatePoolRequest {
            spec: Some(PoolSpec {
                name: "web".into(),
                cores: 8,
                memory_bytes: 32 * GIB,
                control_planes: 1,
                zones: vec!["a".into(), "z".into()],
                ..PoolSpec::default()
            }),
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("create_pool.spec.zones")
            && refused.message().contains("unknown zone(s) z")
            && refused.message().contains("a, b, c"),
        "{}",
        refused.message()
    );
    let out = world.rpoolctl(&[
        "pool",
        "create",
        "web",
        "--cores",
        "8",
        "--memory",
        "32GiB",
        "--zones",
        "a,nowhere",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains("unknown zone(s) nowhere") && stderr.contains("a, b, c"),
        "{stderr}"
    );
    let pools = admin.list_pools(ListPoolsRequest {}).await?.into_inner().pools;
    assert!(pools.is_empty(), "{pools:?}");

    eprintln!("zones: unknown zones refused");
    // The dry run prints the per-zone totals: 24 cores spread is 8 per zone.
    let out = world.rpoolctl(&[
        "pool",
        "create",
        "web",
        "--cores",
        "24",
        "--memory",
        "96GiB",
        "--zone-policy",
        "spread",
        "--dry-run",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("Workers per zone (spread (all zones)):"),
        "{stdout}"
    );
    for z in ["a", "b", "c"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [z, "1", "8", "32GiB"]),
            "zone {z}: {stdout}"
        );
    }

    eprintln!("zones: dry run printed");
    // Created: one worker per zone, and kubesim holds those nodes.
    admin
        .create_pool(CreatePoolRequest {
            spec: Some(PoolSpec {
                name: "web".into(),
                cores: 24,
                memory_bytes: 96 * GIB,
                control_planes: 1,
                zone_policy: "spread".into(),
                ..PoolSpec::default()
            }),
            dry_run: false,
        })
        .await?;
    let pool = world
        .wait_zoned("web", "pool web ready", |p| p.phase == "ready")
        .await?;
    let even: BTreeMap<String, u64> = [("a", 8), ("b", 8), ("c", 8)]
        .into_iter()
        .map(|(z, c)| (z.to_owned(), c))
        .collect();
    assert_eq!(worker_zones(&pool), even, "{pool:?}");
    assert_eq!(totals(&pool), even);
    assert_eq!(pool.spec.as_ref().map(|s| s.zone_policy.as_str()), Some("spread"));
    let cp = pool
        .members
        .iter()
        .find(|m| m.role == "control-plane")
        .expect("a control plane")
        .hostname
        .clone();
    let mut nodes = world.kubesim_node_names(&cp)?;
    nodes.sort();
    let mut expected: Vec<String> = pool.members.iter().map(|m| m.node_name.clone()).collect();
    expected.sort();
    assert_eq!(nodes, expected, "kubesim holds exactly the chosen nodes");

    eprintln!("zones: pool web ready");
    // The zone-b worker dies. Free 8-core hosts are in a, b and c (a's
    // sorts first); spread replaces it in b.
    let dead = pool
        .members
        .iter()
        .find(|m| m.role == "worker" && m.zone == "b")
        .expect("a worker in b")
        .clone();
    world.kill_host(&dead.hostname)?;
    let healed = world
        .wait_zoned("web", "the dead zone-b worker replaced", |p| {
            p.phase == "ready"
                && !p.members.iter().any(|m| m.host_id == dead.host_id)
                && p.members
                    .iter()
                    .filter(|m| m.role == "worker" && m.state == "joined")
                    .count()
                    == 3
        })
        .await?;
    assert_eq!(worker_zones(&healed), even, "{healed:?}");
    let replacement = healed
        .members
        .iter()
        .find(|m| m.role == "worker" && m.zone == "b")
        .expect("a worker in b");
    assert_ne!(replacement.host_id, dead.host_id);

    eprintln!("zones: replaced in zone b");
    // Allowed zones: a pool limited to a and c never takes cp-b, the
    // smallest free host (the control planes' favourite), nor any b host.
    let out = world.rpoolctl(&[
        "pool",
        "create",
        "batch",
        "--cores",
        "8",
        "--memory",
        "32GiB",
        "--zones",
        "a,c",
        "--zone-policy",
        "pack",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["zone_policy"], "pack", "{json}");
    assert_eq!(json["zones"], serde_json::json!(["a", "c"]), "{json}");
    let batch = world
        .wait_zoned("batch", "pool batch ready", |p| p.phase == "ready")
        .await?;
    assert!(
        batch.members.iter().all(|m| m.zone == "a" || m.zone == "c"),
        "{:?}",
        batch.members
    );
    assert!(batch.members.iter().all(|m| m.hostname != "cp-b"));
    Ok(())
}
