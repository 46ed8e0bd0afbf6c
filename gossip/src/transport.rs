//! What a member runs over: best-effort packets and reliable streams, to
//! socket addresses. [`NetTransport`] is UDP + TCP; [`MemNetwork`] is an
//! in-memory network for deterministic tests (paused tokio time), with
//! partitions.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// A boxed future (the trait is used as an object).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A reliable byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What arrives from the network.
pub enum Inbound {
    Packet(Vec<u8>, SocketAddr),
    Stream(Box<dyn Stream>, SocketAddr),
}

/// Sending side of a transport.
pub trait Transport: Send + Sync + 'static {
    /// Sends one packet, best effort (errors are only logged by callers).
    fn send(&self, to: SocketAddr, data: Vec<u8>) -> BoxFut<'_, io::Result<()>>;
    /// Opens a stream.
    fn connect(&self, to: SocketAddr) -> BoxFut<'_, io::Result<Box<dyn Stream>>>;
}

/// UDP and TCP on one address.
pub struct NetTransport {
    udp: Arc<tokio::net::UdpSocket>,
}

impl NetTransport {
    /// Binds UDP and TCP on `bind` and spawns the receivers.
    pub async fn bind(bind: SocketAddr) -> io::Result<(Arc<NetTransport>, mpsc::Receiver<Inbound>)> {
        let udp = Arc::new(tokio::net::UdpSocket::bind(bind).await?);
        let tcp = tokio::net::TcpListener::bind(bind).await?;
        let (tx, rx) = mpsc::channel(1024);
        let (u, t) = (udp.clone(), tx.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match u.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        if t.send(Inbound::Packet(buf[..n].to_vec(), from)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "udp receive"),
                }
            }
        });
        tokio::spawn(async move {
            loop {
                match tcp.accept().await {
                    Ok((s, from)) => {
                        if tx.send(Inbound::Stream(Box::new(s), from)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "tcp accept");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Ok((Arc::new(NetTransport { udp }), rx))
    }
}

impl Transport for NetTransport {
    fn send(&self, to: SocketAddr, data: Vec<u8>) -> BoxFut<'_, io::Result<()>> {
        Box::pin(async move { self.udp.send_to(&data, to).await.map(|_| ()) })
    }

    fn connect(&self, to: SocketAddr) -> BoxFut<'_, io::Result<Box<dyn Stream>>> {
        Box::pin(async move { Ok(Box::new(tokio::net::TcpStream::connect(to).await?) as Box<dyn Stream>) })
    }
}

#[derive(Default)]
struct Hub {
    nodes: HashMap<SocketAddr, mpsc::Sender<Inbound>>,
    /// Pairs that cannot talk (either direction).
    cut: BTreeSet<(SocketAddr, SocketAddr)>,
    /// Links that drop packets (UDP) but carry streams (TCP).
    packets_cut: BTreeSet<(SocketAddr, SocketAddr)>,
    /// Share of packets lost (0..1).
    loss: f64,
    /// One-way delay of every packet.
    delay: std::time::Duration,
    /// Extra delay to and from some members (a saturated CPU).
    slow: HashMap<SocketAddr, std::time::Duration>,
    /// Packets and bytes sent, per sender.
    sent: HashMap<SocketAddr, (u64, u64)>,
    /// Streams opened.
    streams: u64,
    /// A partition into groups: members in different groups cannot talk
    /// (members without a group talk to everyone).
    groups: HashMap<SocketAddr, u32>,
}

/// An in-memory network of members, for tests.
#[derive(Clone, Default)]
pub struct MemNetwork {
    hub: Arc<Mutex<Hub>>,
}

/// One member's end of a [`MemNetwork`].
pub struct MemTransport {
    me: SocketAddr,
    hub: Arc<Mutex<Hub>>,
}

impl MemNetwork {
    pub fn attach(&self, addr: SocketAddr) -> (Arc<MemTransport>, mpsc::Receiver<Inbound>) {
        let (tx, rx) = mpsc::channel(1024);
        self.hub.lock().unwrap_or_else(|p| p.into_inner()).nodes.insert(addr, tx);
        (Arc::new(MemTransport { me: addr, hub: self.hub.clone() }), rx)
    }

    /// Removes a member (as if its host died).
    pub fn detach(&self, addr: SocketAddr) {
        self.hub.lock().unwrap_or_else(|p| p.into_inner()).nodes.remove(&addr);
    }

    /// Loses a share of packets and delays all of them.
    pub fn conditions(&self, loss: f64, delay: std::time::Duration) {
        let mut h = self.hub.lock().unwrap_or_else(|p| p.into_inner());
        h.loss = loss;
        h.delay = delay;
    }

    /// Delays everything to and from `addr` (as a saturated CPU would).
    pub fn slow(&self, addr: SocketAddr, extra: std::time::Duration) {
        self.hub.lock().unwrap_or_else(|p| p.into_inner()).slow.insert(addr, extra);
    }

    /// Packets and bytes sent so far, summed over every member.
    pub fn traffic(&self) -> (u64, u64) {
        let h = self.hub.lock().unwrap_or_else(|p| p.into_inner());
        h.sent.values().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    /// Splits the network: members in different groups cannot talk until
    /// [`MemNetwork::heal`] (cheaper than [`MemNetwork::partition`] pair by
    /// pair for thousands of members).
    pub fn split(&self, groups: impl IntoIterator<Item = (SocketAddr, u32)>) {
        self.hub.lock().unwrap_or_else(|p| p.into_inner()).groups = groups.into_iter().collect();
    }

    /// Ends a [`MemNetwork::split`].
    pub fn heal(&self) {
        self.hub.lock().unwrap_or_else(|p| p.into_inner()).groups.clear();
    }

    /// Streams opened so far (push-pulls, table syncs, pings over TCP).
    pub fn streams(&self) -> u64 {
        self.hub.lock().unwrap_or_else(|p| p.into_inner()).streams
    }

    /// Cuts (`true`) or heals the link between two members.
    pub fn partition(&self, a: SocketAddr, b: SocketAddr, cut: bool) {
        let mut h = self.hub.lock().unwrap_or_else(|p| p.into_inner());
        set_link(&mut h.cut, a, b, cut);
    }

    /// Drops packets (`true`) between two members while streams still pass,
    /// as a firewall that blocks UDP only would.
    pub fn block_packets(&self, a: SocketAddr, b: SocketAddr, cut: bool) {
        let mut h = self.hub.lock().unwrap_or_else(|p| p.into_inner());
        set_link(&mut h.packets_cut, a, b, cut);
    }
}

fn link(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a < b { (a, b) } else { (b, a) }
}

fn set_link(set: &mut BTreeSet<(SocketAddr, SocketAddr)>, a: SocketAddr, b: SocketAddr, cut: bool) {
    if cut {
        set.insert(link(a, b));
    } else {
        set.remove(&link(a, b));
    }
}

impl MemTransport {
    fn route(&self, to: SocketAddr) -> Option<mpsc::Sender<Inbound>> {
        let h = self.hub.lock().unwrap_or_else(|p| p.into_inner());
        if h.cut.contains(&link(self.me, to)) {
            return None;
        }
        if let (Some(a), Some(b)) = (h.groups.get(&self.me), h.groups.get(&to))
            && a != b
        {
            return None;
        }
        h.nodes.get(&to).cloned()
    }

    /// Counts a packet; returns its delay, or None if it is lost.
    fn account(&self, to: SocketAddr, len: usize) -> Option<std::time::Duration> {
        let mut h = self.hub.lock().unwrap_or_else(|p| p.into_inner());
        let c = h.sent.entry(self.me).or_default();
        c.0 += 1;
        c.1 += len as u64;
        if h.packets_cut.contains(&link(self.me, to)) || (h.loss > 0.0 && rand::random::<f64>() < h.loss) {
            return None;
        }
        let extra = h.slow.get(&to).copied().unwrap_or_default() + h.slow.get(&self.me).copied().unwrap_or_default();
        Some(h.delay + extra)
    }
}

impl Transport for MemTransport {
    fn send(&self, to: SocketAddr, data: Vec<u8>) -> BoxFut<'_, io::Result<()>> {
        Box::pin(async move {
            let Some(delay) = self.account(to, data.len()) else { return Ok(()) };
            if let Some(tx) = self.route(to) {
                let me = self.me;
                if delay.is_zero() {
                    let _ = tx.try_send(Inbound::Packet(data, me));
                } else {
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.try_send(Inbound::Packet(data, me));
                    });
                }
            }
            Ok(())
        })
    }

    fn connect(&self, to: SocketAddr) -> BoxFut<'_, io::Result<Box<dyn Stream>>> {
        Box::pin(async move {
            let tx = self.route(to).ok_or_else(|| io::Error::new(io::ErrorKind::ConnectionRefused, "unreachable"))?;
            self.hub.lock().unwrap_or_else(|p| p.into_inner()).streams += 1;
            let (a, b) = tokio::io::duplex(1 << 20);
            tx.send(Inbound::Stream(Box::new(b), self.me))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::ConnectionRefused, "member gone"))?;
            Ok(Box::new(a) as Box<dyn Stream>)
        })
    }
}
