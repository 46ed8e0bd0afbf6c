//! Forwarding to upstream resolvers: at most three, tried in order, each
//! with a per-try timeout, so a client gets an answer (or SERVFAIL) within
//! `3 x try_timeout` at worst — never the multi-second hangs of Docker's
//! resolver. UDP first (also for clients that asked over TCP: many
//! upstreams serve UDP only), TCP when the answer is truncated; the query goes out as the client wrote it (EDNS
//! options included) under a fresh random id. A bound on in-flight forwards
//! protects the daemon: beyond it the caller answers REFUSED.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::DnsError;

/// Upstreams used per query, as resolv.conf's MAXNS.
pub const MAX_UPSTREAMS: usize = 3;

/// Sends queries on to upstream resolvers.
#[derive(Debug)]
pub struct Forwarder {
    inflight: Arc<Semaphore>,
    limit: usize,
    try_timeout: Duration,
}

/// How a forward ended when no upstream gave a usable answer.
fn rcode(resp: &[u8]) -> u8 {
    resp.get(3).map(|b| b & 0x0f).unwrap_or(2)
}

impl Forwarder {
    /// At most `max_inflight` forwards at once, `try_timeout` per upstream.
    pub fn new(max_inflight: usize, try_timeout: Duration) -> Forwarder {
        Forwarder { inflight: Arc::new(Semaphore::new(max_inflight)), limit: max_inflight, try_timeout }
    }

    /// Forwards `query` (a whole DNS message) and returns the upstream's
    /// answer with the client's id. SERVFAIL and REFUSED answers move on to
    /// the next upstream (the last one is returned if none does better).
    pub async fn forward(&self, query: &[u8], upstreams: &[SocketAddr]) -> Result<Vec<u8>, DnsError> {
        if query.len() < 12 {
            return Err(DnsError::Malformed("query shorter than a DNS header".into()));
        }
        let _permit = self.inflight.clone().try_acquire_owned().map_err(|_| DnsError::Busy(self.limit))?;
        if upstreams.is_empty() {
            return Err(DnsError::NoUpstream);
        }
        let mut last = None;
        let mut why = Vec::new();
        for &up in upstreams.iter().take(MAX_UPSTREAMS) {
            match tokio::time::timeout(self.try_timeout, exchange(query, up)).await {
                Ok(Ok(resp)) if matches!(rcode(&resp), 2 | 5) => {
                    why.push(format!("{up}: rcode {}", rcode(&resp)));
                    last = Some(resp);
                }
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(e)) => why.push(format!("{up}: {e}")),
                Err(_) => why.push(format!("{up}: no answer within {:?}", self.try_timeout)),
            }
        }
        last.ok_or_else(|| DnsError::Upstreams(why.join("; ")))
    }
}

/// The first question of a DNS message (name, type, class), or None when
/// there is none or it does not parse (compression is not expected there).
pub fn question(msg: &[u8]) -> Option<&[u8]> {
    if msg.len() < 12 || msg[4..6] == [0, 0] {
        return None;
    }
    let mut i = 12;
    loop {
        let l = usize::from(*msg.get(i)?);
        if l == 0 {
            break;
        }
        if l > 63 {
            return None;
        }
        i += 1 + l;
    }
    let end = i + 5;
    (end <= msg.len()).then(|| &msg[12..end])
}

/// Whether `resp` answers the question of `q` (names compared without case).
fn same_question(q: &[u8], resp: &[u8]) -> bool {
    matches!((question(q), question(resp)), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b))
}

/// One exchange with one upstream.
async fn exchange(query: &[u8], up: SocketAddr) -> std::io::Result<Vec<u8>> {
    let id: u16 = rand::random();
    let mut q = query.to_vec();
    q[..2].copy_from_slice(&id.to_be_bytes());
    let client_id = [query[0], query[1]];
    let mut r = match udp_exchange(&q, up, id).await? {
        Some(r) => r,
        None => tcp_exchange(&q, up, id).await?,
    };
    r[..2].copy_from_slice(&client_id);
    Ok(r)
}

/// `Ok(None)`: the answer was truncated, ask again over TCP.
async fn udp_exchange(q: &[u8], up: SocketAddr, id: u16) -> std::io::Result<Option<Vec<u8>>> {
    let any: IpAddr = if up.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let sock = tokio::net::UdpSocket::bind((any, 0)).await?;
    sock.connect(up).await?;
    sock.send(q).await?;
    // Answers longer than 4 KiB (or cut to fit the buffer) are asked for
    // again over TCP.
    let mut buf = vec![0u8; 4097];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Ours: same id, a response (QR), the same question.
        if n < 12 || buf[..2] != id.to_be_bytes() || buf[2] & 0x80 == 0 || !same_question(q, &buf[..n]) {
            continue;
        }
        if buf[2] & 0x02 != 0 || n == buf.len() {
            return Ok(None);
        }
        buf.truncate(n);
        return Ok(Some(buf));
    }
}

async fn tcp_exchange(q: &[u8], up: SocketAddr, id: u16) -> std::io::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(up).await?;
    let len = u16::try_from(q.len()).map_err(|_| std::io::Error::other("query too long for TCP"))?;
    let mut out = Vec::with_capacity(q.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(q);
    s.write_all(&out).await?;
    let n = usize::from(s.read_u16().await?);
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await?;
    if n < 12 || buf[..2] != id.to_be_bytes() || buf[2] & 0x80 == 0 || !same_question(q, &buf) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "answer over TCP does not match the query"));
    }
    Ok(buf)
}
