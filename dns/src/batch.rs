//! Batched UDP I/O: `recvmmsg` and `sendmmsg`, so a loaded resolver pays one
//! system call per batch of queries and one per batch of answers instead of
//! one per packet each. Both are non-blocking; the caller waits for
//! readiness through tokio.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// The largest query read (EDNS clients rarely send more than a few hundred
/// bytes); longer datagrams are dropped.
pub const MAX_QUERY: usize = 4096;

/// Buffers for one batch of received datagrams.
pub struct RecvBatch {
    bufs: Vec<[u8; MAX_QUERY]>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![[0u8; MAX_QUERY]; BATCH],
            // SAFETY: sockaddr_storage is plain old data; all zeroes is valid.
            addrs: vec![unsafe { std::mem::zeroed() }; BATCH],
            lens: vec![0; BATCH],
        }
    }
}

fn to_socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; storage is larger and aligned for it.
            let a = unsafe { &*(s as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6; storage is larger and aligned for it.
            let a = unsafe { &*(s as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}

fn from_socket_addr(a: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is valid.
    let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let p = unsafe { &mut *(&mut s as *mut libc::sockaddr_storage as *mut libc::sockaddr_in) };
            p.sin_family = libc::AF_INET as libc::sa_family_t;
            p.sin_port = v4.port().to_be();
            p.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            (s, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let p = unsafe { &mut *(&mut s as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6) };
            p.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            p.sin6_port = v6.port().to_be();
            p.sin6_addr.s6_addr = v6.ip().octets();
            p.sin6_flowinfo = v6.flowinfo();
            p.sin6_scope_id = v6.scope_id();
            (s, std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

impl RecvBatch {
    /// Reads up to [`BATCH`] datagrams without blocking (`WouldBlock` when
    /// none is waiting); returns how many.
    pub fn recv(&mut self, fd: RawFd) -> std::io::Result<usize> {
        let mut iovs: Vec<libc::iovec> =
            self.bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: MAX_QUERY }).collect();
        let mut hdrs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .zip(self.addrs.iter_mut())
            .map(|(iov, addr)| {
                // SAFETY: msghdr is plain old data; all zeroes is valid (no control data, no flags).
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: every header points at a live iovec, buffer and address of
        // `self`/`iovs`, which outlive the call; vlen is their count.
        let n = unsafe {
            libc::recvmmsg(fd, hdrs.as_mut_ptr(), hdrs.len() as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, h) in hdrs.iter().take(n).enumerate() {
            // Longer than we read: dropped (reads as empty), not half-decoded.
            let cut = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.lens[i] = if cut { 0 } else { (h.msg_len as usize).min(MAX_QUERY) };
        }
        Ok(n)
    }

    /// Datagram `i` of the last [`RecvBatch::recv`] and its sender.
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        (&self.bufs[i][..self.lens[i]], to_socket_addr(&self.addrs[i]))
    }
}

/// Sends `msgs` without blocking; returns how many left (the first ones):
/// `WouldBlock` when the socket's buffer is full before the first.
pub fn send(fd: RawFd, msgs: &[(Vec<u8>, SocketAddr)]) -> std::io::Result<usize> {
    if msgs.is_empty() {
        return Ok(0);
    }
    let mut addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)> =
        msgs.iter().map(|m| from_socket_addr(&m.1)).collect();
    let mut iovs: Vec<libc::iovec> =
        msgs.iter().map(|m| libc::iovec { iov_base: m.0.as_ptr() as *mut libc::c_void, iov_len: m.0.len() }).collect();
    let mut hdrs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .zip(addrs.iter_mut())
        .map(|(iov, (addr, len))| {
            // SAFETY: msghdr is plain old data; all zeroes is valid (no control data, no flags).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = *len;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: every header points at a live iovec, payload and address that
    // outlive the call (the kernel only reads them); vlen is their count.
    let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), hdrs.len() as libc::c_uint, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_goes_out_and_comes_back_with_its_senders() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        let clients: Vec<std::net::UdpSocket> =
            (0..3).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        for (i, c) in clients.iter().enumerate() {
            c.send_to(&[i as u8; 5], to).unwrap();
        }
        let mut b = RecvBatch::default();
        let mut got = 0;
        while got < 3 {
            match b.recv(server.as_raw_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        let (data, from) = b.get(i);
                        let k = data[0] as usize;
                        assert_eq!((data.len(), from), (5, Some(clients[k].local_addr().unwrap())));
                    }
                    got += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        let replies: Vec<(Vec<u8>, SocketAddr)> =
            clients.iter().map(|c| (b"pong".to_vec(), c.local_addr().unwrap())).collect();
        assert_eq!(send(server.as_raw_fd(), &replies).unwrap(), 3);
        for c in &clients {
            let mut buf = [0u8; 16];
            assert_eq!(c.recv(&mut buf).unwrap(), 4);
        }
        assert!(matches!(b.recv(server.as_raw_fd()), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
    }
}
