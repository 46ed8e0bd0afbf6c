//! The embedded DNS in netd: builds the `dns` crate's records from the
//! store (a pure function, [`build`]) and keeps one server per running
//! container on a user-defined network, listening at 127.0.0.11:53 inside
//! its namespace. The runtime calls [`EmbeddedDns::open`] while a new
//! container waits to run (so its first lookup finds the server) and
//! [`EmbeddedDns::refresh`] after every state change (records swapped
//! whole; servers of exited containers closed, those of re-adopted or
//! newly connected ones opened).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::DnsConfig;
use crate::ids::ContainerId;
use crate::model::NetworkRecord;
use crate::runtime::container::{ContainerRecord, Status};
use crate::runtime::spec::NetworkMode;

/// The pre-defined bridge network: its containers use the node's
/// resolvers, as Docker's default bridge does.
pub const DEFAULT_BRIDGE: &str = "bridge";

/// Whether a container is served by the embedded DNS: on at least one
/// user-defined network.
pub fn uses_embedded_dns(c: &ContainerRecord) -> bool {
    c.spec.network == NetworkMode::Bridge && c.endpoints.iter().any(|e| e.network_name != DEFAULT_BRIDGE)
}

/// `nameserver` lines of a resolv.conf.
pub fn nameservers(resolv: &str) -> Vec<IpAddr> {
    resolv
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()?.parse().ok()).flatten()
        })
        .collect()
}

/// Where a container's other queries go: `--dns`, else the node's
/// resolvers (loopback ones too: netd forwards from the node's namespace).
pub fn upstreams(c: &ContainerRecord, host_resolv: &str) -> Vec<SocketAddr> {
    let mut ips = if c.spec.dns.is_empty() { nameservers(host_resolv) } else { c.spec.dns.clone() };
    if ips.is_empty() {
        // As Docker: public resolvers when the node has none.
        ips = vec![IpAddr::from([8, 8, 8, 8]), IpAddr::from([8, 8, 4, 4])];
    }
    ips.into_iter().take(dns::forward::MAX_UPSTREAMS).map(|ip| SocketAddr::new(ip, 53)).collect()
}

/// Whether subnet `net`/`len` holds `a`.
fn holds(net: IpAddr, len: u8, a: std::net::Ipv4Addr) -> bool {
    match net {
        IpAddr::V4(n) if len <= 32 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        _ => false,
    }
}

fn subnet(s: &str) -> Option<(IpAddr, u8)> {
    let (a, l) = s.split_once('/')?;
    let (a, l): (IpAddr, u8) = (a.parse().ok()?, l.parse().ok()?);
    (l <= if a.is_ipv4() { 32 } else { 128 }).then_some((a, l))
}

/// The records for the current store: user-defined networks, running
/// containers' endpoints on them, and a view per running container.
/// `starting`: a container about to run its command, counted as running
/// (its first lookups come before its record says so).
pub fn build(
    ttl: u32,
    serial: u32,
    nets: &[NetworkRecord],
    containers: &[ContainerRecord],
    services: &[crate::lb::ServiceRecord],
    host_resolv: &str,
    starting: Option<&ContainerId>,
) -> dns::Db {
    let mut db = dns::Db::new(ttl, serial);
    let user_nets: Vec<(&NetworkRecord, Vec<(IpAddr, u8)>)> = nets
        .iter()
        .filter(|n| !n.predefined)
        .map(|n| (n, n.ipam.iter().filter_map(|p| subnet(&p.subnet)).collect()))
        .collect();
    for (n, subnets) in &user_nets {
        db.add_network(dns::Network {
            id: dns::NetKey(n.id.as_str().to_owned()),
            name: n.name.clone(),
            subnets: subnets.clone(),
            internal: n.internal,
        });
    }
    // Load-balanced services answer by name (VIP mode) on the network
    // whose subnet holds their VIP, as a swarm service's name answers its
    // VIP on the service's network.
    for svc in services {
        let Some((n, _)) = user_nets.iter().find(|(_, subs)| subs.iter().any(|(a, l)| holds(*a, *l, svc.vip))) else {
            continue;
        };
        db.add_service(dns::Service {
            name: svc.name.clone(),
            network: dns::NetKey(n.id.as_str().to_owned()),
            vip: Some(IpAddr::V4(svc.vip)),
            tasks: Vec::new(),
            ports: svc
                .ports
                .iter()
                .map(|p| dns::ServicePort {
                    name: None,
                    port: p.port,
                    proto: match p.protocol {
                        crate::lb::Protocol::Tcp => dns::Proto::Tcp,
                        crate::lb::Protocol::Udp => dns::Proto::Udp,
                    },
                })
                .collect(),
        });
    }
    let live = |c: &&ContainerRecord| c.state.status == Status::Running || Some(&c.id) == starting;
    for c in containers.iter().filter(live).filter(|c| uses_embedded_dns(c)) {
        let mut view = dns::View { networks: Vec::new(), upstreams: upstreams(c, host_resolv) };
        for e in c.endpoints.iter().filter(|e| e.network_name != DEFAULT_BRIDGE) {
            let key = dns::NetKey(e.network.as_str().to_owned());
            db.add_endpoint(&dns::Endpoint {
                network: key.clone(),
                container: dns::ViewId(c.id.as_str().to_owned()),
                name: c.name.clone(),
                aliases: e.aliases.clone(),
                ipv4: Some(e.ip),
                ipv6: None,
            });
            view.networks.push(key);
        }
        db.set_view(dns::ViewId(c.id.as_str().to_owned()), view);
    }
    db
}

/// The resolver and its per-container servers.
pub struct EmbeddedDns {
    shared: Arc<dns::Shared>,
    ttl: u32,
    serial: AtomicU32,
    /// Container -> (pid whose namespace the sockets are in, server).
    served: Mutex<HashMap<ContainerId, (i32, dns::Served)>>,
    /// Opened for a container whose record does not say running yet.
    pending: Mutex<std::collections::HashSet<ContainerId>>,
}

impl std::fmt::Debug for EmbeddedDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedDns").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

fn alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

impl EmbeddedDns {
    pub fn new(cfg: &DnsConfig) -> Arc<EmbeddedDns> {
        let fwd = dns::Forwarder::new(cfg.max_inflight, cfg.upstream_timeout);
        Arc::new(EmbeddedDns {
            shared: dns::Shared::new(dns::Db::new(cfg.ttl, 0), fwd),
            ttl: cfg.ttl,
            serial: AtomicU32::new(0),
            served: Mutex::new(HashMap::new()),
            pending: Mutex::new(Default::default()),
        })
    }

    /// Opens 127.0.0.11:53 in the namespace of `pid` for container `id`
    /// (replacing sockets in an older namespace). Needs a tokio runtime.
    pub fn open(&self, id: &ContainerId, pid: i32) -> Result<(), dns::DnsError> {
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        if served.get(id).is_some_and(|(p, _)| *p == pid) {
            return Ok(());
        }
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
            .map_err(|e| dns::DnsError::Socket(format!("network namespace of process {pid}: {e}")))?;
        let (udp, tcp) = dns::bind_in(&ns, dns::ADDR)?;
        let resolver = dns::Resolver { view: dns::ViewId(id.as_str().to_owned()), shared: self.shared.clone() };
        served.insert(id.clone(), (pid, dns::serve(resolver, udp, tcp)?));
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone());
        tracing::debug!(container = %id.short(), pid, "embedded DNS listening");
        Ok(())
    }

    /// Rebuilds the records from `nets` and `containers`; closes servers of
    /// containers that are gone or stopped, opens missing ones for running
    /// containers (after a netd restart, or a `network connect`).
    pub fn refresh(
        &self,
        nets: &[NetworkRecord],
        containers: &[ContainerRecord],
        services: &[crate::lb::ServiceRecord],
    ) {
        self.refresh_starting(nets, containers, services, None);
    }

    /// [`EmbeddedDns::refresh`], counting `starting` as running: called
    /// before a container's command runs, so its first lookup finds its
    /// view (and its own names).
    pub fn refresh_starting(
        &self,
        nets: &[NetworkRecord],
        containers: &[ContainerRecord],
        services: &[crate::lb::ServiceRecord],
        starting: Option<&ContainerId>,
    ) {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        self.shared.swap(build(self.ttl, serial, nets, containers, services, &host, starting));
        if starting.is_some() {
            return;
        }
        let by_id: HashMap<&ContainerId, &ContainerRecord> = containers.iter().map(|c| (&c.id, c)).collect();
        {
            let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            served.retain(|id, (pid, _)| {
                let keep = match by_id.get(id) {
                    Some(c) if c.state.status == Status::Running => {
                        pending.remove(id);
                        c.state.pid == *pid && uses_embedded_dns(c)
                    }
                    // Opened while starting: kept until the start is over
                    // (its process gone means it failed).
                    Some(_) => pending.contains(id) && alive(*pid),
                    None => false,
                };
                if !keep {
                    pending.remove(id);
                }
                keep
            });
        }
        for c in containers {
            if c.state.status == Status::Running
                && uses_embedded_dns(c)
                && let Err(e) = self.open(&c.id, c.state.pid)
            {
                tracing::warn!(container = %c.name, error = %e, "cannot serve the embedded DNS");
            }
        }
    }
}

/// The container's `/etc/resolv.conf`, as Docker writes it: on user-defined
/// networks the embedded DNS with `ndots:0` and the node's search domains
/// (or `--dns-search`/`--dns-option`); on the default bridge the node's
/// non-loopback resolvers (or `--dns`); host and none: the node's file.
pub fn resolv_conf(c: &ContainerRecord, host: &str) -> String {
    if c.spec.network != NetworkMode::Bridge {
        return host.to_owned();
    }
    let mut search: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    for line in host.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("search") | Some("domain") => search = w.map(str::to_owned).collect(),
            Some("options") => options.extend(w.map(str::to_owned)),
            _ => {}
        }
    }
    if !c.spec.dns_search.is_empty() {
        search = c.spec.dns_search.clone();
    }
    if !c.spec.dns_options.is_empty() {
        options = c.spec.dns_options.clone();
    }
    let mut out = String::new();
    if uses_embedded_dns(c) {
        out.push_str("# Generated by netd: the embedded DNS answers container names and forwards the rest.\n");
        let ext: Vec<String> = upstreams(c, host).iter().map(|s| s.ip().to_string()).collect();
        out.push_str(&format!("# ExtServers: [{}]\n", ext.join(" ")));
        out.push_str("nameserver 127.0.0.11\n");
        if !options.iter().any(|o| o.starts_with("ndots:")) {
            options.insert(0, "ndots:0".into());
        }
    } else {
        let servers: Vec<IpAddr> = if c.spec.dns.is_empty() {
            nameservers(host).into_iter().filter(|a| !a.is_loopback()).collect()
        } else {
            c.spec.dns.clone()
        };
        if servers.is_empty() {
            out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        }
        for s in servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ImageId, NetworkId};
    use crate::model::Endpoint;

    fn ep(net: &NetworkId, name: &str, ip: [u8; 4]) -> Endpoint {
        Endpoint {
            id: crate::ids::random_hex(),
            network: net.clone(),
            network_name: name.into(),
            ip: ip.into(),
            prefix: 16,
            gateway: [ip[0], ip[1], 0, 1].into(),
            mac: String::new(),
            ifname: "eth0".into(),
            aliases: vec!["alias".into()],
            static_ip: false,
        }
    }

    fn container(name: &str, eps: Vec<Endpoint>, running: bool) -> ContainerRecord {
        let mut c = ContainerRecord {
            id: ContainerId::random(),
            name: name.into(),
            created: String::new(),
            image: "busybox".into(),
            image_id: ImageId::random(),
            spec: Default::default(),
            args: vec![],
            env: vec![],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            hostname: name.into(),
            mounts: vec![],
            endpoints: eps,
            state: Default::default(),
        };
        c.spec.network = NetworkMode::Bridge;
        if running {
            c.state.status = Status::Running;
            c.state.pid = 1;
        }
        c
    }

    const HOST: &str = "nameserver 127.0.0.53\nnameserver 10.9.9.9\nsearch corp.example\noptions edns0\n";

    #[test]
    fn resolv_conf_points_user_networks_at_the_embedded_dns() {
        let (front, bridge) = (NetworkId::random(), NetworkId::random());
        let user = container("web", vec![ep(&front, "front", [172, 18, 0, 2])], true);
        let r = resolv_conf(&user, HOST);
        assert!(r.contains("nameserver 127.0.0.11\n"), "{r}");
        assert!(!r.contains("nameserver 10.9.9.9"), "{r}");
        assert!(r.contains("search corp.example\n") && r.contains("options ndots:0 edns0\n"), "{r}");
        let default = container("old", vec![ep(&bridge, DEFAULT_BRIDGE, [172, 17, 0, 2])], true);
        let r = resolv_conf(&default, HOST);
        assert!(
            r.contains("nameserver 10.9.9.9\n") && !r.contains("127.0.0"),
            "default bridge: the node's non-loopback resolvers: {r}"
        );
        let mut custom = default.clone();
        custom.spec.dns = vec!["192.0.2.53".parse().unwrap()];
        custom.spec.dns_options = vec!["ndots:3".into()];
        let r = resolv_conf(&custom, HOST);
        assert!(
            r.contains("nameserver 192.0.2.53\n") && r.contains("options ndots:3\n") && !r.contains("10.9.9.9"),
            "{r}"
        );
    }

    #[test]
    fn records_hold_running_containers_on_user_networks_only() {
        let front = NetworkId::random();
        let net = NetworkRecord {
            id: front.clone(),
            name: "front".into(),
            internal: false,
            ..NetworkRecord::predefined_set("now").remove(0)
        };
        let net = NetworkRecord {
            predefined: false,
            ipam: vec![crate::model::IpamPool { subnet: "172.18.0.0/16".into(), ..Default::default() }],
            ..net
        };
        let up = container("up", vec![ep(&front, "front", [172, 18, 0, 2])], true);
        let down = container("down", vec![ep(&front, "front", [172, 18, 0, 3])], false);
        let web: crate::lb::ServiceRecord = serde_json::from_str(
            r#"{"Name":"web","VIP":"172.18.0.250","Ports":[{"Port":80}],"Backends":[{"Addr":"172.18.0.2"}]}"#,
        )
        .unwrap();
        let mut elsewhere = web.clone();
        elsewhere.name = "far".into();
        elsewhere.vip = "10.99.0.1".parse().unwrap();
        let db = build(5, 1, std::slice::from_ref(&net), &[up.clone(), down.clone()], &[web, elsewhere], HOST, None);
        let me = dns::ViewId(up.id.as_str().to_owned());
        assert_eq!(db.lookup(&me, "up", dns::Kind::A), dns::Lookup::Addresses(vec!["172.18.0.2".parse().unwrap()]));
        assert_eq!(
            db.lookup(&me, "alias.front", dns::Kind::A),
            dns::Lookup::Addresses(vec!["172.18.0.2".parse().unwrap()])
        );
        assert_eq!(db.lookup(&me, "down.front", dns::Kind::A), dns::Lookup::NxDomain { zone: "front".into() });
        // A load-balanced service answers its VIP on the network holding it;
        // one whose VIP is in no network's subnet has no name.
        assert_eq!(db.lookup(&me, "web", dns::Kind::A), dns::Lookup::Addresses(vec!["172.18.0.250".parse().unwrap()]));
        assert!(!matches!(db.lookup(&me, "far.front", dns::Kind::A), dns::Lookup::Addresses(_)));
        assert_eq!(db.view(&me).unwrap().upstreams, ["127.0.0.53:53".parse().unwrap(), "10.9.9.9:53".parse().unwrap()]);
        assert!(db.view(&dns::ViewId(down.id.as_str().to_owned())).is_none(), "stopped containers have no view");
        // One being started counts as running.
        let db = build(5, 2, &[net], &[up.clone(), down.clone()], &[], "", Some(&down.id));
        let it = dns::ViewId(down.id.as_str().to_owned());
        assert_eq!(db.lookup(&it, "down", dns::Kind::A), dns::Lookup::Addresses(vec!["172.18.0.3".parse().unwrap()]));
        assert_eq!(
            db.view(&it).unwrap().upstreams,
            ["8.8.8.8:53".parse().unwrap(), "8.8.4.4:53".parse().unwrap()],
            "no node resolvers: Docker's fallback"
        );
    }
}
