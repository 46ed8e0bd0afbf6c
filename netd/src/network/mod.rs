//! The bridge driver and its glue: creating and removing bridge networks
//! (IPAM from [`crate::ipam`], devices through [`link`]), allocating a
//! container's endpoints at creation, plumbing them into its namespace at
//! start (before its first process runs), choosing host ports for `-p`/`-P`,
//! and keeping netd's nftables table ([`crate::firewall`]) equal to what the
//! store says. Everything it decides is derived from the store: addresses are
//! "allocated" by the endpoint records of containers, ports by the state of
//! running containers, so a crash can neither leak nor double-book them.

pub mod link;
mod ports;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt;

use crate::firewall::{self, BridgeRules, FirewallError, Publish, Ruleset};
use crate::ids::NetworkId;
use crate::ipam::{self, HostNet, IpamError, Ipv4Net, Space};
use crate::model::{Driver, Endpoint, IpamPool, NetworkRecord, PortMapping, Scope};
use crate::reconcile::OWNER_PREFIX;
use crate::runtime::container::{ContainerRecord, Status};
use crate::runtime::netspec::NetworkRequest;
use crate::store::{Store, StoreError};
pub use ports::{EPHEMERAL, choose_ports};

/// Option naming the bridge device (Docker's).
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// Option setting the MTU (Docker's); `mtu` is accepted as a short form.
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";

/// A refused or failed network operation.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Kernel(String),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
}

impl From<ipam::NetParseError> for NetError {
    fn from(e: ipam::NetParseError) -> Self {
        NetError::Ipam(IpamError::Parse(e))
    }
}

/// A validated `network create` for the bridge driver.
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    pub name: String,
    pub internal: bool,
    pub attachable: bool,
    pub subnet: Option<String>,
    pub ip_range: Option<String>,
    pub gateway: Option<String>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// The bridge driver service. One per daemon.
pub struct Networks {
    store: Store,
    nl: rtnetlink::Handle,
    /// Serializes allocations and network removal (read-decide-write).
    lock: tokio::sync::Mutex<()>,
    /// The last ruleset applied (unchanged rulesets are not re-applied).
    fw_last: tokio::sync::Mutex<Option<String>>,
    resolv_conf: PathBuf,
    /// Leave br_netfilter's sysctls alone (else turned off at start).
    bridge_netfilter: bool,
    /// The service load balancer, run on every host-side veth made here.
    lb: std::sync::OnceLock<Arc<crate::lb::Lb>>,
}

impl std::fmt::Debug for Networks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Networks").finish_non_exhaustive()
    }
}

/// The bridge device of a network.
pub fn bridge_name(n: &NetworkRecord) -> String {
    n.options.get(OPT_BRIDGE_NAME).cloned().unwrap_or_else(|| format!("br-{}", n.id.short()))
}

/// The MTU of a network (default 1500).
pub fn mtu(n: &NetworkRecord) -> u32 {
    n.options.get(OPT_MTU).or_else(|| n.options.get("mtu")).and_then(|m| m.parse().ok()).unwrap_or(1500)
}

/// The address plan of a bridge network.
pub fn space(n: &NetworkRecord) -> Result<Space, NetError> {
    let p = n.ipam.first().ok_or_else(|| NetError::Kernel(format!("network {} has no subnet", n.name)))?;
    let subnet: Ipv4Net = p.subnet.parse()?;
    let range = p.ip_range.as_deref().map(str::parse).transpose()?;
    let gateway = p
        .gateway
        .as_deref()
        .map(|g| g.parse::<Ipv4Addr>().map_err(|_| NetError::BadRequest(format!("invalid gateway {g:?}"))))
        .transpose()?;
    Ok(Space::new(subnet, range, gateway)?)
}

fn parse_mtu(options: &BTreeMap<String, String>) -> Result<(), NetError> {
    for k in [OPT_MTU, "mtu"] {
        if let Some(v) = options.get(k) {
            match v.parse::<u32>() {
                Ok(m) if (68..=65535).contains(&m) => {}
                _ => return Err(NetError::BadRequest(format!("invalid MTU {v:?}: expected 68-65535"))),
            }
        }
    }
    if let Some(b) = options.get(OPT_BRIDGE_NAME)
        && (b.len() > 15 || !crate::model::valid_name(b))
    {
        return Err(NetError::BadRequest(format!("invalid bridge name {b:?}: 1-15 characters of [a-zA-Z0-9_.-]")));
    }
    Ok(())
}

impl Networks {
    /// Opens the service's netlink connection (in netd's namespace).
    pub fn connect(store: Store, bridge_netfilter: bool) -> Result<Arc<Networks>, NetError> {
        let (conn, nl, _) =
            rtnetlink::new_connection().map_err(|e| NetError::Kernel(format!("netlink socket: {e}")))?;
        tokio::spawn(conn);
        Ok(Arc::new(Networks {
            store,
            nl,
            lock: Default::default(),
            fw_last: Default::default(),
            resolv_conf: "/etc/resolv.conf".into(),
            bridge_netfilter,
            lb: Default::default(),
        }))
    }

    /// What a new subnet must not overlap: the node's routes and addresses
    /// (except netd's own bridges) and resolv.conf's nameservers.
    pub async fn host_conflicts(&self) -> Result<Vec<HostNet>, NetError> {
        use netlink_packet_route::address::AddressAttribute;
        use netlink_packet_route::route::{RouteAddress, RouteAttribute};
        let links: Vec<_> =
            self.nl.link().get().execute().try_collect().await.map_err(|e| NetError::Kernel(e.to_string()))?;
        let mut names = BTreeMap::new();
        let mut ours = BTreeSet::new();
        for l in links {
            for a in &l.attributes {
                match a {
                    netlink_packet_route::link::LinkAttribute::IfName(n) => {
                        names.insert(l.header.index, n.clone());
                    }
                    netlink_packet_route::link::LinkAttribute::IfAlias(a) if a.starts_with(OWNER_PREFIX) => {
                        ours.insert(l.header.index);
                    }
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        for r in self.ipv4_routes().await? {
            let mut dst = None;
            let mut oif = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(*d),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if oif.is_some_and(|i| ours.contains(&i))
                || r.header.table != netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN
            {
                continue;
            }
            if let Some(d) = dst {
                let net = Ipv4Net::new(d, r.header.destination_prefix_length);
                let dev = oif.and_then(|i| names.get(&i)).map(|n| format!(" dev {n}")).unwrap_or_default();
                out.push(HostNet { net, what: format!("route {net}{dev}") });
            }
        }
        let addrs: Vec<_> =
            self.nl.address().get().execute().try_collect().await.map_err(|e| NetError::Kernel(e.to_string()))?;
        for a in addrs {
            if ours.contains(&a.header.index) {
                continue;
            }
            for attr in &a.attributes {
                if let AddressAttribute::Address(std::net::IpAddr::V4(ip)) = attr
                    && !ip.is_loopback()
                {
                    let dev = names.get(&a.header.index).cloned().unwrap_or_default();
                    out.push(HostNet { net: Ipv4Net::new(*ip, 32), what: format!("address {ip} of {dev}") });
                }
            }
        }
        out.extend(ipam::nameservers(&std::fs::read_to_string(&self.resolv_conf).unwrap_or_default()));
        Ok(out)
    }

    /// Every IPv4 route of netd's namespace (all tables).
    async fn ipv4_routes(&self) -> Result<Vec<netlink_packet_route::route::RouteMessage>, NetError> {
        self.nl
            .route()
            .get(rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::Kernel(e.to_string()))
    }

    /// The interfaces where traffic from outside the node arrives, with
    /// their IPv4 addresses: `names`, or (None) those carrying an IPv4
    /// default route. Named interfaces that do not exist are an error.
    pub async fn underlay(&self, names: Option<&[String]>) -> Result<Vec<(String, Vec<Ipv4Addr>)>, NetError> {
        use netlink_packet_route::address::AddressAttribute;
        use netlink_packet_route::route::RouteAttribute;
        let kernel = |e: rtnetlink::Error| NetError::Kernel(e.to_string());
        let links: Vec<_> = self.nl.link().get().execute().try_collect().await.map_err(kernel)?;
        let by_index: BTreeMap<u32, String> = links
            .iter()
            .filter_map(|l| {
                l.attributes.iter().find_map(|a| match a {
                    netlink_packet_route::link::LinkAttribute::IfName(n) => Some((l.header.index, n.clone())),
                    _ => None,
                })
            })
            .collect();
        let wanted: Vec<u32> = match names {
            Some(names) => names
                .iter()
                .map(|n| {
                    by_index.iter().find(|(_, v)| *v == n).map(|(i, _)| *i).ok_or_else(|| {
                        NetError::NotFound(format!("lb-interface {n}: no such interface in netd's network namespace"))
                    })
                })
                .collect::<Result<_, _>>()?,
            None => {
                let mut oifs: Vec<u32> = self
                    .ipv4_routes()
                    .await?
                    .iter()
                    .filter(|r| {
                        r.header.destination_prefix_length == 0
                            && r.header.table == netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN
                    })
                    .filter_map(|r| {
                        r.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Oif(i) => Some(*i),
                            _ => None,
                        })
                    })
                    .collect();
                oifs.sort();
                oifs.dedup();
                oifs
            }
        };
        let addrs: Vec<_> = self.nl.address().get().execute().try_collect().await.map_err(kernel)?;
        Ok(wanted
            .into_iter()
            .filter_map(|i| {
                let v4 = addrs
                    .iter()
                    .filter(|a| a.header.index == i)
                    .flat_map(|a| &a.attributes)
                    .filter_map(|a| match a {
                        AddressAttribute::Address(std::net::IpAddr::V4(ip)) => Some(*ip),
                        _ => None,
                    })
                    .collect();
                Some((by_index.get(&i)?.clone(), v4))
            })
            .collect())
    }

    fn taken(nets: &[NetworkRecord], except: Option<&NetworkId>) -> Vec<(Ipv4Net, String)> {
        nets.iter()
            .filter(|n| Some(&n.id) != except)
            .filter_map(|n| Some((n.ipam.first()?.subnet.parse().ok()?, n.name.clone())))
            .collect()
    }

    /// At start: forwarding on, a subnet for the default bridge if it has
    /// none yet (172.17.0.0/16 unless that overlaps the host), then a pass.
    pub async fn init(&self) -> Result<(), NetError> {
        link::sysctl("net/ipv4/ip_forward", "1")?;
        if !self.bridge_netfilter && std::path::Path::new("/proc/sys/net/bridge").exists() {
            for f in ["iptables", "ip6tables", "arptables"] {
                link::sysctl(&format!("net/bridge/bridge-nf-call-{f}"), "0")?;
            }
        }
        let _g = self.lock.lock().await;
        let nets = self.store.networks()?;
        let host = self.host_conflicts().await?;
        for mut n in nets.iter().filter(|n| n.driver == Driver::Bridge && n.ipam.is_empty()).cloned() {
            let subnet = ipam::pick_subnet(&ipam::default_local_pools(), &Self::taken(&nets, Some(&n.id)), &host)?;
            let gw = subnet.nth(1);
            n.ipam = vec![IpamPool { subnet: subnet.to_string(), ip_range: None, gateway: Some(gw.to_string()) }];
            self.store.put_all(std::slice::from_ref(&n))?;
            tracing::info!(network = %n.name, %subnet, "assigned a subnet");
        }
        drop(_g);
        self.reconcile().await
    }

    /// Makes the kernel match the store: every bridge network's device, and
    /// the firewall table.
    pub async fn reconcile(&self) -> Result<(), NetError> {
        for n in self.store.networks()?.iter().filter(|n| n.driver == Driver::Bridge && !n.ipam.is_empty()) {
            self.ensure_bridge(n).await?;
        }
        self.sync_firewall().await
    }

    async fn ensure_bridge(&self, n: &NetworkRecord) -> Result<u32, NetError> {
        let s = space(n)?;
        let name = bridge_name(n);
        let index = link::ensure_bridge(
            &self.nl,
            &name,
            &format!("{OWNER_PREFIX}{}", n.id),
            s.gateway,
            s.subnet.prefix(),
            mtu(n),
        )
        .await?;
        // Published ports answer on 127.0.0.1 too (DNAT to the bridge).
        link::sysctl(&format!("net/ipv4/conf/{name}/route_localnet"), "1")?;
        Ok(index)
    }

    /// Creates a bridge network: subnet, bridge device, record.
    pub async fn create(&self, req: CreateRequest) -> Result<NetworkRecord, NetError> {
        parse_mtu(&req.options)?;
        let _g = self.lock.lock().await;
        let nets = self.store.networks()?;
        if nets.iter().any(|n| n.name == req.name) {
            return Err(NetError::Conflict(format!("network with name {} already exists", req.name)));
        }
        let id = NetworkId::random();
        let mut options = req.options.clone();
        if let Some(b) = options.get(OPT_BRIDGE_NAME)
            && nets.iter().any(|n| bridge_name(n) == *b)
        {
            return Err(NetError::Conflict(format!("bridge name {b} is already used by another network")));
        }
        if let Some(m) = options.remove("mtu") {
            options.insert(OPT_MTU.into(), m);
        }
        let host = self.host_conflicts().await?;
        let taken = Self::taken(&nets, None);
        let subnet = match req.subnet.as_deref() {
            Some(s) => {
                let net: Ipv4Net = s.parse()?;
                ipam::check_subnet(net, &taken, &host)?;
                net
            }
            None => ipam::pick_subnet(&ipam::default_local_pools(), &taken, &host)?,
        };
        let range = req.ip_range.as_deref().map(str::parse::<Ipv4Net>).transpose()?;
        let gateway = req
            .gateway
            .as_deref()
            .map(|g| {
                g.parse::<Ipv4Addr>()
                    .map_err(|_| NetError::BadRequest(format!("invalid gateway {g:?}: not an IPv4 address")))
            })
            .transpose()?;
        let s = Space::new(subnet, range, gateway)?;
        let rec = NetworkRecord {
            id,
            name: req.name,
            driver: Driver::Bridge,
            scope: Scope::Local,
            created: jiff::Timestamp::now().to_string(),
            predefined: false,
            internal: req.internal,
            attachable: req.attachable,
            ingress: false,
            enable_ipv6: false,
            ipam_driver: "default".into(),
            ipam: vec![IpamPool {
                subnet: subnet.to_string(),
                ip_range: range.map(|r| r.to_string()),
                gateway: Some(s.gateway.to_string()),
            }],
            options,
            labels: req.labels,
        };
        self.store.insert_network(&rec)?;
        let made = match self.ensure_bridge(&rec).await {
            Ok(_) => self.sync_firewall().await,
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            // Nothing half-made: the device (if it became ours) and the record go.
            if link::lookup(&self.nl, &bridge_name(&rec)).await.ok().flatten().and_then(|(_, a)| a)
                == Some(format!("{OWNER_PREFIX}{}", rec.id))
            {
                let _ = link::delete(&self.nl, &bridge_name(&rec)).await;
            }
            let _ = self.store.remove_network(&rec.id);
            let _ = self.sync_firewall().await;
            return Err(e);
        }
        drop(_g);
        tracing::info!(network = %rec.name, id = %rec.id.short(), %subnet, bridge = %bridge_name(&rec), "network created");
        Ok(rec)
    }

    /// Removes a network that no container is attached to.
    pub async fn remove(&self, n: &NetworkRecord) -> Result<(), NetError> {
        let _g = self.lock.lock().await;
        let users: Vec<String> = self
            .store
            .all::<ContainerRecord>()?
            .into_iter()
            .filter(|c| c.endpoints.iter().any(|e| e.network == n.id))
            .map(|c| c.name)
            .collect();
        if !users.is_empty() {
            return Err(NetError::Forbidden(format!(
                "error while removing network: network {} id {} has active endpoints ({})",
                n.name,
                n.id,
                users.join(", ")
            )));
        }
        self.store.remove_network(&n.id)?;
        if n.driver == Driver::Bridge {
            link::delete(&self.nl, &bridge_name(n)).await?;
        }
        drop(_g);
        self.sync_firewall().await
    }

    /// Allocates endpoints for `reqs` (creation or connect). `others` are all
    /// containers (their endpoints hold addresses); `current` the container's
    /// own endpoints so far. Call under [`Networks::locked`].
    pub fn allocate(
        &self,
        reqs: &[NetworkRequest],
        current: &[Endpoint],
        others: &[ContainerRecord],
    ) -> Result<Vec<Endpoint>, NetError> {
        let nets = self.store.networks()?;
        let mut out: Vec<Endpoint> = Vec::new();
        for r in reqs {
            let n = resolve(&nets, &r.network)?;
            match n.driver {
                Driver::Bridge => {}
                Driver::Host | Driver::Null => {
                    return Err(NetError::BadRequest(format!(
                        "container cannot be connected to network {} together with others (driver {})",
                        n.name,
                        n.driver.as_str()
                    )));
                }
                Driver::Overlay => {
                    return Err(NetError::BadRequest(format!(
                        "network {}: overlay networks are not implemented yet",
                        n.name
                    )));
                }
            }
            if current.iter().chain(&out).any(|e| e.network == n.id) {
                return Err(NetError::Forbidden(format!(
                    "endpoint with name {} already exists in network {}",
                    "container", n.name
                )));
            }
            if r.ip.is_some() && n.ipam.first().is_none_or(|p| p.subnet.is_empty()) {
                return Err(NetError::BadRequest(
                    "user specified IP address is supported only on networks with a subnet".into(),
                ));
            }
            if r.ip.is_some() && n.predefined {
                return Err(NetError::BadRequest(
                    "user specified IP address is supported on user defined networks only".into(),
                ));
            }
            let s = space(n)?;
            let used: BTreeSet<Ipv4Addr> = others
                .iter()
                .flat_map(|c| c.endpoints.iter())
                .chain(current)
                .chain(&out)
                .filter(|e| e.network == n.id)
                .map(|e| e.ip)
                .collect();
            let ip = match r.ip {
                Some(a) => s.claim(a, &used)?,
                None => s.pick(&used)?,
            };
            let taken_if: BTreeSet<String> = current.iter().chain(&out).map(|e| e.ifname.clone()).collect();
            let ifname = (0..).map(|i| format!("eth{i}")).find(|n| !taken_if.contains(n)).unwrap_or_default();
            out.push(Endpoint {
                id: crate::ids::random_hex(),
                network: n.id.clone(),
                network_name: n.name.clone(),
                ip,
                prefix: s.subnet.prefix(),
                gateway: s.gateway,
                mac: ipam::mac_string(ipam::mac_for(ip)),
                ifname,
                aliases: r.aliases.clone(),
                static_ip: r.ip.is_some(),
            });
        }
        Ok(out)
    }

    /// The MAC of network `id`'s bridge (the gateway its containers use),
    /// if the bridge exists.
    pub async fn bridge_mac(&self, id: &NetworkId) -> Option<[u8; 6]> {
        let n = self.store.network(id).ok()??;
        let index = link::index_of(&self.nl, &bridge_name(&n)).await.ok()??;
        link::mac_of(&self.nl, index).await.ok()?
    }

    /// From now on, every veth plumbed gets the load balancer.
    pub fn set_lb(&self, lb: Arc<crate::lb::Lb>) {
        let _ = self.lb.set(lb);
    }

    /// Holds the allocation lock (container create/connect/disconnect).
    pub async fn locked(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// Plumbs endpoints into the namespace of `pid`; `default_route` gives
    /// the first one the default route.
    pub async fn plumb(&self, pid: i32, eps: &[Endpoint], default_route: bool) -> Result<(), NetError> {
        if eps.is_empty() {
            return Ok(());
        }
        let nets = self.store.networks()?;
        let (inner, ns) = link::handle_in(pid)?;
        for (i, e) in eps.iter().enumerate() {
            let n = nets
                .iter()
                .find(|n| n.id == e.network)
                .ok_or_else(|| NetError::NotFound(format!("network {} not found", e.network_name)))?;
            let bridge_index = self.ensure_bridge(n).await?;
            let mut mac = [0u8; 6];
            for (m, part) in mac.iter_mut().zip(e.mac.split(':')) {
                *m = u8::from_str_radix(part, 16).unwrap_or(0);
            }
            let plan = link::VethPlan {
                host: e.host_ifname(),
                ifname: e.ifname.clone(),
                bridge_index,
                mac,
                mtu: mtu(n),
                alias: format!("{OWNER_PREFIX}{}", n.id),
                ip: e.ip,
                prefix: e.prefix,
                default_via: (i == 0 && default_route).then_some(e.gateway),
            };
            link::attach(&self.nl, &inner, &ns, &plan).await?;
            if let Some(lb) = self.lb.get() {
                // Off the start path: a TCX attach waits for an RCU grace
                // period (~9 ms here, BENCHMARKS.md), and the container's
                // own connections are balanced by the cgroup programs
                // anyway; the veth's program serves replies of flows this
                // container backs, which a service adds only later.
                let gw_mac = link::mac_of(&self.nl, bridge_index).await?;
                let (lb, host) = (lb.clone(), plan.host.clone());
                tokio::task::spawn_blocking(move || lb.attach(&host, gw_mac));
            }
        }
        Ok(())
    }

    /// Removes an endpoint's interface from the namespace of `pid`.
    pub async fn unplumb(&self, pid: i32, e: &Endpoint) -> Result<(), NetError> {
        let (inner, _ns) = link::handle_in(pid)?;
        link::delete(&inner, &e.ifname).await
    }

    /// Host ports for a container about to run, checked against the other
    /// running containers and the node's sockets.
    pub fn ports_for(&self, c: &ContainerRecord, all: &[ContainerRecord]) -> Result<Vec<PortMapping>, NetError> {
        let busy: Vec<PortMapping> = all
            .iter()
            .filter(|o| o.id != c.id && o.state.status == Status::Running)
            .flat_map(|o| o.state.ports.iter().cloned())
            .collect();
        choose_ports(&c.spec.ports, &busy, &ports::socket_free).map_err(NetError::Conflict)
    }

    /// Renders the firewall from the store and applies it if it changed.
    pub async fn sync_firewall(&self) -> Result<(), NetError> {
        let nets = self.store.networks()?;
        let containers = self.store.all::<ContainerRecord>()?;
        let rules = ruleset(&nets, &containers);
        let text = firewall::render(&rules);
        let mut last = self.fw_last.lock().await;
        if last.as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        let t2 = text.clone();
        tokio::task::spawn_blocking(move || firewall::apply(&t2))
            .await
            .map_err(|e| NetError::Kernel(format!("firewall task: {e}")))??;
        *last = Some(text);
        tracing::debug!(bridges = rules.bridges.len(), published = rules.publish.len(), "firewall updated");
        Ok(())
    }
}

/// Finds a network as dockerd does: full id, then exact name, then a unique
/// id prefix.
pub fn resolve<'a>(nets: &'a [NetworkRecord], key: &str) -> Result<&'a NetworkRecord, NetError> {
    if let Some(n) = nets.iter().find(|n| n.id.as_str() == key) {
        return Ok(n);
    }
    if let Some(n) = nets.iter().find(|n| n.name == key) {
        return Ok(n);
    }
    let by_prefix: Vec<_> = nets.iter().filter(|n| !key.is_empty() && n.id.as_str().starts_with(key)).collect();
    match by_prefix.as_slice() {
        [one] => Ok(one),
        [] => Err(NetError::NotFound(format!("network {key} not found"))),
        many => Err(NetError::BadRequest(format!(
            "network {key} is ambiguous ({} matches found based on ID prefix)",
            many.len()
        ))),
    }
}

/// The firewall table the store asks for (pure).
pub fn ruleset(nets: &[NetworkRecord], containers: &[ContainerRecord]) -> Ruleset {
    let mut bridges = Vec::new();
    let mut by_id = BTreeMap::new();
    for n in nets.iter().filter(|n| n.driver == Driver::Bridge) {
        let Some(subnet) = n.ipam.first().and_then(|p| p.subnet.parse().ok()) else { continue };
        by_id.insert(n.id.clone(), (bridge_name(n), n.internal));
        bridges.push(BridgeRules { bridge: bridge_name(n), subnet, internal: n.internal });
    }
    let mut publish = Vec::new();
    for c in containers.iter().filter(|c| c.state.status == Status::Running) {
        // Published ports go to the first non-internal network's address.
        let Some((e, bridge)) = c.endpoints.iter().find_map(|e| match by_id.get(&e.network) {
            Some((b, false)) => Some((e, b.clone())),
            _ => None,
        }) else {
            continue;
        };
        for p in &c.state.ports {
            publish.push(Publish {
                proto: p.proto,
                host_ip: p.host_ip,
                host_port: p.host_port,
                bridge: bridge.clone(),
                container_ip: e.ip,
                container_port: p.container_port,
            });
        }
    }
    Ruleset { bridges, publish }
}
