//! The suite's clients: one writer (through the controllers in turn) and
//! one reader per controller, on one register (a host label), recording
//! every call with its invocation and completion time and its outcome.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use rpool_proto::v1::{GetHostRequest, SetHostLabelsRequest};
use rpool_tests::linearizable::{Call, Op};
use tonic::Code;

use crate::testbed::Testbed;

/// Pause between one client's calls.
const PACE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Surely not applied (rejected before any proposal).
    Failed,
    /// Maybe applied (timeout, lost connection, leadership change).
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Record {
    pub client: String,
    pub write: Option<String>,
    /// What a successful read saw.
    pub read: Option<Option<String>>,
    pub invoked: u64,
    pub completed: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Default)]
pub struct History(pub Vec<Record>);

impl History {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The calls the checker sees: acknowledged and unknown writes, and
    /// successful reads.
    pub fn calls(&self) -> Vec<Call> {
        let mut calls = Vec::new();
        for r in &self.0 {
            let call = match (&r.write, &r.read, r.outcome) {
                (Some(v), _, Outcome::Ok) => (Op::Write(v.clone()), Some(r.completed)),
                (Some(v), _, Outcome::Unknown) => (Op::Write(v.clone()), None),
                (None, Some(seen), Outcome::Ok) => (Op::Read(seen.clone()), Some(r.completed)),
                _ => continue,
            };
            calls.push(Call {
                client: r.client.clone(),
                op: call.0,
                invoked: r.invoked,
                completed: call.1,
            });
        }
        calls
    }
}

pub struct Clients {
    start: Instant,
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn classify(code: Code) -> Outcome {
    match code {
        Code::InvalidArgument
        | Code::NotFound
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::AlreadyExists
        | Code::OutOfRange => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

impl Clients {
    pub fn start(tb: &Testbed, host_id: &str, key: &str) -> Result<Clients> {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let now = move || start.elapsed().as_nanos() as u64;

        let writers = [tb.admin(1)?, tb.admin(2)?, tb.admin(3)?];
        {
            let (stop, records, host_id, key) = (
                stop.clone(),
                records.clone(),
                host_id.to_string(),
                key.to_string(),
            );
            tasks.push(tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let via = (seq % 3) as usize;
                    let value = format!("v{seq}");
                    let request = SetHostLabelsRequest {
                        host_id: host_id.clone(),
                        set: HashMap::from([(key.clone(), value.clone())]),
                        remove: Vec::new(),
                    };
                    let invoked = now();
                    let result = writers[via].clone().set_host_labels(request).await;
                    let outcome = match result {
                        Ok(_) => Outcome::Ok,
                        Err(status) => classify(status.code()),
                    };
                    records.lock().unwrap().push(Record {
                        client: format!("writer via ctl-{}", via + 1),
                        write: Some(value),
                        read: None,
                        invoked,
                        completed: now(),
                        outcome,
                    });
                    tokio::time::sleep(PACE).await;
                }
            }));
        }
        for n in 1..=3u64 {
            let client = tb.admin(n)?;
            let (stop, records, host_id, key) = (
                stop.clone(),
                records.clone(),
                host_id.to_string(),
                key.to_string(),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let request = GetHostRequest {
                        host_id: host_id.clone(),
                    };
                    let invoked = now();
                    let result = client.clone().get_host(request).await;
                    let completed = now();
                    let (read, outcome) = match result {
                        Ok(host) => {
                            let labels = host.into_inner().facts.map(|f| f.labels).unwrap_or_default();
                            (Some(labels.get(&key).cloned()), Outcome::Ok)
                        }
                        // A read that failed observed nothing.
                        Err(_) => (None, Outcome::Failed),
                    };
                    records.lock().unwrap().push(Record {
                        client: format!("reader via ctl-{n}"),
                        write: None,
                        read,
                        invoked,
                        completed,
                        outcome,
                    });
                    tokio::time::sleep(PACE).await;
                }
            }));
        }
        Ok(Clients {
            start,
            stop,
            records,
            tasks,
        })
    }

    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Completion time of the first acknowledged write invoked at or
    /// after `t`.
    pub fn first_ok_write_after(&self, t: u64) -> Option<u64> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.write.is_some() && r.outcome == Outcome::Ok && r.invoked >= t)
            .map(|r| r.completed)
            .min()
    }

    pub fn summary(&self) -> String {
        let records = self.records.lock().unwrap();
        let last = records.iter().rev().find(|r| r.write.is_some());
        format!("{} calls; last write {last:?}", records.len())
    }

    pub async fn stop(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let records = std::mem::take(&mut *self.records.lock().unwrap());
        History(records)
    }
}

/// One scenario's figures (one printed line, one table row).
#[derive(Debug, Default)]
pub struct Figures {
    pub name: String,
    writes: [usize; 3],
    reads: [usize; 2],
    /// Fault to the first acknowledged write invoked after it (ms).
    fault_to_write_ms: Option<u64>,
    /// Heal to the first acknowledged write invoked after it (ms).
    heal_to_write_ms: u64,
    /// Longest time between two acknowledged writes' completions (ms).
    longest_gap_ms: u64,
    /// Heal to every host ready again (s).
    pub hosts_ready_s: f64,
    pub note: String,
}

impl Figures {
    pub fn of(name: &str, history: &History, fault_at: u64, heal_at: u64, recovered_at: u64) -> Figures {
        let count = |write: bool, outcome: Outcome| {
            history
                .0
                .iter()
                .filter(|r| r.write.is_some() == write && r.outcome == outcome)
                .count()
        };
        let mut acked: Vec<&Record> = history
            .0
            .iter()
            .filter(|r| r.write.is_some() && r.outcome == Outcome::Ok)
            .collect();
        acked.sort_by_key(|r| r.completed);
        let fault_to_write = acked
            .iter()
            .filter(|r| r.invoked >= fault_at)
            .map(|r| r.completed)
            .min()
            .map(|c| (c - fault_at) / 1_000_000);
        let longest_gap = acked
            .windows(2)
            .map(|w| w[1].completed - w[0].completed)
            .max()
            .unwrap_or(0)
            / 1_000_000;
        Figures {
            name: name.into(),
            writes: [
                count(true, Outcome::Ok),
                count(true, Outcome::Failed),
                count(true, Outcome::Unknown),
            ],
            reads: [count(false, Outcome::Ok), count(false, Outcome::Failed)],
            fault_to_write_ms: fault_to_write,
            heal_to_write_ms: recovered_at.saturating_sub(heal_at) / 1_000_000,
            longest_gap_ms: longest_gap,
            hosts_ready_s: 0.0,
            note: String::new(),
        }
    }

    fn fault_to_write(&self) -> String {
        self.fault_to_write_ms
            .map(|ms| format!("{ms}"))
            .unwrap_or_else(|| "-".into())
    }

    pub fn line(&self) -> String {
        format!(
            "{}: writes ok/failed/unknown {}/{}/{}, reads ok/failed {}/{}, fault->first write {} ms, heal->first write {} ms, longest write gap {} ms, all hosts ready {:.1} s after heal, linearizable{}",
            self.name,
            self.writes[0],
            self.writes[1],
            self.writes[2],
            self.reads[0],
            self.reads[1],
            self.fault_to_write(),
            self.heal_to_write_ms,
            self.longest_gap_ms,
            self.hosts_ready_s,
            if self.note.is_empty() {
                String::new()
            } else {
                format!("; {}", self.note)
            }
        )
    }

    pub fn table(rows: &[Figures]) -> String {
        let mut out = String::from(
            "| scenario | writes ok / failed / unknown | reads ok / failed | fault → first write (ms) | heal → first write (ms) | longest write gap (ms) | hosts ready after heal (s) | notes |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for f in rows {
            let _ = writeln!(
                out,
                "| {} | {} / {} / {} | {} / {} | {} | {} | {} | {:.1} | {} |",
                f.name,
                f.writes[0],
                f.writes[1],
                f.writes[2],
                f.reads[0],
                f.reads[1],
                f.fault_to_write(),
                f.heal_to_write_ms,
                f.longest_gap_ms,
                f.hosts_ready_s,
                f.note
            );
        }
        out
    }
}
