//! Damaged or lost controller data, through the real binary: a truncated
//! log, overwritten bytes in the log and in the snapshot file the state is
//! rebuilt from, an earlier rpool's state store whose log is gone, a data
//! dir wiped while its peers still know the member. Each start refuses
//! with exit 65 and one message naming the file (or dir) and the remedy;
//! never a panic, never older state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rpool_proto::v1::{CreateTokenRequest, ListTokensRequest};
use rpool_tests::{Cluster, Liveness, TEST_RAFT};

/// What every refusal tells the operator to do.
const REMEDY: &str = "rpoolctl controller add";

/// A trio that acknowledged `n` token creations; returns their ids.
async fn trio_with_writes(root: &Path, n: usize) -> anyhow::Result<(Cluster, Vec<String>)> {
    trio_with_writes_raft(root, n, TEST_RAFT).await
}

/// [`trio_with_writes`] with `raft` as the controllers' `[raft]` section.
async fn trio_with_writes_raft(root: &Path, n: usize, raft: &str) -> anyhow::Result<(Cluster, Vec<String>)> {
    let cluster = Cluster::start(root, 3, Liveness::FAST, raft).await?;
    let leader = cluster.leader().await?;
    let mut admin = cluster.controllers[leader as usize - 1].admin().await?;
    let mut ids = Vec::new();
    for i in 0..n {
        let created = admin
            .create_token(CreateTokenRequest {
                ttl_seconds: 3_600,
                uses: 1,
                description: format!("t{i}"),
                token: String::new(),
            })
            .await?
            .into_inner();
        ids.push(created.id);
    }
    // Every member has applied them before one is stopped.
    rpool_tests::eventually(
        Duration::from_secs(15),
        "all three applied the writes",
        || async {
            let mut applied = Vec::new();
            for c in &cluster.controllers {
                applied.push(
                    c.status()
                        .await
                        .map(|s| (s.applied_index, s.commit_index))
                        .unwrap_or((0, 1)),
                );
            }
            let same = applied.iter().all(|(a, c)| a == c && *a == applied[0].0);
            (same.then_some(()), applied)
        },
    )
    .await?;
    Ok((cluster, ids))
}

/// The newest log segment of a data dir.
fn newest_segment(data: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data.join("raft"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments.pop().expect("a log segment")
}

/// How much of a file holds data: up to its last non-zero byte (a log
/// segment is preallocated, so zeros follow its last batch).
fn written_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

/// Overwrites `len` bytes of `path` from `at` (a fraction of its written
/// length) with `byte`.
fn overwrite(path: &Path, at: f64, len: usize, byte: u8) -> anyhow::Result<()> {
    let mut bytes = std::fs::read(path)?;
    let start = (written_len(&bytes) as f64 * at) as usize;
    let end = (start + len).min(bytes.len());
    bytes[start..end].fill(byte);
    std::fs::write(path, bytes)?;
    Ok(())
}

/// Starts controller `id` and expects it to stop by itself with exit 65 and
/// a log naming `names` and the remedy.
async fn refuses(cluster: &mut Cluster, id: u64, names: &str, within: Duration) -> anyhow::Result<String> {
    let c = cluster.get(id);
    c.spawn()?;
    let status = c.exited_within(within).await?;
    let log = cluster.get(id).log();
    if status.is_none() {
        // Say who leads: the lost-data check needs a leader that knew this
        // member's match index (a leader elected since starts it at 0).
        let mut seen = Vec::new();
        for c in cluster
            .controllers
            .iter()
            .filter(|c| c.is_running() && c.id != id)
        {
            if let Ok(s) = c.status().await {
                seen.push(format!(
                    "{}: {} term {} leader {}",
                    c.id, s.role, s.term, s.leader_id
                ));
            }
        }
        panic!("controller {id} still runs after {within:?}; peers: {seen:?}\n{log}");
    }
    assert_eq!(status.and_then(|s| s.code()), Some(65), "{log}");
    assert!(log.contains(names), "the error names {names}:\n{log}");
    assert!(log.contains(REMEDY), "the error says what to do:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    Ok(log)
}

#[tokio::test]
async fn a_truncated_log_is_refused_with_65_naming_the_data() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (mut cluster, _) = trio_with_writes(root.path(), 20).await?;
    // A truncated log looks like a crash before the sync, on its own: what
    // tells it apart is a leader that knew how far this member's log went.
    // So the member is a follower (a leader elected after stopping the old
    // one starts every match index at 0 and sees nothing missing).
    let leader = cluster.leader().await?;
    let victim = if leader == 3 { 2 } else { 3 };
    let c = cluster.get(victim);
    c.stop()?;
    let data = c.dir.join("data");
    let segment = newest_segment(&data);
    let len = written_len(&std::fs::read(&segment)?) as u64;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)?
        .set_len(len / 2)?;
    refuses(
        &mut cluster,
        victim,
        &data.join("raft").display().to_string(),
        Duration::from_secs(20),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn overwritten_bytes_in_the_log_are_refused_with_65_naming_the_segment() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (mut cluster, _) = trio_with_writes(root.path(), 20).await?;
    let c = cluster.get(3);
    c.stop()?;
    let segment = newest_segment(&c.dir.join("data"));
    overwrite(&segment, 1.0 / 3.0, 16, 0xAB)?;
    refuses(
        &mut cluster,
        3,
        &segment.display().to_string(),
        Duration::from_secs(20),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn overwritten_bytes_in_the_snapshot_file_are_refused_with_65_naming_it() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    // Compaction every 100 entries: 120 writes leave a snapshot file.
    let raft = format!("{TEST_RAFT}snapshot_every = 100\n");
    let (mut cluster, _) = trio_with_writes_raft(root.path(), 120, &raft).await?;
    let c = cluster.get(3);
    c.stop()?;
    let snapshot = rpool_controller::raft::snapshot_file::path(&c.dir.join("data/raft"));
    overwrite(&snapshot, 0.5, 64, 0x5A)?;
    refuses(
        &mut cluster,
        3,
        &snapshot.display().to_string(),
        Duration::from_secs(20),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_earlier_state_store_whose_log_is_gone_is_refused_with_65() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (mut cluster, _) = trio_with_writes(root.path(), 5).await?;
    let c = cluster.get(3);
    c.stop()?;
    // What an earlier rpool left: its applied state under state/ (sled),
    // and here no log beside it.
    let data = c.dir.join("data");
    std::fs::remove_dir_all(data.join("raft"))?;
    std::fs::create_dir_all(data.join("state"))?;
    std::fs::write(data.join("state/db"), b"sled")?;
    refuses(
        &mut cluster,
        3,
        &data.join("raft").display().to_string(),
        Duration::from_secs(20),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_member_wiped_while_its_peers_know_it_stops_with_65_and_never_starts_again() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (mut cluster, _) = trio_with_writes(root.path(), 5).await?;
    // Wipe a follower: the leader keeps leading, so it still knows the
    // match index the wiped member acknowledged (either check may stop
    // it: that one, or its peers refusing its new data incarnation). The
    // next test wipes the leader, which only the incarnation check sees.
    let leader = cluster.leader().await?;
    let victim = if leader == 3 { 2 } else { 3 };
    let c = cluster.get(victim);
    c.stop()?;
    let data = c.dir.join("data");
    std::fs::remove_dir_all(&data)?;
    // It starts empty under its old id; the leader's first heartbeat shows
    // it lost acknowledged entries, or its first answer is refused.
    refuses(
        &mut cluster,
        victim,
        &data.join("raft").display().to_string(),
        Duration::from_secs(30),
    )
    .await?;
    // Marked: the next start refuses at once, before any peer is asked.
    refuses(&mut cluster, victim, "DAMAGED", Duration::from_secs(5)).await?;
    Ok(())
}

#[tokio::test]
async fn a_leader_wiped_after_a_new_election_is_refused_and_the_other_two_keep_every_write()
-> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (mut cluster, mut ids) = trio_with_writes(root.path(), 5).await?;
    // kill -9 the leader; the other two elect a new one, which knows
    // nothing of the old leader's match index.
    let old = cluster.leader().await?;
    cluster.get(old).kill();
    let new = cluster.leader().await?;
    assert_ne!(new, old);
    // A write acknowledged by the two alone.
    let mut admin = cluster.get(new).admin().await?;
    let created = admin
        .create_token(CreateTokenRequest {
            ttl_seconds: 3_600,
            uses: 1,
            description: "after failover".into(),
            token: String::new(),
        })
        .await?
        .into_inner();
    ids.push(created.id);
    // Wipe the old leader's data dir and start it under its old id: its
    // peers know its data by another incarnation and refuse it.
    let data = cluster.get(old).dir.join("data");
    std::fs::remove_dir_all(&data)?;
    let log = refuses(
        &mut cluster,
        old,
        &data.join("raft").display().to_string(),
        Duration::from_secs(30),
    )
    .await?;
    assert!(log.contains("was wiped or lost"), "{log}");
    assert!(log.contains(&format!("controller {old} came back")), "{log}");
    // Marked: the next start refuses at once, before any peer is asked.
    refuses(&mut cluster, old, "DAMAGED", Duration::from_secs(5)).await?;
    // The other two never counted it: each serves every acknowledged
    // write (reads go through ReadIndex), and a new write goes through.
    for id in (1..=3).filter(|id| *id != old) {
        let c = cluster.get(id);
        let listed = c
            .admin()
            .await?
            .list_tokens(ListTokensRequest {})
            .await?
            .into_inner()
            .tokens;
        for token in &ids {
            assert!(
                listed.iter().any(|t| &t.id == token),
                "controller {id} lost token {token}: {listed:?}"
            );
        }
    }
    let leader = cluster.leader().await?;
    assert_ne!(leader, old);
    cluster
        .get(leader)
        .admin()
        .await?
        .create_token(CreateTokenRequest {
            ttl_seconds: 60,
            uses: 1,
            description: "still".into(),
            token: String::new(),
        })
        .await?;
    Ok(())
}
