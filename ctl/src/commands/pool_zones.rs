//! Zone policy flags of `pool create` and the per-zone worker totals that
//! `pool create --dry-run`, `pool resize --dry-run` and `pool show` print.

use rpool_proto::units::format_size;

use super::pool::indent;
use crate::table::Table;
use crate::view::ZoneTotalView;

/// `--zone-policy`: any, spread or pack.
pub const ZONE_POLICIES: [&str; 3] = ["any", "spread", "pack"];

/// `--zones a,b`: zone names, 1..=63 of [A-Za-z0-9._-] each.
pub fn parse_zone(s: &str) -> Result<String, String> {
    let z = s.trim();
    let ok = !z.is_empty()
        && z.len() <= 63
        && z.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(z.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a zone name (accepted 1..=63 of a-z, A-Z, 0-9, -, _ and ., comma-separated, e.g. --zones a,b)"
        ))
    }
}

/// `Workers per zone:` and a table (nothing without workers).
pub fn zone_block(title: &str, totals: &[ZoneTotalView]) -> String {
    if totals.is_empty() {
        return String::new();
    }
    let mut table = Table::new(["ZONE", "WORKERS", "CORES", "MEMORY"]);
    for t in totals {
        table.row([
            if t.zone.is_empty() {
                "-".to_owned()
            } else {
                t.zone.clone()
            },
            t.workers.to_string(),
            t.cores.to_string(),
            format_size(t.memory_bytes),
        ]);
    }
    format!("{title}:\n{}", indent(&table.render()))
}

/// `spread`, `pack over a, b`.
pub fn policy_text(policy: &str, zones: &[String]) -> String {
    let policy = if policy.is_empty() { "any" } else { policy };
    if policy == "any" {
        return if zones.is_empty() {
            "any zone (zones ignored)".to_owned()
        } else {
            format!("any of {}", zones.join(", "))
        };
    }
    if zones.is_empty() {
        format!("{policy} (all zones)")
    } else {
        format!("{policy} over {}", zones.join(", "))
    }
}
