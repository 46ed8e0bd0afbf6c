//! Host port choice for `-p`/`-P`, pure apart from the probe it is given:
//! fixed ports and ranges take the first free port, `-p containerPort` and
//! `-P` take ports from the ephemeral range 49153-65535 (Docker's). A port is
//! busy if a running container publishes it on an overlapping address or a
//! socket of the node holds it.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use crate::firewall::Proto;
use crate::model::PortMapping;
use crate::runtime::netspec::PortRequest;

/// Where `-P` and `-p containerPort` ports come from.
pub const EPHEMERAL: RangeInclusive<u16> = 49153..=65535;

fn overlaps(a: Option<Ipv4Addr>, b: Option<Ipv4Addr>) -> bool {
    a.is_none() || b.is_none() || a == b
}

/// Picks a host port for every request. `free` probes the node's sockets.
pub fn choose_ports(
    reqs: &[PortRequest],
    busy: &[PortMapping],
    free: &dyn Fn(Proto, Option<Ipv4Addr>, u16) -> bool,
) -> Result<Vec<PortMapping>, String> {
    let mut out: Vec<PortMapping> = Vec::new();
    for r in reqs {
        let range = match r.host_ports {
            (0, 0) => EPHEMERAL,
            (a, b) => a..=b,
        };
        let taken = |p: u16, out: &[PortMapping]| {
            busy.iter().chain(out).any(|m| m.proto == r.proto && m.host_port == p && overlaps(m.host_ip, r.host_ip))
        };
        let Some(port) = range.clone().find(|p| !taken(*p, &out) && free(r.proto, r.host_ip, *p)) else {
            let ip = r.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let ports = if range.start() == range.end() {
                range.start().to_string()
            } else {
                format!("{}-{}", range.start(), range.end())
            };
            return Err(format!("Bind for {ip}:{ports}/{} failed: port is already allocated", r.proto.as_str()));
        };
        out.push(PortMapping { proto: r.proto, container_port: r.container_port, host_ip: r.host_ip, host_port: port });
    }
    Ok(out)
}

/// Whether the node has no socket on `ip:port` (binds and closes one).
pub fn socket_free(proto: Proto, ip: Option<Ipv4Addr>, port: u16) -> bool {
    let addr = (ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port);
    match proto {
        Proto::Tcp => std::net::TcpListener::bind(addr).is_ok(),
        Proto::Udp => std::net::UdpSocket::bind(addr).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(port: u16, hosts: (u16, u16), ip: Option<Ipv4Addr>) -> PortRequest {
        PortRequest { proto: Proto::Tcp, container_port: port, host_ip: ip, host_ports: hosts }
    }

    #[test]
    fn ports_avoid_busy_ones() {
        let busy = vec![PortMapping { proto: Proto::Tcp, container_port: 80, host_ip: None, host_port: 8080 }];
        let all_free = |_: Proto, _: Option<Ipv4Addr>, _: u16| true;
        let e = choose_ports(&[req(80, (8080, 8080), None)], &busy, &all_free).unwrap_err();
        assert_eq!(e, "Bind for 0.0.0.0:8080/tcp failed: port is already allocated");
        // Same port, other protocol: fine.
        let udp = PortRequest { proto: Proto::Udp, ..req(80, (8080, 8080), None) };
        assert_eq!(choose_ports(&[udp], &busy, &all_free).unwrap()[0].host_port, 8080);
        // A range takes the next free port; two requests do not collide.
        let got = choose_ports(&[req(80, (8080, 8082), None), req(81, (8080, 8082), None)], &busy, &all_free).unwrap();
        assert_eq!(got.iter().map(|m| m.host_port).collect::<Vec<_>>(), [8081, 8082]);
        // Random ports come from the ephemeral range and skip what the node holds.
        let node_holds_first = |_: Proto, _: Option<Ipv4Addr>, p: u16| p != 49153;
        let got = choose_ports(&[req(80, (0, 0), None)], &busy, &node_holds_first).unwrap();
        assert_eq!(got[0].host_port, 49154);
        assert!(choose_ports(&[req(80, (9000, 9000), None)], &[], &|_, _, _| false).is_err());
    }
}
