//! Where the resolver listens: 127.0.0.11:53, UDP and TCP, inside a
//! container's network namespace. The sockets are opened there by a
//! short-lived thread (a socket keeps the namespace it was created in) and
//! served by this process, so one netd serves every container. Dropping the
//! [`Served`] closes them.
//!
//! Both loops are ours, around the handler's `decide` (hickory's request
//! decoding and response encoding):
//! - UDP: a query answered from the records is decoded, answered and sent
//!   in place, up to 32 per system call ([`crate::batch`]); only forwards,
//!   which wait on upstreams, get a task of their own. hickory-server's
//!   `Server` spawned a task and hopped through a channel per query (the
//!   first version measured 0.64x unbound's rate; this one 1.04x).
//! - TCP: at most [`MAX_TCP`] connections per container at once (each is a
//!   file descriptor of netd's: a container must not be able to exhaust
//!   them), idle ones closed after 5 s; hickory's `Server` accepts without
//!   a bound.
//!
//! All loops run on one dedicated thread with a single-threaded runtime
//! (`netd-dns`): with the daemon's multi-threaded runtime, every query woke
//! a second worker (a quarter of the CPU went to context switches).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::DnsError;
use crate::batch::RecvBatch;
use crate::handler::{Decision, Resolver, encode, udp_limit};

/// The embedded resolver's address, as Docker's.
pub const ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);

/// A TCP client that sends nothing is dropped after this long.
const TCP_IDLE: Duration = Duration::from_secs(5);

/// TCP connections served at once per container; more are closed at once.
pub const MAX_TCP: usize = 16;

/// One container's sockets being served.
pub struct Served {
    udp: tokio::task::JoinHandle<()>,
    tcp: tokio::task::JoinHandle<()>,
    /// Aborts the TCP connections' tasks when dropped.
    conns: Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Served")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.udp.abort();
        self.tcp.abort();
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).abort_all();
    }
}

/// The runtime of the DNS loops: one thread, started on first use.
fn dns_runtime() -> Result<tokio::runtime::Handle, DnsError> {
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

/// FORMERR for a query whose header reads but whose body does not.
fn formerr(q: &[u8]) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[..2].copy_from_slice(&q[..2]);
    // QR, the opcode and RD of the query.
    h[2] = 0x80 | (q[2] & 0x79);
    h[3] = 1;
    h
}

/// One datagram, waiting for room in the socket's buffer if need be.
async fn send_one(sock: &AsyncFd<std::net::UdpSocket>, buf: &[u8], to: SocketAddr) {
    loop {
        match sock.get_ref().send_to(buf, to) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => match sock.writable().await {
                Ok(mut w) => w.clear_ready(),
                Err(_) => return,
            },
            Err(e) => {
                tracing::debug!(%to, error = %e, "embedded DNS: UDP send failed");
                return;
            }
            Ok(_) => return,
        }
    }
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
    let mut spun: Option<usize> = None;
    loop {
        let n = if let Some(n) = spun.take() {
            n
        } else {
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
            n
        };
        for i in 0..n {
            let (data, from) = batch.get(i);
            // Too short for a header (or longer than we read), a response
            // (never answered: no reflection), or from a port nobody can be
            // answered on.
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
                Decision::Reply(r) => out.push((encode(&req, &r, udp_limit(&req)), from)),
                Decision::Forward => {
                    let (sock, res) = (sock.clone(), resolver.clone());
                    tokio::spawn(async move {
                        let answer = res.forward_bytes(&req, udp_limit(&req)).await;
                        send_one(&sock, &answer, from).await;
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
        // Clients often ask again at once (A then AAAA, the next name):
        // poll briefly before going back to sleep, which saves the wake-up,
        // within a budget shared by all loops (at most 10% of the thread).
        let start = std::time::Instant::now();
        let until = start + spin_budget(start);
        while std::time::Instant::now() < until {
            match batch.recv(fd) {
                Ok(n) => {
                    spun = Some(n);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                Err(_) => break,
            }
        }
        spent(start.elapsed());
    }
}

/// How long the UDP loop polls for the next query after answering.
const SPIN: Duration = Duration::from_micros(20);
/// Polling allowed per [`SPIN_WINDOW`] on the DNS thread, all loops
/// together: many busy containers must not turn it into a busy loop.
const SPIN_SHARE: Duration = Duration::from_millis(10);
const SPIN_WINDOW: Duration = Duration::from_millis(100);

thread_local! {
    /// (window start, polling spent in it) on this (the DNS) thread.
    static SPUN: std::cell::Cell<(std::time::Instant, Duration)> =
        std::cell::Cell::new((std::time::Instant::now(), Duration::ZERO));
}

/// How long the next poll may take: [`SPIN`], or less (nothing) once the
/// window's share is used.
fn spin_budget(now: std::time::Instant) -> Duration {
    SPUN.with(|c| {
        let (start, used) = c.get();
        if now.duration_since(start) >= SPIN_WINDOW {
            c.set((now, Duration::ZERO));
            return SPIN;
        }
        SPIN.min(SPIN_SHARE.saturating_sub(used))
    })
}

fn spent(d: Duration) {
    SPUN.with(|c| {
        let (start, used) = c.get();
        c.set((start, used + d));
    });
}

/// One TCP connection: length-prefixed queries answered in order until
/// the client closes, idles for [`TCP_IDLE`], or sends something that is
/// not a query.
async fn tcp_conn(mut s: tokio::net::TcpStream, from: SocketAddr, resolver: Resolver) {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, s.read_u16()).await {
            Ok(Ok(l)) => usize::from(l),
            _ => return,
        };
        let mut buf = vec![0u8; len];
        if !matches!(tokio::time::timeout(TCP_IDLE, s.read_exact(&mut buf)).await, Ok(Ok(_))) {
            return;
        }
        if len < 12 || buf[2] & 0x80 != 0 {
            return;
        }
        let answer = match Request::from_bytes(buf.clone(), from, Protocol::Tcp) {
            Err(_) => formerr(&buf).to_vec(),
            Ok(req) => match resolver.decide(&req) {
                Decision::Reply(r) => encode(&req, &r, u16::MAX),
                Decision::Forward => resolver.forward_bytes(&req, u16::MAX).await,
            },
        };
        let Ok(n) = u16::try_from(answer.len()) else { return };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&n.to_be_bytes());
        framed.extend_from_slice(&answer);
        if !matches!(tokio::time::timeout(TCP_IDLE, s.write_all(&framed)).await, Ok(Ok(()))) {
            return;
        }
    }
}

async fn tcp_loop(
    listener: std::net::TcpListener,
    resolver: Resolver,
    conns: Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "embedded DNS: cannot serve a TCP socket");
            return;
        }
    };
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "embedded DNS: TCP accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Over the bound: closed at once (the client retries or gives up).
        let Ok(permit) = limit.clone().try_acquire_owned() else { continue };
        let res = resolver.clone();
        let mut set = conns.lock().unwrap_or_else(|p| p.into_inner());
        while set.try_join_next().is_some() {}
        set.spawn(async move {
            tcp_conn(stream, from, res).await;
            drop(permit);
        });
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

/// Serves `resolver` on bound, non-blocking sockets (from [`bind_in`]).
pub fn serve(resolver: Resolver, udp: std::net::UdpSocket, tcp: std::net::TcpListener) -> Result<Served, DnsError> {
    let rt = dns_runtime()?;
    let conns = Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
    let udp = rt.spawn(udp_loop(udp, resolver.clone()));
    let tcp = rt.spawn(tcp_loop(tcp, resolver, conns.clone()));
    Ok(Served { udp, tcp, conns })
}
