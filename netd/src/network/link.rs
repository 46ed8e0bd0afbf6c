//! Kernel side of the bridge driver, all rtnetlink in-process: bridges with
//! their gateway address, veth pairs whose container end is created directly
//! inside the container's network namespace, and that end's address and
//! routes, set through a netlink socket opened inside that namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkMessage};
pub use rtnetlink::Handle;
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::NetError;

fn nl<'a>(op: &'static str, name: &'a str) -> impl FnOnce(rtnetlink::Error) -> NetError + 'a {
    move |e| NetError::Kernel(format!("netlink {op} {name}: {e}"))
}

fn is_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EEXIST)
}

/// The index and alias of link `name`, if it exists.
pub async fn lookup(h: &Handle, name: &str) -> Result<Option<(u32, Option<String>)>, NetError> {
    let mut s = h.link().get().match_name(name.to_owned()).execute();
    match s.try_next().await {
        Ok(Some(m)) => {
            let alias = m.attributes.iter().find_map(|a| match a {
                netlink_packet_route::link::LinkAttribute::IfAlias(a) => Some(a.clone()),
                _ => None,
            });
            Ok(Some((m.header.index, alias)))
        }
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(nl("get", name)(e)),
    }
}

/// The hardware address of link `index`.
pub async fn mac_of(h: &Handle, index: u32) -> Result<Option<[u8; 6]>, NetError> {
    let mut s = h.link().get().match_index(index).execute();
    let m = s.try_next().await.map_err(nl("get", "link"))?;
    Ok(m.and_then(|m| {
        m.attributes.iter().find_map(|a| match a {
            netlink_packet_route::link::LinkAttribute::Address(a) => <[u8; 6]>::try_from(a.as_slice()).ok(),
            _ => None,
        })
    }))
}

/// The index of link `name`, if it exists.
pub async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    Ok(lookup(h, name).await?.map(|(i, _)| i))
}

async fn set_alias(h: &Handle, index: u32, name: &str, alias: &str) -> Result<(), NetError> {
    let msg: LinkMessage = LinkUnspec::new_with_index(index).alias(alias).build();
    h.link().set(msg).execute().await.map_err(nl("set alias", name))
}

/// Creates (or completes) a bridge with its gateway address, up, marked with
/// `alias`; returns its index. Idempotent. A device of that name that is not
/// marked with `alias` is someone else's: refused, never touched.
pub async fn ensure_bridge(
    h: &Handle,
    name: &str,
    alias: &str,
    gateway: Ipv4Addr,
    prefix: u8,
    mtu: u32,
) -> Result<u32, NetError> {
    // A bridge netd made but crashed before marking keeps its generated name.
    let generated = alias.rsplit(':').next().is_some_and(|id| id.len() >= 12 && name == format!("br-{}", &id[..12]));
    let index = match lookup(h, name).await? {
        Some((i, Some(a))) if a == alias => i,
        Some((i, None)) if generated => i,
        Some(_) => {
            return Err(NetError::Conflict(format!(
                "a device named {name} already exists and is not this network's bridge: choose another bridge name"
            )));
        }
        None => {
            let msg = LinkBridge::new(name).mtu(mtu).up().build();
            h.link().add(msg).execute().await.map_err(nl("create bridge", name))?;
            index_of(h, name).await?.ok_or_else(|| NetError::Kernel(format!("bridge {name} vanished")))?
        }
    };
    set_alias(h, index, name, alias).await?;
    let up: LinkMessage = LinkUnspec::new_with_index(index).up().build();
    h.link().set(up).execute().await.map_err(nl("set up", name))?;
    // Its MAC set explicitly (to what it is) stays fixed: a bridge left to
    // itself takes the lowest MAC of its ports, changing as containers come
    // and go (containers' ARP caches and the load balancer's ARP answers
    // name the gateway by it).
    if let Some(mac) = mac_of(h, index).await? {
        let set: LinkMessage = LinkUnspec::new_with_index(index).address(mac.to_vec()).build();
        h.link().set(set).execute().await.map_err(nl("fix the MAC of", name))?;
    }
    match h.address().add(index, IpAddr::V4(gateway), prefix).execute().await {
        Ok(()) => {}
        Err(e) if is_exists(&e) => {}
        Err(e) => return Err(nl("add gateway address to", name)(e)),
    }
    Ok(index)
}

/// Deletes a link by name (absent is fine).
pub async fn delete(h: &Handle, name: &str) -> Result<(), NetError> {
    if let Some(i) = index_of(h, name).await? {
        h.link().del(i).execute().await.map_err(nl("delete", name))?;
    }
    Ok(())
}

/// A netlink handle whose socket lives in the network namespace of `pid`:
/// a short-lived thread enters the namespace and opens it there (a socket
/// keeps the namespace it was created in).
pub fn handle_in(pid: i32) -> Result<(Handle, std::fs::File), NetError> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| NetError::Kernel(format!("container process {pid} has no network namespace: {e}")))?;
    handle_in_ns(ns, &pid.to_string())
}

/// [`handle_in`] for an open namespace file (`what` names it in errors).
pub fn handle_in_ns(ns: std::fs::File, what: &str) -> Result<(Handle, std::fs::File), NetError> {
    let ns2 = ns.try_clone().map_err(|e| NetError::Kernel(e.to_string()))?;
    let rt = tokio::runtime::Handle::current();
    let (conn, handle) = std::thread::spawn(move || -> std::io::Result<_> {
        nix::sched::setns(&ns2, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        let _g = rt.enter();
        let (conn, handle, _) = rtnetlink::new_connection()?;
        Ok((conn, handle))
    })
    .join()
    .map_err(|_| NetError::Kernel("netns thread panicked".into()))?
    .map_err(|e| NetError::Kernel(format!("netlink socket in the namespace of {what}: {e}")))?;
    tokio::spawn(conn);
    Ok((handle, ns))
}

/// What one endpoint needs in the kernel.
#[derive(Clone, Debug)]
pub struct VethPlan {
    pub host: String,
    pub ifname: String,
    pub bridge_index: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub alias: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// Install the default route through this gateway.
    pub default_via: Option<Ipv4Addr>,
}

/// Creates the veth pair (container end made inside the namespace `ns`, named
/// and addressed there), plugs the host end into its bridge and configures
/// the container end through `inner` (a handle inside that namespace).
pub async fn attach(h: &Handle, inner: &Handle, ns: &std::fs::File, p: &VethPlan) -> Result<(), NetError> {
    // The previous run's pair goes away with its namespace, asynchronously
    // in the kernel: a quick restart may still find its host end.
    delete(h, &p.host).await?;
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(p.ifname.clone())
        .setns_by_fd(ns.as_raw_fd())
        .address(p.mac.to_vec())
        .mtu(p.mtu)
        .build();
    let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(p.host.clone())
        .mtu(p.mtu)
        .controller(p.bridge_index)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .up()
        .build();
    h.link().add(msg).execute().await.map_err(nl("create veth", &p.host))?;
    let host_index =
        index_of(h, &p.host).await?.ok_or_else(|| NetError::Kernel(format!("veth {} vanished", p.host)))?;
    set_alias(h, host_index, &p.host, &p.alias).await?;
    let index = index_of(inner, &p.ifname)
        .await?
        .ok_or_else(|| NetError::Kernel(format!("{} not in the namespace", p.ifname)))?;
    inner.address().add(index, IpAddr::V4(p.ip), p.prefix).execute().await.map_err(nl("add address to", &p.ifname))?;
    for i in [Some(index), index_of(inner, "lo").await?].into_iter().flatten() {
        let up: LinkMessage = LinkUnspec::new_with_index(i).up().build();
        inner.link().set(up).execute().await.map_err(nl("set up", &p.ifname))?;
    }
    if let Some(gw) = p.default_via {
        let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build();
        match inner.route().add(route).execute().await {
            Ok(()) => {}
            Err(e) if is_exists(&e) => {}
            Err(e) => return Err(nl("add default route via", &p.ifname)(e)),
        }
    }
    Ok(())
}

/// Writes a sysctl of the namespace netd runs in (`net/ipv4/ip_forward`).
pub fn sysctl(path: &str, value: &str) -> Result<(), NetError> {
    let full = format!("/proc/sys/{path}");
    std::fs::write(&full, value).map_err(|e| NetError::Kernel(format!("cannot set {full} to {value}: {e}")))
}
