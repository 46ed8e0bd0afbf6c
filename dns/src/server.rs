//! Where the resolver listens: 127.0.0.11:53, UDP and TCP, inside a
//! container's network namespace. The sockets are opened there by a
//! short-lived thread (a socket keeps the namespace it was created in) and
//! served from the caller's tokio runtime, so one process serves every
//! container. Dropping the [`Served`] closes them.
//!
//! TCP is hickory-server's `Server`. UDP is a loop of our own around the
//! same handler: a query answered from the records is decoded, answered and
//! sent in place (hickory's UDP path spawns a task and hops through a
//! channel per query, a third of our cost in `bench dns`); only forwards,
//! which wait on upstreams, get a task of their own. All UDP loops run on
//! one dedicated thread with a single-threaded runtime (`netd-dns`): with
//! the daemon's multi-threaded runtime, every query woke a second worker
//! (a quarter of the CPU went to context switches in `perf`).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo, Server};
use hickory_server::zone_handler::MessageResponse;
use tokio::io::unix::AsyncFd;

use crate::DnsError;
use crate::batch::RecvBatch;
use crate::handler::{Decision, Resolver, encode_udp};

/// The embedded resolver's address, as Docker's.
pub const ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);

/// A TCP client that sends nothing is dropped after this long.
const TCP_IDLE: Duration = Duration::from_secs(5);

/// One container's sockets being served.
pub struct Served {
    server: Server<Resolver>,
    udp: tokio::task::JoinHandle<()>,
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
        self.udp.abort();
    }
}

/// Sends a (forwarded) answer back over the UDP socket.
#[derive(Clone)]
struct UdpReply {
    sock: Arc<AsyncFd<std::net::UdpSocket>>,
    to: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpReply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max = response.edns().map(|e| e.max_payload()).unwrap_or(512);
        let mut out = Vec::with_capacity(512);
        let mut enc = BinEncoder::new(&mut out);
        enc.set_max_size(max);
        let info = response.destructive_emit(&mut enc)?;
        loop {
            match self.sock.get_ref().send_to(&out, self.to) {
                Ok(_) => return Ok(info),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.sock.writable().await.map_err(|e| NetError::from(e.to_string()))?.clear_ready();
                }
                Err(e) => return Err(NetError::from(e.to_string())),
            }
        }
    }
}

/// FORMERR for a query whose header reads but whose body does not.
fn formerr(q: &[u8]) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[..2].copy_from_slice(&q[..2]);
    h[2] = 0x80 | (q[2] & 0x78);
    h[3] = 1;
    h
}

/// The runtime of the UDP loops: one thread, started on first use.
fn udp_runtime() -> Result<tokio::runtime::Handle, DnsError> {
    static RT: std::sync::OnceLock<Result<tokio::runtime::Handle, String>> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("netd-dns".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .map_err(|e| e.to_string())?;
        Ok(handle)
    })
    .clone()
    .map_err(|e| DnsError::Socket(format!("DNS runtime: {e}")))
}

async fn udp_loop(sock: std::net::UdpSocket, resolver: Resolver) {
    use std::os::fd::AsRawFd;
    // SAFETY: the socket is owned by the AsyncFd from here on: its fd stays
    // open and the same until the AsyncFd is dropped.
    let sock = match unsafe { AsyncFd::register(sock) } {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::warn!(error = %e, "embedded DNS: cannot serve a UDP socket");
            return;
        }
    };
    let fd = sock.as_raw_fd();
    let mut batch = RecvBatch::default();
    let mut out: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(crate::batch::BATCH);
    loop {
        let Ok(mut ready) = sock.readable().await else { return };
        let n = match batch.recv(fd) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                ready.clear_ready();
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "embedded DNS: UDP receive failed");
                drop(ready);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // A short batch drained the queue: wait for the next edge instead
        // of asking again (one system call less per wake-up). A datagram
        // that came in meanwhile raises a new edge, so nothing is missed.
        if n < crate::batch::BATCH {
            ready.clear_ready();
        }
        drop(ready);
        for i in 0..n {
            let (data, from) = batch.get(i);
            // Too short for a header, or a response (never answered: no
            // reflection), or from a port nobody can be answered on.
            let Some(from) = from.filter(|f| f.port() != 0) else { continue };
            if data.len() < 12 || data[2] & 0x80 != 0 {
                continue;
            }
            let req = match Request::from_bytes(data.to_vec(), from, Protocol::Udp) {
                Ok(r) => r,
                Err(_) => {
                    out.push((formerr(data).to_vec(), from));
                    continue;
                }
            };
            match resolver.decide(&req) {
                Decision::Reply(r) => out.push((encode_udp(&req, &r), from)),
                Decision::Forward => {
                    let (reply, res) = (UdpReply { sock: sock.clone(), to: from }, resolver.clone());
                    tokio::spawn(async move {
                        res.handle_request::<_, TokioTime>(&req, reply).await;
                    });
                }
            }
        }
        let mut sent = 0;
        while sent < out.len() {
            match crate::batch::send(fd, &out[sent..]) {
                Ok(k) => sent += k.max(1),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => match sock.writable().await {
                    Ok(mut w) => w.clear_ready(),
                    Err(_) => break,
                },
                Err(e) => {
                    // This destination refuses: skip it, send the rest.
                    tracing::debug!(to = %out[sent].1, error = %e, "embedded DNS: UDP send failed");
                    sent += 1;
                }
            }
        }
        out.clear();
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
    let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|e| DnsError::Socket(e.to_string()))?;
    let udp = udp_runtime()?.spawn(udp_loop(udp, resolver.clone()));
    let mut server = Server::new(resolver);
    server.register_listener(tcp, TCP_IDLE, 64);
    Ok(Served { server, udp })
}
