//! Hostile-input suite (issue 5): agent reports, admin requests, raw bytes
//! off the wire and config files, generated to break the rules on purpose.
//!
//! Each property runs for a bounded time (`RPOOL_FUZZ_SECS`, default 2 s)
//! with a fresh seed per run, printed on failure; `RPOOL_FUZZ_SEED=N`
//! replays one case. Longer runs: `RPOOL_FUZZ_SECS=600 cargo nextest run
//! -p rpool-tests --test hostile`.

mod configs;
mod messages;
mod values;
