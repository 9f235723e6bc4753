//! Sizes and durations as admins write them.
//!
//! Sizes: a number (integer or decimal) followed by an optional unit: binary
//! (`KiB`..`PiB`, or Kubernetes' `Ki`..`Pi`), decimal (`KB`..`PB`), or
//! `B`/none for bytes. Bare `K`, `M`, `G` are rejected as ambiguous.
//! Durations: an integer followed by `ms`, `s`, `m`, `h` or `d`.

use std::fmt;
use std::time::Duration;

/// Why a size or duration could not be parsed. The text names the accepted
/// forms so it can be shown to a user as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("PiB", 1 << 50),
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("PB", 1_000_000_000_000_000),
];

/// Parses `64GiB`, `512MiB`, `1.5TiB`, `64Gi`, `100GB`, `1024` (bytes).
/// Unit names are case-sensitive except that `b`/`B` both mean bytes; the
/// result must fit in a `u64` and decimals must come out as whole bytes.
pub fn parse_size(text: &str) -> Result<u64, ParseError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim();
    let bad = || {
        ParseError(format!(
            "invalid size {text:?}: expected a number with an optional unit B, KiB, MiB, GiB, TiB, PiB \
             (or Ki..Pi, KB..PB), e.g. 64GiB, 512MiB, 1.5TiB"
        ))
    };
    if number.is_empty() || number.matches('.').count() > 1 || number.ends_with('.') {
        return Err(bad());
    }
    let multiplier = if unit.is_empty() || unit == "b" {
        1
    } else {
        SIZE_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, m)| *m)
            .ok_or_else(bad)?
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let too_big = || ParseError(format!("size {text:?} is too large (at most 16 EiB)"));
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(too_big)?;
    if !frac.is_empty() {
        if frac.len() > 9 {
            return Err(bad());
        }
        let frac_num: u128 = frac.parse().map_err(|_| bad())?;
        let denom = 10u128.pow(frac.len() as u32);
        let scaled = frac_num * multiplier as u128;
        if !scaled.is_multiple_of(denom) {
            return Err(ParseError(format!(
                "size {text:?} is not a whole number of bytes"
            )));
        }
        let extra = u64::try_from(scaled / denom).map_err(|_| too_big())?;
        bytes = bytes.checked_add(extra).ok_or_else(too_big)?;
    }
    Ok(bytes)
}

/// Formats bytes with the largest binary unit that keeps at least 1 before
/// the point, with up to one decimal: `64GiB`, `1.5TiB`, `512MiB`, `100B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("PiB", 1 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if bytes >= size {
            let tenths = (bytes as u128 * 10 + size as u128 / 2) / size as u128;
            return if tenths.is_multiple_of(10) {
                format!("{}{name}", tenths / 10)
            } else {
                format!("{}.{}{name}", tenths / 10, tenths % 10)
            };
        }
    }
    format!("{bytes}B")
}

/// Parses `500ms`, `30s`, `1m`, `10m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, ParseError> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || {
        ParseError(format!(
            "invalid duration {text:?}: expected an integer followed by ms, s, m, h or d, e.g. 500ms, 30s, 10m"
        ))
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let ms_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| ParseError(format!("duration {text:?} is too large")))
}

/// Formats a duration compactly: `850ms`, `4.2s`, `3m10s`, `2h5m`, `3d4h`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let tenths = ms / 100;
        if tenths.is_multiple_of(10) {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else if ms < 3_600_000 {
        let s = ms / 1_000;
        format!("{}m{}s", s / 60, s % 60)
    } else if ms < 86_400_000 {
        let m = ms / 60_000;
        format!("{}h{}m", m / 60, m % 60)
    } else {
        let h = ms / 3_600_000;
        format!("{}d{}h", h / 24, h % 24)
    }
}

/// `90s`, `1m`, `10m`, `2h`, `1h30m`: a window or cooldown as admins write
/// it (`--up-window 1m` reads back as `1m`, not `60s`).
pub fn format_span(ms: u64) -> String {
    if ms > 0 && ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms > 0 && ms.is_multiple_of(60_000) && ms < 3_600_000 {
        format!("{}m", ms / 60_000)
    } else if ms <= 120_000 && ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format_duration(std::time::Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_the_way_admins_write_them() {
        let cases: &[(&str, u64)] = &[
            ("64GiB", 64 << 30),
            ("512MiB", 512 << 20),
            ("1.5TiB", 3 << 39),
            ("64Gi", 64 << 30),
            ("100GB", 100_000_000_000),
            ("1024", 1024),
            ("7B", 7),
            (" 2 GiB ", 2 << 30),
            ("0.5KiB", 512),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(*want), "{text}");
        }
    }

    #[test]
    fn bad_sizes_are_rejected_with_the_accepted_forms() {
        for text in [
            "",
            "GiB",
            "-1GiB",
            "1.2.3GiB",
            "5 gigs",
            "1.GiB",
            "0.1B",
            "99999999999PiB",
        ] {
            let err = parse_size(text).expect_err(text);
            assert!(err.to_string().contains(text.trim()), "{err}");
        }
        assert!(parse_size("5 gigs").unwrap_err().to_string().contains("GiB"));
    }

    #[test]
    fn sizes_format_with_the_largest_unit() {
        assert_eq!(format_size(64 << 30), "64GiB");
        assert_eq!(format_size(3 << 39), "1.5TiB");
        assert_eq!(format_size(512 << 20), "512MiB");
        assert_eq!(format_size(100), "100B");
        assert_eq!(parse_size(&format_size(48 << 30)), Ok(48 << 30));
    }

    #[test]
    fn durations_round_trip() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(format_duration(Duration::from_millis(4_250)), "4.2s");
        assert_eq!(format_duration(Duration::from_secs(190)), "3m10s");
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
    }

    #[test]
    fn spans_read_like_flags() {
        assert_eq!(format_span(1_000), "1s");
        assert_eq!(format_span(60_000), "1m");
        assert_eq!(format_span(90_000), "90s");
        assert_eq!(format_span(7_200_000), "2h");
        assert_eq!(format_span(0), "0s");
        assert_eq!(format_span(600_000), "10m");
        assert_eq!(format_span(5_400_000), "1h30m");
        assert_eq!(format_span(1_500), "1.5s");
    }
}
