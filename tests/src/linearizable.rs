//! A linearizability checker for a single register (the fault suite's
//! writer sets one host label, its readers read it back), after Wing and
//! Gong with Lowe's memoization (the search Knossos does): depth-first,
//! each step linearizes one call that may go first (invoked before every
//! pending call completed), memoizing (linearized set, register value) so a
//! history of a few hundred calls with a handful of clients is checked at
//! once.
//!
//! A call whose outcome is unknown (a write that timed out or failed in a
//! way that does not say whether it was applied) never completes: it may
//! take effect at any point after its invocation, or never. Reads that
//! failed are left out by the caller (they observed nothing).

use std::collections::HashSet;

/// What a call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set the register to this value (values are unique per history).
    Write(String),
    /// Read the register: the value seen (`None` = unset).
    Read(Option<String>),
}

/// One call of a history: times in any monotonic unit (the suite uses
/// nanoseconds since its start).
#[derive(Debug, Clone)]
pub struct Call {
    /// Which client made it (for messages only).
    pub client: String,
    pub op: Op,
    pub invoked: u64,
    /// `None`: outcome unknown (a write only); it may or may not have
    /// taken effect, at any time after `invoked`.
    pub completed: Option<u64>,
}

/// Checks that `history` is linearizable for a register starting at
/// `initial`. The error names the calls that could not be placed at the
/// deepest point the search reached.
pub fn check_register(history: &[Call], initial: Option<&str>) -> Result<(), String> {
    for call in history {
        if let (Op::Read(_), None) = (&call.op, call.completed) {
            return Err(format!(
                "read by {} at {} has no completion: leave failed reads out",
                call.client, call.invoked
            ));
        }
        if call.completed.is_some_and(|c| c < call.invoked) {
            return Err(format!("call {call:?} completes before it is invoked"));
        }
    }
    // An unknown write nobody read changes no read's legality: with values
    // unique, leaving it out (it "never happened") is always as good as
    // placing it, and it would multiply the search's states.
    let observed: HashSet<&str> = history
        .iter()
        .filter_map(|c| match &c.op {
            Op::Read(Some(v)) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    let mut calls: Vec<&Call> = history
        .iter()
        .filter(|c| match (&c.op, c.completed) {
            (Op::Write(v), None) => observed.contains(v.as_str()),
            _ => true,
        })
        .collect();
    calls.sort_by_key(|c| c.invoked);
    let mut search = Search {
        calls: &calls,
        done: vec![false; calls.len()],
        memo: HashSet::new(),
        deepest: (0, Vec::new()),
    };
    let required = calls.iter().filter(|c| c.completed.is_some()).count();
    if search.run(initial.map(str::to_string), required, 0) {
        return Ok(());
    }
    let (depth, stuck) = &search.deepest;
    Err(format!(
        "not linearizable: {depth} of {} calls placed at most; then none of these fits: {stuck:?}",
        calls.len()
    ))
}

struct Search<'a> {
    calls: &'a [&'a Call],
    done: Vec<bool>,
    memo: HashSet<(Vec<u64>, Option<String>)>,
    deepest: (usize, Vec<String>),
}

impl Search<'_> {
    fn key(&self, value: &Option<String>) -> (Vec<u64>, Option<String>) {
        let mut bits = vec![0u64; self.done.len().div_ceil(64)];
        for (i, d) in self.done.iter().enumerate() {
            if *d {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        (bits, value.clone())
    }

    /// True when the calls not yet linearized can be, from `value`, with
    /// `required` completed calls still to place.
    fn run(&mut self, value: Option<String>, required: usize, depth: usize) -> bool {
        if required == 0 {
            return true;
        }
        if !self.memo.insert(self.key(&value)) {
            return false;
        }
        // A call may go next iff it was invoked before every pending call
        // completed.
        let horizon = (0..self.calls.len())
            .filter(|&i| !self.done[i])
            .filter_map(|i| self.calls[i].completed)
            .min()
            .unwrap_or(u64::MAX);
        let mut misfits = Vec::new();
        for i in 0..self.calls.len() {
            let call = self.calls[i];
            if self.done[i] || call.invoked >= horizon {
                continue;
            }
            let next = match &call.op {
                Op::Write(v) => Some(v.clone()),
                Op::Read(seen) if *seen == value => value.clone(),
                Op::Read(_) => {
                    misfits.push(format!(
                        "{}: {:?} while the register holds {value:?}",
                        call.client, call.op
                    ));
                    continue;
                }
            };
            self.done[i] = true;
            let left = required - usize::from(call.completed.is_some());
            if self.run(next, left, depth + 1) {
                return true;
            }
            self.done[i] = false;
        }
        if depth >= self.deepest.0 {
            self.deepest = (depth, misfits);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(client: &str, v: &str, invoked: u64, completed: Option<u64>) -> Call {
        Call {
            client: client.into(),
            op: Op::Write(v.into()),
            invoked,
            completed,
        }
    }

    fn r(client: &str, v: Option<&str>, invoked: u64, completed: u64) -> Call {
        Call {
            client: client.into(),
            op: Op::Read(v.map(str::to_string)),
            invoked,
            completed: Some(completed),
        }
    }

    #[test]
    fn sequential_writes_and_reads_are_linearizable() {
        let h = [
            r("r", None, 0, 1),
            w("w", "1", 2, Some(3)),
            r("r", Some("1"), 4, 5),
            w("w", "2", 6, Some(7)),
            r("r", Some("2"), 8, 9),
        ];
        assert_eq!(check_register(&h, None), Ok(()));
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        for seen in [Some("0"), Some("1")] {
            let h = [w("w", "1", 10, Some(20)), r("r", seen, 12, 18)];
            assert_eq!(check_register(&h, Some("0")), Ok(()), "{seen:?}");
        }
    }

    #[test]
    fn a_stale_read_after_the_write_completed_is_not() {
        let h = [w("w", "1", 0, Some(10)), r("r", Some("0"), 11, 12)];
        let err = check_register(&h, Some("0")).unwrap_err();
        assert!(err.contains("not linearizable"), "{err}");
    }

    #[test]
    fn reads_may_not_go_back_in_time() {
        // The write is concurrent with both reads, but once one read saw
        // the new value a later read cannot see the old one.
        let h = [
            w("w", "1", 0, Some(100)),
            r("a", Some("1"), 10, 20),
            r("b", Some("0"), 30, 40),
        ];
        assert!(check_register(&h, Some("0")).is_err());
        // The other order is fine.
        let h = [
            w("w", "1", 0, Some(100)),
            r("a", Some("0"), 10, 20),
            r("b", Some("1"), 30, 40),
        ];
        assert_eq!(check_register(&h, Some("0")), Ok(()));
    }

    #[test]
    fn a_value_nobody_wrote_is_not() {
        let h = [w("w", "1", 0, Some(10)), r("r", Some("7"), 5, 15)];
        assert!(check_register(&h, None).is_err());
    }

    #[test]
    fn a_read_cannot_see_a_write_invoked_after_it_completed() {
        let h = [r("r", Some("1"), 0, 5), w("w", "1", 6, Some(10))];
        assert!(check_register(&h, None).is_err());
    }

    #[test]
    fn an_unknown_write_may_take_effect_late_or_never() {
        // Seen long after its invocation: it took effect then.
        let h = [
            w("w", "1", 0, None),
            r("r", None, 5, 6),
            r("r", Some("1"), 50, 60),
            r("r", Some("1"), 70, 80),
        ];
        assert_eq!(check_register(&h, None), Ok(()));
        // Never seen: it did not.
        let h = [
            w("w", "1", 0, None),
            w("w", "2", 10, Some(20)),
            r("r", Some("2"), 30, 40),
        ];
        assert_eq!(check_register(&h, None), Ok(()));
        // But once a later acknowledged write is seen, the unknown one
        // cannot reappear unless it is ordered after that write... which
        // its invocation allows: still fine.
        let h = [
            w("w", "1", 0, None),
            w("w", "2", 10, Some(20)),
            r("r", Some("2"), 30, 40),
            r("r", Some("1"), 50, 60),
        ];
        assert_eq!(check_register(&h, None), Ok(()));
        // It cannot reappear after a value it was surely overwritten by
        // and then seen again: 1, 2 (acked after 1 seen), 1 again.
        let h = [
            w("w", "1", 0, None),
            r("r", Some("1"), 5, 8),
            w("w", "2", 10, Some(20)),
            r("r", Some("2"), 30, 40),
            r("r", Some("1"), 50, 60),
        ];
        assert!(check_register(&h, None).is_err());
    }

    #[test]
    fn many_unknown_writes_nobody_read_check_quickly() {
        // A partition: 60 writes time out, none is ever read.
        let mut h = vec![w("w", "0", 0, Some(5))];
        for i in 1..=60u64 {
            h.push(w("w", &format!("u{i}"), i * 100, None));
            h.push(r("r", Some("0"), i * 100 + 10, i * 100 + 20));
        }
        let start = std::time::Instant::now();
        assert_eq!(check_register(&h, None), Ok(()));
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let h = [
            w("w", "1", 0, Some(10)),
            w("w", "2", 11, Some(20)),
            r("r", Some("1"), 30, 40),
        ];
        assert!(check_register(&h, None).is_err());
    }

    #[test]
    fn failed_reads_must_be_left_out() {
        let h = [Call {
            client: "r".into(),
            op: Op::Read(None),
            invoked: 0,
            completed: None,
        }];
        assert!(
            check_register(&h, None)
                .unwrap_err()
                .contains("leave failed reads out")
        );
    }

    #[test]
    fn a_long_history_with_four_clients_checks_quickly() {
        // One writer, three readers, 600 calls, all consistent.
        let mut h = Vec::new();
        let mut value: Option<String> = None;
        for step in 0..150u64 {
            let t = step * 100;
            let v = step.to_string();
            h.push(w("w", &v, t, Some(t + 50)));
            for (k, reader) in ["r1", "r2", "r3"].iter().enumerate() {
                // Readers overlapping the write see old or new.
                let seen = if k == 0 { value.clone() } else { Some(v.clone()) };
                let (a, b) = if k == 0 {
                    (t + 1, t + 49)
                } else {
                    (t + 51 + k as u64, t + 60 + k as u64)
                };
                h.push(r(reader, seen.as_deref(), a, b));
            }
            value = Some(v);
        }
        let start = std::time::Instant::now();
        assert_eq!(check_register(&h, None), Ok(()));
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }
}
