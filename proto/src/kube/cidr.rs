//! IP networks (`10.244.0.0/16`) and inclusive address ranges
//! (`192.0.2.10-192.0.2.20`), with the family and overlap arithmetic the
//! pool checks need. Std only: kubesim's checks use it too.
//!
//! Addresses are handled as `u128` in their family (an IPv4 address is its
//! 32-bit value), so one code path serves both families.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Of an address.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The address as a number in its family.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address numbered `n` in `family` (`n` must fit the family).
pub fn from_u128(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// True for `ADDRESS/PREFIX` with a prefix of at most 3 digits within the
/// address family's range (host bits allowed): the shape admins may give
/// for a pod or service network.
pub fn is_cidr(text: &str) -> bool {
    text.split_once('/').is_some_and(|(_, bits)| bits.len() <= 3) && Cidr::parse(text, false).is_ok()
}

/// An IP network: a network address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Longest piece of input an error echoes (an IPv6 address with a zone
/// fits); longer pieces are cut and end in "...".
const ECHO_MAX: usize = 48;

/// `text` cut to [`ECHO_MAX`] characters for an error message.
fn short(text: &str) -> String {
    if text.chars().count() <= ECHO_MAX {
        text.to_owned()
    } else {
        format!("{}...", text.chars().take(ECHO_MAX).collect::<String>())
    }
}

impl Cidr {
    /// Parses `ADDRESS/PREFIX`. With `strict`, an address with host bits
    /// set (`10.244.1.0/16`) is refused; otherwise it is masked, as Go's
    /// `net.ParseCIDR` (and so kubeadm) does. The error says what is wrong,
    /// without the field name.
    pub fn parse(text: &str, strict: bool) -> Result<Cidr, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| "is not a network of the form ADDRESS/PREFIX".to_owned())?;
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{:?} is not an IP address", short(addr)))?;
        let family = Family::of(ip);
        let prefix: u8 = match prefix.parse() {
            Ok(p) if p <= family.bits() && !prefix.starts_with('+') => p,
            _ => {
                return Err(format!(
                    "prefix {:?} is out of range (accepted 0..={} for {family})",
                    short(prefix),
                    family.bits()
                ));
            }
        };
        let n = to_u128(ip);
        let masked = n & mask(family, prefix);
        if strict && masked != n {
            let network = from_u128(family, masked);
            return Err(format!("has host bits set (the network is {network}/{prefix})"));
        }
        Ok(Cidr {
            network: from_u128(family, masked),
            prefix,
        })
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The family.
    pub fn family(&self) -> Family {
        Family::of(self.network)
    }

    /// Bits left for hosts (`32 - prefix` for IPv4).
    pub fn host_bits(&self) -> u8 {
        self.family().bits() - self.prefix
    }

    /// Every address of the network, as a range.
    pub fn range(&self) -> IpRange {
        let first = to_u128(self.network);
        let host_mask = !mask(self.family(), self.prefix) & family_max(self.family());
        IpRange {
            family: self.family(),
            first,
            last: first | host_mask,
            cidr_prefix: Some(self.prefix),
        }
    }

    /// Whether `ip` is in the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range().contains(ip)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    family: Family,
    first: u128,
    last: u128,
    /// Set when the range was written as a network, to print it back so
    /// and to know its network and broadcast addresses.
    cidr_prefix: Option<u8>,
}

impl IpRange {
    /// Parses `FIRST-LAST` (both included, same family, first <= last) or
    /// a network `ADDRESS/PREFIX` (strict: no host bits).
    pub fn parse(text: &str) -> Result<IpRange, String> {
        if text.contains('/') {
            return Cidr::parse(text, true).map(|c| c.range());
        }
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| "is neither a range FIRST-LAST nor a network ADDRESS/PREFIX".to_owned())?;
        let parse = |s: &str| {
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("{:?} is not an IP address", short(s.trim())))
        };
        let (a, b) = (parse(a)?, parse(b)?);
        if Family::of(a) != Family::of(b) {
            return Err(format!("{a} and {b} are not of the same IP family"));
        }
        let (first, last) = (to_u128(a), to_u128(b));
        if first > last {
            return Err(format!("{a} comes after {b}"));
        }
        Ok(IpRange {
            family: Family::of(a),
            first,
            last,
            cidr_prefix: None,
        })
    }

    /// The range holding exactly `ip`.
    pub fn single(ip: IpAddr) -> IpRange {
        IpRange {
            family: Family::of(ip),
            first: to_u128(ip),
            last: to_u128(ip),
            cidr_prefix: None,
        }
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The first address.
    pub fn first(&self) -> IpAddr {
        from_u128(self.family, self.first)
    }

    /// The last address.
    pub fn last(&self) -> IpAddr {
        from_u128(self.family, self.last)
    }

    /// The first and last address as numbers.
    pub fn bounds(&self) -> (u128, u128) {
        (self.first, self.last)
    }

    /// The prefix, when the range was written as a network.
    pub fn cidr_prefix(&self) -> Option<u8> {
        self.cidr_prefix
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && (self.first..=self.last).contains(&to_u128(ip))
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.family == other.family && self.first <= other.last && other.first <= self.last
    }

    /// Number of addresses, saturating at `u128::MAX`.
    pub fn len(&self) -> u128 {
        (self.last - self.first).saturating_add(1)
    }

    /// Never empty (first <= last always holds).
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cidr_prefix {
            Some(prefix) => write!(f, "{}/{prefix}", self.first()),
            None if self.first == self.last => write!(f, "{}", self.first()),
            None => write!(f, "{}-{}", self.first(), self.last()),
        }
    }
}

/// All ones in `family`.
fn family_max(family: Family) -> u128 {
    match family {
        Family::V4 => u128::from(u32::MAX),
        Family::V6 => u128::MAX,
    }
}

/// The network mask of `prefix` in `family`, as a number.
fn mask(family: Family, prefix: u8) -> u128 {
    let bits = u32::from(family.bits());
    let host = bits - u32::from(prefix);
    if host >= 128 {
        0
    } else {
        (family_max(family) >> host) << host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_with_their_bounds() {
        let c = Cidr::parse("10.244.0.0/16", true).unwrap();
        assert_eq!(
            (c.to_string(), c.host_bits(), c.family()),
            ("10.244.0.0/16".into(), 16, Family::V4)
        );
        let r = c.range();
        assert_eq!(
            (r.first(), r.last(), r.len()),
            (ip("10.244.0.0"), ip("10.244.255.255"), 65_536)
        );
        assert!(c.contains(ip("10.244.7.1")) && !c.contains(ip("10.245.0.0")) && !c.contains(ip("::1")));
        let all = Cidr::parse("0.0.0.0/0", true).unwrap().range();
        assert_eq!((all.first(), all.last()), (ip("0.0.0.0"), ip("255.255.255.255")));
        let v6 = Cidr::parse("fd00:10:96::/112", true).unwrap();
        assert_eq!(v6.range().last(), ip("fd00:10:96::ffff"));
        assert_eq!(Cidr::parse("::/0", true).unwrap().range().len(), u128::MAX);
        assert_eq!(Cidr::parse("192.0.2.7/32", true).unwrap().range().len(), 1);
    }

    #[test]
    fn host_bits_are_refused_when_strict_and_masked_otherwise() {
        assert_eq!(
            Cidr::parse("10.244.1.0/16", true).unwrap_err(),
            "has host bits set (the network is 10.244.0.0/16)"
        );
        assert_eq!(
            Cidr::parse("10.244.1.0/16", false).unwrap().to_string(),
            "10.244.0.0/16"
        );
    }

    #[test]
    fn malformed_networks_say_why() {
        assert_eq!(
            Cidr::parse("10.0.0.0", true).unwrap_err(),
            "is not a network of the form ADDRESS/PREFIX"
        );
        assert_eq!(
            Cidr::parse("10.0.0/8", true).unwrap_err(),
            "\"10.0.0\" is not an IP address"
        );
        assert_eq!(
            Cidr::parse("10.0.0.0/33", true).unwrap_err(),
            "prefix \"33\" is out of range (accepted 0..=32 for IPv4)"
        );
        assert!(
            Cidr::parse("fd00::/129", true)
                .unwrap_err()
                .contains("0..=128 for IPv6")
        );
        assert!(Cidr::parse("10.0.0.0/+8", true).is_err());
    }

    #[test]
    fn errors_echo_at_most_a_short_piece_of_a_long_input() {
        let long = "x".repeat(5000);
        for text in [
            format!("10.0.0.0/{long}"),
            format!("{long}/8"),
            format!("10.0.0.1-{long}"),
        ] {
            let e = IpRange::parse(&text).unwrap_err();
            assert!(e.len() < 120, "{} bytes: {e:.100}", e.len());
            assert!(e.contains("..."), "{e}");
        }
    }

    #[test]
    fn ranges_parse_as_pairs_or_networks() {
        let r = IpRange::parse("192.0.2.10-192.0.2.20").unwrap();
        assert_eq!((r.len(), r.to_string()), (11, "192.0.2.10-192.0.2.20".into()));
        let n = IpRange::parse("192.0.2.0/28").unwrap();
        assert_eq!(
            (n.len(), n.to_string(), n.cidr_prefix()),
            (16, "192.0.2.0/28".into(), Some(28))
        );
        assert!(r.overlaps(&n));
        assert!(!r.overlaps(&IpRange::parse("192.0.2.21-192.0.2.30").unwrap()));
        assert!(!r.overlaps(&IpRange::parse("fd00::-fd00::ff").unwrap()));
        assert_eq!(
            IpRange::parse("192.0.2.20-192.0.2.10").unwrap_err(),
            "192.0.2.20 comes after 192.0.2.10"
        );
        assert!(
            IpRange::parse("192.0.2.1-fd00::1")
                .unwrap_err()
                .contains("same IP family")
        );
        assert!(
            IpRange::parse("192.0.2.1")
                .unwrap_err()
                .contains("neither a range")
        );
        assert_eq!(IpRange::single(ip("192.0.2.1")).to_string(), "192.0.2.1");
    }
}
