//! `rpoolctl what-if` end to end: a controller trio with fast liveness,
//! agents running the real kubeadm/kubectl command lines against kubesim.
//! The answer is asked through a follower (forwarded to the leader), then
//! the hosts it names are really killed (agent killed, kubesim node marked
//! down, as `rpoolctl sandbox kill-host` does), and what the controllers
//! then do — replacement hosts, storm hold-back, the pool's workers — must
//! be what the answer said.

use std::time::Duration;

use rpool_proto::v1::{HostState, Pool, PoolSpec};
use rpool_tests::{Liveness, Profile, by_hostname, ctl, eventually, json_of};
use serde_json::Value;

use crate::world::World;

const GIB: u64 = 1 << 30;
/// `[healing] settle_ms` the controllers run with (the default).
const SETTLE_MS: u64 = 3_000;

impl World {
    /// A follower's address: what-if is forwarded to the leader.
    async fn follower(&self) -> anyhow::Result<String> {
        let leader = self.cluster.leader().await?;
        Ok(self
            .cluster
            .controllers
            .iter()
            .find(|c| c.id != leader)
            .expect("a trio has followers")
            .addr())
    }

    /// `rpoolctl --controller FOLLOWER ARGS`.
    async fn follower_ctl(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let follower = self.follower().await?;
        let mut all = vec!["--controller", follower.as_str()];
        all.extend_from_slice(args);
        Ok(ctl(&self.root.path().join("home"), &all))
    }

    /// A one-control-plane pool of these worker cores and memory, ready.
    /// Zones ignored (`any`, not the zoned fleet's default spread): the
    /// tests name the workers the least-overshoot cover takes, and need a
    /// lost worker to be replaced (spread takes a worker per zone here,
    /// and losing one leaves the request covered: nothing to replace).
    async fn create_one_cp(&self, name: &str, cores: u64, memory_gib: u64) -> anyhow::Result<Pool> {
        self.create(PoolSpec {
            name: name.into(),
            cores,
            memory_bytes: memory_gib * GIB,
            control_planes: 1,
            zone_policy: "any".into(),
            ..PoolSpec::default()
        })
        .await
    }

    async fn wait_down(&self, hostnames: &[&str]) -> anyhow::Result<()> {
        eventually(Duration::from_secs(20), "the killed hosts down", || async {
            let hosts = self.cluster.hosts().await.unwrap_or_default();
            let states: Vec<Option<i32>> = hostnames
                .iter()
                .map(|h| by_hostname(&hosts, h).map(|h| h.state))
                .collect();
            let all = states.iter().all(|s| *s == Some(HostState::Down as i32));
            (all.then_some(()), states)
        })
        .await
    }
}

fn hostnames_of(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["hostname"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn workers(pool: &Pool) -> Vec<String> {
    let mut names: Vec<String> = pool
        .members
        .iter()
        .filter(|m| m.role == "worker")
        .map(|m| m.hostname.clone())
        .collect();
    names.sort();
    names
}

fn code(out: &std::process::Output) -> Option<i32> {
    out.status.code()
}

#[tokio::test]
async fn what_if_a_worker_goes_down_names_the_replacement_healing_then_chooses() -> anyhow::Result<()> {
    let mut world = World::start(vec![
        Profile::new("cp-a", "a", 4, "8GiB"),
        Profile::new("w-a1", "a", 8, "32GiB"),
        Profile::new("w-b1", "b", 8, "32GiB"),
        Profile::new("w-c1", "c", 8, "32GiB"),
        Profile::new("w-c2", "c", 8, "32GiB"),
        Profile::new("s-d1", "d", 4, "16GiB"),
    ])
    .await?;
    let pool = world.create_one_cp("web", 16, 64).await?;
    let dead = pool
        .members
        .iter()
        .find(|m| m.role == "worker")
        .expect("a worker")
        .clone();
    let events_before = world.events().await.iter().filter(|e| e.kind != "audit").count();

    // The question, by hostname, through a follower.
    let answer = json_of(
        &world
            .follower_ctl(&["what-if", "host-down", &dead.hostname, "-o", "json"])
            .await?,
    )?;
    eprintln!("{answer:#}");
    assert_eq!(answer["question"]["kind"], "host-down");
    assert_eq!(hostnames_of(&answer["hosts_down"]), vec![dead.hostname.clone()]);
    assert_eq!(answer["hosts_down"][0]["pool"], "web");
    assert_eq!(answer["hosts_down"][0]["role"], "worker");
    assert_eq!(
        answer["acts_after_ms"],
        u64::from(Liveness::FAST.down_after_ms) + SETTLE_MS
    );
    assert_eq!(answer["storm"], Value::Null, "one host of six is no storm");
    assert_eq!(answer["held_back"], Value::Array(vec![]));
    let affected = &answer["pools"][0];
    assert_eq!(affected["name"], "web");
    assert_eq!(affected["below_request"], true, "8 of 16 cores left");
    assert_eq!(affected["worker_cores_left"], 8);
    assert_eq!(affected["etcd_quorum_lost"], false);
    assert_eq!(affected["below_request_after"], false);
    let replacements = answer["replacements"].as_array().cloned().unwrap_or_default();
    assert_eq!(replacements.len(), 1, "{answer}");
    assert_eq!(replacements[0]["hostname"], dead.hostname.as_str());
    let predicted = hostnames_of(&replacements[0]["replacements"]);
    assert_eq!(
        predicted.len(),
        1,
        "one 8-core worker covers the request again: {predicted:?}"
    );
    assert!(!workers(&pool).contains(&predicted[0]) && predicted[0] != "cp-a");
    let controllers = &answer["controllers"];
    assert_eq!(
        (
            &controllers["voters"],
            &controllers["keeps_quorum"],
            &controllers["reachable_after"]
        ),
        (&Value::from(3), &Value::Bool(true), &Value::from(3))
    );

    // The table says the same for humans.
    let table = world
        .follower_ctl(&["what-if", "host-down", &dead.host_id[..8]])
        .await?;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&table.stderr)
    );
    for section in [
        "Pools affected:",
        "Replacements:",
        "Held back by the storm guard:",
        "Controller quorum:",
    ] {
        assert!(text.contains(section), "{section} missing:\n{text}");
    }
    assert!(text.contains(&format!("→ {}", predicted[0])), "{text}");

    // The controller group: without the leader it keeps its quorum, without
    // two of three it does not.
    let leader = world.cluster.leader().await?;
    let group = json_of(
        &world
            .follower_ctl(&["what-if", "controller-down", &leader.to_string(), "-o", "json"])
            .await?,
    )?;
    assert_eq!(group["controllers"]["keeps_quorum"], true, "{group}");
    assert_eq!(group["controllers"]["leader_down"], true, "{group}");
    assert_eq!(group["pools"], Value::Array(vec![]));
    let two = json_of(
        &world
            .follower_ctl(&["what-if", "controller-down", "1", "2", "-o", "json"])
            .await?,
    )?;
    assert_eq!(two["controllers"]["keeps_quorum"], false, "{two}");
    assert_eq!(two["controllers"]["reachable_after"], 1, "{two}");

    // Bad questions: not found (exit 3) naming the field, or usage (64).
    let out = world.follower_ctl(&["what-if", "host-down", "ffff0000"]).await?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), Some(3), "{err}");
    assert!(
        err.contains("what_if.host_ids[0]: no host with id ffff0000"),
        "{err}"
    );
    let out = world.follower_ctl(&["what-if", "zone-down", "nowhere"]).await?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), Some(3), "{err}");
    assert!(
        err.contains("what_if.zone: no host in zone \"nowhere\" (zones with hosts: a, b, c, d)"),
        "{err}"
    );
    let out = world.follower_ctl(&["what-if", "controller-down", "9"]).await?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), Some(3), "{err}");
    assert!(
        err.contains("what_if.controller_ids[0]: controller 9 is not a voting member (voters: 1, 2, 3)"),
        "{err}"
    );
    let out = world.follower_ctl(&["what-if", "zone-down", "Zone_B"]).await?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), Some(65), "{err}");
    assert!(
        err.contains("what_if.zone: \"Zone_B\" is not a DNS label"),
        "{err}"
    );
    let out = world.follower_ctl(&["what-if", "controller-down", "0"]).await?;
    assert_eq!(code(&out), Some(64), "{}", String::from_utf8_lossy(&out.stderr));

    // Asking changed nothing.
    let events = world.events().await;
    assert!(
        !events
            .iter()
            .any(|e| e.kind == "host_replacing" || e.kind == "storm"),
        "{:?}",
        events.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    assert_eq!(
        events.iter().filter(|e| e.kind != "audit").count(),
        events_before,
        "what-if recorded nothing"
    );
    assert_eq!(world.pool("web").await.map(|p| workers(&p)), Some(workers(&pool)));

    // Now it really happens.
    world.kill_host(&dead.hostname)?;
    let replacing = world.wait_event("host_replacing", &dead.hostname).await?;
    assert_eq!(
        replacing
            .message
            .split("replacing with ")
            .nth(1)
            .map(|s| s.split(' ').next()),
        Some(Some(predicted[0].as_str())),
        "{}",
        replacing.message
    );
    let healed = world
        .wait_pool("web", "the replacement joined and the dead worker gone", |p| {
            p.phase == "ready"
                && !p.members.iter().any(|m| m.host_id == dead.host_id)
                && p.members.iter().all(|m| m.state == "joined")
        })
        .await?;
    let mut want = workers(&pool);
    want.retain(|w| *w != dead.hostname);
    want.extend(predicted.iter().cloned());
    want.sort();
    assert_eq!(
        workers(&healed),
        want,
        "the pool's workers are the ones what-if named"
    );
    assert_eq!(healed.phase, affected["phase_after"].as_str().unwrap_or_default());
    assert_eq!(
        healed.worker_cores,
        affected["worker_cores_after"].as_u64().unwrap_or_default()
    );
    Ok(())
}

#[tokio::test]
async fn what_if_a_zone_goes_down_predicts_the_storm_guard_holding_its_workers_back() -> anyhow::Result<()> {
    let mut world = World::start(vec![
        Profile::new("cp-a", "a", 2, "4GiB"),
        Profile::new("w-b1", "b", 8, "32GiB"),
        Profile::new("w-b2", "b", 8, "32GiB"),
        Profile::new("s-c1", "c", 4, "8GiB"),
        Profile::new("s-c2", "c", 4, "8GiB"),
    ])
    .await?;
    let pool = world.create_one_cp("web", 16, 64).await?;
    assert_eq!(
        workers(&pool),
        vec!["w-b1".to_owned(), "w-b2".to_owned()],
        "only zone b's hosts cover 64 GiB"
    );

    let answer = json_of(
        &world
            .follower_ctl(&["what-if", "zone-down", "b", "-o", "json"])
            .await?,
    )?;
    eprintln!("{answer:#}");
    assert_eq!(hostnames_of(&answer["hosts_down"]), vec!["w-b1", "w-b2"]);
    let storm = answer["storm"].as_str().expect("a storm").to_owned();
    assert!(storm.starts_with("storm: 2 of 5 hosts silent at once"), "{storm}");
    assert_eq!(answer["replacements"], Value::Array(vec![]));
    let held: Vec<(String, String)> = answer["held_back"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["hostname"].as_str().unwrap_or_default().to_owned(),
                h["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let mut held = held;
    held.sort();
    assert_eq!(
        held,
        vec![
            ("w-b1".to_owned(), "storm".to_owned()),
            ("w-b2".to_owned(), "storm".to_owned())
        ]
    );
    let affected = &answer["pools"][0];
    assert_eq!(hostnames_of(&affected["members_down"]), vec!["w-b1", "w-b2"]);
    assert_eq!(affected["below_request"], true);
    assert_eq!(affected["worker_cores_left"], 0);
    assert_eq!(affected["below_request_after"], true, "nothing replaced");
    let table = world.follower_ctl(&["what-if", "zone-down", "b"]).await?;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains(&format!("Held back by the storm guard:\n  {storm}\n  not replaced: w-b1 (web, worker), w-b2 (web, worker)\n")),
        "{text}"
    );

    // Now zone b really goes down.
    world.kill_host("w-b1")?;
    world.kill_host("w-b2")?;
    let alert = world.wait_event("storm", "storm: ").await?;
    assert_eq!(alert.message, storm, "the storm guard says what what-if said");
    world.wait_down(&["w-b1", "w-b2"]).await?;
    // Absence: past the settle wait a replacement would have been decided
    // (planner rounds every 200 ms); none may be.
    tokio::time::sleep(Duration::from_millis(SETTLE_MS + 1_000)).await;
    let events = world.events().await;
    assert!(
        !events.iter().any(|e| e.kind == "host_replacing"),
        "held back by the storm guard: {:?}",
        events.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    let now = world.pool("web").await.expect("pool web");
    assert_eq!(
        workers(&now),
        vec!["w-b1".to_owned(), "w-b2".to_owned()],
        "both still members"
    );
    Ok(())
}
