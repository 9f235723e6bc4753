//! etcd backups of a pool (`rpoolctl pool backup`, `pool backups`, `pool
//! set-backup`) against the trio and kubesim's etcdctl: a manual snapshot
//! lands on the control plane's host with the SHA-256 the event and the
//! list report; a schedule with keep=2 keeps exactly the two newest files
//! on disk and in the list, and carries on after a leader kill without a
//! burst; with etcd down a snapshot fails clearly and the pool stays ready.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rpool_proto::v1::{ListPoolBackupsRequest, ListPoolBackupsResponse, PoolBackup, PoolSpec};
use rpool_tests::{Profile, eventually};

use crate::world::World;

const GIB: u64 = 1 << 30;

impl World {
    async fn backups(&self, pool: &str) -> anyhow::Result<ListPoolBackupsResponse> {
        Ok(self
            .admin()
            .await?
            .list_pool_backups(ListPoolBackupsRequest { name: pool.into() })
            .await?
            .into_inner())
    }

    /// The agent state dir of `hostname`, where its snapshots live.
    fn snapshot_dir(&self, hostname: &str, pool: &str) -> PathBuf {
        self.agents
            .iter()
            .find(|a| a.profile.hostname == hostname)
            .expect("agent")
            .dir
            .join("state")
            .join("etcd-snapshots")
            .join(pool)
    }

    /// `*.db` files in a snapshot dir, sorted.
    fn snapshot_files(&self, hostname: &str, pool: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.snapshot_dir(hostname, pool))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "db"))
            .collect();
        files.sort();
        files
    }

    async fn backup_pool(&self, cores: u64, spec: PoolSpec) -> anyhow::Result<String> {
        let pool = self
            .create(PoolSpec {
                cores,
                memory_bytes: 16 * GIB,
                control_planes: 1,
                ..spec
            })
            .await?;
        Ok(pool
            .members
            .iter()
            .find(|m| m.role == "control-plane")
            .expect("a control plane")
            .hostname
            .clone())
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    Ok(rpool_proto::backup::sha256_hex(&std::fs::read(path)?))
}

fn profiles() -> Vec<Profile> {
    vec![
        Profile::new("bk-cp", "a", 4, "8GiB"),
        Profile::new("bk-w1", "a", 8, "32GiB"),
    ]
}

#[tokio::test]
async fn a_manual_backup_lands_on_the_control_plane_with_its_checksum_and_fails_clearly_with_etcd_down()
-> anyhow::Result<()> {
    let world = World::start(profiles()).await?;
    let cp = world
        .backup_pool(
            8,
            PoolSpec {
                name: "bk".into(),
                ..PoolSpec::default()
            },
        )
        .await?;
    assert_eq!(cp, "bk-cp");

    // `pool backup --wait` prints the path and checksum once taken.
    let out = world.ctl(&["pool", "backup", "bk", "--wait"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let list = world.backups("bk").await?;
    assert_eq!(list.backups.len(), 1, "{list:?}");
    let b: &PoolBackup = &list.backups[0];
    assert_eq!((b.state.as_str(), b.kind.as_str()), ("done", "manual"), "{b:?}");
    assert_eq!(b.hostname, "bk-cp");
    assert!(!b.host_gone);
    // The file is on the control plane's host, under its agent's state
    // dir, named after the pool and the UTC time, and its SHA-256 is the
    // one reported.
    let path = PathBuf::from(&b.path);
    assert_eq!(
        path.parent(),
        Some(world.snapshot_dir("bk-cp", "bk").as_path()),
        "{b:?}"
    );
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("bk-2") && name.ends_with("Z.db"), "{name}");
    assert_eq!(sha256_of(&path)?, b.sha256);
    assert_eq!(std::fs::metadata(&path)?.len(), b.size_bytes);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a snapshot holds the cluster's Secrets");
    }
    assert!(stdout.contains(&b.path) && stdout.contains(&b.sha256), "{stdout}");
    assert!(b.revision > 0 && b.total_keys > 0, "{b:?}");
    // It holds the cluster (kubesim's snapshot is its state): both nodes.
    let content = std::fs::read_to_string(&path)?;
    assert!(content.contains("\"bk-cp\"") && content.contains("\"bk-w1\""));
    // The event names host, path and checksum; the admin call is audited.
    let taken = world.wait_event("etcd_snapshot_taken", &b.id).await?;
    for needle in ["bk-cp", b.path.as_str(), b.sha256.as_str()] {
        assert!(taken.message.contains(needle), "{needle} in {}", taken.message);
    }
    let events = world.events().await;
    assert!(
        events.iter().any(|e| e.kind == "audit"
            && e.audit
                .as_ref()
                .is_some_and(|a| a.operation == "pool backup"
                    && a.arguments.get("pool").map(String::as_str) == Some("bk"))),
        "no audit record of the pool backup"
    );
    // `pool backups` lists it (table and JSON).
    let out = world.ctl(&["pool", "backups", "bk"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    for needle in [
        "ID",
        "SHA256",
        &b.id,
        &b.sha256[..12],
        &b.path,
        "manual",
        "no backup schedule",
    ] {
        assert!(table.contains(needle), "{needle:?} in\n{table}");
    }
    let out = world.ctl(&["pool", "backups", "bk", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["backups"][0]["sha256"], b.sha256.as_str());
    assert_eq!(json["backups"][0]["path"], b.path.as_str());

    // etcd down (its static pod manifest moved away, as in a restore):
    // the snapshot fails, saying why, and the pool stays as it was.
    let manifests = world.node_root("bk-cp").join("etc/kubernetes/manifests");
    std::fs::rename(
        manifests.join("etcd.yaml"),
        world.node_root("bk-cp").join("etcd.yaml.away"),
    )?;
    let out = world.ctl(&["pool", "backup", "bk", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.contains("failed") && stderr.contains("context deadline exceeded") && stderr.contains("bk-cp"),
        "{stderr}"
    );
    let failed = world.wait_event("etcd_snapshot_failed", "bk-cp").await?;
    assert_eq!(failed.severity, "alert");
    assert!(
        failed.message.contains("connection refused"),
        "{}",
        failed.message
    );
    let list = world.backups("bk").await?;
    assert_eq!(
        list.backups.iter().map(|b| b.state.as_str()).collect::<Vec<_>>(),
        ["failed", "done"],
        "{list:?}"
    );
    assert_eq!(
        world.snapshot_files("bk-cp", "bk"),
        std::slice::from_ref(&path),
        "no partial file left"
    );
    let pool = world.pool("bk").await.expect("pool");
    assert_eq!(pool.phase, "ready", "{pool:?}");
    // Back up: a snapshot works again.
    std::fs::rename(
        world.node_root("bk-cp").join("etcd.yaml.away"),
        manifests.join("etcd.yaml"),
    )?;
    let out = world.ctl(&["pool", "backup", "bk", "--wait", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(again["state"], "done");
    assert_eq!(world.snapshot_files("bk-cp", "bk").len(), 2);

    // Bad input is refused naming the field and range, and changes nothing.
    let out = world.ctl(&["pool", "set-backup", "bk", "--every", "45d"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1s..=30d"),
        "{}",
        text(&out)
    );
    let out = world.ctl(&["pool", "backup", "nope", "--wait"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    Ok(())
}

#[tokio::test]
async fn a_schedule_with_keep_two_keeps_exactly_the_two_newest_snapshots_on_disk_and_in_the_list()
-> anyhow::Result<()> {
    let mut world = World::start(profiles()).await?;
    world
        .backup_pool(
            8,
            PoolSpec {
                name: "sched".into(),
                ..PoolSpec::default()
            },
        )
        .await?;
    let out = world.ctl(&["pool", "set-backup", "sched", "--every", "2s", "--keep", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("every 2s, keeping the 2 newest"),
        "{}",
        text(&out)
    );
    // Wait for the fourth scheduled snapshot and two deletions.
    eventually(
        Duration::from_secs(60),
        "four scheduled snapshots, two deleted",
        || async {
            let events = world.events().await;
            let count = |kind: &str| {
                events
                    .iter()
                    .filter(|e| e.pool == "sched" && e.kind == kind)
                    .count()
            };
            let seen = (count("etcd_snapshot_taken"), count("etcd_snapshot_deleted"));
            ((seen.0 >= 4 && seen.1 >= 2).then_some(()), seen)
        },
    )
    .await?;
    // At a moment when nothing is in flight (the list the same before and
    // after reading the disk and the events), exactly the two newest
    // snapshots are listed, and exactly their files are on the control
    // plane's disk.
    let requested = |events: &[rpool_proto::v1::Event]| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e.pool == "sched" && e.kind == "etcd_snapshot_requested")
            .map(|e| e.index)
            .collect()
    };
    let (list, files, taken) = eventually(Duration::from_secs(30), "a still moment", || async {
        let before = requested(&world.events().await);
        let first = world.backups("sched").await.ok();
        let files = world.snapshot_files("bk-cp", "sched");
        let second = world.backups("sched").await.ok();
        let after = requested(&world.events().await);
        let still = first.is_some()
            && first == second
            && before == after
            && first
                .as_ref()
                .is_some_and(|l| l.backups.iter().all(|b| b.state == "done"));
        let seen = format!("{first:?} {files:?}");
        (still.then(|| (first.unwrap(), files, after)), seen)
    })
    .await?;
    assert_eq!(list.interval_ms, 2_000);
    assert_eq!(list.keep, 2);
    assert_eq!(list.backups.len(), 2, "{list:?}");
    assert!(list.backups.iter().all(|b| b.kind == "scheduled"));
    let mut listed: Vec<PathBuf> = list.backups.iter().map(|b| PathBuf::from(&b.path)).collect();
    listed.sort();
    assert_eq!(files, listed);
    for b in &list.backups {
        assert_eq!(sha256_of(Path::new(&b.path))?, b.sha256, "{b:?}");
    }
    let mut kept: Vec<u64> = list
        .backups
        .iter()
        .map(|b| b.id.trim_start_matches("snap-").parse().unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept, taken[taken.len() - 2..], "the two newest are kept");
    // The leader dies: the next leader carries on with the schedule from
    // the replicated anchor, without a burst of the missed ones: scheduled
    // requests stay at least one interval apart.
    let leader = world.cluster.leader().await?;
    world.cluster.get(leader).kill();
    let before_kill = taken.len();
    let requests = eventually(
        Duration::from_secs(60),
        "two scheduled snapshots under the new leader",
        || async {
            let events = world.events().await;
            let at: Vec<u64> = events
                .iter()
                .filter(|e| e.pool == "sched" && e.kind == "etcd_snapshot_requested")
                .map(|e| e.at_unix_ms)
                .collect();
            let done = events
                .iter()
                .filter(|e| e.pool == "sched" && e.kind == "etcd_snapshot_taken")
                .count();
            (
                (at.len() >= before_kill + 2 && done >= before_kill + 2).then(|| at.clone()),
                (at.len(), done),
            )
        },
    )
    .await?;
    for pair in requests.windows(2) {
        assert!(
            pair[1] >= pair[0] + 2_000,
            "scheduled snapshots closer than the interval: {requests:?}"
        );
    }
    // --off stops the schedule and keeps what is there.
    let out = world.ctl(&["pool", "set-backup", "sched", "--off"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(world.backups("sched").await?.interval_ms, 0);
    // A deletion event per file removed names the host and path.
    let deleted = world.wait_event("etcd_snapshot_deleted", "bk-cp").await?;
    assert!(
        deleted.message.contains("etcd-snapshots/sched/sched-"),
        "{}",
        deleted.message
    );
    Ok(())
}
