//! Wall-clock time as the rest of rpool passes it around: milliseconds
//! since the Unix epoch. Pure code takes `now_ms` as an argument; only the
//! I/O shell calls [`unix_ms_now`].

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it,
/// `u64::MAX` if it is absurdly far after).
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2020_and_moves_forward() {
        let a = unix_ms_now();
        assert!(a > 1_577_836_800_000, "clock reads {a}");
        let b = unix_ms_now();
        assert!(b >= a);
    }
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a (year, month 1..=12, day) date (Howard
/// Hinnant's `days_from_civil`); the inverse of [`civil_from_days`].
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// UTC (year, month, day, hour, minute, second) of a Unix time in seconds.
pub fn utc_parts(unix_s: u64) -> (i64, u32, u32, u64, u64, u64) {
    let (days, rest) = (unix_s / 86_400, unix_s % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    (y, m, d, rest / 3_600, rest % 3_600 / 60, rest % 60)
}

/// A Unix time in seconds as RFC 3339 UTC, `2026-11-27T04:56:39Z`.
pub fn rfc3339(unix_s: u64) -> String {
    let (y, m, d, hh, mm, ss) = utc_parts(unix_s);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// A Unix time in ms as "2027-12-06 23:12 UTC" (minutes; for humans).
pub fn format_utc(unix_ms: u64) -> String {
    let (y, m, d, hh, mm, _) = utc_parts(unix_ms / 1000);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02} UTC")
}

#[cfg(test)]
mod format_tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::format_utc(1_795_755_399_000), "2026-11-27 04:56 UTC");
        assert_eq!(super::rfc3339(1_795_755_399), "2026-11-27T04:56:39Z");
    }

    #[test]
    fn civil_dates_round_trip_across_leap_days_and_centuries() {
        for days in [-800_000i64, -1, 0, 59, 60, 11_016, 10_957, 20_513, 2_932_896] {
            let (y, m, d) = super::civil_from_days(days);
            assert_eq!(super::days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(
            super::days_from_civil(2100, 3, 1) - super::days_from_civil(2100, 2, 28),
            1
        );
    }
}
