//! The controller trio: elections, failover, durability of acknowledged
//! writes, snapshots, isolation, membership. Real processes, real sockets,
//! real data dirs (the Raft log the state is rebuilt from).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rpool_proto::v1::admin_service_client::AdminServiceClient;
use rpool_proto::v1::{HostState, SetHostLabelsRequest};
use rpool_tests::{Cluster, Controller, Liveness, Profile, TEST_RAFT, ctl, eventually, free_port, json_of};
use tonic::transport::Channel;

/// A writer that sets labels on one host through whichever controller
/// answers, retrying each write (same value) until it is acknowledged.
struct Writer {
    clients: Vec<AdminServiceClient<Channel>>,
    host_id: String,
    next: usize,
}

impl Writer {
    fn new(addrs: &[String], host_id: &str) -> Writer {
        let clients = addrs
            .iter()
            .map(|a| {
                let channel = rpool_tests::admin_tls()
                    .endpoint(a)
                    .unwrap()
                    .connect_timeout(Duration::from_millis(300))
                    .timeout(Duration::from_secs(3))
                    .connect_lazy();
                AdminServiceClient::new(channel)
            })
            .collect();
        Writer {
            clients,
            host_id: host_id.to_string(),
            next: 0,
        }
    }

    /// Writes `key = value`; returns once a controller acknowledged it, or
    /// fails after `limit`.
    async fn write(&mut self, key: &str, value: &str, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut last_error = String::new();
        while started.elapsed() < limit {
            let slot = self.next % self.clients.len();
            let client = &mut self.clients[slot];
            let request = SetHostLabelsRequest {
                host_id: self.host_id.clone(),
                set: [(key.to_string(), value.to_string())].into(),
                remove: vec![],
            };
            match client.set_host_labels(request).await {
                Ok(_) => return Ok(()),
                Err(status) => {
                    last_error = format!("{status:?}");
                    anyhow::ensure!(
                        status.code() != tonic::Code::InvalidArgument,
                        "write rejected: {status:?}"
                    );
                    self.next += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        anyhow::bail!("write {key}={value} not acknowledged within {limit:?}: {last_error}")
    }
}

/// Starts a trio with one simulated agent; returns the cluster, the agent
/// and its host id.
async fn trio_with_a_host(
    root: &std::path::Path,
    extra: &str,
) -> anyhow::Result<(Cluster, rpool_tests::Agent, String)> {
    let cluster = Cluster::start(root, 3, Liveness::FAST, extra).await?;
    let mut agents = cluster
        .start_agents(root, vec![Profile::new("sim-a-1", "a", 8, "32GiB")])
        .await?;
    let agent = agents.remove(0);
    let host_id = agent.host_id().expect("agent wrote its host id");
    Ok((cluster, agent, host_id))
}

/// `rpoolctl controller remove ID --yes -o json`: the group left, as JSON
/// and as ids.
fn remove_controller(
    home: &std::path::Path,
    addrs: &str,
    id: u64,
) -> anyhow::Result<(serde_json::Value, Vec<u64>)> {
    let out = ctl(
        home,
        &[
            "--controller",
            addrs,
            "controller",
            "remove",
            &id.to_string(),
            "--yes",
            "-o",
            "json",
        ],
    );
    let list = json_of(&out)?;
    let ids = list
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("not a list: {list:#}"))?
        .iter()
        .map(|c| c["id"].as_u64().unwrap_or_default())
        .collect();
    Ok((list, ids))
}

/// Admin labels of `host_id` as stored in a stopped controller's data dir.
fn stored_labels(controller: &Controller, host_id: &str) -> (u64, BTreeMap<String, String>) {
    let state = rpool_controller::replica::load_stopped(&controller.dir.join("data"), controller.id)
        .expect("the stopped controller's log rebuilds its state");
    let labels = state
        .host(host_id)
        .map(|h| h.admin_labels.clone())
        .unwrap_or_default();
    (state.applied_index(), labels)
}

/// Waits (bounded) until every running controller has applied the same
/// index and that index no longer moves.
async fn wait_converged(cluster: &Cluster) -> anyhow::Result<u64> {
    eventually(
        Duration::from_secs(15),
        "replicas at the same applied index",
        || async {
            let mut indexes = Vec::new();
            for c in cluster.controllers.iter().filter(|c| c.is_running()) {
                indexes.push(
                    c.status()
                        .await
                        .map(|s| (s.applied_index, s.commit_index))
                        .unwrap_or((0, 1)),
                );
            }
            let first = indexes[0].0;
            let same = indexes
                .iter()
                .all(|(applied, commit)| *applied == first && *commit == first);
            (same.then_some(first), indexes)
        },
    )
    .await
}

#[tokio::test]
async fn killing_the_leader_elects_another_and_writes_and_agents_carry_on() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (mut cluster, _agent, host_id) = trio_with_a_host(root.path(), TEST_RAFT).await?;
    let old = cluster.leader().await?;
    cluster.get(old).kill();
    let killed_at = Instant::now();
    let new = cluster.leader().await?;
    assert_ne!(new, old);
    let elected_after = killed_at.elapsed();

    // A write through rpoolctl, naming every controller, succeeds.
    let out = ctl(
        root.path(),
        &[
            "--controller",
            &cluster.addr_list(),
            "host",
            "label",
            &host_id[..8],
            "after=failover",
            "-o",
            "json",
        ],
    );
    let host = json_of(&out)?;
    assert_eq!(host["labels"]["after"], "failover", "{host:#}");

    // The agent found the new leader and its host never went down.
    eventually(
        Duration::from_secs(10),
        "agent connected to the new leader",
        || async {
            let hosts = cluster.hosts().await.unwrap_or_default();
            let ok = hosts.len() == 1 && hosts[0].connected && hosts[0].state == HostState::Ready as i32;
            (
                ok.then_some(()),
                hosts.iter().map(|h| (h.connected, h.state)).collect::<Vec<_>>(),
            )
        },
    )
    .await?;
    eprintln!("new leader {new} elected {elected_after:?} after killing {old}");

    // The old leader comes back as a follower and catches up.
    cluster.get(old).restart().await?;
    wait_converged(&cluster).await?;
    let status = cluster.get(old).status().await?;
    assert_eq!(status.role, "follower");
    assert_eq!(status.leader_id, new.to_string());
    Ok(())
}

#[tokio::test]
async fn acknowledged_writes_survive_twenty_leader_kills_on_every_replica() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (mut cluster, mut agent, host_id) = trio_with_a_host(root.path(), TEST_RAFT).await?;
    let addrs = cluster.addrs();

    // One sequential writer: write i sets key k{i % 40} = i and is retried
    // until acknowledged, so the last acknowledged value of each key is its
    // final value.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let writer_host = host_id.clone();
    let writer = tokio::spawn(async move {
        let mut writer = Writer::new(&addrs, &writer_host);
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        let mut i = 0u64;
        while !*stop_rx.borrow_and_update() {
            let key = format!("k{}", i % 40);
            let value = i.to_string();
            writer.write(&key, &value, Duration::from_secs(20)).await?;
            last.insert(key, value);
            i += 1;
        }
        anyhow::Ok((i, last))
    });

    let mut failovers = Vec::new();
    for round in 0..20 {
        let leader = cluster.leader().await?;
        // Let some writes land under this leader.
        tokio::time::sleep(Duration::from_millis(150)).await;
        cluster.get(leader).kill();
        let killed = Instant::now();
        let next = cluster.leader().await?;
        failovers.push(killed.elapsed());
        assert_ne!(next, leader, "round {round}");
        cluster.get(leader).restart().await?;
    }
    stop_tx.send_replace(true);
    let (writes, last) = writer.await??;
    assert!(writes >= 40, "only {writes} writes were acknowledged");
    eprintln!("{writes} acknowledged writes across 20 leader kills; elections took {failovers:?}");

    let applied = wait_converged(&cluster).await?;
    agent.stop()?;
    for c in &mut cluster.controllers {
        let status = c.stop()?;
        assert!(status.success(), "controller {} exited with {status}", c.id);
    }
    for c in &cluster.controllers {
        let (stored_applied, labels) = stored_labels(c, &host_id);
        assert!(
            stored_applied >= applied,
            "controller {} stored applied index {stored_applied} < {applied}",
            c.id
        );
        for (key, value) in &last {
            assert_eq!(
                labels.get(key),
                Some(value),
                "controller {} lost the acknowledged write {key}={value}",
                c.id
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn stopping_and_restarting_all_three_keeps_the_state() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (mut cluster, mut agent, host_id) = trio_with_a_host(root.path(), TEST_RAFT).await?;
    let mut writer = Writer::new(&cluster.addrs(), &host_id);
    for i in 0..20 {
        writer
            .write(&format!("k{i}"), &format!("v{i}"), Duration::from_secs(10))
            .await?;
    }
    agent.stop()?;
    for c in &mut cluster.controllers {
        c.stop()?;
    }
    for c in &mut cluster.controllers {
        c.spawn()?;
    }
    for c in &mut cluster.controllers {
        c.wait_answering().await?;
    }
    cluster.leader().await?;
    let hosts = cluster.hosts().await?;
    assert_eq!(hosts.len(), 1);
    let labels = &hosts[0].facts.as_ref().unwrap().labels;
    for i in 0..20 {
        assert_eq!(labels.get(&format!("k{i}")), Some(&format!("v{i}")), "{labels:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_follower_cut_off_past_a_compaction_catches_up_through_a_snapshot() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let extra = format!("{TEST_RAFT}snapshot_every = 100\n");
    let (mut cluster, _agent, host_id) = trio_with_a_host(root.path(), &extra).await?;
    let leader = cluster.leader().await?;
    let follower = cluster
        .controllers
        .iter()
        .map(|c| c.id)
        .find(|id| *id != leader)
        .unwrap();
    cluster.get(follower).freeze();
    let live: Vec<String> = cluster
        .controllers
        .iter()
        .filter(|c| c.id != follower)
        .map(|c| c.addr())
        .collect();
    let mut writer = Writer::new(&live, &host_id);
    // More than the leader keeps in flight to one peer (256 appends), so
    // some entries are compacted away before the follower could get them.
    for i in 0..600 {
        writer
            .write(&format!("k{}", i % 30), &i.to_string(), Duration::from_secs(10))
            .await?;
    }
    cluster.get(follower).resume();
    wait_converged(&cluster).await?;
    let log = cluster.get(follower).log();
    assert!(
        log.contains("state restored from a snapshot"),
        "follower did not install a snapshot:\n{log}"
    );
    let status = cluster.get(follower).status().await?;
    assert_eq!(status.role, "follower");
    Ok(())
}

#[tokio::test]
async fn a_leader_cut_off_from_the_majority_steps_down_and_refuses_writes() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (mut cluster, _agent, host_id) = trio_with_a_host(root.path(), TEST_RAFT).await?;
    let leader = cluster.leader().await?;
    for c in cluster.controllers.iter().filter(|c| c.id != leader) {
        c.freeze();
    }
    // check_quorum: without acknowledgements for an election timeout the
    // leader steps down.
    let isolated = cluster.get(leader);
    eventually(Duration::from_secs(5), "isolated leader steps down", || async {
        let role = isolated.status().await.map(|s| s.role).unwrap_or_default();
        ((role != "leader").then_some(()), role)
    })
    .await?;
    let mut client = isolated.admin().await?;
    let err = client
        .set_host_labels(SetHostLabelsRequest {
            host_id: host_id.clone(),
            set: [("during".to_string(), "isolation".to_string())].into(),
            remove: vec![],
        })
        .await
        .expect_err("an isolated controller acknowledged a write");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    for c in &cluster.controllers {
        c.resume();
    }
    cluster.leader().await?;
    let mut writer = Writer::new(&cluster.addrs(), &host_id);
    writer.write("after", "healing", Duration::from_secs(10)).await?;
    let hosts = cluster.hosts().await?;
    assert!(!hosts[0].facts.as_ref().unwrap().labels.contains_key("during"));
    Ok(())
}

#[tokio::test]
async fn membership_add_transfer_and_remove_through_rpoolctl() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let extra = format!("{TEST_RAFT}snapshot_every = 100\n");
    let (mut cluster, _agent, host_id) = trio_with_a_host(root.path(), &extra).await?;
    // Enough history that a new member needs a snapshot.
    let mut writer = Writer::new(&cluster.addrs(), &host_id);
    for i in 0..150 {
        writer
            .write(&format!("k{}", i % 20), &i.to_string(), Duration::from_secs(10))
            .await?;
    }
    let home = root.path();
    let addrs = cluster.addr_list();

    // A fresh controller 4 with an empty data dir, not in the initial group.
    let initial: Vec<(u64, u16)> = cluster.controllers.iter().map(|c| (c.id, c.port)).collect();
    let port = free_port();
    let mut fresh = Controller::configure(
        &root.path().join("controller-4"),
        4,
        port,
        &initial,
        Liveness::FAST,
        &extra,
    )?;
    fresh.restart().await?;
    let out = ctl(
        home,
        &[
            "--controller",
            &addrs,
            "controller",
            "add",
            "4",
            &format!("127.0.0.1:{port}"),
            "-o",
            "json",
        ],
    );
    let list = json_of(&out)?;
    assert_eq!(list.as_array().map(Vec::len), Some(4), "{list:#}");
    cluster.controllers.push(fresh);
    if let Err(e) = wait_converged(&cluster).await {
        panic!(
            "{e}\n--- controller 4:\n{}\n--- leader:\n{}",
            cluster.get(4).log(),
            {
                let l = cluster.leader().await?;
                cluster.get(l).log()
            }
        );
    }
    assert!(cluster.get(4).log().contains("state restored from a snapshot"));

    // Hand leadership to the new member, then remove an old one.
    let out = ctl(
        home,
        &[
            "--controller",
            &addrs,
            "controller",
            "transfer-leader",
            "4",
            "-o",
            "json",
        ],
    );
    json_of(&out)?;
    assert_eq!(cluster.leader().await?, 4);
    let (list, ids) = remove_controller(home, &addrs, 1)?;
    assert_eq!(ids, vec![2, 3, 4], "{list:#}");

    // Removing the leader is refused with a hint.
    let out = ctl(
        home,
        &["--controller", &addrs, "controller", "remove", "4", "--yes"],
    );
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("transfer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Writes still commit with the new group.
    let live: Vec<String> = cluster
        .controllers
        .iter()
        .filter(|c| c.id != 1)
        .map(|c| c.addr())
        .collect();
    Writer::new(&live, &host_id)
        .write("group", "2-3-4", Duration::from_secs(10))
        .await?;
    Ok(())
}

#[tokio::test]
async fn controller_remove_decides_on_a_quorum_probe_of_its_own() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (mut cluster, _agent, _host_id) = trio_with_a_host(root.path(), TEST_RAFT).await?;
    let home = root.path();
    let addrs = cluster.addr_list();
    let leader = cluster.leader().await?;
    let followers: Vec<u64> = cluster
        .controllers
        .iter()
        .map(|c| c.id)
        .filter(|id| *id != leader)
        .collect();
    let (frozen, target) = (followers[0], followers[1]);

    // With one follower stopped, removing the other would leave the leader
    // and a stopped controller: refused, naming what the probe found, and
    // nothing changes.
    cluster.get(frozen).freeze();
    let out = ctl(
        home,
        &[
            "--controller",
            &addrs,
            "controller",
            "remove",
            &target.to_string(),
            "--yes",
        ],
    );
    cluster.get(frozen).resume();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains("would leave 2 voters of which 1 answered"),
        "{stderr}"
    );

    // On the healthy trio the same removal goes through at once.
    let (list, ids) = remove_controller(home, &addrs, target)?;
    assert!(!ids.contains(&target), "{list:#}");
    assert_eq!(ids.len(), 2, "{list:#}");
    Ok(())
}

/// A small tmpfs mounted at `path` for one test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// `None` (with the reason printed) where mounting is not allowed: the
    /// test needs root, as on our CI machines.
    fn mount(path: &std::path::Path, size_mib: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).ok()?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(path)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here ({}); this test needs root",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(SmallDisk(path.to_owned()))
    }

    /// Writes a filler file until the disk refuses (ENOSPC).
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let filler = self.0.join("filler");
        let mut file = std::fs::File::create(&filler).expect("create the filler");
        let chunk = vec![0u8; 1 << 20];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_controller_whose_disk_fills_stops_then_waits_for_space_and_catches_up() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    // Controller 3's data dir on its own 96 MiB disk.
    let Some(disk) = SmallDisk::mount(&root.path().join("controller-3").join("data"), 96) else {
        return Ok(());
    };
    // No preallocated log: the default 16 MiB taken ahead would carry this
    // test's few hundred writes past the full disk (with it, the replica
    // stops the same way once the chunk is used up: the extension fails
    // and the write itself meets ENOSPC).
    let raft = format!("{TEST_RAFT}preallocate_mib = 0\n");
    let (mut cluster, _agent, host_id) = trio_with_a_host(root.path(), &raft).await?;
    let filler = disk.fill();

    // Writes go on; controller 3 cannot persist them, stops with exit 75
    // and says why.
    let mut writer = Writer::new(&cluster.addrs(), &host_id);
    let mut exit = None;
    for i in 0..200 {
        writer
            .write("full", &i.to_string(), Duration::from_secs(10))
            .await?;
        if let Some(status) = cluster.get(3).exited_within(Duration::ZERO).await? {
            exit = Some(status);
            break;
        }
    }
    let exit = match exit {
        Some(status) => status,
        None => cluster
            .get(3)
            .exited_within(Duration::from_secs(20))
            .await?
            .expect("controller 3 still runs on a full disk"),
    };
    let log = cluster.get(3).log();
    assert_eq!(exit.code(), Some(75), "{log}");
    assert!(log.contains("disk of the data dir is full"), "{log}");

    // The other two carry on.
    let live: Vec<String> = cluster
        .controllers
        .iter()
        .filter(|c| c.id != 3)
        .map(|c| c.addr())
        .collect();
    Writer::new(&live, &host_id)
        .write("while", "full", Duration::from_secs(10))
        .await?;

    // Started again on the full disk, it waits and writes nothing.
    cluster.get(3).spawn()?;
    let log_path = cluster.get(3).dir.join("log");
    eventually(
        Duration::from_secs(20),
        "controller 3 waiting for space",
        || async {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            (log.contains("waiting for free space").then_some(()), ())
        },
    )
    .await?;
    assert!(
        cluster
            .get(3)
            .exited_within(Duration::from_secs(1))
            .await?
            .is_none(),
        "it must wait, not exit: {}",
        cluster.get(3).log()
    );

    // Space returns: it starts by itself and catches up.
    std::fs::remove_file(&filler)?;
    cluster.get(3).wait_answering().await?;
    Writer::new(&cluster.addrs(), &host_id)
        .write("after", "space", Duration::from_secs(10))
        .await?;
    wait_converged(&cluster).await?;
    Ok(())
}

#[tokio::test]
async fn an_isolated_follower_refuses_event_reads_instead_of_answering_from_its_copy() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (mut cluster, _agent, _host_id) = trio_with_a_host(root.path(), TEST_RAFT).await?;
    let leader = cluster.leader().await?;
    let ids: Vec<u64> = cluster.controllers.iter().map(|c| c.id).collect();
    let follower = *ids.iter().find(|id| **id != leader).unwrap();
    let address = cluster.get(follower).addr();
    let request = rpool_proto::v1::ListEventsRequest {
        pool: String::new(),
        after_index: 0,
        limit: 0,
        kind: String::new(),
    };
    // Connected, the follower answers (through the leader). The client
    // waits longer than any server-side deadline, as rpoolctl does.
    let channel = rpool_tests::admin_tls()
        .endpoint(&address)?
        .timeout(Duration::from_secs(20))
        .connect()
        .await?;
    let mut admin = AdminServiceClient::new(channel);
    admin.list_events(request.clone()).await?;

    // Cut off from both others: it must refuse, not serve its own copy.
    for id in ids.iter().filter(|id| **id != follower) {
        cluster.get(*id).freeze();
    }
    let answer = tokio::time::timeout(Duration::from_secs(15), admin.list_events(request)).await;
    for id in ids.iter().filter(|id| **id != follower) {
        cluster.get(*id).resume();
    }
    match answer {
        Ok(Ok(events)) => panic!(
            "an isolated follower answered from its copy: {} events",
            events.into_inner().events.len()
        ),
        Ok(Err(status)) => assert!(
            matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
            ),
            "{status:?}"
        ),
        Err(_) => panic!("no answer within 15 s: the follower must refuse, not hang"),
    }
    Ok(())
}
