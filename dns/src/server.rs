//! Where the resolver listens: 127.0.0.11:53, UDP and TCP, inside a
//! container's network namespace. The sockets are opened there by a
//! short-lived thread (a socket keeps the namespace it was created in) and
//! served from the caller's tokio runtime, so one process serves every
//! container. Dropping the [`Served`] closes them.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_server::server::Server;

use crate::DnsError;
use crate::handler::Resolver;

/// The embedded resolver's address, as Docker's.
pub const ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);

/// A TCP client that sends nothing is dropped after this long.
const TCP_IDLE: Duration = Duration::from_secs(5);

/// One container's sockets being served.
pub struct Served {
    server: Server<Resolver>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Served")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // Stops the accept loops; dropping the server aborts the rest.
        self.server.shutdown_token().cancel();
    }
}

/// Binds `addr` (UDP and TCP) inside the network namespace `ns` (an open
/// `/proc/<pid>/ns/net`).
pub fn bind_in(ns: &std::fs::File, addr: SocketAddr) -> Result<(std::net::UdpSocket, std::net::TcpListener), DnsError> {
    let ns = ns.try_clone().map_err(|e| DnsError::Socket(format!("namespace file: {e}")))?;
    std::thread::spawn(move || -> std::io::Result<_> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        let udp = std::net::UdpSocket::bind(addr)?;
        let tcp = std::net::TcpListener::bind(addr)?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        Ok((udp, tcp))
    })
    .join()
    .map_err(|_| DnsError::Socket("namespace thread panicked".into()))?
    .map_err(|e| DnsError::Socket(format!("bind {addr} in the container's namespace: {e}")))
}

/// Serves `resolver` on bound sockets (non-blocking, from [`bind_in`]).
/// Needs a tokio runtime.
pub fn serve(resolver: Resolver, udp: std::net::UdpSocket, tcp: std::net::TcpListener) -> Result<Served, DnsError> {
    let udp = tokio::net::UdpSocket::from_std(udp).map_err(|e| DnsError::Socket(e.to_string()))?;
    let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|e| DnsError::Socket(e.to_string()))?;
    let mut server = Server::new(resolver);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, 64);
    Ok(Served { server })
}
