//! The state store's writer thread: sled writes off the Raft thread.
//!
//! sled 0.34 writes and `sync_file_range`s its log on every batch (two
//! synchronous device writes per `apply_batch`, BENCHMARKS.md). Done on the
//! Raft thread, that kept the thread busy for ~0.2 ms after every applied
//! `Ready`, and the next proposal or append waited for it. The state store
//! needs no durability of its own between log compactions (the Raft log
//! holds every applied entry; module [`crate::raft::durable`]), so the
//! applied state's batches go to a thread of their own, in order:
//!
//! - [`Writer::write`] adds one [`Ops`] (the writes of one `Ready`'s
//!   entries, the applied index among them) to a batch gathered on the
//!   caller's thread, and returns. Once the batch is [`WRITE_DELAY`] old
//!   (or [`MAX_MERGED`] writes long) the next `write` hands it to the
//!   thread, which applies it as one sled batch (still atomic; a key
//!   written twice keeps its last value). sled then writes and syncs a few
//!   times a second, not after every `Ready`: its device writes competed
//!   with the log's `fdatasync` for the disk (a sequential write took
//!   1.10 ms instead of 1.35 ms with no sled writes at all, and moving the
//!   same writes to this thread without gathering changed nothing).
//!   Gathering on the caller's side wakes the thread ten times a second
//!   instead of once per `Ready` (the thread used to collect the batches
//!   itself: one futex wake-up and two context switches per write).
//! - [`Writer::settle`] waits until everything queued before it is in sled:
//!   compaction, a snapshot restore and shutdown settle before they flush
//!   and sync sled (`Core::sync_state`).
//! - A failed write (a full disk) is kept: nothing queued after it is ever
//!   applied (sled must hold a prefix of the applied entries, with its
//!   applied index), and every later `write` and `settle` returns it, so
//!   the replica stops on its next `Ready`.
//!
//! After a crash sled holds a prefix of the applied entries, as before
//! (what was gathered or queued is missing: after a burst of writes
//! followed by silence, the gathered batch waits for the next write or
//! settle): the log replays the rest.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sled::IVec;

/// Batches queued before [`Writer::write`] blocks (backpressure on the
/// Raft thread when the disk falls behind).
const QUEUE_LEN: usize = 1_024;
/// How long writes are gathered before they go to the thread as one batch.
const WRITE_DELAY: Duration = Duration::from_millis(100);
/// Most writes gathered into one sled batch.
const MAX_MERGED: usize = 4_096;

/// Writes to the state store, in order (a `sled::Batch` that can be merged
/// with the next one).
#[derive(Debug, Default)]
pub struct Ops {
    ops: Vec<(IVec, Option<IVec>)>,
}

impl Ops {
    pub fn insert(&mut self, key: impl Into<IVec>, value: impl Into<IVec>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub fn remove(&mut self, key: impl Into<IVec>) {
        self.ops.push((key.into(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Adds these writes, in order, to `batch`.
    pub fn append_to(self, batch: &mut sled::Batch) {
        for (key, value) in self.ops {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
    }

    /// One sled batch of these writes.
    pub fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        self.append_to(&mut batch);
        batch
    }
}

enum Job {
    Write(sled::Batch),
    Settle(SyncSender<()>),
}

/// Writes gathered since the last hand-over.
struct Gathered {
    batch: sled::Batch,
    since: Instant,
    writes: usize,
}

/// The first write that failed; nothing after it is applied. Read without a
/// lock: the Raft thread's `write` never waits on the thread's disk writes.
type Failed = Arc<OnceLock<sled::Error>>;

/// A thread that applies [`Ops`] to a sled database in order.
pub struct Writer {
    gathered: Option<Gathered>,
    jobs: Option<SyncSender<Job>>,
    failed: Failed,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread `name` writing to `db`.
    pub fn start(db: sled::Db, name: String) -> std::io::Result<Writer> {
        let (jobs, rx) = sync_channel(QUEUE_LEN);
        let failed = Failed::default();
        let thread = std::thread::Builder::new().name(name).spawn({
            let failed = failed.clone();
            move || run(&db, &rx, &failed)
        })?;
        Ok(Writer {
            gathered: None,
            jobs: Some(jobs),
            failed,
            thread: Some(thread),
        })
    }

    /// Gathers `ops`, handing what was gathered to the thread once it is
    /// [`WRITE_DELAY`] old or [`MAX_MERGED`] writes long. Fails with the
    /// error of an earlier write, if one failed.
    pub fn write(&mut self, ops: Ops) -> Result<(), sled::Error> {
        self.check()?;
        if !ops.is_empty() {
            let gathered = self.gathered.get_or_insert_with(|| Gathered {
                batch: sled::Batch::default(),
                since: Instant::now(),
                writes: 0,
            });
            ops.append_to(&mut gathered.batch);
            gathered.writes += 1;
        }
        match &self.gathered {
            Some(g) if g.writes >= MAX_MERGED || g.since.elapsed() >= WRITE_DELAY => self.hand_over(),
            _ => Ok(()),
        }
    }

    /// Waits until every write before is in sled (not necessarily on the
    /// disk: see `sync_state`), or fails with the first failed one.
    pub fn settle(&mut self) -> Result<(), sled::Error> {
        self.hand_over()?;
        let (done, wait) = sync_channel(1);
        self.send(Job::Settle(done))?;
        // The thread answers every Settle it receives, or ends (a panic).
        if wait.recv().is_err() {
            return Err(gone());
        }
        self.check()
    }

    /// Queues what was gathered.
    fn hand_over(&mut self) -> Result<(), sled::Error> {
        match self.gathered.take() {
            Some(gathered) => self.send(Job::Write(gathered.batch)),
            None => Ok(()),
        }
    }

    fn check(&self) -> Result<(), sled::Error> {
        match self.failed.get() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn send(&self, job: Job) -> Result<(), sled::Error> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|_| gone()),
            None => Err(gone()),
        }
    }
}

impl Drop for Writer {
    /// Applies what is gathered and queued, then ends the thread.
    fn drop(&mut self) {
        let _ = self.hand_over();
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn gone() -> sled::Error {
    sled::Error::ReportableBug("the state store's writer thread ended".into())
}

fn run(db: &sled::Db, jobs: &Receiver<Job>, failed: &Failed) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Settle(done) => {
                let _ = done.send(());
            }
            Job::Write(batch) => {
                if failed.get().is_none()
                    && let Err(e) = db.apply_batch(batch)
                {
                    tracing::error!(error = %e, "writing the state store failed; the replica stops");
                    let _ = failed.set(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(pairs: &[(&str, Option<&str>)]) -> Ops {
        let mut ops = Ops::default();
        for (key, value) in pairs {
            match value {
                Some(value) => ops.insert(key.as_bytes(), value.as_bytes()),
                None => ops.remove(key.as_bytes()),
            }
        }
        ops
    }

    /// What sled returns when the disk is full.
    fn full() -> sled::Error {
        sled::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC))
    }

    fn get(db: &sled::Db, key: &str) -> Option<String> {
        db.get(key)
            .unwrap()
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    #[test]
    fn writes_land_in_order_and_settle_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut writer = Writer::start(db.clone(), "test-writer".into()).unwrap();
        // Many small batches, each overwriting and removing what the one
        // before wrote: merged or not, the last one wins.
        for i in 0..2_000 {
            let value = i.to_string();
            writer
                .write(ops(&[
                    ("counter", Some(value.as_str())),
                    ("gone", Some("x")),
                    ("gone", None),
                    (&format!("k{i}"), Some("v")),
                ]))
                .unwrap();
            if i > 0 {
                writer.write(ops(&[(&format!("k{}", i - 1), None)])).unwrap();
            }
        }
        writer.settle().unwrap();
        assert_eq!(get(&db, "counter").as_deref(), Some("1999"));
        assert_eq!(get(&db, "gone"), None);
        assert_eq!(get(&db, "k1998"), None);
        assert_eq!(get(&db, "k1999").as_deref(), Some("v"));
        assert_eq!(db.len(), 2);
    }

    #[test]
    fn dropping_the_writer_applies_what_was_queued() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut writer = Writer::start(db.clone(), "test-writer".into()).unwrap();
        for i in 0..500 {
            writer.write(ops(&[(&format!("k{i}"), Some("v"))])).unwrap();
        }
        drop(writer);
        assert_eq!(db.len(), 500);
    }

    #[test]
    fn after_a_failed_write_nothing_later_is_applied_and_every_call_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut writer = Writer::start(db.clone(), "test-writer".into()).unwrap();
        writer.write(ops(&[("a", Some("1"))])).unwrap();
        writer.settle().unwrap();
        // What the thread records when sled refuses a batch (a full disk).
        writer.failed.set(full()).unwrap();
        let err = writer.write(ops(&[("b", Some("2"))])).unwrap_err();
        assert!(crate::replica::disk::is_disk_full(&err), "{err}");
        assert!(crate::replica::disk::is_disk_full(&writer.settle().unwrap_err()));
        drop(writer);
        assert_eq!(get(&db, "a").as_deref(), Some("1"));
        assert_eq!(get(&db, "b"), None);

        // The thread itself: batches already queued behind a failed one
        // are not applied (sled keeps a prefix of the applied entries), and
        // a Settle is still answered.
        let (jobs, rx) = sync_channel(8);
        let failed = Failed::default();
        failed.set(full()).unwrap();
        jobs.send(Job::Write(ops(&[("c", Some("3"))]).into_batch()))
            .unwrap();
        let (done, wait) = sync_channel(1);
        jobs.send(Job::Settle(done)).unwrap();
        drop(jobs);
        run(&db, &rx, &failed);
        assert!(wait.try_recv().is_ok());
        assert_eq!(get(&db, "c"), None);
    }
}
