//! A pool's addresses, checked as kubeadm checks them and against the rest
//! of the fleet, and the choice of a control-plane VIP.
//!
//! Rules (fields as an admin names them):
//!
//! - `pod_cidr`: one network (two, one per family, with dual-stack). The
//!   controller manager gives each node a /24 (IPv4) or /64 (IPv6) of it
//!   (kubeadm's default `node-cidr-mask-size`), so the prefix must be at
//!   most that, at most 16 bits shorter (kubeadm's limit), and leave room
//!   for a node subnet per node the pool may grow to.
//! - `service_cidr`: IPv4 /12 to /28, IPv6 /108 to /124: kubeadm refuses
//!   more than 20 host bits and fewer than 10 addresses, and the DNS
//!   service takes the tenth address.
//! - One IP family per pool unless dual-stack is asked for; then each of the
//!   two lists holds one IPv4 and one IPv6 network, in the same order.
//! - Within a pool, pod, service, VIP and LB range are disjoint; no host
//!   address falls in any of them; the VIP and LB range are used by no
//!   other pool in any way, and this pool's pod and service networks hold
//!   no other pool's VIP or LB address. Pod and service networks may repeat
//!   between pools (each cluster routes its own).

use std::net::IpAddr;

use super::cidr::{Cidr, Family, IpRange, from_u128};
use super::{KubeFieldError, echo};

/// The per-node pod subnet of IPv4 (kube-controller-manager default).
pub const NODE_CIDR_MASK_V4: u8 = 24;
/// The per-node pod subnet of IPv6 (kube-controller-manager default).
pub const NODE_CIDR_MASK_V6: u8 = 64;
/// Largest difference between pod network and node subnet prefixes
/// (kubeadm's `PodSubnetNodeMaskMaxDiff`).
pub const POD_NODE_MASK_MAX_DIFF: u8 = 16;
/// Accepted IPv4 service network prefixes.
pub const SERVICE_PREFIX_V4: (u8, u8) = (12, 28);
/// Accepted IPv6 service network prefixes.
pub const SERVICE_PREFIX_V6: (u8, u8) = (108, 124);

/// What an admin asks for.
#[derive(Debug, Clone, Default)]
pub struct PoolNetworkInput<'a> {
    /// `10.244.0.0/16`, or with dual-stack `10.244.0.0/16,fd00:10:244::/56`.
    pub pod_cidr: &'a str,
    /// `10.96.0.0/12`, or with dual-stack two networks.
    pub service_cidr: &'a str,
    pub dual_stack: bool,
    /// The most nodes the pool may have (autoscaling maximum).
    pub max_nodes: u32,
    /// The control-plane VIP, if any.
    pub vip: Option<&'a str>,
    /// The service load-balancer range (`A-B` or a network), if any.
    pub lb_range: Option<&'a str>,
}

/// A pool's checked addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolNetwork {
    /// Primary family first.
    pub pod: Vec<Cidr>,
    /// Primary family first.
    pub service: Vec<Cidr>,
    pub vip: Option<IpAddr>,
    pub lb_range: Option<IpRange>,
}

impl PoolNetwork {
    /// The pool's primary family.
    pub fn family(&self) -> Family {
        self.pod[0].family()
    }

    /// Every range of the pool with its field name, in field order.
    fn parts(&self) -> Vec<(&'static str, IpRange)> {
        let mut parts: Vec<(&'static str, IpRange)> = Vec::new();
        parts.extend(self.pod.iter().map(|c| ("pod_cidr", c.range())));
        parts.extend(self.service.iter().map(|c| ("service_cidr", c.range())));
        parts.extend(self.vip.map(|v| ("vip", IpRange::single(v))));
        parts.extend(self.lb_range.map(|r| ("lb_range", r)));
        parts
    }
}

/// The rest of the fleet a pool must not collide with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fleet<'a> {
    /// Every other pool, by name.
    pub pools: &'a [(&'a str, &'a PoolNetwork)],
    /// Every host's addresses, by host name.
    pub hosts: &'a [(&'a str, IpAddr)],
}

/// Checks a pool's network request against kubeadm's rules and `fleet`.
pub fn check_pool_network(
    input: &PoolNetworkInput<'_>,
    fleet: Fleet<'_>,
) -> Result<PoolNetwork, KubeFieldError> {
    let pod = parse_networks("pod_cidr", input.pod_cidr, input.dual_stack)?;
    let service = parse_networks("service_cidr", input.service_cidr, input.dual_stack)?;
    if pod[0].family() != service[0].family() {
        return Err(KubeFieldError::new(
            "service_cidr",
            format!(
                "{} is {} but pod_cidr {} is {} (one IP family per pool, the same first with dual-stack)",
                service[0],
                service[0].family(),
                pod[0],
                pod[0].family()
            ),
        ));
    }
    for c in &pod {
        check_pod_size(c, input.max_nodes)?;
    }
    for c in &service {
        check_service_size(c)?;
    }
    let vip = match input.vip {
        None => None,
        Some(text) => {
            let ip: IpAddr = text
                .trim()
                .parse()
                .map_err(|_| KubeFieldError::new("vip", format!("{} is not an IP address", echo(text))))?;
            if Family::of(ip) != pod[0].family() {
                return Err(KubeFieldError::new(
                    "vip",
                    format!(
                        "{ip} is {} but the pool is {} (accepted: an address of the pool's first family)",
                        Family::of(ip),
                        pod[0].family()
                    ),
                ));
            }
            Some(ip)
        }
    };
    let lb_range = match input.lb_range {
        None => None,
        Some(text) => {
            let range = IpRange::parse(text.trim()).map_err(|why| {
                KubeFieldError::new(
                    "lb_range",
                    format!("{} {why} (accepted FIRST-LAST or ADDRESS/PREFIX)", echo(text)),
                )
            })?;
            if !pod.iter().any(|c| c.family() == range.family()) {
                return Err(KubeFieldError::new(
                    "lb_range",
                    format!(
                        "{range} is {} but the pool is {} only",
                        range.family(),
                        pod[0].family()
                    ),
                ));
            }
            Some(range)
        }
    };
    let network = PoolNetwork {
        pod,
        service,
        vip,
        lb_range,
    };
    check_overlaps(&network, fleet)?;
    Ok(network)
}

/// The lowest address of `fleet_range` (field `vip_range`) that no pool
/// uses in any way, that is no host's address, and that is not in `own`
/// (the pool being placed, when its other addresses are known). A range
/// written as an IPv4 network of /30 or larger skips its network and
/// broadcast addresses.
pub fn allocate_vip(
    fleet_range: &IpRange,
    own: Option<&PoolNetwork>,
    fleet: Fleet<'_>,
) -> Result<IpAddr, KubeFieldError> {
    let mut taken: Vec<IpRange> = Vec::new();
    for (_, pool) in fleet.pools.iter() {
        taken.extend(pool.parts().into_iter().map(|(_, r)| r));
    }
    if let Some(own) = own {
        taken.extend(own.parts().into_iter().map(|(_, r)| r));
    }
    taken.extend(fleet.hosts.iter().map(|(_, ip)| IpRange::single(*ip)));
    let (mut first, mut last) = fleet_range.bounds();
    if fleet_range.family() == Family::V4 && fleet_range.cidr_prefix().is_some_and(|p| p <= 30) {
        first += 1;
        last -= 1;
    }
    let mut candidate = first;
    while candidate <= last {
        let ip = from_u128(fleet_range.family(), candidate);
        match taken
            .iter()
            .filter(|r| r.contains(ip))
            .map(|r| r.bounds().1)
            .max()
        {
            None => return Ok(ip),
            Some(end) if end >= last => break,
            Some(end) => candidate = end + 1,
        }
    }
    Err(KubeFieldError::new(
        "vip_range",
        format!(
            "every address of {fleet_range} is used by a pool or a host (give the pool a VIP, or widen the range)"
        ),
    ))
}

/// Parses one network, or with dual-stack two of different families.
fn parse_networks(field: &str, text: &str, dual_stack: bool) -> Result<Vec<Cidr>, KubeFieldError> {
    let mut networks = Vec::new();
    for part in text.split(',') {
        let c = Cidr::parse(part.trim(), true)
            .map_err(|why| KubeFieldError::new(field, format!("{} {why}", echo(part.trim()))))?;
        networks.push(c);
    }
    let accepted = if dual_stack {
        "two networks, one IPv4 and one IPv6, separated by a comma (dual-stack)"
    } else {
        "one network of one IP family (dual-stack not asked for)"
    };
    let ok = match networks.as_slice() {
        [_] => !dual_stack,
        [a, b] => dual_stack && a.family() != b.family(),
        _ => false,
    };
    if !ok {
        return Err(KubeFieldError::new(
            field,
            format!("{} is not accepted (accepted {accepted})", echo(text)),
        ));
    }
    Ok(networks)
}

/// The node subnet size of `family`.
fn node_mask(family: Family) -> u8 {
    match family {
        Family::V4 => NODE_CIDR_MASK_V4,
        Family::V6 => NODE_CIDR_MASK_V6,
    }
}

/// The pod network holds a node subnet for each of `max_nodes` nodes.
fn check_pod_size(c: &Cidr, max_nodes: u32) -> Result<(), KubeFieldError> {
    let node = node_mask(c.family());
    // Bits needed to number max_nodes node subnets.
    let needed = u8::try_from(32 - max_nodes.max(1).saturating_sub(1).leading_zeros()).unwrap_or(32);
    if needed > POD_NODE_MASK_MAX_DIFF {
        return Err(KubeFieldError::new(
            "max_nodes",
            format!(
                "{max_nodes} is out of range (accepted 1..={})",
                1u32 << POD_NODE_MASK_MAX_DIFF
            ),
        ));
    }
    let (shortest, longest) = (node - POD_NODE_MASK_MAX_DIFF, node - needed);
    if c.prefix() < shortest || c.prefix() > longest {
        return Err(KubeFieldError::new(
            "pod_cidr",
            format!(
                "{c} does not fit {max_nodes} node subnet(s) of /{node} (accepted {} /{shortest} to /{longest})",
                c.family()
            ),
        ));
    }
    Ok(())
}

/// The service network is within kubeadm's size limits.
fn check_service_size(c: &Cidr) -> Result<(), KubeFieldError> {
    let (shortest, longest) = match c.family() {
        Family::V4 => SERVICE_PREFIX_V4,
        Family::V6 => SERVICE_PREFIX_V6,
    };
    if c.prefix() < shortest || c.prefix() > longest {
        let size = if c.prefix() < shortest {
            "too large"
        } else {
            "too small"
        };
        return Err(KubeFieldError::new(
            "service_cidr",
            format!(
                "{c} is {size} (accepted IPv4 /{} to /{}, IPv6 /{} to /{})",
                SERVICE_PREFIX_V4.0, SERVICE_PREFIX_V4.1, SERVICE_PREFIX_V6.0, SERVICE_PREFIX_V6.1
            ),
        ));
    }
    Ok(())
}

/// The pool's ranges against each other, the hosts and the other pools.
fn check_overlaps(pool: &PoolNetwork, fleet: Fleet<'_>) -> Result<(), KubeFieldError> {
    let parts = pool.parts();
    for (i, (field, range)) in parts.iter().enumerate() {
        if let Some((other, other_range)) = parts[..i].iter().find(|(_, r)| r.overlaps(range)) {
            return Err(KubeFieldError::new(
                *field,
                format!(
                    "{range} overlaps this pool's {other} {other_range} (a pool's pod, service, VIP and LB addresses must be disjoint)"
                ),
            ));
        }
        if let Some((host, ip)) = fleet.hosts.iter().find(|(_, ip)| range.contains(*ip)) {
            return Err(KubeFieldError::new(
                *field,
                format!("{range} holds host {host}'s address {ip} (accepted: addresses no host uses)"),
            ));
        }
        let shared_by_all = matches!(*field, "vip" | "lb_range");
        for (name, other) in fleet.pools {
            for (other_field, other_range) in other.parts() {
                let exclusive = shared_by_all || matches!(other_field, "vip" | "lb_range");
                if exclusive && other_range.overlaps(range) {
                    return Err(KubeFieldError::new(
                        *field,
                        format!(
                            "{range} overlaps pool {name}'s {other_field} {other_range} (VIPs and LB ranges belong to one pool)"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(pod: &'a str, service: &'a str) -> PoolNetworkInput<'a> {
        PoolNetworkInput {
            pod_cidr: pod,
            service_cidr: service,
            max_nodes: 10,
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn err(input: &PoolNetworkInput<'_>, fleet: Fleet<'_>) -> String {
        check_pool_network(input, fleet).unwrap_err().to_string()
    }

    #[test]
    fn a_default_ipv4_pool_is_accepted() {
        let mut i = input("10.244.0.0/16", "10.96.0.0/12");
        i.vip = Some("192.0.2.100");
        i.lb_range = Some("192.0.2.200-192.0.2.220");
        let n = check_pool_network(&i, Fleet::default()).unwrap();
        assert_eq!(n.family(), Family::V4);
        assert_eq!(n.vip, Some(ip("192.0.2.100")));
        assert_eq!(n.lb_range.unwrap().len(), 21);
    }

    #[test]
    fn pod_networks_must_hold_a_node_subnet_per_node() {
        // A /28 cannot hold even one /24.
        assert_eq!(
            err(&input("10.244.0.0/28", "10.96.0.0/12"), Fleet::default()),
            "pod_cidr: 10.244.0.0/28 does not fit 10 node subnet(s) of /24 (accepted IPv4 /8 to /20)"
        );
        // 10 nodes need 4 bits: /20 fits, /21 does not.
        assert!(check_pool_network(&input("10.244.0.0/20", "10.96.0.0/12"), Fleet::default()).is_ok());
        assert!(err(&input("10.244.0.0/21", "10.96.0.0/12"), Fleet::default()).contains("/8 to /20"));
        // More than 16 bits between pod network and node subnet.
        assert!(err(&input("10.0.0.0/7", "10.96.0.0/12"), Fleet::default()).contains("/8 to /20"));
        let mut one = input("10.244.0.0/24", "10.96.0.0/12");
        one.max_nodes = 1;
        assert!(check_pool_network(&one, Fleet::default()).is_ok());
        one.max_nodes = 2;
        assert!(check_pool_network(&one, Fleet::default()).is_err());
        let mut v6 = input("fd00:10:244::/56", "fd00:10:96::/112");
        v6.max_nodes = 256;
        assert!(check_pool_network(&v6, Fleet::default()).is_ok());
        v6.max_nodes = 257;
        assert!(err(&v6, Fleet::default()).contains("(accepted IPv6 /48 to /55)"));
        let mut huge = input("10.0.0.0/8", "10.96.0.0/12");
        huge.max_nodes = 70_000;
        assert_eq!(
            err(&huge, Fleet::default()),
            "max_nodes: 70000 is out of range (accepted 1..=65536)"
        );
    }

    #[test]
    fn service_networks_follow_kubeadms_limits() {
        let range = "(accepted IPv4 /12 to /28, IPv6 /108 to /124)";
        assert_eq!(
            err(&input("10.244.0.0/16", "10.0.0.0/8"), Fleet::default()),
            format!("service_cidr: 10.0.0.0/8 is too large {range}")
        );
        assert_eq!(
            err(&input("10.244.0.0/16", "10.96.0.0/29"), Fleet::default()),
            format!("service_cidr: 10.96.0.0/29 is too small {range}")
        );
        for ok in ["10.96.0.0/12", "10.96.0.0/28"] {
            assert!(
                check_pool_network(&input("10.244.0.0/16", ok), Fleet::default()).is_ok(),
                "{ok}"
            );
        }
        assert!(err(&input("fd00:10:244::/56", "fd00::/64"), Fleet::default()).contains("too large"));
        assert!(check_pool_network(&input("fd00:10:244::/56", "fd00::/108"), Fleet::default()).is_ok());
    }

    #[test]
    fn one_family_per_pool_unless_dual_stack() {
        assert_eq!(
            err(&input("10.244.0.0/16", "fd00:10:96::/112"), Fleet::default()),
            "service_cidr: fd00:10:96::/112 is IPv6 but pod_cidr 10.244.0.0/16 is IPv4 (one IP family per pool, the same first with dual-stack)"
        );
        assert!(
            err(
                &input("10.244.0.0/16,fd00:10:244::/56", "10.96.0.0/12"),
                Fleet::default()
            )
            .contains("(accepted one network of one IP family (dual-stack not asked for))")
        );
        let mut dual = input("10.244.0.0/16,fd00:10:244::/56", "10.96.0.0/12,fd00:10:96::/112");
        dual.dual_stack = true;
        dual.lb_range = Some("fd00:1::10-fd00:1::20");
        assert_eq!(check_pool_network(&dual, Fleet::default()).unwrap().pod.len(), 2);
        dual.pod_cidr = "10.244.0.0/16,10.245.0.0/16";
        assert!(err(&dual, Fleet::default()).contains("one IPv4 and one IPv6"));
        let mut lb = input("10.244.0.0/16", "10.96.0.0/12");
        lb.lb_range = Some("fd00::1-fd00::9");
        assert!(
            err(&lb, Fleet::default())
                .starts_with("lb_range: fd00::1-fd00::9 is IPv6 but the pool is IPv4 only")
        );
        let mut vip = input("10.244.0.0/16", "10.96.0.0/12");
        vip.vip = Some("fd00::1");
        assert!(err(&vip, Fleet::default()).starts_with("vip: fd00::1 is IPv6 but the pool is IPv4"));
    }

    #[test]
    fn malformed_inputs_name_the_field() {
        assert_eq!(
            err(&input("10.244.0.0", "10.96.0.0/12"), Fleet::default()),
            "pod_cidr: \"10.244.0.0\" is not a network of the form ADDRESS/PREFIX"
        );
        let mut i = input("10.244.0.0/16", "10.96.0.0/12");
        i.vip = Some("vip.example");
        assert_eq!(
            err(&i, Fleet::default()),
            "vip: \"vip.example\" is not an IP address"
        );
        i.vip = None;
        i.lb_range = Some("192.0.2.9-192.0.2.1");
        assert_eq!(
            err(&i, Fleet::default()),
            "lb_range: \"192.0.2.9-192.0.2.1\" 192.0.2.9 comes after 192.0.2.1 (accepted FIRST-LAST or ADDRESS/PREFIX)"
        );
    }

    #[test]
    fn a_pools_own_ranges_are_disjoint() {
        let mut i = input("10.244.0.0/16", "10.96.0.0/12");
        i.vip = Some("10.244.3.3");
        assert!(
            err(&i, Fleet::default())
                .starts_with("vip: 10.244.3.3 overlaps this pool's pod_cidr 10.244.0.0/16")
        );
        i.vip = Some("192.0.2.5");
        i.lb_range = Some("192.0.2.0/29");
        assert!(
            err(&i, Fleet::default())
                .starts_with("lb_range: 192.0.2.0/29 overlaps this pool's vip 192.0.2.5")
        );
        assert!(
            err(&input("10.96.0.0/16", "10.96.0.0/12"), Fleet::default())
                .starts_with("service_cidr: 10.96.0.0/12 overlaps")
        );
    }

    #[test]
    fn host_addresses_are_in_no_range() {
        let hosts = [("cp-1", ip("10.0.0.11")), ("cp-2", ip("192.0.2.50"))];
        let fleet = Fleet {
            pools: &[],
            hosts: &hosts,
        };
        assert_eq!(
            err(&input("10.0.0.0/16", "10.96.0.0/12"), fleet),
            "pod_cidr: 10.0.0.0/16 holds host cp-1's address 10.0.0.11 (accepted: addresses no host uses)"
        );
        let mut i = input("10.244.0.0/16", "10.96.0.0/12");
        i.vip = Some("192.0.2.50");
        assert!(err(&i, fleet).starts_with("vip: 192.0.2.50 holds host cp-2's address"));
        i.vip = None;
        i.lb_range = Some("192.0.2.40-192.0.2.60");
        assert!(err(&i, fleet).starts_with("lb_range: 192.0.2.40-192.0.2.60 holds host cp-2's"));
    }

    #[test]
    fn vips_and_lb_ranges_belong_to_one_pool() {
        let mut a = input("10.244.0.0/16", "10.96.0.0/12");
        a.vip = Some("192.0.2.100");
        a.lb_range = Some("192.0.2.200-192.0.2.220");
        let a = check_pool_network(&a, Fleet::default()).unwrap();
        let pools = [("a", &a)];
        let fleet = Fleet {
            pools: &pools,
            hosts: &[],
        };
        // The same pod and service networks in another pool are fine.
        let mut b = input("10.244.0.0/16", "10.96.0.0/12");
        assert!(check_pool_network(&b, fleet).is_ok());
        b.vip = Some("192.0.2.100");
        assert_eq!(
            err(&b, fleet),
            "vip: 192.0.2.100 overlaps pool a's vip 192.0.2.100 (VIPs and LB ranges belong to one pool)"
        );
        b.vip = Some("192.0.2.210");
        assert!(err(&b, fleet).starts_with("vip: 192.0.2.210 overlaps pool a's lb_range"));
        b.vip = Some("10.244.9.9");
        b.pod_cidr = "10.128.0.0/16";
        assert!(err(&b, fleet).starts_with("vip: 10.244.9.9 overlaps pool a's pod_cidr"));
        b.vip = None;
        b.lb_range = Some("192.0.2.0/24");
        assert!(err(&b, fleet).starts_with("lb_range: 192.0.2.0/24 overlaps pool a's vip"));
        // Another pool's VIP inside this pool's pod network.
        let c = input("192.0.2.0/24", "10.96.0.0/12");
        let mut c = c;
        c.max_nodes = 1;
        assert!(err(&c, fleet).starts_with("pod_cidr: 192.0.2.0/24 overlaps pool a's vip"));
    }

    #[test]
    fn the_vip_is_the_lowest_free_address_of_the_fleet_range() {
        let range = IpRange::parse("192.0.2.0/28").unwrap();
        // Network address skipped.
        assert_eq!(
            allocate_vip(&range, None, Fleet::default()).unwrap(),
            ip("192.0.2.1")
        );
        let mut a = input("10.244.0.0/16", "10.96.0.0/12");
        a.vip = Some("192.0.2.1");
        a.lb_range = Some("192.0.2.2-192.0.2.5");
        let a = check_pool_network(&a, Fleet::default()).unwrap();
        let pools = [("a", &a)];
        let hosts = [("h", ip("192.0.2.6"))];
        let fleet = Fleet {
            pools: &pools,
            hosts: &hosts,
        };
        assert_eq!(allocate_vip(&range, None, fleet).unwrap(), ip("192.0.2.7"));
        let mut own = input("10.244.0.0/16", "10.96.0.0/12");
        own.lb_range = Some("192.0.2.7-192.0.2.13");
        let own = check_pool_network(&own, fleet).unwrap();
        assert_eq!(allocate_vip(&range, Some(&own), fleet).unwrap(), ip("192.0.2.14"));
        let full = IpRange::parse("192.0.2.1-192.0.2.6").unwrap();
        assert_eq!(
            allocate_vip(&full, None, fleet).unwrap_err().to_string(),
            "vip_range: every address of 192.0.2.1-192.0.2.6 is used by a pool or a host (give the pool a VIP, or widen the range)"
        );
        let v6 = IpRange::parse("fd00:1::/120").unwrap();
        assert_eq!(allocate_vip(&v6, None, Fleet::default()).unwrap(), ip("fd00:1::"));
    }
}
