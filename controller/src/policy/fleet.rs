//! What the fleet offers to placement: the hosts that may be placed, and
//! the API endpoint a pool's first control plane would serve. Pure.

use crate::policy::placement::Candidate;
use crate::state::State;
use crate::state::command::{HostRecord, HostState};
use crate::state::pool::{MemberState, PoolRecord, Role};

/// Hosts that may be placed: ready (not suspect, down or cordoned), in no
/// pool, not fenced (replaced while down and not reset since).
pub fn candidates(state: &State) -> Vec<Candidate> {
    state
        .hosts()
        .values()
        .filter(|h| h.state == HostState::Ready && h.pool.is_none() && h.fenced.is_none())
        .map(candidate)
        .collect()
}

/// The workers of `pool` that count toward its capacity (not leaving, not
/// replaced), as placement sees them (with their zones).
pub fn workers(state: &State, pool: &PoolRecord) -> Vec<Candidate> {
    pool.members
        .values()
        .filter(|m| {
            m.role == Role::Worker
                && !matches!(
                    m.state,
                    MemberState::Leaving { .. } | MemberState::Replaced { .. }
                )
        })
        .filter_map(|m| state.host(&m.host_id))
        .map(candidate)
        .collect()
}

/// The zones of the registered hosts, sorted ("" for hosts without one).
pub fn zones(state: &State) -> Vec<String> {
    let set: std::collections::BTreeSet<&str> =
        state.hosts().values().map(|h| h.facts.zone.as_str()).collect();
    set.into_iter().map(str::to_owned).collect()
}

pub fn candidate(h: &HostRecord) -> Candidate {
    Candidate {
        host_id: h.host_id.clone(),
        zone: h.facts.zone.clone(),
        cores: h.facts.inventory.logical_cores,
        memory_bytes: h.facts.inventory.memory_total_bytes,
    }
}

/// API server endpoint for a pool whose first control plane is `host`:
/// its first non-loopback address, or (simulated hardware, where every host
/// shares the machine's addresses) its hostname; port 6443.
pub fn endpoint(host: &HostRecord) -> String {
    let address = host
        .facts
        .addresses
        .iter()
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .find(|a| !a.is_loopback());
    match address {
        Some(ip) if !host.facts.simulated => match ip {
            std::net::IpAddr::V4(v4) => format!("{v4}:6443"),
            std::net::IpAddr::V6(v6) => format!("[{v6}]:6443"),
        },
        _ => format!("{}:6443", host.facts.hostname),
    }
}
