//! Running the simulator: one seed to convergence ([`Sim::run`]), the
//! seeds (fixed, then fresh and printed), and the tests.

use super::*;

impl Sim {
    /// Everything up, same applied index everywhere, one leader.
    pub(super) fn converged(&self) -> bool {
        let applied: BTreeSet<(u64, u64)> = self
            .nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .map(|c| (c.machine().applied_index(), c.raw().raft.raft_log.committed))
            .collect();
        // A wiped controller must have stopped by itself.
        let wiped_up =
            !self.no_incarnations && self.nodes.iter().any(|n| n.data_life > 0 && n.core.is_some());
        self.down().is_empty()
            && !wiped_up
            && applied.len() == 1
            && applied.iter().all(|(a, c)| a == c)
            && self.leader().is_some()
            && self.calls.is_empty()
    }

    pub(super) fn run(&mut self) -> Result<Summary, String> {
        self.run_until(CHAOS_TICKS * TICK_MS)?;
        // Heal everything.
        self.chaos = false;
        self.crash_mid_ready = None;
        if self.isolated.take().is_some() {
            self.note("partition healed (end of chaos)".to_owned());
        }
        for id in self.down() {
            self.boot(id)?;
        }
        let acked_in_chaos = self.summary.acked;
        if acked_in_chaos == 0 {
            return Err("no write was acknowledged during the run".to_owned());
        }
        // Stop the client load so that the trio can quiesce, then one last
        // write must go through.
        self.queue
            .retain(|_, e| !matches!(e, Event::Propose | Event::Read | Event::Chaos));
        let deadline = self.now + CONVERGE_TICKS * TICK_MS;
        let mut final_write: Option<u64> = None;
        loop {
            if self.now >= deadline {
                return Err(format!(
                    "no convergence within {CONVERGE_TICKS} ticks after healing: {}",
                    self.describe_nodes()
                ));
            }
            let until = self.now + TICK_MS;
            self.run_until(until)?;
            match final_write {
                None => {
                    if let Some(leader) = self.leader() {
                        final_write = Some(self.summary.acked);
                        self.propose(leader)?;
                    }
                }
                Some(before) => {
                    if self.summary.acked > before && self.converged() {
                        break;
                    }
                    if self.calls.is_empty() && self.summary.acked == before {
                        // The final write failed (leader change): retry.
                        final_write = None;
                    }
                }
            }
        }
        self.final_checks()?;
        let mut summary = self.summary.clone();
        summary.final_applied = self
            .nodes
            .iter()
            .find_map(|n| n.core.as_ref())
            .map_or(0, |c| c.machine().applied_index());
        summary.digest = self.digest();
        Ok(summary)
    }
}

/// Runs one seed; a panic inside (raft-rs asserts, sled) is a failure too.
pub(super) fn run_seed(seed: u64) -> Result<Summary, String> {
    let mut sim = std::panic::catch_unwind(|| Sim::new(seed)).map_err(|p| panic_text(&p))??;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.run()));
    let failure = match result {
        Ok(Ok(summary)) => return Ok(summary),
        Ok(Err(e)) => e,
        Err(panic) => panic_text(&panic),
    };
    Err(format!(
        "{failure}\n  controllers: {}\n  last events:\n    {}",
        sim.describe_nodes(),
        sim.trace.iter().cloned().collect::<Vec<_>>().join("\n    ")
    ))
}

pub(super) fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic".to_owned());
    format!("panicked: {text}")
}

pub(super) fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("RPOOL_SIM_SEED") {
        return vec![seed.trim().parse().expect("RPOOL_SIM_SEED is a number")];
    }
    let count = std::env::var("RPOOL_SIM_SEEDS")
        .ok()
        .map(|n| n.trim().parse().expect("RPOOL_SIM_SEEDS is a number"))
        .unwrap_or(200u64);
    // Fixed seeds, then fresh ones (printed, so a failure can be replayed).
    let fresh: Vec<u64> = (0..FRESH_SEEDS).map(|_| fastrand::u64(1_000_000..)).collect();
    eprintln!("simulation: fresh seeds this run: {fresh:?}");
    (0..count).chain(fresh).collect()
}

/// Random seeds run after the fixed ones.
const FRESH_SEEDS: usize = 10;

#[test]
fn simulation_holds_invariants_over_many_seeds() {
    let started = Instant::now();
    let mut total = Summary::default();
    let seeds = seeds();
    for &seed in &seeds {
        match run_seed(seed) {
            Ok(summary) => {
                total.events += summary.events;
                total.acked += summary.acked;
                total.dropped += summary.dropped;
                total.unknown += summary.unknown;
                total.reads += summary.reads;
                total.crashes += summary.crashes;
                total.mid_ready_crashes += summary.mid_ready_crashes;
                total.lost_log_bytes += summary.lost_log_bytes;
                total.wipes += summary.wipes;
                total.leader_wipes += summary.leader_wipes;
                total.refused += summary.refused;
                total.partitions += summary.partitions;
                total.snapshots += summary.snapshots;
            }
            Err(what) => panic!(
                "seed {seed} failed: {what}\nreproduce with RPOOL_SIM_SEED={seed} cargo test -p rpool-controller simulation"
            ),
        }
    }
    eprintln!(
        "simulation: {} seeds in {:.1?}: {} events, {} writes acknowledged, {} dropped, {} unknown, {} reads, \
         {} crashes ({} mid-Ready, {} unsynced log bytes lost or torn), {} partitions, \
         {} snapshots sent, {} data dirs wiped ({} of a leader), {} batches refused for a wrong incarnation",
        seeds.len(),
        started.elapsed(),
        total.events,
        total.acked,
        total.dropped,
        total.unknown,
        total.reads,
        total.crashes,
        total.mid_ready_crashes,
        total.lost_log_bytes,
        total.partitions,
        total.snapshots,
        total.wipes,
        total.leader_wipes,
        total.refused
    );
}

#[test]
fn same_seed_same_run() {
    for seed in [3, 11] {
        let first = run_seed(seed).unwrap_or_else(|e| panic!("seed {seed} failed: {e}"));
        let second = run_seed(seed).unwrap_or_else(|e| panic!("seed {seed} failed: {e}"));
        assert_eq!(first, second, "seed {seed} did not replay identically");
    }
}
