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
    let secs = unix_ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `5m10s` between `then_ms` and `now_ms` (0 if `then` is later); `-` for
/// an unknown `then` (0).
pub fn age(now_ms: u64, then_ms: u64) -> String {
    if then_ms == 0 {
        return "-".to_string();
    }
    format_duration(Duration::from_millis(now_ms.saturating_sub(then_ms)))
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
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
