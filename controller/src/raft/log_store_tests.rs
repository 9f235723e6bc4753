//! Tests of the log store on real files: reopen, conflicts, compaction,
//! snapshots, and the checks on open (torn tail, overwritten bytes,
//! truncation, wiped or foreign directories).

use super::*;
use raft::Storage;

fn entry(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e.data = format!("cmd-{index}").into_bytes().into();
    e
}

fn open(dir: &Path) -> LogStore {
    LogStore::open(&dir.join("raft"), 1, true).unwrap()
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    let mut hs = HardState::default();
    hs.term = term;
    hs.vote = vote;
    hs.commit = commit;
    hs
}

fn indexes(store: &LogStore) -> (u64, u64) {
    (store.first_index().unwrap(), store.last_index().unwrap())
}

/// The only segment file of a log directory.
fn segment_of(dir: &Path) -> PathBuf {
    let seqs = wal::list_segments(&dir.join("raft")).unwrap();
    assert_eq!(seqs.len(), 1, "one live segment");
    dir.join("raft").join(format!("{:020}.wal", seqs[0]))
}

#[test]
fn appended_entries_hard_state_and_conf_state_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        assert!(store.is_empty());
        store.append(&[entry(1, 1), entry(2, 1), entry(3, 2)]).unwrap();
        store.set_hard_state(&hard_state(2, 3, 2)).unwrap();
        let mut cs = ConfState::default();
        cs.voters = vec![1, 2, 3];
        store.set_conf_state(&cs).unwrap();
        store.sync().unwrap();
    }
    let store = open(dir.path());
    assert!(!store.is_empty());
    let state = store.initial_state().unwrap();
    let hs = &state.hard_state;
    assert_eq!((hs.term, hs.vote, hs.commit), (2, 3, 2));
    assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
    assert_eq!(indexes(&store), (1, 3));
    assert_eq!(store.term(3).unwrap(), 2);
    let got = store
        .entries(1, 4, None, GetEntriesContext::empty(false))
        .unwrap();
    assert_eq!(got, vec![entry(1, 1), entry(2, 1), entry(3, 2)]);
}

#[test]
fn a_conflicting_append_replaces_the_uncommitted_suffix_also_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .append(&[entry(1, 1), entry(2, 1), entry(3, 1), entry(4, 1)])
            .unwrap();
        store.append(&[entry(3, 2)]).unwrap();
        assert_eq!(store.last_index().unwrap(), 3);
        assert_eq!(store.term(3).unwrap(), 2);
        assert!(matches!(
            store.term(4),
            Err(raft::Error::Store(StorageError::Unavailable))
        ));
        store.sync().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(indexes(&store), (1, 3));
    assert_eq!(store.term(3).unwrap(), 2);
    assert!(matches!(store.append(&[entry(9, 2)]), Err(LogError::Invalid(_))));
}

#[test]
fn compaction_drops_the_prefix_keeps_its_term_and_leaves_one_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .append(&(1..=10).map(|i| entry(i, 1 + i / 5)).collect::<Vec<_>>())
            .unwrap();
        store.set_hard_state(&hard_state(3, 1, 8)).unwrap();
        store.sync().unwrap();
        store.compact(6, b"state at 6".to_vec()).unwrap();
        assert_eq!(store.first_index().unwrap(), 7);
        assert_eq!(store.term(6).unwrap(), 2);
        assert!(matches!(
            store.term(5),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            store.entries(5, 8, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let snap = store.snapshot(0, 2).unwrap();
        assert_eq!(snap.get_metadata().index, 6);
        assert_eq!(&snap.data[..], b"state at 6");
        assert!(
            store.snapshot(7, 2).is_err(),
            "a snapshot older than requested was served"
        );
        // Size limit: at least one entry, then stop at the budget.
        let one = store
            .entries(7, 11, Some(1), GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(one.len(), 1);
    }
    segment_of(dir.path());
    let store = open(dir.path());
    assert_eq!(indexes(&store), (7, 10));
    assert_eq!(store.term(6).unwrap(), 2);
    assert_eq!(store.hard_state().commit, 8);
}

#[test]
fn an_installed_snapshot_replaces_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.append(&[entry(1, 1), entry(2, 1)]).unwrap();
        let mut snapshot = Snapshot::default();
        snapshot.data = b"leader state".to_vec().into();
        let meta = snapshot.mut_metadata();
        meta.index = 50;
        meta.term = 4;
        meta.mut_conf_state().voters = vec![1, 2, 3];
        store.apply_snapshot(&snapshot).unwrap();
    }
    let store = open(dir.path());
    assert_eq!(indexes(&store), (51, 50));
    assert_eq!(store.term(50).unwrap(), 4);
    assert_eq!(store.hard_state().commit, 50);
    assert_eq!(store.conf_state().voters, vec![1, 2, 3]);
    store.append(&[entry(51, 4)]).unwrap();
    assert_eq!(store.last_index().unwrap(), 51);
}

#[test]
fn a_snapshot_file_written_before_a_crash_is_completed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .append(&(1..=5).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        store.sync().unwrap();
        // The crash came after the snapshot file, before the log record.
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 3;
        snapshot.mut_metadata().term = 1;
        snapshot_file::write(&dir.path().join("raft"), &snapshot).unwrap();
    }
    let store = open(dir.path());
    assert_eq!(
        indexes(&store),
        (4, 5),
        "compaction completed, entries after it kept"
    );
}

#[test]
fn a_torn_last_write_is_cut_off_and_the_synced_prefix_kept() {
    let dir = tempfile::tempdir().unwrap();
    let synced_len;
    let full;
    {
        let store = open(dir.path());
        store.append(&[entry(1, 1), entry(2, 1)]).unwrap();
        store.set_hard_state(&hard_state(1, 1, 2)).unwrap();
        store.sync().unwrap();
        synced_len = store.unsynced().1;
        store
            .persist_ready(&[entry(3, 1)], Some(&hard_state(1, 1, 3)))
            .unwrap();
        full = store.unsynced().2;
    }
    let path = segment_of(dir.path());
    // Half of the last batch reached the disk.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(synced_len + (full - synced_len) / 2).unwrap();
    drop(file);
    let store = open(dir.path());
    assert_eq!(indexes(&store), (1, 2));
    assert_eq!(store.hard_state().commit, 2);
    assert_eq!(store.unsynced().2, synced_len, "cut to the valid prefix");
    // And it takes writes again after the cut.
    store.append(&[entry(3, 2)]).unwrap();
    store.sync().unwrap();
    drop(store);
    assert_eq!(indexes(&open(dir.path())), (1, 3));
}

#[test]
fn an_overwritten_byte_inside_the_log_is_damage_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let written;
    {
        let store = open(dir.path());
        for i in 1..=20 {
            store.append(&[entry(i, 1)]).unwrap();
        }
        store.sync().unwrap();
        written = store.unsynced().2;
    }
    let path = segment_of(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = written as usize / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&path, &bytes).unwrap();
    let err = LogStore::open(&dir.path().join("raft"), 1, true).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, LogError::Damaged { .. }), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("controller remove"), "the remedy is named: {text}");
}

#[test]
fn a_truncated_log_behind_its_commit_index_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let mut cut_at = 0;
    {
        let store = open(dir.path());
        for i in 1..=10 {
            store.append(&[entry(i, 1)]).unwrap();
            if i == 5 {
                store.sync().unwrap();
                cut_at = store.unsynced().1;
            }
        }
        store.set_hard_state(&hard_state(1, 1, 10)).unwrap();
        store.sync().unwrap();
    }
    // Everything after entry 5 lost, the hard state (commit 10) kept: as
    // if a copy or a disk dropped the middle of the file.
    let path = segment_of(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let hs_batch = wal::encode_batch(&[Record::HardState(hard_state(1, 1, 10))]);
    let mut cut = bytes[..cut_at as usize].to_vec();
    cut.extend_from_slice(&hs_batch);
    std::fs::write(&path, &cut).unwrap();
    let text = LogStore::open(&dir.path().join("raft"), 1, true)
        .err()
        .unwrap()
        .to_string();
    assert!(
        text.contains("entry 10 is committed but the log ends at 5"),
        "{text}"
    );
}

#[test]
fn a_wiped_log_is_refused_unless_the_caller_may_initialise_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.append(&[entry(1, 1)]).unwrap();
        store.sync().unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("raft")).unwrap();
    let text = LogStore::open(&dir.path().join("raft"), 1, false)
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains("the log was wiped or lost"), "{text}");
    // A log of controller 1 does not open as controller 2's.
    let store = open(dir.path());
    drop(store);
    let text = LogStore::open(&dir.path().join("raft"), 2, true)
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains("belongs to another controller"), "{text}");
}

#[test]
fn a_log_marked_damaged_never_opens_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .mark_damaged("leader 2 believes this replica holds entry 9")
        .unwrap();
    drop(store);
    let text = LogStore::open(&dir.path().join("raft"), 1, true)
        .err()
        .unwrap()
        .to_string();
    assert!(
        text.contains("leader 2 believes this replica holds entry 9"),
        "{text}"
    );
}

#[test]
fn a_missing_snapshot_file_under_a_compacted_log_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .append(&(1..=4).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        store.compact(2, b"s".to_vec()).unwrap();
    }
    std::fs::remove_file(snapshot_file::path(&dir.path().join("raft"))).unwrap();
    let text = LogStore::open(&dir.path().join("raft"), 1, true)
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains("snapshot file holds nothing"), "{text}");
}

#[test]
fn a_first_start_interrupted_before_member_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let raft = dir.path().join("raft");
    std::fs::create_dir_all(&raft).unwrap();
    std::fs::write(raft.join("00000000000000000001.wal"), b"RPWAL001 half").unwrap();
    let store = LogStore::open(&raft, 1, true).unwrap();
    assert!(store.is_empty());
    assert_eq!(wal::list_segments(&raft).unwrap().len(), 1);
}

#[test]
fn an_install_interrupted_after_the_snapshot_file_is_completed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .append(&(1..=5).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        store.set_hard_state(&hard_state(1, 1, 3)).unwrap();
        store.sync().unwrap();
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = 50;
        meta.term = 4;
        meta.mut_conf_state().voters = vec![1, 2, 4];
        snapshot_file::write(&dir.path().join("raft"), &snapshot).unwrap();
    }
    let store = open(dir.path());
    assert_eq!(
        indexes(&store),
        (51, 50),
        "the leader's snapshot replaced the log"
    );
    assert_eq!(store.conf_state().voters, vec![1, 2, 4]);
    let hs = store.hard_state();
    assert_eq!((hs.term, hs.commit), (4, 50));
}

#[test]
fn a_ready_that_only_moves_commit_writes_nothing_and_the_next_batch_carries_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .persist_ready(&[entry(1, 1), entry(2, 1)], Some(&hard_state(1, 1, 0)))
            .unwrap();
        store.sync().unwrap();
        let (_, synced, len) = store.unsynced();
        assert_eq!(synced, len);
        // Commit only: memory moves, the file does not, nothing to sync.
        store.persist_ready(&[], Some(&hard_state(1, 1, 2))).unwrap();
        assert_eq!(store.hard_state().commit, 2);
        let (_, synced, after) = store.unsynced();
        assert_eq!((synced, after), (len, len), "a commit-only Ready wrote bytes");
        assert_eq!(store.initial_state().unwrap().hard_state.commit, 2);
        // A term change is written at once.
        store.persist_ready(&[], Some(&hard_state(2, 0, 2))).unwrap();
        assert!(store.unsynced().2 > len, "a new term must be written");
        store.sync().unwrap();
        // The commit moves again, then entries come without a hard state:
        // the batch carries the commit along.
        store.persist_ready(&[], Some(&hard_state(2, 0, 2))).unwrap();
        store.persist_ready(&[entry(3, 2)], None).unwrap();
        store.persist_ready(&[], Some(&hard_state(2, 0, 3))).unwrap();
        store.persist_ready(&[entry(4, 2)], None).unwrap();
        store.sync().unwrap();
    }
    let store = open(dir.path());
    let hs = store.initial_state().unwrap().hard_state;
    assert_eq!((hs.term, hs.vote, hs.commit), (2, 0, 3));
    assert_eq!(indexes(&store), (1, 4));
}

#[test]
fn a_commit_kept_in_memory_is_lost_on_a_crash_but_never_ahead_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .persist_ready(&[entry(1, 1), entry(2, 1)], Some(&hard_state(1, 1, 0)))
            .unwrap();
        store.sync().unwrap();
        store.persist_ready(&[], Some(&hard_state(1, 1, 2))).unwrap();
        // Crash: dropped without a later batch.
    }
    let store = open(dir.path());
    let hs = store.initial_state().unwrap().hard_state;
    assert_eq!((hs.term, hs.vote, hs.commit), (1, 1, 0));
    assert_eq!(indexes(&store), (1, 2));
}

#[test]
fn the_live_segment_is_preallocated_and_its_zeros_are_not_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let written;
    {
        let store = open(dir.path());
        for i in 1..=5 {
            store.append(&[entry(i, 1)]).unwrap();
        }
        store.set_hard_state(&hard_state(1, 1, 5)).unwrap();
        store.sync().unwrap();
        written = store.unsynced().2;
    }
    let path = segment_of(dir.path());
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(
        size,
        wal::PREALLOCATE_BYTES,
        "one chunk, {written} bytes of it written"
    );
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes[written as usize..].iter().all(|b| *b == 0));
    // Reopened: nothing cut, every entry there, the next write in place.
    let store = open(dir.path());
    assert_eq!(indexes(&store), (1, 5));
    assert_eq!(store.unsynced().2, written);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    store.append(&[entry(6, 1)]).unwrap();
    store.sync().unwrap();
    let after = store.unsynced().2;
    drop(store);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        size,
        "written inside the chunk"
    );
    // A torn write inside the preallocated zeros (half a batch, then
    // zeros): cut, and the chunk preallocated again.
    let torn = wal::encode_batch(&[Record::Entry(entry(7, 1))]);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &torn[..torn.len() / 2], after).unwrap();
    drop(file);
    let store = open(dir.path());
    assert_eq!(indexes(&store), (1, 6));
    assert_eq!(store.unsynced().2, after, "cut to the valid prefix");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        after,
        "the torn bytes are gone"
    );
    store.append(&[entry(7, 1)]).unwrap();
    store.sync().unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        size,
        "preallocated again"
    );
    // Past the chunk, the file grows by another.
    let big = vec![b'x'; wal::PREALLOCATE_BYTES as usize / 4];
    for i in 8..=12 {
        let mut e = entry(i, 1);
        e.data = big.clone().into();
        store.append(&[e]).unwrap();
    }
    store.sync().unwrap();
    drop(store);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        2 * wal::PREALLOCATE_BYTES
    );
    let store = open(dir.path());
    assert_eq!(indexes(&store), (1, 12));
    // Preallocation off: a write past the file's end extends it by itself.
    store.set_preallocation(0);
    let written = store.unsynced().2;
    let room = 2 * wal::PREALLOCATE_BYTES - written;
    let mut e = entry(13, 1);
    e.data = vec![b'y'; room as usize + 100].into();
    store.append(&[e]).unwrap();
    store.sync().unwrap();
    let end = store.unsynced().2;
    drop(store);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        end,
        "no chunk past the end"
    );
    assert_eq!(indexes(&open(dir.path())), (1, 13));
}
