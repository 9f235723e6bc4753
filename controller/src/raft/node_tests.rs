//! Three replicas in one process over an in-memory transport: election,
//! replication, forwarding from a follower, failover and compaction.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use super::*;

/// Applied payloads in order, in memory (rebuilt from the log on start).
#[derive(Default)]
struct ListMachine {
    applied: u64,
    items: Vec<Vec<u8>>,
}

impl StateMachine for ListMachine {
    type Output = u64;
    fn applied_index(&self) -> u64 {
        self.applied
    }
    fn apply(&mut self, index: u64, data: &[u8]) -> Result<u64, MachineError> {
        self.items.push(data.to_vec());
        self.applied = index;
        Ok(index)
    }
    fn skip(&mut self, index: u64) -> Result<(), MachineError> {
        self.applied = index;
        Ok(())
    }
    fn apply_conf_change(&mut self, index: u64, _: &ConfChange) -> Result<(), MachineError> {
        self.skip(index)
    }
    fn snapshot(&self) -> Vec<u8> {
        self.items.join(&b'\n')
    }
    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), MachineError> {
        self.items = data.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
        self.applied = index;
        Ok(())
    }
}

/// Delivers each message to its destination's handle, if it is up.
#[derive(Default)]
struct Net(Mutex<BTreeMap<u64, RaftHandle<u64>>>);

/// One replica's link to the network. With `incarnations`, each message is
/// admitted by the receiver as the gRPC service admits a batch, and a
/// refusal goes back to the sender, as the gRPC peer task reports it.
struct Link {
    net: Arc<Net>,
    id: u64,
    incarnations: bool,
    own: std::sync::OnceLock<Arc<super::super::incarnation::Incarnations>>,
}

impl Transport for Link {
    fn set_incarnations(&self, incarnations: Arc<super::super::incarnation::Incarnations>) {
        let _ = self.own.set(incarnations);
    }

    fn send(&self, messages: Vec<Message>) {
        let handles = self.net.0.lock().unwrap();
        for message in messages {
            let Some(handle) = handles.get(&message.to).cloned() else {
                continue;
            };
            if self.incarnations {
                let own = self.own.get().expect("set before any send");
                match handle
                    .incarnations()
                    .admit(self.id, Some(own.own()), &own.table())
                {
                    Ok(()) => {}
                    Err(super::super::incarnation::AdmitError::Refused(refusal)) => {
                        if let Some(me) = handles.get(&self.id) {
                            me.report_refused(refusal);
                        }
                        continue;
                    }
                    Err(e) => panic!("admitting a message: {e}"),
                }
            }
            tokio::spawn(async move {
                let _ = handle.step(message).await;
            });
        }
    }
}

/// A link to a network of its own (a group of one, or nothing to reach).
fn lone_link(id: u64) -> Link {
    Link {
        net: Arc::new(Net::default()),
        id,
        incarnations: false,
        own: std::sync::OnceLock::new(),
    }
}

async fn leader_of(net: &Net, ask: u64, not: u64) -> u64 {
    leader_within(net, ask, not, Duration::from_secs(5)).await
}

/// The leader `ask` knows, other than `not`, once it knows one; panics
/// after `limit`.
async fn leader_within(net: &Net, ask: u64, not: u64, limit: Duration) -> u64 {
    let started = Instant::now();
    while started.elapsed() < limit {
        let status = net.0.lock().unwrap().get(&ask).map(|h| h.status());
        if let Some(status) = status
            && status.leader_id != 0
            && status.leader_id != not
        {
            return status.leader_id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("controller {ask} knows no leader other than {not} within {limit:?}");
}

/// Starts replica `id` of a trio on `dir` (the log in `dir/raft`) and puts
/// its handle on the network.
fn boot(id: u64, dir: &Path, net: &Arc<Net>, stop: watch::Receiver<bool>) -> Result<NodeTask, NodeError> {
    boot_with(id, dir, net, stop, false)
}

/// [`boot`], checking incarnations on every message if `incarnations`.
fn boot_with(
    id: u64,
    dir: &Path,
    net: &Arc<Net>,
    stop: watch::Receiver<bool>,
    incarnations: bool,
) -> Result<NodeTask, NodeError> {
    boot_tuned(id, dir, net, stop, incarnations, |_| {})
}

/// [`boot_with`], with `tune` applied to the replica's configuration.
fn boot_tuned(
    id: u64,
    dir: &Path,
    net: &Arc<Net>,
    stop: watch::Receiver<bool>,
    incarnations: bool,
    tune: impl FnOnce(&mut RaftConfig),
) -> Result<NodeTask, NodeError> {
    let machine = ListMachine::default();
    let mut config = RaftConfig::new(id, vec![1, 2, 3], dir);
    config.snapshot_every = 50;
    tune(&mut config);
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let link = Link {
        net: net.clone(),
        id,
        incarnations,
        own: std::sync::OnceLock::new(),
    };
    let (handle, task) = start(config, machine, Arc::new(link), logger, stop)?;
    net.0.lock().unwrap().insert(id, handle);
    Ok(task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_replicate_forward_fail_over_and_compact() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let net = Arc::new(Net::default());
    let (_stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = BTreeMap::new();
    for id in 1..=3u64 {
        let task = boot(id, dirs[id as usize - 1].path(), &net, stop_rx.clone()).unwrap();
        tasks.insert(id, task);
    }
    let handle = |id: u64| net.0.lock().unwrap()[&id].clone();

    let leader = leader_of(&net, 1, 0).await;
    let mut last = 0;
    for i in 0..120u32 {
        let index = handle(leader)
            .propose(format!("v{i}").into_bytes())
            .await
            .unwrap();
        assert!(index > last, "indexes must grow: {index} after {last}");
        last = index;
    }
    // Compaction ran (every 50 entries) on the leader.
    assert!(handle(leader).status().commit_index >= 120);

    // A follower's proposal is forwarded to the leader and answered.
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    handle(follower)
        .propose(b"from a follower".to_vec())
        .await
        .unwrap();
    let read = handle(follower).read_barrier().await.unwrap();
    assert!(read > last, "the read index covers the follower's write");

    // Kill the leader: another is elected and commits.
    tasks.remove(&leader).unwrap().abort();
    net.0.lock().unwrap().remove(&leader);
    let next = leader_of(&net, follower, leader).await;
    assert_ne!(next, leader);
    handle(next).propose(b"after failover".to_vec()).await.unwrap();
}

/// A leader whose connections broke (a killed process) is replaced well
/// inside the election timeout: its followers give up its lease and
/// campaign by rank. Here the timeout is 4–8 s, and the new leader must
/// commit within 2 s of the report; without it, nobody campaigns for 4 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_that_lost_their_leaders_connection_elect_at_once() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let net = Arc::new(Net::default());
    let (_stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = BTreeMap::new();
    for id in 1..=3u64 {
        let slow = |config: &mut RaftConfig| {
            config.tick_ms = 50;
            config.election_tick = 80;
        };
        let task = boot_tuned(
            id,
            dirs[id as usize - 1].path(),
            &net,
            stop_rx.clone(),
            false,
            slow,
        )
        .unwrap();
        tasks.insert(id, task);
    }
    let handle = |id: u64| net.0.lock().unwrap()[&id].clone();
    // The first election waits out the timeout (nobody has lost anything).
    let leader = leader_within(&net, 1, 0, Duration::from_secs(10)).await;
    handle(leader).propose(b"before".to_vec()).await.unwrap();

    tasks.remove(&leader).unwrap().abort();
    net.0.lock().unwrap().remove(&leader);
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    for &id in &survivors {
        handle(id).report_lost(leader);
    }
    let next = leader_within(&net, survivors[0], leader, Duration::from_secs(2)).await;
    // The lowest surviving id campaigns first.
    assert_eq!(next, survivors[0]);
    tokio::time::timeout(Duration::from_secs(2), handle(next).propose(b"after".to_vec()))
        .await
        .expect("a write within 2 s")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_on_a_wiped_data_dir_stops_and_then_refuses_to_start() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let net = Arc::new(Net::default());
    let mut stops = BTreeMap::new();
    let mut tasks = BTreeMap::new();
    for id in 1..=3u64 {
        let (stop_tx, stop_rx) = watch::channel(false);
        tasks.insert(id, boot(id, dirs[id as usize - 1].path(), &net, stop_rx).unwrap());
        stops.insert(id, stop_tx);
    }
    let leader = leader_of(&net, 1, 0).await;
    let handle = |id: u64| net.0.lock().unwrap()[&id].clone();
    for i in 0..20u32 {
        handle(leader)
            .propose(format!("v{i}").into_bytes())
            .await
            .unwrap();
    }
    // Every follower acknowledged the writes (the leader counts on them).
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let mut status = handle(leader).watch_status();
    let acked = handle(leader).status().commit_index;
    tokio::time::timeout(
        Duration::from_secs(5),
        until(&mut status, |s| {
            s.progress.get(&follower).is_some_and(|m| *m >= acked)
        }),
    )
    .await
    .expect("the follower catches up");

    // Stop the follower cleanly, wipe its data dir, start it under its id.
    stops[&follower].send_replace(true);
    net.0.lock().unwrap().remove(&follower);
    tasks.remove(&follower).unwrap().await.unwrap().unwrap();
    let dir = dirs[follower as usize - 1].path();
    std::fs::remove_dir_all(dir.join("raft")).unwrap();
    let (_stop, stop_rx) = watch::channel(false);
    let task = boot(follower, dir, &net, stop_rx.clone()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the wiped replica stops within one heartbeat or so")
        .unwrap();
    let text = stopped.unwrap_err().to_string();
    assert!(text.contains("acknowledged entries were lost"), "{text}");
    assert!(text.contains("controller remove"), "the remedy is named: {text}");
    net.0.lock().unwrap().remove(&follower);

    // Every later start refuses at once, with the same reason.
    let text = boot(follower, dir, &net, stop_rx).err().unwrap().to_string();
    assert!(text.contains("acknowledged entries were lost"), "{text}");
    // The other two carry on.
    handle(leader).propose(b"still".to_vec()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_wiped_after_a_new_election_is_refused_by_its_peers_and_stops() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let net = Arc::new(Net::default());
    let mut stops = BTreeMap::new();
    let mut tasks = BTreeMap::new();
    for id in 1..=3u64 {
        let (stop_tx, stop_rx) = watch::channel(false);
        tasks.insert(
            id,
            boot_with(id, dirs[id as usize - 1].path(), &net, stop_rx, true).unwrap(),
        );
        stops.insert(id, stop_tx);
    }
    let leader = leader_of(&net, 1, 0).await;
    let handle = |id: u64| net.0.lock().unwrap()[&id].clone();
    let mut last = 0;
    for i in 0..20u32 {
        last = handle(leader)
            .propose(format!("v{i}").into_bytes())
            .await
            .unwrap();
    }
    // Every replica recorded the others' incarnations (a follower learns
    // the other follower's from the leader).
    for id in 1..=3u64 {
        let known: Vec<u64> = (1..=3)
            .filter(|p| handle(id).incarnations().known(*p).is_some())
            .collect();
        assert_eq!(known.len(), 2, "controller {id} knows {known:?}");
    }

    // Stop the leader; another is elected (its match index for the old
    // leader starts at 0, so the lost-data check cannot see a wipe).
    stops[&leader].send_replace(true);
    net.0.lock().unwrap().remove(&leader);
    tasks.remove(&leader).unwrap().await.unwrap().unwrap();
    let other = (1..=3).find(|id| *id != leader).unwrap();
    let next = leader_of(&net, other, leader).await;
    assert_ne!(next, leader);

    // Wipe the old leader's data dir and start it under its old id.
    let dir = dirs[leader as usize - 1].path();
    std::fs::remove_dir_all(dir.join("raft")).unwrap();
    let (_stop, stop_rx) = watch::channel(false);
    let task = boot_with(leader, dir, &net, stop_rx.clone(), true).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the wiped replica stops within an election timeout or so")
        .unwrap();
    let text = stopped.unwrap_err().to_string();
    assert!(text.contains("was wiped or lost"), "{text}");
    assert!(text.contains(&format!("controller {leader} came back")), "{text}");
    assert!(text.contains("controller add"), "the remedy is named: {text}");
    net.0.lock().unwrap().remove(&leader);
    // Every later start refuses at once, with the same reason.
    let text = boot_with(leader, dir, &net, stop_rx, true)
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains("was wiped or lost"), "{text}");

    // The other two never counted it and carry on with every write.
    let index = handle(next).propose(b"still".to_vec()).await.unwrap();
    assert!(index > last);
    for id in (1..=3).filter(|id| *id != leader) {
        let read = handle(id).read_barrier().await.unwrap();
        assert!(read >= index, "controller {id} read at {read}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_rebuilds_its_state_from_the_snapshot_file_and_the_entries_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut config = RaftConfig::new(1, vec![1], dir.path());
        config.snapshot_every = 50;
        config
    };
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let written: Vec<Vec<u8>> = (0..120).map(|i| format!("v{i}").into_bytes()).collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (handle, task) = start(
        config(),
        ListMachine::default(),
        Arc::new(lone_link(1)),
        logger.clone(),
        stop_rx,
    )
    .unwrap();
    let mut last = 0;
    for data in &written {
        last = handle.propose(data.clone()).await.unwrap();
    }
    stop_tx.send_replace(true);
    task.await.unwrap().unwrap();
    let log = crate::raft::log_store::LogStore::open(&dir.path().join("raft"), 1, false).unwrap();
    let snapshot = log.snapshot_index();
    assert!(
        snapshot > 0 && snapshot < last,
        "a snapshot with entries after it: {snapshot} of {last}"
    );
    drop(log);

    // Rebuilt offline from the log alone: the snapshot, then the rest.
    let loaded = load(config(), ListMachine::default()).unwrap();
    assert_eq!(loaded.items, written);
    assert_eq!(loaded.applied, last);

    // And by a start: the same state before anything new is applied.
    let (_stop_tx, stop_rx) = watch::channel(false);
    let (handle, _task) = start(
        config(),
        ListMachine::default(),
        Arc::new(lone_link(1)),
        logger,
        stop_rx,
    )
    .unwrap();
    assert!(handle.status().applied_index >= last);
    let next = handle.propose(b"after".to_vec()).await.unwrap();
    assert!(next > last);
}

#[test]
fn a_data_dir_with_an_earlier_state_store_and_no_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/db"), b"sled").unwrap();
    let machine = ListMachine::default();
    let (status, _) = watch::channel(RaftStatus::default());
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let err = Core::open(
        RaftConfig::new(1, vec![1, 2, 3], dir.path()),
        machine,
        Arc::new(lone_link(1)),
        &logger,
        status,
        1,
        |_| {},
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("earlier rpool"), "{err}");
    assert!(
        !dir.path().join("raft/MEMBER").exists(),
        "no log is created over it"
    );
    assert!(
        load(RaftConfig::new(1, vec![], dir.path()), ListMachine::default()).is_err(),
        "an offline load creates no log either"
    );
}
