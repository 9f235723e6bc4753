//! The address this host's Kubernetes node advertises, and where it comes
//! from: `advertise_address` in agent.toml, else the local address of the
//! agent's connection to the controllers (the address other machines reach
//! this one at), unless that address sits on an interface no other machine
//! can reach (a bridge, a CNI/overlay device, a veth, docker's or
//! loopback): then the first address of another interface.
//!
//! Interfaces are told apart by name (`lo`, `docker*`, `veth*`, `cni*`,
//! `flannel*`, `kube-ipvs*`, ...) and, on Linux, by what
//! `/sys/class/net/<if>/` says of them (a `bridge/` directory, `tun_flags`
//! for tun/tap devices, type 772 for loopback).

use std::net::IpAddr;
use std::path::Path;

use rpool_proto::v1::AdvertiseSource;

/// Interface name prefixes that never carry a node's address.
pub const EXCLUDED_PREFIXES: [&str; 15] = [
    "lo",
    "docker",
    "veth",
    "cni",
    "flannel",
    "kube-ipvs",
    "kube-bridge",
    "virbr",
    "br-",
    "cali",
    "cilium",
    "weave",
    "vxlan",
    "tunl",
    "lxc",
];

/// `/sys/class/net/<if>/type` of a loopback device (ARPHRD_LOOPBACK).
const ARPHRD_LOOPBACK: &str = "772";

/// Why `address` cannot be advertised, if it cannot.
pub fn check_advertise(address: &str) -> Result<IpAddr, &'static str> {
    let ip: IpAddr = address.parse().map_err(|_| "is not an IP address")?;
    if ip.is_loopback() {
        return Err("is a loopback address");
    }
    if ip.is_unspecified() {
        return Err("is the unspecified address");
    }
    if ip.is_multicast() {
        return Err("is a multicast address");
    }
    Ok(ip)
}

/// Why interface `name` is excluded (read under `sys_class_net`, normally
/// `/sys/class/net`), `None` when it may carry the node's address.
pub fn excluded_interface(sys_class_net: &Path, name: &str) -> Option<&'static str> {
    if let Some(prefix) = EXCLUDED_PREFIXES.iter().find(|p| name.starts_with(**p)) {
        return Some(match *prefix {
            "lo" => "loopback",
            "docker" => "docker",
            "veth" => "veth",
            "cni" | "flannel" | "cali" | "cilium" | "weave" | "vxlan" | "tunl" | "lxc" => "CNI",
            "kube-ipvs" | "kube-bridge" => "kube-proxy/kube-router",
            _ => "bridge",
        });
    }
    let dir = sys_class_net.join(name);
    if dir.join("bridge").is_dir() {
        return Some("bridge");
    }
    if dir.join("tun_flags").exists() {
        return Some("tun/tap");
    }
    if std::fs::read_to_string(dir.join("type")).is_ok_and(|t| t.trim() == ARPHRD_LOOPBACK) {
        return Some("loopback");
    }
    None
}

/// The node's address and where it came from. `configured` is
/// `advertise_address` (already validated), `connection` the local address
/// of the connection to the controllers, `interfaces` every interface with
/// its addresses.
pub fn choose(
    configured: Option<IpAddr>,
    connection: Option<IpAddr>,
    interfaces: &[(String, Vec<IpAddr>)],
    sys_class_net: &Path,
) -> Option<(IpAddr, AdvertiseSource)> {
    if let Some(ip) = configured {
        return Some((ip, AdvertiseSource::Config));
    }
    let usable = |ip: &IpAddr| check_advertise(&ip.to_string()).is_ok() && !is_link_local(ip);
    let allowed: Vec<(&str, &[IpAddr])> = interfaces
        .iter()
        .filter(|(name, _)| excluded_interface(sys_class_net, name).is_none())
        .map(|(name, addrs)| (name.as_str(), addrs.as_slice()))
        .collect();
    if let Some(ip) = connection
        && usable(&ip)
        && allowed.iter().any(|(_, addrs)| addrs.contains(&ip))
    {
        return Some((ip, AdvertiseSource::Connection));
    }
    // Another interface's address, of the connection's family first, IPv4
    // before IPv6 otherwise; sorted so the answer is stable.
    let want_v6 = connection.is_some_and(|ip| ip.is_ipv6() && !ip.is_loopback());
    let mut candidates: Vec<IpAddr> = allowed
        .iter()
        .flat_map(|(_, addrs)| addrs.iter().copied())
        .filter(usable)
        .collect();
    candidates.sort_by_key(|ip| (ip.is_ipv6() != want_v6, *ip));
    candidates.first().map(|ip| (*ip, AdvertiseSource::Interface))
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Every interface with its addresses.
pub fn interfaces(networks: &sysinfo::Networks) -> Vec<(String, Vec<IpAddr>)> {
    let mut list: Vec<(String, Vec<IpAddr>)> = networks
        .iter()
        .map(|(name, data)| {
            let addrs = data.ip_networks().iter().map(|n| n.addr).collect();
            (name.to_string_lossy().into_owned(), addrs)
        })
        .collect();
    list.sort();
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A fake `/sys/class/net`: `br0` a bridge (by its `bridge/` dir),
    /// `tap0` a tun/tap device, `lo0` a loopback by type, `eno1` and `eth1`
    /// plain devices (type 1).
    fn sys() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, ty) in [
            ("br0", "1"),
            ("tap0", "1"),
            ("lo0", "772"),
            ("eno1", "1"),
            ("eth1", "1"),
        ] {
            std::fs::create_dir_all(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("type"), format!("{ty}\n")).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("br0/bridge")).unwrap();
        std::fs::write(dir.path().join("tap0/tun_flags"), "0x1002\n").unwrap();
        dir
    }

    #[test]
    fn interfaces_are_classified_by_name_and_by_sysfs() {
        let sys = sys();
        for (name, why) in [
            ("lo", Some("loopback")),
            ("docker0", Some("docker")),
            ("veth1a2b3c", Some("veth")),
            ("cni0", Some("CNI")),
            ("flannel.1", Some("CNI")),
            ("kube-ipvs0", Some("kube-proxy/kube-router")),
            ("br-5f3e", Some("bridge")),
            ("br0", Some("bridge")),
            ("tap0", Some("tun/tap")),
            ("lo0", Some("loopback")),
            ("eno1", None),
            ("eth1", None),
            ("wlan0", None),
        ] {
            assert_eq!(excluded_interface(sys.path(), name), why, "{name}");
        }
    }

    #[test]
    fn advertise_addresses_are_checked() {
        assert_eq!(check_advertise("10.0.0.5"), Ok(ip("10.0.0.5")));
        assert_eq!(check_advertise("2001:db8::5"), Ok(ip("2001:db8::5")));
        assert_eq!(check_advertise("node-1"), Err("is not an IP address"));
        assert_eq!(check_advertise("127.0.0.2"), Err("is a loopback address"));
        assert_eq!(check_advertise("::1"), Err("is a loopback address"));
        assert_eq!(check_advertise("0.0.0.0"), Err("is the unspecified address"));
        assert_eq!(check_advertise("224.0.0.1"), Err("is a multicast address"));
    }

    fn host() -> Vec<(String, Vec<IpAddr>)> {
        vec![
            ("br0".into(), vec![ip("192.168.122.1")]),
            ("docker0".into(), vec![ip("172.17.0.1")]),
            ("eno1".into(), vec![ip("10.0.0.21"), ip("fe80::1")]),
            ("eth1".into(), vec![ip("10.1.0.21"), ip("2001:db8::21")]),
            ("lo".into(), vec![ip("127.0.0.1"), ip("::1")]),
        ]
    }

    #[test]
    fn config_wins_then_the_connection_then_another_interface() {
        let sys = sys();
        let hosts = host();
        assert_eq!(
            choose(Some(ip("10.9.9.9")), Some(ip("10.1.0.21")), &hosts, sys.path()),
            Some((ip("10.9.9.9"), AdvertiseSource::Config))
        );
        assert_eq!(
            choose(None, Some(ip("10.1.0.21")), &hosts, sys.path()),
            Some((ip("10.1.0.21"), AdvertiseSource::Connection))
        );
        // The connection leaves through docker0 or a bridge, or over
        // loopback (a controller on this machine): never those addresses.
        for conn in ["172.17.0.1", "192.168.122.1", "127.0.0.1"] {
            assert_eq!(
                choose(None, Some(ip(conn)), &hosts, sys.path()),
                Some((ip("10.0.0.21"), AdvertiseSource::Interface)),
                "{conn}"
            );
        }
        // Not connected yet: a physical interface's address.
        assert_eq!(
            choose(None, None, &hosts, sys.path()),
            Some((ip("10.0.0.21"), AdvertiseSource::Interface))
        );
        // An IPv6 connection from an excluded place keeps its family.
        let mut v6 = hosts.clone();
        v6.push(("docker0".into(), vec![ip("2001:db8:d::1")]));
        assert_eq!(
            choose(None, Some(ip("2001:db8:d::1")), &v6, sys.path()),
            Some((ip("2001:db8::21"), AdvertiseSource::Interface))
        );
        // Only excluded interfaces: nothing to advertise.
        let only_virtual = vec![
            ("docker0".into(), vec![ip("172.17.0.1")]),
            ("lo".into(), vec![ip("127.0.0.1")]),
        ];
        assert_eq!(
            choose(None, Some(ip("172.17.0.1")), &only_virtual, sys.path()),
            None
        );
    }
}
