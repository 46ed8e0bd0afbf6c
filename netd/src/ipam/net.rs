//! [`Ipv4Net`]: an IPv4 prefix, always stored in canonical form.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A malformed `a.b.c.d/n`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid subnet {input:?}: {why} (expected CIDR notation such as 172.20.0.0/16)")]
pub struct NetParseError {
    pub input: String,
    pub why: &'static str,
}

/// An IPv4 network `address/prefix` with the host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) }
}

impl Ipv4Net {
    /// The network of `addr` with `prefix` bits (clamped to 32).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Ipv4Net {
        let prefix = prefix.min(32);
        Ipv4Net { addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)), prefix }
    }

    /// Parses `a.b.c.d/n`, refusing host bits set (as Docker does not: it
    /// silently masks them; a typo then gives a surprising network).
    pub fn parse_strict(s: &str) -> Result<Ipv4Net, NetParseError> {
        let err = |why| NetParseError { input: s.to_owned(), why };
        let (a, p) = s.split_once('/').ok_or_else(|| err("missing /prefix"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| err("not an IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| err("prefix is not a number"))?;
        if prefix > 32 {
            return Err(err("prefix longer than 32"));
        }
        let net = Ipv4Net::new(addr, prefix);
        if net.addr != addr {
            return Err(err("host bits set: give the network address"));
        }
        Ok(net)
    }

    pub fn network(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix))
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & mask(self.prefix) == u32::from(self.addr)
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// The `n`th address of the network (0 = the network address).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(n))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ipv4Net::parse_strict(s)
    }
}
