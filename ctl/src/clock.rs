//! Wall-clock helpers for human output: UTC timestamps, ages.
//!
//! Renderers take `now_ms` as an argument so tests are deterministic; only
//! `exec` functions read the clock (`rpool_proto::clock::unix_ms_now`).

use std::time::Duration;

use rpool_proto::units::format_duration;

/// `2023-11-14T22:13:20Z` (UTC, whole seconds); `-` for 0.
pub fn format_utc(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".to_string();
    }
    rpool_proto::clock::rfc3339(unix_ms / 1000)
}

/// `5m10s` between `then_ms` and `now_ms` (0 if `then` is later); `-` for
/// an unknown `then` (0).
pub fn age(now_ms: u64, then_ms: u64) -> String {
    if then_ms == 0 {
        return "-".to_string();
    }
    format_duration(Duration::from_millis(now_ms.saturating_sub(then_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_timestamps_are_iso_8601_to_the_second() {
        assert_eq!(format_utc(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(1000), "1970-01-01T00:00:01Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(0), "-");
    }

    #[test]
    fn ages_are_compact_and_never_negative() {
        assert_eq!(age(1_000_310_000, 1_000_000_000), "5m10s");
        assert_eq!(age(5, 10), "0ms");
        assert_eq!(age(5, 0), "-");
    }
}
