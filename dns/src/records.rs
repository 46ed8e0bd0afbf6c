//! The records the embedded DNS answers from, and the pure lookup over them.
//!
//! netd builds a [`Db`] from its store (networks, running containers and
//! their endpoints, services) and swaps it in whole on every change, so a
//! change is visible to the next query. A query is answered from the *view*
//! of the container it came from: only names on the networks that container
//! is attached to exist for it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whom a query comes from: a container id (each container's sockets are
/// served with its own view).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViewId(pub String);

/// A network id (Docker's 64 hex digits).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetKey(pub String);

/// A network the records live in.
#[derive(Clone, Debug)]
pub struct Network {
    pub id: NetKey,
    pub name: String,
    /// Subnets (address, prefix length): PTR queries for addresses inside
    /// them are ours (NXDOMAIN when unknown), others are forwarded.
    pub subnets: Vec<(IpAddr, u8)>,
    pub internal: bool,
}

/// A container's endpoint on a network.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub network: NetKey,
    pub container: ViewId,
    /// The container's name (without Docker's leading `/`).
    pub name: String,
    /// `--network-alias` names.
    pub aliases: Vec<String>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// One task (replica) of a service.
#[derive(Clone, Debug)]
pub struct Task {
    /// e.g. `web.1.<id>`: resolvable on the service's network, the target of
    /// dnsrr SRV records.
    pub name: String,
    pub ip: IpAddr,
    pub healthy: bool,
}

/// Transport protocol of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// A port a service offers, for SRV `_<port>._<proto>.<service>`: `name`
/// (as Docker's port names) or the number itself matches the first label.
#[derive(Clone, Debug)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub proto: Proto,
}

/// A service on one network: VIP mode (`vip` set: the name answers the VIP)
/// or DNS round robin (the name answers every healthy task's address).
#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    pub network: NetKey,
    pub vip: Option<IpAddr>,
    pub tasks: Vec<Task>,
    pub ports: Vec<ServicePort>,
}

/// What a container sees and where its other queries go.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Networks in attach order.
    pub networks: Vec<NetKey>,
    /// Upstream resolvers (at most 3 are used): `--dns`, else the node's.
    pub upstreams: Vec<SocketAddr>,
}

/// One network's records.
#[derive(Clone, Debug)]
struct Net {
    info: Network,
    /// Lower-case name -> addresses (containers, aliases, ids, task names).
    names: HashMap<String, Vec<IpAddr>>,
    /// Address -> the name PTR answers (`name.network`).
    ptrs: HashMap<IpAddr, String>,
    /// Lower-case service name -> service.
    services: HashMap<String, Service>,
}

/// Everything the server answers from. Networks are indexed once, so a
/// query hashes its container id and then only short names.
#[derive(Clone, Debug)]
pub struct Db {
    pub ttl: u32,
    /// Changes with every rebuild (the SOA serial).
    pub serial: u32,
    nets: Vec<Net>,
    index: HashMap<NetKey, usize>,
    /// A container's view and its networks' indexes (attach order).
    views: HashMap<ViewId, (View, Vec<usize>)>,
}

/// A query's outcome, before it becomes a DNS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Addresses of `name` (A or AAAA, already in random order).
    Addresses(Vec<IpAddr>),
    /// The name PTR gives.
    Ptr(String),
    /// SRV records: (priority, weight, port, target) and the targets'
    /// addresses for the additional section.
    Srv(Vec<(u16, u16, u16, String)>, Vec<(String, IpAddr)>),
    /// The name exists here but has nothing of the asked type; SOA of `zone`.
    NoData { zone: String },
    /// The name is in one of our zones and does not exist; SOA of `zone`.
    NxDomain { zone: String },
    /// The apex of one of our zones (a network's name that is not also a
    /// container's): SOA and NS answer, other types NODATA.
    Apex { zone: String },
    /// Not ours: ask the upstream resolvers.
    Forward,
}

/// The record types the lookup distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    A,
    Aaaa,
    /// A and AAAA (`ANY`).
    Any,
    Ptr,
    Srv,
    Soa,
    Ns,
    /// Any other type: NODATA for names we have.
    Other,
}

impl Db {
    /// An empty database answering with `ttl`.
    pub fn new(ttl: u32, serial: u32) -> Db {
        Db { ttl, serial, nets: Vec::new(), index: HashMap::new(), views: HashMap::new() }
    }

    /// Adds a network (before the endpoints, services and views on it).
    pub fn add_network(&mut self, n: Network) {
        match self.index.get(&n.id) {
            Some(&i) => self.nets[i].info = n,
            None => {
                self.index.insert(n.id.clone(), self.nets.len());
                self.nets.push(Net { info: n, names: HashMap::new(), ptrs: HashMap::new(), services: HashMap::new() });
            }
        }
    }

    /// A container's view (networks not added are left out of it).
    pub fn set_view(&mut self, id: ViewId, v: View) {
        let idx = v.networks.iter().filter_map(|k| self.index.get(k).copied()).collect();
        self.views.insert(id, (v, idx));
    }

    pub fn view(&self, id: &ViewId) -> Option<&View> {
        self.views.get(id).map(|v| &v.0)
    }

    /// Whether a container may have its other queries forwarded: only if
    /// it is on at least one network that is not internal.
    pub fn may_forward(&self, id: &ViewId) -> bool {
        self.views.get(id).is_some_and(|v| v.1.iter().any(|&i| !self.nets[i].info.internal))
    }

    fn net_mut(&mut self, k: &NetKey) -> Option<&mut Net> {
        let i = *self.index.get(k)?;
        self.nets.get_mut(i)
    }

    fn add_name(&mut self, net: &NetKey, name: &str, ip: IpAddr) {
        let Some(n) = self.net_mut(net) else { return };
        let v = n.names.entry(name.to_ascii_lowercase()).or_default();
        if !v.contains(&ip) {
            v.push(ip);
        }
    }

    fn add_ptr(&mut self, net: &NetKey, ip: IpAddr, name: &str) {
        let Some(n) = self.net_mut(net) else { return };
        let target = format!("{}.{}", name.to_ascii_lowercase(), n.info.name.to_ascii_lowercase());
        n.ptrs.entry(ip).or_insert(target);
    }

    /// A container's endpoint: its name, aliases and short id (12 digits;
    /// a full id is longer than a DNS label) resolve to its addresses on
    /// that network (which must have been added).
    pub fn add_endpoint(&mut self, e: &Endpoint) {
        let ips: Vec<IpAddr> = e.ipv4.map(IpAddr::V4).into_iter().chain(e.ipv6.map(IpAddr::V6)).collect();
        let short: String = e.container.0.chars().take(12).collect();
        for ip in ips {
            for n in std::iter::once(&e.name).chain(&e.aliases).chain([&short]) {
                if !n.is_empty() {
                    self.add_name(&e.network, n, ip);
                }
            }
            self.add_ptr(&e.network, ip, &e.name);
        }
    }

    /// A service on a network (replaces one of the same name there).
    pub fn add_service(&mut self, s: Service) {
        for t in &s.tasks {
            self.add_name(&s.network, &t.name, t.ip);
            self.add_ptr(&s.network, t.ip, &t.name);
        }
        if let Some(vip) = s.vip {
            self.add_ptr(&s.network, vip, &s.name);
        }
        let key = s.name.to_ascii_lowercase();
        if let Some(n) = self.net_mut(&s.network.clone()) {
            n.services.insert(key, s);
        }
    }

    /// The network of the view named `name` (the last label of `x.name`).
    fn named<'a>(&'a self, idx: &[usize], name: &str) -> Option<&'a Net> {
        idx.iter().map(|&i| &self.nets[i]).find(|n| n.info.name.eq_ignore_ascii_case(name))
    }

    /// Answers `name` (any case, with or without the final dot) of `kind`
    /// for the container `view`. Unknown views see nothing (forward).
    pub fn lookup(&self, view: &ViewId, name: &str, kind: Kind) -> Lookup {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let Some((_, idx)) = self.views.get(view) else { return Lookup::Forward };
        if name.ends_with(".in-addr.arpa") || name.ends_with(".ip6.arpa") {
            return self.lookup_ptr(idx, &name, kind);
        }
        if kind == Kind::Srv {
            return self.lookup_srv(idx, &name);
        }
        self.lookup_name(idx, &name, kind)
    }

    /// Address lookups (and NODATA for other types of names we have).
    fn lookup_name(&self, idx: &[usize], name: &str, kind: Kind) -> Lookup {
        // `name.network` names one network; a plain name every network of the view.
        let one;
        let (nets, zone, label): (&[usize], Option<String>, &str) = match name.rsplit_once('.') {
            Some((rest, net))
                if let Some(&i) = idx.iter().find(|&&i| self.nets[i].info.name.eq_ignore_ascii_case(net)) =>
            {
                one = [i];
                (&one, Some(net.to_owned()), rest)
            }
            _ => (idx, None, name),
        };
        let mut addrs = Vec::new();
        let mut found = false;
        for n in nets.iter().map(|&i| &self.nets[i]) {
            if let Some(svc) = label.strip_prefix("tasks.").and_then(|s| n.services.get(s)) {
                found = true;
                addrs.extend(svc.tasks.iter().filter(|t| t.healthy).map(|t| t.ip));
                continue;
            }
            if let Some(svc) = n.services.get(label) {
                found = true;
                match svc.vip {
                    Some(vip) => addrs.push(vip),
                    None => addrs.extend(svc.tasks.iter().filter(|t| t.healthy).map(|t| t.ip)),
                }
                continue;
            }
            if let Some(ips) = n.names.get(label) {
                found = true;
                addrs.extend(ips.iter().copied());
            }
        }
        if nets.len() > 1 {
            let mut seen = std::collections::HashSet::new();
            addrs.retain(|a| seen.insert(*a));
        }
        if !found {
            return match zone {
                Some(z) => Lookup::NxDomain { zone: z },
                None if self.named(idx, name).is_some() => Lookup::Apex { zone: name.to_owned() },
                None => Lookup::Forward,
            };
        }
        let zone = zone.unwrap_or_else(|| name.to_owned());
        addrs.retain(|a| match kind {
            Kind::A => a.is_ipv4(),
            Kind::Aaaa => a.is_ipv6(),
            Kind::Any => true,
            _ => false,
        });
        if addrs.is_empty() {
            return Lookup::NoData { zone };
        }
        rand::seq::SliceRandom::shuffle(addrs.as_mut_slice(), &mut rand::rng());
        Lookup::Addresses(addrs)
    }

    fn lookup_ptr(&self, idx: &[usize], name: &str, kind: Kind) -> Lookup {
        let Some(ip) = parse_reverse(name) else { return Lookup::Forward };
        for n in idx.iter().map(|&i| &self.nets[i]) {
            if let Some(target) = n.ptrs.get(&ip) {
                return if kind == Kind::Ptr || kind == Kind::Any {
                    Lookup::Ptr(target.clone())
                } else {
                    Lookup::NoData { zone: name.to_owned() }
                };
            }
        }
        for n in idx.iter().map(|&i| &self.nets[i]) {
            if let Some(&(base, len)) = n.info.subnets.iter().find(|(base, len)| contains(*base, *len, ip)) {
                return Lookup::NxDomain { zone: reverse_zone(base, len) };
            }
        }
        Lookup::Forward
    }

    /// `_<port>._<proto>.<service>[.<network>]`.
    fn lookup_srv(&self, idx: &[usize], name: &str) -> Lookup {
        let mut it = name.splitn(3, '.');
        let (Some(port), Some(proto), Some(rest)) = (it.next(), it.next(), it.next()) else {
            return self.srv_fallback(idx, name);
        };
        let (Some(port), Some(proto)) = (port.strip_prefix('_'), proto.strip_prefix('_')) else {
            return self.srv_fallback(idx, name);
        };
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return self.srv_fallback(idx, name),
        };
        let (nets, svc_name): (Vec<&Net>, &str) = match rest.rsplit_once('.') {
            Some((svc, net)) if let Some(n) = self.named(idx, net) => (vec![n], svc),
            _ => (idx.iter().map(|&i| &self.nets[i]).collect(), rest),
        };
        let mut srv = Vec::new();
        let mut extra = Vec::new();
        let mut found = false;
        for n in nets {
            let Some(s) = n.services.get(svc_name) else { continue };
            found = true;
            let net = n.info.name.to_ascii_lowercase();
            for p in s.ports.iter().filter(|p| p.proto == proto) {
                let matches =
                    p.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(port)) || p.port.to_string() == port;
                if !matches {
                    continue;
                }
                match s.vip {
                    Some(vip) => {
                        let target = format!("{}.{net}", s.name.to_ascii_lowercase());
                        srv.push((0, 100, p.port, target.clone()));
                        extra.push((target, vip));
                    }
                    None => {
                        for t in s.tasks.iter().filter(|t| t.healthy) {
                            let target = format!("{}.{net}", t.name.to_ascii_lowercase());
                            srv.push((0, 100, p.port, target.clone()));
                            extra.push((target, t.ip));
                        }
                    }
                }
            }
        }
        if !found {
            return self.srv_fallback(idx, name);
        }
        if srv.is_empty() {
            return Lookup::NoData { zone: rest.to_owned() };
        }
        rand::seq::SliceRandom::shuffle(srv.as_mut_slice(), &mut rand::rng());
        Lookup::Srv(srv, extra)
    }

    /// An SRV query for a name that is not a service of ours: NODATA if the
    /// name exists here, else whatever an address lookup says.
    fn srv_fallback(&self, idx: &[usize], name: &str) -> Lookup {
        match self.lookup_name(idx, name, Kind::Any) {
            Lookup::Addresses(_) | Lookup::NoData { .. } => Lookup::NoData { zone: name.to_owned() },
            other => other,
        }
    }
}

/// Whether `ip` is inside `base/len`.
pub fn contains(base: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (base, ip) {
        (IpAddr::V4(b), IpAddr::V4(i)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len.min(32))) };
            u32::from(b) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(b), IpAddr::V6(i)) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len.min(128))) };
            u128::from(b) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// `4.3.2.1.in-addr.arpa` -> 1.2.3.4; 32 nibbles `.ip6.arpa` -> the IPv6
/// address. Anything else (partial names included) -> None.
pub fn parse_reverse(name: &str) -> Option<IpAddr> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if let Some(r) = name.strip_suffix(".in-addr.arpa") {
        let parts: Vec<&str> = r.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        let mut o = [0u8; 4];
        for (i, p) in parts.iter().rev().enumerate() {
            if p.is_empty() || p.len() > 3 || (p.len() > 1 && p.starts_with('0')) {
                return None;
            }
            o[i] = p.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(o)));
    }
    let r = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = r.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let mut v: u128 = 0;
    for n in nibbles.iter().rev() {
        if n.len() != 1 {
            return None;
        }
        v = (v << 4) | u128::from(u8::from_str_radix(n, 16).ok()?);
    }
    Some(IpAddr::V6(Ipv6Addr::from(v)))
}

/// The reverse zone of a subnet, cut at the octet (nibble) boundary at or
/// above its prefix: 172.18.0.0/16 -> `18.172.in-addr.arpa`.
pub fn reverse_zone(base: IpAddr, len: u8) -> String {
    match base {
        IpAddr::V4(a) => {
            let n = usize::from(len.min(32) / 8);
            let o = a.octets();
            let mut labels: Vec<String> = o[..n].iter().rev().map(u8::to_string).collect();
            labels.push("in-addr.arpa".into());
            labels.join(".")
        }
        IpAddr::V6(a) => {
            let n = usize::from(len.min(128) / 4);
            let hex: Vec<char> = format!("{:032x}", u128::from(a)).chars().collect();
            let mut labels: Vec<String> = hex[..n].iter().rev().map(char::to_string).collect();
            labels.push("ip6.arpa".into());
            labels.join(".")
        }
    }
}

/// The reverse name of an address (`4.3.2.1.in-addr.arpa`).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => reverse_zone(ip, 32),
        IpAddr::V6(_) => reverse_zone(ip, 128),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_parse_and_reject_partial_or_odd_forms() {
        assert_eq!(parse_reverse("4.3.2.1.in-addr.arpa."), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(parse_reverse("3.2.1.in-addr.arpa"), None);
        assert_eq!(parse_reverse("04.3.2.1.in-addr.arpa"), None);
        assert_eq!(parse_reverse("256.3.2.1.in-addr.arpa"), None);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(parse_reverse(&reverse_name(v6)), Some(v6));
        assert_eq!(parse_reverse("1.0.ip6.arpa"), None);
    }

    #[test]
    fn reverse_zones_cut_at_octets_and_subnets_contain() {
        assert_eq!(reverse_zone("172.18.0.0".parse().unwrap(), 16), "18.172.in-addr.arpa");
        assert_eq!(reverse_zone("10.1.2.0".parse().unwrap(), 20), "1.10.in-addr.arpa");
        assert_eq!(reverse_name("1.2.3.4".parse().unwrap()), "4.3.2.1.in-addr.arpa");
        // Nonsense prefixes are clamped, not a panic.
        assert_eq!(reverse_zone("1.2.3.4".parse().unwrap(), 200), "4.3.2.1.in-addr.arpa");
        assert_eq!(reverse_zone("::".parse().unwrap(), 255).matches('.').count(), 33);
        assert!(contains("172.18.0.0".parse().unwrap(), 16, "172.18.9.9".parse().unwrap()));
        assert!(!contains("172.18.0.0".parse().unwrap(), 16, "172.19.0.1".parse().unwrap()));
        assert!(!contains("172.18.0.0".parse().unwrap(), 16, "::1".parse().unwrap()));
    }
}
