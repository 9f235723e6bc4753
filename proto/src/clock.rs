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
