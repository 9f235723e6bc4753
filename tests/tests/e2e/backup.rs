//! Backup and restore: `rpoolctl snapshot save` from a live trio, every
//! data dir wiped, `rpool-controller --restore` on a majority, the group
//! back with its pools, hosts, labels and tokens, agents reconnecting by
//! themselves, the empty member catching up; damaged files refused.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Context as _;
use rpool_proto::v1::HostState;
use rpool_tests::{Cluster, Controller, Liveness, Profile, TEST_RAFT, bin, ctl, eventually, json_of};

use crate::enroll::{Enrolling, create_token, enroll_section, wait_ready};

/// `rpool-controller --restore FILE --config` of `controller`.
fn restore(controller: &Controller, file: &Path) -> Output {
    Command::new(bin("rpool-controller"))
        .arg("--restore")
        .arg(file)
        .arg("--config")
        .arg(&controller.config)
        .output()
        .expect("running rpool-controller --restore")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `rpoolctl ... -o json` through `controllers`, parsed.
fn ctl_json(home: &Path, controllers: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut all = vec!["--controller", controllers];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    json_of(&ctl(home, &all))
}

/// A pool's members as (host id, role), sorted.
fn members(pool: &serde_json::Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pool["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| {
                    (
                        m["host_id"].as_str().unwrap_or("").to_owned(),
                        m["role"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test]
async fn a_trio_whose_data_dirs_are_all_lost_is_rebuilt_from_a_snapshot() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let home = root.path().join("home");
    let mut cluster = Cluster::start(root.path(), 3, Liveness::FAST, TEST_RAFT).await?;
    let all = cluster.addr_list();
    let mut agents = cluster
        .start_agents(
            root.path(),
            vec![
                Profile::new("cp-a", "a", 4, "8GiB"),
                Profile::new("w-b1", "b", 8, "32GiB"),
                Profile::new("w-c1", "c", 8, "32GiB"),
            ],
        )
        .await?;

    // A pool, an admin label, a token. Zones ignored (`any`): one worker,
    // so a host is left outside the pool for the label (spread, the zoned
    // fleet's default, would take w-b1 and w-c1).
    let created = ctl(
        &home,
        &[
            "--controller",
            &all,
            "pool",
            "create",
            "web",
            "--cores",
            "8",
            "--memory",
            "16GiB",
            "--zone-policy",
            "any",
            "--wait",
            "--timeout",
            "60s",
        ],
    );
    assert!(created.status.success(), "{}", text(&created));
    let members_before = members(&ctl_json(&home, &all, &["pool", "show", "web"])?);
    assert!(members_before.len() >= 2, "{members_before:?}");
    let hosts = cluster.hosts().await?;
    let spare = hosts
        .iter()
        .find(|h| h.pool.is_empty())
        .context("a host outside the pool")?
        .host_id
        .clone();
    ctl_json(&home, &all, &["host", "label", &spare, "rack=r12"])?;
    let (token, pin, token_id) = create_token(&home, &all, &["--uses", "5"])?;

    // The backup, asked through a follower (it relays the leader's stream).
    let leader = cluster.leader().await?;
    let follower = cluster
        .controllers
        .iter()
        .find(|c| c.id != leader)
        .unwrap()
        .addr();
    let file = root.path().join("backup.snap");
    let file_arg = file.to_str().unwrap();
    let saved = ctl_json(&home, &follower, &["snapshot", "save", file_arg])?;
    let index = saved["applied_index"].as_u64().context("applied_index")?;
    assert!(index > 0, "{saved:#}");
    assert_eq!(saved["sha256"].as_str().map(str::len), Some(64), "{saved:#}");
    assert_eq!(saved["counts"]["hosts"], 3, "{saved:#}");
    assert_eq!(saved["counts"]["pools"], 1, "{saved:#}");
    assert!(saved["counts"]["tokens"].as_u64() >= Some(1), "{saved:#}");
    assert_eq!(
        std::fs::metadata(&file)?.permissions().mode() & 0o777,
        0o600,
        "the backup holds secrets"
    );
    assert!(!root.path().join("backup.snap.tmp").exists());
    // Not over an existing file without --force.
    let again = ctl(&home, &["--controller", &all, "snapshot", "save", file_arg]);
    assert_eq!(again.status.code(), Some(64), "{}", text(&again));
    assert!(text(&again).contains("backup.snap exists"), "{}", text(&again));
    let inspected = ctl_json(&home, &all, &["snapshot", "inspect", file_arg])?;
    assert_eq!(
        (&inspected["sha256"], &inspected["applied_index"]),
        (&saved["sha256"], &saved["applied_index"])
    );

    // A damaged copy (one flipped byte) is refused by inspect and restore.
    let damaged = root.path().join("damaged.snap");
    let mut bytes = std::fs::read(&file)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&damaged, bytes)?;
    let out = ctl(&home, &["snapshot", "inspect", damaged.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));

    // Every data dir lost.
    for c in &mut cluster.controllers {
        c.stop()?;
        std::fs::remove_dir_all(c.dir.join("data"))?;
    }
    let out = restore(&cluster.controllers[0], &damaged);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(text(&out).contains("damaged.snap is damaged"), "{}", text(&out));
    assert!(
        !cluster.controllers[0].dir.join("data").exists(),
        "nothing written from a damaged file"
    );

    // Restore on a majority (1 and 2); 3 starts empty and catches up.
    for c in &cluster.controllers[..2] {
        let out = restore(c, &file);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains(&format!("applied index {index}")),
            "{}",
            text(&out)
        );
    }
    let out = restore(&cluster.controllers[0], &file);
    assert_eq!(
        out.status.code(),
        Some(64),
        "a restore never mixes with data: {}",
        text(&out)
    );
    assert!(
        text(&out).contains(&cluster.controllers[0].dir.join("data").display().to_string()),
        "{}",
        text(&out)
    );
    for c in &mut cluster.controllers {
        c.spawn()?;
    }
    for c in &mut cluster.controllers {
        c.wait_answering().await?;
    }
    cluster.leader().await?;

    // Pools, hosts (ready again: the agents came back by themselves),
    // labels and tokens are back.
    let web = ctl_json(&home, &all, &["pool", "show", "web"])?;
    assert_eq!(members(&web), members_before, "{web:#}");
    eventually(
        Duration::from_secs(30),
        "every host ready and connected",
        || async {
            let hosts = cluster.hosts().await.unwrap_or_default();
            let ok = hosts.len() == 3
                && hosts
                    .iter()
                    .all(|h| h.state == HostState::Ready as i32 && h.connected);
            (ok.then_some(()), format!("{hosts:?}"))
        },
    )
    .await?;
    let host = ctl_json(&home, &all, &["host", "show", &spare])?;
    assert_eq!(host["labels"]["rack"], "r12", "{host:#}");
    let tokens = ctl_json(&home, &all, &["token", "list"])?;
    assert!(
        tokens
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["id"] == token_id.as_str())),
        "{tokens:#}"
    );

    // A token created before the backup enrolls a new agent.
    let late = Enrolling::start(
        &root.path().join("late"),
        &cluster.addrs(),
        "late-1",
        &enroll_section(&token, &pin),
    )?;
    wait_ready(&cluster.addrs()[0], &late).await?;

    // New writes work, and controller 3 (started empty) has them.
    ctl_json(&home, &all, &["host", "label", &spare, "after=restore"])?;
    eventually(Duration::from_secs(20), "controller 3 caught up", || async {
        let applied = cluster.controllers[2]
            .status()
            .await
            .map_or(0, |s| s.applied_index);
        let commit = cluster.controllers[0]
            .status()
            .await
            .map_or(u64::MAX, |s| s.commit_index);
        let ok = applied > index && applied >= commit;
        (
            ok.then_some(()),
            format!("controller 3 applied {applied}, controller 1 commit {commit}"),
        )
    })
    .await?;
    for agent in &mut agents {
        agent.stop()?;
    }
    Ok(())
}
