//! Zone policies of pool workers: which zones the workers of a placement,
//! a grow, a shrink or a replacement come from. Pure.
//!
//! - **spread** (the default): the capacity wanted is levelled over the
//!   allowed zones that have hosts ("water filling": every zone is brought
//!   up to the same level of cores and of memory, zones already above it
//!   add nothing), and each zone covers its share with the least overshoot
//!   from its own hosts (placement's cover). A zone that cannot reach the
//!   level gives all it has and the level is computed again over the
//!   others. Then the zones are also tried one after another (each zone's
//!   overshoot lowering the level of the next), keeping every zone without
//!   workers that has a share: the least overshoot of these wins, then the most
//!   even. So each zone holds about ⌈capacity / Z⌉, give or take one host,
//!   and losing one of Z zones loses about 1/Z of the workers.
//! - **pack**: the fewest zones: the zones already holding workers first,
//!   then the zone that covers the rest alone with the least overshoot;
//!   failing that, zones by free capacity (largest first) until they can.
//!
//! A fleet whose hosts report no zone is one zone (""): spread is then the
//! zone-blind least-overshoot cover.

use std::collections::{BTreeMap, BTreeSet};

use crate::policy::placement::{Candidate, PlacementError, cover};
use crate::state::pool::{ZoneMode, ZonePolicy};

/// Cores and memory.
type Size = (u64, u64);

fn size<'a>(hosts: impl IntoIterator<Item = &'a Candidate>) -> Size {
    hosts
        .into_iter()
        .fold((0, 0), |(c, m), h| (c + u64::from(h.cores), m + h.memory_bytes))
}

/// Per zone: what existing workers give, and the free hosts there.
#[derive(Default)]
struct Zone<'a> {
    have: Size,
    free: Vec<&'a Candidate>,
}

/// Hosts of `free` to add to the `existing` workers so that together they
/// cover (`cores`, `memory_bytes`) under `policy`. Hosts of zones the policy
/// does not allow are never chosen. Empty when `existing` already covers.
pub fn choose<'a>(
    free: &[&'a Candidate],
    existing: &[Candidate],
    cores: u64,
    memory_bytes: u64,
    policy: &ZonePolicy,
) -> Result<Vec<&'a Candidate>, PlacementError> {
    let free: Vec<&Candidate> = free.iter().copied().filter(|c| policy.allows(&c.zone)).collect();
    let have = size(existing);
    let need = (cores.saturating_sub(have.0), memory_bytes.saturating_sub(have.1));
    if need == (0, 0) {
        return Ok(Vec::new());
    }
    let offered = size(free.iter().copied());
    if offered.0 < need.0 || offered.1 < need.1 {
        return Err(PlacementError::Capacity {
            wanted_cores: need.0,
            wanted_memory_bytes: need.1,
            free_cores: offered.0,
            free_memory_bytes: offered.1,
            free_hosts: free.len(),
        });
    }
    match policy.mode {
        ZoneMode::Any => crate::policy::placement::cover(&free, need.0, need.1),
        ZoneMode::Spread => spread(by_zone(existing, free), (cores, memory_bytes)),
        ZoneMode::Pack => pack(by_zone(existing, free), need),
    }
}

/// Per zone: what `existing` workers already give it and its `free` hosts.
fn by_zone<'a, 'e>(existing: &'e [Candidate], free: Vec<&'a Candidate>) -> BTreeMap<&'e str, Zone<'a>>
where
    'a: 'e,
{
    let mut zones: BTreeMap<&str, Zone<'a>> = BTreeMap::new();
    for w in existing {
        let z = zones.entry(w.zone.as_str()).or_default();
        z.have.0 += u64::from(w.cores);
        z.have.1 += w.memory_bytes;
    }
    for c in free {
        zones.entry(c.zone.as_str()).or_default().free.push(c);
    }
    zones
}

/// The lowest level L such that Σ max(0, L - base) ≥ `need`.
fn level(bases: &[u64], need: u64) -> u64 {
    if need == 0 || bases.is_empty() {
        return 0;
    }
    let fill = |l: u64| -> u64 { bases.iter().map(|b| l.saturating_sub(*b)).sum() };
    let (mut lo, mut hi) = (0u64, bases.iter().max().copied().unwrap_or(0) + need);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fill(mid) >= need { hi = mid } else { lo = mid + 1 }
    }
    lo
}

fn spread<'a>(mut zones: BTreeMap<&str, Zone<'a>>, want: Size) -> Result<Vec<&'a Candidate>, PlacementError> {
    let mut chosen: Vec<&'a Candidate> = Vec::new();
    // Zones whose contribution is settled: no free host, or all taken.
    let mut settled: BTreeSet<&str> = zones
        .iter()
        .filter(|(_, z)| z.free.is_empty())
        .map(|(n, _)| *n)
        .collect();
    loop {
        let active: Vec<&str> = zones.keys().copied().filter(|n| !settled.contains(n)).collect();
        if active.is_empty() {
            return Ok(chosen);
        }
        let fixed = zones
            .iter()
            .filter(|(n, _)| settled.contains(*n))
            .fold((0, 0), |(c, m), (_, z)| (c + z.have.0, m + z.have.1));
        let bases: Vec<Size> = active.iter().map(|n| zones[n].have).collect();
        let base_sum = bases.iter().fold((0, 0), |(c, m), b| (c + b.0, m + b.1));
        let level_cores = level(
            &bases.iter().map(|b| b.0).collect::<Vec<_>>(),
            want.0.saturating_sub(fixed.0 + base_sum.0),
        );
        let level_memory = level(
            &bases.iter().map(|b| b.1).collect::<Vec<_>>(),
            want.1.saturating_sub(fixed.1 + base_sum.1),
        );
        let deficit = |z: &Zone<'_>| {
            (
                level_cores.saturating_sub(z.have.0),
                level_memory.saturating_sub(z.have.1),
            )
        };
        let short: Vec<&str> = active
            .iter()
            .copied()
            .filter(|n| {
                let z = &zones[n];
                let d = deficit(z);
                let offered = size(z.free.iter().copied());
                offered.0 < d.0 || offered.1 < d.1
            })
            .collect();
        if short.is_empty() {
            // Every zone at the level at once, or zone after zone (each
            // one's overshoot lowering the level of the next): the least
            // overshoot of these.
            let mut best: Vec<&'a Candidate> = Vec::new();
            for n in &active {
                let z = &zones[n];
                let d = deficit(z);
                best.extend(cover(&z.free, d.0, d.1)?);
            }
            let settled_total = (fixed.0 + base_sum.0, fixed.1 + base_sum.1);
            // Least overshoot, then the most even (the largest zone's cores
            // smallest), then the fewest hosts.
            let score = |hosts: &[&Candidate]| {
                let s = size(hosts.iter().copied());
                let total = (settled_total.0 + s.0, settled_total.1 + s.1);
                let largest = active
                    .iter()
                    .map(|n| {
                        zones[n].have.0
                            + hosts
                                .iter()
                                .filter(|h| h.zone == *n)
                                .map(|h| u64::from(h.cores))
                                .sum::<u64>()
                    })
                    .max()
                    .unwrap_or(0);
                (overshoot(total, want), largest, hosts.len())
            };
            let mut best_score = score(&best);
            // An order may not leave out a zone without workers that the
            // level gives a share: that would put its share in another zone.
            let used =
                |hosts: &[&Candidate]| -> BTreeSet<String> { hosts.iter().map(|h| h.zone.clone()).collect() };
            let must: BTreeSet<String> = used(&best)
                .into_iter()
                .filter(|z| zones.get(z.as_str()).is_some_and(|z| z.have == (0, 0)))
                .collect();
            for order in orders(&active) {
                let hosts = in_order(&zones, &order, fixed, want)?;
                if !must.is_subset(&used(&hosts)) {
                    continue;
                }
                let sc = score(&hosts);
                if sc.0 < best_score.0 - 1e-12
                    || ((sc.0 - best_score.0).abs() <= 1e-12 && (sc.1, sc.2) < (best_score.1, best_score.2))
                {
                    best = hosts;
                    best_score = sc;
                }
            }
            chosen.extend(best);
            return Ok(chosen);
        }
        // These zones cannot reach the level: they give everything.
        for n in short {
            let z = zones.get_mut(n).expect("active zone");
            let all = size(z.free.iter().copied());
            z.have = (z.have.0 + all.0, z.have.1 + all.1);
            chosen.extend(z.free.drain(..));
            settled.insert(n);
        }
    }
}

/// Orders of `zones` tried zone after zone: every permutation up to
/// [`PERMUTED_ZONES_MAX`] zones, else every rotation of the name order.
fn orders<'z>(zones: &[&'z str]) -> Vec<Vec<&'z str>> {
    if zones.len() <= 1 {
        return Vec::new();
    }
    if zones.len() > PERMUTED_ZONES_MAX {
        return (0..zones.len())
            .map(|r| zones[r..].iter().chain(&zones[..r]).copied().collect())
            .collect();
    }
    fn permute<'z>(rest: &mut Vec<&'z str>, prefix: &mut Vec<&'z str>, out: &mut Vec<Vec<&'z str>>) {
        if rest.is_empty() {
            out.push(prefix.clone());
            return;
        }
        for i in 0..rest.len() {
            let z = rest.remove(i);
            prefix.push(z);
            permute(rest, prefix, out);
            prefix.pop();
            rest.insert(i, z);
        }
    }
    let mut out = Vec::new();
    permute(&mut zones.to_vec(), &mut Vec::new(), &mut out);
    out
}

/// Zones tried in every order up to this many (5! = 120 orders).
const PERMUTED_ZONES_MAX: usize = 5;

/// Spread zone after zone in `order`: each zone brought to the level the
/// zones not yet done would need, given what the done ones gave (their
/// overshoot lowers it for the next). Every zone of `order` can reach the
/// first level, and levels only fall, so every cover exists.
fn in_order<'a>(
    zones: &BTreeMap<&str, Zone<'a>>,
    order: &[&str],
    fixed: Size,
    want: Size,
) -> Result<Vec<&'a Candidate>, PlacementError> {
    let mut total = fixed;
    let mut chosen = Vec::new();
    for (k, n) in order.iter().enumerate() {
        let rest = &order[k..];
        let bases: Vec<Size> = rest.iter().map(|r| zones[r].have).collect();
        let base_sum = bases.iter().fold((0, 0), |(c, m), b| (c + b.0, m + b.1));
        let level_cores = level(
            &bases.iter().map(|b| b.0).collect::<Vec<_>>(),
            want.0.saturating_sub(total.0 + base_sum.0),
        );
        let level_memory = level(
            &bases.iter().map(|b| b.1).collect::<Vec<_>>(),
            want.1.saturating_sub(total.1 + base_sum.1),
        );
        let z = &zones[n];
        let hosts = cover(
            &z.free,
            level_cores.saturating_sub(z.have.0),
            level_memory.saturating_sub(z.have.1),
        )?;
        let added = size(hosts.iter().copied());
        total = (total.0 + z.have.0 + added.0, total.1 + z.have.1 + added.1);
        chosen.extend(hosts);
    }
    Ok(chosen)
}

/// Relative overshoot of `have` over `want` (summed over both dimensions).
fn overshoot(have: Size, want: Size) -> f64 {
    let rel = |h: u64, w: u64| {
        if w == 0 {
            0.0
        } else {
            h.saturating_sub(w) as f64 / w as f64
        }
    };
    rel(have.0, want.0) + rel(have.1, want.1)
}

fn pack<'a>(zones: BTreeMap<&str, Zone<'a>>, need: Size) -> Result<Vec<&'a Candidate>, PlacementError> {
    let covers = |z: &Zone<'_>| {
        let s = size(z.free.iter().copied());
        s.0 >= need.0 && s.1 >= need.1
    };
    let used = |z: &Zone<'_>| z.have != (0, 0);
    // One zone alone, a used one if any can.
    let alone = |only_used: bool| -> Option<Vec<&'a Candidate>> {
        zones
            .iter()
            .filter(|(_, z)| covers(z) && (!only_used || used(z)))
            .filter_map(|(n, z)| {
                let hosts = cover(&z.free, need.0, need.1).ok()?;
                let score = (overshoot(size(hosts.iter().copied()), need), hosts.len(), *n);
                Some((score, hosts))
            })
            .min_by(|(a, _), (b, _)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(b.2)))
            .map(|(_, hosts)| hosts)
    };
    if let Some(hosts) = alone(true).or_else(|| alone(false)) {
        return Ok(hosts);
    }
    // Several zones: used ones first, then the largest free capacity.
    let mut order: Vec<(&str, &Zone<'a>)> = zones.iter().map(|(n, z)| (*n, z)).collect();
    order.sort_by_key(|(n, z)| {
        let s = size(z.free.iter().copied());
        (!used(z), std::cmp::Reverse(s), *n)
    });
    let mut pool: Vec<&'a Candidate> = Vec::new();
    for (_, z) in order {
        pool.extend(z.free.iter().copied());
        let s = size(pool.iter().copied());
        if s.0 >= need.0 && s.1 >= need.1 {
            break;
        }
    }
    cover(&pool, need.0, need.1)
}

/// Of `fits` (hosts a one-host scale-up may take), those in the zones the
/// policy prefers given the current `workers`: spread → the allowed zone
/// with the fewest worker cores that has a fitting host; pack → the zones
/// already holding workers when one has a fitting host. Never empty when
/// an allowed host fits.
pub fn scale_up_hosts(fits: &[Candidate], workers: &[Candidate], policy: &ZonePolicy) -> Vec<Candidate> {
    let allowed: Vec<&Candidate> = fits.iter().filter(|c| policy.allows(&c.zone)).collect();
    let cores_in = |zone: &str| -> u64 {
        workers
            .iter()
            .filter(|w| w.zone == zone)
            .map(|w| u64::from(w.cores))
            .sum()
    };
    let keep: Vec<&Candidate> = match policy.mode {
        ZoneMode::Any => allowed,
        ZoneMode::Spread => {
            let poorest = allowed
                .iter()
                .map(|c| (cores_in(&c.zone), c.zone.as_str()))
                .min()
                .map(|(_, z)| z.to_owned());
            allowed
                .iter()
                .copied()
                .filter(|c| Some(&c.zone) == poorest.as_ref())
                .collect()
        }
        ZoneMode::Pack => {
            let in_used: Vec<&Candidate> = allowed
                .iter()
                .copied()
                .filter(|c| workers.iter().any(|w| w.zone == c.zone))
                .collect();
            if in_used.is_empty() { allowed } else { in_used }
        }
    };
    keep.into_iter().cloned().collect()
}

/// The zone a one-host scale-down should release from: spread → the zone
/// with the most worker cores; pack → the one with the fewest (emptying
/// it). `None` without workers.
pub fn scale_down_zone(workers: &[Candidate], policy: &ZonePolicy) -> Option<String> {
    let mut per: BTreeMap<&str, u64> = BTreeMap::new();
    for w in workers {
        *per.entry(w.zone.as_str()).or_default() += u64::from(w.cores);
    }
    let pick = match policy.mode {
        ZoneMode::Any => None,
        ZoneMode::Spread => per.iter().max_by_key(|(z, c)| (**c, std::cmp::Reverse(**z))),
        ZoneMode::Pack => per.iter().min_by_key(|(z, c)| (**c, **z)),
    };
    pick.map(|(z, _)| (*z).to_owned())
}

/// Workers per zone: (zone, hosts, cores, memory), ordered by zone.
pub fn totals(workers: &[Candidate]) -> Vec<(String, u32, u64, u64)> {
    let mut per: BTreeMap<&str, (u32, u64, u64)> = BTreeMap::new();
    for w in workers {
        let t = per.entry(w.zone.as_str()).or_default();
        t.0 += 1;
        t.1 += u64::from(w.cores);
        t.2 += w.memory_bytes;
    }
    per.into_iter()
        .map(|(z, (n, c, m))| (z.to_owned(), n, c, m))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::placement::{Request, grow, keep, place};
    use crate::policy::testing::{GIB, World};
    use crate::state::command::HostState;
    use crate::state::pool::MemberState;

    fn host(id: &str, zone: &str, cores: u32) -> Candidate {
        Candidate {
            host_id: id.to_owned(),
            zone: zone.to_owned(),
            cores,
            memory_bytes: u64::from(cores) * 4 * GIB,
        }
    }

    fn want(cores: u64) -> Request {
        Request {
            cores,
            memory_bytes: cores * 4 * GIB,
            control_planes: 0,
        }
    }

    fn spread() -> ZonePolicy {
        ZonePolicy {
            mode: ZoneMode::Spread,
            allowed: Vec::new(),
        }
    }

    fn pack() -> ZonePolicy {
        ZonePolicy {
            mode: ZoneMode::Pack,
            allowed: Vec::new(),
        }
    }

    /// Cores per zone of `ids` among `hosts`.
    fn per_zone(hosts: &[Candidate], ids: &[String]) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for h in hosts.iter().filter(|h| ids.contains(&h.host_id)) {
            *out.entry(h.zone.clone()).or_default() += u64::from(h.cores);
        }
        out
    }

    /// Zones a, b, c with two 8-core and two 16-core hosts each.
    fn fleet() -> Vec<Candidate> {
        let mut out = Vec::new();
        for z in ["a", "b", "c"] {
            for (i, cores) in [8, 8, 16, 16].into_iter().enumerate() {
                out.push(host(&format!("{z}{i}"), z, cores));
            }
        }
        out
    }

    #[test]
    fn spread_balances_a_new_pool_so_losing_a_zone_loses_a_third() {
        let fleet = fleet();
        let p = place(&fleet, &want(48), &spread()).unwrap();
        let zones = per_zone(&fleet, &p.workers);
        assert_eq!(
            zones.values().copied().collect::<Vec<_>>(),
            vec![16, 16, 16],
            "{zones:?}"
        );
        // The zone-blind cover would take three 16-core hosts: also 48
        // cores, but possibly two in one zone. Pack takes one zone.
        let packed = place(&fleet, &want(48), &pack()).unwrap();
        let zones = per_zone(&fleet, &packed.workers);
        assert_eq!(zones.len(), 1, "{zones:?}");
        assert_eq!(zones.values().sum::<u64>(), 48);
    }

    #[test]
    fn a_zone_short_of_its_share_gives_all_it_has_and_the_others_level_the_rest() {
        let mut fleet = fleet();
        fleet.retain(|h| h.zone != "c" || h.cores == 8);
        // c has 16 cores; 64 wanted: c gives 16, a and b 24 each.
        let p = place(&fleet, &want(64), &spread()).unwrap();
        let zones = per_zone(&fleet, &p.workers);
        assert_eq!(zones["c"], 16, "{zones:?}");
        assert_eq!(zones["a"], 24, "{zones:?}");
        assert_eq!(zones["b"], 24, "{zones:?}");
    }

    #[test]
    fn one_zone_overshooting_does_not_take_the_other_zones_shares() {
        // The sandbox fleet less its first control plane: c's 32-core host
        // alone would cover 24 cores with the least overshoot, but spread
        // keeps a worker in every zone.
        let fleet = vec![
            Candidate {
                memory_bytes: 64 * GIB,
                ..host("a2", "a", 16)
            },
            Candidate {
                memory_bytes: 64 * GIB,
                ..host("b1", "b", 16)
            },
            Candidate {
                memory_bytes: 256 * GIB,
                ..host("b2", "b", 64)
            },
            Candidate {
                memory_bytes: 128 * GIB,
                ..host("c1", "c", 32)
            },
            Candidate {
                memory_bytes: 16 * GIB,
                ..host("c2", "c", 8)
            },
        ];
        let p = place(&fleet, &want(24), &spread()).unwrap();
        let zones = per_zone(&fleet, &p.workers);
        assert_eq!(zones.len(), 3, "{zones:?}");
        assert!(zones.values().all(|c| *c <= 16), "{zones:?}");
    }

    #[test]
    fn growing_fills_the_poorest_zone_first() {
        let fleet = fleet();
        let existing = vec![host("wa", "a", 32), host("wb", "b", 16)];
        let added = grow(&fleet, &existing, &want(64), &spread()).unwrap();
        let zones = per_zone(&fleet, &added);
        assert_eq!(zones.keys().collect::<Vec<_>>(), vec!["c"], "{zones:?}");
        assert_eq!(zones["c"], 16);
        // Pack grows where the workers already are.
        let added = grow(&fleet, &existing, &want(64), &pack()).unwrap();
        let zones = per_zone(&fleet, &added);
        assert!(zones.keys().all(|z| z == "a" || z == "b"), "{zones:?}");
    }

    #[test]
    fn shrinking_under_spread_keeps_every_zone() {
        let workers = fleet();
        let kept = keep(&workers, &want(48), &spread()).unwrap();
        let zones = per_zone(&workers, &kept);
        assert_eq!(
            zones.values().copied().collect::<Vec<_>>(),
            vec![16, 16, 16],
            "{zones:?}"
        );
    }

    #[test]
    fn allowed_zones_hold_the_control_planes_and_the_workers() {
        let fleet = fleet();
        let only = ZonePolicy {
            mode: ZoneMode::Spread,
            allowed: vec!["a".into(), "b".into()],
        };
        let p = place(
            &fleet,
            &Request {
                control_planes: 3,
                ..want(40)
            },
            &only,
        )
        .unwrap();
        assert!(
            p.control_planes
                .iter()
                .chain(&p.workers)
                .all(|id| !id.starts_with('c')),
            "{p:?}"
        );
        // a has 16-core hosts left after two control planes: the zones
        // differ by at most one host.
        let zones = per_zone(&fleet, &p.workers);
        assert!(
            zones["a"].abs_diff(zones["b"]) <= 16 && zones.len() == 2,
            "{zones:?}"
        );
        // What only zone c could give is not there.
        let err = place(&fleet, &want(100), &only).unwrap_err();
        assert!(err.to_string().contains("96 cores"), "{err}");
    }

    #[test]
    fn scale_up_takes_the_poorest_zone_and_scale_down_the_richest() {
        let fleet = fleet();
        let workers = vec![host("wa", "a", 16), host("wb", "b", 32), host("wc", "c", 8)];
        let hosts = scale_up_hosts(&fleet, &workers, &spread());
        assert!(
            !hosts.is_empty() && hosts.iter().all(|h| h.zone == "c"),
            "{hosts:?}"
        );
        assert_eq!(scale_down_zone(&workers, &spread()).as_deref(), Some("b"));
        let only_b = ZonePolicy {
            mode: ZoneMode::Spread,
            allowed: vec!["b".into()],
        };
        assert!(
            scale_up_hosts(&fleet, &workers, &only_b)
                .iter()
                .all(|h| h.zone == "b")
        );
        assert_eq!(scale_down_zone(&workers, &pack()).as_deref(), Some("c"));
    }

    #[test]
    fn a_dead_worker_is_replaced_in_its_own_zone_under_spread() {
        // b1 dies; a's free 8-core host would cover exactly, but zone b
        // would then hold nothing: spread takes b's 16-core host.
        let b1_dead_under = |zones| {
            let mut w = World::new(&[
                ("c1", "a", 4),
                ("a1", "a", 8),
                ("b1", "b", 8),
                ("c2", "c", 8),
                ("fa", "a", 8),
                ("fb", "b", 16),
            ]);
            w.zones = zones;
            w.create(&["c1"], &["a1", "b1", "c2"], 24, GIB);
            w.settle();
            w.set("b1", HostState::Down);
            w
        };
        let mut w = b1_dead_under(spread());
        assert_eq!(w.plan(), vec!["replace b1 by fb"]);
        // The same world packed takes the exact cover.
        let mut w = b1_dead_under(pack());
        assert_eq!(w.plan(), vec!["replace b1 by fa"]);
        w.settle();
        let joined: Vec<&str> = w
            .pool()
            .members
            .values()
            .filter(|m| m.state == MemberState::Joined)
            .map(|m| m.host_id.as_str())
            .collect();
        assert!(joined.contains(&"fa"), "{joined:?}");
    }
}
