//! A pool's addresses against the rest of the fleet, as the state machine
//! sees it: the other pools' networks, VIPs and LB ranges, and every
//! host's addresses (rules: [`crate::kube::network`]). Checked when a pool
//! is created and when its LB range changes, in apply, so two racing
//! creates cannot both take the same VIP or range.

use std::net::IpAddr;

use crate::kube::KubeFieldError;
use crate::kube::network::{Fleet, PoolNetwork, PoolNetworkInput, check_pool_network};
use crate::state::State;
use crate::state::pool::PoolSpec;

/// `spec`'s addresses on their own (no fleet): the pool's networks, VIP
/// and LB range parsed and checked against each other.
pub fn spec_network(spec: &PoolSpec, max_nodes: u32) -> Result<PoolNetwork, KubeFieldError> {
    check_pool_network(&input(spec, max_nodes), Fleet::default())
}

fn input(spec: &PoolSpec, max_nodes: u32) -> PoolNetworkInput<'_> {
    PoolNetworkInput {
        pod_cidr: &spec.pod_network_cidr,
        service_cidr: &spec.service_cidr,
        dual_stack: spec.pod_network_cidr.contains(','),
        max_nodes: max_nodes.max(1),
        vip: Some(spec.vip.as_str()).filter(|v| !v.is_empty()),
        lb_range: Some(spec.lb_range.as_str()).filter(|r| !r.is_empty()),
    }
}

/// What a pool's addresses must not collide with: every pool but `except`
/// (records that no longer parse are skipped: they predate the checks)
/// and every host's non-loopback addresses.
pub struct FleetAddresses {
    pools: Vec<(String, PoolNetwork)>,
    hosts: Vec<(String, IpAddr)>,
}

impl FleetAddresses {
    pub fn of(sm: &State, except: &str) -> FleetAddresses {
        let pools = sm
            .pools()
            .iter()
            .filter(|(name, _)| name.as_str() != except)
            .filter_map(|(name, p)| {
                let size = u32::try_from(p.members.len()).unwrap_or(u32::MAX);
                spec_network(&p.spec, size).ok().map(|n| (name.clone(), n))
            })
            .collect();
        let hosts = sm
            .hosts()
            .values()
            .flat_map(|h| {
                h.facts
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                    .filter(|a| !a.is_loopback())
                    .map(|a| (h.facts.hostname.clone(), a))
            })
            .collect();
        FleetAddresses { pools, hosts }
    }

    /// Runs `f` with the borrowed [`Fleet`].
    pub fn with<T>(&self, f: impl FnOnce(Fleet<'_>) -> T) -> T {
        let pools: Vec<(&str, &PoolNetwork)> = self.pools.iter().map(|(n, p)| (n.as_str(), p)).collect();
        let hosts: Vec<(&str, IpAddr)> = self.hosts.iter().map(|(n, a)| (n.as_str(), *a)).collect();
        f(Fleet {
            pools: &pools,
            hosts: &hosts,
        })
    }
}

impl State {
    /// `spec`'s addresses checked against the other pools and the hosts.
    pub fn check_pool_addresses(
        &self,
        spec: &PoolSpec,
        max_nodes: u32,
    ) -> Result<PoolNetwork, KubeFieldError> {
        FleetAddresses::of(self, &spec.name).with(|fleet| check_pool_network(&input(spec, max_nodes), fleet))
    }
}
