//! Service load balancing on this node: services (a virtual IP, ports and
//! backends) kept in the store and programmed into the eBPF datapath (the
//! `ebpf` crate), which runs on the host side of every container veth.
//!
//! The datapath's maps and links are pinned under `<bpf-root>/lb`, so they
//! outlive netd: a netd that stops, crashes or is upgraded leaves packets
//! flowing, and the next one re-adopts maps, ids and tracked flows, switches
//! the links to its own program and re-applies the stored services. The
//! pure part (what a request means, what the datapath gets) is
//! [`validate`] and [`specs`]; [`Lb`] is the thin shell around the datapath.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use ebpf::datapath::{BackendSpec, BackendState, Datapath, DatapathError, Mode, ServiceSpec, Timeouts};
use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::store::{Record, Store, StoreError};

/// Most ports one service may have.
pub const MAX_PORTS: usize = 64;
/// Most backends one service may have.
pub const MAX_BACKENDS: usize = 4096;
/// Highest backend weight (Maglev shares slots in proportion).
pub const MAX_WEIGHT: u32 = 1000;

/// What can go wrong with services.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("{0}")]
    Invalid(String),
    #[error("no such service: {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the eBPF load balancer is not running on this node: {0}")]
    Unavailable(String),
    #[error("datapath: {0}")]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A service's transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn datapath(self) -> ebpf::datapath::Proto {
        match self {
            Protocol::Tcp => ebpf::datapath::Proto::Tcp,
            Protocol::Udp => ebpf::datapath::Proto::Udp,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A backend's state: `active` takes new flows; `draining` keeps its
/// established flows and takes no new ones; `gone` loses its flows at once
/// (they move to a live backend).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Active,
    Draining,
    Gone,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Draining => "draining",
            State::Gone => "gone",
        }
    }
}

/// One port of a service: clients use `Port` on the VIP, backends listen
/// on `TargetPort`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePort {
    #[serde(rename = "Protocol", default = "tcp")]
    pub protocol: Protocol,
    #[serde(rename = "Port")]
    pub port: u16,
    /// Defaults to `Port`.
    #[serde(rename = "TargetPort", default)]
    pub target_port: u16,
    /// Also reachable from outside the node on this port of the node's
    /// addresses (the routing mesh). 0: not published.
    #[serde(rename = "PublishedPort", default, skip_serializing_if = "is_zero")]
    pub published_port: u16,
    /// How published traffic reaches backends.
    #[serde(rename = "PublishMode", default, skip_serializing_if = "Option::is_none")]
    pub publish_mode: Option<PublishMode>,
}

fn is_zero(p: &u16) -> bool {
    *p == 0
}

/// What backends see as the source of published traffic: the node
/// (`snat`, as Docker's routing mesh does) or the client (`preserve`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    #[default]
    Snat,
    Preserve,
}

fn tcp() -> Protocol {
    Protocol::Tcp
}

fn one() -> u32 {
    1
}

/// One backend of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    #[serde(rename = "Addr")]
    pub addr: Ipv4Addr,
    #[serde(rename = "Weight", default = "one")]
    pub weight: u32,
    #[serde(rename = "State", default)]
    pub state: State,
}

/// A service as the API takes it and the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRecord {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "VIP")]
    pub vip: Ipv4Addr,
    #[serde(rename = "Ports")]
    pub ports: Vec<ServicePort>,
    #[serde(rename = "Backends", default)]
    pub backends: Vec<Backend>,
    #[serde(rename = "CreatedAt", default)]
    pub created: String,
}

impl Record for ServiceRecord {
    const KIND: &'static str = "service";
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("lb_services");
    fn key(&self) -> String {
        self.name.clone()
    }
}

fn usable(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback())
}

/// Checks a requested service against the others (by name) and fills in
/// defaults: the service as it will be kept, or what is wrong with it.
pub fn validate(mut s: ServiceRecord, others: &[ServiceRecord]) -> Result<ServiceRecord, LbError> {
    let bad = |m: String| Err(LbError::Invalid(m));
    let name_ok = !s.name.is_empty()
        && s.name.len() <= 63
        && s.name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !name_ok {
        return bad(format!(
            "invalid service name {:?}: 1 to 63 characters [a-zA-Z0-9_.-], starting with a letter or digit",
            s.name
        ));
    }
    if !usable(s.vip) {
        return bad(format!("service {}: VIP {} is not a unicast address", s.name, s.vip));
    }
    if s.ports.is_empty() || s.ports.len() > MAX_PORTS {
        return bad(format!("service {}: give 1 to {MAX_PORTS} ports (got {})", s.name, s.ports.len()));
    }
    let mut seen = BTreeMap::new();
    for p in &mut s.ports {
        if p.port == 0 {
            return bad(format!("service {}: port 0 is not a port", s.name));
        }
        if p.target_port == 0 {
            p.target_port = p.port;
        }
        if p.published_port == 0 && p.publish_mode.is_some() {
            return bad(format!("service {}: port {}: PublishMode without PublishedPort", s.name, p.port));
        }
        if p.published_port != 0 {
            p.publish_mode.get_or_insert_default();
        }
        if seen.insert((p.protocol, p.port), ()).is_some() {
            return bad(format!("service {}: port {}/{} listed twice", s.name, p.port, p.protocol.as_str()));
        }
    }
    if s.backends.len() > MAX_BACKENDS {
        return bad(format!("service {}: at most {MAX_BACKENDS} backends (got {})", s.name, s.backends.len()));
    }
    let mut addrs = BTreeMap::new();
    for b in &s.backends {
        if !usable(b.addr) {
            return bad(format!("service {}: backend {} is not a unicast address", s.name, b.addr));
        }
        if b.weight == 0 || b.weight > MAX_WEIGHT {
            return bad(format!(
                "service {}: backend {} has weight {}: give 1 to {MAX_WEIGHT} (or state draining to stop new flows)",
                s.name, b.addr, b.weight
            ));
        }
        if addrs.insert(b.addr, ()).is_some() {
            return bad(format!("service {}: backend {} listed twice", s.name, b.addr));
        }
    }
    let published: Vec<_> =
        s.ports.iter().filter(|p| p.published_port != 0).map(|p| (p.protocol, p.published_port)).collect();
    if published.len() != published.iter().collect::<std::collections::BTreeSet<_>>().len() {
        return bad(format!("service {}: a published port is listed twice", s.name));
    }
    for o in others.iter().filter(|o| o.name != s.name) {
        for &(proto, port) in &published {
            if o.ports.iter().any(|q| q.protocol == proto && q.published_port == port) {
                return Err(LbError::Conflict(format!(
                    "port {port}/{} of this node is already published by service {}",
                    proto.as_str(),
                    o.name
                )));
            }
        }
        for p in &s.ports {
            if o.vip == s.vip && o.ports.iter().any(|q| q.protocol == p.protocol && q.port == p.port) {
                return Err(LbError::Conflict(format!(
                    "{}:{}/{} is already service {}",
                    s.vip,
                    p.port,
                    p.protocol.as_str(),
                    o.name
                )));
            }
        }
    }
    Ok(s)
}

/// What the datapath gets for a service: one entry per port, and one per
/// published port and node address.
pub fn specs(s: &ServiceRecord, node_addrs: &[Ipv4Addr]) -> Vec<ServiceSpec> {
    let mut out = Vec::new();
    for p in &s.ports {
        let backends: Vec<BackendSpec> = s
            .backends
            .iter()
            .map(|b| BackendSpec {
                addr: b.addr,
                port: p.target_port,
                weight: b.weight,
                state: match b.state {
                    State::Active => BackendState::Active,
                    State::Draining => BackendState::Draining,
                    State::Gone => BackendState::Gone,
                },
            })
            .collect();
        let proto = p.protocol.datapath();
        out.push(ServiceSpec { addr: s.vip, port: p.port, proto, backends: backends.clone(), mode: Mode::EastWest });
        if p.published_port == 0 {
            continue;
        }
        let mode = match p.publish_mode.unwrap_or_default() {
            PublishMode::Snat => Mode::NorthSouthSnat,
            PublishMode::Preserve => Mode::NorthSouthPreserve,
        };
        for a in node_addrs {
            out.push(ServiceSpec { addr: *a, port: p.published_port, proto, backends: backends.clone(), mode });
        }
    }
    out
}

/// What the datapath counted for one backend port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BackendStats {
    #[serde(rename = "Packets")]
    pub packets: u64,
    #[serde(rename = "Bytes")]
    pub bytes: u64,
    #[serde(rename = "Flows")]
    pub flows: u64,
}

/// A tracked flow, for `netctl lb conntrack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowView {
    #[serde(rename = "Protocol")]
    pub protocol: &'static str,
    #[serde(rename = "Client")]
    pub client: String,
    #[serde(rename = "Service")]
    pub service: String,
    #[serde(rename = "Backend")]
    pub backend: String,
}

/// The load balancer: the store's services and the datapath they are
/// programmed into (absent when it could not load, with the reason).
pub struct Lb {
    store: Store,
    dp: Result<Mutex<Box<dyn Datapath + Send>>, String>,
    /// Serializes writers (check, program, store) so two requests cannot
    /// both pass the conflict check.
    write: Mutex<()>,
    /// The node's addresses published ports answer on (those of the
    /// interfaces the world programs run on).
    node_addrs: Mutex<Vec<Ipv4Addr>>,
}

impl std::fmt::Debug for Lb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lb").field("loaded", &self.dp.is_ok()).finish_non_exhaustive()
    }
}

impl Lb {
    /// Loads the datapath pinned under `bpf_root/lb` (re-adopting what is
    /// pinned there). Failing to load is not fatal to netd: bridge
    /// networking works without it, and service calls say why it is off.
    pub fn load(store: Store, bpf_root: &std::path::Path, table_size: u32) -> Lb {
        let root = bpf_root.join("lb");
        let dp = match ebpf::datapath::Kernel::load_pinned(&root, table_size) {
            Ok(k) => {
                tracing::info!(root = %root.display(), services = k.services(), "eBPF load balancer loaded");
                Ok(Mutex::new(Box::new(k) as Box<dyn Datapath + Send>))
            }
            Err(e) => {
                tracing::error!(root = %root.display(), error = %e, "eBPF load balancer not loaded: services are off");
                Err(e.to_string())
            }
        };
        Lb { store, dp, write: Mutex::new(()), node_addrs: Mutex::new(Vec::new()) }
    }

    /// A load balancer over any datapath (the recording fake in tests).
    pub fn with(store: Store, dp: Box<dyn Datapath + Send>) -> Lb {
        Lb { store, dp: Ok(Mutex::new(dp)), write: Mutex::new(()), node_addrs: Mutex::new(Vec::new()) }
    }

    fn dp(&self) -> Result<std::sync::MutexGuard<'_, Box<dyn Datapath + Send>>, LbError> {
        match &self.dp {
            Ok(m) => Ok(m.lock().unwrap_or_else(|p| p.into_inner())),
            Err(why) => Err(LbError::Unavailable(why.clone())),
        }
    }

    /// Whether the datapath is loaded, or why not.
    pub fn status(&self) -> Result<(), String> {
        self.dp.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    /// Runs the datapath for published ports on the node's interfaces
    /// `ifaces` (name, IPv4 addresses): call before [`Lb::restore`].
    pub fn set_world(&self, ifaces: &[(String, Vec<Ipv4Addr>)]) -> Result<(), LbError> {
        let mut dp = self.dp()?;
        let mut addrs = Vec::new();
        for (name, a) in ifaces {
            dp.attach_world(name)?;
            addrs.extend(a);
        }
        *self.node_addrs.lock().unwrap_or_else(|p| p.into_inner()) = addrs;
        Ok(())
    }

    /// Balances sockets of the containers under cgroup (v2) directory
    /// `dir` at connect time (created if missing): their TCP to VIPs needs
    /// no per-packet NAT.
    pub fn attach_sockets(&self, dir: &std::path::Path) -> Result<(), LbError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| LbError::Invalid(format!("cannot create cgroup {}: {e}", dir.display())))?;
        Ok(self.dp()?.attach_sockets(dir)?)
    }

    /// The node addresses published ports answer on.
    pub fn node_addrs(&self) -> Vec<Ipv4Addr> {
        self.node_addrs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Programs every stored service (at start: tables of re-adopted
    /// services are rewritten in place, so tracked flows keep going), and
    /// removes re-adopted ones the store no longer has (e.g. published on
    /// an address the node lost, or a data root started afresh).
    pub fn restore(&self) -> Result<usize, LbError> {
        let all = self.store.all::<ServiceRecord>()?;
        let addrs = self.node_addrs();
        let specs: Vec<ServiceSpec> = all.iter().flat_map(|s| specs(s, &addrs)).collect();
        let mut dp = self.dp()?;
        dp.upsert_services(&specs)?;
        let wanted: std::collections::HashSet<_> = specs.iter().map(|s| (s.addr, s.port, s.proto)).collect();
        for (a, p, proto) in dp.service_keys() {
            if !wanted.contains(&(a, p, proto)) {
                tracing::info!(service = %format!("{a}:{p}/{proto:?}"), "removing a pinned service the store does not have");
                dp.delete_service(a, p, proto)?;
            }
        }
        Ok(all.len())
    }

    /// Runs the datapath on packets from interface `ifname` (a container's
    /// host-side veth); with `gw_mac` (its bridge's), it also answers the
    /// container's ARP requests for VIPs. Logged, not fatal: the container
    /// still runs.
    pub fn attach(&self, ifname: &str, gw_mac: Option<[u8; 6]>) {
        let Ok(mut dp) = self.dp() else { return };
        let done = dp.attach(ifname).and_then(|()| gw_mac.map_or(Ok(()), |m| dp.answer_arp(ifname, m)));
        match done {
            Ok(()) => tracing::debug!(ifname, "load balancer attached"),
            // Its container already stopped (the attach runs in the background).
            Err(DatapathError::Attach { why, .. }) if why == "no such interface" => {
                tracing::debug!(ifname, "veth gone before the load balancer attached")
            }
            Err(e) => tracing::warn!(ifname, error = %e, "cannot attach the load balancer: VIPs unreachable from it"),
        }
    }

    /// Creates or replaces service `s.name`. On any refusal nothing changes.
    pub fn upsert(&self, s: ServiceRecord) -> Result<ServiceRecord, LbError> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let all = self.store.all::<ServiceRecord>()?;
        let old = all.iter().find(|o| o.name == s.name).cloned();
        let mut s = validate(s, &all)?;
        if self.node_addrs().contains(&s.vip) {
            return Err(LbError::Invalid(format!(
                "service {}: VIP {} is an address of this node: give the service its own VIP and publish ports on the node with PublishedPort",
                s.name, s.vip
            )));
        }
        s.created = old.as_ref().map(|o| o.created.clone()).unwrap_or_else(|| jiff::Timestamp::now().to_string());
        let addrs = self.node_addrs();
        let mut dp = self.dp()?;
        let new_specs = specs(&s, &addrs);
        if let Err(e) = dp.upsert_services(&new_specs) {
            // Put back what was there (a partial write may have landed).
            let back = old.as_ref().map(|o| specs(o, &addrs)).unwrap_or_default();
            let _ = dp.upsert_services(&back);
            for n in new_specs.iter().filter(|n| !back.iter().any(|b| same_key(b, n))) {
                let _ = dp.delete_service(n.addr, n.port, n.proto);
            }
            return Err(e.into());
        }
        for o in old.iter().flat_map(|o| specs(o, &addrs)).filter(|o| !new_specs.iter().any(|n| same_key(n, o))) {
            dp.delete_service(o.addr, o.port, o.proto)?;
        }
        self.store.put_all(std::slice::from_ref(&s))?;
        Ok(s)
    }

    /// Removes a service: its VIP stops answering; tracked flows of it end.
    pub fn remove(&self, name: &str) -> Result<ServiceRecord, LbError> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let s = self.store.get::<ServiceRecord>(name)?.ok_or_else(|| LbError::NotFound(name.to_owned()))?;
        let addrs = self.node_addrs();
        let mut dp = self.dp()?;
        for sp in specs(&s, &addrs) {
            match dp.delete_service(sp.addr, sp.port, sp.proto) {
                Ok(()) | Err(DatapathError::NoService(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.store.remove::<ServiceRecord>(name)?;
        Ok(s)
    }

    /// Stored services, by name.
    pub fn services(&self) -> Result<Vec<ServiceRecord>, LbError> {
        let mut all = self.store.all::<ServiceRecord>()?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Counters per backend (address, port) as the datapath keeps them.
    pub fn counters(&self) -> Result<BTreeMap<(Ipv4Addr, u16), BackendStats>, LbError> {
        let mut out = BTreeMap::new();
        for c in self.dp()?.counters()? {
            out.insert(c.backend, BackendStats { packets: c.packets, bytes: c.bytes, flows: c.flows });
        }
        Ok(out)
    }

    /// Interfaces the datapath runs on.
    pub fn attached(&self) -> Result<Vec<String>, LbError> {
        Ok(self.dp()?.attached())
    }

    /// Tracked flows, at most `limit`, sorted by service then client.
    pub fn flows(&self, limit: usize) -> Result<(usize, Vec<FlowView>), LbError> {
        let mut flows = self.dp()?.flows()?;
        let total = flows.len();
        flows.sort_by_key(|f| (f.service, f.client));
        let views = flows
            .into_iter()
            .take(limit)
            .map(|f| FlowView {
                protocol: if f.proto == 17 { "udp" } else { "tcp" },
                client: format!("{}:{}", f.client.0, f.client.1),
                service: format!("{}:{}", f.service.0, f.service.1),
                backend: format!("{}:{}", f.backend.0, f.backend.1),
            })
            .collect();
        Ok((total, views))
    }

    /// Periodic upkeep: forgets links of deleted veths and drops flows
    /// idle past their state's timeout. Returns (links, flows) removed.
    pub fn housekeeping(&self, t: &Timeouts) -> Result<(usize, usize), LbError> {
        let mut dp = self.dp()?;
        let links = dp.prune_links();
        let flows = dp.sweep(t)?;
        Ok((links, flows))
    }
}

fn same_key(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    (a.addr, a.port, a.proto) == (b.addr, b.port, b.proto)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> ServiceRecord {
        serde_json::from_str(json).unwrap()
    }

    fn web() -> ServiceRecord {
        req(r#"{"Name":"web","VIP":"10.9.0.100","Ports":[{"Port":80,"TargetPort":8080},{"Protocol":"udp","Port":53}],
               "Backends":[{"Addr":"10.9.0.2"},{"Addr":"10.9.0.3","Weight":2,"State":"draining"}]}"#)
    }

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("netd.db")).unwrap();
        (d, s)
    }

    #[test]
    fn defaults_fill_in_and_each_port_is_a_datapath_service() {
        let s = validate(web(), &[]).unwrap();
        assert_eq!(s.ports[1].target_port, 53, "TargetPort defaults to Port");
        let sp = specs(&s, &[]);
        assert_eq!(sp.len(), 2);
        assert_eq!((sp[0].port, sp[0].proto, sp[0].backends[0].port), (80, ebpf::datapath::Proto::Tcp, 8080));
        assert_eq!(sp[1].backends[1].weight, 2);
        assert_eq!(sp[1].backends[1].state, BackendState::Draining);
        assert_eq!(sp[0].backends[0].weight, 1, "Weight defaults to 1");
    }

    #[test]
    fn published_ports_become_one_service_per_node_address() {
        let s = validate(
            req(r#"{"Name":"web","VIP":"10.9.0.100","Ports":[{"Port":80,"TargetPort":8080,"PublishedPort":30080},
                    {"Port":81,"PublishedPort":30081,"PublishMode":"preserve"}],"Backends":[{"Addr":"10.9.0.2"}]}"#),
            &[],
        )
        .unwrap();
        assert_eq!(s.ports[0].publish_mode, Some(PublishMode::Snat), "snat is the default, as Docker's mesh");
        let nodes = [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)];
        let sp = specs(&s, &nodes);
        assert_eq!(sp.len(), 6, "each port: the VIP and both node addresses");
        let ns: Vec<_> = sp.iter().filter(|x| x.mode != Mode::EastWest).map(|x| (x.addr, x.port, x.mode)).collect();
        assert_eq!(
            ns,
            vec![
                (nodes[0], 30080, Mode::NorthSouthSnat),
                (nodes[1], 30080, Mode::NorthSouthSnat),
                (nodes[0], 30081, Mode::NorthSouthPreserve),
                (nodes[1], 30081, Mode::NorthSouthPreserve),
            ]
        );
        assert!(sp.iter().filter(|x| x.port == 30080).all(|x| x.backends[0].port == 8080), "to the target port");
        // A published port belongs to one service; a mode needs a port.
        let mut other = req(r#"{"Name":"api","VIP":"10.9.0.101","Ports":[{"Port":80,"PublishedPort":30080}]}"#);
        let e = validate(other.clone(), std::slice::from_ref(&s)).unwrap_err().to_string();
        assert!(e.contains("port 30080/tcp of this node is already published by service web"), "{e}");
        other.ports[0].published_port = 0;
        other.ports[0].publish_mode = Some(PublishMode::Preserve);
        let e = validate(other, &[]).unwrap_err().to_string();
        assert!(e.contains("PublishMode without PublishedPort"), "{e}");
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            (r#"{"Name":"","VIP":"10.0.0.1","Ports":[{"Port":80}]}"#, "invalid service name"),
            (r#"{"Name":"-x","VIP":"10.0.0.1","Ports":[{"Port":80}]}"#, "invalid service name"),
            (r#"{"Name":"a b","VIP":"10.0.0.1","Ports":[{"Port":80}]}"#, "invalid service name"),
            (r#"{"Name":"w","VIP":"0.0.0.0","Ports":[{"Port":80}]}"#, "not a unicast address"),
            (r#"{"Name":"w","VIP":"224.0.0.1","Ports":[{"Port":80}]}"#, "not a unicast address"),
            (r#"{"Name":"w","VIP":"10.0.0.1","Ports":[]}"#, "give 1 to 64 ports"),
            (r#"{"Name":"w","VIP":"10.0.0.1","Ports":[{"Port":0}]}"#, "port 0"),
            (r#"{"Name":"w","VIP":"10.0.0.1","Ports":[{"Port":80},{"Port":80}]}"#, "listed twice"),
            (
                r#"{"Name":"w","VIP":"10.0.0.1","Ports":[{"Port":80}],"Backends":[{"Addr":"127.0.0.1"}]}"#,
                "not a unicast",
            ),
            (
                r#"{"Name":"w","VIP":"10.0.0.1","Ports":[{"Port":80}],"Backends":[{"Addr":"10.0.0.2","Weight":0}]}"#,
                "weight 0",
            ),
            (
                r#"{"Name":"w","VIP":"10.0.0.1","Ports":[{"Port":80}],"Backends":[{"Addr":"10.0.0.2"},{"Addr":"10.0.0.2"}]}"#,
                "backend 10.0.0.2 listed twice",
            ),
        ];
        for (json, want) in cases {
            let e = validate(req(json), &[]).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
        // Typos and wrong types do not even parse (the API says why).
        assert!(serde_json::from_str::<ServiceRecord>(r#"{"Name":"w","VIP":"10.0.0.1","Port":[]}"#).is_err());
        assert!(
            serde_json::from_str::<ServiceRecord>(
                r#"{"Name":"w","VIP":"10.0.0.1","Ports":[{"Protocol":"sctp","Port":1}]}"#
            )
            .is_err()
        );
    }

    #[test]
    fn a_vip_port_belongs_to_one_service() {
        let a = validate(web(), &[]).unwrap();
        let mut b = web();
        b.name = "other".into();
        let e = validate(b.clone(), std::slice::from_ref(&a)).unwrap_err();
        assert!(matches!(e, LbError::Conflict(_)), "{e}");
        assert!(e.to_string().contains("10.9.0.100:80/tcp is already service web"), "{e}");
        // Same VIP, another port: fine. Same name: a replacement, fine.
        b.ports = vec![ServicePort {
            protocol: Protocol::Tcp,
            port: 443,
            target_port: 0,
            published_port: 0,
            publish_mode: None,
        }];
        validate(b, std::slice::from_ref(&a)).unwrap();
        validate(web(), &[a]).unwrap();
    }

    #[test]
    fn upsert_replace_and_remove_keep_store_and_datapath_in_step() {
        let (_d, st) = store();
        let lb = Lb::with(st.clone(), Box::new(ebpf::datapath::Recording::new()));
        let s = lb.upsert(web()).unwrap();
        assert!(!s.created.is_empty());
        assert_eq!(lb.services().unwrap(), vec![s.clone()]);
        // Replaced with one port fewer: the created time stays.
        let mut less = web();
        less.ports.truncate(1);
        let s2 = lb.upsert(less).unwrap();
        assert_eq!(s2.created, s.created);
        assert_eq!(lb.services().unwrap()[0].ports.len(), 1);
        let gone = lb.remove("web").unwrap();
        assert_eq!(gone.name, "web");
        assert!(lb.services().unwrap().is_empty());
        assert!(matches!(lb.remove("web"), Err(LbError::NotFound(_))));
    }

    #[test]
    fn restore_programs_the_store_and_drops_what_it_does_not_have() {
        let (_d, st) = store();
        let mut fake = ebpf::datapath::Recording::new();
        // Re-adopted from the pins: one the store has, one it does not.
        let stale = ServiceSpec {
            addr: Ipv4Addr::new(10, 9, 9, 9),
            port: 1,
            proto: ebpf::datapath::Proto::Tcp,
            backends: vec![],
            mode: Mode::EastWest,
        };
        fake.upsert_service(&stale).unwrap();
        let lb = Lb::with(st.clone(), Box::new(fake));
        lb.upsert(web()).unwrap();
        assert_eq!(lb.restore().unwrap(), 1);
        let mut keys = lb.dp().unwrap().service_keys();
        keys.sort();
        assert_eq!(keys.len(), 2, "web's two ports, the stale one gone: {keys:?}");
        assert!(!keys.iter().any(|k| k.0 == stale.addr));
    }

    #[test]
    fn a_vip_cannot_be_a_node_address() {
        let (_d, st) = store();
        let lb = Lb::with(st, Box::new(ebpf::datapath::Recording::new()));
        lb.set_world(&[("eth0".into(), vec![Ipv4Addr::new(10, 9, 0, 100)])]).unwrap();
        let e = lb.upsert(web()).unwrap_err().to_string();
        assert!(e.contains("is an address of this node"), "{e}");
        assert!(lb.services().unwrap().is_empty());
    }

    #[test]
    fn a_datapath_refusal_changes_nothing() {
        let (_d, st) = store();
        let mut fake = ebpf::datapath::Recording::new();
        fake.refuse = true;
        let lb = Lb::with(st, Box::new(fake));
        let e = lb.upsert(web()).unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
        assert!(lb.services().unwrap().is_empty(), "nothing stored");
    }

    #[test]
    fn without_a_datapath_calls_say_why() {
        let (_d, st) = store();
        let lb = Lb::with(st, Box::new(ebpf::datapath::Recording::new()));
        let lb = Lb { dp: Err("no BPF here".into()), ..lb };
        let e = lb.upsert(web()).unwrap_err().to_string();
        assert!(e.contains("not running on this node: no BPF here"), "{e}");
        assert!(lb.services().unwrap().is_empty());
    }
}
