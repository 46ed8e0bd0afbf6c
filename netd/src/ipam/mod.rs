//! IPv4 address management, pure: subnets ([`Ipv4Net`]), the default local
//! pools, picking a subnet that collides with nothing on the host, and
//! picking addresses inside one. The caller supplies what is taken (read from
//! the store under its lock, written back in one transaction with the record
//! that holds the allocation), so nothing here keeps state of its own and an
//! address can only be handed out twice if two store records claim it.

mod net;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

pub use net::{Ipv4Net, NetParseError};

/// Why no subnet or address could be had.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("subnet {subnet} overlaps {what} ({net})")]
    Overlap { subnet: Ipv4Net, net: Ipv4Net, what: String },
    #[error(
        "all predefined address pools have been fully subnetted (or overlap host routes): pass --subnet with a free range"
    )]
    PoolsExhausted,
    #[error("no free address left in {0}: the network is full")]
    Exhausted(Ipv4Net),
    #[error("{what} {addr} is not in subnet {subnet}")]
    OutsideSubnet { what: &'static str, addr: String, subnet: Ipv4Net },
    #[error("address {0} is already in use")]
    InUse(Ipv4Addr),
    #[error("address {addr} is reserved in {subnet} (network, broadcast or gateway address)")]
    Reserved { addr: Ipv4Addr, subnet: Ipv4Net },
    #[error("subnet {0} is too small for containers (needs a /30 or larger)")]
    TooSmall(Ipv4Net),
    #[error(transparent)]
    Parse(#[from] NetParseError),
}

/// The local-scope pools, in the order Docker tries them: 172.17.0.0/16 (the
/// default bridge) to 172.31.0.0/16, then 192.168.0.0/16 cut into /20s.
pub fn default_local_pools() -> Vec<Ipv4Net> {
    let mut pools: Vec<Ipv4Net> = (17..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16)).collect();
    pools.extend((0..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20)));
    pools
}

/// Something on the host a subnet must not overlap: a route, an address, a
/// nameserver (as a /32).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostNet {
    pub net: Ipv4Net,
    /// What it is, for the error message ("route 10.0.0.0/8 dev eth0").
    pub what: String,
}

/// Checks an explicit subnet against the networks' subnets and the host.
pub fn check_subnet(subnet: Ipv4Net, taken: &[(Ipv4Net, String)], host: &[HostNet]) -> Result<(), IpamError> {
    if subnet.prefix() > 30 {
        return Err(IpamError::TooSmall(subnet));
    }
    if let Some((net, name)) = taken.iter().find(|(n, _)| n.overlaps(&subnet)) {
        return Err(IpamError::Overlap { subnet, net: *net, what: format!("the subnet of network {name}") });
    }
    // The default route overlaps everything and conflicts with nothing.
    if let Some(h) = host.iter().find(|h| h.net.prefix() > 0 && h.net.overlaps(&subnet)) {
        return Err(IpamError::Overlap { subnet, net: h.net, what: h.what.clone() });
    }
    Ok(())
}

/// The first pool that overlaps no network and nothing on the host.
pub fn pick_subnet(pools: &[Ipv4Net], taken: &[(Ipv4Net, String)], host: &[HostNet]) -> Result<Ipv4Net, IpamError> {
    pools.iter().copied().find(|p| check_subnet(*p, taken, host).is_ok()).ok_or(IpamError::PoolsExhausted)
}

/// The addresses of one network a container can get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    pub subnet: Ipv4Net,
    /// Sub-range containers get addresses from (`--ip-range`), else the subnet.
    pub range: Option<Ipv4Net>,
    pub gateway: Ipv4Addr,
}

impl Space {
    /// Validates a network's address plan: the range and the gateway lie in
    /// the subnet; the gateway defaults to the subnet's first host.
    pub fn new(subnet: Ipv4Net, range: Option<Ipv4Net>, gateway: Option<Ipv4Addr>) -> Result<Space, IpamError> {
        if subnet.prefix() > 30 {
            return Err(IpamError::TooSmall(subnet));
        }
        if let Some(r) = range
            && !(subnet.contains(r.network()) && subnet.contains(r.broadcast()))
        {
            return Err(IpamError::OutsideSubnet { what: "ip-range", addr: r.to_string(), subnet });
        }
        let gateway = gateway.unwrap_or_else(|| subnet.nth(1));
        if !subnet.contains(gateway) {
            return Err(IpamError::OutsideSubnet { what: "gateway", addr: gateway.to_string(), subnet });
        }
        if gateway == subnet.network() || gateway == subnet.broadcast() {
            return Err(IpamError::Reserved { addr: gateway, subnet });
        }
        Ok(Space { subnet, range, gateway })
    }

    fn reserved(&self, a: Ipv4Addr) -> bool {
        a == self.subnet.network() || a == self.subnet.broadcast() || a == self.gateway
    }

    /// The first free address of the range (lowest first, as Docker's
    /// sequential allocator gives on a fresh network).
    pub fn pick(&self, used: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
        let r = self.range.unwrap_or(self.subnet);
        let (lo, hi) = (u32::from(r.network()), u32::from(r.broadcast()));
        (lo..=hi)
            .map(Ipv4Addr::from)
            .find(|a| !self.reserved(*a) && !used.contains(a))
            .ok_or(IpamError::Exhausted(self.subnet))
    }

    /// Validates a static address (`--ip`).
    pub fn claim(&self, addr: Ipv4Addr, used: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
        if !self.subnet.contains(addr) {
            return Err(IpamError::OutsideSubnet { what: "address", addr: addr.to_string(), subnet: self.subnet });
        }
        if self.reserved(addr) {
            return Err(IpamError::Reserved { addr, subnet: self.subnet });
        }
        if used.contains(&addr) {
            return Err(IpamError::InUse(addr));
        }
        Ok(addr)
    }
}

/// The MAC address Docker derives from an IPv4 address: `02:42` + its bytes.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// `aa:bb:...` form of a MAC address.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Nameservers of a resolv.conf text, as host conflicts.
pub fn nameservers(resolv_conf: &str) -> Vec<HostNet> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|a| a.parse::<Ipv4Addr>().ok())
        .map(|a| HostNet { net: Ipv4Net::new(a, 32), what: format!("nameserver {a} in resolv.conf") })
        .collect()
}

#[cfg(test)]
mod tests;
